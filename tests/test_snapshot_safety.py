"""Snapshots must never make the database less safe than its WAL alone.

* Pruning and compaction trust only snapshots that verified (written and
  re-read by this handle, or loaded by recovery); a damaged one is set aside as
  ``<name>.corrupt-<ms>``, never counted as one of the two kept (SPEC §6.2, §7).
* A failed fsync anywhere in the snapshot / compaction path poisons the
  database like a failed WAL fsync (SPEC §5, "Poisoning").
* ``close()`` waits for a snapshot or compaction in flight before it releases
  the directory lock.

Faults come from byte surgery and from a fault-injecting file system passed
through ``Database.open(..., fs=...)``; threads meet on events, never sleeps.
"""

from __future__ import annotations

import errno
import os
import threading

import pytest

from inmem import Database, DatabaseClosed, DatabaseLocked, DatabasePoisoned
from inmem.fs import OSFileSystem
from inmem.snapshot import HEADER_SIZE

from .conftest import dir_bytes
from .test_snapshot import fill, flip, segs, snaps


def set_aside(path):
    return sorted(n for n in os.listdir(path) if ".corrupt-" in n)


def two_snapshots(dbdir, after=True):
    """Writes, snapshot A, writes, snapshot B, writes (if ``after``); the WAL below A is gone.

    Returns (run, model, A, B)."""
    with Database.open(dbdir, segment_bytes=4096, snapshot_every_bytes=None, history="none") as db:
        run = db.begin_run()
        fill(db, run, 0, 150)
        a = db.snapshot()
        fill(db, run, 150, 150, gen=2)
        b = db.snapshot()
        if after:
            fill(db, run, 300, 20, gen=3)
        model = dict(db.kv.scan(run))
    assert "wal-0000000000000001.log" not in segs(dbdir)  # B deleted what A covers
    return run, model, a, b


CHUNK = HEADER_SIZE + 20  # inside the first chunk's payload
DAMAGE = {"chunk": CHUNK, "header": 40}


def reopen_matches(dbdir, run, model):
    with Database.open(dbdir) as db:
        assert dict(db.kv.scan(run)) == model
        return db.stats()["recovery"]


# --- 1, 2: only verified snapshots count ----------------------------------------------------------------------


@pytest.mark.parametrize("where", sorted(DAMAGE))
def test_compact_after_a_snapshot_fallback_keeps_a_valid_snapshot(dbdir, where):
    run, model, a, b = two_snapshots(dbdir, after=False)  # B holds the last commit
    flip(b.path, DAMAGE[where])
    with Database.open(dbdir, history="none", snapshot_every_bytes=None) as db:
        rec = db.stats()["recovery"]
        assert rec["snapshot"]["file"] == os.path.basename(a.path)
        res = db.compact()
        assert res["snapshot"] is not None, "compaction trusted the damaged newest snapshot"
        db.kv.put(run, "after", 1)
        model["after"] = 1
    rec = reopen_matches(dbdir, run, model)
    assert rec["snapshots_skipped"] == []


@pytest.mark.parametrize("where", sorted(DAMAGE))
def test_next_snapshot_after_a_fallback_does_not_count_the_damaged_one(dbdir, where):
    run, model, a, b = two_snapshots(dbdir)
    flip(b.path, DAMAGE[where])
    with Database.open(dbdir, history="none", snapshot_every_bytes=None) as db:
        c = db.snapshot()  # never the internal SnapshotError
        # kept: C and A (both valid); the WAL after A is still there to stand in for C
        assert snaps(dbdir) == sorted(os.path.basename(p) for p in (a.path, c.path))
    assert any(n.startswith(os.path.basename(b.path) + ".corrupt-") for n in set_aside(dbdir))
    flip(c.path, CHUNK)  # the newest damaged again: A plus the WAL must still rebuild everything
    rec = reopen_matches(dbdir, run, model)
    assert rec["snapshot"]["file"] == os.path.basename(a.path)


