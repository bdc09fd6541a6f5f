"""Following the WAL by LSN: read commit records from the segment files as they grow.

This module owns the one reader of the WAL that runs while a writer appends
to it: :class:`WalFollower` reads the commit records ``from_lsn, from_lsn +
1, ...`` out of the segment files (``wal-<seq>.log``, SPEC.md "WAL"), remembers
where it stopped and continues from there, and steps into the next segment
when the writer rotates. The change feed (:mod:`inmem.changefeed`) uses it to
replay history and to fill gaps, and a read-only handle uses it to follow
another process's writer.

Invariants: records come out in LSN order with no gap; a frame that does not
check yet at the end of the newest segment (a write in progress, a torn tail,
zero bytes) is "not yet", never an error and never skipped; a frame that fails
while a later segment already continues the LSN sequence is corruption
(:class:`~inmem.errors.CorruptionError`). LSN == commit version (each commit is
one record), so "from LSN" and "from version" are the same number.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..errors import CorruptionError, HistoryUnavailable
from ..fs import FileSystem, ReadableFile
from .format import (
    FRAME_HEADER_SIZE,
    MAX_PAYLOAD_BYTES,
    SEGMENT_HEADER_SIZE,
    FrameError,
    check_frame,
    decode_commit,
    decode_segment_header,
    parse_segment_name,
    segment_name,
)

__all__ = ["Record", "WalFollower"]

#: ``(version, ts_us, writes)``: one commit record (``writes``: ``[(store key, value or None)]``).
Record = tuple[int, int, list[tuple[bytes, "bytes | None"]]]

_CHUNK = 1 << 20  # bytes read per positioned read


class WalFollower:
    """Reads commit records by LSN from the segment files of one database directory.

    :param fs: the file-system seam. :param dirpath: the database directory.
    :param db_id: the database id segment headers must carry.
    :param ensure_written: ``ensure_written(lsn)`` hands buffered frames up to
        ``lsn`` to the OS before the files are read (the writer's
        ``write_through``; a no-op for a read-only handle).

    Not thread-safe: one follower per consumer.
    """

    def __init__(self, fs: FileSystem, dirpath: str, db_id: bytes,
                 ensure_written: Callable[[int], None] = lambda _lsn: None):
        self._fs = fs
        self._dir = dirpath
        self._db_id = db_id
        self._ensure_written = ensure_written
        self._reader: ReadableFile | None = None
        self._seq = 0
        self._pos = 0  # offset of the next frame in segment _seq
        self._lsn = 0  # LSN of the frame at _pos (0: no position)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._lsn = 0

    # --- locating -----------------------------------------------------------------------

    def _segments(self) -> list[int]:
        return sorted(s for s in (parse_segment_name(n) for n in self._fs.listdir(self._dir)) if s is not None)

    def _first_lsn(self, seq: int) -> int | None:
        """First LSN segment ``seq``'s header names; None: gone, not yet complete, or not this database's."""
        try:
            head = self._fs.read_range(os.path.join(self._dir, segment_name(seq)), 0, SEGMENT_HEADER_SIZE)
        except FileNotFoundError:
            return None
        if len(head) < SEGMENT_HEADER_SIZE:
            return None
        try:
            header = decode_segment_header(head)
        except Exception:  # a header being written, or damage: not a segment to read
            return None
        return header.first_lsn if header.db_id == self._db_id and header.seq == seq else None

    def oldest(self) -> int:
        """The oldest LSN (= commit version) still in the WAL; 0 if there is no segment."""
        for seq in self._segments():
            first = self._first_lsn(seq)
            if first is not None:
                return first
        return 0

    def _open(self, seq: int, pos: int, lsn: int) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        try:
            self._reader = self._fs.open_read(os.path.join(self._dir, segment_name(seq)))
        except FileNotFoundError:
            raise HistoryUnavailable(f"WAL segment {segment_name(seq)} was deleted before it was read; "
                                     f"the oldest version still in the WAL is {self.oldest()}") from None
        self._seq, self._pos, self._lsn = seq, pos, lsn

    def _seek(self, lsn: int) -> None:
        """Position at the segment holding ``lsn`` (frames before it are skipped by :meth:`read`)."""
        best: tuple[int, int] | None = None
        oldest = 0
        for seq in self._segments():
            first = self._first_lsn(seq)
            if first is None:
                continue
            oldest = oldest or first
            if first <= lsn:
                best = (seq, first)
        if best is None:
            raise HistoryUnavailable(f"version {lsn} is no longer in the WAL: the oldest version still there is "
                                     f"{oldest or 'none (no WAL segment)'}")
        self._open(best[0], SEGMENT_HEADER_SIZE, best[1])

    # --- reading ------------------------------------------------------------------------

    def read(self, from_lsn: int, *, upto: int | None = None, limit: int = 1024) -> list[Record]:
        """Up to ``limit`` consecutive commit records from LSN ``from_lsn`` on (and ``<= upto`` if given).

        Fewer (or none) when the WAL does not hold more yet. Sequential calls
        continue where the last one stopped: O(bytes read); a jump back or
        ahead re-locates the segment (one header read per segment) and skips
        the frames before ``from_lsn`` in it.

        :raises HistoryUnavailable: ``from_lsn`` is older than the oldest
            segment left (the message names the oldest version there is).
        :raises CorruptionError: a frame fails its checks and is not the tail.
        """
        if upto is not None:
            if upto < from_lsn:
                return []
            self._ensure_written(upto)
        if self._lsn == 0 or self._lsn > from_lsn:
            self._seek(from_lsn)
        out: list[Record] = []
        while len(out) < limit and (upto is None or self._lsn <= upto):
            reader = self._reader
            assert reader is not None
            buf = reader.read_at(self._pos, _CHUNK)
            p = self._parse(buf, from_lsn, upto, limit, out)
            if p == 0 and len(buf) == _CHUNK:  # one frame longer than a chunk
                need = _frame_length(buf)
                if need > len(buf):
                    buf = reader.read_at(self._pos, need)
                    p = self._parse(buf, from_lsn, upto, limit, out)
            if p:
                self._pos += p
            elif not self._step_segment():
                break  # the tail: nothing more yet
        return out

    def _parse(self, buf: bytes, from_lsn: int, upto: int | None, limit: int, out: list[Record]) -> int:
        """Append the whole frames at the start of ``buf`` to ``out``; return the bytes consumed."""
        p = 0
        n = len(buf)
        while p < n and len(out) < limit and (upto is None or self._lsn <= upto):
            try:
                lsn, _rtype, pstart, end = check_frame(buf, p)
            except FrameError:
                break  # cut by the chunk, the tail, or (if a later segment goes on) a bad frame
            where = os.path.join(self._dir, segment_name(self._seq))
            if lsn != self._lsn:
                raise CorruptionError(f"WAL frame has LSN {lsn}, expected {self._lsn}", path=where,
                                      offset=self._pos + p)
            if lsn >= from_lsn:
                try:
                    out.append(decode_commit(buf, pstart, end))
                except FrameError as exc:
                    raise CorruptionError(f"WAL record LSN {lsn} is damaged: {exc.reason}", path=where,
                                          offset=self._pos + p) from None
            p = end
            self._lsn += 1
        return p

    def _step_segment(self) -> bool:
        """No frame checks at the position: step into the next segment if it continues the LSN
        sequence (True), else this is the tail, "not yet" (False).

        :raises CorruptionError: the next segment exists but begins at another LSN.
        """
        nxt = self._seq + 1
        first = self._first_lsn(nxt)
        if first is None:
            return False
        if first != self._lsn:
            raise CorruptionError(f"WAL segment {segment_name(nxt)} begins at LSN {first}, but segment "
                                  f"{segment_name(self._seq)} holds no valid frame for LSN {self._lsn}",
                                  path=os.path.join(self._dir, segment_name(self._seq)), offset=self._pos)
        self._open(nxt, SEGMENT_HEADER_SIZE, first)
        return True


def _frame_length(buf: bytes) -> int:
    """The full size a frame starting at ``buf[0]`` claims (header + payload); 0 if unknowable."""
    if len(buf) < FRAME_HEADER_SIZE:
        return 0
    length = int.from_bytes(buf[4:8], "little")
    return FRAME_HEADER_SIZE + length if length <= MAX_PAYLOAD_BYTES else 0
