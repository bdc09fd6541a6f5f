"""Benchmarks of the memory graph (issue 16): adding nodes, one-hop neighbours, 3-hop traversal, text search.

Run from the repository root::

    python -m pytest benches/test_graph_bench.py --benchmark-only -q -p no:randomly

Method
------
Medians over rounds, ``durability="batched"``, ``snapshot_every_bytes=None``.
Node content is a sentence of 12 words drawn from a 5,000-word vocabulary
with Zipf-like frequencies (word ``r`` with weight ``1 / r``), so a text
index sees realistic postings; the bench times whatever ``add_node`` does
(with text indexing once ``add_node`` indexes content, the figure includes it).

``graph-add-auto``
    ``db.graph.add_node(run, sentence)``: one autocommit call, one commit
    (a round: 500 calls on a fresh run).
``graph-add-tx1k``
    1,000 ``tx.graph.add_node`` in one ``db.transaction()`` (a round: one
    transaction); the figure is nodes per second.
``graph-nbr-1hop`` / ``graph-trav-3hop``
    ``db.graph.neighbors(run, node)`` (out, depth 1) and
    ``list(db.graph.traverse(run, node, max_depth=3))`` from a different
    node each round, on a graph of ``GRAPH_NODES`` nodes with
    ``EDGES_PER_NODE`` out-edges each on average (uniformly random targets,
    two relations): 100k nodes / 1M edges by default, built once per session
    in transactions of 10,000 writes (``INMEM_BENCH_GRAPH_NODES=10000`` for
    a quick run).
``graph-search``
    ``db.graph.search(run, query, k=10)`` (text mode) with a two-word query
    on the same graph: its median is the p50 latency. Skipped while
    ``db.graph.search`` does not exist.
"""

from __future__ import annotations

import itertools
import os
import random
import time

import pytest
from workloads import record

from inmem import Database

GRAPH_NODES = int(os.environ.get("INMEM_BENCH_GRAPH_NODES", "100000"))
EDGES_PER_NODE = 10
VOCAB = 5000
WORDS = 12
BATCH = 10_000


