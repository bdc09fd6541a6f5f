"""The store's sorted map: a ``SortedDict`` with fresh keys, a deferred index, a bulk load and a cold table.

This module owns :class:`SortedMap`, the one map in which :mod:`inmem.store`
keeps every key of a database, and the ways it is filled and ordered more
cheaply than ``SortedDict`` alone does it: new keys sorted in when order is
next needed (*fresh keys*), the key list built once after a bulk load
(*deferred index*), and, on the native path, the recovered records kept in C
until something needs them as Python objects (*cold table*,
``native/inmem_cold.c``; :class:`_ColdMap`).

Invariants (``SortedMap._check``): the map's keys are the dict part's and the
cold table's, which are disjoint; the sorted key list, when built, holds
every key of the dict part but the fresh ones, and a cold table is attached
only while the list is unbuilt (deferred); every ordered read sees the list
whole (it drains the table and sorts the fresh keys in first).

Concurrency: not thread-safe by itself. Point reads are single C calls
(atomic under the GIL); mutations and ordered reads run under the database's
commit lock.
"""

from __future__ import annotations

import os
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable

from sortedcontainers import SortedDict, SortedList

from . import native

__all__ = ["FRESH_LIMIT", "SortedMap"]

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
    ``dict.pop``, ``PyDict_SetItem`` in the native replay) or, on the native
    path, the WAL's records into a cold table (:meth:`open_cold`), without the
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
        self._cold: object | None = None  # the cold table while one is attached (open_cold): _ColdMap
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

        A cold table is drained into the dict part first (:meth:`drain_cold`).
        If the build fails (``MemoryError``, ``KeyboardInterrupt`` in the sort)
        the index stays deferred, so the next ordered read builds it again
        instead of reading a partial list.
        """
        self.drain_cold()
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
                cold = self._cold
                return sorted(heads if cold is None else heads | cold.key_heads(lead, width))  # type: ignore[attr-defined]
        self.drain_cold()  # (the index is about to be built anyway)
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

    # --- the cold table -------------------------------------------------------------------------

    def open_cold(self, slack: int | None = None) -> object | None:
        """Attach an empty cold table for a bulk load and return it; ``None`` on the pure path.

        Recovery replays the WAL into it (:meth:`inmem.wal.reader.SegmentScan.replay`)
        instead of the dict part. From here until :meth:`drain_cold` the map
        is a :class:`_ColdMap`: the union of its dict part and the table,
        which hold disjoint keys (see the class docstring). Call it on a map
        whose index is not built (a bulk load's, before :meth:`defer_index`),
        before a :class:`~inmem.store.UnifiedStore` adopts it (the store binds
        its native put to the table it finds then).

        ``slack``: bytes of garbage (copies of rewritten or removed records)
        the table keeps beyond its live bytes before it compacts (default
        16 MiB; tests pass 0).
        """
        if self._cold is not None:
            return self._cold
        new_table = native.builtins().get("new_cold_table")
        if new_table is None:
            return None
        seed = int.from_bytes(os.urandom(8), "little")
        cold = new_table(self, seed) if slack is None else new_table(self, seed, slack)
        self.defer_index()  # the index is built from both parts' keys, once drained
        self._cold = cold
        self.get = cold.get  # shadows dict.get on this instance: the C lookup of both parts
        self.__class__ = _ColdMap
        return cold

    @property
    def cold(self) -> object | None:
        """The attached cold table, or ``None``."""
        return self._cold

    def drain_cold(self) -> None:
        """Move every key of the cold table into the dict part and detach it (a no-op without one).

        All or nothing (a ``MemoryError`` leaves the table attached and
        whole). The table object stays usable, empty, by whoever bound its
        ``get`` (:class:`UnifiedStore`). Complexity: O(keys in the table),
        ~0.35 s per million here (a bytes key, entry and value, and a dict
        insert each: what the open saved).
        """
        cold = self._cold
        if cold is None:
            return
        cold.drain()  # type: ignore[attr-defined]
        self._cold = None
        self.__dict__.pop("get", None)
        self.__class__ = SortedMap

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


_MISSING = object()


class _ColdMap(SortedMap):
    """A :class:`SortedMap` with a cold table attached: the map is its dict part and the table together.

    A SortedMap is of this class from :meth:`SortedMap.open_cold` to
    :meth:`SortedMap.drain_cold` (``__class__`` is switched both ways, so a
    map without a table pays nothing for these overrides). The two parts
    hold disjoint keys. Point operations answer for both: reads (``get``,
    ``[]``, ``in``, ``len``) in one C call each, so a lock-free reader never
    finds a key in neither part while a writer moves it; a put goes to the
    dict part first, then takes the key out of the table; a removal takes
    it from whichever part holds it. Everything that needs key order or the
    whole map (iteration, ranges, bisection, views, copy, pickle, ``==``,
    ``update``, ``setdefault``) drains the table first and is then
    SortedMap's own; the index is deferred all along, so the first ordered
    read builds it from the drained dict part.
    """

    def __getitem__(self, key: bytes) -> object:
        return self._cold.getitem(key)  # type: ignore[union-attr]

    def __contains__(self, key: object) -> bool:
        return self._cold.has(key)  # type: ignore[union-attr,no-any-return]

    def __len__(self) -> int:
        return self._cold.total()  # type: ignore[union-attr,no-any-return]

    def __setitem__(self, key: bytes, value: object) -> None:
        SortedMap.__setitem__(self, key, value)  # the dict part first: then the table's copy goes
        self._cold.discard(key)  # type: ignore[union-attr]

    _setitem = __setitem__

    def pop(self, key: bytes, default: object = _MISSING) -> object:
        if dict.__contains__(self, key):
            return SortedMap.pop(self, key)
        entry = self._cold.pop(key)  # type: ignore[union-attr]
        if entry is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return entry

    def __delitem__(self, key: bytes) -> None:
        if self.pop(key, _MISSING) is _MISSING:
            raise KeyError(key)

    def clear(self) -> None:
        self._cold.clear()  # type: ignore[union-attr]
        self.drain_cold()
        SortedMap.clear(self)

    # whole-map operations: drain, then SortedMap's own (self is a SortedMap by then)
    def setdefault(self, key: bytes, default: object = None) -> object:
        self.drain_cold()
        return SortedMap.setdefault(self, key, default)

    def update(self, *args: object, **kwargs: object) -> None:
        self.drain_cold()
        SortedMap.update(self, *args, **kwargs)

    _update = update

    def copy(self) -> SortedMap:
        self.drain_cold()
        return SortedMap.copy(self)  # type: ignore[no-any-return]

    __copy__ = copy

    def __or__(self, other: object) -> object:
        self.drain_cold()
        return SortedMap.__or__(self, other)

    def __ror__(self, other: object) -> object:
        self.drain_cold()
        return SortedMap.__ror__(self, other)

    def __ior__(self, other: object) -> object:
        self.drain_cold()
        return SortedMap.__ior__(self, other)

    def __reduce__(self) -> object:
        self.drain_cold()
        return SortedMap.__reduce__(self)

    def __eq__(self, other: object) -> bool:
        self.drain_cold()
        return SortedMap.__eq__(self, other)  # type: ignore[no-any-return]

    def __ne__(self, other: object) -> bool:
        self.drain_cold()
        return SortedMap.__ne__(self, other)  # type: ignore[no-any-return]

    __hash__ = None  # type: ignore[assignment]


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
