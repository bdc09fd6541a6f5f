"""Benchmarks of the vector store (issue 14): search, upserts, filtered search, index memory, and peers.

Run from the repository root::

    python -m pytest benches/test_vectors_bench.py --benchmark-only -q -p no:randomly   # ~2-3 min on 2 cores
    python -m pytest benches/test_vectors_bench.py --benchmark-only -k "not chroma and not qdrant"   # inmem only

Method
------
Every figure is a **median over rounds** (the reference machine has 2 noisy
cores); ratios are between medians measured in the same process. Databases are
opened with ``durability="batched"`` and ``snapshot_every_bytes=None``. All data
is ``numpy.random.default_rng(SEED).standard_normal(..., dtype=float32)``
(dim 384, the size of common sentence-embedding models); queries are 64 other
seeded vectors, cycled. Ids are ``v000000``...; every vector of the 100k and
20k collections carries ``metadata={"cat": i % 10}``. The metric is cosine
everywhere. What one op is, per group:

``vec-search-100k``
    The ``big`` fixture (module scope, not timed) loads 100,000 vectors into
    one collection in 10 transactions of 10,000 upserts, then runs the first
    search (which builds the derived index) under ``tracemalloc``. Ops:
    ``db.vectors.search(run, "docs", q, k=10)`` (``inmem`` row; 40 rounds of
    one search, 2 warm-up; ``extra_info`` has p50/p95/max over the rounds and
    the issue target p50 <= 15 ms) and the same with ``filter={"cat": 3}``,
    which passes 10 % of the rows (``inmem-filter`` row, 15 rounds). The
    summary's ratio column on the filtered row is *filtered time /
    unfiltered time*. Both are checked (untimed) against a numpy top-10 over
    the same data.

``vec-index-memory``
    Not a timing: ``extra_info`` of the ``test_index_memory`` bench (which
    times one warm search, so that pytest-benchmark keeps the row) holds what
    the ``big`` fixture measured: bytes allocated by the index build and still
    held after it (``tracemalloc``: current after the first search, tracing
    started just before it; numpy reports its buffers to tracemalloc), the
    build's peak, the RSS growth over the build (``/proc/self/statm``), the RSS
    growth over loading the 100k records (the store's share: encoded records,
    keys, versions, WAL buffers) and the ratios of each to the raw float32
    bytes (100,000 x 384 x 4 = 153.6 MB). Also the time of the first search
    (index build, under tracemalloc) and of one rebuild without tracemalloc
    (forced by setting ``inmem.vectorindex.MAX_PENDING`` to 0 for one upsert).

``vec-upsert-tx10k``
    One round = one ``with db.transaction() as tx:`` doing 10,000
    ``tx.vectors.upsert(run, coll, id, vec)`` (numpy float32 rows, no
    metadata) into a fresh collection (created in the untimed setup), then the
    commit. 5 rounds; figure per vector; issue target >= 50,000 vectors/s.

``vec-upsert-1``
    One autocommitted ``db.vectors.upsert(run, "one", id, vec)`` on a
    distinct id (no metadata), against the reference ``db.kv.put(run, key,
    vec.tobytes())`` of the same 1,536 bytes on a distinct key, each on its own
    fresh database; 2,000 ops per round, 9 rounds, 1 warm-up. The ratio column
    on the upsert row is *upsert time / put time* (issue target <= 1.5x).

``vec-upsert-20k`` and ``vec-query-20k`` (peers, 20,000 x 384)
    The same 20,000 vectors and metadata in each engine's own collection:
    inmem (one transaction per batch), Chroma (``chromadb.PersistentClient(path=...)``,
    ``embedding_function=None``, ``hnsw:space=cosine``, embeddings passed as
    numpy), Qdrant local mode (``QdrantClient(path=...)``, ``Distance.COSINE``).
    Upsert: one round = one batch of 5,000 upserts into the growing 20k
    collection (4 rounds: it ends full), per vector. Qdrant's local mode
    commits every point to its SQLite file one by one (~7 ms each here), so its
    upsert round is 250 points into a separate ``path=`` collection, 3 rounds,
    and its 20k query collection is loaded through ``QdrantClient(":memory:")``
    (untimed): local mode's search is the same numpy code over in-memory
    arrays whatever the storage. Query: top-10 for one query vector (inmem
    ``vectors.search``, Chroma ``collection.query(query_embeddings=..., n_results=10)``,
    Qdrant ``query_points(..., limit=10)``); 30 rounds of one query, 3 warm-up
    (inmem: the index is built before). ``extra_info["recall_at_10"]`` against
    numpy's exact top-10 over 16 queries (Chroma's HNSW is approximate; inmem
    and Qdrant local are exact scans). A peer whose package is missing is skipped
    (``pytest.importorskip``) with the reason.

Every bench stores ``extra_info["ops_per_s"] = 1 / median`` and adds a row to the
summary printed at the end of the session (``conftest.py``).
"""

