"""Durable workflows (``inmem.workflows``): steps recorded once, re-runs, non-determinism, fork, cancel,
recovery, durable sleep and signals on an injected clock, hooks on one shared context.

No test sleeps to wait for a thread: each waits on a workflow's result (bounded), and an injected
clock moves time (``db.workflows.wake()`` makes sleepers look again).
"""

from __future__ import annotations

import sys

import pytest

import inmem
from inmem import (Database, InvalidArgument, InvalidValue, NonDeterminismError, WorkflowCancelled, WorkflowError)
from inmem.workflows import context
from tests.conftest import assert_refused_unwritten

T = 30  # seconds a test waits at most for a workflow that should finish at once


class Clock:
    """An injected database clock: seconds since the epoch, moved by hand."""

    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def define(db, calls):
    """A 3-step workflow writing to inmem through each step's transaction; ``calls`` counts bodies run."""

    @db.step()
    def charge(order, amount):
        calls.append(("charge", order))
        ctx = context()
        ctx.tx.kv.put(ctx.run, "charged", amount)
        ctx.increment("steps")
        return {"receipt": f"r-{order}", "key": ctx.idempotency_key}

    @db.step()
    def ship(order):
        calls.append(("ship", order))
        ctx = context()
        ctx.tx.kv.put(ctx.run, "shipped", True)
        ctx.increment("steps")
        return "shipped"

    @db.workflow(name="order")
    def order(order_id, amount=10):
        receipt = charge(order_id, amount)
        status = ship(order_id)
        return [receipt["receipt"], status, receipt["key"]]

    return order


def test_steps_are_recorded_with_their_writes_in_one_commit(dbdir):
    calls = []
    with Database.open(dbdir) as db:
        order = define(db, calls)
        handle = db.workflows.start(order, "A1", amount=7, workflow_id="o-1")
        assert handle.id == "o-1" and isinstance(handle.run, str)
        assert handle.result(timeout=T) == ["r-A1", "shipped", "o-1:1"]
        assert handle.status() == "completed"
        steps = db.workflows.steps("o-1")
        assert [(s.seq, s.name, s.output) for s in steps] == [
            (1, "charge", {"receipt": "r-A1", "key": "o-1:1"}), (2, "ship", "shipped")]
        assert steps[0].idempotency_key == "o-1:1" and steps[0].attempts == 1 and steps[0].duration_s >= 0
        assert db.kv.get(handle.run, "charged") == 7 and db.docs.get(handle.run, "context") == {"steps": 2}
        # the step record, the kv write and the context increment are one commit
        commits = db.history(handle.run)
        step1 = next(c for c in commits if any(op.key == "_wf/step/00000001" for op in c.ops))
        assert {(op.primitive, op.key) for op in step1.ops} == {
            ("kv", "_wf/step/00000001"), ("kv", "charged"), ("docs", "context")}
        # the run is the workflow's history: tagged, ended, replayable
        info = db.runs.get(handle.run)
        assert "workflow" in info.tags and "workflow-id:o-1" in info.tags and info.status == "completed"
        replayed = db.replay_run(handle.run)  # replay reconstructs every step's recorded output
        assert [v["output"] for k, v in sorted(replayed.kv.items()) if k.startswith("_wf/step/")] == [
            s.output for s in steps]
        assert db.workflows.get("o-1").status == "completed"
        assert [w.id for w in db.workflows.list(status="completed", name="order")] == ["o-1"]
        # calling the decorated function runs a fresh workflow synchronously
        assert order("A2") == ["r-A2", "shipped", order_key(db, "A2")]


def order_key(db, order_id):
    wid = next(w.id for w in db.workflows.list() if w.args == [order_id])
    return f"{wid}:1"


def test_same_id_reruns_from_the_record_and_refuses_other_arguments(dbdir):
    calls = []
    with Database.open(dbdir) as db:
        order = define(db, calls)
        first = db.workflows.start(order, "A1", workflow_id="o-1").result(timeout=T)
        assert len(calls) == 2
        again = db.workflows.start(order, "A1", workflow_id="o-1")
        assert again.result(timeout=T) == first and len(calls) == 2  # stored result, no step ran again
        assert_refused_unwritten(db, dbdir, lambda: db.workflows.start(order, "B9", workflow_id="o-1"),
                                 InvalidArgument)
        assert_refused_unwritten(db, dbdir, lambda: db.workflows.start(order, object(), workflow_id="o-2"),
                                 InvalidValue)
        with pytest.raises(InvalidArgument):
            db.workflows.start(order, "A1", workflow_id="")
        with pytest.raises(InvalidArgument):
            db.workflows.get("nope")
        with pytest.raises(WorkflowError):
            context()
        with pytest.raises(InvalidArgument):
            db.workflow(max_recovery_attempts=-1)
        with pytest.raises(InvalidArgument):
            db.step(retries=-1)


