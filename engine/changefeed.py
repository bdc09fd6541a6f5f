"""The durable change feed: ``db.watch`` — every committed write, in commit order, each exactly once.

This module owns :class:`Watch` (the iterator a consumer reads) and
:class:`Change` (one write of one commit, decoded). A watch is a cursor over
commit versions: ``next`` is the version it delivers next. Commits reach it
two ways, and the WAL is the truth for both:

* live: a kernel commit listener (:meth:`inmem.kernel.Kernel.listen`) appends
  ``(version, ts_us, writes)`` to a bounded buffer under the commit lock (an
  append, no decoding, no wait);
* the WAL: whatever the buffer does not hold — history before the watch
  began (``from_version``), commits dropped while the buffer was full, every
  commit of another process's writer on a read-only handle — is read from the
  segment files by version (:meth:`inmem.kernel.Kernel.commit_reader`).

Invariant: the consumer delivers version ``next`` and then ``next + 1``; a
buffered commit older than ``next`` is a duplicate and dropped, a buffered
commit newer than ``next`` means a gap, read from the WAL first. So there is
no gap and no duplicate, at the seam between WAL replay and live commits
included, and a full buffer only costs a WAL read (never a lost change, never a
blocked committer). Decoding and filtering happen in the consumer's thread.

Sources: the resumable feed is the shape of MongoDB change streams (resume
after the last token seen) and of PostgreSQL logical decoding (the WAL is the
feed, decoded per table/primitive); the listener-plus-log-fallback is the
usual answer to a slow subscriber in log-structured systems (Kafka consumers
read the log at their own offset; nothing is pushed that can be lost).

Durability: a commit is delivered only once it survives what the durability
mode promises (``strict``: fsynced; ``off`` / ``batched``: written to the OS,
so it survives a process crash) — the consumer waits for that itself, joining
the group commit. So after a crash every version a watch delivered is still
there, and ``from_version=last.version + 1`` resumes exactly (in ``batched`` /
``off`` a power loss can still take back commits, delivered or not).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any, NamedTuple

from .codec import decode_value, utc_from_us
from .expiry import unwrap
from .errors import HistoryUnavailable, InvalidArgument, RunNotFound
from .kernel import Kernel, Writes
from .keys import NS_RUN, TAG_DOC, TAG_EVENT, TAG_EXPIRY, TAG_GRAPH, TAG_KV, TAG_STATE, TAG_TRACE, TAG_VECTOR, \
    TAGGED_PREFIX_LEN, run_id_bytes
from .primitives.docs import doc_from_record, doc_key_parts
from .primitives.graph import bookkeeping_key
from .primitives.events import event_from_record
from .primitives.state import state_from_record
from .primitives.traces import trace_from_record
from .replay import PRIMITIVE_NAMES, vector_key

__all__ = ["DEFAULT_BUFFER", "Change", "Watch"]

#: Commits a watch buffers between its consumer's reads before it falls back to the WAL.
DEFAULT_BUFFER = 1024
#: Seconds between two looks at the WAL files when a read-only handle waits for its writer.
POLL_INTERVAL_S = 0.005
_TAGS = {name: tag for tag, name in PRIMITIVE_NAMES.items()}
_TAG = TAGGED_PREFIX_LEN - 1
_READ_BATCH = 512


class Change(NamedTuple):
    """One committed write, as :meth:`inmem.Database.watch` delivers it.

    ``version``: commit version (every write of one commit or transaction
    carries the same one); ``ts``: commit time (UTC ``datetime``); ``run``: the
    run id (str); ``primitive``: ``"run"`` (the run record), ``"kv"``,
    ``"events"``, ``"state"``, ``"traces"``, ``"vectors"``, ``"docs"``,
    ``"graph"`` (the names of :class:`inmem.Op`); ``key``: the primitive's key —
    kv key / state name (str), event seq (int), trace id (str), ``(collection,
    id)`` for a vector (``id`` None: the collection record), document name,
    for the graph the user key split at NUL bytes (``("n", node id)``, ``("o",
    source, relation, target)``; the in-edge markers and the full-text index
    are bookkeeping and never delivered), None for the run record (a KV value
    with a time to live arrives as its value; the expiry index is never
    delivered); ``op``: ``"put"`` or ``"delete"`` (``"define"`` /
    ``"undefine"`` for a document schema); ``value``: the decoded value written
    — an :class:`~inmem.Event`, :class:`~inmem.State`, :class:`~inmem.Trace`,
    the JSON document, else the stored record as decoded CBOR — ``None`` for a
    delete.
    """

    version: int
    ts: _dt.datetime
    run: str
    primitive: str
    key: Any
    op: str
    value: Any


def _internal(key: bytes) -> bool:
    """Bookkeeping a primitive keeps beside its records, never delivered: the expiry index (its KV write
    is the change), the graph's in-edge markers (the out-edge is the change) and its full-text index."""
    tag = key[_TAG]
    if tag == TAG_EXPIRY:
        return True
    return tag == TAG_GRAPH and bookkeeping_key(key[TAGGED_PREFIX_LEN:])


