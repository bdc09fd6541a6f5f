"""The vector store primitive: embeddings with metadata, searched by similarity (tag ``TAG_VECTOR``).

This module owns vector collections and vector records, how a query is
scored, and the exact (brute-force) search that is the reference for every
index. Invariants: a collection's ``dim`` and ``metric`` never change after
``create``; every stored vector has exactly ``dim`` finite float32 components;
every argument is checked before anything is written. An index
(:mod:`inmem.vectorindex`) is derived state: it may only ever answer what
the exact search over the records the caller can see would answer.

Keys (SPEC.md §2)::

    run prefix | TAG_VECTOR | collection (UTF-8) | 0x00 | 0x00              -> collection record
    run prefix | TAG_VECTOR | collection (UTF-8) | 0x00 | 0x01 | id (UTF-8) -> vector record

Values (CBOR maps): collection ``{"dim", "metric", "index", "embedder", "created_us"}``;
vector ``{"vector": float32 little-endian bytes (4 x dim), "metadata": dict | None,
"text": str | None, "updated_us"}``.

Scores, higher is better for every metric: ``cosine`` = cos(q, v) in [-1, 1];
``dot`` = q . v; ``l2`` = -||q - v||_2. Ties break by id (ascending).
numpy is needed (``pip install 'inmem[vectors]'``); it is imported on first use, as is
usearch for ``index="hnsw"`` collections (``pip install 'inmem[ann]'``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..codec import check_value, decode_value, encode_record, encode_value, now_us, utc_from_us
from ..embeddings import embed
from ..errors import InvalidArgument, InvalidValue
from ..filters import compile_filter
from ..keys import MAX_KEY_BYTES, TAG_VECTOR, name_bytes, prefix_end, run_prefix
from .context import Context

__all__ = ["INDEXES", "METRICS", "Match", "VectorRecord", "Vectors", "bare_vector_record", "collection_prefix",
           "row_norms", "score_rows", "top_k", "usearch_index", "vector_from_record"]

METRICS = ("cosine", "dot", "l2")
#: Index kinds: ``"exact"`` (numpy brute force, the reference) and ``"hnsw"`` (usearch, re-scored exactly).
INDEXES = ("exact", "hnsw")
MAX_DIM = 65_536
_CONFIG = b"\x00"  # after the collection prefix (which ends in 0x00): the collection record
_VECTOR = b"\x01"  # ... then the vector id
#: Longest collection name, in bytes of UTF-8.
MAX_COLLECTION_BYTES = 256


_F32 = "<f4"  # stored components: float32, little-endian
_INF = float("inf")

# Caches of pure functions of their keys, so the hot path (one autocommit upsert) skips
# re-validating a collection name and re-decoding its record: a collection name -> its key
# suffix; a collection record's bytes -> the decoded record (records are never changed once
# written). Both are bounded: cleared when they reach _CACHE_MAX entries.
_CACHE_MAX = 4096
_SUFFIXES: dict[str, bytes] = {}
_CONFIGS: dict[bytes, dict[str, Any]] = {}


_F32_DTYPE: Any = None  # numpy.dtype("<f4") once numpy is imported


def _np() -> Any:
    global _F32_DTYPE
    try:
        import numpy
    except ImportError:  # pragma: no cover - the vectors extra installs it
        raise ImportError("the vector store needs numpy: pip install 'inmem[vectors]'") from None
    if _F32_DTYPE is None:
        _F32_DTYPE = numpy.dtype(_F32)
    return numpy


def usearch_index() -> Any:
    """The ``usearch.index.Index`` class (imported on first use).

    :raises ImportError: usearch is not installed; the message says ``pip install 'inmem[ann]'``.
    """
    try:
        from usearch.index import Index
    except ImportError:
        raise ImportError("index='hnsw' needs usearch: pip install 'inmem[ann]'") from None
    return Index


def _collection_suffix(collection: object) -> bytes:
    """The key bytes after the run prefix for ``collection``: its UTF-8 and 0x00 (cached).

    :raises InvalidArgument: not a non-empty str, a NUL in it, not UTF-8
        encodable, or longer than :data:`MAX_COLLECTION_BYTES` bytes.
    """
    raw = name_bytes(collection, "collection", MAX_COLLECTION_BYTES)
    if type(collection) is str:  # never cache a str subclass: its hash or equality may lie
        if len(_SUFFIXES) >= _CACHE_MAX:
            _SUFFIXES.clear()
        _SUFFIXES[collection] = raw + b"\x00"
    return raw + b"\x00"


_PACK_Q = struct.Struct(">Q").pack
_PACK_I = struct.Struct(">I").pack
_PACK_H = struct.Struct(">H").pack
_NULLS_AND_TS = b"\x68metadata\xf6\x64text\xf6\x6aupdated_us"


def _cbor_head(major: int, n: int) -> bytes:
    """The head of a CBOR data item (RFC 8949 §3): major type and argument ``n``, shortest form."""
    if n < 24:
        return bytes((major << 5 | n,))
    if n < 0x100:
        return bytes((major << 5 | 24, n))
    if n < 0x10000:
        return bytes((major << 5 | 25,)) + _PACK_H(n)
    if n < 0x100000000:
        return bytes((major << 5 | 26,)) + _PACK_I(n)
    return bytes((major << 5 | 27,)) + _PACK_Q(n)


def bare_vector_record(data: bytes, updated_us: int) -> bytes:
    """The CBOR of ``{"vector": data, "metadata": None, "text": None, "updated_us": updated_us}``, byte for
    byte what cbor2 encodes (map of 4, shortest-form heads, keys in this order; a differential test pins
    it), assembled without cbor2: the autocommit upsert's hot path. ``updated_us`` >= 0."""
    return b"".join((b"\xa4\x66vector", _cbor_head(2, len(data)), data, _NULLS_AND_TS, _cbor_head(0, updated_us)))


