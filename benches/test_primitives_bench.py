"""Micro-benchmarks of the agent primitives (pytest-benchmark): events, state cas, traces, run index.

Run from the repository root::

    python -m pytest benches/test_primitives_bench.py --benchmark-only     # everything here (~40 s on 2 cores)
    python -m pytest benches --benchmark-only -k runs_list                # one family

Method
------
Every figure is a **median over rounds** (the reference machine has 2 noisy
cores). Every database is opened with ``durability="batched"`` and
``snapshot_every_bytes=None`` (no automatic snapshot in the middle of a round).
Per-op figures as in ``test_kv_bench.py``: ``benchmark.pedantic(one_op,
iterations=B, rounds=R, warmup_rounds=1)`` times ``B`` consecutive ops as one
round and divides by ``B``, so every statistic is **per op**, amortised over a
batch; the harness overhead (closure call, ``next`` on a counter, building the
payload) is in every figure, about 0.3-0.5 us per op. What one op is, per group:

``events-append``
    One ``db.events.append(run, "tool_call", {"step": i, "tool": "search",
    "ok": True})`` into one run of a fresh database (the log grows by ``B``
    events per round; one commit each). Reference row in the same group and
    session, on its own fresh database: one ``db.kv.put(run, key, <the same
    dict>)`` on a distinct key (``key/00000000``, ...), the KV benches'
    ``put-batched`` op. ``B = 10,000``, 9 rounds, for both. The summary's
    ratio column (``kv.put ops/s`` / ``append ops/s``) is *append time / put
    time*; ``extra_info["vs_kv_put"]`` has the same ratio when the put bench
    ran first in the session (it does, in file order).

``state-cas-ok``
    One successful ``db.state.cas(run, "counter", i, i + 1)`` advancing an
    int state by one (the state is set to 0 first; ``i`` counts on across
    rounds, so every call matches). One commit each. ``B = 20,000``, 9 rounds.
    Checked afterwards: the state's value and version equal the number of
    calls.

``state-cas-fail``
    One failed ``db.state.cas(run, "counter", 1, 2)`` against a state whose
    value is 0 (expected-value mismatch: the losing side of a race). It
    still reads under the commit lock; nothing is written (checked: the
    commit count does not move). ``B = 20,000``, 9 rounds.

``traces-record``
    One ``db.traces.record(run, "thought", {"step": i, "text": "..."},
    confidence=0.75, alternatives=("ask the user",), tags=("plan",))``; every
    other call (odd ``i``) also passes ``parent=`` the id of the previous
    root trace, so half the calls pay the parent lookup. One commit each.
    ``B = 10,000``, 9 rounds.

``runs-list-all``, ``runs-list-100``, ``runs-get``
    A database of **100,000 runs**, built once per session by the
    ``runs_100k`` fixture (not timed; ~10-15 s): ``begin_run(f"run-{i}")``,
    one ``kv.put`` and one ``events.append`` into it, then run ``i`` is
    ended ``"failed"`` if ``i % 10 == 0`` (10,000 runs), ``"completed"`` if
    ``i % 10`` is 1-4 (40,000), and left active otherwise (50,000). So every
    ``RunInfo`` covers 3 entries (run record, kv, event). Ops:
    ``db.runs.list(status="failed")`` (returns all 10,000 ``RunInfo``; 1 per
    round, 7 rounds); ``db.runs.list(status="failed", limit=100)`` (10 per
    round, 15 rounds); ``db.runs.get(run)`` of one failed run in the middle
    (1,000 per round, 15 rounds). ``extra_info`` has the fixture's build time
    and, for the full list, the time per returned ``RunInfo``.

Every bench stores ``extra_info["ops_per_s"] = 1 / median`` (pytest-benchmark's
own ``OPS`` column is ``1 / mean``) and adds a row to the summary printed at
the end of the session (see ``conftest.py``).
"""

from __future__ import annotations

import itertools
import time

import pytest
from workloads import key_for, record, value_for

from inmem import Database

APPEND_BATCH = 10_000  # events.append and the kv.put reference, per round
APPEND_ROUNDS = 9
CAS_BATCH = 20_000
CAS_ROUNDS = 9
TRACE_BATCH = 10_000
TRACE_ROUNDS = 9

RUNS = 100_000
LIST_ROUNDS = 7  # one full runs.list(status="failed") per round
LIMIT = 100
LIMIT_BATCH = 10
LIMIT_ROUNDS = 15
GET_BATCH = 1_000
GET_ROUNDS = 15

