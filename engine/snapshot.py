"""Snapshot files: the whole store at one commit version, in key order, in checksummed chunks.

This module owns the snapshot byte format (SPEC.md, "Snapshots") and writing
and reading one file; *when* to take a snapshot and what to delete afterwards
is :mod:`inmem.checkpoint`'s. Invariant: a snapshot file is either absent,
or complete and verifiable — it is written under a temporary name, fsynced,
renamed, and the directory fsynced; a reader checks the xxh3-128 digest of
the whole file, the header and every chunk's CRC before returning a single
entry.

Layout (little-endian)::

    header (64 B) | chunk* | footer (40 B)
    header = magic "INMEMSNP" | format u32 | db id 16 | commit version u64 | key count u64
             | next LSN u64 | created µs i64 | masked crc32c u32 (of the 60 bytes before it)
    chunk  = payload length u32 | entry count u32 | masked crc32c of payload u32 | payload
    payload = CBOR array [keys: [bstr], versions: [uint], values: [bstr]]   (RFC 8949)
    footer = magic "INMEMEND" | chunk count u64 | key count u64 | xxh3-128 of every byte before it (16 B)

A chunk is three parallel CBOR arrays so that reading decodes each chunk in
one C call and builds the store with ``dict(zip(...))`` at C speed.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import cbor2
import xxhash

from .checksum import masked_crc32c
from .fs import FileSystem, WritableFile, write_atomically
from .store import Entry
from .wal import fast as _fast
from .wal.format import FORMAT_VERSION

_U32_MAX = (1 << 32) - 1
_U64_MAX = (1 << 64) - 1

__all__ = [
    "SnapshotError",
    "SnapshotHeader",
    "parse_snapshot_name",
    "read_snapshot",
    "read_snapshot_header",
    "set_aside_snapshot",
    "snapshot_name",
    "verify_snapshot",
    "write_snapshot",
]

SNAPSHOT_MAGIC = b"INMEMSNP"
FOOTER_MAGIC = b"INMEMEND"
_HEADER = struct.Struct("<8sI16sQQQq")  # magic, format, db id, commit version, key count, next lsn, created µs
HEADER_SIZE = _HEADER.size + 4  # 64
_CHUNK = struct.Struct("<III")  # payload length, entry count, masked crc of payload
_FOOTER = struct.Struct("<8sQQ")  # magic, chunk count, key count
DIGEST_SIZE = 16
FOOTER_SIZE = _FOOTER.size + DIGEST_SIZE  # 40
_U32 = struct.Struct("<I")

#: Entries per chunk. Also the capture step: a writer waits for at most one chunk's capture.
CHUNK_ENTRIES = 4096
_WRITE_BYTES = 1 << 20  # gather ~1 MiB before each write(2)

Progress = Callable[[str, int, int], None]


class SnapshotError(Exception):
    """Internal: a snapshot file failed a check (``reason``, byte ``offset``). Recovery reports it."""

    def __init__(self, reason: str, offset: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


class SnapshotHeader(NamedTuple):
    format_version: int
    db_id: bytes
    commit_version: int
    keys: int
    next_lsn: int
    created_us: int


def snapshot_name(version: int) -> str:
    """File name of the snapshot at ``version``: ``snapshot-<version as 16 hex digits>.snap``."""
    return f"snapshot-{version:016x}.snap"


def parse_snapshot_name(name: str) -> int | None:
    """The commit version in a snapshot file name, or ``None`` if it is not one."""
    if len(name) == 30 and name.startswith("snapshot-") and name.endswith(".snap"):
        try:
            return int(name[9:25], 16)
        except ValueError:
            return None
    return None


def write_snapshot(
    fs: FileSystem,
    dirpath: str,
    db_id: bytes,
    version: int,
    next_lsn: int,
    keys: list[bytes],
    versions: list[int],
    values: list[bytes],
    progress: Progress | None = None,
) -> tuple[str, int]:
    """Write a snapshot durably; return ``(path, size in bytes)``.

    Temporary name, fsync, rename, directory fsync: a crash at any point
    leaves either no snapshot or this complete one (plus, at worst, a
    ``.tmp`` file that recovery removes). If writing or fsyncing the
    temporary file fails, it is removed (best effort) before the error
    propagates. ``progress("snapshot", keys written, keys total)`` is called
    as the file grows, never with ``keys written == keys total``: the caller
    reports completion once the snapshot is really done (verified, pruned).

    :raises OSError: the file could not be written (nothing is renamed into place).
    """
    name = snapshot_name(version)
    n = len(keys)

    def stream(f: WritableFile) -> int:
        digest = xxhash.xxh3_128()
        size = 0
        head = _HEADER.pack(SNAPSHOT_MAGIC, FORMAT_VERSION, db_id, version, n, next_lsn, time.time_ns() // 1000)
        pending = [head, _U32.pack(masked_crc32c(head))]
        pending_bytes = HEADER_SIZE
        chunks = 0
        for start in range(0, n, CHUNK_ENTRIES):
            end = min(start + CHUNK_ENTRIES, n)
            payload = cbor2.dumps([keys[start:end], versions[start:end], values[start:end]])
            pending.append(_CHUNK.pack(len(payload), end - start, masked_crc32c(payload)))
            pending.append(payload)
            pending_bytes += _CHUNK.size + len(payload)
            chunks += 1
            if pending_bytes >= _WRITE_BYTES:
                data = b"".join(pending)
                digest.update(data)
                f.write(data)
                size += len(data)
                pending, pending_bytes = [], 0
                if progress is not None and end < n:
                    progress("snapshot", end, n)
        pending.append(_FOOTER.pack(FOOTER_MAGIC, chunks, n))
        data = b"".join(pending)
        digest.update(data)
        f.write(data + digest.digest())
        return size + len(data) + DIGEST_SIZE

    size = write_atomically(fs, dirpath, name, stream, remove_on_error=True)
    return os.path.join(dirpath, name), size


def set_aside_snapshot(fs: FileSystem, dirpath: str, name: str) -> str:
    """Rename a damaged snapshot to ``<name>.corrupt-<ms>`` and fsync the directory; return the new name.

    The bytes are kept for forensics; nothing reads a set-aside file again
    (it no longer parses as a snapshot name), so it can neither be loaded
    nor counted as one of the snapshots that let WAL be deleted.

    :raises OSError: the rename or the directory fsync failed.
    """
    aside = f"{name}.corrupt-{time.time_ns() // 1_000_000}"
    fs.rename(os.path.join(dirpath, name), os.path.join(dirpath, aside))
    fs.sync_dir(dirpath)
    return aside


def _header(buf: bytes) -> SnapshotHeader:
    if len(buf) < HEADER_SIZE:
        raise SnapshotError(f"snapshot truncated ({len(buf)} bytes)", 0)
    magic, fmt, db_id, version, keys, next_lsn, created = _HEADER.unpack_from(buf)
    if magic != SNAPSHOT_MAGIC:
        raise SnapshotError(f"not an inmem snapshot (magic {magic!r})", 0)
    if _U32.unpack_from(buf, _HEADER.size)[0] != masked_crc32c(buf[: _HEADER.size]):
        raise SnapshotError("snapshot header checksum mismatch", 0)
    if fmt > FORMAT_VERSION:
        raise SnapshotError(f"snapshot has format version {fmt}; this build reads up to {FORMAT_VERSION}", 8)
    return SnapshotHeader(fmt, db_id, version, keys, next_lsn, created)


def _whole_file(buf: bytes, db_id: bytes) -> SnapshotHeader:
    """Checks every reader makes first: size, the whole-file digest, the header, the database id."""
    if len(buf) < HEADER_SIZE + FOOTER_SIZE:
        raise SnapshotError(f"snapshot truncated ({len(buf)} bytes)", len(buf))
    if xxhash.xxh3_128_digest(memoryview(buf)[:-DIGEST_SIZE]) != buf[-DIGEST_SIZE:]:
        raise SnapshotError("snapshot digest mismatch (the file is damaged)", len(buf) - DIGEST_SIZE)
    header = _header(buf)
    if header.db_id != db_id:
        raise SnapshotError("snapshot belongs to another database", 12)
    return header


def read_snapshot_header(fs: FileSystem, path: str) -> SnapshotHeader:
    """Parse and check only the 64-byte header. :raises SnapshotError: it is damaged."""
    return _header(fs.read_range(path, 0, HEADER_SIZE))


def verify_snapshot(fs: FileSystem, path: str, db_id: bytes) -> SnapshotHeader:
    """Check a snapshot's bytes without decoding entries: digest, header, chunk CRCs, footer counts.

    Proves the file on disk is the one written; what :func:`read_snapshot`
    additionally checks (CBOR well-formed, no repeated key) the writer
    guarantees by construction. Complexity: O(file size), no allocation per entry.

    :raises SnapshotError: a check fails.
    """
    buf = fs.read(path)
    header = _whole_file(buf, db_id)
    pos, end_of_chunks, chunks, total = HEADER_SIZE, len(buf) - FOOTER_SIZE, 0, 0
    view = memoryview(buf)
    while pos < end_of_chunks:
        length, count, crc = _CHUNK.unpack_from(buf, pos)
        start = pos + _CHUNK.size
        if start + length > end_of_chunks or masked_crc32c(view[start : start + length]) != crc:
            raise SnapshotError("snapshot chunk checksum mismatch", pos)
        chunks, total, pos = chunks + 1, total + count, start + length
    magic, footer_chunks, footer_keys = _FOOTER.unpack_from(buf, end_of_chunks)
    if magic != FOOTER_MAGIC or (footer_chunks, footer_keys, header.keys) != (chunks, total, total):
        raise SnapshotError("snapshot footer mismatch", end_of_chunks)
    return header


def read_snapshot(
    fs: FileSystem, path: str, db_id: bytes, progress: Progress | None = None, into: dict[bytes, Entry] | None = None,
    cold: Any = None,
) -> tuple[SnapshotHeader, dict[bytes, Entry]]:
    """Read and fully verify a snapshot; return its header and the store state it holds.

    :param into: an empty dict (or dict subclass) to fill and return instead of a new dict;
        it is filled through the dict part alone (``dict.update``), as
        :class:`~inmem.sortedmap.SortedMap`'s bulk load needs.
    :param cold: the cold table of ``into`` (:meth:`~inmem.sortedmap.SortedMap.open_cold`):
        the entries go into it instead of the dict part (no Python object per entry).

    Checks, in order: size, xxh3-128 digest of the whole file, header
    (magic, checksum, format version, database id), each chunk's length and
    CRC, the footer, and the key count. Complexity: O(file size).

    :raises SnapshotError: any check fails (``offset`` is where).
    """
    buf = fs.read(path)
    header = _whole_file(buf, db_id)
    state: dict[bytes, Entry] = {} if into is None else into
    pos = HEADER_SIZE
    end_of_chunks = len(buf) - FOOTER_SIZE
    chunks = 0
    total = 0
    while pos < end_of_chunks:
        if pos + _CHUNK.size > end_of_chunks:
            raise SnapshotError("snapshot chunk header truncated", pos)
        length, count, crc = _CHUNK.unpack_from(buf, pos)
        start = pos + _CHUNK.size
        if start + length > end_of_chunks:
            raise SnapshotError("snapshot chunk overruns the file", pos)
        payload = buf[start : start + length]
        if masked_crc32c(payload) != crc:
            raise SnapshotError("snapshot chunk checksum mismatch", pos)
        load = _fast.load_snapshot_chunk  # native: the plain chunk shape straight into the state
        if load is None or load(payload, count, state, cold) < 0:
            try:
                keys, versions, values = cbor2.loads(payload)
            except Exception as exc:  # behind a passing CRC: a bug or a format mismatch
                raise SnapshotError(f"snapshot chunk malformed: {exc}", pos) from None
            if not len(keys) == len(versions) == len(values) == count:
                raise SnapshotError("snapshot chunk entry count mismatch", pos)
            if not (all(type(k) is bytes and len(k) <= _U32_MAX for k in keys)
                    and all(type(v) is bytes and len(v) <= _U32_MAX for v in values)
                    and all(type(n) is int and 1 <= n <= _U64_MAX for n in versions)):
                raise SnapshotError("snapshot chunk malformed: an entry is not (bytes key, version >= 1, bytes value)",
                                    pos)
            if cold is None:
                dict.update(state, zip(keys, zip(versions, values)))
            else:
                for key, version, value in zip(keys, versions, values):
                    cold.load(key, version, value)
        total += count
        chunks += 1
        pos = start + length
        if progress is not None:
            progress("recovery-snapshot", pos, len(buf))
    magic, footer_chunks, footer_keys = _FOOTER.unpack_from(buf, end_of_chunks)
    if magic != FOOTER_MAGIC or footer_chunks != chunks or footer_keys != total or total != header.keys:
        raise SnapshotError(
            f"snapshot footer mismatch ({footer_chunks} chunks/{footer_keys} keys in footer, "
            f"{chunks}/{total} read, {header.keys} in header)",
            end_of_chunks,
        )
    if len(state) != total:
        raise SnapshotError("snapshot holds a key twice", HEADER_SIZE)
    if progress is not None:
        progress("recovery-snapshot", len(buf), len(buf))
    return header, state
