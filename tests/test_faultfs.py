"""The fault-injecting file system (``tools.faultfs``) and what recovery makes of every disk it can leave.

A small workload is cut by a power failure after every file-system call in
turn, in both models (POSIX-strict, ext4-ordered-like) and with unsynced
appends lost, torn at any byte or zero-filled; the directory a disk would
hold is reopened with the real file system and must hold every commit
acknowledged under ``strict`` and, in every mode, exactly a prefix of the
commit order. Torn writes, EIO and ENOSPC are injected at chosen calls.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import threading

import pytest

from inmem import Database, DatabasePoisoned
from inmem.testing import kernel
from tools.faultfs import CrashPoint, FaultFS, abandon

N_PUTS = 6


def _workload(path: str, fs: FaultFS, durability: str, acked: list[int]) -> None:
    """begin_run, N_PUTS puts, a snapshot, two more puts; commit i is appended to ``acked`` once it returns."""
    db = None
    try:
        db = Database.open(path, fs=fs, durability=durability, flush_interval_ms=60_000)
        db.begin_run("r")
        fs.check_alive()  # a call returning after the crash point (another thread hit it) is no acknowledgement
        acked.append(0)
        for i in range(1, N_PUTS + 1):
            db.kv.put(_run(db), f"k{i}", i)
            fs.check_alive()
            acked.append(i)
            if i == 3 and durability != "strict":
                db.sync()
                fs.check_alive()
                acked.append(-i)  # a sync point: commits 0..i are durable
        db.snapshot()
        for i in range(N_PUTS + 1, N_PUTS + 3):
            db.kv.put(_run(db), f"k{i}", i)
            fs.check_alive()
            acked.append(i)
        db.close()
        fs.check_alive()
    except CrashPoint:
        abandon(db)
        raise


def _run(db: Database) -> str:
    (run,) = db.runs.ids()
    return run


def _present(path: str) -> int:
    """How many commits of the workload the directory holds; asserts they are exactly a prefix."""
    with Database.open(path) as db:
        ids = db.runs.ids()
        if not ids:
            return 0
        got = dict(db.kv.scan(ids[0]))
        m = len(got)
        assert got == {f"k{i}": i for i in range(1, m + 1)}, f"not a prefix of the commit order: {got}"
        return m + 1


def _durable_floor(acked: list[int], durability: str) -> int:
    if durability == "strict":
        return len([a for a in acked if a >= 0])
    syncs = [-a for a in acked if a < 0]
    return max(syncs) + 1 if syncs else 0


@pytest.mark.parametrize("durability", ["strict", "batched", "off"])
def test_power_cut_after_every_call(tmp_path, durability):
    probe = FaultFS(str(tmp_path / "probe"), record=True, real_sync=False)
    _workload(str(tmp_path / "probe"), probe, durability, [])
    total = probe.calls
    assert total >= 25 and any("snapshot" in e for e in probe.events)
    rng = random.Random(20)
    cases = 0
    for k in range(1, total + 1):
        for model in ("posix", "ext4"):
            tail = ("none", "prefix", "zeros", "all", "random")[(k + (model == "ext4")) % 5]
            root = str(tmp_path / f"{durability}-{k}-{model}")
            fs = FaultFS(root, crash_at=k, torn=rng.randint(0, 200), real_sync=False)
            acked: list[int] = []
            with pytest.raises(CrashPoint):
                _workload(root, fs, durability, acked)
            cut = root + ".cut"
            fs.power_cut(cut, model=model, tail=tail, rng=rng)
            if not os.path.exists(cut):
                assert _durable_floor(acked, durability) == 0, "a durable commit's directory vanished"
                continue
            m = _present(cut)
            floor = _durable_floor(acked, durability)
            assert m >= floor, f"crash point {k} ({model}, {tail}): {floor} commits durable, {m} survived"
            assert m <= len([a for a in acked if a >= 0]) + 1  # at most the one in flight besides
            cases += 1
    assert cases > total


def test_posix_loses_an_unsynced_create_ext4_keeps_it_after_a_later_fsync(tmp_path):
    root = str(tmp_path / "d")
    os.makedirs(root)
    fs = FaultFS(root)
    f = fs.create(os.path.join(root, "a"))
    f.write(b"hello")
    f.sync()  # the data is durable, its name is not (no directory fsync)
    f.close()
    fs2 = FaultFS(root)  # an identical second history for the second model
    os.remove(os.path.join(root, "a"))
    g = fs2.create(os.path.join(root, "a"))
    g.write(b"hello")
    g.sync()
    g.close()
    fs.power_cut(str(tmp_path / "posix"), model="posix")
    assert os.listdir(tmp_path / "posix") == []
    fs2.power_cut(str(tmp_path / "ext4"), model="ext4")  # the fsync committed the journal: the create too
    assert (tmp_path / "ext4" / "a").read_bytes() == b"hello"


def test_unsynced_appends_none_prefix_zeros_all(tmp_path):
    root = str(tmp_path / "d")
    os.makedirs(root)
    outcomes = {}
    for tail in ("none", "prefix", "zeros", "all"):
        seen = set()
        for seed in range(12):
            for name in os.listdir(root):
                os.remove(os.path.join(root, name))
            fs = FaultFS(root)
            f = fs.create(os.path.join(root, "f"))
            f.write(b"synced")
            f.sync()
            fs.sync_dir(root)
            f.write(b"-unsynced")
            dest = str(tmp_path / f"{tail}{seed}")
            fs.power_cut(dest, tail=tail, rng=random.Random(seed))
            seen.add(open(os.path.join(dest, "f"), "rb").read())
        outcomes[tail] = seen
    assert outcomes["none"] == {b"synced"}
    assert outcomes["all"] == {b"synced-unsynced"}
    assert all(b"-unsynced".startswith(s[6:]) and s.startswith(b"synced") for s in outcomes["prefix"])
    assert len(outcomes["prefix"]) > 3
    assert all(s[6:] == bytes(len(s) - 6) for s in outcomes["zeros"]) and len(outcomes["zeros"]) > 3


def test_torn_wal_write_at_every_byte(tmp_path):
    """A commit's frame landing only partly (any byte count) is a torn tail: every earlier commit survives."""
    probe = FaultFS(str(tmp_path / "probe"), record=True)
    _workload(str(tmp_path / "probe"), probe, "strict", [])
    # the write of the 4th put's frame
    writes = [i + 1 for i, e in enumerate(probe.events) if e.split()[1] == "write" and ".log " in e + " "]
    k = writes[5]
    size = int(probe.events[k - 1].rsplit("+", 1)[1])
    for torn in range(size):
        root = str(tmp_path / f"t{torn}")
        fs = FaultFS(root, crash_at=k, torn=torn, real_sync=False)
        acked: list[int] = []
        with pytest.raises(CrashPoint):
            _workload(root, fs, "strict", acked)
        fs.power_cut(root + ".cut", tail="all")
        assert _present(root + ".cut") == len(acked)


