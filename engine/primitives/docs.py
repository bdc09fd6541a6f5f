"""The document primitive: named JSON documents per run, changed by atomic path operations (tag ``TAG_DOC``).

This module owns document records and schema definitions, and the merge
operator that applies the operations of :mod:`inmem.jsondoc` to a stored
document. Every operation (``set``, ``merge``, ``append``, ``increment``,
``toggle``, ``delete``, ``patch``) is a **blind update**
(:meth:`~inmem.primitives.context.Context.merge`): in a transaction it does
not read the document into the read set, so concurrent transactions
incrementing one counter or appending to one list never conflict; each is
checked at the call against what the transaction sees and applied again at
commit, in commit order, to the latest document if another commit changed it
(SPEC.md §2 "Documents" and §8.1). Outside a transaction each operation is
one commit, applied under the commit lock.

Invariants: a stored document is JSON-like (:func:`inmem.jsondoc.json_copy`);
a document with a schema definition always validates against its model;
an operation that fails (bad path, type mismatch, invalid result) writes
nothing; every record carries the operations of the commit that wrote it.

Keys (SPEC.md §2)::

    run prefix | TAG_DOC | name (UTF-8) | 0x00 | 0x00   -> document record
    run prefix | TAG_DOC | name (UTF-8) | 0x00 | 0x01   -> schema definition

Values (CBOR maps): document ``{"doc": JSON value, "ops": [operation, ...],
"updated_us": int}`` plus ``"expires_us"``, ``"ttl_us"`` when it has a time to
live (``set(..., ttl=)`` of the whole document; SPEC.md §2 "Time to live"); definition ``{"model": "module:QualName", "schema":
JSON Schema (pydantic's), "defined_us": int}``. pydantic v2 is imported on
first use of a schema.
"""

from __future__ import annotations

import importlib
import weakref
from collections.abc import Callable
from typing import Any

from ..codec import decode_value, encode_record, encode_value, now_us
from ..errors import CorruptionError, InvalidArgument, InvalidValue
from ..jsondoc import MISSING, apply_op, clone_json, dotted, get_at, json_copy, json_equal, make_op, parse_path
from ..expiry import check_ttl, expiry_entry
from ..keys import TAG_DOC, TAG_EXPIRY, name_bytes, prefix_end, run_prefix
from .context import Context

__all__ = ["DOC_SUFFIX", "SCHEMA_SUFFIX", "DocOperator", "Docs", "MAX_NAME_BYTES", "copied_record", "doc_expires_us",
           "doc_from_record", "doc_key_parts", "model_path", "path_changes"]

#: Longest document name, in bytes of UTF-8.
MAX_NAME_BYTES = 256
#: After ``name``: the document record; the schema definition.
DOC_SUFFIX = b"\x00\x00"
SCHEMA_SUFFIX = b"\x00\x01"


def doc_key_parts(user: bytes) -> tuple[str, str] | None:
    """``(name, "doc" | "schema")`` of a document user key (the bytes after the tag), or None if malformed."""
    if len(user) < 3 or user[-2:-1] != b"\x00" or b"\x00" in user[:-2]:
        return None
    kind = {b"\x00": "doc", b"\x01": "schema"}.get(user[-1:])
    try:
        return (user[:-2].decode(), kind) if kind else None
    except UnicodeDecodeError:
        return None


def doc_from_record(value: bytes, where: str = "a document") -> Any:
    """The document a stored record holds. :raises CorruptionError: not a document record."""
    return _record(value, where)["doc"]


def _record(value: bytes, where: str) -> dict[str, Any]:
    record = decode_value(value)
    if not isinstance(record, dict) or "doc" not in record or not isinstance(record.get("ops"), list):
        raise CorruptionError(f"{where} is not a document record")
    return record


_EXPIRES = b"expires_us"


def doc_expires_us(value: bytes) -> int | None:
    """When a stored document record expires (Unix µs), or None if it has no time to live. Decodes the
    record only if its bytes could hold the member (a substring test first): O(1) for most records."""
    if _EXPIRES not in value:
        return None
    record = decode_value(value)
    expires = record.get("expires_us") if isinstance(record, dict) else None
    return expires if type(expires) is int else None


def _live(value: bytes, now: Callable[[], int]) -> bool:
    expires = doc_expires_us(value)
    return expires is None or expires > now()


