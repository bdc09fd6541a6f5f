"""The contexts primitives run against outside a transaction: how each ``db.<primitive>`` call commits.

This module owns the autocommit side of the primitive ``Context`` protocol
(:class:`~engine.primitives.kv.Context`; a :class:`~engine.txn.Transaction` is
the other side):

* :class:`_Autocommit` — ``db.kv``: each put or delete is its own commit on
  the database's fast path;
* :class:`_Locked` — one multi-step call (read, then write) of ``db.events``,
  ``db.state``, ``db.traces``, ``db.runs``, run whole under the commit lock by
  ``Database._atomic``, so what it read still holds when it commits;
* :class:`_AutoPrimitive` — the proxy that routes each such call to
  ``Database._atomic`` (writes) or ``Database._snapshot_read`` (reads).

Invariant: a context's reads and writes reach the store only through the
database's commit path; nothing here takes the commit lock except
``_Autocommit``'s own delete and scan.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

from .errors import DatabaseClosed
from .primitives.events import Events
from .primitives.kv import KV
from .primitives.runs import Runs
from .primitives.state import StateMachines
from .primitives.traces import Traces

#: The database handle these contexts serve (``engine.database.Database``, which sits above
#: this module and imports it; named here only in annotations).
Database = Any

__all__ = ["PRIMITIVES", "READS"]


def _abandoned(queue: list[int], token: int) -> None:
    """weakref finaliser of an unfinished transaction: queue its snapshot for release (no locks here)."""
    warnings.warn(
        "an inmem transaction was garbage-collected without commit() or rollback(); "
        "its writes are discarded (use `with db.transaction() as tx:` or db.transact)",
        ResourceWarning,
        stacklevel=2,
    )
    queue.append(token)


class _Locked:
    """The Context of one autocommit primitive call run inside :meth:`Database._atomic`.

    Reads see the latest state plus this call's own writes; writes are
    collected and committed together when the call returns. Used only while
    the commit lock is held, so it takes no lock itself.
    """

    __slots__ = ("_store", "_get", "prefix_maps", "check_run", "_registry", "writes", "runs", "version")

    def __init__(self, db: Database):
        #: The commit version this call's writes will get (nothing else commits meanwhile).
        self.version = db._version + 1
        self._store = db._store
        self._get = db._store.get
        self._registry = db._registry
        self.prefix_maps = db._registry.prefix_maps
        self.check_run = db._registry.check
        self.writes: dict[bytes, bytes | None] = {}
        self.runs: set[str] = set()

    def lookup(self, key: bytes) -> tuple[int, bytes] | None:
        if key in self.writes:
            value = self.writes[key]
            return None if value is None else (self.version, value)
        return self._get(key)

    def write(self, run: str, key: bytes, value: bytes | None) -> None:
        self.check_run(run, write=True)
        self.writes[key] = value
        self.runs.add(run)

    def delete(self, run: str, key: bytes) -> bool:
        if self.lookup(key) is None:
            self.check_run(run, write=True)
            return False
        self.write(run, key, None)
        return True

    def _overlay(self, items: list[tuple[bytes, Any]], lo: bytes, hi: bytes | None, own: Callable[[bytes], Any]
                 ) -> list[tuple[bytes, Any]]:
        mine = [(k, v) for k, v in self.writes.items() if k >= lo and (hi is None or k < hi)]
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
        if any(k >= lo and (hi is None or k < hi) for k in self.writes):
            items = self.scan(lo, hi)
            return items[-1] if items else None
        found = self._store.last(lo, hi)
        return None if found is None else (found[0], found[1][1])

    def count(self, lo: bytes, hi: bytes | None) -> int:
        if any(k >= lo and (hi is None or k < hi) for k in self.writes):
            return len(self.scan(lo, hi))
        return self._store.count(lo, hi)

    def run_ids(self, status: str | None = None) -> list[str]:
        return self._registry.ids(status)


#: Read-only methods of each autocommit primitive: run on a snapshot, not under the commit lock.
READS = {
    "events": frozenset({"read", "tail", "count", "verify"}),
    "state": frozenset({"get", "names"}),
    "traces": frozenset({"get", "query", "children", "tree"}),
    "runs": frozenset({"get", "list", "children"}),
}

#: Primitives a transaction offers, made on first use (``tx.kv``, ``tx.events``, ...).
PRIMITIVES: dict[str, Callable[[Any], Any]] = {
    "kv": KV, "events": Events, "state": StateMachines, "traces": Traces, "runs": Runs,
}


class _AutoPrimitive:
    """``db.events`` & co.: each call of the wrapped primitive is one atomic autocommit step.

    Writing methods run in :meth:`Database._atomic` (one commit, under the
    commit lock); read-only ones on a snapshot transaction. The wrapped
    class's docstrings carry over (``help(db.events.append)``).
    """

    def __init__(self, db: Database, cls: type, reads: frozenset[str]):
        self._db = db
        self._cls = cls
        self._reads = reads
        self.__doc__ = cls.__doc__

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._cls, name)
        if name.startswith("_") or not callable(method):
            raise AttributeError(name)
        cls, db = self._cls, self._db
        run_in = db._snapshot_read if name in self._reads else db._atomic

        def call(*args: Any, **kwargs: Any) -> Any:
            return run_in(lambda ctx: method(cls(ctx), *args, **kwargs))

        functools.update_wrapper(call, method)
        setattr(self, name, call)  # cached: later calls skip __getattr__
        return call

    def __dir__(self) -> list[str]:
        return [n for n in dir(self._cls) if not n.startswith("_")]

    def __repr__(self) -> str:
        return f"<inmem {self._cls.__name__} of {self._db!r}>"


class _Autocommit:
    """The :class:`~engine.primitives.kv.Context` of ``db.kv``: every write is its own commit."""

    __slots__ = ("_db", "lookup", "prefix_maps", "check_run")

    def __init__(self, db: Database):
        self._db = db
        self.lookup = db._store.get
        self.prefix_maps = db._registry.prefix_maps
        self.check_run = db._registry.check

    def closed(self) -> None:
        """The database closed: point reads raise from now on."""
        path = self._db._path

        def lookup(key: bytes) -> None:
            raise DatabaseClosed(f"database {path} is closed")

        self.lookup = lookup

    def write(self, run: str, key: bytes, value: bytes | None) -> None:
        if value is None:
            self._db._commit([(key, None)], (run,))
        else:
            self._db._commit_put(run, key, value)

    def delete(self, run: str, key: bytes) -> bool:
        db = self._db
        with db._commit_lock:
            if self.lookup(key) is None:
                db._check_can_write()
                db._registry.check(run, write=True)
                return False
            lsn = db._commit_locked([(key, None)], (run,), None)
        db._wal.wait(lsn)
        return True

    def scan(self, lo: bytes, hi: bytes | None) -> list[tuple[bytes, bytes]]:
        db = self._db
        with db._commit_lock:
            db._check_open()
            return db._store.scan_values(lo, hi)
