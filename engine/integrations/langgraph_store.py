"""A LangGraph long-term memory store on inmem: ``InmemStore(db)``, a complete ``BaseStore``.

This module owns the mapping of LangGraph store items (namespace tuple, key,
dict value) onto the KV records and vectors of one inmem run, and the
store's search, namespace listing, TTL and history on top of it. It uses
only the engine's public API (``db.runs``, ``db.transact``, ``tx.kv``,
``tx.vectors``, ``db.vectors``, ``db.history``, ``db.sweep``); it needs the
optional dependency ``langgraph`` (extra ``inmem[langgraph]``).

Invariant: an item's KV record and its vectors change in the same commit, and
every read of a batch runs on one snapshot taken before the batch's writes.

Storage model (SPEC.md §2 "LangGraph store")
--------------------------------------------

All items live in one run (name ``run=``, default ``"langgraph-store"``,
tags ``langgraph`` and ``langgraph-store``), created by the first write.
An item is the KV record ``key = encode_key(namespace, key)`` ->
``{"value": dict, "created_us": int, "updated_us": int[, "vectors": [path, ...]]}``
(µs since the Unix epoch by the database clock). The key encoding is every
namespace label followed by NUL, then one more NUL, then the item key::

    ("users", "42"), "prefs"   ->  "users\\0" "42\\0" "\\0" "prefs"

Labels are non-empty and NUL-free (LangGraph's validation), so the first
empty segment ends the namespace and the rest is the key (which may hold
anything). Byte order is namespace order (tuple order by code point, a
namespace before its children, since NUL sorts before every label
character), then key order; all items under a namespace prefix ``P`` are the
one ``kv.scan`` prefix ``"".join(l + "\\0" for l in P)``.

Vectors (``index=IndexConfig``): the run's vector collection ``"store"``
(cosine, ``dims``), one vector per (item, field path) with id
``path + "\\0" + encode_key(namespace, key)``; the item record lists its
paths. A query search asks the vector store's exact top-k for widening k
and reads only the items behind the best vectors (SPEC.md has the ranking).

Guarantees
----------

* One ``batch``/``abatch`` is one inmem transaction (``db.transact``, retried
  on conflict): its reads (gets, searches, namespace listings) see the state
  before the batch, then its puts and deletes apply in order (the last put of
  a key wins) and commit together, with their vectors and TTL refreshes —
  all or nothing. A batch of reads only runs on one snapshot and commits
  nothing, except one commit extending the leases of expiring items it read
  when a TTL refresh is due.
* Embeddings are computed before the transaction (never inside a retry).
* A read-only handle reads everything and renews no lease; writes raise
  ``DatabaseReadOnly``.
* An expired item is never returned by any read (the engine hides it from
  the moment its TTL passes, swept or not).
* Bad input (namespace, key, value, ttl, filter, limit/offset, index paths)
  raises before anything is written.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import math
import os
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
)

from ..database import Database
from ..tenants import Tenant
from ..errors import DatabaseReadOnly, InvalidArgument
from ..filters import compile_filter

__all__ = ["InmemStore", "encode_key", "decode_key", "encode_prefix"]

STORE_TAG = "langgraph-store"
LANGGRAPH_TAG = "langgraph"
COLLECTION = "store"
_RETRIES = 30
_MAX_K = 10_000  # the vector store's largest top-k

_runs_lock = threading.Lock()
_creation_locks: weakref.WeakKeyDictionary[Database, threading.Lock] = weakref.WeakKeyDictionary()


# --- key encoding ---------------------------------------------------------------------------------


def encode_prefix(namespace: Sequence[str]) -> str:
    """The KV key prefix of every item whose namespace starts with ``namespace``: each label + NUL."""
    return "".join(label + "\x00" for label in namespace)


def encode_key(namespace: Sequence[str], key: str) -> str:
    """The KV key of item ``(namespace, key)``: ``encode_prefix(namespace) + "\\0" + key``."""
    return encode_prefix(namespace) + "\x00" + key


def decode_key(encoded: str) -> tuple[tuple[str, ...], str]:
    """Inverse of :func:`encode_key`: ``(namespace, key)``. O(len)."""
    labels = []
    i = 0
    while True:
        j = encoded.index("\x00", i)
        if j == i:
            return tuple(labels), encoded[j + 1:]
        labels.append(encoded[i:j])
        i = j + 1


# --- validation -----------------------------------------------------------------------------------


def _check_labels(namespace: Any, what: str = "namespace") -> tuple[str, ...]:
    if not isinstance(namespace, tuple):
        if isinstance(namespace, list):
            namespace = tuple(namespace)
        else:
            raise InvalidNamespaceError(f"{what} must be a tuple of str; got {type(namespace).__name__}")
    for label in namespace:
        if not isinstance(label, str):
            raise InvalidNamespaceError(f"Invalid namespace label {label!r} in {namespace}: labels must be str, "
                                        f"not {type(label).__name__}")
        if not label:
            raise InvalidNamespaceError(f"Namespace labels cannot be empty strings; got {namespace}")
        if "." in label:
            raise InvalidNamespaceError(f"Invalid namespace label {label!r} in {namespace}: labels cannot "
                                        "contain periods ('.')")
        if "\x00" in label:
            raise InvalidNamespaceError(f"Invalid namespace label {label!r} in {namespace}: labels cannot "
                                        "contain NUL ('\\x00')")
    return namespace


def _check_put_namespace(namespace: Any) -> tuple[str, ...]:
    namespace = _check_labels(namespace)
    if not namespace:
        raise InvalidNamespaceError("Namespace cannot be empty.")
    if namespace[0] == "langgraph":
        raise InvalidNamespaceError(f'Root label for namespace cannot be "langgraph". Got: {namespace}')
    return namespace


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise InvalidArgument(f"an item key is a str; got {type(key).__name__}")
    return key


def _check_page(limit: Any, offset: Any) -> None:
    for name, v in (("limit", limit), ("offset", offset)):
        if type(v) is not int or v < 0:
            raise InvalidArgument(f"{name} must be an int >= 0; got {v!r}")


def _check_minutes(ttl: Any, what: str = "ttl") -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not (ttl > 0 and math.isfinite(ttl)):
        raise InvalidArgument(f"{what} is a number of minutes > 0, or None; got {ttl!r:.40}")
    return float(ttl)


def _check_path(path: Any) -> tuple[str, Any]:
    if not isinstance(path, str) or not path or "\x00" in path:
        raise InvalidArgument(f"an index field path is a non-empty str without NUL; got {path!r:.80}")
    return (path, path) if path == "$" else (path, tokenize_path(path))


def _us(dt_us: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(dt_us / 1_000_000, tz=_dt.timezone.utc)


def _item(encoded: str, record: dict[str, Any]) -> Item:
    namespace, key = decode_key(encoded)
    return Item(value=record["value"], key=key, namespace=namespace,
                created_at=_us(record["created_us"]), updated_at=_us(record["updated_us"]))


def _search_item(encoded: str, record: dict[str, Any], score: float | None) -> SearchItem:
    namespace, key = decode_key(encoded)
    return SearchItem(namespace=namespace, key=key, value=record["value"], created_at=_us(record["created_us"]),
                      updated_at=_us(record["updated_us"]), score=score)


_EXPIRING_TAG = 26990  # SPEC.md §2 "Time to live": tag 26990 [expires_us, ttl_us, value]


def _history_value(value: Any) -> Any:
    """A KV value as ``db.history`` reports it, made plain: some paths report a value written with a
    time to live as its raw ``tag 26990 [expires_us, ttl_us, value]`` with frozen maps; unwrap and thaw."""
    if getattr(value, "tag", None) == _EXPIRING_TAG:
        value = value.value[2]
    return _thaw(value)


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping) and not isinstance(value, dict):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, dict):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


def _matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    pairs = zip(namespace, path) if condition.match_type == "prefix" else zip(reversed(namespace), reversed(path))
    return all(p == "*" or n == p for n, p in pairs)


class _Plan:
    """A validated batch: what to read, what to write, what to embed."""

    __slots__ = ("ops", "filters", "writes", "texts", "queries", "vectors", "query_vectors")

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.filters: dict[int, Any] = {}
        # (encoded key, op, [(path name, text)]) in op order
        self.writes: list[tuple[str, PutOp, list[tuple[str, str]]]] = []
        self.texts: list[str] = []
        self.queries: list[str] = []
        self.vectors: list[Any] = []
        self.query_vectors: dict[str, Any] = {}


class InmemStore(BaseStore):
    """LangGraph ``BaseStore`` keeping items, vectors and TTLs in an inmem :class:`~inmem.Database`.

    ``InmemStore(db, index=None, ttl=None, run="langgraph-store")`` uses an
    open database (the caller closes it); ``InmemStore.from_path(path, ...)``
    opens one and closes it on :meth:`close` or leaving ``with``::

        with InmemStore.from_path("./agent-memory", index={"dims": 256, "embed": HashingEmbedder(256)}) as store:
            store.put(("users", "42"), "prefs", {"text": "likes dark mode"})
            store.search(("users",), query="theme", filter={"lang": "en"})

    ``index``: LangGraph's ``IndexConfig`` — ``dims`` (int), ``embed`` (a
    callable ``list[str] -> vectors``, an async one, or a LangChain
    ``Embeddings``; a ``"provider:model"`` string needs LangChain and the
    provider package and raises ``InvalidArgument`` otherwise) and ``fields``
    (paths such as ``"text"``, ``"a.b"``, ``"arr[*].x"``; default ``["$"]``,
    the whole value as JSON). ``ttl``: ``TTLConfig`` — ``default_ttl``
    (minutes), ``refresh_on_read`` (default True), ``sweep_interval_minutes``
    (a thread of this store calls :meth:`sweep_ttl` that often; the
    database's own sweeper, ``Database.open(sweep_interval_s=)``, deletes
    expired records too). Expired items are never returned either way.

    ``db`` may be a tenant view (``db.tenant(id)``): the store's run then belongs to the tenant,
    and no other tenant can see its items, namespaces or searches.

    :raises TypeError: ``db`` is neither an inmem Database nor a tenant view.
    :raises InvalidArgument: a bad ``index``/``ttl``/``run``, or a ``dims``
        differing from the run's existing collection.
    """

    supports_ttl = True

    def __init__(self, db: Database, *, index: IndexConfig | None = None, ttl: TTLConfig | None = None,
                 run: str = "langgraph-store") -> None:
        if not isinstance(db, (Database, Tenant)):
            raise TypeError(f"InmemStore needs an inmem.Database or a tenant view (db.tenant(id)); "
                            f"got {type(db).__name__}")
        if not isinstance(run, str) or not run:
            raise InvalidArgument(f"run is a non-empty str (the store run's name); got {run!r:.80}")
        self._db = db
        self._name = run
        self._owns_db = False
        self._run: str | None = None
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()
        self.ttl_config = self._check_ttl(ttl)
        self.index_config: dict[str, Any] | None = None
        self.embeddings: Any = None
        self._fields: list[tuple[str, Any]] = []
        if index:
            self._configure_index(index)
        with _runs_lock:
            _creation_locks.setdefault(db, threading.Lock())
        self._run = self._find_run()
        if self._run is not None and self.index_config is not None:
            self._ensure_collection(self._run)
        if self.ttl_config and self.ttl_config.get("sweep_interval_minutes") and not db.read_only:
            self.start_ttl_sweeper()

    @staticmethod
    def _check_ttl(ttl: Any) -> TTLConfig | None:
        if ttl is None:
            return None
        if not isinstance(ttl, Mapping):
            raise InvalidArgument(f"ttl is a TTLConfig dict or None; got {type(ttl).__name__}")
        unknown = set(ttl) - {"default_ttl", "refresh_on_read", "sweep_interval_minutes", "omit_expired"}
        if unknown:
            raise InvalidArgument(f"unknown TTLConfig keys: {sorted(unknown)}")
        _check_minutes(ttl.get("default_ttl"), "default_ttl")
        _check_minutes(ttl.get("sweep_interval_minutes"), "sweep_interval_minutes")
        if not isinstance(ttl.get("refresh_on_read", True), bool):
            raise InvalidArgument("refresh_on_read is a bool")
        return dict(ttl)  # type: ignore[return-value]

    def _configure_index(self, index: Any) -> None:
        if not isinstance(index, Mapping):
            raise InvalidArgument(f"index is an IndexConfig dict or None; got {type(index).__name__}")
        dims = index.get("dims")
        if type(dims) is not int or not 1 <= dims <= 65536:
            raise InvalidArgument(f"index['dims'] must be an int in 1..65536; got {dims!r}")
        embed = index.get("embed")
        if embed is None:
            raise InvalidArgument("index['embed'] is required: a callable list[str] -> vectors, or an Embeddings")
        try:
            self.embeddings = ensure_embeddings(embed)
        except Exception as exc:
            raise InvalidArgument(f"index['embed'] could not be loaded ({exc}); pass a callable "
                                  "list[str] -> vectors or a LangChain Embeddings object instead") from exc
        fields = index.get("fields") or ["$"]
        if isinstance(fields, str) or not isinstance(fields, Sequence):
            raise InvalidArgument(f"index['fields'] is a list of paths; got {fields!r:.80}")
        self._fields = [_check_path(f) for f in fields]
        self.index_config = {**index, "fields": list(fields)}

    # --- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, index: IndexConfig | None = None,
                  ttl: TTLConfig | None = None, run: str = "langgraph-store", **open_options: Any) -> InmemStore:
        """Open (creating if needed) the database at ``path`` with ``Database.open(path, **open_options)``.

        The store owns it: :meth:`close` (or leaving ``with``) closes it.
        """
        db = Database.open(path, **open_options)
        try:
            store = cls(db, index=index, ttl=ttl, run=run)
        except BaseException:
            db.close()
            raise
        store._owns_db = True  # noqa: SLF001 - same class
        return store

    @property
    def db(self) -> Database:
        """The database this store writes to."""
        return self._db

    @property
    def run(self) -> str | None:
        """The id of the store's run, or None before the first write."""
        return self._run

    def close(self) -> None:
        """Stop the TTL sweeper thread; close the database if this store opened it. Idempotent."""
        self.stop_ttl_sweeper()
        if self._owns_db:
            self._db.close()

    def __enter__(self) -> InmemStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> InmemStore:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        return f"<InmemStore {self._db.path!r} run={self._name!r}>"

    # --- the run ---------------------------------------------------------------------------------

    def _find_run(self) -> str | None:
        found = self._db.runs.list(status="active", tag=STORE_TAG, name=self._name)
        return min(found, key=lambda info: info.first_version).id if found else None

    def _ensure_run(self) -> str:
        if self._run is not None:
            return self._run
        if self._db.read_only:
            raise DatabaseReadOnly("the database was opened with read_only=True; nothing was written")
        with _creation_locks[self._db]:
            run = self._find_run()
            if run is None:
                self._db.begin_run(self._name, tags=[LANGGRAPH_TAG, STORE_TAG],
                                   metadata={"langgraph": "store"})
                run = self._find_run()
                assert run is not None
            if self.index_config is not None:
                self._ensure_collection(run)
            self._run = run
            return run

    def _ensure_collection(self, run: str) -> None:
        dims = self.index_config["dims"]  # type: ignore[index]
        info = self._db.vectors.info(run, COLLECTION)
        if info is None:
            if not self._db.read_only:
                self._db.vectors.create(run, COLLECTION, dim=dims, metric="cosine")
        elif info["dim"] != dims:
            raise InvalidArgument(f"the store run's vectors have dims={info['dim']}; index['dims'] is {dims}")

    # --- planning: validation and texts to embed (nothing touched) --------------------------------

    def _plan(self, ops: Iterable[Op]) -> _Plan:
        plan = _Plan()
        queries: dict[str, None] = {}
        for i, op in enumerate(ops):
            plan.ops.append(op)
            if isinstance(op, GetOp):
                _check_labels(op.namespace)
                _check_key(op.key)
            elif isinstance(op, SearchOp):
                _check_labels(op.namespace_prefix, "namespace_prefix")
                _check_page(op.limit, op.offset)
                plan.filters[i] = compile_filter(op.filter) if op.filter else None
                if op.query is not None and not isinstance(op.query, str):
                    raise InvalidArgument(f"query is a str or None; got {type(op.query).__name__}")
                if op.query and self.embeddings is not None:
                    queries[op.query] = None
            elif isinstance(op, ListNamespacesOp):
                for cond in op.match_conditions or ():
                    if cond.match_type not in ("prefix", "suffix"):
                        raise InvalidArgument(f"match_type is 'prefix' or 'suffix'; got {cond.match_type!r}")
                    _check_labels(tuple(label for label in cond.path if label != "*"), "match path")
                if op.max_depth is not None and (type(op.max_depth) is not int or op.max_depth < 1):
                    raise InvalidArgument(f"max_depth must be an int >= 1 or None; got {op.max_depth!r}")
                _check_page(op.limit, op.offset)
            elif isinstance(op, PutOp):
                self._plan_put(plan, op)
            else:
                raise InvalidArgument(f"unknown store operation {type(op).__name__}")
        plan.queries = list(queries)
        return plan

    def _plan_put(self, plan: _Plan, op: PutOp) -> None:
        key = _check_key(op.key)
        if op.value is None:
            namespace = _check_labels(op.namespace)
            plan.writes.append((encode_key(namespace, key), op, []))
            return
        namespace = _check_put_namespace(op.namespace)
        if not isinstance(op.value, Mapping):
            raise InvalidArgument(f"an item value is a dict; got {type(op.value).__name__}")
        _check_minutes(op.ttl)
        texts: list[tuple[str, str]] = []
        if self.embeddings is not None and op.index is not False:
            if op.index is None:
                paths = self._fields
            elif isinstance(op.index, (list, tuple)):
                paths = [_check_path(p) for p in op.index]
            else:
                raise InvalidArgument(f"index is False, None or a list of field paths; got {op.index!r:.80}")
            value = dict(op.value)
            for name, tokens in paths:
                found = get_text_at_path(value, tokens)
                if len(found) == 1:
                    texts.append((name, found[0]))
                else:
                    texts.extend((f"{name}.{n}", text) for n, text in enumerate(found))
        plan.writes.append((encode_key(namespace, key), op, texts))
        plan.texts.extend(text for _, text in texts)

    def _check_vectors(self, vectors: Any, n: int, what: str) -> list[Any]:
        vectors = [list(map(float, v)) for v in vectors]
        dims = self.index_config["dims"]  # type: ignore[index]
        if len(vectors) != n:
            raise InvalidArgument(f"the embedder returned {len(vectors)} vectors for {n} {what}")
        for v in vectors:
            if len(v) != dims or not all(map(math.isfinite, v)):
                raise InvalidArgument(f"the embedder returned a vector of {len(v)} numbers (or not finite) "
                                      f"for {what}; index['dims'] is {dims}")
        return vectors

    def _embed(self, plan: _Plan) -> None:
        if plan.texts:
            plan.vectors = self._check_vectors(self.embeddings.embed_documents(plan.texts), len(plan.texts), "texts")
        for q in plan.queries:
            plan.query_vectors[q] = self._check_vectors([self.embeddings.embed_query(q)], 1, "a query")[0]

    async def _aembed(self, plan: _Plan) -> None:
        if plan.texts:
            plan.vectors = self._check_vectors(await self.embeddings.aembed_documents(plan.texts),
                                               len(plan.texts), "texts")
        if plan.queries:
            found = await asyncio.gather(*(self.embeddings.aembed_query(q) for q in plan.queries))
            plan.query_vectors = dict(zip(plan.queries, self._check_vectors(found, len(found), "queries")))

    # --- execution: one transaction -----------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` (``GetOp``, ``PutOp``, ``SearchOp``, ``ListNamespacesOp``) as one transaction.

        Returns one result per op, in order: ``Item | None`` for a get,
        ``list[SearchItem]`` for a search, ``list[tuple[str, ...]]`` for a
        namespace listing, ``None`` for a put. Reads see the state before the
        batch; writes apply in op order and commit together.
        Complexity: a get O(log n); a search O(log n + items under the prefix)
        plus O(their vectors x dims) with a query; a listing O(items).

        :raises InvalidNamespaceError: a bad namespace label (LangGraph's rules).
        :raises InvalidArgument: a bad key, value, ttl, filter, limit/offset or index path.
        """
        plan = self._plan(ops)
        self._embed(plan)
        return self._execute(plan)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """:meth:`batch` with async embedding; the transaction runs in a worker thread."""
        plan = self._plan(ops)
        await self._aembed(plan)
        return await asyncio.to_thread(self._execute, plan)

    def _execute(self, plan: _Plan) -> list[Result]:
        if plan.writes:
            run: str | None = self._ensure_run()
        else:
            run = self._run if self._run is not None else self._find_run()
            if run is None:
                return [[] if isinstance(op, (SearchOp, ListNamespacesOp)) else None for op in plan.ops]
            self._run = run
        if plan.writes:
            return self._db.transact(lambda tx: self._apply(tx, run, plan, True)[0], retries=_RETRIES)
        refresh_ok = not self._db.read_only  # a read-only handle reads without renewing leases
        if len(plan.ops) == 1 and isinstance(plan.ops[0], GetOp):  # the common case: one point read
            op = plan.ops[0]
            encoded = encode_key(op.namespace, op.key)
            record = self._db.kv.get(run, encoded, refresh_ttl=bool(op.refresh_ttl) and refresh_ok)
            return [None if record is None else _item(encoded, record)]
        tx = self._db.transaction()  # reads only: one snapshot, no commit
        try:
            results, due = self._apply(tx, run, plan, False)
        finally:
            if not tx.finished:
                tx.rollback()
        if due and refresh_ok:  # leases to extend: one commit (an item deleted meanwhile is simply not refreshed)
            def refresh(tx: Any) -> None:
                for encoded in due:
                    tx.kv.get(run, encoded, refresh_ttl=True)
            self._db.transact(refresh, retries=_RETRIES)
        return results

    def _apply(self, tx: Any, run: str, plan: _Plan, writing: bool) -> tuple[list[Result], list[str]]:
        """Evaluate the batch's reads on ``tx``'s snapshot; when ``writing``, refresh leases and apply the
        writes in ``tx``; otherwise return the keys whose lease a refresh would extend."""
        results: list[Result] = []
        refresh: dict[str, None] = {}
        for i, op in enumerate(plan.ops):
            if isinstance(op, GetOp):
                encoded = encode_key(op.namespace, op.key)
                record = tx.kv.get(run, encoded)
                results.append(None if record is None else _item(encoded, record))
                if record is not None and op.refresh_ttl:
                    refresh[encoded] = None
            elif isinstance(op, SearchOp):
                found = self._search(tx, run, op, plan.filters[i], plan.query_vectors.get(op.query or ""))
                results.append(found)
                if op.refresh_ttl:
                    refresh.update((encode_key(item.namespace, item.key), None) for item in found)
            elif isinstance(op, ListNamespacesOp):
                results.append(self._list_namespaces(tx, run, op))
            else:
                results.append(None)
        due = [encoded for encoded in refresh if tx.kv.expires_at(run, encoded) is not None]
        if not writing:
            return results, due
        for encoded in due:
            tx.kv.get(run, encoded, refresh_ttl=True)
        self._write(tx, run, plan)
        return results, []

    def _write(self, tx: Any, run: str, plan: _Plan) -> None:
        now = tx.now_us()
        vectors = iter(plan.vectors)
        for encoded, op, texts in plan.writes:
            old = tx.kv.get(run, encoded)
            if op.value is None:
                if old is not None:
                    tx.kv.delete(run, encoded)
                    for path in old.get("vectors", ()):
                        tx.vectors.delete(run, COLLECTION, path + "\x00" + encoded)
                continue
            record: dict[str, Any] = {"value": dict(op.value),
                                      "created_us": old["created_us"] if old is not None else now,
                                      "updated_us": now}
            paths = []
            for path, _ in texts:
                vector = next(vectors)
                if any(vector):  # a zero vector has no direction: the item is not findable by this path
                    tx.vectors.upsert(run, COLLECTION, path + "\x00" + encoded, vector)
                    paths.append(path)
            for path in (old or {}).get("vectors", ()):
                if path not in paths:
                    tx.vectors.delete(run, COLLECTION, path + "\x00" + encoded)
            if paths:
                record["vectors"] = paths
            ttl = op.ttl
            tx.kv.put(run, encoded, record, ttl=None if ttl is None else ttl * 60.0)

    def _search(self, tx: Any, run: str, op: SearchOp, predicate: Any, query: Any) -> list[SearchItem]:
        want = op.offset + op.limit
        prefix = encode_prefix(op.namespace_prefix)
        if query is not None and want and any(query):
            found = self._search_vectors(tx, run, prefix, predicate, query, want)
            if found is not None:
                return [_search_item(e, r, s) for e, r, s in found[op.offset:want]]
        stop = None if query is not None else want
        hits: list[tuple[str, dict[str, Any]]] = []
        if stop != 0:
            for encoded, record in tx.kv.scan(run, prefix):
                if predicate is None or predicate(record["value"]):
                    hits.append((encoded, record))
                    if len(hits) == stop:
                        break
        if query is None:
            return [_search_item(e, r, None) for e, r in hits[op.offset:want]]
        best = self._ranked(tx, run, hits, query, want)
        scored = sorted(((-score, n, encoded) for n, (encoded, _) in enumerate(hits)
                         if (score := best.get(encoded)) is not None))
        records = dict(hits)
        ranked = [(e, records[e], -s) for s, _, e in scored]
        ranked += [(e, r, None) for e, r in hits if e not in best]  # items without vectors: after, in key order
        return [_search_item(e, r, s) for e, r, s in ranked[op.offset:want]]

    def _search_vectors(self, tx: Any, run: str, prefix: str, predicate: Any, query: Any,
                        want: int) -> list[tuple[str, dict[str, Any], float | None]] | None:
        """The best ``want`` items for ``query``, driven by the vector store (exact, cached matrix).

        Asks for the top 4·want, 16·want, ... vectors; each new item among them is read once and kept
        if it is under ``prefix``, passes the filter and still lists that vector. Vectors come best
        first, so an item's first vector is its best (max pooling) and once ``want`` items are kept
        they are exactly the best. When every vector has been seen and fewer were kept, the items
        without vectors follow (score None, key order). None when the vector store's top-k limit was
        reached first (the caller then scores the filtered items one by one).
        O(k log k + k reads) per round; the vector search itself O(vectors x dims).
        """
        k = min(_MAX_K, max(4 * want, 64))
        seen: dict[str, dict[str, Any] | None] = {}
        while True:
            matches = tx.vectors.search(run, COLLECTION, query, k=k)
            kept: list[tuple[str, dict[str, Any], float | None]] = []
            taken: set[str] = set()
            for match in matches:
                path, encoded = match.id.split("\x00", 1)
                if encoded in taken or not encoded.startswith(prefix):
                    continue
                if encoded not in seen:
                    record = tx.kv.get(run, encoded)
                    if record is not None and predicate is not None and not predicate(record["value"]):
                        record = None
                    seen[encoded] = record
                record = seen[encoded]
                if record is None or path not in record.get("vectors", ()):
                    continue
                taken.add(encoded)
                kept.append((encoded, record, float(match.score)))
                if len(kept) == want:
                    return kept
            if len(matches) < k:  # every vector seen: the unembedded items follow
                for encoded, record in tx.kv.scan(run, prefix):
                    if encoded not in taken and (predicate is None or predicate(record["value"])):
                        kept.append((encoded, record, None))
                        if len(kept) == want:
                            break
                return kept
            if k == _MAX_K:
                return None
            k = min(_MAX_K, 4 * k)

    def _ranked(self, tx: Any, run: str, hits: list[tuple[str, dict[str, Any]]], query: Any,
                want: int) -> dict[str, float]:
        """Cosine score of the candidates ``hits`` (max over their vectors) for at least their best ``want``.

        Asks the vector store (its cached matrix, exact) for the top 4·want, 16·want, ... vectors until
        ``want`` candidates are among them: every candidate absent from a top-k scores at most its k-th
        score, so those found are exactly the best. Past 10,000 vectors (the store's top-k limit), the
        candidates not yet scored are scored one by one.
        """
        candidates = {encoded: set(record.get("vectors", ())) for encoded, record in hits}
        candidates = {e: paths for e, paths in candidates.items() if paths}
        if not candidates or want == 0:
            return {}
        if not any(query):  # a zero query has no direction: every vector scores 0 (key order decides)
            return dict.fromkeys(candidates, 0.0)
        best: dict[str, float] = {}
        k = min(_MAX_K, max(4 * want, 64))
        while True:
            matches = tx.vectors.search(run, COLLECTION, query, k=k)
            best = {}
            for match in matches:
                path, encoded = match.id.split("\x00", 1)
                if encoded not in best and path in candidates.get(encoded, ()):
                    best[encoded] = float(match.score)
            if len(best) >= min(want, len(candidates)) or len(matches) < k:
                return best
            if k == _MAX_K:
                break
            k = min(_MAX_K, 4 * k)
        import numpy as np

        q = np.asarray(query, dtype=np.float64)
        qn = float(np.linalg.norm(q))
        for encoded, paths in candidates.items():
            if encoded in best:
                continue
            for path in paths:
                found = tx.vectors.get(run, COLLECTION, path + "\x00" + encoded)
                if found is None:
                    continue
                v = np.asarray(found.vector, dtype=np.float64)
                vn = float(np.linalg.norm(v))
                score = float(v @ q) / (vn * qn) if vn and qn else 0.0
                best[encoded] = max(best.get(encoded, score), score)
        return best

    def _list_namespaces(self, tx: Any, run: str, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        conditions = list(op.match_conditions or ())
        scan_prefix: list[str] = []
        for cond in conditions:  # a wildcard-free prefix condition narrows the scan
            if cond.match_type == "prefix":
                head = []
                for label in cond.path:
                    if label == "*":
                        break
                    head.append(label)
                if len(head) > len(scan_prefix):
                    scan_prefix = head
        seen: dict[tuple[str, ...], None] = {}
        last: tuple[str, ...] | None = None
        for encoded, _ in tx.kv.scan(run, encode_prefix(scan_prefix)):
            namespace = decode_key(encoded)[0]
            if namespace == last:
                continue
            last = namespace
            if all(_matches(c, namespace) for c in conditions):
                seen[namespace if op.max_depth is None else namespace[:op.max_depth]] = None
        namespaces = sorted(seen)
        return namespaces[op.offset:op.offset + op.limit]

    # --- TTL sweeping ---------------------------------------------------------------------------------

    def sweep_ttl(self) -> int:
        """Delete the store's expired items now (``db.sweep(run)``), then vectors left by them; return
        how many items went. Each deletion is an ordinary commit (history shows it). O(expired + vectors).

        :raises DatabaseReadOnly: a read-only handle.
        """
        run = self._run if self._run is not None else self._find_run()
        if run is None:
            return 0
        swept = self._db.sweep(run)
        if self.index_config is not None or self._db.vectors.info(run, COLLECTION) is not None:
            orphans = [vid for vid in self._db.vectors.ids(run, COLLECTION)
                       if self._db.kv.get(run, vid.split("\x00", 1)[1]) is None]
            if orphans:
                def drop(tx: Any) -> None:
                    for vid in orphans:
                        if tx.kv.get(run, vid.split("\x00", 1)[1]) is None:
                            tx.vectors.delete(run, COLLECTION, vid)
                self._db.transact(drop, retries=_RETRIES)
        return swept

    def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None) -> None:
        """Call :meth:`sweep_ttl` every ``sweep_interval_minutes`` (default: the TTLConfig's) in a daemon
        thread until :meth:`stop_ttl_sweeper` or :meth:`close`. No-op if already running.

        :raises InvalidArgument: no interval given or configured.
        """
        minutes = _check_minutes(sweep_interval_minutes if sweep_interval_minutes is not None else
                                 (self.ttl_config or {}).get("sweep_interval_minutes"), "sweep_interval_minutes")
        if minutes is None:
            raise InvalidArgument("no sweep interval: pass sweep_interval_minutes or set it in the TTLConfig")
        if self._sweeper is not None and self._sweeper.is_alive():
            return
        self._stop.clear()
        stop = self._stop
        ref = weakref.ref(self)

        def loop() -> None:
            while not stop.wait(minutes * 60.0):
                store = ref()
                if store is None or store._db.closed:  # noqa: SLF001 - same class
                    return
                try:
                    store.sweep_ttl()
                except Exception:  # a failed sweep is retried next round; reads hide expired items anyway
                    pass
                del store

        self._sweeper = threading.Thread(target=loop, name="inmem-store-ttl", daemon=True)
        self._sweeper.start()

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper thread; return whether it has stopped (True if none was running)."""
        self._stop.set()
        thread = self._sweeper
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            return False
        self._sweeper = None
        return True

    # --- history --------------------------------------------------------------------------------------

    def history(self, namespace: tuple[str, ...], key: str) -> list[tuple[int, _dt.datetime, Item | None]]:
        """Every version of item ``(namespace, key)``, oldest first: ``(commit version, commit time (UTC),
        Item | None)`` — None where the item was deleted or swept after expiring. A TTL refresh is a
        version too (same value, new lease). Read from ``db.history`` (the run's WAL history; no side
        table): O(commits of the store run).

        :raises InvalidNamespaceError: a bad namespace label.
        :raises HistoryUnavailable: part of the run's history was deleted by retention.
        """
        namespace = _check_labels(namespace)
        encoded = encode_key(namespace, _check_key(key))
        run = self._run if self._run is not None else self._find_run()
        if run is None:
            return []
        out: list[tuple[int, _dt.datetime, Item | None]] = []
        for commit in self._db.history(run):
            for op in commit.ops:
                if op.primitive == "kv" and op.key == encoded:
                    item = None if op.kind == "delete" else _item(encoded, _history_value(op.value))
                    out.append((commit.version, commit.ts, item))
        return out

    async def ahistory(self, namespace: tuple[str, ...], key: str) -> list[tuple[int, _dt.datetime, Item | None]]:
        """:meth:`history` in a worker thread."""
        return await asyncio.to_thread(self.history, namespace, key)

    async def asweep_ttl(self) -> int:
        """:meth:`sweep_ttl` in a worker thread."""
        return await asyncio.to_thread(self.sweep_ttl)
