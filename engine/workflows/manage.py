"""Reading and steering workflows: ``get``/``list``/``steps``/results, ``cancel``/``resume``/``recover``/``fork``.

This module owns :class:`WorkflowHandle` and :class:`Management`, the part of ``db.workflows`` that reads
workflow records (SPEC.md §14.1) and changes a workflow's lifecycle (§14.3); :class:`~inmem.workflows.engine.
Workflows` adds the executor and the step path. Invariant: a status read here is the stored one, except
``running`` (executing in a thread of this process) and ``pending`` (a stored ``running`` that no
thread of this process executes).
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from ..codec import utc_from_us
from ..database import Database
from ..errors import InvalidArgument, RunClosed, WorkflowCancelled, WorkflowError
from ..txn import Transaction
from .declare import DECLARED, Registered
from .records import (ID_TAG, RESULT_KEY, STATUS_KEY, STEP_PREFIX, TERMINAL, WORKFLOW_TAG, StepInfo, WorkflowInfo,
                      error_record, raise_recorded, step_key)

__all__ = ["Execution", "Management", "WorkflowHandle"]

log = logging.getLogger("inmem")


class Execution:
    """One execution of a workflow in a thread of this process: ``done`` when it ends; ``cancelled`` by ``cancel``."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.cancelled = False


class WorkflowHandle:
    """A started workflow: ``id``, ``run`` (the inmem run holding its history), :meth:`status`, :meth:`result`."""

    def __init__(self, engine: Management, workflow_id: str, run: str):
        self._engine = engine
        self.id = workflow_id
        self.run = run

    def status(self) -> str:
        """``"running"``, ``"pending"``, ``"completed"``, ``"failed"`` or ``"cancelled"`` (:class:`WorkflowInfo`)."""
        return self._engine.get(self.id).status

    def result(self, timeout: float | None = None) -> Any:
        """Wait (at most ``timeout`` real seconds; None: no limit) for the workflow and return its result.

        :raises TimeoutError: still running after ``timeout``.
        :raises WorkflowCancelled: it was cancelled.
        :raises WorkflowError: it is not running in this process and has no result (``recover()`` or
            ``resume()`` runs it), or it was marked failed after ``max_recovery_attempts``.
        :raises Exception: whatever the workflow raised (re-raised from its record).
        """
        return self._engine.result_of(self.id, timeout)

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.id!r} run={self.run!r}>"


