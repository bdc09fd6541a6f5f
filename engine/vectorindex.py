"""Vector indexes: derived, in-memory state that answers vector searches without decoding every record.

This module owns the per-collection indexes of one open database and how
they follow commits. Invariant: an index answers a search only for a commit
version at which its contents equal the collection's committed records; when
it cannot be sure (a transaction's snapshot older than the collection's last
change), it declines and the primitive runs the exact scan
(:meth:`inmem.primitives.vectors.Vectors._exact`, the reference).

How an index follows the store (nothing here is ever written to the WAL):

* The kernel calls :meth:`VectorIndexes._on_commit` under the commit lock for
  every committed write of tag ``TAG_VECTOR`` (:meth:`inmem.kernel.Kernel.watch`).
  It records the collection's last-change version and, if the collection has
  an index, appends the write to that index's queue — O(1), no decoding, no
  lock, so the commit path stays CPU-only and short.
* An index is built lazily at the first search after open: it is registered
  first (so every later commit lands in its queue), then the collection is
  read at one commit version V (:meth:`Kernel.scan_latest`) and decoded into
  one contiguous float32 matrix (not one Python object per vector).
* Each search first applies the queued writes newer than what the index has
  applied (in commit order), under the index's own lock — never the commit
  lock — then scores the whole matrix with numpy.
* A queue longer than :data:`MAX_PENDING` (no search for a long time) drops
  the index; the next search rebuilds it. Recovery therefore costs nothing
  here: indexes are rebuilt from the records, which recovery restored.

An ``index="hnsw"`` collection adds an HNSW graph (Malkov & Yashunin,
"Efficient and robust approximate nearest neighbor search using Hierarchical
Navigable Small World graphs", 2016; built by ``usearch``) over the same
matrix, keyed by row number. It is derived state as well: built in one batch
call at the first search that needs it, then kept current by the same queued
writes (add on insert, remove on delete, remove + add on replace), dropped
with the matrix on overflow, never written. HNSW only proposes candidates:
they are re-scored exactly with :func:`score_rows` and ranked by
:func:`top_k`, so every returned score is the exact one. It is not used
(the matrix is scanned exactly) below :data:`HNSW_MIN_ROWS` live rows, when a
filter passes at most max(:data:`FILTER_EXACT_ROWS`, :data:`FILTER_EXACT_FRACTION`
x live rows) rows, or when usearch is missing at search time (logged once).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from .codec import decode_value
from .kernel import Kernel
from .keys import TAG_VECTOR, TAGGED_PREFIX_LEN
from .primitives.vectors import Match, row_norms, score_rows, top_k, usearch_index

__all__ = ["FILTER_EXACT_FRACTION", "FILTER_EXACT_ROWS", "HNSW_MIN_ROWS", "MAX_PENDING", "VectorIndexes"]

log = logging.getLogger("inmem")

#: Writes an index may have queued before it is dropped (rebuilt at the next search instead).
MAX_PENDING = 200_000
#: Below this many live rows an ``hnsw`` collection is searched exactly (a scan is as fast, and exact).
HNSW_MIN_ROWS = 1_000
#: A filter passing at most max(FILTER_EXACT_ROWS, FILTER_EXACT_FRACTION x live rows) rows: score
#: exactly those rows; otherwise over-fetch candidates from HNSW (SPEC.md §2).
FILTER_EXACT_ROWS = 4_096
FILTER_EXACT_FRACTION = 0.10
#: HNSW candidates asked for a top-k: max(HNSW_OVERSAMPLE x k, HNSW_MIN_CANDIDATES), before a filter.
HNSW_OVERSAMPLE = 2
HNSW_MIN_CANDIDATES = 32
#: usearch parameters: M (connectivity), efConstruction (expansion_add), ef (expansion_search; usearch
#: uses max(ef, candidates asked)); vectors held as bfloat16 (float32's range, half the memory:
#: they only rank candidates, which are re-scored from the float32 matrix).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 128
HNSW_DTYPE = "bf16"
_USEARCH_METRIC = {"cosine": "cos", "dot": "ip", "l2": "l2sq"}
_VECTOR = 0x01  # the kind byte of a vector key (after the collection prefix)


def _vector_range(key: bytes) -> bytes:
    """The vector-key prefix (collection prefix + kind 0x01) of any key of that collection."""
    end = key.index(b"\x00", TAGGED_PREFIX_LEN)  # collection names hold no NUL
    return key[: end + 1] + b"\x01"


class _Index:
    """One collection's vectors: a float32 matrix with free rows, ids, metadata and text per row."""

    def __init__(self, dim: int, metric: str, kind: str = "exact"):
        self.lock = threading.Lock()
        self.dim = dim
        self.metric = metric
        self.kind = kind  # "exact" or "hnsw"
        self.pending: deque[tuple[int, bytes, bytes | None]] = deque()
        self.ready = False
        self.overflow = False  # the queue hit MAX_PENDING: it stopped following commits; rebuild
        self.applied = 0  # commit version the contents reflect (queued writes up to it are skipped)
        self.last_change = 0  # the newest commit version known to have changed the collection
        self.reset()

    def reset(self, capacity: int = 16) -> None:
        """Empty the index, with room for ``capacity`` rows before the first grow."""
        import numpy as np

        self.ids: list[str | None] = []
        self.row_of: dict[str, int] = {}
        self.free: list[int] = []
        self.meta: list[Any] = []
        self.text: list[Any] = []
        capacity = max(16, capacity)
        self.matrix = np.zeros((capacity, self.dim), dtype="<f4")
        self.norms = np.zeros(capacity, dtype=np.float64)
        self.alive = np.zeros(capacity, dtype=bool)
        self.ann: Any = None  # the usearch HNSW graph over the live rows (key = row), once built
        self.ann_dead = 0  # removals from it since it was built (usearch keeps them as tombstones)

    def _grow(self) -> None:
        import numpy as np

        cap = self.matrix.shape[0] * 5 // 4 + 16  # x1.25: amortised O(1) appends, <= 25 % spare rows
        for name in ("matrix", "norms", "alive"):
            old = getattr(self, name)
            new = np.zeros((cap,) + old.shape[1:], dtype=old.dtype)
            new[: old.shape[0]] = old
            setattr(self, name, new)

    def put(self, id: str, raw: bytes, metadata: Any, text: Any) -> None:
        import numpy as np

        row = self.row_of.get(id)
        if row is None:
            if self.free:
                row = self.free.pop()
                self.ids[row] = id
                self.meta[row], self.text[row] = metadata, text
            else:
                row = len(self.ids)
                if row >= self.matrix.shape[0]:
                    self._grow()
                self.ids.append(id)
                self.meta.append(metadata)
                self.text.append(text)
            self.row_of[id] = row
        else:
            self.meta[row], self.text[row] = metadata, text
            if self.ann is not None:
                self.ann.remove(row)  # a replacement: the graph forgets the old vector
                self.ann_dead += 1
        vec = np.frombuffer(raw, dtype="<f4")
        self.matrix[row] = vec
        self.norms[row] = row_norms(vec[None, :])[0]
        self.alive[row] = True
        if self.ann is not None:
            self.ann.add(row, vec, threads=1)

    def remove(self, id: str) -> None:
        row = self.row_of.pop(id, None)
        if row is not None:
            self.alive[row] = False
            if self.ann is not None:
                self.ann.remove(row)
                self.ann_dead += 1
            self.ids[row] = None
            self.meta[row] = self.text[row] = None
            self.free.append(row)

    def apply(self, skip: int, key: bytes, value: bytes | None) -> bool:
        """Apply one committed write; False if it changed the collection record (rebuild)."""
        if len(key) < skip or key[skip - 1] != _VECTOR:
            return False
        id = key[skip:].decode()
        if value is None:
            self.remove(id)
        else:
            record = decode_value(value)
            self.put(id, record["vector"], record.get("metadata"), record.get("text"))
        return True

    def search(self, query: Any, k: int, predicate: Callable[[Any], bool] | None,
               min_score: float | None) -> list[Match]:
        n = len(self.ids)
        if n == 0:
            return []
        valid = self.alive[:n].copy()
        if predicate is not None:
            meta = self.meta
            for row in valid.nonzero()[0].tolist():
                if not predicate(meta[row]):
                    valid[row] = False
        if self.kind == "hnsw" and len(self.row_of) >= HNSW_MIN_ROWS and self._ann_ready():
            return self._search_hnsw(query, k, valid, predicate is not None, min_score)
        scores = score_rows(self.matrix[:n], query, self.metric, self.norms[:n])
        return self._matches(top_k(self.ids, scores, k, min_score, valid))  # type: ignore[arg-type]

    def _matches(self, best: list[tuple[str, float]]) -> list[Match]:
        row_of = self.row_of
        return [Match(i, s, self.meta[row_of[i]], self.text[row_of[i]]) for i, s in best]

    def _rescore(self, rows: Any, query: Any, k: int, min_score: float | None) -> list[Match]:
        """The exact top-k among ``rows`` (row numbers of live rows): the same scores as the full scan."""
        ids = self.ids
        scores = score_rows(self.matrix[rows], query, self.metric, self.norms[rows])
        return self._matches(top_k([ids[r] for r in rows.tolist()], scores, k, min_score))  # type: ignore[misc]

    # --- HNSW ------------------------------------------------------------------------------------

    def _ann_ready(self) -> bool:
        """Build the HNSW graph if it is missing or mostly tombstones; False if usearch is missing."""
        import numpy as np

        if self.ann is not None and self.ann_dead <= max(len(self.row_of), HNSW_MIN_ROWS):
            return True
        try:
            index_class = usearch_index()
        except ImportError as exc:
            _warn_once(str(exc))
            return False
        ann = index_class(ndim=self.dim, metric=_USEARCH_METRIC[self.metric], dtype=HNSW_DTYPE,
                          connectivity=HNSW_M, expansion_add=HNSW_EF_CONSTRUCTION,
                          expansion_search=HNSW_EF_SEARCH)
        rows = self.alive[: len(self.ids)].nonzero()[0]
        ann.add(rows.astype(np.uint64), self.matrix[rows])  # one batch call, all cores
        self.ann, self.ann_dead = ann, 0
        return True

    def _candidates(self, query: Any, count: int) -> Any:
        """Row numbers of up to ``count`` approximate nearest live rows (usearch's order)."""
        import numpy as np

        found = self.ann.search(query, count, threads=1)
        return np.asarray(found.keys, dtype=np.intp)

    def _search_hnsw(self, query: Any, k: int, valid: Any, filtered: bool, min_score: float | None) -> list[Match]:
        live = len(self.row_of)
        base = max(HNSW_OVERSAMPLE * k, HNSW_MIN_CANDIDATES)
        if not filtered:
            rows = self._candidates(query, min(base, live))
            return self._rescore(rows[valid[rows]], query, k, min_score)
        passing = int(valid.sum())
        if passing <= max(FILTER_EXACT_ROWS, FILTER_EXACT_FRACTION * live):
            return self._rescore(valid.nonzero()[0], query, k, min_score)  # a small subset: exact over it
        count = math.ceil(base * live / passing)  # expect >= base matching candidates
        while count < live:
            rows = self._candidates(query, count)
            rows = rows[valid[rows]]
            if len(rows) >= k:
                return self._rescore(rows, query, k, min_score)
            count *= 4
        return self._rescore(valid.nonzero()[0], query, k, min_score)  # asked for everything: exact


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s; searching hnsw collections exactly meanwhile", message)


