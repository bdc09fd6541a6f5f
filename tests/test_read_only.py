"""Read-only handles and offline verification: never a byte written, writers kept out, damage reported."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys

import pytest

from inmem import Database, DatabaseLocked, DatabaseReadOnly, InvalidArgument
from inmem import testing
from inmem.codec import decode_value, encode_value
from inmem.keys import TAG_EVENT, run_id_bytes, run_prefix
from inmem.verify import verify_directory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def digest(path: str) -> dict[str, str]:
    return {n: hashlib.sha256(open(os.path.join(path, n), "rb").read()).hexdigest() for n in sorted(os.listdir(path))}


def build(path: str, *, segment_bytes: int = 4096) -> tuple[str, str]:
    with Database.open(path, segment_bytes=segment_bytes, snapshot_every_bytes=None) as db:
        a = db.begin_run("a")
        b = db.begin_run("b")
        for i in range(150):
            db.kv.put(a, f"k{i}", {"i": i, "pad": "x" * 40})
        db.snapshot()
        for i in range(20):
            db.events.append(b, "step", {"i": i})
        db.state.set(b, "phase", "act")
        db.traces.record(b, "thought", "go", confidence=0.5)
        db.end_run(a)
    return a, b


def segments(path: str) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.startswith("wal-"))


def test_read_only_reads_everything_and_writes_nothing(tmp_path):
    d = str(tmp_path / "db")
    a, b = build(d)
    with open(os.path.join(d, segments(d)[-1]), "ab") as f:  # a torn tail ...
        f.write(b"\x07" * 11)
    open(os.path.join(d, "wal-00000000000000ff.log.tmp"), "wb").close()  # ... and a leftover temporary
    before = digest(d)
    with Database.open(d, read_only=True) as db:
        assert db.read_only and db.stats()["read_only"]
        torn = db.stats()["recovery"]["torn_tail"]
        assert torn is not None and torn["cut"] is False and torn["bytes_dropped"] == 11
        assert db.kv.get(a, "k149")["i"] == 149 and db.events.count(b) == 20
        assert db.replay_run(b) == db.run_state(b) and len(db.history(a)) == 152
        assert db.diff_runs(b, b).is_empty()
    assert digest(d) == before  # not a byte: no cut, no LOCK pid, no sidecar, no snapshot, tmp left
    with Database.open(d) as db:  # a read-write open then cuts the tail as usual
        assert db.stats()["recovery"]["torn_tail"]["cut"] is True


def test_every_write_through_a_read_only_handle_raises_before_anything_happens(tmp_path):
    d = str(tmp_path / "db")
    a, b = build(d)
    before = digest(d)
    with Database.open(d, read_only=True) as db:
        version = db.stats()["commit_version"]
        attempts = [
            lambda: db.kv.put(b, "x", 1), lambda: db.kv.delete(b, "x"), lambda: db.begin_run("new"),
            lambda: db.end_run(b), lambda: db.events.append(b, "t", 1), lambda: db.state.set(b, "phase", "x"),
            lambda: db.archive_run(a), lambda: db.fork_run(b), lambda: db.snapshot(), lambda: db.compact(),
            lambda: db.runs.tag(b, "t"),
        ]
        for attempt in attempts:
            with pytest.raises(DatabaseReadOnly):
                attempt()
        with pytest.raises(DatabaseReadOnly):
            with db.transaction() as tx:
                tx.kv.put(b, "y", 2)
        with db.transaction() as tx:  # a read-only transaction is fine
            assert tx.kv.get(a, "k0")["i"] == 0
        assert db.stats()["commit_version"] == version and db.kv.get(b, "x") is None
        assert db.run_state(b).kv == {}
    assert digest(d) == before


def test_read_only_refuses_what_is_not_a_database(tmp_path):
    with pytest.raises(InvalidArgument):
        Database.open(str(tmp_path / "missing"), read_only=True)
    assert not os.path.exists(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidArgument):
        Database.open(str(empty), read_only=True)
    assert os.listdir(empty) == []
    d = str(tmp_path / "db")
    build(d)
    with pytest.raises(InvalidArgument):
        Database.open(d, read_only=True, salvage=True)


def test_readers_share_writers_exclude(tmp_path):
    d = str(tmp_path / "db")
    build(d)
    r1 = Database.open(d, read_only=True)
    r2 = Database.open(d, read_only=True)  # readers share
    with pytest.raises(DatabaseLocked):
        Database.open(d)  # a writer waits for readers
    r1.close()
    r2.close()
    with Database.open(d):
        with pytest.raises(DatabaseLocked, match="open for writing"):
            Database.open(d, read_only=True)  # in this process
        code = f"from inmem import Database; Database.open({d!r}, read_only=True)"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode != 0 and "DatabaseLocked" in proc.stderr and "open for writing" in proc.stderr


def _write_broken_chain(path: str) -> str:
    """Commit, through the real WAL, an event record whose payload no longer matches its hash."""
    with Database.open(path) as db:
        run = db.begin_run("tampered")
        for i in range(3):
            db.events.append(run, "step", {"i": i})
        key = run_prefix(run_id_bytes(run), TAG_EVENT) + struct.pack(">Q", 1)
        record = decode_value(testing.kernel(db).get(key)[1])
        record["payload"] = {"i": 999}
        testing.kernel(db).commit([(key, encode_value(record))], (run,))
    return run


def test_verify_reports_a_clean_directory_and_a_torn_tail_as_clean(tmp_path):
    d = str(tmp_path / "db")
    build(d)
    seen = []
    report = verify_directory(d, progress=lambda phase, done, total: seen.append(phase))
    assert report["ok"] and report["problems"] == [] and report["torn_tail"] is None
    assert report["runs"] == 2 and report["events"] == 20 and len(report["snapshots"]) == 1
    assert sum(s["frames"] for s in report["segments"]) == 175 and {"wal", "snapshots", "chains"} <= set(seen)
    with open(os.path.join(d, segments(d)[-1]), "ab") as f:
        f.write(b"\x01" * 5)
    before = digest(d)
    report = verify_directory(d)
    assert report["ok"] and report["torn_tail"]["bytes"] == 5
    assert digest(d) == before


def test_verify_finds_a_flipped_byte_recovery_never_reads(tmp_path):
    d = str(tmp_path / "db")
    build(d)
    victim = os.path.join(d, segments(d)[1])  # covered by the snapshot: recovery skips it
    with open(victim, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0x10]))
    with Database.open(d, read_only=True):
        pass  # the database still opens ...
    report = verify_directory(d)  # ... but verify reads every frame
    assert not report["ok"]
    assert any(segments(d)[1] in p and "offset" in p for p in report["problems"])
    assert [s["error"] is not None for s in report["segments"]].count(True) == 1


def test_verify_finds_a_broken_event_chain_and_a_damaged_snapshot(tmp_path):
    d = str(tmp_path / "db")
    build(d)
    run = _write_broken_chain(d)
    report = verify_directory(d)
    assert not report["ok"] and report["chains_broken"] == [{"run": run, "seq": 1}]
    snap = next(n for n in os.listdir(d) if n.startswith("snapshot-"))
    p = os.path.join(d, snap)
    raw = bytearray(open(p, "rb").read())
    raw[len(raw) // 2] ^= 0xFF
    open(p, "wb").write(raw)
    report = verify_directory(d)
    assert [s["ok"] for s in report["snapshots"]] == [False]


def test_verify_refuses_while_a_writer_holds_the_directory(tmp_path):
    d = str(tmp_path / "db")
    build(d)
    with Database.open(d):
        with pytest.raises(DatabaseLocked):
            verify_directory(d)
    with pytest.raises(InvalidArgument):
        verify_directory(str(tmp_path))