class Management:
    """Reads and lifecycle control of ``db.workflows`` (mixed into :class:`~inmem.workflows.engine.Workflows`,
    which provides ``_launch``, ``_finish``, ``now_us`` and ``wake``)."""

    _db: Database
    _lock: threading.RLock
    _registry: dict[str, Registered]
    _index: dict[str, tuple[str, dict[str, Any]]] | None
    _executing: dict[str, Execution]

    # --- reading ---------------------------------------------------------------------------------------

    def _load_index(self) -> dict[str, tuple[str, dict[str, Any]]]:
        with self._lock:
            if self._index is None:
                index = {}
                for info in self._db.runs.list(tag=WORKFLOW_TAG):
                    definition = info.metadata.get("workflow")
                    if isinstance(definition, dict) and "id" in definition:  # a fork not yet given its definition: skip
                        index[definition["id"]] = (info.id, definition)
                self._index = index
            return self._index

    def _lookup(self, workflow_id: str) -> tuple[str, dict[str, Any]]:
        if not isinstance(workflow_id, str):
            raise InvalidArgument(f"a workflow id is a str; got {workflow_id!r:.60}")
        found = self._load_index().get(workflow_id)
        if found is None:
            raise InvalidArgument(f"no workflow {workflow_id!r} in this database")
        return found

    def _status(self, run: str) -> dict[str, Any]:
        return self._db.kv.get(run, STATUS_KEY) or {"status": "pending", "attempts": 0, "recoveries": 0}

    def get(self, workflow_id: str) -> WorkflowInfo:
        """The :class:`~inmem.workflows.WorkflowInfo` of one workflow. O(1) after the first call (which lists
        the runs tagged ``workflow`` once). :raises InvalidArgument: no such workflow."""
        run, d = self._lookup(workflow_id)
        status = self._status(run)
        state = status["status"]
        if workflow_id in self._executing:
            state = "running"
        elif state not in TERMINAL:
            state = "pending"
        return WorkflowInfo(id=workflow_id, name=d["name"], run=run, status=state,
                            context_run=d.get("context_run") or run, args=d["args"], kwargs=d["kwargs"],
                            created_at=None if d.get("created_us") is None else utc_from_us(d["created_us"]),
                            attempts=status.get("attempts", 0), recoveries=status.get("recoveries", 0),
                            max_recovery_attempts=d["max_recovery_attempts"], forked_from=d.get("forked_from"),
                            hook_of=d.get("hook_of"))

    def list(self, status: str | None = None, name: str | None = None) -> list[WorkflowInfo]:
        """Every workflow (with ``status`` / registered ``name`` if given), oldest first. O(workflows).

        :raises InvalidArgument: unknown ``status``.
        """
        if status is not None and status not in ("pending", "running", *TERMINAL):
            raise InvalidArgument(f"status is one of pending, running, {', '.join(TERMINAL)}; got {status!r}")
        out = [self.get(wid) for wid in list(self._load_index())]
        return [w for w in out if (status is None or w.status == status) and (name is None or w.name == name)]

    def steps(self, workflow_id: str) -> list[StepInfo]:
        """The recorded steps of a workflow, in order, with outputs, errors and timings. O(steps)."""
        run, _ = self._lookup(workflow_id)
        return [StepInfo.from_record(workflow_id, int(k[len(STEP_PREFIX):]), v)
                for k, v in self._db.kv.scan(run, STEP_PREFIX)]

    def result_of(self, workflow_id: str, timeout: float | None) -> Any:
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
            raise InvalidArgument(f"timeout is a number of seconds >= 0 or None; got {timeout!r:.40}")
        run, _ = self._lookup(workflow_id)
        execution = self._executing.get(workflow_id)
        if execution is not None and not execution.done.wait(timeout):
            raise TimeoutError(f"workflow {workflow_id} still running after {timeout} s")
        status = self._status(run)["status"]
        if status == "cancelled":
            raise WorkflowCancelled(f"workflow {workflow_id} was cancelled", workflow_id=workflow_id)
        record = self._db.kv.get(run, RESULT_KEY)
        if record is None:
            raise WorkflowError(f"workflow {workflow_id} is pending and not running in this process: "
                                "db.workflows.recover() or resume() runs it", workflow_id=workflow_id)
        if record["status"] == "completed":
            return record.get("output")
        raise_recorded(record["error"], workflow_id)

    # --- control --------------------------------------------------------------------------------------

    def cancel(self, workflow_id: str) -> bool:
        """Cancel a workflow: one commit marks it ``cancelled``; if it is executing it stops at its next step
        boundary, sleep or wait (a step body already running is rolled back: its commit conflicts with
        the cancel). Returns False for a completed workflow (nothing changes). ``resume`` undoes it.

        :raises InvalidArgument: no such workflow.
        """
        run, _ = self._lookup(workflow_id)
        now = self.now_us()

        def write(tx: Transaction) -> bool:
            status = tx.kv.get(run, STATUS_KEY) or {"attempts": 0, "recoveries": 0}
            if status.get("status") == "completed":
                return False
            tx.kv.put(run, STATUS_KEY, {**status, "status": "cancelled", "updated_us": now})
            return True
        changed = self._db.transact(write)
        with self._lock:
            execution = self._executing.get(workflow_id)
            if execution is not None and changed:
                execution.cancelled = True
        self.wake()
        return changed

    def resume(self, workflow_id: str) -> WorkflowHandle:
        """Execute a pending, cancelled or failed workflow again from its recorded steps (its recovery count
        starts over); a running or completed one is left as it is. Returns its handle.

        :raises InvalidArgument: no such workflow, or its function is not registered in this process.
        """
        run, definition = self._lookup(workflow_id)
        with self._lock:
            if workflow_id not in self._executing and self._status(run)["status"] != "completed":
                self._launch(self._registered(definition), workflow_id, run, definition, recovery=False, reset=True)
        return WorkflowHandle(self, workflow_id, run)

    def _registered(self, definition: dict[str, Any]) -> Registered:
        with self._lock:
            reg = self._registry.get(definition["name"]) or DECLARED.get(definition["name"])
        if reg is None:
            raise InvalidArgument(f"workflow function {definition['name']!r} is not registered in this process "
                                  "(decorate it with @db.workflow before recover/resume/fork)")
        return reg

    def recover(self) -> list[WorkflowHandle]:
        """Resume every workflow left pending (by a crash, or a close while running) whose function is
        registered in this process; return their handles. Each recovery counts; a workflow recovered
        ``max_recovery_attempts`` times already is marked failed instead (``WorkflowError``). A
        completed workflow whose run was not yet ended is ended. Workflows whose function is not
        registered stay pending (logged). O(workflows).
        """
        handles = []
        with self._lock:
            for workflow_id, (run, definition) in list(self._load_index().items()):
                if workflow_id in self._executing:
                    continue
                status = self._status(run)
                if status["status"] == "completed":
                    try:
                        self._db.end_run(run, "completed")
                    except RunClosed:
                        pass
                    continue
                if status["status"] in TERMINAL:
                    continue
                reg = self._registry.get(definition["name"]) or DECLARED.get(definition["name"])
                if reg is None:
                    log.warning("inmem: workflow %s (%s) is pending but its function is not registered",
                                workflow_id, definition["name"])
                    continue
                if status.get("recoveries", 0) >= definition["max_recovery_attempts"]:
                    exc = WorkflowError(f"workflow {workflow_id} was recovered {status.get('recoveries', 0)} times "
                                        f"(max_recovery_attempts={definition['max_recovery_attempts']}); marked failed",
                                        workflow_id=workflow_id)
                    self._finish(run, "failed", error=error_record(exc))
                    continue
                self._launch(reg, workflow_id, run, definition, recovery=True)
                handles.append(WorkflowHandle(self, workflow_id, run))
        return handles

    def fork(self, workflow_id: str, from_step: int) -> WorkflowHandle:
        """Start a new workflow (new id, new run) that copies ``workflow_id``'s steps before ``from_step`` and
        runs the rest: its run is ``db.fork_run`` of the original at the commit that recorded step
        ``from_step - 1`` (so the context document and every inmem write of those steps are copied,
        and they are not run again). ``from_step=1`` re-runs everything. Two commits: the forked
        run, then its definition (a crash between leaves a run tagged ``workflow`` that is ignored).

        :raises InvalidArgument: no such workflow; ``from_step`` not an int in 1..recorded steps + 1; its
            function is not registered here.
        :raises HistoryUnavailable: the original's history was deleted by retention.
        """
        run, definition = self._lookup(workflow_id)
        steps = self.steps(workflow_id)
        if type(from_step) is not int or not 1 <= from_step <= len(steps) + 1:
            raise InvalidArgument(f"from_step is an int in 1..{len(steps) + 1}; got {from_step!r:.40}")
        reg = self._registered(definition)
        history = self._db.history(run)
        version = history[0].version
        if from_step > 1:
            key = step_key(from_step - 1)
            version = next(c.version for c in history
                           if any(op.primitive == "kv" and op.key == key and op.kind == "put" for op in c.ops))
        new_id = str(uuid.uuid4())
        with self._lock:
            new_run = self._db.fork_run(run, at_version=version, name=definition["name"],
                                        tags=[WORKFLOW_TAG, ID_TAG + new_id])
            new_definition = {**definition, "id": new_id, "forked_from": workflow_id, "from_step": from_step,
                              "created_us": self.now_us()}
            self._db.runs.set_metadata(new_run, workflow=new_definition)
            self._load_index()[new_id] = (new_run, new_definition)
            self._launch(reg, new_id, new_run, new_definition, recovery=False, reset=True)
        return WorkflowHandle(self, new_id, new_run)

    def handle(self, workflow_id: str) -> WorkflowHandle:
        """The handle of an existing workflow (to wait for it or read its status). :raises InvalidArgument: none."""
        run, _ = self._lookup(workflow_id)
        return WorkflowHandle(self, workflow_id, run)
