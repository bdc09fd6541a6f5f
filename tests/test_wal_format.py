"""WAL byte format: the worked example of SPEC.md pinned byte for byte, and every check of a frame.

Black-box on the format module: encode, then do byte surgery (flip, truncate,
zero-fill) and assert the exact error and offset.
"""

from __future__ import annotations

import struct
import uuid

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inmem.checksum import crc32c, mask, masked_crc32c, unmask
from inmem.keys import TAG_KV, run_prefix
from inmem.wal.format import (
    FRAME_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    FrameError,
    check_frame,
    decode_commit,
    decode_segment_header,
    encode_commit_frame,
    encode_segment_header,
    find_valid_frame,
    parse_segment_name,
    segment_name,
)

# The worked example of SPEC.md, "Worked example". Changing any byte here is a
# format change: bump FORMAT_VERSION and update SPEC.md with it.
RUN = uuid.UUID("01938a6e-7c00-7000-8000-000000000001").bytes
EXAMPLE_KEY = run_prefix(RUN, TAG_KV) + b"goal"
EXAMPLE_VALUE = cbor2.dumps("plan")
EXAMPLE_TS = 1_763_683_200_000_000  # 2025-11-21T00:00:00Z in microseconds
EXAMPLE_FRAME_HEX = (
    "b26d656a" "38000000" "0100000000000000" "fbfc1ada" "01" "000000"  # header
    "0100000000000000" "00e0a17e0f440600" "01000000"  # version, ts_us, count
    "01" "16000000" "0101938a6e7c007000800000000000000101676f616c"  # put, klen, key
    "05000000" "64706c616e"  # vlen, value: CBOR text "plan"
)
EXAMPLE_SEGMENT_HEADER_HEX = (
    "494e4d454d57414c" "01000000" "000102030405060708090a0b0c0d0e0f"
    "0100000000000000" "0100000000000000" "2cbd12c6"
)


def test_crc32c_known_answer_and_mask_roundtrip():
    # the CRC-32C check value from RFC 3720 / the Castagnoli catalogue
    assert crc32c(b"123456789") == 0xE3069283
    for c in (0, 1, 0xE3069283, 0xFFFFFFFF, 0xA282EAD8):
        assert unmask(mask(c)) == c
    assert masked_crc32c(b"123456789") == mask(0xE3069283)


def test_worked_example_frame_is_pinned():
    frame = encode_commit_frame(1, 1, EXAMPLE_TS, [(EXAMPLE_KEY, EXAMPLE_VALUE)])
    assert frame.hex() == EXAMPLE_FRAME_HEX
    # and the fields read back as SPEC.md says, independently of the decoder
    hcrc, length, lsn, pcrc, rtype = struct.unpack_from("<IIQIB", frame)
    assert (length, lsn, rtype) == (len(frame) - FRAME_HEADER_SIZE, 1, 1)
    assert hcrc == mask(crc32c(frame[4:24]))
    assert pcrc == mask(crc32c(frame[24:]))
    assert frame[21:24] == b"\0\0\0"


def test_worked_example_segment_header_is_pinned():
    header = encode_segment_header(bytes(range(16)), 1, 1)
    assert header.hex() == EXAMPLE_SEGMENT_HEADER_HEX
    assert len(header) == SEGMENT_HEADER_SIZE == 48
    parsed = decode_segment_header(header)
    assert (parsed.format_version, parsed.db_id, parsed.seq, parsed.first_lsn) == (1, bytes(range(16)), 1, 1)


def test_check_frame_accepts_and_decode_commit_roundtrips():
    writes = [(b"\x01" + b"k" * 20, b"v" * 300), (b"\x01gone", None), (b"\x01empty", b"")]
    frame = encode_commit_frame(7, 42, -5, writes)
    lsn, rtype, pstart, end = check_frame(frame, 0)
    assert (lsn, rtype, pstart, end) == (7, 1, FRAME_HEADER_SIZE, len(frame))
    assert decode_commit(frame, pstart, end) == (42, -5, writes)


