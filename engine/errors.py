"""Every exception inmem raises on purpose, grouped by the phase that raises it.

This module owns the exception tree; nothing else in ``engine`` defines a public
exception. Invariant: every error below derives from :class:`InmemError`, so
``except InmemError`` catches everything the engine raises deliberately.
Errors that mean "your argument is wrong" also derive from the matching
built-in (``TypeError``/``ValueError``) so ordinary Python code handles them
as it would anywhere else.

::

    InmemError
    ├── open / recovery
    │   ├── CorruptionError        a checksum, sequence or header check failed
    │   ├── DatabaseLocked         another handle holds the directory
    │   └── NotADatabase           (also InvalidArgument) the directory holds other files, not inmem's
    ├── lifecycle
    │   ├── DatabaseClosed         the handle was closed
    │   ├── DatabasePoisoned       an earlier write or fsync failed; writes refused
    │   └── DatabaseReadOnly       a write through a read_only=True handle, or a writable
    │                              open of a directory that cannot be written (EROFS, EACCES)
    ├── runs and primitives
    │   ├── RunNotFound            no run with that id
    │   ├── RunClosed              the run has ended; it is read-only
    │   ├── TraceNotFound          no trace with that id in the run
    │   ├── InvalidTransition      a state change its declared transitions forbid
    │   ├── ChainBroken            an event's hash chain does not verify
    │   └── HistoryUnavailable     a run's history (WAL) was deleted by retention
    ├── bad input (raised before anything is written)
    │   ├── InvalidKey             (also TypeError) key is not a str / not encodable
    │   ├── InvalidValue           (also TypeError) value cbor2 cannot encode
    │   └── InvalidArgument        (also ValueError) an option or argument out of range
    │       └── PatchTestFailed    a JSON Patch ``test`` did not match; the patch wrote nothing
    ├── transactions
    │   ├── TransactionConflict    OCC validation failed; nothing was written; retry
    │   └── TransactionClosed      the transaction already committed or rolled back
    └── workflows (``inmem.workflows``)
        └── WorkflowError          a workflow cannot go on (not running here, retries exceeded, ...)
            ├── NonDeterminismError  a re-run called another step than the one recorded at that seq
            └── WorkflowCancelled    the workflow was cancelled (``db.workflows.cancel``)
"""

from __future__ import annotations

__all__ = [
    "ChainBroken",
    "CorruptionError",
    "DatabaseClosed",
    "DatabaseLocked",
    "DatabasePoisoned",
    "DatabaseReadOnly",
    "HistoryUnavailable",
    "InmemError",
    "InvalidArgument",
    "InvalidKey",
    "InvalidTransition",
    "InvalidValue",
    "NonDeterminismError",
    "NotADatabase",
    "PatchTestFailed",
    "RunClosed",
    "RunNotFound",
    "TraceNotFound",
    "TransactionClosed",
    "TransactionConflict",
    "WorkflowCancelled",
    "WorkflowError",
]


class InmemError(Exception):
    """Base class of every error inmem raises deliberately."""


# --- open / recovery -------------------------------------------------------


class CorruptionError(InmemError):
    """On-disk data failed a check: checksum, sequence, header, or identity.

    ``path`` is the damaged file and ``offset`` the byte offset of the first
    bad byte found (``None`` when the whole file is at fault, e.g. a missing
    segment). Recovery raises it and opens nothing; ``Database.open(...,
    salvage=True)`` keeps the longest valid prefix instead.
    """

    def __init__(self, message: str, *, path: str | None = None, offset: int | None = None):
        where = ""
        if path is not None:
            where = f" [file {path}" + (f", offset {offset}" if offset is not None else "") + "]"
        super().__init__(message + where)
        self.path = path
        self.offset = offset


class DatabaseLocked(InmemError):
    """The directory is already open by another handle (this process or another)."""


# --- lifecycle --------------------------------------------------------------


class DatabaseClosed(InmemError):
    """The database handle was closed; open the directory again."""


class DatabasePoisoned(InmemError):
    """A WAL write or fsync failed earlier; every later write is refused.

    After a failed fsync the kernel may have dropped the dirty pages, so nothing
    already handed to it can be trusted to reach the disk (the PostgreSQL 2018
    "fsyncgate" lesson). inmem never retries: close and reopen the directory,
    and recovery decides from what is really on disk. Reads still work.
    """


# --- runs -------------------------------------------------------------------


