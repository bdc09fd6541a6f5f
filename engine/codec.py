"""Value encoding: Python objects to immutable CBOR ``bytes`` and back (RFC 8949, via cbor2).

This module owns the value format and decides which values may be stored.
Invariants: the store only ever holds ``bytes`` produced by
:func:`encode_value`; :func:`encode_value` never returns bytes that
:func:`decode_value` cannot decode (a value is checked before it reaches
``cbor2.dumps`` and decoded once after); every read decodes a fresh object, so
a caller can never mutate stored state through a returned value.

Accepted (an allow-list; everything else raises :class:`InvalidValue` before
anything is written):

* scalars: None, bool, int (any size), float (NaN, ±inf and -0.0 included),
  str, bytes, and ``bytearray`` (comes back as ``bytes``);
* containers: list, tuple (comes back as a list; as a dict key or set member
  it comes back as a tuple), dict, set, frozenset (comes back as a set;
  frozenset as a dict key or set member);
* natively tagged types, exact classes only: timezone-aware ``datetime``
  (comes back with a fixed UTC offset), ``date``, finite ``Decimal``,
  ``Fraction``, ``UUID``, IPv4/IPv6 addresses, networks (without an IPv6
  scope) and interfaces, and compiled ``re`` patterns whose flags are those
  of the pattern text alone (``re.compile("(?i)a")`` yes,
  ``re.compile("a", re.I)`` no: the flag would be lost);
* subclasses of str, int, float and bytes (come back as the base type, e.g.
  ``IntEnum`` members as ``int``), and subclasses of the containers that do
  not override how they are iterated (``defaultdict``, ``Counter``, named
  tuples; ``OrderedDict``): they come back as the base type.

Refused: any other class (``cbor2.CBORTag``, ``CBORSimpleValue``,
``undefined``, ``complex``, ``memoryview``, ``time``, ``timedelta``, user
classes...), naive datetimes (their meaning depends on the reader's clock),
non-finite ``Decimal`` (it would come back as a float), containers nested more
than :data:`MAX_DEPTH` deep, cyclic containers (reported as too deep), and
values over :data:`MAX_VALUE_BYTES`.
"""

from __future__ import annotations

import collections as _collections
import datetime as _dt
import decimal as _decimal
import fractions as _fractions
import ipaddress as _ip
import itertools as _itertools
import re as _re
import reprlib as _reprlib
import time
import uuid as _uuid
import weakref as _weakref
from typing import Any, Callable

import cbor2

from . import native
from .errors import CorruptionError, InvalidValue

__all__ = [
    "MAX_DEPTH",
    "MAX_VALUE_BYTES",
    "check_value",
    "decode_value",
    "encode_record",
    "encode_value",
    "now_us",
    "us_from_utc",
    "utc_from_us",
]

#: Largest encoded value, in bytes. Values live in memory and in one WAL record.
MAX_VALUE_BYTES = 64 * 1024 * 1024  # 64 MiB

#: Deepest container nesting a value may have: a scalar is depth 0, ``[1]`` is
#: 1, ``{"a": [1]}`` is 2 (a tuple used as a dict key counts as one level below
#: the dict). cbor2's decoder refuses more than 400 levels and counts a tagged
#: container (set, frozenset) as 2, so 128 user levels plus the record map the
#: engine wraps around event payloads, state values, trace content and run
#: metadata (1-2 levels, counted against this limit) always decode.
MAX_DEPTH = 128

_dumps = cbor2.dumps
_loads = cbor2.loads
#: The native decoder of the common CBOR subset (``native/inmem_cbor.c``): ``cbor2.loads``'s result,
#: or ``NotImplemented`` for anything outside the subset (then cbor2 decodes it). None: pure path.
_fast_loads: Callable[[bytes], Any] | None = native.builtins().get("decode_value")
#: The native encoder of plain values (same file): ``fast_dumps(value, limit)`` -> ``cbor2.dumps(value)``
#: for values of exact None/bool/int/float/str/bytes/list/dict encoding to at most ``limit`` bytes, or
#: ``NotImplemented`` for anything else (then the check and cbor2 below decide). None: pure path.
_fast_dumps: Callable[[Any, int], Any] | None = native.builtins().get("encode_value")

# --- the allow-list ---------------------------------------------------------------------------

