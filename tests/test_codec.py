"""The value codec: what may be stored, and that nothing stored can fail to decode.

An adversarial review found values that cbor2 encodes but cannot decode (a
list nested 401 deep, ``cbor2.CBORTag(1, "x")``): accepted, they bricked every
later open (run metadata is decoded at open) or made ``kv.get`` raise a raw
cbor2 error; nesting 200,000 deep crashed the process inside ``cbor2.dumps``.
These tests pin the fix: an allow-list and :data:`MAX_DEPTH`, checked before
anything is encoded or written, through every primitive that stores user data.
"""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import enum
import fractions
import ipaddress
import math
import re
import subprocess
import sys
import textwrap
import uuid
import zoneinfo
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from inmem import CorruptionError, Database, InvalidValue
from inmem import testing
from inmem import codec
from inmem.keys import TAG_KV, run_id_bytes, run_prefix
from inmem.codec import MAX_DEPTH, check_value, decode_value, encode_value
from tests.conftest import ROOT, assert_refused_unwritten

UTC = dt.timezone.utc


def nest(n: int, leaf: Any = 1, wrap=lambda v: [v]) -> Any:
    """``leaf`` inside ``n`` containers (iteratively: no recursion, any n)."""
    v = leaf
    for _ in range(n):
        v = wrap(v)
    return v


# --- the exact repros, through the public API -----------------------------------------------

# (name, call) — each stored user data that encoded but could not be decoded before the fix
REPROS = [
    ("run metadata nested 401 deep", lambda db, run: db.begin_run(metadata={"t": nest(401)})),
    ("run metadata holding a CBORTag", lambda db, run: db.begin_run(metadata={"t": cbor2.CBORTag(1, "x")})),
    ("kv value CBORTag(1, 'x')", lambda db, run: db.kv.put(run, "k", cbor2.CBORTag(1, "x"))),
    ("kv value nested 401 deep", lambda db, run: db.kv.put(run, "k", nest(401))),
    ("event payload nested 401 deep", lambda db, run: db.events.append(run, "e", nest(401))),
    ("event payload CBORTag", lambda db, run: db.events.append(run, "e", {"x": cbor2.CBORTag(1, "x")})),
    ("state value nested 401 deep", lambda db, run: db.state.set(run, "s", nest(401))),
    ("state value CBORTag", lambda db, run: db.state.set(run, "s", cbor2.CBORTag(1, "x"))),
    ("trace content nested 401 deep", lambda db, run: db.traces.record(run, "k", nest(401))),
    ("trace alternative CBORTag", lambda db, run: db.traces.record(run, "k", 1, alternatives=[cbor2.CBORTag(1, "x")])),
    ("run metadata via runs.set_metadata", lambda db, run: db.runs.set_metadata(run, t=cbor2.CBORTag(1, "x"))),
    ("transaction kv put", lambda db, run: _in_tx(db, lambda tx: tx.kv.put(run, "k", cbor2.CBORTag(1, "x")))),
]


def _in_tx(db: Database, body) -> None:
    with db.transaction() as tx:
        body(tx)


@pytest.mark.parametrize("what,call", REPROS, ids=[r[0] for r in REPROS])
def test_undecodable_value_is_refused_before_anything_is_written(dbdir, what, call):
    with Database.open(dbdir) as db:
        run = db.begin_run(metadata={"ok": [1, 2]})
        db.kv.put(run, "k", "before")
        assert_refused_unwritten(db, dbdir, lambda: call(db, run), InvalidValue)
        assert db.kv.get(run, "k") == "before"
    # the directory still opens, also read-only, and every run record decodes
    for read_only in (False, True):
        with Database.open(dbdir, read_only=read_only) as db:
            assert db.kv.get(run, "k") == "before"
            assert [r.id for r in db.runs.list()] == [run]


