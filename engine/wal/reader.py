"""The WAL reader: checks one segment's bytes and yields its commit records in LSN order.

This module owns the rule "never trust a length before its checksum has
passed" on the read side; :func:`inmem.wal.format.check_frame` applies it to
one frame, :class:`SegmentScan` to a whole segment. It decides nothing about
torn tails or corruption: it reports *where* the valid prefix ends and why,
and :mod:`inmem.recovery` decides what that means.
"""

from __future__ import annotations

from array import array
from collections import defaultdict
from collections.abc import Iterator
from functools import partial
from typing import Any

from . import fast as _fast
from . import format as _format
from .format import (
    FRAME_HEADER_SIZE,
    FRAME_LENGTH_LSN,
    SEGMENT_HEADER_SIZE,
    FrameError,
    SegmentHeader,
    decode_commit,
    decode_segment_header,
)

__all__ = ["SegmentScan"]

Record = tuple[int, int, int, list[tuple[bytes, bytes | None]]]  # lsn, version, ts_us, writes
_U64_MAX = (1 << 64) - 1


class SegmentScan:
    """Scan of one segment file's bytes.

    Iterate :meth:`records` to completion; afterwards ``end`` is the offset
    where the valid prefix ends, ``error`` the :class:`FrameError` that stopped
    the scan (``None`` if it reached the end of the file cleanly), and
    ``next_lsn`` the LSN the next frame should carry.

    :param buf: the whole segment file.
    :param header: its parsed header; ``header.first_lsn`` is the LSN the first
        frame must carry, and LSNs must then rise by one per frame.
    :param last_version: the commit version of the record before this
        segment; every record's version must be greater than its predecessor's.
    :param skip_below: frames with a smaller LSN (covered by a snapshot) are
        checked — checksums and LSN order — but not decoded or yielded.
    """

    def __init__(self, buf: bytes, header: SegmentHeader, last_version: int, skip_below: int = 0):
        self.buf = buf
        self.header = header
        self.last_version = last_version
        self.skip_below = skip_below
        self.skipped = 0
        self.end = SEGMENT_HEADER_SIZE
        self.error: FrameError | None = None
        self.next_lsn = header.first_lsn
        self.count = 0
        #: Offsets of the frames checked so far (the first ``skipped + count`` are the valid prefix).
        self.starts: list[int] = []

    @staticmethod
    def header_of(buf: bytes) -> SegmentHeader:
        """Parse the segment header. :raises FrameError: as :func:`decode_segment_header`."""
        return decode_segment_header(buf)

    def replay(self, state: dict[bytes, tuple[int, bytes]], want: int,
               head: tuple[int, int] = (0, 0), cold: Any = None) -> dict[bytes, array]:
        """Apply every valid frame's writes to ``state``, in LSN order, stopping at the first bad frame.

        A put sets ``state[key] = (version, value)``, a delete removes ``key``
        (if present), through the dict part of ``state`` alone (``dict.__setitem__``
        and ``dict.pop`` even on a dict subclass, as the native path does).
        Afterwards the scan's fields are as after :meth:`records` (``starts`` is
        an ``array('I')``).

        With ``cold`` (the cold table of the SortedMap ``state``:
        :meth:`inmem.sortedmap.SortedMap.open_cold`) a put goes into the table
        and a delete removes the key from both parts, and a key the WAL writes
        leaves the dict part (a snapshot's copy): the dict part then holds
        only keys no replayed record touched.

        Returns the records grouped by key head: for ``head = (at, width)``,
        each distinct ``key[at:at + width]`` of the keys written by records
        with LSN >= ``want`` maps to those records' LSNs, ascending, once per
        record (``array('Q')``); the history index asks for the run id, bytes
        1..16. No list or int object is kept per record.

        With the native path built, the valid prefix is checked, decoded,
        applied and grouped in C (``native/inmem_replay.c``), which stops
        *before* the first frame failing any check; :meth:`records` then
        continues from there, so the same :class:`FrameError` (reason, offset)
        is recorded as on the pure path, and the state and groups are the same.

        Complexity: O(segment bytes) checksums + O(records) dict updates (C or Python).
        """
        at, width = head
        groups: defaultdict[bytes, array] = defaultdict(partial(array, "Q"))
        pos = SEGMENT_HEADER_SIZE
        native = _fast.replay
        if native is not None and type(self.buf) is bytes:
            collect = want <= _U64_MAX
            stop, nxt, last, skipped, count, offsets, packed = native(
                self.buf, pos, self.next_lsn, min(self.skip_below, _U64_MAX), self.last_version,
                want if collect else _U64_MAX, collect, state, at, width, cold)
            starts = array("I")
            starts.frombytes(offsets)
            self.starts = starts
            self.skipped += skipped
            self.count += count
            self.last_version = last
            self.next_lsn = nxt
            self.end = stop
            for key_head, lsns in packed.items():
                groups[key_head].frombytes(lsns)
            if stop >= len(self.buf):
                return dict(groups)
            pos = stop
        # the dict part alone, as the native path does (a SortedMap's bulk load: inmem.store), or the cold table
        if cold is None:
            pop = dict.pop
            put = dict.__setitem__
        else:
            def pop(_state: object, key: bytes, _default: None) -> None:
                cold.unload(key)

            def put(_state: object, key: bytes, entry: tuple[int, bytes]) -> None:
                cold.load(key, entry[0], entry[1])
        end = at + width
        for lsn, version, _ts, writes in self.records(pos):
            if len(writes) == 1:  # most records: one put
                key, value = writes[0]
                if value is None:
                    pop(state, key, None)
                else:
                    put(state, key, (version, value))
                if lsn >= want:
                    groups[key[at:end]].append(lsn)
                continue
            for key, value in writes:
                if value is None:
                    pop(state, key, None)
                else:
                    put(state, key, (version, value))
            if lsn >= want:
                for key_head in {key[at:end] for key, _ in writes}:
                    groups[key_head].append(lsn)
        return dict(groups)  # a plain dict: a lookup of an absent head must not add it

    def records(self, pos: int = SEGMENT_HEADER_SIZE) -> Iterator[Record]:
        """Yield ``(lsn, version, ts_us, writes)`` for each valid frame, stopping at the first bad one.

        Checksums are checked for the whole segment first (in C when the native
        path is built: :func:`inmem.wal.format.scan_frames`), then LSN and
        version order and the payloads, frame by frame. ``pos`` > the header
        size continues a scan whose frames before ``pos`` were already taken
        (:meth:`replay`): their offsets stay in ``starts``.
        """
        buf = self.buf
        starts, stop, error = _format.scan_frames(buf, pos)
        if pos == SEGMENT_HEADER_SIZE:
            self.starts = starts
        else:
            self.starts.extend(starts)
        expected = self.next_lsn
        unpack = FRAME_LENGTH_LSN.unpack_from
        try:
            for pos in starts:
                length, lsn = unpack(buf, pos + 4)
                if lsn != expected:
                    raise FrameError(f"frame has LSN {lsn}, expected {expected} (out of sequence)", pos)
                pstart = pos + FRAME_HEADER_SIZE
                end = pstart + length
                if lsn < self.skip_below:
                    expected += 1
                    self.end = end
                    self.next_lsn = expected
                    self.skipped += 1
                    continue
                version, ts_us, writes = decode_commit(buf, pstart, end)
                if version <= self.last_version:
                    raise FrameError(
                        f"commit version {version} does not follow {self.last_version} (out of order)", pos
                    )
                self.last_version = version
                yield lsn, version, ts_us, writes
                expected += 1
                self.end = end
                self.next_lsn = expected
                self.count += 1
            self.error = error
        except FrameError as exc:
            self.error = exc