_MEDIAN: dict[str, float] = {}  # per-op medians of earlier benches in this session, for ratios


def _open(path) -> Database:
    return Database.open(str(path), durability="batched", snapshot_every_bytes=None)


# --- 1. events.append, with kv.put as the reference ------------------------------------------------


@pytest.mark.parametrize("op", ["kv.put", "events.append"])  # put first: the ratio needs its median
def test_events_append(benchmark, results, tmp_path, op):
    benchmark.group = "events-append"
    db = _open(tmp_path / "db")
    try:
        run = db.begin_run("bench")
        counter = itertools.count()
        if op == "kv.put":
            put = db.kv.put

            def one_op():
                i = next(counter)
                put(run, key_for(i), value_for(i))

        else:
            append = db.events.append

            def one_op():
                append(run, "tool_call", value_for(next(counter)))

        before = db.stats()["commits"]
        benchmark.pedantic(one_op, iterations=APPEND_BATCH, rounds=APPEND_ROUNDS, warmup_rounds=1)
        n = next(counter)
        assert db.stats()["commits"] - before == n  # one commit per op
        if op == "kv.put":
            assert db.kv.get(run, key_for(n - 1)) == value_for(n - 1)
            median = record(benchmark, results, "inmem", "kv.put (reference)",
                             f"1 kv.put, distinct key, small dict ({APPEND_BATCH:,}/round); ratio = append time / put time")
            if median:
                _MEDIAN["kv.put"] = median
        else:
            assert db.events.count(run) == n
            last = db.events.tail(run, 1)[0]
            assert last.seq == n - 1 and last.payload == value_for(n - 1)
            median = record(benchmark, results, "events", "events.append",
                             f"1 events.append, small dict payload ({APPEND_BATCH:,}/round)", events=n)
            if median and "kv.put" in _MEDIAN:
                benchmark.extra_info["vs_kv_put"] = round(median / _MEDIAN["kv.put"], 2)
    finally:
        db.close()


# --- 2. state.cas ------------------------------------------------------------------------------


def test_state_cas_ok(benchmark, results, tmp_path):
    benchmark.group = "state-cas-ok"
    db = _open(tmp_path / "db")
    try:
        run = db.begin_run("bench")
        db.state.set(run, "counter", 0)
        cas = db.state.cas
        counter = itertools.count()

        def one_op():
            i = next(counter)
            cas(run, "counter", i, i + 1)

        benchmark.pedantic(one_op, iterations=CAS_BATCH, rounds=CAS_ROUNDS, warmup_rounds=1)
        n = next(counter)
        state = db.state.get(run, "counter")
        assert state.value == n and state.version == n + 1  # every cas matched (version 1 = the set)
        record(benchmark, results, "inmem", "state.cas (match)",
                f"1 successful cas(expected=i, new=i+1) on an int state ({CAS_BATCH:,}/round)", calls=n)
    finally:
        db.close()


def test_state_cas_fail(benchmark, results, tmp_path):
    benchmark.group = "state-cas-fail"
    db = _open(tmp_path / "db")
    try:
        run = db.begin_run("bench")
        db.state.set(run, "counter", 0)
        cas = db.state.cas

        def one_op():
            cas(run, "counter", 1, 2)

        assert cas(run, "counter", 1, 2) is False
        before = db.stats()["commits"]
        benchmark.pedantic(one_op, iterations=CAS_BATCH, rounds=CAS_ROUNDS, warmup_rounds=1)
        assert db.stats()["commits"] == before  # a failed cas writes nothing
        assert db.state.get(run, "counter").version == 1
        record(benchmark, results, "inmem", "state.cas (mismatch)",
                f"1 failed cas (expected 1, value is 0): no commit ({CAS_BATCH:,}/round)")
    finally:
        db.close()


# --- 3. traces.record ----------------------------------------------------------------------------


