"""The memory graph with the rest of inmem: replay and run state, diff, fork, ``db.history`` and the
audit trail ``db.graph.history`` (before/after of every change to a node and its edges, the
``delete_node`` cascade included), and the graph's full-text index kept out of the views but forked.

Replay is checked against a plain-Python model of the graph under hypothesis: after every random
operation, ``replay_run(run, at_version=v)`` equals the model after that many operations, and the
history lists exactly one op per node or edge change (no in-edge markers).
"""

from __future__ import annotations

import copy
import hashlib
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inmem import CorruptionError, Database, Edge, InvalidArgument, Node, RunNotFound, fulltext
from inmem.codec import encode_value
from inmem.keys import TAG_GRAPH, run_prefix
from inmem.primitives.graph import Graph
from inmem.replay import GraphChange, GraphState
from inmem.testing import kernel, overwrite_value


@pytest.fixture
def db(dbdir):
    with Database.open(dbdir, durability="off") as d:
        yield d


@pytest.fixture
def run(db):
    return db.begin_run("agent")


def version(db) -> int:
    return db.stats()["commit_version"]


def view(graph: GraphState) -> tuple[dict, dict]:
    """``(nodes, edges)`` as plain data, without the times: what the model predicts."""
    nodes = {}
    for id, n in graph.nodes.items():
        assert n.id == id and n.content_hash == hashlib.sha256(n.content.encode()).hexdigest()
        nodes[id] = (n.kind, n.content, None if n.metadata is None else dict(n.metadata))
    edges = {}
    for key, e in graph.edges.items():
        assert key == (e.source, e.relation, e.target)
        edges[key] = (e.weight, None if e.metadata is None else dict(e.metadata))
    return nodes, edges


# --- replay against a model, under hypothesis ---------------------------------------------------------

IDS = st.sampled_from(["a", "b", "c", "d"])
RELS = st.sampled_from(["r", "s"])
META = st.one_of(st.none(), st.dictionaries(st.sampled_from(["x", "y"]), st.integers(0, 3), max_size=2))
TEXT = st.text(alphabet="ab ", max_size=4)
OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), IDS, TEXT, st.sampled_from([None, "fact"]), META),
    st.tuples(st.just("update"), IDS, st.one_of(st.none(), TEXT), META),
    st.tuples(st.just("delete"), IDS),
    st.tuples(st.just("edge"), IDS, RELS, IDS, st.sampled_from([1.0, 0.5, 2.0]), META),
    st.tuples(st.just("edge"), IDS, RELS, IDS, st.sampled_from([1.0, 0.5, 2.0]), META),  # edges twice as often
    st.tuples(st.just("unedge"), IDS, RELS, IDS),
    st.tuples(st.just("reedge"), st.integers(0, 9), st.sampled_from([1.0, 0.5, 2.0]), META),  # an existing edge
    st.tuples(st.just("unedge"), st.integers(0, 9)),  # an existing edge
), min_size=1, max_size=16).map(lambda ops: [("add", i, "", None, None) for i in "abc"] + ops)  # a, b, c exist


