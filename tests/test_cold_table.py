"""The cold table (``native/inmem_cold.c``): the recovered records kept in C, and the SortedMap that sits on it.

Attacks: a hypothesis model of every map operation against a plain dict,
with the two parts checked disjoint after each step (a key in both, or in
neither, is a lost or resurrected write); thousands of keys through growth,
backward-shift deletes and compaction against a model; a drain that runs
out of memory halfway (``_testcapi.set_nomemory``) must leave the map as it
was; readers racing a writer that moves keys out of the table must never
miss a key; recovery with a snapshot whose keys the WAL rewrites or deletes;
hostile arguments. Skipped when the extension is not built or ``INMEM_PURE=1``
(then recovery fills the dict part, as it always did).
"""

from __future__ import annotations

import copy
import pickle
import random
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inmem import Database, native
from inmem.store import FRESH_LIMIT, SortedMap, UnifiedStore
from inmem.testing import kernel, store_items
from tests.conftest import run_interleaved

new_table = native.builtins().get("new_cold_table")
pytestmark = pytest.mark.skipif(new_table is None, reason="native cold table not built or INMEM_PURE=1")


def parts(m: SortedMap) -> dict[bytes, tuple[int, bytes]]:
    """The map's content read part by part, without draining: asserts the parts are disjoint."""
    dict_part = {k: tuple(v) for k, v in dict.items(m)}
    cold = m.cold
    cold_part = {k: tuple(e) for k, e in cold.items()} if cold is not None else {}  # type: ignore[attr-defined]
    assert not dict_part.keys() & cold_part.keys(), "a key in both parts"
    if cold is not None:
        assert len(cold) == len(cold_part)  # type: ignore[arg-type]
    return {**dict_part, **cold_part}


def loaded(snapshot: dict[bytes, bytes], writes: list[tuple[bytes, bytes | None]], slack: int | None = 0):
    """A map bulk-loaded as recovery does it: ``snapshot`` in the dict part, then ``writes`` into the cold table."""
    m = SortedMap()
    model: dict[bytes, tuple[int, bytes]] = {}
    for k, v in snapshot.items():
        dict.__setitem__(m, k, (1, v))
        model[k] = (1, v)
    cold = m.open_cold(slack=slack)
    assert cold is not None and type(m).__name__ == "_ColdMap" and not m.indexed
    for version, (k, v) in enumerate(writes, start=2):
        if v is None:
            cold.unload(k)
            model.pop(k, None)
        else:
            cold.load(k, version, v)
            model[k] = (version, v)
    return m, model


KEY = st.binary(max_size=3)
VALUE = st.binary(max_size=24)
OPS = st.one_of(
    st.tuples(st.just("get"), KEY),
    st.tuples(st.just("getitem"), KEY),
    st.tuples(st.just("in"), KEY),
    st.tuples(st.just("len")),
    st.tuples(st.just("set"), KEY, VALUE),
    st.tuples(st.just("put_version"), KEY, VALUE),
    st.tuples(st.just("pop"), KEY),
    st.tuples(st.just("del"), KEY),
    st.tuples(st.just("store_delete"), KEY),
    st.tuples(st.just("store_apply"), st.lists(st.tuples(KEY, st.one_of(st.none(), VALUE)), max_size=4)),
    st.tuples(st.just("setdefault"), KEY, VALUE),
    st.tuples(st.just("update"), st.dictionaries(KEY, VALUE, max_size=3)),
    st.tuples(st.just("heads"), st.integers(0, 3), st.integers(0, 2)),
    st.tuples(st.just("scan")),
    st.tuples(st.just("copy")),
    st.tuples(st.just("pickle")),
    st.tuples(st.just("eq")),
    st.tuples(st.just("clear")),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEY, VALUE, max_size=8), st.lists(st.tuples(KEY, st.one_of(st.none(), VALUE)), max_size=30),
       st.lists(OPS, max_size=30))