def _vocabulary() -> list[str]:
    rng = random.Random("vocab")
    syll = ["ka", "lo", "mi", "ren", "tu", "sa", "vel", "dor", "pi", "qua", "zen", "ob", "ri", "fal", "nu", "te"]
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < VOCAB:
        w = "".join(rng.choice(syll) for _ in range(rng.randint(2, 4)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


class Sentences:
    """Deterministic 12-word sentences with Zipf-like word frequencies."""

    def __init__(self, seed: str):
        self.words = _vocabulary()
        self.weights = list(itertools.accumulate(1.0 / (r + 1) for r in range(VOCAB)))
        self.rng = random.Random(seed)

    def __call__(self) -> str:
        return " ".join(self.rng.choices(self.words, cum_weights=self.weights, k=WORDS))

    def query(self) -> str:
        """Two words, from the middle of the frequency range (not stop-word-like, not unseen)."""
        return " ".join(self.rng.choice(self.words[20:2000]) for _ in range(2))


@pytest.fixture
def db(tmp_path):
    with Database.open(str(tmp_path / "db"), durability="batched", snapshot_every_bytes=None) as d:
        yield d


@pytest.fixture(scope="session")
def big_graph(tmp_path_factory):
    """``(db, run, ids, build_seconds)``: GRAPH_NODES nodes, EDGES_PER_NODE * GRAPH_NODES random edges."""
    path = str(tmp_path_factory.mktemp("graph") / "db")
    db = Database.open(path, durability="batched", snapshot_every_bytes=None)
    run = db.begin_run("big")
    text = Sentences("big")
    ids = [f"m{i:07d}" for i in range(GRAPH_NODES)]
    rng = random.Random(7)
    t0 = time.perf_counter()
    for lo in range(0, GRAPH_NODES, BATCH):
        with db.transaction() as tx:
            for id in ids[lo:lo + BATCH]:
                tx.graph.add_node(run, text(), id=id)
    t1 = time.perf_counter()
    edges = GRAPH_NODES * EDGES_PER_NODE
    for _ in range(0, edges, BATCH):
        with db.transaction() as tx:
            add = tx.graph.add_edge
            for _ in range(BATCH):
                add(run, rng.choice(ids), "about" if rng.random() < 0.5 else "after", rng.choice(ids))
    t2 = time.perf_counter()
    print(f"\ngraph built: {GRAPH_NODES:,} nodes in {t1 - t0:.1f} s, {edges:,} edges in {t2 - t1:.1f} s")
    yield db, run, ids, {"nodes_s": round(t1 - t0, 2), "edges_s": round(t2 - t1, 2)}
    db.close()


def test_add_node_autocommit(benchmark, results, db):
    benchmark.group = "graph-add-auto"
    text = Sentences("auto")
    per = 500

    def round_():
        run = db.begin_run()
        add = db.graph.add_node
        for _ in range(per):
            add(run, text())

    benchmark.pedantic(round_, rounds=7, iterations=1, warmup_rounds=1)
    record(benchmark, results, "inmem", "graph.add_node", "1 add_node (12-word content), autocommit",
           per_call=per)


def test_add_node_1k_in_one_transaction(benchmark, results, db):
    benchmark.group = "graph-add-tx1k"
    text = Sentences("tx")
    per = 1000

    def round_():
        run = db.begin_run()
        with db.transaction() as tx:
            add = tx.graph.add_node
            for _ in range(per):
                add(run, text())

    benchmark.pedantic(round_, rounds=7, iterations=1, warmup_rounds=1)
    record(benchmark, results, "inmem", "tx.graph.add_node x1k", "1 add_node of 1,000 in one transaction",
           per_call=per)


def test_neighbors_one_hop(benchmark, results, big_graph):
    benchmark.group = "graph-nbr-1hop"
    db, run, ids, built = big_graph
    starts = itertools.cycle(random.Random(1).sample(ids, 1000))
    sizes = []

    def one():
        sizes.append(len(db.graph.neighbors(run, next(starts))))

    benchmark.pedantic(one, rounds=2000, iterations=1, warmup_rounds=10)
    record(benchmark, results, "inmem", "graph.neighbors", f"1 one-hop neighbors, {len(ids):,} nodes / "
           f"{len(ids) * EDGES_PER_NODE:,} edges", mean_degree=round(sum(sizes) / len(sizes), 1), **built)


def test_traverse_three_hops(benchmark, results, big_graph):
    benchmark.group = "graph-trav-3hop"
    db, run, ids, built = big_graph
    starts = itertools.cycle(random.Random(2).sample(ids, 100))
    reached = []

    def one():
        reached.append(len(list(db.graph.traverse(run, next(starts), max_depth=3))))

    benchmark.pedantic(one, rounds=40, iterations=1, warmup_rounds=1)
    reached.sort()
    record(benchmark, results, "inmem", "graph.traverse depth 3", f"1 3-hop traverse (out), {len(ids):,} nodes / "
           f"{len(ids) * EDGES_PER_NODE:,} edges", median_reached=reached[len(reached) // 2], **built)


def test_search_text_p50(benchmark, results, big_graph):
    db, run, ids, built = big_graph
    if not hasattr(db.graph, "search"):
        pytest.skip("db.graph.search does not exist yet (the lead is adding it: issue 16, full-text search)")
    benchmark.group = "graph-search"
    text = Sentences("queries")
    queries = itertools.cycle([text.query() for _ in range(200)])
    hits = []

    def one():
        hits.append(len(db.graph.search(run, next(queries), k=10)))

    benchmark.pedantic(one, rounds=200, iterations=1, warmup_rounds=5)
    record(benchmark, results, "inmem", "graph.search text", f"1 text search (2 words, k=10), {len(ids):,} nodes",
           mean_hits=round(sum(hits) / len(hits), 1), **built)
