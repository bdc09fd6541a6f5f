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
import pickle
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
    """``{"type": "module.QualName", "message": str, "pickle": bytes | None}`` of a raised exception."""
    cls = type(exc)
    try:
        pickled: bytes | None = pickle.dumps(exc)
    except Exception:  # noqa: BLE001 — an exception that does not pickle is re-raised as WorkflowError
        pickled = None
    return {"type": f"{cls.__module__}.{cls.__qualname__}", "message": str(exc), "pickle": pickled}


def raise_recorded(record: dict[str, Any], workflow_id: str) -> None:
    """Raise the exception ``record`` (:func:`error_record`) describes: unpickled, else a :class:`WorkflowError`.

    The pickle was written by this database's own workflows; do not open databases from untrusted
    sources with workflows (unpickling runs code).
    """
    exc: BaseException | None = None
    if record.get("pickle") is not None:
        try:
            exc = pickle.loads(record["pickle"])
        except Exception:  # noqa: BLE001 — the class may be gone; fall back to the text
            exc = None
    if not isinstance(exc, BaseException):
        exc = WorkflowError(f"{record['type']}: {record['message']}", workflow_id=workflow_id)
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
