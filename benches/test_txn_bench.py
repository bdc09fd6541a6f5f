"""Transaction benchmarks of inmem (pytest-benchmark): overhead, threads, contention, group commit.

Run from the repository root::

    python -m pytest benches/test_txn_bench.py --benchmark-only      # everything here (~1 min on 2 cores)
    python -m pytest benches --benchmark-only -k "strict and 16t"   # one bench

Method
------
Every figure is a **median over rounds** (the reference machine has 2 noisy
cores). Values are small ints (``1_000_000`` and up: a 5-byte cbor2 int), so
a read-modify-write writes a value of the same size as it read.

``txn-overhead`` (``batched``)
    One op, timed per op as in ``test_kv_bench.py``
    (``benchmark.pedantic(one_op, iterations=B, rounds=R, warmup_rounds=1)``;
    every statistic is per op, amortised over ``B`` ops). Three ops on the
    same 1,000 existing keys of one run, cycled in order:

    * ``put``: one autocommitted ``db.kv.put(run, key, n)`` (the baseline);
    * ``tx-1r1w``: ``with db.transaction() as tx: v = tx.kv.get(run, key);
      tx.kv.put(run, key, v + 1)``;
    * ``tx-1w``: ``with db.transaction() as tx: tx.kv.put(run, key, n)``.

    The summary's ratio column (``put ops/s`` / ``tx ops/s``) is the
    overhead ratio *tx time / put time*; ``extra_info["overhead_vs_put"]``
    has the same ratio when the put bench ran first in the session.

``txn-disjoint`` (``batched``)
    1 or 2 threads, each running ``db.transact(rmw)`` read-modify-write
    transactions (1 read + 1 write) on its own 100 keys; 10,000 transactions
    per round in all (1 x 10,000 or 2 x 5,000). A round: the threads are
    started and wait at a :class:`threading.Barrier`; wall time is measured
    with ``time.perf_counter`` inside the threads (first start to last end).
    Figure: committed transactions / wall second, median over rounds, and
    the conflicts counted by ``stats()["conflicts"]`` (must be 0). The
    ratio column is 2 threads / 1 thread: with the GIL, >1 is not expected.

``txn-zipf`` (``batched``)
    1 or 4 threads, 10,000 transactions per round in all; each transaction
    reads two *distinct* keys of 1,000 drawn zipfian (theta 0.99, seeded;
    rank 0 gets 12.9 % of draws) and writes both +1, through
    ``db.transact(fn, retries=10)`` (jittered exponential backoff from 1 ms).
    Key pairs are drawn before the round (not timed). Figures: committed
    transactions / wall second (median over rounds), conflict rate =
    conflicts / attempts (``stats()["conflicts"]`` deltas; attempts = calls
    of ``fn``), retries per committed transaction, transactions given up
    after 10 retries. Checked: conflicts == attempts - commits, and the sum
    of all counters == initial + 2 x commits (no lost update).

``strict-{put,tx}-{1,4,16}t`` (``strict``)
    1, 4 or 16 threads (exactly), each committing 250 small writes to its own
    50 keys: autocommit ``db.kv.put`` (``put``) or a 1-write transaction
    (``tx``). Rounds as in ``txn-disjoint``. Peer row in the same group:
    the raw fsync rate of the disk, measured in the same process around
    every round (125 x append 100 bytes + ``os.fsync`` just before it and 125
    just after, to a file in ``tmp_path`` opened ``O_APPEND`` like a WAL
    segment; the disk's rate drifts, so each round is bracketed); the ratio
    column is median commits/s / median raw fsyncs/s (> 1: group commit
    shares fsyncs), ``extra_info["ratio_paired_median"]`` the median of the
    per-round ratios.
    ``extra_info["commits_per_fsync"]`` counts the WAL's real fsyncs through
    the ``fs=`` seam of ``Database.open``.

Every bench stores its figures in ``extra_info`` and adds rows to the summary
printed at the end of the session (``conftest.py``).
"""

from __future__ import annotations

import itertools

import pytest
from txn_workloads import CountingFS, RawFsync, ThreadRound, Zipfian, median

from inmem import Database, TransactionConflict

BASE = 1_000_000  # counters start here: 5-byte cbor2 ints throughout

OVERHEAD_KEYS = 1_000
OVERHEAD = {  # op -> (ops per round, rounds)
    "put": (20_000, 9),
    "tx-1r1w": (10_000, 9),
    "tx-1w": (10_000, 9),
}

DISJOINT_TX = 10_000  # transactions per round, all threads together
DISJOINT_KEYS = 100  # keys per thread
DISJOINT_ROUNDS = 9

