"""The native value codec (``native/inmem_cbor.c``) gives exactly what cbor2 gives, or declines.

Encoder: ``encode_value(value, limit)`` is either ``NotImplemented`` or the
bytes ``cbor2.dumps(value)`` returns, and takes every plain value (so
:func:`inmem.codec.encode_value` gives the same bytes, or raises the same
error, with and without it). Checked on hypothesis values, the edges of each
type and the values the Python path refuses.

Its contract: for any input, ``decode_value(data)`` is either ``NotImplemented``
(declined: :func:`inmem.codec.decode_value` then asks cbor2, which decides
every error) or an object of the same types and bit-equal value as
``cbor2.loads(data)``. Checked here on values ``encode_value`` makes
(hypothesis), on random and mutated bytes (anything it takes, cbor2 must
take alike), and on the edges by hand: every half float, integer bounds,
duplicate keys, trailing bytes, depth, tags, indefinite lengths, bad UTF-8.
And that it does take the common values (a decoder that declined everything
would pass the rest), and leaks nothing on a declined half-built value.
Skipped when the extension is not built or ``INMEM_PURE=1``.
"""

from __future__ import annotations

import math
import struct
import tracemalloc

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inmem import codec, native
from inmem.errors import CorruptionError, InvalidValue

fast = native.builtins().get("decode_value")
fast_dumps = native.builtins().get("encode_value")
pytestmark = pytest.mark.skipif(fast is None or fast_dumps is None, reason="native codec not built or INMEM_PURE=1")


