"""Search over the memory graph (``db.graph.search`` / ``tx.graph.search``): BM25 text search checked
against a plain-Python model of the formula over the current node contents under hypothesis, exact
vector search against numpy, hybrid against reciprocal rank fusion of the two, node vectors kept with
their nodes (given or embedded), the read set of a search in a transaction, and bad input refused
before anything is written.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inmem import Database, InvalidArgument, InvalidValue, TransactionConflict
from inmem.embeddings import HashingEmbedder
from inmem.fulltext import term_frequencies
from inmem.primitives.graphsearch import NODE_COLLECTION, fusion_depth, rrf

from .conftest import assert_refused_unwritten


@pytest.fixture
def db(dbdir):
    with Database.open(dbdir, durability="off") as d:
        yield d


@pytest.fixture
def run(db):
    return db.begin_run("agent")


def call(db, where, name, *args, **kwargs):
    if where == "db":
        return getattr(db.graph, name)(*args, **kwargs)
    with db.transaction() as tx:
        return getattr(tx.graph, name)(*args, **kwargs)


BOTH = pytest.mark.parametrize("where", ["db", "tx"])


def model_bm25(contents: dict[str, str], query: str, *, stem: bool = False) -> dict[str, float]:
    """BM25 (k1 1.2, b 0.75, Lucene idf) computed directly from the node contents: the oracle."""
    tfs = {id: term_frequencies(text, stem=stem) for id, text in contents.items()}
    N = len(tfs)
    if N == 0:
        return {}
    avgdl = sum(sum(tf.values()) for tf in tfs.values()) / N
    if avgdl == 0:
        return {}
    scores: dict[str, float] = {}
    for term in set(term_frequencies(query, stem=stem)):
        holders = [id for id, tf in tfs.items() if term in tf]
        n = len(holders)
        idf = math.log(1 + (N - n + 0.5) / (n + 0.5))
        for id in holders:
            tf, dl = tfs[id][term], sum(tfs[id].values())
            scores[id] = scores.get(id, 0.0) + idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / avgdl))
    return scores


def top(scores: dict[str, float], k: int) -> list[tuple[str, float]]:
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def assert_ranking(hits, expected):
    assert [h.node.id for h in hits] == [id for id, _ in expected]
    for h, (_, score) in zip(hits, expected):
        assert h.score == pytest.approx(score, rel=1e-9)


# --- text ------------------------------------------------------------------------------------------


@BOTH
def test_text_search_contract(db, run, where):
    db.graph.add_node(run, "the cat sat on the mat", id="a", kind="fact", metadata={"n": 1})
    db.graph.add_node(run, "dogs chase the cat", id="b", kind="obs", metadata={"n": 2})
    db.graph.add_node(run, "a quick brown fox", id="c", kind="fact", metadata={"n": 3})
    contents = {n.id: n.content for n in db.graph.nodes(run)}
    hits = call(db, where, "search", run, "Cat MAT")
    assert_ranking(hits, top(model_bm25(contents, "cat mat"), 10))
    assert hits[0].node == db.graph.get_node(run, "a")
    assert_ranking(call(db, where, "search", run, "cat", kind="obs"), [("b", model_bm25(contents, "cat")["b"])])
    assert [h.node.id for h in call(db, where, "search", run, "cat", filter={"n": {"$gte": 2}})] == ["b"]
    assert call(db, where, "search", run, "zebra") == []
    assert call(db, where, "search", run, "...") == []
    assert len(call(db, where, "search", run, "cat", k=1)) == 1


def test_text_index_follows_updates_and_deletes(db, run):
    db.graph.add_node(run, "red apples", id="a")
    db.graph.add_node(run, "green apples", id="b")
    db.graph.update_node(run, "a", "blue berries")
    assert [h.node.id for h in db.graph.search(run, "apples")] == ["b"]
    assert [h.node.id for h in db.graph.search(run, "berries")] == ["a"]
    db.graph.update_node(run, "a", metadata={"x": 1})  # metadata only: the index is untouched
    assert [h.node.id for h in db.graph.search(run, "berries")] == ["a"]
    db.graph.delete_node(run, "b")
    assert db.graph.search(run, "apples") == []
    assert db.graph.check(run)["problems"] == []


_WORDS = st.sampled_from(["cat", "dog", "mat", "fox", "sun", "moon", "red", "blue"])
_TEXT = st.lists(_WORDS, min_size=0, max_size=6).map(" ".join)
_OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(0, 7), _TEXT, st.sampled_from([None, "a", "b"])),
    st.tuples(st.just("update"), st.integers(0, 7), _TEXT, st.none()),
    st.tuples(st.just("delete"), st.integers(0, 7), st.just(""), st.none()),
), max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS, query=st.lists(_WORDS, min_size=1, max_size=3).map(" ".join), k=st.integers(1, 5),
       kind=st.sampled_from([None, "a", "b"]), in_tx=st.booleans())
def test_text_search_matches_the_formula(tmp_path, ops, query, k, kind, in_tx):
    """Any sequence of node adds, content updates and deletes, in or out of one transaction: the
    search ranks exactly as BM25 computed from the current contents, and verify finds no problem."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=tmp_path) as d, Database.open(d, durability="off") as db:
        run = db.begin_run("r")
        contents: dict[str, str] = {}
        kinds: dict[str, str | None] = {}

        def apply(graph):
            for op, i, text, knd in ops:
                id = f"n{i}"
                if op == "add" and id not in contents:
                    graph.add_node(run, text, id=id, kind=knd)
                    contents[id], kinds[id] = text, knd
                elif op == "update" and id in contents:
                    graph.update_node(run, id, text)
                    contents[id] = text
                elif op == "delete":
                    assert graph.delete_node(run, id) == (id in contents)
                    contents.pop(id, None)

        if in_tx:
            with db.transaction() as tx:
                apply(tx.graph)
                expected = model_bm25(contents, query)
                if kind is not None:
                    expected = {i: s for i, s in expected.items() if kinds[i] == kind}
                assert_ranking(tx.graph.search(run, query, k=k, kind=kind), top(expected, k))
        else:
            apply(db.graph)
        expected = model_bm25(contents, query)
        if kind is not None:
            expected = {i: s for i, s in expected.items() if kinds[i] == kind}
        assert_ranking(db.graph.search(run, query, k=k, kind=kind), top(expected, k))
        assert db.graph.check(run)["problems"] == []