def test_recovery_sets_a_damaged_snapshot_aside_read_only_does_not(dbdir):
    run, model, a, b = two_snapshots(dbdir)
    flip(b.path, CHUNK)
    name = os.path.basename(b.path)
    before = dir_bytes(dbdir)
    with Database.open(dbdir, read_only=True) as db:
        (skipped,) = db.stats()["recovery"]["snapshots_skipped"]
        assert skipped["file"] == name and skipped["set_aside"] is None
        assert dict(db.kv.scan(run)) == model
    assert dir_bytes(dbdir) == before  # read-only changes no byte
    with Database.open(dbdir) as db:
        (skipped,) = db.stats()["recovery"]["snapshots_skipped"]
        assert skipped["file"] == name and skipped["set_aside"].startswith(name + ".corrupt-")
    assert name not in os.listdir(dbdir)
    with open(os.path.join(dbdir, skipped["set_aside"]), "rb") as f:
        assert f.read() == before[name]  # kept byte for byte, for forensics
    rec = reopen_matches(dbdir, run, model)
    assert rec["snapshots_skipped"] == [] and rec["snapshot"]["file"] == os.path.basename(a.path)


def test_pruning_verifies_a_snapshot_it_did_not_write_or_load(dbdir):
    """Defence in depth: a snapshot this handle has not verified is checked before it may count."""
    run, model, a, b = two_snapshots(dbdir)
    with Database.open(dbdir, history="none", snapshot_every_bytes=None) as db:
        assert db.stats()["recovery"]["snapshot"]["file"] == os.path.basename(b.path)
        flip(b.path, CHUNK)  # damaged after recovery loaded it ...
        db._checkpointer._known.clear()  # ... and this handle forgets it ever verified it
        db.kv.put(run, "more", 1)
        model["more"] = 1
        c = db.snapshot()
        assert snaps(dbdir) == sorted(os.path.basename(p) for p in (a.path, c.path))
        assert len(set_aside(dbdir)) == 1
    flip(c.path, CHUNK)
    rec = reopen_matches(dbdir, run, model)
    assert rec["snapshot"]["file"] == os.path.basename(a.path)


# --- 3: a failed fsync anywhere poisons ------------------------------------------------------------------------


class _File:
    def __init__(self, inner, fs):
        self._inner, self._fs = inner, fs
        self.path = inner.path

    def write(self, data):
        if self._fs.fail_write is not None and self.path.endswith(self._fs.fail_write):
            self._fs.failures += 1
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        self._inner.write(data)

    def sync(self):
        if self._fs.fail_sync is not None and self.path.endswith(self._fs.fail_sync):
            self._fs.failures += 1
            raise OSError(errno.EIO, "Input/output error (injected)")
        self._inner.sync()

    def __getattr__(self, name):
        return getattr(self._inner, name)


class FaultyFS(OSFileSystem):
    """The real disk; file fsyncs of names ending in ``fail_sync``, writes of names ending in ``fail_write``,
    and the directory fsync (``fail_sync_dir``) fail on demand."""

    def __init__(self):
        self.fail_sync: str | None = None
        self.fail_write: str | None = None
        self.fail_sync_dir = False
        self.failures = 0

    def create(self, path):
        return _File(super().create(path), self)

    def sync_dir(self, path):
        if self.fail_sync_dir:
            self.failures += 1
            raise OSError(errno.EIO, "Input/output error (injected)")
        super().sync_dir(path)


def assert_poisoned_then_recovers(db, dbdir, run, model):
    assert db.stats()["poisoned"] is True
    for call in (lambda: db.kv.put(run, "x", 1), lambda: db.begin_run(), db.sync, db.snapshot, db.compact):
        with pytest.raises(DatabasePoisoned):
            call()
    assert dict(db.kv.scan(run)) == model  # reads keep working
    db.close()
    reopen_matches(dbdir, run, model)  # every acknowledged commit


def _arm(fs, fault):
    if fault == "snapshot-file-fsync":
        fs.fail_sync = ".snap.tmp"
    else:
        fs.fail_sync_dir = True


@pytest.mark.parametrize("fault", ["snapshot-file-fsync", "directory-fsync"])
def test_failed_fsync_during_snapshot_poisons(dbdir, fault):
    fs = FaultyFS()
    db = Database.open(dbdir, durability="strict", snapshot_every_bytes=None, fs=fs)
    run = db.begin_run()
    fill(db, run, 0, 50)
    model = dict(db.kv.scan(run))
    _arm(fs, fault)
    with pytest.raises(DatabasePoisoned) as info:
        db.snapshot()
    assert isinstance(info.value.__cause__, OSError) and fs.failures == 1
    fs.fail_sync, fs.fail_sync_dir = None, False
    assert_poisoned_then_recovers(db, dbdir, run, model)


