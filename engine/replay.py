"""Runs like commits: a run's history, replay and time travel, diff, and fork.

This module owns the read-side views of one run (:class:`RunState`,
:class:`Commit`, :class:`RunDiff`) and the algorithms behind
``db.history``, ``db.replay_run``, ``db.run_state``, ``db.diff_runs``,
``db.fork_run`` and the memory graph's audit trail ``db.graph.history``
(:class:`GraphState`, :class:`GraphDiff`, :class:`GraphChange`). Positions of a run's commit records come from
:mod:`inmem.history`; commits go through the database's commit path.

Invariant (determinism): a run's state is a pure function of its commit
records. Replay applies, in commit order, exactly the writes of each record
whose keys belong to the run, and both replay and the live read decode the
same key -> value bytes the same way, so ``replay_run(run) == run_state(run)``
for every run whose history is retained.

Complexity: replay and history read one frame per commit that touched the
run: O(run's commits + run's bytes), independent of the database's total
history. Fork and diff are O(run size).
"""

from __future__ import annotations

import datetime as _dt
import math
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import cbor2

from .codec import decode_value, utc_from_us
from .errors import CorruptionError, InvalidArgument, InvalidValue
from .expiry import EXPIRING_HEAD, unwrap
from .kernel import Kernel, LockedView
from .keys import (
    TAG_DOC,
    TAG_EVENT,
    TAG_EXPIRY,
    TAG_GRAPH,
    TAG_KV,
    TAG_RUN,
    TAG_STATE,
    TAG_TRACE,
    TAG_VECTOR,
    TAGGED_PREFIX_LEN,
    prefix_end,
    run_id_of,
    run_prefix,
)
from .jsondoc import MISSING, json_copy
from .primitives.docs import DOC_SUFFIX, copied_record, doc_expires_us, doc_from_record, doc_key_parts, path_changes
from .primitives.events import Event, event_from_record
from .primitives.graph import Edge, Node, edge_key_parts, node_from_record
from .primitives.state import State, state_from_record
from .primitives.traces import Trace, trace_from_record

__all__ = ["Changes", "Commit", "EventsDiff", "GraphChange", "GraphDiff", "GraphState", "Op", "RunDiff", "RunState",
           "StoredVector", "vector_key"]

#: Name of each primitive tag, as ``Op.primitive`` reports it.
_EXPIRING3 = EXPIRING_HEAD[:3]  # the first bytes of a KV value with a time to live
PRIMITIVE_NAMES = {TAG_RUN: "run", TAG_KV: "kv", TAG_EVENT: "events", TAG_STATE: "state", TAG_TRACE: "traces",
                   TAG_VECTOR: "vectors", TAG_DOC: "docs", TAG_GRAPH: "graph"}
#: The parameters of a vector collection a :class:`RunState` shows (its record's fields but ``created_us``).
COLLECTION_FIELDS = ("dim", "metric", "index", "embedder")
_SEQ = struct.Struct(">Q")
_RUN_RANGE = TAGGED_PREFIX_LEN - 1  # the tag byte's offset


# --- read-only containers -------------------------------------------------------------------


def _readonly(*_: Any, **__: Any) -> Any:
    raise TypeError("RunState is read-only: it is a view of the run, not the run")


class FrozenDict(dict):  # type: ignore[type-arg]
    """A ``dict`` that refuses changes (compares, hashes as a dict would not: unhashable)."""

    __slots__ = ()
    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _readonly  # type: ignore


class FrozenList(list):  # type: ignore[type-arg]
    """A ``list`` that refuses changes."""

    __slots__ = ()
    __setitem__ = __delitem__ = append = extend = insert = pop = remove = clear = sort = reverse = _readonly  # type: ignore
    __iadd__ = __imul__ = _readonly  # type: ignore


def deep_freeze(value: Any) -> Any:
    """``value`` with every dict and list (at any depth) made a :class:`FrozenDict` / :class:`FrozenList`."""
    if type(value) is not dict and type(value) is not list:
        return value
    # children first: post-order over an explicit stack (no recursion)
    order: list[Any] = []
    stack = [value]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(v for v in (node.values() if type(node) is dict else node)
                     if type(v) is dict or type(v) is list)
    frozen: dict[int, Any] = {}

    def f(v: Any) -> Any:
        return frozen[id(v)] if type(v) is dict or type(v) is list else v

    for node in reversed(order):
        if type(node) is dict:
            frozen[id(node)] = FrozenDict({k: f(v) for k, v in node.items()})
        else:
            frozen[id(node)] = FrozenList(f(v) for v in node)
    return frozen[id(value)]


# --- views ---------------------------------------------------------------------------------


def _canon(value: Any) -> bytes:
    """Canonical CBOR of a decoded value: equal exactly when the values are the same data.

    Unlike ``==`` it tells ``True`` from ``1`` and ``0`` from ``False``, and a
    NaN equals itself; map key order does not matter (RFC 8949 §4.2.1).
    """
    return cbor2.dumps(value, canonical=True, datetime_as_timestamp=False, timezone=_dt.timezone.utc)


def _event_data(e: Event) -> tuple[Any, ...]:
    return (e.seq, e.type, e.payload, e.ts, e.prev_hash, e.hash)


def _state_data(s: State) -> tuple[Any, ...]:
    return (s.value, s.version, s.updated_at)


def _trace_data(t: Trace) -> tuple[Any, ...]:
    return (t.id, t.kind, t.content, t.confidence, list(t.alternatives), t.parent, list(t.tags), t.ts)


