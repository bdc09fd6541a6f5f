"""JSON documents as plain Python values: paths, the document operations, RFC 7396 and RFC 6902.

This module owns what a document *is* (JSON-like data: ``dict`` with ``str``
keys, ``list``, ``str``, ``int``, finite ``float``, ``bool``, ``None``), how a
path names a place in it, and the pure functions that apply one operation
(``set``, ``merge``, ``append``, ``increment``, ``toggle``, ``delete``,
``patch``) to it. It knows nothing of storage: :mod:`inmem.primitives.docs`
stores the results. Invariants: every function checks its whole input before
changing anything, so an operation that raises leaves the document as it was
(all or nothing); a value taken in is always deep-copied (a caller mutating
its object afterwards changes nothing); nesting is bounded by
:data:`inmem.codec.MAX_DEPTH`.

Paths: ``None`` is the whole document; a dotted ``str`` (``"user.name"``,
``"items.0"``) or a list/tuple of segments (``["user", "a.b", 0]``) names a
place. A segment applied to an object is a member name (an ``int`` segment
becomes its decimal text); applied to an array it is an index (an ``int``, or a
``str`` of decimal digits without a leading zero), ``0 <= i < len`` (``set``
and ``append`` also accept ``i == len``: the end). Sources: JSON Merge Patch,
RFC 7396; JSON Patch, RFC 6902; JSON Pointer, RFC 6901.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .codec import MAX_DEPTH
from .errors import InvalidArgument, InvalidValue, PatchTestFailed

__all__ = ["MISSING", "OPS", "Path", "apply_op", "apply_patch", "clone_json", "dotted", "get_at", "json_copy", "json_equal",
           "make_op", "merge_patch", "parse_path", "parse_pointer"]

Path = tuple[str | int, ...]

#: The document operations, as their records name them (SPEC.md §2, "Documents").
OPS = ("set", "merge", "append", "increment", "toggle", "delete", "patch")
#: Most JSON Patch operations in one ``patch`` call.
MAX_PATCH_OPS = 10_000


class _Missing:
    """The marker for "no value here" (distinct from a JSON ``null``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

_SCALARS = (str, int, float, bool, type(None))


# --- values --------------------------------------------------------------------------------------


def json_copy(value: Any, what: str = "value") -> Any:
    """A deep copy of ``value``, checked to be JSON-like. O(size); no recursion.

    :raises InvalidValue: a type JSON has no place for (tuple, set, bytes,
        datetime, ...), a non-``str`` object key, a NaN or an infinity, or
        nesting deeper than ``MAX_DEPTH`` (which a cycle always is).
    """
    # (source container, destination container, depth); destination already placed
    stack: list[tuple[Any, Any, int]] = []

    def place(src: Any, depth: int) -> Any:
        ts = type(src)
        if ts is str or ts is int or ts is bool or src is None:
            return src
        if ts is float:
            if not math.isfinite(src):
                raise InvalidValue(f"{what} holds {src!r}: JSON numbers are finite")
            return src
        if ts is dict or ts is list:
            if depth >= MAX_DEPTH:
                raise InvalidValue(f"{what} nests more than MAX_DEPTH={MAX_DEPTH} deep, or contains a cycle")
            dst: Any = {} if ts is dict else []
            stack.append((src, dst, depth + 1))
            return dst
        raise _not_json(what, src)

    root = place(value, 0)
    while stack:
        src, dst, depth = stack.pop()
        if type(src) is dict:
            for k, v in src.items():
                if type(k) is not str:
                    raise InvalidValue(f"{what} has an object key {k!r:.60} of type {type(k).__name__}: "
                                       "JSON object keys are str")
                dst[k] = place(v, depth)
        else:
            dst.extend(place(v, depth) for v in src)
    return root


def _not_json(what: str, value: Any) -> InvalidValue:
    hint = " (use a list)" if isinstance(value, tuple) else ""
    return InvalidValue(f"{what} holds a {type(value).__name__}{hint}: a document holds JSON-like data only "
                        "(dict with str keys, list, str, int, float, bool, None)")


def clone_json(value: Any) -> Any:
    """Deep copy of a value already known to be JSON-like (iterative)."""
    if type(value) is not dict and type(value) is not list:
        return value
    root: Any = {} if type(value) is dict else []
    stack = [(value, root)]
    while stack:
        src, dst = stack.pop()
        items = src.items() if type(src) is dict else enumerate(src)
        for k, v in items:
            if type(v) is dict or type(v) is list:
                child: Any = {} if type(v) is dict else []
                stack.append((v, child))
                v = child
            if type(dst) is dict:
                dst[k] = v
            else:
                dst.append(v)
    return root


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality (RFC 6902 §4.6): numbers by value, ``True`` never equals ``1``; objects unordered."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        bx, by = type(x) is bool, type(y) is bool
        if bx or by:
            if not (bx and by and x is y):
                return False
        elif isinstance(x, (int, float)) and isinstance(y, (int, float)):
            if x != y:
                return False
        elif type(x) is dict and type(y) is dict:
            if x.keys() != y.keys():
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif type(x) is list and type(y) is list:
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y))
        elif type(x) is not type(y) or x != y:
            return False
    return True