class RunNotFound(InmemError, KeyError):
    """No run with that id exists in this database."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep a plain message
        return str(self.args[0]) if self.args else "run not found"


class RunClosed(InmemError):
    """The run has ended (``end_run``); its data is read-only."""


# --- bad input --------------------------------------------------------------


class InvalidKey(InmemError, TypeError):
    """A key is not a ``str``, is not valid UTF-8 text, or is too long."""


class InvalidValue(InmemError, TypeError):
    """A value cannot be encoded with cbor2 (unsupported type, cycle, naive datetime)."""


class InvalidArgument(InmemError, ValueError):
    """An option or argument is outside its allowed range (e.g. an unknown durability mode)."""


class PatchTestFailed(InvalidArgument):
    """A JSON Patch ``test`` operation (RFC 6902 §4.6) did not match: the whole patch wrote nothing."""


class NotADatabase(InvalidArgument):
    """The directory is not an inmem database: it has no IDENTITY, no WAL segment, no snapshot.

    Raised by a writable open of a non-empty directory holding files that are
    not inmem's (nothing is created or removed in it), and by a read-only open
    or ``inmem verify`` of any directory without IDENTITY. An empty or missing
    directory becomes a new database instead. Also an :class:`InvalidArgument`
    (and ``ValueError``): the path given is wrong.
    """


# --- transactions -----------------------------------------------------------


class TransactionConflict(InmemError):
    """Optimistic validation failed: another commit touched what this transaction read or wrote.

    ``run`` and ``key`` name the conflicting key; ``begin_version`` is the
    transaction's snapshot and ``conflict_version`` the commit that won.
    """

    def __init__(
        self,
        message: str = "transaction conflict",
        *,
        run: str | None = None,
        key: str | None = None,
        begin_version: int | None = None,
        conflict_version: int | None = None,
    ):
        super().__init__(message)
        self.run = run
        self.key = key
        self.begin_version = begin_version
        self.conflict_version = conflict_version


class TransactionClosed(InmemError):
    """The transaction has finished (committed, rolled back, or failed to commit); start a new one."""


class TraceNotFound(InmemError, KeyError):
    """No trace with that id in the run."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "trace not found"


class InvalidTransition(InmemError, ValueError):
    """A ``state.set``/``cas`` to a value its declared transitions do not allow; nothing was written."""


class ChainBroken(InmemError):
    """``events.verify`` found an event whose hash chain does not match: ``run`` and ``seq`` say where."""

    def __init__(self, run: str, seq: int):
        super().__init__(f"event hash chain of run {run} is broken at seq {seq}")
        self.run = run
        self.seq = seq


class HistoryUnavailable(InmemError):
    """Replaying, time-travelling or reading the history of a run whose WAL records were deleted.

    History retention (``Database.open(history=...)``, ``archive_run``,
    ``compact``) decides which WAL segments outlive the snapshots that cover
    them; ``run`` names the run (``None`` if the caller did not say). The
    run's *current* state is unaffected (``db.run_state``).
    """

    def __init__(self, message: str, *, run: str | None = None):
        super().__init__(message)
        self.run = run


class DatabaseReadOnly(InmemError):
    """A write refused because the database is read-only; nothing was written.

    Either a write (commit, snapshot, compact) through a handle opened with
    ``read_only=True``, or a writable ``Database.open`` of a directory that
    cannot be written (a read-only file system, ``EROFS``; no permission,
    ``EACCES``/``EPERM``): the message names the path and suggests
    ``read_only=True``, and the ``OSError`` is chained as ``__cause__``.
    """


# --- workflows --------------------------------------------------------------


class WorkflowError(InmemError):
    """A durable workflow cannot go on: ``workflow_id`` names it (``None`` if none is concerned).

    Raised by ``WorkflowHandle.result`` for a workflow that is not running in this process and has
    no result yet (call ``db.workflows.recover()`` or ``resume``), for one marked failed after
    ``max_recovery_attempts``, and as the stand-in for a recorded exception that cannot be rebuilt;
    by ``inmem.workflows.context()`` outside a workflow.
    """

    def __init__(self, message: str, *, workflow_id: str | None = None):
        super().__init__(message)
        self.workflow_id = workflow_id

    def __reduce__(self) -> tuple[object, ...]:  # how copy/pickle rebuild it (a step record keeps its attributes)
        return (_rebuild_workflow_error, (type(self), self.args[0], dict(self.__dict__)))


class NonDeterminismError(WorkflowError):
    """A re-run of workflow ``workflow_id`` called step ``expected`` at sequence number ``seq``, where the
    recorded history has step ``recorded``: the workflow's code or its inputs changed under it.

    Nothing is written; the workflow fails with this error. Fork the workflow from an earlier step
    (``db.workflows.fork``) or start a new one.
    """

    def __init__(self, workflow_id: str, seq: int, expected: str, recorded: str):
        super().__init__(f"workflow {workflow_id}: step {seq} is {expected!r} now but {recorded!r} in the "
                         f"recorded history (non-deterministic workflow code)", workflow_id=workflow_id)
        self.seq = seq
        self.expected = expected
        self.recorded = recorded

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.workflow_id, self.seq, self.expected, self.recorded))


class WorkflowCancelled(WorkflowError):
    """The workflow was cancelled (``db.workflows.cancel``): it stops at its next step boundary, sleep or wait."""


def _rebuild_workflow_error(cls: type[WorkflowError], message: str, fields: dict[str, object]) -> WorkflowError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.__dict__.update(fields)
    return exc