def test_stemming_is_a_run_setting_fixed_before_the_first_node(db, run, dbdir):
    assert db.graph.configure(run, stem=True) == {"stem": True, "vectors": None}
    db.graph.add_node(run, "the cats were running", id="a")
    assert [h.node.id for h in db.graph.search(run, "cat")] == ["a"]
    assert db.graph.configure(run, stem=True)["stem"] is True  # idempotent
    assert_refused_unwritten(db, dbdir, lambda: db.graph.configure(run, stem=False), InvalidArgument)
    other = db.begin_run("plain")
    db.graph.add_node(other, "the cats were running", id="a")
    assert db.graph.search(other, "cat") == []
    assert_refused_unwritten(db, dbdir, lambda: db.graph.configure(other, stem=True), InvalidArgument)


# --- vectors ---------------------------------------------------------------------------------------


def test_node_vectors_given_are_searched_exactly(db, run):
    rng = np.random.default_rng(5)
    vecs = {f"n{i}": rng.standard_normal(8).astype(np.float32) for i in range(40)}
    for i, (id, v) in enumerate(vecs.items()):
        db.graph.add_node(run, f"memory {i}", id=id, kind="even" if i % 2 == 0 else "odd", vector=v)
    assert db.vectors.info(run, NODE_COLLECTION)["dim"] == 8
    q = rng.standard_normal(8).astype(np.float32)

    def cos(v):
        return float(np.dot(v, q) / (np.linalg.norm(v) * np.linalg.norm(q)))

    want = sorted(((cos(v), id) for id, v in vecs.items()), reverse=True)
    hits = db.graph.search(run, "ignored", mode="vector", vector=q, k=5)
    assert [h.node.id for h in hits] == [id for _, id in want[:5]]
    assert [h.score for h in hits] == pytest.approx([s for s, _ in want[:5]], rel=1e-5)
    odd = [(s, id) for s, id in want if int(id[1:]) % 2 == 1]
    hits = db.graph.search(run, "ignored", mode="vector", vector=q, k=15, kind="odd")
    assert [h.node.id for h in hits] == [id for _, id in odd[:15]]
    db.graph.delete_node(run, "n0")
    assert "n0" not in db.vectors.ids(run, NODE_COLLECTION)
    assert db.graph.check(run)["problems"] == []