# --- paths ---------------------------------------------------------------------------------------


def parse_path(path: Any) -> Path:
    """The segments of ``path`` (see the module docstring); ``None`` -> ``()``.

    :raises InvalidArgument: not None, a str or a list/tuple of str/int
        segments; an empty segment; a negative or bool index; more than
        ``MAX_DEPTH`` segments.
    """
    if path is None:
        return ()
    if type(path) is str:
        if not path:
            raise InvalidArgument("path must not be empty: use None for the whole document")
        segments: Sequence[Any] = path.split(".")
        if "" in segments:
            raise InvalidArgument(f"path {path!r:.80} has an empty segment (use a list of segments for names "
                                  "holding a dot)")
    elif type(path) in (list, tuple):
        segments = path
    else:
        raise InvalidArgument(f"path must be None, a dotted str or a list of segments; got {type(path).__name__}")
    if len(segments) > MAX_DEPTH:
        raise InvalidArgument(f"path has {len(segments)} segments; the limit is MAX_DEPTH={MAX_DEPTH}")
    for seg in segments:
        if type(seg) is int:
            if seg < 0:
                raise InvalidArgument(f"path segment {seg} is negative: array indexes are >= 0")
        elif type(seg) is not str:
            raise InvalidArgument(f"a path segment is a str or an int >= 0, got {seg!r:.60}")
    return tuple(segments)


def dotted(path: Path) -> str:
    """``path`` as text for messages and diffs: segments joined by ``.`` (``""``: the whole document)."""
    return ".".join(str(s) for s in path)


def parse_pointer(pointer: Any) -> Path:
    """The segments of an RFC 6901 JSON Pointer (``""`` -> ``()``, ``"/a/0"`` -> ``("a", "0")``).

    :raises InvalidArgument: not a str, not empty and not starting with
        ``/``, or a ``~`` not followed by ``0`` or ``1``.
    """
    if type(pointer) is not str:
        raise InvalidArgument(f"a JSON Pointer is a str, got {type(pointer).__name__}")
    if pointer == "":
        return ()
    if pointer[0] != "/":
        raise InvalidArgument(f"JSON Pointer {pointer!r:.80} must be empty or start with '/' (RFC 6901)")
    out = []
    for raw in pointer[1:].split("/"):
        if "~" in raw.replace("~0", "").replace("~1", ""):
            raise InvalidArgument(f"JSON Pointer {pointer!r:.80}: '~' must be followed by 0 or 1 (RFC 6901)")
        out.append(raw.replace("~1", "/").replace("~0", "~"))  # in this order (RFC 6901 §4)
    if len(out) > MAX_DEPTH:
        raise InvalidArgument(f"JSON Pointer has {len(out)} segments; the limit is MAX_DEPTH={MAX_DEPTH}")
    return tuple(out)


def _index(seg: str | int, size: int, path: Path, upto: int, end_ok: bool) -> int:
    """``seg`` as an index into an array of ``size``. :raises InvalidArgument: not an index or out of range."""
    if type(seg) is int:
        i = seg
    elif seg.isdigit() and seg.isascii() and (seg == "0" or seg[0] != "0"):
        i = int(seg)
    else:
        raise InvalidArgument(f"path {dotted(path)!r}: {dotted(path[:upto]) or 'the document'} is an array; "
                              f"segment {seg!r} is not an index")
    if i < size or (end_ok and i == size):
        return i
    raise InvalidArgument(f"path {dotted(path)!r}: index {i} is out of range for an array of {size}")


def _not_container(path: Path, upto: int, value: Any) -> InvalidArgument:
    where = dotted(path[:upto]) or "the document"
    return InvalidArgument(f"path {dotted(path)!r}: {where} is {_kind(value)}, not an object or an array")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a bool", int: "a number", float: "a number", str: "a str", dict: "an object",
            list: "an array"}.get(type(value), type(value).__name__)