_SCALAR, _SEQ, _MAP = 0, 1, 2

#: Types the walk skips at no cost (exact types; subclasses go through _kind_of_subclass).
_SCALAR_TYPES = frozenset({str, int, float, bool, type(None), bytes})


def _check_datetime(v: _dt.datetime) -> None:
    if v.utcoffset() is None:
        raise InvalidValue(
            f"naive datetime {_short(v)}: give it a tzinfo (its meaning would depend on the reader's clock)")


def _check_decimal(v: _decimal.Decimal) -> None:
    if not v.is_finite():
        raise InvalidValue(f"non-finite Decimal {_short(v)} cannot be stored (it would come back as a float)")


def _check_pattern(v: _re.Pattern[Any]) -> None:
    if v.flags != _re.compile(v.pattern).flags:
        raise InvalidValue(
            f"regex {_short(v)} has flags outside its pattern text, which would be lost; write them inline, e.g. (?i)")


def _check_ip_network(v: _ip.IPv6Network) -> None:
    if v.network_address.scope_id is not None:
        raise InvalidValue(f"IPv6 network with a scope id {_short(v)} cannot be stored (the scope would be lost)")


def _no_check(v: Any) -> None:
    return None


#: kind of every accepted exact type: _SCALAR / _SEQ / _MAP, or a leaf check (callable).
_KINDS: dict[type, Any] = {t: _SCALAR for t in _SCALAR_TYPES}
_KINDS.update({bytearray: _SCALAR, list: _SEQ, tuple: _SEQ, set: _SEQ, frozenset: _SEQ, dict: _MAP})
_LEAF_CHECKS: dict[type, Callable[[Any], None]] = {
    _dt.datetime: _check_datetime,
    _dt.date: _no_check,
    _decimal.Decimal: _check_decimal,
    _fractions.Fraction: _no_check,
    _uuid.UUID: _no_check,
    _ip.IPv4Address: _no_check,
    _ip.IPv6Address: _no_check,
    _ip.IPv4Network: _no_check,
    _ip.IPv6Network: _check_ip_network,
    _ip.IPv4Interface: _no_check,
    _ip.IPv6Interface: _no_check,
    _re.Pattern: _check_pattern,
}
_KINDS.update(_LEAF_CHECKS)

#: Container bases a subclass may extend, with the methods it must not override (cbor2 reads
#: some containers through these and some through the object's internals; when they agree the
#: walk sees exactly what is encoded).
_ITERATION = ("__iter__", "__len__", "__getitem__", "items", "keys", "values")
_CONTAINER_BASES = (
    (_collections.OrderedDict, _MAP), (dict, _MAP), (list, _SEQ), (tuple, _SEQ), (set, _SEQ), (frozenset, _SEQ),
)
_SUBCLASS_KINDS: _weakref.WeakKeyDictionary[type, Any] = _weakref.WeakKeyDictionary()


def _kind_of_subclass(t: type) -> Any:
    """Kind of a type not in _KINDS (a subclass of an accepted type), or None if refused. Cached."""
    try:
        return _SUBCLASS_KINDS[t]
    except (KeyError, TypeError):
        pass
    kind: Any = None
    if issubclass(t, (str, int, float, bytes)):  # cbor2 encodes these from the C-level value
        kind = _SCALAR
    else:
        for base, base_kind in _CONTAINER_BASES:
            if issubclass(t, base):
                if all(getattr(t, m, None) is getattr(base, m, None) for m in _ITERATION):
                    kind = base_kind
                break
    try:
        _SUBCLASS_KINDS[t] = kind
    except TypeError:
        pass
    return kind


_REPR = _reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


def _short(v: Any) -> str:
    """A bounded repr for error messages (never recurses deeply, never raises)."""
    try:
        return _REPR.repr(v)
    except Exception:
        return f"<{type(v).__qualname__} object>"


def _refuse_type(v: Any) -> InvalidValue:
    t = type(v)
    if isinstance(v, (list, tuple, set, frozenset, dict)):
        why = "a container subclass that overrides iteration"
    elif t in (cbor2.CBORTag, cbor2.CBORSimpleValue) or v is cbor2.undefined:
        why = "raw CBOR tags and simple values are not accepted"
    elif isinstance(v, tuple(_LEAF_CHECKS)):
        why = "only the exact class is accepted, not a subclass"
    else:
        why = "not an accepted type"
    return InvalidValue(f"cannot store a {t.__module__}.{t.__qualname__} ({why}): {_short(v)}")


