"""The native (cffi/C) hot path gives exactly the answers of the pure-Python code.

Differential: random byte strings and random frame sequences, valid and
damaged (truncated, bytes flipped, zeros appended, lying headers), checked by
both paths; every output must agree — CRC-32C values, check_frame results and
errors (reason and offset), scan_frames, find_valid_frame. A brute-force
reference of find_valid_frame's definition checks both.

Skipped when ``inmem._native`` is not built (``python native/build.py``).
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

_ext = pytest.importorskip(
    "inmem._native",
    reason="native extension inmem._native not built (run: python native/build.py); pure-Python path only",
)

import crc32c as crc32c_pkg  # noqa: E402

from inmem import native  # noqa: E402
from inmem.checksum import crc32c, mask  # noqa: E402
from inmem.wal import fast  # noqa: E402
from inmem.wal import format as fmt  # noqa: E402
from inmem.wal.format import FRAME_HEADER_SIZE, MAX_PAYLOAD_BYTES, FrameError, encode_frame  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ffi, lib = _ext.ffi, _ext.lib

needs_enabled = pytest.mark.skipif(
    not native.ENABLED, reason="INMEM_PURE=1: the native path is switched off in this process"
)

# failure codes of inmem_check_frame <- first words of the pure-Python reasons
CODES = {
    "frame header truncated": 1,
    "frame header checksum mismatch": 2,
    "frame header invalid": 3,
    "frame payload truncated": 4,
    "frame payload checksum mismatch": 5,
}


def code_of(reason: str) -> int:
    (code,) = [c for words, c in CODES.items() if reason.startswith(words)]
    return code


def cbuf(b):
    return ffi.from_buffer("uint8_t[]", b)


# --- building frames, valid and not -------------------------------------------------------


def raw_frame(length: int, lsn: int, payload: bytes, rtype: int = 1, reserved: bytes = b"\0\0\0",
              pcrc: int | None = None) -> bytes:
    """A frame whose header checksum passes but whose other fields may lie."""
    if pcrc is None:
        pcrc = mask(crc32c(payload))
    body = struct.pack("<IQIB", length, lsn, pcrc, rtype) + reserved
    return struct.pack("<I", mask(crc32c(body))) + body + payload


LSN_STARTS = st.one_of(
    st.integers(1, 300),
    st.sampled_from([0, 65530, 65535, 65536, 2**32 - 2, 2**48 - 3, 2**64 - 40]),
)


@st.composite
def frame_buffers(draw):
    """``(buf, first_lsn)``: junk, frames with consecutive LSNs, junk, then random damage."""
    first = draw(LSN_STARTS)
    parts = [draw(st.binary(max_size=30))]
    lsn = first
    for _ in range(draw(st.integers(0, 6))):
        payload = draw(st.binary(max_size=80))
        kind = draw(st.sampled_from(["ok"] * 6 + ["type", "reserved", "huge", "short", "pcrc", "skip"]))
        if kind == "ok":
            parts.append(encode_frame(lsn, 1, payload))
        elif kind == "type":
            parts.append(encode_frame(lsn, draw(st.sampled_from([0, 2, 255])), payload))
        elif kind == "reserved":
            parts.append(raw_frame(len(payload), lsn, payload, reserved=draw(st.binary(min_size=3, max_size=3))))
        elif kind == "huge":
            parts.append(raw_frame(draw(st.sampled_from([MAX_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES + 1, 2**32 - 1])),
                                   lsn, payload))
        elif kind == "short":  # length says more than follows
            parts.append(raw_frame(len(payload) + draw(st.integers(1, 100)), lsn, payload))
        elif kind == "pcrc":
            parts.append(raw_frame(len(payload), lsn, payload, pcrc=draw(st.integers(0, 2**32 - 1))))
        else:
            lsn += draw(st.integers(1, 3))
            continue
        lsn = (lsn + 1) % 2**64
    parts.append(draw(st.binary(max_size=30)))
    buf = bytearray(b"".join(parts))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "truncate", "zeros", "zero_run"]))
        if op == "flip" and buf:
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] ^= draw(st.integers(1, 255))
        elif op == "truncate" and buf:
            del buf[draw(st.integers(0, len(buf) - 1)):]
        elif op == "zeros":
            buf += bytes(draw(st.integers(1, 60)))
        elif op == "zero_run" and buf:
            i = draw(st.integers(0, len(buf) - 1))
            buf[i:i] = bytes(draw(st.integers(1, 60)))
    return bytes(buf), first


def outcome(fn, *args):
    """A function's result, its FrameError as ``("error", reason, offset)``, or another exception's type and text."""
    try:
        return fn(*args)
    except FrameError as exc:
        return ("error", exc.reason, exc.offset)
    except Exception as exc:  # e.g. struct.error for a negative position: the same from both paths
        return ("raised", type(exc), str(exc))


def brute_find_valid_frame(buf: bytes, start: int, min_lsn: int) -> int:
    """The definition: the first offset >= start where a valid frame with a plausible LSN starts."""
    n = len(buf)
    if n - start < FRAME_HEADER_SIZE:
        return -1
    max_lsn = min_lsn + (n - start) // FRAME_HEADER_SIZE
    for p in range(start, n - FRAME_HEADER_SIZE + 1):
        try:
            lsn = fmt._py_check_frame(buf, p)[0]
        except FrameError:
            continue
        if min_lsn <= lsn <= max_lsn:
            return p
    return -1


# --- the switch ------------------------------------------------------------------------------


def _enabled_in_subprocess(**env_overrides) -> str:
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("INMEM_PURE", None)
    env.update(env_overrides)
    out = subprocess.run(
        [sys.executable, "-c", "import inmem.native as n; print(n.ENABLED)"],
        env=env, cwd=ROOT, capture_output=True, text=True, check=True,
    )
    return out.stdout.strip()


def test_inmem_pure_switches_the_native_path_off():
    assert _enabled_in_subprocess(INMEM_PURE="1") == "False"


def test_native_path_is_on_by_default_when_built():
    assert _enabled_in_subprocess() == "True"
    assert _enabled_in_subprocess(INMEM_PURE="0") == "True"


@needs_enabled
def test_format_dispatches_to_native_and_keeps_python_versions():
    assert fmt.check_frame is not fmt._py_check_frame
    assert fmt.find_valid_frame is not fmt._py_find_valid_frame
    assert fmt.scan_frames is not fmt._py_scan_frames
    assert "scan_frames" in fmt.__all__
    # the Python reference of find_valid_frame checks frames in Python too
    assert fmt._py_find_valid_frame.__globals__["check_frame"] is fmt._py_check_frame


@needs_enabled
def test_builtins_offers_every_function_of_the_method_table():
    """A function missing from ``builtins()`` silently falls back to Python (an earlier build
    returned a hard-coded count and lost the last entry of its table): every name must be there."""
    names = {"encode_put_frame", "encode_commit_frame", "load_snapshot_chunk", "make_entry",
             "key_heads", "put_version", "encode_value", "decode_value", "new_cold_table"}
    assert set(native.builtins()) == names
    assert all(callable(f) for f in native.builtins().values())


# --- CRC-32C ------------------------------------------------------------------------------------


def test_crc32c_known_answers():
    data = b"123456789"
    for fn in (lib.inmem_crc32c, lib.inmem_crc32c_portable):
        assert fn(data, len(data), 0) == 0xE3069283
        assert fn(b"", 0, 0) == 0
        assert fn(b"", 0, 0xDEADBEEF) == 0xDEADBEEF
        assert fn(bytes(32), 32, 0) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros
        assert fn(b"\xff" * 32, 32, 0) == 0x62A8AB43  # RFC 3720 B.4: 32 bytes of 0xff
    assert lib.inmem_mask(0) == mask(0)
    assert lib.inmem_crc32c_hw() in (0, 1)


@settings(max_examples=300)
@given(st.binary(max_size=3000), st.integers(0, 2**32 - 1), st.integers(0, 15))
def test_crc32c_matches_package(data, seed, skew):
    # skew shifts the data's alignment in memory: both C loops have alignment-dependent paths
    mv = memoryview(bytes(skew) + data)[skew:]
    expected = crc32c_pkg.crc32c(data, seed)
    assert crc32c(data, seed) == expected
    assert lib.inmem_crc32c(cbuf(mv), len(data), seed) == expected
    assert lib.inmem_crc32c_portable(cbuf(mv), len(data), seed) == expected
    # continuing a CRC over a split is the CRC of the whole
    cut = len(data) // 3
    part = lib.inmem_crc32c(data[:cut], cut, seed)
    assert lib.inmem_crc32c(data[cut:], len(data) - cut, part) == expected


def test_crc32c_long_buffers_match_package():
    # lengths around the 3 x 256 and 3 x 8192 interleaving thresholds of the SSE4.2 path
    rng = random.Random(7)
    big = rng.randbytes(3 * 8192 * 2 + 3000)
    for n in (767, 768, 769, 1536, 3 * 8192 - 1, 3 * 8192, 3 * 8192 + 1, 3 * 8192 + 775, len(big) - 8):
        for skew in (0, 1, 5):
            data = big[skew:skew + n]
            seed = rng.getrandbits(32)
            assert lib.inmem_crc32c(data, n, seed) == crc32c_pkg.crc32c(data, seed), (n, skew)
            assert lib.inmem_crc32c_portable(data, n, seed) == crc32c_pkg.crc32c(data, seed), (n, skew)


@given(st.integers(0, 2**32 - 1))
def test_mask_matches(c):
    assert lib.inmem_mask(c) == mask(c)


# --- check_frame -----------------------------------------------------------------------------


def _c_check(buf: bytes, pos: int):
    lsn, rtype = ffi.new("uint64_t *"), ffi.new("uint32_t *")
    pstart, end = ffi.new("size_t *"), ffi.new("size_t *")
    code = lib.inmem_check_frame(cbuf(buf), len(buf), pos, lsn, rtype, pstart, end)
    return (lsn[0], rtype[0], pstart[0], end[0]) if code == 0 else code


@settings(max_examples=300)
@given(frame_buffers())
def test_c_check_frame_matches_python_at_every_offset(case):
    buf, _ = case
    for pos in range(len(buf) + 2):
        py = outcome(fmt._py_check_frame, buf, pos)
        c = _c_check(buf, pos)
        if py[0] == "error":
            assert c == code_of(py[1]), (pos, py)
        else:
            assert c == py, pos


@needs_enabled
@settings(max_examples=300)
@given(frame_buffers(), st.sampled_from([bytes, bytearray, memoryview]))
def test_check_frame_wrapper_matches_python(case, kind):
    buf, _ = case
    wrapped = kind(buf)
    for pos in list(range(len(buf) + 2)) + [-1, -30]:
        assert outcome(fmt.check_frame, wrapped, pos) == outcome(fmt._py_check_frame, buf, pos), pos


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_c_check_frame_random_bytes(buf):
    for pos in range(len(buf) + 1):
        py = outcome(fmt._py_check_frame, buf, pos)
        c = _c_check(buf, pos)
        assert c == (code_of(py[1]) if py[0] == "error" else py)


def test_check_frame_failure_codes_in_order():
    good = encode_frame(7, 1, b"payload")
    cases = {
        1: good[:23],
        2: good[:4] + bytes([good[4] ^ 1]) + good[5:],  # a flipped length bit: a bad header, never followed
        3: raw_frame(3, 7, b"abc", rtype=2),
        4: raw_frame(10, 7, b"abc"),
        5: good[:-1] + bytes([good[-1] ^ 0x80]),
    }
    for code, buf in cases.items():
        assert _c_check(buf, 0) == code
        assert code_of(outcome(fmt._py_check_frame, buf, 0)[1]) == code
    assert _c_check(good, 0) == (7, 1, 24, len(good))
    # lengths at and over the limit, with headers whose checksum passes
    assert _c_check(raw_frame(MAX_PAYLOAD_BYTES, 1, b""), 0) == 4
    assert _c_check(raw_frame(MAX_PAYLOAD_BYTES + 1, 1, b""), 0) == 3
    assert _c_check(raw_frame(2**32 - 1, 1, b""), 0) == 3
    # a position past the end is a truncated header, as in Python
    assert _c_check(good, len(good) + 5) == 1


# --- scan_frames -----------------------------------------------------------------------------


def _c_scan(buf: bytes, pos: int, max_frames: int):
    positions = ffi.new("uint64_t[]", max(max_frames, 1))
    stop, code = ffi.new("size_t *"), ffi.new("int *")
    k = lib.inmem_scan_frames(cbuf(buf), len(buf), pos, positions, max_frames, stop, code)
    return list(ffi.unpack(positions, k)), stop[0], code[0]


def _py_scan_summary(buf: bytes, pos: int):
    starts, stop, err = fmt._py_scan_frames(buf, pos)
    return starts, stop, (None if err is None else (err.reason, err.offset))


@settings(max_examples=300)
@given(frame_buffers(), st.data())
def test_scan_frames_matches_python(case, data):
    buf, _ = case
    starts_at = [0, len(buf), len(buf) + 3, data.draw(st.integers(0, max(len(buf) - 1, 0)))]
    for pos in starts_at:
        py = _py_scan_summary(buf, pos)
        # the pure version agrees with check_frame applied by hand
        starts, stop, err = py
        assert all(outcome(fmt._py_check_frame, buf, p)[0] != "error" for p in starts)
        # the raw C function, with every chunk size
        for max_frames in (1, 2, 3, 1000):
            c_starts, c_stop, c_code = _c_scan(buf, pos, max_frames)
            assert c_starts == starts[:max_frames]
            if len(starts) >= max_frames:  # stopped by max_frames, before looking further
                assert c_code == 0
                assert c_stop == (starts[max_frames] if len(starts) > max_frames else stop)
            else:
                assert c_stop == stop
                assert c_code == (0 if err is None else code_of(err[0]))
        if native.ENABLED:
            for kind in (bytes, bytearray, memoryview):
                got = fmt.scan_frames(kind(buf), pos)
                assert (got[0], got[1], None if got[2] is None else (got[2].reason, got[2].offset)) == py


@needs_enabled
def test_scan_frames_many_frames_crosses_chunks():
    n = fast._SCAN_CHUNK * 2 + 17
    buf = b"".join(encode_frame(i + 1, 1, b"") for i in range(n)) + b"\x01"
    starts, stop, err = fmt.scan_frames(buf, 0)
    assert starts == list(range(0, n * 24, 24))
    assert stop == n * 24 and err is not None and err.reason.startswith("frame header truncated")
    assert (starts, stop, err.reason) == (lambda r: (r[0], r[1], r[2].reason))(fmt._py_scan_frames(buf, 0))
    starts, stop, err = fmt.scan_frames(buf[:-1], 0)
    assert len(starts) == n and stop == n * 24 and err is None


# --- find_valid_frame ---------------------------------------------------------------------


def _c_find(buf, start, min_lsn):
    return lib.inmem_find_valid_frame(cbuf(buf), len(buf), start, min_lsn)


@settings(max_examples=300)
@given(frame_buffers(), st.data())
def test_find_valid_frame_matches_python_and_definition(case, data):
    buf, first = case
    starts = {0, 1, len(buf), len(buf) + 2, data.draw(st.integers(0, max(len(buf), 0)))}
    lsns = {first, max(first - 1, 0), first + 1, first + 3, data.draw(st.integers(0, 2**64 - 1 - len(buf)))}
    for start in starts:
        for min_lsn in lsns:
            if min_lsn + max(len(buf) - start, 0) // FRAME_HEADER_SIZE > 2**64 - 1:
                continue  # the Python version raises OverflowError here; the wrapper defers to it
            py = fmt._py_find_valid_frame(buf, start, min_lsn)
            assert py == brute_find_valid_frame(buf, start, min_lsn), (start, min_lsn)
            assert _c_find(buf, start, min_lsn) == py, (start, min_lsn)
            if native.ENABLED:
                assert fmt.find_valid_frame(buf, start, min_lsn) == py
                assert fmt.find_valid_frame(bytearray(buf), start, min_lsn) == py


@settings(max_examples=100)
@given(st.binary(max_size=400), st.integers(0, 70000))
def test_find_valid_frame_random_bytes(buf, min_lsn):
    for start in (0, 1, 7):
        py = fmt._py_find_valid_frame(buf, start, min_lsn)
        assert _c_find(buf, start, min_lsn) == py == brute_find_valid_frame(buf, start, min_lsn)


def test_find_valid_frame_large_buffer_with_planted_frames():
    rng = random.Random(11)
    buf = bytearray(rng.randbytes(256 * 1024))
    # a frame whose LSN is out of range, then zeros, then a frame in range
    far = encode_frame(10**9, 1, b"far away")
    near = encode_frame(42, 1, b"near")
    buf[5000:5000 + len(far)] = far
    buf[9000:20000] = bytes(11000)
    buf[150001:150001 + len(near)] = near
    buf = bytes(buf)
    for start, min_lsn in ((0, 40), (0, 42), (150001, 42), (150002, 42), (0, 10**9), (0, 43), (4000, 1)):
        py = fmt._py_find_valid_frame(buf, start, min_lsn)
        assert _c_find(buf, start, min_lsn) == py, (start, min_lsn)
        if native.ENABLED:
            assert fmt.find_valid_frame(buf, start, min_lsn) == py
    assert _c_find(buf, 0, 42) == 150001
    assert _c_find(buf, 0, 10**9) == 5000


@needs_enabled
def test_find_valid_frame_wrapper_defers_out_of_range_arguments():
    buf = encode_frame(5, 1, b"x") * 3
    for start, min_lsn in ((-1, 5), (-3, 5), (-100, 5), (-1, 6), (-30, 5)):
        assert outcome(fmt.find_valid_frame, buf, start, min_lsn) == outcome(
            fmt._py_find_valid_frame, buf, start, min_lsn
        )
    with pytest.raises(OverflowError):
        fmt._py_find_valid_frame(buf, 0, 2**64 - 2)
    with pytest.raises(OverflowError):
        fmt.find_valid_frame(buf, 0, 2**64 - 2)


# --- the builder -------------------------------------------------------------------------------


def test_build_without_a_compiler_warns_and_exits_0_unless_strict():
    env = dict(os.environ, CC="/nonexistent/cc")
    script = os.path.join(ROOT, "native", "build.py")
    so_before = sorted(f for f in os.listdir(os.path.join(ROOT, "engine")) if f.startswith("_native"))
    r = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True)
    assert r.returncode == 0
    assert "pure-Python path will be used" in r.stdout and len(r.stdout.strip().splitlines()) == 1
    r = subprocess.run([sys.executable, script, "--strict"], env=env, capture_output=True, text=True)
    assert r.returncode == 1
    so_after = sorted(f for f in os.listdir(os.path.join(ROOT, "engine")) if f.startswith("_native"))
    assert so_after == so_before  # nothing half-built was left in the package