def get_at(doc: Any, path: Path) -> Any:
    """The value at ``path`` (not a copy), or :data:`MISSING` if any segment does not resolve."""
    node = doc
    for seg in path:
        if type(node) is dict:
            node = node.get(seg if type(seg) is str else str(seg), MISSING)
        elif type(node) is list:
            if type(seg) is int:
                i = seg
            elif seg.isdigit() and seg.isascii() and (seg == "0" or seg[0] != "0"):
                i = int(seg)
            else:
                return MISSING
            node = node[i] if i < len(node) else MISSING
        else:
            return MISSING
        if node is MISSING:
            return MISSING
    return node


def _parent(doc: Any, path: Path, *, create: bool) -> Any:
    """The container holding ``path[-1]``; with ``create``, missing objects on the way are made.

    :raises InvalidArgument: the path runs through a scalar, or (without
        ``create``) through a missing member or index.
    """
    node = doc
    for n, seg in enumerate(path[:-1]):
        if type(node) is dict:
            key = seg if type(seg) is str else str(seg)
            child = node.get(key, MISSING)
            if child is MISSING:
                if not create:
                    raise InvalidArgument(f"path {dotted(path)!r}: {dotted(path[:n + 1])} does not exist")
                child = node[key] = {}
            node = child
        elif type(node) is list:
            node = node[_index(seg, len(node), path, n, False)]
        else:
            raise _not_container(path, n, node)
    if type(node) is not dict and type(node) is not list:
        raise _not_container(path, len(path) - 1, node)
    return node


def _check_creatable(doc: Any, path: Path) -> None:
    """Raise what :func:`_parent` with ``create`` would raise, changing nothing (all or nothing)."""
    node = doc
    for n, seg in enumerate(path[:-1]):
        if type(node) is dict:
            node = node.get(seg if type(seg) is str else str(seg), MISSING)
            if node is MISSING:
                return  # everything below is created
        elif type(node) is list:
            node = node[_index(seg, len(node), path, n, False)]
        else:
            raise _not_container(path, n, node)
    if type(node) is list:
        _index(path[-1], len(node), path, len(path) - 1, True)
    elif type(node) is not dict:
        raise _not_container(path, len(path) - 1, node)


def _set(doc: Any, path: Path, value: Any) -> Any:
    """Put ``value`` (owned: not copied) at ``path``; return the new document. Checks before changing."""
    if not path:
        return value
    if doc is MISSING or doc is None:
        doc = {}
    _check_creatable(doc, path)
    parent = _parent(doc, path, create=True)
    seg = path[-1]
    if type(parent) is dict:
        parent[seg if type(seg) is str else str(seg)] = value
    else:
        i = _index(seg, len(parent), path, len(path) - 1, True)
        if i == len(parent):
            parent.append(value)
        else:
            parent[i] = value
    return doc


def _remove(doc: Any, path: Path) -> Any:
    """Remove what ``path`` names, if it exists; return the new document (MISSING: the whole one went).

    :raises InvalidArgument: the path runs through a scalar.
    """
    if not path:
        return MISSING
    node = doc
    for n, seg in enumerate(path[:-1]):
        if type(node) is dict:
            node = node.get(seg if type(seg) is str else str(seg), MISSING)
        elif type(node) is list:
            node = get_at(node, (seg,))
        elif node is not MISSING:
            raise _not_container(path, n, node)
        if node is MISSING:
            return doc
    seg = path[-1]
    if type(node) is dict:
        node.pop(seg if type(seg) is str else str(seg), None)
    elif type(node) is list:
        if get_at(node, (seg,)) is not MISSING:
            del node[_index(seg, len(node), path, len(path) - 1, False)]
    elif node is not MISSING:
        raise _not_container(path, len(path) - 1, node)
    return doc