from __future__ import annotations

import itertools
import os
import time
import tracemalloc

import numpy as np
import pytest
from workloads import record

from inmem import Database, vectorindex

SEED = 20261121
DIM = 384
N_BIG = 100_000
LOAD_TX = 10_000  # upserts per transaction while loading the 100k collection
N_PEER = 20_000
PEER_BATCH = 5_000  # Chroma's max batch here is 5,461
QDRANT_PATH_BATCH = 250
QDRANT_PATH_ROUNDS = 3
TX_BATCH = 10_000
TX_ROUNDS = 5
ONE_BATCH = 2_000
ONE_ROUNDS = 9
SEARCH_ROUNDS = 40
FILTER_ROUNDS = 15
QUERY_ROUNDS = 30
N_QUERIES = 64
RECALL_QUERIES = 16
RAW_BYTES = N_BIG * DIM * 4

_MEDIAN: dict[str, float] = {}


def _rss() -> int | None:
    """Resident set size in bytes (Linux), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def _open(path) -> Database:
    return Database.open(str(path), durability="batched", snapshot_every_bytes=None)


def _ids(n: int) -> list[str]:
    return [f"v{i:06d}" for i in range(n)]


def _exact_top10(data: np.ndarray, q: np.ndarray) -> list[int]:
    """numpy's exact cosine top-10 row numbers (the reference for checks and recall)."""
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    scores = unit @ (q / np.linalg.norm(q))
    best = np.argpartition(-scores, 10)[:10]
    return [int(i) for i in best[np.argsort(-scores[best], kind="stable")]]


def _percentiles(benchmark) -> dict[str, float]:
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return {}
    data = np.asarray(stats.stats.data)
    return {"p50_ms": round(float(np.percentile(data, 50)) * 1e3, 2),
            "p95_ms": round(float(np.percentile(data, 95)) * 1e3, 2),
            "max_ms": round(float(data.max()) * 1e3, 2)}


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return np.random.default_rng(SEED + 1).standard_normal((N_QUERIES, DIM), dtype=np.float32)