def copied_record(value: bytes) -> bytes:
    """A document record as a fork's first commit writes it: the same document, no operations
    (``db.history`` of the fork then shows a ``put``, not the parent's last operations)."""
    record = decode_value(value)
    if not isinstance(record, dict) or "doc" not in record:
        return value  # damage is copied as it is: `inmem verify` names it in both runs
    return encode_record({**record, "ops": []}, False)


def path_changes(a: Any, b: Any) -> dict[str, tuple[Any, Any]]:
    """Where documents ``a`` and ``b`` differ: dotted path -> (a's value, b's value), MISSING where absent.

    Objects are compared member by member (recursively); anything else
    (arrays included) is compared whole at its path, by JSON equality.
    O(size of both).
    """
    out: dict[str, tuple[Any, Any]] = {}
    stack: list[tuple[tuple[Any, ...], Any, Any]] = [((), a, b)]
    while stack:
        path, x, y = stack.pop()
        if type(x) is dict and type(y) is dict:
            for k in sorted(set(x) | set(y), reverse=True):
                stack.append(((*path, k), x.get(k, MISSING), y.get(k, MISSING)))
        elif x is MISSING or y is MISSING or not json_equal(x, y):
            out[dotted(path)] = (x, y)
    return out


def model_path(model: type) -> str:
    """``"module:QualName"``: how a definition names its model class."""
    return f"{model.__module__}:{model.__qualname__}"


def _import_model(path: str) -> type:
    """The class a definition names. :raises ImportError: it cannot be imported here."""
    module, _, qualname = path.partition(":")
    if "<locals>" in qualname:
        raise ImportError(f"{qualname} is defined inside a function")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


_SCHEMAS: weakref.WeakKeyDictionary[type, Any] = weakref.WeakKeyDictionary()


def _json_schema(model: Any) -> Any:
    """``model.model_json_schema()``, computed once per class (it costs milliseconds)."""
    schema = _SCHEMAS.get(model)
    if schema is None:
        schema = _SCHEMAS[model] = model.model_json_schema()
    return schema


def _base_model() -> type:
    try:
        from pydantic import BaseModel
    except ImportError:  # pragma: no cover - a dependency
        raise ImportError("document schemas need pydantic v2: pip install 'pydantic>=2'") from None
    return BaseModel


def _schema_changes(old: Any, new: Any) -> str:
    """A short account of how two JSON Schemas differ (properties added, removed, changed)."""
    po = old.get("properties", {}) if isinstance(old, dict) else {}
    pn = new.get("properties", {}) if isinstance(new, dict) else {}
    parts = []
    for label, names in (("added", sorted(set(pn) - set(po))), ("removed", sorted(set(po) - set(pn))),
                         ("changed", sorted(k for k in set(po) & set(pn) if po[k] != pn[k]))):
        if names:
            parts.append(f"{label}: {', '.join(names)}")
    if not parts:
        parts.append("properties are the same; other parts of the schema differ (required, $defs, ...)")
    return "; ".join(parts)


class DocOperator:
    """The merge operator of one document: decode, apply :func:`inmem.jsondoc.apply_op`, validate, encode.

    ``validate(doc) -> doc``: the schema check (returns the normalised
    document, defaults filled) or None. With a schema, an operation is applied
    to a copy (O(document)), so a result the model refuses changes nothing.
    """

    __slots__ = ("_validate", "_now")

    def __init__(self, validate: Callable[[Any], Any] | None, now: Callable[[], int] = now_us):
        self._validate = validate
        self._now = now

    # The state is ``(document or MISSING, (expires_us, ttl_us) or None)``: the expiry travels with the
    # document through every operation, whichever operator instance applies the next one.

    def start(self, value: bytes | None) -> tuple[Any, tuple[int, int] | None]:
        if value is None:
            return MISSING, None
        record = _record(value, "a document")
        expires = record.get("expires_us")
        if type(expires) is int:
            if expires <= self._now():
                return MISSING, None  # expired: absent, as to every read
            return record["doc"], (expires, record.get("ttl_us", 0))
        return record["doc"], None

    def step(self, state: tuple[Any, Any], op: dict[str, Any]) -> tuple[Any, Any]:
        doc, expiry = state
        if self._validate is None:
            new = apply_op(doc, op)
        else:
            new = apply_op(clone_json(doc) if doc is not MISSING else MISSING, op)
            new = new if new is MISSING else self._validate(new)
        if op["op"] == "set" and not op["path"]:  # a whole-document set: its expiry (or none) replaces
            expires = op.get("expires_us")
            expiry = None if expires is None else (expires, op["ttl_us"])
        elif new is MISSING:
            expiry = None
        return new, expiry

    def finish(self, state: tuple[Any, Any], ops: list[dict[str, Any]]) -> bytes | None:
        doc, expiry = state
        if doc is MISSING:
            return None
        # every part was checked JSON-like when it came in (json_copy, make_op): no second walk
        record = {"doc": doc, "ops": ops, "updated_us": now_us()}
        if expiry is not None:
            record["expires_us"], record["ttl_us"] = expiry
        return encode_record(record, False)