def test_values_at_the_depth_limit_are_stored_and_the_directory_reopens(dbdir):
    """Every primitive accepts nesting up to the limit (minus its record map), and it decodes after reopen."""
    deep_sets = nest(MAX_DEPTH - 1, frozenset({1}), lambda v: frozenset({v}))  # tagged: 2 CBOR levels each
    with Database.open(dbdir) as db:
        run = db.begin_run(metadata={"t": nest(MAX_DEPTH - 2)})  # record map + metadata map + 126
        db.kv.put(run, "list", nest(MAX_DEPTH))
        db.kv.put(run, "sets", deep_sets)
        db.kv.put(run, "key", {nest(MAX_DEPTH - 1, 1, lambda v: (v,)): 1})
        db.events.append(run, "e", nest(MAX_DEPTH - 1, 1, lambda v: {"a": v}))
        db.state.set(run, "s", nest(MAX_DEPTH - 1))
        db.traces.record(run, "k", 1, alternatives=[nest(MAX_DEPTH - 2)])
        with pytest.raises(InvalidValue):
            db.kv.put(run, "over", nest(MAX_DEPTH + 1))
        with pytest.raises(InvalidValue):
            db.kv.put(run, "over", {nest(MAX_DEPTH, 1, lambda v: (v,)): 1})  # a key counts one level below
        with pytest.raises(InvalidValue):
            db.events.append(run, "e", nest(MAX_DEPTH))  # + the record map = MAX_DEPTH + 1
    for read_only in (False, True):
        with Database.open(dbdir, read_only=read_only) as db:
            assert db.kv.get(run, "list") == nest(MAX_DEPTH)
            assert db.kv.get(run, "sets") == deep_sets
            assert db.events.verify(run) == 1
            assert db.state.get(run, "s").value == nest(MAX_DEPTH - 1)


def test_depth_limit_boundary_is_exact():
    """``MAX_DEPTH`` containers are accepted and decode; one more is refused, whatever the container."""
    frozen = lambda v: frozenset({v})  # noqa: E731
    for wrap, back in [(lambda v: [v], lambda v: [v]), (lambda v: (v,), lambda v: [v]),
                       (lambda v: {"k": v}, lambda v: {"k": v}), (frozen, frozen)]:
        assert decode_value(encode_value(nest(MAX_DEPTH, 1, wrap))) == nest(MAX_DEPTH, 1, back)
        with pytest.raises(InvalidValue, match="MAX_DEPTH"):
            encode_value(nest(MAX_DEPTH + 1, 1, wrap))
    assert decode_value(encode_value({nest(MAX_DEPTH - 1, 1, frozen)})) == {nest(MAX_DEPTH - 1, 1, frozen)}
    with pytest.raises(InvalidValue, match="MAX_DEPTH"):
        encode_value({nest(MAX_DEPTH, 1, frozen)})
    assert check_value(nest(0)) is False and encode_value(1) == b"\x01"


def test_max_depth_is_comfortably_below_what_cbor2_decodes():
    """The chosen limit leaves room for tagged containers (2 CBOR levels each) and the record maps."""
    worst = {"r": [nest(MAX_DEPTH - 2, frozenset({decimal.Decimal("1.5")}), lambda v: frozenset({v}))]}
    assert cbor2.loads(cbor2.dumps(worst)) == worst
    with pytest.raises(cbor2.CBORDecodeError):  # the decoder's own limit really exists
        cbor2.loads(cbor2.dumps(nest(401)))


# --- 200,000 deep: cbor2.dumps used to crash the process (SIGSEGV) ---------------------------

_CHILD = textwrap.dedent("""
    import sys
    from inmem import Database, InvalidValue
    v = 1
    for _ in range(200_000):
        v = [v]
    with Database.open(sys.argv[1]) as db:
        run = db.begin_run()
        for name, call in [("kv", lambda: db.kv.put(run, "k", v)),
                           ("metadata", lambda: db.begin_run(metadata={"t": v})),
                           ("event", lambda: db.events.append(run, "e", v)),
                           ("state", lambda: db.state.set(run, "s", v)),
                           ("trace", lambda: db.traces.record(run, "k", v))]:
            try:
                call()
            except InvalidValue:
                print("refused", name)
            else:
                print("accepted", name)
""")


