"""Full-text index (inmem.fulltext): the tokenizer, BM25 against the formula and SQLite FTS5's ranking,
incremental re-indexing without stale postings (hypothesis against a plain-Python model), and the
transactional behaviour of an index kept in the store (rollback, snapshot, no conflict on the stats).

The index lives under ``run_prefix(run, 0x7F) + b"fts"``: tag 0x7F is claimed by no primitive, so
these tests own that range (the memory graph will give the index a prefix under its own tag).
"""

from __future__ import annotations

import math
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import inmem
from inmem import Database, InvalidArgument, TransactionConflict
from inmem import fulltext as ft
from inmem.keys import prefix_end, run_id_bytes, run_prefix


@pytest.fixture
def db(dbdir):
    with Database.open(dbdir, durability="off") as d:
        yield d


def base_of(run: str) -> bytes:
    return run_prefix(run_id_bytes(run), 0x7F) + b"fts"


def index_all(db, run, docs: dict[str, str], **kw) -> bytes:
    base = base_of(run)
    with db.transaction() as tx:
        for did, text in docs.items():
            ft.index_doc(tx, run, base, did, text, **kw)
    return base


def read(db, fn, *args, **kw):
    with db.transaction() as tx:
        return fn(tx, *args, **kw)


def postings(db, base: bytes) -> dict[tuple[str, str], list[int]]:
    lo = base + b"t"
    with db.transaction() as tx:
        rows = tx.scan(lo, prefix_end(lo))
    out = {}
    for key, value in rows:
        term, _, did = key[len(lo):].partition(b"\x00")
        out[(term.decode(), did.decode())] = list(inmem.codec.decode_value(value))
    return out


# --- tokenizer -------------------------------------------------------------------------------------

def test_uses_this_worktree():
    assert "fulltext" in ft.__file__


def test_tokenize_casefolds_normalises_and_splits_on_word_boundaries():
    assert ft.tokenize("The Quick, brown FOX!") == ["the", "quick", "brown", "fox"]
    assert ft.tokenize("Straße ＦＵＬＬ ﬁle") == ["strasse", "full", "file"]  # casefold, NFKC width, ligature
    assert ft.tokenize("don't stop-me now_2") == ["don", "t", "stop", "me", "now_2"]
    assert ft.tokenize("Ünïcödé café") == ["ünïcödé", "café"]
    assert ft.tokenize("") == [] and ft.tokenize("  ,.; ") == []
    assert ft.tokenize("x" * 100) == ["x" * ft.MAX_TERM_CHARS]
    assert ft.tokenize("running jumped boxes cats is", stem=True) == ["runn", "jump", "box", "cat", "is"]
    with pytest.raises(InvalidArgument):
        ft.tokenize(b"bytes")  # type: ignore[arg-type]


# --- BM25 against the formula ----------------------------------------------------------------------

SMALL = {
    "a": "the cat sat on the mat",
    "b": "the dog sat on the log with the other dog",
    "c": "cats and dogs",
    "d": "a cat and a dog and a bird",
}


def direct_bm25(docs: dict[str, str], query: str, k1=1.2, b=0.75) -> dict[str, float]:
    toks = {d: t.lower().split() for d, t in docs.items()}
    N = len(toks)
    avgdl = sum(len(t) for t in toks.values()) / N
    out: dict[str, float] = {}
    for q in set(query.lower().split()):
        n = sum(q in t for t in toks.values())
        if not n:
            continue
        idf = math.log(1 + (N - n + 0.5) / (n + 0.5))
        for d, t in toks.items():
            f = t.count(q)
            if f:
                out[d] = out.get(d, 0.0) + idf * f * (k1 + 1) / (f + k1 * (1 - b + b * len(t) / avgdl))
    return out


@pytest.mark.parametrize("query", ["cat", "dog", "the dog", "cat dog bird", "sat mat", "zebra", "and a"])
def test_bm25_scores_equal_the_formula(db, query):
    run = db.begin_run()
    base = index_all(db, run, SMALL)
    want = direct_bm25(SMALL, query)
    got = read(db, ft.search, base, query, k=10)
    assert [d for d, _ in got] == sorted(want, key=lambda d: (-want[d], d))
    for d, s in got:
        assert s == pytest.approx(want[d], rel=1e-12)


