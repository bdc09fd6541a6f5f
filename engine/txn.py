"""Optimistic transactions: a snapshot, a read set, scanned ranges and a buffered write set.

This module owns one transaction's bookkeeping and the OCC validation rule;
the kernel (:mod:`inmem.kernel`) owns the commit critical section that runs
it and the read point the transaction reads at. A
:class:`Transaction` is a primitive :class:`~inmem.primitives.context.Context`,
so ``tx.kv`` is the same KV class as ``db.kv``, reading and writing through
the transaction instead of committing each call.

Semantics (SPEC.md, "Transactions"):

* **Snapshot**: begin takes the latest commit version ``B``; every read sees
  the committed state as of ``B`` (old versions come from
  :mod:`inmem.mvcc`), plus the transaction's own writes.
* **Read set / ranges**: every key read (found or not) and every key range
  scanned is recorded. Writing to a run also reads its run record, so a
  concurrent ``end_run`` is a conflict. A run created after ``B`` is not in
  the snapshot: naming it raises ``TransactionConflict`` at once. Listing runs
  is a predicate read: validation also fails if a run was created or ended
  after ``B`` (no phantom runs).
* **Blind updates** (:meth:`Transaction.merge`, a primitive's merge
  operator): an operation on a key recorded without reading it — checked at
  once against the snapshot plus own writes, applied again at commit to the
  latest value in commit order. Such a key joins neither the read set nor the
  write-write check unless the transaction also reads it (then the read is
  validated as usual).
* **Validation** (optimistic, backward, after Kung and Robinson 1981): at
  commit, if any key in the read set or the write set, or any key inside a
  scanned range (an insert or delete counts: no phantoms), was committed after
  ``B``, the transaction conflicts and writes nothing. Otherwise its writes
  commit as one WAL record at the next commit version. Every committed
  history is then equivalent to the serial one in commit-version order
  (serializable; no lost update, no write skew). Read-only transactions skip
  validation: they are serialised at ``B``.

A transaction belongs to one thread. Invariant: a finished transaction
(committed, rolled back or failed) accepts no further call.
"""

from __future__ import annotations

import random
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .errors import InvalidArgument, InvalidValue, TransactionClosed, TransactionConflict
from .keys import (TAG_DOC, TAG_EVENT, TAG_EXPIRY, TAG_GRAPH, TAG_KV, TAG_RUN, TAG_STATE, TAG_TRACE, TAG_VECTOR,
                   in_range, run_prefix, split_key)
from .kernel import Entry, Kernel, ReadPoint, Resolver
from .registry import RunRegistry, TenantScope, run_record_key

__all__ = ["Transaction", "transact"]

T = TypeVar("T")

_PRIMITIVE = {TAG_RUN: "run", TAG_KV: "kv", TAG_EVENT: "events", TAG_STATE: "state", TAG_TRACE: "traces",
              TAG_VECTOR: "vectors", TAG_DOC: "docs", TAG_GRAPH: "graph", TAG_EXPIRY: "expiry"}
_OWN = -1  # a merge's base is this transaction's own earlier write, not a committed entry


class _Merge:
    """One key's blind operations in a transaction: the operator, the version of the committed entry the
    state was built on (``_OWN``: an own write), the state after every op, and the ops in order."""

    __slots__ = ("operator", "base", "state", "ops")

    def __init__(self, operator: Any, base: int, state: Any, ops: list[Any]):
        self.operator = operator
        self.base = base
        self.state = state
        self.ops = ops

    def value(self) -> bytes | None:
        return self.operator.finish(self.state, self.ops)  # type: ignore[no-any-return]


def _abandoned(kernel: Kernel, point: ReadPoint) -> None:
    """Finaliser of a transaction dropped unfinished: queue its read point for release (takes no lock)."""
    warnings.warn(
        "an inmem transaction was garbage-collected without commit() or rollback(); "
        "its writes are discarded (use `with db.transaction() as tx:` or db.transact)",
        ResourceWarning,
        stacklevel=2,
    )
    kernel.abandon(point)


