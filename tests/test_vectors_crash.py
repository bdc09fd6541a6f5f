"""Vectors survive a SIGKILL: every acknowledged upsert is found after reopen, and search equals exact.

A child process runs 4 threads upserting vectors (strict durability, so an
upsert that returned is on disk) into one collection, printing an ack line
after each; the parent SIGKILLs it after a number of acks that depends on the
seed. After reopen: every acked vector is stored with the bytes that were
written, nothing that was never written appears, and the search served by
the rebuilt derived index equals a brute-force top-k over the recovered
records (the index is never written to disk: nothing of it can be torn).
"""

from __future__ import annotations


import numpy as np
import pytest

from inmem import Database

from .conftest import acks_until_sigkill

DIM = 8
THREADS = 4
PER_THREAD = 400

CHILD = r'''
import sys, threading
import numpy as np
from inmem import Database

path = sys.argv[1]
db = Database.open(path, durability="strict")
(run,) = [r.id for r in db.runs.list(name="vec")]
lock = threading.Lock()

def vector(t, i):
    return np.random.default_rng(t * 100_000 + i).normal(size=%(dim)d)

def worker(t):
    for i in range(%(per)d):
        db.vectors.upsert(run, "mem", "t%%d-%%d" %% (t, i), vector(t, i), metadata={"t": t, "i": i})
        with lock:
            sys.stdout.write("ack %%d %%d\n" %% (t, i))
            sys.stdout.flush()

threads = [threading.Thread(target=worker, args=(t,)) for t in range(%(threads)d)]
for t in threads:
    t.start()
for t in threads:
    t.join()
sys.stdout.write("done\n")
sys.stdout.flush()
sys.stdin.read()
''' % {"dim": DIM, "per": PER_THREAD, "threads": THREADS}


def vector(t: int, i: int) -> np.ndarray:
    return np.random.default_rng(t * 100_000 + i).normal(size=DIM).astype("<f4")


@pytest.mark.parametrize("seed", range(3))
def test_acknowledged_upserts_survive_sigkill(dbdir, seed):
    with Database.open(dbdir) as db:
        run = db.begin_run("vec")
        db.vectors.create(run, "mem", dim=DIM)
    kill_after = 100 + 250 * seed
    acks = [(int(t), int(i)) for t, i in acks_until_sigkill(CHILD, dbdir, kill_after)]
    with Database.open(dbdir) as db:
        stored = {}
        for t in range(THREADS):
            for i in range(PER_THREAD):
                rec = db.vectors.get(run, "mem", f"t{t}-{i}")
                if rec is not None:
                    assert rec.vector.tobytes() == vector(t, i).tobytes()  # never a torn or wrong vector
                    assert rec.metadata == {"t": t, "i": i}
                    stored[rec.id] = rec.vector
        for t, i in acks:
            assert f"t{t}-{i}" in stored, f"acknowledged upsert t{t}-{i} is lost"
        assert db.vectors.count(run, "mem") == len(stored)
        ids = sorted(stored)
        matrix = np.stack([stored[i] for i in ids]).astype(np.float64)
        norms = np.linalg.norm(matrix, axis=1)
        for q in np.random.default_rng(seed).normal(size=(5, DIM)):
            scores = matrix @ q / (norms * np.linalg.norm(q))
            want = [ids[j] for j in sorted(range(len(ids)), key=lambda j: (-scores[j], ids[j]))[:10]]
            got = db.vectors.search(run, "mem", q, k=10)
            assert [m.id for m in got] == want
            assert [m.score for m in got] == pytest.approx([scores[ids.index(w)] for w in want], rel=1e-5)
