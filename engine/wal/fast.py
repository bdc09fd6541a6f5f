"""The WAL's optional C hot path: installs native frame checking over :mod:`inmem.wal.format`.

This module owns the dispatch from the three frame-checking functions of
:mod:`inmem.wal.format` (``check_frame``, ``find_valid_frame``,
``scan_frames``) to the cffi-compiled C in ``native/inmem_native.c``, loaded
by :mod:`inmem.native`; from the two commit-frame encoders
(``encode_put_frame``, ``encode_commit_frame``) to ``native/inmem_encode.c``;
and it offers recovery's segment replay (``native/inmem_replay.c``) as
:data:`replay`. :func:`install` runs once, when the package
:mod:`inmem.wal` is imported (so before any module can bind one of those
names with ``from .format import ...``), and does nothing when
:data:`inmem.native.ENABLED` is false (``INMEM_PURE=1`` or not built).

Invariant: the native functions give the same results and raise the same
:class:`~inmem.wal.format.FrameError` (same reason, same offset) as the
pure-Python ones, which stay available as ``format._py_check_frame``,
``format._py_find_valid_frame`` and ``format._py_scan_frames``; inputs out of
the C types' range fall back to them. The native encoders return the same
bytes as ``format._py_encode_put_frame`` / ``format._py_encode_commit_frame``
and hand any input they do not take exactly as ``struct`` would (an int out
of range, a key that is not ``bytes``, ...) to those, so errors are the same.
"""

from __future__ import annotations

import ctypes
import types
from collections.abc import Callable
from typing import Any

from .. import native
from . import format as _format
from .format import FRAME_HEADER_SIZE, FrameError, frame_error

__all__ = ["install"]

_SCAN_CHUNK = 1 << 14  # frame offsets returned per C call
_U64_MAX = (1 << 64) - 1
_installed = False

#: The native replay of one segment (``native/inmem_replay.c``), or ``None`` on the pure path:
#: ``replay(buf, pos, expected_lsn, skip_below, last_version, want, collect, state, head_at, head_len)
#: -> (stop, next_lsn, last_version, skipped, count, offsets, groups)``, ``groups`` mapping each
#: key head ``key[head_at:head_at + head_len]`` to the LSNs (>= ``want``) of the records that wrote
#: a key with it, packed as native uint64 (``array('Q').frombytes``). Used by
#: :meth:`inmem.wal.reader.SegmentScan.replay`, which continues in Python from ``stop``.
replay: Callable[..., tuple[int, int, int, int, int, bytes, dict[bytes, bytes]]] | None = None
#: The native loader of one snapshot chunk, or ``None``: ``load_snapshot_chunk(payload, count, state[, cold])``
#: inserts the chunk's entries into ``state`` (or into ``cold``, the cold table of ``state``) and returns
#: ``count``, or returns -1 having touched nothing when the payload is not the plain
#: ``[[bstr]*count, [uint >= 1]*count, [bstr]*count]`` CBOR (then the caller decodes it with cbor2).
#: Used by :func:`inmem.snapshot.read_snapshot`.
load_snapshot_chunk: Callable[[bytes, int, dict[bytes, tuple[int, bytes]]], int] | None = None
#: The compact store entry type the native replay and snapshot loader build (``inmem.Entry``,
#: ``native/inmem_replay.c``), or ``None`` (pure path, or an older build: they build tuples). An
#: entry reads as the tuple ``(version, value)`` it replaces (len, indexing, unpacking, ==, hash,
#: repr, pickle) in 32 bytes instead of ~96 (tuple + int): W9 in benches/README.md.
entry_type: type | None = None
#: ``make_entry(version, value)`` -> such an entry (the tuple for a version or value out of its
#: types), or ``None`` on the pure path: what the kernel's commit path stores.
make_entry: Callable[[int, bytes], Any] | None = None


