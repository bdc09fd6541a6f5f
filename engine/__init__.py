"""inmem: an embedded state substrate for AI agents.

A Python program opens a directory and gets durable memory for its agents:
runs as first-class entities and run-scoped KV state, in one sorted map,
persisted through a checksummed write-ahead log and recovered after a crash.

>>> import tempfile
>>> from inmem import Database
>>> with Database.open(tempfile.mkdtemp(), durability="strict") as db:
...     run = db.begin_run("researcher", tags=["demo"])
...     db.kv.put(run, "notes/1", ["read the paper", "summarise"])
...     db.kv.put(run, "notes/2", "ask the user")
...     sorted(k for k, _ in db.kv.scan(run, "notes/"))
['notes/1', 'notes/2']

Layers, lowest first: ``errors``, ``keys``/``codec`` → ``checksum``,
``native``, ``fs`` → ``store``, ``mvcc``, ``snapshot``, ``wal`` → ``history``
→ ``recovery``, ``registry`` → ``kernel`` (the commit path and reads at a
version) → ``txn``, ``checkpoint`` → ``primitives`` → ``contexts`` →
``replay`` → ``database``. SPEC.md holds the formats and guarantees.
"""

from .changefeed import Change, Watch
from .channels import Subscription
from .database import Database
from .primitives.events import Event
from .primitives.graph import Edge, Hit, Node
from .primitives.runs import RunInfo
from .primitives.state import State
from .primitives.traces import Trace
from .primitives.vectors import Match, VectorRecord
from .replay import Changes, Commit, EventsDiff, Op, RunDiff, RunState, StoredVector
from .tenants import Tenant
from .txn import Transaction
from . import workflows  # noqa: F401  (attaches db.workflows, db.workflow, db.step)
from .checkpoint import SnapshotInfo
from .errors import (
    ChainBroken,
    CorruptionError,
    DatabaseClosed,
    DatabaseLocked,
    DatabasePoisoned,
    DatabaseReadOnly,
    HistoryUnavailable,
    InmemError,
    InvalidArgument,
    InvalidKey,
    InvalidTransition,
    InvalidValue,
    NonDeterminismError,
    NotADatabase,
    PatchTestFailed,
    RunClosed,
    RunNotFound,
    TraceNotFound,
    TransactionClosed,
    TransactionConflict,
    WorkflowCancelled,
    WorkflowError,
)

__version__ = "0.1.0"

__all__ = [
    "ChainBroken",
    "Change",
    "Changes",
    "Commit",
    "CorruptionError",
    "Database",
    "DatabaseClosed",
    "DatabaseLocked",
    "DatabasePoisoned",
    "DatabaseReadOnly",
    "Edge",
    "Event",
    "EventsDiff",
    "HistoryUnavailable",
    "Hit",
    "InmemError",
    "InvalidArgument",
    "InvalidKey",
    "InvalidTransition",
    "InvalidValue",
    "Match",
    "Node",
    "NonDeterminismError",
    "NotADatabase",
    "Op",
    "PatchTestFailed",
    "RunClosed",
    "RunDiff",
    "RunInfo",
    "RunNotFound",
    "RunState",
    "SnapshotInfo",
    "State",
    "StoredVector",
    "Subscription",
    "Tenant",
    "Trace",
    "TraceNotFound",
    "Transaction",
    "TransactionClosed",
    "TransactionConflict",
    "VectorRecord",
    "Watch",
    "WorkflowCancelled",
    "WorkflowError",
    "__version__",
]
