"""CRC-32C checksums and LevelDB's CRC mask.

This module owns the checksum used by every on-disk format in inmem: CRC-32C
(Castagnoli polynomial, as in iSCSI, ext4 and LevelDB), computed by the
maintained ``crc32c`` package, which uses the CPU's CRC instruction where there
is one.

The optional C extension (``inmem._native``, see :mod:`inmem.native`) has
its own CRC-32C, which the WAL frame checks in :mod:`inmem.wal.format` use
from C. It is deliberately not used here: calling it through cffi costs more
per call than calling the ``crc32c`` package (measured: about 200 ns against
125 ns for 24 to 200 bytes, and no faster at 4 KiB), so these functions always
use the package. Both compute the same standard CRC-32C, so results are
identical either way.

Why mask: a CRC over a buffer that itself *contains* CRCs (a WAL frame whose
payload is a record that embeds checksummed data, or a file of frames copied
into another file) is weak — the CRC of a string with its own CRC appended is
a constant. Storing ``mask(crc)`` instead of ``crc`` breaks that, as LevelDB's
``crc32c::Mask`` does: rotate right by 15 bits and add a constant.
"""

from __future__ import annotations

from crc32c import crc32c as _crc32c

__all__ = ["crc32c", "mask", "masked_crc32c", "unmask"]

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """Return the CRC-32C of ``data``, continuing from ``crc`` (0 to start)."""
    return _crc32c(data, crc)


def mask(crc: int) -> int:
    """Return the masked form of a CRC (LevelDB ``crc32c::Mask``)."""
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def unmask(masked: int) -> int:
    """Invert :func:`mask`."""
    rot = (masked - _MASK_DELTA) & _U32
    return ((rot >> 17) | (rot << 15)) & _U32


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """Return ``mask(crc32c(data))``: the value stored in every inmem checksum field."""
    c = _crc32c(data)
    return ((((c >> 15) | (c << 17)) & _U32) + _MASK_DELTA) & _U32