class VectorIndexes:
    """The derived vector indexes of one database, and the embedders registered in this process.

    :param kernel: the database's storage kernel (indexes read it and follow its commits).
    :param embedder: the database-wide embedder (``Database.open(embedder=...)``), or None.
    """

    def __init__(self, kernel: Kernel, embedder: Callable[[list[str]], Any] | None = None):
        self._kernel = kernel
        self._default = embedder
        self._embedders: dict[tuple[str, str], Callable[[list[str]], Any]] = {}
        self._lock = threading.Lock()  # guards starting to watch and registering indexes
        self._floor: int | None = None  # last commit version before watching began (None: not yet)
        self._last_change: dict[bytes, int] = {}  # vector-key prefix -> last commit version writing it
        self._indexes: dict[bytes, _Index] = {}

    # --- embedders ----------------------------------------------------------------------------

    def embedder(self, run: str, collection: str) -> Callable[[list[str]], Any] | None:
        return self._embedders.get((run, collection), self._default)

    def set_embedder(self, run: str, collection: str, embedder: Callable[[list[str]], Any]) -> None:
        self._embedders[(run, collection)] = embedder

    # --- following commits (under the commit lock) ----------------------------------------------

    def _on_commit(self, version: int, key: bytes, value: bytes | None) -> None:
        lo = _vector_range(key)
        self._last_change[lo] = version
        index = self._indexes.get(lo)
        if index is not None and not index.overflow:
            if len(index.pending) >= MAX_PENDING:
                index.overflow = True  # nobody searched for a long time: rebuild when somebody does
            else:
                index.pending.append((version, key, value))

    def _watching(self) -> int:
        with self._lock:
            if self._floor is None:
                self._floor = self._kernel.watch(TAG_VECTOR, self._on_commit)
            return self._floor

    # --- search ---------------------------------------------------------------------------------

    def search(self, lo: bytes, hi: bytes, config: dict[str, Any], query: Any, k: int,
               predicate: Callable[[Any], bool] | None, min_score: float | None,
               at: int | None) -> list[Match] | None:
        """See :class:`inmem.primitives.vectors.IndexSource`. None: cannot answer as of ``at``."""
        floor = self._watching()
        if at is not None and self._last_change.get(lo, floor) > at:
            return None  # changed after the caller's snapshot (or maybe: before we watched)
        with self._lock:
            index = self._indexes.get(lo)
            kind = config.get("index", "exact")
            if index is None or (index.dim, index.metric, index.kind) != (config["dim"], config["metric"], kind):
                index = self._indexes[lo] = _Index(config["dim"], config["metric"], kind)
        with index.lock:
            if not index.ready or index.overflow:
                self._build(index, lo, hi)
            if not self._drain(index, lo):
                self._build(index, lo, hi)
            if at is not None and index.last_change > at:
                return None
            return index.search(query, k, predicate, min_score)

    def _build(self, index: _Index, lo: bytes, hi: bytes) -> None:
        # follow commits again before reading: those up to the read's version are skipped by _drain
        index.overflow = False
        index.pending.clear()
        version, entries = self._kernel.scan_latest(lo, hi)
        index.reset(len(entries) + len(entries) // 16)  # the rows it holds, and room for ~6 % more
        skip = len(lo)
        for key, (_v, value) in entries:
            record = decode_value(value)
            index.put(key[skip:].decode(), record["vector"], record.get("metadata"), record.get("text"))
        index.applied = version
        index.last_change = self._last_change.get(lo, self._floor or 0)
        index.ready = True

    def _drain(self, index: _Index, lo: bytes) -> bool:
        """Apply the queued writes newer than the contents; False if a rebuild is needed."""
        pending, skip = index.pending, len(lo)
        while pending:
            version, key, value = pending.popleft()
            if version <= index.applied:
                continue
            index.applied = version
            index.last_change = max(index.last_change, version)
            if not index.apply(skip, key, value):
                pending.clear()
                return False
        return True