@dataclass(frozen=True, eq=False)
class StoredVector:
    """One vector record as a run's state holds it: plain data, no numpy needed.

    ``data``: the stored components, float32 little-endian (``4 x dim``
    bytes, exactly as written); ``vector``: the same as a tuple of Python
    floats; :meth:`array`: a numpy float32 copy. ``metadata``, ``text`` and
    ``updated_at`` (UTC) as written. ``==`` compares everything, the bytes
    byte for byte (so a NaN in a damaged record equals itself).
    """

    id: str
    data: bytes = field(repr=False)
    metadata: dict[str, Any] | None
    text: str | None
    updated_at: _dt.datetime

    __hash__ = None  # type: ignore[assignment]

    @property
    def dim(self) -> int:
        """Number of float32 components the bytes hold (``len(data) // 4``)."""
        return len(self.data) // 4

    @property
    def vector(self) -> tuple[float, ...]:
        """The components as Python floats (exact: every float32 is a float). O(dim)."""
        return struct.unpack(f"<{self.dim}f", self.data[: 4 * self.dim])

    def array(self) -> Any:
        """The components as a numpy float32 array of shape ``(dim,)`` (a copy; needs numpy)."""
        import numpy as np

        return np.frombuffer(self.data[: 4 * self.dim], dtype="<f4").copy()

    @property
    def norm(self) -> float:
        """The L2 norm, accumulated in float64."""
        return math.sqrt(math.fsum(x * x for x in self.vector))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StoredVector):
            return NotImplemented
        return _canon(_vector_data(self)) == _canon(_vector_data(other))


def _vector_data(v: StoredVector) -> tuple[Any, ...]:
    return (v.id, v.data, v.metadata, v.text, v.updated_at)


def _collections_data(vectors: dict[str, Any]) -> dict[str, Any]:
    return {name: ({k: c[k] for k in COLLECTION_FIELDS}, [_vector_data(v) for v in c["vectors"].values()])
            for name, c in vectors.items()}


#: User-key prefix (after the tag) of the graph's full-text index: derived state, not nodes or edges.
GRAPH_INDEX_PREFIX = b"x\x00"
_IN_MARKER = b"i\x00"  # user-key prefix of the in-edge markers


@dataclass(frozen=True, eq=False)
class GraphState:
    """A run's memory graph as plain read-only data: ``nodes``: id -> :class:`~inmem.Node`;
    ``edges``: ``(source, relation, target)`` -> :class:`~inmem.Edge` (both in key order, metadata
    deeply read-only). The in-edge markers and the full-text index are derived and not shown.
    ``==`` compares every field (times included) as data; ``len()`` is the number of nodes."""

    nodes: dict[str, Node] = field(default_factory=lambda: FrozenDict())
    edges: dict[tuple[str, str, str], Edge] = field(default_factory=lambda: FrozenDict())

    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self.nodes)

    def __bool__(self) -> bool:
        return bool(self.nodes or self.edges)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GraphState):
            return NotImplemented
        return _canon(_graph_data(self)) == _canon(_graph_data(other))


def _node_data(n: Node) -> tuple[Any, ...]:
    return (n.id, n.kind, n.content, n.content_hash, n.metadata, n.created_us, n.updated_us)


def _edge_data(e: Edge) -> tuple[Any, ...]:
    return (e.source, e.relation, e.target, e.weight, e.metadata, e.created_us, e.updated_us)


def _graph_data(g: GraphState) -> list[Any]:
    return [[_node_data(n) for n in g.nodes.values()], [_edge_data(e) for e in g.edges.values()]]


@dataclass(frozen=True, eq=False)
class RunState:
    """One run's state at one point of its history: read-only and comparable with ``==``.

    ``kv``: key -> value; ``events``: the event log (list of
    :class:`~inmem.Event`, seq order, hashes included); ``states``: name ->
    :class:`~inmem.State`; ``traces``: list of :class:`~inmem.Trace` in
    creation order; ``docs``: document name -> its JSON value (deeply
    read-only); ``vectors``: collection name -> ``{"dim", "metric",
    "index", "embedder", "vectors"}`` with ``"vectors"``: vector id ->
    :class:`StoredVector` (collections and ids in name order; ``dim`` etc. are
    ``None`` only if the collection record is missing, which only damage
    does: ``inmem verify`` reports it); ``graph``: the memory graph, a
    :class:`GraphState` (``.nodes``, ``.edges``); ``version``: commit version of the
    last commit of the run the state includes (0: none). Two states are equal
    when all of these are. Everything is read-only.
    """

    run: str
    version: int
    kv: dict[str, Any]
    events: list[Event]
    states: dict[str, State]
    traces: list[Trace]
    vectors: dict[str, dict[str, Any]] = field(default_factory=lambda: FrozenDict())
    docs: dict[str, Any] = field(default_factory=lambda: FrozenDict())
    graph: GraphState = field(default_factory=GraphState)

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        """Same run, version and data, compared as data (canonical CBOR), not by Python ``==``."""
        if not isinstance(other, RunState):
            return NotImplemented
        same = self.run == other.run and self.version == other.version
        return same and self._data() == other._data()  # noqa: SLF001 - same class

    def _data(self) -> bytes:
        return _canon([dict(self.kv), [_event_data(e) for e in self.events],
                       {k: _state_data(v) for k, v in self.states.items()}, [_trace_data(t) for t in self.traces],
                       _collections_data(self.vectors), dict(self.docs), _graph_data(self.graph)])