# --- the 100k collection ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big(tmp_path_factory, queries):
    """100,000 x 384 vectors with metadata in one collection; index built; memory figures measured."""
    data = np.random.default_rng(SEED).standard_normal((N_BIG, DIM), dtype=np.float32)
    ids = _ids(N_BIG)
    info: dict[str, float | int | None] = {}
    rss0 = _rss()
    db = _open(tmp_path_factory.mktemp("vec100k") / "db")
    run = db.begin_run("bench")
    db.vectors.create(run, "docs", dim=DIM, metric="cosine")
    t0 = time.perf_counter()
    for lo in range(0, N_BIG, LOAD_TX):
        with db.transaction() as tx:
            upsert = tx.vectors.upsert
            for i in range(lo, lo + LOAD_TX):
                upsert(run, "docs", ids[i], data[i], metadata={"cat": i % 10})
    info["load_s"] = round(time.perf_counter() - t0, 2)
    info["load_vectors_per_s"] = round(N_BIG / info["load_s"])
    rss1 = _rss()

    tracemalloc.start()
    t0 = time.perf_counter()
    db.vectors.search(run, "docs", queries[0], k=10)  # builds the index
    info["first_search_s_under_tracemalloc"] = round(time.perf_counter() - t0, 2)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss2 = _rss()
    info["index_traced_bytes"] = current
    info["index_traced_peak_bytes"] = peak
    info["raw_float32_bytes"] = RAW_BYTES
    info["index_traced_vs_raw"] = round(current / RAW_BYTES, 3)
    info["index_traced_peak_vs_raw"] = round(peak / RAW_BYTES, 3)
    info["index_traced_bytes_per_vector"] = round(current / N_BIG)
    if rss0 is not None and rss1 is not None and rss2 is not None:
        info["load_rss_growth_bytes"] = rss1 - rss0
        info["load_rss_growth_vs_raw"] = round((rss1 - rss0) / RAW_BYTES, 3)
        info["index_rss_growth_bytes"] = rss2 - rss1
        info["index_rss_growth_vs_raw"] = round((rss2 - rss1) / RAW_BYTES, 3)

    # one rebuild without tracemalloc: an index whose write queue overflows is rebuilt at the next search
    saved = vectorindex.MAX_PENDING
    vectorindex.MAX_PENDING = 0
    try:
        db.vectors.upsert(run, "docs", ids[0], data[0], metadata={"cat": 0})  # same content
    finally:
        vectorindex.MAX_PENDING = saved
    t0 = time.perf_counter()
    db.vectors.search(run, "docs", queries[0], k=10)
    info["index_rebuild_s"] = round(time.perf_counter() - t0, 2)

    # the searches answer what numpy answers (untimed)
    for q in queries[:3]:
        got = [m.id for m in db.vectors.search(run, "docs", q, k=10)]
        assert got == [ids[i] for i in _exact_top10(data, q)]
    cat3 = np.nonzero(np.arange(N_BIG) % 10 == 3)[0]
    got = [m.id for m in db.vectors.search(run, "docs", queries[0], k=10, filter={"cat": 3})]
    assert got == [ids[cat3[i]] for i in _exact_top10(data[cat3], queries[0])]
    try:
        yield db, run, info
    finally:
        db.close()


def test_search_100k(benchmark, results, big, queries):
    benchmark.group = "vec-search-100k"
    db, run, info = big
    search = db.vectors.search
    qs = itertools.cycle(queries)

    def one_op():
        search(run, "docs", next(qs), k=10)

    benchmark.pedantic(one_op, iterations=1, rounds=SEARCH_ROUNDS, warmup_rounds=2)
    median = record(benchmark, results, "inmem", "search top-10 (exact)",
                    "1 vectors.search k=10, 100k x 384 cosine, index built", target_p50_ms=15,
                    **_percentiles(benchmark))
    if median:
        _MEDIAN["search100k"] = median


def test_filtered_search_100k(benchmark, results, big, queries):
    benchmark.group = "vec-search-100k"
    db, run, info = big
    search = db.vectors.search
    qs = itertools.cycle(queries)

    def one_op():
        search(run, "docs", next(qs), k=10, filter={"cat": 3})

    benchmark.pedantic(one_op, iterations=1, rounds=FILTER_ROUNDS, warmup_rounds=1)
    median = record(benchmark, results, "inmem-filter", "search top-10, filter 10%",
                    '1 vectors.search k=10 filter={"cat": 3} (10% pass); ratio = filtered / unfiltered time',
                    **_percentiles(benchmark))
    if median and "search100k" in _MEDIAN:
        benchmark.extra_info["vs_unfiltered"] = round(median / _MEDIAN["search100k"], 2)


def test_index_memory(benchmark, results, big, queries):
    benchmark.group = "vec-index-memory"
    db, run, info = big
    benchmark.pedantic(db.vectors.search, args=(run, "docs", queries[1]), kwargs={"k": 10},
                       iterations=1, rounds=3)
    benchmark.extra_info.update(info)
    benchmark.extra_info["target"] = "index <= 1.5x raw float32 + metadata"


# --- upserts ---------------------------------------------------------------------------------------


def test_upsert_one_transaction(benchmark, results, tmp_path):
    benchmark.group = "vec-upsert-tx10k"
    data = np.random.default_rng(SEED + 2).standard_normal((TX_BATCH, DIM), dtype=np.float32)
    ids = _ids(TX_BATCH)
    db = _open(tmp_path / "db")
    try:
        run = db.begin_run("bench")
        names = (f"tx{r}" for r in itertools.count())
        current: list[str] = []

        def setup():
            name = next(names)
            db.vectors.create(run, name, dim=DIM)
            current.append(name)
            return (), {}

        def one_round():
            coll = current[-1]
            with db.transaction() as tx:
                upsert = tx.vectors.upsert
                for i in range(TX_BATCH):
                    upsert(run, coll, ids[i], data[i])

        benchmark.pedantic(one_round, setup=setup, rounds=TX_ROUNDS, warmup_rounds=0)
        assert db.vectors.count(run, current[-1]) == TX_BATCH
        record(benchmark, results, "inmem", "upsert, 1 tx of 10k",
               f"1 tx.vectors.upsert (dim 384, no metadata), {TX_BATCH:,} in one transaction",
               per_call=TX_BATCH, target_vectors_per_s=50_000)
    finally:
        db.close()


