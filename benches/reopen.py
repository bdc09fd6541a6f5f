"""W5: time to reopen a large database (WAL only, or a snapshot plus WAL) after a SIGKILL or a close.

Usage (from the repository root)::

    python -m benches.reopen                       # 1M records (~100 MB WAL), SIGKILLed, 5 reopens
    python -m benches.reopen --snapshot            # the same, with a snapshot of the 1M keys
    python -m benches.reopen --records 200000 --reps 3 --profile out.prof   # + cProfile of one reopen
    python -m benches.reopen --dir /tmp/reopen-db  # keep the database there (built once, reused)
    python -m benches.reopen --baseline ../old-checkout   # before/after, interleaved, same database

The database is built once, in a child process: ``--records`` single-put
autocommits (batched durability, 8 runs, key ``step/<n:08d>`` (13 B, 31 B
encoded), value ``{"step": n, "tool": "search", "ok": True}`` (~25 B of
CBOR), so a frame is ~110 bytes and 1M records make ~105 MB of WAL). With
``--snapshot`` the child then takes a snapshot (covering every key) and writes
``--tail`` more records after it. The child calls ``db.sync()`` and then
SIGKILLs itself (``--close`` closes it instead, which also writes history
sidecars), so the reopen is recovery after a crash. The build is reused
when ``--dir`` already holds one built with the same arguments.

Each repetition runs in a fresh child process (so no state or allocator
warmth is shared) and times, with ``time.perf_counter``:

* ``open``: ``Database.open(path)``;
* ``first read``: open + one ``kv.get`` of the last key written;
* ``first scan``: the above + the first 100 keys of one run by ``kv.scan``
  with the prefix ``step/00000`` (~125 keys; the first ordered read: it
  drains the cold table into the dict and builds the sorted key index, which
  recovery leaves to it);
* ``all keys``: the above + ``kv.get`` of every key, run by run (checked);
* ``open (CPU seconds)``: ``time.process_time`` of the open alone (less
  sensitive than wall time to other jobs on a shared machine).

A measuring child never closes the database (it exits with ``os._exit``), so
every repetition recovers the files exactly as the SIGKILL left them (a clean
close would write the history index's sidecars, which the next open reads
instead of re-deriving the index from the replay).

The figures printed are the medians over ``--reps`` repetitions (>= 3), plus
the min..max spread, and ``stats()["recovery"]`` of the last one. Reopening
reads the files from the page cache (just written or read by the previous
repetition): this measures recovery CPU, not a cold disk.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from tests.checkout import use_checkout  # noqa: E402

use_checkout()

RUNS = 8
MARK = "build.json"


def _key(n: int) -> str:
    return f"step/{n:08d}"


def _value(n: int) -> dict:
    return {"step": n, "tool": "search", "ok": True}


def build(path: str, records: int, snapshot: bool, tail: int, close: bool) -> None:
    """Child process: write the database and die by SIGKILL (or close it)."""
    from inmem import Database

    db = Database.open(path, durability="batched", snapshot_every_bytes=None)
    runs = [db.begin_run(f"run-{r}") for r in range(RUNS)]
    print(json.dumps(runs), flush=True)
    put = db.kv.put
    for n in range(records):
        put(runs[n % RUNS], _key(n), _value(n))
    if snapshot:
        db.snapshot()
        for n in range(records, records + tail):
            put(runs[n % RUNS], _key(n), _value(n))
    db.sync()
    if close:
        db.close()
        return
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def measure(path: str, total: int, runs: list[str], profile: str | None) -> dict:
    """Child process: one timed reopen; print the figures as JSON."""
    from inmem import Database

    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    c0 = time.process_time()
    t0 = time.perf_counter()
    db = Database.open(path)
    t_open = time.perf_counter() - t0
    c_open = time.process_time() - c0
    get = db.kv.get
    last = total - 1
    v = get(runs[last % RUNS], _key(last))
    t_first = time.perf_counter() - t0
    assert v == _value(last), v
    scanned = list(itertools.islice(db.kv.scan(runs[0], "step/00000"), 100))  # keys 0..999 of the run
    t_scan = time.perf_counter() - t0
    assert len(scanned) == min(100, (min(total, 1000) + RUNS - 1) // RUNS), len(scanned)
    for r in range(RUNS):
        run = runs[r]
        for n in range(r, total, RUNS):
            if get(run, _key(n)) is None:
                raise SystemExit(f"key {n} missing after reopen")
    t_all = time.perf_counter() - t0
    if prof is not None:
        prof.disable()
        prof.dump_stats(profile)
    rec = db.stats()["recovery"]
    # no close: the next repetition must find the files as the SIGKILL left them (a clean close
    # writes the history sidecars); the caller exits with os._exit
    return {"open": t_open, "open_cpu": c_open, "first": t_first, "scan": t_scan, "all": t_all, "recovery": rec}


def _wal_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path) if n.startswith("wal-"))


def _child(args: list[str], root: str = ROOT) -> str:
    out = subprocess.run([sys.executable, "-m", "benches.reopen", *args], cwd=root, capture_output=True, text=True)
    if out.returncode not in (0, -signal.SIGKILL):
        raise SystemExit(f"child {args} failed ({out.returncode}):\n{out.stderr}")
    return out.stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000, help="single-put commits to write (default 1M)")
    ap.add_argument("--snapshot", action="store_true", help="snapshot after the records, then write --tail more")
    ap.add_argument("--tail", type=int, default=10_000, help="records after the snapshot (default 10,000)")
    ap.add_argument("--close", action="store_true", help="close the writer instead of SIGKILLing it")
    ap.add_argument("--reps", type=int, default=5, help="timed reopens (default 5, at least 3)")
    ap.add_argument("--dir", default=None, help="database directory (kept, reused if built alike)")
    ap.add_argument("--profile", default=None, help="also write a cProfile of one more reopen here")
    ap.add_argument("--json", default=None, help="write the figures to this file")
    ap.add_argument("--baseline", default=None,
                    help="another checkout (with this script in its benches/) to time on the same database, "
                         "interleaved with this one: before/after figures from one run")
    ap.add_argument("--_build", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_measure", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_runs", default="[]", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    total = args.records + (args.tail if args.snapshot else 0)

    if args._build:
        build(args.dir, args.records, args.snapshot, args.tail, args.close)
        return 0
    if args._measure:
        print(json.dumps(measure(args.dir, total, json.loads(args._runs), args.profile)), flush=True)
        os._exit(0)  # as if killed again

    spec = {"records": args.records, "snapshot": args.snapshot, "tail": args.tail if args.snapshot else 0,
            "close": args.close, "format": 1}
    tmp = None
    path = args.dir
    if path is None:
        tmp = path = tempfile.mkdtemp(prefix="inmem-reopen-")
    db_path = os.path.join(path, "db")
    mark = os.path.join(path, MARK)
    try:
        saved = json.load(open(mark)) if os.path.exists(mark) else {}
        if saved.get("spec") == spec:
            runs = saved["runs"]
        else:
            shutil.rmtree(db_path, ignore_errors=True)
            t0 = time.perf_counter()
            out = _child(["--_build", "--dir", db_path, "--records", str(args.records), "--tail", str(args.tail)]
                         + (["--snapshot"] if args.snapshot else []) + (["--close"] if args.close else []))
            runs = json.loads(out.splitlines()[0])
            with open(mark, "w") as f:
                json.dump({"spec": spec, "runs": runs}, f)
            print(f"built in {time.perf_counter() - t0:.1f} s")
        common = ["--dir", db_path, "--records", str(args.records), "--tail", str(args.tail),
                  "--_runs", json.dumps(runs)] + (["--snapshot"] if args.snapshot else [])
        # the first reopen cuts nothing (SIGKILL after sync leaves no torn tail) but writes nothing
        # either: every repetition sees the same files
        import inmem

        native = "pure" if os.environ.get("INMEM_PURE", "") not in ("", "0") else (
            "native" if inmem.native.ENABLED else "pure (not built)")
        print(f"reopen: {args.records:,} records{' + snapshot + %d' % args.tail if args.snapshot else ''}, "
              f"WAL {_wal_bytes(db_path) / 1e6:.1f} MB, {'closed' if args.close else 'SIGKILLed'}, {native} path, "
              f"python {platform.python_version()}, {os.cpu_count()} cpus")
        roots = {"this": ROOT} if args.baseline is None else {"baseline": os.path.abspath(args.baseline),
                                                               "this": ROOT}
        results: dict[str, list[dict]] = {name: [] for name in roots}
        for _ in range(max(args.reps, 3)):
            for name, root in roots.items():  # interleaved: machine noise hits both alike
                results[name].append(json.loads(_child(["--_measure", *common], root)))
        if args.profile:
            _child(["--_measure", *common, "--profile", os.path.abspath(args.profile)])
        summary: dict[str, dict[str, float]] = {}
        for name, res in results.items():
            if len(roots) > 1:
                print(f" {name} ({roots[name]}):")
            summary[name] = {}
            for k, label in (("open", "open"), ("open_cpu", "open (CPU seconds)"), ("first", "open + first read"),
                             ("scan", " + first scan"), ("all", "open + all keys read")):
                if any(k not in r for r in res):
                    continue  # an older checkout's script (--baseline) does not time it
                xs = [r[k] for r in res]
                summary[name][k] = statistics.median(xs)
                print(f"  {label:<22} median {statistics.median(xs):.3f} s  ({min(xs):.3f}..{max(xs):.3f}, "
                      f"n={len(xs)})")
        if len(roots) > 1:
            print(f"  open + first read: this / baseline = "
                  f"{summary['this']['first'] / summary['baseline']['first']:.2f}")
        res = results["this"]
        rec = res[-1]["recovery"]
        print(f"  recovery: {rec['records']:,} records, {rec['bytes'] / 1e6:.1f} MB, "
              f"snapshot {rec['snapshot'] and rec['snapshot'].get('keys')} keys, {rec['seconds']:.3f} s in recover()")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"spec": spec, "path": native, "runs": results, "median": summary}, f, indent=1)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