@dataclass(frozen=True)
class Op:
    """One write of a commit to a run: ``primitive`` (``"run"``, ``"kv"``, ``"events"``, ``"state"``,
    ``"traces"``, ``"vectors"``), ``key`` (kv key / event seq / state name / trace id; for vectors the
    tuple ``(collection, id)``, ``(collection, None)`` for the collection record; ``None`` for the run
    record), ``kind`` (``"put"`` or ``"delete"``) and the decoded ``value`` written (``None`` for a
    delete; a vector record's ``"vector"`` is its float32 bytes). For ``"docs"`` (key: the document
    name) there is one op per document operation: ``kind`` is the operation (``"set"``,
    ``"merge"``, ``"append"``, ``"increment"``, ``"toggle"``, ``"delete"``, ``"patch"``, or
    ``"define"`` for a schema definition) and ``value`` its arguments (``{"path": [...], ...}``, as
    SPEC.md §2 "Documents" records them); a whole document deleted is ``("delete", {"path": []})``.
    For ``"graph"`` there is one op per node or edge change (the in-edge markers and the full-text
    index the same commit writes are not ops): ``kind`` is ``"add_node"``, ``"update_node"``,
    ``"delete_node"`` (key: the node id), ``"add_edge"``, ``"update_edge"`` or ``"remove_edge"``
    (key: ``(source, relation, target)``); ``value`` is the :class:`~inmem.Node` /
    :class:`~inmem.Edge` written, ``None`` for a delete or remove."""

    primitive: str
    key: Any
    kind: str
    value: Any = field(default=None, repr=False)


@dataclass(frozen=True)
class Commit:
    """One commit in a run's history: ``version``, ``ts`` (UTC commit time), ``ops`` on this run,
    and ``runs``: every run the commit touched (more than one for a cross-run transaction)."""

    version: int
    ts: _dt.datetime
    ops: tuple[Op, ...]
    runs: tuple[str, ...]


@dataclass(frozen=True)
class Changes:
    """Differences of one keyed primitive between run A and run B.

    ``added``: key -> B's value (absent in A); ``removed``: key -> A's value
    (absent in B); ``changed``: key -> (A's value, B's value).
    """

    added: dict[Any, Any]
    removed: dict[Any, Any]
    changed: dict[Any, tuple[Any, Any]]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


@dataclass(frozen=True)
class EventsDiff:
    """Where two event logs part: ``diverged_at`` is the first seq whose event differs in type or
    payload, or where one log ends (``None``: identical); ``only_a``/``only_b`` are each log's
    events from there on."""

    diverged_at: int | None
    only_a: tuple[Event, ...]
    only_b: tuple[Event, ...]

    def __bool__(self) -> bool:
        return self.diverged_at is not None


@dataclass(frozen=True)
class GraphDiff:
    """Differences of the memory graph between run A and run B: ``nodes`` (:class:`Changes` keyed by
    node id, :class:`~inmem.Node` values) and ``edges`` (keyed by ``(source, relation, target)``,
    :class:`~inmem.Edge` values). Nodes are compared by kind, content and metadata, edges by weight
    and metadata — not by their times (a fork copies them unchanged anyway)."""

    nodes: Changes = field(default_factory=lambda: Changes({}, {}, {}))
    edges: Changes = field(default_factory=lambda: Changes({}, {}, {}))

    def __bool__(self) -> bool:
        return bool(self.nodes or self.edges)


@dataclass(frozen=True)
class GraphChange:
    """One change to a node or to one of its edges, as ``db.graph.history`` lists it.

    ``version`` and ``ts`` (UTC) of the commit; ``op`` (``"add_node"``,
    ``"update_node"``, ``"delete_node"``, ``"add_edge"``, ``"update_edge"``,
    ``"remove_edge"``); ``key``: the node id, or ``(source, relation,
    target)`` for an edge; ``before`` / ``after``: the :class:`~inmem.Node` or
    :class:`~inmem.Edge` before and after the commit (``None``: absent).
    """

    version: int
    ts: _dt.datetime
    op: str
    key: Any
    before: Any
    after: Any


@dataclass(frozen=True)
class RunDiff:
    """What differs between run ``a`` at ``version_a`` and run ``b`` at ``version_b``.

    ``kv``, ``states``, ``traces`` and ``vectors`` are :class:`Changes`
    (states compared by value, traces by everything but their timestamp);
    ``docs`` is keyed by ``(document name, dotted path)`` (path ``""``: the
    whole document added or removed; objects are compared member by member,
    arrays whole); ``vectors`` is keyed by ``(collection, id)`` with :class:`StoredVector`
    values (compared by components, metadata and text, not ``updated_at``),
    and by ``(collection, None)`` for a collection's parameters (a dict of
    ``dim``, ``metric``, ``index``, ``embedder``); ``events`` is an
    :class:`EventsDiff`; ``graph`` is a :class:`GraphDiff` (nodes and edges).
    ``str(diff)`` is a git-like summary.
    """

    a: str
    b: str
    version_a: int
    version_b: int
    kv: Changes
    events: EventsDiff
    states: Changes
    traces: Changes
    vectors: Changes = field(default_factory=lambda: Changes({}, {}, {}))
    docs: Changes = field(default_factory=lambda: Changes({}, {}, {}))
    graph: GraphDiff = field(default_factory=GraphDiff)

    def is_empty(self) -> bool:
        """True if the two states are the same in every primitive."""
        return not (self.kv or self.events or self.states or self.traces or self.vectors or self.docs
                    or self.graph)

    def __str__(self) -> str:
        out = [f"--- run {self.a} @ version {self.version_a}", f"+++ run {self.b} @ version {self.version_b}"]
        if self.is_empty():
            out.append("no differences")
            return "\n".join(out)
        for name, changes, show, label in (("kv", self.kv, _short, str), ("state", self.states, _show_state, str),
                                           ("traces", self.traces, _show_trace, str),
                                           ("vectors", self.vectors, _show_vector, vector_label),
                                           ("docs", self.docs, _short, _doc_label),
                                           ("graph nodes", self.graph.nodes, show_graph, str),
                                           ("graph edges", self.graph.edges, show_graph, edge_label)):
            if not changes:
                continue
            out.append(f"{name}: {len(changes.added)} added, {len(changes.removed)} removed, "
                       f"{len(changes.changed)} changed")
            for key, value in changes.removed.items():
                out.append(f"- {name} {label(key)}: {show(value)}")
            for key, value in changes.added.items():
                out.append(f"+ {name} {label(key)}: {show(value)}")
            for key, (old, new) in changes.changed.items():
                out.append(f"~ {name} {label(key)}: {show(old)} -> {show(new)}")
        if self.events:
            ev = self.events
            out.append(f"events: diverge at seq {ev.diverged_at} (a has {len(ev.only_a)} more, "
                       f"b has {len(ev.only_b)} more)")
            out += [f"- event {e.seq} {e.type} {_short(e.payload)}" for e in ev.only_a]
            out += [f"+ event {e.seq} {e.type} {_short(e.payload)}" for e in ev.only_b]
        return "\n".join(out)


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _show_state(state: State) -> str:
    return _short(state.value)