def test_recorded_steps_are_not_run_again_after_a_failure_and_resume(dbdir):
    calls, fail = [], [True]
    with Database.open(dbdir) as db:
        @db.step()
        def work(i):
            calls.append(i)
            ctx = context()
            ctx.tx.kv.put(ctx.run, f"w{i}", i)
            return i

        @db.workflow(name="flaky")
        def flaky():
            out = [work(0), work(1)]
            if fail[0]:
                raise RuntimeError("boom after two steps")
            return out + [work(2)]

        handle = db.workflows.start(flaky, workflow_id="f")
        with pytest.raises(RuntimeError, match="boom"):
            handle.result(timeout=T)
        assert handle.status() == "failed" and calls == [0, 1]
        fail[0] = False
        assert db.workflows.resume("f").result(timeout=T) == [0, 1, 2]
        assert calls == [0, 1, 2]  # the recorded steps returned their outputs without running


def test_step_exception_is_recorded_retried_and_reraised_on_rerun(dbdir):
    attempts = []
    with Database.open(dbdir) as db:
        @db.step(retries=2, backoff_s=0)
        def shaky():
            attempts.append(1)
            ctx = context()
            ctx.tx.kv.put(ctx.run, "partial", len(attempts))  # rolled back with each failed attempt
            raise ValueError(f"attempt {len(attempts)}")

        @db.workflow(name="shaky")
        def wf():
            try:
                shaky()
            except ValueError as exc:
                return str(exc)

        handle = db.workflows.start(wf, workflow_id="s")
        assert handle.result(timeout=T) == "attempt 3" and len(attempts) == 3
        [step] = db.workflows.steps("s")
        assert step.error["type"] == "builtins.ValueError" and step.attempts == 3 and step.output is None
        assert db.kv.get(handle.run, "partial") is None
        fork = db.workflows.fork("s", 2)  # copies the failed step: re-raised from its record, not run
        assert fork.result(timeout=T) == "attempt 3" and len(attempts) == 3


def test_a_conflicting_step_commit_runs_the_body_again_and_records_once(dbdir):
    bodies = []
    with Database.open(dbdir) as db:
        run = db.begin_run("shared")
        db.kv.put(run, "seen", 0)

        @db.step()
        def bump():
            ctx = context()
            seen = ctx.tx.kv.get(run, "seen")  # in the step's read set
            if not bodies:
                db.kv.put(run, "seen", 100)  # another writer commits first: this commit must conflict
            bodies.append(seen)
            ctx.tx.kv.put(run, "seen", seen + 1)
            return seen + 1

        @db.workflow(name="bump")
        def wf():
            return bump()

        assert db.workflows.start(wf, workflow_id="b").result(timeout=T) == 101
        assert bodies == [0, 100] and db.kv.get(run, "seen") == 101
        [step] = db.workflows.steps("b")
        assert step.output == 101


def test_cancel_during_a_step_rolls_the_step_back(dbdir):
    with Database.open(dbdir) as db:
        @db.step()
        def doomed():
            ctx = context()
            ctx.tx.kv.put(ctx.run, "half-done", True)
            db.workflows.cancel(ctx.id)  # commits while the step's transaction is open
            return "never recorded"

        @db.workflow(name="doomed")
        def wf():
            return doomed()

        handle = db.workflows.start(wf, workflow_id="d")
        with pytest.raises(WorkflowCancelled):
            handle.result(timeout=T)
        assert db.workflows.steps("d") == [] and db.kv.get(handle.run, "half-done") is None


def test_non_determinism_is_detected(dbdir):
    with Database.open(dbdir) as db:
        @db.step()
        def a():
            return "a"

        @db.step()
        def b():
            return "b"

        @db.workflow(name="changing")
        def v1():
            a()
            raise RuntimeError("stop")

        with pytest.raises(RuntimeError):
            db.workflows.start(v1, workflow_id="n").result(timeout=T)

        @db.workflow(name="changing")  # the code changed under the recorded history
        def v2():
            return b()

        with pytest.raises(NonDeterminismError) as err:
            db.workflows.resume("n").result(timeout=T)
        assert (err.value.workflow_id, err.value.seq, err.value.expected, err.value.recorded) == ("n", 1, "b", "a")
        assert db.workflows.get("n").status == "failed"


