"""The storage kernel: the commit path and reads at a version, for one open database directory.

This module owns everything between "these writes, atomically" and the bytes
on disk, and every read of committed state: the commit lock, the commit
version counter, WAL append and the durability wait, the history index
update, applying writes to the store and to the MVCC version chains, the
run-is-open checks, reads and scans at a read point, and the registration of
read points (a transaction's or a snapshot capture's). Everything above it —
transactions, the autocommit contexts, primitives, replay, checkpoints, the
database facade — reaches storage only through :class:`Kernel`'s public
methods; nothing above it sees the sorted map, the WAL or a frame.

The commit path, one function for every write (autocommit put, primitive
call, transaction, fork, begin/end/archive run)::

    with commit lock:                         # serialises commits: version order = LSN order
        [validate(kernel)]                    # a transaction's OCC check; raises, nothing written
        [writes += resolve(latest entry)]     # blind updates (merges) computed now; raise: nothing written
        check not closed; runs still active
        version = last version + 1
        frame = encode_*_frame(lsn, version, now, writes)
        wal.append(frame)                     # may raise DatabasePoisoned / DatabaseReadOnly: nothing applied
        history.add(lsn, segment, offset, writes)
        store / version chains apply(version, writes)    # now visible to readers
        last version = version                # anything raised since the append: the database is poisoned
        watchers / listeners(version, ...)    # derived state, the change feed: append, never block
    wal.wait(lsn)                             # strict: group fsync; off: write; batched: no wait

Invariants: each commit is exactly one WAL record; commit versions rise by
one per commit (an exception between the append and the version bump — no
memory in the store write, a ``KeyboardInterrupt`` — poisons the database, so
no later commit can reuse the version: a second record with it would end the
WAL's valid prefix at recovery); the store never holds a write whose record was not appended;
the commit lock is held only across CPU work (see :mod:`inmem.locks`).
Readers may see a commit before its ``wait`` returns (early lock release, as
in every WAL engine); if that fsync fails the database is poisoned and the
commit raises.

Read points: :meth:`Kernel.open_read_point` registers the last commit version
with the MVCC layer (:mod:`inmem.mvcc`) so that the versions it can read are
kept until :meth:`Kernel.close_read_point`. A read point dropped without
being closed (a transaction garbage-collected unfinished) is queued by
:meth:`Kernel.abandon` — from a finaliser, so without any lock — and released
by the next commit or read point, whichever comes first.

A second implementation of this interface (e.g. over a SERIALIZABLE SQL
database) would keep the same methods; what is specific to this one is named
so in the docstrings (WAL, LSN, segment).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

from .codec import MAX_VALUE_BYTES, now_us
from .errors import DatabaseClosed, DatabasePoisoned, DatabaseReadOnly, InvalidArgument, TransactionConflict
from .fs import FileSystem
from .history import HistoryIndex
from .identity import Identity
from .keys import MAX_KEY_BYTES, TAGGED_PREFIX_LEN
from .locks import CommitLock
from .mvcc import Versions
from .registry import RunRegistry
from .store import Entry, UnifiedStore
from .wal import fast as wal_fast
from .wal import format as wal_format
from .wal.format import commit_record_size, encode_commit_frame, encode_put_frame
from .wal.follow import WalFollower
from .wal.readonly import ReadOnlyWal
from .wal.writer import WalWriter

log = logging.getLogger("inmem")

__all__ = ["Kernel", "Listener", "LockedView", "ReadPoint", "Resolver", "Watcher", "Writes"]

T = TypeVar("T")

#: A commit's writes: ``(store key, encoded value)``; value ``None`` deletes the key.
Writes = Sequence[tuple[bytes, "bytes | None"]]
#: Called under the commit lock with the new commit version, right after the commit is applied.
After = Callable[[int], None]
#: ``resolve(latest entry or None) -> new value or None``: a blind update (merge) of one key,
#: computed under the commit lock from the key's latest committed entry (see :meth:`Kernel.commit`).
Resolver = Callable[["Entry | None"], "bytes | None"]
#: ``watcher(commit version, store key, value or None for a delete)``: see :meth:`Kernel.watch`.
Watcher = Callable[[int, bytes, "bytes | None"], None]
#: ``listener(commit version, ts_us, writes)``: see :meth:`Kernel.listen`.
Listener = Callable[[int, int, Writes], None]
#: Offset of the primitive tag byte in a run-scoped store key.
TAG_OFFSET = TAGGED_PREFIX_LEN - 1


#: Bytes one write can add to a commit record at most: a key (user key plus the 18-byte prefix),
#: a value (``codec.MAX_VALUE_BYTES``) and the op's 9 bytes of lengths.
_MAX_WRITE_BYTES = MAX_VALUE_BYTES + MAX_KEY_BYTES + 18 + 9


def _check_size(writes: Writes) -> None:
    """:raises InvalidArgument: ``writes`` do not fit in one commit record (``MAX_PAYLOAD_BYTES``).

    O(1) when so few writes cannot reach the limit (every key and value is
    bounded), else O(len(writes)).
    """
    limit = wal_format.MAX_PAYLOAD_BYTES  # read at call time: tests lower it
    if len(writes) * _MAX_WRITE_BYTES + 64 <= limit:
        return
    size = commit_record_size(writes)
    if size > limit:
        raise InvalidArgument(f"the commit writes {size:,} bytes; one commit record holds at most "
                              f"{limit:,}: split it into several commits")


class ReadPoint(NamedTuple):
    """A registered read point: reads ``at`` its ``version`` see exactly the commits up to it."""

    version: int
    token: int


class Kernel:
    """The commit path and reads at a version of one open database. Built by ``Database.open``.

    Public attributes (read-only by convention): ``fs`` (the file-system
    seam), ``path`` (the directory), ``identity``, ``registry`` (the run
    table), ``history`` (the per-run WAL history index), ``wal`` (the WAL
    writer, or its read-only stand-in), ``durability``.

    Thread safety: any number of threads; point reads take no lock, scans and
    commits take the commit lock briefly.
    """

    def __init__(
        self,
        *,
        fs: FileSystem,
        path: str,
        identity: Identity,
        store: UnifiedStore,
        registry: RunRegistry,
        history: HistoryIndex,
        wal: WalWriter | ReadOnlyWal,
        version: int,
        durability: str,
        read_only: bool,
    ):
        self.fs = fs
        self.path = path
        self.identity = identity
        self.registry = registry
        self.history = history
        self.wal = wal
        self.durability = durability
        self.read_only = read_only
        #: ``clock() -> int``: now, Unix µs UTC (``Database.open(clock=)``); what time-to-live compares against.
        self.clock: Callable[[], int] = now_us
        self._store = store
        self._versions = Versions(store)
        self._lock = CommitLock()  # never held across I/O: see engine/locks.py
        self._version = version
        self._closed = False
        self._commits = 0
        self._conflicts = 0
        self._abandoned: list[int] = []  # read-point tokens dropped unclosed, released at the next commit
        self._active_runs = registry.active
        self._must_wait = durability != "batched"  # batched: the flusher makes commits durable
        #: primitive tag -> ``watcher(version, key, value)``, called under the commit lock for each
        #: applied write of that tag (derived state, e.g. vector indexes, follows commits through it)
        self._watchers: dict[int, Watcher] = {}
        #: ``listener(version, ts_us, writes)`` for every commit (the change feed): see :meth:`listen`
        self._listeners: tuple[Listener, ...] = ()
        #: the one-put fast path's store write, ``(key, version, value)``: one C call on the native path
        self._put_version = store.put_version
        # the native compact entry maker (entries read as ``(version, value)``; 32 bytes instead of a
        # tuple and an int), or None on the pure path: tuples. For the store's multi-write apply and
        # the MVCC apply (put_version makes the same entries).
        store.make_entry = wal_fast.make_entry
        # The hottest reads are attributes bound to the layer below (one call, not two):
        #: ``get(key)``: the latest committed entry of a key, ``(version, value)`` or None. Lock-free.
        self.get: Callable[[bytes], Entry | None] = store.get
        #: ``read_at(key, version)``: the entry visible at a registered read point, or None. Lock-free.
        self.read_at: Callable[[bytes, int], Entry | None] = self._versions.read_at
        #: ``last_write(key)``: the commit version that last wrote ``key`` (a delete counts), as far as
        #: any open read point can tell. Validation support: call only under the commit lock.
        self.last_write: Callable[[bytes], int] = self._versions.last_write

    # --- facts -------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The last commit version (0: nothing committed yet)."""
        return self._version

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def poisoned(self) -> bool:
        """A write or fsync failed: no later commit is acknowledged (SPEC.md §5)."""
        return self.wal.poisoned

    def stats(self) -> dict[str, int]:
        """``commits`` (by this handle), ``conflicts``, ``keys``, ``active_read_points``, ``retained_versions``."""
        return {"commits": self._commits, "conflicts": self._conflicts, "keys": len(self._store),
                "active_read_points": self._versions.active, "retained_versions": self._versions.retained}

    def check_open(self) -> None:
        """:raises DatabaseClosed: the database is closed."""
        if self._closed:
            raise DatabaseClosed(f"database {self.path} is closed")

    def check_can_write(self) -> None:
        """:raises DatabaseClosed: / :raises DatabaseReadOnly: / :raises DatabasePoisoned: a write would fail."""
        self.check_open()
        wal = self.wal
        if isinstance(wal, ReadOnlyWal):
            raise wal.read_only_error()
        if wal.poisoned:
            raise wal.poison_error()

    def close(self) -> bool:
        """Refuse every later commit and read (``DatabaseClosed``); return False if already closed.

        Does not touch the WAL: the caller closes it after stopping background work.
        """
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            return True

    # --- the commit path ---------------------------------------------------------------------

    def commit(
        self,
        writes: Writes,
        runs: Sequence[str] | set[str] = (),
        after: After | None = None,
        *,
        validate: Callable[[Kernel], None] | None = None,
        release: ReadPoint | None = None,
        merges: Sequence[tuple[bytes, Resolver]] = (),
    ) -> int:
        """Commit ``writes`` atomically as one WAL record and return its commit version.

        :param runs: the runs written to; each must still be active when the
            commit is applied (checked under the commit lock).
        :param after: ``after(version)``, called under the commit lock once
            the commit is applied (e.g. the run table learns of a new run).
        :param validate: ``validate(kernel)``, called under the commit lock
            before anything is written; a transaction's OCC check, which raises
            ``TransactionConflict`` to refuse the commit.
        :param release: a read point to release under the same lock, after
            validation and before the writes are applied (whatever happens).
        :param merges: blind updates, ``(key, resolve)``: after validation,
            under the lock, each key's value becomes ``resolve(its latest
            entry or None)`` (None: delete), written in the same record as
            ``writes`` (a key in both: the merge's value). ``resolve`` must be
            CPU-only and deterministic; if it raises, nothing is written and
            the exception propagates (the read point is released all the same).
            The merge operator of RocksDB, resolved at commit instead of at read.
        Complexity: O(total bytes written) plus O(log n) per key.

        :raises InvalidArgument: the writes do not fit in one commit record
            (``wal.format.MAX_PAYLOAD_BYTES``, 1 GiB); nothing is written.
        :raises TransactionConflict: ``validate`` refused.
        :raises RunClosed: a run in ``runs`` has ended.
        :raises DatabasePoisoned: / :raises DatabaseReadOnly: / :raises DatabaseClosed: the write cannot happen.
        """
        if len(writes) != 1:
            try:
                _check_size(writes)
            except BaseException:
                if release is not None:
                    self.close_read_point(release)
                raise
        with self._lock:
            if validate is not None or release is not None:  # a transaction (autocommits skip this)
                self._validate_locked(validate, release)
            if merges:
                writes = self._resolve_locked(writes, merges)
            lsn = self._append_locked(writes, runs, after)
            version = self._version
        if self._must_wait:
            self.wal.wait(lsn)
        return version

    def commit_one(self, run: str, key: bytes, value: bytes | None) -> int:
        """:meth:`commit` of one write to ``run`` with no validation, merges or ``after``: the
        autocommit ``put`` path (``db.kv.put`` and every one-key primitive write), one call instead of
        two. Same errors as :meth:`commit`; returns the commit version.

        A put to an active run with no open read point, watcher or listener (the common case) runs
        :meth:`_append_locked`'s one-put branch inline; anything else goes through it. Keep the two in
        step (``tests/test_kernel_fast_put.py`` compares them)."""
        with self._lock:
            if (value is None or self._closed or self._abandoned or run not in self._active_runs
                    or self._versions.active or self._watchers or self._listeners):
                lsn = self._append_locked(((key, value),), (run,), None)
                version = self._version
            else:  # _append_locked's one-put branch with nothing else to do, inline (~5 % of a kv.put)
                wal = self.wal
                lsn = wal.next_lsn
                version = self._version + 1
                frame = encode_put_frame(lsn, version, self.clock(), key, value)
                try:
                    wal.append(frame)
                    self.history.add_one(lsn, wal.tail_seq, wal.last_offset, key)
                    self._put_version(key, version, value)
                    self._version = version
                except (DatabasePoisoned, DatabaseClosed, DatabaseReadOnly):
                    raise  # refused by the append before anything was appended
                except BaseException as exc:
                    self._poison_mid_commit(exc, version)
                    raise
                self._commits += 1
        if self._must_wait:
            self.wal.wait(lsn)
        return version

    def _poison_mid_commit(self, exc: BaseException, version: int) -> None:
        """A commit failed after its WAL record was appended (lock held): poison the database.

        The record is whole and follows every earlier one, but the in-memory
        state may hold part of it: no later commit may reuse its version or
        its LSN, nor be acknowledged over a state that differs from the WAL's.
        Everything appended so far is written and fsynced first (the failed
        commit included: its caller gets the exception, an unknown outcome, as
        for a failed fsync), so no acknowledged commit is lost in any
        durability mode; then the WAL refuses every later append. Reopening
        recovers what is on disk (SPEC.md §5, "Poisoning").
        """
        log.error("inmem: commit version %d failed after its WAL record was appended (%s: %s); database "
                  "poisoned, writes refused: reopen it", version, type(exc).__name__, exc)
        try:
            self.wal.sync()
        except Exception:  # noqa: BLE001 - a failed write poisons the WAL itself; the first error is raised
            pass
        self.wal.poison(exc, quiet=True)

    def _validate_locked(self, validate: Callable[[Kernel], None] | None, release: ReadPoint | None) -> None:
        """Run a transaction's OCC check and release its read point (whatever happens); lock held."""
        try:
            if validate is not None:
                self.check_can_write()
                try:
                    validate(self)
                except TransactionConflict:
                    self._conflicts += 1
                    raise
        finally:
            # not needed past validation: releasing it first spares the apply from keeping
            # versions only this read point could have read
            if release is not None:
                self._release_locked(release.token)

    def _resolve_locked(self, writes: Writes, merges: Sequence[tuple[bytes, Resolver]]) -> Writes:
        """``writes`` plus each merge resolved against the latest committed entry; lock held."""
        self.check_can_write()
        get = self._store.get
        resolved = {key: value for key, value in writes}
        for key, resolve in merges:
            resolved[key] = resolve(get(key))
        out = list(resolved.items())
        _check_size(out)
        return out

    def _append_locked(self, writes: Writes, runs: Sequence[str] | set[str], after: After | None) -> int:
        """The critical section of every commit; the commit lock is held. Returns the LSN."""
        if self._closed:
            raise DatabaseClosed(f"database {self.path} is closed")
        if self._abandoned:  # read points dropped unclosed must not pin versions while only autocommits follow
            self._reclaim_abandoned()
        active = self._active_runs
        for run in runs:  # a run may have ended since the caller's unlocked check
            if run not in active:
                self.registry.check(run, write=True)
        wal = self.wal
        lsn = wal.next_lsn
        version = self._version + 1
        ts_us = self.clock()  # the database clock: commit times and times to live agree
        versions = self._versions
        one_put = len(writes) == 1 and writes[0][1] is not None  # the kv.put hot path
        if one_put:
            key, value = writes[0]
            frame = encode_put_frame(lsn, version, ts_us, key, value)  # type: ignore[arg-type]
        else:
            frame = encode_commit_frame(lsn, version, ts_us, writes)
        try:
            wal.append(frame)
            if one_put:
                self.history.add_one(lsn, wal.tail_seq, wal.last_offset, key)
            else:
                self.history.add(lsn, wal.tail_seq, wal.last_offset, writes)
            if versions.active:
                versions.apply(version, writes)  # keep what open read points still read
            elif one_put:
                self._put_version(key, version, value)
            else:
                self._store.apply(version, writes)
            self._version = version
        except (DatabasePoisoned, DatabaseClosed, DatabaseReadOnly):
            raise  # refused by the append before anything was appended
        except BaseException as exc:
            self._poison_mid_commit(exc, version)
            raise
        self._commits += 1
        watchers = self._watchers
        if watchers:
            for key, value in writes:
                watcher = watchers.get(key[TAG_OFFSET]) if len(key) > TAG_OFFSET else None
                if watcher is not None:
                    watcher(version, key, value)
        if self._listeners:
            for listener in self._listeners:
                listener(version, ts_us, writes)
        if after is not None:
            after(version)
        return lsn

    def atomic(self, fn: Callable[[LockedView], T]) -> T:
        """Run ``fn(view)`` under the commit lock and commit what it commits through ``view``.

        For read-then-write steps (a primitive call, ``begin_run``, a fork):
        no other commit happens meanwhile, so what ``fn`` read still holds
        when its writes commit — no validation, no conflict, no retry. ``fn``
        must be CPU-only (it runs inside the commit lock). If it raises,
        nothing is written. The durability wait follows after the lock is released.

        :raises DatabaseClosed: / :raises DatabaseReadOnly: / :raises DatabasePoisoned: before ``fn`` runs.
        """
        with self._lock:
            self.check_can_write()
            view = LockedView(self, self._store)
            result = fn(view)
            lsn = view.lsn
        if lsn:
            self.wal.wait(lsn)
        return result

    # --- run lifecycle: the commits that change the run table -------------------------------------

    def begin_run(self, name: str | None, parent: str | None, tags: Iterable[str], metadata: Any) -> str:
        """Commit a new active run's record; return its id (see ``Database.begin_run`` for the errors)."""
        registry = self.registry
        run, key, record = registry.prepare_begin(name, parent, tags, metadata)

        def begin(view: LockedView) -> None:
            # encoded under the lock: the record carries the version of the commit that creates it
            record["first_version"] = view.version + 1
            view.commit([(key, registry.encode_record(record))], (), lambda v: registry.applied_begin(run, v))

        self.atomic(begin)
        return run

    def end_run(self, run: str, status: str) -> None:
        """Commit ``run``'s end with ``status`` (see ``Database.end_run`` for the errors)."""
        registry = self.registry

        def end(view: LockedView) -> None:
            write = registry.prepare_end(self._store, run, status)
            view.commit([write], (), lambda v: registry.applied_end(run, status, v))

        self.atomic(end)

    def archive_run(self, run: str) -> None:
        """Commit ``run``'s archived flag, unless it is set already (see ``Database.archive_run``)."""
        registry = self.registry

        def archive(view: LockedView) -> None:
            write = registry.prepare_archive(self._store, run)
            if write is not None:
                view.commit([write], (), lambda _v: registry.applied_archive(run))

        self.atomic(archive)

    # --- derived state -------------------------------------------------------------------------

    def watch(self, tag: int, watcher: Watcher) -> int:
        """Call ``watcher(version, key, value)`` for every write of primitive ``tag`` committed from now on.

        It runs under the commit lock, once per write, in commit order, after
        the write is applied: it must be CPU-only and short (append to a queue,
        never block) and must not raise. Returns the last commit version
        before the first call it will get (every earlier commit is unseen).
        One watcher per tag. :raises InvalidArgument: ``tag`` is watched already.
        """
        with self._lock:
            if tag in self._watchers:
                raise InvalidArgument(f"primitive tag {tag} is already watched")
            self._watchers[tag] = watcher
            return self._version

    def listen(self, listener: Listener) -> int:
        """Call ``listener(version, ts_us, writes)`` once per commit from now on, with all its writes.

        Like :meth:`watch` it runs under the commit lock, in commit order,
        after the commit is applied: CPU-only, short, never blocking, never
        raising. Any number of listeners; costs one attribute test per commit
        when there is none. Returns the last commit version before the first
        call it will get. Stop with :meth:`unlisten`.
        """
        with self._lock:
            self._listeners = (*self._listeners, listener)
            return self._version

    def unlisten(self, listener: Listener) -> None:
        """Stop calling ``listener`` (no call starts after this returns). A listener not listening: no-op."""
        with self._lock:
            self._listeners = tuple(f for f in self._listeners if f is not listener)

    def commit_reader(self) -> WalFollower:
        """A reader of commit records by version from the WAL files: ``read(from_version, upto=, limit=)
        -> [(version, ts_us, writes)]`` and ``oldest()`` (see :class:`~inmem.wal.follow.WalFollower`).

        On a writer handle it hands buffered frames to the OS before reading
        (pass ``upto=kernel.version``); on a read-only handle it follows the
        writer's files as they grow. One per consumer thread; ``close()`` it.
        """
        wal = self.wal
        ensure = (lambda _lsn: None) if isinstance(wal, ReadOnlyWal) else wal.write_through
        return WalFollower(self.fs, self.path, self.identity.db_id, ensure)

    # --- reads at the latest version ---------------------------------------------------------

    def scan(self, lo: bytes, hi: bytes | None) -> list[tuple[bytes, bytes]]:
        """``(key, value)`` for ``lo <= key < hi`` (``hi=None``: no bound) at the last commit. O(log n + k)."""
        with self._lock:
            self.check_open()
            return self._store.scan_values(lo, hi)

    def scan_latest(self, lo: bytes, hi: bytes | None) -> tuple[int, list[tuple[bytes, Entry]]]:
        """``(last commit version, [(key, (version, value))])`` for ``[lo, hi)``, read at one instant.

        :raises DatabaseClosed: the database is closed.
        """
        with self._lock:
            self.check_open()
            return self._version, self._store.scan(lo, hi)

    def run_record(self, run: str) -> dict[str, Any]:
        """The decoded run record of ``run`` at the last commit. :raises RunNotFound: no such run."""
        return self.registry.record(self._store, run)

    # --- read points and reads at a version ----------------------------------------------------

    def open_read_point(self) -> ReadPoint:
        """Register the last commit version as a read point (its versions are kept until closed).

        :raises DatabaseClosed: the database is closed.
        """
        with self._lock:
            self.check_open()
            if self._abandoned:
                self._reclaim_abandoned()
            version = self._version
            return ReadPoint(version, self._versions.register(version))

    def close_read_point(self, point: ReadPoint) -> None:
        """Release a read point (once; the caller guarantees it)."""
        with self._lock:
            self._release_locked(point.token)

    def abandon(self, point: ReadPoint) -> None:
        """Queue ``point`` for release by the next commit or read point. Takes no lock (safe in a finaliser)."""
        self._abandoned.append(point.token)

    def _release_locked(self, token: int) -> None:
        self._versions.release(token)
        if self._abandoned:
            self._reclaim_abandoned()

    def _reclaim_abandoned(self) -> None:
        while self._abandoned:
            self._versions.release(self._abandoned.pop())

    def scan_at(self, lo: bytes, hi: bytes | None, version: int, *, entries: bool = False) -> list[Any]:
        """``(key, value)`` — or ``(key, (version, value))`` with ``entries`` — in ``[lo, hi)`` at ``version``.

        :raises DatabaseClosed: the database is closed.
        """
        with self._lock:
            self.check_open()
            return self._versions.scan_at(lo, hi, version, entries=entries)

    def last_at(self, lo: bytes, hi: bytes | None, version: int) -> tuple[bytes, Entry] | None:
        """The greatest ``(key, (version, value))`` in ``[lo, hi)`` at ``version``, or None."""
        with self._lock:
            self.check_open()
            return self._versions.last_at(lo, hi, version)

    def capture(self, lo: bytes, version: int, limit: int) -> tuple[list[bytes], list[int], list[bytes], bytes | None]:
        """Up to ``limit`` entries from ``lo`` on at read point ``version``, under the commit lock for one step.

        Returns ``(keys, versions, values, next lo or None at the end)``; a
        waiting committer goes before the caller's next step. For snapshot
        captures (:mod:`inmem.checkpoint`).
        """
        lock = self._lock
        with lock:
            out = self._versions.capture(lo, version, limit)
        lock.yield_to_waiters()
        return out

    def open_capture(self) -> tuple[ReadPoint, int]:
        """A read point at the last commit and the next LSN, at one instant: where a snapshot file
        taken at that point lets the WAL resume. Close the read point with :meth:`close_read_point`.

        :raises DatabaseClosed: the database is closed.
        """
        with self._lock:
            self.check_open()
            version = self._version
            return ReadPoint(version, self._versions.register(version)), self.wal.next_lsn

    # --- validation support (call only from a ``validate`` callback, under the commit lock) -----------

    def first_write_after(self, lo: bytes, hi: bytes | None, version: int) -> tuple[bytes, int] | None:
        """Some key in ``[lo, hi)`` written after ``version``, with its commit version. O(log n + k)."""
        return self._versions.first_write_after(lo, hi, version)