def checked_vector(value: Any, dim: int, what: str = "vector") -> tuple[Any, bool]:
    """``(array, nonzero)``: ``value`` as a new C-contiguous float32 array of shape (dim,), and whether
    any component is non-zero. One conversion and one reduction; the caller's array is never kept.

    The common case (a float32 array) costs one float32 dot product: a finite,
    positive sum of squares proves every component finite and one non-zero;
    anything else (overflow, zero, NaN) is decided by a float64 reduction.

    :raises InvalidValue: not a 1-D sequence or array of ``dim`` numbers
        (bools, strings and objects are refused, not converted), or a NaN, an
        infinity or a value beyond float32.
    """
    np = _np()
    if type(value) is np.ndarray and value.dtype is _F32_DTYPE and value.shape == (dim,):
        out = value.copy()  # the common case, inlined: a float32 array of the right shape
        fast = float(np.vdot(out, out))
        if 0.0 < fast < _INF:
            return out, True
        return out, _finite_nonzero(np, out, what)
    if isinstance(value, (str, bytes)):
        raise InvalidValue(f"{what} must be a sequence of numbers or a 1-D numpy array, got {type(value).__name__}")
    try:
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InvalidValue(f"{what} must be a sequence of numbers: {exc}") from None
    if arr.dtype.kind not in "fiu":
        raise InvalidValue(f"{what} must hold numbers, got {arr.dtype} values")
    if arr.ndim != 1 or arr.shape[0] != dim:
        raise InvalidValue(f"{what} must have shape ({dim},), got {arr.shape}")
    if arr.dtype == _F32:
        out = arr.copy()  # never keep a reference to the caller's array; no cast, nothing to overflow
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            out = arr.astype(_F32)
    # float32 (a dot product, not a ufunc: no floating-point warnings): NaN and infinities propagate;
    # it may overflow or underflow, which the float64 reduction below then settles
    fast = float(np.vdot(out, out))
    if 0.0 < fast < _INF:
        return out, True
    return out, _finite_nonzero(np, out, what)