def _decode(key: bytes, value: bytes | None, run: str, ts: _dt.datetime, version: int) -> Change:
    """The :class:`Change` of one store write (damage is shown as raw bytes, never raised)."""
    tag = key[_TAG]
    user = key[TAGGED_PREFIX_LEN:]
    primitive = PRIMITIVE_NAMES.get(tag, str(tag))
    op = "put" if value is not None else "delete"
    k: Any = user
    v: Any = None
    try:
        if value is not None and tag == TAG_KV:
            value = unwrap(value)[2]  # a value with a time to live is delivered as the value
        raw = None if value is None else decode_value(value)
        v = raw
        if tag == TAG_KV:
            k = user.decode("utf-8")
        elif tag == TAG_STATE:
            k = user.decode("utf-8")
            v = None if raw is None else state_from_record(raw)
        elif tag == TAG_EVENT:
            k = int.from_bytes(user, "big")
            v = None if raw is None else event_from_record(run, k, raw)
        elif tag == TAG_TRACE:
            k = str(uuid.UUID(bytes=user))
            v = None if raw is None else trace_from_record(run, user, raw)
        elif tag == TAG_VECTOR:
            k = vector_key(user)
        elif tag == TAG_DOC:
            parts = doc_key_parts(user)
            if parts is not None:
                k = parts[0]
                if parts[1] == "doc":
                    v = None if value is None else doc_from_record(value)
                else:
                    op = "define" if value is not None else "undefine"
        elif tag == TAG_GRAPH:
            k = tuple(p.decode("utf-8") for p in user.split(b"\x00") if p)
        elif primitive == "run":
            k = None
    except Exception:  # noqa: BLE001 - damage is delivered as it is; `inmem verify` names it
        k = user if k is None else k
    return Change(version, ts, run, primitive, k, op, v)


