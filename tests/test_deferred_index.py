"""Recovery defers the sorted key index: the open does not sort, the first ordered read does.

:func:`inmem.recovery.recover` fills the store's ``SortedMap`` through its dict
part and calls ``defer_index``; the run table loads from ``key_heads`` (one
walk of the keys) instead of bisections, so a reopen that is followed by
point reads never sorts a million keys. These tests attack that: every read
after a reopen against what was written, the index never built by point
reads, puts or removals, ``key_heads`` on both paths against a model, and
threads whose first scans build the index while a writer puts and deletes.
"""

from __future__ import annotations

import random
import threading

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st
from inmem import Database, native
from inmem.store import SortedMap, UnifiedStore
from inmem.testing import check_store, kernel, key_index_built
from tests.conftest import run_interleaved

native_heads = native.builtins().get("key_heads")
#: whether an open leaves the index deferred: the run table's load walks the keys in C; on the pure
#: path it builds the index instead (the tests below then check the same reads with it built)
DEFERS = native_heads is not None


def _build(path: str, runs: int = 6, per_run: int = 300, snapshot_at: int | None = 2) -> dict[str, dict[str, int]]:
    """Write keys over ``runs`` runs (deletes, an ended and an archived run, a snapshot midway); return the model."""
    model: dict[str, dict[str, int]] = {}
    db = Database.open(path)
    ids = [db.begin_run(f"r{r}") for r in range(runs)]
    rnd = random.Random(3)
    for r, run in enumerate(ids):
        model[run] = {}
        for i in rnd.sample(range(per_run * 2), per_run):
            db.kv.put(run, f"k/{i:05d}", i)
            model[run][f"k/{i:05d}"] = i
        for key in rnd.sample(sorted(model[run]), per_run // 10):
            db.kv.delete(run, key)
            del model[run][key]
        if r == snapshot_at:
            db.snapshot()
    db.end_run(ids[1])
    db.end_run(ids[2])
    db.archive_run(ids[2])
    db.close()
    return model


def test_a_reopen_defers_the_index_and_point_reads_puts_and_deletes_leave_it_deferred(tmp_path):
    path = str(tmp_path / "db")
    model = _build(path)
    with Database.open(path) as db:
        assert key_index_built(db) is not DEFERS  # recovery did not sort
        runs = sorted(model)
        # the run table loaded without the index: every run known, its status kept
        assert sorted(db.runs.ids()) == runs
        ended = sorted(list(model)[1:3])  # the second run ended, the third ended and archived
        assert sorted(r for r in runs if r not in db.runs.ids(status="active")) == ended
        assert sorted(db.runs.ids(status="completed")) == ended
        for run in runs:
            for key, value in model[run].items():
                assert db.kv.get(run, key) == value
        run = runs[0]
        db.kv.put(run, "new/1", 1)
        db.kv.put(run, "k/00000", -1)
        gone = sorted(model[run])[5]
        db.kv.delete(run, gone)
        model[run].update({"new/1": 1, "k/00000": -1})
        del model[run][gone]
        assert key_index_built(db) is not DEFERS  # none of that needed key order
        assert [k for k, _ in db.kv.scan(run)] == sorted(model[run])  # the first scan builds it
        assert key_index_built(db)
        assert db.runs.get(list(model)[2]).archived and not db.runs.get(list(model)[1]).archived
        for other in runs[1:]:
            assert dict(db.kv.scan(other)) == model[other]
        check_store(db)
    with Database.open(path) as again:  # and what was written over a deferred index survives
        assert dict(again.kv.scan(run)) == model[run]


def test_a_snapshot_taken_before_any_scan_holds_every_key(tmp_path):
    path = str(tmp_path / "db")
    model = _build(path, snapshot_at=None)
    with Database.open(path) as db:
        assert key_index_built(db) is not DEFERS
        db.snapshot()  # the capture is an ordered read: it builds the index first
        assert key_index_built(db)
    with Database.open(path) as again:
        for run, keys in model.items():
            assert dict(again.kv.scan(run)) == keys


def test_a_failed_index_build_leaves_it_deferred_for_the_next_ordered_read(tmp_path, monkeypatch):
    """A MemoryError (or KeyboardInterrupt) in the first scan's sort must not leave a partial key list
    that later scans trust: the scan fails, the index stays deferred, the next scan builds it whole."""
    from sortedcontainers import SortedList

    path = str(tmp_path / "db")
    model = _build(path, runs=3, per_run=200)
    run = list(model)[0]
    real_update = SortedList.update
    calls = [0]

    def failing_update(self, iterable):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == 1:
            self._lists.append([b"\x00partial"])  # as if the build got part-way
            self._maxes.append(b"\x00partial")
            raise MemoryError("injected")
        return real_update(self, iterable)

    with Database.open(path) as db:
        if not DEFERS:
            kernel(db)._store.sorted_map.defer_index()  # noqa: SLF001 - as the native open leaves it
        assert not key_index_built(db)
        monkeypatch.setattr(SortedList, "update", failing_update)
        with pytest.raises(MemoryError):
            list(db.kv.scan(run))
        assert not key_index_built(db)
        monkeypatch.setattr(SortedList, "update", real_update)
        assert dict(db.kv.scan(run)) == model[run]
        assert key_index_built(db)
        check_store(db)


def test_the_first_scans_race_a_writer_on_a_deferred_index(tmp_path):
    """Two readers' first scans build the index while a writer puts new keys and deletes old ones,
    the GIL switching every 10 µs: every scan sorted, no duplicate, nothing acknowledged missing, no
    phantom, no deleted key back."""
    path = str(tmp_path / "db")
    model = _build(path, runs=3, per_run=2000)
    db = Database.open(path)
    if not DEFERS:
        kernel(db)._store.sorted_map.defer_index()  # noqa: SLF001 - as the native open leaves it
    assert not key_index_built(db)
    run = list(model)[0]  # the first run: active
    initial = set(model[run])
    order = [f"n/{i:05d}" for i in range(1500)]
    random.Random(5).shuffle(order)
    doomed = sorted(initial)[::7]
    acked = [0]
    failures: list[str] = []

    def writer() -> None:
        for n, key in enumerate(order, start=1):
            db.kv.put(run, key, n)
            if n <= len(doomed):
                db.kv.delete(run, doomed[n - 1])
            acked[0] = n

    def reader() -> None:
        for _ in range(40):
            before = acked[0]
            got = [k for k, _ in db.kv.scan(run)]
            if got != sorted(set(got)):
                failures.append("a scan out of order or with a duplicate")
            if set(order[:before]) - set(got):
                failures.append("a scan missed an acknowledged key")
            if set(got) - initial - set(order):
                failures.append("a scan returned a key never written")
            if set(got) & set(doomed[:before]):
                failures.append("a scan returned a deleted key")

    run_interleaved([threading.Thread(target=writer), threading.Thread(target=reader),
                     threading.Thread(target=reader)])
    assert failures == []
    want = (initial - set(doomed[:len(order)])) | set(order)
    assert [k for k, _ in db.kv.scan(run)] == sorted(want)
    check_store(db)
    db.close()


lead_keys = st.builds(lambda lead, rest: bytes([lead]) + rest, st.sampled_from([0, 1, 2, 255]),
                      st.binary(max_size=5).map(lambda b: b.replace(b"\x00", b"\xff")) | st.binary(max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.sets(lead_keys | st.binary(max_size=2), max_size=60), st.sampled_from([0, 1, 2, 255]),
       st.integers(0, 4))
def test_key_heads_is_the_same_set_on_every_path(monkeypatch_keys, lead, width):
    want = sorted({k[1:1 + width] for k in monkeypatch_keys if k[:1] == bytes([lead])})
    indexed = SortedMap({k: (1, b"") for k in monkeypatch_keys})
    assert indexed.key_heads(lead, width) == UnifiedStore(indexed).key_heads(lead, width) == want
    assert indexed.indexed
    deferred = SortedMap()
    for k in monkeypatch_keys:
        dict.__setitem__(deferred, k, (1, b""))
    deferred.defer_index()
    assert deferred.key_heads(lead, width) == want  # the C walk if built, else by building the index
    assert deferred.indexed is (native_heads is None)  # the C walk leaves it deferred
    if native_heads is not None:
        assert sorted(native_heads(deferred, lead, width)) == want
        from inmem import store as store_module

        saved = store_module.native.builtins
        store_module.native.builtins = lambda: {}  # as on the pure path
        try:
            assert deferred.key_heads(lead, width) == want and deferred.indexed
        finally:
            store_module.native.builtins = saved
    assert list(deferred) == sorted(monkeypatch_keys) and deferred.indexed


@pytest.mark.skipif(native_heads is None, reason="native key_heads not built or INMEM_PURE=1")
def test_native_key_heads_leaves_other_shapes_to_python():
    assert native_heads([], 1, 16) is None
    assert native_heads({b"a": 1}, 256, 16) is None
    assert native_heads({b"a": 1}, -1, 16) is None
    assert native_heads({b"a": 1}, 1, -1) is None
    assert native_heads({b"\x01a": 1, "str": 2}, 1, 16) is None
    assert native_heads({b"\x01abc": 1, b"\x01abd": 2, b"\x02x": 3, b"": 4, b"\x01": 5}, 1, 2) == {b"ab", b""}
