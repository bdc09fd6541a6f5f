"""Real crash tests: a child process commits in a loop, the parent SIGKILLs it, reopens, and checks.

No mocks and no timing: the child prints an *intent* line before each commit
and an *ack* line after the commit call returned, flushing stdout each time.
The parent reads acknowledgements until a seeded random count has arrived,
SIGKILLs the child, reaps it, and collects every line the pipe still holds
(those were acknowledged too). Then it reopens the directory and checks:

* ``strict``: the recovered state equals the model of all acknowledged
  operations, or that model plus the one last intent that has no ack (the
  child may have committed it and died before printing the ack). Every
  acknowledged commit is therefore durable, and nothing else appears.
* ``batched``: the recovered state equals the model after the first ``j``
  intents for some ``0 <= j <= #intents``: a prefix, with no holes and no
  partial or corrupt state.

Values are rebuilt from ``(op number, kind, size)`` by :data:`VALUE_CODE`,
which both processes run, so the lines stay short (well under PIPE_BUF: a
line is written by one ``write(2)`` and arrives whole or not at all; a
trailing partial line is ignored and treated like a missing ack).

Replay a failure with its seed: ``pytest tests/test_crash.py -k "strict and 7"``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
from typing import Any

import pytest

from inmem import Database
from inmem import testing
from inmem.errors import DatabaseLocked, RunClosed, RunNotFound

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEGMENT_BYTES = 64 * 1024

# --- code shared by parent and child ----------------------------------------------------

VALUE_CODE = r'''
KEYS = ["a", "ab", "b", "b/1", "b/2", "c", "é", "日本", "日本語", "z", "\U0001F600", "zz"]

def make_value(i, kind, size):
    """The value the child put in op ``i``: deterministic, so lines need not carry it."""
    if kind == "int":
        return i * 7919 - size
    if kind == "big":
        return (1 << (64 + size % 100)) + i
    if kind == "float":
        return i / 7.0
    if kind == "bytes":
        return bytes((i + j) % 256 for j in range(size))
    if kind == "list":
        return [i, None, True, "x" * (size % 50), [i, -i]]
    pad = ("é日" + chr(0x41 + i % 26)) * (size // 3)
    if kind == "str":
        return pad
    return {"i": i, "pad": pad, "nested": {"k": [i, 1.5, False]}}
'''

exec(VALUE_CODE)  # defines KEYS and make_value here as well

#: The child's op loop (runs, puts, deletes), each op printed as an intent line before it
#: and an ack line after it; test_snapshot_crash.py's children reuse it.
OPS_CODE = r'''
import json, os, random, sys, threading
sys.path.insert(0, __ROOT__)
from inmem import Database
''' + VALUE_CODE + r'''
_out = sys.stdout
_emit_lock = threading.Lock()

def emit(obj):
    # the snapshot thread (progress callback) and the writer may both print: one write(2) per line
    with _emit_lock:
        _out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        _out.flush()

class Ops:
    """Random run/kv operations, printed as intent and ack lines (the format of tests/test_crash.py)."""

    def __init__(self, db, rng):
        self.db, self.rng, self.active, self.i = db, rng, [], 0

    def step(self):
        db, rng, active = self.db, self.rng, self.active
        self.i += 1
        i = self.i
        r = rng.random()
        if len(active) < 3 or (r < 0.01 and len(active) < 5):
            op = {"op": "begin", "name": "run%d" % i}
        elif r < 0.02 and len(active) > 3:
            op = {"op": "end", "run": active[rng.randrange(len(active))]}
        elif r < 0.25:
            op = {"op": "delete", "run": rng.choice(active), "key": rng.choice(KEYS)}
        else:
            kind = rng.choice(["int", "big", "float", "bytes", "list", "str", "dict"])
            size = rng.choice([0, 10, 100]) if rng.random() < 0.7 else rng.randrange(1000, 6000)
            op = {"op": "put", "run": rng.choice(active), "key": rng.choice(KEYS), "kind": kind, "size": size}
        op["i"] = i
        emit(dict(op, t="intent"))
        if op["op"] == "begin":
            run = db.begin_run(op["name"])
            active.append(run)
            emit({"t": "ack", "i": i, "run": run})
        elif op["op"] == "end":
            db.end_run(op["run"], status="completed")
            active.remove(op["run"])
            emit({"t": "ack", "i": i})
        elif op["op"] == "delete":
            existed = db.kv.delete(op["run"], op["key"])
            emit({"t": "ack", "i": i, "existed": existed})
        else:
            db.kv.put(op["run"], op["key"], make_value(i, op["kind"], op["size"]))
            emit({"t": "ack", "i": i})
'''

CHILD_CODE = OPS_CODE + r'''
def main():
    path, seed, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    db = Database.open(path, durability=mode, segment_bytes=SEGMENT_BYTES, flush_interval_ms=FLUSH_MS)
    ops = Ops(db, random.Random(seed))
    while True:
        ops.step()

main()
'''

LOCK_HOLDER_CODE = r'''
import sys
sys.path.insert(0, sys.argv[2])
from inmem import Database
db = Database.open(sys.argv[1], durability="strict", segment_bytes=4096)
run = db.begin_run("holder")
db.kv.put(run, "k", "v" * 5000)   # rotates: more than one segment
db.kv.put(run, "k2", "w")
sys.stdout.write(run + "\n")
sys.stdout.flush()
sys.stdin.read()                  # hold the database open until killed
'''


# --- the child and the kill ------------------------------------------------------------------


def run_child_and_kill(
    path: str, seed: int, mode: str, kill_after: int, *, flush_ms: int = 100, extra_lines: int = 0
) -> tuple[list[dict], str]:
    """Start the writer child, SIGKILL it after ``kill_after`` acks and ``extra_lines`` more lines.

    ``extra_lines=1`` kills right after the next intent arrived, i.e. while the
    child is most likely inside that commit. Returns (all complete lines, stderr).
    """
    code = (CHILD_CODE.replace("__ROOT__", repr(ROOT)).replace("SEGMENT_BYTES", str(SEGMENT_BYTES))
            .replace("FLUSH_MS", str(flush_ms)))
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, path, str(seed), mode, ROOT],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        raw: list[bytes] = []
        acks = 0
        try:
            extra = 0
            while acks < kill_after or extra < extra_lines:
                line = proc.stdout.readline()
                if not line:  # the child died on its own: a bug, reported below
                    break
                raw.append(line)
                if acks >= kill_after:
                    extra += 1
                elif line.startswith(b'{"t":"ack"'):
                    acks += 1
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            raw.append(proc.stdout.read())  # everything the pipe still holds: acknowledged as well
            proc.stdout.close()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    assert rc == -signal.SIGKILL, f"seed={seed} mode={mode}: child exited with {rc} before the kill:\n{stderr}"
    text = b"".join(raw)
    lines = text.split(b"\n")
    # the last element is b"" (text ends in a newline) or a partial line cut by the kill: drop it
    parsed = [json.loads(x) for x in lines[:-1]]
    return parsed, stderr


def pair_ops(lines: list[dict], seed: int) -> tuple[list[tuple[dict, dict]], dict | None]:
    """Split the child's lines into (intent, ack) pairs and the last intent without an ack."""
    done: list[tuple[dict, dict]] = []
    pending = None
    for obj in lines:
        if obj["t"] == "intent":
            assert pending is None, f"seed={seed}: two intents without an ack: {pending} {obj}"
            assert obj["i"] == len(done) + 1, f"seed={seed}: op numbers out of sequence at {obj}"
            pending = obj
        else:
            assert pending is not None and obj["i"] == pending["i"], f"seed={seed}: ack without intent {obj}"
            done.append((pending, obj))
            pending = None
    return done, pending


