"""Taking snapshots: capture a consistent view, write it off the commit path, then truncate the WAL.

This module owns *when* and *how* a snapshot is taken and what it lets go of;
the byte format is :mod:`engine.snapshot`'s. Sequence of one snapshot (one at
a time, under ``_lock``)::

    1. under the commit lock: V = last commit version, L = next LSN; register an MVCC snapshot at V
    2. capture, 4,096 keys per step, each step under the commit lock (writers wait one step at most;
       versions overwritten meanwhile come from the MVCC chains); release the MVCC snapshot
    3. fsync the WAL up to V            -> the log never has a gap behind a snapshot
    4. write snapshot-<V>.snap.tmp, fsync, rename, fsync the directory       (no lock held)
    5. re-read the file and verify the digest, header and every chunk checksum (no decoding:
       building a million-entry dict just to drop it would stall every thread on GC)
    6. keep the two newest snapshots; delete older ones
    7. delete WAL segments wholly covered by the *older* of the two kept snapshots,
       unless history retention keeps them (:mod:`engine.history`); save the history sidecars

``compact()`` goes further on request: it deletes every segment the *newest*
snapshot covers that history retention lets go, and the older snapshots that
no longer have the WAL behind them.

Invariant: at every instant — including a crash between any two steps — the
directory holds the newest valid snapshot's state plus every WAL record after
the *older* kept snapshot, so a damaged newest snapshot can always be replaced
by the older one plus the WAL (SPEC.md, "Snapshots").
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import CorruptionError
from .kernel import Kernel
from .snapshot import (
    CHUNK_ENTRIES,
    Progress,
    SnapshotError,
    parse_snapshot_name,
    read_snapshot_header,
    verify_snapshot,
    write_snapshot,
)
from .wal.format import SEGMENT_HEADER_SIZE, decode_segment_header, parse_segment_name, segment_name
from .wal.writer import WalWriter

__all__ = ["SnapshotInfo", "Snapshotter"]

log = logging.getLogger("inmem")

#: Snapshots kept on disk; WAL is deleted only below the oldest of them.
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
    """What decides which covered WAL segments survive (``engine.history.HistoryIndex``)."""

    def prune(self, wal: WalWriter, below_lsn: int) -> list[str]:
        """Delete segments wholly below ``below_lsn`` that history does not keep; return their names."""

    def persist(self, durable_lsn: int) -> int:
        """Save what must survive reopen (history sidecars) for frames up to ``durable_lsn``."""

    @property
    def floor(self) -> int:
        """First LSN still in the WAL."""


class Snapshotter:
    """Takes snapshots of one database, on demand and in a background thread.

    :param every_bytes: take one automatically after this many bytes of WAL
        appended since the last (``None``: never by size).
    :param every_s: and/or after this many seconds (``None``: never by time).
    :param progress: ``progress("snapshot", keys written, keys total)``.
    """

    def __init__(
        self,
        kernel: Kernel,
        *,
        every_bytes: int | None,
        every_s: float | None,
        progress: Progress | None = None,
        retention: Retention | None = None,
    ):
        self._kernel = kernel
        self._every_bytes = every_bytes
        self._every_s = every_s
        self._progress = progress
        #: History retention: which covered WAL segments survive truncation (None: none do).
        self.retention = retention
        self._lock = threading.Lock()  # one snapshot at a time
        self._wake = threading.Condition(threading.Lock())
        self._due = False
        self._closing = False
        self.last: SnapshotInfo | None = None
        self.taken = 0
        self.failures = 0
        self._thread: threading.Thread | None = None
        if every_bytes is not None or every_s is not None:
            self._arm()
            self._thread = threading.Thread(target=self._loop, name="inmem-snapshotter", daemon=True)
            self._thread.start()

    # --- one snapshot ----------------------------------------------------------------------

    def take(self) -> SnapshotInfo:
        """Take a snapshot now (waiting for one in progress to finish first).

        :raises DatabasePoisoned: the WAL could not be synced first.
        :raises CorruptionError: the written file failed verification (it is removed).
        :raises OSError: the file could not be written.
        """
        with self._lock:
            info = self._take()
            self.last = info
            self.taken += 1
            self._arm()
            return info

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
        kernel.wal.sync()  # every record up to `version` is in the WAL on disk before the snapshot exists
        fs, dirpath, db_id = kernel.fs, kernel.path, kernel.identity.db_id
        path, size = write_snapshot(fs, dirpath, db_id, version, next_lsn, keys, vers, values, self._progress)
        try:
            verify_snapshot(fs, path, db_id)
        except SnapshotError as exc:
            fs.remove(path)
            fs.sync_dir(dirpath)
            raise CorruptionError(f"snapshot failed verification after writing: {exc.reason}", path=path,
                                  offset=exc.offset) from None
        deleted = self._prune()
        return SnapshotInfo(
            path=path, commit_version=version, keys=len(keys), bytes=size,
            seconds=round(time.perf_counter() - t0, 6), pause_ms=round(pause * 1000, 3),
            capture_seconds=round(capture, 6), wal_segments_deleted=tuple(deleted),
        )

    def _prune(self) -> list[str]:
        """Keep the newest KEEP_SNAPSHOTS snapshots; delete the WAL the oldest kept one covers."""
        kernel = self._kernel
        fs, dirpath = kernel.fs, kernel.path
        snaps = self._snapshots()
        for _, name in snaps[KEEP_SNAPSHOTS:]:
            fs.remove(os.path.join(dirpath, name))
        if len(snaps) > KEEP_SNAPSHOTS:
            fs.sync_dir(dirpath)
        if len(snaps) < KEEP_SNAPSHOTS:  # one snapshot: the WAL stays until a second one can stand in for it
            if self.retention is not None:
                self.retention.persist(kernel.wal.durable_lsn)
            return []
        oldest_kept = read_snapshot_header(fs, os.path.join(dirpath, snaps[KEEP_SNAPSHOTS - 1][1]))
        return self._drop_wal(oldest_kept.next_lsn)

    def _drop_wal(self, below_lsn: int) -> list[str]:
        wal = self._kernel.wal
        if self.retention is None:
            return wal.drop_segments_before(below_lsn)
        dropped = self.retention.prune(wal, below_lsn)
        self.retention.persist(wal.durable_lsn)
        return dropped

    def compact(self) -> dict[str, Any]:
        """Delete every WAL segment and snapshot that neither recovery nor history retention needs.

        Takes a snapshot first unless the newest one already holds the last
        commit; then deletes the WAL segments wholly below that snapshot which
        retention lets go, and every older snapshot whose WAL tail is thereby
        gone (it could no longer stand in for the newest). Afterwards recovery
        needs the newest snapshot, which was verified after it was written.

        :returns: ``{"snapshot": SnapshotInfo.as_dict() | None (none taken), "segments_deleted": [names],
            "snapshots_deleted": [names], "bytes_freed": int, "history_floor": int}``.
        """
        kernel = self._kernel
        fs, dirpath = kernel.fs, kernel.path
        with self._lock:
            snaps = self._snapshots()
            info = None
            before = kernel.wal.stats()["bytes"]
            if not snaps or snaps[0][0] < kernel.version:
                info = self._take()
                self.last = info
                self.taken += 1
                self._arm()
                snaps = self._snapshots()
            newest = read_snapshot_header(fs, os.path.join(dirpath, snaps[0][1]))
            dropped = ([] if info is None else list(info.wal_segments_deleted)) + self._drop_wal(newest.next_lsn)
            floor = self.retention.floor if self.retention is not None else newest.next_lsn
            first_wal = self._first_wal_lsn()
            removed = []
            for _v, name in snaps[1:]:
                header = read_snapshot_header(fs, os.path.join(dirpath, name))
                if first_wal is None or header.next_lsn < first_wal:
                    fs.remove(os.path.join(dirpath, name))
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
            except Exception as exc:  # noqa: BLE001 - a background failure must not kill the thread
                self.failures += 1
                log.error("inmem: automatic snapshot failed: %s", exc)
                if self._kernel.closed or self._kernel.poisoned:
                    return

    def close(self) -> None:
        """Stop the background thread (a snapshot in progress finishes first)."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
