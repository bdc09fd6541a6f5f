"""HNSW collections (``index="hnsw"``, usearch): recall, maintenance, the filter rule, transactions, errors.

* Recall: recall@10 >= 0.95 against the exact top-10 on 20,000 clustered
  vectors, and every returned score equals the exact score of that id.
* Maintenance: upserts, replacements and deletes after the graph exists are
  reflected without rebuilding it (a deleted id never comes back, a replaced
  vector is found at its new place); tombstones past the live count and a
  queue overflow rebuild it.
* The filter rule (SPEC.md §2): a small filtered subset is searched exactly
  (the exact answer, HNSW untouched); a large one over-fetches from HNSW,
  growing x4 until k rows match, and returns only matching rows.
* Transactions: a snapshot older than the collection's last change is
  answered by the exact scan, as for exact collections.
* Errors: a bad ``index`` is InvalidArgument; a missing usearch is an
  ImportError naming ``pip install 'inmem[ann]'`` at create (nothing
  written), and an exact search (logged) for an existing hnsw collection.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("usearch")

from inmem import Database, InvalidArgument  # noqa: E402
from inmem import vectorindex  # noqa: E402
from inmem.primitives.vectors import Match, score_rows, top_k, usearch_index  # noqa: E402

from .conftest import dir_bytes  # noqa: E402


class Spy:
    """Counts the HNSW graphs built and the candidate searches asked of them (sizes asked)."""

    def __init__(self, monkeypatch):
        self.built = 0
        self.asked: list[int] = []
        base = usearch_index()
        spy = self

        class Counting(base):  # type: ignore[misc, valid-type]
            def __init__(self, **kw):
                spy.built += 1
                super().__init__(**kw)

            def search(self, vectors, count=10, **kw):
                spy.asked.append(count)
                return super().search(vectors, count, **kw)

        monkeypatch.setattr(vectorindex, "usearch_index", lambda: Counting)


@pytest.fixture
def db(dbdir):
    with Database.open(dbdir, durability="off") as d:
        yield d


def clustered(rng, n: int, dim: int, clusters: int, spread: float = 0.3):
    centers = rng.normal(size=(clusters, dim))
    label = rng.integers(0, clusters, n)
    return (centers[label] + spread * rng.normal(size=(n, dim))).astype(np.float32), label, centers


def fill(db, run, collection, vectors, metadata=None, start=0):
    with db.transaction() as tx:
        for i, v in enumerate(vectors):
            tx.vectors.upsert(run, collection, f"v{start + i:06d}", v,
                              metadata=None if metadata is None else metadata[i])


def truth(model: dict[str, np.ndarray], q, k: int, metric: str = "cosine", keep=None) -> list[tuple[str, float]]:
    """The exact top-k over a dict model id -> vector (the same scoring functions as the store)."""
    ids = [i for i in sorted(model) if keep is None or keep(i)]
    if not ids:
        return []
    matrix = np.stack([model[i] for i in ids])
    return top_k(ids, score_rows(matrix, np.asarray(q, dtype=np.float32), metric), k, None)


def exact_scan(db, run, collection, q, **kw) -> list[Match]:
    """The store's reference: a search in a transaction with its own write to the collection scans."""
    tx = db.transaction()
    try:
        rec = tx.vectors.get(run, collection, "v000000")
        tx.vectors.upsert(run, collection, "v000000", rec.vector, metadata=rec.metadata, text=rec.text)
        return tx.vectors.search(run, collection, q, **kw)
    finally:
        tx.rollback()


def assert_hits(got: list[Match], want: list[tuple[str, float]]) -> None:
    assert [m.id for m in got] == [i for i, _ in want]
    assert [m.score for m in got] == pytest.approx([s for _, s in want], rel=1e-6, abs=1e-6)


def assert_same(got: list[Match], want: list[Match]) -> None:
    assert [m.id for m in got] == [m.id for m in want]
    assert [m.score for m in got] == pytest.approx([m.score for m in want], rel=1e-6, abs=1e-6)


# --- recall -------------------------------------------------------------------------------------


