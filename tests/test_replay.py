"""Runs like commits: ``db.history``, ``db.replay_run`` (time travel) and ``db.run_state``.

What is checked:

* **Determinism** (Hypothesis): random multi-run workloads (kv put/delete,
  event appends, state sets, traces, cross-run transactions, end_run,
  snapshots, reopens in every durability mode, tiny WAL segments, automatic
  snapshots) against a pure-Python model recorded after every commit:
  ``replay_run(run) == run_state(run)`` for every run, and
  ``replay_run(run, at_version=v)`` equals the model at ``v`` for every
  recorded ``v``, before and after the final reopen.
* ``history()`` contents: versions, ops (primitive, key, kind, value), the
  creating commit first, cross-run transactions, deletes.
* Time-travel edge cases and the read-only, comparable ``RunState``.
* The history index sidecars (``hist-*.idx``) are a cache: missing, damaged,
  stale or swapped sidecars are rebuilt from the WAL on open.
* A real SIGKILL of a strict-durability writer.
* ``history(run)`` lists exactly the run's commits among thousands of others.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import glob
import os
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, event, given, settings

from inmem import (
    Commit,
    Database,
    InvalidArgument,
    Op,
    RunClosed,
    RunNotFound,
    RunState,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNKNOWN_RUN = "01800000-0000-7000-8000-000000000001"  # well-formed, never created


def version(db: Database) -> int:
    return db.stats()["commit_version"]


def hist_files(path: str) -> list[str]:
    return sorted(glob.glob(os.path.join(path, "hist-*.idx")))


def wal_files(path: str) -> list[str]:
    return sorted(glob.glob(os.path.join(path, "wal-*.log")))


# --- the model ----------------------------------------------------------------------------------


@dataclasses.dataclass
class RunModel:
    kv: dict[str, Any] = dataclasses.field(default_factory=dict)
    events: list[tuple[str, Any]] = dataclasses.field(default_factory=list)
    states: dict[str, tuple[Any, int]] = dataclasses.field(default_factory=dict)  # name -> (value, version)
    traces: dict[str, tuple[str, Any, float | None]] = dataclasses.field(default_factory=dict)  # id -> ...
    last: int = 0  # version of the last commit that touched the run
    touched: list[int] = dataclasses.field(default_factory=list)  # every such version


def assert_matches(rs: RunState, m: RunModel, where: str) -> None:
    """``rs`` (a replayed or live RunState) shows exactly the model ``m``."""
    assert dict(rs.kv) == m.kv, where
    assert [(e.type, e.payload) for e in rs.events] == m.events, where
    assert [e.seq for e in rs.events] == list(range(len(m.events))), where
    assert {n: (s.value, s.version) for n, s in rs.states.items()} == m.states, where
    # traces in creation order (ids are UUIDv7, monotonic in this process)
    assert [(t.id, t.kind, t.content, t.confidence) for t in rs.traces] == \
        [(tid, *rest) for tid, rest in m.traces.items()], where
    assert rs.version == m.last, where


# --- strategies ---------------------------------------------------------------------------------

KEYS = ["a", "b", "c/1", "é"]
scalars = (st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=5)
           | st.floats(allow_nan=False, allow_infinity=False))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
                      max_leaves=5)
padded = st.tuples(values, st.integers(0, 1200)).map(lambda t: [t[0], "p" * t[1]])  # some bigger records
anyvalue = values | padded
run_ix = st.integers(0, 3)

sub_op = st.one_of(
    st.tuples(st.just("put"), st.integers(0, 1), st.sampled_from(KEYS), anyvalue),
    st.tuples(st.just("delete"), st.integers(0, 1), st.sampled_from(KEYS)),
    st.tuples(st.just("event"), st.integers(0, 1), st.sampled_from(["obs", "act"]), values),
    st.tuples(st.just("state"), st.integers(0, 1), st.sampled_from(["phase", "mood"]), values),
    st.tuples(st.just("trace"), st.integers(0, 1), st.sampled_from(["thought", "action"]), values,
              st.sampled_from([None, 0.0, 0.5, 1.0])),
)
op = st.one_of(
    st.tuples(st.just("begin")),
    st.tuples(st.just("put"), run_ix, st.sampled_from(KEYS), anyvalue),
    st.tuples(st.just("put"), run_ix, st.sampled_from(KEYS), anyvalue),
    st.tuples(st.just("delete"), run_ix, st.sampled_from(KEYS)),
    st.tuples(st.just("event"), run_ix, st.sampled_from(["obs", "act"]), anyvalue),
    st.tuples(st.just("state"), run_ix, st.sampled_from(["phase", "mood"]), values),
    st.tuples(st.just("trace"), run_ix, st.sampled_from(["thought", "action"]), values,
              st.sampled_from([None, 0.0, 0.25, 1.0])),
    st.tuples(st.just("tx"), run_ix, run_ix, st.lists(sub_op, min_size=1, max_size=4)),
    st.tuples(st.just("end"), run_ix),
    st.tuples(st.just("bulk"), run_ix, st.integers(1, 12)),  # n big puts: fills WAL segments
    st.tuples(st.just("bulk"), run_ix, st.integers(1, 12)),
    st.tuples(st.just("snapshot")),
    st.tuples(st.just("reopen"), st.sampled_from(["batched", "strict", "off"])),
)
configs = st.fixed_dictionaries({
    "durability": st.sampled_from(["batched", "strict", "off"]),
    "segment_bytes": st.sampled_from([4096, 4096, 64 * 1024]),
    "snapshot_every_bytes": st.sampled_from([None, 4096]),
    "history": st.sampled_from(["keep", "active"]),
})


class Workload:
    """Applies ops to a database and to the model, checking each commit's version."""

    def __init__(self, path: str, config: dict[str, Any]):
        self.path = path
        self.config = dict(config)
        self.db = Database.open(path, **self.config)
        self.runs: list[str] = []
        self.ended: set[str] = set()
        self.model: dict[str, RunModel] = {}
        self.first: dict[str, int] = {}
        self.at: dict[int, dict[str, RunModel]] = {}  # version -> model of every run then
        self.marks: set[int] = set()  # versions at snapshot and reopen points

    def commit(self, touched: set[str]) -> None:
        """The op just done was one commit touching ``touched``: record the model at its version."""
        v = max(self.at, default=0) + 1
        assert version(self.db) == v
        for run in touched:
            self.model[run].last = v
            self.model[run].touched.append(v)
        self.at[v] = copy.deepcopy(self.model)

    def no_commit(self) -> None:
        assert version(self.db) == max(self.at, default=0)

    def begin(self) -> None:
        run = self.db.begin_run(f"r{len(self.runs)}", tags=["prop"])
        self.runs.append(run)
        self.model[run] = RunModel()
        self.first[run] = max(self.at, default=0) + 1
        self.commit({run})
        assert self.db.runs.get(run).first_version == self.first[run]

    def apply(self, o: tuple) -> None:
        db = self.db
        kind = o[0]
        if kind == "begin":
            if len(self.runs) < 4:
                self.begin()
            return
        if kind == "snapshot":
            self.marks.add(version(db))
            db.snapshot()
            self.no_commit()
            return
        if kind == "reopen":
            self.reopen(o[1])
            return
        if kind == "tx":
            active = [r for r in self.runs if r not in self.ended]
            if active:
                self.transaction((active[o[1] % len(active)], active[o[2] % len(active)]), o[3])
            return
        run = self.runs[o[1] % len(self.runs)]
        if run in self.ended:
            with pytest.raises(RunClosed):
                self.single(db, run, o)
            self.no_commit()
            return
        if kind == "end":
            db.end_run(run, "completed")
            self.ended.add(run)
            self.commit({run})
            return
        if kind == "bulk":
            for i in range(o[2]):
                self.single(db, run, ("put", run, f"bulk/{i % 5}", [i, "b" * 700]))
                self.commit({run})
            return
        if self.single(db, run, o):
            self.commit({run})
        else:
            self.no_commit()

    def single(self, prims: Any, run: str, o: tuple) -> bool:
        """Do one primitive op through ``prims`` (db or tx) and on the model; return whether it writes."""
        m = self.model[run]
        kind = o[0]
        if kind == "bulk":  # only reached for an ended run
            prims.kv.put(run, "bulk/0", 0)
            raise AssertionError("wrote to an ended run")
        if kind == "put":
            prims.kv.put(run, o[2], o[3])
            m.kv[o[2]] = o[3]
            return True
        if kind == "delete":
            existed = prims.kv.delete(run, o[2])
            assert existed == (o[2] in m.kv)
            m.kv.pop(o[2], None)
            return existed
        if kind == "event":
            e = prims.events.append(run, o[2], o[3])
            assert e.seq == len(m.events)
            m.events.append((o[2], o[3]))
            return True
        if kind == "state":
            s = prims.state.set(run, o[2], o[3])
            ver = m.states.get(o[2], (None, 0))[1] + 1
            assert s.version == ver
            m.states[o[2]] = (o[3], ver)
            return True
        if kind == "trace":
            tid = prims.traces.record(run, o[2], o[3], confidence=o[4])
            m.traces[tid] = (o[2], o[3], o[4])
            return True
        if kind == "end":
            prims.end_run(run, "completed")
            return True
        raise AssertionError(kind)

    def transaction(self, pair: tuple[str, str], subs: list[tuple]) -> None:
        touched: set[str] = set()
        with self.db.transaction() as tx:
            for s in subs:
                run = pair[s[1]]
                if self.single(tx, run, s):  # a put then a delete of a new key still writes (a delete)
                    touched.add(run)
        if touched:
            self.commit(touched)
        else:
            self.no_commit()

    def reopen(self, durability: str) -> None:
        self.marks.add(version(self.db))
        self.db.close()
        self.config["durability"] = durability
        self.db = Database.open(self.path, **self.config)
        assert version(self.db) == max(self.at, default=0)
        self.check_current()

    def check_current(self) -> None:
        for run in self.runs:
            live = self.db.run_state(run)
            replayed = self.db.replay_run(run)
            assert replayed == live
            assert_matches(live, self.model[run], f"run {run} live")
            assert [c.version for c in self.db.history(run)] == self.model[run].touched

    def check_versions(self, versions: list[int]) -> None:
        for v in versions:
            for run, m in self.at[v].items():
                rs = self.db.replay_run(run, at_version=v)
                assert rs.run == run
                assert_matches(rs, m, f"run {run} at version {v}")
            for run in self.runs:
                if self.first[run] > v:
                    with pytest.raises(InvalidArgument):
                        self.db.replay_run(run, at_version=v)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(config=configs, ops=st.lists(op, min_size=1, max_size=60))
