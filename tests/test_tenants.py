"""Per-user isolation: ``db.tenant(id)`` views and ``db.delete_tenant(id)`` (issue 17).

Attacks: every public method of every primitive, called through a tenant view
(autocommit and in a transaction) with another tenant's run id, must raise the
``RunNotFound`` of a missing id and write nothing; the view's run-level calls
(history, replay, diff, fork, end, begin with a parent) likewise; listings show
only the tenant's runs; two tenants' threads in parallel never see each other;
delete_tenant removes everything in one commit, survives reopen, leaves other
tenants alone; bad tenant ids are refused before anything is written.
"""

from __future__ import annotations

import collections.abc
import inspect
import pathlib
import re
import threading
import uuid

import pydantic
import pytest

from inmem import Database
from inmem.embeddings import HashingEmbedder
from inmem.errors import DatabaseClosed, InmemError, InvalidArgument, RunNotFound, TransactionConflict

PRIMITIVES = ("kv", "events", "state", "traces", "runs", "vectors", "docs", "graph")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Profile(pydantic.BaseModel):
    n: int = 0


@pytest.fixture
def db(dbdir):
    with Database.open(dbdir, durability="off", embedder=HashingEmbedder(dim=2), sweep_interval_s=None) as d:
        yield d


def _fill(view, run):
    """One of everything in ``run``; returns the trace id."""
    view.kv.put(run, "k", 1)
    view.events.append(run, "t", {"x": 1})
    view.state.define(run, "s", transitions={"a": ["b"], "b": []}, initial="a")
    tid = view.traces.record(run, "note", "c")
    view.vectors.create(run, "c", dim=2)
    view.vectors.upsert(run, "c", "v", [1.0, 0.0])
    view.docs.set(run, "d", {"n": 1, "l": [1], "f": True})
    view.graph.add_node(run, "hello", id="n1")
    view.graph.add_node(run, "world", id="n2")
    view.graph.add_edge(run, "n1", "r", "n2")
    return tid


def _args(prim, method, tid):
    """Valid arguments (after the run id) for ``prim.method``, by parameter name."""
    by_name = {
        "key": "k", "value": "b" if prim == "state" else 1, "type": "t", "payload": None, "n": 1, "expected": "a", "new": "b",
        "expected_version": 1, "transitions": {"a": ["b"], "b": []}, "initial": "a", "trace_id": tid,
        "kind": "note", "content": "c", "collection": "c", "text": "hello", "vector": [1.0, 0.0], "dim": 2,
        "patch": {"x": 1}, "ops": [{"op": "replace", "path": "/n", "value": 2}], "model": Profile,
        "source": "n1", "relation": "r", "target": "n2", "node": "n1", "a": "n1", "b": "n2", "start": "n1",
        "name": {"state": "s", "docs": "d"}.get(prim, "x"), "id": {"vectors": "v"}.get(prim, "n1"),
        "query": [1.0, 0.0] if prim == "vectors" else "hello",
        "path": {"append": "l", "toggle": "f", "increment": "n"}.get(method, "n"),
    }
    return by_name


def _call(fn, run, prim, method, tid):
    cls_method = getattr(fn, "__wrapped__", fn)
    params = list(inspect.signature(cls_method).parameters.values())
    by_name = _args(prim, method, tid)
    args, kwargs = [], {}
    for p in params:
        if p.name in ("self", "run"):
            continue
        if p.kind is p.VAR_POSITIONAL:
            args.append("t1" if method == "tag" else 5)
        elif p.kind is p.VAR_KEYWORD:
            kwargs["m"] = 1
        elif p.default is p.empty:
            (kwargs.__setitem__(p.name, by_name[p.name]) if p.kind is p.KEYWORD_ONLY else args.append(by_name[p.name]))
    result = fn(run, *args, **kwargs)
    if isinstance(result, collections.abc.Iterator):
        result = list(result)
    return result


def _tolerant(call):
    """Run ``call``: any outcome but RunNotFound (a domain error such as InvalidTransition is fine)."""
    try:
        call()
    except RunNotFound:
        raise
    except InmemError:
        pass


def _methods(prim_obj):
    return [n for n in dir(prim_obj) if not n.startswith("_") and callable(getattr(prim_obj, n))]


def _taking_run(fn):
    params = inspect.signature(getattr(fn, "__wrapped__", fn)).parameters
    return "run" in params


