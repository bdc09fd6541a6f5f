"""The metadata filter language: one small query language over metadata values.

This module owns the syntax and the exact semantics of metadata filters, the
``where=`` argument of every primitive that filters metadata (vectors now, the
graph and the memory store later). Invariant: a filter is validated completely
by :func:`compile_filter` before any data is looked at (a malformed filter
raises :class:`~inmem.errors.InvalidArgument` naming the offending part), and
the compiled predicate never raises, whatever the metadata holds: a comparison
that does not make sense (``"a" < 3``, ``None > 1``, NaN) is simply false.

The language follows MongoDB's query operators
(https://www.mongodb.com/docs/manual/reference/operator/query/), restricted
and stated exactly where MongoDB is loose.

Syntax
------
A *filter* is a ``dict``. Each key is either a *field path* or a *logical
operator*; all keys of one dict AND together. ``None`` and ``{}`` match
everything.

=====================================  ==============================================
``{"f": v}``                           ``f`` equals ``v`` (``v`` not an operator dict)
``{"f": {"$op": x, "$op2": y}}``       an *operator dict*: every operator holds (AND)
``{"$and": [F1, F2, ...]}``            every filter holds (non-empty list of filters)
``{"$or": [F1, F2, ...]}``             at least one filter holds (non-empty list)
``{"$not": F}``                        the filter ``F`` does not hold
=====================================  ==============================================

A dict value is an operator dict when its keys start with ``$``; a dict value
with no ``$`` keys (including ``{}``) is a literal compared for equality; a
dict value mixing both is malformed. ``$and``/``$or``/``$not`` may appear
wherever a field path may (top level, inside ``$and``/``$or`` lists, inside
``$not``), not inside an operator dict: write ``{"$not": {"f": {"$gt": 3}}}``.

Field paths
-----------
A path is a non-empty ``str`` of non-empty segments separated by ``.``:
``"user.name"`` reads ``metadata["user"]["name"]``. A segment applied to a
``dict`` is a key lookup (``str`` keys only). A segment made of ASCII digits
applied to a ``list``/``tuple`` is an index (``"tags.0"`` is the first tag; no
negative indices). Anything else -- a missing key, an index past the end, a
segment applied to a scalar or ``None`` -- makes the field *missing*. Field
names that contain ``.`` or start with ``$`` cannot be addressed. Metadata that
is not a ``dict`` (``None``, a list, a scalar) has every field missing, so it
matches exactly the filters a record with no fields matches (``{}``,
``$exists: False``, ``$ne``, ``$nin``, and negations).

Semantics (``m`` is the field's value, or *missing*)
-----------------------------------------------------
==================  ======================================  ====================================
operator            matches when                            on a missing field
==================  ======================================  ====================================
``$eq: v``          ``m`` equals ``v`` (see *equality*)     no (missing is not ``None``)
``$ne: v``          not ``$eq: v``                          **yes** (as MongoDB)
``$gt/$gte/$lt/``   ``m`` and ``v`` are both numbers, or    no
``$lte: v``         both ``str``, and ``m op v`` holds
``$in: [v, ...]``   ``m`` equals some ``v``; if ``m`` is a  no
                    list, also when an *element* of ``m``
                    equals some ``v`` (as MongoDB)
``$nin: [v, ...]``  not ``$in``                             **yes** (as MongoDB)
``$exists: b``      (``m`` is present) == ``b``;            ``$exists: False`` matches
                    present with value ``None`` counts
==================  ======================================  ====================================

*Equality* is deep and type-strict: ``int`` and ``float`` compare numerically
(``1 == 1.0``); ``bool`` is not a number (``True`` never equals ``1``);
``str``, ``bytes``, ``None`` equal only their own kind; lists/tuples are equal
when they have the same length and pairwise equal elements (a list equals a
tuple); dicts are equal when they have the same keys (Python key equality) and
equal values; any other type equals a value of exactly its type that ``==``
it. NaN never equals anything, not even itself, also inside a list or dict.
``{"f": None}`` matches a field present with value ``None``, not a missing one
(unlike MongoDB): "set and not None" is ``{"f": {"$exists": True, "$ne": None}}``.
Equality on a list field compares the whole list (``{"tags": "x"}`` does not
match ``["x", "y"]``; use ``{"tags": {"$in": ["x"]}}``).

*Order* (``$gt $gte $lt $lte``): numbers (``int``/``float``, not ``bool``)
compare numerically and exactly, ``str`` by code point; any other pairing --
``str`` vs number, ``bool``, ``None``, a list -- is false, never an error. NaN
is unordered: every order comparison with NaN is false. A list field is not
searched element-wise by order operators.

Malformed filters
-----------------
:class:`~inmem.errors.InvalidArgument` (also ``ValueError``) names the part as
a subscript path from the filter's root, e.g. ``filter['$or'][1]['age']``:
a filter that is not a dict, a non-``str`` key, an empty path or empty path
segment, an unknown ``$`` key, ``$and``/``$or`` without a non-empty list of
dicts, ``$not`` without a dict, ``$in``/``$nin`` without a list or tuple,
``$exists`` without a ``bool``, an order operand that is not a number or a
``str`` (``bool`` and ``None`` are refused), an operator dict mixing ``$``
keys with plain keys, ``$and``/``$or``/``$not`` inside an operator dict.

Cost: compiling is O(size of the filter); evaluating the compiled predicate
costs O(size of the filter) per record plus the size of the field values it
reads (``$in`` hashes its members once at compile time, so a large ``$in``
list costs O(1) per lookup, not O(len)).
"""