def test_search_k_and_ties_by_doc_id(db):
    run = db.begin_run()
    base = index_all(db, run, {"z": "same words", "m": "same words", "a": "same words", "q": "other"})
    got = read(db, ft.search, base, "same", k=2)
    assert [d for d, _ in got] == ["a", "m"] and got[0][1] == got[1][1]
    assert read(db, ft.search, base, "", k=3) == []
    assert read(db, ft.search, base_of(db.begin_run()), "same") == []  # empty index


# --- ranking against SQLite FTS5 ---------------------------------------------------------------------

CORPUS = [
    "The quick brown fox jumps over the lazy dog",
    "A lazy afternoon with a sleeping dog and a sleeping cat",
    "Foxes are quick and clever animals that hunt at night",
    "The agent stored its memory in the database before the crash",
    "Memory consolidation happens during sleep in many animals",
    "Vector search finds the nearest neighbours of an embedding",
    "Full text search ranks documents with the BM25 formula",
    "The database writes every commit to a write ahead log",
    "An agent plans, acts and observes the result of each tool call",
    "Graph traversal visits each node once in breadth first order",
    "The cat watched the fox from behind the garden fence",
    "Ranking functions weigh term frequency against document length",
    "Inverse document frequency rewards rare terms over common ones",
    "The log was replayed after the crash and nothing was lost",
    "A brown dog chased a brown cat around the brown barn",
    "Hybrid search fuses text and vector rankings with reciprocal rank fusion",
    "Each memory node may carry an embedding vector and some metadata",
    "The write ahead log makes every commit durable before it returns",
    "Agents forget things unless their memory is stored somewhere durable",
    "Night animals such as owls and foxes hunt small rodents",
    "The garden was quiet in the afternoon except for a sleeping dog",
    "Search engines index documents into postings lists of terms",
    "Postings lists map each term to the documents that contain it",
    "A transaction reads a snapshot and commits only if nothing it read changed",
    "Snapshots let readers see a consistent database without locks",
    "The lazy cat ignored the quick fox and the lazy dog",
    "Documents are split into tokens by a tokenizer before indexing",
    "The tokenizer folds case and splits text on word boundaries",
    "Reciprocal rank fusion was proposed by Cormack and colleagues in 2009",
    "Robertson and Zaragoza describe the probabilistic relevance framework",
]
QUERIES = ["fox", "lazy dog", "memory agent", "search documents", "write ahead log", "brown cat",
           "sleeping afternoon", "rank fusion", "crash database", "tokenizer text boundaries", "night hunt owls"]


def fts5_ranking(query: str) -> list[tuple[str, float]]:
    con = sqlite3.connect(":memory:")
    con.execute("CREATE VIRTUAL TABLE t USING fts5(body)")
    con.executemany("INSERT INTO t(rowid, body) VALUES (?, ?)", [(i, s) for i, s in enumerate(CORPUS)])
    match = " OR ".join(f'"{w}"' for w in ft.tokenize(query))
    rows = con.execute("SELECT rowid, bm25(t) FROM t WHERE t MATCH ? ORDER BY bm25(t), rowid", (match,)).fetchall()
    con.close()
    return [(f"d{rowid:02d}", -score) for rowid, score in rows]


def test_ranking_agrees_with_sqlite_fts5(db):
    """Same tokens (ASCII words), same tf, dl and avgdl; FTS5's idf is log((N - n + 0.5) / (n + 0.5)) (floored at
    1e-6) where ours adds 1 inside the log (Lucene's), so the scores differ. Both idfs fall as n grows, but not in
    proportion, so a multi-term query could in principle rank differently (most where a term is in more than half
    the documents and FTS5's idf hits its floor); on this corpus (no query term in half the documents) every
    query's full ranking is the same."""
    run = db.begin_run()
    base = index_all(db, run, {f"d{i:02d}": s for i, s in enumerate(CORPUS)})
    for query in QUERIES:
        ours = read(db, ft.search, base, query, k=len(CORPUS))
        theirs = fts5_ranking(query)
        assert theirs, query
        assert [d for d, _ in ours] == [d for d, _ in theirs], query


# --- incremental updates leave no stale postings --------------------------------------------------------

