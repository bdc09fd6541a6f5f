"""The agent primitives' contracts: event log, state machines, trace store, run index.

Most tests run twice through the ``api`` fixture: once against ``db.<primitive>``
(each write its own atomic commit) and once against ``tx.<primitive>`` inside
an open transaction that is committed at teardown (and at every ``flush``).
Runs are begun and ended outside the transaction (``api.begin_run`` /
``api.end_run`` commit the open transaction first and start a fresh one).

Also here: durability across close/reopen (with and without a snapshot),
all-or-nothing transactions across runs and primitives, the event-log seq
conflict between two transactions, and tamper evidence of the hash chain.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal

import pytest

from inmem import (
    ChainBroken,
    Database,
    Event,
    InvalidArgument,
    InvalidTransition,
    InvalidValue,
    RunClosed,
    RunInfo,
    RunNotFound,
    State,
    Trace,
    TraceNotFound,
    TransactionConflict,
)
from inmem.primitives.events import Events, chain_hash
from inmem.testing import tamper_event_payload
from tests.conftest import dir_bytes

ZERO = bytes(16)
UTC = dt.timezone.utc


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def db(dbdir):
    d = Database.open(dbdir, durability="strict")
    yield d
    if not d.closed:
        d.close()


class Api:
    """``api.p`` is the database (mode "db") or the open transaction (mode "tx")."""

    def __init__(self, db: Database, mode: str):
        self.db = db
        self.mode = mode
        self.tx = db.transaction() if mode == "tx" else None

    @property
    def p(self):
        return self.db if self.tx is None else self.tx

    def flush(self) -> None:
        """Commit the open transaction (tx mode) and start another; a no-op in db mode."""
        if self.tx is not None:
            self.tx.commit()
            self.tx = self.db.transaction()

    def begin_run(self, *args, **kwargs) -> str:
        self.flush()
        run = self.db.begin_run(*args, **kwargs)
        self.flush()  # the new transaction's snapshot includes the run
        return run

    def end_run(self, run: str, status: str = "completed") -> None:
        self.flush()
        self.db.end_run(run, status)
        self.flush()

    def close(self) -> None:
        if self.tx is not None and not self.tx.finished:
            self.tx.commit()
        self.tx = None


@pytest.fixture(params=["db", "tx"])
def api(request, db):
    a = Api(db, request.param)
    yield a
    a.close()


def commit_version(db: Database) -> int:
    return db.stats()["commit_version"]


def info_fields(info: RunInfo) -> tuple:
    return (info.id, info.name, info.parent, info.status, info.tags, info.metadata, info.started_at,
            info.ended_at, info.first_version, info.last_version, info.counts)


def tree_shape(roots) -> list:
    return [(t.id, t.kind, tree_shape(t.children)) for t in roots]


def observe(p, runs) -> dict:
    """Everything the public API shows of ``runs`` through ``p`` (a database or a transaction)."""
    out = {}
    for r in runs:
        traces = p.traces.query(r)
        out[r] = {
            "info": info_fields(p.runs.get(r)),
            "kv": list(p.kv.scan(r)),
            "events": p.events.read(r),
            "count": p.events.count(r),
            "verify": p.events.verify(r),
            "state": {n: p.state.get(r, n) for n in p.state.names(r)},
            "traces": traces,
            "tree": tree_shape(p.traces.tree(r)),
            "children": [info.id for info in p.runs.children(r)],
        }
    out["list"] = [info_fields(i) for i in p.runs.list()]
    return out


# --- event log -----------------------------------------------------------------------------------


def test_event_seqs_count_up_from_zero_and_chain(api):
    run = api.begin_run("events")
    other = api.begin_run("other")
    before = dt.datetime.now(UTC)
    appended = []
    for i in range(6):
        appended.append(api.p.events.append(run, f"type{i % 2}", {"i": i, "text": "é日" * i}))
        api.p.events.append(other, "noise", i)  # another run's log has its own numbering
    for i, e in enumerate(appended):
        assert isinstance(e, Event)
        assert (e.run, e.seq, e.type, e.payload) == (run, i, f"type{i % 2}", {"i": i, "text": "é日" * i})
        assert isinstance(e.hash, bytes) and len(e.hash) == 16
        assert e.prev_hash == (ZERO if i == 0 else appended[i - 1].hash)
        ts_us = (e.ts - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(microseconds=1)
        assert e.hash == chain_hash(e.prev_hash, i, e.type, e.payload, ts_us)
        assert e.ts.tzinfo is not None and e.ts >= before - dt.timedelta(seconds=1)
    assert [e.ts for e in appended] == sorted(e.ts for e in appended)
    assert len({e.hash for e in appended}) == 6
    assert api.p.events.read(run) == appended  # reads its own writes in a transaction
    assert [e.seq for e in api.p.events.read(other)] == list(range(6))
    api.flush()
    assert api.db.events.read(run) == appended
    assert api.db.events.verify(run) == 6 and api.db.events.verify(other) == 6


def test_event_read_ranges_tail_count_verify(api):
    run = api.begin_run()
    empty = api.begin_run()
    assert api.p.events.read(empty) == [] and api.p.events.count(empty) == 0
    assert api.p.events.tail(empty, 3) == [] and api.p.events.verify(empty) == 0
    for i in range(10):
        api.p.events.append(run, "t", i)
    ev = api.p.events

    def seqs(events):
        return [e.seq for e in events]

    assert seqs(ev.read(run)) == list(range(10))
    assert seqs(ev.read(run, 3, 7)) == [3, 4, 5, 6]
    assert seqs(ev.read(run, 8)) == [8, 9]
    assert seqs(ev.read(run, 0, 100)) == list(range(10))
    assert ev.read(run, 20) == [] and ev.read(run, 5, 5) == [] and ev.read(run, 10) == []
    assert [e.payload for e in ev.read(run, 2, 4)] == [2, 3]
    assert seqs(ev.tail(run, 3)) == [7, 8, 9]
    assert ev.tail(run, 0) == []
    assert seqs(ev.tail(run, 100)) == list(range(10))
    assert ev.count(run) == 10 and ev.verify(run) == 10
    for call in (lambda: ev.read(run, -1), lambda: ev.read(run, 5, 3), lambda: ev.tail(run, -1)):
        with pytest.raises(InvalidArgument):
            call()
    api.flush()
    assert api.db.events.count(run) == 10 and api.db.events.verify(run) == 10


@pytest.mark.parametrize("bad_type", ["", None, 5, b"t"])
def test_event_type_must_be_a_non_empty_str(api, bad_type):
    run = api.begin_run()
    api.p.events.append(run, "ok")
    api.flush()
    v = commit_version(api.db)
    with pytest.raises(InvalidArgument):
        api.p.events.append(run, bad_type, 1)
    assert api.p.events.count(run) == 1
    api.flush()
    assert commit_version(api.db) == v


@pytest.mark.parametrize("payload", [object(), dt.datetime(2024, 1, 1), {1, object()}],
                         ids=["object", "naive-datetime", "set-of-object"])
def test_event_unencodable_payload_is_invalid_value_and_writes_nothing(api, payload):
    run = api.begin_run()
    api.p.events.append(run, "ok")
    api.flush()
    v = commit_version(api.db)
    with pytest.raises(InvalidValue):
        api.p.events.append(run, "bad", payload)
    e = api.p.events.append(run, "next")
    assert e.seq == 1  # the failed append took no seq
    api.flush()
    assert api.db.events.verify(run) == 2
    assert commit_version(api.db) == v + 1


def test_event_payloads_round_trip_and_verify_across_reopen(dbdir):
    payloads = [
        None, True, 0, -1, 2**70, -(2**70), 1.5, -0.0, 1e300, "", "é日本\U0001F600", b"\x00\xff",
        [1, [2, [3]]], (1, 2), {"b": 1, "a": [None, {"z": b"x"}]}, {1: "int key"},
        dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        dt.datetime(2024, 5, 6, 7, 8, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        Decimal("3.14159"), uuid.UUID(int=12345), {"x", "y"}, frozenset({1, 2}),
    ]
    with Database.open(dbdir, durability="strict") as db:
        run = db.begin_run()
        for p in payloads:
            db.events.append(run, "p", p)
        assert db.events.verify(run) == len(payloads)
    with Database.open(dbdir) as db:
        got = [e.payload for e in db.events.read(run)]
        expected = [list(p) if isinstance(p, tuple) else p for p in payloads]
        assert got == expected
        assert db.events.verify(run) == len(payloads)


def test_event_log_has_no_update_or_delete(api):
    run = api.begin_run()
    api.p.events.append(run, "t", 1)
    for name in ("update", "delete", "put", "set", "remove", "pop", "insert", "replace", "truncate",
                 "clear", "rewrite", "edit", "__setitem__", "__delitem__"):
        assert not hasattr(Events, name), name
        assert not hasattr(api.p.events, name), name
    public = {n for n in dir(api.p.events) if not n.startswith("_")}
    assert public == {"append", "read", "tail", "count", "verify"}


def test_events_appended_in_one_transaction_take_consecutive_seqs(db):
    run, other = db.begin_run(), db.begin_run()
    first = [db.events.append(run, "before", i) for i in range(2)]
    with db.transaction() as tx:
        mine = []
        for i in range(4):
            mine.append(tx.events.append(run, "in-tx", i))
            tx.events.append(other, "other", i)
        assert [e.seq for e in mine] == [2, 3, 4, 5]
        assert mine[0].prev_hash == first[-1].hash
        assert all(mine[i].prev_hash == mine[i - 1].hash for i in range(1, 4))
        assert tx.events.count(run) == 6 and db.events.count(run) == 2  # not visible outside yet
        assert tx.events.verify(run) == 6
    assert db.events.read(run) == first + mine
    assert db.events.verify(run) == 6 and db.events.verify(other) == 4
    assert db.events.append(run, "after").seq == 6


def test_two_transactions_appending_to_one_log_one_conflicts(db):
    run, other = db.begin_run(), db.begin_run()
    db.events.append(run, "base")
    tx1, tx2 = db.transaction(), db.transaction()
    e1 = tx1.events.append(run, "a", 1)
    e2 = tx2.events.append(run, "b", 2)
    assert e1.seq == e2.seq == 1  # both computed the same next seq from their snapshots
    tx1.commit()
    with pytest.raises(TransactionConflict):
        tx2.commit()
    assert [(e.seq, e.type) for e in db.events.read(run)] == [(0, "base"), (1, "a")]
    assert db.events.verify(run) == 2

    # an autocommit append between a transaction's read of the log's end and its commit conflicts too
    tx3 = db.transaction()
    tx3.events.append(run, "c")
    db.events.append(run, "d")
    with pytest.raises(TransactionConflict):
        tx3.commit()
    assert [e.type for e in db.events.read(run)] == ["base", "a", "d"] and db.events.verify(run) == 3

    # appends to different runs do not conflict
    tx4, tx5 = db.transaction(), db.transaction()
    tx4.events.append(run, "x")
    tx5.events.append(other, "y")
    tx4.commit()
    tx5.commit()
    assert db.events.count(run) == 4 and db.events.count(other) == 1


@pytest.mark.parametrize("seq", [0, 2, 4])
def test_tampered_payload_breaks_the_chain_at_that_seq(dbdir, seq):
    db = Database.open(dbdir, durability="strict")
    run, other = db.begin_run(), db.begin_run()
    for i in range(5):
        db.events.append(run, "t", {"i": i})
        db.events.append(other, "t", i)
    tamper_event_payload(db, run, seq, {"i": seq})  # the same payload: still intact
    assert db.events.verify(run) == 5
    tamper_event_payload(db, run, seq, {"i": "forged"})
    with pytest.raises(ChainBroken) as info:
        db.events.verify(run)
    assert info.value.run == run and info.value.seq == seq
    with db.transaction() as tx:
        with pytest.raises(ChainBroken) as info:
            tx.events.verify(run)
        assert info.value.seq == seq
    assert db.events.read(run)[seq].payload == {"i": "forged"}
    assert db.events.verify(other) == 5  # other runs are unaffected
    db.close()
    with Database.open(dbdir) as db:  # the hook changed memory only: the WAL restores the truth
        assert db.events.verify(run) == 5
        assert db.events.read(run)[seq].payload == {"i": seq}


# --- state machines ------------------------------------------------------------------------------


def test_state_get_set_and_versions(api):
    run = api.begin_run()
    assert api.p.state.get(run, "s") is None and api.p.state.names(run) == []
    s1 = api.p.state.set(run, "s", "a")
    assert isinstance(s1, State) and (s1.value, s1.version) == ("a", 1)
    assert s1.updated_at.tzinfo is not None
    s2 = api.p.state.set(run, "s", {"nested": [1, 2]})
    assert (s2.value, s2.version) == ({"nested": [1, 2]}, 2) and s2.updated_at >= s1.updated_at
    assert api.p.state.set(run, "s", {"nested": [1, 2]}).version == 3  # even an unchanged value counts
    api.p.state.set(run, "b", None)
    api.p.state.set(run, "é", 0)
    assert api.p.state.get(run, "s") == State({"nested": [1, 2]}, 3, api.p.state.get(run, "s").updated_at)
    assert api.p.state.get(run, "b").value is None and api.p.state.get(run, "b").version == 1
    assert api.p.state.names(run) == ["b", "s", "é"]
    api.flush()
    assert api.db.state.get(run, "s").version == 3 and api.db.state.names(run) == ["b", "s", "é"]


def test_state_cas(api):
    run = api.begin_run()
    st = api.p.state
    assert st.cas(run, "lock", None, "held:a") is True  # None: only if absent
    assert st.get(run, "lock").version == 1
    assert st.cas(run, "lock", None, "held:b") is False  # present now
    assert st.cas(run, "lock", "held:b", "x") is False  # wrong expected value
    assert (st.get(run, "lock").value, st.get(run, "lock").version) == ("held:a", 1)
    assert st.cas(run, "lock", "held:a", "free") is True
    assert (st.get(run, "lock").value, st.get(run, "lock").version) == ("free", 2)
    # a state holding None is present: expected=None does not match it
    st.set(run, "n", None)
    assert st.cas(run, "n", None, 1) is False
    assert st.get(run, "n").version == 1
    # values compare by equality
    st.set(run, "d", {"a": [1, 2]})
    assert st.cas(run, "d", {"a": [1, 2]}, {"a": [3]}) is True and st.get(run, "d").version == 2
    api.flush()
    assert api.db.state.get(run, "lock").value == "free" and api.db.state.get(run, "d").value == {"a": [3]}


def test_state_cas_version(api):
    run = api.begin_run()
    st = api.p.state
    assert st.cas_version(run, "v", 1, "x") is False  # absent is version 0
    assert st.get(run, "v") is None
    assert st.cas_version(run, "v", 0, "a") is True
    assert st.cas_version(run, "v", 0, "b") is False
    assert st.cas_version(run, "v", 1, "b") is True
    assert st.cas_version(run, "v", 1, "stale") is False
    assert st.cas_version(run, "v", 3, "future") is False
    assert (st.get(run, "v").value, st.get(run, "v").version) == ("b", 2)
    api.flush()
    assert api.db.state.get(run, "v").version == 2


@pytest.mark.parametrize("name", ["", None, 5, b"n"])
def test_state_name_must_be_a_non_empty_str(api, name):
    run = api.begin_run()
    for call in (lambda: api.p.state.get(run, name), lambda: api.p.state.set(run, name, 1),
                 lambda: api.p.state.cas(run, name, None, 1), lambda: api.p.state.cas_version(run, name, 0, 1),
                 lambda: api.p.state.define(run, name, transitions={"a": []}, initial="a")):
        with pytest.raises(InvalidArgument):
            call()
    assert api.p.state.names(run) == []


def test_state_unencodable_value_writes_nothing(api):
    run = api.begin_run()
    api.p.state.set(run, "s", 1)
    with pytest.raises(InvalidValue):
        api.p.state.set(run, "s", object())
    with pytest.raises(InvalidValue):
        api.p.state.cas(run, "s", 1, object())
    assert api.p.state.get(run, "s").value == 1 and api.p.state.get(run, "s").version == 1


MACHINE = {"pending": ["claimed"], "claimed": ["done", "pending"]}


def test_define_and_declared_transitions(api):
    run = api.begin_run()
    st = api.p.state
    s = st.define(run, "job", transitions=MACHINE, initial="pending")
    assert (s.value, s.version) == ("pending", 1)
    assert st.set(run, "job", "claimed").version == 2
    assert st.set(run, "job", "pending").version == 3
    assert st.cas(run, "job", "pending", "claimed") is True
    assert st.cas_version(run, "job", 4, "done") is True
    assert (st.get(run, "job").value, st.get(run, "job").version) == ("done", 5)
    # "done" is terminal: every move is refused and nothing changes
    for call in (lambda: st.set(run, "job", "pending"), lambda: st.set(run, "job", "done"),
                 lambda: st.cas(run, "job", "done", "claimed"), lambda: st.cas_version(run, "job", 5, "pending")):
        with pytest.raises(InvalidTransition):
            call()
    assert (st.get(run, "job").value, st.get(run, "job").version) == ("done", 5)
    # a cas whose expectation does not hold returns False before any transition check
    assert st.cas(run, "job", "pending", "bogus") is False
    assert st.cas_version(run, "job", 1, "bogus") is False
    # redefining keeps the current value and version when the value is among the new states
    s = st.define(run, "job", transitions={"done": ["archived"]}, initial="done")
    assert (s.value, s.version) == ("done", 5)
    assert st.set(run, "job", "archived").version == 6
    # redefinition that does not name the current value is refused
    with pytest.raises(InvalidTransition):
        st.define(run, "job", transitions={"a": ["b"]}, initial="a")
    assert st.get(run, "job").value == "archived"
    # a plain state can be put under a machine that names its value
    st.set(run, "plain", "claimed")
    s = st.define(run, "plain", transitions=MACHINE, initial="pending")
    assert (s.value, s.version) == ("claimed", 1)
    with pytest.raises(InvalidTransition):
        st.set(run, "plain", "archived")
    api.flush()
    assert api.db.state.get(run, "job").value == "archived" and api.db.state.get(run, "plain").value == "claimed"


@pytest.mark.parametrize("transitions, initial", [
    ({"a": ["b"]}, "z"),           # initial not a declared state
    (["a", "b"], "a"),             # not a dict
    ({"a": "b"}, "a"),             # targets not a list
])
def test_define_rejects_bad_machines(api, transitions, initial):
    run = api.begin_run()
    with pytest.raises(InvalidArgument):
        api.p.state.define(run, "m", transitions=transitions, initial=initial)
    assert api.p.state.get(run, "m") is None


def test_machines_over_non_str_states(api):
    run = api.begin_run()
    st = api.p.state
    assert st.define(run, "n", transitions={1: [2], 2: [3]}, initial=1).value == 1
    assert st.set(run, "n", 2).version == 2
    with pytest.raises(InvalidTransition):
        st.set(run, "n", 1)
    assert st.cas(run, "n", 2, 3) is True
    with pytest.raises(InvalidTransition):
        st.set(run, "n", 4)
    assert (st.get(run, "n").value, st.get(run, "n").version) == (3, 3)


def test_define_over_a_state_holding_an_unhashable_value_is_invalid_transition(api):
    """A state holding a dict is not among any machine's (hashable) states: InvalidTransition, nothing written."""
    run = api.begin_run()
    api.p.state.set(run, "s", {"a": 1})
    with pytest.raises(InvalidTransition):
        api.p.state.define(run, "s", transitions=MACHINE, initial="pending")
    assert (api.p.state.get(run, "s").value, api.p.state.get(run, "s").version) == ({"a": 1}, 1)
    assert api.p.state.set(run, "s", "anything").version == 2  # still no machine