def _finite_nonzero(np: Any, out: Any, what: str) -> bool:
    """The slow check, after the float32 sum of squares overflowed, underflowed or was NaN: whether
    any component of ``out`` is non-zero. :raises InvalidValue: a NaN or an infinity in ``out``."""
    # float64 cannot overflow for finite float32 components (dim <= 65,536)
    if not math.isfinite(np.einsum("i,i->", out, out, dtype=np.float64)):
        raise InvalidValue(f"{what} holds NaN or an infinity, or a value beyond float32")
    return bool(out.any())


class VectorRecord:
    """One stored vector: ``id``, ``vector`` (numpy float32, shape ``(dim,)``), ``metadata``, ``text``,
    ``updated_at`` (UTC datetime of the write; ``updated_us``: the same in microseconds since the epoch).

    A copy: changing it changes nothing stored. ``==`` compares everything but
    ``vector`` (compare those with ``numpy.array_equal``).
    """

    __slots__ = ("id", "vector", "metadata", "text", "updated_us")

    def __init__(self, id: str, vector: Any, metadata: dict[str, Any] | None, text: str | None, updated_us: int):
        self.id = id
        self.vector = vector
        self.metadata = metadata
        self.text = text
        self.updated_us = updated_us

    @property
    def updated_at(self) -> _dt.datetime:
        """When it was written (UTC), from ``updated_us``."""
        return utc_from_us(self.updated_us)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VectorRecord):
            return NotImplemented
        return (self.id, self.metadata, self.text, self.updated_us) == (
            other.id, other.metadata, other.text, other.updated_us)

    __hash__ = None  # type: ignore[assignment]  # metadata is a dict: never hashable

    def __repr__(self) -> str:
        return (f"VectorRecord(id={self.id!r}, metadata={self.metadata!r}, text={self.text!r}, "
                f"updated_at={self.updated_at!r})")


@dataclass(frozen=True)
class Match:
    """A search hit: ``id``, ``score`` (higher is better, see the module docstring), ``metadata``, ``text``."""

    id: str
    score: float
    metadata: dict[str, Any] | None
    text: str | None


class IndexSource(Protocol):
    """What the primitive asks of the database's derived vector indexes (:mod:`inmem.vectorindex`)."""

    def search(self, lo: bytes, hi: bytes, config: dict[str, Any], query: Any, k: int,
               predicate: Callable[[Any], bool] | None, min_score: float | None,
               at: int | None) -> list[Match] | None:
        """Top ``k`` of the collection whose vector keys are ``[lo, hi)``, as of commit version ``at``
        (None: latest); None if the index cannot answer for that version (the caller scans)."""

    def embedder(self, run: str, collection: str) -> Callable[[list[str]], Any] | None:
        """The embedder registered for the collection, else the database's, else None."""

    def set_embedder(self, run: str, collection: str, embedder: Callable[[list[str]], Any]) -> None: ...


def collection_prefix(run_prefix_tagged: bytes, collection: str) -> bytes:
    """The key prefix of a collection (its record and its vectors) below a run's ``TAG_VECTOR`` prefix."""
    return run_prefix_tagged + collection.encode() + b"\x00"


def vector_from_record(id: str, record: dict[str, Any]) -> VectorRecord:
    """The :class:`VectorRecord` of a decoded vector record."""
    np = _np()
    vec = np.frombuffer(record["vector"], dtype="<f4").copy()
    return VectorRecord(id, vec, record.get("metadata"), record.get("text"), record["updated_us"])


def row_norms(matrix: Any) -> Any:
    """The L2 norm of each row of ``matrix`` (n, dim), accumulated in float64 (one definition, so an
    index and the exact scan compute identical cosine scores)."""
    np = _np()
    return np.sqrt(np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64))


def score_rows(matrix: Any, query: Any, metric: str, norms: Any = None) -> Any:
    """Scores of each row of ``matrix`` (n, dim) against ``query`` (dim,): an array of n, higher is better.

    ``norms``: the rows' L2 norms if known (cosine). O(n x dim).
    """
    np = _np()
    if metric == "dot":
        return matrix @ query
    if metric == "cosine":
        if norms is None:
            norms = row_norms(matrix)
        norms = norms * float(np.linalg.norm(query))
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (matrix @ query) / norms
        return np.nan_to_num(out, nan=-1.0)
    diff = matrix - query
    return -np.sqrt(np.einsum("ij,ij->i", diff, diff))


