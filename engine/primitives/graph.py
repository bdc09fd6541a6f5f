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
    run prefix | TAG_GRAPH | "x" 0x00 ...                               -> the node text index (graphsearch.py)

Node contents are indexed for full-text search and node vectors kept in
the run's vector collection ``"graph.nodes"``, in the node's commit
(:mod:`inmem.primitives.graphsearch`).

Ids and relations are non-empty ``str`` without NUL, at most 256 bytes of
UTF-8 (so 0x00 separates them and a prefix of the key is a range).
Values (CBOR maps): node ``{"kind": str | None, "content": str,
"content_hash": SHA-256 hex of the content's UTF-8, "metadata": dict | None,
"created_us", "updated_us"}``; edge ``{"weight": float, "metadata": dict |
None, "created_us", "updated_us"}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..codec import decode_value, encode_value, now_us
from ..errors import CorruptionError, InvalidArgument
from ..filters import compile_filter
from ..keys import TAG_GRAPH, name_bytes, new_run_id, prefix_end, run_prefix
from .context import Context
from .graphrecords import (Edge, Node, check_content, check_depth, check_direction, check_metadata,
                           check_weight, edge_from_record, edge_key_parts, node_from_record)
from .graphalgo import breadth_first, fewest_hops, has_directed_cycle
from .graphsearch import MODES, Hit, NodeSearch, TEXT_PREFIX, fusion_depth, rrf
from .vectors import IndexSource

__all__ = ["Edge", "Graph", "Hit", "MAX_ID_BYTES", "Node", "bookkeeping_key", "edge_key_parts", "node_from_record"]

#: Longest node id, relation or kind, in bytes of UTF-8.
MAX_ID_BYTES = 256
_NODE = b"n\x00"
_OUT = b"o\x00"
_IN = b"i\x00"
_SEP = b"\x00"
_MARKER = encode_value(None)


def bookkeeping_key(user: bytes) -> bool:
    """Whether a graph user key (after the tag) is bookkeeping beside the nodes and edges — an in-edge
    marker or a key of the full-text index — rather than a node or an edge record. O(1)."""
    return user[:2] == _IN or user[:2] == TEXT_PREFIX


