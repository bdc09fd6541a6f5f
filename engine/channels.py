"""Ephemeral in-process channels: ``db.publish`` / ``db.subscribe`` (no durability).

This module owns :class:`Hub` (one per open database handle) and
:class:`Subscription`. A message published on a channel reaches the
subscriptions open on that channel at that instant, in this process, and
nothing else: it is not written anywhere, a subscriber that was not there
never sees it, and closing the database drops everything (MemoriesDB's hub
semantics). For every committed write, durable and resumable, use
``db.watch`` (:mod:`inmem.changefeed`).

Invariants: ``publish`` never blocks on a subscriber (each has a bounded
queue; when it is full the OLDEST queued message is dropped and the
subscription's ``dropped`` counter grows); one subscription sees the messages
of one publisher thread in publish order.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from .errors import DatabaseClosed, InvalidArgument

__all__ = ["DEFAULT_QUEUE", "Hub", "Subscription"]

#: Messages a subscription holds before it drops its oldest.
DEFAULT_QUEUE = 1024
_MAX_CHANNEL = 1024


def _check_channel(channel: object) -> str:
    if not isinstance(channel, str) or not channel or len(channel) > _MAX_CHANNEL:
        raise InvalidArgument(f"a channel is a non-empty str of at most {_MAX_CHANNEL} characters; got {channel!r:.80}")
    return channel


class Subscription:
    """Messages of some channels: an iterator (and async iterator) of ``(channel, message)``.

    ``get(timeout=None)``: the next message, waiting up to ``timeout`` seconds
    (None: until one comes, 0: not at all); None on timeout or once closed.
    ``for channel, message in sub`` ends when it is closed. ``dropped``:
    messages dropped because the queue was full (drop-oldest). ``close()``
    (or ``with``) unsubscribes; closing the database closes it.
    """

    def __init__(self, hub: Hub, channels: tuple[str, ...], maxsize: int):
        self.channels = channels
        self.dropped = 0
        self._hub = hub
        self._queue: deque[tuple[str, Any]] = deque()
        self._max = maxsize
        self._cond = threading.Condition()
        self._closed = False

    def offer(self, channel: str, message: Any) -> None:
        """Queue one message (the hub calls it); drops the oldest if full. Never blocks for long."""
        with self._cond:
            if len(self._queue) >= self._max:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append((channel, message))
            self._cond.notify()

    @property
    def closed(self) -> bool:
        return self._closed

    def get(self, timeout: float | None = None) -> tuple[str, Any] | None:
        """The next ``(channel, message)``, or None on timeout / once closed (queued messages first)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return None
                self._cond.wait(wait)
            return self._queue.popleft()

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return self

    def __next__(self) -> tuple[str, Any]:
        item = self.get()
        if item is None:
            raise StopIteration
        return item

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> tuple[str, Any]:
        item = self.get(timeout=0)
        while item is None:
            if self._closed:
                raise StopAsyncIteration
            item = await asyncio.to_thread(self.get, 0.05)
        return item

    def close(self) -> None:
        """Unsubscribe: no later message arrives; iteration ends once the queue is read. Idempotent."""
        self._hub.unsubscribe(self)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Subscription {list(self.channels)}{' closed' if self._closed else ''}>"


class Hub:
    """The channels of one database handle. Thread-safe; publish is O(subscribers of the channel)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, tuple[Subscription, ...]] = {}
        self._closed = False

    def publish(self, channel: object, message: Any) -> int:
        """Queue ``message`` (any object, passed by reference) for every subscription of ``channel``.

        Returns how many subscriptions it reached (0: nobody listens; it is gone).
        :raises InvalidArgument: a bad channel name. :raises DatabaseClosed: the hub is closed.
        """
        name = _check_channel(channel)
        if self._closed:
            raise DatabaseClosed("the database is closed: its channels are gone")
        subs = self._subs.get(name, ())
        for sub in subs:
            sub.offer(name, message)
        return len(subs)

    def subscribe(self, channels: tuple[object, ...], maxsize: object = DEFAULT_QUEUE) -> Subscription:
        """A new :class:`Subscription` to ``channels`` (at least one; duplicates count once).

        :raises InvalidArgument: no channel, a bad name, or ``maxsize`` not an int >= 1.
        :raises DatabaseClosed: the hub is closed.
        """
        if not channels:
            raise InvalidArgument("subscribe needs at least one channel")
        names = tuple(dict.fromkeys(_check_channel(c) for c in channels))
        if type(maxsize) is not int or maxsize < 1:
            raise InvalidArgument(f"maxsize must be an int >= 1; got {maxsize!r}")
        sub = Subscription(self, names, maxsize)
        with self._lock:
            if self._closed:
                raise DatabaseClosed("the database is closed: its channels are gone")
            for name in names:
                self._subs[name] = (*self._subs.get(name, ()), sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            for name in sub.channels:
                left = tuple(s for s in self._subs.get(name, ()) if s is not sub)
                if left:
                    self._subs[name] = left
                else:
                    self._subs.pop(name, None)

    def close(self) -> None:
        """Close every subscription; later publish/subscribe raise ``DatabaseClosed``."""
        with self._lock:
            self._closed = True
            subs = {id(s): s for group in self._subs.values() for s in group}
        for sub in subs.values():
            sub.close()