def test_a_cold_backed_map_behaves_as_a_dict_of_both_parts(snapshot, writes, ops):
    m, model = loaded(snapshot, writes)
    store = UnifiedStore(m)
    assert store.get is not dict.get
    version = 10**6
    for op in ops:
        version += 1
        name = op[0]
        if name == "get":
            got = m.get(op[1])
            assert (None if got is None else tuple(got)) == model.get(op[1])
            got = store.get(op[1])
            assert (None if got is None else tuple(got)) == model.get(op[1])
        elif name == "getitem":
            if op[1] in model:
                assert tuple(m[op[1]]) == model[op[1]]
            else:
                with pytest.raises(KeyError):
                    m[op[1]]
        elif name == "in":
            assert (op[1] in m) == (op[1] in model) == (op[1] in store)
        elif name == "len":
            assert len(m) == len(model) == len(store)
        elif name == "set":
            m[op[1]] = (version, op[2])
            model[op[1]] = (version, op[2])
        elif name == "put_version":
            store.put_version(op[1], version, op[2])
            model[op[1]] = (version, op[2])
        elif name == "pop":
            got = m.pop(op[1], None)
            assert (None if got is None else tuple(got)) == model.pop(op[1], None)
        elif name == "del":
            if op[1] in model:
                del m[op[1]]
                del model[op[1]]
            else:
                with pytest.raises(KeyError):
                    del m[op[1]]
        elif name == "store_delete":
            assert store.delete(op[1]) == (model.pop(op[1], None) is not None)
        elif name == "store_apply":
            store.apply(version, op[1])
            for k, v in op[1]:
                if v is None:
                    model.pop(k, None)
                else:
                    model[k] = (version, v)
        elif name == "setdefault":
            got = m.setdefault(op[1], (version, op[2]))
            assert tuple(got) == model.setdefault(op[1], (version, op[2]))
        elif name == "update":
            m.update({k: (version, v) for k, v in op[1].items()})
            model.update({k: (version, v) for k, v in op[1].items()})
        elif name == "heads":
            lead, width = op[1], op[2]
            want = sorted({k[1:1 + width] for k in model if k[:1] == bytes([lead])})
            assert store.key_heads(lead, width) == want
        elif name == "scan":
            assert [(k, tuple(v)) for k, v in store.scan(b"", None)] == sorted(model.items())
            assert m.cold is None and m.indexed and type(m) is SortedMap  # drained, then indexed
        elif name == "copy":
            assert {k: tuple(v) for k, v in copy.copy(m).items()} == model
            assert type(m.copy()) is SortedMap
        elif name == "pickle":
            back = pickle.loads(pickle.dumps(m))
            assert type(back) is SortedMap and {k: tuple(v) for k, v in back.items()} == model
        elif name == "eq":
            assert m == {k: m.get(k) for k in model}
        elif name == "clear":
            m.clear()
            model.clear()
        assert parts(m) == model, op
    m._check()
    assert {k: tuple(v) for k, v in m.items()} == model and type(m) is SortedMap


@pytest.mark.parametrize("seed", range(6))
def test_thousands_of_keys_through_growth_deletes_and_compaction(seed):
    """Enough keys to re-slot the table several times, deletes that shift probe chains back, rewrites
    that make garbage (slack 0: a compaction whenever garbage outweighs the live bytes), against a model."""
    rnd = random.Random(seed)
    keys = [rnd.randbytes(rnd.randint(0, 12)) for _ in range(6000)]
    m, model = loaded({}, [])
    cold = m.cold
    for step in range(30_000):
        k = rnd.choice(keys)
        r = rnd.random()
        if r < 0.55:
            v = rnd.randbytes(rnd.randint(0, 64))
            cold.load(k, step + 1, v)
            model[k] = (step + 1, v)
        elif r < 0.8:
            cold.unload(k)
            model.pop(k, None)
        elif r < 0.9:
            got = cold.pop(k)
            assert (None if got is None else tuple(got)) == model.pop(k, None)
        else:
            got = m.get(k)
            assert (None if got is None else tuple(got)) == model.get(k)
    assert parts(m) == model
    assert all(tuple(m[k]) == model[k] for k in model)
    assert all(k not in m for k in keys if k not in model)
    live = sum(len(k) + len(v) for k, (_, v) in model.items())
    n = len(model)
    assert cold.nbytes() <= (4 << 20) + 2 * live + 160 * n + 32 * (n + 1024)  # compacted as it went: bounded
    m.drain_cold()
    assert {k: tuple(v) for k, v in m.items()} == model and len(cold) == 0 and cold.nbytes() == 0


def test_a_rewrite_of_every_cold_key_gives_the_arena_back():
    """Puts of every recovered key move them to the dict part; the table's copies are garbage and,
    past the slack, compacted away, and an emptied table frees everything."""
    m, model = loaded({}, [(b"k%05d" % i, b"x" * 1000) for i in range(2000)])
    cold = m.cold
    store = UnifiedStore(m)
    before = cold.nbytes()
    assert before >= 2000 * 1000
    for i in range(1999):
        store.put_version(b"k%05d" % i, 10**6, b"new")
    assert len(cold) == 1 and cold.nbytes() < before // 100  # compacted: one record left
    store.delete(b"k01999")
    assert len(cold) == 0 and cold.nbytes() == 0 and len(m) == 1999


