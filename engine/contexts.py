"""The contexts primitives run against outside a transaction: how each ``db.<primitive>`` call commits.

This module owns the autocommit side of the primitive ``Context`` protocol
(:class:`~inmem.primitives.context.Context`; a :class:`~inmem.txn.Transaction` is
the other side):

* :class:`_Autocommit` — ``db.kv``: each put or delete is its own commit on
  the database's fast path;
* :class:`_Locked` — one multi-step call (read, then write) of ``db.events``,
  ``db.state``, ``db.traces``, ``db.runs``, run whole under the commit lock by
  :meth:`Kernel.atomic <inmem.kernel.Kernel.atomic>`, so what it read still
  holds when it commits;
* :class:`_AutoPrimitive` — the proxy that routes each such call to
  ``Kernel.atomic`` (writes) or to a snapshot transaction (reads).

Each may be built with a tenant's :class:`~inmem.registry.TenantScope` in
place of the run registry (``db.tenant(id)``): its run checks, run -> key
prefix maps and run listings then see only that tenant's runs.

Invariant: a context's reads and writes reach storage only through the
kernel's interface (:class:`~inmem.kernel.Kernel`, :class:`~inmem.kernel.LockedView`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from .errors import DatabaseClosed, TransactionConflict
from .kernel import Kernel, LockedView
from .keys import in_range
from .primitives.events import Events
from .primitives.kv import KV
from .primitives.runs import Runs
from .primitives.state import StateMachines
from .primitives.traces import Traces
from .registry import RunRegistry, TenantScope
from .txn import Transaction

__all__ = ["DIRECT", "OPTIMISTIC", "PRIMITIVES", "READS", "atomic_call"]


class _Locked:
    """The Context of one autocommit primitive call run inside :meth:`Kernel.atomic`.

    Reads see the latest state plus this call's own writes; writes are
    collected and committed together when the call returns. Used only while
    the commit lock is held, so it takes no lock itself.
    """

    __slots__ = ("_store", "_get", "prefix_maps", "check_run", "_registry", "writes", "runs", "version", "_merging",
                 "now_us")

    def __init__(self, view: LockedView, kernel: Kernel, registry: RunRegistry | TenantScope | None = None):
        if registry is None:
            registry = kernel.registry
        self.now_us = kernel.clock
        #: The commit version this call's writes will get (nothing else commits meanwhile).
        self.version = view.version + 1
        self._store = view
        self._get = view.get
        self._registry = registry
        self.prefix_maps = registry.prefix_maps
        self.check_run = registry.check
        self.writes: dict[bytes, bytes | None] = {}
        self.runs: set[str] = set()
        # key -> (state, ops, value written) of this call's merges; continued while that value stands
        self._merging: dict[bytes, tuple[Any, list[Any], bytes | None]] = {}

    def commit(self, view: LockedView) -> None:
        """Commit what this call wrote (nothing if it wrote nothing) as one record."""
        if self.writes:
            view.commit(list(self.writes.items()), self.runs)

    def lookup(self, key: bytes) -> tuple[int, bytes] | None:
        if key in self.writes:
            value = self.writes[key]
            return None if value is None else (self.version, value)
        return self._get(key)

    def write(self, run: str, key: bytes, value: bytes | None) -> None:
        self.check_run(run, write=True)
        self.writes[key] = value
        self.runs.add(run)

    def write_batch(self, run: str, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        for key, value in items:
            self.write(run, key, value)

    def delete(self, run: str, key: bytes) -> bool:
        if self.lookup(key) is None:
            self.check_run(run, write=True)
            return False
        self.write(run, key, None)
        return True

    def merge(self, run: str, key: bytes, operator: Any, op: Any) -> None:
        """Apply ``op`` now: nothing else commits while the lock is held, so the latest value is the base."""
        self.check_run(run, write=True)
        pending = self._merging.get(key)
        if pending is None or self.writes.get(key, b"") is not pending[2]:
            entry = self.lookup(key)
            state, ops = operator.start(None if entry is None else entry[1]), []
        else:
            state, ops = pending[0], pending[1]
        state = operator.step(state, op)
        ops = [*ops, op]
        value = operator.finish(state, ops)
        self.writes[key] = value
        self.runs.add(run)
        self._merging[key] = (state, ops, value)

    def _overlay(self, items: list[tuple[bytes, Any]], lo: bytes, hi: bytes | None, own: Callable[[bytes], Any]
                 ) -> list[tuple[bytes, Any]]:
        mine = [(k, v) for k, v in self.writes.items() if in_range(k, lo, hi)]
        if not mine:
            return items
        merged = dict(items)
        for key, value in mine:
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = own(value)
        return sorted(merged.items())

    def scan(self, lo: bytes, hi: bytes | None) -> list[tuple[bytes, bytes]]:
        return self._overlay(self._store.scan_values(lo, hi), lo, hi, lambda v: v)

    def scan_entries(self, lo: bytes, hi: bytes | None) -> list[tuple[bytes, int]]:
        return self._overlay([(k, e[0]) for k, e in self._store.scan(lo, hi)], lo, hi, lambda v: self.version)

    def last(self, lo: bytes, hi: bytes | None) -> tuple[bytes, bytes] | None:
        if self.has_writes(lo, hi):
            items = self.scan(lo, hi)
            return items[-1] if items else None
        found = self._store.last(lo, hi)
        return None if found is None else (found[0], found[1][1])

    def count(self, lo: bytes, hi: bytes | None) -> int:
        if self.has_writes(lo, hi):
            return len(self.scan(lo, hi))
        return self._store.count(lo, hi)

    def run_ids(self, status: str | None = None) -> list[str]:
        return self._registry.ids(status)

    def note_range(self, lo: bytes, hi: bytes | None) -> None:
        pass  # nothing else commits while this call holds the commit lock

    #: Reads see the latest state (nothing else commits meanwhile).
    at = None

    def has_writes(self, lo: bytes, hi: bytes | None) -> bool:
        return any(in_range(k, lo, hi) for k in self.writes)


#: Read-only methods of each autocommit primitive: run on a snapshot, not under the commit lock.
READS = {
    "events": frozenset({"read", "tail", "count", "verify"}),
    "state": frozenset({"get", "names"}),
    "traces": frozenset({"get", "query", "children", "tree"}),
    "runs": frozenset({"get", "ids", "list", "children"}),
    "vectors": frozenset({"get", "count", "collections", "search", "info", "ids", "embed"}),
    "docs": frozenset({"get", "names", "definition", "get_model"}),
    "graph": frozenset({"get_node", "nodes", "edges", "neighbors", "traverse", "shortest_path", "has_cycle", "search",
                         "check"}),
}

#: Writing methods that need no lock around their reads: they write one key, and what they read
#: before it cannot change (a vector collection's record is immutable and never deleted; the run
#: is checked again under the commit lock). They run on the ``db.kv`` context: one commit each, and
#: an embedder (which may call a model) never runs inside the commit lock.
DIRECT = {
    "vectors": frozenset({"upsert", "add_text"}),
}

#: Writing methods that may call an embedder (a model) on the way: each runs as an optimistic
#: transaction of its own, retried on conflict, so the embedder never runs inside the commit lock.
OPTIMISTIC = {
    "graph": frozenset({"add_node", "update_node"}),
}

#: Primitives a transaction offers, made on first use (``tx.kv``, ``tx.events``, ...).
PRIMITIVES: dict[str, Callable[[Any], Any]] = {
    "kv": KV, "events": Events, "state": StateMachines, "traces": Traces, "runs": Runs,
}


def atomic_call(kernel: Kernel, fn: Callable[[Any], Any], registry: RunRegistry | TenantScope | None = None) -> Any:
    """Run ``fn(ctx)``, one multi-step primitive call (read, then write), as one commit under the commit lock.

    ``registry``: the runs the call may name (a tenant's scope; default every run)."""

    def step(view: LockedView) -> Any:
        ctx = _Locked(view, kernel, registry)
        result = fn(ctx)
        ctx.commit(view)
        return result

    return kernel.atomic(step)


_atomic = atomic_call


#: Attempts of an optimistic autocommit call before its last conflict is raised.
OPTIMISTIC_ATTEMPTS = 100


def _optimistic(kernel: Kernel, fn: Callable[[Any], Any], registry: RunRegistry | TenantScope | None = None) -> Any:
    """Run one primitive call as an optimistic transaction of its own, retried on conflict: for calls
    that may run slow code of the caller's (an embedder) — it runs outside the commit lock, and only
    the validation and the commit take it. ``fn`` must be safe to run again (primitive calls are)."""
    for attempt in range(OPTIMISTIC_ATTEMPTS):
        tx = Transaction(kernel, PRIMITIVES, registry)
        try:
            result = fn(tx)
            tx.commit()
            return result
        except TransactionConflict:
            if attempt == OPTIMISTIC_ATTEMPTS - 1:
                raise
        finally:
            if not tx.finished:
                tx.rollback()
    raise AssertionError("unreachable")  # pragma: no cover


def _snapshot_read(kernel: Kernel, fn: Callable[[Any], Any], registry: RunRegistry | TenantScope | None = None) -> Any:
    """Run a read-only primitive call on a snapshot: consistent, and never blocks writers."""
    tx = Transaction(kernel, PRIMITIVES, registry)
    try:
        return fn(tx)
    finally:
        tx.rollback()


class _AutoPrimitive:
    """``db.events`` & co.: each call of the wrapped primitive is one atomic autocommit step.

    Writing methods run in :meth:`Kernel.atomic` (one commit, under the
    commit lock); read-only ones on a snapshot transaction. The wrapped
    class's docstrings carry over (``help(db.events.append)``).
    """

    def __init__(self, kernel: Kernel, cls: type, reads: frozenset[str],
                 factory: Callable[[Any], Any] | None = None, direct: frozenset[str] = frozenset(),
                 autocommit: Any = None, registry: RunRegistry | TenantScope | None = None,
                 optimistic: frozenset[str] = frozenset()):
        self._kernel = kernel
        self._registry = registry  # the runs its calls may name (a tenant's scope; None: every run)
        self._optimistic = optimistic  # methods run as a retried transaction (they may call an embedder)
        self._direct = direct  # methods that write one key after reads that cannot change: no lock held
        self._autocommit = autocommit
        self._cls = cls
        self._make = factory if factory is not None else cls  # ``factory(ctx)``: the primitive on a context
        self._reads = reads
        self.__doc__ = cls.__doc__

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._cls, name)
        if name.startswith("_") or not callable(method):
            raise AttributeError(name)
        make, kernel, registry = self._make, self._kernel, self._registry
        if name in self._direct:
            bound = getattr(make(self._autocommit), name)  # one object: the autocommit context is fixed

            def direct(*args: Any, **kwargs: Any) -> Any:
                return bound(*args, **kwargs)

            functools.update_wrapper(direct, method)
            setattr(self, name, direct)
            return direct
        run_in = _snapshot_read if name in self._reads else _optimistic if name in self._optimistic else _atomic

        def call(*args: Any, **kwargs: Any) -> Any:
            return run_in(kernel, lambda ctx: method(make(ctx), *args, **kwargs), registry)

        functools.update_wrapper(call, method)
        setattr(self, name, call)  # cached: later calls skip __getattr__
        return call

    def __dir__(self) -> list[str]:
        return [n for n in dir(self._cls) if not n.startswith("_")]

    def __repr__(self) -> str:
        return f"<inmem {self._cls.__name__} of {self._kernel.path!r}>"


