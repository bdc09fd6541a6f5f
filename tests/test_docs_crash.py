"""Documents survive a SIGKILL during concurrent hooks: after reopen each document equals the operations
of the acknowledged commits applied in commit order.

A child process runs 4 threads (strict durability: an operation that returned
is on disk), each incrementing a shared counter and appending to a shared list
of one document — half of them in autocommit calls, half in transactions
holding both operations — and printing an ack line after each. The parent
SIGKILLs it after a seed-dependent number of acks. After reopen: every acked
append is in the list exactly once; the counter equals the number of appends
(they were committed together or in one transaction each, so a torn pair would
show); applying the operations ``db.history`` recorded, in commit order, to an
empty document gives exactly the stored document; replay equals the live state.
"""

from __future__ import annotations


import pytest

from inmem import Database
from inmem.jsondoc import MISSING, apply_op

from .conftest import acks_until_sigkill

THREADS = 4
PER_THREAD = 300

CHILD = r'''
import sys, threading
from inmem import Database

db = Database.open(sys.argv[1], durability="strict")
(run,) = [r.id for r in db.runs.list(name="hooks")]
lock = threading.Lock()

def worker(t):
    for i in range(%(per)d):
        if i %% 2:
            with db.transaction() as tx:
                tx.docs.append(run, "ctx", "log", "%%d-%%d" %% (t, i))
                tx.docs.increment(run, "ctx", "count")
        else:
            db.docs.patch(run, "ctx", [{"op": "add", "path": "/log/-", "value": "%%d-%%d" %% (t, i)}])
            db.docs.increment(run, "ctx", "count")  # a second commit: may be lost with the kill
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
''' % {"per": PER_THREAD, "threads": THREADS}


@pytest.mark.parametrize("seed", range(2))
def test_documents_equal_the_acknowledged_ops_after_sigkill(dbdir, seed):
    with Database.open(dbdir) as db:
        run = db.begin_run("hooks")
        db.docs.set(run, "ctx", {"count": 0, "log": []})
    kill_after = 150 + 300 * seed
    acks = [f"{int(t)}-{int(i)}" for t, i in acks_until_sigkill(CHILD, dbdir, kill_after)]
    with Database.open(dbdir) as db:
        doc = db.docs.get(run, "ctx")
        log = doc["log"]
        assert len(log) == len(set(log)), "an append was applied twice"
        missing = set(acks) - set(log)
        assert not missing, f"acknowledged appends lost: {sorted(missing)[:5]}"
        # an autocommit pair (append, then increment) may be cut between its two commits: one per thread
        assert len(log) - THREADS <= doc["count"] <= len(log)
        rebuilt = MISSING
        for commit in db.history(run):
            for op in commit.ops:
                if op.primitive == "docs":
                    rebuilt = apply_op(rebuilt, {"op": op.kind, **op.value})
        assert rebuilt == doc
        assert db.replay_run(run) == db.run_state(run)
