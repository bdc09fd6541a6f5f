"""Benchmarks of the agent memory recipes (issue 17, ``inmem.memory``).

Run from the repository root::

    python -m pytest benches/test_memory_bench.py --benchmark-only -q -p no:randomly

Method
------
Medians over rounds, ``durability="batched"``, ``snapshot_every_bytes=None``.
Messages and memories are 12-word sentences from the graph bench's Zipf-like
vocabulary (:class:`test_graph_bench.Sentences`).

``buffer-append``
    ``ConversationBuffer.append`` on a full buffer (``max_messages=50``), so
    every append also trims the oldest message in the same transaction (a
    round: 500 appends); beside it, in the same group, the same appends with
    no limit reached (nothing trimmed) and a bare ``db.kv.put`` autocommit of
    the same record, the floor one commit costs.
``memory-add``
    ``Memory.add(text, user_id=...)`` with ``HashingEmbedder(256)``: one
    embedding and one transaction (vector record + dedup entry); a round:
    200 new texts, 20 users.
``memory-search``
    ``Memory.search(query, user_id=..., top_k=10)`` on ``MEMORIES`` memories of
    100 users (10,000 by default; ``INMEM_BENCH_MEMORIES``), exact cosine search
    with the user filter: its median is the p50 latency.
"""

from __future__ import annotations

import itertools
import os

import pytest
from test_graph_bench import Sentences
from workloads import record

from inmem import Database
from inmem.embeddings import HashingEmbedder
from inmem.memory import ConversationBuffer, Memory

MEMORIES = int(os.environ.get("INMEM_BENCH_MEMORIES", "10000"))
USERS = 100


@pytest.fixture
def db(tmp_path):
    with Database.open(str(tmp_path / "db"), durability="batched", snapshot_every_bytes=None) as d:
        yield d


def _append_rounds(benchmark, db, max_messages):
    text = Sentences("buffer")
    run = db.begin_run()
    buf = ConversationBuffer(db, run, "chat", max_messages=max_messages, max_tokens=None)
    for _ in range(50):  # full before timing starts
        buf.append("user", text())
    per = 500

    def round_():
        for i in range(per):
            buf.append("user" if i % 2 else "assistant", text())

    benchmark.pedantic(round_, rounds=7, iterations=1, warmup_rounds=1)
    return per


def test_buffer_append_with_trimming(benchmark, results, db):
    benchmark.group = "buffer-append"
    per = _append_rounds(benchmark, db, 50)
    record(benchmark, results, "inmem", "buffer.append (trim 1)", "1 append to a full 50-message buffer "
           "(+ trim of the oldest, one transaction)", per_call=per)


def test_buffer_append_without_trimming(benchmark, results, db):
    benchmark.group = "buffer-append"
    per = _append_rounds(benchmark, db, None)
    record(benchmark, results, "inmem-no-trim", "buffer.append (no limit)", "1 append, nothing trimmed",
           per_call=per)


def test_kv_put_floor(benchmark, results, db):
    benchmark.group = "buffer-append"
    text = Sentences("buffer")
    run = db.begin_run()
    per = 500
    seq = itertools.count()

    def round_():
        for _ in range(per):
            db.kv.put(run, f"m/{next(seq):016x}", {"role": "user", "content": text(), "metadata": None,
                                                   "tokens": 16, "ts_us": 0})

    benchmark.pedantic(round_, rounds=7, iterations=1, warmup_rounds=1)
    record(benchmark, results, "inmem-kv.put", "db.kv.put (floor)", "1 autocommit put of the same record",
           per_call=per)


def test_memory_add(benchmark, results, db):
    benchmark.group = "memory-add"
    mem = Memory(db, embedder=HashingEmbedder(256))
    text = Sentences("add")
    per = 200
    users = itertools.cycle([f"user{u}" for u in range(20)])

    def round_():
        for _ in range(per):
            mem.add(text(), user_id=next(users))

    benchmark.pedantic(round_, rounds=7, iterations=1, warmup_rounds=1)
    record(benchmark, results, "inmem", "Memory.add", "1 add (12 words, HashingEmbedder(256)), one transaction",
           per_call=per)


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("memory") / "db")
    db = Database.open(path, durability="batched", snapshot_every_bytes=None)
    mem = Memory(db, embedder=HashingEmbedder(256))
    text = Sentences("fill")
    for i in range(MEMORIES):
        mem.add(text(), user_id=f"user{i % USERS}")
    yield db, mem, text
    db.close()


def test_memory_search(benchmark, results, filled):
    benchmark.group = "memory-search"
    db, mem, text = filled
    queries = itertools.cycle([(text.query(), f"user{i % USERS}") for i in range(200)])
    hits = []

    def one():
        q, user = next(queries)
        hits.append(len(mem.search(q, user_id=user, top_k=10)))

    benchmark.pedantic(one, rounds=200, iterations=1, warmup_rounds=5)
    record(benchmark, results, "inmem", "Memory.search", f"1 search (2 words, top_k=10, one user's filter), "
           f"{MEMORIES:,} memories of {USERS} users", mean_hits=round(sum(hits) / len(hits), 1))
