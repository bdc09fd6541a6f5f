"""New keys' cost counted in full: puts of new keys, then the ordered read that sorts them in.

Usage (from the repository root)::

    python -m benches.fresh_keys                  # 100,000 new keys, key order and random order, 5 rounds
    python -m benches.fresh_keys --keys 20000 --rounds 3

A put of a new key leaves it in the store's fresh keys (``inmem.store.SortedMap``) until the next
ordered read, or until ``FRESH_LIMIT`` of them wait, sorts them in. A put loop alone would not see
that cost, so each round here puts ``--keys`` new keys (one autocommit each, batched durability)
into a run that already holds 50,000 keys, then times the first scan after them, which sorts them
in. The same is run with the store's put replaced by ``SortedDict.__setitem__`` (each key inserted
into the sorted list at once, as before the fresh keys), interleaved round by round; medians of
the per-key times are printed.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from tests.checkout import use_checkout  # noqa: E402

use_checkout()

from sortedcontainers import SortedDict  # noqa: E402

from inmem import Database  # noqa: E402
from inmem.testing import kernel  # noqa: E402


def one_round(keys: int, order: str, eager: bool) -> tuple[float, float]:
    """Return (µs per put, µs per key of the first scan after them)."""
    with tempfile.TemporaryDirectory() as path:
        db = Database.open(path, durability="batched", snapshot_every_bytes=None)
        run = db.begin_run("r")
        with db.transaction() as tx:
            for i in range(0, 100_000, 2):
                tx.kv.put(run, f"k/{i:08d}", i)
        list(db.kv.scan(run, "k/0000000"))  # every key sorted in
        new = [f"k/{i:08d}" for i in range(1, 2 * keys, 2)]
        if order == "random":
            random.Random(1).shuffle(new)
        k = kernel(db)
        if eager:  # each new key straight into the sorted list
            sorted_map = k._store.sorted_map  # noqa: SLF001 - a benchmark's switch

            def put_version(key: bytes, version: int, value: bytes) -> None:
                SortedDict.__setitem__(sorted_map, key, (version, value))

            k._put_version = put_version  # noqa: SLF001
        put = db.kv.put
        t0 = time.perf_counter()
        for key in new:
            put(run, key, {"v": 1})
        t1 = time.perf_counter()
        list(db.kv.scan(run, "k/0000000"))
        t2 = time.perf_counter()
        db.close()
    return (t1 - t0) / keys * 1e6, (t2 - t1) / keys * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=100_000, help="new keys per round (default 100,000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per variant, interleaved (default 5)")
    args = ap.parse_args(argv)
    for order in ("key order", "random"):
        results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        for _ in range(args.rounds):
            for eager in (True, False):
                results[eager].append(one_round(args.keys, order, eager))
        for eager in (True, False):
            put = statistics.median(r[0] for r in results[eager])
            scan = statistics.median(r[1] for r in results[eager])
            label = "inserted at once" if eager else "fresh keys      "
            print(f"{order:9s} {label}: put {put:.2f} µs + first scan {scan:.3f} µs/key = {put + scan:.2f} µs/key")
    return 0


if __name__ == "__main__":
    sys.exit(main())
