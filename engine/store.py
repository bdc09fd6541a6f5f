"""The unified store: one sorted map from encoded key to (commit version, encoded value).

This module owns the in-memory state of a database. Every primitive of every
run lives in this one ``sortedcontainers.SortedDict``, keyed by the bytes that
:mod:`inmem.keys` builds, so a run, or one primitive of a run, is a contiguous
key range.

Invariants (checked by :meth:`UnifiedStore._check`):

* every key is ``bytes`` and every entry is a tuple ``(version, value)`` (or,
  after a native recovery, a compact object that reads as that tuple:
  :data:`inmem.wal.fast.entry_type`) with
  ``version`` an ``int`` >= 1 (the commit version that wrote it) and ``value``
  immutable ``bytes`` (CBOR from :mod:`inmem.codec`);
* the store never decodes or copies values; callers decode on read;
* after a native recovery, until the first ordered read, part of the map may
  live in the map's **cold table** (``native/inmem_cold.c``): the recovered
  records as plain bytes in C, keys disjoint from the dict part's; point
  operations answer for both parts, ordered ones drain the table first
  (:mod:`inmem.sortedmap`, SPEC.md §7).

Concurrency: the store is not thread-safe by itself. Point reads are single
dict lookups (atomic under the GIL); mutations and range reads run under the
database's commit lock.

Complexity: point get O(1) (SortedDict is a dict plus a sorted key list);
put of a new key and delete O(log n) amortised; range scan O(log n + k).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping

from sortedcontainers import SortedDict

from . import native
from .sortedmap import FRESH_LIMIT, SortedMap

__all__ = ["FRESH_LIMIT", "Entry", "SortedMap", "UnifiedStore"]

#: (commit version that wrote the value, encoded value bytes)
Entry = tuple[int, bytes]


class UnifiedStore:
    """A sorted map ``bytes -> (version, bytes)`` holding all state of one database."""

    __slots__ = ("_map", "get", "put_entry", "put_version", "make_entry")

    def __init__(self, items: Mapping[bytes, Entry] | None = None):
        # A SortedMap (what recovery builds) is adopted as it is, not copied; anything else is
        # sorted once: O(n log n) with a C sort, far faster than n inserts.
        self._map: SortedMap = items if isinstance(items, SortedMap) else SortedMap(items) if items else SortedMap()
        #: Point read: ``get(key) -> Entry | None``. Bound directly to the dict
        #: lookup: this is the hottest call in the engine.
        self.get = self._map.get
        #: ``put_entry(key, (version, value))``: :meth:`put` without the call, for the commit fast path.
        self.put_entry = self._map.__setitem__
        #: ``put_version(key, version, value)``: ``put_entry(key, make_entry(version, value))`` in one
        #: call: the native ``put_version`` (``native/inmem_replay.c``, a compact entry, the same dict and
        #: fresh-key updates as ``SortedMap.__setitem__``) when built, else :meth:`put`.
        native_put = native.builtins().get("put_version")
        self.put_version: Callable[[bytes, int, bytes], None] = (
            self.put if native_put is None
            else functools.partial(native_put, self._map, self._map.fresh_keys(), FRESH_LIMIT, self._map.cold))
        #: ``make_entry(version, value)`` -> the entry to store, or ``None``: the tuple itself. The
        #: kernel sets the native compact entry maker here (``inmem.wal.fast.make_entry``).
        self.make_entry: Callable[[int, bytes], Entry] | None = None

    @property
    def sorted_map(self) -> SortedDict:
        """The ``SortedDict`` itself, for the MVCC layer's walks (:mod:`inmem.mvcc`) alone.

        Mutate it only under the commit lock, and only with entries this module's invariant allows.
        """
        return self._map

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, key: bytes) -> bool:
        return key in self._map

    def put(self, key: bytes, version: int, value: bytes) -> None:
        """Insert or replace ``key``. Complexity: O(log n) for a new key, O(1) to replace."""
        self._map[key] = (version, value)

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; return whether it was present. Complexity: O(log n)."""
        return self._map.pop(key, None) is not None

    def apply(self, version: int, writes: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Apply one commit's writes: ``value is None`` deletes, anything else puts."""
        m = self._map
        make = self.make_entry
        for key, value in writes:
            if value is None:
                m.pop(key, None)
            else:
                m[key] = (version, value) if make is None else make(version, value)

    def scan(self, lo: bytes, hi: bytes | None) -> list[tuple[bytes, Entry]]:
        """Return every ``(key, entry)`` with ``lo <= key < hi`` in key order.

        ``hi=None`` means no upper bound. Materialised, so the caller may
        release the lock before decoding. Complexity: O(log n + k).
        """
        m = self._map
        keys = m.irange(lo, hi, inclusive=(True, False)) if hi is not None else m.irange(lo)
        return [(k, m[k]) for k in keys]

    def scan_values(self, lo: bytes, hi: bytes | None) -> list[tuple[bytes, bytes]]:
        """Like :meth:`scan` but ``(key, value bytes)``, without the versions. Complexity: O(log n + k)."""
        m = self._map
        keys = m.irange(lo, hi, inclusive=(True, False)) if hi is not None else m.irange(lo)
        return [(k, m[k][1]) for k in keys]

    def last(self, lo: bytes, hi: bytes | None) -> tuple[bytes, Entry] | None:
        """The greatest ``(key, entry)`` with ``lo <= key < hi``, or ``None``. Complexity: O(log n)."""
        m = self._map
        keys = m.irange(lo, hi, inclusive=(True, False), reverse=True) if hi is not None else m.irange(lo, reverse=True)
        for key in keys:
            return key, m[key]
        return None

    def count(self, lo: bytes, hi: bytes | None) -> int:
        """Number of keys with ``lo <= key < hi``. Complexity: O(log n)."""
        m = self._map
        start = m.bisect_left(lo)
        end = m.bisect_left(hi) if hi is not None else len(m)
        return end - start

    def key_heads(self, lead: int, width: int) -> list[bytes]:
        """The distinct ``key[1:1 + width]`` of the keys starting with byte ``lead``, ascending
        (:meth:`SortedMap.key_heads`: never builds a deferred index). Complexity: O(heads * log n)
        with the index built, else O(n) in C."""
        return self._map.key_heads(lead, width)

    def ceiling_key(self, key: bytes) -> bytes | None:
        """Smallest stored key ``>= key``, or ``None``. Complexity: O(log n)."""
        return self._map.ceiling(key)

    def items(self) -> Iterable[tuple[bytes, Entry]]:
        """All entries in key order (for tests and snapshots; hold the lock)."""
        return self._map.items()

    def _check(self) -> None:
        """Assert the invariants in the module docstring (tests call this after mutations)."""
        self._map._check()  # noqa: SLF001 - sortedcontainers' own invariant check
        for key, entry in self._map.items():
            assert type(key) is bytes, key
            # a tuple, or the native entry recovery builds (inmem.wal.fast.entry_type), read alike
            assert len(entry) == 2, entry
            version, value = entry
            assert type(version) is int and version >= 1, entry
            assert type(value) is bytes, entry