def test_reindex_and_unindex_leave_no_stale_postings(db):
    run = db.begin_run()
    base = index_all(db, run, {"a": "red green blue", "b": "green green"})
    assert postings(db, base) == {("red", "a"): [1, 3], ("green", "a"): [1, 3], ("blue", "a"): [1, 3],
                                  ("green", "b"): [2, 2]}
    with db.transaction() as tx:
        assert ft.index_doc(tx, run, base, "a", "green yellow") is True
        assert ft.index_doc(tx, run, base, "b", "green green") is False  # unchanged: nothing written
    assert postings(db, base) == {("green", "a"): [1, 2], ("yellow", "a"): [1, 2], ("green", "b"): [2, 2]}
    assert read(db, ft.doc_terms, base, "a") == {"green": 1, "yellow": 1}
    with db.transaction() as tx:
        assert ft.unindex_doc(tx, run, base, "a") is True
        assert ft.unindex_doc(tx, run, base, "a") is False
        assert ft.unindex_doc(tx, run, base, "never") is False
    assert postings(db, base) == {("green", "b"): [2, 2]}
    assert read(db, ft.search, base, "yellow") == []
    assert read(db, ft.check_index, base) == []
    with db.transaction() as tx:
        ft.unindex_doc(tx, run, base, "b")
    with db.transaction() as tx:
        lo = base + b"t"
        assert tx.scan(lo, prefix_end(lo)) == [] and tx.lookup(base + b"s") is None  # the stats key is gone at N = 0
    assert read(db, ft.check_index, base) == []


def test_check_index_names_damage(db):
    run = db.begin_run()
    base = index_all(db, run, {"a": "one two"})
    with db.transaction() as tx:
        tx.write(run, base + b"tthree\x00a", inmem.codec.encode_value([1, 2]))
        tx.write(run, base + b"tone\x00a", None)
        tx.write(run, base + b"ttwo\x00a", b"\xff")
        tx.write(run, base + b"dbad", inmem.codec.encode_value("not a record"))
        tx.write(run, base + b"s", inmem.codec.encode_value([5, 5]))
    problems = read(db, ft.check_index, base)
    assert any("stale posting" in p for p in problems) and any("missing posting" in p for p in problems)
    assert any("'two" in p and "holds None" in p for p in problems)
    assert any("b'bad'" in p for p in problems) and any("corpus stats say [5, 5]" in p for p in problems)


ops = st.lists(st.tuples(st.sampled_from(["set", "del"]), st.sampled_from("abcde"),
                         st.lists(st.sampled_from(["x", "y", "z", "w", "Y"]), max_size=6).map(" ".join),
                         st.booleans()),  # commit after this op
               max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops)
def test_random_updates_match_a_model(db, ops):
    run = db.begin_run()
    base = base_of(run)
    model: dict[str, str] = {}
    tx = db.transaction()
    for op, did, text, commit in ops:
        if op == "set":
            ft.index_doc(tx, run, base, did, text)
            model[did] = text
        else:
            assert ft.unindex_doc(tx, run, base, did) is (did in model)
            model.pop(did, None)
        if commit:
            tx.commit()
            tx = db.transaction()
    tx.commit()
    want = {}
    for did, text in model.items():
        toks = text.lower().split()
        for t in set(toks):
            want[(t, did)] = [toks.count(t), len(toks)]
    assert postings(db, base) == want
    assert read(db, ft.check_index, base) == []
    if any(model.values()):
        expect = direct_bm25(model, "x y w")
        got = read(db, ft.search, base, "x y w", k=10)
        assert [d for d, _ in got] == sorted(expect, key=lambda d: (-expect[d], d))
        assert all(s == pytest.approx(expect[d], rel=1e-12) for d, s in got)


# --- an index kept in the store: transactional --------------------------------------------------------

def test_rollback_and_snapshot(db):
    run = db.begin_run()
    base = index_all(db, run, {"a": "alpha"})
    with pytest.raises(RuntimeError), db.transaction() as tx:
        ft.index_doc(tx, run, base, "b", "alpha beta")
        assert [d for d, _ in ft.search(tx, base, "beta")] == ["b"]  # reads its own writes
        raise RuntimeError("roll back")
    assert read(db, ft.search, base, "beta") == []
    old = db.transaction()
    index_all(db, run, {"c": "beta"})
    assert ft.search(old, base, "beta") == []  # the snapshot does not see the later commit
    old.rollback()
    assert [d for d, _ in read(db, ft.search, base, "beta")] == ["c"]


