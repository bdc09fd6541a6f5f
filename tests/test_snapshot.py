"""Snapshots: the file format's checks, recovery's fallback, WAL truncation, and automatic snapshots.

Byte surgery on real snapshot files; crash points and concurrent writers are
in test_snapshot_crash.py and test_snapshot_concurrency.py.
"""

from __future__ import annotations

import os
import threading

import pytest

from inmem import CorruptionError, Database, InvalidArgument
from inmem.fs import OSFileSystem
from inmem.snapshot import (
    HEADER_SIZE,
    SnapshotError,
    parse_snapshot_name,
    read_snapshot,
    snapshot_name,
)
from inmem.wal.format import parse_segment_name


def snaps(path):
    return sorted(n for n in os.listdir(path) if parse_snapshot_name(n) is not None)


def segs(path):
    return sorted(n for n in os.listdir(path) if parse_segment_name(n) is not None)


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def fill(db, run, start, n, **extra):
    for i in range(start, start + n):
        db.kv.put(run, f"k{i:05d}", {"i": i, **extra})


def test_snapshot_names_roundtrip():
    assert snapshot_name(0x12D) == "snapshot-000000000000012d.snap"
    assert parse_snapshot_name(snapshot_name(2**40)) == 2**40
    for bad in ("snapshot-1.snap", "snapshot-000000000000012d.snap.tmp", "wal-0000000000000001.log"):
        assert parse_snapshot_name(bad) is None


def test_snapshot_then_writes_then_reopen_replays_only_the_tail(dbdir):
    with Database.open(dbdir, snapshot_every_bytes=None) as db:
        run = db.begin_run()
        fill(db, run, 0, 500)
        info = db.snapshot()
        assert (info.commit_version, info.keys) == (501, 501)  # 500 puts + the run record
        fill(db, run, 500, 40, after=True)
        db.kv.delete(run, "k00007")
        model = dict(db.kv.scan(run))
    with Database.open(dbdir) as db:
        rec = db.stats()["recovery"]
        assert rec["snapshot"]["file"] == os.path.basename(info.path)
        assert rec["snapshot"]["commit_version"] == 501
        assert rec["records"] == 41  # only what followed the snapshot
        assert dict(db.kv.scan(run)) == model
        assert db.stats()["commit_version"] == 542


