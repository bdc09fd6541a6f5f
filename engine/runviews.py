"""The read-side views of a run: :class:`RunState`, :class:`Commit` / :class:`Op`, :class:`RunDiff` and their parts.

This module owns the value types that ``db.run_state``, ``db.replay_run``,
``db.history``, ``db.diff_runs`` and ``db.graph.history`` return, how they
compare (as data: :func:`canon` encodes values canonically, so equal data is
equal whatever its container types) and how they print. Invariant: every
view is read-only down to its leaves (:func:`deep_freeze`): changing a
returned state can never change the database or another caller's view.
:mod:`inmem.replay` builds them.
"""

from __future__ import annotations

import datetime as _dt
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2

from .primitives.events import Event
from .primitives.graph import Edge, Node
from .primitives.state import State
from .primitives.traces import Trace

__all__ = ["COLLECTION_FIELDS", "Changes", "Commit", "EventsDiff", "FrozenDict", "FrozenList", "GraphChange",
           "GraphDiff", "GraphState", "Op", "RunDiff", "RunState", "StoredVector", "canon", "deep_freeze",
           "edge_data", "edge_label", "node_data", "show_graph", "trace_data", "vector_data", "vector_label"]

#: The parameters of a vector collection a :class:`RunState` shows (its record's fields but ``created_us``).
COLLECTION_FIELDS = ("dim", "metric", "index", "embedder")


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


def canon(value: Any) -> bytes:
    """Canonical CBOR of a decoded value: equal exactly when the values are the same data.

    Unlike ``==`` it tells ``True`` from ``1`` and ``0`` from ``False``, and a
    NaN equals itself; map key order does not matter (RFC 8949 §4.2.1).
    """
    return cbor2.dumps(value, canonical=True, datetime_as_timestamp=False, timezone=_dt.timezone.utc)


def _event_data(e: Event) -> tuple[Any, ...]:
    return (e.seq, e.type, e.payload, e.ts, e.prev_hash, e.hash)


def _state_data(s: State) -> tuple[Any, ...]:
    return (s.value, s.version, s.updated_at)


def trace_data(t: Trace) -> tuple[Any, ...]:
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
        return canon(vector_data(self)) == canon(vector_data(other))


def vector_data(v: StoredVector) -> tuple[Any, ...]:
    return (v.id, v.data, v.metadata, v.text, v.updated_at)


def _collections_data(vectors: dict[str, Any]) -> dict[str, Any]:
    return {name: ({k: c[k] for k in COLLECTION_FIELDS}, [vector_data(v) for v in c["vectors"].values()])
            for name, c in vectors.items()}


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
        return canon(_graph_data(self)) == canon(_graph_data(other))


def node_data(n: Node) -> tuple[Any, ...]:
    return (n.id, n.kind, n.content, n.content_hash, n.metadata, n.created_us, n.updated_us)


def edge_data(e: Edge) -> tuple[Any, ...]:
    return (e.source, e.relation, e.target, e.weight, e.metadata, e.created_us, e.updated_us)


def _graph_data(g: GraphState) -> list[Any]:
    return [[node_data(n) for n in g.nodes.values()], [edge_data(e) for e in g.edges.values()]]


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
        return canon([dict(self.kv), [_event_data(e) for e in self.events],
                       {k: _state_data(v) for k, v in self.states.items()}, [trace_data(t) for t in self.traces],
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
