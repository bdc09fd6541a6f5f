"""The memory graph (``db.graph`` / ``tx.graph``): the contract of every call on both, bad input refused
before anything is written, the delete cascade, and traversal / shortest path / cycle detection checked
against networkx on random graphs under hypothesis.
"""

from __future__ import annotations

import hashlib
import uuid

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inmem import (Database, DatabaseReadOnly, Edge, InvalidArgument, InvalidValue, Node, RunClosed, RunNotFound,
                   TransactionConflict)

from .conftest import assert_refused_unwritten


@pytest.fixture
def db(dbdir):
    with Database.open(dbdir, durability="off") as d:
        yield d


@pytest.fixture
def run(db):
    return db.begin_run("agent")


def call(db, where, name, *args, **kwargs):
    """``db.graph.name(...)`` or the same call in a transaction of its own."""
    if where == "db":
        return getattr(db.graph, name)(*args, **kwargs)
    with db.transaction() as tx:
        return getattr(tx.graph, name)(*args, **kwargs)


BOTH = pytest.mark.parametrize("where", ["db", "tx"])


# --- nodes ----------------------------------------------------------------------------------------


@BOTH
def test_add_node_contract(db, run, where):
    node = call(db, where, "add_node", run, "the sky is blue", kind="fact", metadata={"src": "obs", "n": 1})
    assert uuid.UUID(node.id).version == 7
    assert node.content_hash == hashlib.sha256(b"the sky is blue").hexdigest()
    assert (node.kind, node.content, node.metadata) == ("fact", "the sky is blue", {"src": "obs", "n": 1})
    assert node.created_us == node.updated_us > 0
    assert call(db, where, "get_node", run, node.id) == node
    assert call(db, where, "get_node", run, "missing") is None
    named = call(db, where, "add_node", run, "x", id="mine")
    assert named.id == "mine" and named.kind is None and named.metadata is None


@BOTH
def test_update_node_replaces_content_merges_metadata(db, run, where):
    n = db.graph.add_node(run, "old", kind="k", metadata={"a": 1, "b": 2}, id="n")
    up = call(db, where, "update_node", run, "n", "new", metadata={"b": 3, "c": 4})
    assert (up.content, up.metadata, up.kind, up.created_us) == ("new", {"a": 1, "b": 3, "c": 4}, "k", n.created_us)
    assert up.content_hash == hashlib.sha256(b"new").hexdigest() and up.updated_us >= n.updated_us
    only_meta = call(db, where, "update_node", run, "n", metadata={"a": None})
    assert only_meta.content == "new" and only_meta.metadata == {"a": None, "b": 3, "c": 4}
    assert db.graph.get_node(run, "n") == only_meta


@BOTH
def test_nodes_kind_and_filter(db, run, where):
    for i in range(6):
        db.graph.add_node(run, f"m{i}", kind="even" if i % 2 == 0 else "odd", metadata={"i": i}, id=f"n{i}")
    assert [n.id for n in call(db, where, "nodes", run)] == [f"n{i}" for i in range(6)]
    assert [n.id for n in call(db, where, "nodes", run, kind="odd")] == ["n1", "n3", "n5"]
    assert [n.id for n in call(db, where, "nodes", run, kind="even", filter={"i": {"$gte": 2}})] == ["n2", "n4"]
    assert call(db, where, "nodes", run, filter={"i": {"$gt": 99}}) == []


# --- edges ----------------------------------------------------------------------------------------


def _abc(db, run):
    for id in "abc":
        db.graph.add_node(run, id, id=id)