def test_replay_is_deterministic_and_time_travels(tmp_path, config, ops):
    path = tempfile.mkdtemp(dir=tmp_path)
    w = Workload(path, config)
    try:
        w.begin()
        w.begin()
        for o in ops:
            w.apply(o)
        w.check_current()
        w.check_versions(sorted(w.at))
        stats = w.db.stats()
        event(f"wal segments: {min(stats['wal_segments'], 5)}")
        event(f"snapshots taken: {min(stats['snapshots']['taken'], 2)}")
        event(f"reopens and snapshots: {min(len(w.marks), 3)}")
        w.reopen(config["durability"])
        # every recorded version after the final reopen, reopen/snapshot points first
        w.check_versions(sorted(w.marks) + sorted(w.at))
    finally:
        w.db.close()


# --- history() contents -------------------------------------------------------------------------


def test_history_lists_each_commit_with_the_runs_own_ops(dbdir):
    t0 = dt.datetime.now(dt.timezone.utc)
    with Database.open(dbdir, durability="off") as db:
        a = db.begin_run("a", tags=["x"], metadata={"goal": "g"})         # 1
        b = db.begin_run("b")                                             # 2
        db.kv.put(a, "plan", {"steps": [1, 2]})                           # 3
        ev = db.events.append(a, "obs", [1, "two"])                       # 4
        db.state.set(a, "phase", "plan")                                  # 5
        tid = db.traces.record(a, "thought", "hmm", confidence=0.5)       # 6
        with db.transaction() as tx:                                      # 7
            tx.kv.put(b, "kb", 3)
            tx.kv.put(a, "k2", 2)
            tx.events.append(b, "obs", None)
        assert db.kv.delete(a, "nope") is False                           # no commit
        assert db.kv.delete(a, "plan") is True                            # 8
        db.kv.put(b, "solo", 1)                                           # 9
        db.end_run(a, "failed")                                           # 10
        assert version(db) == 10
        t1 = dt.datetime.now(dt.timezone.utc)

        ha = db.history(a)
        assert all(isinstance(c, Commit) for c in ha)
        assert [c.version for c in ha] == [1, 3, 4, 5, 6, 7, 8, 10]
        assert [c.version for c in db.history(b)] == [2, 7, 9]
        ts = [c.ts for c in ha]
        assert ts == sorted(ts)
        assert all(c.ts.tzinfo is not None and c.ts.utcoffset() == dt.timedelta(0) for c in ha)
        assert t0 - dt.timedelta(seconds=1) <= ts[0] and ts[-1] <= t1 + dt.timedelta(seconds=1)

        # the first commit created the run: its record, active
        (create,) = ha[0].ops
        assert (create.primitive, create.key, create.kind) == ("run", None, "put")
        assert create.value["name"] == "a" and create.value["status"] == "active"
        assert create.value["metadata"] == {"goal": "g"} and list(create.value["tags"]) == ["x"]
        assert ha[0].runs == (a,)
        assert db.runs.get(a).first_version == ha[0].version == 1

        assert ha[1].ops == (Op("kv", "plan", "put", {"steps": [1, 2]}),)
        (e,) = ha[2].ops
        assert (e.primitive, e.key, e.kind) == ("events", 0, "put")
        assert e.value["type"] == "obs" and e.value["payload"] == [1, "two"] and e.value["hash"] == ev.hash
        (s,) = ha[3].ops
        assert (s.primitive, s.key, s.kind) == ("state", "phase", "put")
        assert s.value["value"] == "plan" and s.value["version"] == 1
        (t,) = ha[4].ops
        assert (t.primitive, t.key, t.kind) == ("traces", tid, "put")
        assert t.value["kind"] == "thought" and t.value["content"] == "hmm" and t.value["confidence"] == 0.5

        # the cross-run transaction: both runs named, only a's op listed for a
        assert set(ha[5].runs) == {a, b} and len(ha[5].runs) == 2
        assert ha[5].ops == (Op("kv", "k2", "put", 2),)
        hb7 = db.history(b)[1]
        assert hb7.version == 7 and set(hb7.runs) == {a, b}
        assert sorted((o.primitive, o.key) for o in hb7.ops) == [("events", 0), ("kv", "kb")]
        assert db.history(b)[2].runs == (b,)

        assert ha[6].ops == (Op("kv", "plan", "delete", None),)
        (end,) = ha[7].ops
        assert (end.primitive, end.key, end.kind) == ("run", None, "put")
        assert end.value["status"] == "failed"

        # history survives the reopen unchanged
        before = {r: db.history(r) for r in (a, b)}
    with Database.open(dbdir) as db:
        assert {r: db.history(r) for r in (a, b)} == before