def test_define_with_an_unhashable_initial_is_invalid_argument(api):
    run = api.begin_run()
    with pytest.raises(InvalidArgument):
        api.p.state.define(run, "s", transitions=MACHINE, initial=["pending"])
    assert api.p.state.get(run, "s") is None


@pytest.mark.parametrize("mode", ["db", "tx"])
def test_invalid_transition_writes_nothing(dbdir, mode):
    db = Database.open(dbdir, durability="strict")
    run = db.begin_run()
    db.state.define(run, "job", transitions=MACHINE, initial="pending")
    db.state.set(run, "job", "claimed")
    db.kv.put(run, "k", 1)
    before_state = db.state.get(run, "job")
    before_bytes = dir_bytes(dbdir)
    before_version = commit_version(db)
    p = db if mode == "db" else db.transaction()
    for call in (lambda: p.state.set(run, "job", "nowhere"),
                 lambda: p.state.cas(run, "job", "claimed", "nowhere"),
                 lambda: p.state.cas_version(run, "job", 2, "nowhere")):
        with pytest.raises(InvalidTransition):
            call()
        assert p.state.get(run, "job") == before_state
    if mode == "tx":
        assert p.read_only
        p.commit()
        assert p.commit_version is None
    assert commit_version(db) == before_version
    assert db.state.get(run, "job") == before_state
    db.sync()
    assert dir_bytes(dbdir) == before_bytes
    db.close()
    with Database.open(dbdir) as db:
        assert db.state.get(run, "job") == before_state