def test_every_primitive_method_refuses_a_foreign_run_as_missing(db):
    """Isolation is below the primitives: no method was written with tenants in mind, all are isolated."""
    alice, bob = db.tenant("alice"), db.tenant("bob")
    mine = alice.begin_run("mine")
    _fill(alice, mine)
    foreign = bob.begin_run("theirs")
    tid = _fill(bob, foreign)
    untenanted = db.begin_run("root")
    _fill(db, untenanted)
    missing = str(uuid.UUID(int=uuid.UUID(foreign).int ^ 1))
    called = 0
    for prim in PRIMITIVES:
        for method in _methods(getattr(alice, prim)):
            if not _taking_run(getattr(getattr(alice, prim), method)) or (prim, method) == ("graph", "history"):
                continue  # runs.ids/list: the listing test; graph.history: the run-level test
            # the root (admin) may make this call on the foreign run (a domain error at most)
            tx = db.transaction()
            _tolerant(lambda: _call(getattr(getattr(tx, prim), method), foreign, prim, method, tid))
            tx.rollback()
            for other in (foreign, untenanted):
                before = db.stats()["commit_version"]
                with pytest.raises(RunNotFound) as got:
                    _call(getattr(getattr(alice, prim), method), other, prim, method, tid)
                with pytest.raises(RunNotFound) as absent:
                    _call(getattr(getattr(alice, prim), method), missing, prim, method, tid)
                assert UUID.sub("ID", str(got.value)) == UUID.sub("ID", str(absent.value)), (prim, method)
                with alice.transaction() as atx:
                    with pytest.raises(RunNotFound):
                        _call(getattr(getattr(atx, prim), method), other, prim, method, tid)
                assert db.stats()["commit_version"] == before, f"{prim}.{method} wrote"
                called += 1
            _tolerant(lambda: _call(getattr(getattr(alice, prim), method), mine, prim, method, tid))  # own run
    assert called >= 2 * 60
    assert db.kv.get(foreign, "k") == 1 and db.docs.get(foreign, "d")["n"] == 1


def test_run_level_calls_refuse_a_foreign_run(db):
    alice, bob = db.tenant("alice"), db.tenant("bob")
    mine = alice.begin_run()
    alice.kv.put(mine, "k", 1)
    foreign = bob.begin_run()
    bob.kv.put(foreign, "k", 2)
    version = db.stats()["commit_version"]
    calls = [
        lambda r: alice.history(r), lambda r: alice.replay_run(r), lambda r: alice.run_state(r),
        lambda r: alice.diff_runs(mine, r), lambda r: alice.diff_runs(r, mine), lambda r: alice.fork_run(r),
        lambda r: alice.end_run(r), lambda r: alice.begin_run(parent=r), lambda r: alice.graph.history(r, "n"),
        lambda r: alice.runs.children(r), lambda r: alice.runs.get(r),
    ]
    for call in calls:
        with pytest.raises(RunNotFound, match="in this database$"):
            call(foreign)
    assert db.stats()["commit_version"] == version
    assert db.runs.get(foreign).status == "active"
    assert [c.version for c in alice.history(mine)] and alice.run_state(mine).kv == {"k": 1}
    fork = alice.fork_run(mine)
    assert db.runs.get(fork).tenant == "alice" and alice.kv.get(fork, "k") == 1
    child = alice.begin_run(parent=mine)
    assert set(alice.runs.ids()) == {mine, fork, child}
    assert alice.diff_runs(mine, fork).is_empty()


def test_listings_show_the_tenants_runs_and_the_root_sees_all(db):
    alice, bob = db.tenant("alice"), db.tenant("bob")
    a1, a2 = alice.begin_run("a1"), alice.begin_run("a2", tags=["x"])
    b1 = bob.begin_run("b1", tags=["x"])
    plain = db.begin_run("plain")
    alice.end_run(a1)
    assert alice.runs.ids() == [a1, a2] and bob.runs.ids() == [b1]
    assert [i.id for i in alice.runs.list(tag="x")] == [a2]
    assert alice.runs.ids(status="completed") == [a1] and bob.runs.ids(status="completed") == []
    with alice.transaction() as tx:
        assert [i.id for i in tx.runs.list()] == [a1, a2]
    assert db.runs.ids() == [a1, a2, b1, plain]
    assert {i.id: i.tenant for i in db.runs.list()} == {a1: "alice", a2: "alice", b1: "bob", plain: None}
    assert db.tenant("carol").runs.list() == []


def test_tenant_transactions_and_threads_in_parallel(db):
    tenants = [db.tenant(f"t{i}") for i in range(2)]
    runs = [t.begin_run() for t in tenants]
    barrier = threading.Barrier(2)
    errors = []

    def worker(i):
        me, other = tenants[i], runs[1 - i]
        try:
            barrier.wait()
            for n in range(150):
                me.kv.put(runs[i], f"k{n}", n)
                me.transact(lambda tx: tx.kv.put(runs[i], "sum", (tx.kv.get(runs[i], "sum") or 0) + 1))
                if n % 10 == 0:
                    with pytest.raises(RunNotFound):
                        me.kv.put(other, "x", 1)
                    assert me.runs.ids() == [runs[i]]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i in range(2):
        assert db.kv.get(runs[i], "sum") == 150 and db.kv.get(runs[i], "x") is None