@BOTH
def test_edges_one_per_triple_and_both_directions(db, run, where):
    _abc(db, run)
    e = call(db, where, "add_edge", run, "a", "knows", "b", weight=0.5, metadata={"since": 2020})
    assert (e.source, e.relation, e.target, e.weight, e.metadata) == ("a", "knows", "b", 0.5, {"since": 2020})
    again = call(db, where, "add_edge", run, "a", "knows", "b", weight=2)
    assert again.weight == 2.0 and again.metadata is None and again.created_us == e.created_us
    call(db, where, "add_edge", run, "a", "cites", "b")
    call(db, where, "add_edge", run, "c", "knows", "a")
    assert [(x.relation, x.target, x.weight) for x in call(db, where, "edges", run, "a")] == [
        ("cites", "b", 1.0), ("knows", "b", 2.0)]
    assert [(x.source, x.relation) for x in call(db, where, "edges", run, "b", direction="in")] == [
        ("a", "cites"), ("a", "knows")]
    both = call(db, where, "edges", run, "a", direction="both", relation="knows")
    assert [(x.source, x.target) for x in both] == [("a", "b"), ("c", "a")]
    assert call(db, where, "remove_edge", run, "a", "knows", "b") is True
    assert call(db, where, "remove_edge", run, "a", "knows", "b") is False
    assert call(db, where, "edges", run, "b", direction="in", relation="knows") == []
    assert call(db, where, "edges", run, "nobody", direction="both") == []


@BOTH
def test_traversal_calls(db, run, where):
    for id in "abcde":
        db.graph.add_node(run, id, id=id)
    for s, t in ("ab", "bc", "cd", "ae"):
        db.graph.add_edge(run, s, "r", t)
    db.graph.add_edge(run, "e", "other", "d")
    got = [(n.id, d, p) for n, d, p in call(db, where, "traverse", run, "a")]
    assert got == [("a", 0, ["a"]), ("b", 1, ["a", "b"]), ("e", 1, ["a", "e"]), ("c", 2, ["a", "b", "c"]),
                   ("d", 2, ["a", "e", "d"])]
    got = call(db, where, "traverse", run, "a", relation="r", max_depth=2)
    assert [n.id for n, _, _ in got] == ["a", "b", "e", "c"]
    assert [n.id for n in call(db, where, "neighbors", run, "a")] == ["b", "e"]
    # in-edges in key order: relation "other" before "r"
    assert [n.id for n in call(db, where, "neighbors", run, "d", direction="in", depth=2)] == ["e", "c", "a", "b"]
    assert [n.id for n in call(db, where, "neighbors", run, "c", direction="both")] == ["d", "b"]
    assert call(db, where, "shortest_path", run, "a", "d") == ["a", "e", "d"]
    assert call(db, where, "shortest_path", run, "a", "d", relation="r") == ["a", "b", "c", "d"]
    assert call(db, where, "shortest_path", run, "d", "a") is None
    assert call(db, where, "shortest_path", run, "a", "a") == ["a"]
    assert call(db, where, "shortest_path", run, "a", "zz") is None
    assert list(call(db, where, "traverse", run, "zz")) == []
    assert call(db, where, "has_cycle", run) is False
    db.graph.add_edge(run, "d", "r", "a")
    assert call(db, where, "has_cycle", run) is True
    assert call(db, where, "has_cycle", run, relation="other") is False


@BOTH
def test_acyclic_refuses_an_edge_closing_a_cycle(db, dbdir, run, where):
    _abc(db, run)
    call(db, where, "add_edge", run, "a", "dep", "b", acyclic=True)
    call(db, where, "add_edge", run, "b", "dep", "c", acyclic=True)
    for s, t in (("c", "a"), ("b", "a"), ("a", "a")):
        assert_refused_unwritten(db, dbdir, lambda s=s, t=t: call(db, where, "add_edge", run, s, "dep", t,
                                                                   acyclic=True), InvalidArgument)
    call(db, where, "add_edge", run, "c", "other", "a", acyclic=True)  # another relation: no cycle of "dep"
    call(db, where, "add_edge", run, "a", "dep", "c", acyclic=True)  # a shortcut, not a cycle
    call(db, where, "add_edge", run, "a", "dep", "b", weight=3, acyclic=True)  # an update closes nothing
    assert db.graph.has_cycle(run, "dep") is False and db.graph.has_cycle(run) is True


# --- errors: refused before anything is written -----------------------------------------------------------


