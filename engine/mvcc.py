"""Multi-version reads: old versions of keys, kept exactly as long as an active read point can read them.

This module owns reads at a read point (a registered commit version) and the retention and collection of old
versions. The unified store keeps only the *latest* version of each key; when
a commit overwrites or deletes a key while transactions are active, the
superseded version (and, for a delete, a tombstone) moves into a per-key
**version chain** here. Invariant: for every active read point ``B`` and every
key, the value visible at ``B`` is the newest of (latest entry, chain entries)
whose version is ``<= B``, and the chain holds every entry some active
read point still needs.

Versions against keys (``x`` = a version, ``T`` = a tombstone, ``|`` = a read point)::

    key a:  1x ────── 4x ───────────── 9x        latest 9 in the store; 1, 4 in the chain
    key b:  2x ──────────── 6T                   absent in the store; 2, 6T in the chain
    key c:          3x                           latest 3; no chain needed
                        |5                        read point 5 reads a@4, b@2, c@3

Collection (after toydb's MVCC garbage collection, simplified): an entry
superseded at version ``w`` is visible only to read points ``B < w``; once the
oldest active read point is ``>= w`` nobody can read it and it is dropped. A
queue of (superseding version, key) in commit order makes each collection
step O(entries dropped); when the last transaction ends, every chain goes at
once. Memory is therefore bounded by the writes made during the life of the
oldest active transaction.

Validation support: :meth:`Versions.last_write` and
:meth:`Versions.first_write_after` give the commit version that last wrote a
key (a tombstone counts) — what optimistic validation compares with a
transaction's begin version.

Concurrency: mutations happen under the database's commit lock. Point reads
take no lock: chains are only appended to (by commits, with versions newer
than every active read point) or *replaced* (by collection), never shifted in
place, so a reader holding a chain sees a consistent list. Range reads take
the commit lock to walk the sorted maps.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable
from typing import Any

from sortedcontainers import SortedDict

from .store import UnifiedStore

__all__ = ["Versions"]

Chain = list[tuple[int, bytes | None]]  # (version, value); value None = tombstone


class Versions:
    """Old versions of the keys of one :class:`UnifiedStore`, and the active read points that need them."""

    def __init__(self, store: UnifiedStore):
        self._store = store
        self._map = store.sorted_map
        self._chains: SortedDict = SortedDict()  # key -> Chain, ascending versions
        self._queue: deque[tuple[int, bytes]] = deque()  # (version that superseded an entry, key)
        self._points: dict[int, int] = {}  # read point token -> begin version
        self._next_token = 0
        self._newest = 0  # highest begin version ever registered (an upper bound for the active ones)
        self._oldest = 0  # begin version of the oldest active read point (valid while any are active)
        self.retained = 0  # entries held in chains

    # --- read points (under the commit lock) ---------------------------------------------------

    def register(self, version: int) -> int:
        """An active read point at ``version`` begins; return its token."""
        token = self._next_token
        self._next_token += 1
        if not self._points or version < self._oldest:
            self._oldest = version
        self._points[token] = version
        self._newest = max(self._newest, version)
        return token

    def release(self, token: int) -> None:
        """The read point ``token`` ended: collect what no remaining read point can read."""
        version = self._points.pop(token)
        if not self._points:
            self._chains.clear()
            self._queue.clear()
            self.retained = 0
            self._newest = 0
            return
        if version == self._oldest:
            self._oldest = min(self._points.values())
            self._collect(self._oldest)

    @property
    def active(self) -> int:
        """Number of active read points."""
        return len(self._points)

    # --- applying a commit (under the commit lock) --------------------------------------------

    def apply(self, version: int, writes: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Apply one commit's writes to the store, first moving superseded versions into chains.

        Called instead of :meth:`UnifiedStore.apply` while read points are
        active. Chains are written *before* the store, so a lock-free reader
        that sees the new latest entry finds the old one already chained.
        """
        m = self._map
        chains = self._chains
        newest = self._newest
        queue = self._queue
        make = self._store.make_entry
        for key, value in writes:
            old = m.get(key)
            chain = chains.get(key)
            if old is not None:
                if old[0] <= newest or chain is not None:  # some read point may read it, or order must hold
                    if chain is None:
                        chain = chains[key] = []
                    chain.append(old)
                    queue.append((version, key))
                    self.retained += 1
            elif chain is not None and chain[-1][1] is None:
                queue.append((version, key))  # the tombstone is superseded now
            if value is None:
                if chain is not None or old is not None:
                    # a tombstone: readers at >= version must not fall back to an older chain
                    # entry, and validation must see the delete
                    if chain is None:
                        chain = chains[key] = []
                    chain.append((version, None))
                    queue.append((version, key))  # lets collection drop it once everyone sees the delete
                    self.retained += 1
                m.pop(key, None)
            else:
                m[key] = (version, value) if make is None else make(version, value)

    # --- reads -----------------------------------------------------------------------------------

    def read_at(self, key: bytes, at: int) -> tuple[int, bytes] | None:
        """The entry of ``key`` visible at ``at``, or ``None`` if it was absent then. O(1) typically."""
        entry = self._map.get(key)
        if entry is not None and entry[0] <= at:
            return entry
        chain = self._chains.get(key)
        if chain is not None:
            for i in range(len(chain) - 1, -1, -1):
                found = chain[i]
                if found[0] <= at:
                    return None if found[1] is None else found  # type: ignore[return-value]
        return None

    def last_at(self, lo: bytes, hi: bytes | None, at: int) -> tuple[bytes, tuple[int, bytes]] | None:
        """The greatest key in ``[lo, hi)`` present at ``at``, with its entry. Caller holds the commit lock.

        Complexity: O(log n + keys in range written after ``at``).
        """
        best: tuple[bytes, tuple[int, bytes]] | None = None
        args = (lo, hi, (True, False), True) if hi is not None else (lo, None, (True, True), True)
        for source in (self._map, self._chains):
            for key in source.irange(*args):
                if best is not None and key <= best[0]:
                    break
                entry = self.read_at(key, at)
                if entry is not None:
                    best = (key, entry)
                    break
        return best

    def scan_at(self, lo: bytes, hi: bytes | None, at: int, *, entries: bool = False) -> list[tuple[bytes, Any]]:
        """``(key, value)`` of every key in ``[lo, hi)`` present at ``at``, in key order.

        With ``entries=True`` the second item is the whole entry ``(version, value)``.
        Caller holds the commit lock. Complexity: O(log n + k + chained keys in range).
        """
        m = self._map
        bounds = (lo, hi, (True, False)) if hi is not None else (lo, None)
        out: list[tuple[bytes, Any]] = []
        pick = (lambda e: e) if entries else (lambda e: e[1])
        if not self._chains:
            for key in m.irange(*bounds):
                entry = m[key]
                if entry[0] <= at:
                    out.append((key, pick(entry)))
            return out
        keys = set(m.irange(*bounds))
        keys.update(self._chains.irange(*bounds))
        for key in sorted(keys):
            entry = self.read_at(key, at)
            if entry is not None:
                out.append((key, pick(entry)))
        return out

    def capture(self, lo: bytes, at: int, limit: int) -> tuple[list[bytes], list[int], list[bytes], bytes | None]:
        """One step of a whole-store capture (a snapshot file's): the keys ``>= lo`` present at ``at``, at most ~``limit``.

        Returns ``(keys, versions, values, next_lo)``; ``next_lo`` is ``None``
        once the end of the store is reached. Caller holds the commit lock for
        one step only, so a writer waits for at most one step.
        Complexity: O(log n + limit).
        """
        m = self._map
        batch = list(itertools.islice(m.irange(lo), limit))
        next_lo = batch[-1] + b"\0" if len(batch) == limit else None
        keys: list[bytes] = []
        versions: list[int] = []
        values: list[bytes] = []
        if self._chains:
            chained = self._chains.irange(lo, next_lo, (True, False)) if next_lo is not None else self._chains.irange(lo)
            extra = [k for k in chained if k not in m]
            if extra:
                batch = sorted(itertools.chain(batch, extra))
            for key in batch:
                entry = self.read_at(key, at)
                if entry is not None:
                    keys.append(key)
                    versions.append(entry[0])
                    values.append(entry[1])
        else:
            entries = [m[key] for key in batch]
            if all(e[0] <= at for e in entries):  # the common case: nothing newer in this step
                keys = batch
                versions = [e[0] for e in entries]
                values = [e[1] for e in entries]
            else:
                for key, entry in zip(batch, entries):
                    if entry[0] <= at:
                        keys.append(key)
                        versions.append(entry[0])
                        values.append(entry[1])
        return keys, versions, values, next_lo

    # --- validation (under the commit lock) --------------------------------------------------------

    def last_write(self, key: bytes) -> int:
        """Commit version that last wrote ``key`` (put or delete) as far as any active read point can tell.

        0 when the key is absent and no retained tombstone says when it went:
        then it was not written since the oldest active read point began.
        """
        entry = self._map.get(key)
        if entry is not None:
            return entry[0]
        chain = self._chains.get(key)
        if chain is not None and chain[-1][1] is None:
            return chain[-1][0]
        return 0

    def first_write_after(self, lo: bytes, hi: bytes | None, at: int) -> tuple[bytes, int] | None:
        """Some key in ``[lo, hi)`` written (inserted, changed or deleted) after ``at``, with its version.

        Complexity: O(log n + keys in range).
        """
        bounds = (lo, hi, (True, False)) if hi is not None else (lo, None)
        m = self._map
        for key in m.irange(*bounds):
            version = m[key][0]
            if version > at:
                return key, version
        for key in self._chains.irange(*bounds):
            version = self.last_write(key)
            if version > at:
                return key, version
        return None

    # --- collection --------------------------------------------------------------------------------

    def _collect(self, oldest: int) -> None:
        """Drop every chain entry that no read point ``>= oldest`` can read."""
        queue = self._queue
        chains = self._chains
        m = self._map
        while queue and queue[0][0] <= oldest:
            _, key = queue.popleft()
            chain = chains.get(key)
            if chain is None:
                continue
            # entry i is visible to read points in [v_i, v_{i+1}); drop it once v_{i+1} <= oldest
            keep = 0
            while keep + 1 < len(chain) and chain[keep + 1][0] <= oldest:
                keep += 1
            latest = m.get(key)
            if latest is not None and latest[0] <= oldest:
                keep = len(chain)  # the store's entry serves every read point: the whole chain goes
            elif len(chain) - keep == 1 and chain[-1][1] is None and chain[-1][0] <= oldest:
                keep = len(chain)  # a lone tombstone everyone sees: absence says the same
            if keep:
                self.retained -= keep
                if keep == len(chain):
                    del chains[key]
                else:
                    chains[key] = chain[keep:]  # replace, never shift: lock-free readers hold the old list