def test_failed_directory_fsync_while_pruning_poisons(dbdir):
    """The third snapshot deletes the first: that deletion's directory fsync fails."""
    fs = FaultyFS()
    db = Database.open(dbdir, durability="strict", snapshot_every_bytes=None, history="keep", fs=fs)
    run = db.begin_run()
    for i in range(2):
        fill(db, run, 100 * i, 10)
        db.snapshot()
    fill(db, run, 200, 10)
    model = dict(db.kv.scan(run))
    real = fs.sync_dir
    calls = []

    def sync_dir(path):  # the first directory fsync (after the rename) passes, the one after the deletion fails
        calls.append(path)
        fs.fail_sync_dir = len(calls) > 1
        real(path)

    fs.sync_dir = sync_dir
    with pytest.raises(DatabasePoisoned):
        db.snapshot()
    fs.sync_dir, fs.fail_sync_dir = real, False
    assert len(calls) == 2
    assert_poisoned_then_recovers(db, dbdir, run, model)


def test_failed_directory_fsync_while_compacting_poisons(dbdir):
    fs = FaultyFS()
    db = Database.open(dbdir, durability="strict", segment_bytes=4096, snapshot_every_bytes=None,
                       history="none", fs=fs)
    run = db.begin_run()
    fill(db, run, 0, 200)
    db.snapshot()
    model = dict(db.kv.scan(run))
    fs.fail_sync_dir = True  # no commit since the snapshot: compact only deletes, then fsyncs the directory
    with pytest.raises(DatabasePoisoned):
        db.compact()
    fs.fail_sync_dir = False
    assert fs.failures == 1
    assert_poisoned_then_recovers(db, dbdir, run, model)


def test_failed_fsync_in_an_automatic_snapshot_poisons(dbdir):
    fs = FaultyFS()
    fs.fail_sync = ".snap.tmp"
    db = Database.open(dbdir, durability="strict", snapshot_every_bytes=16 * 1024, fs=fs)
    run = db.begin_run()
    acked = {}
    i = 0
    while db._checkpointer._thread.is_alive() and i < 5000:  # the thread exits once the database is poisoned
        try:
            db.kv.put(run, f"k{i:05d}", i)
        except DatabasePoisoned:
            break
        acked[f"k{i:05d}"] = i
        i += 1
    assert db.stats()["poisoned"] is True, "a failed snapshot fsync left the database accepting commits"
    db._checkpointer._thread.join()
    assert fs.failures == 1 and db.stats()["snapshots"]["failures"] == 1
    fs.fail_sync = None
    assert_poisoned_then_recovers(db, dbdir, run, acked)


def test_failed_write_of_the_snapshot_file_poisons(dbdir):
    """ENOSPC while writing the .tmp: it is removed, snapshot() raises DatabasePoisoned (chained to the
    OSError), no later commit is acknowledged, and reopening keeps every acknowledged commit (issue 20:
    any failed write in the database directory poisons, not only the WAL's)."""
    fs = FaultyFS()
    db = Database.open(dbdir, durability="strict", snapshot_every_bytes=None, fs=fs)
    run = db.begin_run()
    fill(db, run, 0, 20)
    model = dict(db.kv.scan(run))
    fs.fail_write = ".snap.tmp"
    with pytest.raises(DatabasePoisoned) as info:
        db.snapshot()
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert not [n for n in os.listdir(dbdir) if n.endswith(".tmp")]
    fs.fail_write = None
    assert_poisoned_then_recovers(db, dbdir, run, model)
    with Database.open(dbdir, durability="strict") as again:  # space is back: a healthy database
        again.kv.put(run, "after", 1)
        assert again.snapshot().commit_version == again.stats()["commit_version"]


# --- 4: close waits for a snapshot or compaction in flight ------------------------------------------------------


