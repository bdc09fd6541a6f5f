"""The kernel's inline one-put path writes exactly what its general commit path writes.

``Kernel.commit_one`` (every autocommit ``kv.put`` and one-key primitive
write) runs ``_append_locked``'s one-put branch inline when nothing else is
due (no read point, watcher or listener; an active run; an open database).
Two copies of one database run the same writes under the same clock, one
with a listener attached, so every commit of that copy takes the general
path: the WAL files must come out byte for byte the same, and so must the
state, the history index and the counters. The conditions that send a put
to the general path are attacked one by one.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import threading
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inmem import Database
from inmem.errors import DatabaseClosed, RunClosed
from inmem.testing import check_store, kernel, store_items


class _Tick:
    """A database clock that moves one millisecond per call (the same sequence in both copies)."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        self.t += 0.001
        return self.t


def _base(tmp_path):
    base = str(tmp_path / "base")
    with Database.open(base, clock=_Tick()) as db:
        runs = [db.begin_run(f"r{i}") for i in range(3)]
        db.kv.put(runs[0], "seed", 1)
        db.end_run(runs[2])  # writes to it raise RunClosed in both copies
    return base, runs


def _wal_bytes(path: str) -> dict[str, bytes]:
    out = {}
    for name in sorted(glob.glob(os.path.join(path, "wal-*.log"))):
        with open(name, "rb") as f:
            out[os.path.basename(name)] = f.read()
    return out


writes = st.lists(st.tuples(
    st.sampled_from(["put", "put_ttl", "delete", "event", "state", "tx"]),
    st.integers(0, 2), st.sampled_from(["a", "b", "c", "d/1", "d/2"]),
    st.one_of(st.integers(), st.text(max_size=8), st.dictionaries(st.text(max_size=3), st.integers(), max_size=3)),
), min_size=1, max_size=40)


def _apply(db, runs, ops) -> list[object]:
    """Run ``ops``; return what each returned or raised (type), to compare the copies by."""
    seen: list[object] = []
    for op, r, key, value in ops:
        run = runs[r]
        try:
            if op == "put":
                db.kv.put(run, key, value)
            elif op == "put_ttl":
                db.kv.put(run, key, value, ttl=60)
            elif op == "delete":
                db.kv.delete(run, key)
            elif op == "event":
                db.events.append(run, "e", {"v": value})
            elif op == "state":
                db.state.set(run, key, value)
            else:
                with db.transaction() as tx:
                    tx.kv.put(run, key, value)
                    tx.kv.put(run, key + "/tx", value)
            seen.append(op)
        except RunClosed as exc:
            seen.append(type(exc))
    return seen


@settings(max_examples=40, deadline=None)
@given(ops=writes)
def test_the_inline_put_writes_the_same_wal_bytes_as_the_general_path(tmp_path_factory, ops):
    tmp = tmp_path_factory.mktemp("fast")
    base, runs = _base(tmp)
    results = {}
    for name, general in (("fast", False), ("general", True)):
        path = str(tmp / name)
        shutil.copytree(base, path)
        record_clock = itertools.count(1_800_000_000_000_000).__next__  # events and states stamp records
        with mock.patch("inmem.primitives.events.now_us", record_clock), \
                mock.patch("inmem.primitives.state.now_us", record_clock), Database.open(path, clock=_Tick()) as db:
            if general:
                kernel(db).listen(lambda version, ts_us, writes: None)  # every commit: the general path
            seen = _apply(db, runs, ops)
            check_store(db)
            history = [[(c.version, c.ts) for c in db.history(run)] for run in runs]
            results[name] = (seen, store_items(db), history)
        results[name] += (_wal_bytes(path),)
    assert results["fast"] == results["general"]


def test_what_sends_a_put_to_the_general_path_still_works(tmp_path):
    with Database.open(str(tmp_path / "db")) as db:
        run, other = db.begin_run("r"), db.begin_run("other")
        db.end_run(other)
        with pytest.raises(RunClosed):
            db.kv.put(other, "k", 1)  # an ended run
        with db.transaction() as tx:  # an open read point: the MVCC apply keeps what it reads
            before = tx.kv.get(run, "k")
            db.kv.put(run, "k", 2)
            assert tx.kv.get(run, "k") == before is None
        db.kv.delete(run, "k")  # a delete is never the one-put branch
        assert db.kv.get(run, "k") is None
        db.kv.put(run, "k", 3)
        assert db.kv.get(run, "k") == 3 and [k for k, _ in db.kv.scan(run)] == ["k"]
        check_store(db)
    db.close()
    with pytest.raises(DatabaseClosed):
        db.kv.put(run, "k", 4)
    with Database.open(str(tmp_path / "db")) as db:
        assert db.kv.get(run, "k") == 3