def test_every_single_bit_flip_in_a_frame_is_detected():
    frame = encode_commit_frame(3, 3, EXAMPLE_TS, [(EXAMPLE_KEY, EXAMPLE_VALUE)])
    for i in range(len(frame)):
        for bit in range(8):
            damaged = bytearray(frame)
            damaged[i] ^= 1 << bit
            with pytest.raises(FrameError) as info:
                check_frame(bytes(damaged), 0)
            assert info.value.offset == 0
            # a flip in the first 24 bytes is a header problem: its length is never trusted
            if i < FRAME_HEADER_SIZE:
                assert info.value.reason.startswith(("frame header checksum mismatch", "frame header invalid"))


def test_every_truncation_of_a_frame_is_detected():
    frame = encode_commit_frame(3, 3, EXAMPLE_TS, [(EXAMPLE_KEY, b"x" * 100)])
    for n in range(len(frame)):
        with pytest.raises(FrameError) as info:
            check_frame(frame[:n], 0)
        expected = "frame header truncated" if n < FRAME_HEADER_SIZE else "frame payload truncated"
        assert info.value.reason.startswith(expected)


def test_a_flipped_length_bit_is_a_header_error_not_a_short_read():
    frame = bytearray(encode_commit_frame(1, 1, 0, [(b"\x01k", b"v" * 50)]))
    frame[5] ^= 0x80  # length field grows by 32 KiB: must not be read as "payload truncated"
    with pytest.raises(FrameError) as info:
        check_frame(bytes(frame), 0)
    assert info.value.reason.startswith("frame header checksum mismatch")


def test_segment_header_checks():
    good = encode_segment_header(b"\xaa" * 16, 5, 100)
    with pytest.raises(FrameError, match="truncated"):
        decode_segment_header(good[:47])
    with pytest.raises(FrameError, match="not an inmem WAL segment"):
        decode_segment_header(b"X" + good[1:])
    with pytest.raises(FrameError, match="checksum"):
        decode_segment_header(good[:30] + bytes([good[30] ^ 1]) + good[31:])
    newer = struct.pack("<8sI16sQQ", b"INMEMWAL", 2, b"\xaa" * 16, 5, 100)
    newer += struct.pack("<I", masked_crc32c(newer))
    with pytest.raises(FrameError, match="format version 2"):
        decode_segment_header(newer)


def test_segment_names_roundtrip():
    assert segment_name(1) == "wal-0000000000000001.log"
    assert parse_segment_name(segment_name(0xABCDEF)) == 0xABCDEF
    for bad in ("wal-1.log", "wal-000000000000000g.log", "IDENTITY", "wal-0000000000000001.log.tmp"):
        assert parse_segment_name(bad) is None


def _frames(first_lsn: int, n: int, size: int = 40) -> bytes:
    return b"".join(
        encode_commit_frame(first_lsn + i, first_lsn + i, 0, [(b"\x01key%d" % i, b"v" * size)]) for i in range(n)
    )


def test_find_valid_frame_finds_the_next_frame_after_damage():
    buf = _frames(10, 5)
    one = len(buf) // 5
    damaged = bytearray(buf)
    damaged[one + 30] ^= 0xFF  # corrupt frame 2 (lsn 11)
    assert find_valid_frame(bytes(damaged), one + 1, 11) == 2 * one  # lsn 12 starts there
    # nothing after the last frame
    assert find_valid_frame(buf, 4 * one + 1, 14) == -1
    # a zero-filled tail is not a frame, however long
    assert find_valid_frame(buf[: 4 * one] + bytes(1 << 20), 4 * one, 14) == -1


def test_find_valid_frame_with_large_lsns():
    buf = _frames((1 << 40) + 65530, 12)  # crosses a 2**16 boundary of the LSN
    one = len(buf) // 12
    assert find_valid_frame(buf, 1, (1 << 40) + 65530) == one
    assert find_valid_frame(buf, 7 * one + 3, (1 << 40) + 65530) == 8 * one


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 6),
    first=st.integers(1, 1 << 48),
    cut=st.integers(0, 10_000),
    junk=st.binary(max_size=64),
)
def test_find_valid_frame_never_reports_a_frame_in_a_torn_tail(n, first, cut, junk):
    """Whatever bytes follow a cut inside the last frame, no valid frame is found after it."""
    buf = _frames(first, n)
    last_start = len(buf) - len(buf) // n
    cut_at = last_start + cut % (len(buf) - last_start)
    torn = buf[:cut_at] + junk
    assert find_valid_frame(torn, last_start + 1, first + n - 1) == -1