def same(a: object, b: object) -> bool:
    """Same types all the way down, floats bit-equal (so -0.0 and NaN count), dicts in the same order."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return struct.pack(">d", a) == struct.pack(">d", b)  # type: ignore[arg-type]
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))  # type: ignore[arg-type]
    if type(a) is dict:
        ia, ib = list(a.items()), list(b.items())  # type: ignore[attr-defined]
        return len(ia) == len(ib) and all(same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in zip(ia, ib))
    return a == b


def check(data: bytes) -> object:
    """Assert the contract on ``data``; return what the native decoder returned."""
    got = fast(data)
    if got is not NotImplemented:
        assert same(got, cbor2.loads(data)), (data.hex(), got)
    return got


scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False), st.text(),
    st.binary(max_size=40),
)
key = st.one_of(st.text(max_size=12), st.integers(-(2**63), 2**64 - 1), st.booleans(), st.none(),
                st.floats(allow_nan=False), st.binary(max_size=8))
common = st.recursive(scalar, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(key, inner, max_size=6),
                      max_leaves=30)


@given(common)
@settings(max_examples=400, deadline=None)
def test_common_values_are_decoded_natively_as_cbor2_decodes_them(value):
    data = codec.encode_value(value)
    got = check(data)
    assert got is not NotImplemented, data.hex()  # the subset is taken, not declined
    assert same(codec.decode_value(data), cbor2.loads(data))


anything = st.recursive(
    scalar | st.floats() | st.integers() | st.datetimes(timezones=st.just(__import__("datetime").timezone.utc))
    | st.decimals(allow_nan=False, allow_infinity=False) | st.uuids(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(key, inner, max_size=4)
    | st.frozensets(st.integers(), max_size=3) | st.tuples(inner, inner), max_leaves=20)


@given(anything)
@settings(max_examples=400, deadline=None)
def test_every_storable_value_decodes_as_cbor2_decodes_it(value):
    data = codec.encode_value(value)
    check(data)  # tagged ones are declined, the rest match
    assert same(codec.decode_value(data), cbor2.loads(data))


@given(st.binary(max_size=64))
@settings(max_examples=3000, deadline=None)
def test_random_bytes_are_declined_or_decoded_as_cbor2_does(data):
    check(data)


@given(common, st.data())
@settings(max_examples=600, deadline=None)
def test_mutated_encodings_are_declined_or_decoded_as_cbor2_does(value, draw):
    data = bytearray(codec.encode_value(value))
    for _ in range(draw.draw(st.integers(1, 3))):
        op = draw.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = draw.draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] ^= 1 << draw.draw(st.integers(0, 7))
        elif op == "cut":
            del data[i:]
        else:
            data[i:i] = bytes([draw.draw(st.integers(0, 255))])
    check(bytes(data))


def test_every_half_float_matches_cbor2_and_nan_is_declined():
    taken = 0
    for h in range(1 << 16):
        data = b"\xf9" + h.to_bytes(2, "big")
        got = check(data)
        if got is NotImplemented:
            assert math.isnan(cbor2.loads(data)), hex(h)
        else:
            taken += 1
    assert taken == (1 << 16) - 2 * 1023  # every half but the NaNs


def test_single_and_double_floats_match_cbor2_and_nan_is_declined():
    for bits in (0, 0x80000000, 0x3F800000, 0x7F800000, 0xFF800000, 0x00000001, 0x7F7FFFFF, 0x7FC00000, 0x7F800001):
        data = b"\xfa" + bits.to_bytes(4, "big")
        got = check(data)
        assert (got is NotImplemented) == math.isnan(cbor2.loads(data))
    for value in (0.0, -0.0, 1.5, -1e308, 5e-324, math.inf, -math.inf):
        assert same(check(b"\xfb" + struct.pack(">d", value)), value)
    assert fast(b"\xfb" + struct.pack(">d", math.nan)) is NotImplemented
    assert fast(cbor2.dumps(math.nan)) is NotImplemented  # cbor2 writes NaN as a half


def test_integer_bounds():
    for value in (0, 23, 24, 255, 256, 2**32, 2**64 - 1, -1, -24, -25, -(2**63)):
        assert same(check(cbor2.dumps(value)), value)
    assert fast(cbor2.dumps(-(2**63) - 1)) is NotImplemented  # a valid head, beyond long long
    assert fast(cbor2.dumps(2**64)) is NotImplemented  # a bignum tag
    assert check(bytes.fromhex("1805")) == 5  # a non-minimal head is taken, as cbor2 takes it


def test_cbor2_quirks_are_kept():
    assert check(bytes.fromhex("a2616101616102")) == {"a": 2}  # a duplicate key: the last wins
    assert check(bytes.fromhex("0102")) == 1  # bytes after the first item are ignored
    got = check(bytes.fromhex("a3f5010102f40a"))  # {true: 1, 1: 2, false: 10}
    assert got == {True: 2, False: 10} and list(got) == [True, False]  # True and 1: one key, the first kept


@pytest.mark.parametrize("hexdata", [
    "c11a514b67b0",  # a tag (epoch datetime)
    "9f01ff", "bf6161ff", "5f41ff", "7f6161ff",  # indefinite lengths
    "f7", "f0", "f818",  # undefined, simple values
    "ff", "1c", "3e",  # a break, reserved additional information
    "a18101f5",  # an array as a map key (cbor2 makes a tuple)
    "a1a0f5f5",  # a map as a map key
    "62c328",  # invalid UTF-8
    "", "19", "1a0102", "43616263"[:6], "82", "a1",  # truncated
])
def test_declined(hexdata):
    data = bytes.fromhex(hexdata)
    assert fast(data) is NotImplemented
    check(data)


def test_depth_past_the_limit_is_declined_and_cbor2_decides():
    assert fast(b"\x81" * 200 + b"\x01") is not NotImplemented
    assert fast(b"\x81" * 201 + b"\x01") is NotImplemented
    with pytest.raises(CorruptionError):
        codec.decode_value(b"\x81" * 5000 + b"\x01")  # cbor2 refuses it: the same error as the pure path


def test_only_exact_bytes_is_taken():
    data = cbor2.dumps({"a": 1})
    for other in (bytearray(data), memoryview(data), "a1616101", 5, None):
        assert fast(other) is NotImplemented


def test_a_declined_half_built_value_leaks_nothing():
    # [1, "two", {"three": [b"four", <tag 1>]}]: a list, a dict and a list already hold items when the tag turns up
    bad = bytes.fromhex("83" "01" "6374776f" "a1" "657468726565" "82" "44666f7572" "c101")
    assert fast(bad) is NotImplemented
    tracemalloc.start()
    try:
        for _ in range(2000):
            fast(bad)
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20000):
            fast(bad)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 4096, after - before


def test_decode_value_returns_fresh_objects():
    data = codec.encode_value({"a": [1, 2]})
    first, second = codec.decode_value(data), codec.decode_value(data)
    assert first == second and first is not second and first["a"] is not second["a"]


# --- the encoder ---------------------------------------------------------------------------------


def dumps_checked(value: object, limit: int = codec.MAX_VALUE_BYTES) -> object:
    """Assert the encoder's contract on ``value``; return what it returned."""
    got = fast_dumps(value, limit)
    if got is not NotImplemented:
        assert type(got) is bytes and got == cbor2.dumps(value), (value, got)
    return got