BAD_CALLS = [
    ("add_node", ("x",), {"id": ""}, InvalidArgument),
    ("add_node", ("x",), {"id": "a\x00b"}, InvalidArgument),
    ("add_node", ("x",), {"id": "é" * 200}, InvalidArgument),
    ("add_node", ("x",), {"id": 5}, InvalidArgument),
    ("add_node", ("x",), {"id": "a"}, InvalidArgument),  # exists
    ("add_node", (b"bytes",), {}, InvalidArgument),
    ("add_node", ("\ud800",), {}, InvalidArgument),
    ("add_node", ("x",), {"kind": ""}, InvalidArgument),
    ("add_node", ("x",), {"metadata": [1]}, InvalidArgument),
    ("add_node", ("x",), {"metadata": {"o": object()}}, InvalidValue),
    ("update_node", ("zz", "x"), {}, InvalidArgument),
    ("update_node", ("a", 3), {}, InvalidArgument),
    ("update_node", ("a",), {"metadata": "m"}, InvalidArgument),
    ("update_node", ("a",), {"metadata": {"o": object()}}, InvalidValue),
    ("add_edge", ("a", "r", "zz"), {}, InvalidArgument),
    ("add_edge", ("zz", "r", "a"), {}, InvalidArgument),
    ("add_edge", ("a", "", "b"), {}, InvalidArgument),
    ("add_edge", ("a", "r\x00", "b"), {}, InvalidArgument),
    ("add_edge", ("a", "r", "b"), {"weight": float("nan")}, InvalidArgument),
    ("add_edge", ("a", "r", "b"), {"weight": True}, InvalidArgument),
    ("add_edge", ("a", "r", "b"), {"weight": "1"}, InvalidArgument),
    ("add_edge", ("a", "r", "b"), {"metadata": {"o": object()}}, InvalidValue),
    ("remove_edge", ("a", None, "b"), {}, InvalidArgument),
    ("delete_node", ("",), {}, InvalidArgument),
    ("edges", ("a",), {"direction": "up"}, InvalidArgument),
    ("traverse", ("a",), {"max_depth": -1}, InvalidArgument),
    ("neighbors", ("a",), {"depth": None}, InvalidArgument),
    ("nodes", (), {"filter": {"$bogus": 1}}, InvalidArgument),
    ("has_cycle", (), {"relation": ""}, InvalidArgument),
    ("shortest_path", ("a", 7), {}, InvalidArgument),
]


@BOTH
@pytest.mark.parametrize("name,args,kwargs,error", BAD_CALLS, ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_CALLS)])
def test_bad_input_refused_unwritten(db, dbdir, run, where, name, args, kwargs, error):
    _abc(db, run)
    assert_refused_unwritten(db, dbdir, lambda: call(db, where, name, run, *args, **kwargs), error)


def test_runs_checked(db, run):
    _abc(db, run)
    with pytest.raises(RunNotFound):
        db.graph.get_node("not-a-run", "a")
    with pytest.raises(RunNotFound):
        db.graph.add_node(str(uuid.UUID(int=7)), "x")
    db.end_run(run)
    assert db.graph.get_node(run, "a").content == "a"  # reads of an ended run still work
    with pytest.raises(RunClosed):
        db.graph.add_edge(run, "a", "r", "b")


# --- cascade, atomicity, transactions ------------------------------------------------------------------


def test_delete_node_cascades_in_one_commit(db, run):
    _abc(db, run)
    db.graph.add_edge(run, "a", "r", "b")
    db.graph.add_edge(run, "b", "r", "c")
    db.graph.add_edge(run, "c", "s", "b")
    db.graph.add_edge(run, "b", "r", "b")  # a self-loop
    db.graph.add_edge(run, "a", "r", "c")
    version = db.stats()["commit_version"]
    assert db.graph.delete_node(run, "b") is True
    assert db.stats()["commit_version"] == version + 1
    assert db.graph.get_node(run, "b") is None
    assert [(e.source, e.target) for e in db.graph.edges(run, "a", direction="both")] == [("a", "c")]
    assert [(e.source, e.target) for e in db.graph.edges(run, "c", direction="both")] == [("a", "c")]
    assert db.graph.delete_node(run, "b") is False
    assert db.replay_run(run) == db.run_state(run)