def _show_trace(trace: Trace) -> str:
    conf = "" if trace.confidence is None else f" (confidence {trace.confidence:g})"
    return f"{trace.kind} {_short(trace.content, 48)}{conf}"


def _doc_label(key: tuple[str, str]) -> str:
    name, path = key
    return f"{name}" if not path else f"{name}:{path}"


def vector_label(key: tuple[str, str | None]) -> str:
    """``collection/id`` for a vector, ``collection (collection)`` for its record: how a diff prints a key."""
    collection, id = key
    return f"{collection} (collection)" if id is None else f"{collection}/{id}"


def edge_label(key: tuple[str, str, str]) -> str:
    """``source -relation-> target``: how a diff or the history prints an edge key."""
    source, relation, target = key
    return f"{source} -{relation}-> {target}"


def show_graph(value: Any) -> str:
    """One node (``[kind] content {metadata}``) or edge (``weight w {metadata}``) on one line."""
    meta = "" if value.metadata is None else f" {_short(dict(value.metadata), 40)}"
    if isinstance(value, Node):
        kind = "" if value.kind is None else f"[{value.kind}] "
        return f"{kind}{_short(value.content, 48)}{meta}"
    return f"weight {value.weight:g}{meta}"


def _show_vector(value: Any) -> str:
    if not isinstance(value, StoredVector):  # a collection's parameters
        return ", ".join(f"{k}={value[k]!r}" for k in COLLECTION_FIELDS)
    head = ", ".join(f"{x:.4g}" for x in value.vector[:3]) + (", ..." if value.dim > 3 else "")
    extra = "" if value.metadata is None else f" {_short(value.metadata, 40)}"
    extra += "" if value.text is None else f" {_short(value.text, 40)}"
    return f"[{head}] (dim {value.dim}, norm {value.norm:.4g}){extra}"


# --- building a RunState ------------------------------------------------------------------------


def build_state(run: str, version: int, items: Iterable[tuple[bytes, bytes]]) -> RunState:
    """Decode a run's ``(store key, value bytes)`` pairs, in key order, into a :class:`RunState`."""
    kv: dict[str, Any] = {}
    events: list[Event] = []
    states: dict[str, State] = {}
    traces: list[Trace] = []
    vectors: dict[str, dict[str, Any]] = {}
    docs: dict[str, Any] = {}
    nodes: dict[str, Node] = {}
    edges: dict[tuple[str, str, str], Edge] = {}
    for key, value in items:
        tag = key[_RUN_RANGE]
        user = key[TAGGED_PREFIX_LEN:]
        if tag == TAG_GRAPH:
            entry = graph_entry(run, user, value)
            if isinstance(entry, Node):
                nodes[entry.id] = entry
            elif entry is not None:
                edges[(entry.source, entry.relation, entry.target)] = entry
        elif tag == TAG_VECTOR:
            _add_vector(run, vectors, user, value)
        elif tag == TAG_DOC:
            parts = doc_key_parts(user)
            if parts is None:
                raise CorruptionError(f"run {run}: malformed document key {user[:80]!r}")
            if parts[1] == "doc":
                where = f"run {run}: document {parts[0]!r}"
                try:  # checked JSON-like, as every write is: damage never passes for a document
                    doc = json_copy(doc_from_record(value, where), where)
                except InvalidValue as exc:
                    raise CorruptionError(f"{exc}") from None
                docs[parts[0]] = deep_freeze(doc)
        elif tag == TAG_KV:
            kv[user.decode("utf-8")] = decode_value(value)
        elif tag == TAG_EVENT:
            events.append(event_from_record(run, _SEQ.unpack(user)[0], decode_value(value)))
        elif tag == TAG_STATE:
            states[user.decode("utf-8")] = state_from_record(decode_value(value))
        elif tag == TAG_TRACE:
            traces.append(trace_from_record(run, user, decode_value(value)))
    for c in vectors.values():
        c["vectors"] = FrozenDict(c["vectors"])
    return RunState(run, version, FrozenDict(kv), FrozenList(events), FrozenDict(states), FrozenList(traces),
                    FrozenDict({name: FrozenDict(c) for name, c in vectors.items()}), FrozenDict(docs),
                    GraphState(FrozenDict(nodes), FrozenDict(edges)))