class Watch:
    """An iterator (and async iterator) of :class:`Change`: see :meth:`inmem.Database.watch`.

    ``next(timeout=None)``: the next change, waiting up to ``timeout``
    seconds (None: until there is one); ``None`` on timeout or once closed.
    ``poll()`` is ``next(timeout=0)``. ``for change in watch`` blocks between
    changes and ends when the watch is closed; ``async for`` does the same
    without blocking the event loop. ``close()`` (or ``with``) ends it; closing
    the database closes it. ``position``: the version the next commit delivered
    will have at least (so ``from_version=watch.position`` resumes exactly
    after what was delivered — but prefer ``last.version + 1``: changes of a
    commit may still be pending). ``overflows``: commits that did not fit the
    buffer and were (or will be) read back from the WAL.

    One consumer thread at a time; ``close()`` from any thread. Close a watch
    you no longer read (or use ``with``): until then the database keeps
    offering it every commit (O(1) each) and it holds up to ``buffer`` of them.
    """

    def __init__(self, kernel: Kernel, *, run: object = None, primitive: object = None, prefix: object = None,
                 from_version: object = None, buffer: object = DEFAULT_BUFFER):
        rid, tag, pre = _check_filters(run, primitive, prefix)
        if type(buffer) is not int or buffer < 1:
            raise InvalidArgument(f"buffer must be an int >= 1 (commits); got {buffer!r}")
        if from_version is not None:
            if type(from_version) is not int or from_version < 0:
                raise InvalidArgument(f"from_version must be an int >= 0 or None; got {from_version!r}")
            if not kernel.read_only and from_version > kernel.version + 1:
                raise InvalidArgument(f"from_version {from_version} is in the future: the last commit is "
                                      f"version {kernel.version} (use at most {kernel.version + 1})")
        kernel.check_open()
        self._kernel = kernel
        self._rid, self._tag, self._prefix = rid, tag, pre
        self._cap = buffer
        self._buf: deque[tuple[int, int, Writes]] = deque()
        self._pending: deque[Change] = deque()
        self._cond = threading.Condition()
        self._waiting = False
        self._closed = False
        self._read_only = kernel.read_only
        self._reader = kernel.commit_reader()
        self._read_lock = threading.Lock()  # held while the reader is in use; close() takes it to close it
        self.overflows = 0
        self._run_names: dict[bytes, str] = {}  # run id bytes -> its text form, decoded once
        try:
            if from_version is not None:
                start = max(from_version, 1)
                oldest = self._reader.oldest()
                if start < oldest or (oldest == 0 and start <= kernel.version):
                    raise HistoryUnavailable(f"from_version {start} is no longer in the WAL: the oldest version "
                                             f"still there is {oldest} (snapshots and history retention drop "
                                             f"older segments)")
            if self._read_only:
                if from_version is None:  # only what the writer commits from now on: skip to the WAL's end
                    start = kernel.version + 1
                    while batch := self._reader.read(start, limit=4096):
                        start = batch[-1][0] + 1
                self._next = start
            else:
                last = kernel.listen(self._on_commit)  # commits after `last` reach the buffer
                self._next = last + 1 if from_version is None else start
        except BaseException:
            self._reader.close()
            raise

    # --- the producer side: the commit listener (commit lock held) -------------------------------

    def _on_commit(self, version: int, ts_us: int, writes: Writes) -> None:
        buf = self._buf
        if len(buf) < self._cap:
            buf.append((version, ts_us, writes))
        else:
            self.overflows += 1  # read back from the WAL by the consumer: a gap, never a loss
        if self._waiting:
            with self._cond:
                self._cond.notify()

    # --- the consumer side ---------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The version of the next commit this watch will look at."""
        return self._next

    @property
    def closed(self) -> bool:
        return self._closed

    def _deliver(self, version: int, ts_us: int, writes: Writes) -> None:
        self._next = version + 1
        rid, tag, prefix = self._rid, self._tag, self._prefix
        ts: _dt.datetime | None = None
        names = self._run_names
        append = self._pending.append
        for key, value in writes:
            if len(key) < TAGGED_PREFIX_LEN or key[0] != NS_RUN:
                continue
            r = key[1:_TAG]
            if rid is not None and r != rid:
                continue
            if tag is not None and key[_TAG] != tag:
                continue
            if prefix is not None and not key.startswith(prefix, TAGGED_PREFIX_LEN):
                continue
            if _internal(key):
                continue
            if ts is None:
                ts = utc_from_us(ts_us)
            run = names.get(r)
            if run is None:
                if len(names) > 4096:
                    names.clear()
                run = names[r] = str(uuid.UUID(bytes=r))
            append(_decode(key, value, run, ts, version))

    def _step(self) -> bool:
        """Move the cursor over at least one commit if one is available; False if none is yet."""
        buf = self._buf
        nxt = self._next
        while buf and buf[0][0] < nxt:
            buf.popleft()  # a duplicate of what the WAL already gave
        if buf and buf[0][0] == nxt:
            # Settle up to the newest commit buffered *now*, and deliver no further: the listener may
            # append newer commits meanwhile, and those are not yet known durable (found by the
            # SIGKILL test: versions delivered past the settled one were lost by the crash).
            last = buf[-1][0]
            self._settle(last)
            while buf:  # every contiguous buffered commit up to `last`, in one step
                item = buf[0]
                if item[0] != self._next or item[0] > last:
                    break
                buf.popleft()
                self._deliver(*item)
            return True
        with self._read_lock:
            if self._closed:
                return False
            try:
                if self._read_only:
                    records = self._reader.read(nxt, limit=_READ_BATCH)
                else:
                    last = self._kernel.version
                    if last < nxt:
                        return False
                    upto = buf[0][0] - 1 if buf else last
                    self._settle(upto)
                    records = self._reader.read(nxt, upto=upto, limit=_READ_BATCH)
            except HistoryUnavailable as exc:
                raise HistoryUnavailable(f"the watch cannot read version {nxt} from the WAL ({exc}); it delivered "
                                         f"every change before it: resume with from_version={nxt} on a newer "
                                         f"base, or after a larger buffer") from None
        for record in records:
            self._deliver(*record)
        return bool(records)

    def _settle(self, version: int) -> None:
        """Wait until commits up to ``version`` survive what the durability mode promises to survive
        (strict: fsynced, group commit; off / batched: handed to the OS), so that no watch ever
        delivers a commit a crash can take back — and whose version a later commit could reuse."""
        if not self._read_only:
            wal = self._kernel.wal
            wal.wait(version)
            wal.write_through(version)

    def _ready(self) -> bool:
        return bool(self._buf) or (not self._read_only and self._kernel.version >= self._next)

    def next(self, timeout: float | None = None) -> Change | None:
        """The next matching change, waiting up to ``timeout`` seconds (None: no limit, 0: do not wait).

        Returns None on timeout or when the watch is (or gets) closed.
        :raises HistoryUnavailable: the versions it must deliver next were
            dropped from the WAL before it read them (the message names the
            version to resume from).
        :raises CorruptionError: a WAL record it reads is damaged.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = self._pending
        while True:
            if pending:
                return pending.popleft()
            if self._closed:
                return None
            if self._step():
                continue
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return None
            if self._read_only:
                wait = POLL_INTERVAL_S if wait is None else min(wait, POLL_INTERVAL_S)
            with self._cond:
                self._waiting = True
                try:
                    if not self._closed and not self._ready():
                        self._cond.wait(wait)
                finally:
                    self._waiting = False

    def poll(self) -> Change | None:
        """The next change if one is available now, else None. Never waits."""
        return self.next(timeout=0)

    def __iter__(self) -> Iterator[Change]:
        return self

    def __next__(self) -> Change:
        change = self.next()
        if change is None:
            raise StopIteration
        return change

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> Change:
        change = self.next(timeout=0)
        while change is None:
            if self._closed:
                raise StopAsyncIteration
            change = await asyncio.to_thread(self.next, 0.05)
        return change

    def close(self) -> None:
        """Stop the watch: iteration ends, ``next`` returns None. Idempotent; any thread."""
        if self._closed:
            return
        self._closed = True
        self._kernel.unlisten(self._on_commit)
        with self._cond:
            self._cond.notify_all()
        with self._read_lock:
            self._reader.close()
        self._buf.clear()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Watch {'closed' if self._closed else 'at version ' + str(self._next)}>"


def _check_filters(run: object, primitive: object, prefix: object) -> tuple[bytes | None, int | None, bytes | None]:
    """``(run id bytes, tag, prefix bytes)``, each None when not filtering. :raises InvalidArgument:"""
    rid = None
    if run is not None:
        try:
            rid = run_id_bytes(run)
        except RunNotFound:
            raise InvalidArgument(f"run must be a run id (str) or None; got {run!r:.80}") from None
    tag = None
    if primitive is not None:
        tag = _TAGS.get(primitive) if isinstance(primitive, str) else None
        if tag is None:
            raise InvalidArgument(f"primitive must be one of {', '.join(sorted(_TAGS))} or None; got {primitive!r}")
    pre = None
    if prefix is not None:
        if isinstance(prefix, str):
            pre = prefix.encode("utf-8")
        elif isinstance(prefix, bytes):
            pre = prefix
        else:
            raise InvalidArgument(f"prefix must be str, bytes or None; got {type(prefix).__name__}")
    return rid, tag, pre
