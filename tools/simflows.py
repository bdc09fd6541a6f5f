"""Durable workflows in the simulation workload: driven one commit per workload step, and proved exactly once.

This module owns the simulators' workflow (:data:`WORKFLOW`, declared
process-wide, so ``db.workflows.recover()`` finds it in any process that
imported this module), the :class:`Gate` that lets a workload drive a
workflow's executor thread one commit at a time, and
:func:`recover_and_check`, the workflow invariant a crash check proves.

A workflow of ``k`` steps, driven by :func:`op_workflow` (one workload step
each time):

* *start* — ``db.workflows.start``: two commits (its run, then its status
  ``running``); its body then parks at its first gate;
* *advance* (``k`` times) — one commit: step ``i`` (a ``@step`` writing a KV
  value, an event and a context-document increment in the same commit as its
  record; every third step a context-document append, which is a step of its
  own);
* *finish* — two commits (the result and status, then the end of its run).

The prefix check needs every state a crash can leave, so the two-commit
steps expose their intermediate commit: :func:`intermediate_states` (the
reference digests for them are built from ``replay_run(..., at_version)``
of the workflow's run, the only run such a step touches — which it checks).

Invariant: while a :class:`Gate` drives a workflow, its executor thread makes
no commit except between :meth:`Gate.advance` being called and returning (or
:func:`op_workflow` returning, for start and finish), so a workload step's
commits are deterministic and complete when the step returns. Without a gate
(recovery in a check, another process) the workflow runs freely.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Any

from tests.checkout import use_checkout

use_checkout()

import inmem.workflows as wf  # noqa: E402
from inmem import Database  # noqa: E402
from inmem.errors import DatabasePoisoned, WorkflowCancelled, WorkflowError  # noqa: E402
from inmem.workflows.records import CONTEXT_DOC, ID_TAG, STEP_PREFIX  # noqa: E402

if TYPE_CHECKING:
    from .simworkload import Workload

__all__ = ["WORKFLOW", "Gate", "intermediate_states", "op_workflow", "recover_and_check", "stop_workflows"]

#: The registered name of the simulators' workflow.
WORKFLOW = "inmem-sim.workflow"
#: Real seconds a workload waits for a workflow thread to reach its next gate (far more than a step takes).
GATE_TIMEOUT_S = 60.0
#: Most workflows in flight (parked between steps) at once in one workload.
IN_FLIGHT = 2

#: workflow id -> its gate, while a workload in this process drives it
_GATES: dict[str, Gate] = {}
_GATES_LOCK = threading.Lock()


class Gate:
    """A turnstile between a workload thread and one workflow's executor thread.

    The body calls :meth:`turn` before each commit it makes; the workload calls
    :meth:`advance` to let exactly one turn through and wait until the body is
    parked at the next one (or has ended). :meth:`abort` makes every later turn
    raise ``WorkflowCancelled`` (the executor records nothing for it).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._permits = 0
        self._parked = False
        self._ended = False
        self._aborted = False
        self.error: BaseException | None = None

    def turn(self) -> None:
        """Body: park until the workload lets one commit through. :raises WorkflowCancelled: aborted."""
        with self._cond:
            self._parked = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._permits > 0 or self._aborted)
            self._parked = False
            if self._aborted:
                raise WorkflowCancelled("the simulation workload stopped driving this workflow")
            self._permits -= 1

    def ended(self, error: BaseException | None) -> None:
        """Body: it returned (``error`` None) or raised ``error``."""
        with self._cond:
            self._ended, self.error = True, error
            self._cond.notify_all()

    def wait_parked(self) -> None:
        """Workload: wait until the body is parked at a turn with no permit left, or has ended.

        :raises WorkflowError: neither within :data:`GATE_TIMEOUT_S`; or the body raised (its error chained).
        """
        with self._cond:
            if not self._cond.wait_for(lambda: (self._parked and self._permits == 0) or self._ended,
                                       GATE_TIMEOUT_S):
                raise WorkflowError(f"a simulated workflow did not reach its next step in {GATE_TIMEOUT_S:.0f} s")
            if self.error is not None:
                raise WorkflowError(f"the simulated workflow failed: {self.error!r}") from self.error

    def advance(self) -> None:
        """Workload: let one turn through, then :meth:`wait_parked`."""
        with self._cond:
            self._permits += 1
            self._cond.notify_all()
        self.wait_parked()

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._cond.notify_all()


def _turn(gate: Gate | None) -> None:
    if gate is not None:
        gate.turn()


def _is_append(i: int) -> bool:
    """Step ``i`` (1-based) is a context-document append (a step of its own) rather than a ``@step``."""
    return i % 3 == 0