def test_traces_record(benchmark, results, tmp_path):
    benchmark.group = "traces-record"
    db = _open(tmp_path / "db")
    try:
        run = db.begin_run("bench")
        record_trace = db.traces.record
        counter = itertools.count()
        root = [record_trace(run, "thought", {"step": -1, "text": "start"})]
        alternatives = ("ask the user",)
        tags = ("plan",)

        def one_op():
            i = next(counter)
            content = {"step": i, "text": "search the docs"}
            if i & 1:
                record_trace(run, "thought", content, confidence=0.75, alternatives=alternatives,
                       parent=root[0], tags=tags)
            else:
                root[0] = record_trace(run, "thought", content, confidence=0.75, alternatives=alternatives, tags=tags)

        benchmark.pedantic(one_op, iterations=TRACE_BATCH, rounds=TRACE_ROUNDS, warmup_rounds=1)
        n = next(counter)
        t = db.traces.get(run, root[0])
        assert t.confidence == 0.75 and t.tags == tags and t.alternatives == alternatives and t.parent is None
        assert db.runs.get(run).counts["traces"] == n + 1
        record(benchmark, results, "inmem", "traces.record",
                f"1 record: confidence, 1 alternative, 1 tag; every other one with a parent ({TRACE_BATCH:,}/round)",
                traces=n + 1)
    finally:
        db.close()


# --- 4. the run index over 100,000 runs ------------------------------------------------------------


def _status_of(i: int) -> str:
    r = i % 10
    return "failed" if r == 0 else "completed" if r <= 4 else "active"


@pytest.fixture(scope="session")
def runs_100k(tmp_path_factory):
    """An open database of RUNS runs (10 % failed, 40 % completed, 50 % active), built once."""
    db = _open(tmp_path_factory.mktemp("runs100k") / "db")
    t0 = time.perf_counter()
    begin, end, put, append = db.begin_run, db.end_run, db.kv.put, db.events.append
    runs = []
    for i in range(RUNS):
        run = begin(f"run-{i}")
        put(run, "goal", {"step": i, "tool": "search", "ok": True})
        append(run, "started", {"step": i})
        status = _status_of(i)
        if status != "active":
            end(run, status)
        runs.append(run)
    build_s = time.perf_counter() - t0
    assert db.stats()["runs_by_status"] == {"failed": RUNS // 10, "completed": RUNS * 4 // 10,
                                            "active": RUNS // 2}
    yield db, runs, build_s
    db.close()


def test_runs_list_failed(benchmark, results, runs_100k):
    benchmark.group = "runs-list-all"
    db, runs, build_s = runs_100k
    out = []

    def one_op():
        out.append(len(db.runs.list(status="failed")))

    benchmark.pedantic(one_op, rounds=LIST_ROUNDS, warmup_rounds=1)
    assert set(out) == {RUNS // 10}
    first = db.runs.list(status="failed", limit=1)[0]
    assert first.id == runs[0] and first.counts == {"kv": 1, "events": 1, "state": 0, "traces": 0}
    median = record(benchmark, results, "inmem", "runs.list(status=failed)",
                     f"list all {RUNS // 10:,} failed RunInfo of {RUNS:,} runs",
                     runs=RUNS, returned=RUNS // 10, build_s=round(build_s, 1))
    if median:
        benchmark.extra_info["us_per_runinfo"] = round(median / (RUNS // 10) * 1e6, 2)
        benchmark.extra_info["seconds"] = median


def test_runs_list_failed_limit(benchmark, results, runs_100k):
    benchmark.group = "runs-list-100"
    db, runs, build_s = runs_100k
    lst = db.runs.list

    def one_op():
        lst(status="failed", limit=LIMIT)

    assert [r.id for r in lst(status="failed", limit=LIMIT)] == runs[: LIMIT * 10 : 10]
    benchmark.pedantic(one_op, iterations=LIMIT_BATCH, rounds=LIMIT_ROUNDS, warmup_rounds=1)
    record(benchmark, results, "inmem", f"runs.list(failed, limit={LIMIT})",
            f"first {LIMIT} failed RunInfo of {RUNS:,} runs ({LIMIT_BATCH}/round)",
            runs=RUNS, returned=LIMIT)


def test_runs_get(benchmark, results, runs_100k):
    benchmark.group = "runs-get"
    db, runs, build_s = runs_100k
    run = runs[RUNS // 2]  # i = 50,000: failed
    get = db.runs.get
    info = get(run)
    assert info.status == "failed" and info.name == f"run-{RUNS // 2}" and info.counts["events"] == 1

    def one_op():
        get(run)

    benchmark.pedantic(one_op, iterations=GET_BATCH, rounds=GET_ROUNDS, warmup_rounds=1)
    record(benchmark, results, "inmem", "runs.get",
            f"1 RunInfo of a 3-entry run among {RUNS:,} ({GET_BATCH:,}/round)", runs=RUNS)
