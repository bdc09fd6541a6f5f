"""The database facade: open a directory, commit, read, and close.

This module owns the commit path and the lifecycle of a database handle; it
wires the lower layers together (lock file, recovery, store, run registry,
WAL writer) and hangs the primitives on the handle (``db.kv``).

The commit path (one critical section, then the durability wait)::

    with commit lock:                         # serialises commits: version order = LSN order
        check open / not poisoned / runs active
        version = last version + 1
        frame = encode_commit_frame(lsn, version, now, writes)
        wal.append(frame)                     # may raise DatabasePoisoned: nothing applied
        store.apply(version, writes)          # now visible to readers
    wal.wait(lsn)                             # strict: group fsync; off: write; batched: no wait

Invariants: each commit is exactly one WAL record; commit versions rise by one
per commit; the store never holds a write whose record was not appended.
Readers may see a commit before its ``wait`` returns (as in every WAL engine
with early lock release); if that fsync fails the database is poisoned and
the commit raises.

Thread safety: one handle may be shared by any number of threads. Point reads
take no lock; scans and commits take the commit lock briefly.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from . import native
from .errors import DatabaseClosed, InvalidArgument, TransactionConflict
from .fs import FileSystem, OSFileSystem
from .locks import CommitLock
from .checkpoint import SnapshotInfo, Snapshotter
from .contexts import PRIMITIVES, READS, _abandoned, _AutoPrimitive, _Autocommit, _Locked
from .history import HistoryIndex
from .mvcc import Versions
from . import replay as _replay
from .replay import Commit, RunDiff, RunState
from .snapshot import Progress
from .primitives.events import Events
from .primitives.kv import KV
from .primitives.runs import Runs
from .primitives.state import StateMachines
from .primitives.traces import Traces
from .recovery import recover
from .registry import RunRegistry
from .store import UnifiedStore
from .txn import Transaction, validate
from .wal import format as _format
from .wal.format import COMMIT_HEADER, FORMAT_VERSION, MAX_PAYLOAD_BYTES, encode_commit_frame, encode_put_frame
from .wal.readonly import ReadOnlyWal
from .wal.writer import DURABILITY_MODES, WalWriter

__all__ = ["Database"]

T = TypeVar("T")

log = logging.getLogger("inmem")

MiB = 1024 * 1024
LOCK_FILE = "LOCK"

Writes = list[tuple[bytes, bytes | None]]


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
        fs: FileSystem | None = None,
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
        :param fs: file-system seam (default: the real disk).

        Complexity: O(snapshot + WAL after it) for recovery, plus loading the
        history index (O(retained commit records), from compact sidecars).

        :raises InvalidArgument: an option is out of range (nothing is touched on disk).
        :raises DatabaseLocked: another handle, in this or another process, has it open.
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
        if progress is not None and not callable(progress):
            raise InvalidArgument("progress must be a callable(phase, done, total) or None")
        if read_only and salvage:
            raise InvalidArgument("salvage=True changes files; it cannot be combined with read_only=True")
        fs = fs if fs is not None else OSFileSystem()
        dirpath = os.fspath(path)
        index = HistoryIndex(fs, dirpath, history, read_only=read_only)  # checks history; touches nothing
        if fs.exists(dirpath) and not os.path.isdir(dirpath):
            raise InvalidArgument(f"{dirpath} exists and is not a directory; a database is a directory")
        if read_only:
            if not fs.exists(dirpath):
                raise InvalidArgument(f"{dirpath} does not exist; read_only=True opens an existing database")
            lock = fs.lock(os.path.join(dirpath, LOCK_FILE), shared=True)
        else:
            fs.makedirs(dirpath)
            lock = fs.lock(os.path.join(dirpath, LOCK_FILE))
        try:
            rec = recover(fs, dirpath, salvage=salvage, progress=progress, read_only=read_only,
                          indexed_until=index.indexed_until)
            store = UnifiedStore(rec.state)
            del rec.state
            registry = RunRegistry()
            registry.load(store)
            index.load(rec.identity.db_id, rec.history, rec.history_floor, rec.next_lsn)
            index.archived = registry.archived
            del rec.history
            wal = ReadOnlyWal(
                next_lsn=rec.next_lsn,
                tail_seq=rec.active.seq if rec.active is not None else rec.next_seq,
                wal_bytes=rec.closed_bytes + (rec.active.size if rec.active is not None else 0),
                wal_segments=rec.closed_segments + (1 if rec.active is not None else 0),
            ) if read_only else WalWriter(
                fs,
                dirpath,
                rec.identity.db_id,
                durability=durability,
                flush_interval_ms=flush_interval_ms,
                segment_bytes=segment_bytes,
                next_lsn=rec.next_lsn,
                active=rec.active,
                closed_bytes=rec.closed_bytes,
                closed_segments=rec.closed_segments,
                next_seq=rec.next_seq,
            )
        except BaseException:
            lock.release()
            raise
        self = object.__new__(cls)
        self._path = dirpath
        self._fs = fs
        self._lock_file = lock
        self._durability = durability
        self._flush_interval_ms = flush_interval_ms
        self._segment_bytes = segment_bytes
        self._identity = rec.identity
        self._recovery = rec.report
        self._store = store
        self._registry = registry
        self._history = index
        self._wal = wal
        self._version = rec.version
        self._commit_lock = CommitLock()  # never held across I/O: see engine/locks.py
        self._closed = False
        self._map = store._map  # the put fast path writes the SortedDict directly
        self._versions = Versions(store)
        self._abandoned: list[int] = []  # snapshot tokens of transactions collected unfinished
        self._conflicts = 0
        self._active_runs = registry.active
        self._must_wait = durability != "batched"
        self._commits = 0
        self._autocommit = _Autocommit(self)
        self.kv = KV(self._autocommit)
        self.events = _AutoPrimitive(self, Events, READS["events"])  # type: ignore[assignment]
        self.state = _AutoPrimitive(self, StateMachines, READS["state"])  # type: ignore[assignment]
        self.traces = _AutoPrimitive(self, Traces, READS["traces"])  # type: ignore[assignment]
        self.runs = _AutoPrimitive(self, Runs, READS["runs"])  # type: ignore[assignment]
        self._read_only = read_only
        self._snapshotter = Snapshotter(self, every_bytes=None if read_only else snapshot_every_bytes,
                                        every_s=None if read_only else snapshot_every_s,
                                        progress=progress, retention=index)
        # A handle left open at interpreter exit is closed (flushed and fsynced), as
        # Python files are; the weak reference keeps atexit from holding it alive.
        ref = weakref.ref(self)
        self._atexit = lambda: (db := ref()) is not None and db.close()
        atexit.register(self._atexit)
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
        with self._commit_lock:
            if self._closed:
                return
            self._closed = True
            self._autocommit.closed()
        atexit.unregister(self._atexit)
        try:
            self._snapshotter.close()
            self._wal.close()
            if not self._wal.poisoned:
                try:
                    self._history.persist(self._wal.durable_lsn)
                except OSError as exc:  # a cache: the next open rebuilds it from the WAL
                    log.warning("inmem: could not save the history index (%s); it is rebuilt on open", exc)
        finally:
            self._lock_file.release()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"version {self._version}"
        return f"<inmem.Database {self._path!r} {self._durability} {state}>"

    @property
    def path(self) -> str:
        """The database directory."""
        return self._path

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def read_only(self) -> bool:
        """Opened with ``read_only=True``: every write raises ``DatabaseReadOnly``."""
        return self._read_only

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
        registry = self._registry
        run, key, record = registry.prepare_begin(name, parent, tags, metadata)
        with self._commit_lock:
            self._check_can_write()
            # encoded under the lock: the record carries the version of the commit that creates it
            record["first_version"] = self._version + 1
            value = registry.encode_record(record)
            lsn = self._commit_locked([(key, value)], (), lambda: registry.applied_begin(run))
        self._wal.wait(lsn)
        return run

    def end_run(self, run: str, status: str = "completed") -> None:
        """End ``run`` with ``status`` (``completed``, ``failed`` or ``cancelled``); it becomes read-only.

        :raises InvalidArgument: unknown ``status``.
        :raises RunNotFound: no such run.
        :raises RunClosed: the run has already ended.
        """
        with self._commit_lock:
            self._check_can_write()
            key, value = self._registry.prepare_end(self._store, run, status)
            registry = self._registry
            lsn = self._commit_locked([(key, value)], (), lambda: registry.applied_end(run, status, self._version))
        self._wal.wait(lsn)

    # --- history: runs like commits ------------------------------------------------------------

    def history(self, run: str) -> list[Commit]:
        """The commits that wrote to ``run``, oldest first, read from the WAL.

        Each :class:`~engine.replay.Commit` has ``version``, ``ts`` (UTC) and
        ``ops``: the run's writes in it, each ``(primitive, key, kind, value)``
        — e.g. ``Op("kv", "plan", "put", {...})``, ``Op("events", 3, "put", ...)``.
        The first commit is the one that created the run.

        Complexity: one positioned read per commit of the run (the history
        index, SPEC.md "History"), independent of the database's total history.

        :raises RunNotFound: no such run.
        :raises HistoryUnavailable: part of its history was deleted by retention.
        :raises CorruptionError: a history record fails its checksum.
        """
        return _replay.history(self, run)

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
        return _replay.replay(self, run, at_version)

    def run_state(self, run: str) -> RunState:
        """``run``'s current state read from the live store (one consistent snapshot). O(run size).

        :raises RunNotFound: no such run.
        """
        return _replay.live(self, run)

    def diff_runs(self, a: str, b: str, *, at_a: int | None = None, at_b: int | None = None) -> RunDiff:
        """Compare run ``a`` (live, or replayed to ``at_a``) with run ``b`` (live, or at ``at_b``).

        Returns a :class:`~engine.replay.RunDiff`: per primitive the added,
        removed and changed keys with both values, the first event seq where
        the logs diverge, and the states that differ; ``str(diff)`` is a
        git-like summary, ``diff.is_empty()`` says whether anything differs.
        Complexity: O(size of both runs).

        :raises RunNotFound: / :raises HistoryUnavailable: / :raises InvalidArgument: as :meth:`replay_run`.
        """
        return _replay.diff(self, a, b, at_a, at_b)

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
        return _replay.fork(self, run, at_version, name, tags)

    def archive_run(self, run: str) -> None:
        """Mark ``run`` archived: with ``history="active"`` its history is no longer kept.

        Segments that hold only archived runs' records are deleted by the
        next snapshot or :meth:`compact` (oldest first); replay of the run
        then raises ``HistoryUnavailable``. Its current state stays readable
        and, if the run is active, writable. Idempotent; committed (survives
        reopen). ``RunInfo.archived`` reports it.

        :raises RunNotFound: no such run.
        """
        with self._commit_lock:
            self._check_can_write()
            prepared = self._registry.prepare_archive(self._store, run)
            if prepared is None:
                return
            registry = self._registry
            lsn = self._commit_locked([prepared], (), lambda: registry.applied_archive(run))
        self._wal.wait(lsn)

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
        self._check_can_write()
        return self._snapshotter.compact()

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
        with self._commit_lock:
            self._check_open()
            self._reclaim_abandoned()
            begin = self._version
            token = self._versions.register(begin)
        tx = Transaction(self, begin, token, PRIMITIVES)
        # A transaction dropped without commit or rollback must not pin old versions
        # for ever. Its finaliser may run inside any allocation (even under the commit
        # lock), so it only queues the token; the next begin or commit releases it.
        tx._finalizer = weakref.finalize(tx, _abandoned, self._abandoned, token)
        return tx

    def _reclaim_abandoned(self) -> None:
        """Release snapshots of transactions garbage-collected unfinished (commit lock held)."""
        while self._abandoned:
            self._versions.release(self._abandoned.pop())

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
        if type(retries) is not int or retries < 0:
            raise InvalidArgument(f"retries must be an int >= 0; got {retries!r}")
        attempt = 0
        while True:
            tx = self.transaction()
            try:
                result = fn(tx)
                tx.commit()
                return result
            except TransactionConflict:
                if attempt >= retries:
                    raise
            finally:
                if not tx.finished:
                    tx.rollback()
            time.sleep(random.uniform(0, min(0.1, 0.001 * (1 << attempt))))
            attempt += 1

    def _scan_at(self, lo: bytes, hi: bytes | None, snapshot: int, *, entries: bool = False) -> list[Any]:
        with self._commit_lock:
            self._check_open()
            return self._versions.scan_at(lo, hi, snapshot, entries=entries)

    def _last_at(self, lo: bytes, hi: bytes | None, snapshot: int) -> tuple[bytes, tuple[int, bytes]] | None:
        with self._commit_lock:
            self._check_open()
            return self._versions.last_at(lo, hi, snapshot)

    def _atomic(self, fn: Callable[[Any], T]) -> T:
        """Run one multi-step primitive call (read, then write) as one commit, under the commit lock.

        No other commit can happen meanwhile, so what ``fn`` read is still
        true when its writes commit: no validation, no conflict, no retry.
        ``fn`` must be CPU-only (it runs inside the commit lock). If it raises,
        nothing is written.
        """
        with self._commit_lock:
            self._check_can_write()
            ctx = _Locked(self)
            result = fn(ctx)
            lsn = self._commit_locked(list(ctx.writes.items()), ctx.runs, None) if ctx.writes else None
        if lsn is not None:
            self._wal.wait(lsn)
        return result

    def _snapshot_read(self, fn: Callable[[Any], T]) -> T:
        """Run a read-only primitive call on a snapshot: consistent, and never blocks writers."""
        tx = self.transaction()
        try:
            return fn(tx)
        finally:
            tx.rollback()

    def _commit_transaction(self, tx: Transaction) -> None:
        """Validate and commit a transaction's write set as one WAL record (the OCC critical section).

        :raises InvalidArgument: the write set would not fit in one WAL record
            (``MAX_PAYLOAD_BYTES``, 1 GiB); nothing is written.
        """
        writes = list(tx._writes.items())
        size = COMMIT_HEADER.size + sum(5 + len(k) + (0 if v is None else 4 + len(v)) for k, v in writes)
        if size > _format.MAX_PAYLOAD_BYTES:
            raise InvalidArgument(
                f"transaction writes {size:,} bytes; one commit record holds at most "
                f"{_format.MAX_PAYLOAD_BYTES:,}: split it into several transactions"
            )
        with self._commit_lock:
            self._check_can_write()
            try:
                validate(tx, self._versions)
            except TransactionConflict:
                self._conflicts += 1
                raise
            # the snapshot is not needed past validation: releasing it first spares
            # the apply from keeping versions only this transaction could have read
            self._release_locked(tx)
            lsn = self._commit_locked(writes, tx._runs, None)
            tx.commit_version = self._version
        self._wal.wait(lsn)

    def _release_transaction(self, tx: Transaction) -> None:
        if tx._finalizer.alive:
            with self._commit_lock:
                self._release_locked(tx)

    def _release_locked(self, tx: Transaction) -> None:
        if tx._finalizer.detach() is not None:
            self._versions.release(tx._token)
        self._reclaim_abandoned()

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
        :raises DatabasePoisoned: the WAL could not be synced first, or an
            fsync of the snapshot file or of the directory failed, or deleting
            covered WAL segments failed: the database is now poisoned (SPEC.md §5).
        :raises CorruptionError: the written file failed verification (it was removed).
        :raises OSError: the ``.tmp`` file could not be written, e.g. ENOSPC
            (it was removed; the database is unaffected and not poisoned).
        """
        self._check_can_write()
        return self._snapshotter.take()

    # --- durability and figures --------------------------------------------------------------

    def sync(self) -> None:
        """Make every commit so far durable (write + fsync), whatever the durability mode.

        :raises DatabasePoisoned: the write or fsync failed.
        :raises DatabaseClosed: the database is closed.
        """
        if self._closed:
            raise DatabaseClosed(f"database {self._path} is closed")
        self._wal.sync()

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
        wal = self._wal.stats()
        return {
            "path": self._path,
            "format_version": FORMAT_VERSION,
            "commit_version": self._version,
            "commits": self._commits,
            "keys": len(self._store),
            "runs": len(self._registry),
            "runs_by_status": self._registry.count_by_status(),
            "wal_bytes": wal["bytes"],
            "wal_segments": wal["segments"],
            "durability": self._durability,
            "read_only": self._read_only,
            "flush_interval_ms": self._flush_interval_ms,
            "segment_bytes": self._segment_bytes,
            "native": native.ENABLED,
            "poisoned": self._wal.poisoned,
            "conflicts": self._conflicts,
            "active_transactions": self._versions.active,
            "retained_versions": self._versions.retained,
            "snapshots": {
                "taken": self._snapshotter.taken,
                "failures": self._snapshotter.failures,
                "last": None if self._snapshotter.last is None else self._snapshotter.last.as_dict(),
            },
            "history": self._history.stats(),
            "recovery": dict(self._recovery),
        }

    # --- the commit path (private; primitives reach it through their Context) ------------------

    def _check_open(self) -> None:
        if self._closed:
            raise DatabaseClosed(f"database {self._path} is closed")

    def _check_can_write(self) -> None:
        self._check_open()
        if self._read_only:
            raise self._wal.read_only_error()
        if self._wal.poisoned:
            raise self._wal.poison_error()

    def _commit(self, writes: Writes, runs: Iterable[str], after: Callable[[], None] | None = None) -> int:
        """Commit ``writes`` atomically as one WAL record; return the commit version."""
        with self._commit_lock:
            lsn = self._commit_locked(writes, runs, after)
            version = self._version
        self._wal.wait(lsn)
        return version

    def _commit_locked(self, writes: Writes, runs: Iterable[str], after: Callable[[], None] | None) -> int:
        """The critical section of a commit; the caller holds the commit lock. Returns the LSN."""
        if self._closed:
            raise DatabaseClosed(f"database {self._path} is closed")
        registry = self._registry
        for run in runs:  # a run may have ended since the caller's unlocked check
            if run not in self._active_runs:
                registry.check(run, write=True)
        wal = self._wal
        lsn = wal.next_lsn
        version = self._version + 1
        if len(writes) == 1 and writes[0][1] is not None:
            frame = encode_put_frame(lsn, version, time.time_ns() // 1000, *writes[0])  # type: ignore[arg-type]
        else:
            frame = encode_commit_frame(lsn, version, time.time_ns() // 1000, writes)
        wal.append(frame)
        self._history.add(lsn, wal.tail_seq, wal.last_offset, writes)
        if self._versions.active:
            self._versions.apply(version, writes)  # keep what open snapshots still read
        else:
            self._store.apply(version, writes)
        self._version = version
        self._commits += 1
        if after is not None:
            after()
        return lsn

    def _commit_put(self, run: str, key: bytes, value: bytes) -> None:
        """Commit one put: :meth:`_commit` specialised for the autocommit ``kv.put`` hot path."""
        with self._commit_lock:
            if self._closed:
                raise DatabaseClosed(f"database {self._path} is closed")
            if run not in self._active_runs:
                self._registry.check(run, write=True)
            wal = self._wal
            lsn = wal.next_lsn
            version = self._version + 1
            wal.append(encode_put_frame(lsn, version, time.time_ns() // 1000, key, value))
            self._history.add_one(lsn, wal.tail_seq, wal.last_offset, key)
            if self._versions.active:
                self._versions.apply(version, ((key, value),))
            else:
                self._map[key] = (version, value)
            self._version = version
            self._commits += 1
        if self._must_wait:
            wal.wait(lsn)

