"""Taking snapshots: capture a consistent view, write it off the commit path, then truncate the WAL.

This module owns *when* and *how* a snapshot is taken and what it lets go of;
the byte format is :mod:`inmem.snapshot`'s. Sequence of one snapshot (one at
a time, under ``_lock``)::

    1. under the commit lock: V = last commit version, L = next LSN; register an MVCC snapshot at V
    2. capture, 4,096 keys per step, each step under the commit lock (writers wait one step at most;
       versions overwritten meanwhile come from the MVCC chains); release the MVCC snapshot
    3. fsync the WAL up to V            -> the log never has a gap behind a snapshot
    4. write snapshot-<V>.snap.tmp, fsync, rename, fsync the directory       (no lock held)
    5. re-read the file and verify the digest, header and every chunk checksum (no decoding:
       building a million-entry dict just to drop it would stall every thread on GC)
    6. keep the two newest *valid* snapshots; delete older ones
    7. delete WAL segments wholly covered by the *older* of the two kept snapshots,
       unless history retention keeps them (:mod:`inmem.history`); save the history sidecars

``compact()`` goes further on request: it deletes every segment the *newest
valid* snapshot covers that history retention lets go, and the older
snapshots that no longer have the WAL behind them.

Which snapshots count. The checkpointer keeps the names of the snapshots it
knows are valid: those it wrote and re-read (step 5) and the one recovery
loaded. Before pruning or compacting, any other snapshot it would rely on is
verified (:func:`~inmem.snapshot.verify_snapshot`); one that fails is set
aside as ``<name>.corrupt-<ms>`` and never counted, so a damaged snapshot can
never be the reason WAL is deleted.

Failures. Any ``OSError`` from a call that changes the directory — a
write, fsync, create, rename or remove of the snapshot file, a directory
fsync, deleting covered WAL segments or old snapshots, saving history
sidecars — poisons the WAL writer
(:meth:`~inmem.wal.writer.WalWriter.poison`): no later commit is
acknowledged (SPEC.md §5, "Poisoning"; the ``.tmp`` of a failed write is
removed, best effort). A failed *read* does not. ``close()`` waits for a snapshot or compaction in
flight (a capture not yet finished stops at its next step with
``DatabaseClosed``) before the database releases its lock.

Invariant: at every instant — including a crash between any two steps — the
directory holds the newest valid snapshot's state plus every WAL record after
the *older* of the two newest valid snapshots, so a damaged newest snapshot
can always be replaced by the older one plus the WAL (SPEC.md, "Snapshots").
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import CorruptionError, DatabaseClosed
from .fs import FileSystem, WritableFile
from .kernel import Kernel
from .snapshot import (
    CHUNK_ENTRIES,
    Progress,
    SnapshotError,
    parse_snapshot_name,
    read_snapshot_header,
    set_aside_snapshot,
    verify_snapshot,
    write_snapshot,
)
from .wal.format import SEGMENT_HEADER_SIZE, decode_segment_header, parse_segment_name, segment_name
from .wal.writer import WalWriter

__all__ = ["SnapshotInfo", "Checkpointer"]

log = logging.getLogger("inmem")

#: Valid snapshots kept on disk; WAL is deleted only below the older of them.
KEEP_SNAPSHOTS = 2

@dataclass(frozen=True)
class SnapshotInfo:
    """What one snapshot wrote.

    ``path``: the file; ``commit_version``: the state it holds; ``keys``:
    entries; ``bytes``: file size; ``seconds``: wall time of the whole
    snapshot; ``pause_ms``: the longest a writer could have waited for it (the
    longest single capture step under the commit lock); ``capture_seconds``:
    all capture steps together; ``wal_segments_deleted``: names.
    """

    path: str
    commit_version: int
    keys: int
    bytes: int
    seconds: float
    pause_ms: float
    capture_seconds: float
    wal_segments_deleted: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "commit_version": self.commit_version, "keys": self.keys,
            "bytes": self.bytes, "seconds": self.seconds, "pause_ms": self.pause_ms,
            "capture_seconds": self.capture_seconds, "wal_segments_deleted": list(self.wal_segments_deleted),
        }


class Retention(Protocol):
    """What decides which covered WAL segments survive (``inmem.history.HistoryIndex``)."""

    def prune(self, wal: WalWriter, below_lsn: int) -> list[str]:
        """Delete segments wholly below ``below_lsn`` that history does not keep; return their names."""

    def persist(self, durable_lsn: int) -> int:
        """Save what must survive reopen (history sidecars) for frames up to ``durable_lsn``."""

    @property
    def floor(self) -> int:
        """First LSN still in the WAL."""


class _SyncGuard:
    """The host's file system, except that a failed write, fsync, create, rename or remove (of a file
    it creates, or of the directory) poisons the WAL writer before the ``OSError`` propagates.
    Reads pass through unguarded: a failed read changes nothing on disk."""

    def __init__(self, fs: FileSystem, poison: Callable[[BaseException], None]):
        self._fs = fs
        self._poison = poison

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fs, name)

    def _guard(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except OSError as exc:
            self._poison(exc)
            raise

    def create(self, path: str) -> WritableFile:
        return _GuardedFile(self._guard(self._fs.create, path), self._poison)

    def rename(self, src: str, dst: str) -> None:
        self._guard(self._fs.rename, src, dst)

    def remove(self, path: str) -> None:
        self._guard(self._fs.remove, path)

    def sync_dir(self, path: str) -> None:
        self._guard(self._fs.sync_dir, path)


class _GuardedFile:
    def __init__(self, inner: WritableFile, poison: Callable[[BaseException], None]):
        self._inner = inner
        self._poison = poison
        self.path = inner.path

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _guard(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except OSError as exc:
            self._poison(exc)
            raise

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._guard(self._inner.write, data)

    def sync(self) -> None:
        self._guard(self._inner.sync)

    def truncate(self, size: int) -> None:
        self._guard(self._inner.truncate, size)


class Checkpointer:
    """Takes snapshots of one database, on demand and in a background thread.

    :param every_bytes: take one automatically after this many bytes of WAL
        appended since the last (``None``: never by size).
    :param every_s: and/or after this many seconds (``None``: never by time).
    :param progress: ``progress("snapshot", keys written, keys total)``; the
        call with ``keys written == keys total`` comes once the snapshot is
        complete (verified, old files pruned, counted in :attr:`taken`).
    """

    def __init__(
        self,
        kernel: Kernel,
        *,
        every_bytes: int | None,
        every_s: float | None,
        progress: Progress | None = None,
        retention: Retention | None = None,
        loaded: dict[str, Any] | None = None,
    ):
        self._kernel = kernel
        self._every_bytes = every_bytes
        self._every_s = every_s
        self._progress = progress
        #: History retention: which covered WAL segments survive truncation (None: none do).
        self.retention = retention
        #: Every file operation of a snapshot goes through this: a failed fsync poisons the WAL writer.
        self._fs = _SyncGuard(kernel.fs, lambda exc: kernel.wal.poison(exc))
        #: Snapshots known valid (name -> next LSN): written and verified here, or loaded by recovery.
        self._known: dict[str, int] = {}
        if loaded and loaded.get("next_lsn") is not None:
            self._known[loaded["file"]] = loaded["next_lsn"]
        #: Damaged snapshots this handle set aside (their new names).
        self.set_aside: list[str] = []
        self._lock = threading.Lock()  # one snapshot or compaction at a time; close() waits for it
        self._wake = threading.Condition(threading.Lock())
        self._due = False
        self._closing = False
        self.last: SnapshotInfo | None = None
        self.taken = 0
        self.failures = 0
        self._thread: threading.Thread | None = None
        if every_bytes is not None or every_s is not None:
            self._arm()
            self._thread = threading.Thread(target=self._loop, name="inmem-checkpointer", daemon=True)
            self._thread.start()

    # --- one snapshot ----------------------------------------------------------------------

    def take(self) -> SnapshotInfo:
        """Take a snapshot now (waiting for one in progress to finish first).

        :raises DatabaseClosed: the database is closing (nothing written).
        :raises DatabasePoisoned: the WAL could not be synced first, or an
            fsync of the snapshot or of the directory failed (the database is
            now poisoned).
        :raises CorruptionError: the written file failed verification (it is removed).
        :raises DatabasePoisoned: also when the file could not be created, written or renamed
            (ENOSPC, EIO; the ``.tmp`` is removed, best effort), or history sidecars not saved.
        :raises OSError: a read failed (not poisoned).
        """
        with self._lock:
            self._check_open()
            with self._failures():
                info = self._take()
            self._done(info)
            return info

    def _check_open(self) -> None:
        if self._closing:
            raise DatabaseClosed(f"database {self._kernel.path} is closed")

    @contextmanager
    def _failures(self) -> Iterator[None]:
        """Public calls raise errors of :mod:`inmem.errors` (or a plain ``OSError`` that did not poison)."""
        try:
            yield
        except SnapshotError as exc:  # belt and braces: every check on a file we rely on is caught below
            raise CorruptionError(f"snapshot check failed: {exc.reason}", offset=exc.offset) from None
        except OSError as exc:
            wal = self._kernel.wal
            if wal.poisoned:
                raise wal.poison_error() from exc
            raise

    def _done(self, info: SnapshotInfo) -> None:
        self.last = info
        self.taken += 1
        self._arm()
        if self._progress is not None:
            self._progress("snapshot", info.keys, info.keys)

    def _take(self) -> SnapshotInfo:
        kernel = self._kernel
        t0 = time.perf_counter()
        point, next_lsn = kernel.open_capture()
        version = point.version
        keys: list[bytes] = []
        vers: list[int] = []
        values: list[bytes] = []
        pause = 0.0
        capture = 0.0
        try:
            lo: bytes | None = b""
            while lo is not None:
                self._check_open()  # close() waits for us: stop at the next step instead
                t = time.perf_counter()
                k, v, val, lo = kernel.capture(lo, version, CHUNK_ENTRIES)  # one step under the commit lock
                step = time.perf_counter() - t
                pause = max(pause, step)
                capture += step
                keys += k
                vers += v
                values += val
        finally:
            kernel.close_read_point(point)
        self._check_open()
        kernel.wal.sync()  # every record up to `version` is in the WAL on disk before the snapshot exists
        fs, dirpath = self._fs, kernel.path
        path, size = write_snapshot(fs, dirpath, kernel.identity.db_id, version, next_lsn, keys, vers, values,
                                    self._progress)
        name = os.path.basename(path)
        self._known.pop(name, None)  # rewritten in place: what was known of the old file no longer holds
        try:
            verify_snapshot(fs, path, kernel.identity.db_id)
        except SnapshotError as exc:
            fs.remove(path)
            fs.sync_dir(dirpath)
            raise CorruptionError(f"snapshot failed verification after writing: {exc.reason}", path=path,
                                  offset=exc.offset) from None
        self._known[name] = next_lsn
        deleted = self._prune()
        return SnapshotInfo(
            path=path, commit_version=version, keys=len(keys), bytes=size,
            seconds=round(time.perf_counter() - t0, 6), pause_ms=round(pause * 1000, 3),
            capture_seconds=round(capture, 6), wal_segments_deleted=tuple(deleted),
        )

    def _valid_snapshots(self, want: int | None) -> tuple[list[tuple[int, str, int]], list[str]]:
        """The ``want`` newest valid snapshots (all if None) as ``(version, name, next LSN)``, newest first,
        and the names of the snapshots older than the last of them (not examined).

        A snapshot not known valid is verified now (O(its size), no decoding);
        one that fails is set aside (``<name>.corrupt-<ms>``) and skipped.
        """
        on_disk = self._snapshots()
        present = {n for _, n in on_disk}
        for name in [n for n in self._known if n not in present]:
            del self._known[name]
        dirpath = self._kernel.path
        valid: list[tuple[int, str, int]] = []
        for i, (version, name) in enumerate(on_disk):
            if want is not None and len(valid) >= want:
                return valid, [n for _, n in on_disk[i:]]
            next_lsn = self._known.get(name)
            if next_lsn is None:
                try:
                    next_lsn = verify_snapshot(self._fs, os.path.join(dirpath, name),
                                               self._kernel.identity.db_id).next_lsn
                except SnapshotError as exc:
                    self._set_aside(name, exc)
                    continue
                self._known[name] = next_lsn
            valid.append((version, name, next_lsn))
        return valid, []

    def _set_aside(self, name: str, exc: SnapshotError) -> None:
        aside = set_aside_snapshot(self._fs, self._kernel.path, name)
        self._known.pop(name, None)
        self.set_aside.append(aside)
        log.warning("inmem: snapshot %s is damaged (%s at offset %s); set aside as %s, not counted",
                    name, exc.reason, exc.offset, aside)

    def _prune(self) -> list[str]:
        """Keep the newest KEEP_SNAPSHOTS valid snapshots; delete the WAL the older kept one covers."""
        fs, dirpath = self._fs, self._kernel.path
        valid, older = self._valid_snapshots(KEEP_SNAPSHOTS)
        for name in older:
            fs.remove(os.path.join(dirpath, name))
            self._known.pop(name, None)
        if older:
            fs.sync_dir(dirpath)
        if len(valid) < KEEP_SNAPSHOTS:  # one valid snapshot: the WAL stays until a second can stand in for it
            if self.retention is not None:
                self._save_history()
            return []
        return self._drop_wal(valid[-1][2])

    def _poisoning(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn``, which deletes or saves files of the directory and fsyncs it: any OSError poisons."""
        try:
            return fn(*args)
        except OSError as exc:
            self._kernel.wal.poison(exc)
            raise

    def _drop_wal(self, below_lsn: int) -> list[str]:
        wal = self._kernel.wal
        if self.retention is None:
            return self._poisoning(wal.drop_segments_before, below_lsn)
        dropped = self._poisoning(self.retention.prune, wal, below_lsn)
        self._save_history()
        return dropped

    def _save_history(self) -> None:
        """Save the history sidecars. They are a cache (never fsynced, rebuilt from the WAL on open if
        missing or damaged), but a failed write in the database directory poisons all the same: after
        EIO the page cache of the directory cannot be trusted, and ENOSPC hits the WAL next."""
        if self.retention is not None:
            self._poisoning(self.retention.persist, self._kernel.wal.durable_lsn)

    def compact(self) -> dict[str, Any]:
        """Delete every WAL segment and snapshot that neither recovery nor history retention needs.

        Takes a snapshot first unless the newest *valid* snapshot already
        holds the last commit (a damaged one is set aside, never trusted);
        then deletes the WAL segments wholly below that snapshot which
        retention lets go, and every older snapshot whose WAL tail is thereby
        gone (it could no longer stand in for the newest). Afterwards recovery
        needs the newest snapshot, which was verified.

        :returns: ``{"snapshot": SnapshotInfo.as_dict() | None (none taken), "segments_deleted": [names],
            "snapshots_deleted": [names], "bytes_freed": int, "history_floor": int}``.
        :raises DatabaseClosed: / :raises DatabasePoisoned: / :raises CorruptionError: /
            :raises OSError: as :meth:`take`; an fsync failing while deleting poisons.
        """
        kernel = self._kernel
        fs, dirpath = self._fs, kernel.path
        with self._lock:
            self._check_open()
            with self._failures():
                before = kernel.wal.stats()["bytes"]
                valid, _ = self._valid_snapshots(1)
                info = None
                if not valid or valid[0][0] < kernel.version:
                    info = self._take()
                    self._done(info)
                    valid, _ = self._valid_snapshots(1)
                newest_version, newest_name, newest_lsn = valid[0]
                dropped = ([] if info is None else list(info.wal_segments_deleted)) + self._drop_wal(newest_lsn)
                floor = self.retention.floor if self.retention is not None else newest_lsn
                first_wal = self._first_wal_lsn()
                removed = []
                for _v, name in self._snapshots():
                    if name == newest_name:
                        continue
                    next_lsn = self._known.get(name)
                    if next_lsn is None:
                        try:
                            next_lsn = read_snapshot_header(fs, os.path.join(dirpath, name)).next_lsn
                        except SnapshotError as exc:
                            self._set_aside(name, exc)
                            continue
                    if first_wal is None or next_lsn < first_wal:
                        fs.remove(os.path.join(dirpath, name))
                        self._known.pop(name, None)
                        removed.append(name)
                if removed:
                    fs.sync_dir(dirpath)
                freed = before - kernel.wal.stats()["bytes"]
            return {"snapshot": None if info is None else info.as_dict(), "segments_deleted": dropped,
                    "snapshots_deleted": removed, "bytes_freed": freed, "history_floor": floor}

    def _snapshots(self) -> list[tuple[int, str]]:
        """``(commit version, file name)`` of the snapshots on disk, newest first."""
        kernel = self._kernel
        return sorted(((v, n) for n in kernel.fs.listdir(kernel.path) if (v := parse_snapshot_name(n)) is not None),
                      reverse=True)

    def _first_wal_lsn(self) -> int | None:
        """First LSN of the oldest WAL segment on disk (None: no segment)."""
        kernel = self._kernel
        seqs = sorted(s for n in kernel.fs.listdir(kernel.path) if (s := parse_segment_name(n)) is not None)
        if not seqs:
            return None
        head = kernel.fs.read_range(os.path.join(kernel.path, segment_name(seqs[0])), 0, SEGMENT_HEADER_SIZE)
        return decode_segment_header(head).first_lsn

    # --- automatic snapshots ---------------------------------------------------------------------

    def _arm(self) -> None:
        if self._every_bytes is not None:
            wal = self._kernel.wal
            wal.set_watermark(wal.appended_bytes + self._every_bytes, self._trigger)

    def _trigger(self) -> None:
        with self._wake:
            self._due = True
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._wake:
                if not self._due and not self._closing:
                    self._wake.wait(self._every_s)  # None: until triggered by size or close
                if self._closing:
                    return
                self._due = False
            try:
                self.take()
            except DatabaseClosed:
                return  # close() began meanwhile: not a failure
            except Exception as exc:  # noqa: BLE001 - a background failure must not kill the thread
                self.failures += 1
                log.error("inmem: automatic snapshot failed: %s", exc)
                if self._kernel.closed or self._kernel.poisoned:
                    return

    def close(self) -> None:
        """Stop: wait for a snapshot or compaction in flight, then for the background thread.

        A snapshot still capturing stops at its next step and raises
        ``DatabaseClosed``; one already writing finishes (and prunes). Later
        calls raise ``DatabaseClosed``. Must return before the database
        releases its lock: a snapshot outliving it would race the next
        handle's recovery (which removes ``*.tmp`` files).
        """
        with self._wake:
            self._closing = True
            self._wake.notify()
        with self._lock:  # whoever holds it (a foreground call or the thread) finishes first
            pass
        if self._thread is not None:
            self._thread.join()