def test_recall_at_10_on_clustered_vectors_and_exact_scores(db, monkeypatch):
    spy = Spy(monkeypatch)
    rng = np.random.default_rng(14)
    x, _, centers = clustered(rng, 20_000, 32, 50)
    run = db.begin_run()
    assert db.vectors.create(run, "c", dim=32, index="hnsw")["index"] == "hnsw"
    fill(db, run, "c", x)
    model = {f"v{i:06d}": v for i, v in enumerate(x)}
    ids = sorted(model)
    matrix = np.stack([model[i] for i in ids])
    queries = (centers[rng.integers(0, 50, 100)] + 0.3 * rng.normal(size=(100, 32))).astype(np.float32)
    found = 0
    for q in queries:
        got = db.vectors.search(run, "c", q, k=10)
        want = top_k(ids, score_rows(matrix, q, "cosine"), 10, None)
        found += len({m.id for m in got} & {i for i, _ in want})
        assert [m.score for m in got] == sorted((m.score for m in got), reverse=True)
        exact_scores = score_rows(np.stack([model[m.id] for m in got]), q, "cosine")
        assert [m.score for m in got] == pytest.approx(exact_scores.tolist(), rel=1e-6, abs=1e-6)
    assert found / 1000 >= 0.95
    assert spy.built == 1 and len(spy.asked) == 100  # one batch build, then the graph answered


@pytest.mark.parametrize("metric", ["dot", "l2"])
def test_other_metrics_rescore_exactly(db, metric):
    rng = np.random.default_rng(3)
    x, _, centers = clustered(rng, 3_000, 16, 20)
    run = db.begin_run()
    db.vectors.create(run, "c", dim=16, metric=metric, index="hnsw")
    fill(db, run, "c", x)
    model = {f"v{i:06d}": v for i, v in enumerate(x)}
    found = 0
    for q in centers[:20] + 0.3 * rng.normal(size=(20, 16)):
        got = db.vectors.search(run, "c", q, k=10)
        want = dict(truth(model, q, 10, metric))
        found += len(set(want) & {m.id for m in got})
        for m in got:  # the exact score of that id
            assert m.score == pytest.approx(truth({m.id: model[m.id]}, q, 1, metric)[0][1], rel=1e-6, abs=1e-5)
    assert found / 200 >= 0.95


def test_a_small_collection_is_searched_exactly(db, monkeypatch):
    spy = Spy(monkeypatch)
    rng = np.random.default_rng(5)
    run = db.begin_run()
    db.vectors.create(run, "c", dim=8, index="hnsw")
    fill(db, run, "c", rng.normal(size=(vectorindex.HNSW_MIN_ROWS - 1, 8)))
    q = rng.normal(size=8)
    assert_same(db.vectors.search(run, "c", q, k=7), exact_scan(db, run, "c", q, k=7))
    assert spy.built == 0
    db.vectors.upsert(run, "c", "one-more", rng.normal(size=8))  # now HNSW_MIN_ROWS rows: the graph is built
    db.vectors.search(run, "c", q, k=7)
    assert spy.built == 1 and spy.asked


# --- incremental maintenance --------------------------------------------------------------------


def test_writes_after_the_graph_exists_are_reflected_without_a_rebuild(db, monkeypatch):
    spy = Spy(monkeypatch)
    rng = np.random.default_rng(9)
    x, _, _ = clustered(rng, 2_000, 16, 10)
    run = db.begin_run()
    db.vectors.create(run, "c", dim=16, index="hnsw")
    fill(db, run, "c", x)
    model = {f"v{i:06d}": v for i, v in enumerate(x)}
    db.vectors.search(run, "c", x[0])
    assert spy.built == 1
    # deletes: a deleted id never comes back, even queried with its own vector
    gone = [f"v{i:06d}" for i in range(0, 2_000, 7)]
    for id in gone:
        db.vectors.delete(run, "c", id)
        del model[id]
    for id in gone[:50]:
        assert id not in {m.id for m in db.vectors.search(run, "c", x[int(id[1:])], k=20)}
    # replacements: found at the new place, not at the old one
    for i in range(1, 200, 3):
        id = f"v{i:06d}"
        if id in model:
            new = (-x[i] + 0.01 * rng.normal(size=16)).astype(np.float32)
            db.vectors.upsert(run, "c", id, new, metadata={"moved": True})
            model[id] = new
            [top] = db.vectors.search(run, "c", new, k=1)
            assert (top.id, top.metadata) == (id, {"moved": True})
            assert top.score == pytest.approx(1.0, abs=1e-6)
    # inserts (some reusing the deleted rows)
    for j in range(300):
        v = rng.normal(size=16).astype(np.float32)
        db.vectors.upsert(run, "c", f"new{j}", v)
        model[f"new{j}"] = v
    assert db.vectors.search(run, "c", model["new299"], k=1)[0].id == "new299"
    found = 0
    current = np.stack(list(model.values()))
    for q in current[rng.integers(0, len(current), 30)] + 0.3 * rng.normal(size=(30, 16)):
        got = db.vectors.search(run, "c", q, k=10)
        assert {m.id for m in got} <= set(model)
        found += len({m.id for m in got} & {i for i, _ in truth(model, q, 10)})
    assert found / 300 >= 0.95
    assert spy.built == 1  # maintained in place, never rebuilt


