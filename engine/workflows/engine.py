"""``db.workflows``: start, run, record, recover, cancel, resume and fork durable workflows.

This module owns :class:`Workflows`: starting (the run and its definition), the executor (one thread
per executing workflow, in this process), the step path (run a step body in a transaction, commit
its record ``(workflow_id, seq)`` in the same commit as the writes it made, or return the recorded
outcome without running it), the end of an execution (``_wf/status`` and ``_wf/result``), durable
time and signals (SPEC.md §14). Reads and lifecycle control come from :mod:`~inmem.workflows.manage`,
the decorators from :mod:`~inmem.workflows.declare`.

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

from ..codec import decode_value, encode_value
from ..database import Database
from ..errors import (DatabaseClosed, InvalidArgument, InvalidValue, NonDeterminismError, RunClosed,
                      TransactionConflict, WorkflowCancelled)
from ..txn import Transaction
from .records import (ID_TAG, RESULT_KEY, STATUS_KEY, TERMINAL, WORKFLOW_TAG, counter_key, digest, error_record,
                      raise_recorded, signal_key, step_key)
from .declare import DECLARED, Registered, check_name, qualified, step, workflow
from .manage import Execution, Management, WorkflowHandle
from .runtime import NOT_YET, Frame, current, pop, push

__all__ = ["DECLARED", "WorkflowHandle", "Workflows", "step", "workflow"]  # the last three re-exported

log = logging.getLogger("inmem")

#: Commit conflicts a step retries (its body runs again) before the conflict is raised.
MAX_CONFLICTS = 50
#: Longest real wait between two looks at the clock while sleeping or waiting for a signal, in seconds.
POLL_S = 0.5


class Workflows(Management):
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
        self._registry: dict[str, Registered] = {}
        self._index: dict[str, tuple[str, dict[str, Any]]] | None = None  # id -> (run, definition)
        self._executing: dict[str, Execution] = {}
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
        check_name(name, "workflow name")
        if type(max_recovery_attempts) is not int or max_recovery_attempts < 0:
            raise InvalidArgument(f"max_recovery_attempts is an int >= 0; got {max_recovery_attempts!r}")

        def decorate(fn: Callable[..., Any]) -> Any:
            reg = self._register(fn, name or qualified(fn), max_recovery_attempts)

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

    def _register(self, fn: Callable[..., Any], name: str, max_recovery_attempts: int) -> Registered:
        if not callable(fn):
            raise InvalidArgument(f"a workflow is a callable; got {fn!r:.60}")
        reg = Registered(fn, name, max_recovery_attempts)
        with self._lock:
            self._registry[name] = reg
        return reg

    def _registration(self, fn: Any) -> Registered:
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
            reg = self._registry.get(qualified(fn))
        return reg if reg is not None and reg.fn is fn else self._register(fn, qualified(fn), 3)

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

    def _start(self, reg: Registered, args: Any, kwargs: dict[str, Any], workflow_id: str | None,
               context_run: str | None = None, hook_of: str | None = None) -> WorkflowHandle:
        check_name(workflow_id, "workflow_id")
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

    def _launch(self, reg: Registered, workflow_id: str, run: str, definition: dict[str, Any], *,
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
        execution = self._executing[workflow_id] = Execution()
        thread = threading.Thread(target=self._execute, args=(reg, workflow_id, run, definition, execution),
                                  name=f"inmem-workflow-{workflow_id}"[:60], daemon=True)
        thread.start()

    def _execute(self, reg: Registered, workflow_id: str, run: str, definition: dict[str, Any],
                 execution: Execution) -> None:
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
