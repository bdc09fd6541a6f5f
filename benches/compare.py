"""inmem vs sqlite3 (vs LMDB) on the same KV workloads, in one process: a table of medians.

Usage (from the repository root)::

    python benches/compare.py            # default sizes, about 1 minute on 2 cores
    python benches/compare.py --quick    # smaller sizes, about 15 seconds

Workloads (the adapters are in ``benches/workloads.py``; one op is):

``put``      one autocommitted put of ``{"step": i, "tool": "search", "ok": True}``
             on a distinct key, into a fresh database per repetition.
             Batched-equivalent durability: inmem ``batched`` (background
             fsync every 100 ms), sqlite3 WAL + ``synchronous=NORMAL`` (no fsync
             per commit; fsync at checkpoints), LMDB ``sync=False`` (no fsync).
``get``      one point read of a random existing key (fixed seed) in a run of
             ``--keys`` keys, value decoded.
``scan-100`` listing all 100 (key, value) pairs of one run in a database of
             ``--runs`` runs x 100 keys, the run chosen at random.

Each workload runs ``--reps`` (5) repetitions per engine, engines interleaved
within each repetition so that machine noise hits all of them alike. A
repetition's figure is ops / wall seconds for the whole batch; the table shows
the median over repetitions, the min..max spread, and inmem's ratio to each
peer (>1 means inmem is faster). Read databases are filled once, untimed
(sqlite3 and LMDB in one transaction, inmem with one put per key, as it has no
batch API yet). LMDB is skipped, with a note, if the ``lmdb`` package is not
importable.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (ROOT, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

import workloads  # noqa: E402
from workloads import InmemKV, LmdbKV, SqliteKV, key_for, value_for  # noqa: E402

SIZES = {  # name -> (puts per rep, get keys, gets per rep, scan runs, scans per rep)
    "default": (50_000, 100_000, 100_000, 1_000, 2_000),
    "quick": (10_000, 20_000, 20_000, 200, 500),
}


def make_engines(base: str, tag: str) -> dict:
    """One fresh engine of each kind, in its own directory under ``base``."""
    engines = {
        "inmem": lambda p: InmemKV(p, durability="batched"),
        "sqlite3": lambda p: SqliteKV(p, synchronous="NORMAL"),
    }
    if workloads.lmdb is not None:
        engines["lmdb"] = lambda p: LmdbKV(p, sync=False)
    out = {}
    for name, make in engines.items():
        path = os.path.join(base, f"{tag}-{name}")
        os.makedirs(path, exist_ok=True)
        out[name] = make(path)
    return out


def timed(fn, n: int) -> float:
    """Run ``fn(i)`` for i in 0..n-1; return ops per second."""
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t0)


def bench_put(base: str, names: list[str], reps: int, n: int) -> dict[str, list[float]]:
    res: dict[str, list[float]] = {k: [] for k in names}
    for rep in range(reps):
        engines = make_engines(base, f"put{rep}")
        try:
            for name in names:
                eng = engines[name]
                run = eng.begin_run("bench")
                put = eng.put_fn(run)
                gc.collect()
                res[name].append(timed(lambda i, put=put: put(key_for(i), value_for(i)), n))
        finally:
            for eng in engines.values():
                eng.close()
    return res


def bench_get(base: str, names: list[str], reps: int, nkeys: int, n: int) -> dict[str, list[float]]:
    engines = make_engines(base, "get")
    try:
        getters = {}
        for name in names:
            eng = engines[name]
            run = eng.begin_run("bench")
            eng.load(run, ((key_for(i), value_for(i)) for i in range(nkeys)))
            getters[name] = eng.get_fn(run)
            assert getters[name](key_for(nkeys - 1)) == value_for(nkeys - 1)
        res: dict[str, list[float]] = {k: [] for k in names}
        for rep in range(reps):
            rng = random.Random(rep)
            keys = [key_for(rng.randrange(nkeys)) for _ in range(n)]
            for name in names:
                get = getters[name]
                gc.collect()
                res[name].append(timed(lambda i, get=get, keys=keys: get(keys[i]), n))
        return res
    finally:
        for eng in engines.values():
            eng.close()


def bench_scan(base: str, names: list[str], reps: int, nruns: int, n: int) -> dict[str, list[float]]:
    engines = make_engines(base, "scan")
    try:
        runs: dict[str, list] = {}
        for name in names:
            eng = engines[name]
            runs[name] = []
            for r in range(nruns):
                run = eng.begin_run(f"run-{r}")
                eng.load(run, ((key_for(i), value_for(i)) for i in range(100)))
                runs[name].append(run)
            got = eng.scan(runs[name][nruns // 2])
            assert len(got) == 100 and got[0] == (key_for(0), value_for(0)), got[:1]
        res: dict[str, list[float]] = {k: [] for k in names}
        for rep in range(reps):
            rng = random.Random(1000 + rep)
            picks = [rng.randrange(nruns) for _ in range(n)]
            for name in names:
                scan, rs = engines[name].scan, runs[name]
                gc.collect()
                res[name].append(timed(lambda i, scan=scan, rs=rs, picks=picks: scan(rs[picks[i]]), n))
        return res
    finally:
        for eng in engines.values():
            eng.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (about 15 s)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per workload and engine (default 5)")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a new temp dir, removed after)")
    args = ap.parse_args(argv)
    puts, gkeys, gets, sruns, scans = SIZES["quick" if args.quick else "default"]

    names = ["inmem", "sqlite3"] + (["lmdb"] if workloads.lmdb is not None else [])
    base = tempfile.mkdtemp(prefix="inmem-compare-", dir=args.dir)
    t_start = time.perf_counter()
    print(f"inmem compare: {'quick' if args.quick else 'default'} sizes, {args.reps} reps, "
          f"python {platform.python_version()}, {os.cpu_count()} cpus, {platform.platform()}")
    print(f"engine: {workloads.engine_fingerprint()}")
    import sqlite3

    print(f"sqlite3 {sqlite3.sqlite_version}" + (
        f", lmdb {workloads.lmdb.version()} (py-lmdb {workloads.lmdb.__version__})" if workloads.lmdb else ""))
    if workloads.lmdb is None:
        print("note: the lmdb package is not importable; LMDB skipped (pip install lmdb)")
    try:
        table = [
            (f"put ({puts:,}/rep)", "puts/s", bench_put(base, names, args.reps, puts)),
            (f"get ({gets:,}/rep of {gkeys:,})", "gets/s", bench_get(base, names, args.reps, gkeys, gets)),
            (f"scan-100 ({scans:,}/rep, {sruns:,} runs)", "scans/s",
             bench_scan(base, names, args.reps, sruns, scans)),
        ]
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print()
    peers = [n for n in names if n != "inmem"]
    head = f"{'workload':<34} {'unit':<8}"
    for n in names:
        head += f" {n + ' median':>16} {'(min..max)':>19}"
    for p in peers:
        head += f" {'inmem/' + p:>14}"
    print(head)
    print("-" * len(head))
    for label, unit, res in table:
        med = {n: statistics.median(res[n]) for n in names}
        line = f"{label:<34} {unit:<8}"
        for n in names:
            line += f" {med[n]:>16,.0f} {f'({min(res[n]):,.0f}..{max(res[n]):,.0f})':>19}"
        for p in peers:
            line += f" {med['inmem'] / med[p]:>13.2f}x"
        print(line)
    scan_med = statistics.median(table[2][2]["inmem"])
    print(f"\ninmem scan-100: median {1e6 / scan_med:,.0f} us per scan of 100 pairs. "
          f"Total time {time.perf_counter() - t_start:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