def apply(db, run, nodes: dict, edges: dict, op: tuple) -> list[tuple[str, object]]:
    """Apply ``op`` to the database and to the model; return the ``(kind, key)`` history ops it should make."""
    name, *args = op
    if name in ("reedge", "unedge") and type(args[0]) is int:  # the i-th existing edge (mod their number)
        if not edges:
            return []
        key = sorted(edges)[args[0] % len(edges)]
        name, args = ("edge", [*key, *args[1:]]) if name == "reedge" else ("unedge", list(key))
    if name == "add" or (name == "update" and args[0] in nodes):
        id = args[0]
        content, meta = (args[1], args[3]) if name == "add" else (args[1], args[2])
        if id not in nodes:
            db.graph.add_node(run, content, id=id, kind=args[2], metadata=meta)
            nodes[id] = (args[2], content, meta)
            return [("add_node", id)]
        db.graph.update_node(run, id, content, metadata=meta)
        kind, old_content, old_meta = nodes[id]
        merged = old_meta if meta is None else {**(old_meta or {}), **meta}
        nodes[id] = (kind, old_content if content is None else content, merged)
        return [("update_node", id)]
    if name == "delete":
        assert db.graph.delete_node(run, args[0]) == (args[0] in nodes)
        if args[0] not in nodes:
            return []
        del nodes[args[0]]
        gone = [k for k in edges if args[0] in (k[0], k[2])]
        for k in gone:
            del edges[k]
        return [("delete_node", args[0])] + [("remove_edge", k) for k in gone]
    if name == "edge":
        s, r, t, w, meta = args
        if s not in nodes or t not in nodes:
            return []
        db.graph.add_edge(run, s, r, t, weight=w, metadata=meta)
        kind = "update_edge" if (s, r, t) in edges else "add_edge"
        edges[(s, r, t)] = (w, meta)
        return [(kind, (s, r, t))]
    if name == "unedge":
        key = tuple(args)
        assert db.graph.remove_edge(run, *key) == (key in edges)
        return [("remove_edge", edges.pop(key) and key)] if key in edges else []
    return []  # update of a missing node: nothing to do


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_replay_at_every_version_equals_the_model(ops):
    with tempfile.TemporaryDirectory() as d, Database.open(d, durability="off") as db:
        run = db.begin_run("g")
        nodes: dict = {}
        edges: dict = {}
        seen = [(version(db), {}, {})]
        expected_ops: dict[int, list] = {}
        for op in ops:
            made = apply(db, run, nodes, edges, op)
            if made:
                expected_ops[version(db)] = made
                seen.append((version(db), copy.deepcopy(nodes), copy.deepcopy(edges)))
        for v, n, e in seen:
            assert view(db.replay_run(run, at_version=v).graph) == (n, e)
        live = db.run_state(run)
        assert db.replay_run(run) == live and view(live.graph) == (nodes, edges)
        # one history op per node or edge change, none for the in-edge markers
        got = {c.version: [(o.kind, o.key) for o in c.ops] for c in db.history(run) if c.ops[0].primitive == "graph"}
        assert {v: sorted(x, key=repr) for v, x in got.items()} == {v: sorted(x, key=repr)
                                                                  for v, x in expected_ops.items()}
        # the audit trail of each node chains before -> after and ends at the node and its edges now
        for id in ("a", "b", "c", "d"):
            current: dict = {}
            for ch in db.graph.history(run, id):
                assert ch.before == current.get(ch.key)
                if ch.after is None:
                    current.pop(ch.key, None)
                else:
                    current[ch.key] = ch.after
            want = {k: v for k, v in live.graph.edges.items() if id in (k[0], k[2])}
            if id in live.graph.nodes:
                want[id] = live.graph.nodes[id]
            assert current == want


def test_graph_state_is_read_only_and_compares_as_data(db, run):
    db.graph.add_node(run, "x", id="a", metadata={"tags": ["t"], "n": {"m": 1}})
    db.graph.add_node(run, "y", id="b")
    db.graph.add_edge(run, "a", "r", "b", metadata={"w": [1]})
    state = db.run_state(run)
    g = state.graph
    assert len(g) == 2 and bool(g) and list(g.edges) == [("a", "r", "b")]
    assert isinstance(g.nodes["a"], Node) and isinstance(g.edges[("a", "r", "b")], Edge)
    for mutate in (lambda: g.nodes.__setitem__("c", None), lambda: g.edges.pop(("a", "r", "b")),
                   lambda: g.nodes["a"].metadata.__setitem__("n", 2), lambda: g.nodes["a"].metadata["tags"].append(1),
                   lambda: g.edges[("a", "r", "b")].metadata["w"].append(2)):
        with pytest.raises(TypeError):
            mutate()
    assert state == db.replay_run(run) and g == db.replay_run(run).graph
    db.graph.update_node(run, "a", metadata={"n": 3})
    assert db.run_state(run) != state and db.run_state(run).graph != g


# --- fork and diff ------------------------------------------------------------------------------------


