"""The history index: where each run's commit records are in the WAL, in memory.

The WAL is the history (SPEC.md, "History"). This module owns the index that
makes one run's history readable in O(run size) however long the log is:
building it at open (from sidecars, :mod:`inmem.history.sidecar`; from what
recovery replayed, :mod:`inmem.history.collect`; or by re-reading a
segment), extending it on the commit path, reading records through it, and
deleting the segments retention lets go (:mod:`inmem.history.retention`
decides which).

In memory::

    per segment : first LSN, array of frame offsets (index = LSN - first LSN)
    per run     : array of the LSNs of the commit records that wrote one of its keys (ascending)

A commit record names the runs it touched through its keys (bytes 1..16 of
every key are the run id), so the index is derived from the WAL alone.

On disk, a sidecar ``hist-<seq:016x>.idx`` beside ``wal-<seq:016x>.log``
holds the same two tables for one segment (:mod:`inmem.history.sidecar`):
written after each snapshot and at close, and used only if the segment
file's header still names this database, the sidecar's sequence number and
first LSN; a segment failing that check is not indexed at all.

Invariants:

* For every retained segment, every frame is in the index: recovery's
  replay feeds the frames it decodes (through a
  :class:`~inmem.history.collect.HistoryCollector`, into
  :meth:`HistoryIndex.load`), sidecars or a re-scan supply the rest, and the commit path adds each new frame
  (:meth:`HistoryIndex.add`) under the commit lock, in LSN order.
* Segments are deleted oldest first, so the retained WAL is one contiguous
  LSN range ``[floor, next LSN)``; a run's history is complete exactly when
  the run began at or after ``floor``.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
from array import array
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import CorruptionError, HistoryUnavailable
from ..fs import FileSystem
from ..keys import run_id_of
from ..wal import format as _format
from ..wal.format import (
    FRAME_HEADER_SIZE,
    FRAME_LENGTH_LSN,
    SEGMENT_HEADER_SIZE,
    FrameError,
    check_segment_identity,
    decode_commit,
    decode_segment_header,
    parse_segment_name,
    segment_name,
)
from ..wal.writer import WalWriter
from .collect import HistoryCollector, RetainedSegment, SegmentTail, Writes, touched_runs
from .retention import check_mode, segment_survives
from .sidecar import encode_sidecar, index_name, lsns_of, offsets_of, parse_index_name, read_sidecar, write_sidecar

__all__ = ["HistoryIndex"]

log = logging.getLogger("inmem")


class _Segment:
    __slots__ = ("seq", "first_lsn", "offsets", "saved")

    def __init__(self, seq: int, first_lsn: int):
        self.seq = seq
        self.first_lsn = first_lsn
        self.offsets = array("I")
        self.saved = 0  # frames covered by the sidecar on disk


class _Runs(dict):  # type: ignore[type-arg]
    """run id -> array of LSNs; a missing run gets an empty array (one lookup on the commit path)."""

    __slots__ = ()

    def __missing__(self, rid: bytes) -> array:
        arr = self[rid] = array("Q")
        return arr


class HistoryIndex:
    """Per-run positions of commit records in the WAL, with retention.

    :param fs: the file-system seam.
    :param dirpath: the database directory.
    :param mode: one of :data:`~inmem.history.retention.HISTORY_MODES`.
    :param read_only: never write or remove a file.
    """

    def __init__(self, fs: FileSystem, dirpath: str, mode: str, *, read_only: bool = False):
        check_mode(mode)
        self._fs = fs
        self._dir = dirpath
        self._db_id = b""  # set by load(): recovery reads IDENTITY
        self._sidecars: dict[int, dict[str, Any]] = {}  # seq -> body read ahead for recovery
        self.mode = mode
        #: Never write or remove a file (a read-only handle).
        self.read_only = read_only
        self._segs: list[_Segment] = []
        self._firsts: list[int] = []
        self._runs: dict[bytes, array] = _Runs()
        self._tail: _Segment | None = None
        #: First LSN still in the WAL: history before it is gone.
        self.floor = 1
        #: Run ids (16 bytes) archived: no longer eligible for history under ``mode="active"``.
        self.archived: set[bytes] = set()
        #: Hand to :func:`inmem.recovery.recover` (``visitor=``): collects what the replay decodes,
        #: for :meth:`load_recovered`.
        self.collector = HistoryCollector(self.indexed_until)
        # held while frames are read and while segments are deleted, so a reader never
        # finds a file gone half-way; the commit path never takes it
        self._lock = threading.RLock()

    # --- building ----------------------------------------------------------------

    def indexed_until(self, seq: int, first_lsn: int) -> int:
        """First LSN of segment ``seq`` its sidecar does not cover (``first_lsn``: no usable sidecar).

        Recovery calls this before replaying a segment, so it skips indexing
        what the sidecar holds; :meth:`load` checks the sidecar fully later
        (and re-reads the segment if the check fails).
        """
        body = self._sidecar_body(seq, first_lsn)
        return first_lsn + (body["frames"] if body is not None else 0)

    def _sidecar_body(self, seq: int, first_lsn: int) -> dict[str, Any] | None:
        if seq not in self._sidecars:
            self._sidecars[seq] = read_sidecar(self._fs, self._dir, seq, first_lsn)
        return self._sidecars[seq]

    def load_recovered(self, db_id: bytes, retained: list[RetainedSegment], next_lsn: int) -> None:
        """:meth:`load` from what :attr:`collector` gathered during recovery and the segments it kept."""
        tails, floor = self.collector.tails(retained, next_lsn)
        self.load(db_id, tails, floor, next_lsn)

    def load(self, db_id: bytes, tails: list[SegmentTail], floor: int, next_lsn: int) -> None:
        """Build the index for the retained segments (oldest first) at open.

        Each segment's frames come from its sidecar where one is valid, from
        ``tails`` (what recovery decoded) for the rest, and from a re-scan of
        the segment file for any frame neither covers. A segment that cannot
        be indexed (damaged below the snapshot, where recovery did not need
        it) raises ``floor`` past it: the runs in it lose their history,
        never silently part of it.
        """
        self._db_id = db_id
        self.floor = floor
        for i, tail in enumerate(tails):
            seg = _Segment(tail.seq, tail.first_lsn)
            try:
                self._index_segment(seg, tail)
            except (FrameError, OSError, ValueError) as exc:
                after = tails[i + 1].first_lsn if i + 1 < len(tails) else next_lsn
                log.warning("inmem: history of WAL segment %s cannot be indexed (%s); history before LSN %d is "
                            "unavailable", segment_name(tail.seq), exc, after)
                self._segs.clear()
                self._firsts.clear()
                self._runs.clear()
                self.floor = max(self.floor, after)
                continue
            if self._segs and self._segs[-1].first_lsn + len(self._segs[-1].offsets) != seg.first_lsn:
                # a gap in the LSNs (a segment went missing where a snapshot covers it): what came
                # before it is not a complete history
                self._segs.clear()
                self._firsts.clear()
                self._runs.clear()
                self.floor = max(self.floor, seg.first_lsn)
                seg = _Segment(tail.seq, tail.first_lsn)
                self._index_segment(seg, tail)
            self._segs.append(seg)
            self._firsts.append(seg.first_lsn)
        if self._segs:
            self.floor = max(self.floor, self._segs[0].first_lsn)
        self._tail = self._segs[-1] if self._segs else None
        self._sidecars.clear()
        if self.read_only:
            return
        # drop sidecars of segments that no longer exist
        kept = {s.seq for s in self._segs}
        for name in self._fs.listdir(self._dir):
            seq = parse_index_name(name)
            if seq is not None and seq not in kept:
                self._fs.remove(os.path.join(self._dir, name))

    def _index_segment(self, seg: _Segment, tail: SegmentTail) -> None:
        covered, end = self._read_sidecar(seg, tail.size)
        first = seg.first_lsn
        nxt = first + covered  # first LSN not yet indexed
        if end == tail.size:
            return  # the sidecar covers the whole segment
        if tail.decoded_from is not None and tail.offsets:
            # frames between the sidecar and what recovery decoded must be re-read
            if nxt < tail.decoded_from:
                self._rescan(seg, tail, nxt, tail.decoded_from)
                nxt = tail.decoded_from
            seg.offsets.extend(tail.offsets[nxt - first:])
            runs = self._runs
            for rid, lsns in tail.runs.items():
                new = [lsn for lsn in lsns if lsn >= nxt] if lsns[0] < nxt else lsns
                if new:
                    runs[rid].extend(new)
        else:
            self._rescan(seg, tail, nxt, None)

    def _rescan(self, seg: _Segment, tail: SegmentTail, from_lsn: int, to_lsn: int | None) -> None:
        """Index frames ``[from_lsn, to_lsn)`` of a segment by reading it (checksums checked)."""
        buf = self._fs.read(os.path.join(self._dir, segment_name(seg.seq)))[: tail.size]
        self._check_header(seg, buf[:SEGMENT_HEADER_SIZE])
        start = seg.offsets[-1] if seg.offsets else SEGMENT_HEADER_SIZE
        if seg.offsets:  # skip the last frame the sidecar already has
            _, _, _, start = _format.check_frame(buf, start)
        starts, _stop, _err = _format.scan_frames(buf, start)
        lsn = from_lsn
        runs = self._runs
        unpack = FRAME_LENGTH_LSN.unpack_from
        for pos in starts:  # checksums already checked by scan_frames
            if to_lsn is not None and lsn >= to_lsn:
                break
            length, flsn = unpack(buf, pos + 4)
            if flsn != lsn:
                raise FrameError(f"frame has LSN {flsn}, expected {lsn}", pos)
            pstart = pos + FRAME_HEADER_SIZE
            _, _, writes = decode_commit(buf, pstart, pstart + length)
            seg.offsets.append(pos)
            for rid in touched_runs(writes):
                runs[rid].append(lsn)
            lsn += 1

    def _check_header(self, seg: _Segment, head: bytes) -> None:
        """:raises FrameError: the segment file is not this database's segment ``seg`` (foreign, renamed, stale)."""
        header = decode_segment_header(head)
        check_segment_identity(header, self._db_id, seg.seq)
        if header.first_lsn != seg.first_lsn:
            raise FrameError(f"WAL segment starts at LSN {header.first_lsn}, expected {seg.first_lsn}", 36)

    def _read_sidecar(self, seg: _Segment, size: int) -> tuple[int, int]:
        """Load a valid sidecar of ``seg`` into the index; return (frames covered, end offset) ((0, 0): none)."""
        body = self._sidecar_body(seg.seq, seg.first_lsn)
        if body is None:
            return 0, 0
        path = os.path.join(self._dir, index_name(seg.seq))
        try:
            if body["db"] != self._db_id:
                raise ValueError("belongs to another database")
            frames, end = body["frames"], body["end"]
            offsets = offsets_of(body)
            if len(offsets) != frames or end > size:
                raise ValueError("does not match the segment")
            # the segment it describes must still be this database's (a sidecar proves nothing about a
            # segment file swapped in later)
            self._check_header(seg, self._fs.read_range(os.path.join(self._dir, segment_name(seg.seq)), 0,
                                                        SEGMENT_HEADER_SIZE))
            # the last frame it names must be where it says, with the LSN it says
            last = offsets[-1]
            frame = self._fs.read_range(os.path.join(self._dir, segment_name(seg.seq)), last, end - last)
            lsn, _, _, fend = _format.check_frame(frame, 0)
            if lsn != seg.first_lsn + frames - 1 or fend != end - last:
                raise ValueError("does not match the segment")
        except (ValueError, KeyError, TypeError, FrameError) as exc:
            log.info("inmem: history sidecar %s ignored (%s); re-reading the segment", path, exc)
            return 0, 0
        seg.offsets = offsets
        runs = self._runs
        for rid, raw_lsns in body["runs"].items():
            arr = runs.get(rid)
            if arr is None:
                runs[rid] = lsns_of(raw_lsns)
            else:
                arr.extend(lsns_of(raw_lsns))
        seg.saved = frames
        return frames, end

    # --- the commit path (commit lock held) -----------------------------------------

    def add(self, lsn: int, seq: int, offset: int, writes: Writes) -> None:
        """Index the frame just appended at ``(seq, offset)`` with LSN ``lsn``."""
        seg = self._tail
        if seg is None or seg.seq != seq:
            seg = self._start(seq, lsn)
        seg.offsets.append(offset)
        runs = self._runs
        for rid in (touched_runs(writes) if len(writes) > 1 else (run_id_of(writes[0][0]),)):
            runs[rid].append(lsn)

    def add_one(self, lsn: int, seq: int, offset: int, key: bytes) -> None:
        """:meth:`add` for a one-key commit (the ``kv.put`` fast path)."""
        seg = self._tail
        if seg is None or seg.seq != seq:
            seg = self._start(seq, lsn)
        seg.offsets.append(offset)
        self._runs[run_id_of(key)].append(lsn)

    def _start(self, seq: int, lsn: int) -> _Segment:
        seg = _Segment(seq, lsn)
        self._segs.append(seg)  # before _firsts: a reader bisecting _firsts always finds the segment
        self._firsts.append(lsn)
        self._tail = seg
        return seg

    # --- reading ------------------------------------------------------------------------

    def lsns(self, rid: bytes, upto: int | None = None) -> list[int]:
        """LSNs of the commit records that touched run ``rid`` (retained ones), ascending, ``<= upto``."""
        arr = self._runs.get(rid)
        if arr is None:
            return []
        snap = arr[:]  # atomic copy: commits may append meanwhile
        i = bisect.bisect_left(snap, self.floor)
        j = len(snap) if upto is None else bisect.bisect_right(snap, upto)
        return snap[i:j].tolist()

    def last_lsn(self, rid: bytes, upto: int) -> int:
        """The run's last retained commit LSN ``<= upto`` (0 if none)."""
        arr = self._runs.get(rid)
        if not arr:
            return 0
        j = bisect.bisect_right(arr, upto)
        return arr[j - 1] if j else 0

    def check_complete(self, run: str, first_version: int) -> None:
        """:raises HistoryUnavailable: part of the run's history (it began at ``first_version``) is gone."""
        if self.floor > 1 and first_version < self.floor:
            reason = "it was archived and compacted" if bytes.fromhex(run.replace("-", "")) in self.archived \
                else f"WAL before LSN {self.floor} was deleted (history={self.mode!r})"
            raise HistoryUnavailable(
                f"the history of run {run} is gone: it began at version {first_version} and {reason}",
                run=run,
            )

    def read(self, lsns: list[int], ensure_written: Callable[[int], None]) -> Iterator[tuple[int, int, Writes]]:
        """Yield ``(version, ts_us, writes)`` of the commit record at each LSN, in order.

        Each frame's checksums are checked before it is decoded. Complexity:
        one or two positioned reads per record, independent of the WAL's size.

        :raises HistoryUnavailable: a segment was deleted before it was read.
        :raises CorruptionError: a frame fails its checksum (names the file and offset).
        """
        if not lsns:
            return
        ensure_written(lsns[-1])
        fs = self._fs
        with self._lock:
            if lsns[0] < self.floor:
                raise HistoryUnavailable(f"WAL before LSN {self.floor} was deleted", run=None)
            segs, firsts = self._segs, self._firsts
            seg: _Segment | None = None
            reader = None
            path = ""
            check, decode = _format.check_frame, decode_commit
            try:
                for lsn in lsns:
                    if seg is None or not seg.first_lsn <= lsn < seg.first_lsn + len(seg.offsets):
                        seg = segs[bisect.bisect_right(firsts, lsn) - 1]
                        if reader is not None:
                            reader.close()
                        path = os.path.join(self._dir, segment_name(seg.seq))
                        try:
                            reader = fs.open_read(path)
                        except FileNotFoundError:
                            raise HistoryUnavailable(f"WAL segment {segment_name(seg.seq)} is gone",
                                                     run=None) from None
                    i = lsn - seg.first_lsn
                    offsets = seg.offsets
                    pos = offsets[i]
                    try:
                        if i + 1 < len(offsets):
                            frame = reader.read_at(pos, offsets[i + 1] - pos)
                        else:
                            head = reader.read_at(pos, FRAME_HEADER_SIZE)
                            length = FRAME_LENGTH_LSN.unpack_from(head, 4)[0] if len(head) == FRAME_HEADER_SIZE else 0
                            frame = head + reader.read_at(pos + FRAME_HEADER_SIZE, length)
                        flsn, _, pstart, end = check(frame, 0)
                        if flsn != lsn:
                            raise FrameError(f"frame has LSN {flsn}, expected {lsn}", 0)
                        version, ts_us, writes = decode(frame, pstart, end)
                        if version != lsn:
                            raise FrameError(f"commit version {version} is not its LSN {lsn}", 0)
                    except FrameError as exc:
                        raise CorruptionError(f"history record LSN {lsn} is damaged: {exc.reason}", path=path,
                                              offset=pos + exc.offset) from None
                    yield version, ts_us, writes
            finally:
                if reader is not None:
                    reader.close()

    # --- retention ---------------------------------------------------------------------

    def keep(self, seq: int, first_lsn: int, last_lsn: int) -> bool:
        """Whether segment ``seq`` must outlive the snapshots that cover it (the retention policy,
        :func:`~inmem.history.retention.segment_survives`)."""
        i = bisect.bisect_right(self._firsts, first_lsn) - 1
        indexed = i >= 0 and self._segs[i].seq == seq
        runs = (rid for rid, _, _ in self._runs_in(first_lsn, last_lsn)) if indexed else None
        return segment_survives(self.mode, self.archived, runs)

    def _runs_in(self, first: int, last: int) -> Iterator[tuple[bytes, int, int]]:
        """``(run id, lo, hi)`` for each run with LSNs in ``[first, last]`` (``arr[lo:hi]``). O(runs log n)."""
        for rid, arr in list(self._runs.items()):
            lo = bisect.bisect_left(arr, first)
            if lo < len(arr) and arr[lo] <= last:
                yield rid, lo, bisect.bisect_right(arr, last)

    def prune(self, wal: WalWriter, below_lsn: int) -> list[str]:
        """Delete segments wholly below ``below_lsn`` that :meth:`keep` lets go; return their names."""
        with self._lock:
            dropped = wal.drop_segments_before(below_lsn, self.keep)
            if not dropped:
                return dropped
            seqs = {parse_segment_name(n) for n in dropped}
            gone = [s for s in self._segs if s.seq in seqs]
            n = len(gone)
            del self._segs[:n]
            del self._firsts[:n]
            floor = self._segs[0].first_lsn if self._segs else wal.next_lsn
            self.floor = max(self.floor, floor)
            for arr in list(self._runs.values()):
                del arr[: bisect.bisect_left(arr, self.floor)]
            for seg in gone:
                path = os.path.join(self._dir, index_name(seg.seq))
                if self._fs.exists(path):
                    self._fs.remove(path)
            return dropped

    # --- sidecars ----------------------------------------------------------------------

    def persist(self, durable_lsn: int) -> int:
        """Write the sidecar of each segment with frames ``<= durable_lsn`` not yet saved; return how many.

        Written as ``<name>.tmp`` then renamed; not fsynced (a lost or torn
        sidecar is detected by its checksum and rebuilt from the segment).
        """
        written = 0
        if self.read_only:
            return 0
        with self._lock:
            segs = list(self._segs)
        for seg in segs:
            frames = min(len(seg.offsets), durable_lsn - seg.first_lsn + 1)
            if frames <= seg.saved or frames <= 0:
                continue
            self._write_sidecar(seg, frames)
            seg.saved = frames
            written += 1
        return written

    def _write_sidecar(self, seg: _Segment, frames: int) -> None:
        first, last = seg.first_lsn, seg.first_lsn + frames - 1
        offsets = seg.offsets[:frames]
        runs = {rid: self._runs[rid][lo:hi] for rid, lo, hi in self._runs_in(first, last)}
        # the end of the last frame: the next frame's offset, or read its header
        if frames < len(seg.offsets):
            end = seg.offsets[frames]
        else:
            path = os.path.join(self._dir, segment_name(seg.seq))
            head = self._fs.read_range(path, offsets[-1], FRAME_HEADER_SIZE)
            end = offsets[-1] + FRAME_HEADER_SIZE + int.from_bytes(head[4:8], "little")
        write_sidecar(self._fs, self._dir, seg.seq, encode_sidecar(self._db_id, seg.seq, first, frames, end, offsets,
                                                                    runs))

    # --- figures ------------------------------------------------------------------------

    def stats(self) -> dict[str, int | str]:
        """``mode``, ``floor`` (first retained LSN), ``segments`` indexed, ``runs`` with history, ``entries``."""
        return {"mode": self.mode, "floor": self.floor, "segments": len(self._segs), "runs": len(self._runs),
                "entries": sum(len(a) for a in list(self._runs.values()))}
