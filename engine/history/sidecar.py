"""History sidecar files: ``hist-<seq:016x>.idx``, one segment's part of the history index on disk.

This module owns the sidecar byte format (SPEC.md, "History") and reading and
writing one file; :mod:`inmem.history.index` decides when to write one and
whether the segment it describes still matches it. Layout::

    magic "INMEMHIX" | CBOR map {format, layout, db, seq, first, frames, end,
                                 offsets: u32 LE array, runs: {run id: u64 LE array}} | xxh3-128 of all before

Invariant: a sidecar is a cache. It is written as ``<name>.tmp`` then renamed,
never fsynced; a lost, torn, stale or foreign one is detected here (magic,
digest, layout, sequence number, first LSN) or by the index (database id,
last frame) and ignored, and the segment is re-read instead. Nothing is ever
lost by ignoring one.
"""

from __future__ import annotations

import logging
import os
import sys
from array import array
from typing import Any

import cbor2
import xxhash

from ..fs import FileSystem, write_atomically
from ..wal.format import FORMAT_VERSION

__all__ = ["INDEX_MAGIC", "SIDECAR_LAYOUT", "encode_sidecar", "index_name", "lsns_of", "offsets_of",
           "parse_index_name", "read_sidecar", "write_sidecar"]

log = logging.getLogger("inmem")

INDEX_MAGIC = b"INMEMHIX"
#: Layout of a sidecar's body; a sidecar with another layout is ignored (and rebuilt): it is a cache.
SIDECAR_LAYOUT = 2
_DIGEST = 16  # XXH3-128 footer
_LITTLE = sys.byteorder == "little"


def index_name(seq: int) -> str:
    """File name of segment ``seq``'s history sidecar: ``hist-<seq as 16 hex digits>.idx``."""
    return f"hist-{seq:016x}.idx"


def parse_index_name(name: str) -> int | None:
    """The segment sequence number in a sidecar file name, or ``None`` if it is not one."""
    if len(name) == 25 and name.startswith("hist-") and name.endswith(".idx"):
        try:
            return int(name[5:21], 16)
        except ValueError:
            return None
    return None


def _le(a: array) -> bytes:
    if not _LITTLE:
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def _from_le(typecode: str, raw: bytes) -> array:
    a = array(typecode)
    a.frombytes(raw)
    if not _LITTLE:
        a.byteswap()
    return a


def offsets_of(body: dict[str, Any]) -> array:
    """The frame offsets a sidecar body holds (``array("I")``, index = LSN - first LSN)."""
    return _from_le("I", body["offsets"])


def lsns_of(raw: bytes) -> array:
    """One run's LSNs as a sidecar body stores them (``body["runs"][rid]``) -> ``array("Q")``."""
    return _from_le("Q", raw)


def read_sidecar(fs: FileSystem, dirpath: str, seq: int, first_lsn: int) -> dict[str, Any] | None:
    """The body of segment ``seq``'s sidecar if it exists and passes its own checks, else ``None``.

    Checks: magic, XXH3-128 digest, format version, layout, sequence number,
    first LSN ``first_lsn``, at least one frame. A failing sidecar is logged
    (info) and ignored. The caller still checks the database id and that the
    segment file matches (:meth:`inmem.history.index.HistoryIndex.load`).
    """
    path = os.path.join(dirpath, index_name(seq))
    if not fs.exists(path):
        return None
    try:
        raw = fs.read(path)
        if raw[:8] != INDEX_MAGIC or xxhash.xxh3_128_digest(raw[:-_DIGEST]) != raw[-_DIGEST:]:
            raise ValueError("checksum mismatch")
        body = cbor2.loads(raw[8:-_DIGEST])
        if (body["format"] > FORMAT_VERSION or body.get("layout") != SIDECAR_LAYOUT
                or body["seq"] != seq or body["first"] != first_lsn or body["frames"] < 1):
            raise ValueError("belongs to another segment")
    except (ValueError, KeyError, TypeError, cbor2.CBORDecodeError) as exc:
        log.info("inmem: history sidecar %s ignored (%s); re-reading the segment", path, exc)
        return None
    return body


def encode_sidecar(db_id: bytes, seq: int, first: int, frames: int, end: int, offsets: array,
                   runs: dict[bytes, array]) -> bytes:
    """The bytes of a sidecar covering frames ``first .. first + frames - 1`` of segment ``seq``.

    ``end``: byte offset where the last covered frame ends; ``offsets``: their
    offsets; ``runs``: run id -> its LSNs among those frames.
    """
    body = cbor2.dumps({"format": FORMAT_VERSION, "layout": SIDECAR_LAYOUT, "db": db_id, "seq": seq, "first": first,
                        "frames": frames, "end": end, "offsets": _le(offsets),
                        "runs": {rid: _le(lsns) for rid, lsns in runs.items()}})
    data = INDEX_MAGIC + body
    return data + xxhash.xxh3_128_digest(data)


def write_sidecar(fs: FileSystem, dirpath: str, seq: int, data: bytes) -> None:
    """Write segment ``seq``'s sidecar: ``<name>.tmp`` then rename, not fsynced (it is a cache)."""
    write_atomically(fs, dirpath, index_name(seq), lambda f: f.write(data), durable=False)