def graph_entry(run: str, user: bytes, value: bytes) -> Node | Edge | None:
    """The :class:`~inmem.Node` or :class:`~inmem.Edge` a graph record holds (metadata deeply read-only);
    ``None`` for an in-edge marker or a key of the graph's full-text index (derived state).

    :raises CorruptionError: a key or record not of the form SPEC.md §2 "Memory graph" gives.
    """
    head = user[:2]
    if head == _IN_MARKER or head == GRAPH_INDEX_PREFIX:  # derived: checked by `inmem verify` (graph.check)
        return None
    parts = edge_key_parts(user)
    if parts is None:
        raise CorruptionError(f"run {run}: malformed graph key {user[:80]!r}")
    kind, a, relation, b = parts
    if kind == "n":
        n = node_from_record(a, value)
        if n.metadata is None:
            return n
        return Node(n.id, n.kind, n.content, n.content_hash, deep_freeze(n.metadata), n.created_us, n.updated_us)
    r = decode_value(value)
    if (not isinstance(r, dict) or not isinstance(r.get("weight"), (int, float)) or type(r.get("created_us")) is not int
            or type(r.get("updated_us")) is not int):
        raise CorruptionError(f"run {run}: graph edge {a!r} -{relation!r}-> {b!r} is not an edge record")
    return Edge(a, relation, b, r["weight"], deep_freeze(r.get("metadata")), r["created_us"], r["updated_us"])


def vector_key(user: bytes) -> tuple[str, str | None]:
    """``(collection, id)`` of a vector-store user key (the bytes after the tag); id None: the collection record.

    :raises CorruptionError: the key is not of the form SPEC.md §2 gives.
    """
    end = user.find(b"\x00")
    kind = user[end + 1:end + 2]
    try:
        if end > 0 and kind == b"\x00" and len(user) == end + 2:
            return user[:end].decode(), None
        if end > 0 and kind == b"\x01" and len(user) > end + 2:
            return user[:end].decode(), user[end + 2:].decode()
    except UnicodeDecodeError:
        pass
    raise CorruptionError(f"malformed vector-store key {user[:80]!r}")


def _vector_record(run: str, collection: str, id: str, value: bytes) -> StoredVector:
    record = decode_value(value)
    if (not isinstance(record, dict) or not isinstance(record.get("vector"), bytes)
            or type(record.get("updated_us")) is not int):
        raise CorruptionError(f"run {run}: vector {collection}/{id} is not a vector record")
    return StoredVector(id, record["vector"], record.get("metadata"), record.get("text"),
                        utc_from_us(record["updated_us"]))


def _collection_params(run: str, collection: str, value: bytes) -> dict[str, Any]:
    record = decode_value(value)
    if not isinstance(record, dict):
        raise CorruptionError(f"run {run}: the record of vector collection {collection!r} is not a map")
    return {k: record.get(k) for k in COLLECTION_FIELDS}


def _add_vector(run: str, vectors: dict[str, dict[str, Any]], user: bytes, value: bytes) -> None:
    """Put one vector-store entry into ``vectors`` (keys in order: a collection's record comes first)."""
    collection, id = vector_key(user)
    c = vectors.get(collection)
    if c is None:
        c = vectors[collection] = {**dict.fromkeys(COLLECTION_FIELDS), "vectors": {}}
    if id is None:
        c.update(_collection_params(run, collection, value))
    else:
        c["vectors"][id] = _vector_record(run, collection, id, value)


def _doc_ops(user: bytes, value: bytes | None) -> list[Op]:
    """A document record's operations, one :class:`Op` each (see :class:`Op`)."""
    parts = doc_key_parts(user)
    if parts is None:  # damage: shown as it is, `inmem verify` names it
        return [Op("docs", user, "delete" if value is None else "put", None if value is None else decode_value(value))]
    name, kind = parts
    if value is None:
        return [Op("docs", name, "delete", {"path": []})] if kind == "doc" else [Op("docs", name, "undefine", None)]
    record = decode_value(value)
    if kind == "schema":
        return [Op("docs", name, "define", record)]
    ops = record.get("ops") if isinstance(record, dict) else None
    if not isinstance(ops, list) or not ops:
        return [Op("docs", name, "put", record)]
    return [Op("docs", name, op.get("op"), {k: v for k, v in op.items() if k != "op"}) for op in ops]


def _op(key: bytes, value: bytes | None) -> Op:
    tag = key[_RUN_RANGE]
    user = key[TAGGED_PREFIX_LEN:]
    if tag == TAG_KV or tag == TAG_STATE:
        k: Any = user.decode("utf-8")
    elif tag == TAG_EVENT:
        k = _SEQ.unpack(user)[0]
    elif tag == TAG_TRACE:
        k = str(uuid.UUID(bytes=user))
    elif tag == TAG_VECTOR:
        try:
            k = vector_key(user)
        except CorruptionError:
            k = user  # damage: shown as it is, `inmem verify` names it
    else:
        k = None
    if value is not None and tag == TAG_KV:
        value = unwrap(value)[2]  # a value with a time to live shows as the value
    return Op(PRIMITIVE_NAMES.get(tag, str(tag)), k, "delete" if value is None else "put",
              None if value is None else decode_value(value))


# --- the operations: each takes the database's storage kernel ------------------------------------


def _check_version(kernel: Kernel, at_version: object, what: str) -> int:
    if type(at_version) is not int or at_version < 0:
        raise InvalidArgument(f"{what} must be an int >= 0; got {at_version!r}")
    if at_version > kernel.version:
        raise InvalidArgument(f"{what} {at_version} is in the future: the last commit is version {kernel.version}")
    return at_version