def test_fork_has_the_same_graph_and_diff_shows_node_and_edge_changes(db, run):
    for id in "abc":
        db.graph.add_node(run, f"node {id}", id=id, kind="fact", metadata={"v": 1})
    db.graph.add_edge(run, "a", "r", "b", weight=1.0)
    db.graph.add_edge(run, "b", "r", "c", weight=1.0)
    db.graph.add_edge(run, "c", "s", "a")
    at = version(db)
    fork = db.fork_run(run, name="alt")
    assert db.run_state(fork).graph == db.run_state(run).graph
    assert db.diff_runs(run, fork).is_empty()
    assert db.graph.neighbors(fork, "a") == db.graph.neighbors(run, "a")
    assert [e.target for e in db.graph.edges(fork, "a", direction="in")] == ["a"]  # in-edge markers copied
    db.graph.add_node(fork, "node d", id="d")
    db.graph.update_node(fork, "a", "node A", metadata={"v": 2})
    db.graph.update_node(fork, "c", metadata={"v": 1})  # same data, new time: not a change
    db.graph.delete_node(fork, "b")  # removes a -r-> b and b -r-> c
    db.graph.add_edge(fork, "c", "s", "a", weight=0.25)
    db.graph.add_edge(fork, "d", "r", "a")
    d = db.diff_runs(run, fork)
    assert not d.is_empty() and bool(d.graph)
    assert set(d.graph.nodes.added) == {"d"} and set(d.graph.nodes.removed) == {"b"}
    assert set(d.graph.nodes.changed) == {"a"}
    before, after = d.graph.nodes.changed["a"]
    assert (before.content, dict(before.metadata), after.content, dict(after.metadata)) == (
        "node a", {"v": 1}, "node A", {"v": 2})
    assert set(d.graph.edges.added) == {("d", "r", "a")}
    assert set(d.graph.edges.removed) == {("a", "r", "b"), ("b", "r", "c")}
    assert {k: (x.weight, y.weight) for k, (x, y) in d.graph.edges.changed.items()} == {("c", "s", "a"): (1.0, 0.25)}
    text = str(d)
    assert "graph nodes: 1 added, 1 removed, 1 changed" in text and "graph edges: 1 added, 2 removed, 1 changed" in text
    assert "+ graph edges d -r-> a: weight 1" in text and "~ graph edges c -s-> a: weight 1 -> weight 0.25" in text
    # the parent at the fork point equals the fork's first state; a fork at a past version too
    assert db.diff_runs(run, run, at_a=at).is_empty()
    old = db.fork_run(fork, at_version=at + 1)
    assert view(db.run_state(old).graph) == view(db.replay_run(fork, at_version=at + 1).graph)


# --- history and the audit trail ----------------------------------------------------------------------


def test_graph_history_before_after_and_the_delete_cascade(db, run):
    db.graph.add_node(run, "alpha", id="a", metadata={"k": 1})
    db.graph.add_node(run, "beta", id="b")
    db.graph.add_node(run, "gamma", id="c")
    db.graph.add_edge(run, "a", "cites", "b", weight=1.0)
    db.graph.add_edge(run, "c", "cites", "a")
    db.graph.add_edge(run, "a", "self", "a")
    db.graph.add_edge(run, "b", "cites", "c")  # not a's: never in a's audit trail
    db.graph.update_node(run, "a", "alpha 2", metadata={"j": 2})
    db.graph.add_edge(run, "a", "cites", "b", weight=0.5, metadata={"why": "x"})
    deleted_at = version(db) + 1
    assert db.graph.delete_node(run, "a")
    trail = db.graph.history(run, "a")
    assert all(isinstance(c, GraphChange) for c in trail)
    assert [(c.op, c.key) for c in trail[:6]] == [
        ("add_node", "a"), ("add_edge", ("a", "cites", "b")), ("add_edge", ("c", "cites", "a")),
        ("add_edge", ("a", "self", "a")), ("update_node", "a"), ("update_edge", ("a", "cites", "b"))]
    versions = [c.version for c in trail]
    assert versions == sorted(versions) and trail[0].ts <= trail[-1].ts
    upd = trail[4]
    assert (upd.before.content, dict(upd.before.metadata)) == ("alpha", {"k": 1})
    assert (upd.after.content, dict(upd.after.metadata)) == ("alpha 2", {"k": 1, "j": 2})
    assert upd.after.created_us == upd.before.created_us
    e = trail[5]
    assert (e.before.weight, e.before.metadata, e.after.weight, dict(e.after.metadata)) == (1.0, None, 0.5,
                                                                                          {"why": "x"})
    cascade = trail[6:]
    assert {c.version for c in cascade} == {deleted_at}
    assert sorted((c.op, c.key) for c in cascade) == [
        ("delete_node", "a"), ("remove_edge", ("a", "cites", "b")), ("remove_edge", ("a", "self", "a")),
        ("remove_edge", ("c", "cites", "a"))]
    assert all(c.after is None and c.before is not None for c in cascade)
    assert next(c for c in cascade if c.op == "delete_node").before.content == "alpha 2"
    # db.history: one op per change, the cascade in one commit, no in-edge markers
    last = db.history(run)[-1]
    assert last.version == deleted_at and sorted((o.kind, o.key) for o in last.ops) == sorted(
        (c.op, c.key) for c in cascade)
    assert all(o.value is None for o in last.ops)
    add_edge = next(c for c in db.history(run) if c.ops[0].key == ("a", "cites", "b"))
    assert len(add_edge.ops) == 1 and isinstance(add_edge.ops[0].value, Edge)
    # b's trail has its own edges only
    assert [(c.op, c.key) for c in db.graph.history(run, "b")][:2] == [("add_node", "b"),
                                                                       ("add_edge", ("a", "cites", "b"))]
    assert db.graph.history(run, "never") == []


