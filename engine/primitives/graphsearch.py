"""Search over the memory graph's nodes: the node full-text index, node vectors, and their fusion.

This module owns what the graph keeps *about* a node's content for search —
the full-text postings (an :mod:`inmem.fulltext` index under the graph's own
key range) and the node's vector (a record in the run's vector collection
:data:`NODE_COLLECTION`, through :class:`~inmem.primitives.vectors.Vectors`,
not a second copy of the vector store) — and the three search modes:
BM25 text, vector similarity, and reciprocal rank fusion of the two.

Invariants: every node is indexed in full text exactly with its current
content (written in the same commit as the node record, removed in the
commit that deletes it); a node's vector, if any, is in
:data:`NODE_COLLECTION` under the node's id, and no vector there belongs to
a node that does not exist. Both are derived from the node records and
checked by :meth:`NodeSearch.check` (``inmem verify``).

Keys (SPEC.md §2 "Memory graph")::

    run prefix | TAG_GRAPH | "x" 0x00 | full-text layout (fulltext.py: 't' postings, 'd' docs, 's' stats, 'm' settings)
    run prefix | TAG_VECTOR | "graph.nodes" 0x00 ...  (the vector store's layout; vector id = node id)

Fusion (``mode="hybrid"``): reciprocal rank fusion, Cormack, Clarke and
Büttcher, "Reciprocal Rank Fusion outperforms Condorcet and individual rank
learning methods", SIGIR 2009: ``score(d) = sum over rankings r of
1 / (60 + rank_r(d))`` with ranks from 1, each ranking cut at
:func:`fusion_depth` ``(k)`` candidates (after the kind/filter), ties by id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import fulltext
from ..embeddings import embed
from ..errors import InvalidArgument, InvalidValue
from ..keys import prefix_end
from .context import Context
from .vectors import IndexSource, Vectors, checked_vector

__all__ = ["Hit", "MODES", "NODE_COLLECTION", "RRF_K", "TEXT_PREFIX", "NodeSearch", "fusion_depth", "rrf"]

#: The vector collection (in each run) that holds node vectors; created by the graph on first use.
NODE_COLLECTION = "graph.nodes"
#: After the run's graph prefix: the full-text index of node contents.
TEXT_PREFIX = b"x\x00"
#: The reciprocal rank fusion constant (Cormack et al. 2009).
RRF_K = 60
MODES = ("text", "vector", "hybrid")
_ALL = 10_000  # the vector store's largest k
_META = b"m"   # fulltext's settings record, below the index prefix


@dataclass(frozen=True)
class Hit:
    """One search result: the ``node`` (a :class:`~inmem.primitives.graph.Node`) and its ``score``
    (BM25 for ``mode="text"``, the collection metric's similarity for ``"vector"``, the RRF sum for ``"hybrid"``)."""

    node: Any
    score: float

    __hash__ = None  # type: ignore[assignment]


def rrf(rankings: list[list[str]], k: int = RRF_K) -> list[tuple[str, float]]:
    """Fuse rankings (lists of ids, best first) by reciprocal rank fusion: ``(id, sum 1/(k + rank))``,
    best first, ties by id. O(total length · log)."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, id in enumerate(ranking, start=1):
            scores[id] = scores.get(id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def fusion_depth(k: int) -> int:
    """How many candidates of each ranking hybrid search fuses for a top ``k``: ``max(4k, 50)``."""
    return max(4 * k, 50)


class NodeSearch:
    """The graph's search side over one :class:`Context`: the node text index and the node vectors.

    ``index``: the database's derived vector indexes and embedders (None: exact scans, no
    embedder). Used by :class:`~inmem.primitives.graph.Graph`, which owns the node records
    and passes each run's text-index prefix ``tbase``.
    """

    __slots__ = ("_ctx", "_index", "_vectors")

    def __init__(self, ctx: Context, index: IndexSource | None):
        self._ctx = ctx
        self._index = index
        self._vectors = Vectors(ctx, index)

    # --- settings ------------------------------------------------------------------------------

    def configure(self, run: str, tbase: bytes, *, stem: bool | None, dim: int | None, metric: str, index: str,
                  embedder: Callable[[list[str]], Any] | None) -> dict[str, Any]:
        """Fix the text index's stemming and/or create the node-vector collection; return the settings.

        :raises InvalidArgument: a setting that contradicts the stored one, or ``embedder``/``metric``
            without ``dim`` — checked before anything is written.
        """
        if stem is not None and not isinstance(stem, bool):
            raise InvalidArgument(f"stem is a bool or None, got {stem!r:.40}")
        if dim is None and embedder is not None:
            dim = getattr(embedder, "dim", None)
            if type(dim) is not int:
                raise InvalidArgument("give dim= with an embedder that has no int .dim attribute")
        old_stem = fulltext.index_stem(self._ctx, tbase)
        if stem is not None and old_stem is not None and old_stem != stem:
            raise InvalidArgument(f"the graph's text index in run {run} was built with stem={old_stem}; "
                                  "it cannot change")
        vectors = self._vectors.info(run, NODE_COLLECTION)
        if dim is not None:
            if vectors is not None and (vectors["dim"], vectors["metric"], vectors["index"]) != (dim, metric, index):
                raise InvalidArgument(
                    f"run {run}'s node vectors exist with dim={vectors['dim']}, metric={vectors['metric']!r}, "
                    f"index={vectors['index']!r}; they cannot change")
            vectors = self._vectors.create(run, NODE_COLLECTION, dim=dim, metric=metric, index=index,
                                           embedder=embedder)
        if stem is not None:
            fulltext.configure(self._ctx, run, tbase, stem=stem)
        stem_now = stem if stem is not None else bool(old_stem)
        return {"stem": stem_now, "vectors": vectors}

    # --- writes, in the node's commit -------------------------------------------------------------

    def node_vector(self, run: str, content: str, vector: Any) -> tuple[Any, dict[str, Any] | None]:
        """The vector to store for a node (checked; None: none) and the collection to create first
        (None: it exists or no vector). Reads only the collection record; writes nothing.

        ``vector`` given: checked against the collection's dim (or taken as it is if the
        collection does not exist yet: it will be created, cosine). ``vector`` None: the content
        embedded if an embedder is available for the run (``graph.configure(embedder=)`` or
        ``Database.open(embedder=)``), else None.

        :raises InvalidValue: not a finite vector of the collection's dim; the embedder failed.
        :raises InvalidArgument: a zero vector in a cosine collection.
        """
        info = self._vectors.info(run, NODE_COLLECTION)
        if vector is None:
            embedder = None if self._index is None else self._index.embedder(run, NODE_COLLECTION)
            if embedder is None:
                return None, None
            if info is not None:
                vec, nonzero = checked_vector(self._vectors.embed(run, NODE_COLLECTION, content), info["dim"])
            else:
                try:
                    rows = embed(embedder, [content], _probe_dim(embedder, content))
                except InvalidValue:
                    raise
                except InvalidArgument:
                    raise
                except Exception as exc:
                    raise InvalidValue(f"the embedder failed: {exc}") from exc
                vec, nonzero = checked_vector(rows[0], rows.shape[1])
        else:
            dim = info["dim"] if info is not None else _length(vector)
            vec, nonzero = checked_vector(vector, dim, "node vector")
        metric = info["metric"] if info is not None else "cosine"
        if not nonzero and metric == "cosine":
            raise InvalidArgument("a node vector in a cosine collection cannot be the zero vector")
        create = None if info is not None else {"dim": int(vec.shape[0])}
        return vec, create

    def put(self, run: str, tbase: bytes, id: str, content: str, vec: Any, create: dict[str, Any] | None) -> None:
        """Index ``content`` as node ``id`` (re-indexing diffs against the old terms) and store its vector."""
        fulltext.index_doc(self._ctx, run, tbase, id, content, stem=None)  # the run's setting, one read
        if vec is not None:
            if create is not None:
                self._vectors.create(run, NODE_COLLECTION, dim=create["dim"])
            self._vectors.upsert(run, NODE_COLLECTION, id, vec)

    def drop(self, run: str, tbase: bytes, id: str) -> None:
        """Remove node ``id`` from the text index and its vector (if any)."""
        fulltext.unindex_doc(self._ctx, run, tbase, id)
        if self._vectors.info(run, NODE_COLLECTION) is not None:
            self._vectors.delete(run, NODE_COLLECTION, id)

    def has_vector(self, run: str, id: str) -> bool:
        """Whether node ``id`` has a vector. One or two point reads."""
        if self._vectors.info(run, NODE_COLLECTION) is None:
            return False
        return self._vectors.get(run, NODE_COLLECTION, id) is not None

    # --- search ----------------------------------------------------------------------------------

    def text_ranking(self, tbase: bytes, query: str, keep: Callable[[str], Any], k: int) -> list[tuple[Any, float]]:
        """The best ``k`` ``(node, BM25)`` whose node ``keep(id)`` returns (not None), best first.

        Without a node predicate the index's top-k is exact; with one, every matching document is
        scored (one posting-range scan per query term) and nodes are read in rank order until
        ``k`` pass. O(sum of the query terms' document frequencies + reads)."""
        out: list[tuple[Any, float]] = []
        for id, score in fulltext.search(self._ctx, tbase, query, k=_BIG, stem=None):
            node = keep(id)
            if node is not None:
                out.append((node, score))
                if len(out) == k:
                    break
        return out

    def vector_ranking(self, run: str, query: Any, keep: Callable[[str], Any], k: int) -> list[tuple[Any, float]]:
        """The best ``k`` ``(node, similarity)`` for ``query`` (a vector, or a str embedded with the
        run's embedder) among nodes ``keep(id)`` accepts; exact (the vector store's search, asked
        for 4k, 8k, ... candidates until k pass or all were seen).

        :raises InvalidArgument: no node in the run has a vector, or a str query without an embedder.
        :raises InvalidValue: a query of the wrong shape.
        """
        info = self._vectors.info(run, NODE_COLLECTION)
        if info is None:
            raise InvalidArgument(f"no node in run {run} has a vector: add nodes with vector=, or give an "
                                  "embedder (graph.configure(run, embedder=) or Database.open(embedder=))")
        if isinstance(query, str):
            query = self._vectors.embed(run, NODE_COLLECTION, query)
        want = min(max(4 * k, 16), _ALL)
        while True:
            matches = self._vectors.search(run, NODE_COLLECTION, query, k=want)
            out: list[tuple[Any, float]] = []
            for m in matches:
                node = keep(m.id)
                if node is not None:
                    out.append((node, m.score))
                    if len(out) == k:
                        return out
            if len(matches) < want or want == _ALL:
                return out
            want = min(want * 2, _ALL)

    # --- verify ----------------------------------------------------------------------------------

    def check(self, run: str, tbase: bytes, nodes: dict[str, str]) -> list[str]:
        """Problems of the derived search state against ``nodes`` (``{id: content}``): the text
        index's own consistency (:func:`inmem.fulltext.check_index`), one document per node with the
        terms of its content, and no node vector without its node. O(index size + vectors)."""
        problems = fulltext.check_index(self._ctx, tbase)
        stem = bool(fulltext.index_stem(self._ctx, tbase))
        dlo = tbase + b"d"
        indexed: set[str] = set()
        for key, _ in self._ctx.scan(dlo, prefix_end(dlo)):
            indexed.add(key[len(dlo):].decode("utf-8", "replace"))
        for id in sorted(indexed - nodes.keys()):
            problems.append(f"text index holds {id!r}, which is not a node")
        for id, content in sorted(nodes.items()):
            if id not in indexed:
                problems.append(f"node {id!r} is not in the text index")
            elif fulltext.doc_terms(self._ctx, tbase, id) != fulltext.term_frequencies(content, stem=stem):
                problems.append(f"node {id!r}: its text index terms are not those of its content")
        for id in self.vector_ids(run):
            if id not in nodes:
                problems.append(f"node vector {id!r} has no node")
        return problems

    def vector_ids(self, run: str) -> list[str]:
        """Ids of the nodes that have a vector, in id order (empty if there is no node vector). O(vectors)."""
        if self._vectors.info(run, NODE_COLLECTION) is None:
            return []
        return self._vectors.ids(run, NODE_COLLECTION)


_BIG = 1 << 60  # "every match": fulltext.search keeps the top k of the scored documents


def _length(vector: Any) -> int:
    try:
        return len(vector)
    except TypeError:
        raise InvalidValue(f"a node vector is a 1-D sequence or array of numbers, got {type(vector).__name__}") \
            from None


def _probe_dim(embedder: Callable[[list[str]], Any], content: str) -> int:
    """The embedder's output width: its int ``.dim`` attribute if it has one, else one call's row length."""
    dim = getattr(embedder, "dim", None)
    if type(dim) is int and dim >= 1:
        return dim
    try:
        import numpy
        shape = numpy.asarray(embedder([content])).shape
    except Exception as exc:
        raise InvalidValue(f"the embedder failed: {exc}") from exc
    if len(shape) != 2 or shape[0] != 1 or shape[1] < 1:
        raise InvalidValue(f"the embedder returned shape {shape} for one text; expected (1, dim)")
    return int(shape[1])