def _complete_lsns(kernel: Kernel, run: str, at_version: int | None) -> tuple[bytes, list[int]]:
    """The run's id and its commit LSNs up to ``at_version``. :raises HistoryUnavailable: part is gone."""
    kernel.check_open()
    rid = kernel.registry.check(run, write=False)
    record = kernel.run_record(run)
    first = record.get("first_version", 0)
    if at_version is not None:
        _check_version(kernel, at_version, "at_version")
        if at_version < first:
            raise InvalidArgument(f"run {run} did not exist at version {at_version}: it began at version {first}")
    index = kernel.history
    index.check_complete(run, first)
    return rid, index.lsns(rid, at_version)


def history(kernel: Kernel, run: str) -> list[Commit]:
    """See :meth:`inmem.database.Database.history`."""
    rid, lsns = _complete_lsns(kernel, run, None)
    out: list[Commit] = []
    present: dict[bytes, Node | Edge] = {}  # the graph's nodes and edges so far: add or update, and before
    for version, ts_us, writes in kernel.history.read(lsns, kernel.wal.write_through):
        ops: list[Op] = []
        for k, v in writes:
            if run_id_of(k) != rid:
                continue
            tag = k[_RUN_RANGE]
            if tag == TAG_DOC:
                ops += _doc_ops(k[TAGGED_PREFIX_LEN:], v)
            elif tag == TAG_GRAPH:
                ops += _graph_ops(run, present, k[TAGGED_PREFIX_LEN:], v)
            elif tag != TAG_EXPIRY:  # the expiry index is bookkeeping: the kv op it serves shows
                ops.append(_op(k, v))
        runs = tuple(dict.fromkeys(str(uuid.UUID(bytes=run_id_of(k))) for k, _ in writes))
        out.append(Commit(version, utc_from_us(ts_us), tuple(ops), runs))
    return out


_GRAPH_OP_NAMES = {"n": ("add_node", "update_node", "delete_node"), "o": ("add_edge", "update_edge", "remove_edge")}


def _graph_change(run: str, present: dict[bytes, Node | Edge], user: bytes, parts: tuple[str, str, str, str],
                  value: bytes | None) -> tuple[str, Any, Any, Any]:
    """``(op, key, before, after)`` of one node or edge write; ``present`` (user key -> entry) is updated."""
    kind = parts[0]
    key: Any = parts[1] if kind == "n" else parts[1:]
    add, update, delete = _GRAPH_OP_NAMES[kind]
    before = present.get(user)
    if value is None:
        present.pop(user, None)
        return delete, key, before, None
    after = graph_entry(run, user, value)
    assert after is not None  # an "n" or "o" key
    present[user] = after
    return (add if before is None else update), key, before, after


def _graph_ops(run: str, present: dict[bytes, Node | Edge], user: bytes, value: bytes | None) -> list[Op]:
    """One graph write as history ops (see :class:`Op`): none for an in-edge marker or the text index."""
    if user.startswith(GRAPH_INDEX_PREFIX):
        return []
    parts = edge_key_parts(user)
    if parts is not None and parts[0] == "i":
        return []
    try:
        if parts is None:
            raise CorruptionError(f"run {run}: malformed graph key {user[:80]!r}")
        op, key, _before, after = _graph_change(run, present, user, parts, value)
    except CorruptionError:  # damage: shown as it is, `inmem verify` names it
        return [Op("graph", user, "delete" if value is None else "put", None if value is None else decode_value(value))]
    return [Op("graph", key, op, after)]


def graph_history(kernel: Kernel, run: str, node: str) -> list[GraphChange]:
    """See :meth:`inmem.database.GraphAPI.history`: every change to ``node`` and its edges, oldest first."""
    if not isinstance(node, str) or not node:
        raise InvalidArgument(f"node must be a non-empty str id; got {node!r}")
    rid, lsns = _complete_lsns(kernel, run, None)
    present: dict[bytes, Node | Edge] = {}  # only the node's own record and its edges
    out: list[GraphChange] = []
    for version, ts_us, writes in kernel.history.read(lsns, kernel.wal.write_through):
        for k, v in writes:
            if k[_RUN_RANGE] != TAG_GRAPH or run_id_of(k) != rid:
                continue
            user = k[TAGGED_PREFIX_LEN:]
            if user.startswith(GRAPH_INDEX_PREFIX):
                continue
            parts = edge_key_parts(user)
            if parts is None or parts[0] == "i" or node not in (parts[1], parts[3]):
                continue  # ("n", id, "", ""): parts[3] is never a node id
            op, key, before, after = _graph_change(run, present, user, parts, v)
            out.append(GraphChange(version, utc_from_us(ts_us), op, key, before, after))
    return out


def _raw_replay(kernel: Kernel, run: str, at_version: int | None, *,
                raw: bool = False) -> tuple[int, dict[bytes, bytes]]:
    """The run's (last commit version, store key -> value bytes) rebuilt from its history up to
    ``at_version``, as :func:`visible` at that moment: values with a time to live judged by the
    database clock now (``at_version=None``) or by that last commit's time (an earlier version);
    ``raw``: the stored bytes as they are (what a fork copies)."""
    rid, lsns = _complete_lsns(kernel, run, at_version)
    state: dict[bytes, bytes] = {}
    last = last_ts = 0
    for version, last_ts, writes in kernel.history.read(lsns, kernel.wal.write_through):
        for key, value in writes:
            if run_id_of(key) != rid:
                continue
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        last = version
    if raw:
        return last, state
    return last, visible(state, kernel.clock() if at_version is None else last_ts)