def test_transaction_is_atomic_and_sees_its_own_writes(db, run):
    with pytest.raises(RuntimeError):
        with db.transaction() as tx:
            tx.graph.add_node(run, "x", id="x")
            tx.graph.add_node(run, "y", id="y")
            tx.graph.add_edge(run, "x", "r", "y")
            assert [n.id for n in tx.graph.neighbors(run, "x")] == ["y"]
            assert tx.graph.shortest_path(run, "x", "y") == ["x", "y"]
            raise RuntimeError("roll back")
    assert db.graph.nodes(run) == []


def test_a_traversal_in_a_transaction_joins_its_read_set(db, run):
    _abc(db, run)
    db.graph.add_edge(run, "a", "r", "b")
    tx = db.transaction()
    assert [n.id for n in tx.graph.neighbors(run, "a")] == ["b"]
    db.graph.add_edge(run, "a", "r", "c")  # another commit changes what the traversal read
    tx.graph.add_node(run, "derived", id="d")
    with pytest.raises(TransactionConflict):
        tx.commit()
    assert db.graph.get_node(run, "d") is None


def test_concurrent_acyclic_edges_cannot_both_commit(db, run):
    _abc(db, run)
    t1, t2 = db.transaction(), db.transaction()
    t1.graph.add_edge(run, "a", "dep", "b", acyclic=True)
    t2.graph.add_edge(run, "b", "dep", "a", acyclic=True)  # each alone is acyclic; together a cycle
    t1.commit()
    with pytest.raises(TransactionConflict):
        t2.commit()
    assert db.graph.has_cycle(run) is False


def test_reopen_and_replay(dbdir):
    with Database.open(dbdir) as db:
        run = db.begin_run("agent")
        _abc(db, run)
        db.graph.add_edge(run, "a", "r", "b", weight=0.25, metadata={"m": [1, 2]})
        db.graph.update_node(run, "c", "changed", metadata={"k": "v"})
        before = (db.graph.nodes(run), db.graph.edges(run, "b", direction="in"))
        db.kv.put(run, "plain", 1)
        assert db.replay_run(run) == db.run_state(run)
    with Database.open(dbdir) as db:
        assert (db.graph.nodes(run), db.graph.edges(run, "b", direction="in")) == before
        assert db.replay_run(run) == db.run_state(run)
        assert [c.ops[0].primitive for c in db.history(run)][1:3] == ["graph", "graph"]
    with Database.open(dbdir, read_only=True) as db:  # reads work on a read-only handle, writes are refused
        assert isinstance(db.graph.get_node(run, "a"), Node)
        assert isinstance(db.graph.edges(run, "a")[0], Edge) and db.graph.shortest_path(run, "a", "b") == ["a", "b"]
        with pytest.raises(DatabaseReadOnly):
            db.graph.add_node(run, "x")


# --- against networkx on random graphs -----------------------------------------------------------------

N = 7
graphs = st.lists(st.tuples(st.integers(0, N - 1), st.sampled_from(["a", "b"]), st.integers(0, N - 1)),
                  max_size=18)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    with Database.open(str(tmp_path_factory.mktemp("graph") / "db"), durability="off") as d:
        yield d


def _nx(edges, relation):
    g = nx.DiGraph()
    g.add_nodes_from(str(i) for i in range(N))
    g.add_edges_from((str(s), str(t)) for s, r, t in edges if relation is None or r == relation)
    return g


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edges=graphs, relation=st.sampled_from([None, "a"]), start=st.integers(0, N - 1),
       end=st.integers(0, N - 1), depth=st.sampled_from([None, 0, 1, 2]))
