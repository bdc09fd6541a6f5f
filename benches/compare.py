"""The benchmark suite: inmem against what a Python user would pick instead, on the same workloads.

Usage (from the repository root)::

    python -m benches.compare --scale 1 --out benches/results/run     # about 10 minutes on 2 cores
    python -m benches.compare --quick --out /tmp/cmp                  # seconds (CI runs this)
    python -m benches.compare --engines inmem,sqlite3 --workloads W2,W3 --scale 0.1

Engines (``benches/engines.py``, one small adapter each): ``inmem`` (native C
path) and ``inmem-pure`` (``INMEM_PURE=1``), ``sqlite3`` (WAL; synchronous
OFF/NORMAL/FULL for off/batched/strict), ``lmdb``, ``rocksdb`` (rocksdict),
``diskcache``, and ``floor`` (a dict per run + an append-only file). A peer
whose package is missing (the ``bench`` extra) is skipped with a note.

Workloads (fixed seeds; 24-byte keys, ~100-byte CBOR values; sizes below are
for ``--scale 1``, each multiplied by the scale; ``--quick`` is scale 0.01):

* **W1** put, one key per commit, durability ``off`` (50,000 per repetition)
  and ``strict`` (2,000 per repetition), each into a fresh database;
* **W2** the same with ``batched`` durability (50,000);
* **W3** random point get in a database of N = 1M keys (50,000 per repetition);
* **W4** scan of one run's 100 keys, the run chosen at random among 1,000
  (N = 100k; 2,000 scans per repetition);
* **W5** reopen after SIGKILL of a database of N = 1M keys: time to open, to
  the first read, and to all keys read (each repetition in a fresh process);
  inmem's database is written as N single-put commits (N WAL records), the
  peers' in batches of 100 (one run per commit);
* **W6** YCSB core workloads (Cooper et al., SoCC 2010) A (50 % read, 50 %
  update), B (95/5), C (read only), D (95 % read of the latest keys, 5 %
  insert), E (95 % short scans, 5 % insert: a scan starts at a zipfian key
  and reads a uniform 1-100 keys, within that key's run) and F (50 % read,
  50 % read-modify-write), zipfian with theta 0.99 (scrambled, as YCSB), over
  the N keys of the largest size (50,000 ops per repetition);
* **W7** strict durability from 1, 4 and 16 threads (2,000 puts per
  repetition split over the threads, each thread its own run; group commit
  where the engine has it), beside the disk's raw rate of append-100-bytes +
  fsync measured in the same worker;
* **W8** scaling: W3, W4, put (``batched``, 20,000 new keys into the full
  database) and W5 at N = 10k, 100k and 1M (``--sizes`` to change; e.g.
  ``--sizes 10000,100000,1000000,4000000`` adds the issue's 4M point);
* **W9** memory: resident bytes per key after the W5 reopen at the largest N
  (every key read, then one scan: inmem builds its sorted key index at the
  first ordered read), against the raw key + value bytes.

Method: every engine runs in its own worker process (so ``inmem-pure`` and
``inmem`` are separate interpreters) and the parent interleaves them — for each
repetition, every engine in turn — so machine noise hits all alike; each
repetition times every op with ``time.perf_counter_ns`` (so the figures
include that ~0.1 µs and the adapter's closure call, the same for every
engine); a repetition's throughput is ops / wall seconds of the batch. The
tables show the median over ``--reps`` repetitions (default 3, after one
warm-up batch per engine and workload), p50 and p99 per-op latency of the
pooled repetitions, and **inmem / best peer** (``floor`` is not a peer:
it is shown for scale). Written to ``--out``: ``results.json`` (every
figure), ``results.md`` (the tables, machine and versions) and
``scaling.png`` (matplotlib, if importable).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)
from tests.checkout import use_checkout  # noqa: E402

use_checkout()

import engines as E  # noqa: E402

RUN_KEYS = 100  # keys per run in the grid databases (W3, W4, W5, W8)
PEERS = ("sqlite3", "lmdb", "rocksdb", "diskcache")


# --- the worker side: one process per engine ------------------------------------------------------


def _stats(lat_ns: list[int], seconds: float) -> dict[str, float]:
    lat = sorted(lat_ns)
    n = len(lat)
    return {"n": n, "ops": n / seconds if seconds > 0 else 0.0, "p50_us": lat[n // 2] / 1e3,
            "p99_us": lat[min(n - 1, (n * 99) // 100)] / 1e3, "lat": lat_ns}


def _timed(fn, args: list) -> dict[str, float]:
    clock = time.perf_counter_ns
    lat = [0] * len(args)
    t0 = time.perf_counter()
    for i, a in enumerate(args):
        s = clock()
        fn(a)
        lat[i] = clock() - s
    return _stats(lat, time.perf_counter() - t0)


class Zipfian:
    """YCSB's zipfian generator (Gray et al., SIGMOD 1994, as in YCSB's ``ZipfianGenerator``):
    ranks 0..n-1, rank 0 the most popular, P(rank k) ~ 1 / (k + 1) ** theta."""

    def __init__(self, n: int, theta: float = 0.99):
        self.n, self.theta = n, theta
        zeta2 = 1 + 0.5 ** theta
        self.zetan = sum(1.0 / (i + 1) ** theta for i in range(n))
        self.alpha = 1.0 / (1.0 - theta)
        self.eta = (1 - (2.0 / n) ** (1 - theta)) / (1 - zeta2 / self.zetan)

    def next(self, rng: random.Random) -> int:
        u = rng.random()
        uz = u * self.zetan
        if uz < 1.0:
            return 0
        if uz < 1.0 + 0.5 ** self.theta:
            return 1
        return min(self.n - 1, int(self.n * (self.eta * u - self.eta + 1) ** self.alpha))


def _scramble(rank: int, n: int) -> int:
    """YCSB's scrambled zipfian: spread the popular ranks over the key space (FNV-1a 64 of the rank)."""
    h = 0xCBF29CE484222325
    for _ in range(8):
        h = ((h ^ (rank & 0xFF)) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
        rank >>= 8
    return h % n


#: YCSB core workloads (Cooper et al., SoCC 2010): (read, update, insert, read-modify-write) proportions
#: and the request distribution; the rest of each mix is short scans (E: 95 %).
YCSB = {"A": (0.5, 0.5, 0, 0, "zipfian"), "B": (0.95, 0.05, 0, 0, "zipfian"), "C": (1.0, 0, 0, 0, "zipfian"),
        "D": (0.95, 0, 0.05, 0, "latest"), "E": (0, 0, 0.05, 0, "zipfian"), "F": (0.5, 0, 0, 0.5, "zipfian")}
#: YCSB's default maximum scan length (uniform 1..100 keys)
YCSB_MAX_SCAN = 100


class Worker:
    """Serves the parent's commands for one engine (JSON lines on stdin/stdout)."""

    def __init__(self, engine: str, scratch: str):
        self.engine = engine
        self.cls = E.ADAPTERS[engine]
        self.scratch = scratch
        self.grid = None
        self.runs: list[str] = []
        self.size = 0

    def put_fresh(self, mode: str, n: int, tag: str) -> dict:
        path = os.path.join(self.scratch, f"put-{mode}-{tag}")
        shutil.rmtree(path, ignore_errors=True)
        eng = self.cls(path, mode)
        try:
            put = eng.put_fn(eng.begin_run("bench"))
            value = E.value_for(7)
            keys = [E.key_for(i) for i in range(n)]
            return _timed(lambda k: put(k, value), keys)
        finally:
            eng.close()
            shutil.rmtree(path, ignore_errors=True)

    def grid_open(self, path: str, runs: list[str], size: int) -> dict:
        self.grid = self.cls(path, "batched")
        self.runs, self.size = runs, size
        return {}

    def grid_close(self) -> dict:
        if self.grid is not None:
            self.grid.close()
        self.grid = None
        return {}

    def get(self, n: int, seed: int) -> dict:
        rng = random.Random(seed)
        nruns = len(self.runs)
        getters = [self.grid.get_fn(r) for r in self.runs]
        picks = [(getters[rng.randrange(nruns)], E.key_for(rng.randrange(RUN_KEYS))) for _ in range(n)]
        res = _timed(lambda p: p[0](p[1]), picks)
        g, k = picks[-1]
        assert g(k) is not None, "a loaded key is missing"
        return res

    def scan(self, n: int, seed: int) -> dict:
        rng = random.Random(seed)
        picks = [self.runs[rng.randrange(len(self.runs))] for _ in range(n)]
        if self.grid.scan(picks[0]) is None:
            return {"skipped": "no ordered scan"}
        got = self.grid.scan(picks[-1])
        assert len(got) == RUN_KEYS and got[0][0] == E.key_for(0), got[:1]
        return _timed(self.grid.scan, picks)

    def put_grid(self, n: int, seed: int) -> dict:
        rng = random.Random(seed)
        puts = [self.grid.put_fn(r) for r in self.runs]
        value = E.value_for(1)
        base = RUN_KEYS + seed * n
        picks = [(puts[rng.randrange(len(puts))], E.key_for(base + i)) for i in range(n)]
        return _timed(lambda p: p[0](p[1], value), picks)

    def ycsb(self, workload: str, n: int, seed: int) -> dict:
        """YCSB core workload ``workload`` over the grid's N keys (item i = key i % 100 of run i // 100):
        reads are gets, updates and inserts puts of a new value, read-modify-write a get then a put,
        scans ``scan_from`` of a uniform 1-100 keys from the chosen key (within its run)."""
        read, update, insert, _rmw, dist = YCSB[workload]
        if read + update + insert + _rmw < 1 and self.grid.scan_from(self.runs[0], E.key_for(0), 1) is None:
            return {"skipped": "no ordered scan"}
        scans = [functools.partial(self.grid.scan_from, r) for r in self.runs]
        rng = random.Random(seed)
        size = len(self.runs) * RUN_KEYS
        if getattr(self, "_zipf", None) is None or self._zipf.n != size:
            self._zipf = Zipfian(size)
        zipf = self._zipf
        gets = [self.grid.get_fn(r) for r in self.runs]
        puts = [self.grid.put_fn(r) for r in self.runs]
        value = E.value_for(seed)
        latest = size  # inserts go to new keys of the last run ("latest": reads favour them)
        ops = []
        for _ in range(n):
            x = rng.random()
            if x < insert + read + update + _rmw and x >= read + update + _rmw:
                ops.append((2, len(self.runs) - 1, E.key_for(RUN_KEYS + seed * n + latest - size)))
                latest += 1
                continue
            rank = zipf.next(rng)
            item = max(0, latest - 1 - rank) if dist == "latest" else _scramble(rank, size)
            if item >= size:  # a key inserted in this batch
                run, key = len(self.runs) - 1, E.key_for(RUN_KEYS + seed * n + item - size)
            else:
                run, key = item // RUN_KEYS, E.key_for(item % RUN_KEYS)
            if x >= read + update + _rmw + insert:  # a short scan
                ops.append((4, run, key, rng.randint(1, YCSB_MAX_SCAN)))
                continue
            kind = 0 if x < read else (1 if x < read + update else 3)
            ops.append((kind, run, key))

        def op(o):
            kind, run, key = o[0], o[1], o[2]
            if kind == 0:
                gets[run](key)
            elif kind == 3:
                gets[run](key)
                puts[run](key, value)
            elif kind == 4:
                scans[run](key, o[3])
            else:
                puts[run](key, value)

        return _timed(op, ops)

    def threads(self, threads: int, n: int, tag: str) -> dict:
        """W7: ``n`` strict puts split over ``threads`` threads (each its own run and keys), fresh
        database; commits per wall second, and the raw fsync rate (append 100 B + fsync) beside it."""
        import threading

        path = os.path.join(self.scratch, f"threads-{threads}-{tag}")
        shutil.rmtree(path, ignore_errors=True)
        eng = self.cls(path, "strict")
        try:
            make = getattr(eng, "thread_put_fn", eng.put_fn)
            puts = [make(eng.begin_run(f"t{t}")) for t in range(threads)]
            per = n // threads
            value = E.value_for(3)
            barrier = threading.Barrier(threads + 1)
            lat: list[list[int]] = [[] for _ in range(threads)]
            errors: list[BaseException] = []

            def worker(t: int) -> None:
                put, out, clock = puts[t], lat[t], time.perf_counter_ns
                keys = [E.key_for(i) for i in range(per)]
                barrier.wait()
                try:
                    for k in keys:
                        s = clock()
                        put(k, value)
                        out.append(clock() - s)
                except BaseException as exc:  # noqa: BLE001 - reported
                    errors.append(exc)

            ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
            for t in ts:
                t.start()
            barrier.wait()
            t0 = time.perf_counter()
            for t in ts:
                t.join()
            wall = time.perf_counter() - t0
            if errors:
                return {"error": repr(errors[0])}
            res = _stats([x for xs in lat for x in xs], wall)
        finally:
            eng.close()
            shutil.rmtree(path, ignore_errors=True)
        res["fsync_per_s"] = _raw_fsync_rate(self.scratch, 100)
        return res

    def serve(self) -> None:
        for line in sys.stdin:
            cmd = json.loads(line)
            op = cmd.pop("op")
            try:
                out = getattr(self, op)(**cmd)
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which notes it
                out = {"error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(out) + "\n")
            sys.stdout.flush()
        self.grid_close()


def _raw_fsync_rate(scratch: str, n: int) -> float:
    """The disk's raw rate of append-100-bytes-and-fsync (what one strict commit at least costs)."""
    path = os.path.join(scratch, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        data = b"x" * 100
        t0 = time.perf_counter()
        for _ in range(n):
            os.write(fd, data)
            os.fsync(fd)
        return n / (time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.remove(path)


def build_grid(engine: str, path: str, size: int, runs_file: str) -> None:
    """Child: write a database of ``size`` keys (``size / 100`` runs of 100 keys), then SIGKILL itself.

    inmem writes one commit per key (so its WAL holds ``size`` records, as W5 asks); the
    peers load one run per commit (their reopen does not depend on how the rows came).
    """
    eng = E.ADAPTERS[engine](path, "batched")
    runs = [eng.begin_run(f"run-{r}") for r in range(max(1, size // RUN_KEYS))]
    for run in runs:
        items = [(E.key_for(i), E.value_for(i)) for i in range(RUN_KEYS)]
        if engine.startswith("inmem"):
            put = eng.put_fn(run)
            for k, v in items:
                put(k, v)
        else:
            eng.load(run, items)
    eng.sync()
    with open(runs_file, "w") as f:
        json.dump(runs, f)
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_reopen(engine: str, path: str, runs_file: str) -> dict:
    """Child: open the database (after the SIGKILL), read one key, then every key; time each step."""
    with open(runs_file) as f:
        runs = json.load(f)
    rss0 = _rss()
    t0 = time.perf_counter()
    eng = E.ADAPTERS[engine](path, "batched")
    t_open = time.perf_counter() - t0
    last = eng.get_fn(runs[-1])(E.key_for(RUN_KEYS - 1))
    t_first = time.perf_counter() - t0
    assert last is not None, "the last key written is missing after reopen"
    keys = [E.key_for(i) for i in range(RUN_KEYS)]
    missing = 0
    for run in runs:
        get = eng.get_fn(run)
        for k in keys:
            if get(k) is None:
                missing += 1
    t_all = time.perf_counter() - t0
    eng.scan(runs[0])  # one ordered read, so the resident size counts inmem's sorted key index (built by it)
    rss = _rss() - rss0
    # no close: the next repetition must find the files as the SIGKILL left them (a clean close
    # would, e.g., write inmem's history sidecars); the caller exits with os._exit
    if missing:
        raise SystemExit(f"{missing} keys missing after reopen")
    return {"open_s": t_open, "first_s": t_first, "all_s": t_all, "rss_bytes": rss}


# --- the parent side -----------------------------------------------------------------------------


class Client:
    def __init__(self, engine: str, scratch: str):
        env = dict(os.environ)
        if engine == "inmem-pure":
            env["INMEM_PURE"] = "1"
        else:
            env.pop("INMEM_PURE", None)
        self.env = env
        self.engine = engine
        self.scratch = os.path.join(scratch, engine)
        os.makedirs(self.scratch, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benches.compare", "--_worker", engine, "--dir", self.scratch],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def call(self, op: str, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            return {"error": "worker died"}
        return json.loads(line)

    def child(self, *args: str) -> tuple[int, str, str]:
        out = subprocess.run([sys.executable, "-m", "benches.compare", *args], cwd=ROOT, env=self.env,
                             capture_output=True, text=True)
        return out.returncode, out.stdout, out.stderr

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except Exception:  # noqa: BLE001
            self.proc.kill()


class Suite:
    def __init__(self, engines: list[str], scratch: str, reps: int, log):
        self.engines = engines
        self.reps = reps
        self.log = log
        self.clients = {e: Client(e, scratch) for e in engines}
        self.results: dict[str, dict[str, Any]] = {}  # workload id -> engine -> figures
        self.notes: list[str] = []
        self._fsync_rates: list[float] = []

    def close(self) -> None:
        for c in self.clients.values():
            c.close()

    def _interleaved(self, wid: str, op: str, warmup: dict | None, **kw) -> None:
        """Run ``op`` reps times per engine, engines interleaved; pool the latencies."""
        runs: dict[str, list[dict]] = {e: [] for e in self.engines}
        self._fsync_rates = []
        if warmup is not None:
            for e in self.engines:
                self.clients[e].call(op, **{**kw, **warmup})
        for rep in range(self.reps):
            for e in self.engines:
                args = {k: (v(rep) if callable(v) else v) for k, v in kw.items()}
                runs[e].append(self.clients[e].call(op, **args))
        out: dict[str, Any] = {}
        for e, rs in runs.items():
            bad = [r for r in rs if "error" in r or "skipped" in r]
            if bad:
                out[e] = {"skipped": bad[0].get("error") or bad[0].get("skipped")}
                continue
            self._fsync_rates.extend(r["fsync_per_s"] for r in rs if "fsync_per_s" in r)
            lat = sorted(x for r in rs for x in r["lat"])
            n = len(lat)
            out[e] = {"ops": statistics.median(r["ops"] for r in rs), "ops_all": [r["ops"] for r in rs],
                      "p50_us": lat[n // 2] / 1e3, "p99_us": lat[min(n - 1, n * 99 // 100)] / 1e3}
        self.results[wid] = out
        self.log(f"  {wid}: " + ", ".join(
            f"{e} {v['ops']:,.0f}/s" if "ops" in v else f"{e} ({v['skipped']})" for e, v in out.items()))

    def puts(self, scale: float) -> None:
        n_off = max(200, int(50_000 * scale))
        n_strict = max(20, int(2_000 * scale))
        for wid, mode, n in (("W1 put off", "off", n_off), ("W2 put batched", "batched", n_off),
                             ("W1 put strict", "strict", n_strict)):
            self.log(f"{wid}: {n:,} puts per repetition, fresh database")
            self._interleaved(wid, "put_fresh", {"tag": "warm", "n": max(10, n // 10)}, mode=mode, n=n,
                              tag=lambda rep: str(rep))

    def thread_sweep(self, scale: float) -> None:
        """W7: strict commits from 1, 4 and 16 threads (group commit), against the raw fsync rate."""
        n = max(48, int(2_000 * scale)) // 48 * 48  # divisible by 1, 4 and 16
        for threads in (1, 4, 16):
            wid = f"W7 strict {threads} thread{'s' if threads > 1 else ''}"
            self.log(f"{wid}: {n:,} puts per repetition over {threads} threads, fresh database")
            self._interleaved(wid, "threads", {"threads": threads, "n": 48, "tag": "warm"}, threads=threads, n=n,
                              tag=lambda rep: str(rep))
            # the raw fsync rate measured beside each engine's repetitions (median over all of them)
            rates = self._fsync_rates
            self.results[wid]["_fsync_per_s"] = statistics.median(rates) if rates else 0.0

    def grid(self, size: int, scale: float, scratch: str, workloads: set[str], ycsb: bool) -> None:
        """Build (SIGKILL), reopen (W5) and read/write (W3, W4, put) a database of ``size`` keys."""
        self.log(f"N = {size:,}: building ({size // RUN_KEYS:,} runs x {RUN_KEYS} keys), SIGKILL")
        paths: dict[str, tuple[str, str]] = {}
        for e in self.engines:
            path = os.path.join(scratch, e, f"grid-{size}")
            runs_file = path + ".runs.json"
            shutil.rmtree(path, ignore_errors=True)
            t0 = time.perf_counter()
            code, _, err = self.clients[e].child("--_build", e, "--dir", path, "--size", str(size),
                                                 "--runs-file", runs_file)
            if code not in (0, -signal.SIGKILL) or not os.path.exists(runs_file):
                self.notes.append(f"{e}: build of N={size} failed ({err.strip().splitlines()[-1:]})")
                continue
            paths[e] = (path, runs_file)
            self.log(f"  built {e} in {time.perf_counter() - t0:.1f} s")
        reopen: dict[str, list[dict]] = {e: [] for e in paths}
        for _rep in range(self.reps if workloads & {"W5", "W8"} else 0):
            for e, (path, runs_file) in paths.items():
                code, out, err = self.clients[e].child("--_reopen", e, "--dir", path, "--runs-file", runs_file)
                if code == 0:
                    reopen[e].append(json.loads(out.strip().splitlines()[-1]))
                else:
                    self.notes.append(f"{e}: reopen of N={size} failed ({err.strip().splitlines()[-1:]})")
        w5 = {}
        for e, rs in reopen.items():
            if rs:
                w5[e] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                w5[e]["all"] = rs
        if w5:
            self.results[f"W5 reopen N={size}"] = w5
        self.log("  W5 reopen: " + ", ".join(f"{e} {v['first_s']:.3f} s to first read, {v['all_s']:.2f} s to all"
                                             for e, v in w5.items()))
        for e, (path, runs_file) in paths.items():
            with open(runs_file) as f:
                runs = json.load(f)
            self.clients[e].call("grid_open", path=path, runs=runs, size=size)
        live = [e for e in self.engines if e in paths]
        saved, self.engines = self.engines, live
        try:
            if workloads & {"W3", "W8"}:
                n_get = max(500, int(50_000 * scale))
                self._interleaved(f"W3 get N={size}", "get", {"seed": 99, "n": max(100, n_get // 10)}, n=n_get,
                                  seed=lambda rep: rep)
            if workloads & {"W4", "W8"}:
                n_scan = max(50, int(2_000 * scale))
                self._interleaved(f"W4 scan-100 N={size}", "scan", {"seed": 99, "n": max(10, n_scan // 10)},
                                  n=n_scan, seed=lambda rep: 1000 + rep)
            if "W8" in workloads:
                n_put = max(200, int(20_000 * scale))
                self._interleaved(f"W8 put batched N={size}", "put_grid",
                                  {"seed": 99, "n": max(20, n_put // 10)}, n=n_put, seed=lambda rep: rep)
            if ycsb:
                n_ops = max(500, int(50_000 * scale))
                for w in YCSB:
                    self._interleaved(f"W6 YCSB-{w} N={size}", "ycsb",
                                      {"workload": w, "seed": 99, "n": max(100, n_ops // 10)},
                                      workload=w, n=n_ops, seed=lambda rep: 1 + rep)
        finally:
            self.engines = saved
            for e in paths:
                self.clients[e].call("grid_close")
                shutil.rmtree(paths[e][0], ignore_errors=True)


# --- report ----------------------------------------------------------------------------------------


def _best_peer(figs: dict[str, Any], key: str, higher_is_better: bool) -> tuple[str, float] | None:
    peers = [(e, v[key]) for e, v in figs.items() if e in PEERS and key in v]
    if not peers:
        return None
    return max(peers, key=lambda p: p[1]) if higher_is_better else min(peers, key=lambda p: p[1])


def markdown(results: dict, engines: list[str], header: list[str], notes: list[str]) -> str:
    lines = list(header) + [""]
    ops_rows = [w for w in results if not w.startswith("W5")]
    cols = " | ".join(engines)
    lines += ["### Throughput (ops/s, median of repetitions; p99 latency in µs below it)", "",
              f"| workload | {cols} | inmem / best peer |", "|---" * (len(engines) + 2) + "|"]
    for w in ops_rows:
        figs = results[w]
        cells = []
        for e in engines:
            v = figs.get(e)
            if v is None:
                cells.append("—")
            elif "ops" not in v:
                cells.append("n/a")
            else:
                cells.append(f"{v['ops']:,.0f}<br>p99 {v['p99_us']:,.1f}")
        best = _best_peer(figs, "ops", True)
        ratio = (f"{figs['inmem']['ops'] / best[1]:.2f}x ({best[0]})"
                 if best and "ops" in figs.get("inmem", {}) else "—")
        lines.append(f"| {w} | " + " | ".join(cells) + f" | {ratio} |")
    w7 = [w for w in results if w.startswith("W7")]
    if w7:
        lines += ["", "W7 (strict): raw append+fsync rate of the disk measured beside each row: " + ", ".join(
            f"{w.split('strict ')[1]} {results[w].get('_fsync_per_s', 0):,.0f}/s" for w in w7) + "."]
        one = results[w7[0]]
        for e in engines:
            if "ops" in one.get(e, {}) and "ops" in results[w7[-1]].get(e, {}):
                lines.append(f"* {e}: {results[w7[-1]][e]['ops'] / one[e]['ops']:.1f}x the single-thread strict "
                             f"rate with {w7[-1].split('strict ')[1]}")
    reopen_rows = [w for w in results if w.startswith("W5")]
    if reopen_rows:
        lines += ["", "### Reopen after SIGKILL (seconds, median; open / first read / all keys read)", "",
                  "The peers open lazily (their first read costs ~nothing and reads go to disk pages);",
                  "inmem loads the whole state at open. \"All keys read\" compares the work done.", "",
                  f"| workload | {cols} | inmem / best peer: first read | all keys read |",
                  "|---" * (len(engines) + 3) + "|"]
        for w in reopen_rows:
            figs = results[w]
            cells = [f"{figs[e]['open_s']:.3f} / {figs[e]['first_s']:.3f} / {figs[e]['all_s']:.2f}"
                     if e in figs else "—" for e in engines]
            ratios = []
            for key in ("first_s", "all_s"):
                best = _best_peer(figs, key, False)
                ratios.append(f"{figs['inmem'][key] / best[1]:.2f} ({best[0]})" if best and "inmem" in figs else "—")
            lines.append(f"| {w} | " + " | ".join(cells) + f" | {ratios[0]} | {ratios[1]} |")
        last = reopen_rows[-1]
        n = int(last.split("N=")[1])
        raw = n * (24 + len(E.dumps(E.value_for(n))))
        lines += ["", f"### W9 memory after reopen at N = {n:,} (resident bytes per key; raw key + value = "
                      f"{raw / n:.0f} B)", "",
                  "Growth of the reader's resident set over the reopen and the all-keys read: inmem and the floor",
                  "hold everything in the heap; LMDB's mapped pages count once touched; sqlite3, RocksDB and",
                  "diskcache read through their own bounded caches (their data stays on disk).", "", f"| | {cols} |", "|---" * (len(engines) + 1) + "|",
                  "| bytes/key | " + " | ".join(
                      f"{results[last][e]['rss_bytes'] / n:,.0f} ({results[last][e]['rss_bytes'] / raw:.1f}x raw)"
                      if e in results[last] else "—" for e in engines) + " |"]
    if notes:
        lines += ["", "Notes:", ""] + [f"* {n}" for n in notes]
    return "\n".join(lines) + "\n"


def plot(results: dict, engines: list[str], path: str) -> bool:
    if not any(w.startswith(("W3", "W4", "W5", "W8")) for w in results):
        return False  # nothing scales in this run
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [("W3 get", "ops", "get ops/s"), ("W4 scan-100", "ops", "scans/s"),
              ("W8 put batched", "ops", "puts/s (batched)"),
              ("W5 reopen", "all_s", "reopen after SIGKILL + read every key (s)")]
    colors = {e: f"C{i}" for i, e in enumerate(E.ADAPTERS)}  # one color per engine in every panel
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, (prefix, key, label) in zip(axes.flat, panels):
        rows = sorted((int(w.split("N=")[1]), w) for w in results if w.startswith(prefix))
        for e in engines:
            xs = [n for n, w in rows if key in results[w].get(e, {})]
            ys = [results[w][e][key] for n, w in rows if key in results[w].get(e, {})]
            if xs:
                ax.plot(xs, ys, marker="o", label=e, color=colors.get(e),
                        linewidth=2.5 if e.startswith("inmem") else 1.2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("keys in the database (N)")
        ax.set_title(label)
        ax.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("inmem vs peers: scaling (medians)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every size (default 1.0: ~10 minutes)")
    ap.add_argument("--quick", action="store_true", help="scale 0.01 and sizes 1k, 10k (seconds)")
    ap.add_argument("--out", default=None, help="directory for results.json, results.md, scaling.png")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per workload and engine (default 3)")
    ap.add_argument("--engines", default=None, help="comma-separated subset (default: all available)")
    ap.add_argument("--workloads", default="W1,W2,W3,W4,W5,W6,W7,W8", help="comma-separated subset")
    ap.add_argument("--sizes", default=None, help="N for W3/W4/W5/W8, comma-separated (default 10k,100k,1M x scale)")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir, removed after)")
    ap.add_argument("--replot", default=None, help="only redraw OUT/scaling.png and results.md from this results.json")
    # internal: the worker and the build / reopen children
    ap.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_build", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_reopen", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--runs-file", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._worker:
        Worker(args._worker, args.dir).serve()
        return 0
    if args._build:
        build_grid(args._build, args.dir, args.size, args.runs_file)
        return 0
    if args._reopen:
        print(json.dumps(measure_reopen(args._reopen, args.dir, args.runs_file)), flush=True)
        os._exit(0)  # as if killed: nothing is closed or flushed by the engine

    if args.replot:
        with open(args.replot) as f:
            data = json.load(f)
        out_dir = args.out or os.path.dirname(args.replot)
        with open(os.path.join(out_dir, "results.md"), "w") as f:
            f.write(markdown(data["results"], data["engines"], data["header"], data["notes"]))
        plot(data["results"], data["engines"], os.path.join(out_dir, "scaling.png"))
        return 0
    scale = 0.01 if args.quick else args.scale
    if args.sizes:
        sizes = [int(float(s)) for s in args.sizes.split(",")]
    elif args.quick:
        sizes = [1_000, 10_000]
    else:
        sizes = sorted({max(RUN_KEYS * 10, int(n * scale)) for n in (10_000, 100_000, 1_000_000)})
    ok, missing = E.available()
    wanted = args.engines.split(",") if args.engines else list(E.ADAPTERS)
    engines = [e for e in wanted if e in ok]
    notes = [f"{e} skipped: {missing[e]}" for e in wanted if e in missing]
    workloads = set(args.workloads.split(","))
    out_dir = args.out
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)  # --dir may name a directory that does not exist yet
    scratch = tempfile.mkdtemp(prefix="inmem-compare-", dir=args.dir)

    def log(msg: str) -> None:
        print(msg, flush=True)

    from inmem import native

    import workloads as wl

    header = [
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}",
        f"inmem: {wl.engine_fingerprint()} (native built: {native.ENABLED or os.environ.get('INMEM_PURE') == '1'})",
        "Peers: " + ", ".join(f"{k} {v}" for k, v in E.versions().items()),
        f"Command: python -m benches.compare {' '.join(argv if argv is not None else sys.argv[1:])}",
        f"Scale {scale}, sizes {sizes}, {args.reps} repetitions, engines interleaved.",
    ]
    for h in header:
        log(h)
    for n in notes:
        log("note: " + n)
    t_start = time.perf_counter()
    suite = Suite(engines, scratch, max(1, args.reps), log)
    try:
        if workloads & {"W1", "W2"}:
            suite.puts(scale)
        if "W7" in workloads:
            suite.thread_sweep(scale)
        if workloads & {"W3", "W4", "W5", "W6", "W8"}:
            grid_sizes = sizes if "W8" in workloads else sizes[-1:]
            for size in grid_sizes:
                suite.grid(size, scale, scratch, workloads, "W6" in workloads and size == grid_sizes[-1])
    finally:
        suite.close()
        shutil.rmtree(scratch, ignore_errors=True)
    notes += suite.notes
    header.append(f"Total time {time.perf_counter() - t_start:.0f} s.")
    md = markdown(suite.results, engines, header, notes)
    print()
    print(md)
    if out_dir:
        with open(os.path.join(out_dir, "results.md"), "w") as f:
            f.write(md)
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump({"header": header, "engines": engines, "scale": scale, "sizes": sizes,
                       "results": suite.results, "notes": notes}, f, indent=1)
        drawn = plot(suite.results, engines, os.path.join(out_dir, "scaling.png"))
        print(f"wrote {out_dir}/results.md, results.json" + (", scaling.png" if drawn else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
