"""The store's sorted map: recovery's bulk load (fill the dict part, sort once) and the ceiling lookup.

Recovery fills :class:`inmem.store.SortedMap` through its dict part alone and
indexes the keys once; the store adopts it without a copy. These tests hold
that map to a plain model (a dict and ``sorted``), and check that what a
reopen builds is a consistent sorted map on the native and the pure path.
"""

from __future__ import annotations

import bisect
import copy
import pickle
import sys

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st
from inmem import Database
from inmem.store import SortedMap, UnifiedStore
from inmem.testing import check_store, store_items

keys = st.binary(min_size=0, max_size=6)
ops = st.lists(st.tuples(st.booleans(), keys, st.integers(1, 9)), max_size=80)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_bulk_fill_then_index_keys_is_the_sorted_dict_of_the_same_writes(writes):
    model: dict[bytes, tuple[int, bytes]] = {}
    m = SortedMap()
    for put, key, version in writes:
        if put:
            model[key] = (version, key)
            dict.__setitem__(m, key, (version, key))
        else:
            model.pop(key, None)
            dict.pop(m, key, None)
    m.index_keys()
    m._check()  # sortedcontainers' own invariants: the key list matches the dict
    assert list(m.items()) == sorted(model.items())
    # and it stays a working SortedDict afterwards
    m[b"\xff" * 7] = (1, b"x")  # longer than any generated key
    del m[b"\xff" * 7]
    assert list(m) == sorted(model)


@settings(max_examples=200, deadline=None)
@given(st.sets(keys, max_size=60), st.lists(keys, max_size=20))
def test_ceiling_is_the_smallest_key_at_or_above(stored, probes):
    m = SortedMap({k: (1, k) for k in stored})
    store = UnifiedStore(m)
    ordered = sorted(stored)
    for probe in probes + ordered + [b"", b"\xff" * 7]:
        i = bisect.bisect_left(ordered, probe)
        want = ordered[i] if i < len(ordered) else None
        assert m.ceiling(probe) == want
        assert store.ceiling_key(probe) == want


def test_the_store_adopts_a_sorted_map_without_copying_and_copies_anything_else():
    m = SortedMap({b"a": (1, b"x")})
    assert UnifiedStore(m).sorted_map is m
    plain = {b"b": (2, b"y"), b"a": (1, b"x")}
    store = UnifiedStore(plain)
    assert type(store.sorted_map) is SortedMap and list(store.sorted_map) == [b"a", b"b"]
    assert type(UnifiedStore().sorted_map) is SortedMap


def test_a_reopen_builds_a_consistent_sorted_map_from_snapshot_and_wal_with_deletes(tmp_path):
    path = str(tmp_path / "db")
    with Database.open(path) as db:
        run = db.begin_run("r")
        for i in range(300):
            db.kv.put(run, f"k{i:04d}", i)
        db.snapshot()
        for i in range(0, 300, 3):
            db.kv.delete(run, f"k{i:04d}")
        for i in range(300, 350):
            db.kv.put(run, f"k{i:04d}", i)
        want = dict(db.kv.scan(run))
    with Database.open(path) as db:
        check_store(db)  # sorted list and dict agree; every entry well-formed
        assert dict(db.kv.scan(run)) == want
        assert [k for k, _ in db.kv.scan(run)] == sorted(want)
        assert db.kv.get(run, "k0001") == 1 and db.kv.get(run, "k0003") is None


def _recovered_entry(tmp_path):
    """An entry as a native reopen builds it (the compact type where the build has it)."""
    path = str(tmp_path / "e")
    with Database.open(path) as db:
        run = db.begin_run("r")
        db.kv.put(run, "k", {"a": 1})
    with Database.open(path) as db:
        entries = [e for e in store_items(db).values()]
    return entries


def test_a_native_recovered_entry_reads_exactly_as_the_tuple_it_replaces(tmp_path):
    from inmem.wal import fast

    entries = _recovered_entry(tmp_path)
    if fast.entry_type is None:
        assert all(type(e) is tuple for e in entries)  # pure path: tuples
        return
    e = next(e for e in entries if type(e) is fast.entry_type)
    version, value = e
    t = (version, value)
    assert type(version) is int and version >= 1 and type(value) is bytes
    assert len(e) == 2 and e[0] == version and e[1] is value and e[-1] is value and list(e) == list(t)
    assert e == t and t == e and not (e != t) and e != (version + 1, value) and e != "x"
    assert hash(e) == hash(t) and repr(e) == repr(t)
    assert {e: 1}[t] == 1
    assert sorted([e, (0, b"")]) == [(0, b""), t]
    restored = pickle.loads(pickle.dumps(e))
    assert type(restored) is tuple and restored == t
    assert copy.copy(e) == t and copy.deepcopy(e) == t
    with pytest.raises(IndexError):
        e[2]
    with pytest.raises(TypeError):
        e[0] = 1
    assert sys.getsizeof(e) < sys.getsizeof(t)  # the point of it (W9)


