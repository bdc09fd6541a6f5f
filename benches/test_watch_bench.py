"""Benchmarks of the change feed (issue 16): watch latency and throughput with 1 and 10 watchers.

Run from the repository root::

    python -m pytest benches/test_watch_bench.py --benchmark-only -q -p no:randomly -s   # ~20 s on 2 cores

Method
------
``durability="off"`` (each commit is written to the OS at once, no fsync, so
delivery waits for no flusher), ``snapshot_every_bytes=None``, one run, values
are small ints; each watcher is a thread blocked in ``watch.next()``.

``latency``
    Ping-pong: the main thread commits one ``db.kv.put`` and waits until every
    watcher has received it (a barrier), ``LATENCY_OPS`` times. Latency = the
    watcher's ``perf_counter`` at delivery minus the committer's just before
    ``kv.put``: commit + wake-up + decode. Median and p99 over all deliveries.
``throughput``
    The main thread commits ``THROUGHPUT_OPS`` puts as fast as it can while the
    watchers read; the time runs until every watcher has the last change.
    Reported: deliveries per second per watcher (= commits/s end to end) and
    the committer's rate against the same loop with no watcher.
``put overhead``
    ``kv.put`` with no watcher (the commit-listener hook idle) — compare with
    the same row on the parent commit to see the hook costs nothing.
"""

from __future__ import annotations

import statistics
import threading
import time

import pytest
from workloads import record

from inmem import Database

LATENCY_OPS = 500
THROUGHPUT_OPS = 10_000


@pytest.fixture
def db(tmp_path):
    with Database.open(str(tmp_path / "db"), durability="off", snapshot_every_bytes=None) as d:
        yield d


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


@pytest.mark.parametrize("watchers", [1, 10])
def test_watch_latency(benchmark, db, results, watchers):
    benchmark.group = "watch latency"
    run = db.begin_run("lat")
    sent: list[float] = [0.0] * LATENCY_OPS
    lat: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(watchers + 1)
    watches = [db.watch(primitive="kv") for _ in range(watchers)]

    def consume(w):
        for i in range(LATENCY_OPS):
            w.next()
            t = time.perf_counter()
            with lock:
                lat.append(t - sent[i])
            barrier.wait()

    threads = [threading.Thread(target=consume, args=(w,)) for w in watches]
    for t in threads:
        t.start()

    def ping_pong():
        for i in range(LATENCY_OPS):
            sent[i] = time.perf_counter()
            db.kv.put(run, "k", i)
            barrier.wait()

    benchmark.pedantic(ping_pong, rounds=1, iterations=1)
    for t in threads:
        t.join()
    med, p99 = statistics.median(lat) * 1e6, _pct(lat, 0.99) * 1e6
    benchmark.extra_info.update({"p50_us": round(med, 1), "p99_us": round(p99, 1), "watchers": watchers})
    record(benchmark, results, "inmem", f"latency {watchers} watcher(s)", "ping-pong put", per_call=LATENCY_OPS)
    print(f"\nwatch latency, {watchers} watcher(s): p50 {med:.0f} us, p99 {p99:.0f} us")


@pytest.mark.parametrize("watchers", [0, 1, 10])
def test_watch_throughput(benchmark, db, results, watchers):
    benchmark.group = "watch throughput"
    run = db.begin_run("tp")
    put = db.kv.put
    rates = []

    def one_round():
        watches = [db.watch(primitive="kv", buffer=4096) for _ in range(watchers)]
        last = db.stats()["commit_version"] + THROUGHPUT_OPS

        def consume(w):
            while w.next().version < last:
                pass

        threads = [threading.Thread(target=consume, args=(w,)) for w in watches]
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        for i in range(THROUGHPUT_OPS):
            put(run, "k", i)
        t1 = time.perf_counter()
        for t in threads:
            t.join()
        t2 = time.perf_counter()
        rates.append((THROUGHPUT_OPS / (t1 - t0), THROUGHPUT_OPS / (t2 - t0)))
        for w in watches:
            w.close()

    benchmark.pedantic(one_round, rounds=3, iterations=1)
    commit_rate = statistics.median(r[0] for r in rates)
    end_to_end = statistics.median(r[1] for r in rates)
    benchmark.extra_info.update({"commits_per_s": round(commit_rate), "delivered_per_s_per_watcher":
                                 round(end_to_end), "watchers": watchers})
    record(benchmark, results, "inmem", f"throughput {watchers} watcher(s)", "kv.put + delivery",
           per_call=THROUGHPUT_OPS)
    print(f"\nwatch throughput, {watchers} watcher(s): committer {commit_rate:,.0f} puts/s, "
          f"end to end {end_to_end:,.0f} changes/s per watcher")
