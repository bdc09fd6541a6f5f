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
* the store never decodes or copies values; callers decode on read.

Concurrency: the store is not thread-safe by itself. Point reads are single
dict lookups (atomic under the GIL); mutations and range reads run under the
database's commit lock.

Complexity: point get O(1) (SortedDict is a dict plus a sorted key list);
put of a new key and delete O(log n) amortised; range scan O(log n + k).
"""

from __future__ import annotations

import functools
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Mapping

from sortedcontainers import SortedDict, SortedList

from . import native

__all__ = ["FRESH_LIMIT", "Entry", "SortedMap", "UnifiedStore"]

#: (commit version that wrote the value, encoded value bytes)
Entry = tuple[int, bytes]


_dict_setitem = dict.__setitem__

#: Most fresh keys a SortedMap keeps before the put that adds one more sorts them in (bounds the pause
#: of that put, or of the next ordered read, at ~10 ms for keys in random order).
FRESH_LIMIT = 16_384

#: The SortedList methods SortedDict.__init__ caches on each instance; SortedMap routes them through
#: its own class-level versions below (which see the fresh keys) by dropping those per-instance caches.
_CACHED_LIST_METHODS = ("_list_add", "_list_clear", "_list_iter", "_list_reversed", "_list_pop", "_list_remove",
                        "_list_update", "bisect_left", "bisect", "bisect_right", "index", "irange", "islice",
                        "_reset")


class SortedMap(SortedDict):
    """The store's ``SortedDict``: new keys are sorted in when order is first needed, and a bulk load.

    **Fresh keys.** Putting a key that is not in the map adds it to the dict
    part and appends it to ``_fresh``, a list, instead of inserting it into
    the sorted key list at once (O(1) instead of O(log n) and three Python
    frames). Measured with the C store put (``put_version``), 100,000
    ``kv.put`` of new keys into a 50,000-key run then one scan, the sorting
    in included: 4.97 -> 4.31 µs per key in key order, 6.67 -> 4.97 µs in
    random order. The first operation that needs key order (an
    ``irange``, a bisection, iteration, ``items()``, an index, ``peekitem``,
    ``popitem``, :meth:`ceiling`, ``_check``...) sorts the fresh keys in first
    (:meth:`sort_fresh`). Every path to the sorted list goes through
    the ``_list`` property or the class-level methods below (SortedDict's
    per-instance caches of the list's methods are dropped), so no reader can
    see the list without the fresh keys, and every removal sorts them in
    first. Invariant (``_check``): the fresh keys are distinct, in the map and
    not in the sorted list, which holds every other key. Like the rest of the map
    this is not thread-safe by itself: mutations and ordered reads run under
    the database's commit lock (point reads are dict lookups, which never
    touch the list).

    At most :data:`FRESH_LIMIT` keys wait: the put that reaches it sorts them
    in, so no single put, scan or snapshot step (which holds the commit lock)
    pays for more than that many (~10 ms for random keys, far less in key
    order), however long a run of puts goes without an ordered read.

    **Bulk load.** Recovery fills the *dict part* directly (``dict.__setitem__``,
    ``dict.pop``, ``PyDict_SetItem`` in the native replay), without the
    sorted key list, then calls :meth:`defer_index` (or :meth:`index_keys`):
    one O(n log n) sort instead of n inserts, and no copy of a million-entry
    dict into a new one. Between the fill and that call the map iterates,
    slices and bisects as if empty; :func:`inmem.recovery.recover` never
    hands it out in that state.

    **Deferred index.** After :meth:`defer_index` the sorted key list is
    built from the dict part by the first operation that needs key order
    (the ``_list`` property, as for fresh keys): one C sort, ~0.1 s per
    million keys here, paid by the first scan, snapshot or ordered read after
    the open instead of by the open itself. Point reads, puts and removals
    need no order and do not build it: while the index is deferred a new key
    is only in the dict part (the fresh list is emptied, not sorted in, when
    it reaches :data:`FRESH_LIMIT`), and a removal touches the dict part
    alone. :meth:`key_heads` answers the open's one ordered question (which
    runs exist) without building it.
    """

    def __init__(self, *args: object, **kwargs: object):
        self._fresh: list[bytes] = []
        self._unindexed = False  # True: the sorted list is to be built from the dict part (defer_index)
        super().__init__(*args, **kwargs)
        for name in _CACHED_LIST_METHODS:
            self.__dict__.pop(name, None)

    @property
    def _list(self) -> SortedList:
        """The sorted key list, built first if deferred, with the fresh keys sorted in first."""
        if self._unindexed:
            self.index_keys()
        if self._fresh:
            self.sort_fresh()
        return self._sorted

    @_list.setter
    def _list(self, value: SortedList) -> None:  # SortedDict.__init__ sets it
        self._sorted = value

    def fresh_keys(self) -> list[bytes]:
        """The list of fresh keys itself (one object for the map's life), for a put done in C
        (``native/inmem_replay.c``'s ``put_version``), which appends a new key to it and calls
        :meth:`sort_fresh` at :data:`FRESH_LIMIT` as :meth:`__setitem__` does."""
        return self._fresh

    def sort_fresh(self) -> None:
        """Sort the fresh keys into the sorted list. Complexity: O(k log k) for k fresh keys, plus
        O(n) C work (one sort) when k >= n/4, else O(log n) per group of keys (_merge_groups)."""
        fresh = self._fresh  # the same list object for the map's life (UnifiedStore.put_version holds it)
        if self._unindexed:
            fresh.clear()  # already in the dict part, from which the deferred index will be built
            return
        sorted_list = self._sorted
        lists = sorted_list._lists  # noqa: SLF001 - SortedList's layout (see _merge_groups)
        if not lists or len(fresh) * 4 >= len(sorted_list):
            sorted_list.update(fresh)  # many: one C sort of everything, as SortedList.update does
        else:
            _merge_groups(sorted_list, fresh)
        fresh.clear()

    def __setitem__(self, key: bytes, value: object) -> None:
        new = key not in self  # so neither fresh nor sorted yet: appended once
        _dict_setitem(self, key, value)
        if new:
            fresh = self._fresh
            fresh.append(key)
            if len(fresh) >= FRESH_LIMIT:
                self.sort_fresh()

    _setitem = __setitem__

    # SortedDict's uses of its key list, through the fresh keys
    def _list_add(self, value: bytes) -> None:
        if not self._unindexed:  # deferred: the index will be built from the dict part
            self._sorted.add(value)  # a key not in the map: it is not fresh either

    def _list_clear(self) -> None:
        self._fresh.clear()
        self._sorted.clear()  # a deferred index stays deferred: it is built from the dict part

    def _list_iter(self):  # type: ignore[no-untyped-def]
        return iter(self._list)

    def _list_reversed(self):  # type: ignore[no-untyped-def]
        return reversed(self._list)

    def _list_pop(self, index: int = -1) -> bytes:
        return self._list.pop(index)  # type: ignore[no-any-return]

    def _list_remove(self, value: bytes) -> None:
        if self._unindexed:
            return  # the dict part alone holds the keys until the index is built
        self._list.remove(value)  # fresh keys sorted in first: a removed key is never left fresh

    def _list_update(self, iterable: Iterable[bytes]) -> None:
        if self._unindexed:
            return  # keys SortedDict just put in the dict part: the deferred index will hold them
        self._list.update(iterable)

    def _reset(self, load: int) -> None:
        self._list._reset(load)  # noqa: SLF001 - SortedDict's own delegation

    def bisect_left(self, value: bytes) -> int:
        return self._list.bisect_left(value)  # type: ignore[no-any-return]

    def bisect_right(self, value: bytes) -> int:
        return self._list.bisect_right(value)  # type: ignore[no-any-return]

    bisect = bisect_right

    def index(self, value: bytes, start: int | None = None, stop: int | None = None) -> int:
        return self._list.index(value, start, stop)  # type: ignore[no-any-return]

    def irange(self, minimum=None, maximum=None, inclusive=(True, True), reverse=False):  # type: ignore[no-untyped-def]
        return self._list.irange(minimum, maximum, inclusive, reverse)

    def islice(self, start=None, stop=None, reverse=False):  # type: ignore[no-untyped-def]
        return self._list.islice(start, stop, reverse)

    def _check(self) -> None:
        """Assert the fresh-key invariant, then sortedcontainers' own (which sorts the fresh keys in).
        A deferred index is built first (checked as built)."""
        if self._unindexed:
            self.index_keys()
        fresh, sorted_list = self._fresh, self._sorted
        assert len(set(fresh)) == len(fresh), "a key is fresh twice"
        assert all(dict.__contains__(self, k) for k in fresh), "a fresh key is not in the map"
        assert not any(k in sorted_list for k in fresh), "a fresh key is also in the sorted list"
        assert len(fresh) + len(sorted_list) == len(self), "the sorted list and the fresh keys miss a key"
        super()._check()  # noqa: SLF001 - the base class's own invariant check

    def index_keys(self) -> None:
        """Rebuild the sorted key list from the dict's keys now. Complexity: O(n log n), C sort.

        If the build fails (``MemoryError``, ``KeyboardInterrupt`` in the sort)
        the index stays deferred, so the next ordered read builds it again
        instead of reading a partial list.
        """
        self._list_clear()
        self._unindexed = True  # until the list is whole
        self._sorted.update(dict.__iter__(self))
        self._unindexed = False

    def defer_index(self) -> None:
        """Rebuild the sorted key list from the dict's keys at the first operation that needs key order.

        What recovery calls after filling the dict part: the open then costs no
        sort (O(n log n), ~0.1 s per million keys), the first ordered read
        pays it instead (see the class docstring). Complexity: O(1) now.
        """
        self._list_clear()
        self._unindexed = True

    @property
    def indexed(self) -> bool:
        """Whether the sorted key list is built (``False`` between :meth:`defer_index` and the first ordered read)."""
        return not self._unindexed

    def key_heads(self, lead: int, width: int) -> list[bytes]:
        """The distinct ``key[1:1 + width]`` of the keys whose first byte is ``lead``, ascending.

        With the index built: one :meth:`ceiling` per head (O(heads * log n)).
        Deferred, on the native path: one C walk of the dict part (O(n),
        ``native/inmem_replay.c``'s ``key_heads``, ~0.014 s per million keys),
        so the index stays deferred; on the pure path the index is built
        instead (a Python walk costs about what the C sort does). What the run
        table's load asks (``lead`` = the run namespace, ``width`` = 16: the
        run ids).
        """
        if self._unindexed:
            native_heads = native.builtins().get("key_heads")
            heads = native_heads(self, lead, width) if native_heads is not None else None
            if heads is not None:
                return sorted(heads)
        lo = bytes((lead,))
        out: list[bytes] = []
        key = self.ceiling(lo)
        while key is not None and key[0] == lead:
            head = key[1:1 + width]
            out.append(head)
            # past every key with this head (a shorter head is the whole key: just past the key)
            nxt = _prefix_successor(lo + head) if len(head) == width else key + b"\x00"
            key = self.ceiling(nxt) if nxt is not None else None
        return out

    def ceiling(self, key: bytes) -> bytes | None:
        """Smallest key ``>= key``, or ``None``: two C bisections. Complexity: O(log n).

        Reads the sorted list's sublists and their maxima directly (sortedcontainers'
        documented layout, stable since 2.0), where ``keys()[bisect_left(key)]``
        would also walk its positional index.
        """
        sorted_list = self._list
        maxes = sorted_list._maxes  # noqa: SLF001 - SortedList's layout (see the docstring)
        pos = bisect_left(maxes, key)
        if pos == len(maxes):
            return None
        sub = sorted_list._lists[pos]  # noqa: SLF001 - as above
        return sub[bisect_left(sub, key)]


def _prefix_successor(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (``None``: none is)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def _merge_groups(sorted_list: SortedList, fresh: list[bytes]) -> None:
    """Add the keys ``fresh`` (none of them in ``sorted_list``) to ``sorted_list`` by sublist.

    ``SortedList.update`` adds fewer keys than a quarter of the list one by
    one: a Python call, a bisection and an insert each. Here the keys are
    sorted once and each run of keys that falls into one sublist goes in
    together: inserted one by one (C ``insort``) if the run is short, else
    appended and the sublist re-sorted (a C merge of two sorted runs), or
    only appended if they all sort after it. Keys past the last maximum join
    the last sublist, so appending in key order (step counters, timestamps)
    costs one extend.
    Sublists longer than twice the load are then cut into pieces of between
    one and two loads, as ``SortedList._expand`` would have. Relies on
    sortedcontainers' documented layout (``_lists``, ``_maxes``, ``_load``,
    ``_len``, ``_index``; stable since 2.0, checked by ``SortedList._check`` in
    tests/test_sorted_map.py).
    """
    fresh.sort()
    lists = sorted_list._lists  # noqa: SLF001 - SortedList's layout (see the docstring)
    maxes = sorted_list._maxes  # noqa: SLF001
    double = sorted_list._load * 2  # noqa: SLF001
    last = len(maxes) - 1
    i, k = 0, len(fresh)
    oversized = False
    while i < k:
        pos = bisect_left(maxes, fresh[i])
        if pos >= last:
            pos, j = last, k
        else:
            j = bisect_right(fresh, maxes[pos], i)
        sub = lists[pos]
        if fresh[i] > sub[-1]:
            sub += fresh[i:j]  # all past the sublist's end (appends in key order): no sort
        elif j - i < 16:
            for key in fresh[i:j]:
                insort(sub, key)
        else:
            sub += fresh[i:j]
            sub.sort()
        maxes[pos] = sub[-1]
        oversized = oversized or len(sub) > double
        i = j
    if oversized:
        load = sorted_list._load  # noqa: SLF001
        new_lists: list[list[bytes]] = []
        for sub in lists:
            if len(sub) > double:
                pieces = len(sub) // load  # each piece: between load and 2 * load keys
                step, extra = divmod(len(sub), pieces)
                start = 0
                for p in range(pieces):
                    end = start + step + (1 if p < extra else 0)
                    new_lists.append(sub[start:end])
                    start = end
            else:
                new_lists.append(sub)
        lists[:] = new_lists
        maxes[:] = [sub[-1] for sub in new_lists]
    sorted_list._len += k  # noqa: SLF001
    del sorted_list._index[:]  # noqa: SLF001 - the positional index is rebuilt when next needed


class UnifiedStore:
    """A sorted map ``bytes -> (version, bytes)`` holding all state of one database."""

    __slots__ = ("_map", "get", "put_entry", "put_version", "make_entry")

    def __init__(self, items: Mapping[bytes, Entry] | None = None):
        # A SortedMap (what recovery builds) is adopted as it is, not copied; anything else is
        # sorted once: O(n log n) with a C sort, far faster than n inserts.
        self._map: SortedMap = items if type(items) is SortedMap else SortedMap(items) if items else SortedMap()
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
            else functools.partial(native_put, self._map, self._map.fresh_keys(), FRESH_LIMIT))
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
