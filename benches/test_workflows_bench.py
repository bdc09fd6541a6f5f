"""Benchmarks of durable workflows (issue 18): the overhead of one empty step.

Run from the repository root::

    python -m pytest benches/test_workflows_bench.py --benchmark-only -q -p no:randomly -s   # ~15 s on 2 cores

With DBOS (``pip install dbos``; its SQLite system database, no server) the same workflow runs on
DBOS too, in the same process; without it that row is skipped with a note.

Method
------
One workflow calls an empty step (``return i``) ``STEPS`` times; the figure is the workflow's wall
time divided by ``STEPS`` (median of 3 rounds): what recording one step costs — a transaction
reading the step's key and the workflow status, the record's commit, and in ``strict`` its fsync
(one per step: a workflow's steps are sequential, so no group commit helps). ``bare call`` is the
same loop calling the plain function: the floor. Every database uses ``snapshot_every_bytes=None``.
"""

from __future__ import annotations

import pytest
from workloads import record

from inmem import Database

STEPS = {"off": 2000, "batched": 2000, "strict": 300}


def test_bare_call(benchmark, results):
    benchmark.group = "workflow step"

    def empty(i):
        return i

    def loop(n):
        return [empty(i) for i in range(n)]

    benchmark.pedantic(loop, args=(2000,), rounds=3, iterations=1)
    record(benchmark, results, "bare", "bare call", "empty function call", per_call=2000)


@pytest.mark.parametrize("durability", ["off", "batched", "strict"])
def test_inmem_empty_step(benchmark, results, tmp_path, durability):
    benchmark.group = "workflow step"
    n = STEPS[durability]
    with Database.open(str(tmp_path / "db"), durability=durability, snapshot_every_bytes=None) as db:
        @db.step()
        def empty(i):
            return i

        @db.workflow(name="bench")
        def loop(count):
            return [empty(i) for i in range(count)]

        benchmark.pedantic(lambda: loop(n), rounds=3, iterations=1)
        per = record(benchmark, results, "inmem", f"empty step {durability}", "recorded step", per_call=n)
    print(f"\ninmem empty step, {durability}: {per * 1e6:.1f} us per step ({n} steps)")


def test_dbos_empty_step(benchmark, results, tmp_path):
    dbos = pytest.importorskip("dbos", reason="dbos is not installed here: no DBOS row (pip install dbos)")
    benchmark.group = "workflow step"
    DBOS = dbos.DBOS
    n = STEPS["strict"]  # DBOS's SQLite commits are synchronous: compare with inmem strict (and batched)
    DBOS(config={"name": "inmem-bench", "system_database_url": f"sqlite:///{tmp_path / 'dbos.sqlite'}"})

    @DBOS.step()
    def empty(i):
        return i

    @DBOS.workflow()
    def loop(count):
        return [empty(i) for i in range(count)]

    DBOS.launch()
    try:
        benchmark.pedantic(lambda: loop(n), rounds=3, iterations=1)
        per = record(benchmark, results, "dbos", "empty step (SQLite)", "recorded step", per_call=n)
    finally:
        DBOS.destroy()
    print(f"\nDBOS empty step (SQLite system database): {per * 1e6:.1f} us per step ({n} steps)")
