"""Runs like commits: a run's history, replay and time travel, diff, and fork.

This module owns the algorithms behind
``db.history``, ``db.replay_run``, ``db.run_state``, ``db.diff_runs``,
``db.fork_run`` and the memory graph's audit trail ``db.graph.history``;
the views they return live in :mod:`inmem.runviews` (re-exported here).
Positions of a run's commit records come from :mod:`inmem.history`;
commits go through the database's commit path.

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

import struct
import uuid
from collections.abc import Iterable
from typing import Any

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
from .primitives.graph import Edge, Node, bookkeeping_key, edge_key_parts, node_from_record
from .primitives.graphsearch import TEXT_PREFIX as GRAPH_INDEX_PREFIX
from .primitives.state import State, state_from_record
from .primitives.traces import Trace, trace_from_record
from .runviews import (COLLECTION_FIELDS, Changes, Commit, EventsDiff, FrozenDict, FrozenList, GraphChange,
                       GraphDiff, GraphState, Op, RunDiff, RunState, StoredVector, canon, deep_freeze, edge_data,
                       edge_label, node_data, show_graph, trace_data, vector_data, vector_label)

__all__ = ["PRIMITIVE_NAMES", "Changes", "Commit", "EventsDiff", "GraphChange", "GraphDiff", "GraphState", "Op",
           "RunDiff", "RunState", "StoredVector", "diff", "edge_label", "fork", "graph_history", "history", "live",
           "replay", "show_graph", "vector_key", "vector_label", "visible"]

#: Name of each primitive tag, as ``Op.primitive`` reports it.
_EXPIRING3 = EXPIRING_HEAD[:3]  # the first bytes of a KV value with a time to live
PRIMITIVE_NAMES = {TAG_RUN: "run", TAG_KV: "kv", TAG_EVENT: "events", TAG_STATE: "state", TAG_TRACE: "traces",
                   TAG_VECTOR: "vectors", TAG_DOC: "docs", TAG_GRAPH: "graph"}
_SEQ = struct.Struct(">Q")
_RUN_RANGE = TAGGED_PREFIX_LEN - 1  # the tag byte's offset


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
    if bookkeeping_key(user):  # derived: checked by `inmem verify` (graph.check)
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
                    lambda x, y: canon(x) != canon(y)),
        events=_events_diff(a, b, ta[TAG_EVENT], tb[TAG_EVENT]),
        states=_changes(ta[TAG_STATE], tb[TAG_STATE], lambda u: u.decode("utf-8"),
                        lambda u, v: state_from_record(decode_value(v)),
                        lambda x, y: canon(x.value) != canon(y.value)),
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
        return canon(node_data(x)[1:5]) != canon(node_data(y)[1:5])
    return canon(edge_data(x)[3:5]) != canon(edge_data(y)[3:5])


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
        return canon(vector_data(x)[1:-1]) != canon(vector_data(y)[1:-1])
    return canon(dict(x)) != canon(dict(y))


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
    return canon(trace_data(x)[1:-1]) != canon(trace_data(y)[1:-1])


def _events_diff(a: str, b: str, ea: dict[bytes, bytes], eb: dict[bytes, bytes]) -> EventsDiff:
    la, lb = list(ea.values()), list(eb.values())  # seq order: keys are big-endian seqs
    n = min(len(la), len(lb))
    i = 0
    while i < n:
        if la[i] != lb[i]:
            x, y = decode_value(la[i]), decode_value(lb[i])
            if x["type"] != y["type"] or canon(x["payload"]) != canon(y["payload"]):
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
