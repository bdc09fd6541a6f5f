"""WAL byte formats: segment header, frame, and commit record. Reader and writer share these.

This module owns every constant and byte layout of the write-ahead log; SPEC.md
("WAL") documents the same layout as tables, and ``tests/test_wal_format.py``
pins a worked example byte for byte. The framing follows LevelDB's log format
(``doc/log_format.md``) with two changes: a frame is never split across blocks
or segments (a record is one frame), and the header carries its own checksum,
so a length is never used before the checksum covering it has passed.

Segment file ``wal-<seq:016x>.log``::

    segment header (48 bytes) | frame | frame | ...

Frame::

    header (24 bytes)                                  | payload (length bytes)
    hcrc u32 | length u32 | lsn u64 | pcrc u32 | type u8 | 3 zero bytes

``hcrc`` = masked CRC-32C of header bytes 4..24; ``pcrc`` = masked CRC-32C of
the payload. All integers little-endian.

Commit record payload (type 1): ``version u64 | ts_us i64 | count u32`` then
``count`` ops, each ``op u8 | klen u32 | key`` plus ``vlen u32 | value`` for a put.

The optional C hot path (:mod:`inmem.wal.fast`) replaces ``check_frame``,
``find_valid_frame``, ``scan_frames``, ``encode_put_frame`` and
``encode_commit_frame`` with native versions giving the same answers and
bytes; the pure-Python ones stay here as ``_py_*``.

Invariant: an LSN numbers frames 1, 2, 3 ... with no gaps across all segments
of a database; a segment header names the LSN of its first frame.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from ..checksum import crc32c, mask, masked_crc32c

__all__ = [
    "COMMIT_HEADER",
    "FORMAT_VERSION",
    "FRAME_HEADER_SIZE",
    "MAX_PAYLOAD_BYTES",
    "OP_DELETE",
    "OP_PUT",
    "RECORD_COMMIT",
    "SEGMENT_HEADER_SIZE",
    "SEGMENT_MAGIC",
    "FrameError",
    "SegmentHeader",
    "check_frame",
    "check_segment_identity",
    "commit_record_size",
    "decode_commit",
    "decode_segment_header",
    "encode_commit_frame",
    "encode_frame",
    "encode_put_frame",
    "encode_segment_header",
    "find_valid_frame",
    "FRAME_LENGTH_LSN",
    "frame_error",
    "parse_segment_name",
    "scan_frames",
    "segment_name",
]

#: On-disk format version written into every segment header (and IDENTITY,
#: snapshots). A reader opens files with a version <= its own and refuses
#: newer ones; see SPEC.md "Format versions".
FORMAT_VERSION = 1

# --- segment header ----------------------------------------------------------
SEGMENT_MAGIC = b"INMEMWAL"
# magic 8s | format version u32 | database id 16s | segment seq u64 | first lsn u64 | crc u32
_SEG = struct.Struct("<8sI16sQQ")
SEGMENT_HEADER_SIZE = _SEG.size + 4  # 48
_U32 = struct.Struct("<I")

# --- frame -------------------------------------------------------------------
# hcrc u32 | length u32 | lsn u64 | pcrc u32 | type u8 | reserved 3 bytes
_FRAME_BODY = struct.Struct("<IQIB3x")  # the 20 header bytes covered by hcrc
FRAME_HEADER_SIZE = 4 + _FRAME_BODY.size  # 24
_LSN_OFFSET = 8  # byte offset of the lsn field inside a frame header
#: A frame header's length and LSN fields, read together at offset 4 (after ``hcrc``).
FRAME_LENGTH_LSN = struct.Struct("<IQ")

RECORD_COMMIT = 1  # one committed transaction
_RECORD_TYPES = frozenset({RECORD_COMMIT})

#: Largest payload a frame may carry. Far below the u32 limit, so that a
#: plausible length is itself a (weak) sanity check.
MAX_PAYLOAD_BYTES = 1 << 30  # 1 GiB

# --- commit record ---------------------------------------------------------------
COMMIT_HEADER = struct.Struct("<QqI")  # version u64 | ts_us i64 | op count u32
OP_PUT = 1
OP_DELETE = 2
_OP_HEAD = struct.Struct("<BI")  # op | klen  (then key, then vlen u32, value, for a put)
_PUT1_HEAD = struct.Struct("<QqIBI")  # a one-put commit: version | ts_us | count=1 | op=put | klen


class FrameError(Exception):
    """Internal: a frame or header failed a check. Recovery turns it into CorruptionError."""

    def __init__(self, reason: str, offset: int):
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


class SegmentHeader(NamedTuple):
    format_version: int
    db_id: bytes
    seq: int
    first_lsn: int


def segment_name(seq: int) -> str:
    """File name of segment ``seq`` (1-based): ``wal-<seq as 16 hex digits>.log``."""
    return f"wal-{seq:016x}.log"


def parse_segment_name(name: str) -> int | None:
    """Return the sequence number in a segment file name, or ``None`` if it is not one."""
    if len(name) == 24 and name.startswith("wal-") and name.endswith(".log"):
        try:
            return int(name[4:20], 16)
        except ValueError:
            return None
    return None


def encode_segment_header(db_id: bytes, seq: int, first_lsn: int) -> bytes:
    """Return the 48-byte header of a new segment."""
    body = _SEG.pack(SEGMENT_MAGIC, FORMAT_VERSION, db_id, seq, first_lsn)
    return body + _U32.pack(mask(crc32c(body)))


def decode_segment_header(buf: bytes) -> SegmentHeader:
    """Parse and check a segment header.

    :raises FrameError: too short, wrong magic, bad checksum, or a format
        version newer than this build reads (``reason`` says which).
    """
    if len(buf) < SEGMENT_HEADER_SIZE:
        raise FrameError(f"segment header truncated ({len(buf)} of {SEGMENT_HEADER_SIZE} bytes)", 0)
    magic, version, db_id, seq, first_lsn = _SEG.unpack_from(buf, 0)
    if magic != SEGMENT_MAGIC:
        raise FrameError(f"not an inmem WAL segment (magic {magic!r})", 0)
    (stored,) = _U32.unpack_from(buf, _SEG.size)
    if stored != mask(crc32c(buf[: _SEG.size])):
        raise FrameError("segment header checksum mismatch", 0)
    if version > FORMAT_VERSION:
        raise FrameError(
            f"segment has format version {version}; this build reads up to {FORMAT_VERSION} "
            "(open it with a newer inmem)",
            8,
        )
    return SegmentHeader(version, db_id, seq, first_lsn)


def check_segment_identity(header: SegmentHeader, db_id: bytes, seq: int) -> None:
    """Check that a segment belongs to database ``db_id`` and that its header names sequence ``seq``.

    :raises FrameError: a foreign segment (offset 12, the database id) or a
        header whose sequence number is not its file name's (offset 28).
    """
    if header.db_id != db_id:
        raise FrameError("foreign WAL segment: it belongs to another database", 12)
    if header.seq != seq:
        raise FrameError(f"WAL segment header says sequence {header.seq}, file name says {seq}", 28)


def encode_frame(lsn: int, rtype: int, payload: bytes) -> bytes:
    """Return one frame: 24-byte header then ``payload``."""
    body = _FRAME_BODY.pack(len(payload), lsn, mask(crc32c(payload)), rtype)
    return _U32.pack(mask(crc32c(body))) + body + payload


def commit_record_size(writes: Sequence[tuple[bytes, bytes | None]]) -> int:
    """Payload bytes of the commit record holding ``writes`` (§4.3): header, then per op
    1 + 4 + key (+ 4 + value for a put). Compare with :data:`MAX_PAYLOAD_BYTES`. O(len(writes))."""
    return COMMIT_HEADER.size + sum(_OP_HEAD.size + len(k) + (0 if v is None else 4 + len(v)) for k, v in writes)


def encode_commit_frame(
    lsn: int, version: int, ts_us: int, writes: list[tuple[bytes, bytes | None]]
) -> bytes:
    """Return the frame of one commit record holding ``writes`` (``value None`` = delete).

    Complexity: O(total bytes of keys and values).
    """
    parts = [COMMIT_HEADER.pack(version, ts_us, len(writes))]
    append = parts.append
    for key, value in writes:
        if value is None:
            append(_OP_HEAD.pack(OP_DELETE, len(key)))
            append(key)
        else:
            append(_OP_HEAD.pack(OP_PUT, len(key)))
            append(key)
            append(_U32.pack(len(value)))
            append(value)
    payload = b"".join(parts)
    body = _FRAME_BODY.pack(len(payload), lsn, mask(crc32c(payload)), RECORD_COMMIT)
    return _U32.pack(mask(crc32c(body))) + body + payload


def encode_put_frame(lsn: int, version: int, ts_us: int, key: bytes, value: bytes) -> bytes:
    """Return the frame of a commit holding one put: the autocommit ``kv.put`` fast path.

    Byte-identical to ``encode_commit_frame(lsn, version, ts_us, [(key, value)])``.
    """
    payload = b"".join((_PUT1_HEAD.pack(version, ts_us, 1, OP_PUT, len(key)), key, _U32.pack(len(value)), value))
    body = _FRAME_BODY.pack(len(payload), lsn, masked_crc32c(payload), RECORD_COMMIT)
    return _U32.pack(masked_crc32c(body)) + body + payload


def check_frame(buf: bytes, pos: int) -> tuple[int, int, int, int]:
    """Check the frame starting at ``buf[pos]``; return ``(lsn, type, payload_start, end)``.

    The length field is used only after the header checksum has passed, so a
    flipped bit in a length is reported as a bad header, never followed.

    :raises FrameError: header truncated, header checksum mismatch, unknown
        record type or implausible length, payload truncated, or payload
        checksum mismatch. ``offset`` is ``pos``.
    """
    end_of_buf = len(buf)
    hstart = pos + 4
    pstart = pos + FRAME_HEADER_SIZE
    if pstart > end_of_buf:
        raise FrameError(f"frame header truncated ({end_of_buf - pos} of {FRAME_HEADER_SIZE} bytes)", pos)
    (hcrc,) = _U32.unpack_from(buf, pos)
    if hcrc != mask(crc32c(buf[hstart:pstart])):
        raise FrameError("frame header checksum mismatch", pos)
    length, lsn, pcrc, rtype = _FRAME_BODY.unpack_from(buf, hstart)
    if rtype not in _RECORD_TYPES or length > MAX_PAYLOAD_BYTES or buf[pos + 21 : pstart] != b"\0\0\0":
        raise FrameError(f"frame header invalid (type {rtype}, length {length})", pos)
    end = pstart + length
    if end > end_of_buf:
        raise FrameError(f"frame payload truncated ({end_of_buf - pstart} of {length} bytes)", pos)
    if pcrc != mask(crc32c(buf[pstart:end])):
        raise FrameError("frame payload checksum mismatch", pos)
    return lsn, rtype, pstart, end


def frame_error(buf: bytes, pos: int, code: int) -> FrameError:
    """The :class:`FrameError` :func:`check_frame` raises at ``pos`` for failure ``code``.

    Codes (the C hot path's, ``native/inmem_native.c``): 1 header truncated,
    2 header checksum mismatch, 3 header invalid, 4 payload truncated,
    5 payload checksum mismatch. Same ``reason``, same ``offset``.
    """
    if code == 1:
        return FrameError(f"frame header truncated ({len(buf) - pos} of {FRAME_HEADER_SIZE} bytes)", pos)
    if code == 2:
        return FrameError("frame header checksum mismatch", pos)
    length, _, _, rtype = _FRAME_BODY.unpack_from(buf, pos + 4)
    if code == 3:
        return FrameError(f"frame header invalid (type {rtype}, length {length})", pos)
    if code == 4:
        return FrameError(f"frame payload truncated ({len(buf) - pos - FRAME_HEADER_SIZE} of {length} bytes)", pos)
    return FrameError("frame payload checksum mismatch", pos)


def decode_commit(buf: bytes, start: int, end: int) -> tuple[int, int, list[tuple[bytes, bytes | None]]]:
    """Decode the commit payload ``buf[start:end]``; return ``(version, ts_us, writes)``.

    :raises FrameError: the payload is malformed (which, behind a passing
        checksum, means a bug or a format mismatch: it is corruption).
    """
    try:
        version, ts_us, count = COMMIT_HEADER.unpack_from(buf, start)
        pos = start + COMMIT_HEADER.size
        writes: list[tuple[bytes, bytes | None]] = []
        append = writes.append
        unpack_op = _OP_HEAD.unpack_from
        unpack_u32 = _U32.unpack_from
        for _ in range(count):
            op, klen = unpack_op(buf, pos)
            pos += 5
            key = buf[pos : pos + klen]
            pos += klen
            if op == OP_PUT:
                (vlen,) = unpack_u32(buf, pos)
                pos += 4
                append((key, buf[pos : pos + vlen]))
                pos += vlen
            elif op == OP_DELETE:
                append((key, None))
            else:
                raise FrameError(f"unknown op {op} in commit record", start)
        if pos != end:
            raise FrameError(f"commit record length mismatch ({pos - start} of {end - start} bytes)", start)
    except struct.error as exc:
        raise FrameError(f"commit record malformed: {exc}", start) from None
    return version, ts_us, writes


_ZERO_HEADER = bytes(FRAME_HEADER_SIZE)
_ZERO_CHUNK = bytes(64 * 1024)


def _zero_run_end(buf: bytes, pos: int) -> int:
    """Offset of the first non-zero byte at or after ``pos`` (``len(buf)`` if none).

    Compares 64 KiB chunks at C speed, so a long zero run costs O(run / 64 KiB)
    Python steps and never copies the rest of the buffer.
    """
    n = len(buf)
    step = len(_ZERO_CHUNK)
    while pos + step <= n and buf[pos : pos + step] == _ZERO_CHUNK:
        pos += step
    chunk = buf[pos : pos + step]
    return pos + len(chunk) - len(chunk.lstrip(b"\0"))


def find_valid_frame(buf: bytes, start: int, min_lsn: int) -> int:
    """Return the offset of the first fully valid frame at or after ``start``, or -1.

    Used by recovery to "look ahead" past a bad frame: a bad frame is a torn
    tail only if no valid frame follows it. Only frames whose LSN could follow
    (``min_lsn <= lsn <= min_lsn + remaining // 24``) are sought. Rather than
    checksumming at every byte offset, candidates are the places where the
    LSN field's upper 48 bits match one of the few possible values (found with
    ``bytes.find`` at C speed), then each candidate is fully checked. Runs of
    zero bytes are skipped whole.

    Complexity: O(remaining bytes) in C plus O(candidates) in Python.
    """
    n = len(buf)
    if n - start < FRAME_HEADER_SIZE:
        return -1
    max_lsn = min_lsn + (n - start) // FRAME_HEADER_SIZE
    # A frame's type byte (offset 20) is never zero, so no frame starts more than
    # 20 bytes before the end of a zero run: skip a zero-filled tail at once.
    start = max(start, _zero_run_end(buf, start) - 20)
    best = -1
    for high in range(min_lsn >> 16, (max_lsn >> 16) + 1):
        pattern = high.to_bytes(6, "little")
        i = buf.find(pattern, start + _LSN_OFFSET + 2)
        while i != -1:
            pos = i - _LSN_OFFSET - 2
            if best != -1 and pos >= best:
                break
            if high == 0 and buf[pos : pos + FRAME_HEADER_SIZE] == _ZERO_HEADER:
                # a zero-filled region (e.g. a file extended but never written) holds no
                # frame (an all-zero header fails its checksum): skip to its end, no copy
                nonzero = _zero_run_end(buf, pos)
                if nonzero == n:
                    break
                i = buf.find(pattern, max(nonzero - _LSN_OFFSET - 2 - FRAME_HEADER_SIZE, i + 1))
                continue
            try:
                lsn, _, _, _ = check_frame(buf, pos)
            except FrameError:
                pass
            else:
                if min_lsn <= lsn <= max_lsn:
                    best = pos
                    break
            i = buf.find(pattern, i + 1)
    return best


# --- the pure-Python references ---------------------------------------------------------
# inmem.wal.fast (imported with the package inmem.wal) replaces check_frame,
# find_valid_frame and scan_frames with the optional C hot path when it is built; these
# names keep the pure-Python versions, for the fallbacks and the differential tests.


def scan_frames(buf: bytes, pos: int) -> tuple[list[int], int, FrameError | None]:
    """Check consecutive frames from ``buf[pos]``; return ``(starts, stop, error)``.

    ``starts`` are the offsets of the valid frames in order; ``stop`` is where
    scanning stopped (the end of the last valid frame, or ``pos`` if there is
    none); ``error`` is the :class:`FrameError` of the frame at ``stop``, or
    ``None`` if the scan reached the end of ``buf``. LSN order is not checked
    here: that is the caller's.
    """
    positions: list[int] = []
    n = len(buf)
    try:
        while pos < n:
            _, _, _, end = _py_check_frame(buf, pos)
            positions.append(pos)
            pos = end
    except FrameError as exc:
        return positions, pos, exc
    return positions, pos, None


_py_check_frame = check_frame
_py_find_valid_frame = find_valid_frame
_py_scan_frames = scan_frames
_py_encode_put_frame = encode_put_frame
_py_encode_commit_frame = encode_commit_frame