ZIPF_KEYS = 1_000
ZIPF_THETA = 0.99
ZIPF_TX = 10_000  # transactions per round, all threads together
ZIPF_RETRIES = 10
ZIPF_ROUNDS = 9
ZIPF_SEED = 20261121

STRICT_THREADS = [1, 4, 16]
STRICT_PER_THREAD = 250  # commits per thread per round
STRICT_KEYS = 50  # keys per thread
STRICT_ROUNDS = 15
FSYNC_BATCH = 250  # raw append+fsync per round: half just before, half just after

_PUT_MEDIAN: dict[str, float] = {}  # the put baseline's per-op median, for the tx ratio


def _timed(benchmark) -> bool:
    return getattr(benchmark, "stats", None) is not None  # False under --benchmark-disable


def _row(results, group, engine, label, ops, op):
    results.append({"group": group, "engine": engine, "label": label, "ops_per_s": ops, "op": op})


def _last(log: list, rounds: int) -> list:
    """The timed rounds of a log that also saw the warm-up round(s)."""
    return log[-rounds:]


# --- 1. transaction overhead -------------------------------------------------------------------


@pytest.mark.parametrize("op", list(OVERHEAD))
def test_tx_overhead(benchmark, results, tmp_path, op):
    benchmark.group = "txn-overhead"
    batch, rounds = OVERHEAD[op]
    db = Database.open(str(tmp_path / "db"), durability="batched")
    try:
        run = db.begin_run("bench")
        keys = [f"ctr/{i:04d}" for i in range(OVERHEAD_KEYS)]
        for k in keys:
            db.kv.put(run, k, BASE)
        cycle = itertools.cycle(keys)
        counter = itertools.count(BASE)
        put = db.kv.put
        transaction = db.transaction

        if op == "put":

            def one_op():
                put(run, next(cycle), next(counter))

        elif op == "tx-1r1w":

            def one_op():
                k = next(cycle)
                with transaction() as tx:
                    v = tx.kv.get(run, k)
                    tx.kv.put(run, k, v + 1)

        else:

            def one_op():
                k = next(cycle)
                with transaction() as tx:
                    tx.kv.put(run, k, next(counter))

        before = db.stats()
        benchmark.pedantic(one_op, iterations=batch, rounds=rounds, warmup_rounds=1)
        after = db.stats()
        commits = after["commits"] - before["commits"]
        assert after["conflicts"] == 0 and after["active_transactions"] == 0
        assert after["retained_versions"] == 0
        if op == "tx-1r1w":  # every transaction added exactly 1
            assert sum(db.kv.get(run, k) for k in keys) == BASE * OVERHEAD_KEYS + commits
        if not _timed(benchmark):
            return
        med = benchmark.stats.stats.median
        info = {"ops_per_s": round(1 / med, 1), "median_s": med, "commits": commits}
        if op == "put":
            _PUT_MEDIAN["put"] = med
            _row(results, "txn-overhead", "inmem", "autocommit kv.put", 1 / med,
                 f"1 put, existing key ({batch:,}/round); ratio = tx time / put time")
        else:
            if "put" in _PUT_MEDIAN:
                info["overhead_vs_put"] = round(med / _PUT_MEDIAN["put"], 2)
            what = "get + put" if op == "tx-1r1w" else "put"
            _row(results, "txn-overhead", "tx", f"tx {op[3:]}", 1 / med,
                 f"1 transaction ({what}) on an existing key ({batch:,}/round)")
        benchmark.extra_info.update(info)
    finally:
        db.close()


# --- 2. disjoint keys, 1 vs 2 threads ----------------------------------------------------------


def _rmw(tx, run, key):
    tx.kv.put(run, key, tx.kv.get(run, key) + 1)


