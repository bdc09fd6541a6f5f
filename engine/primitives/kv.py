"""The KV primitive: run-scoped key/value working memory (tag ``TAG_KV``).

This module owns the mapping from ``(run, str key)`` to store keys for the KV
tag, and nothing else: it validates arguments, encodes keys and values, and
hands reads and writes to its :class:`Context`. Invariant: every argument
check happens before the context is asked to write, so bad input never
changes the database; a value whose time to live has passed (by the
context's clock) is never returned, counted or listed, swept or not.

A ``put`` with ``ttl`` stores the value behind the expiring head of
:mod:`inmem.expiry` and, in the same commit, its expiry index entry
(``run prefix | TAG_EXPIRY | expires_us | TAG_KV | key``), which
:class:`inmem.primitives.expiry.Sweeper` reads to delete it once due.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..codec import decode_value, encode_value
from ..errors import InvalidKey
from ..expiry import EXPIRING_HEAD, check_ttl, expiry_entry, unwrap, wrap
from ..keys import MAX_KEY_BYTES, TAG_EXPIRY, TAG_KV, TAGGED_PREFIX_LEN, encode_user_key, prefix_end, run_prefix
from .context import Context

__all__ = ["KV", "Context"]


_MAX_STORE_KEY = TAGGED_PREFIX_LEN + MAX_KEY_BYTES
_EXPIRING = EXPIRING_HEAD[0]  # a plain value never starts with the expiring head's first byte and its tag
_MARK = encode_value(None)    # the value of an expiry index entry


def _decode_items(items: list[tuple[bytes, bytes]], skip: int, now: int) -> Iterator[tuple[str, Any]]:
    for key, value in items:
        if value[0] == _EXPIRING:
            expires, _, value = unwrap(value)
            if expires is not None and expires <= now:
                continue
        yield key[skip:].decode("utf-8"), decode_value(value)


class KV:
    """Run-scoped key/value store: ``db.kv`` and ``tx.kv``.

    Keys are ``str`` (at most 64 KiB of UTF-8); values are the types
    :mod:`inmem.codec` accepts, nested at most ``MAX_DEPTH`` deep. Outside a
    transaction each ``put`` and ``delete`` is its own atomic, durable-per-mode
    commit.
    """

    __slots__ = ("_ctx", "_all", "_active")

    def __init__(self, ctx: Context):
        self._ctx = ctx
        self._all, self._active = ctx.prefix_maps(TAG_KV)

    def _key(self, prefix: bytes, key: object) -> bytes:
        """``prefix`` + the UTF-8 of ``key``. :raises InvalidKey: as :func:`encode_user_key`."""
        if type(key) is str:
            try:
                k = prefix + key.encode()
            except UnicodeEncodeError:
                encode_user_key(key)  # raises InvalidKey with the reason
                raise  # pragma: no cover - encode_user_key always raises here
            if len(k) > _MAX_STORE_KEY:
                raise InvalidKey(f"key is {len(k) - len(prefix)} bytes; the limit is {MAX_KEY_BYTES}")
            return k
        return prefix + encode_user_key(key)

    def put(self, run: str, key: str, value: Any, *, ttl: float | None = None) -> None:
        """Set ``key`` of ``run`` to ``value``.

        ``ttl``: seconds (int or float, > 0) until the value expires, by the
        database's clock (``Database.open(clock=)``); from that moment every
        read treats the key as absent, and the sweeper (``db.sweep()``, or the
        background one) deletes it in an ordinary commit. A later ``put``
        replaces the value and its expiry (``ttl=None``: it no longer expires).
        Complexity: O(log n) plus the size of the value (a ``ttl`` adds one
        index key in the same commit).

        :raises RunNotFound: no such run.
        :raises RunClosed: the run has ended.
        :raises InvalidKey: (a ``TypeError``) ``key`` is not a str, or not encodable.
        :raises InvalidValue: (a ``TypeError``) ``value`` is not storable (see :mod:`inmem.codec`).
        :raises InvalidArgument: ``ttl`` is not a number of seconds > 0 (at most ~100 years).
        :raises DatabasePoisoned: an earlier write or fsync failed.
        :raises DatabaseClosed: the database is closed.
        """
        prefix = self._active.get(run)  # type: ignore[arg-type]
        if prefix is None:
            prefix = run_prefix(self._ctx.check_run(run, write=True), TAG_KV)
        if ttl is None:
            self._ctx.write(run, self._key(prefix, key), encode_value(value))
            return
        store_key = self._key(prefix, key)
        ttl_us = check_ttl(ttl)
        encoded = encode_value(value)
        assert ttl_us is not None
        self._put_expiring(run, prefix, store_key, encoded, self._ctx.now_us() + ttl_us, ttl_us)

    def _put_expiring(self, run: str, prefix: bytes, store_key: bytes, encoded: bytes, expires: int,
                      ttl_us: int, old: bytes | None = None) -> None:
        """Write the expiring value and its index entry, and drop the index entry of the expiring value it
        replaces (``old``: that value, else it is looked up), so re-putting or refreshing a lease leaves
        one entry per key, not one per write. Plain puts skip that read (the hot path): the entry of an
        expiring value they replace stays, stale, until the sweep that finds it due."""
        user = store_key[len(prefix):]
        exp_base = prefix[:-1] + bytes([TAG_EXPIRY])
        writes: list[tuple[bytes, bytes | None]] = [(store_key, wrap(encoded, expires, ttl_us)),
                                                    (exp_base + expiry_entry(expires, TAG_KV, user), _MARK)]
        if old is None:
            entry = self._ctx.lookup(store_key)
            old = None if entry is None else entry[1]
        if old is not None and old[0] == _EXPIRING:
            before = unwrap(old)[0]
            if before is not None and before != expires:
                writes.append((exp_base + expiry_entry(before, TAG_KV, user), None))
        self._ctx.write_batch(run, writes)

    def get(self, run: str, key: str, default: Any = None, *, refresh_ttl: bool = False) -> Any:
        """Return the value of ``key`` in ``run``, or ``default`` if absent or expired.

        The value is decoded afresh on every call: mutating it never changes
        the database. ``refresh_ttl=True``: if the value has a time to live,
        extend its lease — it expires its original ``ttl`` from now (a write:
        one commit outside a transaction; the run must be active).
        Complexity: O(1) lookup plus decoding.

        :raises RunNotFound: no such run.
        :raises RunClosed: ``refresh_ttl`` renewed a lease in an ended run.
        :raises InvalidKey: ``key`` is not a str, or not encodable.
        """
        prefix = self._all.get(run)  # type: ignore[arg-type]
        if prefix is None:
            prefix = run_prefix(self._ctx.check_run(run, write=False), TAG_KV)
        if type(key) is str and key.isascii() and len(key) <= MAX_KEY_BYTES:
            store_key = prefix + key.encode()  # the common case, inlined
        else:
            store_key = self._key(prefix, key)
        entry = self._ctx.lookup(store_key)
        if entry is None:
            return default
        stored = entry[1]
        if stored[0] != _EXPIRING:
            return decode_value(stored)
        expires, ttl_us, value = unwrap(stored)
        if expires is None:  # pragma: no cover - only expiring values start with the tag byte
            return decode_value(stored)
        now = self._ctx.now_us()
        if expires <= now:
            return default
        if refresh_ttl:
            assert ttl_us is not None
            self._put_expiring(run, prefix, store_key, bytes(value), now + ttl_us, ttl_us, stored)
        return decode_value(value)

    def expires_at(self, run: str, key: str) -> int | None:
        """When ``key``'s value expires (Unix µs UTC), or None if it has no time to live or is absent/expired."""
        prefix = self._all.get(run)  # type: ignore[arg-type]
        if prefix is None:
            prefix = run_prefix(self._ctx.check_run(run, write=False), TAG_KV)
        entry = self._ctx.lookup(self._key(prefix, key))
        if entry is None:
            return None
        expires = unwrap(entry[1])[0]
        return None if expires is None or expires <= self._ctx.now_us() else expires

    def delete(self, run: str, key: str) -> bool:
        """Delete ``key`` from ``run``; return whether it existed (nothing is written if not). An
        expired value is absent: False, though its record is deleted all the same.

        :raises RunNotFound: no such run.
        :raises RunClosed: the run has ended.
        :raises InvalidKey: ``key`` is not a str, or not encodable.
        """
        prefix = self._active.get(run)  # type: ignore[arg-type]
        if prefix is None:
            prefix = run_prefix(self._ctx.check_run(run, write=True), TAG_KV)
        store_key = self._key(prefix, key)
        entry = self._ctx.lookup(store_key)
        if entry is not None and entry[1][0] == _EXPIRING:
            expires = unwrap(entry[1])[0]
            if expires is not None and expires <= self._ctx.now_us():
                self._ctx.write(run, store_key, None)
                return False
        return self._ctx.delete(run, store_key)

    def scan(self, run: str, prefix: str = "", *, start: str | None = None) -> Iterator[tuple[str, Any]]:
        """Iterate ``(key, value)`` for the keys of ``run`` starting with ``prefix``, in key order.

        Key order is Unicode code-point order (UTF-8 byte order). The matching
        entries are gathered when ``scan`` is called (a consistent view as of
        that moment); values are decoded as you iterate.
        ``start``: begin at the first such key ``>= start`` (keys before it are
        not read, so a transaction's read set holds only the range from it): a
        page of ``n`` is ``itertools.islice(kv.scan(run, start=after), n)``,
        and the next page starts at its last key + ``"\0"``.
        Complexity: O(log n + k) for the k keys from ``start`` (or the prefix) on.

        :raises RunNotFound: no such run.
        :raises InvalidKey: ``prefix`` or ``start`` is not a str, or not encodable.
        """
        base = self._all.get(run)  # type: ignore[arg-type]
        if base is None:
            base = run_prefix(self._ctx.check_run(run, write=False), TAG_KV)
        lo = self._key(base, prefix)
        hi = prefix_end(lo)
        if start is not None:
            first = self._key(base, start)
            if first > lo:
                lo = first
            if hi is not None and lo >= hi:
                return iter(())
        items = self._ctx.scan(lo, hi)
        return _decode_items(items, len(base), self._ctx.now_us())