def top_k(ids: Sequence[str], scores: Any, k: int, min_score: float | None,
          valid: Any = None) -> list[tuple[str, float]]:
    """The best ``k`` (id, score), best first, ties by id; rows not ``valid`` (a bool mask) and scores
    below ``min_score`` are dropped. Only the chosen rows' ids are touched. O(n + k log k)."""
    np = _np()
    n = len(scores)
    if n == 0:
        return []
    mask = np.ones(n, dtype=bool) if valid is None else valid
    if min_score is not None:
        mask = mask & (scores >= min_score)
    keep = np.nonzero(mask)[0]
    if len(keep) > k:
        # a generous partition, so that ties at the boundary are all considered before sorting by id
        part = keep[np.argpartition(-scores[keep], k - 1)[:k]]
        kth = scores[part].min()
        keep = keep[scores[keep] >= kth]
    pairs = sorted(((-float(scores[i]), ids[i]) for i in keep))
    return [(i, -s) for s, i in pairs[:k]]


class Vectors:
    """Vector collections per run: ``db.vectors`` / ``tx.vectors``."""

    __slots__ = ("_ctx", "_index", "_all", "_active")

    def __init__(self, ctx: Context, index: IndexSource | None = None):
        self._ctx = ctx
        self._index = index
        self._all, self._active = ctx.prefix_maps(TAG_VECTOR)

    # --- keys and records --------------------------------------------------------------------

    def _base(self, run: str, collection: object, *, write: bool) -> bytes:
        """The collection's key prefix (run prefix | tag | name | 0x00). :raises InvalidArgument: a bad name."""
        prefix = (self._active if write else self._all).get(run)  # type: ignore[call-overload]
        if prefix is None:
            prefix = run_prefix(self._ctx.check_run(run, write=write), TAG_VECTOR)
        suffix = _SUFFIXES.get(collection) if type(collection) is str else None
        if suffix is None:
            suffix = _collection_suffix(collection)
        return prefix + suffix  # type: ignore[no-any-return]

    @staticmethod
    def _id_bytes(id: object) -> bytes:
        if not isinstance(id, str) or not id:
            raise InvalidArgument(f"a vector id is a non-empty str, got {id!r:.80}")
        try:
            raw = id.encode()
        except UnicodeEncodeError:
            raise InvalidArgument(f"vector id {id!r:.80} is not valid UTF-8 text") from None
        if len(raw) > MAX_KEY_BYTES:
            raise InvalidArgument(f"a vector id is at most {MAX_KEY_BYTES} bytes of UTF-8")
        return raw

    def _config(self, base: bytes, collection: str) -> dict[str, Any]:
        """The collection record (shared: read it, never change it). :raises InvalidArgument: none."""
        entry = self._ctx.lookup(base + _CONFIG)
        if entry is None:
            raise InvalidArgument(f"no vector collection {collection!r} in this run; create it with vectors.create")
        config = _CONFIGS.get(entry[1])
        if config is None:
            if len(_CONFIGS) >= _CACHE_MAX:
                _CONFIGS.clear()
            config = _CONFIGS[entry[1]] = decode_value(entry[1])
        return config

    def _vector(self, value: Any, dim: int, what: str = "vector") -> Any:
        """``value`` as a new C-contiguous float32 array of shape (dim,). :raises InvalidValue: as :func:`checked_vector`."""
        return checked_vector(value, dim, what)[0]

    # --- collections -------------------------------------------------------------------------

    def create(self, run: str, collection: str, *, dim: int, metric: str = "cosine", index: str = "exact",
               embedder: Callable[[list[str]], Any] | None = None) -> dict[str, Any]:
        """Create a collection of ``dim``-dimensional vectors (idempotent with the same parameters).

        ``metric``: ``"cosine"`` (default), ``"dot"`` or ``"l2"``; ``index``:
        ``"exact"`` (default: numpy brute force over an in-memory matrix, the
        reference, O(n x dim) per search) or ``"hnsw"`` (an approximate HNSW
        graph from ``usearch``, ``pip install 'inmem[ann]'``: candidates are
        re-scored exactly, so every returned score equals the exact one, but a
        true top-k hit may be missed; recall@10 >= 0.95 is tested; SPEC.md §2
        states when it searches exactly instead). ``embedder``: a callable ``list[str] ->
        (n, dim) array`` used by :meth:`add_text` and string queries in this
        process (not stored: give it again after reopening, or give one to
        ``Database.open(embedder=...)``). Returns the collection's parameters.

        :raises InvalidArgument: bad name, ``dim`` (1..65536), ``metric`` or
            ``index``, or the collection exists with other parameters.
        :raises ImportError: ``index="hnsw"`` and usearch is not installed.
        """
        if type(dim) is not int or not 1 <= dim <= MAX_DIM:
            raise InvalidArgument(f"dim must be an int in 1..{MAX_DIM}; got {dim!r}")
        if metric not in METRICS:
            raise InvalidArgument(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
        if index not in INDEXES:
            raise InvalidArgument(f"index must be one of {', '.join(INDEXES)}; got {index!r}")
        if embedder is not None and not callable(embedder):
            raise InvalidArgument("embedder must be a callable list[str] -> array of shape (n, dim)")
        if index == "hnsw":
            usearch_index()  # refuse before writing, with the install hint
        base = self._base(run, collection, write=True)
        entry = self._ctx.lookup(base + _CONFIG)
        name = getattr(embedder, "name", None) if embedder is not None else None
        if entry is not None:
            config = decode_value(entry[1])
            if (config["dim"], config["metric"], config["index"]) != (dim, metric, index):
                raise InvalidArgument(
                    f"collection {collection!r} exists with dim={config['dim']}, metric={config['metric']!r}, "
                    f"index={config['index']!r}; it cannot change")
        else:
            config = {"dim": dim, "metric": metric, "index": index,
                      "embedder": name if isinstance(name, str) else None, "created_us": now_us()}
            self._ctx.write(run, base + _CONFIG, encode_value(config))
        if embedder is not None and self._index is not None:
            self._index.set_embedder(run, collection, embedder)
        return {k: config[k] for k in ("dim", "metric", "index", "embedder")}

    def collections(self, run: str) -> list[str]:
        """Names of the run's collections, in name order. O(vectors in the run)."""
        base = run_prefix(self._ctx.check_run(run, write=False), TAG_VECTOR)
        skip = len(base)
        names = []
        for key, _ in self._ctx.scan(base, prefix_end(base)):
            user = key[skip:]
            end = user.find(b"\x00")  # names hold no NUL: the first one ends the name
            if user[end + 1:] == _CONFIG:
                names.append(user[:end].decode())
        return names

    def info(self, run: str, collection: str) -> dict[str, Any] | None:
        """The collection's parameters ``{"dim", "metric", "index", "embedder"}``, or None if it does not
        exist. One point read. :raises InvalidArgument: a bad name."""
        base = self._base(run, collection, write=False)
        if self._ctx.lookup(base + _CONFIG) is None:
            return None
        config = self._config(base, collection)
        return {k: config[k] for k in ("dim", "metric", "index", "embedder")}

    def embed(self, run: str, collection: str, text: str) -> Any:
        """``text`` embedded with the collection's embedder: a float32 array of shape (dim,).

        :raises InvalidArgument: no such collection, no embedder for it in this process, ``text`` not a str.
        :raises InvalidValue: the embedder returned a wrong shape, NaN or an infinity.
        """
        if not isinstance(text, str):
            raise InvalidArgument(f"text must be a str, got {type(text).__name__}")
        base = self._base(run, collection, write=False)
        return self._embed(run, collection, self._config(base, collection), text)

    def ids(self, run: str, collection: str) -> list[str]:
        """Ids of the collection's vectors, in id order (UTF-8 byte order). O(n) key scan.
        :raises InvalidArgument: no such collection."""
        base = self._base(run, collection, write=False)
        self._config(base, collection)
        lo = base + _VECTOR
        return [key[len(lo):].decode() for key, _ in self._ctx.scan(lo, prefix_end(lo))]

    def count(self, run: str, collection: str) -> int:
        """Vectors in the collection. O(n). :raises InvalidArgument: no such collection."""
        base = self._base(run, collection, write=False)
        self._config(base, collection)
        return self._ctx.count(base + _VECTOR, prefix_end(base + _VECTOR))

    # --- vectors -------------------------------------------------------------------------------

    def upsert(self, run: str, collection: str, id: str, vector: Any, *, metadata: dict[str, Any] | None = None,
               text: str | None = None) -> VectorRecord:
        """Insert or replace vector ``id``. Stored as float32 little-endian (4 x dim bytes).

        :raises InvalidValue: ``vector`` is not ``dim`` finite numbers (a
            sequence or a 1-D array), or ``metadata`` cannot be stored.
        :raises InvalidArgument: no such collection, a bad id, ``metadata``
            not a dict or ``text`` not a str; a zero vector in a cosine collection.
        :raises RunNotFound: / :raises RunClosed: as every write.
        """
        base = self._base(run, collection, write=True)
        raw_id = self._id_bytes(id)
        config = self._config(base, collection)
        vec, nonzero = checked_vector(vector, config["dim"])
        return self._put(run, base, raw_id, id, config, vec, nonzero, metadata, text)

    def _put(self, run: str, base: bytes, raw_id: bytes, id: str, config: dict[str, Any], vec: Any,
             nonzero: bool, metadata: Any, text: Any) -> VectorRecord:
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidArgument(f"metadata must be a dict or None, got {type(metadata).__name__}")
        if text is not None and not isinstance(text, str):
            raise InvalidArgument(f"text must be a str or None, got {type(text).__name__}")
        if not nonzero and config["metric"] == "cosine":
            raise InvalidArgument("a cosine collection cannot hold the zero vector (it has no direction)")
        ts = now_us()
        if metadata is None and text is None:  # the common case: the record's bytes assembled directly
            value = bare_vector_record(vec.tobytes(), ts)
        else:
            verify = check_value(metadata, nesting=1) | check_value(text, nesting=1)
            record = {"vector": vec.tobytes(), "metadata": metadata, "text": text, "updated_us": ts}
            value = encode_record(record, verify)
        self._ctx.write(run, base + _VECTOR + raw_id, value)
        return VectorRecord(id, vec, metadata, text, ts)

    def add_text(self, run: str, collection: str, text: str, *, metadata: dict[str, Any] | None = None,
                 id: str | None = None) -> VectorRecord:
        """Embed ``text`` with the collection's embedder and store it; ``id=None``: the SHA-256 (hex) of
        the text, so the same content is stored once (re-adding it replaces the record).

        :raises InvalidArgument: no embedder for the collection, ``text`` not a str.
        :raises InvalidValue: the embedder returned a wrong shape, NaN or an infinity.
        """
        if not isinstance(text, str):
            raise InvalidArgument(f"text must be a str, got {type(text).__name__}")
        base = self._base(run, collection, write=True)
        config = self._config(base, collection)
        if id is None:
            id = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        raw_id = self._id_bytes(id)
        vec = self._embed(run, collection, config, text)
        return self._put(run, base, raw_id, id, config, vec, bool(vec.any()), metadata, text)

    def _embed(self, run: str, collection: str, config: dict[str, Any], text: str) -> Any:
        embedder = self._index.embedder(run, collection) if self._index is not None else None
        if embedder is None:
            raise InvalidArgument(f"collection {collection!r} has no embedder in this process: pass "
                                  "vectors.create(..., embedder=) or Database.open(embedder=)")
        try:
            out = embed(embedder, [text], config["dim"])  # shape, numbers and finiteness checked there
        except InvalidValue:
            raise
        except Exception as exc:
            raise InvalidValue(f"the embedder failed: {exc}") from exc
        return out[0].astype(_F32)  # embed() checked it; astype copies: never the embedder's own array

    def get(self, run: str, collection: str, id: str) -> VectorRecord | None:
        """Vector ``id``, or None. :raises InvalidArgument: no such collection or a bad id."""
        base = self._base(run, collection, write=False)
        raw_id = self._id_bytes(id)
        self._config(base, collection)
        entry = self._ctx.lookup(base + _VECTOR + raw_id)
        return None if entry is None else vector_from_record(id, decode_value(entry[1]))

    def delete(self, run: str, collection: str, id: str) -> bool:
        """Delete vector ``id``; return whether it existed (nothing is written if not)."""
        base = self._base(run, collection, write=True)
        raw_id = self._id_bytes(id)
        self._config(base, collection)
        return self._ctx.delete(run, base + _VECTOR + raw_id)

    # --- search ------------------------------------------------------------------------------------

    def search(self, run: str, collection: str, query: Any, *, k: int = 10, filter: dict[str, Any] | None = None,
               min_score: float | None = None) -> list[Match]:
        """The ``k`` best matches for ``query`` (a vector, or a str with an embedder), best first.

        ``filter``: the metadata filter language (:mod:`inmem.filters`);
        ``min_score``: drop matches scoring lower. Outside a transaction the
        latest committed state is searched; inside one, its snapshot plus its
        own writes, and the whole collection counts as read (a concurrent
        commit to it makes an updating transaction conflict).
        Complexity: O(n x dim) exact; an index answers faster where it can. An
        ``index="hnsw"`` collection is approximate (a true top-k hit may be
        missing; each returned score is exact): about O(ef x log n x dim) per
        search, plus O(n) filter calls with a ``filter`` (SPEC.md §2).

        :raises InvalidArgument: no such collection, bad ``k`` (1..10000),
            ``min_score`` or ``filter`` (naming the offending part).
        :raises InvalidValue: a query of the wrong shape or not finite.
        """
        if type(k) is not int or not 1 <= k <= 10_000:
            raise InvalidArgument(f"k must be an int in 1..10000; got {k!r}")
        if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))
                                      or math.isnan(min_score)):
            raise InvalidArgument(f"min_score must be a number or None; got {min_score!r}")
        predicate = compile_filter(filter) if filter else None
        base = self._base(run, collection, write=False)
        config = self._config(base, collection)
        if isinstance(query, str):
            q = self._embed(run, collection, config, query)
        else:
            q = self._vector(query, config["dim"], "query")
        lo = base + _VECTOR
        hi = prefix_end(lo)
        assert hi is not None
        ctx = self._ctx
        if self._index is not None and not ctx.has_writes(lo, hi):
            found = self._index.search(lo, hi, config, q, k, predicate, min_score, ctx.at)
            if found is not None:
                ctx.note_range(lo, hi)
                return found
        return self._exact(lo, hi, config, q, k, predicate, min_score)

    def _exact(self, lo: bytes, hi: bytes, config: dict[str, Any], q: Any, k: int,
               predicate: Callable[[Any], bool] | None, min_score: float | None) -> list[Match]:
        """The reference: decode every record the context sees and score them all."""
        np = _np()
        skip = len(lo)
        ids: list[str] = []
        rows: list[bytes] = []
        info: dict[str, tuple[Any, Any]] = {}
        for key, value in self._ctx.scan(lo, hi):
            record = decode_value(value)
            if predicate is not None and not predicate(record.get("metadata")):
                continue
            id = key[skip:].decode()
            ids.append(id)
            rows.append(record["vector"])
            info[id] = (record.get("metadata"), record.get("text"))
        if not ids:
            return []
        matrix = np.frombuffer(b"".join(rows), dtype="<f4").reshape(len(ids), config["dim"])
        best = top_k(ids, score_rows(matrix, q, config["metric"]), k, min_score)
        return [Match(i, s, *info[i]) for i, s in best]