def test_graph_history_errors_fork_and_read_only(db, dbdir, run):
    db.graph.add_node(run, "x", id="a")
    with pytest.raises(InvalidArgument):
        db.graph.history(run, "")
    with pytest.raises(InvalidArgument):
        db.graph.history(run, 7)
    with pytest.raises(RunNotFound):
        db.graph.history("no-such-run", "a")
    with db.transaction() as tx:
        assert not hasattr(tx.graph, "history")  # the audit trail is of committed history: db.graph.history
    assert "history" in dir(db.graph)
    fork = db.fork_run(run)
    db.graph.update_node(fork, "a", "y")
    assert [(c.op, c.before and c.before.content, c.after.content) for c in db.graph.history(fork, "a")] == [
        ("add_node", None, "x"), ("update_node", "x", "y")]
    assert [c.op for c in db.graph.history(run, "a")] == ["add_node"]
    db.close()
    with Database.open(dbdir, read_only=True) as ro:
        assert [c.op for c in ro.graph.history(fork, "a")] == ["add_node", "update_node"]


def test_a_damaged_graph_record_is_corruption_not_a_wrong_state(db, run):
    db.graph.add_node(run, "x", id="a")
    db.graph.add_node(run, "y", id="b")
    db.graph.add_edge(run, "a", "r", "b")
    base = run_prefix(kernel(db).registry.check(run, write=False), TAG_GRAPH)
    good = db.run_state(run)
    overwrite_value(db, base + b"o\x00a\x00r\x00b", encode_value({"weight": "heavy"}))
    with pytest.raises(CorruptionError, match="graph edge 'a' -'r'-> 'b' is not an edge record"):
        db.run_state(run)
    assert db.replay_run(run) == good  # the history is intact: replay rebuilds the right state
    overwrite_value(db, base + b"o\x00a\x00r\x00b", encode_value({"weight": 1.0, "metadata": None,
                                                                  "created_us": 1, "updated_us": 1}))
    assert set(db.run_state(run).graph.edges) == {("a", "r", "b")}


# --- the graph's full-text index: derived, not shown, but forked ----------------------------------------


def test_text_index_keys_are_not_nodes_but_are_forked(db, run):
    db.graph.add_node(run, "the quick brown fox", id="a")
    rid = kernel(db).registry.check(run, write=False)
    base = run_prefix(rid, TAG_GRAPH) + b"x\x00"  # where the graph keeps its full-text index (SPEC.md §2)
    with db.transaction() as tx:
        fulltext.index_doc(tx, run, base, "a", "the quick brown fox")
    state = db.run_state(run)
    assert list(state.graph.nodes) == ["a"] and not state.graph.edges
    assert db.replay_run(run) == state
    assert [o.kind for c in db.history(run) for o in c.ops if o.primitive == "graph"] == ["add_node"]
    fork = db.fork_run(run)
    assert db.diff_runs(run, fork).is_empty()
    fbase = run_prefix(kernel(db).registry.check(fork, write=False), TAG_GRAPH) + b"x\x00"
    with db.transaction() as tx:
        assert [d for d, _ in fulltext.search(tx, fbase, "fox")] == ["a"]
        assert fulltext.check_index(tx, fbase) == []


def test_search_works_in_a_fork_and_at_a_past_version(db, run):
    if not hasattr(Graph, "search"):
        pytest.skip("db.graph.search is not in this checkout yet")
    db.graph.add_node(run, "the quick brown fox", id="fox")
    db.graph.add_node(run, "a lazy dog", id="dog")
    at = version(db)
    db.graph.delete_node(run, "dog")
    fork = db.fork_run(run, name="alt")
    db.graph.add_node(fork, "the fox den", id="den")
    assert {h.node.id for h in db.graph.search(fork, "fox")} == {"fox", "den"}
    assert [h.node.id for h in db.graph.search(run, "fox")] == ["fox"]  # the parent is untouched
    old = db.fork_run(run, at_version=at)  # the index as it was at `at`, copied with the nodes
    assert [h.node.id for h in db.graph.search(old, "dog")] == ["dog"]
    for r in (run, fork, old):
        assert db.replay_run(r) == db.run_state(r) and db.graph.check(r)["problems"] == []  # postings too
    assert db.diff_runs(run, old).graph.nodes.removed == {}
    assert set(db.diff_runs(run, old).graph.nodes.added) == {"dog"}