def test_scans_and_snapshots_racing_puts_of_new_keys_miss_none_and_see_no_phantom(tmp_path):
    """New keys wait as fresh keys until an ordered read sorts them in: attack that with threads.

    A writer puts 3,000 new keys in random order, one commit each, and publishes how many are
    acknowledged; two readers scan the run and take snapshots meanwhile, the GIL switching
    every 10 µs. Every scan must be sorted, without duplicates, hold every key acknowledged before it
    began and nothing never written; after a reopen from the last snapshot plus the WAL, all is there.
    """
    import random

    from tests.conftest import run_interleaved

    path = str(tmp_path / "db")
    db = Database.open(path)
    run = db.begin_run("r")
    for i in range(0, 600, 2):
        db.kv.put(run, f"k/{i:05d}", i)  # some keys sorted in already
    list(db.kv.scan(run))
    order = [f"k/{i:05d}" for i in range(1, 6000, 2)]
    random.Random(7).shuffle(order)
    written = {f"k/{i:05d}" for i in range(0, 600, 2)} | set(order)
    acked = [0]
    failures: list[str] = []

    def writer() -> None:
        for n, key in enumerate(order, start=1):
            db.kv.put(run, key, n)
            acked[0] = n

    def reader(snapshots: bool) -> None:
        for step in range(150):
            before = acked[0]
            got = [k for k, _ in db.kv.scan(run)]
            if got != sorted(set(got)):
                failures.append("a scan out of order or with a duplicate")
            missing = set(order[:before]) - set(got)
            if missing:
                failures.append(f"a scan missed {len(missing)} acknowledged keys")
            if set(got) - written:
                failures.append("a scan returned a key never written")
            if snapshots and step % 50 == 0:
                db.snapshot()

    run_interleaved([threading.Thread(target=writer), threading.Thread(target=reader, args=(False,)),
                     threading.Thread(target=reader, args=(True,))])
    assert failures == []
    check_store(db)
    db.snapshot()
    db.kv.put(run, "z/after-snapshot", 1)
    db.close()
    with Database.open(path) as again:
        assert [k for k, _ in again.kv.scan(run, "k/")] == sorted(written)
        assert again.kv.get(run, "z/after-snapshot") == 1
        check_store(again)


@pytest.mark.parametrize("path", ["inline", "general", "transaction"])
def test_a_failure_after_the_frame_is_appended_poisons_instead_of_reusing_the_version(tmp_path, monkeypatch, path):
    """An exception between the WAL append and the version bump (no memory in the store write, a
    KeyboardInterrupt in its Python code) must not let the next commit reuse the commit version: that
    WAL would hold two frames with one version, and recovery would refuse it as corrupt. The
    database is poisoned instead, after writing what was appended; a reopen recovers every
    acknowledged commit (batched mode included), and the failed one whole or not at all."""
    from inmem.errors import DatabasePoisoned
    from inmem.store import UnifiedStore

    db_path = str(tmp_path / "db")
    db = Database.open(db_path)
    run = db.begin_run("r")
    db.kv.put(run, "before", 1)
    k = kernel(db)
    if path == "general":
        k.listen(lambda version, ts_us, writes: None)

    def failing(*args):
        raise MemoryError("injected")

    with monkeypatch.context() as patch:
        patch.setattr(k, "_put_version", failing)
        patch.setattr(UnifiedStore, "apply", failing)
        with pytest.raises(MemoryError):
            if path == "transaction":
                with db.transaction() as tx:
                    tx.kv.put(run, "failed", 2)
                    tx.kv.put(run, "failed2", 2)
            else:
                db.kv.put(run, "failed", 2)
    with pytest.raises(DatabasePoisoned):
        db.kv.put(run, "after", 3)
    db.close()  # the poisoning was reported (by that put): close does not raise it again
    with Database.open(db_path) as again:
        assert again.kv.get(run, "before") == 1
        assert again.kv.get(run, "after") is None
        failed = [again.kv.get(run, k) for k in (("failed", "failed2") if path == "transaction" else ("failed",))]
        assert failed in ([None] * len(failed), [2] * len(failed))
        check_store(again)
