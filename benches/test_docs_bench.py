"""Benchmarks of documents (issue 15): blind operations on one hot document, against read-modify-write.

Run from the repository root::

    python -m pytest benches/test_docs_bench.py --benchmark-only -q -p no:randomly   # ~1 min on 2 cores

Method
------
Medians over rounds; every row of a group is measured in the same process,
interleaved by pytest's order, with ``durability="batched"`` and
``snapshot_every_bytes=None``. One round runs ``OPS`` operations split over 1
or 8 threads on one document of the run ``hot`` (reset before each round, so
an append round always starts from an empty list). The rows per group:

``docs.<op>`` (the reference, "inmem")
    ``db.docs.increment(run, "hot", "count")`` / ``db.docs.append(run, "hot",
    "log", i)``: an autocommit blind operation (one commit, under the commit lock).
``tx blind``
    The same operation inside ``db.transaction()``: recorded blind, applied
    at commit (no read set entry: never conflicts).
``transact RMW``
    What a user writes without document operations: ``db.transact`` reading
    the value with ``tx.docs.get`` and writing it back with ``tx.docs.set``;
    with 8 threads they conflict and retry (``retries=1000``).

``doc-merge-100k``: ``db.docs.merge`` of a ~1 KB patch into a ~100 KB document
(one op per round call; the document is encoded once per commit).
"""

from __future__ import annotations

import itertools
import threading

import pytest
from workloads import record

from inmem import Database

OPS = 2000
ROUNDS = 5


@pytest.fixture
def db(tmp_path):
    with Database.open(str(tmp_path / "db"), durability="batched", snapshot_every_bytes=None) as d:
        yield d


def _threads(n: int, fn) -> None:
    threads = [threading.Thread(target=fn, args=(t,)) for t in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _make(db, run, op: str, how: str):
    docs = db.docs

    if how == "autocommit":
        if op == "increment":
            return lambda i: docs.increment(run, "hot", "count")
        return lambda i: docs.append(run, "hot", "log", i)
    if how == "tx blind":
        def blind(i):
            with db.transaction() as tx:
                if op == "increment":
                    tx.docs.increment(run, "hot", "count")
                else:
                    tx.docs.append(run, "hot", "log", i)
        return blind

    def rmw(i):
        def step(tx):
            if op == "increment":
                tx.docs.set(run, "hot", tx.docs.get(run, "hot", "count") + 1, "count")
            else:
                tx.docs.set(run, "hot", [*tx.docs.get(run, "hot", "log"), i], "log")
        db.transact(step, retries=1000)
    return rmw


@pytest.mark.parametrize("threads", [1, 8])
@pytest.mark.parametrize("op", ["increment", "append"])
@pytest.mark.parametrize("how", ["autocommit", "tx blind", "transact RMW"])
def test_hot_document(benchmark, results, db, how, op, threads):
    benchmark.group = f"doc-{op[:3]}-{threads}t"
    run = db.begin_run("bench")
    one = _make(db, run, op, how)
    per = OPS // threads

    def setup():
        db.docs.set(run, "hot", {"count": 0, "log": []})

    def round_():
        _threads(threads, lambda t: [one(t * per + i) for i in range(per)])

    conflicts = db.stats()["conflicts"]
    benchmark.pedantic(round_, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    doc = db.docs.get(run, "hot")
    assert (doc["count"] if op == "increment" else len(doc["log"])) == per * threads  # nothing lost
    label = {"autocommit": f"docs.{op}", "tx blind": "tx blind", "transact RMW": "transact RMW"}[how]
    record(benchmark, results, "inmem" if how == "autocommit" else how, label,
           f"1 {op} on one document, {threads} thread(s), {OPS} per round",
           per_call=per * threads, conflicts=db.stats()["conflicts"] - conflicts)


def test_merge_1k_into_100k(benchmark, results, db):
    benchmark.group = "doc-merge-100k"
    run = db.begin_run("bench")
    db.docs.set(run, "big", {"sections": {f"s{i:04d}": "x" * 90 for i in range(1000)}, "meta": {}})
    counter = itertools.count()

    def one():
        n = next(counter)
        db.docs.merge(run, "big", {"meta": {f"k{j}": f"{n}-{j}" * 4 for j in range(40)}})

    benchmark.pedantic(one, rounds=50, iterations=1, warmup_rounds=2)
    record(benchmark, results, "inmem", "docs.merge 1 KB -> 100 KB", "1 merge of a ~1 KB patch into a ~100 KB document")