def _filled(tmp_path, n=2000):
    path = str(tmp_path / "g")
    with Database.open(path) as db:
        run = db.begin_run("r")
        with db.transaction() as tx:
            for i in range(n):
                tx.kv.put(run, f"k{i}", i)
    return path


def test_open_leaves_the_new_state_in_the_oldest_gc_generation_and_the_collector_as_it_was(tmp_path):
    import gc

    from inmem.testing import kernel

    path = _filled(tmp_path)
    assert gc.isenabled()
    with Database.open(path) as db:
        m = kernel(db)._store.sorted_map
        assert gc.isenabled()
        young = {id(o) for o in gc.get_objects(generation=0)} | {id(o) for o in gc.get_objects(generation=1)}
        assert id(m) not in young  # no young collection will walk the map only to find it alive
        assert id(m) in {id(o) for o in gc.get_objects(generation=2)}
    gc.disable()
    try:
        with Database.open(path):
            assert not gc.isenabled()  # a disabled collector stays disabled
    finally:
        gc.enable()


def test_open_does_not_undo_a_freeze_the_program_made(tmp_path):
    import gc

    path = _filled(tmp_path, 10)
    sentinel = [object()]  # tracked by the collector
    gc.freeze()
    try:
        assert all(o is not sentinel for o in gc.get_objects())  # frozen: in no generation
        with Database.open(path):
            assert all(o is not sentinel for o in gc.get_objects())  # still frozen after the open
    finally:
        gc.unfreeze()
    assert any(o is sentinel for o in gc.get_objects())


def test_native_entries_are_freed_with_the_store_and_release_their_type(tmp_path):
    import gc

    from inmem.wal import fast

    if fast.entry_type is None:
        return  # pure path: tuples
    path = _filled(tmp_path, 3000)
    gc.collect()
    base = sys.getrefcount(fast.entry_type)
    db = Database.open(path)
    held = sys.getrefcount(fast.entry_type) - base
    assert held >= 3000  # each entry holds a reference to its type (a heap type)
    db.close()
    del db
    gc.collect()
    after = sys.getrefcount(fast.entry_type)  # not inside the assert: pytest's rewrite would hold one more
    assert after == base  # every entry freed, every reference given back


def test_commits_store_compact_entries_on_the_native_path_in_every_apply(tmp_path):
    from inmem.wal import fast

    with Database.open(str(tmp_path / "c")) as db:
        run = db.begin_run("r")
        db.kv.put(run, "one", 1)                       # the one-put fast path
        with db.transaction() as tx:                   # a multi-write commit: the store's apply
            tx.kv.put(run, "a", "x")
            tx.kv.put(run, "b", "y")
        reader = db.transaction()                      # an open read point: the MVCC apply
        assert reader.kv.get(run, "one") == 1
        db.kv.put(run, "one", 2)
        assert reader.kv.get(run, "one") == 1 and db.kv.get(run, "one") == 2  # the chain holds the old entry
        reader.rollback()
        entries = store_items(db)
        check_store(db)
    want = tuple if fast.make_entry is None else fast.entry_type
    assert {type(e) for e in entries.values()} == {want}


def test_make_entry_gives_the_tuple_for_what_it_cannot_hold():
    from inmem.wal import fast

    if fast.make_entry is None:
        return
    e = fast.make_entry(7, b"v")
    assert type(e) is fast.entry_type and e == (7, b"v")
    assert fast.make_entry(2**64 - 1, b"") == (2**64 - 1, b"") and type(fast.make_entry(2**64 - 1, b"")) is not tuple
    for version, value in [(-1, b"v"), (2**64, b"v"), (1, None), (1, bytearray(b"v")), (True, b"v")]:
        made = fast.make_entry(version, value)
        assert type(made) is tuple and made == (version, value)
    with pytest.raises(TypeError):
        fast.make_entry(1)
