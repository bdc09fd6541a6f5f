"""The memory graph primitive: nodes (memories) and typed, weighted edges per run (tag ``TAG_GRAPH``).

This module owns node and edge records and the adjacency keys, and the
graph algorithms over them (breadth-first traversal, shortest path in hops,
cycle detection). Adjacency is kept in the sorted map in **both directions**,
so one hop from a node, out or in, is one range scan: O(log n + degree).

Invariants: every edge's two ends exist (deleting a node deletes its edges in
the same commit); every out-edge key has exactly one in-edge key and back;
there is at most one edge per ``(source, relation, target)``; a call that
refuses its input writes nothing.

Keys (SPEC.md §2 "Memory graph")::

    run prefix | TAG_GRAPH | "n" 0x00 id                                -> node record
    run prefix | TAG_GRAPH | "o" 0x00 source 0x00 relation 0x00 target  -> edge record
    run prefix | TAG_GRAPH | "i" 0x00 target 0x00 relation 0x00 source  -> in-edge marker (CBOR null)

Ids and relations are non-empty ``str`` without NUL, at most 256 bytes of
UTF-8 (so 0x00 separates them and a prefix of the key is a range).
Values (CBOR maps): node ``{"kind": str | None, "content": str,
"content_hash": SHA-256 hex of the content's UTF-8, "metadata": dict | None,
"created_us", "updated_us"}``; edge ``{"weight": float, "metadata": dict |
None, "created_us", "updated_us"}``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..codec import decode_value, encode_value, now_us, utc_from_us
from ..errors import CorruptionError, InvalidArgument
from ..filters import compile_filter
from ..keys import TAG_GRAPH, name_bytes, new_run_id, prefix_end, run_prefix
from .context import Context

__all__ = ["Edge", "Graph", "MAX_ID_BYTES", "Node", "edge_key_parts", "node_from_record"]

#: Longest node id, relation or kind, in bytes of UTF-8.
MAX_ID_BYTES = 256
_NODE = b"n\x00"
_OUT = b"o\x00"
_IN = b"i\x00"
_SEP = b"\x00"
_MARKER = encode_value(None)
_DIRECTIONS = ("out", "in", "both")


class _Times:
    """``created_at`` / ``updated_at``: a record's ``created_us`` / ``updated_us`` as UTC datetimes."""

    created_us: int
    updated_us: int

    @property
    def created_at(self) -> _dt.datetime:
        return utc_from_us(self.created_us)

    @property
    def updated_at(self) -> _dt.datetime:
        return utc_from_us(self.updated_us)


@dataclass(frozen=True)
class Node(_Times):
    """A memory: ``id``, ``kind`` (str | None), ``content`` (str), ``content_hash`` (SHA-256 hex of
    the content's UTF-8), ``metadata`` (dict | None), ``created_us``/``updated_us`` (Unix µs; ``created_at``/``updated_at``: the same as UTC datetimes)."""

    id: str
    kind: str | None
    content: str
    content_hash: str
    metadata: dict[str, Any] | None
    created_us: int
    updated_us: int

    __hash__ = None  # type: ignore[assignment]  # metadata is a dict


@dataclass(frozen=True)
class Edge(_Times):
    """A typed, weighted edge ``source -relation-> target`` with ``metadata`` and Unix-µs times."""

    source: str
    relation: str
    target: str
    weight: float
    metadata: dict[str, Any] | None
    created_us: int
    updated_us: int

    __hash__ = None  # type: ignore[assignment]


def node_from_record(id: str, value: bytes) -> Node:
    """The :class:`Node` a stored record holds. :raises CorruptionError: not a node record."""
    r = decode_value(value)
    if not isinstance(r, dict) or not isinstance(r.get("content"), str) or "created_us" not in r:
        raise CorruptionError(f"graph node {id!r} is not a node record")
    return Node(id, r.get("kind"), r["content"], r["content_hash"], r.get("metadata"), r["created_us"],
                r["updated_us"])


def _edge(source: str, relation: str, target: str, value: bytes) -> Edge:
    r = decode_value(value)
    if not isinstance(r, dict) or "weight" not in r:
        raise CorruptionError(f"graph edge {source!r} -{relation!r}-> {target!r} is not an edge record")
    return Edge(source, relation, target, r["weight"], r.get("metadata"), r["created_us"], r["updated_us"])