def test_embedder_embeds_contents_and_queries(db, run):
    emb = HashingEmbedder(dim=64)
    assert db.graph.configure(run, embedder=emb)["vectors"]["dim"] == 64
    db.graph.add_node(run, "paris is the capital of france", id="p")
    db.graph.add_node(run, "berlin is the capital of germany", id="b")
    before = db.vectors.get(run, NODE_COLLECTION, "p").vector
    assert np.allclose(before, emb(["paris is the capital of france"])[0])
    assert db.graph.search(run, "capital of france", mode="vector", k=1)[0].node.id == "p"
    db.graph.update_node(run, "p", "rome is the capital of italy")  # new content: re-embedded
    assert np.allclose(db.vectors.get(run, NODE_COLLECTION, "p").vector, emb(["rome is the capital of italy"])[0])
    db.graph.update_node(run, "p", metadata={"k": 1})  # metadata only: the vector stays
    assert np.allclose(db.vectors.get(run, NODE_COLLECTION, "p").vector, emb(["rome is the capital of italy"])[0])


def test_database_embedder_gives_nodes_vectors(dbdir):
    with Database.open(dbdir, durability="off", embedder=HashingEmbedder(dim=32)) as db:
        run = db.begin_run("r")
        db.graph.add_node(run, "hello world", id="h")
        assert db.vectors.info(run, NODE_COLLECTION)["dim"] == 32
        assert db.graph.search(run, "hello", mode="vector")[0].node.id == "h"


def test_hybrid_is_rrf_of_text_and_vector(db, run):
    emb = HashingEmbedder(dim=64)
    db.graph.configure(run, embedder=emb)
    texts = ["alpha beta", "beta gamma", "gamma delta alpha", "delta epsilon", "epsilon alpha alpha", "zeta"]
    for i, t in enumerate(texts):
        db.graph.add_node(run, t, id=f"n{i}")
    k = 3
    depth = fusion_depth(k)
    text = [h.node.id for h in db.graph.search(run, "alpha delta", k=depth)]
    vec = [h.node.id for h in db.graph.search(run, "alpha delta", k=depth, mode="vector")]
    want = rrf([text, vec])[:k]
    hits = db.graph.search(run, "alpha delta", k=k, mode="hybrid")
    assert [(h.node.id, h.score) for h in hits] == [(id, pytest.approx(s)) for id, s in want]
    assert hits[0].score == pytest.approx(sum(1 / (60 + r) for r in (
        text.index(hits[0].node.id) + 1, vec.index(hits[0].node.id) + 1) if True))


def test_rrf():
    assert rrf([["a", "b"], ["b", "c"]]) == [("b", 1 / 62 + 1 / 61), ("a", 1 / 61), ("c", 1 / 62)]
    assert rrf([]) == []


# --- errors ----------------------------------------------------------------------------------------


def test_bad_input_refused_before_writing(db, run, dbdir):
    db.graph.add_node(run, "first", id="a", vector=[1.0, 0.0, 0.0])
    refuse = lambda fn, err: assert_refused_unwritten(db, dbdir, fn, err)  # noqa: E731
    refuse(lambda: db.graph.add_node(run, "x", vector=[1.0, 2.0]), InvalidValue)  # wrong dim
    refuse(lambda: db.graph.add_node(run, "x", vector=[0.0, 0.0, 0.0]), InvalidArgument)  # zero under cosine
    refuse(lambda: db.graph.add_node(run, "x", vector=[1.0, float("nan"), 0.0]), InvalidValue)
    refuse(lambda: db.graph.add_node(run, "x", vector="abc"), InvalidValue)
    refuse(lambda: db.graph.update_node(run, "a", "new text", vector=[1.0]), InvalidValue)
    refuse(lambda: db.graph.configure(run, dim=4), InvalidArgument)  # the collection has dim 3
    refuse(lambda: db.graph.configure(run, embedder=lambda texts: None), InvalidArgument)  # no dim
    with db.transaction() as tx:  # in a transaction, the refused call leaves nothing behind either
        with pytest.raises(InvalidValue):
            tx.graph.add_node(run, "y", id="y", vector=[1.0])
        assert tx.graph.get_node(run, "y") is None and tx.graph.search(run, "y") == []
    for bad in (dict(k=0), dict(k=10_001), dict(k=True), dict(mode="fuzzy"), dict(filter={"$bad": 1}),
                dict(kind="")):
        with pytest.raises(InvalidArgument):
            db.graph.search(run, "first", **bad)
    with pytest.raises(InvalidArgument):
        db.graph.search(run, b"first")
    with pytest.raises(InvalidValue):
        db.graph.search(run, "first", mode="vector", vector=[1.0])
    with pytest.raises(InvalidArgument, match="embedder"):
        db.graph.search(run, "first", mode="vector")  # a str query and no embedder
    other = db.begin_run("empty")
    with pytest.raises(InvalidArgument, match="no node"):
        db.graph.search(other, "x", mode="hybrid")
    assert db.graph.search(other, "x") == []