def test_a_drain_that_runs_out_of_memory_leaves_the_map_as_it_was():
    testcapi = pytest.importorskip("_testcapi")
    m, model = loaded({b"snap": b"shot"}, [(b"k%04d" % i, b"v%d" % i) for i in range(3000)])
    for start in (1, 50, 2000, 5000):
        testcapi.set_nomemory(start, 0)
        try:
            m.drain_cold()
        except MemoryError:
            pass
        finally:
            testcapi.remove_mem_hooks()
        if m.cold is None:
            break
        assert type(m).__name__ == "_ColdMap" and parts(m) == model and not m.indexed
    m.drain_cold()
    assert m.cold is None and {k: tuple(v) for k, v in m.items()} == model


def test_a_put_that_runs_out_of_memory_keeps_the_recovered_value():
    testcapi = pytest.importorskip("_testcapi")
    m, model = loaded({}, [(b"k", b"old")])
    store = UnifiedStore(m)
    put, value, failed = store.put_version, b"new" * 100, False
    testcapi.set_nomemory(0, 0)  # every allocation fails: the entry cannot be made
    try:
        put(b"k", 9, value)
    except MemoryError:
        failed = True
    finally:
        testcapi.remove_mem_hooks()
    assert failed and parts(m) == model


def test_readers_never_miss_a_key_while_writers_move_keys_out_of_the_table():
    """Lock-free point reads (``store.get``, ``in``) racing puts and deletes that move keys from the
    table to the dict part, with the GIL switching every 10 µs: every key that is never deleted is
    always found, with a version that only grows; a deleted key stays gone. (Putting into the dict part after
    dropping the table's copy, instead of before, fails this test 4 runs out of 4.)"""
    m, model = loaded({}, [(b"k%04d" % i, b"v0") for i in range(2000)])
    store = UnifiedStore(m)
    keys = sorted(model)
    stable = keys[1::2]  # rewritten, never deleted
    doomed = keys[0::2]
    errors: list[str] = []
    done = threading.Event()

    current = [0]  # the index of the key the writer is moving: readers watch it (the race is there)

    def reader() -> None:
        seen = dict.fromkeys(stable, 0)
        while not done.is_set():
            i = current[0]
            for k in (stable[i], stable[i - 1], stable[(i + 1) % len(stable)]):
                entry = store.get(k)
                if entry is None or k not in m:
                    errors.append(f"{k!r} missing")
                    return
                if entry[0] < seen[k]:
                    errors.append(f"{k!r} went back in time")
                    return
                seen[k] = entry[0]

    def writer() -> None:
        for i, k in enumerate(stable):  # each key out of the table: the C put, or the Python one
            current[0] = i
            if i % 2:
                store.put_version(k, 10**6 + i, b"v1")  # loaded at versions 2..2001
            else:
                m[k] = (10**6 + i, b"v1")  # SortedMap.__setitem__, then the table's copy dropped
            store.delete(doomed[i])
        for i, k in enumerate(stable):
            current[0] = i
            store.put_version(k, 2 * 10**6 + i, b"v2")
        done.set()

    run_interleaved([threading.Thread(target=reader) for _ in range(2)] + [threading.Thread(target=writer)])
    assert not errors
    assert len(m) == len(stable) and all(store.get(k) is None for k in doomed)
    assert {k: tuple(v) for k, v in m.items()} == {k: (2 * 10**6 + i, b"v2") for i, k in enumerate(stable)}


def test_fresh_keys_while_cold_stay_out_of_the_sorted_list_until_the_drain():
    m, model = loaded({}, [(b"a", b"1")])
    store = UnifiedStore(m)
    for i in range(FRESH_LIMIT + 5):
        store.put_version(b"n%06d" % i, 5, b"x")
    assert m.cold is not None and not m.indexed and len(m) == FRESH_LIMIT + 6
    assert store.count(b"", None) == FRESH_LIMIT + 6  # an ordered read: drains, then builds the index
    m._check()


def test_recovery_puts_the_wal_in_the_cold_table_and_a_snapshot_in_the_dict_part(tmp_path):
    """A snapshot's keys that the WAL after it rewrites or deletes leave the dict part; the reopened
    database reads every key as it was, and the first ordered read drains the table."""
    path = str(tmp_path / "db")
    with Database.open(path) as db:
        run = db.begin_run("r")
        for i in range(300):
            db.kv.put(run, f"k{i}", i)
        db.snapshot()
        for i in range(0, 300, 3):
            db.kv.put(run, f"k{i}", -i)
        for i in range(1, 300, 3):
            db.kv.delete(run, f"k{i}")
        for i in range(300, 400):
            db.kv.put(run, f"k{i}", i)
        expected = {f"k{i}": db.kv.get(run, f"k{i}") for i in range(400)}
    with Database.open(path) as db:
        m = kernel(db)._store.sorted_map  # noqa: SLF001 - the store's two parts
        cold = m.cold
        assert cold is not None and len(cold) >= 200  # the WAL's puts after the snapshot
        parts(m)  # disjoint
        assert {f"k{i}": db.kv.get(run, f"k{i}") for i in range(400)} == expected
        assert cold is m.cold and not m.indexed  # point reads leave it cold
        assert len(store_items(db)) > 0 and m.cold is None and len(cold) == 0  # drained
        assert dict(db.kv.scan(run)) == {k: v for k, v in expected.items() if v is not None}