def test_history_of_unknown_run_raises(dbdir):
    with Database.open(dbdir) as db:
        db.begin_run()
        for call in (db.history, db.replay_run, db.run_state):
            with pytest.raises(RunNotFound):
                call(UNKNOWN_RUN)
            with pytest.raises(RunNotFound):
                call("not-a-run")


# --- time travel ----------------------------------------------------------------------------------


@pytest.fixture
def travelled(dbdir):
    db = Database.open(dbdir, durability="off")
    other = db.begin_run("other")                      # 1
    run = db.begin_run("run")                          # 2
    db.kv.put(run, "k", 1)                             # 3
    db.events.append(run, "e", {"n": 1})               # 4
    db.kv.put(other, "x", 0)                           # 5
    db.state.set(run, "s", "a")                        # 6
    db.traces.record(run, "thought", "t")              # 7
    db.kv.put(run, "k", 2)                             # 8
    db.kv.put(other, "x", 1)                           # 9
    try:
        yield db, run, other
    finally:
        db.close()


def test_at_first_version_holds_only_the_run_record(travelled):
    db, run, _ = travelled
    first = db.runs.get(run).first_version
    assert first == 2
    rs = db.replay_run(run, at_version=first)
    assert (rs.run, rs.version) == (run, 2)
    assert rs.kv == {} and rs.events == [] and rs.states == {} and rs.traces == []