def install() -> bool:
    """Replace the format module's three frame checkers with the native ones; return whether it did.

    Idempotent: a second call finds the native functions already in place.
    """
    global _installed, replay, load_snapshot_chunk, entry_type, make_entry
    if not native.ENABLED or _installed:
        return False
    _installed = True
    entry_type = _load_entry_type()
    replay = _load_replay()
    ffi, lib = native.ffi, native.lib
    c_check_frame = lib.inmem_check_frame
    c_scan_frames = lib.inmem_scan_frames
    c_find_valid_frame = lib.inmem_find_valid_frame
    py_check_frame = _format.check_frame
    py_scan_frames = _format.scan_frames
    # The Python find_valid_frame looks check_frame up as a module global, which is about
    # to become the native one; its _py_ copy keeps the Python check_frame, so that it
    # stays an all-Python reference.
    pure = _format.find_valid_frame
    py_find_valid_frame = types.FunctionType(
        pure.__code__, {**vars(_format), "check_frame": py_check_frame}, "_py_find_valid_frame",
        pure.__defaults__, pure.__closure__,
    )
    py_find_valid_frame.__doc__ = pure.__doc__
    # Out-parameters for inmem_check_frame, reused (ffi.new costs more than the check).
    # list.pop/append are atomic, so threads never share a set; the C call releases the GIL.
    out_pool: list[tuple] = []

    def c_buf(buf):
        # cffi passes a bytes object's own storage to a uint8_t* argument without a copy
        return buf if type(buf) is bytes else ffi.from_buffer("uint8_t[]", buf)

    def check_frame(buf: bytes, pos: int) -> tuple[int, int, int, int]:
        """Native :func:`_py_check_frame`: same result, same FrameError."""
        if pos < 0:
            return py_check_frame(buf, pos)
        outs = out_pool.pop() if out_pool else (
            ffi.new("uint64_t *"), ffi.new("uint32_t *"), ffi.new("size_t *"), ffi.new("size_t *")
        )
        lsn, rtype, pstart, end = outs
        code = c_check_frame(c_buf(buf), len(buf), pos, lsn, rtype, pstart, end)
        if code:
            out_pool.append(outs)
            raise frame_error(buf, pos, code)
        result = lsn[0], rtype[0], pstart[0], end[0]
        out_pool.append(outs)
        return result

    def find_valid_frame(buf: bytes, start: int, min_lsn: int) -> int:
        """Native :func:`_py_find_valid_frame`: a checked scan of every offset, in C."""
        n = len(buf)
        if start < 0 or min_lsn < 0 or min_lsn + max(n - start, 0) // FRAME_HEADER_SIZE > _U64_MAX:
            return py_find_valid_frame(buf, start, min_lsn)  # out of the C types' range
        return int(c_find_valid_frame(c_buf(buf), n, start, min_lsn))

    def scan_frames(buf: bytes, pos: int) -> tuple[list[int], int, FrameError | None]:
        """Native :func:`_py_scan_frames`: same result, same FrameError."""
        if pos < 0:
            return py_scan_frames(buf, pos)
        n = len(buf)
        positions: list[int] = []
        if pos >= n:
            return positions, pos, None
        cbuf = c_buf(buf)
        cap = min((n - pos) // FRAME_HEADER_SIZE + 1, _SCAN_CHUNK)
        starts = ffi.new("uint64_t[]", cap)
        stop = ffi.new("size_t *")
        code = ffi.new("int *")
        while True:
            k = c_scan_frames(cbuf, n, pos, starts, cap, stop, code)
            positions.extend(ffi.unpack(starts, k))
            pos = stop[0]
            if code[0]:
                return positions, pos, frame_error(buf, pos, code[0])
            if k < cap or pos >= n:
                return positions, pos, None

    _format._py_find_valid_frame = py_find_valid_frame  # noqa: SLF001 - the reference copy lives in format
    _format.check_frame = check_frame
    _format.find_valid_frame = find_valid_frame
    _format.scan_frames = scan_frames
    encoders = _load_encoders(_format.encode_put_frame, _format.encode_commit_frame)
    if encoders is not None:
        _format.encode_put_frame, _format.encode_commit_frame, load_snapshot_chunk, make_entry = encoders
    return True


def _py_function(name: str, argtypes: list[Any]) -> Any:
    """The C function ``name`` of the native library through ``ctypes.PyDLL`` (GIL held during the call, a
    Python error it sets raised), returning a Python object; ``None`` if this build lacks it."""
    from .. import _native  # type: ignore[attr-defined]

    try:
        fn = getattr(ctypes.PyDLL(_native.__file__), name)
    except (OSError, AttributeError):  # an older build without it
        return None
    fn.restype = ctypes.py_object
    fn.argtypes = argtypes
    return fn


def _load_entry_type() -> type | None:
    """Create the native entry type (before any replay builds one); ``None`` if this build has none
    (replay then builds tuples)."""
    fn = _py_function("inmem_py_entry_type", [])
    return None if fn is None else fn()  # type: ignore[no-any-return]


def _load_replay() -> Callable[..., Any] | None:
    """The C replay through ctypes (cffi cannot pass Python objects); ``None`` if it cannot be loaded
    (an older build: the Python replay is used)."""
    return _py_function("inmem_py_replay", [  # type: ignore[no-any-return]
        ctypes.py_object, ctypes.c_ssize_t, ctypes.c_ulonglong, ctypes.c_ulonglong, ctypes.c_ulonglong,
        ctypes.c_ulonglong, ctypes.c_int, ctypes.py_object, ctypes.c_ssize_t, ctypes.c_ssize_t, ctypes.py_object])


def _load_encoders(py_put: Callable[..., bytes],
                   py_commit: Callable[..., bytes]) -> tuple[Any, Any, Any, Any] | None:
    """The native commit-frame encoders and snapshot-chunk loader as builtin functions, or ``None``
    (an older build without them).

    They come from the extension's method table (:func:`inmem.native.builtins`), so a call costs a
    builtin call. ``py_put``/``py_commit`` are the Python references they defer to for inputs
    outside their fast path.
    """
    from .. import _native  # type: ignore[attr-defined]

    table = native.builtins()
    try:
        set_fallbacks = ctypes.PyDLL(_native.__file__).inmem_py_set_fallbacks
    except (OSError, AttributeError):
        return None
    set_fallbacks.restype = None
    set_fallbacks.argtypes = [ctypes.py_object, ctypes.py_object]
    set_fallbacks(py_put, py_commit)
    if "load_snapshot_chunk" not in table:
        return None
    return (table["encode_put_frame"], table["encode_commit_frame"], table["load_snapshot_chunk"],
            table.get("make_entry"))