def edge_key_parts(user: bytes) -> tuple[str, str, str, str] | None:
    """``("n", id, "", "")`` or ``("o" | "i", a, relation, b)`` of a graph user key (after the tag), or None."""
    parts = user.split(_SEP)
    try:
        text = [p.decode() for p in parts]
    except UnicodeDecodeError:
        return None
    if len(text) == 2 and text[0] == "n" and text[1]:
        return ("n", text[1], "", "")
    if len(text) == 4 and text[0] in ("o", "i") and all(text[1:]):
        return (text[0], text[1], text[2], text[3])
    return None


def _content(content: object) -> tuple[str, str]:
    """``(content, SHA-256 hex)``. :raises InvalidArgument: not a str or not UTF-8 encodable."""
    if not isinstance(content, str):
        raise InvalidArgument(f"node content is a str, got {type(content).__name__}")
    try:
        raw = content.encode()
    except UnicodeEncodeError:
        raise InvalidArgument("node content is not valid UTF-8 text (a lone surrogate)") from None
    return content, hashlib.sha256(raw).hexdigest()


def _metadata(metadata: object) -> dict[str, Any] | None:
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidArgument(f"metadata must be a dict or None, got {type(metadata).__name__}")
    return metadata


def _weight(weight: object) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise InvalidArgument(f"an edge weight is a finite int or float, got {weight!r:.80}")
    return float(weight)


def _direction(direction: object) -> str:
    if direction not in _DIRECTIONS:
        raise InvalidArgument(f"direction is 'out', 'in' or 'both', got {direction!r:.80}")
    return direction  # type: ignore[return-value]


def _depth(depth: object, what: str, *, optional: bool) -> int | None:
    if depth is None and optional:
        return None
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise InvalidArgument(f"{what} is an int >= 0{' or None' if optional else ''}, got {depth!r:.80}")
    return depth