def test_a_listing_transaction_conflicts_only_on_its_tenants_runs(db):
    alice, bob = db.tenant("alice"), db.tenant("bob")
    run = alice.begin_run()
    tx = alice.transaction()
    tx.runs.ids()
    tx.kv.put(run, "k", 1)
    bob.begin_run()  # another tenant's run: not in alice's listing
    tx.commit()
    tx = alice.transaction()
    tx.runs.ids()
    tx.kv.put(run, "k", 2)
    alice.begin_run()  # a phantom in alice's listing
    with pytest.raises(TransactionConflict):
        tx.commit()


@pytest.mark.parametrize("bad", ["", "a\x00b", "x" * 257, "é" * 129, None, 7, b"alice"])
def test_bad_tenant_ids_are_refused_before_anything_is_written(db, bad):
    version = db.stats()["commit_version"]
    with pytest.raises(InvalidArgument):
        db.tenant(bad)
    with pytest.raises(InvalidArgument):
        db.delete_tenant(bad)
    assert db.stats()["commit_version"] == version
    assert db.tenant("x" * 256).runs.ids() == [] and db.tenant("é" * 128).runs.ids() == []


def test_delete_tenant_one_commit_everything_gone_others_untouched(dbdir):
    with Database.open(dbdir, embedder=HashingEmbedder(dim=2), sweep_interval_s=None) as db:
        alice, bob = db.tenant("alice"), db.tenant("bob")
        a1 = alice.begin_run()
        _fill(alice, a1)
        alice.kv.put(a1, "ttl", 1, ttl=3600)
        a2 = alice.fork_run(a1)
        alice.end_run(a1)
        b1 = bob.begin_run()
        _fill(bob, b1)
        plain = db.begin_run()
        db.kv.put(plain, "k", 3)
        keys_before = db.stats()["keys"]
        bob_state = db.run_state(b1)
        open_tx = alice.transaction()
        open_tx.kv.get(a2, "k")
        open_tx.kv.put(a2, "k", 9)
        version = db.stats()["commit_version"]
        assert db.delete_tenant("alice") == 2
        assert db.stats()["commit_version"] == version + 1  # one commit
        assert db.delete_tenant("alice") == 0 and db.stats()["commit_version"] == version + 1
        with pytest.raises((TransactionConflict, RunNotFound)):
            open_tx.commit()
        for view in (db, alice):
            for run in (a1, a2):
                for call in (lambda r: view.kv.get(r, "k"), lambda r: view.runs.get(r), lambda r: view.history(r),
                             lambda r: view.replay_run(r), lambda r: view.run_state(r),
                             lambda r: view.vectors.search(r, "c", [1.0, 0.0]), lambda r: view.kv.put(r, "k", 1)):
                    with pytest.raises(RunNotFound):
                        call(run)
        with pytest.raises(RunNotFound, match="deleted by delete_tenant"):
            db.replay_run(a1)
        assert alice.runs.ids() == [] and db.runs.ids() == [b1, plain]
        assert db.run_state(b1) == bob_state and db.kv.get(plain, "k") == 3
        assert db.stats()["keys"] < keys_before
        assert db.stats()["runs"] == 2
        assert alice.begin_run() not in (a1, a2)  # the tenant id may be used again
    with Database.open(dbdir, embedder=HashingEmbedder(dim=2)) as db:
        assert sorted(db.runs.ids()) == sorted([b1, plain, *db.tenant("alice").runs.ids()])
        assert len(db.tenant("alice").runs.ids()) == 1
        for run in (a1, a2):
            with pytest.raises(RunNotFound):
                db.kv.get(run, "k")
            with pytest.raises(RunNotFound):
                db.history(run)
        assert db.run_state(b1) == bob_state


def test_delete_tenant_with_history_none_compaction_drops_the_bytes(dbdir):
    secret = b"alice-secret-" + uuid.uuid4().hex.encode()
    with Database.open(dbdir, history="none", segment_bytes=4096, sweep_interval_s=None) as db:
        run = db.tenant("alice").begin_run()
        db.tenant("alice").kv.put(run, "k", secret.decode())
        keep = db.tenant("bob").begin_run()
        db.tenant("bob").kv.put(keep, "k", "bob")
        db.delete_tenant("alice")
        db.compact()
        assert any(secret in p.read_bytes() for p in pathlib.Path(dbdir).glob("wal-*"))  # the tail segment
        for i in range(3):  # the segment being written rotates once segment_bytes are in it
            db.tenant("bob").kv.put(keep, f"pad{i}", "x" * 3000)
        db.compact()
    leftovers = [p.name for p in pathlib.Path(dbdir).iterdir() if p.is_file() and secret in p.read_bytes()]
    assert leftovers == []
    with Database.open(dbdir) as db:
        assert db.tenant("bob").kv.get(keep, "k") == "bob" and db.tenant("alice").runs.ids() == []