def test_tombstones_and_an_overflowing_queue_rebuild_the_graph(db, monkeypatch):
    spy = Spy(monkeypatch)
    rng = np.random.default_rng(11)
    run = db.begin_run()
    db.vectors.create(run, "c", dim=8, index="hnsw")
    x = rng.normal(size=(2_500, 8)).astype(np.float32)
    fill(db, run, "c", x)
    db.vectors.search(run, "c", x[0])
    for i in range(1_300):  # more removals than the 1,200 rows left: rebuilt at the next search
        db.vectors.delete(run, "c", f"v{i:06d}")
    assert db.vectors.search(run, "c", x[5], k=3)[0].id != "v000005"
    assert spy.built == 2
    monkeypatch.setattr(vectorindex, "MAX_PENDING", 5)
    for i in range(20):
        db.vectors.upsert(run, "c", f"late{i}", x[i])
    assert db.vectors.search(run, "c", x[7], k=1)[0].id == "late7"
    assert spy.built == 3


# --- the filter rule --------------------------------------------------------------------------------


@pytest.fixture
def tagged(db):
    """6,000 clustered vectors; ``rare`` on 300 rows (small subset), ``half`` on every other row (large),
    ``far`` on the 11 % of rows in the 10 clusters farthest from cluster 0."""
    rng = np.random.default_rng(21)
    x, label, centers = clustered(rng, 6_000, 16, 90)
    far = set(np.argsort(-np.linalg.norm(centers - centers[0], axis=1))[:10].tolist())
    meta = [{"rare": i % 20 == 0, "half": i % 2 == 0, "far": int(label[i]) in far} for i in range(len(x))]
    run = db.begin_run()
    db.vectors.create(run, "c", dim=16, index="hnsw")
    fill(db, run, "c", x, meta)
    model = {f"v{i:06d}": v for i, v in enumerate(x)}
    return run, model, {f"v{i:06d}": m for i, m in enumerate(meta)}, centers


def test_a_small_filtered_subset_is_searched_exactly(db, monkeypatch, tagged):
    run, model, meta, centers = tagged
    db.vectors.search(run, "c", centers[0])  # the graph exists
    spy = Spy(monkeypatch)
    for q in centers[:10]:
        got = db.vectors.search(run, "c", q, k=10, filter={"rare": True})
        assert_same(got, exact_scan(db, run, "c", q, k=10, filter={"rare": True}))
        assert_hits(got, truth(model, q, 10, keep=lambda i: meta[i]["rare"]))
    assert spy.asked == []  # HNSW was not consulted


def test_a_large_filtered_subset_overfetches_and_returns_only_matches(db, monkeypatch, tagged):
    run, model, meta, centers = tagged
    monkeypatch.setattr(vectorindex, "FILTER_EXACT_ROWS", 200)  # the 10 % bound (600 rows) decides
    spy = Spy(monkeypatch)
    found = 0
    for q in centers[:10]:
        got = db.vectors.search(run, "c", q, k=10, filter={"half": True})
        assert len(got) == 10 and all(meta[m.id]["half"] for m in got)
        found += len({m.id for m in got} & {i for i, _ in truth(model, q, 10, keep=lambda i: meta[i]["half"])})
    assert found / 100 >= 0.95
    assert spy.asked and spy.asked[0] >= 2 * vectorindex.HNSW_MIN_CANDIDATES  # over-fetched for a 1/2 filter
    # matches far from the query: the over-fetch grows x4 until k rows match (or it asks for every row)
    spy.asked.clear()
    got = db.vectors.search(run, "c", centers[0], k=10, filter={"far": True})
    assert len(got) == 10 and all(meta[m.id]["far"] for m in got)
    assert len(spy.asked) >= 2 and spy.asked[1] == 4 * spy.asked[0]
    want = truth(model, centers[0], 10, keep=lambda i: meta[i]["far"])
    assert len({m.id for m in got} & {i for i, _ in want}) >= 8


