"""Value encoding: Python objects to immutable CBOR ``bytes`` and back (RFC 8949, via cbor2).

This module owns the value format. Invariant: the store only ever holds
``bytes`` produced by :func:`encode_value`; every read decodes a fresh object,
so a caller can never mutate stored state through a returned value.

What round-trips: None, bool, int (any size), float, str, bytes, list, dict,
and the types cbor2 tags natively (timezone-aware ``datetime``, ``date``,
``Decimal``, ``Fraction``, ``UUID``, ``set``/``frozenset``, IP addresses, regex
patterns). Tuples come back as lists. Rejected with :class:`InvalidValue`
before anything is written: other classes, cyclic containers, naive datetimes
(their meaning depends on the reader's clock), and values over
:data:`MAX_VALUE_BYTES`.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any

import cbor2

from .errors import InvalidValue

__all__ = ["MAX_VALUE_BYTES", "decode_value", "encode_value", "now_us", "us_from_utc", "utc_from_us"]

#: Largest encoded value, in bytes. Values live in memory and in one WAL record.
MAX_VALUE_BYTES = 64 * 1024 * 1024  # 64 MiB

_dumps = cbor2.dumps
#: Decode one stored value. Stored bytes were produced by encode_value and are
#: covered by a WAL/snapshot checksum, so decoding cannot fail on intact data.
decode_value = cbor2.loads


def encode_value(value: Any) -> bytes:
    """Encode ``value`` as CBOR bytes.

    Complexity: O(size of value).

    :raises InvalidValue: (also a ``TypeError``) cbor2 cannot encode the value,
        it contains a cycle or a naive datetime, or it encodes to more than
        :data:`MAX_VALUE_BYTES`.
    """
    try:
        data = _dumps(value)
    except (cbor2.CBOREncodeError, TypeError, ValueError, RecursionError) as exc:
        raise InvalidValue(f"value cannot be stored: {exc} (value {value!r:.80})") from None
    if len(data) > MAX_VALUE_BYTES:
        raise InvalidValue(f"value encodes to {len(data)} bytes; the limit is {MAX_VALUE_BYTES}")
    return data


# --- timestamps: records store integer µs since the Unix epoch; the API shows UTC datetimes ---

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_US = _dt.timedelta(microseconds=1)


def now_us() -> int:
    """The current time in µs since the Unix epoch."""
    return time.time_ns() // 1000


def utc_from_us(us: int) -> _dt.datetime:
    """The UTC datetime of a µs timestamp (exact: no float rounding)."""
    return _EPOCH + _dt.timedelta(microseconds=us)


def us_from_utc(ts: _dt.datetime) -> int:
    """The µs timestamp of an aware datetime; inverse of :func:`utc_from_us`."""
    return (ts - _EPOCH) // _US