# --- trace store ---------------------------------------------------------------------------------


def test_trace_record_and_get(api):
    run = api.begin_run()
    tid = api.p.traces.record(run, "thought", {"text": "maybe"}, confidence=0.75,
                              alternatives=["a", {"b": 2}], tags=["plan", "x"])
    assert str(uuid.UUID(tid)) == tid and uuid.UUID(tid).version == 7
    t = api.p.traces.get(run, tid)
    assert isinstance(t, Trace)
    assert (t.id, t.run, t.kind, t.content, t.confidence, t.alternatives, t.parent, t.tags) == (
        tid, run, "thought", {"text": "maybe"}, 0.75, ("a", {"b": 2}), None, ("plan", "x"))
    assert t.ts.tzinfo is not None
    bare = api.p.traces.get(run, api.p.traces.record(run, "obs", None))
    assert (bare.confidence, bare.alternatives, bare.parent, bare.tags, bare.content) == (None, (), None, (), None)
    ids = [api.p.traces.record(run, "step", i) for i in range(20)]
    assert ids == sorted(ids)  # time-ordered ids
    assert [t.id for t in api.p.traces.query(run)] == [tid, bare.id, *ids]
    api.flush()
    assert api.db.traces.get(run, tid) == t


@pytest.mark.parametrize("bad", [-0.1, 1.1, math.nan, math.inf, -math.inf, "high", True, False, [0.5]],
                         ids=repr)
