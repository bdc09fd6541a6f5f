"""An fsync or write error poisons the database: that commit raises, later writes raise, reads work,
and the bytes of the failed write are never written again.

Faults come from patching ``os.fsync`` (as the issue asks) and from a
fault-injecting file system passed through the VFS seam.
"""

from __future__ import annotations

import errno
import os
import threading

import pytest

from inmem import Database, DatabasePoisoned
from inmem.fs import OSFileSystem


class _PartialWriteFile:
    """Wraps a real file; the N-th write lands half its bytes, then fails with ENOSPC."""

    def __init__(self, inner, fs):
        self._inner, self._fs = inner, fs
        self.path = inner.path

    def write(self, data):
        fs = self._fs
        if fs.fail_writes and self.path.endswith(".log"):
            half = bytes(memoryview(data)[: len(data) // 2])
            self._inner.write(half)
            fs.failed_payloads.append(bytes(data))
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        self._inner.write(data)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class FaultyFS(OSFileSystem):
    """The real disk, with a switch that makes WAL writes fail part-way."""

    def __init__(self):
        self.fail_writes = False
        self.failed_payloads: list[bytes] = []

    def open_append(self, path):
        return _PartialWriteFile(super().open_append(path), self)


def _fail_fsync(monkeypatch):
    calls = []

    def fsync(fd):
        calls.append(fd)
        raise OSError(errno.EIO, "Input/output error (injected)")

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_strict_fsync_failure_poisons(dbdir, monkeypatch):
    db = Database.open(dbdir, durability="strict")
    run = db.begin_run()
    db.kv.put(run, "ok", 1)
    calls = _fail_fsync(monkeypatch)
    with pytest.raises(DatabasePoisoned) as info:
        db.kv.put(run, "lost?", 2)
    assert isinstance(info.value.__cause__, OSError)
    n = len(calls)
    # every later write raises, without touching the disk again
    for call in (lambda: db.kv.put(run, "x", 3), lambda: db.kv.delete(run, "ok"),
                 lambda: db.kv.delete(run, "absent"), lambda: db.begin_run(), lambda: db.end_run(run), db.sync):
        with pytest.raises(DatabasePoisoned):
            call()
    assert len(calls) == n, "a poisoned database retried an fsync"
    # reads still work; they show what this handle applied, the failed commit included (SPEC §5)
    assert db.kv.get(run, "ok") == 1
    assert dict(db.kv.scan(run))["ok"] == 1
    assert db.kv.get(run, "lost?") == 2  # applied before its fsync failed: on disk or not, unknown
    assert db.stats()["poisoned"] is True
    db.close()  # releases the lock without writing
    monkeypatch.undo()
    with Database.open(dbdir) as db2:
        assert db2.kv.get(run, "ok") == 1
        db2.kv.put(run, "after", 4)  # a reopened database is healthy


def test_batched_flusher_failure_poisons_later_commits(dbdir, monkeypatch):
    db = Database.open(dbdir, durability="batched", flush_interval_ms=60_000)
    run = db.begin_run()
    db.kv.put(run, "a", 1)
    _fail_fsync(monkeypatch)
    with pytest.raises(DatabasePoisoned):
        db.sync()  # the flush the background thread would do, run here so the test need not wait
    with pytest.raises(DatabasePoisoned):
        db.kv.put(run, "b", 2)
    assert db.kv.get(run, "a") == 1
    db.close()


def test_failed_write_bytes_are_never_written_again(dbdir):
    fs = FaultyFS()
    db = Database.open(dbdir, durability="strict", fs=fs)
    run = db.begin_run()
    db.kv.put(run, "ok", "kept")
    seg = os.path.join(dbdir, "wal-0000000000000001.log")
    size_before = os.path.getsize(seg)
    fs.fail_writes = True
    with pytest.raises(DatabasePoisoned):
        db.kv.put(run, "doomed", "x" * 1000)
    fs.fail_writes = False  # the disk "recovers": nothing may now write the failed bytes again
    with pytest.raises(DatabasePoisoned):
        db.kv.put(run, "later", 1)
    db.close()
    after = open(seg, "rb").read()
    (failed,) = fs.failed_payloads
    assert len(after) == size_before + len(failed) // 2  # only the half that landed before ENOSPC
    assert failed not in after
    # recovery treats the half-written frame as a torn tail and keeps every acknowledged commit
    with Database.open(dbdir) as db2:
        rec = db2.stats()["recovery"]
        assert rec["torn_tail"]["bytes_dropped"] == len(failed) // 2
        assert db2.kv.get(run, "ok") == "kept" and db2.kv.get(run, "doomed") is None


def test_concurrent_committers_all_see_the_poison(dbdir, monkeypatch):
    db = Database.open(dbdir, durability="strict")
    run = db.begin_run()
    _fail_fsync(monkeypatch)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker(i):
        barrier.wait()
        try:
            db.kv.put(run, f"k{i}", i)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 4 and all(isinstance(e, DatabasePoisoned) for e in errors)
    db.close()