@wf.step("sim-effect")
def _effect(i: int) -> int:
    ctx = wf.context()
    ctx.tx.kv.put(ctx.run, f"effect/{i}", {"i": i})
    ctx.tx.events.append(ctx.run, "wf-effect", {"i": i})
    ctx.increment("count")  # inside a step: in the step's own transaction
    return i * i


@wf.workflow(WORKFLOW, max_recovery_attempts=5)
def _workflow(k: int) -> int:
    with _GATES_LOCK:  # driven by a workload in this process (its gate, kept to the end), or free
        gate = _GATES.get(wf.context().id)
    try:
        total = 0
        for i in range(1, k + 1):
            _turn(gate)
            if _is_append(i):
                wf.context().append("log", i)  # outside a step: one recorded step of its own, one commit
            else:
                total += _effect(i)
        _turn(gate)
    except BaseException as exc:
        if gate is not None:
            gate.ended(exc)
        raise
    if gate is not None:
        gate.ended(None)
    return total


def expected_result(k: int) -> int:
    return sum(i * i for i in range(1, k + 1) if not _is_append(i))


@dataclasses.dataclass
class _Flow:
    id: str
    k: int
    done: int = 0  # steps let through
    handle: Any = None
    gate: Gate = dataclasses.field(default_factory=Gate)


def op_workflow(w: Workload) -> None:
    """Drive workflows one workload step at a time: start one (two commits) if fewer than :data:`IN_FLIGHT`
    are in flight and the rng says so (or none is), else move a random one in flight by one step (one
    commit) or, past its last step, finish it (two commits: result and status, then the run's end).

    Sets ``w.multi`` to ``(run id, the run's last version before)`` for a two-commit step (see
    :func:`intermediate_states`). :raises WorkflowError: the workflow failed or did not finish.
    :raises DatabasePoisoned: a commit of the step failed in the workflow's thread.
    """
    flows: list[_Flow] = w.flows
    db = w.db
    if not flows or (len(flows) < IN_FLIGHT and w.rng.random() < 0.3):
        flow = _Flow(id=f"wf{w.next()}", k=w.rng.randint(2, 5))
        with _GATES_LOCK:
            _GATES[flow.id] = flow.gate
        flows.append(flow)
        flow.handle = db.workflows.start(_workflow, flow.k, workflow_id=flow.id)
        w.multi = (flow.handle.run, 0)
        flow.gate.wait_parked()  # at its first turn: nothing more committed
        return _healthy(db, flow)
    flow = w.rng.choice(flows)
    if flow.done < flow.k:
        flow.done += 1
        flow.gate.advance()
        return _healthy(db, flow)
    before = db.runs.get(flow.handle.run).last_version
    flows.remove(flow)
    with _GATES_LOCK:  # (its body holds its gate) a later recover() of this id in this process runs free
        _GATES.pop(flow.id, None)
    flow.gate.advance()  # through its last turn: the body returns
    result = flow.handle.result(timeout=GATE_TIMEOUT_S)
    _healthy(db, flow)
    if result != expected_result(flow.k) or db.runs.get(flow.handle.run).status != "completed":
        raise WorkflowError(f"workflow {flow.id} returned {result!r} and its run is "
                            f"{db.runs.get(flow.handle.run).status}", workflow_id=flow.id)
    w.multi = (flow.handle.run, before)


def _healthy(db: Database, flow: _Flow) -> None:
    """:raises DatabasePoisoned: a commit failed, maybe in the workflow's thread, where the engine logs it
    (the end of its run, after its result: ``result()`` returns, and reads show the failed commit) — so
    this step is not acknowledged."""
    if db.stats()["poisoned"]:
        raise DatabasePoisoned(f"a commit of workflow {flow.id}'s step failed: the database is poisoned")


def stop_workflows(w: Workload) -> None:
    """Stop driving the workload's workflows still in flight: their threads end without a commit, and this
    waits for that (at most :data:`GATE_TIMEOUT_S` each), so that a fork afterwards copies no thread midway."""
    for flow in w.flows:
        with _GATES_LOCK:
            _GATES.pop(flow.id, None)
        flow.gate.abort()
    for flow in w.flows:
        if flow.handle is not None:
            try:
                flow.handle.result(timeout=GATE_TIMEOUT_S)
            except Exception:  # noqa: BLE001, S110 - cancelled, closed, poisoned: the thread has ended
                pass
    w.flows.clear()