class Graph:
    """The memory graph of each run: ``db.graph`` / ``tx.graph``.

    Node ids and relations are non-empty ``str`` without NUL, at most 256
    bytes of UTF-8. Outside a transaction each writing call is one commit
    (under the commit lock) and each reading call reads one snapshot; in a
    transaction every read (point or range) joins the read set. A node that
    does not exist has no edges: reads naming it return nothing (``[]``,
    ``None``); writes naming it raise ``InvalidArgument``.
    """

    __slots__ = ("_ctx", "_all", "_active")

    def __init__(self, ctx: Context):
        self._ctx = ctx
        self._all, self._active = ctx.prefix_maps(TAG_GRAPH)

    # --- keys -------------------------------------------------------------------------------------

    def _base(self, run: str, *, write: bool) -> bytes:
        prefix = (self._active if write else self._all).get(run)  # type: ignore[call-overload]
        if prefix is None:
            prefix = run_prefix(self._ctx.check_run(run, write=write), TAG_GRAPH)
        return prefix  # type: ignore[no-any-return]

    @staticmethod
    def _id(id: object) -> bytes:
        return name_bytes(id, "node id", MAX_ID_BYTES)

    @staticmethod
    def _rel(relation: object) -> bytes:
        return name_bytes(relation, "relation", MAX_ID_BYTES)

    def _scan_hop(self, base: bytes, node: bytes, rel: bytes | None, direction: str) -> list[tuple[str, str, str]]:
        """``(source, relation, target)`` of ``node``'s edges: one range scan per direction. O(log n + degree)."""
        out: list[tuple[str, str, str]] = []
        for tag in (_OUT, _IN) if direction == "both" else ((_OUT,) if direction == "out" else (_IN,)):
            lo = base + tag + node + _SEP + (b"" if rel is None else rel + _SEP)
            for key, _ in self._ctx.scan(lo, prefix_end(lo)):
                _, a, r, b = key[len(base):].split(_SEP)
                s, t = (a, b) if tag == _OUT else (b, a)
                out.append((s.decode(), r.decode(), t.decode()))
        return out

    def _node(self, base: bytes, id: str) -> Node | None:
        entry = self._ctx.lookup(base + _NODE + id.encode())
        return None if entry is None else node_from_record(id, entry[1])

    # --- nodes ------------------------------------------------------------------------------------

    def add_node(self, run: str, content: str, *, kind: str | None = None, metadata: dict[str, Any] | None = None,
                 id: str | None = None) -> Node:
        """Add a node holding ``content``; return it. ``id=None``: a fresh UUIDv7 (text).

        :raises InvalidArgument: a bad id/kind/content/metadata type, or a node ``id`` exists already
            (change it with :meth:`update_node`). :raises InvalidValue: metadata cannot be stored.
        :raises RunNotFound, RunClosed: the run. Nothing is written when it raises. O(log n).
        """
        content, digest = _content(content)
        if kind is not None:
            name_bytes(kind, "node kind", MAX_ID_BYTES)
        metadata = _metadata(metadata)
        id = new_run_id() if id is None else id
        raw = self._id(id)
        base = self._base(run, write=True)
        key = base + _NODE + raw
        if self._ctx.lookup(key) is not None:
            raise InvalidArgument(f"node {id!r} exists already in run {run}; use update_node")
        ts = now_us()
        record = {"kind": kind, "content": content, "content_hash": digest, "metadata": metadata,
                  "created_us": ts, "updated_us": ts}
        self._ctx.write(run, key, encode_value(record))
        return Node(id, kind, content, digest, metadata, ts, ts)

    def get_node(self, run: str, id: str) -> Node | None:
        """The node ``id``, or None. O(log n). :raises InvalidArgument: a bad id."""
        self._id(id)
        return self._node(self._base(run, write=False), id)

    def update_node(self, run: str, id: str, content: str | None = None, *,
                    metadata: dict[str, Any] | None = None) -> Node:
        """Replace the content (if given) and merge ``metadata`` into the node's (top-level keys; a
        key set to None stays None); return the node. Its id, kind and ``created_us`` are kept.

        :raises InvalidArgument: no such node, or a bad argument. Nothing is written when it raises.
        """
        raw = self._id(id)
        new_content = None if content is None else _content(content)
        metadata = _metadata(metadata)
        base = self._base(run, write=True)
        old = self._node(base, id)
        if old is None:
            raise InvalidArgument(f"no node {id!r} in run {run}")
        text, digest = (old.content, old.content_hash) if new_content is None else new_content
        merged = old.metadata if metadata is None else {**(old.metadata or {}), **metadata}
        ts = now_us()
        record = {"kind": old.kind, "content": text, "content_hash": digest, "metadata": merged,
                  "created_us": old.created_us, "updated_us": ts}
        self._ctx.write(run, base + _NODE + raw, encode_value(record))
        return Node(id, old.kind, text, digest, merged, old.created_us, ts)

    def delete_node(self, run: str, id: str) -> bool:
        """Delete node ``id`` and every edge into or out of it, in one commit; return whether it existed.
        O(log n · degree)."""
        raw = self._id(id)
        base = self._base(run, write=True)
        key = base + _NODE + raw
        if self._ctx.lookup(key) is None:
            return False
        for s, r, t in self._scan_hop(base, raw, None, "both"):
            self._drop_edge(run, base, s.encode(), r.encode(), t.encode())
        self._ctx.write(run, key, None)
        return True

    def nodes(self, run: str, kind: str | None = None, filter: dict[str, Any] | None = None) -> list[Node]:
        """The run's nodes in id order, of ``kind`` (None: all) whose metadata matches ``filter`` (the
        vector store's filter language, :func:`inmem.filters.compile_filter`). O(nodes).

        :raises InvalidArgument: a malformed filter.
        """
        pred = compile_filter(filter)
        base = self._base(run, write=False)
        lo = base + _NODE
        skip = len(lo)
        out = []
        for key, value in self._ctx.scan(lo, prefix_end(lo)):
            node = node_from_record(key[skip:].decode(), value)
            if (kind is None or node.kind == kind) and pred(node.metadata):
                out.append(node)
        return out

    # --- edges ------------------------------------------------------------------------------------

    def add_edge(self, run: str, source: str, relation: str, target: str, *, weight: float = 1.0,
                 metadata: dict[str, Any] | None = None, acyclic: bool = False) -> Edge:
        """Add (or update the weight and metadata of) the edge ``source -relation-> target``; return it.

        ``acyclic=True``: refuse the edge if it would close a cycle of ``relation`` edges (a
        self-loop included) — a breadth-first search from ``target``, O(edges of that relation
        reachable from it).

        :raises InvalidArgument: a bad argument, an end that is not a node, or a cycle refused.
        Nothing is written when it raises.
        """
        s, r, t = self._id(source), self._rel(relation), self._id(target)
        weight = _weight(weight)
        metadata = _metadata(metadata)
        base = self._base(run, write=True)
        for end in (source, target):
            if self._ctx.lookup(base + _NODE + end.encode()) is None:
                raise InvalidArgument(f"no node {end!r} in run {run}")
        out_key = base + _OUT + s + _SEP + r + _SEP + t
        old = self._ctx.lookup(out_key)
        if old is None and acyclic and self._path(base, t, s, r) is not None:
            raise InvalidArgument(f"edge {source!r} -{relation!r}-> {target!r} would close a cycle")
        ts = now_us()
        created = ts if old is None else decode_value(old[1])["created_us"]
        record = {"weight": weight, "metadata": metadata, "created_us": created, "updated_us": ts}
        self._ctx.write(run, out_key, encode_value(record))
        if old is None:
            self._ctx.write(run, base + _IN + t + _SEP + r + _SEP + s, _MARKER)
        return Edge(source, relation, target, weight, metadata, created, ts)

    def _drop_edge(self, run: str, base: bytes, s: bytes, r: bytes, t: bytes) -> None:
        self._ctx.write(run, base + _OUT + s + _SEP + r + _SEP + t, None)
        self._ctx.write(run, base + _IN + t + _SEP + r + _SEP + s, None)

    def remove_edge(self, run: str, source: str, relation: str, target: str) -> bool:
        """Remove the edge ``source -relation-> target``; return whether it existed. O(log n)."""
        s, r, t = self._id(source), self._rel(relation), self._id(target)
        base = self._base(run, write=True)
        if self._ctx.lookup(base + _OUT + s + _SEP + r + _SEP + t) is None:
            return False
        self._drop_edge(run, base, s, r, t)
        return True

    def edges(self, run: str, node: str, *, direction: str = "out", relation: str | None = None) -> list[Edge]:
        """``node``'s edges (``"out"``, ``"in"`` or ``"both"``: out first), optionally of one ``relation``,
        in key order (relation, then the other end). O(log n + degree) for out; in-edges cost one
        point read more each."""
        raw, direction = self._id(node), _direction(direction)
        rel = None if relation is None else self._rel(relation)
        base = self._base(run, write=False)
        out = []
        for s, r, t in self._scan_hop(base, raw, rel, direction):
            entry = self._ctx.lookup(base + _OUT + s.encode() + _SEP + r.encode() + _SEP + t.encode())
            if entry is None:
                raise CorruptionError(f"graph in-edge {s!r} -{r!r}-> {t!r} has no out-edge record")
            out.append(_edge(s, r, t, entry[1]))
        return out

    # --- traversal ----------------------------------------------------------------------------------

    def _bfs(self, base: bytes, start: str, rel: bytes | None, direction: str,
             max_depth: int | None) -> list[tuple[str, int, list[str]]]:
        if self._ctx.lookup(base + _NODE + start.encode()) is None:
            return []
        seen = {start}
        order = [(start, 0, [start])]
        queue = deque(order)
        while queue:
            node, depth, path = queue.popleft()
            if max_depth is not None and depth >= max_depth:
                continue
            for s, _, t in self._scan_hop(base, node.encode(), rel, direction):
                nxt = t if s == node else s
                if nxt not in seen:
                    seen.add(nxt)
                    item = (nxt, depth + 1, [*path, nxt])
                    order.append(item)
                    queue.append(item)
        return order

    def _path(self, base: bytes, a: bytes, b: bytes, rel: bytes | None) -> list[str] | None:
        """Fewest-hops path of out-edges from ``a`` to ``b`` (ids), or None; breadth-first."""
        start, goal = a.decode(), b.decode()
        if start == goal:
            return [start]
        parent: dict[str, str] = {start: start}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for _, _, t in self._scan_hop(base, node.encode(), rel, "out"):
                if t not in parent:
                    parent[t] = node
                    if t == goal:
                        path = [t]
                        while path[-1] != start:
                            path.append(parent[path[-1]])
                        return path[::-1]
                    queue.append(t)
        return None

    def traverse(self, run: str, start: str, *, relation: str | None = None, max_depth: int | None = None,
                 direction: str = "out") -> Iterator[tuple[Node, int, list[str]]]:
        """Breadth-first from ``start``: ``(node, depth, path)`` for each reachable node once, ``start``
        first at depth 0; ``path`` is the ids from ``start`` to it along the BFS tree (a fewest-hops
        path). Edges are followed in key order. ``max_depth=None``: no limit.

        The traversal is read as a whole on one snapshot before the first item is yielded:
        O(reachable nodes · log n + their edges). A missing ``start`` yields nothing.
        """
        self._id(start)
        rel = None if relation is None else self._rel(relation)
        direction = _direction(direction)
        limit = _depth(max_depth, "max_depth", optional=True)
        base = self._base(run, write=False)
        found = self._bfs(base, start, rel, direction, limit)
        out = []
        for id, depth, path in found:
            node = self._node(base, id)
            if node is None:
                raise CorruptionError(f"graph edge leads to missing node {id!r}")
            out.append((node, depth, path))
        return iter(out)

    def neighbors(self, run: str, node: str, *, relation: str | None = None, direction: str = "out",
                  depth: int = 1) -> list[Node]:
        """Nodes within ``depth`` hops of ``node`` (not ``node`` itself), breadth-first order.
        O(log n + degree) for ``depth=1`` plus one point read per neighbour."""
        _depth(depth, "depth", optional=False)
        return [n for n, d, _ in self.traverse(run, node, relation=relation, max_depth=depth,
                                                 direction=direction) if d > 0]

    def shortest_path(self, run: str, a: str, b: str, relation: str | None = None) -> list[str] | None:
        """The ids of a fewest-hops path of out-edges from ``a`` to ``b`` (both included; ``[a]`` if
        ``a == b``), or None if there is none or either is not a node. Breadth-first:
        O(reachable edges · log n)."""
        ra, rb = self._id(a), self._id(b)
        rel = None if relation is None else self._rel(relation)
        base = self._base(run, write=False)
        if self._ctx.lookup(base + _NODE + ra) is None or self._ctx.lookup(base + _NODE + rb) is None:
            return None
        return self._path(base, ra, rb, rel)

    def check(self, run: str) -> dict[str, Any]:
        """Check the run's graph records (``inmem verify``): ``{"nodes": int, "edges": int, "problems": [str]}``.

        Problems: a key that is not a graph key, a record that does not decode,
        an out-edge without its in-edge or back (adjacency not symmetric), an
        edge whose end is not a node. One scan of the run's graph range: O(records).
        """
        base = self._base(run, write=False)
        problems: list[str] = []
        nodes: set[str] = set()
        out: set[tuple[str, str, str]] = set()
        inn: set[tuple[str, str, str]] = set()
        for key, value in self._ctx.scan(base, prefix_end(base)):
            parts = edge_key_parts(key[len(base):])
            if parts is None:
                problems.append(f"malformed graph key {key[len(base):][:80]!r}")
                continue
            what, a, r, b = parts
            try:
                if what == "n":
                    node_from_record(a, value)
                    nodes.add(a)
                elif what == "o":
                    _edge(a, r, b, value)
                    out.add((a, r, b))
                else:
                    inn.add((b, r, a))
            except (CorruptionError, ValueError, KeyError, TypeError) as exc:
                problems.append(f"graph record {what} {a!r} does not decode: {exc}")
        for s, r, t in sorted(out - inn):
            problems.append(f"edge {s!r} -{r!r}-> {t!r} has no in-edge key")
        for s, r, t in sorted(inn - out):
            problems.append(f"in-edge key of {s!r} -{r!r}-> {t!r} has no edge record")
        for s, r, t in sorted(out):
            for end in (s, t):
                if end not in nodes:
                    problems.append(f"edge {s!r} -{r!r}-> {t!r}: {end!r} is not a node")
        return {"nodes": len(nodes), "edges": len(out), "problems": problems}

    def has_cycle(self, run: str, relation: str | None = None) -> bool:
        """Whether the run's directed edges (of ``relation``, or all) contain a cycle (a self-loop
        counts). One range scan of the out-edges and an iterative depth-first search: O(edges)."""
        rel = None if relation is None else relation
        if rel is not None:
            self._rel(rel)
        base = self._base(run, write=False)
        lo = base + _OUT
        adj: dict[str, list[str]] = {}
        for key, _ in self._ctx.scan(lo, prefix_end(lo)):
            _, s, r, t = key[len(base):].split(_SEP)
            if rel is None or r.decode() == rel:
                adj.setdefault(s.decode(), []).append(t.decode())
        state: dict[str, int] = {}  # 1: on the stack, 2: done
        for root in adj:
            if root in state:
                continue
            state[root] = 1
            stack = [(root, iter(adj[root]))]
            while stack:
                node, it = stack[-1]
                for nxt in it:
                    st = state.get(nxt)
                    if st == 1:
                        return True
                    if st is None:
                        state[nxt] = 1
                        stack.append((nxt, iter(adj.get(nxt, ()))))
                        break
                else:
                    state[node] = 2
                    stack.pop()
        return False