def check_value(value: Any, *, nesting: int = 0) -> bool:
    """Check that ``value`` may be stored (see the module docstring), without encoding it.

    ``nesting``: how many containers the value will be stored inside (an
    event payload inside its record: 1); its own depth counts from there.
    Returns whether it holds a tagged type or a subclass, which
    :func:`encode_record` then verifies by decoding.

    Iterative, level by level (no recursion, so any nesting is checked
    safely). Complexity: O(number of objects in ``value``); a scalar is O(1).

    :raises InvalidValue: a type outside the allow-list, a naive datetime, a
        non-finite Decimal, a regex with non-inline flags, nesting deeper than
        :data:`MAX_DEPTH` (which a cycle always is), or more elements than
        :data:`MAX_VALUE_BYTES` (each encodes to at least one byte).
    """
    return _walk(value, nesting)


def _too_deep() -> InvalidValue:
    return InvalidValue(f"value nests containers more than MAX_DEPTH={MAX_DEPTH} deep, or contains a cycle")


def _too_big() -> InvalidValue:
    return InvalidValue(f"value has too many elements: it would encode to more than {MAX_VALUE_BYTES} bytes")


_LONG = 16  # above this many elements, first test "all scalars" with one C-level pass


def _walk(value: Any, depth: int = 0) -> bool:
    """check_value's walk; True if ``value`` holds a tagged type or a subclass (see encode_value).

    Breadth-first, one level of nesting at a time (``level`` holds the objects
    below ``depth`` containers that are not exact scalars), so it needs no
    recursion and stops at the first level deeper than :data:`MAX_DEPTH`,
    however deep (or cyclic) the value is.
    """
    scalars = _SCALAR_TYPES
    t = type(value)
    if t in scalars:
        return False
    if t is dict and len(value) <= _LONG:  # fast path: a small flat dict, the common put
        for x in value:
            if type(x) not in scalars:
                break
        else:
            for x in value.values():
                if type(x) not in scalars:
                    break
            else:
                return False
    all_scalar = scalars.issuperset
    budget = MAX_VALUE_BYTES  # each element encodes to >= 1 byte
    special = False
    level: list[Any] = [value]
    while level:
        below: list[Any] = []
        add = below.append
        too_deep = depth >= MAX_DEPTH  # a container in ``level`` would be nested one deeper
        for obj in level:
            t = type(obj)
            if t is dict:
                if too_deep:
                    raise _too_deep()
                budget -= 2 * len(obj)
                if budget < 0:
                    raise _too_big()
                values = obj.values()
                if len(obj) <= _LONG:
                    for x in obj:
                        if type(x) not in scalars:
                            add(x)
                    for x in values:
                        if type(x) not in scalars:
                            add(x)
                    continue
                if not all_scalar(map(type, obj)):
                    for x in obj:
                        if type(x) not in scalars:
                            add(x)
                if not all_scalar(map(type, values)):
                    for x in values:
                        if type(x) not in scalars:
                            add(x)
                continue
            if t is list or t is tuple:
                if too_deep:
                    raise _too_deep()
                budget -= len(obj)
                if budget < 0:
                    raise _too_big()
                if len(obj) <= _LONG or not all_scalar(map(type, obj)):
                    for x in obj:
                        if type(x) not in scalars:
                            add(x)
                continue
            kind = _KINDS.get(t)
            if kind is None:  # not an exact accepted type: maybe an accepted subclass
                kind = _kind_of_subclass(t)
                if kind is None:
                    raise _refuse_type(obj)
            if kind is _SCALAR and t is bytearray:
                continue
            special = True  # anything else cbor2 encodes with a tag or through a subclass
            if kind is _SCALAR:
                continue
            if kind is _SEQ or kind is _MAP:
                if too_deep:
                    raise _too_deep()
                if kind is _SEQ:
                    budget -= len(obj)
                    children: Any = iter(obj)
                else:  # through dict's own methods: what cbor2 reads for a dict subclass
                    budget -= 2 * len(obj)
                    children = _itertools.chain(dict.keys(obj), dict.values(obj))
                if budget < 0:
                    raise _too_big()
                for x in children:
                    if type(x) not in scalars:
                        add(x)
            else:  # a tagged type: its own check
                kind(obj)
        depth += 1
        level = below
    return special