class Docs:
    """Named JSON documents per run: ``db.docs`` / ``tx.docs``.

    A name is a non-empty ``str`` without NUL, at most 256 bytes of UTF-8.
    Paths: ``None`` (the whole document), a dotted ``str`` or a list of
    segments (:mod:`inmem.jsondoc`). Writing operations return None; read
    with :meth:`get`. Each runs as one commit outside a transaction.
    """

    __slots__ = ("_ctx", "_models", "_all", "_active")

    def __init__(self, ctx: Context, models: dict[str, type] | None = None):
        self._ctx = ctx
        self._models = models if models is not None else {}
        self._all, self._active = ctx.prefix_maps(TAG_DOC)

    # --- keys -----------------------------------------------------------------------------------

    def _base(self, run: str, name: object, *, write: bool) -> bytes:
        """``run prefix | TAG_DOC | name``. :raises InvalidArgument: a bad name."""
        prefix = (self._active if write else self._all).get(run)  # type: ignore[call-overload]
        if prefix is None:
            prefix = run_prefix(self._ctx.check_run(run, write=write), TAG_DOC)
        return prefix + name_bytes(name, "document", MAX_NAME_BYTES)  # type: ignore[no-any-return]

    # --- reads ------------------------------------------------------------------------------------

    def get(self, run: str, name: str, path: Any = None) -> Any:
        """The document ``name`` (or the value at ``path`` in it), or None if there is none.

        A fresh copy each call: changing it changes nothing stored. In a
        transaction this reads the document (it joins the read set) and sees
        the transaction's own operations. O(document size).

        :raises InvalidArgument: a bad name or path. :raises RunNotFound: no such run.
        :raises CorruptionError: the stored record is not a document of JSON-like data (damage).
        """
        segments = parse_path(path)
        entry = self._ctx.lookup(self._base(run, name, write=False) + DOC_SUFFIX)
        if entry is None or not _live(entry[1], self._ctx.now_us):
            return None
        found = get_at(doc_from_record(entry[1], f"document {name!r}"), segments)
        if found is MISSING:
            return None
        try:  # every write checked it; this keeps damage from ever passing for a document
            return json_copy(found, f"document {name!r}")
        except InvalidValue as exc:
            raise CorruptionError(str(exc)) from None

    def names(self, run: str) -> list[str]:
        """Names of the run's documents, in name order. O(documents + definitions)."""
        base = run_prefix(self._ctx.check_run(run, write=False), TAG_DOC)
        skip = len(base)
        now = self._ctx.now_us
        return [key[skip:-2].decode() for key, value in self._ctx.scan(base, prefix_end(base))
                if key.endswith(DOC_SUFFIX) and _live(value, now)]

    def definition(self, run: str, name: str) -> dict[str, Any] | None:
        """``{"model": "module:QualName", "schema": JSON Schema, "defined_us"}`` of a defined document, or None."""
        entry = self._ctx.lookup(self._base(run, name, write=False) + SCHEMA_SUFFIX)
        return None if entry is None else decode_value(entry[1])  # type: ignore[no-any-return]

    def get_model(self, run: str, name: str) -> Any:
        """The document as an instance of its model (``define``), or None if there is no document.

        :raises InvalidArgument: no definition, or its model cannot be imported
            here or its JSON Schema changed (see :meth:`define`).
        :raises InvalidValue: the stored document does not validate (only damage does that).
        """
        base = self._base(run, name, write=False)
        model = self._model(base, name, required=True)
        entry = self._ctx.lookup(base + DOC_SUFFIX)
        if entry is None or not _live(entry[1], self._ctx.now_us):
            return None
        return _validated(model, name, doc_from_record(entry[1], f"document {name!r}"), instance=True)

    # --- schemas -----------------------------------------------------------------------------------

    def define(self, run: str, name: str, model: type) -> dict[str, Any]:
        """Validate document ``name`` against pydantic v2 ``model`` from now on; return the definition.

        Stored with the run as the model's import path and its JSON Schema
        (``model.model_json_schema()``). Every later operation is validated
        **after** it is applied and before it commits (an invalid result
        raises ``InvalidValue`` with pydantic's error list, nothing written);
        the stored document is the model's JSON dump (``model_dump(mode="json",
        by_alias=True)``: defaults filled, values coerced as the model says);
        a member the model would drop (pydantic ignores unknown members by
        default) is refused with ``InvalidValue``, never silently lost. After a reopen the model
        is imported by its path; a class defined inside a function cannot be,
        so call ``define`` again in each process (as with embedders). Defining
        again replaces the definition.

        :raises InvalidArgument: ``model`` is not a pydantic ``BaseModel`` subclass.
        :raises InvalidValue: the existing document does not validate (nothing written).
        """
        base_model = _base_model()
        if not (isinstance(model, type) and issubclass(model, base_model)):
            raise InvalidArgument(f"model must be a pydantic v2 BaseModel subclass, got {model!r:.80}")
        base = self._base(run, name, write=True)
        entry = self._ctx.lookup(base + DOC_SUFFIX)
        if entry is not None and _live(entry[1], self._ctx.now_us):
            _validated(model, name, doc_from_record(entry[1], f"document {name!r}"))
        path = model_path(model)
        definition = {"model": path, "schema": _json_schema(model), "defined_us": now_us()}
        try:
            value = encode_value(definition)
        except InvalidValue as exc:
            raise InvalidArgument(f"the JSON Schema of {path} cannot be stored: {exc}") from None
        self._models[path] = model
        self._ctx.write(run, base + SCHEMA_SUFFIX, value)
        return definition

    def _model(self, base: bytes, name: str, *, required: bool) -> Any:
        """The model class of a defined document (None: no definition and not ``required``)."""
        entry = self._ctx.lookup(base + SCHEMA_SUFFIX)
        if entry is None:
            if required:
                raise InvalidArgument(f"document {name!r} has no model: define one with docs.define")
            return None
        definition = decode_value(entry[1])
        path = definition["model"]
        model = self._models.get(path)
        if model is None:
            try:
                model = _import_model(path)
            except Exception as exc:
                raise InvalidArgument(
                    f"document {name!r} is defined by model {path}, which cannot be imported here ({exc}); "
                    f"call docs.define(run, {name!r}, Model) in this process") from None
        schema = _json_schema(model)
        if schema != definition["schema"]:
            raise InvalidArgument(
                f"the JSON Schema of model {path} changed since document {name!r} was defined "
                f"({_schema_changes(definition['schema'], schema)}); call docs.define(run, {name!r}, "
                f"{path.rpartition(':')[2]}) again to validate the document and store the new schema")
        self._models[path] = model
        return model

    # --- operations ----------------------------------------------------------------------------------

    def _apply(self, run: str, name: str, op: dict[str, Any], index: bytes | None = None) -> None:
        base = self._base(run, name, write=True)
        model = self._model(base, name, required=False)
        validate = None if model is None else (lambda doc: _validated(model, name, doc))
        self._ctx.merge(run, base + DOC_SUFFIX, DocOperator(validate, self._ctx.now_us), op)
        if index is not None:  # the expiry index entry of a set with a time to live, in the same commit
            self._ctx.write(run, base[:len(base) - len(name.encode()) - 1] + bytes([TAG_EXPIRY]) + index,
                            encode_value(None))

    def set(self, run: str, name: str, value: Any, path: Any = None, *, ttl: float | None = None) -> None:
        """Replace the document (``path=None``) or the value at ``path``, creating missing objects on the way.

        ``ttl`` (whole document only): seconds until the document expires, by the database clock;
        from then it is absent to every read and operation, and the sweeper deletes it (SPEC.md §2
        "Time to live"). A whole-document ``set`` without ``ttl`` removes an expiry; every other
        operation keeps it.

        :raises InvalidValue: ``value`` is not JSON-like, or the result fails the model.
        :raises InvalidArgument: the path runs through a scalar, or indexes past an array's end; a
            ``ttl`` that is not seconds > 0, or given with a ``path``.
        """
        op = make_op("set", path, value=value)
        if ttl is None:
            return self._apply(run, name, op)
        if op["path"]:
            raise InvalidArgument("ttl applies to a whole document: give it with path=None")
        ttl_us = check_ttl(ttl)
        assert ttl_us is not None
        op["expires_us"] = expires = self._ctx.now_us() + ttl_us
        op["ttl_us"] = ttl_us
        key = name_bytes(name, "document", MAX_NAME_BYTES) + DOC_SUFFIX
        self._apply(run, name, op, expiry_entry(expires, TAG_DOC, key))
        return None

    def merge(self, run: str, name: str, patch: Any, path: Any = None) -> None:
        """RFC 7396 JSON Merge Patch at ``path``: objects merge recursively, a None member deletes,
        anything else (arrays too) replaces. :raises InvalidValue: / :raises InvalidArgument: as :meth:`set`."""
        self._apply(run, name, make_op("merge", path, patch=patch))

    def append(self, run: str, name: str, path: Any, *values: Any) -> None:
        """Append ``values`` to the array at ``path`` (created if absent).

        :raises InvalidArgument: the value at ``path`` is not an array.
        """
        self._apply(run, name, make_op("append", path, values=values))

    def increment(self, run: str, name: str, path: Any, by: int | float = 1) -> None:
        """Add ``by`` to the number at ``path`` (absent: set to ``by``). Commutes with other increments.

        :raises InvalidArgument: the value is not a number (bools are not), ``by``
            is not an int or finite float, or a float result is not finite.
        """
        self._apply(run, name, make_op("increment", path, by=by))

    def toggle(self, run: str, name: str, path: Any) -> None:
        """Negate the bool at ``path`` (absent: set True). :raises InvalidArgument: not a bool."""
        self._apply(run, name, make_op("toggle", path))

    def delete(self, run: str, name: str, path: Any = None) -> None:
        """Delete the member or element at ``path``, or the whole document (``path=None``). Nothing to
        delete is not an error. :raises InvalidArgument: the path runs through a scalar."""
        self._apply(run, name, make_op("delete", path))

    def patch(self, run: str, name: str, ops: list[dict[str, Any]]) -> None:
        """Apply RFC 6902 JSON Patch ``ops`` (``add remove replace move copy test``), all or nothing.

        :raises PatchTestFailed: a ``test`` did not match (nothing written).
        :raises InvalidArgument: a malformed operation, or a path that does not
            exist where RFC 6902 requires it to.
        """
        self._apply(run, name, make_op("patch", None, ops=ops))


