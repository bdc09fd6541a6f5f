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
from inmem.testing import check_store, kernel, store_items

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
    cold = kernel(db)._store.sorted_map.cold  # noqa: SLF001 - the recovered records, in C until drained
    cold_type = type(cold) if cold is not None else None
    cold_base = sys.getrefcount(cold_type) if cold is not None else 0
    del cold
    assert len(store_items(db)) >= 3000  # an ordered read: the cold table drained into entries
    held = sys.getrefcount(fast.entry_type) - base
    assert held >= 3000  # each entry holds a reference to its type (a heap type)
    db.close()
    del db
    gc.collect()
    after = sys.getrefcount(fast.entry_type)  # not inside the assert: pytest's rewrite would hold one more
    assert after == base  # every entry freed, every reference given back
    if cold_type is not None:
        cold_after = sys.getrefcount(cold_type)
        assert cold_after == cold_base - 1  # the table freed with the store (a GC cycle through its map)


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


# --- fresh keys: new keys join the sorted list when order is next needed --------------------------

native_put = __import__("inmem.native", fromlist=["builtins"]).builtins().get("put_version")
native_heads = __import__("inmem.native", fromlist=["builtins"]).builtins().get("key_heads")
ORDER_OPS = ("irange", "irange_rev", "bisect_left", "bisect_right", "iter", "reversed", "items", "keys_index",
             "peekitem", "ceiling", "islice", "index", "check", "scan", "count", "last")
fresh_ops = st.lists(st.one_of(
    st.tuples(st.sampled_from(["set", "put_version", "setdefault", "pop", "del", "store_delete", "apply"]), keys),
    st.tuples(st.sampled_from(ORDER_OPS), keys),
    st.tuples(st.sampled_from(["popitem", "update_small", "update_big", "copy", "pickle", "clear", "index_keys",
                               "burst", "defer_index", "key_heads"]), keys),
), max_size=120)
#: the operations after which a deferred index must be built (every other one leaves it deferred); the
#: test's popitem, keys_index, peekitem and index run only on a non-empty map or a stored key, and a
#: pickle builds it only of a non-empty map (dict.copy iterates a SortedDict in key order)
BUILDS = {*ORDER_OPS, "copy", "index_keys"} - {"keys_index", "peekitem", "index"}