def intermediate_states(w: Workload) -> list[tuple[int, list[tuple[Any, Any]]]]:
    """For the step just made, if it made two commits (``w.multi``): ``[(version, [(RunInfo, RunState)]
    per run)]`` of the state after its first commit. Built from the current runs and ``replay_run(run,
    at_version=v)`` of the one run the step wrote (status ``active``: the end of a run is its last
    commit). Empty for a one-commit step.

    :raises RuntimeError: the step wrote another run too, or not two consecutive commits (the reference
        built from this would be wrong).
    """
    if w.multi is None:
        return []
    run, before = w.multi
    db: Database = w.db
    commits = [c.version for c in db.history(run) if c.version > before]
    version = db.stats()["commit_version"]
    if len(commits) != 2 or commits != [version - 1, version]:
        raise RuntimeError(f"a two-commit workflow step made commits {commits} (database at {version})")
    out = []
    for v in commits[:-1]:
        pairs = []
        for info in db.runs.list():
            if info.id == run:
                pairs.append((dataclasses.replace(info, status="active"), db.replay_run(run, at_version=v)))
            elif info.last_version >= commits[0]:
                raise RuntimeError(f"a workflow step wrote run {info.name} too")
            else:
                pairs.append((info, db.run_state(info.id)))
        out.append((v, pairs))
    return out


def check_workflow(db: Database, workflow_id: str) -> list[str]:
    """The workflow invariant of one completed simulator workflow: its result, every step recorded once, and
    every inmem effect exactly once (one KV value, one event, one increment per ``@step``; one list item per
    append). Returns the problems (empty: it holds)."""
    info = db.workflows.get(workflow_id)
    k = info.args[0]
    where = f"workflow {workflow_id} ({k} steps)"
    if info.status != "completed":
        return [f"{where}: {info.status} after recover()"]
    problems = []
    result = db.workflows.handle(workflow_id).result(timeout=0)
    if result != expected_result(k):
        problems.append(f"{where}: result {result!r}, expected {expected_result(k)}")
    state = db.run_state(info.run)  # one consistent read of the run: records, effects, document
    steps = sorted(int(key[len(STEP_PREFIX):]) for key in state.kv if key.startswith(STEP_PREFIX))
    if steps != list(range(1, k + 1)):
        problems.append(f"{where}: recorded steps {steps}")
    effects = [i for i in range(1, k + 1) if not _is_append(i)]
    appends = [i for i in range(1, k + 1) if _is_append(i)]
    kv = {key: dict(v) for key, v in state.kv.items() if key.startswith("effect/")}
    if kv != {f"effect/{i}": {"i": i} for i in effects}:
        problems.append(f"{where}: effect values {sorted(kv)}, expected one per step {effects}")
    events = [e.payload["i"] for e in state.events if e.type == "wf-effect"]
    if events != effects:
        problems.append(f"{where}: effect events {events}, expected {effects}")
    doc = state.docs.get(CONTEXT_DOC) or {}
    if doc.get("count", 0) != len(effects) or list(doc.get("log", ())) != appends:
        problems.append(f"{where}: context document {doc}, expected count {len(effects)} and log {appends}")
    if db.runs.get(info.run).status != "completed":
        problems.append(f"{where}: its run is {db.runs.get(info.run).status}")
    return problems


def recover_and_check(db: Database) -> tuple[list[str], int, int]:
    """After a crash: ``db.workflows.recover()``, wait for every workflow it resumed, then
    :func:`check_workflow` for every simulator workflow in the database.

    :returns: ``(problems, resumed, checked)``: the problems (empty: the invariant holds), how many
        workflows recover() resumed, how many were checked.
    :raises TimeoutError: a resumed workflow still runs after :data:`GATE_TIMEOUT_S`.
    """
    with _GATES_LOCK:  # no workload drives anything now: a gate left over must not hold a resumed workflow
        left = list(_GATES.values())
        _GATES.clear()
    for gate in left:
        gate.abort()
    handles = db.workflows.recover()
    for handle in handles:
        try:
            handle.result(timeout=GATE_TIMEOUT_S)
        except TimeoutError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as the check's problem
            return [f"workflow {handle.id}: recovery raised {type(exc).__name__}: {exc}"], len(handles), 0
    problems: list[str] = []
    checked = 0
    for info in db.workflows.list():
        if info.name == WORKFLOW:
            checked += 1
            problems += check_workflow(db, info.id)
    return problems, len(handles), checked


def workflow_key(info: Any) -> str | None:
    """A simulator workflow's run's name in a digest: ``workflow:<id>`` (its random run id and shared name
    say nothing), else None."""
    for tag in info.tags:
        if tag.startswith(ID_TAG):
            return "workflow:" + tag[len(ID_TAG):]
    return None