# --- RFC 7396 --------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch: ``patch`` applied to ``target`` (changed in place where it is an
    object; the result is returned). Objects merge member by member, recursively; a ``None``
    member deletes; anything else (arrays included) replaces. ``patch`` must be owned (a copy).
    """
    if type(patch) is not dict:
        return patch
    if type(target) is not dict:
        target = {}
    stack = [(target, patch)]
    while stack:
        into, p = stack.pop()
        for key, value in p.items():
            if value is None:
                into.pop(key, None)
            elif type(value) is dict:
                child = into.get(key)
                if type(child) is not dict:
                    child = into[key] = {}
                stack.append((child, value))
            else:
                into[key] = value
    return target


# --- RFC 6902 --------------------------------------------------------------------------------------

_PATCH_FIELDS = {"add": ("path", "value"), "remove": ("path",), "replace": ("path", "value"),
                 "move": ("from", "path"), "copy": ("from", "path"), "test": ("path", "value")}


def _check_patch(ops: Any) -> list[dict[str, Any]]:
    """The patch's operations, checked for shape and copied. :raises InvalidArgument: malformed."""
    if type(ops) is not list:
        raise InvalidArgument(f"a JSON Patch is a list of operations (RFC 6902), got {type(ops).__name__}")
    if len(ops) > MAX_PATCH_OPS:
        raise InvalidArgument(f"a JSON Patch holds at most {MAX_PATCH_OPS} operations; got {len(ops)}")
    out = []
    for n, op in enumerate(ops):
        if type(op) is not dict:
            raise InvalidArgument(f"JSON Patch operation {n} is not an object")
        name = op.get("op")
        if name not in _PATCH_FIELDS:
            raise InvalidArgument(f"JSON Patch operation {n}: 'op' must be one of {', '.join(_PATCH_FIELDS)}; "
                                  f"got {name!r:.40}")
        for f in _PATCH_FIELDS[name]:
            if f not in op:
                raise InvalidArgument(f"JSON Patch operation {n} ({name}) has no {f!r} member")
        checked = {"op": name, "path": op["path"]}
        parse_pointer(op["path"])
        if "from" in _PATCH_FIELDS[name]:
            parse_pointer(op["from"])
            checked["from"] = op["from"]
        if "value" in _PATCH_FIELDS[name]:
            checked["value"] = json_copy(op["value"], f"JSON Patch operation {n}'s value")
        out.append(checked)
    return out