def test_indexing_different_documents_never_conflicts_on_the_stats(db):
    run = db.begin_run()
    base = index_all(db, run, {"a": "alpha"})
    t1, t2 = db.transaction(), db.transaction()
    ft.index_doc(t1, run, base, "b", "beta beta")
    ft.index_doc(t2, run, base, "c", "gamma")
    t1.commit()
    t2.commit()  # both commit: the stats were merged blindly
    assert read(db, ft.check_index, base) == []
    assert read(db, ft.search, base, "gamma")[0][0] == "c"
    t3, t4 = db.transaction(), db.transaction()
    ft.index_doc(t3, run, base, "b", "delta")
    ft.index_doc(t4, run, base, "b", "epsilon")
    t3.commit()
    with pytest.raises(TransactionConflict):  # the same document: the second writer must retry
        t4.commit()
    assert read(db, ft.doc_terms, base, "b") == {"delta": 1}


def test_search_conflicts_with_concurrent_indexing(db):
    run = db.begin_run()
    base = index_all(db, run, {"a": "alpha"})
    reader = db.transaction()
    ft.search(reader, base, "alpha")
    reader.write(run, base_of(run) + b"x-marker", b"\x01")  # make it a writer so it is validated
    index_all(db, run, {"b": "alpha"})
    with pytest.raises(TransactionConflict):
        reader.commit()


def test_bad_input_is_refused_before_anything_is_written(db):
    run = db.begin_run()
    base = base_of(run)
    with db.transaction() as tx:
        for args in [(b"", "a", "t"), ("str-base", "a", "t"), (base, "", "t"), (base, "a\x00b", "t"),
                     (base, 7, "t"), (base, "a", None), (base, "a" * 2000, "t")]:
            with pytest.raises(InvalidArgument):
                ft.index_doc(tx, run, *args)
        with pytest.raises(InvalidArgument):
            ft.search(tx, base, "q", k=0)
        with pytest.raises(InvalidArgument):
            ft.search(tx, base, 3)  # type: ignore[arg-type]
        assert tx.read_only
    index_all(db, run, {"a": "jumped"}, stem=True)
    assert [d for d, _ in read(db, ft.search, base, "jumps", stem=True)] == ["a"]
    with db.transaction() as tx:
        with pytest.raises(InvalidArgument, match="stem"):
            ft.index_doc(tx, run, base, "b", "x")  # built with stem=True
        with pytest.raises(InvalidArgument, match="stem"):
            ft.search(tx, base, "jumped")
        assert tx.read_only


def test_survives_reopen(dbdir):
    with Database.open(dbdir) as d:
        run = d.begin_run()
        base = index_all(d, run, {"a": "persisted words", "b": "other words"})
        before = read(d, ft.search, base, "words persisted")
    with Database.open(dbdir) as d:
        assert read(d, ft.search, base, "words persisted") == before
        assert read(d, ft.check_index, base) == []


def test_forked_and_snapshotted_with_its_run(dbdir):
    """Under a prefix a forking primitive copies (here the KV range, user keys ``fts/...``), the index forks with
    the run: the fork searches the same, and re-indexing in the fork leaves the parent alone; a snapshot + reopen
    keeps it."""
    from inmem.keys import TAG_KV
    with Database.open(dbdir) as d:
        run = d.begin_run()
        base = run_prefix(run_id_bytes(run), TAG_KV) + b"fts/"
        with d.transaction() as tx:
            for did, text in SMALL.items():
                ft.index_doc(tx, run, base, did, text)
        child = d.fork_run(run)
        cbase = run_prefix(run_id_bytes(child), TAG_KV) + b"fts/"
        assert read(d, ft.search, cbase, "cat dog") == read(d, ft.search, base, "cat dog")
        with d.transaction() as tx:
            ft.index_doc(tx, child, cbase, "a", "zebra")
        assert [x for x, _ in read(d, ft.search, cbase, "zebra")] == ["a"]
        assert read(d, ft.search, base, "zebra") == [] and read(d, ft.check_index, cbase) == []
        d.snapshot()
        want = read(d, ft.search, cbase, "cat zebra")
    with Database.open(dbdir) as d:
        assert read(d, ft.search, cbase, "cat zebra") == want
        assert read(d, ft.check_index, base) == [] and read(d, ft.check_index, cbase) == []