def test_at_each_version(travelled):
    db, run, _ = travelled
    seen = [(v, db.replay_run(run, at_version=v)) for v in range(2, 10)]
    got = {v: (rs.version, dict(rs.kv), len(rs.events), {n: s.value for n, s in rs.states.items()},
               len(rs.traces)) for v, rs in seen}
    assert got == {
        2: (2, {}, 0, {}, 0),
        3: (3, {"k": 1}, 0, {}, 0),
        4: (4, {"k": 1}, 1, {}, 0),
        5: (4, {"k": 1}, 1, {}, 0),     # commit 5 is the other run's: same state, same version
        6: (6, {"k": 1}, 1, {"s": "a"}, 0),
        7: (7, {"k": 1}, 1, {"s": "a"}, 1),
        8: (8, {"k": 2}, 1, {"s": "a"}, 1),
        9: (8, {"k": 2}, 1, {"s": "a"}, 1),
    }
    assert seen[3][1] == seen[2][1]  # versions 5 and 4: equal states


def test_at_current_version_equals_live_and_default(travelled):
    db, run, other = travelled
    cur = version(db)
    assert cur == 9
    for r in (run, other):
        assert db.replay_run(r, at_version=cur) == db.replay_run(r) == db.run_state(r)
    assert db.replay_run(other, at_version=cur).kv == {"x": 1}
    assert db.replay_run(other, at_version=5).kv == {"x": 0}


