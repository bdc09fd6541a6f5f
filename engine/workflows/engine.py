"""``db.workflows``: start, run, record, recover, cancel, resume and fork durable workflows.

This module owns the executor (one thread per executing workflow, in this process), the step path
(run a step body in a transaction, commit its record ``(workflow_id, seq)`` in the same commit as
the writes it made, or return the recorded outcome without running it), and the workflow lifecycle
kept in each workflow run's ``_wf/status`` and ``_wf/result`` (SPEC.md §14).

Invariants: a step's record and its inmem writes commit together or not at all, and a step with a
record never runs again in that workflow (inmem effects exactly once; external effects at least
once, exactly once when nothing crashes between the call and the commit); a workflow executes in at
most one thread of this process at a time. One writer process per directory, as for all of inmem.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..codec import decode_value, encode_value, utc_from_us
from ..database import Database
from ..errors import (DatabaseClosed, InvalidArgument, InvalidValue, NonDeterminismError, RunClosed,
                      TransactionConflict, WorkflowCancelled, WorkflowError)
from ..txn import Transaction
from .records import (ID_TAG, RESULT_KEY, STATUS_KEY, STEP_PREFIX, TERMINAL, WORKFLOW_TAG, StepInfo, WorkflowInfo,
                      counter_key, digest, error_record, raise_recorded, signal_key, step_key)
from .runtime import NOT_YET, Frame, current, pop, push

__all__ = ["DECLARED", "WorkflowHandle", "Workflows", "step", "workflow"]

log = logging.getLogger("inmem")

#: Commit conflicts a step retries (its body runs again) before the conflict is raised.
MAX_CONFLICTS = 50
#: Longest real wait between two looks at the clock while sleeping or waiting for a signal, in seconds.
POLL_S = 0.5


class _Registered:
    def __init__(self, fn: Callable[..., Any], name: str, max_recovery_attempts: int):
        self.fn = fn
        self.name = name
        self.max_recovery_attempts = max_recovery_attempts


class _Execution:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.cancelled = False


class WorkflowHandle:
    """A started workflow: ``id``, ``run`` (the inmem run holding its history), :meth:`status`, :meth:`result`."""

    def __init__(self, engine: Workflows, workflow_id: str, run: str):
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


class Workflows:
    """Durable workflows on one open database: ``db.workflows`` (also ``db.workflow`` / ``db.step``).

    >>> import tempfile, inmem
    >>> with inmem.Database.open(tempfile.mkdtemp()) as db:
    ...     @db.step()
    ...     def fetch(n):
    ...         inmem.workflows.context().tx.kv.put(inmem.workflows.context().run, f"item/{n}", n * n)
    ...         return n * n
    ...     @db.workflow()
    ...     def total(k):
    ...         return sum(fetch(n) for n in range(k))
    ...     h = db.workflows.start(total, 4, workflow_id="order-1")
    ...     h.result(timeout=30), [s.name for s in db.workflows.steps("order-1")]
    (14, ['fetch', 'fetch', 'fetch', 'fetch'])
    """

    def __init__(self, db: Database):
        self._db = db
        self._lock = threading.RLock()
        self._registry: dict[str, _Registered] = {}
        self._index: dict[str, tuple[str, dict[str, Any]]] | None = None  # id -> (run, definition)
        self._executing: dict[str, _Execution] = {}
        self._wake = threading.Condition()
        self._generation = 0

    # --- registration ------------------------------------------------------------------------------------

    def workflow(self, name: str | None = None, *, max_recovery_attempts: int = 3) -> Callable[[Callable[..., Any]], Any]:
        """Decorator: register a workflow function under ``name`` (default ``module.QualName``).

        Calling the decorated function starts it with a fresh id and waits for its result;
        ``fn.start(*args, workflow_id=...)`` returns a :class:`WorkflowHandle`. Arguments, steps'
        outputs and the result must be CBOR-encodable (``InvalidValue`` otherwise).
        ``max_recovery_attempts``: how many times :meth:`recover` resumes it before marking it failed.

        :raises InvalidArgument: bad ``name`` or ``max_recovery_attempts``.
        """
        _check_name(name, "workflow name")
        if type(max_recovery_attempts) is not int or max_recovery_attempts < 0:
            raise InvalidArgument(f"max_recovery_attempts is an int >= 0; got {max_recovery_attempts!r}")

        def decorate(fn: Callable[..., Any]) -> Any:
            reg = self._register(fn, name or _qualified(fn), max_recovery_attempts)

            @functools.wraps(fn)
            def call(*args: Any, **kwargs: Any) -> Any:
                return self._start(reg, args, kwargs, None).result()

            call.start = lambda *a, workflow_id=None, **kw: self._start(reg, a, kw, workflow_id)  # type: ignore[attr-defined]
            call.workflow_name = reg.name  # type: ignore[attr-defined]
            call.max_recovery_attempts = max_recovery_attempts  # type: ignore[attr-defined]
            return call
        return decorate

    def step(self, name: str | None = None, *, retries: int = 0, backoff_s: float = 1.0) -> Callable[[Callable[..., Any]], Any]:
        """Decorator: make a function a step (:func:`step`; the same decorator, whichever database)."""
        return step(name, retries=retries, backoff_s=backoff_s)

    def _register(self, fn: Callable[..., Any], name: str, max_recovery_attempts: int) -> _Registered:
        if not callable(fn):
            raise InvalidArgument(f"a workflow is a callable; got {fn!r:.60}")
        reg = _Registered(fn, name, max_recovery_attempts)
        with self._lock:
            self._registry[name] = reg
        return reg

    def _registration(self, fn: Any) -> _Registered:
        name = getattr(fn, "workflow_name", None)
        if name is not None:
            with self._lock:
                reg = self._registry.get(name) or DECLARED.get(name)
            if reg is not None:
                return reg
            return self._register(getattr(fn, "__wrapped__", fn), name, getattr(fn, "max_recovery_attempts", 3))
        if not callable(fn):
            raise InvalidArgument(f"a workflow is a callable; got {fn!r:.60}")
        with self._lock:
            reg = self._registry.get(_qualified(fn))
        return reg if reg is not None and reg.fn is fn else self._register(fn, _qualified(fn), 3)

    # --- starting ---------------------------------------------------------------------------------

    def start(self, fn: Callable[..., Any], /, *args: Any, workflow_id: str | None = None,
              **kwargs: Any) -> WorkflowHandle:
        """Start ``fn(*args, **kwargs)`` as a workflow in a thread of this process; return its handle at once.

        ``workflow_id`` (default: a random UUID; inside a workflow body, ``<parent id>.<seq>`` so a
        re-run starts the same child) names it. The same id again re-runs it: recorded steps return
        their recorded output, the first unrecorded one runs; a finished workflow keeps its stored
        result. ``fn`` is a ``@db.workflow`` function or any callable (registered under its
        ``module.QualName`` for :meth:`recover`). Creating it is one commit: its run (tags
        ``workflow`` and ``workflow-id:<id>``) with the definition in the run's metadata.

        :raises InvalidArgument: bad ``workflow_id``; the id exists with another function or other arguments.
        :raises InvalidValue: the arguments are not CBOR-encodable (nothing was written).
        """
        return self._start(self._registration(fn), args, kwargs, workflow_id)

    def _start(self, reg: _Registered, args: Any, kwargs: dict[str, Any], workflow_id: str | None,
               context_run: str | None = None, hook_of: str | None = None) -> WorkflowHandle:
        _check_name(workflow_id, "workflow_id")
        frame = current()
        if workflow_id is None and frame is not None and frame.tx is None:  # a child: the same id on every re-run
            frame.seq += 1
            workflow_id = f"{frame.workflow_id}.{frame.seq}"
        if workflow_id is None:
            workflow_id = str(uuid.uuid4())
        definition = {"id": workflow_id, "name": reg.name, "args": list(args), "kwargs": dict(kwargs),
                      "digest": digest(args, kwargs), "max_recovery_attempts": reg.max_recovery_attempts,
                      "context_run": context_run, "hook_of": hook_of, "created_us": self.now_us()}
        definition = decode_value(encode_value(definition))  # InvalidValue before anything is written
        with self._lock:
            index = self._load_index()
            if workflow_id in index:
                run, known = index[workflow_id]
                if known["name"] != reg.name or known["digest"] != definition["digest"]:
                    raise InvalidArgument(f"workflow {workflow_id!r} exists as {known['name']} with other arguments; "
                                          f"a workflow id names one call (digest {known['digest']})")
                if workflow_id not in self._executing and self._status(run)["status"] not in TERMINAL:
                    self._launch(reg, workflow_id, run, known, recovery=False)
                return WorkflowHandle(self, workflow_id, run)
            run = self._db.begin_run(reg.name, tags=[WORKFLOW_TAG, ID_TAG + workflow_id],
                                     metadata={"workflow": definition})
            index[workflow_id] = (run, definition)
            self._launch(reg, workflow_id, run, definition, recovery=False)
        return WorkflowHandle(self, workflow_id, run)

    def hook(self, workflow_id: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> WorkflowHandle:
        """Run ``fn(*args, **kwargs)`` as a workflow of its own (own run, own steps) bound to workflow
        ``workflow_id``'s context: its ``inmem.workflows.context()`` document operations and signals act
        on the target's ``context`` document, so many hooks update one shared record concurrently (blind
        document updates: no lost update, no conflict). Returns the hook's handle.

        :raises InvalidArgument: no workflow ``workflow_id``; as :meth:`start`.
        """
        run, definition = self._lookup(workflow_id)
        return self._start(self._registration(fn), args, kwargs, None,
                           context_run=definition.get("context_run") or run, hook_of=workflow_id)

    def _launch(self, reg: _Registered, workflow_id: str, run: str, definition: dict[str, Any], *,
                recovery: bool, reset: bool = False) -> None:
        """Mark the workflow running (one commit) and execute it in a new thread. Caller holds the lock."""
        now = self.now_us()

        def begin(tx: Transaction) -> None:
            status = tx.kv.get(run, STATUS_KEY) or {"attempts": 0, "recoveries": 0}
            status = {**status, "status": "running", "attempts": status.get("attempts", 0) + 1,
                      "recoveries": 0 if reset else status.get("recoveries", 0) + int(recovery), "updated_us": now}
            tx.kv.put(run, STATUS_KEY, status)
            if tx.kv.get(run, RESULT_KEY) is not None:
                tx.kv.delete(run, RESULT_KEY)
        self._db.transact(begin)
        execution = self._executing[workflow_id] = _Execution()
        thread = threading.Thread(target=self._execute, args=(reg, workflow_id, run, definition, execution),
                                  name=f"inmem-workflow-{workflow_id}"[:60], daemon=True)
        thread.start()

    def _execute(self, reg: _Registered, workflow_id: str, run: str, definition: dict[str, Any],
                 execution: _Execution) -> None:
        previous = push(Frame(self, workflow_id, run, definition.get("context_run") or run))
        try:
            try:
                result = reg.fn(*definition["args"], **definition["kwargs"])
            except BaseException as exc:  # noqa: BLE001 — recorded and re-raised by result()
                if isinstance(exc, (WorkflowCancelled, DatabaseClosed)) or self._db.closed:
                    return
                self._finish(run, "failed", error=error_record(exc))
                return
            try:
                self._finish(run, "completed", output=result)
            except InvalidValue as exc:
                self._finish(run, "failed", error=error_record(exc))
        except (WorkflowCancelled, DatabaseClosed):
            pass
        except Exception:  # noqa: BLE001 — e.g. the database poisoned; the workflow stays pending
            if not self._db.closed:
                log.exception("inmem: workflow %s could not record its outcome", workflow_id)
        finally:
            pop(previous)
            with self._lock:
                self._executing.pop(workflow_id, None)
            execution.done.set()

    def _finish(self, run: str, status: str, *, output: Any = None, error: dict[str, Any] | None = None) -> None:
        now = self.now_us()

        def write(tx: Transaction) -> None:
            current_status = tx.kv.get(run, STATUS_KEY) or {}
            if current_status.get("status") == "cancelled":
                raise WorkflowCancelled("cancelled")
            record: dict[str, Any] = {"status": status, "finished_us": now}
            if error is not None:
                record["error"] = error
            else:
                record["output"] = output
            tx.kv.put(run, RESULT_KEY, record)
            tx.kv.put(run, STATUS_KEY, {**current_status, "status": status, "updated_us": now})
        self._db.transact(write)
        if status == "completed":
            try:
                self._db.end_run(run, "completed")
            except RunClosed:
                pass

    # --- steps ----------------------------------------------------------------------------------------

    def run_step(self, frame: Frame, name: str, body: Callable[[], Any], inputs: tuple[Any, dict[str, Any]], *,
                 retries: int = 0, backoff_s: float = 0.0) -> Any:
        """Run (or replay) the next step of ``frame``'s workflow: see :meth:`step`. ``inputs`` is
        ``(args, kwargs)`` (digested into the record). Returns :data:`~inmem.workflows.runtime.NOT_YET`
        unrecorded if ``body`` does (the sequence number is given back)."""
        frame.seq += 1
        seq = frame.seq
        key = step_key(seq)
        db = self._db
        recorded = db.kv.get(frame.run, key)
        if recorded is not None:
            return self._replayed(frame, seq, name, recorded)
        input_digest = digest(*inputs)
        started = self.now_us()
        attempts = conflicts = 0
        while True:
            tx = db.transaction()
            frame.tx, frame.step_seq = tx, seq
            try:
                recorded = tx.kv.get(frame.run, key)  # in the read set: a concurrent run of this step conflicts
                if recorded is not None:
                    tx.rollback()
                    return self._replayed(frame, seq, name, recorded)
                status = tx.kv.get(frame.run, STATUS_KEY)  # in the read set: a cancel conflicts with this commit
                execution = self._executing.get(frame.workflow_id)
                if (status or {}).get("status") == "cancelled" or (execution is not None and execution.cancelled):
                    raise WorkflowCancelled(f"workflow {frame.workflow_id} was cancelled",
                                            workflow_id=frame.workflow_id)
                attempts += 1
                try:
                    output = body()
                    if output is NOT_YET:
                        tx.rollback()
                        frame.seq -= 1
                        return NOT_YET
                    tx.kv.put(frame.run, key, {"name": name, "input": input_digest, "output": output,
                                               "started_us": started, "finished_us": self.now_us(),
                                               "attempts": attempts})
                except (WorkflowCancelled, DatabaseClosed, NonDeterminismError, TransactionConflict):
                    raise
                except Exception as exc:
                    tx.rollback()
                    if attempts <= retries:
                        self._backoff(frame, backoff_s * (2 ** (attempts - 1)))
                        continue
                    self._record_failure(frame, seq, name, input_digest, exc, started, attempts)
                    raise
                tx.commit()
                return output
            except TransactionConflict:
                conflicts += 1
                if conflicts > MAX_CONFLICTS:
                    raise
                attempts -= 1 if attempts else 0
            finally:
                frame.tx, frame.step_seq = None, None
                if not tx.finished:
                    tx.rollback()

    def _replayed(self, frame: Frame, seq: int, name: str, record: dict[str, Any]) -> Any:
        if record["name"] != name:
            raise NonDeterminismError(frame.workflow_id, seq, name, record["name"])
        if record.get("error") is not None:
            raise_recorded(record["error"], frame.workflow_id)
        return record.get("output")

    def _record_failure(self, frame: Frame, seq: int, name: str, input_digest: str, exc: Exception,
                        started: int, attempts: int) -> None:
        key = step_key(seq)

        def write(tx: Transaction) -> None:
            if tx.kv.get(frame.run, key) is None:
                tx.kv.put(frame.run, key, {"name": name, "input": input_digest, "error": error_record(exc),
                                           "started_us": started, "finished_us": self.now_us(), "attempts": attempts})
        self._db.transact(write)

    def _backoff(self, frame: Frame, seconds: float) -> None:
        execution = self._executing.get(frame.workflow_id)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if execution is not None and execution.cancelled:
                raise WorkflowCancelled(f"workflow {frame.workflow_id} was cancelled", workflow_id=frame.workflow_id)
            with self._wake:
                self._wake.wait(min(left, POLL_S))

    # --- time and signals --------------------------------------------------------------------------------

    def now_us(self) -> int:
        """Now by the database clock, Unix µs."""
        return int(self._db.clock() * 1_000_000)

    def generation(self) -> int:
        with self._wake:
            return self._generation

    def wake(self) -> None:
        """Wake every sleeping or waiting workflow to look at the clock and its signals again (call it after
        moving an injected clock forward). O(waiters)."""
        with self._wake:
            self._generation += 1
            self._wake.notify_all()

    def wait_until(self, frame: Frame, wake_us: int | None, *, generation: int | None = None) -> None:
        """Block until the database clock reaches ``wake_us`` (None: no deadline), or — with ``generation`` —
        until :meth:`wake` is called after it was read. Looks at the clock at least every ``POLL_S``.

        :raises WorkflowCancelled: / :raises DatabaseClosed: meanwhile.
        """
        execution = self._executing.get(frame.workflow_id)
        while True:
            if execution is not None and execution.cancelled:
                raise WorkflowCancelled(f"workflow {frame.workflow_id} was cancelled", workflow_id=frame.workflow_id)
            if self._db.closed:
                raise DatabaseClosed("the database was closed while a workflow waited")
            now = self.now_us()
            if wake_us is not None and now >= wake_us:
                return
            left = POLL_S if wake_us is None else min(POLL_S, (wake_us - now) / 1_000_000)
            with self._wake:
                if generation is not None and self._generation != generation:
                    return
                self._wake.wait(left)
                if generation is not None and self._generation != generation:
                    return
            if generation is not None and wake_us is None:
                return

    def check_signal(self, name: Any, payload: Any) -> None:
        if not isinstance(name, str) or not name or len(name) > 200:
            raise InvalidArgument(f"a signal name is a non-empty str of at most 200 chars; got {name!r:.60}")
        encode_value(payload)

    def append_signal(self, tx: Transaction, context_run: str, name: str, payload: Any) -> None:
        sent = tx.kv.get(context_run, counter_key(name, "sent"), 0)
        tx.kv.put(context_run, signal_key(name, sent), {"payload": payload})
        tx.kv.put(context_run, counter_key(name, "sent"), sent + 1)

    def take_signal(self, tx: Transaction, context_run: str, name: str) -> dict[str, Any] | None:
        taken = tx.kv.get(context_run, counter_key(name, "taken"), 0)
        found = tx.kv.get(context_run, signal_key(name, taken))
        if found is not None:
            tx.kv.put(context_run, counter_key(name, "taken"), taken + 1)
        return found

    def signal(self, workflow_id: str, name: str, payload: Any = None) -> None:
        """Send signal ``name`` with ``payload`` to workflow ``workflow_id``'s context from outside any workflow
        (one commit); a ``ctx.wait_for(name)`` there takes it, now or later (it is kept durably).

        :raises InvalidArgument: no such workflow, bad ``name``. :raises InvalidValue: ``payload`` not encodable.
        """
        target = self.context_run_of(workflow_id)
        self.check_signal(name, payload)
        self._db.transact(lambda tx: self.append_signal(tx, target, name, payload))
        self.wake()

    def context_run_of(self, workflow_id: str) -> str:
        run, definition = self._lookup(workflow_id)
        return definition.get("context_run") or run

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

    def _registered(self, definition: dict[str, Any]) -> _Registered:
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


#: Workflows declared with :func:`workflow` (module level), by name: any handle of this process starts,
#: resumes and recovers them — so ``Database.open(..., recover_workflows=True)`` finds them at open.
DECLARED: dict[str, _Registered] = {}


def workflow(name: str | None = None, *, max_recovery_attempts: int = 3) -> Callable[[Callable[..., Any]], Any]:
    """Decorator: declare a workflow for every database of this process (``inmem.workflows.workflow``), before
    any is open — what ``Database.open(..., recover_workflows=True)`` needs to resume it at open. Start it
    with ``db.workflows.start(fn, *args, workflow_id=...)``; called from another workflow's body, it runs
    as that workflow's child and returns its result. ``@db.workflow`` is the same, registered on one handle.

    :raises InvalidArgument: bad ``name`` or ``max_recovery_attempts``.
    """
    _check_name(name, "workflow name")
    if type(max_recovery_attempts) is not int or max_recovery_attempts < 0:
        raise InvalidArgument(f"max_recovery_attempts is an int >= 0; got {max_recovery_attempts!r}")

    def decorate(fn: Callable[..., Any]) -> Any:
        if not callable(fn):
            raise InvalidArgument(f"a workflow is a callable; got {fn!r:.60}")
        reg = _Registered(fn, name or _qualified(fn), max_recovery_attempts)
        DECLARED[reg.name] = reg

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            frame = current()
            if frame is None:
                raise WorkflowError(f"workflow {reg.name} is declared for every database: start it with "
                                    "db.workflows.start(fn, *args) (or call it from another workflow)")
            return frame.engine.start(call, *args, **kwargs).result()

        call.workflow_name = reg.name  # type: ignore[attr-defined]
        call.max_recovery_attempts = max_recovery_attempts  # type: ignore[attr-defined]
        return call
    return decorate


def step(name: str | None = None, *, retries: int = 0, backoff_s: float = 1.0) -> Callable[[Callable[..., Any]], Any]:
    """Decorator: make a function a step named ``name`` (default: its ``__name__``); ``inmem.workflows.step``
    and ``@db.step`` are the same. Called in a workflow body it gets the next sequence number; if that
    number is recorded, its recorded output is returned (or its recorded exception raised) without
    running it; otherwise it runs in a fresh transaction (``inmem.workflows.context().tx``), and its
    record — name, input digest, output or exception, timings, attempts — commits in the same commit as
    what it wrote through that transaction. An exception is retried ``retries`` times after
    ``backoff_s * 2**attempt`` real seconds (its writes rolled back each time), then recorded and
    raised. Called outside a workflow, or inside another step, it is a plain call.

    :raises InvalidArgument: bad ``name``, ``retries`` or ``backoff_s``.
    """
    _check_name(name, "step name")
    if type(retries) is not int or retries < 0:
        raise InvalidArgument(f"retries is an int >= 0; got {retries!r}")
    if isinstance(backoff_s, bool) or not isinstance(backoff_s, (int, float)) or not 0 <= backoff_s < 3600:
        raise InvalidArgument(f"backoff_s is a number of seconds in [0, 3600); got {backoff_s!r:.40}")

    def decorate(fn: Callable[..., Any]) -> Any:
        step_name = name or fn.__name__

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            frame = current()
            if frame is None or frame.tx is not None:
                return fn(*args, **kwargs)
            return frame.engine.run_step(frame, step_name, lambda: fn(*args, **kwargs), (args, kwargs),
                                         retries=retries, backoff_s=backoff_s)
        return call
    return decorate


def _qualified(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _check_name(name: Any, what: str) -> None:
    if name is not None and (not isinstance(name, str) or not name or len(name) > 200):
        raise InvalidArgument(f"{what} is a non-empty str of at most 200 chars, or None; got {name!r:.60}")