def python_path(value: object) -> tuple[str, object]:
    """``codec.encode_value(value)`` without the native encoder: ("ok", bytes) or ("err", exception type)."""
    saved = codec._fast_dumps  # noqa: SLF001 - the switch this test compares across
    codec._fast_dumps = None  # noqa: SLF001
    try:
        return "ok", codec.encode_value(value)
    except Exception as exc:  # noqa: BLE001 - compared below
        return "err", type(exc)
    finally:
        codec._fast_dumps = saved  # noqa: SLF001


def native_path(value: object) -> tuple[str, object]:
    try:
        return "ok", codec.encode_value(value)
    except Exception as exc:  # noqa: BLE001 - compared below
        return "err", type(exc)


@given(common)
@settings(max_examples=400, deadline=None)
def test_plain_values_are_encoded_natively_byte_identical_to_cbor2(value):
    got = dumps_checked(value)
    assert got is not NotImplemented, value  # taken, not declined
    assert same(cbor2.loads(got), cbor2.loads(cbor2.dumps(value)))


@given(anything)
@settings(max_examples=400, deadline=None)
def test_encode_value_gives_the_same_bytes_with_and_without_the_native_encoder(value):
    dumps_checked(value)
    assert native_path(value) == python_path(value)


@pytest.mark.parametrize("value", [
    math.nan, [1, math.nan], (1, 2), {1, 2}, frozenset(), {(1, 2): 3}, 2**64, -(2**63) - 1, "\ud800",
    {"a": "x\udfff"}, bytearray(b"x"), memoryview(b"x"), __import__("enum").IntEnum("E", "A").A,
    type("S", (str,), {})("s"), __import__("collections").OrderedDict(a=1), __import__("datetime").date(2026, 1, 1),
    __import__("decimal").Decimal("1.5"), object(), complex(1, 2), [[[[1]]]] * 2 + [object()],
])
def test_declined_values_take_the_python_path_with_its_result(value):
    assert fast_dumps(value, codec.MAX_VALUE_BYTES) is NotImplemented
    assert native_path(value) == python_path(value)


def test_edges_of_each_type():
    for value in (None, True, False, 0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1, -1, -24, -25,
                  -256, -257, -(2**63), 0.0, -0.0, 1.5, math.inf, -math.inf, 5e-324, "", "é" * 30, "x" * 65536,
                  b"", b"\x00" * 300, [], {}, [None] * 24, {str(i): i for i in range(30)}):
        assert dumps_checked(value) is not NotImplemented, value


def test_depth_and_size_limits_decline():
    nested: list = []
    for _ in range(99):
        nested = [nested]
    assert dumps_checked(nested) is not NotImplemented  # 100 levels deep
    assert fast_dumps([nested], codec.MAX_VALUE_BYTES) is NotImplemented  # 101: the Python check decides
    cyclic: list = []
    cyclic.append(cyclic)
    assert fast_dumps(cyclic, codec.MAX_VALUE_BYTES) is NotImplemented
    assert native_path(cyclic) == python_path(cyclic) == ("err", InvalidValue)
    assert dumps_checked("abc", 4) == b"\x63abc"
    assert fast_dumps("abcd", 4) is NotImplemented  # 5 bytes: over the limit given
    with pytest.raises(TypeError):
        fast_dumps("abc")
