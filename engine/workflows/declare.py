"""Declaring workflows and steps: the decorators and the registry of workflow functions by name.

This module owns :func:`workflow` and :func:`step` (``inmem.workflows.workflow`` / ``.step``; ``@db.workflow``
and ``@db.step`` are built on them) and :data:`DECLARED`, the process-wide registry that lets
``Database.open(..., recover_workflows=True)`` resume workflows at open. Invariant: a step call takes a
sequence number only inside a workflow body (in a step, or outside a workflow, it is a plain call), so
a workflow's sequence numbers depend on its body's calls alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ..errors import InvalidArgument, WorkflowError
from .runtime import current

__all__ = ["DECLARED", "Registered", "check_name", "qualified", "step", "workflow"]


class Registered:
    """A workflow function under its registered name, with its ``max_recovery_attempts``."""

    def __init__(self, fn: Callable[..., Any], name: str, max_recovery_attempts: int):
        self.fn = fn
        self.name = name
        self.max_recovery_attempts = max_recovery_attempts



#: Workflows declared with :func:`workflow` (module level), by name: any handle of this process starts,
#: resumes and recovers them — so ``Database.open(..., recover_workflows=True)`` finds them at open.
DECLARED: dict[str, Registered] = {}


def workflow(name: str | None = None, *, max_recovery_attempts: int = 3) -> Callable[[Callable[..., Any]], Any]:
    """Decorator: declare a workflow for every database of this process (``inmem.workflows.workflow``), before
    any is open — what ``Database.open(..., recover_workflows=True)`` needs to resume it at open. Start it
    with ``db.workflows.start(fn, *args, workflow_id=...)``; called from another workflow's body, it runs
    as that workflow's child and returns its result. ``@db.workflow`` is the same, registered on one handle.

    :raises InvalidArgument: bad ``name`` or ``max_recovery_attempts``.
    """
    check_name(name, "workflow name")
    if type(max_recovery_attempts) is not int or max_recovery_attempts < 0:
        raise InvalidArgument(f"max_recovery_attempts is an int >= 0; got {max_recovery_attempts!r}")

    def decorate(fn: Callable[..., Any]) -> Any:
        if not callable(fn):
            raise InvalidArgument(f"a workflow is a callable; got {fn!r:.60}")
        reg = Registered(fn, name or qualified(fn), max_recovery_attempts)
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
    check_name(name, "step name")
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


def qualified(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def check_name(name: Any, what: str) -> None:
    if name is not None and (not isinstance(name, str) or not name or len(name) > 200):
        raise InvalidArgument(f"{what} is a non-empty str of at most 200 chars, or None; got {name!r:.60}")