# --- transactions ---------------------------------------------------------------------------------


def test_a_snapshot_older_than_the_last_change_is_answered_exactly(db, monkeypatch):
    rng = np.random.default_rng(2)
    run = db.begin_run()
    db.vectors.create(run, "c", dim=8, index="hnsw")
    x = rng.normal(size=(1_500, 8)).astype(np.float32)
    fill(db, run, "c", x)
    q = x[3]
    db.vectors.search(run, "c", q)  # the graph exists and is current
    spy = Spy(monkeypatch)
    tx = db.transaction()
    at_snapshot = exact_scan(db, run, "c", q, k=10)
    # unchanged since: HNSW may answer, approximately (the graph is built on every core, so its
    # answer varies from build to build: one of the ten was missed once in CI)
    first = [m.id for m in tx.vectors.search(run, "c", q, k=10)]
    assert first[0] == at_snapshot[0].id and len(set(first) & {m.id for m in at_snapshot}) >= 8
    served = len(spy.asked)
    db.vectors.delete(run, "c", "v000003")
    db.vectors.upsert(run, "c", "closer", q)
    assert_same(tx.vectors.search(run, "c", q, k=10), at_snapshot)  # declined: the scan answers
    assert len(spy.asked) == served
    tx.rollback()
    now = db.vectors.search(run, "c", q, k=10)
    assert now[0].id == "closer" and "v000003" not in {m.id for m in now}


# --- errors and reopen ------------------------------------------------------------------------------


def test_a_bad_index_is_refused_and_the_kind_is_stored(dbdir):
    with Database.open(dbdir) as db:
        run = db.begin_run()
        with pytest.raises(InvalidArgument, match="index must be one of exact, hnsw"):
            db.vectors.create(run, "c", dim=4, index="HNSW")
        db.vectors.create(run, "c", dim=4, index="hnsw")
        with pytest.raises(InvalidArgument, match="cannot change"):
            db.vectors.create(run, "c", dim=4)
        fill(db, run, "c", np.random.default_rng(0).normal(size=(1_200, 4)))
        before = db.vectors.search(run, "c", [1, 2, 3, 4], k=5)
    with Database.open(dbdir) as db:  # the graph is derived: rebuilt after reopen
        assert db.vectors.create(run, "c", dim=4, index="hnsw")["index"] == "hnsw"
        assert_hits(db.vectors.search(run, "c", [1, 2, 3, 4], k=5), [(m.id, m.score) for m in before])


def test_without_usearch_create_says_how_and_search_falls_back_to_exact(db, dbdir, monkeypatch, caplog):
    run = db.begin_run()
    db.vectors.create(run, "c", dim=4, index="hnsw")
    fill(db, run, "c", np.random.default_rng(1).normal(size=(1_200, 4)))
    db.sync()
    before = dir_bytes(dbdir)
    monkeypatch.setitem(sys.modules, "usearch", None)
    monkeypatch.setitem(sys.modules, "usearch.index", None)
    with pytest.raises(ImportError, match=r"pip install 'inmem\[ann\]'"):
        db.vectors.create(run, "d", dim=4, index="hnsw")
    db.sync()
    assert dir_bytes(dbdir) == before
    monkeypatch.setattr(vectorindex, "_warned", set())  # the warning is logged once per process
    with caplog.at_level("WARNING", logger="inmem"):
        got = db.vectors.search(run, "c", [1, 0, 0, 0], k=5)
    assert_same(got, exact_scan(db, run, "c", [1, 0, 0, 0], k=5))
    assert "inmem[ann]" in caplog.text
