"""LangGraph store benchmarks: InmemStore side by side with LangGraph's SqliteStore and InMemoryStore.

Run from the repository root::

    python -m pytest benches/test_store_bench.py --benchmark-only -p no:randomly     # ~30 s on 2 cores

Method
------
The three stores run the **same workload code** in one process, each on a
fresh store in ``tmp_path``: InmemStore on ``Database.open(dir,
durability="batched", snapshot_every_bytes=None, sweep_interval_s=None)``;
SqliteStore (``langgraph-checkpoint-sqlite``) on a ``sqlite3`` file opened as
``SqliteStore.from_conn_string`` does (autocommit, ``check_same_thread=False``)
with ``journal_mode=WAL`` and ``synchronous=NORMAL`` (the peer of inmem
``batched``: no fsync per commit); InMemoryStore (a dict, nothing on disk).
Semantic search uses ``inmem.embeddings.HashingEmbedder(64)`` for all three
(SqliteStore through ``sqlite-vec``; skipped if it is missing). Per-op figures
use ``benchmark.pedantic(op, iterations=B, rounds=R, warmup_rounds=1)``
(a round times ``B`` consecutive ops, divided by ``B``); figures are medians.
The summary's ratio column is ops/s of the peer relative to inmem.

``store-put``
    ``put(("docs", f"u{i % 10}"), f"k{i}", {"text": <60 chars>, "n": i})``,
    a new key each time, no index. ``B`` = 200, 7 rounds.
``store-get``
    ``get`` of a random existing key among 2,000 items. ``B`` = 500, 7 rounds.
``store-search-filter``
    ``search(("docs", "u3"), filter={"n": {"$gte": 1000}}, limit=10)`` over
    2,000 items (200 under the prefix). ``B`` = 100, 7 rounds.
``store-search-query``
    ``search(("docs",), query=<3 words>, limit=10)`` over 1,000 items with
    ``index={"dims": 64, "fields": ["text"]}``. ``B`` = 20, 5 rounds.
"""

from __future__ import annotations

import random
import sqlite3
from typing import Any

import pytest
from workloads import record

pytest.importorskip("langgraph.store.base")

from langgraph.store.memory import InMemoryStore  # noqa: E402

from inmem import Database  # noqa: E402
from inmem.embeddings import HashingEmbedder  # noqa: E402
from inmem.integrations.langgraph import InmemStore  # noqa: E402

try:
    from langgraph.store.sqlite import SqliteStore
except ImportError:  # pragma: no cover - optional peer
    SqliteStore = None

KINDS = ["inmem", "sqlite", "memory"]
WORDS = ("agent memory tool call plan user prefers green tea dark mode python graph vector search note "
         "meeting budget travel weather code review").split()
_EMB = HashingEmbedder(64)


def embed(texts: Any) -> list[list[float]]:
    return _EMB(list(texts)).tolist()


def text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(8))


class Store:
    def __init__(self, kind: str, path: str, index: dict[str, Any] | None = None):
        self.kind = kind
        self.conn = self.db = None
        if kind == "inmem":
            self.label = "InmemStore batched"
            self.db = Database.open(path, durability="batched", snapshot_every_bytes=None, sweep_interval_s=None)
            self.store: Any = InmemStore(self.db, index=index)
        elif kind == "sqlite":
            if SqliteStore is None:
                pytest.skip("langgraph-checkpoint-sqlite is not installed")
            self.label = "SqliteStore WAL NORMAL"
            self.conn = sqlite3.connect(path + ".sqlite", check_same_thread=False, isolation_level=None)
            try:
                self.store = SqliteStore(self.conn, index=index)
                self.store.setup()
            except Exception as exc:  # sqlite-vec missing for an index
                self.conn.close()
                pytest.skip(f"SqliteStore cannot run this workload here: {exc}")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        else:
            self.label = "InMemoryStore (dict)"
            self.store = InMemoryStore(index=index)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
        if self.conn is not None:
            self.conn.close()

    def fill(self, n: int, rng: random.Random) -> None:
        for i in range(n):
            self.store.put(("docs", f"u{i % 10}"), f"k{i}", {"text": text(rng), "n": i})


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def make(tmp_path):
    made: list[Store] = []

    def build(kind: str, index: dict[str, Any] | None = None) -> Store:
        s = Store(kind, str(tmp_path / f"store-{len(made)}"), index)
        made.append(s)
        return s

    yield build
    for s in made:
        s.close()


def test_put(benchmark, results, make, kind):
    benchmark.group = "store-put"
    s = make(kind)
    rng = random.Random(1)
    counter = iter(range(10**9))
    note = text(rng)

    def put() -> None:
        i = next(counter)
        s.store.put(("docs", f"u{i % 10}"), f"k{i}", {"text": note, "n": i})

    benchmark.pedantic(put, iterations=200, rounds=7, warmup_rounds=1)
    assert s.store.get(("docs", "u0"), "k0").value["n"] == 0
    record(benchmark, results, kind, s.label, "put of a new item (no index)")


def test_get(benchmark, results, make, kind):
    benchmark.group = "store-get"
    s = make(kind)
    rng = random.Random(2)
    s.fill(2000, rng)
    keys = [rng.randrange(2000) for _ in range(4096)]
    pos = iter(range(10**9))

    def get() -> None:
        i = keys[next(pos) % 4096]
        assert s.store.get(("docs", f"u{i % 10}"), f"k{i}") is not None

    benchmark.pedantic(get, iterations=500, rounds=7, warmup_rounds=1)
    record(benchmark, results, kind, s.label, "get of an existing item (2,000 items)")


def test_search_filter(benchmark, results, make, kind):
    benchmark.group = "store-search-filter"
    s = make(kind)
    s.fill(2000, random.Random(3))

    def search() -> None:
        found = s.store.search(("docs", "u3"), filter={"n": {"$gte": 1000}}, limit=10)
        assert len(found) == 10

    benchmark.pedantic(search, iterations=100, rounds=7, warmup_rounds=1)
    record(benchmark, results, kind, s.label, "search(prefix, filter $gte, limit 10) over 2,000 items")


def test_search_query(benchmark, results, make, kind):
    benchmark.group = "store-search-query"
    s = make(kind, {"dims": 64, "embed": embed, "fields": ["text"]})
    rng = random.Random(4)
    s.fill(1000, rng)
    queries = [" ".join(rng.choice(WORDS) for _ in range(3)) for _ in range(64)]
    pos = iter(range(10**9))

    def search() -> None:
        found = s.store.search(("docs",), query=queries[next(pos) % 64], limit=10)
        assert len(found) == 10 and found[0].score is not None

    benchmark.pedantic(search, iterations=20, rounds=5, warmup_rounds=1)
    record(benchmark, results, kind, s.label, "semantic search(query, limit 10) over 1,000 items, dims 64")