def visible(raw: dict[bytes, bytes], now_us: int) -> dict[bytes, bytes]:
    """``raw`` (store key -> bytes) as reads see it at ``now_us``: the expiry index left out, each KV
    value with a time to live unwrapped to its value's bytes, or left out once expired, and expired
    documents left out (SPEC.md §2 "Time to live"). O(entries)."""
    out: dict[bytes, bytes] = {}
    for key, value in raw.items():
        tag = key[_RUN_RANGE]
        if tag == TAG_EXPIRY:
            continue
        if tag == TAG_KV and value[:3] == _EXPIRING3:
            expires, _, value = unwrap(value)
            if expires is not None and expires <= now_us:
                continue
        elif tag == TAG_DOC and key.endswith(DOC_SUFFIX):
            expires = doc_expires_us(value)
            if expires is not None and expires <= now_us:
                continue
        out[key] = value
    return out


def _raw_live(kernel: Kernel, run: str) -> tuple[int, dict[bytes, bytes]]:
    """The run's (last commit version, store key -> value bytes) read from the live store at one instant."""
    rid = kernel.registry.check(run, write=False)
    base = run_prefix(rid)
    at, items = kernel.scan_latest(base, prefix_end(base))
    version = kernel.history.last_lsn(rid, at)
    if not version:  # history gone: the newest entry is the best lower bound there is
        version = max((e[0] for _, e in items), default=0)
    return version, visible({k: e[1] for k, e in items}, kernel.clock())


def replay(kernel: Kernel, run: str, at_version: int | None = None) -> RunState:
    """See :meth:`inmem.database.Database.replay_run`."""
    version, state = _raw_replay(kernel, run, at_version)
    return build_state(run, version, sorted(state.items()))


def live(kernel: Kernel, run: str) -> RunState:
    """See :meth:`inmem.database.Database.run_state`."""
    version, state = _raw_live(kernel, run)
    return build_state(run, version, state.items())  # scanned in key order


def diff(kernel: Kernel, a: str, b: str, at_a: int | None = None, at_b: int | None = None) -> RunDiff:
    """See :meth:`inmem.database.Database.diff_runs`.

    Works on the stored bytes: an entry whose bytes are equal in both runs
    (everything a fork has not touched) is never decoded; only entries whose
    bytes differ are decoded and compared as data.
    """
    va, ra = _raw_live(kernel, a) if at_a is None else _raw_replay(kernel, a, at_a)
    vb, rb = _raw_live(kernel, b) if at_b is None else _raw_replay(kernel, b, at_b)
    ta, tb = _by_tag(ra), _by_tag(rb)
    return RunDiff(
        a, b, va, vb,
        kv=_changes(ta[TAG_KV], tb[TAG_KV], lambda u: u.decode("utf-8"), lambda u, v: decode_value(v),
                    lambda x, y: _canon(x) != _canon(y)),
        events=_events_diff(a, b, ta[TAG_EVENT], tb[TAG_EVENT]),
        states=_changes(ta[TAG_STATE], tb[TAG_STATE], lambda u: u.decode("utf-8"),
                        lambda u, v: state_from_record(decode_value(v)),
                        lambda x, y: _canon(x.value) != _canon(y.value)),
        traces=_changes(ta[TAG_TRACE], tb[TAG_TRACE], lambda u: str(uuid.UUID(bytes=u)),
                        lambda u, v: trace_from_record(a, u, decode_value(v)), _trace_differs,
                        lambda u, v: trace_from_record(b, u, decode_value(v))),
        vectors=_changes(ta[TAG_VECTOR], tb[TAG_VECTOR], vector_key, lambda u, v: _vector_entry(a, u, v),
                         _vector_differs, lambda u, v: _vector_entry(b, u, v)),
        docs=_docs_changes(a, b, ta[TAG_DOC], tb[TAG_DOC]),
        graph=_graph_diff(a, b, ta[TAG_GRAPH], tb[TAG_GRAPH]),
    )


def _graph_diff(a: str, b: str, ga: dict[bytes, bytes], gb: dict[bytes, bytes]) -> GraphDiff:
    """Nodes and edges compared record by record; markers and the text index (derived) are skipped."""
    def split(table: dict[bytes, bytes]) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
        nodes, edges = {}, {}
        for u, v in table.items():
            if u.startswith(b"n\x00"):
                nodes[u] = v
            elif u.startswith(b"o\x00"):
                edges[u] = v
        return nodes, edges

    (na, ea), (nb, eb) = split(ga), split(gb)

    def key(u: bytes) -> Any:
        parts = edge_key_parts(u)
        if parts is None:
            raise CorruptionError(f"malformed graph key {u[:80]!r}")
        return parts[1] if parts[0] == "n" else parts[1:]

    return GraphDiff(
        nodes=_changes(na, nb, key, lambda u, v: graph_entry(a, u, v), _graph_differs,
                       lambda u, v: graph_entry(b, u, v)),
        edges=_changes(ea, eb, key, lambda u, v: graph_entry(a, u, v), _graph_differs,
                       lambda u, v: graph_entry(b, u, v)))


def _graph_differs(x: Any, y: Any) -> bool:
    """Kind, content and metadata of a node; weight and metadata of an edge (not the times)."""
    if isinstance(x, Node):
        return _canon(_node_data(x)[1:5]) != _canon(_node_data(y)[1:5])
    return _canon(_edge_data(x)[3:5]) != _canon(_edge_data(y)[3:5])


