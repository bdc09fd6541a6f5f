"""The database facade: open a directory, and the public API of an open database.

This module owns the lifecycle of a database handle — ``open`` reads as lock
→ recover → build the kernel → start background work, ``close`` as the
reverse — and the documented public API, every method of which delegates:
commits and reads to the storage kernel (:mod:`inmem.kernel`), primitives to
their classes (``db.kv``, ``db.events``, ...), transactions to
:mod:`inmem.txn`, history to :mod:`inmem.replay`, snapshots to
:mod:`inmem.checkpoint`.

Invariant: a ``Database`` holds no state of its own beyond the handles it
wired together; everything durable goes through the kernel's commit path.

Thread safety: one handle may be shared by any number of threads.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from . import native
from .errors import InvalidArgument
from .fs import FileSystem, OSFileSystem, check_file_mode
from .changefeed import DEFAULT_BUFFER, Watch
from .channels import DEFAULT_QUEUE, Hub, Subscription
from .checkpoint import SnapshotInfo, Checkpointer
from .contexts import DIRECT, OPTIMISTIC, PRIMITIVES, READS, _AutoPrimitive, _Autocommit
from .history import HistoryIndex
from .kernel import Kernel
from . import replay as _replay
from .replay import Commit, GraphChange, RunDiff, RunState
from .snapshot import Progress
from .primitives.docs import Docs
from .primitives.graph import Graph
from .primitives.events import Events
from .primitives.kv import KV
from .primitives.runs import Runs
from .primitives.state import StateMachines
from .primitives.traces import Traces
from .primitives.vectors import Vectors
from .sweeping import SweepThread, sweep_all
from .tenants import Tenant, delete_tenant
from .vectorindex import VectorIndexes
from .opening import NoLock, lock_directory, recover_directory
from .registry import check_tenant_id
from .txn import Transaction, transact
from .wal.format import FORMAT_VERSION, MAX_PAYLOAD_BYTES
from .wal.writer import DURABILITY_MODES

__all__ = ["Database"]

T = TypeVar("T")

log = logging.getLogger("inmem")

MiB = 1024 * 1024

#: Attributes an upper layer attaches to every handle, built on first access (name -> ``factory(db)``):
#: :mod:`inmem.workflows` adds ``workflows``, ``workflow`` and ``step`` (this layer cannot import it).
EXTENSIONS: dict[str, Callable[[Database], Any]] = {}
_EXTENSION_LOCK = threading.RLock()


class GraphAPI:
    """``db.graph``: the memory graph (:class:`~inmem.primitives.graph.Graph`, each call one atomic
    step, delegated as it is) plus :meth:`history`, its audit trail, read from the history index by
    the replay layer (the ``Graph`` primitive lives below it).

    ``tx.graph`` has no ``history``: a transaction sees its own uncommitted writes, the audit trail
    only committed ones — call ``db.graph.history`` (before or after the transaction).
    """

    def __init__(self, kernel: Kernel, graph: Any):
        self._kernel = kernel
        self._graph = graph  # the autocommit wrapper of Graph
        self.__doc__ = graph.__doc__

    def __getattr__(self, name: str) -> Any:
        return getattr(self._graph, name)

    def history(self, run: str, node: str) -> list[GraphChange]:
        """Every committed change to ``node`` and to its edges (in and out), oldest first, with before/after.

        Each :class:`~inmem.replay.GraphChange` has ``version``, ``ts`` (UTC
        commit time), ``op`` (``"add_node"``, ``"update_node"``,
        ``"delete_node"``, ``"add_edge"``, ``"update_edge"``,
        ``"remove_edge"``), ``key`` (the node id, or ``(source, relation,
        target)``) and ``before`` / ``after`` (:class:`~inmem.Node` or
        :class:`~inmem.Edge`; ``None``: absent). ``delete_node``'s cascade
        shows as its ``remove_edge`` changes at the same version. A node that
        never existed has an empty history; a deleted node keeps its history.
        Read from the same history index as :meth:`Database.history` (no
        second log); a fork's history starts with its first commit (the copy,
        as ``add_node``/``add_edge``).

        Complexity: O(the run's commits and bytes), one positioned read per
        commit of the run, independent of the database's total history.

        :raises InvalidArgument: ``node`` is not a non-empty str.
        :raises RunNotFound: no such run.
        :raises HistoryUnavailable: part of the run's history was deleted by retention.
        :raises CorruptionError: a history record fails its checksum, or a record of the node or
            its edges does not decode (``inmem verify`` names it).
        """
        return _replay.graph_history(self._kernel, run, node)

    def __dir__(self) -> list[str]:
        return sorted({*dir(self._graph), "history"})

    def __repr__(self) -> str:
        return repr(self._graph)


class Database:
    """An open inmem database directory. Create with :meth:`Database.open`.

    >>> import tempfile
    >>> with Database.open(tempfile.mkdtemp()) as db:
    ...     run = db.begin_run("planner")
    ...     db.kv.put(run, "goal", {"task": "summarise", "steps": 3})
    ...     db.kv.get(run, "goal")["steps"]
    3
    """

    kv: KV
    events: Events
    state: StateMachines
    traces: Traces
    runs: Runs
    vectors: Vectors
    docs: Docs
    graph: Graph

    def __init__(self, *args: Any, **kwargs: Any):
        raise TypeError("use Database.open(path, ...) to open a database")

    # --- opening and closing -------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        durability: str = "batched",
        flush_interval_ms: int = 100,
        segment_bytes: int = 64 * MiB,
        salvage: bool = False,
        snapshot_every_bytes: int | None = 64 * MiB,
        snapshot_every_s: float | None = None,
        progress: Progress | None = None,
        history: str = "keep",
        read_only: bool = False,
        file_mode: int | None = None,
        embedder: Callable[[list[str]], Any] | None = None,
        fs: FileSystem | None = None,
        clock: Callable[[], float] | None = None,
        sweep_interval_s: float | None = 60.0,
        follow: bool = False,
        recover_workflows: bool = False,
    ) -> Database:
        """Open (creating if needed) the database in directory ``path`` and recover it.

        :param durability: ``"strict"`` — a commit returns once its WAL record
            is fsynced (concurrent committers share one fsync); ``"batched"``
            (default) — a background flusher writes and fsyncs every
            ``flush_interval_ms``, so a crash loses at most that window, never
            a partial transaction; ``"off"`` — each commit is written to the OS
            but never fsynced (survives a process crash, not a power loss).
        :param flush_interval_ms: ``batched`` flush period in milliseconds (1..60000).
        :param segment_bytes: WAL segment rotation size in bytes (>= 4096).
        :param salvage: on corruption, keep the longest valid prefix instead of
            raising; what was dropped is set aside and reported in
            ``stats()["recovery"]["salvaged"]``.
        :param snapshot_every_bytes: take a snapshot in a background thread
            after this many bytes of WAL (default 64 MiB; ``None``: never by size).
        :param snapshot_every_s: and/or every this many seconds (default ``None``: never by time).
        :param progress: ``progress(phase, done, total)``, called during
            recovery (``"recovery-snapshot"``, ``"recovery-wal"``: bytes) and
            snapshots (``"snapshot"``: keys), e.g. to draw a progress bar.
        :param history: which WAL history outlives the snapshots that cover it
            (SPEC.md, "History"): ``"keep"`` (default) — all of it, so every
            run can be replayed for ever; ``"active"`` — until the run is
            archived (:meth:`archive_run`); ``"none"`` — only what recovery
            needs. Replay of a run whose history is gone raises
            ``HistoryUnavailable``.
        :param read_only: inspect without changing a byte: no lock file is
            written (a shared lock keeps writers out while it is open), a torn
            tail is reported in ``stats()["recovery"]["torn_tail"]`` but not
            cut, no snapshot is taken, and every write raises
            ``DatabaseReadOnly``. The directory must already be a database.
        :param follow: with ``read_only``: take **no** lock, so the handle can sit beside a
            writer in another process — a follower. It recovers the state as of the open (a frame
            the writer is still writing is a torn tail: not yet there), and :meth:`watch` follows
            the writer's WAL as it grows. The writer may compact away WAL segments the follower has
            not read yet: a watch then raises ``HistoryUnavailable`` naming the version to resume
            from, never skips. Reads other than ``watch`` see the state as of the open.
        :param file_mode: permission bits of the files inmem creates (segments,
            snapshots, IDENTITY, LOCK, sidecars, salvage copies); default
            ``0o600`` (owner only, as agent state is private). A database
            directory created by this open gets the matching mode with search
            bits (``0o600`` -> ``0o700``, ``0o640`` -> ``0o750``); an existing
            directory keeps its mode. The process umask still applies. Must
            include ``0o600`` and no execute bit. ``None``: the ``fs``'s own
            ``file_mode`` (``OSFileSystem``: ``0o600``); an int is set on ``fs``.
        :param embedder: the default embedder of every vector collection in
            this process (``vectors.add_text`` and string queries): a callable
            ``list[str] -> array (n, dim)``, e.g.
            ``inmem.embeddings.HashingEmbedder(dim=256)``. Not stored.
        :param fs: file-system seam (default: the real disk).
        :param clock: ``clock() -> float``, now in seconds since the Unix epoch (default
            ``time.time``): what a value's time to live (``kv.put(..., ttl=)``) is judged by, and the
            time stamped on each commit. Tests inject one to expire values without sleeping.
        :param recover_workflows: once open, resume every durable workflow left unfinished whose
            function is declared in this process (``inmem.workflows.workflow``; SPEC.md §14) — what
            ``db.workflows.recover()`` does. Not with ``read_only``.
        :param sweep_interval_s: the background sweeper deletes expired values every this many
            seconds (default 60; ``None``: only :meth:`sweep` does). Expired values are invisible
            to reads either way; sweeping frees their space and records when they went.

        A missing directory is created (with any missing parents), and each new
        name is fsynced into its parent before anything else happens. An empty
        directory becomes a new database; a non-empty one must already be one.
        An open that raises leaves an existing directory as it was, ``LOCK``
        aside (SPEC.md §1); ``salvage=True`` changes it by design.

        Complexity: O(snapshot + WAL after it) for recovery, plus loading the
        history index (O(retained commit records), from compact sidecars).

        :raises InvalidArgument: an option is out of range (nothing is touched on disk).
        :raises NotADatabase: the directory holds files but no inmem database
            (nothing is created or removed in it); with ``read_only``, any
            directory without IDENTITY.
        :raises DatabaseLocked: another handle, in this or another process, has
            it open (a writer and read-only handles exclude each other).
        :raises DatabaseReadOnly: the directory cannot be written (read-only
            file system, no permission): names the path; use ``read_only=True``.
        :raises CorruptionError: the WAL is damaged (names the file and byte offset).
        """
        if durability not in DURABILITY_MODES:
            raise InvalidArgument(f"durability must be one of {', '.join(DURABILITY_MODES)}; got {durability!r}")
        if type(flush_interval_ms) is not int or not 1 <= flush_interval_ms <= 60_000:
            raise InvalidArgument(f"flush_interval_ms must be an int in 1..60000; got {flush_interval_ms!r}")
        if type(segment_bytes) is not int or not 4096 <= segment_bytes <= MAX_PAYLOAD_BYTES:
            raise InvalidArgument(f"segment_bytes must be an int in 4096..{MAX_PAYLOAD_BYTES}; got {segment_bytes!r}")
        if snapshot_every_bytes is not None and (type(snapshot_every_bytes) is not int or snapshot_every_bytes < 4096):
            raise InvalidArgument(f"snapshot_every_bytes must be None or an int >= 4096; got {snapshot_every_bytes!r}")
        if snapshot_every_s is not None and (
            not isinstance(snapshot_every_s, (int, float)) or isinstance(snapshot_every_s, bool)
            or not snapshot_every_s > 0
        ):
            raise InvalidArgument(f"snapshot_every_s must be None or a number > 0; got {snapshot_every_s!r}")
        if embedder is not None and not callable(embedder):
            raise InvalidArgument("embedder must be a callable list[str] -> array of shape (n, dim), or None")
        if progress is not None and not callable(progress):
            raise InvalidArgument("progress must be a callable(phase, done, total) or None")
        if read_only and salvage:
            raise InvalidArgument("salvage=True changes files; it cannot be combined with read_only=True")
        if file_mode is not None:
            check_file_mode(file_mode)
        if fs is None:
            fs = OSFileSystem(file_mode if file_mode is not None else OSFileSystem.file_mode)
        elif file_mode is not None:
            fs.file_mode = file_mode  # type: ignore[attr-defined]
        if clock is not None and not callable(clock):
            raise InvalidArgument("clock is a callable returning seconds since the Unix epoch, or None")
        if sweep_interval_s is not None and (isinstance(sweep_interval_s, bool)
                                             or not isinstance(sweep_interval_s, (int, float))
                                             or not 0 < sweep_interval_s < float("inf")):
            raise InvalidArgument(f"sweep_interval_s is a number of seconds > 0, or None; got {sweep_interval_s!r:.40}")
        dirpath = os.fspath(path)
        index = HistoryIndex(fs, dirpath, history, read_only=read_only)  # checks history; touches nothing
        if fs.exists(dirpath) and not os.path.isdir(dirpath):
            raise InvalidArgument(f"{dirpath} exists and is not a directory; a database is a directory")
        if recover_workflows and read_only:
            raise InvalidArgument("recover_workflows=True runs workflows, which write: not with read_only=True")
        if follow and not read_only:
            raise InvalidArgument("follow=True follows another handle's writes: it needs read_only=True")
        if follow and not fs.exists(dirpath):
            raise InvalidArgument(f"{dirpath} does not exist; follow=True opens an existing database")
        lock = NoLock() if follow else lock_directory(fs, dirpath, read_only)  # 1. lock
        try:                                                                  # 2. recover
            rec, store, registry, wal = recover_directory(fs, dirpath, index, salvage=salvage, progress=progress,
                                                 read_only=read_only, durability=durability,
                                                 flush_interval_ms=flush_interval_ms, segment_bytes=segment_bytes)
        except BaseException:
            lock.release()
            raise
        kernel = Kernel(fs=fs, path=dirpath, identity=rec.identity, store=store, registry=registry,  # 3. kernel
                        history=index, wal=wal, version=rec.version, durability=durability, read_only=read_only)
        self = object.__new__(cls)                                            # 4. the handle, background work
        self._kernel = kernel
        self._lock_file = lock
        self._flush_interval_ms = flush_interval_ms
        self._segment_bytes = segment_bytes
        self._recovery = rec.report
        self._clock = time.time if clock is None else clock
        if clock is not None:
            kernel.clock = lambda: int(clock() * 1_000_000)
        self._autocommit = _Autocommit(kernel)
        #: Tenant views handed out and still referenced (``tenant()``), closed with the handle.
        self._tenants: weakref.WeakValueDictionary[str, Tenant] = weakref.WeakValueDictionary()
        self.kv = KV(self._autocommit)
        self.events = _AutoPrimitive(kernel, Events, READS["events"])  # type: ignore[assignment]
        self.state = _AutoPrimitive(kernel, StateMachines, READS["state"])  # type: ignore[assignment]
        self.traces = _AutoPrimitive(kernel, Traces, READS["traces"])  # type: ignore[assignment]
        self.runs = _AutoPrimitive(kernel, Runs, READS["runs"])  # type: ignore[assignment]
        indexes = VectorIndexes(kernel, embedder)
        make_vectors = functools.partial(Vectors, index=indexes)
        self.vectors = _AutoPrimitive(kernel, Vectors, READS["vectors"], make_vectors,  # type: ignore[assignment]
                                      DIRECT["vectors"], self._autocommit)
        make_docs = functools.partial(Docs, models={})  # model classes by import path, shared by db and tx
        self.docs = _AutoPrimitive(kernel, Docs, READS["docs"], make_docs)  # type: ignore[assignment]
        make_graph = functools.partial(Graph, index=indexes)  # node vectors share the vector indexes
        self.graph = _AutoPrimitive(kernel, Graph, READS["graph"], make_graph,  # type: ignore[assignment]
                                    optimistic=OPTIMISTIC["graph"])
        self._hub = Hub()
        self._watches: weakref.WeakSet[Watch] = weakref.WeakSet()
        self._primitives = {**PRIMITIVES, "vectors": make_vectors, "docs": make_docs, "graph": make_graph}
        self._checkpointer = Checkpointer(kernel, every_bytes=None if read_only else snapshot_every_bytes,
                                        every_s=None if read_only else snapshot_every_s,
                                        progress=progress, retention=index, loaded=rec.report.get("snapshot"))
        self.graph = GraphAPI(kernel, self.graph)  # type: ignore[assignment]  # + the audit trail (replay layer)
        self._sweeper = None if read_only or sweep_interval_s is None else SweepThread(kernel, sweep_interval_s)
        # A handle left open at interpreter exit is closed (flushed and fsynced), as
        # Python files are; the weak reference keeps atexit from holding it alive.
        ref = weakref.ref(self)
        self._atexit = lambda: (db := ref()) is not None and db.close()
        atexit.register(self._atexit)
        if recover_workflows:
            try:
                self.workflows.recover()  # an EXTENSIONS attribute (inmem.workflows)
            except BaseException:
                self.close()
                raise
        return self

    def close(self) -> None:
        """Flush and fsync the WAL, then release the directory. Idempotent.

        A snapshot or compaction in flight (foreground or background) is
        waited for first — one still capturing stops at its next step and
        raises ``DatabaseClosed`` — so no file operation of this handle
        outlives its lock. On a poisoned database nothing more is written
        (the failed bytes are discarded) and the lock is still released.

        :raises DatabasePoisoned: the final write or fsync failed.
        """
        kernel = self._kernel
        if not kernel.close():
            return
        self._autocommit.closed()
        for view in list(self._tenants.values()):
            view.closed()
        atexit.unregister(self._atexit)
        for watch in list(self._watches):
            watch.close()
        self._hub.close()
        try:
            if self._sweeper is not None:
                self._sweeper.close()
            self._checkpointer.close()
            kernel.wal.close()
            if not kernel.poisoned:
                try:
                    kernel.history.persist(kernel.wal.durable_lsn)
                except OSError as exc:  # a cache: the next open rebuilds it from the WAL
                    log.warning("inmem: could not save the history index (%s); it is rebuilt on open", exc)
        finally:
            self._lock_file.release()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kernel = self._kernel
        state = "closed" if kernel.closed else f"version {kernel.version}"
        return f"<inmem.Database {kernel.path!r} {kernel.durability} {state}>"

    def __getattr__(self, name: str) -> Any:
        """An attribute of :data:`EXTENSIONS` (``db.workflows``, ...), built once per handle on first access."""
        factory = EXTENSIONS.get(name)
        if factory is None:
            raise AttributeError(f"'Database' object has no attribute {name!r}")
        with _EXTENSION_LOCK:
            if name not in self.__dict__:
                self.__dict__[name] = factory(self)
        return self.__dict__[name]

    @property
    def clock(self) -> Callable[[], float]:
        """The database clock (``Database.open(clock=)``, default ``time.time``): ``clock()`` is now in
        seconds since the Unix epoch."""
        return self._clock

    @property
    def path(self) -> str:
        """The database directory."""
        return self._kernel.path

    @property
    def closed(self) -> bool:
        return self._kernel.closed

    @property
    def read_only(self) -> bool:
        """Opened with ``read_only=True``: every write raises ``DatabaseReadOnly``."""
        return self._kernel.read_only

    # --- runs -----------------------------------------------------------------------------

    def begin_run(
        self,
        name: str | None = None,
        *,
        parent: str | None = None,
        tags: Iterable[str] = (),
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Start a run and return its id: UUIDv7 text, which sorts by creation time.

        The run record (name, parent, tags, metadata, status ``"active"``,
        start time) is committed like any write.

        :raises InvalidArgument: ``name`` or a tag is not a str.
        :raises RunNotFound: ``parent`` names no run.
        :raises InvalidValue: ``metadata`` is not a dict cbor2 can encode.
        :raises DatabasePoisoned: / :raises DatabaseClosed: as for any write.
        """
        return self._kernel.begin_run(name, parent, tags, metadata)

    def end_run(self, run: str, status: str = "completed") -> None:
        """End ``run`` with ``status`` (``completed``, ``failed`` or ``cancelled``); it becomes read-only.

        :raises InvalidArgument: unknown ``status``.
        :raises RunNotFound: no such run.
        :raises RunClosed: the run has already ended.
        """
        self._kernel.end_run(run, status)

    # --- tenants: per-user isolation ------------------------------------------------------------

    def tenant(self, tenant_id: str) -> Tenant:
        """The database as tenant ``tenant_id`` sees it: a :class:`~inmem.tenants.Tenant` view.

        >>> import tempfile
        >>> with Database.open(tempfile.mkdtemp()) as db:
        ...     alice, bob = db.tenant("alice"), db.tenant("bob")
        ...     run = alice.begin_run("chat")
        ...     alice.kv.put(run, "k", 1)
        ...     try:
        ...         bob.kv.get(run, "k")
        ...     except Exception as exc:
        ...         type(exc).__name__
        'RunNotFound'

        The view has ``kv``, ``events``, ``state``, ``traces``, ``runs``,
        ``vectors``, ``docs``, ``graph``, ``begin_run``, ``end_run``,
        ``transaction``, ``transact``, ``history``, ``replay_run``,
        ``run_state``, ``diff_runs``, ``fork_run``, with this class's
        signatures. Runs it begins (and forks of them) belong to the tenant;
        any other run — another tenant's, or one of no tenant — raises
        ``RunNotFound`` with the message of an id no run has, and is never
        listed. Enforced below the primitives: the view's contexts and
        transactions check runs and look up key prefixes in the tenant's
        scope of the run registry (SPEC.md "Tenants"). This handle (the admin)
        sees every run; ``RunInfo.tenant`` says whose it is. O(runs) for a
        tenant's first view in this handle, O(1) after.

        :raises InvalidArgument: ``tenant_id`` is not a non-empty str of at most 256 UTF-8 bytes without NUL.
        """
        check_tenant_id(tenant_id)
        view = self._tenants.get(tenant_id)
        if view is None:  # one view per tenant while it is in use: its method wrappers are made once
            view = Tenant(self._kernel, self._kernel.registry.scope(tenant_id), self._primitives)
            view = self._tenants.setdefault(tenant_id, view)
        return view

    def delete_tenant(self, tenant_id: str) -> int:
        """Delete all of tenant ``tenant_id``'s data in one commit; return how many runs were deleted.

        Every key of every run of the tenant — KV, events, states, traces,
        vectors, documents, graph, expiry index, and the run records — is
        deleted by one commit (no commit if it has none), after which the
        runs are gone for every handle and view: any call naming one raises
        ``RunNotFound`` (here: "deleted by delete_tenant"), including
        :meth:`history` and :meth:`replay_run`. A transaction that read or
        wrote one of them conflicts at commit; one that listed runs too.

        What remains: the WAL segments and history sidecars written before
        still hold the old records until history retention lets them go
        (SPEC.md "History"): with ``history="none"`` the next snapshot or
        :meth:`compact` deletes every segment it covers — call
        ``db.compact()`` to force it now; with ``"active"`` a deleted run
        counts as archived, so :meth:`compact` drops segments once all their
        runs are archived or deleted; with ``"keep"`` the WAL is kept for
        ever (then the bytes stay on disk). Snapshots taken before the
        deletion hold the data until :meth:`compact` (or two more snapshots)
        replaces them. O(keys of the tenant).

        :raises InvalidArgument: bad ``tenant_id`` (as :meth:`tenant`), before anything is written.
        :raises DatabaseReadOnly: / :raises DatabaseClosed: / :raises DatabasePoisoned: as for any write.
        """
        check_tenant_id(tenant_id)
        self._kernel.check_can_write()
        return delete_tenant(self._kernel, tenant_id)

    # --- history: runs like commits ------------------------------------------------------------

    def history(self, run: str) -> list[Commit]:
        """The commits that wrote to ``run``, oldest first, read from the WAL.

        Each :class:`~inmem.replay.Commit` has ``version``, ``ts`` (UTC) and
        ``ops``: the run's writes in it, each ``(primitive, key, kind, value)``
        — e.g. ``Op("kv", "plan", "put", {...})``, ``Op("events", 3, "put", ...)``.
        The first commit is the one that created the run.

        Complexity: one positioned read per commit of the run (the history
        index, SPEC.md "History"), independent of the database's total history.

        :raises RunNotFound: no such run.
        :raises HistoryUnavailable: part of its history was deleted by retention.
        :raises CorruptionError: a history record fails its checksum.
        """
        return _replay.history(self._kernel, run)

    def replay_run(self, run: str, *, at_version: int | None = None) -> RunState:
        """Rebuild ``run``'s state from its history alone, as it was after commit version ``at_version``.

        ``at_version=None``: after its last commit. The result equals
        :meth:`run_state` for the same point (determinism); it is read-only.
        Complexity: O(the run's commits and bytes up to ``at_version``).

        :raises InvalidArgument: ``at_version`` is not an int, is beyond the
            last commit, or is before the run existed.
        :raises RunNotFound: no such run.
        :raises HistoryUnavailable: part of its history was deleted by retention.
        """
        return _replay.replay(self._kernel, run, at_version)

    def run_state(self, run: str) -> RunState:
        """``run``'s current state read from the live store (one consistent snapshot). O(run size).

        :raises RunNotFound: no such run.
        """
        return _replay.live(self._kernel, run)

    def diff_runs(self, a: str, b: str, *, at_a: int | None = None, at_b: int | None = None) -> RunDiff:
        """Compare run ``a`` (live, or replayed to ``at_a``) with run ``b`` (live, or at ``at_b``).

        Returns a :class:`~inmem.replay.RunDiff`: per primitive the added,
        removed and changed keys with both values, the first event seq where
        the logs diverge, and the states that differ; ``str(diff)`` is a
        git-like summary, ``diff.is_empty()`` says whether anything differs.
        Complexity: O(size of both runs).

        :raises RunNotFound: / :raises HistoryUnavailable: / :raises InvalidArgument: as :meth:`replay_run`.
        """
        return _replay.diff(self._kernel, a, b, at_a, at_b)

    def fork_run(self, run: str, *, at_version: int | None = None, name: str | None = None,
                 tags: Iterable[str] = ()) -> str:
        """Start a new active run whose state begins as ``run``'s at ``at_version``; return its id.

        The fork's parent is ``run`` (``db.runs.children(run)`` lists it); its
        ``RunInfo.metadata`` holds ``{"forked_from": run, "fork_version": v}``;
        its name defaults to the parent's. KV, states, traces and the event
        log are copied byte for byte (so the event hash chain verifies and
        continues); writes to the fork never touch the parent, which may have
        ended. The copy and the run record are one commit. ``at_version=None``
        forks the live state (read under the commit lock that commits the copy).
        Complexity: O(run size).

        :raises RunNotFound: no such run.
        :raises HistoryUnavailable: ``at_version`` given and the history is gone.
        :raises InvalidArgument: bad ``at_version``, ``name`` or tags, or the
            state exceeds one commit record (1 GiB).
        """
        return _replay.fork(self._kernel, run, at_version, name, tags)

    def archive_run(self, run: str) -> None:
        """Mark ``run`` archived: with ``history="active"`` its history is no longer kept.

        Segments that hold only archived runs' records are deleted by the
        next snapshot or :meth:`compact` (oldest first); replay of the run
        then raises ``HistoryUnavailable``. Its current state stays readable
        and, if the run is active, writable. Idempotent; committed (survives
        reopen). ``RunInfo.archived`` reports it.

        :raises RunNotFound: no such run.
        """
        self._kernel.archive_run(run)

    def compact(self) -> dict[str, Any]:
        """Delete the WAL segments and snapshots nothing needs any more; return what was deleted.

        Takes a snapshot unless the newest *valid* one holds the last commit
        (a snapshot this handle has not verified is verified first; a damaged
        one is set aside as ``<name>.corrupt-<ms>``, never trusted), then
        deletes every WAL segment it covers that history retention lets go
        (``history="none"``: all; ``"active"``: those whose runs are all
        archived, oldest first; ``"keep"``: none), and the older snapshots
        whose WAL is thereby gone. Afterwards recovery needs only the newest
        snapshot (verified) and the WAL after it.

        :returns: ``{"snapshot", "segments_deleted", "snapshots_deleted", "bytes_freed", "history_floor"}``.
        :raises DatabaseClosed: / :raises DatabasePoisoned: / :raises CorruptionError: /
            :raises OSError: as :meth:`snapshot`; a failure while deleting files poisons the database.
        """
        self._kernel.check_can_write()
        return self._checkpointer.compact()

    # --- transactions -----------------------------------------------------------------------------

    def transaction(self) -> Transaction:
        """Begin an optimistic transaction on a snapshot of the latest commit.

        >>> import tempfile
        >>> with Database.open(tempfile.mkdtemp()) as db:
        ...     run = db.begin_run()
        ...     with db.transaction() as tx:          # commits on exit, rolls back on an exception
        ...         tx.kv.put(run, "a", 1)
        ...         tx.kv.put(run, "b", tx.kv.get(run, "a") + 1)   # reads its own writes
        ...     db.kv.get(run, "b")
        2

        Reads see the snapshot (plus the transaction's own writes) however
        many commits happen meanwhile; writes are buffered until
        :meth:`Transaction.commit`, which raises ``TransactionConflict`` if
        anything the transaction read, scanned or wrote was committed by
        another after its snapshot. One transaction belongs to one thread.

        :raises DatabaseClosed: the database is closed.
        """
        return Transaction(self._kernel, self._primitives)

    def transact(self, fn: Callable[[Transaction], T], *, retries: int = 10) -> T:
        """Run ``fn(tx)`` in a fresh transaction and commit it, retrying on conflict; return its result.

        On ``TransactionConflict`` the transaction is retried from the start
        after a jittered exponential backoff (full jitter: a random wait up to
        1 ms, 2 ms, 4 ms ... capped at 100 ms), at most ``retries`` times; then
        the last conflict is raised. ``fn`` must be safe to call again: keep
        side effects outside the database out of it. Any other exception rolls
        the transaction back and propagates at once.

        :raises TransactionConflict: still conflicting after ``retries`` retries.
        :raises InvalidArgument: ``retries`` is negative.
        """
        return transact(self.transaction, fn, retries)

    # --- snapshots ---------------------------------------------------------------------------------

    def snapshot(self) -> SnapshotInfo:
        """Write a snapshot of the whole store now; return what it wrote.

        Writers pause only for one capture step of 4,096 keys at a time
        (``SnapshotInfo.pause_ms`` is the longest); encoding, writing and
        fsync happen without any lock. Afterwards the two newest *valid*
        snapshots are kept (one this handle has not verified is verified
        first; a damaged one is set aside as ``<name>.corrupt-<ms>`` and not
        counted) and WAL segments wholly covered by the older of them are
        deleted. Recovery then loads the newest valid snapshot and replays
        only the WAL after it. See SPEC.md, "Snapshots".

        :raises DatabaseClosed: the database is closed, or was closed while
            the snapshot was being captured (nothing was written).
        :raises DatabasePoisoned: the WAL could not be synced first, or a
            write, fsync, rename or removal in the directory failed (the
            snapshot file, e.g. ENOSPC or EIO, the directory fsync, deleting
            covered WAL segments, saving history sidecars): the database is
            now poisoned (SPEC.md §5); reopen once the disk is healthy.
        :raises CorruptionError: the written file failed verification (it was removed).
        :raises OSError: a read failed (the database is not poisoned).
        """
        self._kernel.check_can_write()
        return self._checkpointer.take()

    # --- change feed and channels --------------------------------------------------------------

    def watch(self, *, run: str | None = None, primitive: str | None = None, prefix: str | bytes | None = None,
              from_version: int | None = None, buffer: int = DEFAULT_BUFFER) -> Watch:
        """Every committed write that matches, in commit order, each exactly once: a :class:`~inmem.Watch`
        of :class:`~inmem.Change` ``(version, ts, run, primitive, key, op, value)`` (SPEC.md "Change feed").

        :param run: only writes to this run (a run id; it need not exist yet).
        :param primitive: only this primitive: ``"run"``, ``"kv"``, ``"events"``,
            ``"state"``, ``"traces"``, ``"vectors"``, ``"docs"``, ``"graph"``.
        :param prefix: only writes whose user key (the primitive's key bytes:
            the kv key, state or document name, vector collection, ... in
            UTF-8) starts with it.
        :param from_version: replay from the WAL every commit with version
            ``>= from_version`` (inclusive: to resume after the last change
            seen, pass ``last.version + 1``), then follow live commits with no
            gap and no duplicate. None: only commits after this call.
        :param buffer: commits held for a slow consumer; when full, committers
            go on unblocked and the watch reads what it missed back from the WAL.

        On a read-only handle the watch follows the writer process's WAL files.
        Differs from :meth:`subscribe`: durable, resumable, every write; a
        channel is ephemeral and carries only what is published.
        Cost: O(1) per commit under the commit lock per watch; decoding in the
        consumer's thread.

        :raises InvalidArgument: a bad filter, ``from_version`` not an int >= 0
            or after the next commit, ``buffer`` not an int >= 1.
        :raises HistoryUnavailable: ``from_version`` is older than the oldest
            version the WAL still holds (the message names it).
        :raises DatabaseClosed: the database is closed.
        """
        watch = Watch(self._kernel, run=run, primitive=primitive, prefix=prefix, from_version=from_version,
                      buffer=buffer)
        self._watches.add(watch)
        return watch

    def publish(self, channel: str, message: Any) -> int:
        """Send ``message`` (any object, not copied, not stored) to the subscriptions of ``channel`` open now,
        in this process; return how many it reached. Ephemeral: nobody listening, nobody gets it
        (use :meth:`watch` for durable changes). O(subscribers); never blocks on a slow subscriber.

        :raises InvalidArgument: ``channel`` is not a non-empty str. :raises DatabaseClosed: closed.
        """
        return self._hub.publish(channel, message)

    def subscribe(self, *channels: str, maxsize: int = DEFAULT_QUEUE) -> Subscription:
        """A :class:`~inmem.Subscription` to ``channels``: iterate ``(channel, message)``, ``get(timeout=)``,
        ``close()``. Holds at most ``maxsize`` messages: when full the oldest is dropped and
        ``subscription.dropped`` counts it.

        :raises InvalidArgument: no channel or a bad one, a bad ``maxsize``. :raises DatabaseClosed: closed.
        """
        self._kernel.check_open()
        return self._hub.subscribe(channels, maxsize)

    # --- durability and figures --------------------------------------------------------------

    def sweep(self, run: str | None = None) -> int:
        """Delete the values whose time to live has passed, now; return how many.

        Each run's due values go in ordinary commits (at most 10,000 per commit), so
        ``history(run)`` shows when each was swept. ``run``: that run only (None: every active
        run; ended runs are immutable and skipped — their expired values stay hidden).
        O(runs · log n + expired).

        :raises DatabaseReadOnly: a read-only handle. :raises RunNotFound: no such ``run``.
        :raises RunClosed: ``run`` has ended.
        """
        kernel = self._kernel
        kernel.check_can_write()
        if run is not None:
            kernel.registry.check(run, write=True)
        return sweep_all(kernel, None if run is None else [run])

    def sync(self) -> None:
        """Make every commit so far durable (write + fsync), whatever the durability mode.

        :raises DatabasePoisoned: the write or fsync failed.
        :raises DatabaseClosed: the database is closed.
        """
        self._kernel.check_open()
        self._kernel.wal.sync()

    def stats(self) -> dict[str, Any]:
        """Figures about this handle, as a JSON-compatible dict.

        Keys: ``path``, ``format_version``, ``commit_version`` (last commit),
        ``commits`` (by this handle), ``keys`` (entries in the unified store,
        run records included), ``runs``, ``runs_by_status``, ``wal_bytes``,
        ``wal_segments``, ``durability``, ``flush_interval_ms``,
        ``segment_bytes``, ``native`` (C hot path on), ``poisoned``,
        ``conflicts`` (transactions that failed validation),
        ``active_transactions``, ``retained_versions`` (old versions kept
        for open snapshots), and
        ``recovery``: what opening did (``segments``, ``records``, ``bytes``
        read, ``seconds``, ``torn_tail``, ``salvaged``, ``created``).
        """
        kernel = self._kernel
        wal = kernel.wal.stats()
        figures = kernel.stats()
        return {
            "path": kernel.path,
            "format_version": FORMAT_VERSION,
            "commit_version": kernel.version,
            "commits": figures["commits"],
            "keys": figures["keys"],
            "runs": len(kernel.registry),
            "runs_by_status": kernel.registry.count_by_status(),
            "wal_bytes": wal["bytes"],
            "wal_segments": wal["segments"],
            "durability": kernel.durability,
            "read_only": kernel.read_only,
            "flush_interval_ms": self._flush_interval_ms,
            "segment_bytes": self._segment_bytes,
            "native": native.ENABLED,
            "poisoned": kernel.poisoned,
            "conflicts": figures["conflicts"],
            "active_transactions": figures["active_read_points"],
            "retained_versions": figures["retained_versions"],
            "snapshots": {
                "taken": self._checkpointer.taken,
                "failures": self._checkpointer.failures,
                "last": None if self._checkpointer.last is None else self._checkpointer.last.as_dict(),
            },
            "history": kernel.history.stats(),
            "recovery": dict(self._recovery),
        }