def test_failing_embedder_writes_nothing(db, run, dbdir):
    def broken(texts):
        raise RuntimeError("model offline")

    broken.dim = 4
    db.graph.configure(run, embedder=broken)
    assert_refused_unwritten(db, dbdir, lambda: db.graph.add_node(run, "x"), InvalidValue)


# --- transactions ----------------------------------------------------------------------------------


def test_search_in_a_transaction_reads_what_it_searched(db, run):
    """A phantom through the text index: a node that would have matched, committed after the
    transaction searched, makes the transaction conflict."""
    db.graph.add_node(run, "cats purr", id="a")
    with pytest.raises(TransactionConflict):
        with db.transaction() as tx:
            assert [h.node.id for h in tx.graph.search(run, "cats")] == ["a"]
            db.graph.add_node(run, "cats hunt", id="b")  # concurrent commit
            tx.kv.put(run, "seen", 1)
    # Scores depend on N and the average length, so any indexing after the search conflicts too
    # (the stats record was read) — while indexing transactions never conflict with each other.
    t1, t2 = db.transaction(), db.transaction()
    t1.graph.add_node(run, "fish swim", id="f")
    t2.graph.add_node(run, "birds fly", id="g")
    t1.commit()
    t2.commit()
    assert db.graph.check(run) == {"nodes": 4, "edges": 0, "problems": []}
    assert [h.node.id for h in db.graph.search(run, "fish birds")] == ["f", "g"] or \
        [h.node.id for h in db.graph.search(run, "fish birds")] == ["g", "f"]


def test_search_sees_its_own_writes(db, run):
    with db.transaction() as tx:
        tx.graph.add_node(run, "owls hoot", id="o", vector=[0.0, 1.0])
        assert [h.node.id for h in tx.graph.search(run, "owls")] == ["o"]
        assert [h.node.id for h in tx.graph.search(run, "owls", mode="vector", vector=[0.0, 1.0])] == ["o"]
    assert db.graph.check(run)["problems"] == []


def test_verify_finds_a_vector_without_its_node(db, run):
    db.graph.add_node(run, "x", id="a", vector=[1.0, 0.0])
    db.vectors.upsert(run, NODE_COLLECTION, "ghost", [0.0, 1.0])
    assert any("ghost" in p for p in db.graph.check(run)["problems"])
    assert [h.node.id for h in db.graph.search(run, "x", mode="vector", vector=[0.0, 1.0])] == ["a"]


def test_a_slow_embedder_never_holds_the_commit_lock(db, run):
    """Autocommit add_node runs as an optimistic transaction: while its embedder works (here: blocks until
    told), other commits go through; then the node commits with its vector."""
    import threading

    inside, release = threading.Event(), threading.Event()

    def embedder(texts):
        inside.set()
        assert release.wait(30)
        return np.ones((len(texts), 4), dtype=np.float32)

    embedder.dim = 4
    db.graph.configure(run, embedder=embedder)
    t = threading.Thread(target=lambda: db.graph.add_node(run, "slow thought", id="s"))
    t.start()
    assert inside.wait(30)
    db.kv.put(run, "meanwhile", 1)  # would wait for the lock if the embedder ran under it
    db.graph.add_node(run, "quick", id="q", vector=[1.0, 0.0, 0.0, 0.0])
    release.set()
    t.join()
    assert db.kv.get(run, "meanwhile") == 1 and db.graph.get_node(run, "s").content == "slow thought"
    assert db.graph.check(run)["problems"] == []