def apply_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON Patch: apply checked ``ops`` (from :func:`make_op`) in order, all or nothing.

    Works on a copy: if any operation fails, ``doc`` is unchanged. On a
    missing document (:data:`MISSING`; RFC 6902 has no such thing) only an
    ``add`` at ``""`` (the whole document) succeeds.

    :raises PatchTestFailed: a ``test`` did not match.
    :raises InvalidArgument: a path that does not exist where it must, an
        index out of range, a ``move`` into its own child.
    """
    work = clone_json(doc)
    for n, op in enumerate(ops):
        name = op["op"]
        path = parse_pointer(op["path"])
        try:
            if name == "test":
                found = _pointer_get(work, path, op["path"])
                if not json_equal(found, op["value"]):
                    raise PatchTestFailed(f"JSON Patch operation {n}: test at {op['path']!r} failed: "
                                          f"found {found!r:.80}, expected {op['value']!r:.80}; nothing was written")
            elif name == "remove":
                work = _pointer_remove(work, path, op["path"])
            elif name == "add":
                work = _pointer_add(work, path, clone_json(op["value"]), op["path"])
            elif name == "replace":
                _pointer_get(work, path, op["path"])
                if path:
                    work = _pointer_remove(work, path, op["path"])
                work = _pointer_add(work, path, clone_json(op["value"]), op["path"])
            else:
                src = parse_pointer(op["from"])
                value = clone_json(_pointer_get(work, src, op["from"]))
                if name == "move" and src == path:
                    continue  # moving a value onto itself changes nothing
                if name == "move":
                    if path[:len(src)] == src and len(path) > len(src):
                        raise InvalidArgument(f"cannot move {op['from']!r} into its own child {op['path']!r}")
                    work = _pointer_remove(work, src, op["from"])
                work = _pointer_add(work, path, value, op["path"])
        except PatchTestFailed:
            raise
        except InvalidArgument as exc:
            raise InvalidArgument(f"JSON Patch operation {n} ({name}): {exc}; nothing was written") from None
    return work


def _pointer_get(doc: Any, path: Path, text: str) -> Any:
    """The value a pointer names (``-`` and leading zeros never name an element: :func:`get_at`)."""
    found = MISSING if doc is MISSING else get_at(doc, path)
    if found is MISSING:
        raise InvalidArgument(f"{text!r} does not exist")
    return found


def _pointer_remove(doc: Any, path: Path, text: str) -> Any:
    _pointer_get(doc, path, text)
    if not path:  # RFC 6902 has no absent document
        raise InvalidArgument("cannot remove the whole document in a JSON Patch (use docs.delete)")
    return _remove(doc, path)


def _pointer_add(doc: Any, path: Path, value: Any, text: str) -> Any:
    if not path:
        return value
    if doc is MISSING:
        raise InvalidArgument(f"{text!r}: the document does not exist")
    parent = get_at(doc, path[:-1])
    if parent is MISSING:
        raise InvalidArgument(f"{text!r}: its parent does not exist")
    seg = path[-1]
    if type(parent) is dict:
        parent[seg] = value
    elif type(parent) is list:
        i = len(parent) if seg == "-" else _index(seg, len(parent), path, len(path) - 1, True)
        parent.insert(i, value)
    else:
        raise _not_container(path, len(path) - 1, parent)
    return doc


# --- the operations ----------------------------------------------------------------------------------


def make_op(name: str, path: Any = None, **args: Any) -> dict[str, Any]:
    """The checked, owned record of one operation (SPEC.md §2): ``{"op", "path": [segments], ...}``.

    Arguments by operation: ``set``: ``value``; ``merge``: ``patch``;
    ``append``: ``values`` (a list); ``increment``: ``by`` (an int or a finite
    float, not a bool); ``toggle``, ``delete``: none; ``patch``: ``ops`` (RFC
    6902, its own pointers; ``path`` must be None).

    :raises InvalidArgument: a bad path or ``by``, an unknown operation, a malformed JSON Patch.
    :raises InvalidValue: a value that is not JSON-like.
    """
    if name not in OPS:
        raise InvalidArgument(f"unknown document operation {name!r}")
    segments = parse_path(path)
    op: dict[str, Any] = {"op": name, "path": list(segments)}
    if name == "set":
        op["value"] = json_copy(args["value"])
    elif name == "merge":
        op["patch"] = json_copy(args["patch"], "patch")
    elif name == "append":
        op["values"] = json_copy(list(args["values"]), "values")
    elif name == "increment":
        by = args["by"]
        if type(by) not in (int, float) or (type(by) is float and not math.isfinite(by)):
            raise InvalidArgument(f"increment by must be an int or a finite float, got {by!r:.40}")
        op["by"] = by
    elif name == "patch":
        if segments:
            raise InvalidArgument("a JSON Patch carries its own paths (JSON Pointers): give path=None")
        op["ops"] = _check_patch(args["ops"])
    return op


def apply_op(doc: Any, op: dict[str, Any]) -> Any:
    """Apply one checked operation (from :func:`make_op`) to ``doc`` (:data:`MISSING`: no document) and
    return the new document (:data:`MISSING`: deleted). ``doc`` may be changed in place, but only once
    every check passed: an operation that raises changes nothing.

    :raises InvalidArgument: the path runs through a scalar or a missing array
        element; ``increment`` on a non-number (or a result that is not
        finite), ``toggle`` on a non-bool, ``append`` on a non-array.
    :raises PatchTestFailed: a ``patch`` whose ``test`` did not match.
    """
    name = op["op"]
    path: Path = tuple(op["path"])
    if name == "patch":
        return apply_patch(doc, op["ops"])
    if name == "delete":
        return MISSING if doc is MISSING else _remove(doc, path)
    current = MISSING if doc is MISSING else get_at(doc, path)
    if name == "set":
        return _set(doc, path, clone_json(op["value"]))
    if name == "merge":
        if type(current) is dict and type(op["patch"]) is dict:
            merge_patch(current, clone_json(op["patch"]))  # in place: the object already sits at path
            return doc
        return _set(doc, path, merge_patch(MISSING, clone_json(op["patch"])))
    if name == "append":
        if current is MISSING:
            return _set(doc, path, clone_json(op["values"]))
        if type(current) is not list:
            raise InvalidArgument(f"append: {dotted(path) or 'the document'} is {_kind(current)}, not an array")
        current.extend(clone_json(op["values"]))
        return doc
    if name == "increment":
        if current is MISSING:
            return _set(doc, path, op["by"])
        if type(current) not in (int, float):
            raise InvalidArgument(f"increment: {dotted(path) or 'the document'} is {_kind(current)}, not a number")
        result = current + op["by"]
        if type(result) is float and not math.isfinite(result):
            raise InvalidArgument(f"increment: {dotted(path) or 'the document'} would become {result}")
        return _set(doc, path, result)
    # toggle
    if current is MISSING:
        return _set(doc, path, True)
    if type(current) is not bool:
        raise InvalidArgument(f"toggle: {dotted(path) or 'the document'} is {_kind(current)}, not a bool")
    return _set(doc, path, not current)
