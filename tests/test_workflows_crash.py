"""Durable workflows survive SIGKILL at step boundaries and inside steps (real subprocesses, strict durability).

A 20-step workflow: each step appends a line to a file outside inmem (the external effect) and then,
through its transaction, writes a KV value and increments and appends to the shared context document
(the inmem effects). A chain of child processes runs it: each recovers the workflow
(``db.workflows.recover()``), goes on until its kill point, prints ``ack`` and blocks, and is
SIGKILLed there — either right after a step's record committed (a step boundary) or inside a step,
after its external effect and before its commit. The last process recovers and finishes. Then:
the result and the context equal an uncrashed run's; every step's inmem effect exists exactly once;
the file has exactly one line per step, except two for each step killed inside (at least once for
external effects), so no step that had been recorded ran again.

CI runs ``KILLS`` (4 kill points, two at boundaries and two inside steps: ~0.5 s each for a Python start); ``INMEM_WORKFLOW_KILLS=all``
kills at every one of the 20 step boundaries and inside every fifth step.
"""

from __future__ import annotations

import os

from inmem import Database

from .conftest import acks_until_sigkill

STEPS = 20
KILLS = [("inside", 0), ("after", 6), ("inside", 13), ("after", STEPS - 1)]
if os.environ.get("INMEM_WORKFLOW_KILLS") == "all":
    KILLS = sorted([("after", i) for i in range(STEPS)] + [("inside", i) for i in range(0, STEPS, 5)],
                   key=lambda k: (k[1], k[0] == "after"))

WORKFLOW = r'''
def declare(db, effects, kill=None):
    import sys
    from inmem.workflows import context

    def stop():
        sys.stdout.write("ack\n")
        sys.stdout.flush()
        sys.stdin.read()  # SIGKILLed here

    @db.step(name="work")
    def work(i):
        with open(effects, "a") as f:  # the external effect, before the commit
            f.write("%d\n" % i)
        if kill == ("inside", i):
            stop()
        ctx = context()
        ctx.tx.kv.put(ctx.run, "s%02d" % i, i * i)
        ctx.increment("count")
        ctx.append("order", i)
        return i * i

    @db.workflow(name="twenty", max_recovery_attempts=100)
    def twenty(n):
        outputs = []
        for i in range(n):
            outputs.append(work(i))
            if kill == ("after", i):
                stop()
        return {"sum": sum(outputs), "last": outputs[-1]}
    return twenty
'''

CHILD = r'''
import sys
from tests.checkout import use_checkout
use_checkout()  # this checkout's engine (the child runs from the checkout root)
from inmem import Database
%(workflow)s
db = Database.open(sys.argv[1], durability="strict")
twenty = declare(db, %(effects)r, %(kill)r)
if db.workflows.list():
    db.workflows.recover()
else:
    db.workflows.start(twenty, %(steps)d, workflow_id="wf")
db.workflows.handle("wf").result()
sys.stdout.write("done\n")
sys.stdout.flush()
sys.stdin.read()
'''

namespace: dict = {}
exec(WORKFLOW, namespace)  # the same workflow code in the parent
declare = namespace["declare"]


def test_workflow_completes_exactly_once_after_sigkill_at_each_kill_point(tmp_path):
    dbdir, effects = str(tmp_path / "db"), str(tmp_path / "effects.txt")
    for kill in KILLS:
        child = CHILD % {"workflow": WORKFLOW, "effects": effects, "kill": kill, "steps": STEPS}
        acks_until_sigkill(child, dbdir, 1)
    with Database.open(dbdir, durability="strict") as db:
        declare(db, effects)
        recovered = db.workflows.recover()
        assert [h.id for h in recovered] == ["wf"]
        result = recovered[0].result(timeout=60)
        run = recovered[0].run
        context_doc = db.docs.get(run, "context")
        kv = dict(db.kv.scan(run, "s"))
        steps = db.workflows.steps("wf")
        info = db.workflows.get("wf")
    # an uncrashed run of the same workflow
    with Database.open(str(tmp_path / "clean")) as db:
        clean = db.workflows.start(declare(db, str(tmp_path / "clean.txt")), STEPS, workflow_id="wf")
        assert clean.result(timeout=60) == result
        assert db.docs.get(clean.run, "context") == context_doc
    assert context_doc == {"count": STEPS, "order": list(range(STEPS))}  # inmem effects exactly once, in order
    assert kv == {"s%02d" % i: i * i for i in range(STEPS)}
    assert [(s.seq, s.name, s.output, s.attempts) for s in steps] == [
        (i + 1, "work", i * i, 1) for i in range(STEPS)]
    assert info.status == "completed" and info.recoveries == len(KILLS)
    with open(effects) as f:
        lines = [int(x) for x in f.read().split()]
    killed_inside = {i for how, i in KILLS if how == "inside"}
    for i in range(STEPS):  # external effects at least once; a recorded step never ran again
        assert lines.count(i) == (2 if i in killed_inside else 1), (i, lines)



SLEEPER = r'''
import sys
from tests.checkout import use_checkout
use_checkout()
from inmem import Database
from inmem.workflows import context

db = Database.open(sys.argv[1], durability="strict", clock=lambda: 1_800_000_000.0)

@db.workflow(name="napper")
def napper():
    context().sleep(3600)
    got = context().wait_for("go")
    return [got, context().now()]

db.workflows.start(napper, workflow_id="nap")
db.workflows.signal("nap", "go", {"n": 7})  # sent before anyone waits: kept
with db.watch(primitive="kv", prefix="_wf/step/00000001", from_version=1) as w:
    w.next(timeout=30)  # the sleep step (its wake-up time) is committed
print("ack asleep", flush=True)
print("done", flush=True)
sys.stdin.read()
'''


def test_durable_sleep_and_a_kept_signal_survive_sigkill(dbdir):
    """A workflow asleep for an hour (by the injected clock) with a signal waiting for it is SIGKILLed with
    its process; reopened an hour later (clock moved, no real sleep) it recovers, sleeps no more, takes the
    signal sent before the crash and finishes."""
    from inmem.workflows import context

    with Database.open(dbdir) as db:
        db.begin_run("setup")  # the directory exists before the child opens it
    acks = acks_until_sigkill(SLEEPER, dbdir, 1)
    assert acks == [[b"asleep"]]
    clock = [1_800_000_000.0 + 3600]
    with Database.open(dbdir, clock=lambda: clock[0]) as db:
        @db.workflow(name="napper")
        def napper():
            context().sleep(3600)
            got = context().wait_for("go")
            return [got, context().now()]

        [handle] = db.workflows.recover()
        assert handle.result(timeout=30) == [{"n": 7}, 1_800_000_000.0 + 3600]
        assert [s.name for s in db.workflows.steps("nap")][:2] == ["sleep", "wait_for:go"]