class BlockingFS(OSFileSystem):
    """The first write of a ``.snap.tmp`` signals ``entered`` and waits for ``release``."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()

    def create(self, path):
        f = super().create(path)
        if not path.endswith(".snap.tmp"):
            return f
        fs = self

        class Blocking:
            def __getattr__(self, name):
                return getattr(f, name)

            def write(self, data):
                if not fs.entered.is_set():
                    fs.entered.set()
                    assert fs.release.wait(30)
                f.write(data)

        return Blocking()


@pytest.mark.parametrize("call", ["snapshot", "compact"])
def test_close_waits_for_a_snapshot_in_flight(dbdir, call):
    fs = BlockingFS()
    db = Database.open(dbdir, snapshot_every_bytes=None, history="none", fs=fs)
    run = db.begin_run()
    fill(db, run, 0, 30)
    model = dict(db.kv.scan(run))
    outcome: list[object] = []

    def snapshot():
        try:
            outcome.append(getattr(db, call)())
        except BaseException as exc:  # noqa: BLE001 - asserted below
            outcome.append(exc)

    snapper = threading.Thread(target=snapshot)
    snapper.start()
    assert fs.entered.wait(30)  # inside the write of the .snap.tmp
    closer = threading.Thread(target=db.close)
    closer.start()
    closer.join(0.5)  # bounded: close must *not* return while the snapshot runs
    try:
        assert closer.is_alive(), "close() returned while a snapshot was being written"
        with pytest.raises(DatabaseLocked):  # and the directory is still ours
            Database.open(dbdir)
    finally:
        fs.release.set()
        closer.join()
        snapper.join()
    (result,) = outcome
    assert not isinstance(result, BaseException) or isinstance(result, DatabaseClosed), repr(result)
    rec = reopen_matches(dbdir, run, model)
    assert rec["snapshots_skipped"] == [] and rec["removed_temporaries"] == []


def test_snapshot_after_close_started_raises_database_closed(dbdir):
    db = Database.open(dbdir, snapshot_every_bytes=None)
    checkpointer = db._checkpointer
    db.close()
    with pytest.raises(DatabaseClosed):
        checkpointer.take()
    with pytest.raises(DatabaseClosed):
        checkpointer.compact()


# --- 5: progress reports completion only when the snapshot is done -------------------------------------------------


def test_snapshot_progress_reports_completion_only_when_done(dbdir):
    """The (n, n) progress call was made inside the file write, before verification, pruning and ``taken += 1``
    (what made test_automatic_snapshot_every_s flaky)."""
    seen = []
    box = {}

    def progress(phase, done, total):
        if phase == "snapshot" and done == total:
            seen.append((box["db"].stats()["snapshots"]["taken"], len(snaps(dbdir))))

    with Database.open(dbdir, snapshot_every_bytes=None, progress=progress) as db:
        box["db"] = db
        run = db.begin_run()
        for i in range(3):
            db.kv.put(run, "k", i)
            db.snapshot()
        db.kv.put(run, "k", 3)
        db.compact()
    assert seen == [(1, 1), (2, 2), (3, 2), (4, 2)]  # counted, and the third already pruned the first


class _NoSidecarSpace(OSFileSystem):
    """The real disk, except that creating a history sidecar fails with ENOSPC while ``full`` is set."""

    full = False

    def create(self, path):
        if self.full and os.path.basename(path).startswith("hist-"):
            raise OSError(errno.ENOSPC, "No space left on device (injected)", path)
        return super().create(path)


def test_a_failed_history_sidecar_write_poisons(dbdir):
    """Sidecars are a cache (never fsynced, rebuilt on open), but a failed write in the database directory
    poisons all the same (issue 20); nothing acknowledged is lost and the history is rebuilt on reopen."""
    fs = _NoSidecarSpace()
    db = Database.open(dbdir, fs=fs, segment_bytes=4096, snapshot_every_bytes=None)
    run = db.begin_run()
    for i in range(200):
        db.kv.put(run, f"k{i}", "x" * 50)
    db.sync()
    model = dict(db.kv.scan(run))
    fs.full = True
    with pytest.raises(DatabasePoisoned) as info:
        db.snapshot()
        db.snapshot()  # two valid snapshots: pruning runs and saves sidecars too
    assert info.value.__cause__.errno == errno.ENOSPC
    assert db.stats()["poisoned"] is True
    with pytest.raises(DatabasePoisoned):
        db.kv.put(run, "after", 1)
    assert not any(n.startswith("hist-") and n.endswith(".idx") for n in os.listdir(dbdir))
    fs.full = False
    db.close()
    with Database.open(dbdir) as again:
        assert dict(again.kv.scan(run)) == model
        assert again.replay_run(run) == again.run_state(run)  # history rebuilt from the WAL