def test_fork_from_step_k_reruns_only_the_steps_from_k(dbdir):
    ran = []
    with Database.open(dbdir) as db:
        @db.step()
        def add(i):
            ran.append(i)
            ctx = context()
            ctx.append("done", i)
            ctx.tx.kv.put(ctx.run, f"k{i}", i)
            return i * 10

        @db.workflow(name="five")
        def five():
            return [add(i) for i in range(1, 6)]

        original = db.workflows.start(five, workflow_id="p")
        assert original.result(timeout=T) == [10, 20, 30, 40, 50]
        ran.clear()
        fork = db.workflows.fork("p", 4)
        assert fork.result(timeout=T) == [10, 20, 30, 40, 50]
        assert ran == [4, 5]
        assert db.docs.get(fork.run, "context") == {"done": [1, 2, 3, 4, 5]}  # steps 1-3 copied, not re-applied
        assert sorted(k for k, _ in db.kv.scan(fork.run, "k")) == ["k1", "k2", "k3", "k4", "k5"]
        info = db.workflows.get(fork.id)
        assert info.forked_from == "p" and db.runs.get(fork.run).parent == original.run
        with pytest.raises(InvalidArgument):
            db.workflows.fork("p", 7)
        ran.clear()
        assert db.workflows.fork("p", 1).result(timeout=T) == [10, 20, 30, 40, 50] and ran == [1, 2, 3, 4, 5]


def recorded(db, run, seq):
    """Block (bounded) until step ``seq`` of the workflow in ``run`` is committed: a change-feed wait, no polling."""
    with db.watch(run=run, primitive="kv", prefix=f"_wf/step/{seq:08d}", from_version=1) as watch:
        assert watch.next(timeout=T) is not None, f"step {seq} was never recorded"


def test_durable_sleep_waits_for_the_injected_clock(dbdir):
    clock = Clock()
    with Database.open(dbdir, clock=clock) as db:
        @db.workflow(name="sleeper")
        def sleeper():
            context().sleep(3600)
            return context().now()

        handle = db.workflows.start(sleeper, workflow_id="z")
        recorded(db, handle.run, 1)  # the wake-up time is on record
        clock.now += 1800
        db.workflows.wake()
        with pytest.raises(TimeoutError):
            handle.result(timeout=0.05)
        assert handle.status() == "running"
        clock.now += 1800
        db.workflows.wake()
        assert handle.result(timeout=T) == clock.now
        with pytest.raises(InvalidArgument):
            db.workflows.start(lambda: context().sleep(-1)).result(timeout=T)


def test_sleep_and_signals_survive_a_restart(dbdir):
    clock = Clock()
    steps_ran = []

    def declare(db):
        @db.step()
        def arm():
            steps_ran.append("arm")

        @db.workflow(name="waiter", max_recovery_attempts=5)
        def waiter():
            arm()
            context().sleep(3600)
            first = context().wait_for("go")
            late = context().wait_for("never", timeout=60)
            return [first, late, context().now()]
        return waiter

    with Database.open(dbdir, clock=clock) as db:
        handle = db.workflows.start(declare(db), workflow_id="w")
        db.workflows.signal("w", "go", {"n": 1})  # sent before anyone waits: kept
        recorded(db, handle.run, 2)  # asleep, its wake-up time on record
    assert steps_ran == ["arm"]
    clock.now += 1800
    with Database.open(dbdir, clock=clock) as db:
        declare(db)
        [resumed] = db.workflows.recover()
        assert db.workflows.get("w").recoveries == 1
        with pytest.raises(TimeoutError):
            resumed.result(timeout=0.05)  # 1800 s of the recorded 3600 s are left
        clock.now += 1800
        db.workflows.wake()
        recorded(db, resumed.run, 4)  # waiting for "never" with a 60 s timeout whose deadline is recorded
        clock.now += 61
        db.workflows.wake()
        first, late, now = resumed.result(timeout=T)
        assert first == {"n": 1} and late is None and now == clock.now
        assert steps_ran == ["arm"]  # recorded before the restart: not run again
        names = [s.name for s in db.workflows.steps("w")]
        assert names[:4] == ["arm", "sleep", "wait_for:go", "deadline:never"]


def test_cancel_stops_a_waiting_workflow_and_resume_continues_it(dbdir):
    with Database.open(dbdir) as db:
        @db.workflow(name="blocked")
        def blocked():
            return context().wait_for("go")

        handle = db.workflows.start(blocked, workflow_id="c")
        assert db.workflows.cancel("c") is True
        with pytest.raises(WorkflowCancelled):
            handle.result(timeout=T)
        assert handle.status() == "cancelled"
        db.workflows.signal("c", "go", "later")
        assert db.workflows.resume("c").result(timeout=T) == "later"
        assert db.workflows.cancel("c") is False  # completed: nothing changes