def test_trace_confidence_outside_0_1_is_rejected(api, bad):
    run = api.begin_run()
    with pytest.raises(InvalidArgument) as info:
        api.p.traces.record(run, "k", "c", confidence=bad)
    assert isinstance(info.value, ValueError)
    assert api.p.traces.query(run) == []


def test_trace_confidence_bounds_are_accepted(api):
    run = api.begin_run()
    got = []
    for c in (0, 1, 0.0, 1.0, 0.5, None):
        got.append(api.p.traces.get(run, api.p.traces.record(run, "k", "c", confidence=c)).confidence)
    assert got == [0.0, 1.0, 0.0, 1.0, 0.5, None]
    assert all(type(c) is float for c in got[:5])


def test_trace_argument_errors_record_nothing(api):
    run = api.begin_run()
    for kwargs, error in [
        (dict(kind="", content=1), InvalidArgument),
        (dict(kind=5, content=1), InvalidArgument),
        (dict(kind="k", content=1, tags="abc"), InvalidArgument),
        (dict(kind="k", content=1, tags=["a", 1]), InvalidArgument),
        (dict(kind="k", content=object()), InvalidValue),
        (dict(kind="k", content=1, alternatives=[object()]), InvalidValue),
    ]:
        with pytest.raises(error):
            api.p.traces.record(run, **kwargs)
    assert api.p.traces.query(run) == []


