"""The KV primitive: run-scoped key/value working memory (tag ``TAG_KV``).

This module owns the mapping from ``(run, str key)`` to store keys for the KV
tag, and nothing else: it validates arguments, encodes keys and values, and
hands reads and writes to its :class:`Context`. Invariant: every argument
check happens before the context is asked to write, so bad input never
changes the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..codec import decode_value, encode_value
from ..errors import InvalidKey
from ..keys import MAX_KEY_BYTES, TAG_KV, TAGGED_PREFIX_LEN, encode_user_key, prefix_end, run_prefix
from .context import Context

__all__ = ["KV", "Context"]


_MAX_STORE_KEY = TAGGED_PREFIX_LEN + MAX_KEY_BYTES


def _decode_items(items: list[tuple[bytes, bytes]], skip: int) -> Iterator[tuple[str, Any]]:
    for key, value in items:
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

    def put(self, run: str, key: str, value: Any) -> None:
        """Set ``key`` of ``run`` to ``value``.

        Complexity: O(log n) plus the size of the value.

        :raises RunNotFound: no such run.
        :raises RunClosed: the run has ended.
        :raises InvalidKey: (a ``TypeError``) ``key`` is not a str, or not encodable.
        :raises InvalidValue: (a ``TypeError``) ``value`` is not storable (see :mod:`inmem.codec`).
        :raises DatabasePoisoned: an earlier write or fsync failed.
        :raises DatabaseClosed: the database is closed.
        """
        prefix = self._active.get(run)  # type: ignore[arg-type]
        if prefix is None:
            prefix = run_prefix(self._ctx.check_run(run, write=True), TAG_KV)
        self._ctx.write(run, self._key(prefix, key), encode_value(value))

    def get(self, run: str, key: str, default: Any = None) -> Any:
        """Return the value of ``key`` in ``run``, or ``default`` if absent.

        The value is decoded afresh on every call: mutating it never changes
        the database. Complexity: O(1) lookup plus decoding.

        :raises RunNotFound: no such run.
        :raises InvalidKey: ``key`` is not a str, or not encodable.
        """
        prefix = self._all.get(run)  # type: ignore[arg-type]
        if prefix is None:
            prefix = run_prefix(self._ctx.check_run(run, write=False), TAG_KV)
        if type(key) is str and key.isascii() and len(key) <= MAX_KEY_BYTES:
            entry = self._ctx.lookup(prefix + key.encode())  # the common case, inlined
        else:
            entry = self._ctx.lookup(self._key(prefix, key))
        return default if entry is None else decode_value(entry[1])

    def delete(self, run: str, key: str) -> bool:
        """Delete ``key`` from ``run``; return whether it existed (nothing is written if not).

        :raises RunNotFound: no such run.
        :raises RunClosed: the run has ended.
        :raises InvalidKey: ``key`` is not a str, or not encodable.
        """
        prefix = self._active.get(run)  # type: ignore[arg-type]
        if prefix is None:
            prefix = run_prefix(self._ctx.check_run(run, write=True), TAG_KV)
        return self._ctx.delete(run, self._key(prefix, key))

    def scan(self, run: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """Iterate ``(key, value)`` for the keys of ``run`` starting with ``prefix``, in key order.

        Key order is Unicode code-point order (UTF-8 byte order). The matching
        entries are gathered when ``scan`` is called (a consistent view as of
        that moment); values are decoded as you iterate.
        Complexity: O(log n + k).

        :raises RunNotFound: no such run.
        :raises InvalidKey: ``prefix`` is not a str, or not encodable.
        """
        base = self._all.get(run)  # type: ignore[arg-type]
        if base is None:
            base = run_prefix(self._ctx.check_run(run, write=False), TAG_KV)
        lo = self._key(base, prefix)
        items = self._ctx.scan(lo, prefix_end(lo))
        return _decode_items(items, len(base))
