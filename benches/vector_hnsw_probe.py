"""HNSW vs exact vector search through ``db.vectors``: build time, p50 latency, recall@10.

Usage (from the repository root)::

    python benches/vector_hnsw_probe.py                       # 100,000 x 384 cosine (issue 14 targets)
    python benches/vector_hnsw_probe.py --n 20000 --dim 64    # quicker

Data: ``--n`` float32 vectors of ``--dim`` components drawn around
``--clusters`` Gaussian centres (centre ~ N(0, 1), spread ``--spread``),
fixed seed; queries drawn the same way. The same vectors are stored in an
``index="exact"`` and an ``index="hnsw"`` collection of one database
(``durability="off"``, each filled in one transaction, untimed).

Figures (wall clock, ``time.perf_counter``):

* build: the first hnsw search (matrix decode + the batch HNSW build);
  the first exact search likewise (matrix decode only).
* p50 / p95 of ``--queries`` single searches with k = 10 on the warm index.
* recall@10 of the hnsw answers against the exact answers of the same queries.

Targets (issue 14): hnsw p50 <= 1 ms at recall@10 >= 0.95, exact p50 <= 15 ms.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.checkout import use_checkout  # noqa: E402

use_checkout()

import numpy as np  # noqa: E402

from inmem import Database, vectorindex  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--clusters", type=int, default=1_000)
    p.add_argument("--spread", type=float, default=0.5)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--ef", type=int, default=vectorindex.HNSW_EF_SEARCH, help="HNSW ef (expansion_search)")
    a = p.parse_args()
    vectorindex.HNSW_EF_SEARCH = a.ef
    rng = np.random.default_rng(14)
    centers = rng.normal(size=(a.clusters, a.dim)).astype(np.float32)
    x = (centers[rng.integers(0, a.clusters, a.n)] + a.spread * rng.normal(size=(a.n, a.dim))).astype(np.float32)
    qs = (centers[rng.integers(0, a.clusters, a.queries)]
          + a.spread * rng.normal(size=(a.queries, a.dim))).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp, Database.open(os.path.join(tmp, "db"), durability="off") as db:
        run = db.begin_run()
        t = time.perf_counter()
        for kind in ("exact", "hnsw"):
            db.vectors.create(run, kind, dim=a.dim, index=kind)
            with db.transaction() as tx:
                for i, v in enumerate(x):
                    tx.vectors.upsert(run, kind, f"v{i:07d}", v)
        print(f"data: {a.n} x {a.dim} float32 cosine, {a.clusters} clusters, ef {a.ef}; "
              f"fill both {time.perf_counter() - t:.1f} s")
        answers: dict[str, list[set[str]]] = {}
        for kind in ("exact", "hnsw"):
            t = time.perf_counter()
            db.vectors.search(run, kind, qs[0], k=10)
            build = time.perf_counter() - t
            lat, answers[kind] = [], []
            for q in qs:
                t = time.perf_counter()
                got = db.vectors.search(run, kind, q, k=10)
                lat.append(time.perf_counter() - t)
                answers[kind].append({m.id for m in got})
            ms = np.array(lat) * 1e3
            print(f"{kind:5}  first search (build) {build:7.2f} s   p50 {np.median(ms):7.3f} ms   "
                  f"p95 {np.percentile(ms, 95):7.3f} ms")
        recall = np.mean([len(h & e) / 10 for h, e in zip(answers["hnsw"], answers["exact"])])
        print(f"hnsw recall@10 vs exact over {a.queries} queries: {recall:.4f}")


if __name__ == "__main__":
    main()