def test_hostile_arguments_are_refused_and_other_key_types_are_not_found():
    m = SortedMap()
    with pytest.raises(TypeError):
        new_table([], 1)
    with pytest.raises(TypeError):
        new_table(m, "seed")
    with pytest.raises(TypeError):
        new_table(m, 1, "slack")
    cold = m.open_cold()
    assert m.open_cold() is cold  # one table per map
    for args in [("k", 1, b"v"), (b"k", 1, "v"), (b"k", "1", b"v"), (b"k", 1), (b"k", 1, b"v", 0)]:
        with pytest.raises(TypeError):
            cold.load(*args)
    with pytest.raises(ValueError):
        cold.load(b"k", 0, b"v")  # version 0 marks a dead record
    with pytest.raises(OverflowError):
        cold.load(b"k", -1, b"v")
    with pytest.raises(OverflowError):
        cold.load(b"k", 2**64, b"v")
    for bad in [(1,), (b"x", 2), (-1, 2), (256, 2), (1, -1)]:
        with pytest.raises((TypeError, ValueError)):
            cold.key_heads(*bad)
    cold.load(b"k", 2**64 - 1, b"v")
    assert tuple(m[b"k"]) == (2**64 - 1, b"v")
    # the native replay writes into a table only for the map that table backs
    from inmem.wal import fast
    from inmem.wal.format import SEGMENT_HEADER_SIZE, encode_commit_frame, encode_segment_header

    seg = encode_segment_header(b"\x11" * 16, 1, 1) + encode_commit_frame(1, 1, 0, [(b"w", b"x")])
    other = SortedMap()
    with pytest.raises(TypeError):
        fast.replay(seg, SEGMENT_HEADER_SIZE, 1, 0, 0, 2**64 - 1, False, other, 0, 0, cold)
    with pytest.raises(TypeError):
        fast.replay(seg, SEGMENT_HEADER_SIZE, 1, 0, 0, 2**64 - 1, False, m, 0, 0, object())
    assert b"w" not in m and b"w" not in other
    assert m.get("k") is None and "k" not in m and bytearray(b"k") not in cold and 7 not in cold
    with pytest.raises(TypeError):
        m.get([b"k"])  # unhashable: the dict part's own error
    assert b"k" in cold and len(m) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_a_cleared_or_drained_table_gives_its_memory_back_to_the_os():
    """The table's blocks are mapped from the OS and unmapped when freed: emptying ~100 MB of records
    lowers the resident set by about that much (through malloc, glibc kept it: W9 went from 2.7x to
    3.6x the raw bytes)."""
    import os

    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    value = b"v" * 2000
    for empty in ("clear", "pop"):
        m = SortedMap()
        cold = m.open_cold()
        before = rss()
        for i in range(50_000):
            cold.load(b"k%06d" % i, 1, value)
        grown = rss() - before
        assert grown > 90 * 2**20
        if empty == "clear":
            cold.clear()
        else:
            for i in range(50_000):
                assert cold.pop(b"k%06d" % i) is not None
        assert rss() - before < grown // 4 and cold.nbytes() == 0


def test_the_table_holds_its_map_weakly_so_no_cycle_keeps_a_dropped_store_alive():
    """The map holds its table; the table holds the map by a weak reference, so a store dropped before
    any drain is freed by reference counting alone (no cycle waits for a full collection), and a table
    outliving its map says so instead of reading freed memory."""
    import gc

    m, _model = loaded({}, [(b"k%04d" % i, b"v") for i in range(1000)])
    store = UnifiedStore(m)
    cold_type = type(m.cold)
    before = sys.getrefcount(cold_type)
    gc.disable()
    try:
        del store, m
        after = sys.getrefcount(cold_type)  # no collection ran
    finally:
        gc.enable()
    assert after == before - 1
    m = SortedMap()
    get = m.open_cold().get
    del m
    with pytest.raises(RuntimeError, match="map is gone"):
        get(b"k")
