"""What runs inside a workflow: the thread's current frame and the context object (``inmem.workflows.context()``).

This module owns the per-thread frame of the workflow executing in that thread (its id, runs, step
counter and, inside a step, the step's transaction) and :class:`WorkflowContext`, the API a
workflow body uses: the shared JSON document, durable sleep, signals, and recorded ``now``/
``random``/``uuid``. Invariant: every operation that reads the clock, draws randomness or changes
inmem state outside a step's own transaction is itself recorded as a step, so a re-run of the
workflow makes the same calls with the same results.
"""

from __future__ import annotations

import random as _random
import threading
import uuid as _uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument, WorkflowError
from ..txn import Transaction
from .records import CONTEXT_DOC

if TYPE_CHECKING:
    from .engine import Workflows

__all__ = ["Frame", "NOT_YET", "WorkflowContext", "context", "current", "pop", "push"]

#: Returned by a step body that cannot finish yet (``wait_for`` with no signal): nothing is recorded.
NOT_YET = object()

_local = threading.local()


class Frame:
    """The workflow executing in this thread: ``seq`` is the last step number handed out; ``tx`` and
    ``step_seq`` are set while a step body runs (the step's transaction and number)."""

    def __init__(self, engine: Workflows, workflow_id: str, run: str, context_run: str):
        self.engine = engine
        self.workflow_id = workflow_id
        self.run = run
        self.context_run = context_run
        self.seq = 0
        self.tx: Transaction | None = None
        self.step_seq: int | None = None


def current() -> Frame | None:
    """The frame of the workflow executing in this thread, or None."""
    return getattr(_local, "frame", None)


def push(frame: Frame) -> Frame | None:
    previous = current()
    _local.frame = frame
    return previous


def pop(previous: Frame | None) -> None:
    _local.frame = previous


def context() -> WorkflowContext:
    """The :class:`WorkflowContext` of the workflow executing in this thread (in its body or in a step).

    :raises WorkflowError: called outside a workflow.
    """
    frame = current()
    if frame is None:
        raise WorkflowError("inmem.workflows.context() is called inside a running workflow (or one of its steps)")
    return WorkflowContext(frame)


