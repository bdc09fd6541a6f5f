"""The WAL writer: appends commit frames to segment files and makes them durable.

This module owns the active segment, segment rotation, the three durability
modes, group commit and poisoning. Byte layouts come from
:mod:`inmem.wal.format`; the file system from :mod:`inmem.fs`.

Life of a commit (the caller holds the database's commit lock for steps 1-2)::

    1. frame = encode_commit_frame(wal.next_lsn, ...)
    2. wal.append(frame)          -> frame joins the pending buffer, LSN assigned
    3. wal.wait(lsn)              -> outside the commit lock:
         strict : write + fsync up to lsn (one fsync serves every waiting committer)
         off    : write up to lsn (the OS decides when it reaches the disk)
         batched: return at once; the flusher thread writes + fsyncs every interval

Invariants:

* Frames reach the file in LSN order, each frame wholly inside one segment.
  A frame that would push a segment past ``segment_bytes`` starts a new
  segment (a frame larger than that gets a segment of its own).
* A finished segment is fsynced before its successor is created, so only the
  *last* segment can ever end in a torn frame (recovery relies on this).
* A new segment is written as ``<name>.tmp`` with its header, fsynced, renamed,
  and the directory fsynced: a segment file either has a complete header or
  does not exist.
* Poisoning: the first ``OSError`` from a write or fsync poisons the writer.
  The bytes of the failed write are dropped and never written again; every
  later append raises :class:`~inmem.errors.DatabasePoisoned`. No retry
  (PostgreSQL's 2018 "fsyncgate": after a failed fsync the kernel may have
  discarded the dirty pages, so a retry that succeeds proves nothing).

Group commit (leader/follower, as in most WAL engines): a committer that
needs its LSN written or fsynced either finds it already covered, or becomes
the *leader* if no I/O is in progress, or sleeps on ``_io_cond``. The leader
takes everything pending, writes and fsyncs it outside every lock, then wakes
all sleepers at once; those now covered return, and the first of the rest
leads the next round with everything that arrived meanwhile. So the number of
fsyncs per second stays near the disk's rate while commits per fsync grow
with the number of committers.

Lock order: commit lock -> ``_io_cond`` -> ``_lock``. ``_lock`` guards the
pending buffer and LSN counters and is held only for list/bytearray work;
``_io_cond`` guards ``_io_busy`` (one leader at a time) and the written and
durable LSNs; no lock is held during a write or an fsync.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import DatabaseClosed, DatabasePoisoned
from ..fs import FileSystem, WritableFile, write_atomically
from .format import (
    SEGMENT_HEADER_SIZE,
    decode_segment_header,
    encode_segment_header,
    parse_segment_name,
    segment_name,
)

__all__ = ["DURABILITY_MODES", "ActiveSegment", "WalTail", "WalWriter"]

log = logging.getLogger("inmem")

DURABILITY_MODES = ("strict", "batched", "off")

#: In ``batched`` mode, a pending buffer larger than this wakes the flusher
#: before its interval is up, bounding memory under heavy write load.
BATCH_WAKE_BYTES = 4 * 1024 * 1024  # 4 MiB


@dataclass
class ActiveSegment:
    """The segment recovery hands over for appending: its seq, path, size in bytes and first LSN."""

    seq: int
    path: str
    size: int
    first_lsn: int


@dataclass
class WalTail:
    """Where the WAL continues after recovery: all a writer (or a read-only handle) needs to resume.

    ``next_lsn``: LSN of the next frame; ``active``: the last kept segment, to
    append to (``None``: a new segment ``next_seq`` is created, starting at
    ``next_lsn``); ``closed_bytes`` / ``closed_segments``: size in bytes and
    count of the finished segments before it.
    """

    next_lsn: int
    active: ActiveSegment | None
    next_seq: int
    closed_bytes: int = 0
    closed_segments: int = 0


class WalWriter:
    """Appends frames to the WAL of one database directory.

    :param fs: the file system seam.
    :param dirpath: the database directory.
    :param db_id: 16-byte database id written into every segment header.
    :param durability: ``"strict"``, ``"batched"`` or ``"off"`` (see module doc).
    :param flush_interval_ms: ``batched`` mode flush period, in milliseconds.
    :param segment_bytes: rotate once a segment would exceed this many bytes.
    :param next_lsn: LSN of the next frame (1 for a new database).
    :param active: the last segment, to append to; ``None`` creates a new one.
    :param closed_bytes: total size in bytes of the earlier, finished segments.
    :param closed_segments: how many earlier segments there are.
    :param next_seq: sequence number for the segment to create when ``active`` is ``None``.
    """

    def __init__(
        self,
        fs: FileSystem,
        dirpath: str,
        db_id: bytes,
        *,
        durability: str,
        flush_interval_ms: int,
        segment_bytes: int,
        next_lsn: int,
        active: ActiveSegment | None,
        closed_bytes: int = 0,
        closed_segments: int = 0,
        next_seq: int = 1,
    ):
        self._fs = fs
        self._dir = dirpath
        self._db_id = db_id
        self._mode = durability
        self._interval_s = flush_interval_ms / 1000.0
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._io_cond = threading.Condition(threading.Lock())
        self._io_busy = False  # a leader is writing/fsyncing
        self._sync_wanted = 0  # highest LSN a waiting thread needs fsynced: the next leader fsyncs too
        self._wake = threading.Condition(threading.Lock())
        self._poisoned: BaseException | None = None
        self._poison_reported = False  # a caller has been raised DatabasePoisoned (see poison_error)
        self._closed = False

        #: LSN the next appended frame must carry. Read and advanced under the commit lock.
        self.next_lsn = next_lsn  # next_lsn - 1: the last LSN in the pending buffer or beyond
        self._written_lsn = next_lsn - 1  # last LSN handed to the OS
        self._durable_lsn = next_lsn - 1  # last LSN fsynced

        # pending frames not yet written, and the offsets in it where a new segment starts
        self._pending = bytearray()
        self._marks: list[tuple[int, int, int]] = []  # (offset in _pending, new seq, its first lsn)

        if active is None:
            seq = next_seq
            self._file = self._create_segment(seq, next_lsn)
            self._seq = seq
        else:
            self._file = fs.open_append(active.path)
            self._seq = active.seq
        # the segment the *next appended* frame lands in, counting pending bytes
        self._tail_seq = self._seq
        self._tail_size = self._file.size()
        #: Where the last appended frame went: segment seq and byte offset in it
        #: (read under the commit lock right after :meth:`append`; the history index).
        self.tail_seq = self._seq
        self.last_offset = 0
        self._tail_frames = 1 if self._tail_size > SEGMENT_HEADER_SIZE else 0
        # logical WAL size and segment count, pending frames included (what stats() reports);
        # kept at append time, so no reading of file sizes races an in-flight write
        # (stats()' "bytes" is _wal_base_bytes + appended_bytes: one counter less on every append)
        self._wal_base_bytes = closed_bytes + self._tail_size
        self._wal_segments = closed_segments + 1
        #: Bytes of frames appended by this writer, ever (monotonic: drives automatic snapshots).
        self.appended_bytes = 0
        self._watermark: int | None = None
        self._on_watermark: Callable[[], None] | None = None

        self._flusher: threading.Thread | None = None
        if durability == "batched":
            self._flusher = threading.Thread(target=self._flush_loop, name="inmem-wal-flusher", daemon=True)
            self._flusher.start()

    @classmethod
    def resume(cls, fs: FileSystem, dirpath: str, db_id: bytes, tail: WalTail, *, durability: str,
               flush_interval_ms: int, segment_bytes: int) -> WalWriter:
        """A writer continuing the WAL where recovery left it (``tail``); parameters as the constructor's.

        :raises OSError: the active segment could not be opened, or a new one created.
        """
        return cls(fs, dirpath, db_id, durability=durability, flush_interval_ms=flush_interval_ms,
                   segment_bytes=segment_bytes, next_lsn=tail.next_lsn, active=tail.active,
                   closed_bytes=tail.closed_bytes, closed_segments=tail.closed_segments, next_seq=tail.next_seq)

    # --- the commit path ---------------------------------------------------------

    def append(self, frame: bytes) -> int:
        """Add one frame, built with LSN ``self.next_lsn``, to the pending buffer; return its LSN.

        The caller holds the commit lock, so frames arrive in LSN order.
        Nothing is written here: see :meth:`wait`.

        :raises DatabasePoisoned: an earlier write or fsync failed.
        :raises DatabaseClosed: the writer was closed.
        """
        if self._poisoned is not None:
            raise self.poison_error()
        if self._closed:
            raise DatabaseClosed("database is closed")
        n = len(frame)
        with self._lock:
            lsn = self.next_lsn
            size = self._tail_size
            if self._tail_frames and size + n > self._segment_bytes:
                self._tail_seq += 1
                self._marks.append((len(self._pending), self._tail_seq, lsn))
                size = SEGMENT_HEADER_SIZE
                self._tail_frames = 0
                self._wal_base_bytes += SEGMENT_HEADER_SIZE
                self._wal_segments += 1
                self.tail_seq = self._tail_seq
            self.last_offset = size
            self._pending += frame
            self._tail_size = size + n
            self._tail_frames += 1
            self.appended_bytes += n
            self.next_lsn = lsn + 1  # last: frames up to next_lsn - 1 are in _pending (or beyond)
            wake = self._flusher is not None and len(self._pending) > BATCH_WAKE_BYTES
        if wake:
            with self._wake:
                self._wake.notify()
        if self._watermark is not None and self.appended_bytes >= self._watermark:
            self._watermark = None
            self._on_watermark()  # type: ignore[misc]
        return lsn

    def set_watermark(self, appended_bytes: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once, from a committing thread, lock-free) when ``appended_bytes`` is reached."""
        self._on_watermark = callback
        self._watermark = appended_bytes

    def wait(self, lsn: int) -> None:
        """Block until frame ``lsn`` is as durable as the durability mode promises.

        ``strict``: written and fsynced (group commit). ``off``: written to the
        OS. ``batched``: returns at once.

        :raises DatabasePoisoned: the write or fsync failed (this commit's fate
            on disk is unknown), or an earlier one had.
        """
        mode = self._mode
        if mode == "strict":
            if self._durable_lsn < lsn:
                self._flush(lsn, sync=True)
        elif mode == "off":
            if self._written_lsn < lsn:
                self._flush(lsn, sync=False)

    def write_through(self, lsn: int) -> None:
        """Hand frames up to ``lsn`` to the OS (no fsync), so that reading the segment file sees them.

        :raises DatabasePoisoned: the write failed, or an earlier one had.
        """
        if self._written_lsn < lsn:
            self._flush(lsn, sync=False)

    @property
    def active_seq(self) -> int:
        """Sequence number of the segment being written."""
        return self._seq

    def sync(self) -> None:
        """Write and fsync everything appended so far, in any mode.

        :raises DatabasePoisoned: the write or fsync failed, or an earlier one had.
        """
        self._flush(self.next_lsn - 1, sync=True)

    # --- I/O -----------------------------------------------------------------------

    def _flush(self, upto: int, *, sync: bool) -> None:
        """Make LSNs up to ``upto`` written (and fsynced if ``sync``): lead the I/O or wait for the leader."""
        cond = self._io_cond
        with cond:
            while True:
                if self._poisoned is not None:
                    raise self.poison_error()
                if (self._durable_lsn if sync else self._written_lsn) >= upto:
                    return  # a leader's write/fsync already covered us: group commit
                if not self._io_busy:
                    break
                if sync and upto > self._sync_wanted:
                    # in `off` mode writers lead without fsyncing; without this a waiting
                    # sync (db.sync(), a snapshot) could wait as long as they keep writing
                    self._sync_wanted = upto
                cond.wait()
            self._io_busy = True
            need_fsync = sync or self._sync_wanted > self._durable_lsn
        failure: OSError | None = None
        done = False
        last = 0
        try:
            with self._lock:
                data, marks, last = self._pending, self._marks, self.next_lsn - 1
                self._pending = bytearray()
                self._marks = []
            if data:
                self._write(data, marks)
            if need_fsync and self._durable_lsn < last:
                self._file.sync()
            done = True
        except OSError as exc:
            failure = exc
        finally:
            with cond:
                self._io_busy = False
                if failure is not None:
                    self._poisoned = failure
                elif done:
                    self._written_lsn = last
                    if need_fsync:
                        self._durable_lsn = last
                cond.notify_all()
        if failure is not None:
            log.error("inmem: WAL write or fsync failed; database poisoned, writes refused: %s", failure)
            raise self.poison_error() from failure

    def _write(self, data: bytearray, marks: list[tuple[int, int, int]]) -> None:
        view = memoryview(data)
        start = 0
        for offset, seq, first_lsn in marks:
            if offset > start:
                self._file.write(view[start:offset])
            self._rotate(seq, first_lsn)
            start = offset
        if start < len(data):
            self._file.write(view[start:])

    def _rotate(self, seq: int, first_lsn: int) -> None:
        """Finish the active segment (fsync, close) and make segment ``seq`` active."""
        old = self._file
        old.sync()
        self._file = self._create_segment(seq, first_lsn)
        self._seq = seq
        old.close()

    def _create_segment(self, seq: int, first_lsn: int) -> WritableFile:
        """Create segment ``seq`` holding only its header (tmp, fsync, rename, directory fsync); open it."""
        header = encode_segment_header(self._db_id, seq, first_lsn)
        name = segment_name(seq)
        write_atomically(self._fs, self._dir, name, lambda f: f.write(header))
        return self._fs.open_append(os.path.join(self._dir, name))

    def _flush_loop(self) -> None:
        """Batched mode: write + fsync whatever is pending, once per interval."""
        while True:
            with self._wake:
                if not self._closed:
                    self._wake.wait(self._interval_s)
                closing = self._closed
            if self._poisoned is None and self.next_lsn - 1 > self._durable_lsn:
                try:
                    self._flush(self.next_lsn - 1, sync=True)
                except DatabasePoisoned:
                    pass  # logged in _flush; the next commit raises
            if closing:
                return

    def poison(self, exc: BaseException, *, quiet: bool = False) -> None:
        """Refuse every later append and flush: an fsync elsewhere in the database directory failed.

        For failures outside the WAL (a snapshot file's fsync, the directory
        fsync after a rename or a deletion): after a failed fsync the kernel
        may have dropped dirty pages, so no later commit may be acknowledged
        (SPEC.md §5, "Poisoning"). As for a WAL failure, frames still pending
        are discarded; threads waiting for their fsync raise
        :class:`~inmem.errors.DatabasePoisoned`. The first cause is kept;
        idempotent. Also for a commit that failed after its record was
        appended (:class:`~inmem.kernel.Kernel` logs that itself: ``quiet``).
        """
        with self._io_cond:
            first = self._poisoned is None
            if first:
                self._poisoned = exc
            self._io_cond.notify_all()
        if first and not quiet:
            log.error("inmem: an fsync in the database directory failed; database poisoned, writes refused: %s",
                      exc)

    def poison_error(self) -> DatabasePoisoned:
        """The error to raise for the poisoning; raised in a caller's thread (not one of inmem's
        background ``inmem-*`` threads), it counts as reported: :meth:`close` then does not raise it again."""
        if not threading.current_thread().name.startswith("inmem-"):
            self._poison_reported = True
        return DatabasePoisoned(
            f"an earlier write, fsync or commit in the database failed ({type(self._poisoned).__name__}: "
            f"{self._poisoned}); "
            "writes are refused. "
            "Close the database and reopen it: recovery keeps what is really on disk."
        )

    # --- deleting covered segments --------------------------------------------------------------

    def drop_segments_before(self, lsn: int, keep: Callable[[int, int, int], bool] | None = None) -> list[str]:
        """Delete finished segments whose every frame has an LSN ``< lsn``; return their names.

        Segments go in ascending order, so what remains is always a contiguous
        suffix of the log; the active segment is never deleted. ``keep(seq,
        first_lsn, last_lsn)`` may veto a deletion (the hook for history
        retention); deletion stops at the first vetoed segment. The directory
        is fsynced after the deletions.
        """
        with self._lock:
            active = self._seq
        names = sorted(
            (seq, name) for name in self._fs.listdir(self._dir)
            if (seq := parse_segment_name(name)) is not None and seq <= active
        )
        firsts = []
        for seq, name in names:
            header = decode_segment_header(self._fs.read_range(os.path.join(self._dir, name), 0, SEGMENT_HEADER_SIZE))
            firsts.append(header.first_lsn)
        dropped: list[str] = []
        freed = 0
        for i in range(len(names) - 1):  # the last listed is the active segment (or newer)
            seq, name = names[i]
            last_lsn = firsts[i + 1] - 1
            if last_lsn >= lsn or (keep is not None and keep(seq, firsts[i], last_lsn)):
                break
            path = os.path.join(self._dir, name)
            freed += self._fs.file_size(path)
            self._fs.remove(path)
            dropped.append(name)
        if dropped:
            self._fs.sync_dir(self._dir)
            with self._lock:
                self._wal_base_bytes -= freed
                self._wal_segments -= len(dropped)
        return dropped

    # --- lifecycle and figures ---------------------------------------------------------

    @property
    def poisoned(self) -> bool:
        return self._poisoned is not None

    @property
    def durable_lsn(self) -> int:
        """Last LSN known fsynced."""
        return self._durable_lsn

    def stats(self) -> dict[str, int]:
        """WAL figures: ``bytes`` and ``segments`` (pending frames included), LSNs."""
        with self._lock:
            return {
                "bytes": self._wal_base_bytes + self.appended_bytes,
                "segments": self._wal_segments,
                "next_lsn": self.next_lsn,
                "durable_lsn": self._durable_lsn,
            }

    def close(self) -> None:
        """Write and fsync everything pending (unless poisoned), stop the flusher, close the file.

        Idempotent. On a poisoned writer the pending bytes are discarded.

        :raises DatabasePoisoned: the writer is poisoned and no caller has been told yet (this call's
            final write or fsync failed, or a background one did: the ``batched`` flusher's, a
            background snapshot's); not again once a call raised it.
        """
        if self._closed:
            return
        reported_before = self._poison_reported
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._flusher is not None:
            self._flusher.join()  # batched: the flusher's last round writes what is pending
        try:
            if self._poisoned is None:
                self.sync()
            elif not reported_before:
                # a background write or fsync failed (the flusher's final round, or an earlier one
                # nobody has heard of yet): acknowledged batched commits are not on disk, and the
                # caller must hear it (found by crashsim: seed 41 kind eio; seed 5 kind enospc, where
                # the flusher failed between the last commit and close)
                raise self.poison_error() from self._poisoned
        finally:
            with self._io_cond:
                while self._io_busy:
                    self._io_cond.wait()
                self._file.close()
