"""Benchmarks of time to live (issue 17): what a ``ttl`` costs a put and a get, and a sweep of 100k expired keys.

Run from the repository root::

    python -m pytest benches/test_ttl_bench.py --benchmark-only -q -p no:randomly   # ~30 s on 2 cores

Method
------
Medians over rounds, ``durability="batched"``, ``snapshot_every_bytes=None``,
``sweep_interval_s=None`` (no background sweeps) and an injected clock (no
value expires while it is measured). The rows per group, in the same process:

``kv.put`` / ``kv.put ttl``
    ``db.kv.put(run, key, 100-byte value)``, with and without ``ttl=3600``
    (a ttl put also writes its expiry index entry and reads the record it
    replaces, in the same commit), 2,000 keys per round.
``kv.get`` / ``kv.get ttl`` / ``kv.get refresh``
    point reads of those keys; ``refresh_ttl=True`` renews the lease (a commit).
``sweep-100k``
    ``db.sweep()`` of 100,000 expired keys in one run (10 commits of 10,000).
"""

from __future__ import annotations

import pytest
from workloads import record

from inmem import Database

KEYS = 2000
VALUE = "v" * 100


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def db(tmp_path):
    with Database.open(str(tmp_path / "db"), durability="batched", snapshot_every_bytes=None,
                       sweep_interval_s=None, clock=Clock()) as d:
        yield d


@pytest.mark.parametrize("ttl", [None, 3600])
def test_put(benchmark, results, db, ttl):
    benchmark.group = "ttl-put"
    run = db.begin_run("bench")
    put = db.kv.put

    def round_():
        for i in range(KEYS):
            put(run, f"key-{i:06d}", VALUE, ttl=ttl)

    benchmark.pedantic(round_, rounds=7, iterations=1, warmup_rounds=1)
    record(benchmark, results, "inmem" if ttl is None else "ttl", "kv.put" if ttl is None else "kv.put ttl",
           f"1 put of a 100-byte value{'' if ttl is None else ', ttl=3600'}", per_call=KEYS)


@pytest.mark.parametrize("how", ["plain", "ttl", "refresh"])
def test_get(benchmark, results, db, how):
    benchmark.group = "ttl-get"
    run = db.begin_run("bench")
    for i in range(KEYS):
        db.kv.put(run, f"key-{i:06d}", VALUE, ttl=None if how == "plain" else 3600)
    get = db.kv.get
    refresh = how == "refresh"

    def round_():
        for i in range(KEYS):
            get(run, f"key-{i:06d}", refresh_ttl=refresh)

    benchmark.pedantic(round_, rounds=7, iterations=1, warmup_rounds=1)
    record(benchmark, results, "inmem" if how == "plain" else how,
           {"plain": "kv.get", "ttl": "kv.get ttl", "refresh": "kv.get refresh"}[how],
           f"1 get{'' if how == 'plain' else ' of an expiring value'}{', lease renewed' if refresh else ''}",
           per_call=KEYS)


def test_sweep_100k(benchmark, results, tmp_path):
    benchmark.group = "sweep-100k"
    clock = Clock()
    n = 100_000

    def setup():
        db = Database.open(str(tmp_path / f"s{clock.t}"), durability="batched", snapshot_every_bytes=None,
                           sweep_interval_s=None, clock=clock)
        run = db.begin_run("bench")
        with db.transaction() as tx:
            for i in range(n):
                tx.kv.put(run, f"key-{i:06d}", VALUE, ttl=1)
        clock.t += 10
        return (db,), {}

    swept = []

    def sweep(db):
        swept.append(db.sweep())
        db.close()

    benchmark.pedantic(sweep, setup=setup, rounds=3, iterations=1)
    assert swept == [n] * len(swept)
    record(benchmark, results, "inmem", "db.sweep()", "sweep of 100,000 expired keys (per key)", per_call=n)