def test_every_damaged_byte_of_a_snapshot_is_detected(dbdir):
    with Database.open(dbdir, snapshot_every_bytes=None) as db:
        run = db.begin_run()
        fill(db, run, 0, 300)
        path = db.snapshot().path
    fs = OSFileSystem()
    db_id = open(os.path.join(dbdir, "IDENTITY"), "rb").read()[12:28]
    header, state = read_snapshot(fs, path, db_id)
    assert header.keys == len(state) == 301
    data = open(path, "rb").read()
    for offset in range(0, len(data), max(1, len(data) // 400)):
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        open(path, "wb").write(bytes(damaged))
        with pytest.raises(SnapshotError):
            read_snapshot(fs, path, db_id)
    for cut in (0, 10, HEADER_SIZE, len(data) // 2, len(data) - 1):
        open(path, "wb").write(data[:cut])
        with pytest.raises(SnapshotError):
            read_snapshot(fs, path, db_id)
    open(path, "wb").write(data)
    with pytest.raises(SnapshotError, match="another database"):
        read_snapshot(fs, path, b"\x00" * 16)


def _two_snapshots(dbdir, segment_bytes=4096):
    """Writes, snapshot A, writes, snapshot B, writes. Returns (run, model, A, B)."""
    with Database.open(dbdir, segment_bytes=segment_bytes, snapshot_every_bytes=None, history="none") as db:
        run = db.begin_run()
        fill(db, run, 0, 200)
        a = db.snapshot()
        fill(db, run, 200, 200, gen=2)
        db.kv.delete(run, "k00003")
        b = db.snapshot()
        fill(db, run, 400, 30, gen=3)
        db.kv.put(run, "k00000", "overwritten after B")
        model = dict(db.kv.scan(run))
    return run, model, a, b


def test_first_snapshot_keeps_the_wal_second_deletes_what_the_older_covers(dbdir):
    with Database.open(dbdir, segment_bytes=4096, snapshot_every_bytes=None, history="none") as db:
        run = db.begin_run()
        fill(db, run, 0, 200)
        db.sync()
        n = len(segs(dbdir))
        a = db.snapshot()
        assert a.wal_segments_deleted == () and len(segs(dbdir)) == n
        fill(db, run, 200, 200)
        b = db.snapshot()
        assert b.wal_segments_deleted  # segments wholly before A's LSN went
        remaining = segs(dbdir)
        assert set(b.wal_segments_deleted).isdisjoint(remaining)
        assert remaining == sorted(remaining) and len(remaining) < n + 10
        assert db.stats()["wal_segments"] == len(remaining)
        db.kv.put(run, "one more", 1)
        c = db.snapshot()
        assert snaps(dbdir) == sorted(os.path.basename(p) for p in (b.path, c.path))  # two kept
        assert db.snapshot().path == c.path  # no commit since: the same version, rewritten in place


def test_damaged_newest_snapshot_falls_back_to_the_older_plus_wal(dbdir):
    run, model, a, b = _two_snapshots(dbdir)
    flip(b.path, os.path.getsize(b.path) // 2)
    with Database.open(dbdir) as db:
        rec = db.stats()["recovery"]
        assert rec["snapshot"]["file"] == os.path.basename(a.path)
        (skipped,) = rec["snapshots_skipped"]
        assert skipped["file"] == os.path.basename(b.path) and "mismatch" in skipped["reason"]
        assert dict(db.kv.scan(run)) == model  # exact, from A plus the WAL after it


def test_both_snapshots_damaged_and_wal_truncated_names_the_files(dbdir):
    _run, _model, a, b = _two_snapshots(dbdir)
    assert not os.path.exists(os.path.join(dbdir, "wal-0000000000000001.log"))  # truncated by B
    flip(a.path, HEADER_SIZE + 5)
    flip(b.path, HEADER_SIZE + 5)
    with pytest.raises(CorruptionError) as info:
        Database.open(dbdir)
    msg = str(info.value)
    assert os.path.basename(a.path) in msg and os.path.basename(b.path) in msg and "wal-" in msg


def test_damaged_only_snapshot_with_a_complete_wal_recovers_from_the_wal(dbdir):
    with Database.open(dbdir, snapshot_every_bytes=None) as db:
        run = db.begin_run()
        fill(db, run, 0, 100)
        path = db.snapshot().path
        fill(db, run, 100, 10)
        model = dict(db.kv.scan(run))
    flip(path, 3)
    with Database.open(dbdir) as db:
        rec = db.stats()["recovery"]
        assert rec["snapshot"] is None and len(rec["snapshots_skipped"]) == 1
        assert rec["records"] == 111 and dict(db.kv.scan(run)) == model


def test_history_keep_keeps_covered_segments(dbdir):
    with Database.open(dbdir, segment_bytes=4096, snapshot_every_bytes=None) as db:  # history="keep"
        run = db.begin_run()
        fill(db, run, 0, 200)
        db.snapshot()
        fill(db, run, 200, 200)
        db.sync()
        n = len(segs(dbdir))
        assert db.snapshot().wal_segments_deleted == ()
        assert len(segs(dbdir)) == n and "wal-0000000000000001.log" in segs(dbdir)


def test_snapshot_while_transactions_hold_old_versions(dbdir):
    with Database.open(dbdir, snapshot_every_bytes=None) as db:
        run = db.begin_run()
        fill(db, run, 0, 50)
        tx = db.transaction()  # pins old versions: the capture must read through the chains
        for i in range(0, 50, 2):
            db.kv.put(run, f"k{i:05d}", "new")
        db.kv.delete(run, "k00001")
        info = db.snapshot()
        assert tx.kv.get(run, "k00000") == {"i": 0}
        tx.rollback()
        model = dict(db.kv.scan(run))
    with Database.open(dbdir) as db:
        assert db.stats()["recovery"]["records"] == 0
        assert db.stats()["recovery"]["snapshot"]["commit_version"] == info.commit_version
        assert dict(db.kv.scan(run)) == model


def test_empty_database_snapshot(dbdir):
    with Database.open(dbdir) as db:
        info = db.snapshot()
        assert (info.keys, info.commit_version) == (0, 0)
    with Database.open(dbdir) as db:
        assert db.stats()["recovery"]["snapshot"]["keys"] == 0
        run = db.begin_run()
        db.kv.put(run, "k", 1)
    with Database.open(dbdir) as db:
        assert db.kv.get(run, "k") == 1


def test_automatic_snapshot_after_snapshot_every_bytes(dbdir):
    done = threading.Event()

    def progress(phase, n, total):
        if phase == "snapshot" and n == total:
            done.set()

    with Database.open(dbdir, snapshot_every_bytes=16 * 1024, progress=progress) as db:
        run = db.begin_run()
        fill(db, run, 0, 400)  # ~30 KB of WAL
        assert done.wait(30), "no automatic snapshot was taken"
    with Database.open(dbdir) as db:
        assert db.stats()["recovery"]["snapshot"] is not None
        assert len(dict(db.kv.scan(run))) == 400


def test_automatic_snapshot_every_s(dbdir):
    done = threading.Event()
    with Database.open(dbdir, snapshot_every_bytes=None, snapshot_every_s=0.05,
                       progress=lambda p, n, t: p == "snapshot" and n == t and done.set()) as db:
        run = db.begin_run()
        db.kv.put(run, "k", 1)
        assert done.wait(30)
        assert db.stats()["snapshots"]["taken"] >= 1


@pytest.mark.parametrize("kwargs", [
    {"snapshot_every_bytes": 100}, {"snapshot_every_bytes": "big"}, {"snapshot_every_s": 0},
    {"snapshot_every_s": True}, {"progress": "not callable"},
])
def test_bad_snapshot_options(tmp_path, kwargs):
    with pytest.raises(InvalidArgument):
        Database.open(tmp_path / "db", **kwargs)
    assert not (tmp_path / "db").exists()


def test_snapshot_on_a_closed_database(dbdir):
    db = Database.open(dbdir)
    db.close()
    from inmem import DatabaseClosed

    with pytest.raises(DatabaseClosed):
        db.snapshot()