from __future__ import annotations

import operator
from typing import Any, Callable

from .errors import InvalidArgument

__all__ = ["Predicate", "compile_filter", "matches"]

Predicate = Callable[[Any], bool]

_MISSING = object()
_NEVER = object()  # the hash key of a value that equals nothing (it holds a NaN)

_FIELD_OPS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists")
_LOGICAL_OPS = ("$and", "$or", "$not")
_ORDER = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}


def compile_filter(spec: dict[str, Any] | None) -> Predicate:
    """Validate ``spec`` once and return a predicate ``metadata -> bool``.

    ``spec`` is a filter dict (see the module docstring) or ``None``; ``None``
    and ``{}`` give a predicate that is always true. The predicate accepts any
    metadata value (usually a ``dict``) and never raises.

    Raises :class:`~inmem.errors.InvalidArgument` for a malformed filter, with
    the offending part's subscript path (``filter['$and'][0]['x']``) in the
    message. O(size of ``spec``).
    """
    if spec is None:
        return _always
    return _compile_doc(spec, "filter")


def matches(metadata: Any, spec: dict[str, Any] | None) -> bool:
    """``compile_filter(spec)(metadata)``: compile and evaluate once (compile once to filter many)."""
    return compile_filter(spec)(metadata)


# --- compiling ----------------------------------------------------------------


def _bad(where: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"invalid filter at {where}: {message}")


def _always(_metadata: Any) -> bool:
    return True


def _compile_doc(spec: Any, where: str) -> Predicate:
    if not isinstance(spec, dict):
        raise _bad(where, f"a filter must be a dict, not {type(spec).__name__}")
    parts: list[Predicate] = []
    for key, value in spec.items():
        here = f"{where}[{key!r}]"
        if not isinstance(key, str):
            raise _bad(here, f"field names must be str, not {type(key).__name__}")
        if key.startswith("$"):
            parts.append(_compile_logical(key, value, here))
        else:
            parts.append(_compile_field(key, value, here))
    return _all_of(parts)


def _compile_logical(op: str, value: Any, where: str) -> Predicate:
    if op == "$not":
        inner = _compile_doc(value, where)
        return lambda m: not inner(m)
    if op in ("$and", "$or"):
        if not isinstance(value, (list, tuple)) or not value:
            raise _bad(where, f"{op} needs a non-empty list of filters, got {_describe(value)}")
        subs = [_compile_doc(sub, f"{where}[{i}]") for i, sub in enumerate(value)]
        if op == "$and":
            return _all_of(subs)
        return lambda m: any(p(m) for p in subs)
    if op in _FIELD_OPS:
        raise _bad(where, f"{op} applies to a field: write {{'field': {{{op!r}: ...}}}}")
    raise _bad(where, f"unknown operator {op!r} (logical operators: {', '.join(_LOGICAL_OPS)})")


def _all_of(parts: list[Predicate]) -> Predicate:
    if not parts:
        return _always
    if len(parts) == 1:
        return parts[0]
    return lambda m: all(p(m) for p in parts)


def _compile_path(path: str, where: str) -> Callable[[Any], Any]:
    if not path:
        raise _bad(where, "empty field path")
    segments = path.split(".")
    if any(not s for s in segments):
        raise _bad(where, f"empty segment in field path {path!r}")
    steps = [(s, int(s) if s.isascii() and s.isdigit() else None) for s in segments]

    def get(metadata: Any) -> Any:
        if not isinstance(metadata, dict):
            return _MISSING
        current = metadata
        for name, index in steps:
            if isinstance(current, dict):
                if name not in current:
                    return _MISSING
                current = current[name]
            elif index is not None and isinstance(current, (list, tuple)):
                if index >= len(current):
                    return _MISSING
                current = current[index]
            else:
                return _MISSING
        return current

    return get


def _compile_field(path: str, value: Any, where: str) -> Predicate:
    get = _compile_path(path, where)
    if isinstance(value, dict) and any(isinstance(k, str) and k.startswith("$") for k in value):
        plain = [k for k in value if not (isinstance(k, str) and k.startswith("$"))]
        if plain:
            raise _bad(where, f"operator dict mixes operators with plain keys {plain!r}")
        tests = [_compile_op(op, operand, f"{where}[{op!r}]") for op, operand in value.items()]
    else:
        tests = [_compile_op("$eq", value, where)]
    if len(tests) == 1:
        test = tests[0]
        return lambda m: test(get(m))

    def field(m: Any) -> bool:
        v = get(m)
        return all(t(v) for t in tests)

    return field