def test_200k_deep_value_is_refused_without_crashing_the_process(dbdir):
    proc = subprocess.run([sys.executable, "-c", _CHILD, dbdir], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"child died with {proc.returncode} (-11 is SIGSEGV): {proc.stderr[-2000:]}"
    assert proc.stdout.split("\n")[:5] == [f"refused {n}" for n in ("kv", "metadata", "event", "state", "trace")]
    with Database.open(dbdir, read_only=True) as db:
        assert len(db.runs.list()) == 1


def test_200k_deep_value_is_refused_in_process(dbdir):
    v = nest(200_000)
    with pytest.raises(InvalidValue):
        check_value(v)
    with pytest.raises(InvalidValue):
        encode_value(v)
    with pytest.raises(InvalidValue):
        encode_value({"a": [{"b": v}]})
    with Database.open(dbdir) as db:
        run = db.begin_run()
        with pytest.raises(InvalidValue):
            db.kv.put(run, "k", v)
        with pytest.raises(InvalidValue):
            db.events.append(run, "e", v)


def test_cycles_and_exploding_shared_structure_are_refused_quickly(monkeypatch):
    a: list = []
    a.append(a)
    d: dict = {}
    d["self"] = [d]
    for v in (a, d, {"x": (1, a)}):
        with pytest.raises(InvalidValue, match="cycle"):
            encode_value(v)
    # a DAG that shares subtrees: 2**60 paths; the element budget stops the walk (the limit is
    # lowered so the test stays fast: the walk is bounded by MAX_VALUE_BYTES elements)
    monkeypatch.setattr(codec, "MAX_VALUE_BYTES", 1 << 16)
    x: Any = 1
    for _ in range(60):
        x = [x, x]
    with pytest.raises(InvalidValue, match="too many elements"):
        encode_value(x)


# --- the allow-list ---------------------------------------------------------------------------


class Color(enum.IntEnum):
    RED = 1


class Name(str, enum.Enum):
    ADA = "ada"


Point = collections.namedtuple("Point", "x y")

# (value, what it decodes to)
ACCEPTED = [
    (None, None), (True, True), (False, False), (0, 0), (-1, -1), (2**200, 2**200), (-(2**200), -(2**200)),
    (1.5, 1.5), (math.inf, math.inf), (-math.inf, -math.inf), ("", ""), ("héllo", "héllo"),
    (b"\x00\xff", b"\x00\xff"),
    (bytearray(b"ab"), b"ab"), ([1, [2]], [1, [2]]), ((1, (2,)), [1, [2]]), ({"a": {"b": 1}}, {"a": {"b": 1}}),
    ({1, "a"}, {1, "a"}), (frozenset({1}), {1}),
    ({(1, (2, 3)): "tuple key", frozenset({1}): "frozenset key", b"k": 1, None: 2, 1.5: 3, True: 4},
     {(1, (2, 3)): "tuple key", frozenset({1}): "frozenset key", b"k": 1, None: 2, 1.5: 3, True: 4}),
    (dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)),
    (dt.datetime(2026, 6, 1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
     dt.datetime(2026, 6, 1, tzinfo=dt.timezone(dt.timedelta(hours=2)))),
    (dt.date(2026, 1, 2), dt.date(2026, 1, 2)),
    (decimal.Decimal("-1.25"), decimal.Decimal("-1.25")), (decimal.Decimal("1E+999999"), decimal.Decimal("1E+999999")),
    (fractions.Fraction(-1, 3), fractions.Fraction(-1, 3)),
    (uuid.UUID(int=7), uuid.UUID(int=7)),
    (ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.1")),
    (ipaddress.ip_address("fe80::1%eth0"), ipaddress.ip_address("fe80::1%eth0")),
    (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8")),
    (ipaddress.ip_network("2001:db8::/32"), ipaddress.ip_network("2001:db8::/32")),
    (ipaddress.ip_interface("10.0.0.1/8"), ipaddress.ip_interface("10.0.0.1/8")),
    (re.compile("(?i)a+"), re.compile("(?i)a+")), (re.compile(b"a"), re.compile(b"a")),
    (Color.RED, 1), (Name.ADA, "ada"), (Point(1, 2), [1, 2]),
    (collections.OrderedDict(a=1), {"a": 1}), (collections.defaultdict(int, a=1), {"a": 1}),
    (collections.Counter("aab"), {"a": 2, "b": 1}), ({"k": [Color.RED, Point(1, {2})]}, {"k": [1, [1, {2}]]}),
]


@pytest.mark.parametrize("value,expected", ACCEPTED, ids=[repr(a[0])[:40] for a in ACCEPTED])
def test_accepted_types_round_trip(value, expected):
    back = decode_value(encode_value(value))
    assert back == expected and type(back) is type(expected)
    if isinstance(expected, re.Pattern):
        assert back.flags == expected.flags
    if isinstance(expected, dt.datetime):
        assert back.utcoffset() == expected.utcoffset()


def test_accepted_types_survive_reopen(dbdir):
    with Database.open(dbdir) as db:
        run = db.begin_run(metadata={"all": [v for v, _ in ACCEPTED if not isinstance(v, (set, dict))]})
        for i, (value, _) in enumerate(ACCEPTED):
            db.kv.put(run, str(i), value)
    with Database.open(dbdir, read_only=True) as db:
        for i, (_, expected) in enumerate(ACCEPTED):
            assert db.kv.get(run, str(i)) == expected


class ListIterLies(list):
    def __iter__(self):
        return iter([99])  # cbor2 writes len() = 2 items, then iterates 1: undecodable bytes


class DictItemsLie(dict):
    def items(self):
        return iter([("a", nest(1000))])


class MyDatetime(dt.datetime):
    pass


class Custom:
    pass


REFUSED = [
    ("CBORTag(1, 'x')", cbor2.CBORTag(1, "x")),
    ("CBORTag(2, b'x') (decodes as a different int)", cbor2.CBORTag(2, b"x")),
    ("CBORTag(999, 1)", cbor2.CBORTag(999, 1)),
    ("CBORTag as a dict key", {cbor2.CBORTag(5, (1, 2)): 1}),
    ("CBORTag inside a tuple key", {(1, cbor2.CBORTag(5, 1)): 1}),
    ("CBORTag inside a frozenset in a set", {frozenset({cbor2.CBORTag(5, 1)})}),
    ("CBORSimpleValue", cbor2.CBORSimpleValue(5)),
    ("undefined", cbor2.undefined),
    ("undefined deep inside", {"a": [1, {"b": (2, cbor2.undefined)}]}),
    ("complex", 1 + 2j),
    ("memoryview (would decode as a list of ints)", memoryview(b"ab")),
    ("range", range(3)),
    ("deque", collections.deque([1])),
    ("time", dt.time(1, 2)),
    ("timedelta", dt.timedelta(1)),
    ("naive datetime", dt.datetime(2026, 1, 1)),
    ("naive datetime as a dict key", {dt.datetime(2026, 1, 1): 1}),
    ("datetime subclass", MyDatetime(2026, 1, 1, tzinfo=UTC)),
    ("Decimal NaN (would decode as float)", decimal.Decimal("NaN")),
    ("Decimal sNaN", decimal.Decimal("sNaN")),
    ("Decimal Infinity", decimal.Decimal("-Infinity")),
    ("regex flag outside the pattern (would be lost)", re.compile("a", re.IGNORECASE)),
    ("regex ASCII flag", re.compile("a", re.ASCII)),
    ("IPv6 network with a scope (would be lost)", ipaddress.ip_network("fe80::%eth0/64")),
    ("list subclass overriding __iter__", ListIterLies([1, 2])),
    ("dict subclass overriding items", DictItemsLie(a=1)),
    ("user class", Custom()),
    ("str with a lone surrogate", "\ud800"),
    ("str with a lone surrogate, nested", {"a": ["\udc80"]}),
    ("dict key with a lone surrogate", {"\udc80": 1}),
]


@pytest.mark.parametrize("what,value", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_types_raise_invalid_value(what, value):
    with pytest.raises(InvalidValue):
        encode_value(value)
    with pytest.raises(InvalidValue):
        encode_value({"wrapped": [value]})


def test_decode_check_refuses_what_a_faulty_allow_list_would_let_through(monkeypatch):
    """Belt and braces: even if the allow-list wrongly accepted a tagged type, the decode check refuses it."""
    monkeypatch.setitem(codec._KINDS, cbor2.CBORTag, lambda v: None)
    with pytest.raises(InvalidValue, match="does not decode back"):
        encode_value({"a": [cbor2.CBORTag(1, "x")]})


# --- decode_value never returns garbage, never raises a raw cbor2 error -----------------------


@pytest.mark.parametrize("raw", [b"", b"\x82\x01", b"\xd8\x01\x61x", b"\xff", b"\x7f\x61",
                                 nest(401, b"\x01", lambda b: b"\x81" + b)],
                         ids=["empty", "truncated array", "tag 1 on text", "break", "unterminated string", "401 deep"])
def test_undecodable_stored_bytes_raise_corruption_error(raw):
    with pytest.raises(CorruptionError, match="does not decode"):
        decode_value(raw)


def test_kv_get_of_damaged_value_raises_corruption_error(dbdir):
    """In-memory damage (the checksums cover the disk copy) surfaces as CorruptionError, not a cbor2 error."""
    with Database.open(dbdir) as db:
        run = db.begin_run()
        db.kv.put(run, "k", 1)
        key = run_prefix(run_id_bytes(run), TAG_KV) + b"k"
        testing.overwrite_value(db, key, b"\xd8\x01\x61x")
        with pytest.raises(CorruptionError):
            db.kv.get(run, "k")


# --- belt and braces: nothing encode_value returns fails to decode ----------------------------

_tz = st.sampled_from([UTC, dt.timezone(dt.timedelta(hours=-5)), zoneinfo.ZoneInfo("Europe/Paris")])
_hashable_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(),
    st.integers(min_value=2**64, max_value=2**300) | st.integers(max_value=-(2**64)),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([-0.0, math.nan, math.inf]),
    st.text(max_size=8), st.sampled_from(["\ud800", "a\udc80"]), st.binary(max_size=8),
    st.datetimes(timezones=_tz), st.datetimes(), st.dates(),
    st.decimals(allow_nan=False, allow_infinity=True), st.sampled_from([decimal.Decimal("-0"), decimal.Decimal("NaN")]),
    st.fractions(), st.uuids(), st.ip_addresses(), st.ip_addresses().map(lambda a: ipaddress.ip_network(a)),
    st.sampled_from([re.compile("a+"), re.compile("(?i)b"), re.compile("c", re.M), re.compile(b"d"),
                     Color.RED, Name.ADA, 1 + 2j, cbor2.undefined, cbor2.CBORSimpleValue(3), Point(1, 2),
                     dt.time(1), ipaddress.ip_interface("10.0.0.1/8")]),
    st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 3, 4, 5, 30, 258, 999, 55799]),
              st.one_of(st.text(max_size=4), st.integers(), st.binary(max_size=4), st.tuples(st.integers()))),
)
_hashable = st.recursive(
    _hashable_leaf,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
_leaf = st.one_of(_hashable, st.decimals(allow_nan=True),  # a signalling NaN cannot be hashed
                  st.sampled_from([bytearray(b"x"), memoryview(b"y"), ListIterLies([1]), range(2),
                                   decimal.Decimal("sNaN")]))


def _containers(inner):
    return (st.lists(inner, max_size=4) | st.lists(inner, max_size=4).map(tuple)
            | st.dictionaries(_hashable, inner, max_size=4) | st.sets(_hashable, max_size=3)
            | st.dictionaries(st.text(max_size=3), inner, max_size=3).map(collections.OrderedDict))


_tree = st.recursive(_leaf, _containers, max_leaves=20)
_wrappers = st.sampled_from([lambda v: [v], lambda v: (v,), lambda v: {"k": v}, lambda v: {(1, 2): [v]}])
_deep = st.builds(lambda v, n, w: nest(n, v, w), _tree, st.integers(MAX_DEPTH - 3, MAX_DEPTH + 3), _wrappers)
_hostile = st.one_of(_tree, _deep, st.builds(lambda k, n: {nest(n, k, lambda v: (v,)): 1}, _hashable,
                                             st.integers(MAX_DEPTH - 2, MAX_DEPTH + 2)))


def _same(a: Any, b: Any) -> bool:
    """``b`` (decoded) is ``a`` (stored) modulo tuple -> list, frozenset -> set and subclass -> base type."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, float):
        if math.isnan(a):
            return type(b) is float and math.isnan(b)
        return type(b) is float and a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return type(b) is dict and len(a) == len(b) and all(
            _same(ka, kb) and _same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items()))
    if isinstance(a, (set, frozenset)):
        return isinstance(b, (set, frozenset)) and len(a) == len(b) and all(any(_same(x, y) for y in b) for x in a)
    if isinstance(a, re.Pattern):
        return isinstance(b, re.Pattern) and (a.pattern, a.flags) == (b.pattern, b.flags)
    if isinstance(a, dt.datetime):
        # same wall time and same offset: the same instant, written the same way (an inter-zone ``==`` is
        # always False for a time in a DST gap or fold, PEP 495, so compare the parts)
        return type(b) is dt.datetime and a.replace(tzinfo=None) == b.replace(tzinfo=None) \
            and a.utcoffset() == b.utcoffset()
    if isinstance(a, (str, int, bytes, bytearray)):
        base = next(t for t in (str, int, bytes) if isinstance(a, t) or (t is bytes and isinstance(a, bytearray)))
        return type(b) is base and a == b
    return type(b) is type(a) and a == b


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_hostile)
def test_encode_value_never_returns_bytes_that_do_not_decode(value):
    try:
        data = encode_value(value)
    except InvalidValue:
        event("refused")
        return
    event("stored")
    back = decode_value(data)  # CorruptionError here would be the bug this file is about
    assert _same(value, back), (value, back)
    assert _same(back, decode_value(encode_value(back)))  # and the decoded value is itself storable