@pytest.mark.parametrize("bad", [True, False, -1, "3", 3.0, 10, 10**30])
def test_bad_at_version_is_invalid_argument(travelled, bad):
    db, run, _ = travelled
    with pytest.raises(InvalidArgument):
        db.replay_run(run, at_version=bad)


@pytest.mark.parametrize("at", [0, 1])
def test_at_version_before_the_run_existed(travelled, at):
    db, run, other = travelled
    with pytest.raises(InvalidArgument):
        db.replay_run(run, at_version=at)
    if at == 1:
        assert db.replay_run(other, at_version=1).version == 1


def test_runstate_is_read_only(travelled):
    db, run, _ = travelled
    for rs in (db.replay_run(run), db.run_state(run)):
        with pytest.raises(TypeError):
            rs.kv["k"] = 3
        with pytest.raises(TypeError):
            del rs.kv["k"]
        with pytest.raises(TypeError):
            rs.kv.update(z=1)
        with pytest.raises(TypeError):
            rs.kv.pop("k")
        with pytest.raises(TypeError):
            rs.states.clear()
        with pytest.raises(TypeError):
            rs.events.append(None)
        with pytest.raises(TypeError):
            rs.events[0] = None
        with pytest.raises(TypeError):
            rs.traces.pop()
        with pytest.raises(TypeError):
            rs.traces += [1]
        with pytest.raises(dataclasses.FrozenInstanceError):
            rs.version = 1  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            rs.kv = {}  # type: ignore[misc]
        with pytest.raises(TypeError):
            hash(rs)
        assert rs.kv == {"k": 2} and len(rs.events) == 1 and len(rs.traces) == 1


def test_mutating_a_returned_value_does_not_change_the_run(dbdir):
    with Database.open(dbdir) as db:
        run = db.begin_run()
        db.kv.put(run, "doc", {"list": [1, 2]})
        rs = db.replay_run(run)
        rs.kv["doc"]["list"].append(3)
        live = db.run_state(run)
        live.kv["doc"]["list"].append(4)
        assert db.replay_run(run).kv == {"doc": {"list": [1, 2]}} == db.run_state(run).kv
        assert db.kv.get(run, "doc") == {"list": [1, 2]}


def test_runstate_equality_sees_every_field(travelled):
    db, run, other = travelled
    a, b = db.replay_run(run), db.run_state(run)
    assert a == b and not (a != b)
    assert a != db.replay_run(run, at_version=7)
    assert a != db.replay_run(other)
    assert a != dataclasses.replace(a, kv={**a.kv, "k": 3})
    assert a != dataclasses.replace(a, kv={**a.kv, "extra": None})
    assert a != dataclasses.replace(a, version=a.version + 1)
    assert a != dataclasses.replace(a, events=[])
    assert a != dataclasses.replace(a, states={})
    assert a != dataclasses.replace(a, traces=[])
    assert a == dataclasses.replace(a, kv=dict(a.kv))  # read-only-ness does not matter, contents do


# --- the history index sidecars are a cache -----------------------------------------------------------


