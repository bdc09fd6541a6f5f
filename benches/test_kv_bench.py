"""KV micro-benchmarks of inmem, side by side with sqlite3 (pytest-benchmark).

Run from the repository root::

    python -m pytest benches --benchmark-only                 # everything (~40 s on 2 cores)
    python -m pytest benches --benchmark-only -k put          # one family

Method
------
Every figure is a **median over rounds**, never one run (the reference
machine has 2 noisy cores). What one op is, per group:

``put-batched``, ``put-off``, ``put-strict``
    One autocommitted ``kv.put(run, key, {"step": i, "tool": "search", "ok":
    True})`` on a *distinct* key (``key/00000000``, ``key/00000001``, ...)
    into one run of a fresh database in ``tmp_path``. Measured with
    ``benchmark.pedantic(one_put, iterations=B, rounds=R, warmup_rounds=1)``:
    pytest-benchmark times a loop of ``B`` consecutive puts as one round and
    divides by ``B``, so every statistic in the table (min / median / mean /
    ops) is **per put**, amortised over a batch: ``B = 20,000`` for
    ``batched``/``off`` (so each round spans many 100 ms flusher cycles,
    background fsyncs included) and ``B = 100`` for ``strict`` (each put is an
    fsync). The harness overhead (a closure call, ``next`` on a counter, the
    key f-string, building the value dict) is included and identical for
    every engine: about 0.3-0.5 us per op.
    Peers in the same group: sqlite3 in WAL mode, autocommit per put, with
    ``synchronous`` = ``NORMAL`` / ``OFF`` / ``FULL`` respectively.

``get``
    One ``kv.get(run, key)`` of an existing key, chosen uniformly at random
    (fixed seed) from a run holding 100,000 keys, value decoded. Per-op as
    above with ``B = 10,000``. Peer: ``SELECT value ... WHERE run=? AND
    key=?`` + ``cbor2.loads``.

``scan-100``
    ``list(db.kv.scan(run))`` of one 100-key run in a database holding 1,000
    runs x 100 keys (100,000 keys); the run scanned cycles through 50 runs
    spread over the key space. One op = one whole scan (100 decoded pairs).
    Peer: ``SELECT key, value ... WHERE run=? ORDER BY key``.

``reopen-100MB``
    ``Database.open(path)`` + ``close()`` of a database whose WAL is ~100 MB
    (about 600,000 commits of one put each, ~80-byte values, 8 runs), built
    once per session by the ``wal_100mb`` fixture with ``batched`` puts. One
    op = one open (full WAL replay: checksum, decode, rebuild the sorted
    store) + close. The WAL was just written, so it is read from the page
    cache: this measures replay CPU, not a cold disk. ``extra_info`` holds
    ``wal_mb``, ``records``, ``mb_per_s`` and ``records_per_s`` (from the
    median).

Every bench stores ``extra_info["ops_per_s"] = 1 / median`` (pytest-benchmark's
own ``OPS`` column is ``1 / mean``) and adds a row to the summary printed at
the end of the session (see ``conftest.py``), with the ratio inmem / peer
inside each group.
"""

from __future__ import annotations

import itertools
import os
import random

import pytest
from workloads import InmemKV, SqliteKV, key_for, record, value_for

from inmem import Database

PUT_BATCH = 20_000  # puts per round, batched/off
PUT_ROUNDS = 9
STRICT_BATCH = 100  # puts per round, strict (each one an fsync)
STRICT_ROUNDS = 15
GET_KEYS = 100_000
GET_BATCH = 10_000
GET_ROUNDS = 20
SCAN_RUNS = 1_000
SCAN_KEYS = 100
SCAN_BATCH = 20
SCAN_ROUNDS = 50
REOPEN_TARGET_BYTES = 100_000_000  # ~100 MB of WAL
REOPEN_ROUNDS = 5

MODES = {  # inmem durability -> (sqlite synchronous, puts per round, rounds)
    "batched": ("NORMAL", PUT_BATCH, PUT_ROUNDS),
    "off": ("OFF", PUT_BATCH, PUT_ROUNDS),
    "strict": ("FULL", STRICT_BATCH, STRICT_ROUNDS),
}


def _new_engine(kind, path, mode):
    if kind == "inmem":
        return InmemKV(path, durability=mode)
    return SqliteKV(path, synchronous=MODES[mode][0])


# --- put ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["inmem", "sqlite3"])
@pytest.mark.parametrize("mode", list(MODES))
def test_put(benchmark, results, tmp_path, mode, kind):
    benchmark.group = f"put-{mode}"
    _, batch, rounds = MODES[mode]
    eng = _new_engine(kind, str(tmp_path / "db"), mode)
    try:
        run = eng.begin_run("bench")
        put = eng.put_fn(run)
        counter = itertools.count()

        def one_put():
            i = next(counter)
            put(key_for(i), value_for(i))

        benchmark.pedantic(one_put, iterations=batch, rounds=rounds, warmup_rounds=1)
        n = next(counter)
        assert eng.get_fn(run)(key_for(n - 1)) == value_for(n - 1)
        record(benchmark, results, kind, eng.label, f"1 put, distinct key ({batch}/round)", puts=n)
    finally:
        eng.close()


# --- get ---------------------------------------------------------------------------------------


def _loaded(kind, tmp_path):
    """An engine with one run of GET_KEYS keys (the get benches' database)."""
    eng = _new_engine(kind, str(tmp_path / "db"), "batched")
    run = eng.begin_run("bench")
    eng.load(run, ((key_for(i), value_for(i)) for i in range(GET_KEYS)))
    return eng, run


