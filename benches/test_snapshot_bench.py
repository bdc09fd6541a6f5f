"""Snapshot benchmarks of inmem: writing a snapshot, the writer pause, reopening (pytest-benchmark).

Run from the repository root::

    python -m pytest benches/test_snapshot_bench.py --benchmark-only -q     # ~1.5 min on 2 cores

Method
------
Every figure is a **median over rounds** (the reference machine has 2 noisy
cores). Datasets are built once per session (session fixtures in
``tmp_path_factory``) with automatic snapshots off (``snapshot_every_bytes=None``)
and then *copied* (``shutil.copytree``, untimed) for each bench, so no bench
sees files another bench left behind, whatever the order.

Dataset ``100k`` / ``1M``
    ``N`` keys ``key/00000000`` ... spread round-robin over 100 runs (key
    ``i`` in run ``i % 100``), values the KV benches' small dicts
    (``{"step": i, "tool": "search", "ok": True}``, 21-25 bytes of CBOR),
    loaded in transactions of 10,000 puts (``batched``), then closed: a
    directory holding only a WAL (~6.5 MB / ~66 MB), no snapshot.

``snapshot-100k``, ``snapshot-1M``
    One op = one ``db.snapshot()`` on the open database (nothing else
    running). Before each round (``setup``, untimed) one autocommit put, so
    every round writes a new ``snapshot-<version>.snap`` and prunes as in
    steady state (keep two, delete the third). ``warmup_rounds=1``.
    ``extra_info``: medians over the timed rounds of ``SnapshotInfo.seconds``,
    ``pause_ms`` (the longest single capture step under the commit lock, as
    the engine reports it), ``capture_seconds`` (all steps together), the
    file size in MB and MB/s (size / median seconds).

``snapshot-1M-writer``
    The pause a writer actually sees. A background thread does autocommit
    ``kv.put`` overwrites of random existing keys (fixed seed) in a loop,
    timestamping each put with ``time.perf_counter`` before and after. Per
    round: ``setup`` starts the thread and sleeps ``BASELINE_S`` (the
    *baseline* window: the same thread, the same loop, no snapshot); the timed
    call is ``db.snapshot()`` (the *snapshot* window, from its start to its
    return); ``teardown`` stops the thread. Per window: put latency p50 / p99
    / p99.9 / max (a put belongs to the window its start falls in), the
    longest *stall* (gap between two consecutive put completions: what the
    writer's own loop sees, including time it spent without the GIL between
    puts), and puts/s. The snapshot window is also split at the first
    ``progress("snapshot", ...)`` call (the database is opened with a
    ``progress`` callback): *capture* (the capture steps, the WAL sync and
    encoding the first MiB of the file) and *write* (the rest of the file,
    fsync, rename, the verification re-read, pruning); ``capture_max_ms`` /
    ``write_max_ms`` are the longest puts that started in each. Figures are
    medians over rounds, plus the worst round.
    The GIL: the snapshot's own work (capture loop, chunk encoding,
    verification) runs on the same interpreter, so the writer also waits for
    the GIL when it holds no lock at all, for one switch interval
    (``sys.getswitchinterval()``, 5 ms) or for a whole C call that does not
    release the GIL (a dict resize, a deallocation, a garbage collection):
    that is in these figures, not separated from the commit-lock waits.

``reopen-1M-snapshot``
    ``Database.open(path, snapshot_every_bytes=None)`` + ``close()`` of the
    1M-key database after one snapshot was taken and the database closed
    (the WAL it covers is still there, as after a first snapshot: the keep-two
    rule deletes WAL only below the *older* of two snapshots; recovery reads
    that last segment to find where the log ends but replays no record).
    ``extra_info``: the split from ``stats()["recovery"]``: seconds loading
    the snapshot, recovery's total seconds, and the open + close wall time
    (the rest: building the ``SortedDict`` from recovery's dict, the run
    registry, the WAL writer, close).

The ~100 MB WAL reopen with no snapshot is ``test_kv_bench.py``'s
``reopen-100MB`` (its fixture builds with ``snapshot_every_bytes=None``).

Every bench stores ``extra_info["ops_per_s"] = 1 / median`` and adds a row to
the summary printed at the end of the session (``conftest.py``).
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import threading
import time

import pytest
from workloads import key_for, value_for

from inmem import Database

SIZES = {"100k": 100_000, "1M": 1_000_000}
RUNS = 100  # key i goes to run i % RUNS
LOAD_TX = 10_000  # puts per loading transaction
SNAP_ROUNDS = {"100k": 9, "1M": 5}
WRITER_ROUNDS = 3
BASELINE_S = 1.0  # writer alone before each snapshot
WRITER_KEYS = 50_000  # distinct random existing keys the writer cycles through
REOPEN_ROUNDS = 7
MB = 1e6


def _record(benchmark, results, label, op, **extra):
    """Store 1 / median in extra_info and the session summary (``conftest.py``); return the median."""
    if getattr(benchmark, "stats", None) is None:  # --benchmark-disable: ran once, nothing timed
        return None
    median = benchmark.stats.stats.median
    benchmark.extra_info.update({"ops_per_s": round(1.0 / median, 4), "median_s": median, "op": op, **extra})
    results.append({"group": benchmark.group, "engine": "inmem", "label": label, "ops_per_s": 1.0 / median,
                    "op": op})
    return median


def _med(xs):
    return statistics.median(xs)


# --- datasets ------------------------------------------------------------------------------------


def _load(path: str, n: int) -> list[str]:
    """Build a closed database of ``n`` keys over RUNS runs; return the run ids."""
    db = Database.open(path, durability="batched", snapshot_every_bytes=None)
    try:
        runs = [db.begin_run(f"run-{r}") for r in range(RUNS)]
        for start in range(0, n, LOAD_TX):
            with db.transaction() as tx:
                put = tx.kv.put
                for i in range(start, min(start + LOAD_TX, n)):
                    put(runs[i % RUNS], key_for(i), value_for(i))
    finally:
        db.close()
    return runs


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """``dataset(size) -> (pristine path, run ids)``; each size is built once per session."""
    built: dict[str, tuple[str, list[str]]] = {}

    def get(size: str) -> tuple[str, list[str]]:
        if size not in built:
            path = str(tmp_path_factory.mktemp(f"snap-{size}") / "db")
            built[size] = (path, _load(path, SIZES[size]))
        return built[size]

    return get


def _copy(tmp_path_factory, src: str, name: str) -> str:
    dst = str(tmp_path_factory.mktemp(name) / "db")
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("LOCK"))
    return dst


def _dir_bytes(path: str, prefix: str) -> int:
    return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path) if n.startswith(prefix))


# --- snapshot write ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", list(SIZES))
def test_snapshot(benchmark, results, dataset, tmp_path_factory, size):
    benchmark.group = f"snapshot-{size}"
    src, runs = dataset(size)
    path = _copy(tmp_path_factory, src, f"snapw-{size}")
    db = Database.open(path, durability="batched", snapshot_every_bytes=None)
    try:
        infos = []
        bump = iter(range(10**9))

        def one_put():  # a new commit version: each round writes a new file and prunes the oldest
            db.kv.put(runs[0], "bench/bump", next(bump))

        benchmark.pedantic(lambda: infos.append(db.snapshot()), setup=one_put,
                           rounds=SNAP_ROUNDS[size], warmup_rounds=1)
        timed = infos[1:]  # the first is the warm-up round
        n = SIZES[size] + 1  # + the bump key (run records are keys too, counted below)
        assert all(i.keys >= n for i in timed)
        snaps = sorted(x for x in os.listdir(path) if x.endswith(".snap"))
        assert len(snaps) == 2  # keep two
    finally:
        db.close()
    seconds = _med([i.seconds for i in timed])
    file_mb = _med([i.bytes for i in timed]) / MB
    _record(
        benchmark, results, f"inmem {size} keys",
        f"db.snapshot() of {timed[0].keys:,} keys: {seconds:.2f} s, max pause "
        f"{_med([i.pause_ms for i in timed]):.1f} ms, {file_mb:.1f} MB, {file_mb / seconds:.0f} MB/s",
        keys=timed[0].keys,
        info_seconds=seconds,
        info_seconds_all=[i.seconds for i in timed],
        pause_ms=_med([i.pause_ms for i in timed]),
        pause_ms_all=[i.pause_ms for i in timed],
        capture_seconds=_med([i.capture_seconds for i in timed]),
        file_mb=round(file_mb, 2),
        mb_per_s=round(file_mb / seconds, 1),
        wal_segments_deleted=sum(len(i.wal_segments_deleted) for i in timed),
    )


# --- the pause a writer sees ---------------------------------------------------------------------


def _pct(sorted_xs: list[float], q: float) -> float:
    return sorted_xs[min(len(sorted_xs) - 1, int(q * len(sorted_xs)))]


def _window(puts: list[tuple[float, float]], lo: float, hi: float) -> dict[str, float]:
    """Latency figures (ms) of the puts that started in [lo, hi); ``puts`` = (start, end) in order."""
    inside = [(s, e) for s, e in puts if lo <= s < hi]
    lat = sorted(e - s for s, e in inside)
    ends = [e for _, e in puts if lo <= e < hi]
    gaps = [b - a for a, b in zip(ends, ends[1:])] or [0.0]
    if not lat:
        return {"puts": 0, "puts_per_s": 0.0, "p50_ms": 0.0, "p99_ms": 0.0, "p999_ms": 0.0, "max_ms": 0.0,
                "max_stall_ms": 0.0, "over_5ms": 0}
    return {
        "puts": len(inside),
        "puts_per_s": len(inside) / (hi - lo),
        "p50_ms": _pct(lat, 0.5) * 1e3,
        "p99_ms": _pct(lat, 0.99) * 1e3,
        "p999_ms": _pct(lat, 0.999) * 1e3,
        "max_ms": lat[-1] * 1e3,
        "max_stall_ms": max(gaps) * 1e3,
        "over_5ms": sum(1 for x in lat if x > 0.005),
    }


def test_snapshot_writer_pause(benchmark, results, dataset, tmp_path_factory):
    benchmark.group = "snapshot-1M-writer"
    src, runs = dataset("1M")
    path = _copy(tmp_path_factory, src, "snap-writer")
    state: dict = {}

    def progress(phase: str, done: int, total: int) -> None:  # first call: the capture is over
        if phase == "snapshot" and "t_written" not in state:
            state["t_written"] = time.perf_counter()

    db = Database.open(path, durability="batched", snapshot_every_bytes=None, progress=progress)
    n = SIZES["1M"]
    rng = random.Random(7)
    targets = [(runs[i % RUNS], key_for(i)) for i in (rng.randrange(n) for _ in range(WRITER_KEYS))]
    rounds: list[dict] = []

    def writer(stop: threading.Event, puts: list) -> None:
        put = db.kv.put
        clock = time.perf_counter
        append = puts.append
        i = 0
        while not stop.is_set():
            run, key = targets[i % WRITER_KEYS]
            t = clock()
            put(run, key, i)
            append((t, clock()))
            i += 1

    def setup():
        stop, puts = threading.Event(), []
        th = threading.Thread(target=writer, args=(stop, puts), daemon=True)
        state.update(stop=stop, puts=puts, thread=th)
        state.pop("t_written", None)
        th.start()
        time.sleep(BASELINE_S)

    def snapshot():
        state["t1"] = time.perf_counter()
        state["info"] = db.snapshot()
        state["t2"] = time.perf_counter()

    def teardown():
        state["stop"].set()
        state["thread"].join()
        puts = state["puts"]
        t1 = state["t1"]
        first = next(s for s, _ in puts)  # the thread's first put: the baseline window starts there
        rounds.append({
            "baseline": _window(puts, first, t1),
            "snapshot": _window(puts, t1, state["t2"]),
            "capture": _window(puts, t1, state["t_written"]),
            "write": _window(puts, state["t_written"], state["t2"]),
            "info": state["info"],
        })

    try:
        benchmark.pedantic(snapshot, setup=setup, teardown=teardown, rounds=WRITER_ROUNDS, warmup_rounds=0)
        assert db.stats()["snapshots"]["taken"] == WRITER_ROUNDS
    finally:
        db.close()
    if not rounds:
        return
    fig: dict[str, float | list] = {}
    for window in ("baseline", "snapshot"):
        for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms", "max_stall_ms", "puts_per_s", "over_5ms"):
            xs = [r[window][k] for r in rounds]
            fig[f"{window}_{k}"] = round(_med(xs), 3)
            if k in ("max_ms", "max_stall_ms", "p99_ms"):
                fig[f"{window}_{k}_worst"] = round(max(xs), 3)
    for window in ("capture", "write"):
        fig[f"{window}_max_ms"] = round(_med([r[window]["max_ms"] for r in rounds]), 3)
        fig[f"{window}_max_ms_all"] = [round(r[window]["max_ms"], 1) for r in rounds]
    fig["engine_pause_ms"] = _med([r["info"].pause_ms for r in rounds])
    fig["engine_pause_ms_all"] = [r["info"].pause_ms for r in rounds]
    fig["info_seconds"] = _med([r["info"].seconds for r in rounds])
    fig["capture_seconds"] = _med([r["info"].capture_seconds for r in rounds])
    fig["puts_during_snapshot"] = _med([r["snapshot"]["puts"] for r in rounds])
    _record(
        benchmark, results, "inmem 1M + writer",
        f"db.snapshot() while a thread overwrites: put p99 {fig['snapshot_p99_ms']:.2f} ms (alone "
        f"{fig['baseline_p99_ms']:.2f}), max {fig['snapshot_max_ms']:.1f} ms (alone {fig['baseline_max_ms']:.1f}), "
        f"stall {fig['snapshot_max_stall_ms']:.1f} ms",
        **fig,
    )


# --- reopen --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def snapshotted_1m(dataset, tmp_path_factory):
    """A closed copy of the 1M-key database with one snapshot of all of it."""
    src, _ = dataset("1M")
    path = _copy(tmp_path_factory, src, "snap-reopen")
    db = Database.open(path, durability="batched", snapshot_every_bytes=None)
    db.snapshot()
    db.close()
    return path


def test_reopen_1m_snapshot(benchmark, results, snapshotted_1m):
    benchmark.group = "reopen-1M-snapshot"
    reports: list[dict] = []
    walls: list[float] = []

    def reopen():
        t = time.perf_counter()
        db = Database.open(snapshotted_1m, snapshot_every_bytes=None)
        reports.append(db.stats()["recovery"])
        db.close()
        walls.append(time.perf_counter() - t)

    benchmark.pedantic(reopen, rounds=REOPEN_ROUNDS, warmup_rounds=0)
    rep = reports[-1]
    assert rep["snapshot"] is not None and rep["snapshot"]["keys"] > SIZES["1M"] and rep["records"] == 0
    median = _record(
        benchmark, results, "inmem 1M keys",
        "open+close from a snapshot: {:.2f} s (snapshot load {:.2f} s, recovery {:.2f} s)".format(
            _med(walls), _med([r["snapshot"]["seconds"] for r in reports]), _med([r["seconds"] for r in reports])),
        keys=rep["snapshot"]["keys"],
        snapshot_mb=round(_dir_bytes(snapshotted_1m, "snapshot-") / MB, 1),
        wal_mb_read=round(rep["bytes"] / MB, 1),
        records_replayed=rep["records"],
        segments_skipped=rep["segments_skipped"],
        snapshot_load_seconds=_med([r["snapshot"]["seconds"] for r in reports]),
        recovery_seconds=_med([r["seconds"] for r in reports]),
        open_close_seconds=_med(walls),
        open_close_seconds_all=[round(w, 3) for w in walls],
    )
    if median is not None:
        benchmark.extra_info["under_2s_bar"] = median < 2.0


# The ~100 MB WAL reopen without a snapshot is test_kv_bench.py::test_reopen_100mb (group reopen-100MB).