def test_trace_query_filters(api):
    run = api.begin_run()
    rec = api.p.traces.record
    a = rec(run, "thought", 1, confidence=0.9, tags=["plan"])
    b = rec(run, "action", 2, confidence=0.4, tags=["plan", "tool"])
    c = rec(run, "thought", 3, tags=["tool"])
    d = rec(run, "thought", 4, confidence=0.5)
    e = rec(run, "observation", 5, confidence=1)
    q = api.p.traces.query

    def ids(ts):
        return [t.id for t in ts]

    assert ids(q(run)) == [a, b, c, d, e]
    assert ids(q(run, kind="thought")) == [a, c, d]
    assert ids(q(run, kind="none")) == []
    assert ids(q(run, tag="plan")) == [a, b]
    assert ids(q(run, tag="tool")) == [b, c]
    assert ids(q(run, min_confidence=0.5)) == [a, d, e]  # no confidence never matches a minimum
    assert ids(q(run, min_confidence=0)) == [a, b, d, e]
    assert ids(q(run, kind="thought", tag="plan")) == [a]
    assert ids(q(run, kind="thought", min_confidence=0.6)) == [a]
    assert ids(q(run, kind="action", tag="plan", min_confidence=0.5)) == []
    api.flush()
    assert ids(api.db.traces.query(run, tag="tool")) == [b, c]


def test_trace_children_and_tree(api):
    run = api.begin_run()
    rec = api.p.traces.record
    a = rec(run, "goal", "a")
    b = rec(run, "step", "b", parent=a)
    c = rec(run, "step", "c", parent=a)
    d = rec(run, "step", "d", parent=b)
    e = rec(run, "goal", "e")
    f = rec(run, "step", "f", parent=e)
    assert api.p.traces.get(run, b).parent == a
    assert [t.id for t in api.p.traces.children(run, a)] == [b, c]
    assert [t.id for t in api.p.traces.children(run, b)] == [d]
    assert api.p.traces.children(run, d) == []
    assert tree_shape(api.p.traces.tree(run)) == [
        (a, "goal", [(b, "step", [(d, "step", [])]), (c, "step", [])]),
        (e, "goal", [(f, "step", [])]),
    ]
    with pytest.raises(TraceNotFound):
        api.p.traces.children(run, str(uuid.uuid4()))
    api.flush()
    assert tree_shape(api.db.traces.tree(run))[0][0] == a


def test_trace_parent_must_be_a_trace_of_the_same_run(api):
    run, other = api.begin_run(), api.begin_run()
    foreign = api.p.traces.record(other, "k", "in other run")
    for parent in (foreign, str(uuid.uuid4())):
        with pytest.raises(InvalidArgument):
            api.p.traces.record(run, "k", "c", parent=parent)
    assert api.p.traces.query(run) == []


def test_trace_parent_that_is_not_a_trace_id_is_invalid_argument(api):
    """The documented error for a parent that is no trace of the run is InvalidArgument, whatever its form."""
    run = api.begin_run()
    api.p.traces.record(run, "k", "root")
    with pytest.raises(InvalidArgument):
        api.p.traces.record(run, "k", "c", parent="not-a-trace-id")
    assert len(api.p.traces.query(run)) == 1


def test_every_trace_appears_in_the_tree_once(api):
    """A parent given in another spelling of the same id (upper case) still links the child to it."""
    run = api.begin_run()
    root = api.p.traces.record(run, "k", "root")
    try:
        child = api.p.traces.record(run, "k", "child", parent=root.upper())
    except InvalidArgument:
        return  # rejecting the spelling is fine too
    flat = []

    def walk(ts):
        for t in ts:
            flat.append(t.id)
            walk(t.children)

    walk(api.p.traces.tree(run))
    assert sorted(flat) == sorted([root, child])
    assert [t.id for t in api.p.traces.children(run, root)] == [child]


def test_trace_not_found(api):
    run, other = api.begin_run(), api.begin_run()
    tid = api.p.traces.record(other, "k", "c")
    for trace_id in (str(uuid.uuid4()), tid, "garbage", ""):
        with pytest.raises(TraceNotFound) as info:
            api.p.traces.get(run, trace_id)
        assert isinstance(info.value, KeyError)
    assert api.p.traces.get(other, tid).id == tid


# --- run index ------------------------------------------------------------------------------------


def test_run_get_fields(api):
    parent = api.begin_run("parent")
    before = dt.datetime.now(UTC)
    run = api.begin_run("worker", parent=parent, tags=["a", "b"], metadata={"model": "x", "n": 1})
    info = api.p.runs.get(run)
    assert isinstance(info, RunInfo)
    assert (info.id, info.name, info.parent, info.status, info.tags, info.metadata) == (
        run, "worker", parent, "active", ("a", "b"), {"model": "x", "n": 1})
    assert info.ended_at is None and info.started_at.tzinfo is not None
    assert before - dt.timedelta(seconds=1) <= info.started_at <= dt.datetime.now(UTC)
    assert info.counts == {"kv": 0, "events": 0, "state": 0, "traces": 0}
    assert 1 <= info.first_version <= info.last_version
    assert api.p.runs.get(parent).first_version < info.first_version
    bare = api.p.runs.get(parent)
    assert (bare.name, bare.parent, bare.tags, bare.metadata) == ("parent", None, (), {})


def test_run_counts_and_versions(api):
    run = api.begin_run()
    other = api.begin_run()
    p = api.p
    for i in range(3):
        p.kv.put(run, f"k{i}", i)
    for i in range(2):
        p.events.append(run, "e", i)
    for i in range(4):
        p.state.set(run, f"s{i}", i)
    p.traces.record(run, "t", 1)
    p.kv.put(other, "x", 1)
    assert p.runs.get(run).counts == {"kv": 3, "events": 2, "state": 4, "traces": 1}
    p.kv.delete(run, "k0")
    p.kv.put(run, "k1", "overwritten")
    assert p.runs.get(run).counts == {"kv": 2, "events": 2, "state": 4, "traces": 1}
    assert p.runs.get(other).counts == {"kv": 1, "events": 0, "state": 0, "traces": 0}
    api.flush()
    info = api.db.runs.get(run)
    assert info.counts == {"kv": 2, "events": 2, "state": 4, "traces": 1}
    assert info.first_version <= info.last_version
    # last_version is the newest commit among the run's entries
    api.db.kv.put(run, "fresh", 1)
    assert api.db.runs.get(run).last_version == commit_version(api.db)
    assert api.db.runs.get(other).last_version < commit_version(api.db)


