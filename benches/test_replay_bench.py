"""Benchmarks of runs-like-commits (issue 6): replay scaling, reopen with the history index, fork, diff.

Run from the repository root::

    python -m pytest benches/test_replay_bench.py --benchmark-only -q     # everything here (~50-60 s on 2 cores)

Method
------
Every figure is a **median over rounds** (the reference machine has 2 noisy
cores); heavy set-ups use ``benchmark.pedantic(fn, rounds=R, iterations=1)``,
so one round is one call. Ratios are of medians taken in the same session.
What one op is, per group:

``replay`` (the acceptance criterion: 1M / 10k within 1.5x)
    ``db.replay_run(target)`` of a **1,000-operation run** in a database whose
    total history is **10,000** operations (row ``inmem``) or **1,000,000**
    (row ``1M history``). Both databases are built once per module by the
    ``histories`` fixture with the same recipe (``durability="off"``,
    ``snapshot_every_bytes=None``, a plain loop): 100 other runs are begun,
    then the target; then ``N`` ops in which op ``i`` goes to the target when
    ``i % (N / 1000) == N / 2000`` (its 1,000 ops spread evenly through the
    history) and otherwise is ``kv.put(others[i % 100], f"key/{i // 100 %
    1000}", i)`` (an int, overwriting: 100,000 distinct keys at 1M). The
    target's op ``j``: ``events.append(target, "tool_call", {"step": j})``
    when ``j % 10 == 0``, ``state.set(target, f"s{j % 20}", j)`` when ``j %
    10 == 5``, else ``kv.put(target, f"k{j % 400}", j)`` (800 puts on 320
    keys, 100 events, 100 state sets: 1,001 commits with the run record).
    The 1M database is then snapshotted (as the default
    ``snapshot_every_bytes=64 MiB`` would have done; its WAL is ~83 MB) and
    both are closed, so every timed handle is a **reopened** one whose history
    index came from the ``hist-*.idx`` sidecars. 40 rounds each, 3 warm-up.
    Checked: the replay equals ``run_state`` taken before the close, and the
    two sizes replay to the same kv. ``extra_info["interleaved_ratio"]`` of
    the 1M row: median of 25 back-to-back (10k, 1M) pairs, timed with
    ``perf_counter`` (less exposed to load drifting between the two benches).

``replay-mid``, ``history``
    On the 1M database: ``db.replay_run(target, at_version=v)`` with ``v``
    the commit of the target's 500th op (reads ~500 records), 40 rounds; and
    ``db.history(target)`` (1,001 ``Commit``), 30 rounds.

``reopen-1M``, ``reopen-1M-wal``
    ``Database.open`` of the 1M database (close not timed: it is done in the
    next round's set-up). ``reopen-1M``: with its snapshot (100,423 keys) and
    the sidecars (row ``inmem``, 7 rounds, 1 warm-up), then with every
    ``hist-*.idx`` deleted before each round (row ``sidecars deleted``: the
    index is rebuilt by re-reading the WAL segments, which the snapshot
    covers; 3 rounds; each close writes the sidecars again). ``reopen-1M-wal``:
    the same directory copied before the snapshot was taken (recovery replays
    the whole WAL; recovery decodes every frame, so the index comes from it
    when the sidecars are gone), 3 rounds each. ``extra_info``: the median
    time inside ``HistoryIndex.load`` (timed by wrapping it in the test; the
    engine is untouched) and ``stats()["recovery"]["seconds"]``.

``state-10k``, ``fork-10k``, ``diff-10k``
    One run with **10,000 kv keys** (``key_for(i)`` -> ``value_for(i)``, the
    KV benches' small dict), **100 events** and **10 states**, in a
    ``batched`` database (``snapshot_every_bytes=None``): 10,111 commits.
    ``state-10k``: ``db.run_state(run)`` (row ``inmem``, 15 rounds) and
    ``db.replay_run(run)`` (15 rounds); the ratio column is replay / live.
    ``fork-10k``: ``db.fork_run(run)`` (live state, row ``inmem``) and
    ``db.fork_run(run, at_version=v)`` (``v`` = the run's last commit, so both
    copy the same 10,110 entries; the second replays 10,111 records first);
    15 rounds each, 1 warm-up; forks accumulate in the database (each one
    commit of 10,111 writes). ``diff-10k``: ``db.diff_runs(run, fork)`` where
    ``fork`` was forked once and then had 100 of its keys (1 %) overwritten,
    15 rounds. Checked: the forks equal the run, the diff finds exactly the
    100 changes.

Every bench stores ``extra_info["ops_per_s"] = 1 / median`` and adds a row to
the summary printed at the end of the session (see ``conftest.py``); in each
group the ``inmem/peer`` column is *this row's time / the inmem row's time*.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import statistics
import time

import pytest
from workloads import key_for, record, value_for

from inmem import Database
from inmem.history import HistoryIndex

TARGET_OPS = 1_000
OTHER_RUNS = 100
SIZES = {"10k": 10_000, "1M": 1_000_000}
REPLAY_ROUNDS = 40
PAIRS = 25  # interleaved (10k, 1M) replay pairs for the side ratio
MID_ROUNDS = 40
HISTORY_ROUNDS = 30
REOPEN_ROUNDS = 7
REBUILD_ROUNDS = 3
WAL_REOPEN_ROUNDS = 3

RUN_KEYS = 10_000
RUN_EVENTS = 100
RUN_STATES = 10
CHANGED = 100  # 1 % of RUN_KEYS, overwritten in the fork the diff compares
STATE_ROUNDS = 15
FORK_ROUNDS = 15
DIFF_ROUNDS = 15

_MEDIAN: dict[str, float] = {}  # medians of earlier benches in this session, for ratios


def _open(path, durability: str = "off") -> Database:
    return Database.open(str(path), durability=durability, snapshot_every_bytes=None)


def _sidecars(path) -> list[str]:
    return glob.glob(os.path.join(str(path), "hist-*.idx"))


# --- the two histories, built once ---------------------------------------------------------------


def _build(path, n: int) -> dict:
    """A database of ``n`` operations with a 1,000-op target run spread through it (recipe in the docstring)."""
    db = _open(path)
    t0 = time.perf_counter()
    others = [db.begin_run(f"other-{i}") for i in range(OTHER_RUNS)]
    target = db.begin_run("target")
    put, append, set_state = db.kv.put, db.events.append, db.state.set
    step = n // TARGET_OPS
    hit = step // 2
    j = 0
    mid_version = 0
    mid_kv: dict = {}
    for i in range(n):
        if i % step == hit:
            if j % 10 == 0:
                append(target, "tool_call", {"step": j})
            elif j % 10 == 5:
                set_state(target, f"s{j % 20}", j)
            else:
                put(target, f"k{j % 400}", j)
            j += 1
            if j == TARGET_OPS // 2:
                mid_version = db.stats()["commit_version"]
                mid_kv = dict(db.run_state(target).kv)
        else:
            put(others[i % OTHER_RUNS], f"key/{i // OTHER_RUNS % 1000}", i)
    build_s = time.perf_counter() - t0
    stats = db.stats()
    assert j == TARGET_OPS and stats["commit_version"] == n + OTHER_RUNS + 1
    live = db.run_state(target)
    return {"db": db, "path": str(path), "target": target, "live": live, "mid_version": mid_version,
            "mid_kv": mid_kv, "build_s": build_s, "commit_version": stats["commit_version"]}


@pytest.fixture(scope="module")
def histories(tmp_path_factory):
    """``{"10k": h, "1M": h, "1M-wal": path}``: the two histories, closed (the 1M one with a snapshot)."""
    base = tmp_path_factory.mktemp("replay")
    out: dict = {}
    for label, n in SIZES.items():
        h = _build(base / label, n)
        h["db"].close()
        out[label] = h
    big = out["1M"]
    wal_copy = base / "1M-wal"  # the 1M directory as built: WAL + sidecars, no snapshot
    shutil.copytree(big["path"], wal_copy, ignore=shutil.ignore_patterns("LOCK"))
    out["1M-wal"] = str(wal_copy)
    db = _open(big["path"])
    info = db.snapshot()
    big["snapshot_keys"] = info.keys
    big["wal_bytes"] = db.stats()["wal_bytes"]
    db.close()
    assert _sidecars(big["path"]) and _sidecars(wal_copy)
    return out


@contextlib.contextmanager
def _reopened(h: dict):
    db = _open(h["path"])
    try:
        yield db
    finally:
        db.close()


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --- 1. replay scaling: 10k vs 1M history -----------------------------------------------------------


@pytest.mark.parametrize("size", ["10k", "1M"])  # 10k first: the ratio needs its median
def test_replay_scaling(benchmark, results, histories, size):
    benchmark.group = "replay"
    h = histories[size]
    target = h["target"]
    with _reopened(h) as db:
        assert db.stats()["history"]["entries"] == h["commit_version"]  # index loaded for every record
        state = db.replay_run(target)
        assert state == h["live"] and len(state.kv) == 320 and len(state.events) == 100

        benchmark.pedantic(lambda: db.replay_run(target), rounds=REPLAY_ROUNDS, iterations=1, warmup_rounds=3)
        if size == "10k":
            median = record(benchmark, results, "inmem", "replay_run, 10k history",
                            "replay_run of a 1,000-op run; database history 10,000 ops",
                            history_ops=SIZES[size], build_s=round(h["build_s"], 2))
            if median:
                _MEDIAN["replay-10k"] = median
                benchmark.extra_info["median_ms"] = round(median * 1e3, 3)
            return
        assert dict(state.kv) == dict(histories["10k"]["live"].kv)
        median = record(benchmark, results, "1M history", "replay_run, 1M history",
                        "replay_run of a 1,000-op run; database history 1,000,000 ops",
                        history_ops=SIZES[size], build_s=round(h["build_s"], 2), wal_bytes=h["wal_bytes"])
        # side check, less exposed to drift: alternate the two sizes back to back
        with _reopened(histories["10k"]) as small:
            small_target = histories["10k"]["target"]
            ratios = []
            for _ in range(PAIRS):
                t_small = _time(lambda: small.replay_run(small_target))
                t_big = _time(lambda: db.replay_run(target))
                ratios.append(t_big / t_small)
        benchmark.extra_info["interleaved_ratio"] = round(statistics.median(ratios), 3)
        if median:
            benchmark.extra_info["median_ms"] = round(median * 1e3, 3)
            if "replay-10k" in _MEDIAN:
                ratio = median / _MEDIAN["replay-10k"]
                benchmark.extra_info["ratio_1M_10k"] = round(ratio, 3)
                benchmark.extra_info["within_1_5x"] = ratio <= 1.5


def test_replay_mid_version(benchmark, results, histories):
    benchmark.group = "replay-mid"
    h = histories["1M"]
    target, v = h["target"], h["mid_version"]
    with _reopened(h) as db:
        state = db.replay_run(target, at_version=v)
        assert state.version == v and dict(state.kv) == h["mid_kv"]
        benchmark.pedantic(lambda: db.replay_run(target, at_version=v), rounds=MID_ROUNDS, iterations=1,
                           warmup_rounds=3)
        median = record(benchmark, results, "inmem", "replay_run(at_version=mid)",
                        "replay_run of a 1,000-op run to its 500th op; 1M history", at_version=v)
        if median:
            benchmark.extra_info["median_ms"] = round(median * 1e3, 3)


def test_history_1m(benchmark, results, histories):
    benchmark.group = "history"
    h = histories["1M"]
    target = h["target"]
    with _reopened(h) as db:
        commits = db.history(target)
        assert len(commits) == TARGET_OPS + 1 and commits[-1].version == h["live"].version
        benchmark.pedantic(lambda: db.history(target), rounds=HISTORY_ROUNDS, iterations=1, warmup_rounds=2)
        median = record(benchmark, results, "inmem", "history (1M history)",
                        "history() of a 1,000-op run: 1,001 Commit; 1M history")
        if median:
            benchmark.extra_info["median_ms"] = round(median * 1e3, 3)


# --- reopen of the 1M database: sidecars vs rebuilt index -----------------------------------------------


@pytest.fixture
def index_load_times(monkeypatch):
    """Seconds spent in each ``HistoryIndex.load`` call during the test (wrapped here; the engine is untouched)."""
    times: list[float] = []
    load = HistoryIndex.load

    def timed(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return load(self, *args, **kwargs)
        finally:
            times.append(time.perf_counter() - t0)

    monkeypatch.setattr(HistoryIndex, "load", timed)
    return times


@pytest.mark.parametrize("which", ["snapshot", "wal"])
@pytest.mark.parametrize("sidecars", ["kept", "deleted"])
def test_reopen_1m(benchmark, results, histories, index_load_times, which, sidecars):
    benchmark.group = "reopen-1M" if which == "snapshot" else "reopen-1M-wal"
    path = histories["1M"]["path"] if which == "snapshot" else histories["1M-wal"]
    handle: list[Database] = []
    recovery_s: list[float] = []

    def close_last():
        if handle:
            db = handle.pop()
            recovery_s.append(db.stats()["recovery"]["seconds"])
            db.close()

    def setup():
        close_last()
        if sidecars == "deleted":
            for name in _sidecars(path):
                os.remove(name)
        else:
            assert _sidecars(path)

    def reopen():
        handle.append(_open(path))

    if sidecars == "kept":
        rounds, warmup = (REOPEN_ROUNDS, 1) if which == "snapshot" else (WAL_REOPEN_ROUNDS, 0)
    else:
        rounds, warmup = (REBUILD_ROUNDS, 0) if which == "snapshot" else (WAL_REOPEN_ROUNDS, 0)
    try:
        benchmark.pedantic(reopen, setup=setup, rounds=rounds, iterations=1, warmup_rounds=warmup)
        db = handle[-1]
        stats = db.stats()
        assert stats["commit_version"] == histories["1M"]["commit_version"]
        assert stats["history"]["entries"] == stats["commit_version"]
        assert (stats["recovery"]["snapshot"] is not None) == (which == "snapshot")
    finally:
        close_last()
    assert _sidecars(path)  # close writes them back
    label = f"open, {'snapshot' if which == 'snapshot' else 'WAL only'}, sidecars {sidecars}"
    kind = "with a snapshot" if which == "snapshot" else "no snapshot"
    median = record(benchmark, results, "inmem" if sidecars == "kept" else "sidecars deleted", label,
                    f"Database.open of the 1M-op database ({kind})",
                    index_load_ms=round(statistics.median(index_load_times) * 1e3, 1),
                    recovery_ms=round(statistics.median(recovery_s) * 1e3, 1))
    if median:
        benchmark.extra_info["median_ms"] = round(median * 1e3, 1)


# --- 2. a 10k-key run: run_state vs replay, fork, diff ------------------------------------------------


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    """An open ``batched`` database with one run of 10,000 keys, 100 events, 10 states, and a 1 %-changed fork."""
    db = _open(tmp_path_factory.mktemp("fork") / "db", durability="batched")
    run = db.begin_run("big")
    put, append, set_state = db.kv.put, db.events.append, db.state.set
    for i in range(RUN_KEYS):
        put(run, key_for(i), value_for(i))
        if i % (RUN_KEYS // RUN_EVENTS) == 0:
            append(run, "tool_call", value_for(i))
        if i % (RUN_KEYS // RUN_STATES) == 0:
            set_state(run, f"state-{i // (RUN_KEYS // RUN_STATES)}", i)
    version = db.stats()["commit_version"]
    assert version == 1 + RUN_KEYS + RUN_EVENTS + RUN_STATES
    live = db.run_state(run)
    assert len(live.kv) == RUN_KEYS and len(live.events) == RUN_EVENTS and len(live.states) == RUN_STATES
    fork = db.fork_run(run, name="changed")
    for i in range(0, RUN_KEYS, RUN_KEYS // CHANGED):  # 1 % of the keys
        put(fork, key_for(i), {"changed": i})
    yield {"db": db, "run": run, "version": version, "live": live, "fork": fork}
    db.close()


@pytest.mark.parametrize("how", ["run_state", "replay_run"])  # live first: the ratio needs its median
def test_state_10k(benchmark, results, big_run, how):
    benchmark.group = "state-10k"
    db, run = big_run["db"], big_run["run"]
    fn = getattr(db, how)
    assert fn(run) == big_run["live"]
    benchmark.pedantic(lambda: fn(run), rounds=STATE_ROUNDS, iterations=1, warmup_rounds=1)
    commits = 1 + RUN_KEYS + RUN_EVENTS + RUN_STATES
    median = record(benchmark, results, "inmem" if how == "run_state" else "replay_run", how,
                    f"{how} of a run: 10,000 kv keys, 100 events, 10 states ({commits:,} commits)")
    if median:
        benchmark.extra_info["median_ms"] = round(median * 1e3, 2)
        _MEDIAN[how] = median
        if how == "replay_run" and "run_state" in _MEDIAN:
            benchmark.extra_info["replay_vs_live"] = round(median / _MEDIAN["run_state"], 2)


@pytest.mark.parametrize("at", ["live", "at_version"])
def test_fork_10k(benchmark, results, big_run, at):
    benchmark.group = "fork-10k"
    db, run, v = big_run["db"], big_run["run"], big_run["version"]
    forks: list[str] = []
    if at == "live":
        def fork():
            forks.append(db.fork_run(run))
    else:
        def fork():
            forks.append(db.fork_run(run, at_version=v))
    benchmark.pedantic(fork, rounds=FORK_ROUNDS, iterations=1, warmup_rounds=1)
    copy = db.run_state(forks[-1])
    live = big_run["live"]
    assert dict(copy.kv) == dict(live.kv) and len(copy.events) == RUN_EVENTS
    assert [e.hash for e in copy.events] == [e.hash for e in live.events]
    assert {k: s.value for k, s in copy.states.items()} == {k: s.value for k, s in live.states.items()}
    meta = db.runs.get(forks[-1]).metadata
    assert meta["forked_from"] == run and (meta["fork_version"] == v) == (at != "live")
    label = "fork_run(run)" if at == "live" else "fork_run(run, at_version=v)"
    median = record(benchmark, results, "inmem" if at == "live" else "at_version", label,
                    f"{label}: copy 10,110 entries in one commit"
                    + (", after replaying 10,111 records" if at != "live" else ""),
                    forks_in_db=len(forks))
    if median:
        benchmark.extra_info["median_ms"] = round(median * 1e3, 2)


def test_diff_10k(benchmark, results, big_run):
    benchmark.group = "diff-10k"
    db, run, fork = big_run["db"], big_run["run"], big_run["fork"]
    d = db.diff_runs(run, fork)
    assert len(d.kv.changed) == CHANGED and not d.kv.added and not d.kv.removed
    assert not d.events and not d.states and not d.traces
    benchmark.pedantic(lambda: db.diff_runs(run, fork), rounds=DIFF_ROUNDS, iterations=1, warmup_rounds=1)
    median = record(benchmark, results, "inmem", "diff_runs(run, fork)",
                    f"diff_runs of two live 10,110-entry runs, {CHANGED} kv values differ")
    if median:
        benchmark.extra_info["median_ms"] = round(median * 1e3, 2)
