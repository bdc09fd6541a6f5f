"""Model-based test of all primitives: random operation sequences against a pure-Python model.

Hypothesis drives a state machine whose steps are operations on every
primitive (kv put/delete, events append, state set/cas/cas_version/define,
traces record (with a parent sometimes, a foreign or unknown one sometimes),
runs tag/set_metadata, begin_run/end_run), batches of them inside one
transaction (committed, rolled back, or aborted by an exception), snapshots
and reopens. Each operation's result or error is checked against the model
as it happens; the full observable state (kv scans, event reads with seqs,
types, payloads and hashes, verify counts, state values and versions, trace
queries, trees and children, run infos and run lists) is compared after
every reopen and at the end of every example.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from inmem import (
    Database,
    InvalidArgument,
    InvalidTransition,
    RunClosed,
    RunNotFound,
    TransactionConflict,
)

UNKNOWN_RUN = "01800000-0000-7000-8000-000000000001"  # well-formed, never created
UNKNOWN_TRACE = "01800000-0000-7000-8000-0000000000ff"
ZERO = bytes(16)
STATUSES = ("completed", "failed", "cancelled")
MACHINES = [
    {"pending": ["claimed"], "claimed": ["done", "pending"]},
    {"a": ["b"], "b": ["a", "c"]},
]
KEYS = ["a", "b", "b/1", "é", "日本"]
STATE_NAMES = ["s0", "s1", "m0", "m1"]
STATE_VALUES = ["pending", "claimed", "done", "a", "b", "c", "x", 0, 1, None, [1], {"k": "v"}]
KINDS = ["thought", "action"]
TAGS = ["t1", "t2", "t3"]
NAMES = ["alpha", "beta", None]

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=6)
           | st.binary(max_size=4) | st.floats(allow_nan=False))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
                      max_leaves=6)
confidences = st.sampled_from([None, None, 0, 1, 0.25, 0.5, 0.75, -0.1, 1.5, float("nan"), True])


def bad_confidence(c: Any) -> bool:
    return c is not None and (isinstance(c, bool) or not (0 <= c <= 1))


# --- the model ------------------------------------------------------------------------------------


class RunModel:
    def __init__(self, rid: str, name: str | None, parent: str | None, tags: list[str], metadata: dict):
        self.id, self.name, self.parent = rid, name, parent
        self.status = "active"
        self.tags = list(tags)  # begin_run keeps them as given; runs.tag adds without repeats
        self.metadata = dict(metadata)
        self.kv: dict[str, Any] = {}
        self.events: list[tuple[str, Any, bytes]] = []  # (type, payload, hash)
        self.state: dict[str, list] = {}  # name -> [value, version, transitions | None]
        self.traces: list[dict] = []


class Model:
    def __init__(self) -> None:
        self.runs: dict[str, RunModel] = {}  # in start order
        #: runs ended after a transaction's snapshot: it still reads them as active, but cannot write them
        self.live_closed: set[str] = set()

    def copy(self) -> Model:
        return copy.deepcopy(self)


def allowed_errors(model: Model, run: str, *, write: bool) -> tuple[type, ...]:
    """The error a call on ``run`` must raise, or ``()``."""
    r = model.runs.get(run)
    if r is None:
        return (RunNotFound,)
    if write and (r.status != "active" or run in model.live_closed):
        return (RunClosed,)
    return ()


def in_list(value: Any, items: Any) -> bool:
    return any(value == x for x in items)


# --- operations: drawn, expected from the model, performed, and applied to the model -----------------


def draw_run(data: Any, model: Model) -> str:
    """Mostly an active run; sometimes any run (maybe ended), rarely an unknown one."""
    runs = list(model.runs)
    active = [r for r in runs if model.runs[r].status == "active"]
    pick = data.draw(st.integers(0, 19))
    if not runs or pick == 0:
        return UNKNOWN_RUN
    if active and pick > 4:
        return data.draw(st.sampled_from(active))
    return data.draw(st.sampled_from(runs))


def draw_op(data: Any, model: Model) -> tuple:
    kind = data.draw(st.sampled_from([
        "kv_put", "kv_put", "kv_delete", "ev_append", "ev_append", "st_set", "st_cas", "st_cas_version",
        "st_define", "tr_record", "tr_record", "runs_tag", "runs_set_metadata",
    ]))
    run = draw_run(data, model)
    if kind == "kv_put":
        return (kind, run, data.draw(st.sampled_from(KEYS)), data.draw(values))
    if kind == "kv_delete":
        return (kind, run, data.draw(st.sampled_from(KEYS)))
    if kind == "ev_append":
        return (kind, run, data.draw(st.sampled_from(["start", "step", "end"])), data.draw(values))
    if kind in ("st_set", "st_cas", "st_cas_version"):
        name = data.draw(st.sampled_from(STATE_NAMES))
        r = model.runs.get(run)
        rec = None if r is None else r.state.get(name)
        current = st.just(rec[0]) if rec is not None else st.nothing()
        new = st.sampled_from(STATE_VALUES)
        if rec is not None and rec[2] is not None:  # under a machine: mostly declared moves
            targets = [t for ts in rec[2].values() for t in ts]
            new = st.sampled_from(targets) | new
        if kind == "st_set":
            return (kind, run, name, data.draw(new))
        if kind == "st_cas":
            return (kind, run, name, data.draw(current | st.sampled_from(STATE_VALUES)), data.draw(new))
        version = st.just(rec[1]) if rec is not None else st.just(0)
        return (kind, run, name, data.draw(version | st.integers(0, 4)), data.draw(new))
    if kind == "st_define":
        m = data.draw(st.integers(0, len(MACHINES) - 1))
        states = sorted(set(MACHINES[m]) | {t for ts in MACHINES[m].values() for t in ts})
        initial = data.draw(st.sampled_from(states + ["nowhere"]))
        return (kind, run, data.draw(st.sampled_from(["m0", "m1", "s0"])), m, initial)
    if kind == "tr_record":
        parent: Any = None
        how = data.draw(st.sampled_from(["none", "none", "own", "own", "other", "unknown"]))
        r = model.runs.get(run)
        if how == "own" and r is not None and r.traces:
            parent = data.draw(st.sampled_from([t["id"] for t in r.traces]))
        elif how == "other":
            foreign = [t["id"] for rid, m in model.runs.items() if rid != run for t in m.traces]
            if foreign:
                parent = data.draw(st.sampled_from(foreign))
        elif how == "unknown":
            parent = UNKNOWN_TRACE
        return (kind, run, data.draw(st.sampled_from(KINDS)), data.draw(values), data.draw(confidences),
                data.draw(st.lists(values, max_size=2)), parent,
                data.draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True)))
    if kind == "runs_tag":
        return (kind, run, tuple(data.draw(st.lists(st.sampled_from(TAGS), max_size=3))))
    assert kind == "runs_set_metadata"
    return (kind, run, data.draw(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 9) | st.text(max_size=3),
                                                 max_size=2)))


def perform(p: Any, op: tuple) -> Any:
    kind, run, *args = op
    if kind == "kv_put":
        return p.kv.put(run, args[0], args[1])
    if kind == "kv_delete":
        return p.kv.delete(run, args[0])
    if kind == "ev_append":
        return p.events.append(run, args[0], args[1])
    if kind == "st_set":
        return p.state.set(run, args[0], args[1])
    if kind == "st_cas":
        return p.state.cas(run, args[0], args[1], args[2])
    if kind == "st_cas_version":
        return p.state.cas_version(run, args[0], args[1], args[2])
    if kind == "st_define":
        return p.state.define(run, args[0], transitions=MACHINES[args[1]], initial=args[2])
    if kind == "tr_record":
        k, content, conf, alts, parent, tags = args
        return p.traces.record(run, k, content, confidence=conf, alternatives=alts, parent=parent, tags=tags)
    if kind == "runs_tag":
        return p.runs.tag(run, *args[0])
    assert kind == "runs_set_metadata"
    return p.runs.set_metadata(run, **args[0])


def move_error(rec: list | None, value: Any) -> bool:
    """Whether a move of state ``rec`` to ``value`` breaks its declared transitions."""
    if rec is None or rec[2] is None:
        return False
    try:
        allowed = rec[2].get(rec[0], [])
    except TypeError:
        allowed = []
    return not in_list(value, allowed)


def expect(model: Model, op: tuple) -> tuple[tuple[type, ...], Any]:
    """(acceptable errors, expected return) of ``op`` on ``model``; errors ``()`` means it must succeed.

    The expected return is ``NOCHECK`` where the model cannot predict it
    exactly (it is checked in :func:`apply`).
    """
    kind, run, *args = op
    arg_errors: tuple[type, ...] = ()
    if kind == "st_define" and not in_list(args[2], set(MACHINES[args[1]]) | {t for ts in MACHINES[args[1]].values() for t in ts}):
        arg_errors = (InvalidArgument,)
    if kind == "tr_record" and bad_confidence(args[2]):
        arg_errors = (InvalidArgument,)
    run_errors = allowed_errors(model, run, write=True)
    if arg_errors or run_errors:
        # which of several problems is reported first is the engine's choice
        return arg_errors + run_errors, NOCHECK
    r = model.runs[run]
    if kind == "kv_put":
        return (), None
    if kind == "kv_delete":
        return (), args[0] in r.kv
    if kind == "ev_append":
        return (), NOCHECK
    if kind in ("st_set", "st_cas", "st_cas_version"):
        name = args[0]
        rec = r.state.get(name)
        if kind == "st_cas":
            expected, new = args[1], args[2]
            if (rec is None) != (expected is None) or (rec is not None and rec[0] != expected):
                return (), False
        elif kind == "st_cas_version":
            ver, new = args[1], args[2]
            if (0 if rec is None else rec[1]) != ver:
                return (), False
        else:
            new = args[1]
        if move_error(rec, new):
            return (InvalidTransition,), NOCHECK
        return (), (True if kind != "st_set" else NOCHECK)
    if kind == "st_define":
        rec = r.state.get(args[0])
        states = set(MACHINES[args[1]]) | {t for ts in MACHINES[args[1]].values() for t in ts}
        if rec is not None and not in_list(rec[0], states):
            return (InvalidTransition,), NOCHECK  # the current value is not among the machine's states
        return (), NOCHECK
    if kind == "tr_record":
        parent = args[4]
        if parent is not None and not any(t["id"] == parent for t in r.traces):
            return (InvalidArgument,), NOCHECK
        return (), NOCHECK
    return (), NOCHECK


class _NoCheck:
    def __repr__(self) -> str:
        return "NOCHECK"


NOCHECK = _NoCheck()


def apply(model: Model, p: Any, op: tuple) -> bool:
    """Run ``op`` on ``p`` (database or transaction) and on the model; check its result or error.

    Returns whether it succeeded.
    """
    errors, ret = expect(model, op)
    try:
        got = perform(p, op)
    except Exception as exc:  # noqa: BLE001 - compared with the model below
        assert errors and isinstance(exc, errors), f"{op}: raised {exc!r}; the model expected {errors or 'success'}"
        return False
    assert not errors, f"{op}: returned {got!r}; the model expected {errors}"
    _applied(model, op, got, ret)
    return True


def _applied(model: Model, op: tuple, got: Any, ret: Any) -> None:
    if ret is not NOCHECK:
        assert got == ret, f"{op}: returned {got!r}, model says {ret!r}"
    kind, run, *args = op
    r = model.runs[run]
    if kind == "kv_put":
        r.kv[args[0]] = args[1]
    elif kind == "kv_delete":
        r.kv.pop(args[0], None)
    elif kind == "ev_append":
        assert (got.run, got.seq, got.type, got.payload) == (run, len(r.events), args[0], args[1]), op
        assert got.prev_hash == (r.events[-1][2] if r.events else ZERO), op
        r.events.append((args[0], args[1], got.hash))
    elif kind in ("st_set", "st_cas", "st_cas_version"):
        if kind != "st_set" and not got:
            return
        new = args[-1]
        rec = r.state.get(args[0])
        version = 1 if rec is None else rec[1] + 1
        r.state[args[0]] = [new, version, None if rec is None else rec[2]]
        if kind == "st_set":
            assert (got.value, got.version) == (new, version), op
    elif kind == "st_define":
        rec = r.state.get(args[0])
        machine = {k: list(v) for k, v in MACHINES[args[1]].items()}
        if rec is None:
            r.state[args[0]] = [args[2], 1, machine]
        else:
            rec[2] = machine
        rec = r.state[args[0]]
        assert (got.value, got.version) == (rec[0], rec[1]), op
    elif kind == "tr_record":
        k, content, conf, alts, parent, tags = args
        assert all(got > t["id"] for t in r.traces), f"{op}: trace id {got} is not after the run's earlier ids"
        r.traces.append({"id": got, "kind": k, "content": content,
                         "confidence": None if conf is None else float(conf), "alternatives": tuple(alts),
                         "parent": parent, "tags": tuple(tags)})
    elif kind == "runs_tag":
        r.tags = list(dict.fromkeys([*r.tags, *args[0]]))
        assert got.tags == tuple(r.tags), op
    elif kind == "runs_set_metadata":
        r.metadata = {**r.metadata, **args[0]}
        assert got.metadata == r.metadata, op


# --- comparing the whole observable state ---------------------------------------------------------------


def trace_view(t: Any) -> dict:
    return {"id": t.id, "kind": t.kind, "content": t.content, "confidence": t.confidence,
            "alternatives": t.alternatives, "parent": t.parent, "tags": t.tags}


def model_tree(traces: list[dict], parent: str | None) -> list:
    return [(t["id"], model_tree(traces, t["id"])) for t in traces if t["parent"] == parent]


def real_tree(roots: Any) -> list:
    return [(t.id, real_tree(t.children)) for t in roots]


def compare(p: Any, model: Model, where: str) -> None:
    """Assert that everything ``p`` shows equals the model."""
    runs = list(model.runs)
    assert [i.id for i in p.runs.list()] == runs, where
    for rid, r in model.runs.items():
        w = f"{where}: run {rid}"
        info = p.runs.get(rid)
        assert (info.name, info.parent, info.status, info.tags, info.metadata) == (
            r.name, r.parent, r.status, tuple(r.tags), r.metadata), w
        assert info.counts == {"kv": len(r.kv), "events": len(r.events), "state": len(r.state),
                               "traces": len(r.traces)}, w
        assert (info.ended_at is None) == (r.status == "active"), w
        assert list(p.kv.scan(rid)) == sorted(r.kv.items(), key=lambda kv: kv[0].encode()), w
        for key in KEYS:
            assert p.kv.get(rid, key, NOCHECK) == r.kv.get(key, NOCHECK), w
        events = p.events.read(rid)
        assert [(e.seq, e.type, e.payload, e.hash) for e in events] == [
            (i, t, pl, h) for i, (t, pl, h) in enumerate(r.events)], w
        assert p.events.verify(rid) == len(r.events) == p.events.count(rid), w
        assert [e.seq for e in p.events.tail(rid, 2)] == list(range(len(r.events)))[-2:], w
        assert p.state.names(rid) == sorted(r.state), w
        for name in STATE_NAMES:
            s = p.state.get(rid, name)
            rec = r.state.get(name)
            assert (None if s is None else (s.value, s.version)) == (None if rec is None else (rec[0], rec[1])), (
                f"{w}: state {name}")
        traces = r.traces
        assert [trace_view(t) for t in p.traces.query(rid)] == traces, w
        for k in KINDS:
            assert [t.id for t in p.traces.query(rid, kind=k)] == [t["id"] for t in traces if t["kind"] == k], w
        for tag in TAGS:
            assert [t.id for t in p.traces.query(rid, tag=tag)] == [t["id"] for t in traces if tag in t["tags"]], w
        assert [t.id for t in p.traces.query(rid, min_confidence=0.5)] == [
            t["id"] for t in traces if t["confidence"] is not None and t["confidence"] >= 0.5], w
        assert [t.id for t in p.traces.query(rid, kind="thought", tag="t1", min_confidence=0.25)] == [
            t["id"] for t in traces if t["kind"] == "thought" and "t1" in t["tags"]
            and t["confidence"] is not None and t["confidence"] >= 0.25], w
        assert real_tree(p.traces.tree(rid)) == model_tree(traces, None), w
        for t in traces:
            assert [c.id for c in p.traces.children(rid, t["id"])] == [c["id"] for c in traces if c["parent"] == t["id"]]
        assert [i.id for i in p.runs.children(rid)] == [x for x, m in model.runs.items() if m.parent == rid], w
    for status in ("active", *STATUSES):
        assert [i.id for i in p.runs.list(status=status)] == [x for x, m in model.runs.items() if m.status == status], (
            f"{where}: list(status={status})")
    for tag in TAGS:
        assert [i.id for i in p.runs.list(tag=tag)] == [x for x, m in model.runs.items() if tag in m.tags], where
    for name in NAMES:
        if name is not None:
            assert [i.id for i in p.runs.list(name=name)] == [x for x, m in model.runs.items() if m.name == name], where
    assert [i.id for i in p.runs.list(limit=2)] == runs[:2], where
    assert [i.id for i in p.runs.list(status="active", limit=1)] == [
        x for x, m in model.runs.items() if m.status == "active"][:1], where


# --- the state machine ------------------------------------------------------------------------------------


class PrimitivesMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="inmem-model-")
        self.path = self.dir + "/db"
        self.model = Model()
        self.db: Database | None = None
        self.steps = 0

    @initialize(durability=st.sampled_from(["off", "strict", "batched"]), n_runs=st.integers(1, 3))
    def open_db(self, durability: str, n_runs: int) -> None:
        self.durability = durability
        self.db = Database.open(self.path, durability=durability)
        for i in range(n_runs):
            rid = self.db.begin_run(NAMES[i % len(NAMES)], tags=TAGS[:i])
            self.model.runs[rid] = RunModel(rid, NAMES[i % len(NAMES)], None, TAGS[:i], {})

    @rule(name=st.sampled_from(NAMES), data=st.data(), tags=st.lists(st.sampled_from(TAGS), max_size=2),
          metadata=st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3), max_size=2))
    def begin_run(self, name: str | None, data: Any, tags: list[str], metadata: dict) -> None:
        parent = None
        if self.model.runs and data.draw(st.booleans()):
            parent = data.draw(st.sampled_from(list(self.model.runs)))
        if data.draw(st.integers(0, 9)) == 0:
            try:
                self.db.begin_run(name, parent=UNKNOWN_RUN)
            except RunNotFound:
                pass
            else:
                raise AssertionError("begin_run with an unknown parent succeeded")
        rid = self.db.begin_run(name, parent=parent, tags=tags, metadata=metadata)
        assert rid not in self.model.runs and all(rid > r for r in self.model.runs)
        self.model.runs[rid] = RunModel(rid, name, parent, tags, metadata)

    @precondition(lambda self: sum(r.status == "active" for r in self.model.runs.values()) >= 2)
    @rule(data=st.data(), status=st.sampled_from(STATUSES))
    def end_run(self, data: Any, status: str) -> None:
        run = draw_run(data, self.model)
        errors = allowed_errors(self.model, run, write=True)
        try:
            self.db.end_run(run, status)
        except Exception as exc:  # noqa: BLE001
            assert errors and isinstance(exc, errors), f"end_run({run}): {exc!r}, model expected {errors}"
            return
        assert not errors, f"end_run({run}) succeeded; model expected {errors}"
        self.model.runs[run].status = status

    @rule(data=st.data(), n=st.integers(1, 4))
    def ops(self, data: Any, n: int) -> None:
        for _ in range(n):
            apply(self.model, self.db, draw_op(data, self.model))

    @rule(data=st.data())
    def op(self, data: Any) -> None:
        apply(self.model, self.db, draw_op(data, self.model))

    @rule(data=st.data(), n=st.integers(1, 6), ending=st.sampled_from(["commit", "commit", "rollback", "raise"]),
          look=st.booleans(), meanwhile=st.sampled_from([None, None, "end_run", "kv_put"]))
    def transaction(self, data: Any, n: int, ending: str, look: bool, meanwhile: str | None) -> None:
        """A batch of operations in one transaction; meanwhile, maybe, an autocommit ends a run or writes a key.

        Ending a run after the snapshot: the transaction still reads it as
        active but cannot write to it. A concurrent ``kv.put`` of a key the
        transaction wrote or deleted must make it conflict; any other
        concurrent write may (it conflicts if the transaction read or scanned
        that part of the run), and either way the outcome is all or nothing.
        """
        base = self.model  # what autocommits do meanwhile goes here at once
        shadow = base.copy()  # the transaction's view
        concurrent: list = []  # what happened meanwhile, to replay on the shadow if the transaction commits
        tx = self.db.transaction()
        must_conflict = False
        try:
            active = [r for r, m in base.runs.items() if m.status == "active"]
            if meanwhile == "end_run" and len(active) >= 2:
                victim = data.draw(st.sampled_from(active))
                self.db.end_run(victim, "completed")

                def ended(m: Model, victim: str = victim) -> None:
                    m.runs[victim].status = "completed"

                ended(base)
                concurrent.append(ended)
                shadow.live_closed.add(victim)
            written: set[tuple[str, str]] = set()
            for _ in range(n):
                op = draw_op(data, shadow)
                # a delete of an absent key writes nothing (it is a read): it conflicts only
                # if the transaction writes something else, so it is not a must-conflict write
                writes = op[0] == "kv_put" or (
                    op[0] == "kv_delete" and op[1] in shadow.runs and op[2] in shadow.runs[op[1]].kv)
                if apply(shadow, tx, op) and writes:
                    written.add((op[1], op[2]))
            if look:
                compare(tx, shadow, "inside a transaction")  # reads its own writes over its snapshot
            active = [r for r, m in base.runs.items() if m.status == "active"]
            if meanwhile == "kv_put" and active:
                run = data.draw(st.sampled_from(active))
                key = data.draw(st.sampled_from(KEYS))
                self.db.kv.put(run, key, "meanwhile")

                def put(m: Model, run: str = run, key: str = key) -> None:
                    m.runs[run].kv[key] = "meanwhile"

                put(base)
                concurrent.append(put)
                must_conflict = (run, key) in written
        except BaseException:
            if not tx.finished:
                tx.rollback()
            raise
        if ending == "commit":
            try:
                tx.commit()
            except TransactionConflict:
                assert concurrent, "a transaction conflicted with nothing committed meanwhile"
                return  # nothing of it was written: the model is base
            assert not must_conflict, "a transaction committed over a concurrent write of a key it wrote"
            shadow.live_closed.clear()
            for change in concurrent:
                change(shadow)
            self.model = shadow
        elif ending == "rollback":
            tx.rollback()
        else:
            try:
                with tx:
                    raise KeyboardInterrupt  # any exception, even a BaseException, rolls back
            except KeyboardInterrupt:
                pass
            assert tx.finished and tx.commit_version is None

    @rule()
    def snapshot(self) -> None:
        self.db.snapshot()

    @rule()
    def reopen(self) -> None:
        self.db.close()
        self.db = Database.open(self.path, durability=self.durability)
        compare(self.db, self.model, "after reopen")

    @invariant()
    def cheap_check(self) -> None:
        if self.db is not None:
            assert [i.id for i in self.db.runs.list()] == list(self.model.runs)

    def teardown(self) -> None:
        try:
            if self.db is not None and not self.db.closed:
                compare(self.db, self.model, "at the end")
                self.db.close()
                self.db = Database.open(self.path)
                compare(self.db, self.model, "at the end, reopened")
        finally:
            if self.db is not None:
                self.db.close()
            shutil.rmtree(self.dir, ignore_errors=True)


PrimitivesMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=70,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

TestPrimitivesModel = PrimitivesMachine.TestCase
