"""A LangGraph checkpointer on inmem: ``InmemSaver(db)``, a complete ``BaseCheckpointSaver``.

This module owns the mapping of LangGraph threads, checkpoints, pending
writes and channel values onto inmem runs and KV keys. It uses only the
engine's public API (runs, ``db.transaction()``, ``db.transact``, ``tx.kv``,
``db.fork_run``); it needs the optional dependency ``langgraph`` (extra
``inmem[langgraph]``).

Storage model
-------------

A LangGraph **thread is an inmem run** (``db.begin_run(thread_id,
tags=["langgraph"])``). One **directory run** (name ``langgraph:threads``,
tag ``langgraph-directory``, found by name and tag when the first saver of a
database starts) maps thread ids to run ids, so finding a thread is one KV
read. KV keys (``\\0`` separates components; checkpoint namespaces, ids,
channel names and task ids must not contain it)::

    directory run
      t/<thread_id>                      -> run id of the thread
      r/<run_id>\\0<thread_id>            -> thread_id   (threads holding checkpoints of a LangGraph run_id)
    thread run
      c/<ns>\\0<checkpoint_id>            -> {"parent": id | None, "checkpoint": [type, bytes], "metadata": [type, bytes]}
      w/<ns>\\0<checkpoint_id>\\0<task_id>\\0<idx>
                                         -> [task_id, idx, channel, type, bytes, task_path]
      b/<ns>\\0<channel>\\0<version>       -> [type, bytes]   (one channel value, stored once per version)
      h/<ns>                             -> the newest checkpoint id of the namespace
      i/<run_id>\\0<ns>\\0<checkpoint_id>  -> None          (checkpoints by LangGraph run_id)

``[type, bytes]`` is ``serde.dumps_typed(obj)``. The stored checkpoint has no
``channel_values``: its ``channel_versions`` name the ``b/`` keys to read, so
a channel that does not change is stored once however many checkpoints
share it (as the Postgres saver's blobs table does). Checkpoint ids sort by
time, so a prefix scan of ``c/<ns>\\0`` is the namespace's checkpoints in
order, and ``w/<ns>\\0`` is all their pending writes in one scan.

Guarantees
----------

* Every write (``put``, ``put_writes``, deletes, prune, copy) is one inmem
  transaction retried on conflict by ``db.transact``: a checkpoint, its
  channel values and its head pointer commit together or not at all, and
  two savers writing one thread serialise (both read ``h/<ns>``).
* Reads (``get_tuple``, ``list``) run on one snapshot. ``list()`` does a
  bounded number of reads: one scan of the checkpoints, one scan of their
  pending writes, one read per distinct ``(channel, version)``.
* ``copy_thread`` is ``db.fork_run`` (one commit inside the engine).
* The ``a*`` methods run the blocking engine calls (commits, fsync in
  ``strict`` mode) in a worker thread: they never block the event loop.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

try:  # langgraph-checkpoint >= 4 (DeltaChannel support); older releases lack both names
    from langgraph.checkpoint.base import DeltaChannelHistory, writes_sort_key
except ImportError:  # pragma: no cover - depends on the installed langgraph-checkpoint
    DeltaChannelHistory = dict  # type: ignore[misc,assignment]

    def writes_sort_key(task_path: str, task_id: str = "", idx: int = 0) -> tuple[str, str, int]:
        return (task_path, task_id, idx)

from ..database import Database
from ..errors import DatabaseReadOnly, RunClosed

from .langgraph_store import InmemStore  # noqa: E402,F401 - the LangGraph store, re-exported

__all__ = ["InmemSaver", "InmemStore"]

T = TypeVar("T")

DIRECTORY_NAME = "langgraph:threads"
DIRECTORY_TAG = "langgraph-directory"
THREAD_TAG = "langgraph"

#: ``db.transact`` retries per write (jittered backoff, SPEC.md §8).
_RETRIES = 30
#: Attempts to find or create a thread's run before giving up (each races a concurrent delete).
_THREAD_ATTEMPTS = 20

# One directory run per database handle, found (or created) once per process; and one lock per
# handle that serialises thread creation (only one process can open a database for writing, so
# this alone keeps two savers from beginning two runs for one new thread).
_directories: weakref.WeakKeyDictionary[Database, str] = weakref.WeakKeyDictionary()
_creation_locks: weakref.WeakKeyDictionary[Database, threading.Lock] = weakref.WeakKeyDictionary()
_directories_lock = threading.Lock()


class _MissingThread(Exception):
    """Raised inside a write transaction when the thread has no run yet."""


def _plain(name: str, value: Any) -> str:
    value = "" if value is None else str(value)
    if "\x00" in value:
        raise ValueError(f"{name} must not contain NUL (\\x00): {value!r:.80}")
    return value


def _ckey(ns: str, cid: str) -> str:
    return f"c/{ns}\x00{cid}"


def _wprefix(ns: str, cid: str | None = None) -> str:
    return f"w/{ns}\x00" if cid is None else f"w/{ns}\x00{cid}\x00"


def _bkey(ns: str, channel: str, version: Any) -> str:
    return f"b/{ns}\x00{channel}\x00{version}"


def _hkey(ns: str) -> str:
    return f"h/{ns}"


def _ikey(run_id: str, ns: str, cid: str) -> str:
    return f"i/{run_id}\x00{ns}\x00{cid}"


def _tkey(thread_id: str) -> str:
    return f"t/{thread_id}"


def _rkey(run_id: str, thread_id: str) -> str:
    return f"r/{run_id}\x00{thread_id}"


def _split2(key: str) -> tuple[str, str]:
    a, b = key[2:].split("\x00", 1)
    return a, b


def _split3(key: str) -> tuple[str, str, str]:
    a, b, c = key[2:].split("\x00", 2)
    return a, b, c


def _directory(db: Database) -> str | None:
    """The directory run of ``db``: found by name and tag, created if absent (not on a read-only handle).

    Found or created once per handle, under a process-wide lock; only one
    process can open a database for writing, so there is never more than
    one. (Should a second one exist, made by hand, the oldest is used.)
    """
    with _directories_lock:
        run = _directories.get(db)
        if run is not None:
            return run
        found = db.runs.list(status="active", tag=DIRECTORY_TAG, name=DIRECTORY_NAME)
        if not found:
            if db.read_only:
                return None
            db.begin_run(DIRECTORY_NAME, tags=[DIRECTORY_TAG], metadata={"langgraph": "thread directory"})
            found = db.runs.list(status="active", tag=DIRECTORY_TAG, name=DIRECTORY_NAME)
        run = min(found, key=lambda info: info.first_version).id
        _directories[db] = run
        _creation_locks.setdefault(db, threading.Lock())
        return run


class InmemSaver(BaseCheckpointSaver[str]):
    """LangGraph checkpointer storing threads, checkpoints and writes in an inmem :class:`~inmem.Database`.

    ``InmemSaver(db)`` uses an open database (the caller closes it);
    ``InmemSaver.from_path(path, **open_options)`` opens one and closes it
    when the saver is closed or leaves its ``with`` block::

        with InmemSaver.from_path("./agent-state") as saver:
            graph = builder.compile(checkpointer=saver)
            graph.invoke(inputs, {"configurable": {"thread_id": "t1"}})

    Any number of savers (and threads) may share one database: every write is
    a serializable transaction, retried on conflict.
    """

    def __init__(self, db: Database, *, serde: SerializerProtocol | None = None) -> None:
        super().__init__(serde=serde)
        if not isinstance(db, Database):
            raise TypeError(f"InmemSaver needs an inmem.Database; got {type(db).__name__}")
        self._db = db
        self._owns_db = False
        self._dir = _directory(db)

    # --- lifecycle ----------------------------------------------------------------------------

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, serde: SerializerProtocol | None = None,
                  **open_options: Any) -> InmemSaver:
        """Open (creating if needed) the database at ``path`` with ``Database.open(path, **open_options)``.

        The saver owns that database: :meth:`close` (or leaving ``with``) closes it.
        """
        db = Database.open(path, **open_options)
        try:
            saver = cls(db, serde=serde)
        except BaseException:
            db.close()
            raise
        saver._owns_db = True  # noqa: SLF001 - same class
        return saver

    @property
    def db(self) -> Database:
        """The database this saver writes to."""
        return self._db

    def close(self) -> None:
        """Close the database if this saver opened it (:meth:`from_path`); otherwise do nothing."""
        if self._owns_db:
            self._db.close()

    def __enter__(self) -> InmemSaver:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> InmemSaver:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        return f"<InmemSaver {self._db.path!r}>"

    # --- engine plumbing ----------------------------------------------------------------------

    def _read(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(tx)`` on one consistent snapshot; nothing is written."""
        tx = self._db.transaction()
        try:
            return fn(tx)
        finally:
            if not tx.finished:
                tx.rollback()

    def _thread(self, tx: Any, thread_id: str) -> str | None:
        """The run of ``thread_id`` in ``tx``'s snapshot, or None. One KV read."""
        if self._dir is None:
            return None
        return tx.kv.get(self._dir, _tkey(thread_id))

    def _write(self, thread_id: str, fn: Callable[[Any, str], T]) -> T:
        """Commit ``fn(tx, run)`` for the thread's run, creating the thread first if needed.

        The directory entry is read inside the transaction, so a concurrent
        ``delete_thread`` conflicts with it (and the retry starts a new run).
        """
        if self._dir is None:
            self._dir = _directory(self._db)
            if self._dir is None:
                raise DatabaseReadOnly("the database was opened with read_only=True; nothing was written")

        def attempt(tx: Any) -> T:
            run = tx.kv.get(self._dir, _tkey(thread_id))
            if run is None:
                raise _MissingThread
            return fn(tx, run)

        for _ in range(_THREAD_ATTEMPTS):
            try:
                return self._db.transact(attempt, retries=_RETRIES)
            except _MissingThread:
                self._create_thread(thread_id)
            except RunClosed:  # the thread was deleted after our snapshot: look it up again
                continue
        raise RuntimeError(f"thread {thread_id!r} kept being deleted while writing to it")

    def _create_thread(self, thread_id: str) -> str:
        """Begin the thread's run and register it, unless another saver or thread registered one first.

        LangGraph writes a new thread's first checkpoint and its first pending
        writes from different threads at once; the per-database lock makes
        only one of them begin a run. The registration is still a transaction.
        """
        key = _tkey(thread_id)
        with _creation_locks[self._db]:
            current = self._db.kv.get(self._dir, key)
            if current is not None:
                return current
            run = self._db.begin_run(thread_id, tags=[THREAD_TAG], metadata={"langgraph_thread_id": thread_id})
            return self._register(key, run)

    def _register(self, key: str, run: str) -> str:
        """Point directory ``key`` at ``run`` unless it already points somewhere; return where it points."""

        def register(tx: Any) -> str:
            current = tx.kv.get(self._dir, key)
            if current is not None:
                return current
            tx.kv.put(self._dir, key, run)
            return run

        winner = self._db.transact(register, retries=_RETRIES)
        if winner != run:
            self._db.end_run(run, "cancelled")
        return winner

    @staticmethod
    def _config(thread_id: Any, ns: str, cid: str) -> RunnableConfig:
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": cid}}

    def _loads(self, raw: Sequence[Any]) -> Any:
        return self.serde.loads_typed((raw[0], raw[1]))

    def _tuple(self, thread_id: Any, ns: str, cid: str, record: dict[str, Any], checkpoint: dict[str, Any],
               metadata: Any, writes: list[list[Any]], blobs: Mapping[str, Any]) -> CheckpointTuple:
        """Build a CheckpointTuple; ``blobs`` maps b/ keys to stored ``[type, bytes]`` (or None)."""
        values: dict[str, Any] = {}
        for channel, version in checkpoint.get("channel_versions", {}).items():
            raw = blobs.get(_bkey(ns, channel, version))
            if raw is not None and raw[0] != "empty":
                values[channel] = self._loads(raw)
        writes = sorted(writes, key=lambda w: writes_sort_key(w[5], w[0], w[1]))
        parent = record["parent"]
        return CheckpointTuple(
            config=self._config(thread_id, ns, cid),
            checkpoint={**checkpoint, "channel_values": values},  # type: ignore[typeddict-item]
            metadata=metadata,
            parent_config=self._config(thread_id, ns, parent) if parent else None,
            pending_writes=[(w[0], w[2], self.serde.loads_typed((w[3], w[4]))) for w in writes],
        )

    # --- the BaseCheckpointSaver API ------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named by ``config`` (its ``checkpoint_id``, else the newest of its namespace), or None.

        One snapshot: the directory entry, the head pointer (no id given), the
        checkpoint record, one scan of its pending writes and one read per
        channel version it holds.
        """
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        tid = _plain("thread_id", thread_id)
        ns = _plain("checkpoint_ns", conf.get("checkpoint_ns", ""))
        wanted = get_checkpoint_id(config)

        def read(tx: Any) -> Any:
            run = self._thread(tx, tid)
            if run is None:
                return None
            cid = wanted if wanted else tx.kv.get(run, _hkey(ns))
            if cid is None:
                return None
            record = tx.kv.get(run, _ckey(ns, cid))
            if record is None:
                return None
            checkpoint = self._loads(record["checkpoint"])
            writes = [w for _, w in tx.kv.scan(run, _wprefix(ns, cid))]
            blobs = {}
            for channel, version in checkpoint.get("channel_versions", {}).items():
                key = _bkey(ns, channel, version)
                blobs[key] = tx.kv.get(run, key)
            return cid, record, checkpoint, writes, blobs

        found = self._read(read)
        if found is None:
            return None
        cid, record, checkpoint, writes, blobs = found
        return self._tuple(thread_id, ns, cid, record, checkpoint, self._loads(record["metadata"]), writes, blobs)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints matching every criterion, newest first (descending checkpoint id).

        ``config``: its thread (``None``: every thread), its ``checkpoint_ns``
        if given (else every namespace), its ``checkpoint_id`` if given;
        ``filter``: metadata keys that must be equal; ``before``: only ids
        below its ``checkpoint_id``; ``limit``: at most that many.

        Reads, on one snapshot: one prefix scan of the thread's checkpoints,
        one scan of the pending writes of all those returned, and one read
        per distinct ``(channel, version)`` among them.
        """
        return iter(self._list(config, filter, before, limit))

    def _list(self, config: RunnableConfig | None, filter: dict[str, Any] | None,
              before: RunnableConfig | None, limit: int | None) -> list[CheckpointTuple]:
        if limit is not None and limit <= 0:
            return []
        conf = config["configurable"] if config else {}
        ns_filter = conf.get("checkpoint_ns") if config else None
        if ns_filter is not None:
            ns_filter = _plain("checkpoint_ns", ns_filter)
        cid_filter = get_checkpoint_id(config) if config else None
        before_id = get_checkpoint_id(before) if before else None

        def read(tx: Any) -> list[Any]:
            if config:
                thread_id = conf["thread_id"]
                run = self._thread(tx, _plain("thread_id", thread_id))
                threads = [(thread_id, run)] if run is not None else []
            elif self._dir is not None:
                threads = [(key[2:], run) for key, run in tx.kv.scan(self._dir, "t/")]
            else:
                threads = []
            candidates = []  # (cid, ns, thread_id, run, record)
            for thread_id, run in threads:
                if ns_filter is not None and cid_filter:
                    record = tx.kv.get(run, _ckey(ns_filter, cid_filter))
                    found = [] if record is None else [(ns_filter, cid_filter, record)]
                else:
                    prefix = "c/" if ns_filter is None else f"c/{ns_filter}\x00"
                    found = [(*_split2(key), record) for key, record in tx.kv.scan(run, prefix)]
                for ns, cid, record in found:
                    if cid_filter and cid != cid_filter:
                        continue
                    if before_id is not None and cid >= before_id:
                        continue
                    candidates.append((cid, ns, thread_id, run, record))
            candidates.sort(key=lambda c: c[0], reverse=True)
            selected = []
            for cid, ns, thread_id, run, record in candidates:
                metadata = self._loads(record["metadata"])
                if filter and not all(metadata.get(k) == v for k, v in filter.items()):
                    continue
                selected.append((cid, ns, thread_id, run, record, metadata))
                if limit is not None and len(selected) >= limit:
                    break
            # pending writes: one scan per thread (of one checkpoint, one namespace, or all of them)
            writes: dict[tuple[str, str, str], list[list[Any]]] = {}
            by_run: dict[str, list[tuple[str, str]]] = {}
            for cid, ns, _, run, _, _ in selected:
                by_run.setdefault(run, []).append((ns, cid))
                writes[(run, ns, cid)] = []
            for run, wanted in by_run.items():
                namespaces = {ns for ns, _ in wanted}
                if len(wanted) == 1:
                    prefix = _wprefix(*wanted[0])
                elif len(namespaces) == 1:
                    prefix = _wprefix(next(iter(namespaces)))
                else:
                    prefix = "w/"
                for key, value in tx.kv.scan(run, prefix):
                    ns, cid, _ = _split3(key)
                    bucket = writes.get((run, ns, cid))
                    if bucket is not None:
                        bucket.append(value)
            # channel values: each distinct (thread, channel, version) read once
            blobs: dict[tuple[str, str], Any] = {}
            out = []
            for cid, ns, thread_id, run, record, metadata in selected:
                checkpoint = self._loads(record["checkpoint"])
                mine = {}
                for channel, version in checkpoint.get("channel_versions", {}).items():
                    key = _bkey(ns, channel, version)
                    if (run, key) not in blobs:
                        blobs[(run, key)] = tx.kv.get(run, key)
                    mine[key] = blobs[(run, key)]
                out.append((thread_id, ns, cid, record, checkpoint, metadata, writes[(run, ns, cid)], mine))
            return out

        return [self._tuple(*row) for row in self._read(read)]

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store ``checkpoint`` (child of ``config``'s ``checkpoint_id``) and the channel values in ``new_versions``.

        One transaction: a ``b/`` key per channel in ``new_versions`` that has
        a value, the checkpoint record without its values, the namespace's head
        pointer, and the run-id index. Channels not in ``new_versions`` are not
        written again: their stored versions are shared.
        """
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        tid = _plain("thread_id", thread_id)
        ns = _plain("checkpoint_ns", conf.get("checkpoint_ns", ""))
        parent = conf.get("checkpoint_id")
        cid = _plain("checkpoint id", checkpoint["id"])
        stripped = dict(checkpoint)
        values = stripped.pop("channel_values", None) or {}
        blobs = []
        for channel, version in new_versions.items():
            if channel in values:
                key = _bkey(ns, _plain("channel", channel), version)
                blobs.append((key, list(self.serde.dumps_typed(values[channel]))))
        md = get_checkpoint_metadata(config, metadata)
        record = {
            "parent": parent,
            "checkpoint": list(self.serde.dumps_typed(stripped)),
            "metadata": list(self.serde.dumps_typed(md)),
        }
        run_id = md.get("run_id")
        run_id = str(run_id) if run_id is not None and "\x00" not in str(run_id) else None
        ckey, hkey = _ckey(ns, cid), _hkey(ns)

        def write(tx: Any, run: str) -> None:
            for key, value in blobs:
                tx.kv.put(run, key, value)
            tx.kv.put(run, ckey, record)
            head = tx.kv.get(run, hkey)  # read by every put to this namespace: concurrent puts serialise
            if head is None or cid > head:
                tx.kv.put(run, hkey, cid)
            if run_id is not None:
                tx.kv.put(run, _ikey(run_id, ns, cid), None)
                rkey = _rkey(run_id, tid)
                if tx.kv.get(self._dir, rkey) is None:
                    tx.kv.put(self._dir, rkey, tid)

        self._write(tid, write)
        return self._config(thread_id, ns, cid)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes for ``config``'s checkpoint, in one transaction.

        Idempotent as in LangGraph's savers: a regular write ``(task_id, idx)``
        already stored is kept; special writes (errors, interrupts, resumes,
        ``WRITES_IDX_MAP``) replace what is stored.
        """
        conf = config["configurable"]
        tid = _plain("thread_id", conf["thread_id"])
        ns = _plain("checkpoint_ns", conf.get("checkpoint_ns", ""))
        cid = _plain("checkpoint_id", conf["checkpoint_id"])
        task_id = _plain("task_id", task_id)
        prefix = _wprefix(ns, cid)
        items = []
        for idx, (channel, value) in enumerate(writes):
            widx = WRITES_IDX_MAP.get(channel, idx)
            type_, data = self.serde.dumps_typed(value)
            items.append((f"{prefix}{task_id}\x00{widx}", widx >= 0,
                          [task_id, widx, channel, type_, data, task_path or ""]))

        def write(tx: Any, run: str) -> None:
            for key, regular, value in items:
                if regular and tx.kv.get(run, key) is not None:
                    continue
                tx.kv.put(run, key, value)

        self._write(tid, write)

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, write and channel value of the thread, in one transaction.

        The directory entry goes in the same transaction; then the thread's run
        is ended ``"cancelled"`` (its history stays in the WAL). A later
        ``put`` on the same thread id starts a new run. No-op for an unknown thread.
        """
        tid = _plain("thread_id", thread_id)
        if self._dir is None:
            return

        def delete(tx: Any) -> str | None:
            run = tx.kv.get(self._dir, _tkey(tid))
            if run is None:
                return None
            for key, _ in tx.kv.scan(run, ""):
                if key.startswith("i/"):
                    run_id = key[2:].split("\x00", 1)[0]
                    tx.kv.delete(self._dir, _rkey(run_id, tid))
                tx.kv.delete(run, key)
            tx.kv.delete(self._dir, _tkey(tid))
            return run

        run = self._db.transact(delete, retries=_RETRIES)
        if run is not None:
            try:
                self._db.end_run(run, "cancelled")
            except RunClosed:
                pass

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their pending writes) whose metadata ``run_id`` is in ``run_ids``.

        Threads are found through the directory's ``r/`` index, checkpoints
        through each thread's ``i/`` index (no scan of other threads). Per
        thread, one transaction also moves the head pointer and drops channel
        values no remaining checkpoint references.
        """
        if self._dir is None or not run_ids:
            return
        wanted = {_plain("run_id", r) for r in run_ids}

        def find(tx: Any) -> dict[str, set[str]]:
            threads: dict[str, set[str]] = {}
            for run_id in wanted:
                for _, tid in tx.kv.scan(self._dir, f"r/{run_id}\x00"):
                    threads.setdefault(tid, set()).add(run_id)
            return threads

        for tid, ids in self._read(find).items():
            def delete(tx: Any, ids: set[str] = ids, tid: str = tid) -> None:
                run = tx.kv.get(self._dir, _tkey(tid))
                if run is not None:
                    targets: set[tuple[str, str]] = set()
                    for run_id in ids:
                        for key, _ in tx.kv.scan(run, f"i/{run_id}\x00"):
                            _, ns, cid = _split3(key)
                            tx.kv.delete(run, key)
                            record = tx.kv.get(run, _ckey(ns, cid))
                            if record is not None and str(self._loads(record["metadata"]).get("run_id")) == run_id:
                                targets.add((ns, cid))
                    for ns, cid in targets:
                        tx.kv.delete(run, _ckey(ns, cid))
                        for key, _ in tx.kv.scan(run, _wprefix(ns, cid)):
                            tx.kv.delete(run, key)
                    for ns in {ns for ns, _ in targets}:
                        self._tidy_namespace(tx, run, ns)
                for run_id in ids:
                    tx.kv.delete(self._dir, _rkey(run_id, tid))

            self._db.transact(delete, retries=_RETRIES)

    def _tidy_namespace(self, tx: Any, run: str, ns: str) -> None:
        """After deletes in ``tx``: point ``h/<ns>`` at the newest remaining checkpoint, drop unreferenced values."""
        remaining = [(_split2(key)[1], record) for key, record in tx.kv.scan(run, f"c/{ns}\x00")]
        if remaining:
            tx.kv.put(run, _hkey(ns), max(cid for cid, _ in remaining))
        else:
            tx.kv.delete(run, _hkey(ns))
        referenced = set()
        for _, record in remaining:
            for channel, version in self._loads(record["checkpoint"]).get("channel_versions", {}).items():
                referenced.add(_bkey(ns, channel, version))
        for key, _ in tx.kv.scan(run, f"b/{ns}\x00"):
            if key not in referenced:
                tx.kv.delete(run, key)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, pending write and channel value of one thread to another.

        When the target thread does not exist, this is ``db.fork_run`` of the
        source's run (one commit inside the engine, no value passes through
        Python) registered under the target id; the fork's parent is the
        source run. When the target exists, the source's keys are merged into
        it in one transaction. No-op for an unknown source.
        """
        src = _plain("thread_id", source_thread_id)
        dst = _plain("thread_id", target_thread_id)
        if self._dir is None or src == dst:
            return
        src_run, dst_run = self._read(lambda tx: (self._thread(tx, src), self._thread(tx, dst)))
        if src_run is None:
            return
        if dst_run is None:
            with _creation_locks[self._db]:  # no saver of this process creates the target meanwhile
                if self._db.kv.get(self._dir, _tkey(dst)) is None:
                    fork = self._db.fork_run(src_run, name=dst, tags=[THREAD_TAG])

                    def register(tx: Any) -> bool:
                        if tx.kv.get(self._dir, _tkey(dst)) is not None:
                            return False
                        tx.kv.put(self._dir, _tkey(dst), fork)
                        for key, _ in tx.kv.scan(fork, "i/"):
                            tx.kv.put(self._dir, _rkey(key[2:].split("\x00", 1)[0], dst), dst)
                        return True

                    if self._db.transact(register, retries=_RETRIES):
                        return
                    self._db.end_run(fork, "cancelled")

        def merge(tx: Any, run: str) -> None:
            source = tx.kv.get(self._dir, _tkey(src))
            if source is None:
                return
            for key, value in tx.kv.scan(source, ""):
                if key.startswith("h/"):
                    current = tx.kv.get(run, key)
                    if current is not None and current >= value:
                        continue
                elif key.startswith("i/"):
                    tx.kv.put(self._dir, _rkey(key[2:].split("\x00", 1)[0], dst), dst)
                tx.kv.put(run, key, value)

        self._write(dst, merge)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Prune the checkpoints of ``thread_ids``: ``"keep_latest"`` per namespace, or ``"delete"`` all.

        ``"keep_latest"`` keeps the newest checkpoint of each namespace with
        its pending writes, plus — for ``DeltaChannel`` channels (those named
        in any checkpoint's ``counters_since_delta_snapshot`` metadata) that
        the kept checkpoint does not store — every ancestor up to the nearest
        one storing that channel's snapshot, with their writes, so the delta
        history stays reconstructible. Channel values are kept exactly when a
        kept checkpoint references their version. One transaction per thread.
        ``"delete"`` is :meth:`delete_thread` for each thread.

        :raises ValueError: unknown ``strategy``.
        """
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"strategy must be 'keep_latest' or 'delete'; got {strategy!r}")
        for thread_id in thread_ids:
            if strategy == "delete":
                self.delete_thread(thread_id)
                continue
            tid = _plain("thread_id", thread_id)
            if self._dir is None:
                return

            def keep_latest(tx: Any, tid: str = tid) -> None:
                run = tx.kv.get(self._dir, _tkey(tid))
                if run is None:
                    return
                records: dict[str, dict[str, Any]] = {}
                for key, record in tx.kv.scan(run, "c/"):
                    ns, cid = _split2(key)
                    records.setdefault(ns, {})[cid] = record
                if not records:
                    return
                blob_keys = [key for key, _ in tx.kv.scan(run, "b/")]
                stored = set(blob_keys)
                kept: set[tuple[str, str]] = set()
                referenced: set[str] = set()
                for ns, by_id in records.items():
                    for cid in self._keep(ns, by_id, stored):
                        kept.add((ns, cid))
                        versions = self._loads(by_id[cid]["checkpoint"]).get("channel_versions", {})
                        referenced.update(_bkey(ns, ch, v) for ch, v in versions.items())
                    for cid in by_id:
                        if (ns, cid) not in kept:
                            tx.kv.delete(run, _ckey(ns, cid))
                for key, _ in tx.kv.scan(run, "w/"):
                    ns, cid, _ = _split3(key)
                    if (ns, cid) not in kept:
                        tx.kv.delete(run, key)
                for key in blob_keys:
                    if key not in referenced:
                        tx.kv.delete(run, key)
                dropped_runs, live_runs = set(), set()
                for key, _ in tx.kv.scan(run, "i/"):
                    run_id, ns, cid = _split3(key)
                    if (ns, cid) in kept:
                        live_runs.add(run_id)
                    else:
                        dropped_runs.add(run_id)
                        tx.kv.delete(run, key)
                for run_id in dropped_runs - live_runs:
                    tx.kv.delete(self._dir, _rkey(run_id, tid))

            self._db.transact(keep_latest, retries=_RETRIES)

    def _keep(self, ns: str, by_id: dict[str, dict[str, Any]], stored: set[str]) -> set[str]:
        """The checkpoints ``keep_latest`` keeps in one namespace: the newest, and its delta ancestry."""
        latest = max(by_id)
        keep = {latest}
        delta: set[str] = set()
        for record in by_id.values():
            counters = self._loads(record["metadata"]).get("counters_since_delta_snapshot")
            if counters:
                delta.update(counters)
        if not delta:
            return keep
        versions = self._loads(by_id[latest]["checkpoint"]).get("channel_versions", {})
        pending = {ch for ch in delta if ch in versions and _bkey(ns, ch, versions[ch]) not in stored}
        cur = by_id[latest]["parent"]
        while pending and cur is not None and cur in by_id and cur not in keep:
            keep.add(cur)
            versions = self._loads(by_id[cur]["checkpoint"]).get("channel_versions", {})
            for ch in list(pending):
                if ch in versions and _bkey(ns, ch, versions[ch]) in stored:
                    pending.discard(ch)  # the seed of the walk: older ancestors are not needed
            cur = by_id[cur]["parent"]
        return keep

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Walk the parent chain once for all ``channels`` on one snapshot (as ``InMemorySaver`` does).

        Per ancestor: its record, a read of only the still-unresolved
        channels' values, and one scan of its writes. A channel stops at the
        nearest ancestor storing a value for it (the ``seed``); that
        ancestor's own writes are included.
        """
        if not channels:
            return {}
        conf = config["configurable"]
        tid = _plain("thread_id", conf["thread_id"])
        ns = _plain("checkpoint_ns", conf.get("checkpoint_ns", ""))
        wanted = get_checkpoint_id(config)

        def read(tx: Any) -> tuple[dict[str, list[list[Any]]], dict[str, Any]]:
            collected: dict[str, list[list[Any]]] = {c: [] for c in channels}
            seeds: dict[str, Any] = {}
            run = self._thread(tx, tid)
            if run is None:
                return collected, seeds
            cid = wanted if wanted else tx.kv.get(run, _hkey(ns))
            target = tx.kv.get(run, _ckey(ns, cid)) if cid else None
            cur = target["parent"] if target is not None else None
            remaining = set(channels)
            while cur is not None and remaining:
                record = tx.kv.get(run, _ckey(ns, cur))
                if record is None:
                    break
                versions = self._loads(record["checkpoint"]).get("channel_versions", {})
                here = {}
                for ch in remaining:
                    if ch in versions:
                        raw = tx.kv.get(run, _bkey(ns, ch, versions[ch]))
                        if raw is not None and raw[0] != "empty":
                            here[ch] = raw
                writes = sorted((w for _, w in tx.kv.scan(run, _wprefix(ns, cur))),
                                key=lambda w: writes_sort_key(w[5], w[0], w[1]))
                for w in reversed(writes):
                    if w[2] in remaining:
                        collected[w[2]].append(w)
                for ch, raw in here.items():
                    seeds[ch] = raw
                    remaining.discard(ch)
                cur = record["parent"]
            return collected, seeds

        collected, seeds = self._read(read)
        result: dict[str, DeltaChannelHistory] = {}
        for ch in channels:
            writes: list[PendingWrite] = [(w[0], w[2], self.serde.loads_typed((w[3], w[4])))
                                          for w in reversed(collected[ch])]
            entry: DeltaChannelHistory = {"writes": writes}
            if ch in seeds:
                entry["seed"] = self._loads(seeds[ch])
            result[ch] = entry
        return result

    def get_next_version(self, current: str | int | None, channel: None) -> str:
        """``"<n:032>.<random:016>"``: increasing in ``n``; the random part keeps two branches' versions apart."""
        if current is None:
            n = 0
        elif isinstance(current, int):
            n = current
        else:
            n = int(str(current).split(".")[0])
        return f"{n + 1:032}.{random.random():016}"

    # --- async: the same calls in a worker thread (commits may wait for fsync) ------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in await asyncio.to_thread(self._list, config, filter, before, limit):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(lambda: self.prune(thread_ids, strategy=strategy))

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await asyncio.to_thread(lambda: self.get_delta_channel_history(config=config, channels=channels))