def busy_workload(db: Database, runs: list[str], n: int, seed: int) -> dict[int, dict[str, RunState]]:
    """``n`` mixed commits on ``runs``; return version -> live state of every run right after it."""
    import random

    rnd = random.Random(seed)
    seen: dict[int, dict[str, RunState]] = {}
    for i in range(n):
        run = runs[rnd.randrange(len(runs))]
        k = rnd.randrange(4)
        if k == 0:
            db.kv.put(run, f"k{rnd.randrange(12)}", {"i": i, "pad": "x" * rnd.randrange(200)})
        elif k == 1:
            key = f"k{rnd.randrange(12)}"
            if not db.kv.delete(run, key):
                db.kv.put(run, key, i)
        elif k == 2:
            db.events.append(run, "tick", [i, "y" * rnd.randrange(100)])
        elif k == 3:
            if rnd.random() < 0.5:
                db.state.set(run, f"s{rnd.randrange(3)}", i)
            else:
                with db.transaction() as tx:
                    other = runs[rnd.randrange(len(runs))]
                    tx.traces.record(run, "step", i, confidence=rnd.random())
                    tx.kv.put(other, "tx", i)
        seen[version(db)] = {r: db.run_state(r) for r in runs}
    return seen


def check_all(db: Database, seen: dict[int, dict[str, RunState]]) -> None:
    runs = list(next(iter(seen.values())))
    for r in runs:
        assert db.replay_run(r) == db.run_state(r)
        hist = [c.version for c in db.history(r)]
        assert hist == sorted(hist)
        # the state after every 5th of the run's commits (and the last ones), and one version either side
        for v in sorted({x for h in hist[::5] + hist[-2:] for x in (h - 1, h, h + 1)}):
            if v in seen:
                assert db.replay_run(r, at_version=v) == seen[v][r], (r, v)