# --- the model -----------------------------------------------------------------------------


class Model:
    """What the database must hold after a sequence of the child's operations."""

    def __init__(self) -> None:
        self.runs: list[str] = []  # known run ids, in begin order
        self.status: dict[str, str] = {}
        self.kv: dict[str, dict[str, Any]] = {}
        self.unknown_runs = 0  # runs begun by an unacknowledged intent (id never printed)
        self.commits = 0  # WAL records these operations wrote

    def copy(self) -> Model:
        m = Model()
        m.runs = list(self.runs)
        m.status = dict(self.status)
        m.kv = {r: dict(d) for r, d in self.kv.items()}
        m.unknown_runs = self.unknown_runs
        m.commits = self.commits
        return m

    def apply(self, op: dict, ack: dict | None, where: str) -> None:
        kind = op["op"]
        if kind == "begin":
            if ack is None:
                self.unknown_runs += 1
            else:
                run = ack["run"]
                assert run not in self.status, f"{where}: run id {run} issued twice"
                self.runs.append(run)
                self.status[run] = "active"
                self.kv[run] = {}
            self.commits += 1
        elif kind == "end":
            assert self.status[op["run"]] == "active", f"{where}: end of an ended run {op}"
            self.status[op["run"]] = "completed"
            self.commits += 1
        elif kind == "delete":
            existed = op["key"] in self.kv[op["run"]]
            if ack is not None:
                assert ack["existed"] == existed, f"{where}: delete returned {ack['existed']}, model says {existed}"
            if existed:
                del self.kv[op["run"]][op["key"]]
                self.commits += 1
        else:
            self.kv[op["run"]][op["key"]] = make_value(op["i"], op["kind"], op["size"])
            self.commits += 1

    def snapshot(self, all_runs: list[str]) -> dict[str, Any]:
        """Comparable view: per known run its sorted items (None: not begun) and status, plus run counts."""
        by_status: dict[str, int] = {}
        for s in self.status.values():
            by_status[s] = by_status.get(s, 0) + 1
        if self.unknown_runs:
            by_status["active"] = by_status.get("active", 0) + self.unknown_runs
        return {
            "kv": {r: (sorted(self.kv[r].items()) if r in self.kv else None) for r in all_runs},
            "status": {r: self.status.get(r) for r in all_runs},
            "runs_by_status": by_status,
            "records": self.commits,
        }


