"""Every read path inside a transaction records what it read: no phantom through any primitive.

For each read method of each primitive (``tx.kv``, ``tx.events``, ``tx.state``,
``tx.traces``, ``tx.runs``): a transaction reads, another commit changes what
that read would now return (a write, an insert into a listed set, a new or
ended run), the transaction writes somewhere unrelated and commits -- and must
get ``TransactionConflict``. The control case (the other commit touches
something the read did not cover) must commit, so the check is not "always
conflict".

Also: a run created after a transaction's snapshot is invisible to it (a
read-only transaction serialises at its snapshot, so it must not see the run
exist), and transactions dropped unfinished stop pinning old versions even
when only autocommit writes follow.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from inmem import Database, TransactionConflict


@pytest.fixture
def db(dbdir):
    with Database.open(dbdir, durability="off") as d:
        yield d


def _setup(db: Database) -> dict[str, Any]:
    board = db.begin_run("board")
    agent = db.begin_run("agent", tags=["worker"])
    done = db.begin_run("done-already", tags=["worker"])
    db.end_run(done, "completed")
    db.kv.put(agent, "k", 1)
    db.kv.put(agent, "p/1", 1)
    db.docs.set(agent, "doc", {"n": 1, "items": [1]})
    db.events.append(agent, "e", {"n": 1})
    db.state.define(agent, "s", transitions={"a": ["b"], "b": ["a"]}, initial="a")
    root = db.traces.record(agent, "step", "root")
    return {"board": board, "agent": agent, "root": root}


# (name, read inside the transaction, a concurrent commit that changes the read's answer)
READS: list[tuple[str, Callable[[Any, dict], Any], Callable[[Database, dict], Any]]] = [
    ("kv.get", lambda tx, c: tx.kv.get(c["agent"], "k"), lambda db, c: db.kv.put(c["agent"], "k", 2)),
    ("kv.get absent", lambda tx, c: tx.kv.get(c["agent"], "new"), lambda db, c: db.kv.put(c["agent"], "new", 1)),
    ("kv.scan insert", lambda tx, c: list(tx.kv.scan(c["agent"], "p/")),
     lambda db, c: db.kv.put(c["agent"], "p/2", 2)),
    ("kv.scan delete", lambda tx, c: list(tx.kv.scan(c["agent"], "p/")), lambda db, c: db.kv.delete(c["agent"], "p/1")),
    ("events.read", lambda tx, c: tx.events.read(c["agent"]), lambda db, c: db.events.append(c["agent"], "e", 2)),
    ("events.tail", lambda tx, c: tx.events.tail(c["agent"], 1), lambda db, c: db.events.append(c["agent"], "e", 2)),
    ("events.count", lambda tx, c: tx.events.count(c["agent"]), lambda db, c: db.events.append(c["agent"], "e", 2)),
    ("events.verify", lambda tx, c: tx.events.verify(c["agent"]), lambda db, c: db.events.append(c["agent"], "e", 2)),
    ("state.get", lambda tx, c: tx.state.get(c["agent"], "s"), lambda db, c: db.state.cas(c["agent"], "s", "a", "b")),
    ("state.names", lambda tx, c: tx.state.names(c["agent"]),
     lambda db, c: db.state.define(c["agent"], "t", transitions={"x": []}, initial="x")),
    ("traces.get absent", lambda tx, c: _absent_trace(tx, c), lambda db, c: c.__setitem__(
        "late", db.traces.record(c["agent"], "step", "late"))),
    ("traces.query", lambda tx, c: tx.traces.query(c["agent"]), lambda db, c: db.traces.record(c["agent"], "s", "x")),
    ("traces.children", lambda tx, c: tx.traces.children(c["agent"], c["root"]),
     lambda db, c: db.traces.record(c["agent"], "s", "child", parent=c["root"])),
    ("traces.tree", lambda tx, c: tx.traces.tree(c["agent"]), lambda db, c: db.traces.record(c["agent"], "s", "x")),
    ("runs.get", lambda tx, c: tx.runs.get(c["agent"]), lambda db, c: db.runs.tag(c["agent"], "new-tag")),
    ("runs.list new run", lambda tx, c: tx.runs.list(tag="worker"), lambda db, c: db.begin_run("w2", tags=["worker"])),
    ("runs.list ended run", lambda tx, c: tx.runs.list(status="completed"),
     lambda db, c: db.end_run(c["agent"], "completed")),
    ("runs.list tagged", lambda tx, c: tx.runs.list(tag="late-tag"), lambda db, c: db.runs.tag(c["board"], "late-tag")),
    ("runs.list metadata", lambda tx, c: [r.metadata for r in tx.runs.list(tag="worker")],
     lambda db, c: db.runs.set_metadata(c["agent"], x=1)),
    ("runs.children", lambda tx, c: tx.runs.children(c["board"]), lambda db, c: db.begin_run("kid", parent=c["board"])),
    ("docs.get", lambda tx, c: tx.docs.get(c["agent"], "doc", "n"), lambda db, c: db.docs.increment(c["agent"], "doc", "n")),
    ("docs.get absent", lambda tx, c: tx.docs.get(c["agent"], "new"), lambda db, c: db.docs.set(c["agent"], "new", 1)),
    ("docs.get after own op", lambda tx, c: (tx.docs.append(c["agent"], "doc", "items", 2), tx.docs.get(c["agent"], "doc")),
     lambda db, c: db.docs.set(c["agent"], "doc", 7, "n")),
    ("docs.names", lambda tx, c: tx.docs.names(c["agent"]), lambda db, c: db.docs.set(c["agent"], "new", 1)),
    ("docs.definition", lambda tx, c: tx.docs.definition(c["agent"], "doc"), lambda db, c: _define(db, c)),
]


def _define(db, c):
    import pydantic

    class Doc(pydantic.BaseModel):
        n: int = 0
        items: list[int] = []

    db.docs.define(c["agent"], "doc", Doc)


def _absent_trace(tx, c):
    # the trace id is not known before it exists; read the whole set (the only way to look for it)
    return [t.id for t in tx.traces.query(c["agent"], kind="step")]


@pytest.mark.parametrize("name,read,change", READS, ids=[r[0] for r in READS])
def test_a_read_then_a_concurrent_change_conflicts(db, name, read, change):
    c = _setup(db)
    sink = db.begin_run("sink")  # the transaction writes only here: no write-write conflict
    tx = db.transaction()
    read(tx, c)
    change(db, c)
    tx.kv.put(sink, "out", name)
    with pytest.raises(TransactionConflict):
        tx.commit()
    assert db.kv.get(sink, "out") is None


@pytest.mark.parametrize("name,read,change", READS, ids=[r[0] for r in READS])
def test_a_read_then_an_unrelated_change_commits(db, name, read, change):
    c = _setup(db)
    sink = db.begin_run("sink")
    other = db.begin_run("other")
    tx = db.transaction()
    read(tx, c)
    db.kv.put(other, "unrelated", 1)  # touches nothing the read covered (and creates or ends no run)
    tx.kv.put(sink, "out", name)
    tx.commit()
    assert db.kv.get(sink, "out") == name


def test_no_phantom_through_runs_list(db):
    """The issue's repro: T1 lists runs (none), a run begins, T2 lists it and reads T1's key as absent."""
    board = db.begin_run("board")
    t1 = db.transaction()
    assert t1.runs.list(tag="worker") == []
    db.begin_run("w", tags=["worker"])
    t2 = db.transaction()
    assert len(t2.runs.list(tag="worker")) == 1
    assert t2.kv.get(board, "t1") is None
    t2.kv.put(board, "t2", "saw a worker, and no t1")
    t2.commit()
    t1.kv.put(board, "t1", "saw no worker")
    with pytest.raises(TransactionConflict, match="run index"):
        t1.commit()  # committing would close the cycle t1 -> begin_run -> t2 -> t1


def test_a_run_created_after_the_snapshot_is_invisible(db):
    board = db.begin_run("board")
    db.kv.put(board, "registered", None)
    tx = db.transaction()
    late = db.begin_run("late")
    db.kv.put(board, "registered", late)
    # read-only: serialised at its snapshot, where `late` does not exist and is not registered
    assert tx.kv.get(board, "registered") is None
    assert late not in [r.id for r in tx.runs.list()]
    for read in (lambda: tx.kv.get(late, "x"), lambda: list(tx.kv.scan(late)), lambda: tx.events.read(late),
                 lambda: tx.state.names(late), lambda: tx.traces.query(late), lambda: tx.runs.get(late),
                 lambda: tx.kv.put(late, "x", 1)):
        with pytest.raises(TransactionConflict, match="created after"):
            read()
    tx.rollback()
    # a fresh transaction sees it, and db.transact retries into it
    assert db.transact(lambda t: t.kv.get(late, "x", "absent")) == "absent"


def test_transact_retries_a_run_created_meanwhile(db):
    board = db.begin_run("board")
    made: list[str] = []

    def fn(tx):
        if not made:  # first attempt: a run appears after our snapshot, and we use it
            made.append(db.begin_run("late"))
        tx.kv.put(made[0], "x", 1)
        tx.kv.put(board, "used", made[0])

    db.transact(fn)
    assert db.kv.get(made[0], "x") == 1


def test_listing_then_ending_a_run_conflicts_only_for_writers(db):
    a = db.begin_run("a")
    sink = db.begin_run("sink")
    reader = db.transaction()
    before = [r.status for r in reader.runs.list()]
    db.end_run(a, "failed")
    assert [r.status for r in reader.runs.list()] == before  # a stable snapshot
    reader.commit()  # read-only: serialised at its snapshot, never conflicts
    writer = db.transaction()
    writer.runs.list(status="failed")
    db.end_run(db.begin_run("b"), "failed")
    writer.kv.put(sink, "x", 1)
    with pytest.raises(TransactionConflict):
        writer.commit()


def test_abandoned_transaction_stops_pinning_versions_under_autocommit_writes(db):
    run = db.begin_run()
    db.kv.put(run, "k", 0)
    tx = db.transaction()
    tx.kv.get(run, "k")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del tx
        gc.collect()
    for i in range(2000):
        db.kv.put(run, "k", i)
    db.kv.delete(run, "k")
    stats = db.stats()
    assert stats["active_transactions"] == 0
    assert stats["retained_versions"] == 0
