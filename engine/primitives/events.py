"""The event log primitive: an append-only, hash-chained history per run (tag ``TAG_EVENT``).

This module owns the event key layout, the Event record and the hash chain.
Invariants: a run's events are numbered 0, 1, 2 ... with no gap (the next
seq is read from the log's last key inside the same atomic step that writes
it, so two appenders cannot take one seq: they conflict); there is no update
and no delete; every event's ``hash`` chains to its predecessor's.

Key: ``run prefix | TAG_EVENT | seq`` as 8 bytes big-endian (byte order =
numeric order). Value (CBOR map): ``{"type", "payload", "ts_us", "prev",
"hash"}``.

Hash chain (tamper evidence, after Certificate Transparency and git):
``hash = XXH3-128(prev_hash || canonical CBOR [seq, type, payload, ts_us])``,
the first event chaining from 16 zero bytes. :meth:`Events.verify` recomputes
it. XXH3 is fast and detects accidental or careless change; it is not a
cryptographic signature against a deliberate forger.
"""

from __future__ import annotations

import datetime as _dt
import struct
from dataclasses import dataclass
from typing import Any

import cbor2
import xxhash

from ..codec import check_value, decode_value, encode_record, now_us, us_from_utc, utc_from_us
from ..errors import ChainBroken, InvalidArgument, InvalidValue
from ..keys import TAG_EVENT, prefix_end, run_prefix
from .context import Context

__all__ = ["ZERO_HASH", "Event", "Events", "chain_hash", "event_from_record"]

ZERO_HASH = bytes(16)
_SEQ = struct.Struct(">Q")


@dataclass(frozen=True)
class Event:
    """One event: ``run``, ``seq`` (0, 1, 2 ... per run), ``type``, ``payload``, ``ts`` (UTC), ``prev_hash``, ``hash``."""

    run: str
    seq: int
    type: str
    payload: Any
    ts: _dt.datetime
    prev_hash: bytes
    hash: bytes


def chain_hash(prev_hash: bytes, seq: int, type_: str, payload: Any, ts_us: int) -> bytes:
    """The 16-byte XXH3-128 chain hash of one event (see the module docstring).

    ``payload`` must already have passed :func:`inmem.codec.check_value`.
    """
    body = cbor2.dumps([seq, type_, payload, ts_us], canonical=True)
    return xxhash.xxh3_128_digest(prev_hash + body)


def event_from_record(run: str, seq: int, record: dict[str, Any]) -> Event:
    """The :class:`Event` of a decoded event record (the value stored at ``seq``)."""
    ts = utc_from_us(record["ts_us"])
    return Event(run, seq, record["type"], record["payload"], ts, record["prev"], record["hash"])


class Events:
    """Append-only event log of each run: ``db.events`` / ``tx.events``.

    Outside a transaction each call is atomic (``append`` is one commit).
    """

    def __init__(self, ctx: Context):
        self._ctx = ctx

    def _base(self, run: str, *, write: bool) -> bytes:
        return run_prefix(self._ctx.check_run(run, write=write), TAG_EVENT)

    def append(self, run: str, type: str, payload: Any = None) -> Event:
        """Append an event to ``run``'s log and return it.

        Complexity: O(log n).

        :raises InvalidArgument: ``type`` is not a non-empty str.
        :raises InvalidValue: ``payload`` cannot be encoded.
        :raises RunNotFound: / :raises RunClosed: the run is unknown / has ended.
        """
        if not isinstance(type, str) or not type:
            raise InvalidArgument(f"event type must be a non-empty str, got {type!r:.80}")
        # before any cbor2 call sees it (a too-deep value would crash cbor2); nesting=1: inside the record
        verify = check_value(payload, nesting=1)
        base = self._base(run, write=True)
        last = self._ctx.last(base, prefix_end(base))
        if last is None:
            seq, prev = 0, ZERO_HASH
        else:
            seq = _SEQ.unpack(last[0][len(base):])[0] + 1
            prev = decode_value(last[1])["hash"]
        ts_us = now_us()
        try:
            digest = chain_hash(prev, seq, type, payload, ts_us)
        except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
            raise InvalidValue(f"payload cannot be hashed canonically: {exc}") from None
        record = {"type": type, "payload": payload, "ts_us": ts_us, "prev": prev, "hash": digest}
        self._ctx.write(run, base + _SEQ.pack(seq), encode_record(record, verify))
        return event_from_record(run, seq, record)

    def read(self, run: str, start: int = 0, stop: int | None = None) -> list[Event]:
        """Events with ``start <= seq < stop`` (``stop=None``: to the end), in order. O(log n + k)."""
        base = self._base(run, write=False)
        if start < 0 or (stop is not None and stop < start):
            raise InvalidArgument(f"bad range start={start!r} stop={stop!r}")
        hi = base + _SEQ.pack(stop) if stop is not None else prefix_end(base)
        skip = len(base)
        return [event_from_record(run, _SEQ.unpack(k[skip:])[0], decode_value(v))
                for k, v in self._ctx.scan(base + _SEQ.pack(start), hi)]

    def tail(self, run: str, n: int) -> list[Event]:
        """The last ``n`` events, oldest first. O(log n + k)."""
        if n < 0:
            raise InvalidArgument(f"n must be >= 0, got {n!r}")
        count = self.count(run)
        return self.read(run, max(0, count - n)) if n else []

    def count(self, run: str) -> int:
        """Number of events in ``run``'s log (its last seq + 1). O(log n)."""
        base = self._base(run, write=False)
        last = self._ctx.last(base, prefix_end(base))
        return 0 if last is None else _SEQ.unpack(last[0][len(base):])[0] + 1

    def verify(self, run: str) -> int:
        """Recompute the hash chain; return the number of events.

        :raises ChainBroken: at the first event whose stored hash, predecessor
            link or seq does not match (``.run``, ``.seq``).
        """
        prev = ZERO_HASH
        n = 0
        for n, event in enumerate(self.read(run), start=1):
            seq = n - 1
            ts_us = us_from_utc(event.ts)
            if (event.seq != seq or event.prev_hash != prev
                    or chain_hash(prev, seq, event.type, event.payload, ts_us) != event.hash):
                raise ChainBroken(run, seq)
            prev = event.hash
        return n
