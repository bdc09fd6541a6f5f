"""The primitive Context: the one interface every primitive reads and writes through.

This module owns the :class:`Context` protocol. Invariant: primitives reach
storage only through it — never the kernel, the store or the WAL — so one
primitive class serves both autocommit calls (``db.kv``) and transactions
(``tx.kv``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

__all__ = ["Context", "MergeOperator"]


class MergeOperator(Protocol):
    """How a primitive folds blind operations on one key (:meth:`Context.merge`).

    ``start(value)`` decodes the stored value (None: absent) into a working
    state; ``step(state, op)`` applies one operation and returns the new state
    — it may change ``state`` in place, but only once it cannot fail (it raises
    to refuse the operation, changing nothing); ``finish(state, ops)`` encodes
    the result (None: delete the key), given every operation of this commit on
    the key in order. All three are deterministic and CPU-only: a transaction
    runs them again under the commit lock when another commit changed the key.
    """

    def start(self, value: bytes | None) -> Any: ...

    def step(self, state: Any, op: Any) -> Any: ...

    def finish(self, state: Any, ops: list[Any]) -> bytes | None: ...


class Context(Protocol):
    """What a primitive needs from the layer below: reads, writes, scans, run checks.

    The database's autocommit contexts (:mod:`inmem.contexts`) make each
    write, or each primitive call, its own commit; a transaction
    (:class:`inmem.txn.Transaction`) buffers them in its write set.
    """

    #: ``lookup(key) -> (version, encoded value) | None``: a point read. An
    #: attribute, not a method, so the hottest call in the engine can be the
    #: store's own dict lookup (a closed database swaps in one that raises).
    lookup: Callable[[bytes], tuple[int, bytes] | None]

    def write(self, run: str, key: bytes, value: bytes | None) -> None:
        """Put (``value`` bytes) or delete (``None``) ``key``, which belongs to active ``run``."""

    def write_batch(self, run: str, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        """:meth:`write` every ``(key, value)`` of ``items``, all in one commit (outside a transaction too)."""

    def delete(self, run: str, key: bytes) -> bool:
        """Delete ``key`` of active ``run`` if present; return whether it was."""

    def merge(self, run: str, key: bytes, operator: MergeOperator, op: Any) -> None:
        """Apply ``op`` to ``key`` of active ``run`` through ``operator`` — blindly: in a transaction the
        key does not join the read set; ``op`` is checked at once against what the transaction sees
        (``step`` raising refuses it, nothing recorded) and applied again at commit, in commit order,
        to the latest value if another commit changed the key meanwhile (raising there fails the
        commit, nothing written). Outside a transaction it is applied at once, under the commit lock."""

    def scan(self, lo: bytes, hi: bytes | None) -> list[tuple[bytes, bytes]]:
        """``(key, encoded value)`` for ``lo <= key < hi``, in key order."""

    def prefix_maps(self, tag: int) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """Live maps run id -> key prefix of ``tag``: (all runs, active runs)."""

    def check_run(self, run: object, *, write: bool) -> bytes:
        """Raise ``RunNotFound``/``RunClosed`` as :meth:`RunRegistry.check` does."""

    def scan_entries(self, lo: bytes, hi: bytes | None) -> list[tuple[bytes, int]]:
        """``(key, commit version)`` for ``lo <= key < hi``, in key order (this context's own writes as
        the version they will commit at, or 0 in a transaction)."""

    def last(self, lo: bytes, hi: bytes | None) -> tuple[bytes, bytes] | None:
        """The greatest ``(key, encoded value)`` in ``[lo, hi)``, or None."""

    def count(self, lo: bytes, hi: bytes | None) -> int:
        """Keys in ``[lo, hi)``."""

    def run_ids(self, status: str | None = None) -> list[str]:
        """Ids of the runs that may have ``status`` (all with None), in start order; the caller checks
        each against the run record it reads."""

    def note_range(self, lo: bytes, hi: bytes | None) -> None:
        """Record ``[lo, hi)`` as read without scanning it: a transaction validates it at commit (a
        read served from derived state, e.g. a vector index, reads the whole range); others ignore it."""

    #: ``now_us() -> int``: the database's clock, Unix µs UTC (``Database.open(clock=)``): what a
    #: value's time to live is compared with, at each read.
    now_us: Callable[[], int]

    #: The commit version this context reads at (a transaction's snapshot), or None: the latest.
    at: int | None

    def has_writes(self, lo: bytes, hi: bytes | None) -> bool:
        """Whether this context has written (not yet committed) any key in ``[lo, hi)``."""