def _flip(path: str) -> None:
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        data[len(data) // 2] ^= 0x40
        f.seek(0)
        f.write(data)


@pytest.mark.parametrize("damage", ["none", "missing", "flipped", "truncated", "stale", "swapped", "empty"])
def test_history_survives_reopen_whatever_the_sidecars(dbdir, damage):
    db = Database.open(dbdir, durability="batched", segment_bytes=4096, snapshot_every_bytes=None)
    runs = [db.begin_run(f"r{i}") for i in range(3)]
    seen = {version(db): {r: db.run_state(r) for r in runs}}
    seen.update(busy_workload(db, runs, 90, seed=1))
    db.close()
    assert len(wal_files(dbdir)) >= 4
    old = {p: open(p, "rb").read() for p in hist_files(dbdir)}
    assert len(old) == len(wal_files(dbdir))  # one sidecar per segment

    db = Database.open(dbdir, durability="batched", segment_bytes=4096, snapshot_every_bytes=None)
    check_all(db, seen)
    seen.update(busy_workload(db, runs, 70, seed=2))
    db.snapshot()  # recovery then starts here: the frames before it are indexed from sidecars or a re-scan
    seen.update(busy_workload(db, runs, 20, seed=3))
    db.close()
    sidecars = hist_files(dbdir)
    assert len(sidecars) == len(wal_files(dbdir)) > len(old)

    if damage == "missing":
        for p in sidecars:
            os.remove(p)
    elif damage == "flipped":
        for p in sidecars:
            _flip(p)
    elif damage == "truncated":
        for p in sidecars:
            os.truncate(p, os.path.getsize(p) // 2)
    elif damage == "empty":
        for p in sidecars:
            os.truncate(p, 0)
    elif damage == "stale":  # the sidecars of the first close: they cover less than the segments hold
        for p, data in old.items():
            with open(p, "wb") as f:
                f.write(data)
    elif damage == "swapped":  # each sidecar names another segment
        datas = [open(p, "rb").read() for p in sidecars]
        for p, data in zip(sidecars, datas[1:] + datas[:1]):
            with open(p, "wb") as f:
                f.write(data)

    with Database.open(dbdir, durability="batched", segment_bytes=4096) as db:
        assert db.stats()["recovery"]["records"] <= 21  # replayed from the snapshot on
        check_all(db, seen)
        assert db.stats()["history"]["floor"] == 1
        # and it keeps working for new commits
        seen.update(busy_workload(db, runs, 20, seed=4))
        check_all(db, seen)
    # the rebuilt index was saved: a further reopen is still right
    assert len(hist_files(dbdir)) == len(wal_files(dbdir))
    with Database.open(dbdir) as db:
        check_all(db, seen)


@pytest.mark.parametrize("cut", [1, 40])
def test_torn_wal_tail_under_a_sidecar_that_names_the_lost_frame(dbdir, cut):
    """The sidecar written at close covers the last frame; the WAL then loses its tail (a torn write)."""
    opts = dict(durability="strict", segment_bytes=4096, snapshot_every_bytes=None)
    db = Database.open(dbdir, **opts)
    runs = [db.begin_run("a"), db.begin_run("b")]
    seen = busy_workload(db, runs, 60, seed=10 + cut)
    db.snapshot()
    seen.update(busy_workload(db, runs, 30, seed=20 + cut))
    db.close()
    last_seg = wal_files(dbdir)[-1]
    assert os.path.exists(last_seg.replace("wal-", "hist-").replace(".log", ".idx"))
    os.truncate(last_seg, os.path.getsize(last_seg) - cut)

    with Database.open(dbdir, **opts) as db:
        v = version(db)
        assert v < max(seen)  # the torn last commit is gone ...
        if cut == 1:
            assert v == max(seen) - 1  # ... and only it
        assert db.stats()["recovery"]["torn_tail"]
        seen = {x: states for x, states in seen.items() if x <= v}
        check_all(db, seen)
        for r in runs:
            assert db.replay_run(r) == seen[v][r]
        # the lost LSN is reused by a new commit: history must show the new one, not the lost one
        seen.update(busy_workload(db, runs, 10, seed=30 + cut))
        check_all(db, seen)
    with Database.open(dbdir) as db:
        check_all(db, seen)


def test_old_run_replays_after_many_segments_and_two_snapshots(dbdir):
    opts = dict(durability="batched", segment_bytes=4096, snapshot_every_bytes=None)
    db = Database.open(dbdir, **opts)
    old = db.begin_run("old")
    seen_old = {version(db): db.run_state(old)}
    for i in range(40):
        db.kv.put(old, f"k{i % 7}", "v" * (i * 5))
        seen_old[version(db)] = db.run_state(old)
        if i % 5 == 0:
            db.events.append(old, "step", i)
            seen_old[version(db)] = db.run_state(old)
    db.end_run(old)
    seen_old[version(db)] = db.run_state(old)
    first_segment = wal_files(dbdir)[0]

    newer = [db.begin_run("n1"), db.begin_run("n2")]
    seen = busy_workload(db, newer, 100, seed=4)
    db.snapshot()
    seen.update(busy_workload(db, newer, 100, seed=5))
    db.snapshot()
    seen.update(busy_workload(db, newer, 20, seed=6))
    assert len(wal_files(dbdir)) >= 10
    assert first_segment in wal_files(dbdir)  # history="keep": covered segments stay
    db.close()

    with Database.open(dbdir, **opts) as db:
        assert db.stats()["recovery"]["records"] < version(db)  # recovery started from a snapshot
        assert db.replay_run(old) == db.run_state(old) == seen_old[max(seen_old)]
        for v, rs in seen_old.items():
            assert db.replay_run(old, at_version=v) == rs
        assert [c.version for c in db.history(old)] == sorted(seen_old)
        check_all(db, seen)


# --- a real crash ------------------------------------------------------------------------------------

CHILD = r"""
import sys
from inmem import Database
db = Database.open(sys.argv[1], durability="strict", segment_bytes=4096, snapshot_every_bytes=16384)
runs = [db.begin_run("crash-a"), db.begin_run("crash-b")]
print("runs", runs[0], runs[1], flush=True)
i = 0
while True:
    r = i % 2
    run = runs[r]
    if i % 5 == 3:
        db.events.append(run, "tick", i)
        kind = "event"
    elif i % 5 == 4:
        db.kv.put(run, "cur", i)
        kind = "cur"
    else:
        db.kv.put(run, "k%d" % i, {"i": i, "pad": "x" * (i % 60)})
        kind = "put"
    print(kind, r, i, db.stats()["commit_version"], flush=True)
    i += 1
"""


def test_sigkill_mid_workload_keeps_replay_equal_to_live(tmp_path):
    path = str(tmp_path / "db")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, path], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=err)
    guard = threading.Timer(120, proc.kill)  # only if the child hangs: the test then fails, never waits for ever
    guard.start()
    try:
        header = proc.stdout.readline().decode()
        lines = []
        while len(lines) < 200:
            line = proc.stdout.readline().decode()
            if not line:
                break
            lines.append(line)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        rest = proc.stdout.read().decode()
    finally:
        guard.cancel()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "stderr").read_text()
    assert len(lines) == 200, (tmp_path / "stderr").read_text()
    # every complete line was printed after its commit returned: acknowledged
    lines += [x + "\n" for x in rest.split("\n")[:-1]]
    assert header.startswith("runs ")
    runs = header.split()[1:]
    acked = [(kind, int(r), int(i), int(v)) for kind, r, i, v in (x.split() for x in lines)]
    assert [a[2] for a in acked] == list(range(len(acked)))
    assert [a[3] for a in acked] == list(range(3, 3 + len(acked)))  # versions 1, 2 began the runs

    assert glob.glob(os.path.join(path, "snapshot-*.snap"))  # the child took automatic snapshots
    with Database.open(path) as db:
        last = version(db)
        assert last in (acked[-1][3], acked[-1][3] + 1)  # the unacknowledged next commit may be there
        for r, run in enumerate(runs):
            live, replayed = db.run_state(run), db.replay_run(run)
            assert replayed == live
            mine = [a for a in acked if a[1] == r]
            for kind, _, i, _v in mine:
                if kind == "put":
                    assert live.kv[f"k{i}"] == {"i": i, "pad": "x" * (i % 60)}
            curs = [a[2] for a in mine if a[0] == "cur"]
            if curs:
                nxt = len(acked)  # the one op that may have committed unacknowledged
                assert live.kv["cur"] == curs[-1] or (live.kv["cur"] == nxt and nxt % 5 == 4 and nxt % 2 == r)
            ticks = [a[2] for a in mine if a[0] == "event"]
            assert [e.payload for e in live.events][: len(ticks)] == ticks
            # time travel to acknowledged points: exactly the acknowledged writes up to there
            for _, _, i, v in acked[:: 17] + acked[-1:]:
                rs = db.replay_run(run, at_version=v)
                upto = [a for a in mine if a[3] <= v]
                assert set(rs.kv) == {f"k{a[2]}" for a in upto if a[0] == "put"} | \
                    ({"cur"} if any(a[0] == "cur" for a in upto) else set())
                assert [e.payload for e in rs.events] == [a[2] for a in upto if a[0] == "event"]
                assert rs.version == max([a[3] for a in upto], default=db.runs.get(run).first_version)
        assert sum(len(db.history(run)) for run in runs) == last


