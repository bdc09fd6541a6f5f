"""The sweeper: deletes values whose time to live has passed, in ordinary commits (tag ``TAG_EXPIRY``).

This module owns reading a run's expiry index (:mod:`inmem.expiry` gives
its layout) and deleting what is due. Invariant: it deletes a record only if
the record it finds still carries the expiry its index entry names and that
expiry has passed by the context's clock — a key rewritten since (a new
value, a new ttl, no ttl) is left alone and only the stale index entry goes.
Every deletion is a commit like any other, so ``db.history(run)`` shows when
each value was swept. Expiring records: KV values (the expiring head of
:mod:`inmem.expiry`) and document records (their ``expires_us`` member).
"""

from __future__ import annotations

from ..errors import CorruptionError
from ..expiry import parse_expiry_entry, unwrap
from ..keys import TAG_DOC, TAG_EXPIRY, prefix_end, run_prefix
from .context import Context
from .docs import doc_expires_us

__all__ = ["Sweeper"]


class Sweeper:
    """Sweeps expired values of a run through a context (one commit per :meth:`sweep` outside a transaction)."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: Context):
        self._ctx = ctx

    def sweep(self, run: str, *, limit: int | None = None) -> int:
        """Delete ``run``'s values expired by now (at most ``limit`` index entries; None: all); return
        how many values were deleted. One range scan of the due part of the expiry index:
        O(log n + due). :raises RunClosed: the run has ended (its records are immutable).
        :raises CorruptionError: an index key that does not parse."""
        run_bytes = self._ctx.check_run(run, write=True)
        base = run_prefix(run_bytes, TAG_EXPIRY)
        now = self._ctx.now_us()
        hi = base + (now + 1).to_bytes(8, "big")  # entries with expires_us <= now
        due = self._ctx.scan(base, hi)
        if limit is not None:
            due = due[:limit]
        writes: list[tuple[bytes, bytes | None]] = []
        swept = 0
        for key, _ in due:
            expires, tag, user = parse_expiry_entry(key[len(base):])
            target = run_prefix(run_bytes, tag) + user
            entry = self._ctx.lookup(target)
            if entry is not None:
                try:
                    found = doc_expires_us(entry[1]) if tag == TAG_DOC else unwrap(entry[1])[0]
                except (CorruptionError, ValueError):
                    found = None
                if found == expires:
                    writes.append((target, None))
                    swept += 1
            writes.append((key, None))
        if writes:
            self._ctx.write_batch(run, writes)
        return swept

    def due(self, run: str) -> int:
        """Index entries of ``run`` that are due now (an upper bound on what :meth:`sweep` deletes). O(log n + due)."""
        base = run_prefix(self._ctx.check_run(run, write=False), TAG_EXPIRY)
        return self._ctx.count(base, base + (self._ctx.now_us() + 1).to_bytes(8, "big"))

    def pending(self, run: str) -> int:
        """All of ``run``'s expiry index entries, due or not. O(log n + entries)."""
        base = run_prefix(self._ctx.check_run(run, write=False), TAG_EXPIRY)
        return self._ctx.count(base, prefix_end(base))