def observe(db: Database, all_runs: list[str]) -> dict[str, Any]:
    """The same view, read from a reopened database (without writing anything)."""
    kv: dict[str, Any] = {}
    status: dict[str, str | None] = {}
    for r in all_runs:
        try:
            kv[r] = list(db.kv.scan(r))
        except RunNotFound:
            kv[r] = None
            status[r] = None
            continue
        try:
            db.kv.delete(r, "\x00absent-probe")  # writes nothing; checks that the run is writable
            status[r] = "active"
        except RunClosed:
            status[r] = "completed"
    stats = db.stats()
    return {
        "kv": kv,
        "status": status,
        "runs_by_status": stats["runs_by_status"],
        "records": stats["recovery"]["records"],
    }


def describe_diff(got: dict, want: dict) -> str:
    parts = []
    for field in ("runs_by_status", "records"):
        if got[field] != want[field]:
            parts.append(f"{field}: got {got[field]} want {want[field]}")
    for r in want["kv"]:
        if got["status"][r] != want["status"][r]:
            parts.append(f"run {r} status: got {got['status'][r]} want {want['status'][r]}")
        g, w = got["kv"][r], want["kv"][r]
        if g != w:
            gd, wd = dict(g or []), dict(w or [])
            for k in sorted(set(gd) | set(wd)):
                if gd.get(k, "<absent>") != wd.get(k, "<absent>"):
                    parts.append(f"run {r} key {k!r}: got {gd.get(k, '<absent>')!r:.60} want {wd.get(k, '<absent>')!r:.60}")
    return "; ".join(parts[:10])


def reopen_and_observe(path: str, all_runs: list[str]) -> tuple[dict, dict]:
    with Database.open(path, durability="strict", segment_bytes=SEGMENT_BYTES) as db:
        testing.check_store(db)
        got = observe(db, all_runs)
        recovery = db.stats()["recovery"]
    return got, recovery


def check_still_writable(path: str, where: str) -> None:
    """After recovery (which may have cut a torn tail) new commits append and survive another reopen."""
    with Database.open(path, durability="strict", segment_bytes=SEGMENT_BYTES) as db:
        run = db.begin_run("after-crash")
        db.kv.put(run, "after", {"ok": True, "pad": "p" * 3000})
    with Database.open(path, durability="strict", segment_bytes=SEGMENT_BYTES) as db:
        assert db.stats()["recovery"]["torn_tail"] is None, f"{where}: torn tail after a clean close"
        assert db.kv.get(run, "after") == {"ok": True, "pad": "p" * 3000}, f"{where}: write after recovery lost"
        testing.check_store(db)