@pytest.mark.parametrize("kind", ["inmem", "sqlite3"])
def test_get(benchmark, results, tmp_path, kind):
    benchmark.group = "get"
    eng, run = _loaded(kind, tmp_path)
    try:
        get = eng.get_fn(run)
        rng = random.Random(42)
        keys = itertools.cycle([key_for(rng.randrange(GET_KEYS)) for _ in range(GET_BATCH * 4)])
        probe = key_for(GET_KEYS // 2)
        assert get(probe) == value_for(GET_KEYS // 2)

        def one_get():
            get(next(keys))

        benchmark.pedantic(one_get, iterations=GET_BATCH, rounds=GET_ROUNDS, warmup_rounds=1)
        label = "inmem" if kind == "inmem" else "sqlite3 WAL"  # durability plays no part in reads
        record(benchmark, results, kind, label, f"1 get, random existing key of {GET_KEYS:,}")
    finally:
        eng.close()


@pytest.mark.parametrize("kind", ["inmem", "sqlite3"])
def test_get_loop(benchmark, results, tmp_path, kind):
    """The same random gets, timed as one plain loop of GET_BATCH gets per round.

    ``test_get`` times each get through three wrapper calls (the harness's
    function, ``next``, the adapter's closure), about 0.3 us of Python per get
    that a caller's own loop does not pay; this one amortises the harness.
    """
    benchmark.group = "get-loop"
    eng, run = _loaded(kind, tmp_path)
    try:
        rng = random.Random(42)
        keys = [key_for(rng.randrange(GET_KEYS)) for _ in range(GET_BATCH)]
        assert eng.get_fn(run)(keys[0]) is not None
        benchmark.pedantic(eng.get_loop, args=(run, keys), rounds=GET_ROUNDS, warmup_rounds=1)
        label = "inmem" if kind == "inmem" else "sqlite3 WAL"
        record(benchmark, results, kind, label, f"1 get in a loop of {GET_BATCH:,}, random key of {GET_KEYS:,}",
                per_call=GET_BATCH)
    finally:
        eng.close()


# --- scan --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["inmem", "sqlite3"])
def test_scan_100(benchmark, results, tmp_path, kind):
    benchmark.group = "scan-100"
    eng = _new_engine(kind, str(tmp_path / "db"), "batched")
    try:
        runs = []
        for r in range(SCAN_RUNS):
            run = eng.begin_run(f"run-{r}")
            eng.load(run, ((key_for(i), value_for(i)) for i in range(SCAN_KEYS)))
            runs.append(run)
        targets = itertools.cycle(runs[:: SCAN_RUNS // 50])
        first = eng.scan(runs[SCAN_RUNS // 2])
        assert len(first) == SCAN_KEYS and first[0] == (key_for(0), value_for(0))
        scan = eng.scan

        def one_scan():
            scan(next(targets))

        benchmark.pedantic(one_scan, iterations=SCAN_BATCH, rounds=SCAN_ROUNDS, warmup_rounds=1)
        label = "inmem" if kind == "inmem" else "sqlite3 WAL"
        median = record(
            benchmark, results, kind, label,
            f"list all {SCAN_KEYS} pairs of 1 run among {SCAN_RUNS:,}",
        )
        if median:
            benchmark.extra_info["scan_us"] = round(1e6 * median, 1)
            benchmark.extra_info["pairs_per_s"] = round(SCAN_KEYS / median)
    finally:
        eng.close()


# --- reopen --------------------------------------------------------------------------------------


def _wal_bytes(path):
    return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path) if n.startswith("wal-"))


@pytest.fixture(scope="session")
def wal_100mb(tmp_path_factory):
    """A closed database whose WAL is ~100 MB of batched single-put commits (built once)."""
    path = str(tmp_path_factory.mktemp("wal100mb") / "db")
    db = Database.open(path, durability="batched", snapshot_every_bytes=None)  # measure the WAL alone
    runs = [db.begin_run(f"run-{r}") for r in range(8)]
    put = db.kv.put
    note = "x" * 46  # value encodes to 80 bytes
    n = 0
    while True:
        for _ in range(10_000):
            put(runs[n % 8], f"step/{n:08d}", {"step": n, "tool": "search", "ok": True, "note": note})
            n += 1
        db.sync()
        if _wal_bytes(path) >= REOPEN_TARGET_BYTES:
            break
    db.close()
    return path


def test_reopen_100mb(benchmark, results, wal_100mb):
    benchmark.group = "reopen-100MB"
    report = {}

    def reopen():
        db = Database.open(wal_100mb)
        report.update(db.stats()["recovery"])
        db.close()

    benchmark.pedantic(reopen, rounds=REOPEN_ROUNDS, warmup_rounds=0)
    assert report["torn_tail"] is None and report["records"] > 500_000
    if getattr(benchmark, "stats", None) is None:  # --benchmark-disable
        return
    median = benchmark.stats.stats.median
    mb = report["bytes"] / 1e6
    record(
        benchmark, results, "inmem", "inmem",
        f"open+close, {mb:.1f} MB WAL: {median:.2f} s, {mb / median:.1f} MB/s, "
        f"{report['records'] / median:,.0f} records/s",
        wal_mb=round(mb, 1),
        records=report["records"],
        seconds=median,
        mb_per_s=round(mb / median, 1),
        records_per_s=round(report["records"] / median),
    )