@settings(max_examples=400, deadline=None)
@given(fresh_ops, st.sampled_from([4, 8, 1000]))
def test_fresh_keys_never_hide_from_an_ordered_read(ops, load):
    """Every mutation and every ordered read of SortedMap, interleaved, against a dict and ``sorted``.

    Puts go through ``__setitem__`` and the native ``put_version`` (the kernel's path), deletes through
    ``pop``, ``del``, ``popitem`` and the store's ``apply``; each ordered read must see every key and
    only the live ones, and ``_check`` (fresh keys distinct, live, not sorted) must hold throughout.
    ``defer_index`` (what recovery calls) may come at any point: only an ordered read builds the
    index again, never a point read, a put or a removal, and ``key_heads`` answers without building it.
    """
    model: dict[bytes, tuple[int, bytes]] = {}
    m = SortedMap()
    m._reset(load)  # small sublists: the grouped merge and its splits run (store._merge_groups)
    store = UnifiedStore(m)
    put_version = store.put_version
    version = 0
    deferred = False
    for op, key in ops:
        version += 1
        ordered = sorted(model)
        if op == "defer_index":
            m.defer_index()
            deferred = True
        elif op == "key_heads":  # the C walk leaves a deferred index deferred; without it, it is built
            deferred = deferred and native_heads is not None
            lead = key[0] if key else 0
            want = sorted({k[1:3] for k in model if k[:1] == bytes((lead,))})
            assert m.key_heads(lead, 2) == store.key_heads(lead, 2) == want
        elif op == "set":
            m[key] = model[key] = (version, key)
        elif op == "put_version":
            put_version(key, version, key)
            model[key] = (version, key)
        elif op == "setdefault":
            assert m.setdefault(key, (version, key)) == model.setdefault(key, (version, key))
        elif op == "pop":
            assert m.pop(key, None) == model.pop(key, None)
        elif op == "del":
            if key in model:
                del m[key]
                del model[key]
            else:
                with pytest.raises(KeyError):
                    del m[key]
        elif op == "store_delete":
            assert store.delete(key) == (model.pop(key, None) is not None)
        elif op == "apply":
            store.apply(version, [(key, None), (key + b"a", b"v"), (key + b"b", None)])
            model.pop(key, None)
            model[key + b"a"] = (version, b"v")
            model.pop(key + b"b", None)
        elif op == "popitem":
            if model:
                deferred = False
                got = m.popitem(0)
                assert got[0] == ordered[0] and got[1] == model.pop(ordered[0])
        elif op == "burst":  # many fresh keys at once, around and beyond what is stored
            for i in range(0, 40, 3):
                put_version(key + bytes([i]), version, b"b")
                model[key + bytes([i])] = (version, b"b")
        elif op == "update_small":
            pairs = {key: (version, b"u"), key + b"z": (version, b"u")}
            m.update(pairs)
            model.update(pairs)
        elif op == "update_big":
            pairs = {key + bytes([i]): (version, b"b") for i in range(12)}
            m.update(pairs)
            model.update(pairs)
        elif op == "copy":
            m2 = m.copy()
            assert list(m2.items()) == sorted(model.items())
        elif op == "pickle":
            deferred = deferred and not model
            m2 = pickle.loads(pickle.dumps(m))
            assert type(m2) is SortedMap and list(m2.items()) == sorted(model.items())
        elif op == "clear":
            m.clear()
            model.clear()
        elif op == "index_keys":
            m.index_keys()
        elif op == "irange":
            assert list(m.irange(key)) == [k for k in ordered if k >= key]
        elif op == "irange_rev":
            assert list(m.irange(None, key, reverse=True)) == [k for k in reversed(ordered) if k <= key]
        elif op == "bisect_left":
            assert m.bisect_left(key) == bisect.bisect_left(ordered, key)
        elif op == "bisect_right":
            assert m.bisect_right(key) == m.bisect(key) == bisect.bisect_right(ordered, key)
        elif op == "iter":
            assert list(m) == ordered
        elif op == "reversed":
            assert list(reversed(m)) == ordered[::-1]
        elif op == "items":
            assert list(m.items()) == sorted(model.items())
        elif op == "keys_index":
            if ordered:
                deferred = False
                assert m.keys()[len(ordered) // 2] == ordered[len(ordered) // 2]
                assert m.items()[-1] == (ordered[-1], model[ordered[-1]])
        elif op == "peekitem":
            if ordered:
                deferred = False
                assert m.peekitem(0) == (ordered[0], model[ordered[0]])
        elif op == "ceiling":
            i = bisect.bisect_left(ordered, key)
            assert m.ceiling(key) == (ordered[i] if i < len(ordered) else None)
        elif op == "islice":
            assert list(m.islice(1, 4)) == ordered[1:4]
        elif op == "index":
            if key in model:
                deferred = False
                assert m.index(key) == ordered.index(key)
        elif op == "check":
            m._check()
        elif op == "scan":
            assert store.scan(key, None) == [(k, model[k]) for k in ordered if k >= key]
        elif op == "count":
            assert store.count(key, key + b"\xff") == sum(1 for k in ordered if key <= k < key + b"\xff")
        elif op == "last":
            want = [k for k in ordered if key <= k < key + b"\xff"]
            assert store.last(key, key + b"\xff") == ((want[-1], model[want[-1]]) if want else None)
        if op in BUILDS:
            deferred = False
        assert m.indexed is not deferred, op
        assert len(m) == len(model) and all((k in m) == True for k in model)  # noqa: E712
        assert dict.__len__(m) == len(model) and {k: tuple(v) for k, v in dict.items(m)} == model
    m._check()
    assert list(m.items()) == sorted(model.items())


def test_new_keys_wait_for_the_next_ordered_read_and_removals_sort_them_in_first():
    m = SortedMap()
    store = UnifiedStore(m)
    for i in (5, 1, 3):
        store.put_version(b"k%d" % i, i, b"v")
    m[b"k2"] = (2, b"v")
    m[b"k1"] = (9, b"w")  # a key already there stays where it is: not fresh twice
    assert sorted(m.fresh_keys()) == [b"k1", b"k2", b"k3", b"k5"] and len(m._sorted) == 0
    m._check()
    assert store.scan(b"", None)[0] == (b"k1", (9, b"w"))  # the read sorts them in
    assert m.fresh_keys() == [] and list(m._sorted) == [b"k1", b"k2", b"k3", b"k5"]
    m[b"k0"] = (1, b"v")
    assert m.pop(b"k0") == (1, b"v")  # a fresh key removed: sorted in first, then removed
    assert m.fresh_keys() == [] and b"k0" not in m._sorted
    m[b"k4"] = (1, b"v")
    del m[b"k4"]  # removed from the dict before the list: still never left behind
    assert list(m) == [b"k1", b"k2", b"k3", b"k5"]
    m._check()


@pytest.mark.skipif(native_put is None, reason="native put_version not built or INMEM_PURE=1")
def test_native_put_version_refuses_bad_arguments_and_stores_what_make_entry_makes():
    m = SortedMap()
    fresh = m.fresh_keys()
    with pytest.raises(TypeError):
        native_put({}, [], 9, None, b"k", 1)
    with pytest.raises(TypeError):
        native_put(m, (), 9, None, b"k", 1, b"v")
    with pytest.raises(TypeError):
        native_put(m, fresh, 9, object(), b"k", 1, b"v")  # cold: a cold table or None
    native_put(m, fresh, 9, None, b"k", 2**64, b"v")  # a version out of the entry's range: the tuple
    assert type(m[b"k"]) is tuple and m[b"k"] == (2**64, b"v") and m.fresh_keys() == [b"k"]
    native_put(m, fresh, 9, None, b"k", 3, b"w")
    assert m[b"k"] == (3, b"w") and type(m[b"k"]) is not tuple and m.fresh_keys() == [b"k"]
    with pytest.raises(TypeError):
        native_put(m, fresh, 9, None, [b"unhashable"], 1, b"v")  # nothing stored
    assert list(m.items()) == [(b"k", (3, b"w"))]
    m._check()


@pytest.mark.parametrize("pattern", ["append", "interleave", "cluster", "random", "before_all"])
@pytest.mark.parametrize("count", [1, 12, 40, 99, 150])
def test_the_grouped_merge_keeps_sortedcontainers_invariants(monkeypatch, pattern, count):
    """400 sorted keys in sublists of 4..8, then ``count`` fresh keys in one pattern: one ordered read
    sorts them in by sublist (``_merge_groups``, checked to run; 100 keys or more: one sort of all),
    and every SortedList invariant holds."""
    import random

    import inmem.sortedmap as sortedmap_module

    calls = []
    real = sortedmap_module._merge_groups
    monkeypatch.setattr(sortedmap_module, "_merge_groups", lambda sl, fresh: (calls.append(len(fresh)), real(sl, fresh)))
    m = SortedMap({b"k%05d" % (2 * i): (1, b"") for i in range(400)})
    m._reset(4)
    rnd = random.Random(count)
    fresh = {
        "append": [b"k%05d" % (1000 + i) for i in range(count)],
        "interleave": [b"k%05d" % (2 * i + 1) for i in range(count)],
        "cluster": [b"k%05d" % (301) + bytes([i]) for i in range(count)],
        "random": rnd.sample([b"k%05d" % (2 * i + 1) for i in range(400)], count),
        "before_all": [b"a%05d" % i for i in range(count)],
    }[pattern]
    for key in fresh:
        m[key] = (2, b"")
    assert list(m) == sorted([b"k%05d" % (2 * i) for i in range(400)] + fresh)
    assert calls == ([count] if count * 4 < 400 else [])
    m._check()
    assert m._sorted._index == [] or m._sorted._index[0] == len(m)
    assert m.keys()[count] == sorted(m)[count]  # the positional index, rebuilt


@pytest.mark.parametrize("path", ["setitem", "put_version"])
def test_at_most_fresh_limit_keys_wait(path):
    """The put that brings the fresh keys to FRESH_LIMIT sorts them in: no pause grows past that."""
    import inmem.store as store_module

    m = SortedMap({b"k%06d" % i: (1, b"") for i in range(0, 100, 2)})
    store = UnifiedStore(m)
    put = (lambda k: m.__setitem__(k, (2, b""))) if path == "setitem" else (lambda k: store.put_version(k, 2, b""))
    limit = store_module.FRESH_LIMIT
    for i in range(limit - 1):
        put(b"n%06d" % i)
    assert len(m.fresh_keys()) == limit - 1
    put(b"n%06d" % (limit - 1))
    assert m.fresh_keys() == [] and len(m._sorted) == 50 + limit
    put(b"a")
    assert m.fresh_keys() == [b"a"]
    m._check()
    assert list(m)[:2] == [b"a", b"k000000"]