def test_run_set_metadata_and_tag(api):
    run = api.begin_run(tags=["x"], metadata={"a": 1, "b": 2})
    info = api.p.runs.set_metadata(run, b=3, c={"deep": [1]})
    assert info.metadata == {"a": 1, "b": 3, "c": {"deep": [1]}}
    info = api.p.runs.tag(run, "y", "x", "z", "y")
    assert info.tags == ("x", "y", "z")
    assert api.p.runs.tag(run).tags == ("x", "y", "z")
    with pytest.raises(InvalidArgument):
        api.p.runs.tag(run, "ok", 5)
    with pytest.raises(InvalidValue):
        api.p.runs.set_metadata(run, bad=object())
    got = api.p.runs.get(run)
    assert got.metadata == {"a": 1, "b": 3, "c": {"deep": [1]}} and got.tags == ("x", "y", "z")
    api.flush()
    got = api.db.runs.get(run)
    assert got.metadata == {"a": 1, "b": 3, "c": {"deep": [1]}} and got.tags == ("x", "y", "z")
    assert [i.id for i in api.db.runs.list(tag="z")] == [run]


def test_run_info_returned_by_set_metadata_and_tag_is_the_committed_one(db):
    """``db.runs.set_metadata``/``tag`` return the run's RunInfo: the same as a ``get`` right after."""
    run = db.begin_run("r")
    for change in (lambda: db.runs.set_metadata(run, a=1), lambda: db.runs.tag(run, "t")):
        returned = change()
        got = db.runs.get(run)
        assert returned.first_version <= returned.last_version
        assert info_fields(returned) == info_fields(got)
        assert got.last_version == commit_version(db)


def test_runs_list_filters(api):
    db = api.db
    a = api.begin_run("alpha", tags=["t1"])
    b = api.begin_run("beta", tags=["t1", "t2"], parent=a)
    c = api.begin_run("alpha", parent=a)
    d = api.begin_run("gamma", tags=["t2"], parent=b)
    e = api.begin_run(None)
    api.end_run(b, "completed")
    api.end_run(c, "failed")
    api.end_run(e, "cancelled")
    lst = api.p.runs.list

    def ids(infos):
        return [i.id for i in infos]

    assert ids(lst()) == [a, b, c, d, e]
    assert ids(lst(status="active")) == [a, d]
    assert ids(lst(status="completed")) == [b]
    assert ids(lst(status="failed")) == [c]
    assert ids(lst(status="cancelled")) == [e]
    assert ids(lst(tag="t1")) == [a, b]
    assert ids(lst(tag="t2")) == [b, d]
    assert ids(lst(tag="none")) == []
    assert ids(lst(parent=a)) == [b, c]
    assert ids(lst(parent=d)) == []
    assert ids(lst(name="alpha")) == [a, c]
    assert ids(lst(started_after=db.runs.get(b).started_at)) == [c, d, e]
    assert ids(lst(started_after=db.runs.get(e).started_at)) == []
    assert ids(lst(started_after=dt.datetime(2000, 1, 1, tzinfo=UTC))) == [a, b, c, d, e]
    assert ids(lst(limit=0)) == []
    assert ids(lst(limit=2)) == [a, b]
    assert ids(lst(limit=10)) == [a, b, c, d, e]
    assert ids(lst(tag="t2", limit=1)) == [b]
    assert ids(lst(status="active", tag="t2")) == [d]
    assert ids(lst(parent=a, status="failed", name="alpha")) == [c]
    assert [i.status for i in lst()] == ["active", "completed", "failed", "active", "cancelled"]
    assert all(i.ended_at is not None for i in lst(status="failed"))
    for kwargs in (dict(status="running"), dict(limit=-1), dict(limit=1.5)):
        with pytest.raises(InvalidArgument):
            lst(**kwargs)
    assert ids(api.p.runs.children(a)) == [b, c]
    assert ids(api.p.runs.children(b)) == [d]
    assert ids(api.p.runs.children(e)) == []


def test_transaction_runs_list_reads_its_snapshot(db):
    """A transaction's ``runs.list(status=...)`` agrees with its ``runs.get``: both read the snapshot."""
    run = db.begin_run("r")
    with db.transaction() as tx:
        assert tx.runs.get(run).status == "active"
        db.end_run(run)
        assert tx.runs.get(run).status == "active"  # the snapshot
        assert [(i.id, i.status) for i in tx.runs.list()] == [(run, "active")]
        assert [i.id for i in tx.runs.list(status="active")] == [run]
        assert tx.runs.list(status="completed") == []


def test_begin_and_end_run_errors(db):
    run = db.begin_run()
    for kwargs, error in [
        (dict(name=5), InvalidArgument),
        (dict(tags="abc"), InvalidArgument),
        (dict(tags=["a", 1]), InvalidArgument),
        (dict(parent=str(uuid.uuid4())), RunNotFound),
        (dict(parent="nope"), RunNotFound),
        (dict(metadata=[1]), InvalidValue),
        (dict(metadata={"x": object()}), InvalidValue),
    ]:
        with pytest.raises(error):
            db.begin_run(**kwargs)
    assert [i.id for i in db.runs.list()] == [run]
    with pytest.raises(InvalidArgument):
        db.end_run(run, "done")
    db.end_run(run, "failed")
    with pytest.raises(RunClosed):
        db.end_run(run)
    assert db.runs.get(run).status == "failed"


# --- ended and unknown runs ---------------------------------------------------------------------


def _populate(p, run):
    p.kv.put(run, "k", "v")
    p.events.append(run, "e", 1)
    p.state.define(run, "m", transitions=MACHINE, initial="pending")
    p.state.set(run, "s", 1)
    return p.traces.record(run, "t", "c", tags=["x"])