class WorkflowContext:
    """A workflow's view of itself: ids, the step transaction, the shared ``context`` document, time, signals.

    Document operations (``get``, ``set``, ``merge``, ``append``, ``increment``, ``toggle``,
    ``delete``) act on the JSON document ``"context"`` of :attr:`context_run` (the workflow's own run,
    or for a hook its target's), with the documents primitive's semantics (SPEC.md §2 "Documents":
    blind updates, so concurrent hooks incrementing or merging never conflict). Inside a step they
    join the step's transaction (committed with the step's record); in the workflow body each one is
    a step of its own (``ctx.merge`` ...), so a re-run does not apply it twice.
    """

    def __init__(self, frame: Frame):
        self._frame = frame

    # --- identity -----------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The workflow id."""
        return self._frame.workflow_id

    @property
    def run(self) -> str:
        """The inmem run holding this workflow's history (write your own records here: ``ctx.tx.kv.put(ctx.run, ...)``)."""
        return self._frame.run

    @property
    def context_run(self) -> str:
        """The run holding the shared ``context`` document (a hook's is its target's)."""
        return self._frame.context_run

    @property
    def tx(self) -> Transaction:
        """The running step's transaction: what a step writes through it commits in the same commit as the
        step's record (exactly once). :raises WorkflowError: not inside a step."""
        if self._frame.tx is None:
            raise WorkflowError("ctx.tx exists only inside a step (@db.step); the workflow body writes "
                                "through steps or the ctx document operations", workflow_id=self.id)
        return self._frame.tx

    @property
    def step_seq(self) -> int | None:
        """The running step's sequence number (1-based), None outside a step."""
        return self._frame.step_seq

    @property
    def idempotency_key(self) -> str:
        """``"<workflow_id>:<step_seq>"`` of the running step: the same on every attempt and re-run, so an
        external service can drop a repeated call. :raises WorkflowError: not inside a step."""
        if self._frame.step_seq is None:
            raise WorkflowError("idempotency_key exists only inside a step", workflow_id=self.id)
        return f"{self.id}:{self._frame.step_seq}"

    # --- the shared document -----------------------------------------------------------------------

    def _doc(self, op: str, fn: Callable[[Transaction], Any], *args: Any) -> Any:
        frame = self._frame
        if frame.tx is not None:
            return fn(frame.tx)
        return frame.engine.run_step(frame, f"ctx.{op}", lambda: fn(frame.tx), (args, {}))  # type: ignore[arg-type]

    def get(self, path: Any = None) -> Any:
        """The document (or the value at ``path``); None if it does not exist yet."""
        return self._doc("get", lambda tx: tx.docs.get(self.context_run, CONTEXT_DOC, path), path)

    def set(self, value: Any, path: Any = None) -> None:
        """Replace the document (``path=None``) or the value at ``path``."""
        self._doc("set", lambda tx: tx.docs.set(self.context_run, CONTEXT_DOC, value, path), value, path)

    def merge(self, patch: Any, path: Any = None) -> None:
        """JSON Merge Patch (RFC 7396) ``patch`` into the document or the object at ``path``."""
        self._doc("merge", lambda tx: tx.docs.merge(self.context_run, CONTEXT_DOC, patch, path), patch, path)

    def append(self, path: Any, *values: Any) -> None:
        """Append ``values`` to the list at ``path`` (created if missing)."""
        self._doc("append", lambda tx: tx.docs.append(self.context_run, CONTEXT_DOC, path, *values), path, values)

    def increment(self, path: Any, by: int | float = 1) -> None:
        """Add ``by`` to the number at ``path`` (0 if missing)."""
        self._doc("increment", lambda tx: tx.docs.increment(self.context_run, CONTEXT_DOC, path, by), path, by)

    def toggle(self, path: Any) -> None:
        """Negate the boolean at ``path``."""
        self._doc("toggle", lambda tx: tx.docs.toggle(self.context_run, CONTEXT_DOC, path), path)

    def delete(self, path: Any = None) -> None:
        """Delete the value at ``path`` (``None``: the whole document)."""
        self._doc("delete", lambda tx: tx.docs.delete(self.context_run, CONTEXT_DOC, path), path)

    # --- recorded non-determinism --------------------------------------------------------------------

    def _recorded(self, name: str, fn: Callable[[], Any]) -> Any:
        frame = self._frame
        if frame.tx is not None:  # inside a step: the step's own record covers it
            return fn()
        return frame.engine.run_step(frame, name, fn, ((), {}))

    def now(self) -> float:
        """Seconds since the Unix epoch by the database clock, recorded as a step (a re-run gets the same)."""
        return self._recorded("now", lambda: self._frame.engine.now_us() / 1_000_000)

    def random(self) -> float:
        """``random.random()``, recorded as a step."""
        return self._recorded("random", _random.random)

    def uuid(self) -> str:
        """A random UUID (text), recorded as a step."""
        return self._recorded("uuid", lambda: str(_uuid.uuid4()))

    # --- durable time and signals ----------------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` by the database clock, durably: the wake-up time is recorded as a step, so a
        workflow resumed after a crash sleeps only what is left (nothing if it is past).

        :raises InvalidArgument: ``seconds`` is not a number >= 0. :raises WorkflowError: inside a step.
        :raises WorkflowCancelled: cancelled while sleeping.
        """
        _check_seconds(seconds, "seconds")
        frame = self._frame
        if frame.tx is not None:
            raise WorkflowError("ctx.sleep belongs in the workflow body, not inside a step", workflow_id=self.id)
        engine = frame.engine
        wake_us = engine.run_step(frame, "sleep", lambda: engine.now_us() + int(seconds * 1_000_000),
                                  ((seconds,), {}))
        engine.wait_until(frame, wake_us)

    def signal(self, name: str, payload: Any = None, *, to: str | None = None) -> None:
        """Send signal ``name`` with ``payload`` to this workflow's context (``to``: another workflow's id):
        kept durably until a ``wait_for(name)`` there takes it, in send order. Recorded as a step, so a
        re-run does not send it twice.

        :raises InvalidArgument: bad ``name``. :raises InvalidValue: ``payload`` is not CBOR-encodable.
        """
        frame = self._frame
        engine = frame.engine
        target = frame.context_run if to is None else engine.context_run_of(to)
        engine.check_signal(name, payload)
        if frame.tx is not None:
            engine.append_signal(frame.tx, target, name, payload)
        else:
            engine.run_step(frame, f"signal:{name}", lambda: engine.append_signal(frame.tx, target, name, payload),
                            ((name, payload, to), {}))
        engine.wake()

    def wait_for(self, name: str, timeout: float | None = None) -> Any:
        """Take the oldest signal ``name`` not yet taken in this context, waiting for one if none is there;
        return its payload, or None after ``timeout`` seconds (database clock). Durable: the deadline and
        the signal taken are recorded as steps (a signal sent while nobody waits is kept; a re-run gets
        the same payload; a resumed wait keeps its original deadline).

        :raises InvalidArgument: bad ``name`` or ``timeout``. :raises WorkflowError: inside a step.
        :raises WorkflowCancelled: cancelled while waiting.
        """
        if timeout is not None:
            _check_seconds(timeout, "timeout")
        frame = self._frame
        engine = frame.engine
        engine.check_signal(name, None)
        if frame.tx is not None:
            raise WorkflowError("ctx.wait_for belongs in the workflow body, not inside a step", workflow_id=self.id)
        deadline = None if timeout is None else engine.run_step(
            frame, f"deadline:{name}", lambda: engine.now_us() + int(timeout * 1_000_000), ((name, timeout), {}))

        def take() -> Any:
            found = engine.take_signal(frame.tx, frame.context_run, name)  # type: ignore[arg-type]
            if found is not None:
                return found
            if deadline is not None and engine.now_us() >= deadline:
                return {"timeout": True, "payload": None}
            return NOT_YET

        while True:
            generation = engine.generation()
            got = engine.run_step(frame, f"wait_for:{name}", take, ((name,), {}))
            if got is not NOT_YET:
                return got["payload"]
            engine.wait_until(frame, deadline, generation=generation)


def _check_seconds(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise InvalidArgument(f"{what} is a number of seconds >= 0; got {value!r:.40}")