def _compile_op(op: str, operand: Any, where: str) -> Callable[[Any], bool]:
    """A test of one field value (``_MISSING`` when absent) against one operator."""
    if op == "$eq":
        return lambda v: v is not _MISSING and _equal(v, operand)
    if op == "$ne":
        return lambda v: v is _MISSING or not _equal(v, operand)
    if op in _ORDER:
        if _kind(operand) not in (_NUM, _STR):
            raise _bad(where, f"{op} needs a number or a str, got {_describe(operand)}")
        cmp, want = _ORDER[op], _kind(operand)
        return lambda v: _kind(v) == want and cmp(v, operand)
    if op in ("$in", "$nin"):
        if not isinstance(operand, (list, tuple)):
            raise _bad(where, f"{op} needs a list, got {_describe(operand)}")
        member = _member_test(operand)
        if op == "$in":
            return lambda v: v is not _MISSING and member(v)
        return lambda v: v is _MISSING or not member(v)
    if op == "$exists":
        if not isinstance(operand, bool):
            raise _bad(where, f"$exists needs True or False, got {_describe(operand)}")
        return (lambda v: v is not _MISSING) if operand else (lambda v: v is _MISSING)
    if op in _LOGICAL_OPS:
        raise _bad(where, f"{op} is a logical operator: write {{{op!r}: {{'field': ...}}}} around the field")
    raise _bad(where, f"unknown operator {op!r} (field operators: {', '.join(_FIELD_OPS)})")


def _member_test(members: list[Any] | tuple[Any, ...]) -> Callable[[Any], bool]:
    """``v`` equals a member, or ``v`` is a list with an element that equals a member."""
    keys: set[Any] = set()
    slow: list[Any] = []  # members with no hash key (an unhashable foreign type): compared one by one
    for m in members:
        try:
            k = _hash_key(m)
        except TypeError:
            slow.append(m)
            continue
        if k is not _NEVER:
            keys.add(k)

    def one(v: Any) -> bool:
        try:
            k = _hash_key(v)
        except TypeError:  # v holds an unhashable foreign value: compare with every member
            return any(_equal(v, m) for m in members)
        if k is not _NEVER and k in keys:
            return True
        return any(_equal(v, m) for m in slow)

    def test(v: Any) -> bool:
        if one(v):
            return True
        return isinstance(v, (list, tuple)) and any(one(e) for e in v)

    return test


# --- the value model ------------------------------------------------------------

_NONE, _BOOL, _NUM, _STR, _BYTES, _LIST, _DICT, _OTHER = range(8)


def _kind(v: Any) -> int:
    if v is None:
        return _NONE
    if isinstance(v, bool):
        return _BOOL
    if isinstance(v, (int, float)):
        return _NUM
    if isinstance(v, str):
        return _STR
    if isinstance(v, bytes):
        return _BYTES
    if isinstance(v, (list, tuple)):
        return _LIST
    if isinstance(v, dict):
        return _DICT
    return _OTHER


def _equal(a: Any, b: Any) -> bool:
    """Deep, type-strict equality (module docstring, *equality*); NaN equals nothing."""
    ka = _kind(a)
    if ka != _kind(b):
        return False
    if ka == _LIST:
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if ka == _DICT:
        if len(a) != len(b):
            return False
        for key, x in a.items():
            if key not in b or not _equal(x, b[key]):
                return False
        return True
    if ka != _OTHER:
        return a == b  # type: ignore[no-any-return]
    if type(a) is not type(b):
        return False
    try:
        return bool(a == b)
    except Exception:  # a foreign type whose == misbehaves: not equal, never an error
        return False


def _hash_key(v: Any) -> Any:
    """A hashable key with ``_hash_key(a) == _hash_key(b)`` iff ``_equal(a, b)``; ``_NEVER`` if
    ``v`` holds a NaN; ``TypeError`` for an unhashable value of a foreign type."""
    k = _kind(v)
    if k == _NUM:
        return _NEVER if v != v else (_NUM, v)
    if k == _LIST:
        items = tuple(_hash_key(x) for x in v)
        return _NEVER if any(i is _NEVER for i in items) else (_LIST, items)
    if k == _DICT:
        pairs = frozenset((key, _hash_key(x)) for key, x in v.items())
        return _NEVER if any(p[1] is _NEVER for p in pairs) else (_DICT, pairs)
    if k == _OTHER:
        hash(v)
        return _NEVER if not _equal(v, v) else (_OTHER, type(v), v)
    return (k, v)


def _describe(v: Any) -> str:
    text = repr(v)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(v).__name__} {text}"