# --- the tests -----------------------------------------------------------------------------

STRICT_SEEDS = range(30)


@pytest.mark.parametrize("seed", STRICT_SEEDS)
def test_strict_sigkill_keeps_every_acknowledged_commit(tmp_path, seed):
    rng = random.Random(seed)
    kill_after = rng.randint(1, 400)
    extra_lines = rng.choice([0, 1])  # kill right after an ack, or right after the next intent
    path = str(tmp_path / "db")
    where = f"seed={seed} (strict, kill after {kill_after} acks + {extra_lines} lines)"
    lines, _ = run_child_and_kill(path, seed, "strict", kill_after, extra_lines=extra_lines)
    done, pending = pair_ops(lines, seed)
    assert len(done) >= kill_after, f"{where}: only {len(done)} acks collected"
    where += f", {len(done)} acked, pending intent {pending}"

    model = Model()
    for op, ack in done:
        model.apply(op, ack, where)
    all_runs = list(model.runs)
    # a pending begin's run id was never printed: it shows only in runs_by_status
    candidates = [model.snapshot(all_runs)]
    if pending is not None:
        extended = model.copy()
        extended.apply(pending, None, where)
        candidates.append(extended.snapshot(all_runs))

    got, recovery = reopen_and_observe(path, all_runs)
    where += f", recovery {recovery}"
    assert got in candidates, f"{where}: recovered state is neither the acked model nor acked+pending: " + describe_diff(
        got, candidates[-1]
    )
    check_still_writable(path, where)


BATCHED_SEEDS = range(100, 104)


@pytest.mark.parametrize("seed", BATCHED_SEEDS)
def test_batched_sigkill_recovers_a_prefix(tmp_path, seed):
    rng = random.Random(seed)
    kill_after = rng.randint(200, 1500)
    path = str(tmp_path / "db")
    where = f"seed={seed} (batched, flush 2 ms, kill after {kill_after} acks)"
    lines, _ = run_child_and_kill(path, seed, "batched", kill_after, flush_ms=2, extra_lines=rng.choice([0, 1]))
    done, pending = pair_ops(lines, seed)
    assert len(done) >= kill_after, f"{where}: only {len(done)} acks collected"
    where += f", {len(done)} acked"

    all_runs = [ack["run"] for op, ack in done if op["op"] == "begin"]
    got, recovery = reopen_and_observe(path, all_runs)
    where += f", recovery {recovery}"

    ops = [(op, ack) for op, ack in done] + ([(pending, None)] if pending is not None else [])
    model = Model()
    matched = [0] if model.snapshot(all_runs) == got else []
    for j, (op, ack) in enumerate(ops, start=1):
        model.apply(op, ack, where)
        if model.snapshot(all_runs) == got:
            matched.append(j)
    assert matched, f"{where}: recovered state is not the model after any prefix of the {len(ops)} intents"
    check_still_writable(path, where)


def test_sigkill_leaves_lock_file_and_reopen_succeeds(tmp_path):
    path = str(tmp_path / "db")
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER_CODE, path, ROOT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        run = proc.stdout.readline().decode().strip()
        assert run, "lock holder child did not start"
        # the child holds the directory: a second open, from this process, is refused
        with pytest.raises(DatabaseLocked):
            Database.open(path)
        with open(os.path.join(path, "LOCK")) as f:
            assert f.read().strip() == str(proc.pid)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        rc = proc.wait()
        proc.stdout.close()
        proc.stdin.close()
    assert rc == -signal.SIGKILL
    assert os.path.exists(os.path.join(path, "LOCK")), "the LOCK file should outlive the killed process"
    # flock is released by the kernel on death: reopening succeeds without any cleanup
    with Database.open(path, durability="strict") as db:
        assert db.kv.get(run, "k") == "v" * 5000
        assert db.kv.get(run, "k2") == "w"
        assert db.stats()["recovery"]["segments"] >= 2
        # and it is now held by us
        with pytest.raises(DatabaseLocked):
            Database.open(path)
    with Database.open(path) as db:
        assert db.kv.get(run, "k2") == "w"