def test_recovery_gives_up_after_max_recovery_attempts(dbdir):
    def declare(db):
        @db.workflow(name="stuck", max_recovery_attempts=1)
        def stuck():
            return context().wait_for("never")
        return stuck

    with Database.open(dbdir) as db:
        db.workflows.start(declare(db), workflow_id="s")
    with Database.open(dbdir) as db:
        declare(db)
        assert [h.id for h in db.workflows.recover()] == ["s"]
    with Database.open(dbdir) as db:
        declare(db)
        assert db.workflows.recover() == []
        info = db.workflows.get("s")
        assert info.status == "failed" and info.recoveries == 1
        with pytest.raises(WorkflowError, match="max_recovery_attempts"):
            db.workflows.handle("s").result(timeout=T)


def test_recorded_now_random_uuid_are_replayed(dbdir):
    fail = [True]
    with Database.open(dbdir) as db:
        @db.workflow(name="nd")
        def nd():
            ctx = context()
            values = [ctx.now(), ctx.random(), ctx.uuid()]
            if fail[0]:
                ctx.set({"first": values})
                raise RuntimeError("retry me")
            return values

        handle = db.workflows.start(nd, workflow_id="r")
        with pytest.raises(RuntimeError):
            handle.result(timeout=T)
        first = db.docs.get(handle.run, "context")["first"]
        fail[0] = False
        assert db.workflows.resume("r").result(timeout=T) == first


def test_hooks_update_one_shared_context_without_lost_updates(dbdir):
    """The seed's example (MemFlow execHook): a main workflow, parallel hooks, merge and increment on one context."""
    with Database.open(dbdir) as db:
        @db.workflow(name="hook")
        def hook(name, kind, rounds):
            ctx = context()
            for _ in range(rounds):
                ctx.increment("metrics.count")
            ctx.merge({"user": {"seen_by": {kind: True}}})
            ctx.signal(f"{kind}-complete", {"kind": kind, "processed": True})

        @db.workflow(name="example")
        def example(name, hooks, rounds):
            ctx = context()
            ctx.set({"user": {"name": name}, "hooks": {}, "metrics": {"count": 0}})
            for i in range(hooks):
                db.workflows.hook(ctx.id, hook, name, f"hook{i}", rounds)
            results = {f"hook{i}": ctx.wait_for(f"hook{i}-complete") for i in range(hooks)}
            ctx.merge({"hooks": results})
            ctx.increment("metrics.count", hooks)
            return ctx.get()

        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)  # the hooks' threads really interleave
        try:
            doc = db.workflows.start(example, "ada", 8, 5, workflow_id="main").result(timeout=T)
        finally:
            sys.setswitchinterval(interval)
        assert doc["metrics"]["count"] == 8 * 5 + 8
        assert doc["user"] == {"name": "ada", "seen_by": {f"hook{i}": True for i in range(8)}}
        assert doc["hooks"] == {f"hook{i}": {"kind": f"hook{i}", "processed": True} for i in range(8)}
        hooks = db.workflows.list(name="hook")
        assert [db.workflows.handle(w.id).result(timeout=T) for w in hooks] == [None] * 8
        assert len(hooks) == 8 and all(w.hook_of == "main" and w.context_run == doc_run(db) for w in hooks)
        assert {w.id for w in hooks} == {f"main.{i}" for i in range(2, 10)}  # child ids: the same on a re-run


def doc_run(db):
    return db.workflows.get("main").run


def test_inmem_workflows_command_lists_them(dbdir):
    from click.testing import CliRunner

    from inmem.cli import cli

    with Database.open(dbdir) as db:
        order = define(db, [])
        db.workflows.start(order, "A1", workflow_id="o-1").result(timeout=T)
    out = CliRunner().invoke(cli, ["workflows", dbdir])
    assert out.exit_code == 0, out.output
    assert "o-1" in out.output and "completed" in out.output and "order" in out.output
    out = CliRunner().invoke(cli, ["workflows", dbdir, "--steps", "o-1", "--json"])
    assert out.exit_code == 0, out.output
    import json
    steps = json.loads(out.output)["steps"]
    assert [s["name"] for s in steps] == ["charge", "ship"]
    run = json.loads(out.output)["workflow"]["run"]
    out = CliRunner().invoke(cli, ["replay", dbdir, run, "--json"])  # replay shows every step's record
    assert out.exit_code == 0, out.output
    kv = json.loads(out.output)["kv"]
    assert kv["_wf/step/00000002"]["output"] == "shipped" and kv["_wf/step/00000001"]["name"] == "charge"
    assert inmem.workflows.StepInfo  # exported