def test_eio_on_the_nth_fsync_poisons_and_loses_nothing(tmp_path):
    root = str(tmp_path / "d")
    fs = FaultFS(root)
    db = Database.open(root, fs=fs, durability="strict")
    run = db.begin_run("r")
    db.kv.put(run, "a", 1)
    fs.fail("sync", 2, path_contains=".log")
    db.kv.put(run, "b", 2)
    with pytest.raises(DatabasePoisoned):
        db.kv.put(run, "c", 3)
    with pytest.raises(DatabasePoisoned):
        db.kv.put(run, "d", 4)
    db.close()
    fs.power_cut(root + ".cut")
    with Database.open(root + ".cut") as db2:
        got = dict(db2.kv.scan(run))
        assert got in ({"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3})


def test_enospc_is_clear_loses_nothing_and_reopens_once_space_is_back(tmp_path):
    root = str(tmp_path / "d")
    fs = FaultFS(root)
    db = Database.open(root, fs=fs, durability="strict")
    run = db.begin_run("r")
    fs.space = fs.used() + 500
    acked = {}
    with pytest.raises(DatabasePoisoned) as info:
        for i in range(100):
            db.kv.put(run, f"k{i}", "x" * 50)
            acked[f"k{i}"] = "x" * 50
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert "No space left" in str(info.value)
    db.close()
    fs.space = None  # space is back
    with Database.open(root, fs=fs, durability="strict") as db2:
        assert dict(db2.kv.scan(run)) == acked
        db2.kv.put(run, "after", 1)
    fs.power_cut(root + ".cut")
    with Database.open(root + ".cut") as db3:
        assert db3.kv.get(run, "after") == 1 and len(dict(db3.kv.scan(run))) == len(acked) + 1


def test_crash_points_are_numbered_and_named(tmp_path):
    e = str(tmp_path / "x" / "d")
    fs = FaultFS(e, record=True)
    _workload(e, fs, "strict", [])
    assert fs.events[0].startswith("#1 makedirs")
    assert len(fs.events) == fs.calls
    k = next(i + 1 for i, e in enumerate(fs.events) if "rename snapshot-" in e)
    shutil.rmtree(tmp_path / "x")  # the same path again: the same event names
    fs2 = FaultFS(e, crash_at=k, record=True)
    with pytest.raises(CrashPoint, match="snapshot"):
        _workload(e, fs2, "strict", [])
    assert fs2.events == fs.events[:k] and fs2.halted
    shutil.rmtree(tmp_path / "x")
    fs3 = FaultFS(e, crash_at=1, crash_on="rename snapshot-", record=True)  # the same point, by name
    with pytest.raises(CrashPoint, match="snapshot"):
        _workload(e, fs3, "strict", [])
    assert fs3.events == fs.events[:k]
    before = sorted(os.listdir(e))
    fs2.remove(os.path.join(e, "IDENTITY"))  # a dead process changes nothing
    assert sorted(os.listdir(e)) == before and fs2.calls == k


@pytest.mark.parametrize("kind,where", [("create", ".snap"), ("write", ".snap"), ("sync", ".snap"),
                                        ("rename", ".snap"), ("sync_dir", None), ("remove", ".snap"),
                                        ("write", "hist-"), ("rename", "hist-"), ("write", ".log")])
@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
def test_any_failed_write_in_the_directory_poisons(tmp_path, kind, where, err):
    """EIO or ENOSPC on any write, fsync, create, rename or remove of a snapshot, its directory fsync, a
    history sidecar or the WAL: the call raises DatabasePoisoned, no later commit is acknowledged, and
    a power cut then keeps every acknowledged commit."""
    root = str(tmp_path / "d")
    fs = FaultFS(root)
    db = Database.open(root, fs=fs, durability="strict", snapshot_every_bytes=None)
    run = db.begin_run("r")
    model = {}
    for i in range(3):  # two snapshots before: the third prunes the oldest (a remove)
        db.kv.put(run, f"k{i}", i)
        model[f"k{i}"] = i
        db.snapshot()
    fs.fail(kind, 1, err=err, path_contains=where)
    with pytest.raises(DatabasePoisoned) as info:
        db.kv.put(run, "k3", 3)
        model["k3"] = 3
        db.snapshot()
    assert info.value.__cause__.errno == err
    for call in (lambda: db.kv.put(run, "no", 1), db.snapshot, db.sync):
        with pytest.raises(DatabasePoisoned):
            call()
    assert db.kv.get(run, "k0") == 0  # reads work
    db.close()
    fs.power_cut(root + ".cut", model="posix")
    with Database.open(root + ".cut") as again:
        got = dict(again.kv.scan(run))
        assert got in (model, {**model, "k3": 3}) and "no" not in got
        assert again.replay_run(run) == again.run_state(run)


def _mount_tmpfs(path: str, size: str) -> bool:
    import subprocess

    if os.geteuid() != 0 or not os.path.exists("/bin/mount"):
        return False
    os.makedirs(path, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                          capture_output=True).returncode == 0


def test_enospc_on_a_real_small_tmpfs(tmp_path):
    """A real full disk (a 256 KiB tmpfs, root only): the failing commit raises DatabasePoisoned chained to
    ENOSPC, every acknowledged commit survives, and the database reopens normally once space is back."""
    import subprocess

    mnt = str(tmp_path / "mnt")
    if not _mount_tmpfs(mnt, "256k"):
        pytest.skip("needs root and tmpfs")
    try:
        root = os.path.join(mnt, "db")
        db = Database.open(root, durability="strict", segment_bytes=64 * 1024)
        run = db.begin_run("r")
        acked = {}
        with pytest.raises(DatabasePoisoned) as info:
            for i in range(10_000):
                db.kv.put(run, f"k{i}", "x" * 200)
                acked[f"k{i}"] = "x" * 200
        assert info.value.__cause__.errno == errno.ENOSPC and len(acked) > 100
        db.close()
        subprocess.run(["mount", "-o", "remount,size=4m", mnt], check=True)  # space is back
        with Database.open(root, durability="strict") as again:
            assert dict(again.kv.scan(run)) == acked
            again.kv.put(run, "after", 1)
            again.snapshot()
        with Database.open(root) as third:
            assert third.kv.get(run, "after") == 1 and len(dict(third.kv.scan(run))) == len(acked) + 1
    finally:
        subprocess.run(["umount", "-l", mnt], capture_output=True)


def test_batched_close_whose_final_flush_fails_raises(tmp_path):
    """Found by crashsim (seed 41, kind eio): in ``batched`` mode close() lets the flusher write what is
    pending; when that last write or fsync failed, close() returned as if all were on disk. It raises
    DatabasePoisoned now, releases the lock, and a reopen holds a prefix of the commits."""
    root = str(tmp_path / "d")
    fs = FaultFS(root, real_sync=False)
    db = Database.open(root, fs=fs, durability="batched", flush_interval_ms=60_000)
    run = db.begin_run("r")
    db.sync()
    for i in range(5):
        db.kv.put(run, f"k{i}", i)  # acknowledged, pending in the batch
    fs.fail("sync", 1, path_contains=".log")
    with pytest.raises(DatabasePoisoned):
        db.close()
    db.close()  # idempotent, quiet
    fs.power_cut(root + ".cut", tail="none")
    with Database.open(root + ".cut") as again:  # the lock was released; a prefix survives
        got = dict(again.kv.scan(run))
        assert got == {f"k{i}": i for i in range(len(got))}


def test_batched_close_after_an_unreported_background_failure_raises(tmp_path):
    """Found by crashsim (seed 5, kind enospc): the flusher's write failed *between* the last commit and
    close(), so no caller had heard of it, and close() — seeing the writer already poisoned — returned
    as if all were on disk. A poisoning nobody was told of is raised by close(); once told, close is quiet."""
    root = str(tmp_path / "d")
    fs = FaultFS(root, real_sync=False)
    db = Database.open(root, fs=fs, durability="batched", flush_interval_ms=1)
    run = db.begin_run("r")
    db.sync()
    fs.fail("write", 1, path_contains=".log")
    db.kv.put(run, "k", 1)  # acknowledged; the flusher's write of it fails in the background
    deadline = threading.Event()
    for _ in range(10_000):  # wait for the flusher's round, not for a fixed time
        if kernel(db).poisoned:
            break
        deadline.wait(0.001)
    assert kernel(db).poisoned
    with pytest.raises(DatabasePoisoned):
        db.close()
    db.close()  # idempotent, quiet

    told = str(tmp_path / "e")
    fs2 = FaultFS(told, real_sync=False)
    db2 = Database.open(told, fs=fs2, durability="strict")
    run2 = db2.begin_run("r")
    fs2.fail("sync", 1, path_contains=".log")
    with pytest.raises(DatabasePoisoned):
        db2.kv.put(run2, "k", 1)  # the caller is told here
    db2.close()  # and close does not raise it again
