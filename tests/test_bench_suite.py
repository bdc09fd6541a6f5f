"""The benchmark suite (``python -m benches.compare``) runs end to end at a tiny scale, so it never rots.

One run with inmem and sqlite3 (the stdlib peer, always present), one size,
one repetition: every workload must produce figures, the Markdown table must
carry the inmem / best-peer column, and results.json must hold what the
table shows. A missing optional peer is a note, not a failure. Takes a few
seconds: it starts a worker, a build and a reopen process per engine.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def compare():
    sys.path.insert(0, ROOT)
    try:
        from benches import compare as mod
    finally:
        sys.path.remove(ROOT)
    return mod


def test_compare_runs_every_workload_at_a_tiny_scale(compare, tmp_path, capsys):
    out = tmp_path / "out"
    code = compare.main(["--scale", "0.002", "--sizes", "1000", "--reps", "1", "--engines",
                         "inmem,sqlite3,no-such-engine", "--out", str(out), "--dir", str(tmp_path)])
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    res = data["results"]
    for wid in ("W1 put off", "W2 put batched", "W1 put strict", "W3 get N=1000", "W4 scan-100 N=1000",
                "W8 put batched N=1000", "W6 YCSB-A N=1000", "W6 YCSB-D N=1000", "W6 YCSB-F N=1000",
                "W7 strict 1 thread", "W7 strict 16 threads"):
        for engine in ("inmem", "sqlite3"):
            assert res[wid][engine]["ops"] > 0, (wid, engine, res[wid])
            assert res[wid][engine]["p99_us"] >= res[wid][engine]["p50_us"] > 0
    reopen = res["W5 reopen N=1000"]
    for engine in ("inmem", "sqlite3"):
        assert 0 < reopen[engine]["open_s"] <= reopen[engine]["first_s"] <= reopen[engine]["all_s"]
    md = (out / "results.md").read_text()
    assert "inmem / best peer" in md and "| W3 get N=1000 |" in md and "(sqlite3)" in md
    assert "W9 memory" in md and "| W6 YCSB-B N=1000 |" in md
    assert res["W7 strict 4 threads"]["_fsync_per_s"] > 0 and "single-thread strict rate" in md
    # nothing failed; the unknown engine is simply not run
    assert not [n for n in data["notes"] if "failed" in n]
    assert data["engines"] == ["inmem", "sqlite3"]
    # scratch databases are removed
    assert not [p for p in os.listdir(tmp_path) if p.startswith("inmem-compare-")]


def test_zipfian_generator_is_skewed_and_in_range(compare):
    import random

    zipf = compare.Zipfian(1000)
    rng = random.Random(1)
    draws = [zipf.next(rng) for _ in range(20000)]
    assert min(draws) >= 0 and max(draws) < 1000
    top = sum(1 for d in draws if d == 0) / len(draws)
    assert 0.10 < top < 0.16  # theta 0.99 over 1,000 items: rank 0 draws ~13 %
    assert len({compare._scramble(r, 1000) for r in range(50)}) > 40  # hot ranks spread out