def test_delete_tenant_with_history_active_counts_its_runs_as_archived(dbdir):
    """Under history="active" a deleted run's segments go like an archived run's, after a reopen too."""
    secret = b"alice-secret-" + uuid.uuid4().hex.encode()
    opts = dict(history="active", segment_bytes=4096, sweep_interval_s=None)
    with Database.open(dbdir, **opts) as db:
        alice = db.tenant("alice")
        run = alice.begin_run()
        alice.kv.put(run, "k", secret.decode())
        for i in range(3):
            alice.kv.put(run, f"pad{i}", "x" * 3000)
        db.delete_tenant("alice")
    with Database.open(dbdir, **opts) as db:  # the deleted runs are unknown to this handle
        keep = db.tenant("bob").begin_run()
        for i in range(3):
            db.tenant("bob").kv.put(keep, f"pad{i}", "y" * 3000)
        db.compact()
        assert [p.name for p in pathlib.Path(dbdir).iterdir() if p.is_file() and secret in p.read_bytes()] == []
        assert db.history(keep)[0].version == db.runs.get(keep).first_version


def test_a_tenant_view_is_reused_and_closes_with_the_database(dbdir):
    db = Database.open(dbdir, sweep_interval_s=None)
    alice = db.tenant("alice")
    assert db.tenant("alice") is alice and db.tenant("bob") is not alice and alice.tenant_id == "alice"
    run = alice.begin_run()
    alice.kv.put(run, "k", 1)
    db.close()
    with pytest.raises(DatabaseClosed):
        alice.kv.get(run, "k")
    with pytest.raises(DatabaseClosed):
        db.tenant("carol").transaction()
    with pytest.raises(DatabaseClosed):
        alice.kv.put(run, "k", 2)


def test_writers_racing_delete_tenant_never_resurrect_its_data(db):
    base = db.stats()["keys"]
    alice = db.tenant("alice")
    runs = [alice.begin_run() for _ in range(3)]
    started = threading.Barrier(4)
    outcomes = []

    def writer(i):
        run, n = runs[i], 0
        writes = (lambda: alice.kv.put(run, f"k{n}", n), lambda: alice.events.append(run, "t", n),
                  lambda: alice.transact(lambda tx: tx.kv.put(run, f"t{n}", n)))[i]
        try:
            while True:
                writes()
                n += 1
                if n == 20:
                    started.wait()
        except RunNotFound:
            outcomes.append(n)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    started.wait()
    assert db.delete_tenant("alice") == 3
    for t in threads:
        t.join()
    assert len(outcomes) == 3 and min(outcomes) >= 20
    assert db.stats()["keys"] == base and db.stats()["runs"] == 0


def test_store_namespaces_memories_and_searches_are_per_tenant(tmp_path):
    """Code written against a Database runs on a tenant view confined to it: a LangGraph store and a
    Mem0-style memory of one tenant are invisible to another (items, namespaces, searches, memories)."""
    pytest.importorskip("langgraph")
    from inmem.embeddings import HashingEmbedder
    from inmem.integrations.langgraph import InmemStore
    from inmem.memory import Memory

    with Database.open(str(tmp_path / "db"), durability="off", sweep_interval_s=None) as db:
        alice, bob = db.tenant("alice"), db.tenant("bob")
        index = {"dims": 32, "embed": HashingEmbedder(dim=32), "fields": ["text"]}
        sa, sb = InmemStore(alice, index=index), InmemStore(bob, index=index)
        sa.put(("users", "1"), "k", {"text": "alice's secret plan"})
        assert sb.get(("users", "1"), "k") is None and sb.list_namespaces() == []
        assert sb.search(("users",)) == [] and sb.search(("users",), query="secret plan") == []
        assert sa.get(("users", "1"), "k").value == {"text": "alice's secret plan"}
        ma, mb = Memory(alice, embedder=HashingEmbedder(dim=32)), Memory(bob, embedder=HashingEmbedder(dim=32))
        ma.add("alice likes green tea", user_id="u1")
        assert mb.search("green tea", user_id="u1") == [] and mb.get_all(filters={"user_id": "u1"}) == []
        assert [m.memory for m in ma.search("green tea", user_id="u1")] == ["alice likes green tea"]
        assert {r.tenant for r in db.runs.list()} == {"alice"}  # both runs are alice's; the root sees them
        assert alice.sweep() == 0 and bob.sweep() == 0
        db.delete_tenant("alice")
        assert InmemStore(db.tenant("alice")).get(("users", "1"), "k") is None
