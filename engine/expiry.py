"""Time to live: the expiring-value record wrapper and the per-run expiry index keys.

This module owns how a value with a time to live is stored and how the
sweeper finds it (SPEC.md §2 "Time to live"). An expiring value is the
value's own CBOR bytes behind a fixed 22-byte head, together one CBOR item
``tag 26990 [expires_us, ttl_us, value]``:

====== ===== ================================================================
offset bytes  field
====== ===== ================================================================
0      3     ``d9 69 6e``: CBOR tag 26990 (``"in"``; user values can never hold a raw tag)
3      1     ``83``: array of 3
4      9     ``1b`` + expiry, Unix µs UTC, uint64 big-endian
13     9     ``1b`` + the time to live it was set with, µs, uint64 big-endian
22     n     the value, as :func:`inmem.codec.encode_value` made it
====== ===== ================================================================

so a reader tells an expiring value from a plain one by its first three
bytes and reads the expiry without decoding anything, and the whole record
is still one well-formed CBOR item (fixed-width integers are valid, if not
preferred, CBOR). The expiry index is one key per expiring write, below the
run's own prefix so fork, replay and retention treat it like the run's
other records::

    run prefix | TAG_EXPIRY | expires_us (8 bytes, big-endian) | tag | user key  -> b"" (empty)

Its order is expiry order, so a sweep reads exactly the entries that are
due: one range scan, O(log n + due). An entry may be stale (its key was
rewritten since): the sweeper deletes a key only if the record it finds
still carries that expiry. Invariant: every expiring record has its index
entry (written in the same commit); an index entry without its record is
harmless and removed by the next sweep.
"""

from __future__ import annotations

import math

from .errors import CorruptionError, InvalidArgument

__all__ = ["EXPIRING_HEAD", "HEAD_BYTES", "MAX_TTL_S", "check_ttl", "expiry_entry", "parse_expiry_entry",
           "unwrap", "wrap"]

#: The first bytes of every expiring value: CBOR tag 26990, then an array of 3.
EXPIRING_HEAD = b"\xd9\x69\x6e\x83"
#: Bytes before the value: the head, then two fixed-width uint64 (expiry, ttl).
HEAD_BYTES = 22
#: Longest time to live, in seconds (about 100 years): expiries stay far inside uint64 µs.
MAX_TTL_S = 100 * 365.25 * 86400
_TAG3 = EXPIRING_HEAD[:3]
_U64 = b"\x1b"


def check_ttl(ttl: object) -> int | None:
    """``ttl`` (seconds, int or float, > 0, finite, at most :data:`MAX_TTL_S`; None: no expiry) as µs (>= 1).

    :raises InvalidArgument: anything else (bools included).
    """
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) \
            or not 0 < ttl <= MAX_TTL_S:
        raise InvalidArgument(f"ttl is a number of seconds > 0 and at most {MAX_TTL_S:.0f}, or None; got {ttl!r:.40}")
    return max(1, int(ttl * 1_000_000))


def wrap(value: bytes, expires_us: int, ttl_us: int) -> bytes:
    """The stored bytes of ``value`` (an encoded value) expiring at ``expires_us`` (Unix µs), set with ``ttl_us``."""
    return EXPIRING_HEAD + _U64 + expires_us.to_bytes(8, "big") + _U64 + ttl_us.to_bytes(8, "big") + value


def unwrap(stored: bytes) -> tuple[int | None, int | None, bytes]:
    """``(expires_us, ttl_us, value bytes)`` of a stored value; ``(None, None, stored)`` if it does not expire.

    O(1) for a plain value (three bytes compared). :raises CorruptionError: an expiring head that is cut
    short or malformed.
    """
    if stored[:3] != _TAG3:
        return None, None, stored
    if len(stored) <= HEAD_BYTES or stored[3:5] != b"\x83\x1b" or stored[13:14] != _U64:
        raise CorruptionError(f"an expiring value's head is malformed: {stored[:HEAD_BYTES]!r}")
    return int.from_bytes(stored[5:13], "big"), int.from_bytes(stored[14:22], "big"), stored[HEAD_BYTES:]


def expiry_entry(expires_us: int, tag: int, user_key: bytes) -> bytes:
    """The expiry index's key suffix (after ``run prefix | TAG_EXPIRY``) for a record of ``tag``/``user_key``."""
    return expires_us.to_bytes(8, "big") + bytes([tag]) + user_key


def parse_expiry_entry(suffix: bytes) -> tuple[int, int, bytes]:
    """``(expires_us, tag, user key)`` of an expiry index key suffix. :raises CorruptionError: too short."""
    if len(suffix) < 9:
        raise CorruptionError(f"expiry index key {suffix!r:.80} is too short")
    return int.from_bytes(suffix[:8], "big"), suffix[8], suffix[9:]