class Transaction:
    """One optimistic transaction. Create with ``db.transaction()`` or ``db.transact(fn)``.

    Use as a context manager (commit on normal exit, roll back on an
    exception, which propagates) or call :meth:`commit` / :meth:`rollback`.
    Primitives hang on it as on the database: ``tx.kv``.
    """

    def __init__(self, kernel: Kernel, primitives: dict[str, Callable[[Transaction], Any]] | None = None,
                 registry: RunRegistry | TenantScope | None = None):
        # ``registry``: the runs this transaction may name (a tenant's scope; default every run)
        point = kernel.open_read_point()
        self._kernel = kernel
        #: ``now_us() -> int``: the database's clock (Unix µs); time to live is judged by it at each read.
        self.now_us = kernel.clock
        self._read_at = kernel.read_at
        self._registry = kernel.registry if registry is None else registry
        self._begin = point.version
        self._point = point
        # A transaction dropped without commit or rollback must not pin old versions for ever.
        # Its finaliser may run inside any allocation (even under the commit lock), so it only
        # queues the read point; the next commit or transaction releases it.
        self._finalizer = weakref.finalize(self, _abandoned, kernel, point)
        self._reads: set[bytes] = set()
        self._ranges: list[tuple[bytes, bytes | None]] = []
        self._writes: dict[bytes, bytes | None] = {}
        self._merges: dict[bytes, _Merge] = {}
        self._runs: set[str] = set()
        #: Set by a run listing: validation then also checks that no run was created or ended since.
        self._listed_runs = False
        self._prefix_maps: dict[int, tuple[dict[str, bytes], dict[str, bytes]]] = {}
        self._finished = False
        self.commit_version: int | None = None
        # primitive classes by attribute name (kv, events, ...): they sit above this layer, so the
        # database hands them in, and each is made on first use
        self._primitives = primitives or {}

    def __getattr__(self, name: str) -> Any:
        factory = self.__dict__.get("_primitives", {}).get(name)
        if factory is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        primitive = factory(self)
        setattr(self, name, primitive)
        return primitive

    # --- facts -----------------------------------------------------------------------------

    @property
    def begin_version(self) -> int:
        """The commit version of this transaction's snapshot."""
        return self._begin

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def read_only(self) -> bool:
        """True while nothing has been written (such a transaction never conflicts)."""
        return not self._writes and not self._merges

    def __repr__(self) -> str:
        state = "finished" if self._finished else "active"
        return f"<inmem.Transaction at version {self._begin}, {state}, {len(self._writes) + len(self._merges)} writes>"

    # --- the primitive Context -------------------------------------------------------------

    def _check(self) -> None:
        if self._finished:
            raise TransactionClosed("the transaction has finished (committed or rolled back); start a new one")

    def lookup(self, key: bytes) -> tuple[int, bytes] | None:
        """Entry at the snapshot, own writes first; records the read."""
        if self._finished:
            self._check()
        if key in self._writes:
            value = self._writes[key]
            return None if value is None else (0, value)
        self._reads.add(key)
        if self._merges and key in self._merges:  # read after blind ops: now a validated read as well
            value = self._merges[key].value()
            return None if value is None else (0, value)
        return self._read_at(key, self._begin)

    def prefix_maps(self, tag: int) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """This transaction's own maps run id -> key prefix of ``tag`` (all runs, runs it may write).

        Not the registry's live maps, which would show runs created after the
        snapshot: they start empty and :meth:`check_run` fills them with each
        run it has checked, so a primitive checks a run once per transaction.
        """
        maps = self._prefix_maps.get(tag)
        if maps is None:
            maps = self._prefix_maps[tag] = ({}, {})
        return maps

    def check_run(self, run: object, *, write: bool) -> bytes:
        """The run's 16-byte id, if it exists in this transaction's snapshot.

        :raises RunNotFound: / :raises RunClosed: as ``RunRegistry.check``.
        :raises TransactionConflict: the run was created after the snapshot
            (the snapshot is too old to see it; retrying sees it).
        """
        rid = self._registry.check(run, write=write)
        if not self._registry.visible_at(run, self._begin):  # type: ignore[arg-type]
            raise TransactionConflict(
                f"transaction conflict on run {run}: it was created after this transaction's snapshot "
                f"at version {self._begin}; retry the transaction (db.transact does) to see it",
                run=run, key=None, begin_version=self._begin,
                conflict_version=self._registry.created_version(run),  # type: ignore[arg-type]
            )
        # A run active now that ends before commit is caught by validation: writing reads its record.
        for tag, (every, writable) in self._prefix_maps.items():
            prefix = run_prefix(rid, tag)
            every[run] = prefix  # type: ignore[index]
            if write:
                writable[run] = prefix  # type: ignore[index]
        return rid

    def _writing(self, run: str) -> None:
        if self._finished:
            self._check()
        if run not in self._runs:
            rid = self.check_run(run, write=True)
            self._reads.add(run_record_key(rid))  # a concurrent end_run must conflict
            self._runs.add(run)

    def write(self, run: str, key: bytes, value: bytes | None) -> None:
        self._writing(run)
        self._writes[key] = value
        if self._merges:
            self._merges.pop(key, None)  # a plain write replaces the blind ops before it

    def write_batch(self, run: str, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        """:meth:`write` each ``(key, value)`` of ``items`` (a transaction commits them all or none anyway)."""
        for key, value in items:
            self.write(run, key, value)

    def merge(self, run: str, key: bytes, operator: Any, op: Any) -> None:
        """Record blind operation ``op`` on ``key`` (see :class:`~inmem.primitives.context.Context`).

        Checked now on this transaction's view of the key (the snapshot entry,
        read without joining the read set, or its own write); applied again at
        commit to the latest entry if another commit changed the key after the
        snapshot. :raises: whatever ``operator.step`` raises (nothing recorded).
        """
        self._writing(run)
        m = self._merges.get(key)
        if m is not None:
            m.state = operator.step(m.state, op)
            m.operator = operator
            m.ops.append(op)
            return
        if key in self._writes:  # on top of an own write: no committed base to re-check
            base, value = _OWN, self._writes[key]
        else:
            entry = self._read_at(key, self._begin)
            base, value = (0, None) if entry is None else entry
        state = operator.step(operator.start(value), op)
        self._writes.pop(key, None)
        self._merges[key] = _Merge(operator, base, state, [op])

    def _own_items(self, lo: bytes, hi: bytes | None) -> list[tuple[bytes, bytes | None]]:
        """This transaction's writes and merged values in ``[lo, hi)`` (None: deleted). O(writes + merges)."""
        mine = [(k, v) for k, v in self._writes.items() if in_range(k, lo, hi)]
        if self._merges:
            mine += [(k, m.value()) for k, m in self._merges.items() if in_range(k, lo, hi)]
        return mine

    def delete(self, run: str, key: bytes) -> bool:
        self._writing(run)
        if self.lookup(key) is None:
            return False
        self._writes[key] = None
        return True

    def scan(self, lo: bytes, hi: bytes | None) -> list[tuple[bytes, bytes]]:
        """``(key, value)`` in ``[lo, hi)`` at the snapshot with own writes applied; records the range."""
        self._check()
        items = self._kernel.scan_at(lo, hi, self._begin)
        self._ranges.append((lo, hi))
        if not self._writes and not self._merges:
            return items
        mine = self._own_items(lo, hi)
        if not mine:
            return items
        merged = dict(items)
        for key, value in mine:
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return sorted(merged.items())

    def last(self, lo: bytes, hi: bytes | None) -> tuple[bytes, bytes] | None:
        """The greatest ``(key, value)`` in ``[lo, hi)`` at the snapshot with own writes; records the range."""
        self._check()
        found = self._kernel.last_at(lo, hi, self._begin)
        self._ranges.append((lo, hi))
        best = None if found is None else (found[0], found[1][1])
        for key, value in self._own_items(lo, hi):
            if value is None:
                if best is not None and best[0] == key:  # deleted by us: look again without it
                    items = self.scan(lo, hi)
                    return items[-1] if items else None
            elif best is None or key >= best[0]:
                best = (key, value)
        return best

    def count(self, lo: bytes, hi: bytes | None) -> int:
        """Keys in ``[lo, hi)`` at the snapshot with own writes; records the range. O(k)."""
        return len(self.scan(lo, hi))

    def scan_entries(self, lo: bytes, hi: bytes | None) -> list[tuple[bytes, int]]:
        """``(key, commit version)`` in ``[lo, hi)`` at the snapshot (own writes as version 0)."""
        self._check()
        found = dict((k, e[0]) for k, e in self._kernel.scan_at(lo, hi, self._begin, entries=True))
        self._ranges.append((lo, hi))
        for key, value in self._own_items(lo, hi):
            if value is None:
                found.pop(key, None)
            else:
                found[key] = 0
        return sorted(found.items())

    @property
    def at(self) -> int:
        """The commit version this transaction reads at (its snapshot); the primitive Context's name."""
        return self._begin

    def has_writes(self, lo: bytes, hi: bytes | None) -> bool:
        """Whether this transaction has written (or merged into) any key in ``[lo, hi)``. O(writes)."""
        return any(in_range(k, lo, hi) for k in self._writes) or any(in_range(k, lo, hi) for k in self._merges)

    def note_range(self, lo: bytes, hi: bytes | None) -> None:
        """Record ``[lo, hi)`` as scanned (validated at commit) without reading it."""
        self._check()
        self._ranges.append((lo, hi))

    def run_ids(self, status: str | None = None) -> list[str]:
        """Ids of the runs in the snapshot that may have ``status`` there, in start order.

        Records the listing as a predicate read: validation fails if a run
        was created or ended after the snapshot (no phantom runs). The caller
        checks each run's status against the record it reads.
        """
        self._check()
        self._listed_runs = True
        registry, begin = self._registry, self._begin
        ids = registry.ids(status, begin)
        if registry.changed_after(begin):
            ids = [r for r in ids if registry.visible_at(r, begin)]
        return ids

    # --- finishing -----------------------------------------------------------------------------

    def commit(self) -> None:
        """Validate and commit; afterwards ``commit_version`` is set (``None`` if read-only).

        :raises TransactionConflict: something this transaction read, scanned
            or wrote was committed by another after its snapshot; nothing was
            written, and the transaction is finished (retry it from the start,
            or use ``db.transact``).
        :raises RunClosed: a run it writes to has ended meanwhile.
        :raises TransactionClosed: the transaction has already finished.
        :raises DatabasePoisoned: / :raises DatabaseClosed: as for any write.
        """
        self._check()
        self._finished = True
        # detach first: the finaliser and this call must not both release the read point
        point = self._point if self._finalizer.detach() is not None else None
        if self._writes or self._merges:
            merges = [(key, self._resolver(m)) for key, m in self._merges.items()]
            self.commit_version = self._kernel.commit(list(self._writes.items()), self._runs,
                                                      validate=self._validate, release=point, merges=merges)
        elif point is not None:
            self._kernel.close_read_point(point)

    def _resolver(self, m: _Merge) -> Resolver:
        """The value of merged key at commit: the state built at call time if the committed entry is the
        one it was built on (or an own write), else every op again on the latest entry, in order."""
        begin = self._begin

        def resolve(entry: Entry | None) -> bytes | None:
            if m.base == _OWN or (0 if entry is None else entry[0]) == m.base:
                return m.value()
            operator = m.operator
            try:
                state = operator.start(None if entry is None else entry[1])
                for op in m.ops:
                    state = operator.step(state, op)
                return operator.finish(state, m.ops)  # type: ignore[no-any-return]
            except (InvalidArgument, InvalidValue) as exc:
                raise type(exc)(f"{exc} (applied at commit to version {entry[0] if entry else 0}: another "
                                f"commit changed it after this transaction's snapshot at version {begin}; "
                                "nothing was written)") from exc

        return resolve

    def _validate(self, kernel: Kernel) -> None:
        """The OCC check, run under the commit lock.

        :raises TransactionConflict: a key read or written, or a key in a scanned
            range, was committed after ``tx.begin_version``; or the transaction
            listed runs and a run was created or ended after it.
        Complexity: O(reads + writes + keys in scanned ranges).
        """
        begin = self._begin
        last_write: Callable[[bytes], int] = kernel.last_write
        for key in self._writes:
            version = last_write(key)
            if version > begin:
                raise _conflict(self, key, version, "a write to a key this transaction writes")
        for key, m in self._merges.items():  # blind: only a merge on top of an own write is checked
            if m.base == _OWN:
                version = last_write(key)
                if version > begin:
                    raise _conflict(self, key, version, "a write to a key this transaction writes")
        for key in self._reads:
            version = last_write(key)
            if version > begin:
                raise _conflict(self, key, version, "a write to a key this transaction read")
        for lo, hi in self._ranges:
            hit = kernel.first_write_after(lo, hi, begin)
            if hit is not None:
                raise _conflict(self, hit[0], hit[1], "an insert, change or delete inside a range this transaction scanned")
        if self._listed_runs:
            version = self._registry.changed_after(begin)
            if version:
                raise TransactionConflict(
                    f"transaction conflict on the run index: a run was created or ended at version {version}, "
                    f"after this transaction's snapshot at version {begin}, and the transaction listed runs",
                    run=None, key=None, begin_version=begin, conflict_version=version,
                )

    def rollback(self) -> None:
        """Discard every write. :raises TransactionClosed: already finished."""
        self._check()
        self._finished = True
        self._writes.clear()
        self._merges.clear()
        if self._finalizer.detach() is not None:
            self._kernel.close_read_point(self._point)

    def __enter__(self) -> Transaction:
        self._check()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._finished:
            return
        if exc_type is None:
            self.commit()
        else:
            self.rollback()


def _conflict(tx: Transaction, key: bytes, version: int, what: str) -> TransactionConflict:
    try:
        rid, tag, user = split_key(key)
        run = str(uuid.UUID(bytes=rid))
        primitive = _PRIMITIVE.get(tag, f"tag {tag}")
        ukey = user.decode("utf-8", "replace")
    except ValueError:
        run, primitive, ukey = None, "system", key.hex()
    where = f"run {run}" if run else "the database"
    shown = f"{primitive} key {ukey!r}" if primitive != "run" else "the run record (the run ended or changed)"
    return TransactionConflict(
        f"transaction conflict on {shown} in {where}: {what} was committed at version {version}, "
        f"after this transaction's snapshot at version {tx.begin_version}",
        run=run,
        key=ukey if primitive != "run" else None,
        begin_version=tx.begin_version,
        conflict_version=version,
    )


def transact(begin: Callable[[], Transaction], fn: Callable[[Transaction], T], retries: int) -> T:
    """Run ``fn(tx)`` in a fresh transaction from ``begin()`` and commit it, retrying on conflict.

    After each ``TransactionConflict`` the call sleeps a full-jitter exponential backoff (a random
    wait up to 1 ms, 2 ms, 4 ms ... capped at 100 ms; AWS Architecture Blog, "Exponential Backoff And
    Jitter", 2015) and starts again, at most ``retries`` times; then the last conflict is raised.
    Any other exception rolls the transaction back and propagates at once.

    :raises InvalidArgument: ``retries`` is not an int >= 0.
    """
    if type(retries) is not int or retries < 0:
        raise InvalidArgument(f"retries must be an int >= 0; got {retries!r}")
    attempt = 0
    while True:
        tx = begin()
        try:
            result = fn(tx)
            tx.commit()
            return result
        except TransactionConflict:
            if attempt >= retries:
                raise
        finally:
            if not tx.finished:
                tx.rollback()
        time.sleep(random.uniform(0, min(0.1, 0.001 * (1 << attempt))))
        attempt += 1

