"""Long-term agent memories in Mem0's shape, without an LLM in the loop: :class:`Memory`.

This module owns the memory store: one inmem run (name ``"memory"``, tag
``inmem.memory``, begun on the first write) holding a vector collection
``memories`` (one record per memory: the text, its embedding, and a metadata
map carrying the scope ids) and, in the run's KV, a dedup index
``memory/hash/<sha256(scope, text)> -> memory id``. Its shape follows Mem0's
``Memory`` (``add`` / ``search`` / ``get`` / ``get_all`` / ``update`` /
``delete`` / ``delete_all`` / ``history``; https://docs.mem0.ai), with the
LLM fact extraction left out: what you add is what is stored.

Invariants: every memory has at least one scope id (``user_id``,
``agent_id``, ``run_id``) in its metadata; ``add`` of a text already stored
in the same scope returns the stored memory and writes nothing (the dedup
index is read and written in the same transaction as the vector, so
concurrent adds of one text store it once); ``history`` is read from the
database's own history (``db.history``) — there is no side table; every
argument is checked before anything is written.

Vector metadata of a memory (SPEC.md §2 "Agent memory recipes"): the caller's
``metadata`` keys, plus ``user_id`` / ``agent_id`` / ``run_id`` (those given),
``hash`` (SHA-256 hex of the text), ``created_us`` and ``updated_us`` (Unix µs).
Those six names are reserved. Filters (``search`` / ``get_all``) use
:mod:`inmem.filters` over that map: ``{"category": "food"}``,
``{"user_id": "alice", "created_us": {"$gte": t}}``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .codec import now_us, utc_from_us
from .embeddings import embed
from .errors import InvalidArgument
from .filters import compile_filter

if TYPE_CHECKING:  # pragma: no cover
    from .database import Database

__all__ = ["COLLECTION", "RESERVED", "SCOPES", "Memory", "MemoryEvent", "MemoryItem"]

COLLECTION = "memories"
SCOPES = ("user_id", "agent_id", "run_id")
#: Metadata keys the store writes itself; a caller's ``metadata`` may not use them.
RESERVED = frozenset(SCOPES) | {"hash", "created_us", "updated_us"}
TAG = "inmem.memory"
_DEDUP = "memory/hash/"
_RETRIES = 100
MAX_SCOPE_CHARS = 256
_BEGIN = threading.Lock()


@dataclass(frozen=True)
class MemoryItem:
    """One memory: ``id`` (UUID4 text), ``memory`` (the text), ``hash`` (SHA-256 hex of the text),
    ``metadata`` (the caller's, without the reserved keys), the scope ids (None when not given),
    ``created_at`` / ``updated_at`` (UTC datetimes) and ``score`` (the similarity, search only)."""

    id: str
    memory: str
    hash: str
    metadata: dict[str, Any]
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    created_at: _dt.datetime
    updated_at: _dt.datetime
    score: float | None = None


@dataclass(frozen=True)
class MemoryEvent:
    """One version of a memory, from the database's history: ``event`` (``"ADD"``, ``"UPDATE"`` or
    ``"DELETE"``), ``old_memory`` / ``new_memory`` (texts; None before the first / after a delete),
    ``metadata`` (the caller's, after the event; None after a delete), ``version`` (commit version)
    and ``ts`` (UTC commit time)."""

    memory_id: str
    event: str
    old_memory: str | None
    new_memory: str | None
    metadata: dict[str, Any] | None
    version: int
    ts: _dt.datetime


def _item(id: str, text: str | None, payload: dict[str, Any] | None, score: float | None = None) -> MemoryItem:
    p = payload or {}
    return MemoryItem(id, text or "", p.get("hash", ""), {k: v for k, v in p.items() if k not in RESERVED},
                      p.get("user_id"), p.get("agent_id"), p.get("run_id"), utc_from_us(p.get("created_us", 0)),
                      utc_from_us(p.get("updated_us", p.get("created_us", 0))), score)


def _scope(user_id: object, agent_id: object, run_id: object, *, required: bool) -> dict[str, str]:
    out = {}
    for name, value in zip(SCOPES, (user_id, agent_id, run_id)):
        if value is None:
            continue
        if type(value) is not str or not value or len(value) > MAX_SCOPE_CHARS:
            raise InvalidArgument(f"{name} must be a non-empty str of at most {MAX_SCOPE_CHARS} characters; "
                                  f"got {value!r:.40}")
        out[name] = value
    if required and not out:
        raise InvalidArgument("give at least one of user_id, agent_id, run_id")
    return out


def _dedup_key(scope: dict[str, str], text: str) -> str:
    canon = json.dumps([scope.get(s) for s in SCOPES] + [text], ensure_ascii=False)
    return _DEDUP + hashlib.sha256(canon.encode("utf-8", "surrogatepass")).hexdigest()


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _check_text(text: object, what: str = "text") -> str:
    if type(text) is not str or not text.strip():
        raise InvalidArgument(f"{what} must be a non-empty str; got {text!r:.40}")
    return text


def _check_metadata(metadata: object) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidArgument(f"metadata must be a dict or None; got {type(metadata).__name__}")
    clash = sorted(k for k in metadata if k in RESERVED)
    if clash:
        raise InvalidArgument(f"metadata keys {clash} are reserved by the memory store")
    return dict(metadata)


def _check_id(id: object) -> str:
    if type(id) is not str or not id:
        raise InvalidArgument(f"a memory id is a non-empty str; got {id!r:.40}")
    return id


class Memory:
    """Scoped long-term memories with semantic search (Mem0's API shape, no LLM).

    >>> import tempfile
    >>> from inmem import Database
    >>> from inmem.embeddings import HashingEmbedder
    >>> with Database.open(tempfile.mkdtemp()) as db:
    ...     m = Memory(db, embedder=HashingEmbedder(64))
    ...     item = m.add("likes green tea", user_id="alice", metadata={"topic": "food"})
    ...     [hit.memory for hit in m.search("tea", user_id="alice")]
    ['likes green tea']

    ``embedder``: a callable ``list[str] -> (n, dim) array``
    (:class:`~inmem.embeddings.HashingEmbedder` for tests; a real model for
    meaning); None: the database's (``Database.open(embedder=)``), and then
    ``dim`` must be given until the collection exists. ``run``: keep the
    memories in this run instead of the shared one named ``run_name``.
    Constructing writes nothing; the run and collection are made on the first
    write. Two processes that begin the run at once each use the oldest.

    :raises InvalidArgument: ``embedder`` not callable, ``dim`` not an int >= 1,
        ``run`` / ``run_name`` not a str.
    """

    def __init__(self, db: Database, *, embedder: Callable[[list[str]], Any] | None = None, dim: int | None = None,
                 run: str | None = None, run_name: str = "memory"):
        if embedder is not None and not callable(embedder):
            raise InvalidArgument("embedder must be a callable list[str] -> array of shape (n, dim), or None")
        if dim is not None and (type(dim) is not int or dim < 1):
            raise InvalidArgument(f"dim must be an int >= 1 or None; got {dim!r}")
        if run is not None and type(run) is not str:
            raise InvalidArgument(f"run must be a run id (str) or None; got {type(run).__name__}")
        if type(run_name) is not str or not run_name:
            raise InvalidArgument(f"run_name must be a non-empty str; got {run_name!r:.40}")
        self._db = db
        self._embedder = embedder
        self._dim = dim
        self._run = run
        self._run_name = run_name
        self._ready = False

    def __repr__(self) -> str:
        return f"Memory(run={self._run!r}, run_name={self._run_name!r})"

    # --- the run and the collection ------------------------------------------------------------

    @property
    def run(self) -> str | None:
        """The run holding the memories, or None while there is none yet."""
        return self._find_run()

    def _find_run(self) -> str | None:
        if self._run is None:
            found = self._db.runs.list(name=self._run_name, tag=TAG, status="active", limit=1)
            if found:
                self._run = found[0].id
        return self._run

    def _embedder_dim(self) -> int | None:
        if self._embedder is None:
            return self._dim
        dim = getattr(self._embedder, "dim", None)
        if type(dim) is int and dim >= 1:
            return dim
        np = __import__("numpy")
        return int(np.asarray(self._embedder(["dimension probe"])).shape[-1])

    def _ensure(self) -> str:
        """The run, with the collection in it (made now if needed). Raises before writing if no dim is known."""
        run = self._find_run()
        if self._ready and run is not None:
            return run
        info = None if run is None else self._db.vectors.info(run, COLLECTION)
        dim = info["dim"] if info is not None else self._embedder_dim()
        if dim is None:
            raise InvalidArgument("no embedding dimension: pass Memory(db, embedder=...) or dim= "
                                  "(the database's embedder is used, and its width is not known)")
        if run is None:
            with _BEGIN:  # threads of this process begin one run; another process may race: the oldest wins
                run = self._find_run()
                if run is None:
                    self._db.begin_run(self._run_name, tags=[TAG])
                    run = self._find_run()
                    assert run is not None
        self._db.vectors.create(run, COLLECTION, dim=dim, metric="cosine", embedder=self._embedder)
        self._ready = True
        return run

    def _vector(self, run: str | None, text: str) -> Any:
        """``text`` embedded; with our own embedder this needs no write (``run`` may be None)."""
        if self._embedder is None:
            assert run is not None
            vec = self._db.vectors.embed(run, COLLECTION, text)
        else:
            info = None if run is None else self._db.vectors.info(run, COLLECTION)
            dim = info["dim"] if info is not None else self._embedder_dim()
            assert dim is not None
            vec = embed(self._embedder, [text], dim)[0]
        if not vec.any():
            raise InvalidArgument(f"the embedder gave {text!r:.40} the zero vector (no direction to compare)")
        return vec

    def _filter(self, scope: dict[str, str], filters: object) -> dict[str, Any] | None:
        if filters is not None and not isinstance(filters, dict):
            raise InvalidArgument(f"filters must be a dict or None; got {type(filters).__name__}")
        parts = [p for p in (scope, filters) if p]
        spec = None if not parts else parts[0] if len(parts) == 1 else {"$and": parts}
        compile_filter(spec)  # malformed: InvalidArgument naming the part, before anything is read
        return spec

    # --- the API ---------------------------------------------------------------------------------

    def add(self, text: str, *, user_id: str | None = None, agent_id: str | None = None,
            run_id: str | None = None, metadata: dict[str, Any] | None = None) -> MemoryItem:
        """Store ``text`` as a memory of the given scope; return it.

        The same text in the same scope (all three ids equal) is stored once:
        adding it again returns the stored memory unchanged and writes nothing.
        One commit (the vector record and the dedup index entry). Complexity:
        one embedding plus O(log n) writes.

        :raises InvalidArgument: no scope id, a scope id not a non-empty str,
            ``text`` empty or not a str, ``metadata`` not a dict or using a
            reserved key (``user_id``, ``agent_id``, ``run_id``, ``hash``,
            ``created_us``, ``updated_us``); no embedding dimension known.
        :raises InvalidValue: ``metadata`` not storable, or the embedder returned a wrong
            shape, NaN or an infinity (or the zero vector: InvalidArgument).
        """
        scope = _scope(user_id, agent_id, run_id, required=True)
        text = _check_text(text)
        meta = _check_metadata(metadata)
        vec = None if self._embedder is None else self._vector(self._find_run(), text)  # before any write
        run = self._ensure()
        if vec is None:
            vec = self._vector(run, text)
        h = _text_hash(text)
        dedup = _dedup_key(scope, text)
        ts = now_us()
        payload = {**meta, **scope, "hash": h, "created_us": ts, "updated_us": ts}
        new_id = str(uuid.uuid4())

        def add(tx: Any) -> MemoryItem:
            found = tx.kv.get(run, dedup)
            if found is not None:
                rec = tx.vectors.get(run, COLLECTION, found)
                if rec is not None and rec.text == text and _scope_of(rec.metadata) == scope:
                    return _item(found, rec.text, rec.metadata)
            tx.vectors.upsert(run, COLLECTION, new_id, vec, metadata=payload, text=text)
            tx.kv.put(run, dedup, new_id)
            return _item(new_id, text, payload)

        return self._db.transact(add, retries=_RETRIES)

    def search(self, query: str, *, user_id: str | None = None, agent_id: str | None = None,
               run_id: str | None = None, filters: dict[str, Any] | None = None, top_k: int = 10,
               threshold: float | None = None) -> list[MemoryItem]:
        """The ``top_k`` memories most similar to ``query`` (cosine of embeddings), best first, with
        ``score`` set; only those of the given scope ids and matching ``filters`` (the
        :mod:`inmem.filters` language over the metadata map, see the module docstring), scoring at
        least ``threshold``. Complexity: one embedding plus the vector search, O(n x dim) exact.

        :raises InvalidArgument: ``query`` empty, not a str or embedded as the zero vector, a bad scope
            id, ``top_k`` not in 1..10000, ``threshold`` not a number, ``filters`` malformed (naming the part).
        """
        query = _check_text(query, "query")
        scope = _scope(user_id, agent_id, run_id, required=False)
        if type(top_k) is not int or not 1 <= top_k <= 10_000:
            raise InvalidArgument(f"top_k must be an int in 1..10000; got {top_k!r}")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or math.isnan(threshold)):
            raise InvalidArgument(f"threshold must be a number or None; got {threshold!r}")
        spec = self._filter(scope, filters)
        run = self._find_run()
        if run is None or self._db.vectors.info(run, COLLECTION) is None:
            return []
        hits = self._db.vectors.search(run, COLLECTION, self._vector(run, query), k=top_k, filter=spec,
                                       min_score=threshold)
        return [_item(h.id, h.text, h.metadata, h.score) for h in hits]

    def get(self, id: str) -> MemoryItem | None:
        """The memory ``id``, or None. O(1). :raises InvalidArgument: ``id`` not a non-empty str."""
        id = _check_id(id)
        run = self._find_run()
        if run is None or self._db.vectors.info(run, COLLECTION) is None:
            return None
        rec = self._db.vectors.get(run, COLLECTION, id)
        return None if rec is None else _item(id, rec.text, rec.metadata)

    def get_all(self, *, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None,
                filters: dict[str, Any] | None = None, limit: int | None = None) -> list[MemoryItem]:
        """Every memory of the given scope ids matching ``filters``, oldest first (by ``created_at``, then
        id), at most ``limit``; read from one snapshot. O(n) point reads.

        :raises InvalidArgument: a bad scope id, ``filters`` malformed, ``limit`` not an int >= 0 or None.
        """
        scope = _scope(user_id, agent_id, run_id, required=False)
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidArgument(f"limit must be an int >= 0 or None; got {limit!r}")
        predicate = compile_filter(self._filter(scope, filters))
        run = self._find_run()
        if run is None:
            return []
        tx = self._db.transaction()
        try:
            if tx.vectors.info(run, COLLECTION) is None:
                return []
            out = [_item(i, r.text, r.metadata) for i in tx.vectors.ids(run, COLLECTION)
                   if (r := tx.vectors.get(run, COLLECTION, i)) is not None and predicate(r.metadata)]
        finally:
            tx.rollback()
        out.sort(key=lambda m: (m.created_at, m.id))
        return out if limit is None else out[:limit]

    def update(self, id: str, text: str | None = None, metadata: dict[str, Any] | None = None) -> MemoryItem:
        """Replace the text (re-embedded) and/or the caller's metadata of memory ``id`` (scope ids,
        ``hash`` and ``created_at`` are kept; ``hash`` follows the text); one commit; return the new version.

        :raises InvalidArgument: no such memory, neither ``text`` nor ``metadata`` given, ``text`` empty,
            ``metadata`` not a dict or using a reserved key.
        """
        id = _check_id(id)
        if text is None and metadata is None:
            raise InvalidArgument("give text, metadata or both")
        if text is not None:
            _check_text(text)
        meta = None if metadata is None else _check_metadata(metadata)
        run = self._find_run()
        if run is None or self._db.vectors.info(run, COLLECTION) is None:
            raise InvalidArgument(f"no memory {id!r}")
        vec = None if text is None else self._vector(run, text)
        ts = now_us()

        def update(tx: Any) -> MemoryItem:
            rec = tx.vectors.get(run, COLLECTION, id)
            if rec is None:
                raise InvalidArgument(f"no memory {id!r}")
            old = rec.metadata or {}
            scope = _scope_of(old)
            kept = {k: v for k, v in old.items() if k not in RESERVED} if meta is None else meta
            new_text = rec.text if text is None else text
            payload = {**kept, **scope, "hash": _text_hash(new_text), "created_us": old.get("created_us", ts),
                       "updated_us": ts}
            tx.vectors.upsert(run, COLLECTION, id, rec.vector if vec is None else vec, metadata=payload,
                              text=new_text)
            if text is not None and text != rec.text:
                _unindex(tx, run, scope, rec.text, id)
                key = _dedup_key(scope, new_text)
                held = tx.kv.get(run, key)
                if held is None or tx.vectors.get(run, COLLECTION, held) is None:
                    tx.kv.put(run, key, id)
            return _item(id, new_text, payload)

        return self._db.transact(update, retries=_RETRIES)

    def delete(self, id: str) -> bool:
        """Delete memory ``id`` (one commit); return whether it existed. :raises InvalidArgument: a bad id."""
        id = _check_id(id)
        run = self._find_run()
        if run is None or self._db.vectors.info(run, COLLECTION) is None:
            return False

        def delete(tx: Any) -> bool:
            rec = tx.vectors.get(run, COLLECTION, id)
            if rec is None:
                return False
            tx.vectors.delete(run, COLLECTION, id)
            _unindex(tx, run, _scope_of(rec.metadata), rec.text, id)
            return True

        return self._db.transact(delete, retries=_RETRIES)

    def delete_all(self, *, user_id: str | None = None, agent_id: str | None = None,
                   run_id: str | None = None) -> int:
        """Delete every memory whose scope has all the given ids (``delete_all(user_id="alice")``: all of
        alice's, whatever their agent or run), in one commit; return how many. O(n).

        :raises InvalidArgument: no scope id, or one not a non-empty str.
        """
        scope = _scope(user_id, agent_id, run_id, required=True)
        run = self._find_run()
        if run is None or self._db.vectors.info(run, COLLECTION) is None:
            return 0

        def delete_all(tx: Any) -> int:
            n = 0
            for i in tx.vectors.ids(run, COLLECTION):
                rec = tx.vectors.get(run, COLLECTION, i)
                meta = (rec.metadata or {}) if rec is not None else {}
                if rec is None or any(meta.get(k) != v for k, v in scope.items()):
                    continue
                tx.vectors.delete(run, COLLECTION, i)
                _unindex(tx, run, _scope_of(meta), rec.text, i)
                n += 1
            return n

        return self._db.transact(delete_all, retries=_RETRIES)

    def history(self, id: str) -> list[MemoryEvent]:
        """Every version of memory ``id``, oldest first, from ``db.history`` of the memory run (no side
        table): one :class:`MemoryEvent` per commit that wrote it. O(commits of the memory run).

        :raises InvalidArgument: a bad id. :raises HistoryUnavailable: retention deleted part of it.
        """
        id = _check_id(id)
        run = self._find_run()
        if run is None:
            return []
        out: list[MemoryEvent] = []
        current: str | None = None
        target = (COLLECTION, id)
        for commit in self._db.history(run):
            for op in commit.ops:
                if op.primitive != "vectors" or op.key != target:
                    continue
                if op.kind == "delete":
                    out.append(MemoryEvent(id, "DELETE", current, None, None, commit.version, commit.ts))
                    current = None
                    continue
                value = op.value or {}
                meta = {k: v for k, v in (value.get("metadata") or {}).items() if k not in RESERVED}
                event = "ADD" if current is None else "UPDATE"
                out.append(MemoryEvent(id, event, current, value.get("text"), meta, commit.version, commit.ts))
                current = value.get("text")
        return out


def _scope_of(metadata: dict[str, Any] | None) -> dict[str, str]:
    m = metadata or {}
    return {k: m[k] for k in SCOPES if m.get(k) is not None}


def _unindex(tx: Any, run: str, scope: dict[str, str], text: str | None, id: str) -> None:
    """Drop the dedup entry of ``(scope, text)`` if it points at memory ``id``."""
    if text is None:
        return
    key = _dedup_key(scope, text)
    if tx.kv.get(run, key) == id:
        tx.kv.delete(run, key)