@pytest.mark.parametrize("op", ["kv.put", "vectors.upsert"])  # put first: the ratio needs its median
def test_upsert_autocommit(benchmark, results, tmp_path, op):
    benchmark.group = "vec-upsert-1"
    n = ONE_BATCH * (ONE_ROUNDS + 4)  # warm-up and timed rounds, with room to spare
    data = np.random.default_rng(SEED + 3).standard_normal((n, DIM), dtype=np.float32)
    ids = _ids(n)
    db = _open(tmp_path / "db")
    try:
        run = db.begin_run("bench")
        counter = itertools.count()
        if op == "kv.put":
            blobs = [row.tobytes() for row in data]
            put = db.kv.put

            def one_op():
                i = next(counter)
                put(run, ids[i], blobs[i])

        else:
            db.vectors.create(run, "one", dim=DIM)
            upsert = db.vectors.upsert

            def one_op():
                i = next(counter)
                upsert(run, "one", ids[i], data[i])

        benchmark.pedantic(one_op, iterations=ONE_BATCH, rounds=ONE_ROUNDS, warmup_rounds=1)
        if op == "kv.put":
            assert db.kv.get(run, ids[0]) == data[0].tobytes()
            median = record(benchmark, results, "inmem", "kv.put 1,536 B (ref)",
                            "1 autocommit kv.put of a vector's 1,536 bytes; ratio = upsert / put time")
            if median:
                _MEDIAN["kv.put"] = median
        else:
            assert db.vectors.count(run, "one") == next(counter)
            median = record(benchmark, results, "vectors", "vectors.upsert autocommit",
                            "1 autocommit vectors.upsert, dim 384, no metadata", target_vs_kv_put=1.5)
            if median and "kv.put" in _MEDIAN:
                benchmark.extra_info["vs_kv_put"] = round(median / _MEDIAN["kv.put"], 2)
    finally:
        db.close()


# --- side by side with Chroma and Qdrant (20k x 384) -----------------------------------------------


@pytest.fixture(scope="module")
def peer_data() -> tuple[np.ndarray, list[str], list[dict]]:
    data = np.random.default_rng(SEED + 4).standard_normal((N_PEER, DIM), dtype=np.float32)
    return data, _ids(N_PEER), [{"cat": i % 10} for i in range(N_PEER)]


class _Filling:
    """A peer's 20k collection, filled one batch at a time: the upsert bench times the batches,
    the query bench fills whatever is left (untimed)."""

    def __init__(self, upsert_batch, n: int = N_PEER, batch: int = PEER_BATCH):
        self.upsert_batch, self.n, self.batch, self.next = upsert_batch, n, batch, 0

    def step(self) -> None:
        lo, hi = self.next, min(self.next + self.batch, self.n)
        assert lo < hi, "already full"
        self.upsert_batch(lo, hi)
        self.next = hi

    def fill(self) -> None:
        while self.next < self.n:
            self.step()


@pytest.fixture(scope="module")
def inmem_peer(tmp_path_factory, peer_data):
    data, ids, metas = peer_data
    db = _open(tmp_path_factory.mktemp("vec20k") / "db")
    run = db.begin_run("bench")
    db.vectors.create(run, "docs", dim=DIM, metric="cosine")

    def upsert_batch(lo, hi):
        with db.transaction() as tx:
            upsert = tx.vectors.upsert
            for i in range(lo, hi):
                upsert(run, "docs", ids[i], data[i], metadata=metas[i])

    def query(q):
        return [m.id for m in db.vectors.search(run, "docs", q, k=10)]

    try:
        yield _Filling(upsert_batch), query
    finally:
        db.close()