class LockedView:
    """The latest state, read and written while :meth:`Kernel.atomic` holds the commit lock.

    Reads see every commit so far (and, after :meth:`commit`, this view's own).
    """

    __slots__ = ("_kernel", "_store", "get", "scan", "scan_values", "last", "count", "lsn", "version")

    def __init__(self, kernel: Kernel, store: UnifiedStore):
        self._kernel = kernel
        self._store = store
        # the store's own methods, bound: these run inside the commit lock on every primitive call
        #: ``get(key)``: the latest entry, ``(version, value)`` or None.
        self.get = store.get
        #: ``scan(lo, hi)``: ``[(key, (version, value))]`` in ``[lo, hi)``, in key order.
        self.scan = store.scan
        #: ``scan_values(lo, hi)``: ``[(key, value)]`` in ``[lo, hi)``, in key order.
        self.scan_values = store.scan_values
        #: ``last(lo, hi)``: the greatest ``(key, (version, value))`` in ``[lo, hi)``, or None.
        self.last = store.last
        #: ``count(lo, hi)``: keys in ``[lo, hi)``.
        self.count = store.count
        #: LSN of this view's last commit (0: none yet).
        self.lsn = 0
        #: The last commit version (this view's own commits included).
        self.version = kernel.version

    def run_record(self, run: str) -> dict[str, Any]:
        """The decoded run record. :raises RunNotFound: no such run."""
        return self._kernel.registry.record(self._store, run)

    def commit(self, writes: Writes, runs: Sequence[str] | set[str] = (), after: After | None = None) -> int:
        """Commit ``writes`` as one WAL record now (see :meth:`Kernel.commit`); return the commit version.

        :raises InvalidArgument: the writes do not fit in one commit record.
        """
        if len(writes) != 1:
            _check_size(writes)
        kernel = self._kernel
        self.lsn = kernel._append_locked(writes, runs, after)  # noqa: SLF001 - same module, lock held
        self.version = version = kernel.version
        return version