def test_readme_hook_example_runs_as_written(dbdir):
    """The README's hooks example (the seed's MemFlow ``execHook`` example) runs verbatim."""
    import os
    import re

    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    [block] = [b for b in blocks if "def example(name)" in b]
    with Database.open(dbdir) as db:
        namespace = {"db": db, "inmem": inmem}
        exec(block, namespace)
        doc = namespace["example"]("ada")
    assert doc["metrics"]["count"] == 4
    assert doc["user"] == {"name": "ada", "seen_by": {"hook1": True, "hook2": True}}
    assert doc["hooks"] == {k: {"kind": k, "processed": True} for k in ("hook1", "hook2")}


@inmem.workflows.step()
def declared_step(x):
    ctx = context()
    ctx.tx.kv.put(ctx.run, "x", x)
    return x + 1


@inmem.workflows.workflow(name="tests.declared", max_recovery_attempts=2)
def declared(x):
    y = declared_step(x)
    return [y, context().wait_for("go")]


def test_declared_workflows_are_recovered_at_open(dbdir):
    with Database.open(dbdir) as db:
        handle = db.workflows.start(declared, 1, workflow_id="decl")
        recorded(db, handle.run, 1)
    with pytest.raises(WorkflowError):
        declared(1)  # declared for every database: started through one
    with pytest.raises(InvalidArgument):
        Database.open(dbdir, read_only=True, recover_workflows=True)
    with Database.open(dbdir, recover_workflows=True) as db:
        assert db.workflows.get("decl").status == "running"
        db.workflows.signal("decl", "go", "now")
        assert db.workflows.handle("decl").result(timeout=T) == [2, "now"]
        assert db.workflows.get("decl").recoveries == 1
        assert db.kv.get(handle.run, "x") == 1


class StepFailed(Exception):
    """An exception with a constructor of its own and an attribute, re-raised from the record."""

    def __init__(self, code: int, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.retry_after = None

    def __reduce__(self):  # what pickle (and the step record) use to rebuild it
        return (type(self), (self.code, self.detail), self.__dict__)


class OddError(Exception):
    """A constructor that ``args`` cannot call again (pickle could not either): re-raised as WorkflowError."""

    def __init__(self, a: int, b: int):
        super().__init__(f"{a}+{b}")


def test_recorded_errors_are_data_never_code():
    """A step's exception is recorded as (class path, constructor args, attributes) — not a pickle — and
    re-raised as that class only if it is an exception class already imported; a record naming any
    other thing (a function, a module not imported, a hostile pickle) raises WorkflowError and runs
    nothing."""
    from inmem.workflows.records import error_record, raise_recorded

    err = StepFailed(503, "model offline")
    err.retry_after = 30
    record = error_record(err)
    assert "pickle" not in record and record["class"].endswith(":StepFailed")
    with pytest.raises(StepFailed) as got:
        raise_recorded(record, "w")
    assert (got.value.code, got.value.detail, got.value.retry_after) == (503, "model offline", 30)
    with pytest.raises(ValueError, match="bad"):
        raise_recorded(error_record(ValueError("bad")), "w")
    with pytest.raises(WorkflowError, match="OddError: 1\\+2"):
        raise_recorded(error_record(OddError(1, 2)), "w")
    ran = []
    sys.modules[__name__].__dict__["_hostile"] = lambda *a: ran.append(a)  # a callable, not an exception class
    for hostile in ({"type": "x", "class": f"{__name__}:_hostile", "message": "m", "args": ["rm -rf /"]},
                    {"type": "x", "class": "os:system", "message": "m", "args": ["echo pwned"]},
                    {"type": "x", "class": "antigravity:Nope", "message": "m", "args": []},  # never imported
                    {"type": "x", "message": "m", "pickle": b"cos\nsystem\n(S'echo pwned'\ntR."}):
        with pytest.raises(WorkflowError, match="x: m"):
            raise_recorded(hostile, "w")
    assert ran == [] and "antigravity" not in sys.modules


def test_a_recorded_workflow_error_keeps_its_workflow_id():
    from inmem.workflows.records import error_record, raise_recorded

    with pytest.raises(WorkflowCancelled) as got:
        raise_recorded(error_record(WorkflowCancelled("stopped", workflow_id="w7")), "other")
    assert got.value.workflow_id == "w7"
    with pytest.raises(NonDeterminismError) as nd:
        raise_recorded(error_record(NonDeterminismError("w8", 3, "b", "a")), "w8")
    assert (nd.value.workflow_id, nd.value.seq, nd.value.expected, nd.value.recorded) == ("w8", 3, "b", "a")