def _validated(model: Any, name: str, doc: Any, *, instance: bool = False) -> Any:
    """``doc`` validated by ``model``: the instance, or its JSON dump (checked JSON-like).

    :raises InvalidValue: pydantic refused it (its error list in the message and in ``errors``).
    """
    from pydantic import ValidationError

    try:
        obj = model.model_validate(doc)
    except ValidationError as exc:
        err = InvalidValue(f"document {name!r} would not match model {model_path(model)}: "
                           f"{exc.errors(include_url=False)}")
        err.errors = exc.errors(include_url=False)  # type: ignore[attr-defined]
        raise err from None
    if instance:
        return obj
    dump = json_copy(obj.model_dump(mode="json", by_alias=True), f"model {model_path(model)}'s dump")
    dropped = _dropped(doc, dump)
    if dropped:  # pydantic ignores unknown members by default: never lose data silently
        raise InvalidValue(f"document {name!r}: model {model_path(model)} has no member "
                           f"{', '.join(repr(p) for p in dropped[:5])}; add it to the model (or set "
                           "model_config = ConfigDict(extra='allow')); nothing was written")
    return dump


def _dropped(doc: Any, dump: Any) -> list[str]:
    """Dotted paths of object members in ``doc`` that the model's dump left out."""
    out: list[str] = []
    stack: list[tuple[tuple[Any, ...], Any, Any]] = [((), doc, dump)]
    while stack:
        path, x, y = stack.pop()
        if type(x) is dict and type(y) is dict:
            for k, v in x.items():
                if k not in y:
                    out.append(dotted((*path, k)))
                else:
                    stack.append(((*path, k), v, y[k]))
    return sorted(out)