@pytest.fixture(scope="module")
def chroma_peer(tmp_path_factory, peer_data):
    chromadb = pytest.importorskip("chromadb", reason="chromadb is not installed (pip install chromadb)")
    from chromadb.config import Settings

    data, ids, metas = peer_data
    client = chromadb.PersistentClient(path=str(tmp_path_factory.mktemp("chroma")),
                                       settings=Settings(anonymized_telemetry=False))
    coll = client.create_collection("docs", embedding_function=None, metadata={"hnsw:space": "cosine"})

    def upsert_batch(lo, hi):
        coll.upsert(ids=ids[lo:hi], embeddings=data[lo:hi], metadatas=metas[lo:hi])

    def query(q):
        return coll.query(query_embeddings=q[None, :], n_results=10)["ids"][0]

    return _Filling(upsert_batch), query


@pytest.fixture(scope="module")
def qdrant_peer(tmp_path_factory, peer_data):
    pytest.importorskip("qdrant_client", reason="qdrant-client is not installed (pip install qdrant-client)")
    from qdrant_client import QdrantClient, models

    data, ids, metas = peer_data
    # the query collection: in memory (local mode searches numpy arrays in memory whatever the storage)
    client = QdrantClient(":memory:")
    client.create_collection("docs", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))

    def upsert_batch(lo, hi):
        client.upsert("docs", points=models.Batch(ids=list(range(lo, hi)), vectors=data[lo:hi].tolist(),
                                                  payloads=metas[lo:hi]))

    def query(q):
        return [ids[p.id] for p in client.query_points("docs", query=q.tolist(), limit=10).points]

    # the upsert collection: on disk, as agent builders use it (every point is one SQLite commit)
    disk = QdrantClient(path=str(tmp_path_factory.mktemp("qdrant")))
    disk.create_collection("docs", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
    n_disk = QDRANT_PATH_BATCH * QDRANT_PATH_ROUNDS
    disk_vectors = data[:n_disk].tolist()

    def disk_upsert_batch(lo, hi):
        disk.upsert("docs", points=models.Batch(ids=list(range(lo, hi)), vectors=disk_vectors[lo:hi],
                                                payloads=metas[lo:hi]))

    try:
        yield _Filling(upsert_batch), query, _Filling(disk_upsert_batch, n_disk, QDRANT_PATH_BATCH)
    finally:
        client.close()
        disk.close()


PEERS = ["inmem", "chroma", "qdrant"]
_LABEL = {"inmem": "inmem (1 tx per batch)", "chroma": "chroma PersistentClient",
          "qdrant": "qdrant local path="}


def _peer(request, name):
    return request.getfixturevalue(f"{name}_peer")


@pytest.mark.parametrize("engine", PEERS)
def test_peer_upsert(benchmark, results, request, engine):
    benchmark.group = "vec-upsert-20k"
    peer = _peer(request, engine)
    filling = peer[2] if engine == "qdrant" else peer[0]  # qdrant: the on-disk collection
    rounds = filling.n // filling.batch
    benchmark.pedantic(filling.step, rounds=rounds, warmup_rounds=0)
    what = "in batches" if engine != "qdrant" else "on disk, 1 SQLite commit per point"
    record(benchmark, results, engine, _LABEL[engine],
           f"1 upsert of a 384-d vector + metadata, {filling.batch:,} per call, {what}",
           per_call=filling.batch, batch=filling.batch, collection_size_after=filling.next)


@pytest.mark.parametrize("engine", PEERS)
def test_peer_query(benchmark, results, request, engine, peer_data, queries):
    benchmark.group = "vec-query-20k"
    filling, query = _peer(request, engine)[:2]
    filling.fill()
    data, ids, _ = peer_data
    hits = 0
    for q in queries[:RECALL_QUERIES]:  # also warms the index (inmem builds it at the first search)
        exact = {ids[i] for i in _exact_top10(data, q)}
        hits += len(exact & set(query(q)))
    qs = itertools.cycle(queries)
    benchmark.pedantic(lambda: query(next(qs)), iterations=1, rounds=QUERY_ROUNDS, warmup_rounds=3)
    label = {"inmem": "inmem (exact)", "chroma": "chroma (HNSW)", "qdrant": "qdrant local (:memory:)"}[engine]
    record(benchmark, results, engine, label, "1 top-10 query, 20k x 384 cosine, ids returned",
           recall_at_10=round(hits / (10 * RECALL_QUERIES), 3), **_percentiles(benchmark))