def _writes(p, run, tid):
    return {
        "kv.put": lambda: p.kv.put(run, "k", "w"),
        "kv.put-new": lambda: p.kv.put(run, "new", "w"),
        "kv.delete": lambda: p.kv.delete(run, "k"),
        "kv.delete-missing": lambda: p.kv.delete(run, "missing"),
        "events.append": lambda: p.events.append(run, "e", 2),
        "state.set": lambda: p.state.set(run, "s", 2),
        "state.set-new": lambda: p.state.set(run, "new", 2),
        "state.cas": lambda: p.state.cas(run, "s", 1, 2),
        "state.cas-miss": lambda: p.state.cas(run, "s", 99, 2),
        "state.cas_version": lambda: p.state.cas_version(run, "s", 1, 2),
        "state.define": lambda: p.state.define(run, "m2", transitions=MACHINE, initial="pending"),
        "state.move": lambda: p.state.set(run, "m", "claimed"),
        "traces.record": lambda: p.traces.record(run, "t", "c"),
        "traces.record-child": lambda: p.traces.record(run, "t", "c", parent=tid),
        "runs.set_metadata": lambda: p.runs.set_metadata(run, a=1),
        "runs.tag": lambda: p.runs.tag(run, "y"),
    }


def _reads(p, run, tid):
    return {
        "kv.get": lambda: p.kv.get(run, "k"),
        "kv.scan": lambda: list(p.kv.scan(run)),
        "events.read": lambda: p.events.read(run),
        "events.tail": lambda: p.events.tail(run, 1),
        "events.count": lambda: p.events.count(run),
        "events.verify": lambda: p.events.verify(run),
        "state.get": lambda: p.state.get(run, "s"),
        "state.names": lambda: p.state.names(run),
        "traces.get": lambda: p.traces.get(run, tid),
        "traces.query": lambda: p.traces.query(run),
        "traces.children": lambda: p.traces.children(run, tid),
        "traces.tree": lambda: p.traces.tree(run),
        "runs.get": lambda: p.runs.get(run),
        "runs.children": lambda: p.runs.children(run),
    }


def test_ended_run_is_read_only_for_every_primitive(api):
    run = api.begin_run("r")
    tid = _populate(api.p, run)
    api.flush()
    before = observe(api.db, [run])
    api.end_run(run, "completed")
    v = commit_version(api.db)
    for what, call in _writes(api.p, run, tid).items():
        with pytest.raises(RunClosed):
            call()
            pytest.fail(f"{what} wrote to an ended run")
    with pytest.raises(RunClosed):
        api.db.end_run(run)
    with pytest.raises(RunClosed):
        api.db.kv.put(run, "k", "w")
    reads = {what: call() for what, call in _reads(api.p, run, tid).items()}
    assert reads["kv.get"] == "v" and reads["events.count"] == 1 and reads["events.verify"] == 1
    assert reads["state.get"].value == 1 and reads["state.names"] == ["m", "s"]
    assert reads["traces.get"].id == tid and reads["runs.get"].status == "completed"
    assert reads["runs.get"].ended_at is not None
    api.flush()
    assert commit_version(api.db) == v
    after = observe(api.db, [run])
    assert after[run]["kv"] == before[run]["kv"] and after[run]["events"] == before[run]["events"]
    assert after[run]["state"] == before[run]["state"] and after[run]["traces"] == before[run]["traces"]
    # a transaction that only failed on the ended run commits nothing
    with api.db.transaction() as tx:
        with pytest.raises(RunClosed):
            tx.events.append(run, "e")
    assert tx.commit_version is None


@pytest.mark.parametrize("unknown", ["fresh-uuid", "not-a-run-id", "int"])
def test_unknown_run_raises_run_not_found_everywhere(api, unknown):
    real = api.begin_run()
    tid = api.p.traces.record(real, "t", "c")
    run = {"fresh-uuid": str(uuid.UUID(int=(0x017F << 116) | (7 << 76) | (2 << 62) | 99)),
           "not-a-run-id": "run-42", "int": 42}[unknown]
    calls = {**_writes(api.p, run, tid), **_reads(api.p, run, tid)}
    calls["db.end_run"] = lambda: api.db.end_run(run)
    calls["db.begin_run(parent)"] = lambda: api.db.begin_run(parent=run)
    for what, call in calls.items():
        with pytest.raises(RunNotFound) as info:
            call()
            pytest.fail(f"{what} did not raise")
        assert isinstance(info.value, KeyError), what
    assert [i.id for i in api.p.runs.list()] == [real]


# --- durability ------------------------------------------------------------------------------------


def _build_world(db):
    parent = db.begin_run("parent", tags=["p"], metadata={"goal": "test"})
    child = db.begin_run("child", parent=parent, tags=["c"])
    done = db.begin_run("done")
    for run in (parent, child, done):
        for i in range(5):
            db.events.append(run, f"e{i % 2}", {"i": i, "run": run})
            db.kv.put(run, f"k{i}", [i, "é日"])
        db.kv.delete(run, "k2")
        db.state.define(run, "job", transitions=MACHINE, initial="pending")
        db.state.set(run, "job", "claimed")
        db.state.cas(run, "lock", None, "mine")
        db.state.cas_version(run, "lock", 1, "released")
        root = db.traces.record(run, "goal", "root", confidence=1, tags=["g"])
        kid = db.traces.record(run, "step", {"x": 1}, confidence=0.25, alternatives=["alt"], parent=root)
        db.traces.record(run, "step", "grandchild", parent=kid)
    db.runs.set_metadata(parent, round=2)
    db.runs.tag(child, "extra")
    with db.transaction() as tx:  # a multi-run transaction among the history
        tx.events.append(parent, "tx", 1)
        tx.state.set(child, "job", "done")
        tx.traces.record(done, "tx", "t")
        tx.kv.put(parent, "tx", True)
    db.end_run(done, "failed")
    return [parent, child, done]