class Graph:
    """The memory graph of each run: ``db.graph`` / ``tx.graph``.

    Node ids and relations are non-empty ``str`` without NUL, at most 256
    bytes of UTF-8. Outside a transaction each writing call is one commit
    (under the commit lock) and each reading call reads one snapshot; in a
    transaction every read (point or range) joins the read set. A node that
    does not exist has no edges: reads naming it return nothing (``[]``,
    ``None``); writes naming it raise ``InvalidArgument``.
    """

    __slots__ = ("_ctx", "_all", "_active", "_search")

    def __init__(self, ctx: Context, index: IndexSource | None = None):
        self._ctx = ctx
        self._all, self._active = ctx.prefix_maps(TAG_GRAPH)
        self._search = NodeSearch(ctx, index)

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
                 id: str | None = None, vector: Any = None) -> Node:
        """Add a node holding ``content``; return it. ``id=None``: a fresh UUIDv7 (text).

        In the same commit the content is indexed for full-text search (O(terms)) and the
        node's vector stored in the run's ``"graph.nodes"`` vector collection: ``vector`` (a
        1-D sequence or array of finite numbers; the first one fixes the collection's dim,
        cosine metric, unless :meth:`configure` made it), else the content embedded when an
        embedder is available for the run (:meth:`configure` or ``Database.open(embedder=)``),
        else none. Outside a transaction the call runs as an optimistic transaction of its own
        (retried on conflict), so the embedder never runs inside the commit lock.

        :raises InvalidArgument: a bad id/kind/content/metadata type, or a node ``id`` exists already
            (change it with :meth:`update_node`); a zero vector under cosine.
        :raises InvalidValue: metadata cannot be stored; a vector of the wrong dim or not finite.
        :raises RunNotFound, RunClosed: the run. Nothing is written when it raises. O(log n + terms).
        """
        content, digest = check_content(content)
        if kind is not None:
            name_bytes(kind, "node kind", MAX_ID_BYTES)
        metadata = check_metadata(metadata)
        id = new_run_id() if id is None else id
        raw = self._id(id)
        base = self._base(run, write=True)
        key = base + _NODE + raw
        if self._ctx.lookup(key) is not None:
            raise InvalidArgument(f"node {id!r} exists already in run {run}; use update_node")
        vec, create = self._search.node_vector(run, content, vector)
        ts = now_us()
        record = {"kind": kind, "content": content, "content_hash": digest, "metadata": metadata,
                  "created_us": ts, "updated_us": ts}
        value = encode_value(record)
        self._ctx.write(run, key, value)
        self._search.put(run, base + TEXT_PREFIX, id, content, vec, create)
        return Node(id, kind, content, digest, metadata, ts, ts)

    def get_node(self, run: str, id: str) -> Node | None:
        """The node ``id``, or None. O(log n). :raises InvalidArgument: a bad id."""
        self._id(id)
        return self._node(self._base(run, write=False), id)

    def update_node(self, run: str, id: str, content: str | None = None, *,
                    metadata: dict[str, Any] | None = None, vector: Any = None) -> Node:
        """Replace the content (if given) and merge ``metadata`` into the node's (top-level keys; a
        key set to None stays None); return the node. Its id, kind and ``created_us`` are kept.

        New content is re-indexed (only the terms that changed are rewritten) and, when an
        embedder is available for the run, re-embedded; ``vector`` replaces the node's vector.
        A vector given by the caller is theirs to update: new content without ``vector`` and
        without an embedder leaves it as it was.

        :raises InvalidArgument: no such node, or a bad argument. :raises InvalidValue: as
            :meth:`add_node`. Nothing is written when it raises.
        """
        raw = self._id(id)
        new_content = None if content is None else check_content(content)
        metadata = check_metadata(metadata)
        base = self._base(run, write=True)
        old = self._node(base, id)
        if old is None:
            raise InvalidArgument(f"no node {id!r} in run {run}")
        text, digest = (old.content, old.content_hash) if new_content is None else new_content
        merged = old.metadata if metadata is None else {**(old.metadata or {}), **metadata}
        vec, create = (None, None)
        if vector is not None or (new_content is not None and text != old.content):
            vec, create = self._search.node_vector(run, text, vector)
        ts = now_us()
        record = {"kind": old.kind, "content": text, "content_hash": digest, "metadata": merged,
                  "created_us": old.created_us, "updated_us": ts}
        self._ctx.write(run, base + _NODE + raw, encode_value(record))
        if text != old.content or vec is not None:
            self._search.put(run, base + TEXT_PREFIX, id, text, vec, create)
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
        self._search.drop(run, base + TEXT_PREFIX, id)
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

    # --- search -----------------------------------------------------------------------------------

    def configure(self, run: str, *, stem: bool | None = None, dim: int | None = None, metric: str = "cosine",
                  index: str = "exact", embedder: Any = None) -> dict[str, Any]:
        """Set the run's search options before its first nodes (idempotent); return them
        (``{"stem": bool, "vectors": {"dim", "metric", "index", "embedder"} | None}``).

        ``stem``: the text index's optional English suffix stripper (:mod:`inmem.fulltext`; off by
        default; fixed once the run's first node is indexed). ``dim``/``metric``/``index``: create
        the run's node-vector collection (``"graph.nodes"``, the vector store's parameters).
        ``embedder``: a callable ``list[str] -> (n, dim) array`` that embeds node contents and string
        queries in this process (``dim`` defaults to its ``.dim``); not stored — give it again
        after reopening, or give ``Database.open(embedder=)``.

        :raises InvalidArgument: a setting that contradicts the stored one; an embedder without a
            known dim. Nothing is written when it raises.
        """
        base = self._base(run, write=True)
        return self._search.configure(run, base + TEXT_PREFIX, stem=stem, dim=dim, metric=metric, index=index,
                                      embedder=embedder)

    def search(self, run: str, query: str, *, k: int = 10, kind: str | None = None,
               filter: dict[str, Any] | None = None, mode: str = "text", vector: Any = None) -> list[Hit]:
        """The ``k`` nodes that best match ``query``, best first, as :class:`Hit` ``(node, score)``;
        only nodes of ``kind`` whose metadata matches ``filter`` (the vector store's filter language).

        ``mode="text"``: Okapi BM25 over node contents (k1 = 1.2, b = 0.75; a node matches if
        it holds any query term; ties by id; :mod:`inmem.fulltext` gives the tokenizer). Cost:
        one posting-range scan per query term, O(their document frequencies + k log k), plus
        point reads of candidate nodes in rank order. ``mode="vector"``: similarity of the node
        vectors to ``vector`` (if given) or to ``query`` embedded; exact. ``mode="hybrid"``: the
        text and vector rankings (each cut at ``max(4k, 50)`` candidates) fused by reciprocal
        rank fusion, ``sum 1/(60 + rank)`` (Cormack et al. 2009); the score is that sum.

        In a transaction every posting range, node and vector read joins the read set.

        :raises InvalidArgument: ``k`` not in 1..10000, an unknown ``mode``, ``query`` not a str, a
            bad filter; for vector and hybrid, no node vectors in the run or no embedder for a str query.
        :raises InvalidValue: ``vector`` of the wrong shape.
        """
        if type(k) is not int or not 1 <= k <= 10_000:
            raise InvalidArgument(f"k must be an int in 1..10000; got {k!r:.40}")
        if mode not in MODES:
            raise InvalidArgument(f"mode is 'text', 'vector' or 'hybrid', got {mode!r:.40}")
        if not isinstance(query, str):
            raise InvalidArgument(f"query is a str, got {type(query).__name__}")
        if kind is not None:
            name_bytes(kind, "node kind", MAX_ID_BYTES)
        pred = compile_filter(filter)
        base = self._base(run, write=False)

        def keep(id: str) -> Node | None:
            try:
                node = self._node(base, id)
            except (UnicodeEncodeError, ValueError):
                return None
            if node is None or (kind is not None and node.kind != kind) or not pred(node.metadata):
                return None
            return node

        tbase = base + TEXT_PREFIX
        if mode == "text":
            return [Hit(n, s) for n, s in self._search.text_ranking(tbase, query, keep, k)]
        q = query if vector is None else vector
        if mode == "vector":
            return [Hit(n, s) for n, s in self._search.vector_ranking(run, q, keep, k)]
        depth = fusion_depth(k)
        text = self._search.text_ranking(tbase, query, keep, depth)
        vec = self._search.vector_ranking(run, q, keep, depth)
        nodes = {n.id: n for n, _ in text}
        nodes.update((n.id, n) for n, _ in vec)
        fused = rrf([[n.id for n, _ in text], [n.id for n, _ in vec]])
        return [Hit(nodes[id], score) for id, score in fused[:k]]

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
        weight = check_weight(weight)
        metadata = check_metadata(metadata)
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
        raw, direction = self._id(node), check_direction(direction)
        rel = None if relation is None else self._rel(relation)
        base = self._base(run, write=False)
        out = []
        for s, r, t in self._scan_hop(base, raw, rel, direction):
            entry = self._ctx.lookup(base + _OUT + s.encode() + _SEP + r.encode() + _SEP + t.encode())
            if entry is None:
                raise CorruptionError(f"graph in-edge {s!r} -{r!r}-> {t!r} has no out-edge record")
            out.append(edge_from_record(s, r, t, entry[1]))
        return out

    # --- traversal ----------------------------------------------------------------------------------

    def _bfs(self, base: bytes, start: str, rel: bytes | None, direction: str,
             max_depth: int | None) -> list[tuple[str, int, list[str]]]:
        if self._ctx.lookup(base + _NODE + start.encode()) is None:
            return []

        def hop(node: str) -> list[str]:
            return [t if s == node else s for s, _, t in self._scan_hop(base, node.encode(), rel, direction)]

        return breadth_first(start, hop, max_depth)

    def _path(self, base: bytes, a: bytes, b: bytes, rel: bytes | None) -> list[str] | None:
        """Fewest-hops path of out-edges from ``a`` to ``b`` (ids), or None; breadth-first."""
        return fewest_hops(a.decode(), b.decode(),
                           lambda node: [t for _, _, t in self._scan_hop(base, node.encode(), rel, "out")])

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
        direction = check_direction(direction)
        limit = check_depth(max_depth, "max_depth", optional=True)
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
        check_depth(depth, "depth", optional=False)
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
        edge whose end is not a node; the text index inconsistent with itself or
        with the node contents (postings consistent with nodes); a node vector
        without its node. One scan of the run's graph range: O(records).
        """
        base = self._base(run, write=False)
        problems: list[str] = []
        nodes: set[str] = set()
        contents: dict[str, str] = {}
        out: set[tuple[str, str, str]] = set()
        inn: set[tuple[str, str, str]] = set()
        for key, value in self._ctx.scan(base, prefix_end(base)):
            if key.startswith(TEXT_PREFIX, len(base)):
                continue  # the text index: checked as a whole below
            parts = edge_key_parts(key[len(base):])
            if parts is None:
                problems.append(f"malformed graph key {key[len(base):][:80]!r}")
                continue
            what, a, r, b = parts
            try:
                if what == "n":
                    contents[a] = node_from_record(a, value).content
                    nodes.add(a)
                elif what == "o":
                    edge_from_record(a, r, b, value)
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
        problems.extend(self._search.check(run, base + TEXT_PREFIX, contents))
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
        return has_directed_cycle(adj)