# --- replay reads only the run's records --------------------------------------------------------------


def test_history_has_exactly_the_runs_commits_among_thousands(dbdir):
    with Database.open(dbdir, durability="off", segment_bytes=256 * 1024) as db:
        others = [db.begin_run(f"o{i}") for i in range(3)]
        target = db.begin_run("target")
        mine = [version(db)]
        expect: dict[str, Any] = {}
        n_other = 0
        for i in range(5000):
            db.kv.put(others[i % 3], f"k{i % 50}", i)
            n_other += 1
            if i % 100 == 50:
                j = len(mine) - 1  # 0..49
                if j % 4 == 0:
                    db.kv.put(target, f"t{j}", j)
                    expect[f"t{j}"] = j
                elif j % 4 == 1:
                    db.events.append(target, "e", j)
                elif j % 4 == 2:
                    db.state.set(target, "s", j)
                else:
                    db.traces.record(target, "thought", j)
                mine.append(version(db))
        assert len(mine) == 51 and n_other == 5000
        assert version(db) == 4 + 5000 + 50

        def check() -> None:
            hist = db.history(target)
            assert len(hist) == 51
            assert [c.version for c in hist] == mine
            assert all(c.runs == (target,) for c in hist)
            assert all(len(c.ops) == 1 for c in hist)
            rs = db.replay_run(target)
            assert rs == db.run_state(target)
            assert dict(rs.kv) == expect and len(rs.events) == 13 and len(rs.traces) == 12
            assert rs.states["s"].version == 12 and rs.version == mine[-1]
            ho = db.history(others[0])
            assert len(ho) == 1 + 1667  # its begin_run and every third put
            assert all(c.runs == (others[0],) for c in ho)

        check()
    with Database.open(dbdir) as db:
        check()
