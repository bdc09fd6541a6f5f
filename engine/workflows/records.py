"""The durable records of a workflow: key names, record shapes, digests and errors (SPEC.md §14).

This module owns how a workflow is laid out in inmem: a workflow is a run tagged ``workflow`` whose
run metadata ``"workflow"`` holds its definition (committed with the run, so a workflow never exists
without it), and whose KV keys under ``_wf/`` hold its status, result and one record per step.
Invariant: every value here is CBOR-encodable as it stands, so it rides the ordinary KV primitive
(replay, fork, diff, history, change feed and verify see workflows without knowing them).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import sys
from dataclasses import dataclass, field
from typing import Any

from ..codec import encode_value, utc_from_us
from ..errors import InvalidValue, WorkflowError

__all__ = ["CONTEXT_DOC", "ID_TAG", "RESULT_KEY", "STATUS_KEY", "STEP_PREFIX", "TERMINAL", "WORKFLOW_TAG",
           "StepInfo", "WorkflowInfo", "digest", "error_record", "raise_recorded", "signal_key", "step_key",
           "counter_key"]

#: The tag of every workflow run; ``ID_TAG + id`` is its second tag (``db.runs.list(tag=...)`` finds it).
WORKFLOW_TAG = "workflow"
ID_TAG = "workflow-id:"
#: The shared JSON document of a workflow (and of the hooks bound to it), in its context run.
CONTEXT_DOC = "context"
STATUS_KEY = "_wf/status"
RESULT_KEY = "_wf/result"
STEP_PREFIX = "_wf/step/"
#: Statuses a workflow keeps until resumed; ``pending`` and ``running`` are the others.
TERMINAL = ("completed", "failed", "cancelled")


def step_key(seq: int) -> str:
    """KV key of step ``seq`` (1-based, zero-padded so a scan is in step order)."""
    return f"{STEP_PREFIX}{seq:08d}"


def signal_key(name: str, n: int) -> str:
    """KV key of the ``n``-th (0-based) signal ``name`` sent to a context run."""
    return f"_wf/signal/{name}/{n:012d}"


def counter_key(name: str, which: str) -> str:
    """KV key of a context run's count of signals ``name`` sent (``which="sent"``) or taken (``"taken"``)."""
    return f"_wf/signals/{name}/{which}"


def digest(args: Any, kwargs: Any) -> str:
    """SHA-256 (hex, 32 chars) of the CBOR encoding of ``[args, kwargs]``; of their ``repr`` if not encodable."""
    try:
        data = encode_value([list(args), dict(kwargs)])
    except (InvalidValue, TypeError):
        data = repr((args, kwargs)).encode()
    return hashlib.sha256(data).hexdigest()[:32]


def error_record(exc: BaseException) -> dict[str, Any]:
    """``{"type": "module.QualName", "class": "module:QualName", "message": str, "args": list | None,
    "state": dict | None}`` of a raised exception: its class by import path, the constructor arguments
    and attributes its ``__reduce__`` gives (what pickle would use) when they are storable values."""
    cls = type(exc)
    args: list[Any] | None = list(exc.args)
    state: dict[str, Any] | None = None
    try:  # the constructor arguments pickle would use (an exception's __reduce__), when it names the class
        reduced = exc.__reduce__()
        if isinstance(reduced, tuple) and len(reduced) >= 2 and reduced[0] is cls:
            args = list(reduced[1])
            if len(reduced) > 2 and isinstance(reduced[2], dict) and reduced[2]:
                state = dict(reduced[2])
        elif exc.__dict__:
            state = dict(exc.__dict__)  # rebuilt another way: keep .args and the attributes
    except Exception:  # noqa: BLE001 — fall back to .args
        pass
    try:
        encode_value([args, state])
    except (InvalidValue, TypeError):
        args, state = None, None
    return {"type": f"{cls.__module__}.{cls.__qualname__}", "class": f"{cls.__module__}:{cls.__qualname__}",
            "message": str(exc), "args": args, "state": state}