@pytest.mark.parametrize("threads", [1, 2])
def test_tx_disjoint(benchmark, results, tmp_path, threads):
    benchmark.group = "txn-disjoint"
    db = Database.open(str(tmp_path / "db"), durability="batched")
    try:
        run = db.begin_run("bench")
        ranges = [[f"t{t}/{j:03d}" for j in range(DISJOINT_KEYS)] for t in range(threads)]
        for keys in ranges:
            for k in keys:
                db.kv.put(run, k, BASE)
        per = DISJOINT_TX // threads
        transact = db.transact

        def work(i):
            keys = ranges[i]
            for j in range(per):
                k = keys[j % DISJOINT_KEYS]
                transact(lambda tx: _rmw(tx, run, k))

        log = []

        def setup():
            s = db.stats()
            return (ThreadRound(threads, work).start(), s), {}

        def one_round(rnd, before):
            wall = rnd.run()
            after = db.stats()
            log.append((wall, after["commits"] - before["commits"], after["conflicts"] - before["conflicts"]))

        benchmark.pedantic(one_round, setup=setup, rounds=DISJOINT_ROUNDS, warmup_rounds=1)
        total = sum(c for _, c, _ in log)
        assert total == len(log) * per * threads
        assert sum(db.kv.get(run, k) for keys in ranges for k in keys) == BASE * DISJOINT_KEYS * threads + total
        timed = _last(log, DISJOINT_ROUNDS)
        conflicts = sum(x for _, _, x in timed)
        rate = median([c / w for w, c, _ in timed])
        benchmark.extra_info.update({
            "threads": threads, "tx_per_round": per * threads, "commits_per_s": round(rate, 1),
            "conflicts": conflicts, "walls_s": [round(w, 4) for w, _, _ in timed],
        })
        if _timed(benchmark):
            engine = "inmem" if threads == 2 else "1 thread"
            _row(results, "txn-disjoint", engine, f"transact rmw, {threads} thread{'s' if threads > 1 else ''}", rate,
                 f"committed tx/s, {threads}x{per:,}/round, own keys; {conflicts} conflicts; ratio = 2t / 1t")
    finally:
        db.close()


# --- 3. zipfian contention --------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 4])
def test_tx_zipf(benchmark, results, tmp_path, threads):
    benchmark.group = "txn-zipf"
    db = Database.open(str(tmp_path / "db"), durability="batched")
    try:
        run = db.begin_run("bench")
        keys = [f"z/{i:04d}" for i in range(ZIPF_KEYS)]
        for k in keys:
            db.kv.put(run, k, BASE)
        per = ZIPF_TX // threads
        transact = db.transact
        log: list[dict] = []

        def work(i, pairs):
            calls = 0
            ka = kb = ""

            def fn(tx):
                nonlocal calls
                calls += 1
                kv = tx.kv
                va = kv.get(run, ka)
                vb = kv.get(run, kb)
                kv.put(run, ka, va + 1)
                kv.put(run, kb, vb + 1)

            committed = gave_up = retries = attempts = 0
            for a, b in pairs:
                ka, kb = keys[a], keys[b]
                calls = 0
                try:
                    transact(fn, retries=ZIPF_RETRIES)
                    committed += 1
                    retries += calls - 1
                except TransactionConflict:
                    gave_up += 1
                attempts += calls
            return committed, gave_up, retries, attempts

        def setup():
            r = len(log)
            plans = []
            for t in range(threads):
                z = Zipfian(ZIPF_KEYS, ZIPF_THETA, seed=ZIPF_SEED + 1000 * r + t)
                plans.append([z.distinct_pair() for _ in range(per)])
            s = db.stats()
            return (ThreadRound(threads, lambda i: work(i, plans[i])).start(), s), {}

        def one_round(rnd, before):
            wall = rnd.run()
            after = db.stats()
            committed, gave_up, retries, attempts = (sum(x) for x in zip(*rnd.results))
            log.append({
                "wall": wall, "committed": committed, "gave_up": gave_up, "retries": retries,
                "attempts": attempts, "conflicts": after["conflicts"] - before["conflicts"],
                "commits": after["commits"] - before["commits"],
            })

        benchmark.pedantic(one_round, setup=setup, rounds=ZIPF_ROUNDS, warmup_rounds=1)
        for r in log:
            assert r["commits"] == r["committed"]
            assert r["conflicts"] == r["attempts"] - r["committed"]  # every failed attempt was counted once
            assert r["committed"] + r["gave_up"] == per * threads
        total = sum(r["committed"] for r in log)
        assert sum(db.kv.get(run, k) for k in keys) == BASE * ZIPF_KEYS + 2 * total  # no lost update
        timed = _last(log, ZIPF_ROUNDS)
        rate = median([r["committed"] / r["wall"] for r in timed])
        attempts = sum(r["attempts"] for r in timed)
        conflicts = sum(r["conflicts"] for r in timed)
        committed = sum(r["committed"] for r in timed)
        gave_up = sum(r["gave_up"] for r in timed)
        retries = sum(r["retries"] for r in timed)
        conflict_rate = conflicts / attempts if attempts else 0.0
        retries_per_commit = retries / committed if committed else 0.0
        benchmark.extra_info.update({
            "threads": threads, "tx_per_round": per * threads, "commits_per_s": round(rate, 1),
            "attempts": attempts, "conflicts": conflicts, "conflict_rate": round(conflict_rate, 5),
            "committed": committed, "retries_per_commit": round(retries_per_commit, 5), "gave_up": gave_up,
            "conflict_rate_per_round": [round(r["conflicts"] / r["attempts"], 5) for r in timed],
            "walls_s": [round(r["wall"], 4) for r in timed],
        })
        if _timed(benchmark):
            engine = "inmem" if threads == 4 else "1 thread"
            _row(results, "txn-zipf", engine, f"zipf 2-key rmw, {threads} thread{'s' if threads > 1 else ''}", rate,
                 f"committed tx/s; conflicts/attempts {100 * conflict_rate:.2f} %, "
                 f"{retries_per_commit:.4f} retries/commit, {gave_up} gave up; ratio = 4t / 1t")
    finally:
        db.close()