class _Autocommit:
    """The :class:`~inmem.primitives.context.Context` of ``db.kv``: every write is its own commit."""

    __slots__ = ("_kernel", "_registry", "lookup", "prefix_maps", "check_run", "_commit", "now_us", "write",
                 "__weakref__")

    def __init__(self, kernel: Kernel, registry: RunRegistry | TenantScope | None = None):
        if registry is None:  # else a tenant's scope: only its runs exist
            registry = kernel.registry
        self._kernel = kernel
        self._registry = registry
        self.now_us = kernel.clock
        self.lookup = kernel.get
        self.prefix_maps = registry.prefix_maps
        self.check_run = registry.check
        self._commit = kernel.commit
        #: ``write(run, key, value)``: one write as its own commit, bound straight to the kernel (the
        #: ``kv.put`` hot path: one call, not two; 5-8 % of a put in an alternating A/B)
        self.write = kernel.commit_one

    def closed(self) -> None:
        """The database closed: point reads raise from now on."""
        path = self._kernel.path

        def lookup(key: bytes) -> None:
            raise DatabaseClosed(f"database {path} is closed")

        self.lookup = lookup

    def write_batch(self, run: str, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        self._commit(tuple(items), (run,))

    def delete(self, run: str, key: bytes) -> bool:
        check_run = self.check_run

        def delete(view: LockedView) -> bool:
            if view.get(key) is None:
                check_run(run, write=True)
                return False
            view.commit(((key, None),), (run,))
            return True

        return self._kernel.atomic(delete)  # type: ignore[no-any-return]

    def scan(self, lo: bytes, hi: bytes | None) -> list[tuple[bytes, bytes]]:
        return self._kernel.scan(lo, hi)

    def merge(self, run: str, key: bytes, operator: Any, op: Any) -> None:
        """One blind operation as its own commit, applied under the commit lock."""
        kernel, registry = self._kernel, self._registry

        def step(view: LockedView) -> None:
            ctx = _Locked(view, kernel, registry)
            ctx.merge(run, key, operator, op)
            ctx.commit(view)

        kernel.atomic(step)
