"""The IDENTITY file: which database a directory holds, written once at creation.

This module owns the 40-byte ``IDENTITY`` file. Its database id is repeated in
every WAL segment header, so a segment copied in from another database (a
"foreign" segment) is detected instead of replayed. Invariant: IDENTITY is
written before any segment (temporary name, fsync, rename, directory fsync),
so a directory holding segments but no IDENTITY is damaged, never "new".

Layout (little-endian; SPEC.md "IDENTITY")::

    magic "INMEMID\\0" 8 | format version u32 | database id 16 | created µs i64 | masked crc32c u32
"""

from __future__ import annotations

import os
import struct
import time
import uuid
from typing import NamedTuple

from .checksum import masked_crc32c
from .errors import CorruptionError
from .fs import FileSystem, write_atomically
from .wal.format import FORMAT_VERSION

__all__ = ["IDENTITY_FILE", "Identity", "create_identity", "new_database_id", "read_identity"]

IDENTITY_FILE = "IDENTITY"
_MAGIC = b"INMEMID\0"
_BODY = struct.Struct("<8sI16sq")
_SIZE = _BODY.size + 4  # 40


class Identity(NamedTuple):
    format_version: int
    db_id: bytes
    created_us: int


def new_database_id() -> bytes:
    """16 random bytes shaped as a UUIDv4, from ``os.urandom``.

    Not ``uuid.uuid4()``: programs and test suites patch it for deterministic
    ids, and opening a database must not consume or depend on them.
    """
    return uuid.UUID(bytes=os.urandom(16), version=4).bytes


def create_identity(fs: FileSystem, dirpath: str) -> Identity:
    """Write a new IDENTITY durably and return it."""
    ident = Identity(FORMAT_VERSION, new_database_id(), time.time_ns() // 1000)
    body = _BODY.pack(_MAGIC, *ident)
    data = body + struct.pack("<I", masked_crc32c(body))
    write_atomically(fs, dirpath, IDENTITY_FILE, lambda f: f.write(data))
    return ident


def read_identity(fs: FileSystem, dirpath: str) -> Identity:
    """Read and check IDENTITY.

    :raises CorruptionError: the file is short, has the wrong magic, fails its
        checksum, or has a format version newer than this build reads.
    """
    path = os.path.join(dirpath, IDENTITY_FILE)
    buf = fs.read(path)
    if len(buf) != _SIZE:
        raise CorruptionError(f"IDENTITY is {len(buf)} bytes, expected {_SIZE}", path=path, offset=0)
    magic, version, db_id, created = _BODY.unpack_from(buf)
    if magic != _MAGIC:
        raise CorruptionError("IDENTITY has the wrong magic: not an inmem database", path=path, offset=0)
    if struct.unpack_from("<I", buf, _BODY.size)[0] != masked_crc32c(buf[: _BODY.size]):
        raise CorruptionError("IDENTITY checksum mismatch", path=path, offset=_BODY.size)
    if version > FORMAT_VERSION:
        raise CorruptionError(
            f"database has format version {version}; this build reads up to {FORMAT_VERSION} "
            "(open it with a newer inmem)",
            path=path,
            offset=8,
        )
    return Identity(version, db_id, created)