def encode_value(value: Any) -> bytes:
    """Encode ``value`` (see the module docstring for what is accepted) as CBOR bytes.

    The value is checked first (:func:`check_value`), so nothing too deep or of
    a refused type ever reaches cbor2. A value holding a tagged type (datetime,
    Decimal, set, ...) or a subclass is then decoded once more (C speed), so
    bytes that fail to decode can never be returned even if cbor2 changes;
    plain JSON-like values skip that (their decoding follows from the check).
    Complexity: O(size of value); a top-level scalar skips the check and a
    small flat dict of scalars takes a short loop. With the C hot path, a
    plain value (exact None, bool, int within 64 bits, float but NaN, str,
    bytes, list, dict; ``native/inmem_cbor.c``) is checked and encoded in one
    C call, byte-identical to ``cbor2.dumps`` (~4x faster for a 100-byte
    dict); anything else takes the Python path below, with its errors.

    :raises InvalidValue: (also a ``TypeError``) the value is refused by
        :func:`check_value`, cbor2 cannot encode it (e.g. a str with a lone
        surrogate), or it encodes to more than :data:`MAX_VALUE_BYTES`.
    """
    fast = _fast_dumps
    if fast is not None:
        data = fast(value, MAX_VALUE_BYTES)  # plain values in C: the bytes cbor2.dumps gives
        if data is not NotImplemented:
            return data
    t = type(value)
    if t in _SCALAR_TYPES:  # fast path: nothing to walk, nothing tagged
        if (t is str or t is bytes) and len(value) > MAX_VALUE_BYTES:
            raise InvalidValue(f"value is longer than {MAX_VALUE_BYTES} bytes")
        verify = False
    else:
        verify = _walk(value)
    return _encode(value, verify)


def _encode(value: Any, verify: bool) -> bytes:
    """cbor2-encode a checked value; with ``verify``, decode it once more (see :func:`encode_value`)."""
    try:
        data = _dumps(value)
    except (cbor2.CBORError, TypeError, ValueError, RecursionError, OverflowError) as exc:
        raise InvalidValue(f"value cannot be stored: {exc} (value {_short(value)})") from None
    if len(data) > MAX_VALUE_BYTES:
        raise InvalidValue(f"value encodes to {len(data)} bytes; the limit is {MAX_VALUE_BYTES}")
    if verify:
        try:
            _loads(data)
        except MemoryError:
            raise
        except Exception as exc:  # a check above missed something: refuse rather than store it
            raise InvalidValue(f"value does not decode back after encoding: {exc} (value {_short(value)})") from None
    return data


def encode_record(record: dict[str, Any], verify: bool) -> bytes:
    """Encode an engine-built record without walking it again: its user-supplied parts have passed
    :func:`check_value` with ``nesting=1`` and every other field is a scalar the engine made.

    ``verify``: any of those checks returned True (the bytes are then decoded
    once more, as :func:`encode_value` does). Saves the second walk of a
    payload that was checked before it was hashed (the event log).

    :raises InvalidValue: cbor2 cannot encode it, or it encodes to more than :data:`MAX_VALUE_BYTES`.
    """
    return _encode(record, verify)


def decode_value(data: bytes) -> Any:
    """Decode one stored value (bytes made by :func:`encode_value`) into a fresh object.

    With the C hot path, values made only of ints, strings, bytes, lists,
    dicts, bools, None and floats are decoded in C (``native/inmem_cbor.c``:
    ``cbor2.loads``'s exact result, ~2.5x faster on a 100-byte dict); anything
    else (tags, NaN, ...) and every error is cbor2's. Complexity: O(len(data)).

    :raises CorruptionError: ``data`` is not one decodable CBOR value (stored
        bytes are checksummed, so this means damage the checksums missed or
        bytes not written by :func:`encode_value`).
    """
    fast = _fast_loads
    if fast is not None:
        value = fast(data)  # the common subset in C; MemoryError is the only error it raises
        if value is not NotImplemented:
            return value
    try:
        return _loads(data)
    except MemoryError:
        raise
    except Exception as exc:
        raise CorruptionError(f"stored value does not decode: {type(exc).__name__}: {exc}") from None


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