def test_traversal_matches_networkx(shared, edges, relation, start, end, depth):
    db = shared
    run = db.begin_run("random")
    with db.transaction() as tx:
        for i in range(N):
            tx.graph.add_node(run, f"n{i}", id=str(i))
        for s, r, t in edges:
            tx.graph.add_edge(run, str(s), r, str(t))
    g = _nx(edges, relation)
    a, b = str(start), str(end)
    for direction, view in (("out", g), ("in", g.reverse(copy=False)), ("both", g.to_undirected(as_view=True))):
        want = nx.single_source_shortest_path_length(view, a, cutoff=depth)
        got = list(db.graph.traverse(run, a, relation=relation, max_depth=depth, direction=direction))
        assert {n.id: d for n, d, _ in got} == want
        assert [d for _, d, _ in got] == sorted(d for _, d, _ in got)  # breadth-first order
        for node, d, path in got:
            assert path[0] == a and path[-1] == node.id and len(path) == d + 1
            assert all(view.has_edge(x, y) for x, y in zip(path, path[1:]))
        assert [n.id for n in db.graph.neighbors(run, a, relation=relation, direction=direction, depth=depth or 1)] \
            == [n.id for n, d, _ in db.graph.traverse(run, a, relation=relation, direction=direction,
                                                      max_depth=depth or 1) if d > 0]
    path = db.graph.shortest_path(run, a, b, relation)
    if nx.has_path(g, a, b):
        assert path is not None and len(path) == nx.shortest_path_length(g, a, b) + 1
        assert path[0] == a and path[-1] == b and all(g.has_edge(x, y) for x, y in zip(path, path[1:]))
    else:
        assert path is None
    assert db.graph.has_cycle(run, relation) is (not nx.is_directed_acyclic_graph(g))
    # adjacency is symmetric: every out-edge has its in-edge
    out = {(e.source, e.relation, e.target) for i in range(N) for e in db.graph.edges(run, str(i))}
    inn = {(e.source, e.relation, e.target) for i in range(N) for e in db.graph.edges(run, str(i), direction="in")}
    assert out == inn == {(str(s), r, str(t)) for s, r, t in edges}


def test_fork_copies_the_graph(db, run):
    _abc(db, run)
    db.graph.add_edge(run, "a", "r", "b")
    child = db.fork_run(run)
    assert db.graph.nodes(child) == db.graph.nodes(run)
    assert db.graph.edges(child, "b", direction="in") == db.graph.edges(run, "b", direction="in")
    db.graph.delete_node(child, "a")  # the fork is independent
    assert db.graph.get_node(run, "a") is not None and db.graph.edges(child, "b", direction="in") == []


@pytest.mark.parametrize("damage,message", [
    ("drop-in", "has no in-edge key"),
    ("drop-out", "has no edge record"),
    ("drop-node", "is not a node"),
    ("bad-record", "does not decode"),
    ("bad-key", "malformed graph key"),
    ("bad-index-key", "malformed full-text index key"),
    ("stale-posting", "stale posting"),
])
def test_verify_checks_adjacency(dbdir, damage, message):
    from inmem.codec import encode_value
    from inmem.keys import TAG_GRAPH, run_id_bytes, run_prefix
    from inmem.testing import kernel
    from inmem.verify import verify_directory

    with Database.open(dbdir) as db:
        run = db.begin_run("agent")
        _abc(db, run)
        db.graph.add_edge(run, "a", "r", "b")
        db.graph.add_edge(run, "b", "r", "c")
        assert db.graph.check(run) == {"nodes": 3, "edges": 2, "problems": []}
    report = verify_directory(dbdir)
    assert report["ok"] and (report["graph_nodes"], report["graph_edges"]) == (3, 2)
    with Database.open(dbdir) as db:
        base = run_prefix(run_id_bytes(run), TAG_GRAPH)
        key, value = {"drop-in": (b"i\x00b\x00r\x00a", None), "drop-out": (b"o\x00a\x00r\x00b", None),
                      "drop-node": (b"n\x00c", None), "bad-record": (b"n\x00a", encode_value([1])),
                      "bad-key": (b"q\x00y", encode_value(None)),
                      "bad-index-key": (b"x\x00zz", encode_value(None)),
                      "stale-posting": (b"x\x00tcat\x00a", encode_value([1, 1]))}[damage]
        kernel(db).commit([(base + key, value)], (run,))
    report = verify_directory(dbdir)
    assert not report["ok"] and any(message in p for p in report["problems"]), report["problems"]
