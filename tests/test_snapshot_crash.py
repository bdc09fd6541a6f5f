"""Crash tests with snapshots: SIGKILL during automatic snapshots, and crashes at fixed points inside one.

Two parts, both on the harness and model of :mod:`tests.test_crash` (intent
and ack lines on a pipe, :class:`~tests.test_crash.Model` of the acked
operations, the recovered state equal to the acked model or the acked model
plus the one pending intent):

1. **SIGKILL with automatic snapshots.** A child commits in ``strict`` mode
   with 16 KiB segments and a snapshot every 32 KiB of WAL, so snapshots and
   WAL truncation happen many times per run. Besides intents and acks it
   prints ``snap`` when ``stats()["snapshots"]["taken"]`` has grown (a
   snapshot finished, prune included) and ``written`` from the progress
   callback (the file is renamed and the directory fsynced; verification and
   pruning are still to come). The parent kills it after a seeded number of
   acks, or right after the n-th ``snap`` or ``written`` line plus a few more
   lines.
2. **Crashes at fixed points inside a snapshot**, through the file-system
   seam: a :class:`~inmem.fs.OSFileSystem` subclass in the child calls
   ``os._exit(1)`` (no cleanup runs) at one chosen point of ``db.snapshot()``:
   right after the ``.tmp`` is created, before or after its rename, after the
   directory fsync, before or after the removal of an old snapshot, after the
   first removal of a covered WAL segment, after the last one.

After each crash the parent also checks the invariant of SPEC.md §6.2: a copy
of the directory whose *newest* snapshot is damaged recovers the same state
from the older snapshot plus the WAL.

Replay one case: ``pytest tests/test_snapshot_crash.py -k "sigkill and 17"``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from inmem import Database
from inmem import testing
from inmem.snapshot import parse_snapshot_name
from tests.test_crash import (
    Model,
    OPS_CODE,
    ROOT,
    SEGMENT_BYTES,
    VALUE_CODE,
    check_still_writable,
    describe_diff,
    observe,
    pair_ops,
    reopen_and_observe,
)

CHILD_SEGMENT_BYTES = 16 * 1024
CHILD_SNAPSHOT_BYTES = 32 * 1024
MAX_OPS = 4000  # a child that was never killed stops here (the parent then fails: no SIGKILL)

# --- the child: the op loop of test_crash's child, plus snapshot lines -------------------------

SIGKILL_CHILD_CODE = OPS_CODE + r'''
def main():
    path, seed = sys.argv[1], int(sys.argv[2])

    def progress(phase, done, total):
        if phase == "snapshot" and done == total:
            emit({"t": "written", "keys": total})

    db = Database.open(path, durability="strict", segment_bytes=__SEG__, snapshot_every_bytes=__SNAPB__, history="none",
                       progress=progress)
    ops = Ops(db, random.Random(seed))
    taken = 0
    for _ in range(__MAX_OPS__):
        ops.step()
        s = db.stats()["snapshots"]
        if s["taken"] != taken:
            taken = s["taken"]
            emit({"t": "snap", "n": taken, "version": s["last"]["commit_version"]})
    emit({"t": "gave-up"})
    db.close()

main()
'''


def _code(template: str, **subst: object) -> str:
    code = template.replace("__ROOT__", repr(ROOT))
    for name, value in subst.items():
        code = code.replace(name, str(value))
    return code


def run_sigkill_child(path: str, seed: int, trigger: str, count: int, extra_lines: int) -> tuple[list[dict], str]:
    """Start the child; SIGKILL it once ``count`` lines of type ``trigger`` and then ``extra_lines`` lines arrived.

    ``trigger`` is ``"ack"``, ``"snap"`` or ``"written"``. Returns (every
    complete line, the pipe drained after the kill included; stderr).
    """
    code = _code(SIGKILL_CHILD_CODE, __SEG__=CHILD_SEGMENT_BYTES, __SNAPB__=CHILD_SNAPSHOT_BYTES, __MAX_OPS__=MAX_OPS)
    prefix = b'{"t":"%s"' % trigger.encode()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, path, str(seed)], stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL
        )
        raw: list[bytes] = []
        seen = extra = 0
        try:
            while seen < count or extra < extra_lines:
                line = proc.stdout.readline()
                if not line:  # the child ended on its own: reported below
                    break
                raw.append(line)
                if seen >= count:
                    extra += 1
                elif line.startswith(prefix):
                    seen += 1
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            raw.append(proc.stdout.read())  # what the pipe still holds was printed before the kill
            proc.stdout.close()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    assert rc == -signal.SIGKILL, f"seed={seed}: child exited with {rc} before the kill:\n{stderr[-3000:]}"
    lines = b"".join(raw).split(b"\n")
    return [json.loads(x) for x in lines[:-1]], stderr  # the last piece is b"" or a line cut by the kill


# --- checking a crashed directory ---------------------------------------------------------------


def split_lines(lines: list[dict]) -> tuple[list[dict], list[dict]]:
    """(intent and ack lines, every other line)."""
    ops = [x for x in lines if x["t"] in ("intent", "ack")]
    return ops, [x for x in lines if x["t"] not in ("intent", "ack")]


def candidates_for(lines: list[dict], seed: object, where: str) -> tuple[list[str], list[dict], int, int]:
    """Views the recovered database may show: the acked model, or it plus the pending intent.

    Returns (known run ids, candidate views, acked commits, commits with the pending intent).
    The views' ``records`` field holds *all* commits; see :func:`expect_records`.
    """
    done, pending = pair_ops(lines, seed)
    model = Model()
    for op, ack in done:
        model.apply(op, ack, where)
    runs = list(model.runs)
    views = [model.snapshot(runs)]
    upper = model.commits
    if pending is not None:
        extended = model.copy()
        extended.apply(pending, None, where)
        views.append(extended.snapshot(runs))
        upper = extended.commits
    return runs, views, model.commits, upper


def snapshot_version(recovery: dict) -> int:
    snap = recovery["snapshot"]
    return 0 if snap is None else snap["commit_version"]


def expect_records(views: list[dict], recovery: dict) -> list[dict]:
    """Commit versions rise by one per commit from 1, so the WAL after a snapshot at V holds commits - V records."""
    v = snapshot_version(recovery)
    return [dict(view, records=view["records"] - v) for view in views]


def snapshot_files(path: str) -> list[str]:
    return sorted(n for n in os.listdir(path) if parse_snapshot_name(n) is not None)


def check_recovers(path: str, runs: list[str], views: list[dict], where: str) -> tuple[dict, dict]:
    """Reopen ``path``; the state must be one of ``views`` (records counted after the snapshot used)."""
    got, recovery = reopen_and_observe(path, runs)
    where = f"{where}, recovery {recovery}"
    assert recovery["snapshots_skipped"] == [], f"{where}: a crash left a damaged snapshot"
    want = expect_records(views, recovery)
    assert got in want, f"{where}: recovered state is neither the acked model nor acked+pending: " + describe_diff(
        got, want[-1]
    )
    return got, recovery


def check_newest_snapshot_replaceable(path: str, runs: list[str], got: dict, where: str) -> None:
    """SPEC §6.2: with the newest snapshot damaged, the older one (or none) plus the WAL gives the same state."""
    snaps = snapshot_files(path)
    if not snaps:
        return
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "copy")
        shutil.copytree(path, copy)
        victim = os.path.join(copy, snaps[-1])
        with open(victim, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(size // 2)
            byte = f.read(1)
            f.seek(size // 2)
            f.write(bytes([byte[0] ^ 0xFF]))
        with Database.open(copy, durability="strict", segment_bytes=SEGMENT_BYTES) as db:
            testing.check_store(db)
            alt = observe(db, runs)
            recovery = db.stats()["recovery"]
        assert [s["file"] for s in recovery["snapshots_skipped"]] == [snaps[-1]], (
            f"{where}: the damaged newest snapshot was not skipped: {recovery}"
        )
        older = snaps[-2] if len(snaps) > 1 else None
        assert (recovery["snapshot"] or {}).get("file") == older, f"{where}: fallback used {recovery['snapshot']}"
        alt = dict(alt, records=None)
        want = dict(got, records=None)
        assert alt == want, (
            f"{where}: with the newest snapshot {snaps[-1]} damaged, recovery from {older} plus the WAL differs: "
            + describe_diff(alt, want)
        )


# --- 1. SIGKILL with automatic snapshots ---------------------------------------------------------

SIGKILL_SEEDS = range(60)
_snapshot_used: dict[int, bool] = {}  # seed -> recovery loaded a snapshot


def kill_plan(seed: int) -> tuple[str, int, int]:
    """(trigger line type, how many of them, extra lines after the last): early, late, or at a snapshot."""
    rng = random.Random(seed)
    r = rng.random()
    if r < 0.15:
        return "ack", rng.randint(1, 60), rng.choice([0, 1])  # early: maybe before any snapshot
    if r < 0.45:
        return "ack", rng.randint(60, 700), rng.choice([0, 1])
    if r < 0.75:
        return "snap", rng.randint(1, 15), rng.choice([0, 0, 1, 2, 3, 8])  # a snapshot (and its prune) finished
    return "written", rng.randint(1, 15), rng.choice([0, 0, 1, 2])  # renamed; verify and prune still running


@pytest.mark.parametrize("seed", SIGKILL_SEEDS)
def test_sigkill_with_automatic_snapshots_keeps_every_acknowledged_commit(tmp_path, seed):
    trigger, count, extra = kill_plan(seed)
    path = str(tmp_path / "db")
    where = f"seed={seed} (kill after {count} '{trigger}' lines + {extra})"
    lines, _ = run_sigkill_child(path, seed, trigger, count, extra)
    op_lines, other = split_lines(lines)
    taken = max([x["n"] for x in other if x["t"] == "snap"], default=0)
    where += f", {sum(1 for x in op_lines if x['t'] == 'ack')} acked, {taken} snapshots finished"
    on_disk = snapshot_files(path)
    assert len(on_disk) <= 3, f"{where}: more than 3 snapshots on disk: {on_disk}"

    runs, views, acked, upper = candidates_for(op_lines, seed, where)
    got, recovery = check_recovers(path, runs, views, where)
    v = snapshot_version(recovery)
    assert v <= upper, f"{where}: snapshot at version {v} is newer than any commit ({upper})"
    if taken:
        # a finished snapshot was on disk before the kill; recovery cannot use an older one
        newest_finished = max(x["version"] for x in other if x["t"] == "snap")
        assert v >= newest_finished, f"{where}: recovery used a snapshot at {v}, one at {newest_finished} existed"
    _snapshot_used[seed] = recovery["snapshot"] is not None
    check_newest_snapshot_replaceable(path, runs, got, where)
    check_still_writable(path, where)


def test_sigkill_runs_really_recovered_from_snapshots():
    """Across the seeds above, most recoveries must have started from a snapshot (else the test proves little)."""
    if len(_snapshot_used) < len(SIGKILL_SEEDS) // 2:
        pytest.skip("run together with the SIGKILL seeds")
    used = sum(_snapshot_used.values())
    assert used >= len(_snapshot_used) / 2, f"only {used} of {len(_snapshot_used)} recoveries loaded a snapshot"


# --- 2. crashes at fixed points inside a snapshot (file-system seam) ---------------------------

FAULT_CHILD_CODE = OPS_CODE + r'''
from inmem.fs import OSFileSystem

POINT = sys.argv[2]

def is_snapshot(path):
    name = os.path.basename(path)
    return name.startswith("snapshot-") and name.endswith(".snap")

def is_segment(path):
    name = os.path.basename(path)
    return name.startswith("wal-") and name.endswith(".log")

class CrashFS(OSFileSystem):
    """The real disk, dying (os._exit: no cleanup, no flush) at POINT once armed.

    Only calls from the thread that armed it (the one running db.snapshot()) count:
    a writer thread's segment rotation must not trigger or shift the fault.
    """

    owner = None
    renamed = None      # the snapshot just renamed into place (armed)
    wal_removed = 0

    @property
    def armed(self):
        return self.owner == threading.get_ident()

    def crash(self, where, path):
        emit({"t": "crash", "at": where, "file": os.path.basename(path)})
        os._exit(1)

    def create(self, path):
        f = super().create(path)
        if self.armed and path.endswith(".snap.tmp") and POINT == "tmp-created":
            self.crash(POINT, path)
        return f

    def rename(self, src, dst):
        if self.armed and src.endswith(".snap.tmp"):
            if POINT == "before-rename":
                self.crash(POINT, src)
            super().rename(src, dst)
            self.renamed = dst
            if POINT == "after-rename":  # before the directory fsync
                self.crash(POINT, dst)
            return
        super().rename(src, dst)

    def sync_dir(self, path):
        super().sync_dir(path)
        if self.armed:
            if self.renamed is not None and POINT == "after-snapshot-dirsync":  # before verify and prune
                self.crash(POINT, self.renamed)
            if self.wal_removed and POINT == "after-all-wal-removes":
                self.crash(POINT, path)

    def remove(self, path):
        if self.armed and is_snapshot(path):
            if POINT == "before-snapshot-remove":
                self.crash(POINT, path)
            super().remove(path)
            if POINT == "after-snapshot-remove":
                self.crash(POINT, path)
            return
        super().remove(path)
        if self.armed and is_segment(path):
            self.wal_removed += 1
            if POINT == "after-wal-remove":
                self.crash(POINT, path)

def main():
    path, nth, writer = sys.argv[1], int(sys.argv[3]), sys.argv[4] == "1"
    fs = CrashFS()
    db = Database.open(path, durability="strict", segment_bytes=4096, snapshot_every_bytes=None, fs=fs, history="none")
    ops = Ops(db, random.Random(nth * 1000 + len(POINT)))
    for k in range(1, nth + 1):
        for _ in range(120):
            ops.step()
        if k == nth:
            break
        info = db.snapshot()
        emit({"t": "snap", "n": k, "version": info.commit_version, "deleted": list(info.wal_segments_deleted)})
    fs.owner = threading.get_ident()
    if writer:  # keep committing from another thread while the snapshot runs into the fault
        t = threading.Thread(target=lambda: [ops.step() for _ in range(__MAX_OPS__)], daemon=True)
        t.start()
    info = db.snapshot()
    emit({"t": "survived", "info": info.as_dict()})
    os._exit(3)

main()
'''

# (point, which snapshot crashes): the 1st deletes nothing, the 2nd deletes WAL, the 3rd an old snapshot too
FAULT_CASES = [
    ("tmp-created", 1), ("tmp-created", 3),
    ("before-rename", 1), ("before-rename", 3),
    ("after-rename", 1), ("after-rename", 3),
    ("after-snapshot-dirsync", 1), ("after-snapshot-dirsync", 3),
    ("after-wal-remove", 2), ("after-wal-remove", 3),
    ("after-all-wal-removes", 2), ("after-all-wal-removes", 3),
    ("before-snapshot-remove", 3),
    ("after-snapshot-remove", 3),
]


def run_fault_child(path: str, point: str, nth: int, writer: bool) -> list[dict]:
    code = _code(FAULT_CHILD_CODE, __MAX_OPS__=MAX_OPS)
    proc = subprocess.run(
        [sys.executable, "-c", code, path, point, str(nth), "1" if writer else "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=120,
    )
    where = f"point={point} nth={nth} writer={writer}"
    stderr = proc.stderr.decode("utf-8", "replace")[-3000:]
    lines = [json.loads(x) for x in proc.stdout.split(b"\n")[:-1]]
    assert not any(x["t"] == "survived" for x in lines), f"{where}: the fault point was never reached: {lines[-1]}"
    assert proc.returncode == 1, f"{where}: child exited with {proc.returncode}, not at the fault:\n{stderr}"
    crash = [x for x in lines if x["t"] == "crash"]
    assert len(crash) == 1 and crash[0]["at"] == point, f"{where}: crash lines {crash}\n{stderr}"
    return lines


@pytest.mark.parametrize("writer", [False, True], ids=["quiet", "writer"])
@pytest.mark.parametrize("point,nth", FAULT_CASES, ids=[f"{p}-{n}" for p, n in FAULT_CASES])
def test_crash_inside_snapshot_loses_nothing(tmp_path, point, nth, writer):
    path = str(tmp_path / "db")
    where = f"point={point} nth={nth} writer={writer}"
    lines = run_fault_child(path, point, nth, writer)
    op_lines, other = split_lines(lines)
    crash = [x for x in other if x["t"] == "crash"][0]
    finished = [x for x in other if x["t"] == "snap"]
    where += f", crash {crash}, {sum(1 for x in op_lines if x['t'] == 'ack')} acked, snapshots before {finished}"
    assert len(finished) == nth - 1, where
    if nth == 3:
        assert finished[1]["deleted"], f"{where}: the 2nd snapshot deleted no WAL: the workload is too small"

    names = sorted(os.listdir(path))
    snaps = snapshot_files(path)
    snap_tmps = [n for n in names if n.endswith(".snap.tmp")]
    crashed_version = None
    if point in ("tmp-created", "before-rename"):
        assert len(snap_tmps) == 1, f"{where}: expected the snapshot's .tmp on disk: {names}"
        assert len(snaps) == nth - 1, f"{where}: snapshots on disk {snaps}"
    else:
        assert not snap_tmps, f"{where}: a .tmp is left after the rename: {names}"
        crashed_version = max(parse_snapshot_name(n) for n in snaps)
        three = ("after-rename", "after-snapshot-dirsync", "before-snapshot-remove")
        assert len(snaps) == (min(nth, 3) if point in three else min(nth, 2)), f"{where}: snapshots on disk {snaps}"

    runs, views, acked, upper = candidates_for(op_lines, point, where)
    got, recovery = check_recovers(path, runs, views, where)
    where += f", recovery {recovery}"
    assert recovery["removed_temporaries"] == [n for n in names if n.endswith(".tmp")], f"{where}: .tmp not removed"
    if crashed_version is None:
        assert snapshot_version(recovery) == (finished[-1]["version"] if finished else 0), where
    else:  # the new snapshot is complete on disk: recovery loads it
        assert recovery["snapshot"]["commit_version"] == crashed_version, where
        assert crashed_version <= upper, where
        if not writer:
            assert crashed_version == acked, where
    check_newest_snapshot_replaceable(path, runs, got, where)

    # reopening again is clean: nothing left to remove or cut, nothing skipped, the same snapshot and state
    got2, recovery2 = reopen_and_observe(path, runs)
    where2 = f"{where}: second reopen {recovery2}"
    assert recovery2["removed_temporaries"] == [] and recovery2["torn_tail"] is None, where2
    assert recovery2["snapshots_skipped"] == [], where2
    assert snapshot_version(recovery2) == snapshot_version(recovery), where2
    assert got2 == got, f"{where2}: " + describe_diff(got2, got)

    # the interrupted snapshot's work can be redone: new snapshots prune what the crash left behind
    with Database.open(path, durability="strict", segment_bytes=SEGMENT_BYTES, snapshot_every_bytes=None) as db:
        info = db.snapshot()
        info2 = db.snapshot()  # a second one at the same version (no commits in between)
        assert info2.commit_version == info.commit_version, where
    assert len(snapshot_files(path)) <= 2, f"{where}: {snapshot_files(path)}"
    got3, recovery3 = reopen_and_observe(path, runs)
    assert recovery3["records"] == 0 and snapshot_version(recovery3) == info.commit_version, f"{where}: {recovery3}"
    assert dict(got3, records=None) == dict(got, records=None), f"{where}: after a new snapshot: " + describe_diff(
        got3, got
    )
    check_still_writable(path, where)