def _docs_changes(a: str, b: str, da: dict[bytes, bytes], db: dict[bytes, bytes]) -> Changes:
    """Documents compared per path: keys ``(name, dotted path)``, ``""`` for a whole document."""
    def docs(run: str, table: dict[bytes, bytes]) -> dict[bytes, tuple[str, bytes]]:
        out = {}
        for u, v in table.items():
            parts = doc_key_parts(u)
            if parts is not None and parts[1] == "doc":
                out[u] = (parts[0], v)
        return out

    xa, xb = docs(a, da), docs(b, db)
    added = {(n, ""): doc_from_record(v) for u, (n, v) in xb.items() if u not in xa}
    removed = {(n, ""): doc_from_record(v) for u, (n, v) in xa.items() if u not in xb}
    changed: dict[Any, tuple[Any, Any]] = {}
    for u, (n, v) in xa.items():
        w = xb.get(u)
        if w is None or w[1] == v:
            continue
        for path, (x, y) in path_changes(doc_from_record(v), doc_from_record(w[1])).items():
            if x is MISSING:
                added[(n, path)] = y
            elif y is MISSING:
                removed[(n, path)] = x
            else:
                changed[(n, path)] = (x, y)
    return Changes(added=added, removed=removed, changed=changed)


def _vector_entry(run: str, user: bytes, value: bytes) -> Any:
    collection, id = vector_key(user)
    if id is None:
        return FrozenDict(_collection_params(run, collection, value))
    return _vector_record(run, collection, id, value)


def _vector_differs(x: Any, y: Any) -> bool:
    """Components (bytes), metadata and text for a vector; every parameter for a collection."""
    if isinstance(x, StoredVector):
        return _canon(_vector_data(x)[1:-1]) != _canon(_vector_data(y)[1:-1])
    return _canon(dict(x)) != _canon(dict(y))


def _by_tag(raw: dict[bytes, bytes]) -> dict[int, dict[bytes, bytes]]:
    """Split a run's ``store key -> bytes`` into ``tag -> {user key bytes: value bytes}`` (key order kept)."""
    out: dict[int, dict[bytes, bytes]] = {TAG_KV: {}, TAG_EVENT: {}, TAG_STATE: {}, TAG_TRACE: {}, TAG_VECTOR: {},
                                          TAG_DOC: {}, TAG_GRAPH: {}}
    for key in sorted(raw):
        table = out.get(key[_RUN_RANGE])
        if table is not None:
            table[key[TAGGED_PREFIX_LEN:]] = raw[key]
    return out


def _changes(a: dict[bytes, bytes], b: dict[bytes, bytes], name: Any, load: Any, differs: Any,
             load_b: Any = None) -> Changes:
    """Compare two ``user key -> value bytes`` tables; decode only what is not byte-identical."""
    load_b = load_b or load
    added = {name(u): load_b(u, v) for u, v in b.items() if u not in a}
    removed = {name(u): load(u, v) for u, v in a.items() if u not in b}
    changed = {}
    for u, v in a.items():
        w = b.get(u)
        if w is None or w == v:
            continue
        x, y = load(u, v), load_b(u, w)
        if differs(x, y):
            changed[name(u)] = (x, y)
    return Changes(added=added, removed=removed, changed=changed)


def _trace_differs(x: Trace, y: Trace) -> bool:
    return _canon(_trace_data(x)[1:-1]) != _canon(_trace_data(y)[1:-1])


def _events_diff(a: str, b: str, ea: dict[bytes, bytes], eb: dict[bytes, bytes]) -> EventsDiff:
    la, lb = list(ea.values()), list(eb.values())  # seq order: keys are big-endian seqs
    n = min(len(la), len(lb))
    i = 0
    while i < n:
        if la[i] != lb[i]:
            x, y = decode_value(la[i]), decode_value(lb[i])
            if x["type"] != y["type"] or _canon(x["payload"]) != _canon(y["payload"]):
                break
        i += 1
    if i == len(la) == len(lb):
        return EventsDiff(None, (), ())
    return EventsDiff(i, tuple(event_from_record(a, j, decode_value(la[j])) for j in range(i, len(la))),
                      tuple(event_from_record(b, j, decode_value(lb[j])) for j in range(i, len(lb))))


def fork(kernel: Kernel, run: str, at_version: int | None, name: str | None, tags: Iterable[str]) -> str:
    """See :meth:`inmem.database.Database.fork_run`."""
    registry = kernel.registry
    registry.check(run, write=False)
    parent = kernel.run_record(run)
    if name is None:
        name = parent["name"]
    replayed: dict[bytes, bytes] | None = None
    if at_version is not None:
        _v, replayed = _raw_replay(kernel, run, at_version, raw=True)  # times to live copied as they are
    new_run, record_key, record = registry.prepare_begin(name, run, tags, None)
    new_base = run_prefix(run_id_of(record_key))

    def copy(view: LockedView) -> None:
        if replayed is None:  # the live state, read under the same lock that commits the copy
            base = run_prefix(registry.check(run, write=False))
            items: Iterable[tuple[bytes, bytes]] = view.scan_values(base, prefix_end(base))
            point = view.version
        else:
            items = replayed.items()
            point = at_version
        skip = len(new_base)
        writes = [(new_base + k[skip:], copied_record(v) if k[_RUN_RANGE] == TAG_DOC and k.endswith(DOC_SUFFIX) else v)
                  for k, v in items if k[_RUN_RANGE] != TAG_RUN]
        record["metadata"] = {"forked_from": run, "fork_version": point}
        record["first_version"] = view.version + 1
        writes.insert(0, (record_key, registry.encode_record(record)))
        view.commit(writes, (), lambda v: registry.applied_begin(new_run, v))

    kernel.atomic(copy)
    return new_run