@pytest.mark.parametrize("when", ["plain", "snapshot", "snapshot-then-more", "two-snapshots"])
def test_everything_survives_close_and_reopen(dbdir, when):
    db = Database.open(dbdir, durability="batched")
    runs = _build_world(db)
    if when != "plain":
        db.snapshot()
    if when in ("snapshot-then-more", "two-snapshots"):
        db.events.append(runs[0], "after-snapshot", 1)
        db.state.set(runs[1], "after", 1)
        db.traces.record(runs[0], "after", 1)
        db.runs.tag(runs[0], "late")
        db.kv.delete(runs[0], "k0")
        db.end_run(runs[1], "cancelled")
    if when == "two-snapshots":
        db.snapshot()
        db.kv.put(runs[0], "final", 1)
    before = observe(db, runs)
    version = commit_version(db)
    db.close()
    for _ in range(2):  # reopen twice: recovery is idempotent
        db = Database.open(dbdir, durability="strict")
        snap = db.stats()["recovery"]["snapshot"]
        assert (snap is None) == (when == "plain"), snap  # the snapshot variants really load one
        assert commit_version(db) == version
        assert observe(db, runs) == before
        db.close()
    db = Database.open(dbdir, durability="strict")
    try:
        # life goes on after recovery: seqs, chains and versions continue
        last = db.events.read(runs[0])[-1]
        e = db.events.append(runs[0], "post", None)
        assert e.seq == last.seq + 1 and e.prev_hash == last.hash
        assert db.events.verify(runs[0]) == e.seq + 1
        assert db.state.set(runs[0], "job", "done").version == 3
        with pytest.raises(InvalidTransition):
            db.state.set(runs[0], "job", "pending")
        with pytest.raises(RunClosed):
            db.events.append(runs[2], "x")
        tid = db.traces.record(runs[0], "post", 1)
        assert tid > max(t.id for t in before[runs[0]]["traces"])
        assert db.runs.get(runs[0]).last_version == commit_version(db) == version + 3
    finally:
        db.close()


# --- transactions across runs and primitives ---------------------------------------------------------


def _tx_body(tx, a, b):
    tx.kv.put(a, "k", "tx")
    tx.kv.delete(b, "k")
    tx.events.append(a, "tx", 1)
    tx.events.append(b, "tx", 2)
    tx.state.set(a, "job", "claimed")
    tx.state.cas(b, "lock", None, "tx")
    tid = tx.traces.record(a, "tx", "t")
    tx.traces.record(a, "tx", "child", parent=tid)
    tx.traces.record(b, "tx", "t")
    tx.runs.tag(a, "tx-tag")
    tx.runs.set_metadata(b, tx=True)


def _setup_two_runs(db):
    a, b = db.begin_run("a"), db.begin_run("b")
    for run in (a, b):
        db.kv.put(run, "k", "v")
        db.events.append(run, "e", 0)
        db.state.define(run, "job", transitions=MACHINE, initial="pending")
        db.traces.record(run, "t", "c")
    return a, b


def test_transaction_across_runs_and_primitives_commits_as_one(db):
    a, b = _setup_two_runs(db)
    v = commit_version(db)
    with db.transaction() as tx:
        _tx_body(tx, a, b)
    assert tx.commit_version == v + 1 == commit_version(db)
    assert db.kv.get(a, "k") == "tx" and db.kv.get(b, "k") is None
    assert [e.type for e in db.events.read(a)] == ["e", "tx"] and db.events.verify(b) == 2
    assert db.state.get(a, "job").value == "claimed" and db.state.get(b, "lock").value == "tx"
    assert len(db.traces.query(a, kind="tx")) == 2 and len(db.traces.query(b, kind="tx")) == 1
    assert "tx-tag" in db.runs.get(a).tags and db.runs.get(b).metadata == {"tx": True}
    assert db.runs.get(a).last_version == db.runs.get(b).last_version == tx.commit_version


def test_transaction_rolled_back_by_an_exception_leaves_nothing(db):
    a, b = _setup_two_runs(db)
    before = observe(db, [a, b])
    v = commit_version(db)
    with pytest.raises(RuntimeError):
        with db.transaction() as tx:
            _tx_body(tx, a, b)
            assert tx.events.count(a) == 2
            raise RuntimeError("abort")
    assert commit_version(db) == v
    assert observe(db, [a, b]) == before
    # and db.transact: an exception from fn propagates and nothing is written
    with pytest.raises(RuntimeError):
        db.transact(lambda tx: (_tx_body(tx, a, b), (_ for _ in ()).throw(RuntimeError("x"))))
    assert observe(db, [a, b]) == before and commit_version(db) == v


def test_transaction_that_conflicts_leaves_nothing(db):
    a, b = _setup_two_runs(db)
    tx = db.transaction()
    assert tx.state.get(a, "job").value == "pending"
    _tx_body(tx, a, b)
    db.state.set(a, "job", "claimed")  # a concurrent commit of something tx read and writes
    before = observe(db, [a, b])
    v = commit_version(db)
    with pytest.raises(TransactionConflict):
        tx.commit()
    assert commit_version(db) == v
    assert observe(db, [a, b]) == before
    db.close()
    with Database.open(db.path) as db2:
        assert observe(db2, [a, b]) == before


def test_transaction_writing_to_a_run_ended_meanwhile_conflicts(db):
    a, b = _setup_two_runs(db)
    tx = db.transaction()
    tx.kv.put(a, "x", 1)
    tx.events.append(b, "x")
    db.end_run(a)
    before = observe(db, [a, b])
    with pytest.raises((TransactionConflict, RunClosed)):
        tx.commit()
    assert observe(db, [a, b]) == before


def test_traces_recorded_by_two_transactions_in_one_run_do_not_conflict(db):
    run = db.begin_run()
    root = db.traces.record(run, "root", 0)
    tx1, tx2 = db.transaction(), db.transaction()
    t1 = tx1.traces.record(run, "a", 1, parent=root)
    t2 = tx2.traces.record(run, "b", 2, parent=root)
    tx1.commit()
    tx2.commit()
    assert [t.id for t in db.traces.children(run, root)] == sorted([t1, t2])


def test_two_transactions_racing_a_cas_one_wins(db):
    run = db.begin_run()
    db.state.set(run, "task", "open")
    tx1, tx2 = db.transaction(), db.transaction()
    assert tx1.state.cas(run, "task", "open", "claimed:1") is True
    assert tx2.state.cas(run, "task", "open", "claimed:2") is True
    tx1.commit()
    with pytest.raises(TransactionConflict):
        tx2.commit()
    assert (db.state.get(run, "task").value, db.state.get(run, "task").version) == ("claimed:1", 2)
    assert db.state.cas(run, "task", "open", "claimed:3") is False  # autocommit: cannot be won twice