# --- 4. strict: group commit against the raw fsync rate ----------------------------------------


@pytest.mark.parametrize("threads", STRICT_THREADS)
@pytest.mark.parametrize("op", ["put", "tx"])
def test_strict_commits(benchmark, results, tmp_path, op, threads):
    group = f"strict-{op}-{threads}t"
    benchmark.group = group
    fs = CountingFS()
    db = Database.open(str(tmp_path / "db"), durability="strict", fs=fs)
    raw = RawFsync(str(tmp_path / "raw-fsync"))
    try:
        run = db.begin_run("bench")
        put = db.kv.put
        transaction = db.transaction
        names = [[f"t{t:02d}/{j:03d}" for j in range(STRICT_KEYS)] for t in range(threads)]

        def work(i):
            keys = names[i]
            if op == "put":
                for j in range(STRICT_PER_THREAD):
                    put(run, keys[j % STRICT_KEYS], BASE + j)
            else:
                for j in range(STRICT_PER_THREAD):
                    with transaction() as tx:
                        tx.kv.put(run, keys[j % STRICT_KEYS], BASE + j)

        log: list[dict] = []
        fsync_s: list[float] = []

        before: list[float] = []

        def setup():
            before.append(raw.batch(FSYNC_BATCH // 2))  # the disk's rate just before this round ...
            return (ThreadRound(threads, work).start(), db.stats()["commits"], fs.syncs), {}

        def one_round(rnd, commits0, syncs0):
            wall = rnd.run()
            log.append({"wall": wall, "commits": db.stats()["commits"] - commits0, "syncs": fs.syncs - syncs0})

        def teardown(*_):
            fsync_s.append((before[-1] + raw.batch(FSYNC_BATCH // 2)) / 2)  # ... and just after it

        benchmark.pedantic(one_round, setup=setup, teardown=teardown, rounds=STRICT_ROUNDS, warmup_rounds=1)
        if not fsync_s:  # --benchmark-disable: no teardown
            fsync_s.extend(before)
        n = threads * STRICT_PER_THREAD
        assert all(r["commits"] == n for r in log)
        for t in range(threads):
            assert db.kv.get(run, names[t][(STRICT_PER_THREAD - 1) % STRICT_KEYS]) == BASE + STRICT_PER_THREAD - 1
        timed = _last(log, STRICT_ROUNDS)
        fsyncs = _last(fsync_s, STRICT_ROUNDS)
        rate = median([r["commits"] / r["wall"] for r in timed])
        raw_rate = median([1 / s for s in fsyncs])
        per_fsync = sum(r["commits"] for r in timed) / max(1, sum(r["syncs"] for r in timed))
        paired = median([r["commits"] / r["wall"] * s for r, s in zip(timed, fsyncs)])
        benchmark.extra_info.update({
            "threads": threads, "op": op, "commits_per_round": n, "commits_per_s": round(rate, 1),
            "raw_fsync_per_s": round(raw_rate, 1), "ratio_to_raw_fsync": round(rate / raw_rate, 3),
            "ratio_paired_median": round(paired, 3),
            "commits_per_fsync": round(per_fsync, 2),
            "walls_s": [round(r["wall"], 4) for r in timed],
            "raw_fsync_us": [round(s * 1e6, 1) for s in fsyncs],
        })
        if _timed(benchmark):
            what = "kv.put" if op == "put" else "1-write tx"
            _row(results, group, "inmem", f"strict {what}, {threads}t", rate,
                 f"commits/s, {threads}x{STRICT_PER_THREAD}/round, {per_fsync:.1f} commits/fsync; "
                 "ratio = commits/s / raw fsync/s")
            _row(results, group, "raw fsync", "raw append+fsync", raw_rate,
                 f"100 B append + os.fsync, {FSYNC_BATCH}/round, same process, around each round")
    finally:
        raw.close()
        db.close()