def _loaded_exception_class(path: object) -> type[BaseException] | None:
    """The exception class ``"module:QualName"`` names, looked up only in modules this process has already
    imported (data never makes us import anything), or None."""
    if not isinstance(path, str) or ":" not in path:
        return None
    module, _, qualname = path.partition(":")
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        if obj is None or part.startswith("<"):
            return None
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) and issubclass(obj, BaseException) else None


def raise_recorded(record: dict[str, Any], workflow_id: str) -> None:
    """Raise the exception ``record`` (:func:`error_record`) describes.

    The recorded class, if it is an exception class of a module this process has already imported,
    is called with the recorded ``args`` and gets the recorded attributes; anything else — an unknown or unloaded class, args that
    were not storable, a constructor that refuses them — raises :class:`WorkflowError` naming the
    original type and message. Nothing is unpickled and nothing imported: a database is data, and
    reading one never runs code it names.
    """
    exc: BaseException | None = None
    cls = _loaded_exception_class(record.get("class"))
    args = record.get("args")
    if cls is not None and isinstance(args, list):
        try:
            exc = cls(*args)
            state = record.get("state")
            if isinstance(state, dict):
                exc.__dict__.update(state)
        except Exception:  # noqa: BLE001 — a constructor that wants other arguments: fall back to the text
            exc = None
    if not isinstance(exc, BaseException):
        exc = WorkflowError(f"{record.get('type')}: {record.get('message')}", workflow_id=workflow_id)
    raise exc


def _at(us: int | None) -> _dt.datetime | None:
    return None if us is None else utc_from_us(us)


@dataclass(frozen=True)
class StepInfo:
    """One recorded step (``db.workflows.steps(id)``).

    ``seq`` is 1-based; ``output`` is what it returned (as stored: CBOR round trip) and ``error`` the
    :func:`error_record` of what it raised (then ``output`` is None); ``attempts`` counts bodies run
    (retries included); times are UTC by the database clock.
    """

    workflow_id: str
    seq: int
    name: str
    input_digest: str
    output: Any = field(compare=False)
    error: dict[str, Any] | None = field(compare=False)
    started_at: _dt.datetime | None
    finished_at: _dt.datetime | None
    attempts: int

    @property
    def idempotency_key(self) -> str:
        """``"<workflow_id>:<seq>"``: the same for every attempt of this step, for external calls."""
        return f"{self.workflow_id}:{self.seq}"

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @classmethod
    def from_record(cls, workflow_id: str, seq: int, rec: dict[str, Any]) -> StepInfo:
        return cls(workflow_id=workflow_id, seq=seq, name=rec["name"], input_digest=rec.get("input", ""),
                   output=rec.get("output"), error=rec.get("error"), started_at=_at(rec.get("started_us")),
                   finished_at=_at(rec.get("finished_us")), attempts=rec.get("attempts", 1))


@dataclass(frozen=True)
class WorkflowInfo:
    """What the database knows of one workflow (``db.workflows.get(id)`` / ``list()``).

    ``status``: ``"running"`` (executing in this process), ``"pending"`` (left unfinished, e.g. by a
    crash: ``recover()`` resumes it), ``"completed"``, ``"failed"``, ``"cancelled"``. ``run`` is the
    inmem run holding its history; ``context_run`` the run holding its shared ``context`` document
    (its own run, or a hook's target's). ``attempts`` counts executions begun, ``recoveries`` those
    begun by ``recover()``.
    """

    id: str
    name: str
    run: str
    status: str
    context_run: str
    args: list[Any] = field(compare=False)
    kwargs: dict[str, Any] = field(compare=False)
    created_at: _dt.datetime | None
    attempts: int
    recoveries: int
    max_recovery_attempts: int
    forked_from: str | None = None
    hook_of: str | None = None
