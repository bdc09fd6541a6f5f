"""The trace store primitive: structured reasoning steps per run (tag ``TAG_TRACE``).

This module owns trace records and their queries. Invariants: a trace id is
a UUIDv7 (so ids, and keys, order traces by creation time within a run, and
two recorders never collide or conflict); a trace's parent is a trace of the
same run; ``confidence`` is ``None`` or a float in [0, 1].

Key: ``run prefix | TAG_TRACE | trace id (16 bytes)``. Value (CBOR map):
``{"kind", "content", "confidence", "alternatives", "parent", "tags", "ts_us"}``.
"""

from __future__ import annotations

import datetime as _dt
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..codec import decode_value, encode_value, now_us, utc_from_us
from ..errors import InvalidArgument, TraceNotFound
from ..keys import TAG_TRACE, new_run_id, prefix_end, run_prefix
from .context import Context

__all__ = ["Trace", "Traces", "trace_from_record"]



@dataclass(frozen=True)
class Trace:
    """One reasoning step: ``id``, ``run``, ``kind``, ``content``, ``confidence``, ``alternatives``, ``parent``, ``tags``, ``ts``."""

    id: str
    run: str
    kind: str
    content: Any
    confidence: float | None
    alternatives: tuple[Any, ...]
    parent: str | None
    tags: tuple[str, ...]
    ts: _dt.datetime
    children: tuple[Trace, ...] = field(default=(), compare=False, repr=False)


def trace_from_record(run: str, tid: bytes, r: dict[str, Any]) -> Trace:
    """The :class:`Trace` of a decoded trace record stored under the 16-byte trace id ``tid``."""
    return Trace(str(uuid.UUID(bytes=tid)), run, r["kind"], r["content"], r["confidence"],
                 tuple(r["alternatives"]), r["parent"], tuple(r["tags"]),
                 utc_from_us(r["ts_us"]))


class Traces:
    """Reasoning traces per run: ``db.traces`` / ``tx.traces``."""

    def __init__(self, ctx: Context):
        self._ctx = ctx

    def _base(self, run: str, *, write: bool) -> bytes:
        return run_prefix(self._ctx.check_run(run, write=write), TAG_TRACE)

    @staticmethod
    def _tid(trace_id: object) -> bytes:
        try:
            return uuid.UUID(str(trace_id)).bytes
        except ValueError:
            raise TraceNotFound(f"no trace {trace_id!r:.80} (not a trace id)") from None

    def record(self, run: str, kind: str, content: Any, *, confidence: float | None = None,
               alternatives: Any = (), parent: str | None = None, tags: Any = ()) -> str:
        """Record a reasoning step; return its trace id (time-ordered within the run).

        :raises InvalidArgument: (a ``ValueError``) ``confidence`` is not a
            number in [0, 1], ``kind`` or a tag is not a str, or ``parent`` is
            not a trace of this run.
        :raises InvalidValue: ``content`` or ``alternatives`` cannot be encoded.
        """
        if not isinstance(kind, str) or not kind:
            raise InvalidArgument(f"trace kind must be a non-empty str, got {kind!r:.80}")
        if confidence is not None:
            if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) \
                    or math.isnan(confidence) or not 0.0 <= confidence <= 1.0:
                raise InvalidArgument(f"confidence must be a number in [0, 1], got {confidence!r}")
            confidence = float(confidence)
        if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
            raise InvalidArgument("tags must be an iterable of str")
        base = self._base(run, write=True)
        if parent is not None:
            try:
                parent_tid = self._tid(parent)
            except TraceNotFound:
                raise InvalidArgument(f"parent {parent!r:.80} is not a trace id") from None
            if self._ctx.lookup(base + parent_tid) is None:
                raise InvalidArgument(f"parent {parent!r} is not a trace of run {run}")
            parent = str(uuid.UUID(bytes=parent_tid))  # one spelling, so children() and tree() link it
        tid = uuid.UUID(new_run_id()).bytes
        record = {"kind": kind, "content": content, "confidence": confidence,
                  "alternatives": list(alternatives), "parent": parent, "tags": list(tags),
                  "ts_us": now_us()}
        self._ctx.write(run, base + tid, encode_value(record))
        return str(uuid.UUID(bytes=tid))

    def get(self, run: str, trace_id: str) -> Trace:
        """One trace. :raises TraceNotFound: no such trace in ``run``."""
        base = self._base(run, write=False)
        tid = self._tid(trace_id)
        entry = self._ctx.lookup(base + tid)
        if entry is None:
            raise TraceNotFound(f"no trace {trace_id} in run {run}")
        return trace_from_record(run, tid, decode_value(entry[1]))

    def _all(self, run: str) -> list[Trace]:
        base = self._base(run, write=False)
        skip = len(base)
        return [trace_from_record(run, k[skip:], decode_value(v)) for k, v in self._ctx.scan(base, prefix_end(base))]

    def query(self, run: str, *, kind: str | None = None, tag: str | None = None,
              min_confidence: float | None = None) -> list[Trace]:
        """Traces of ``run`` matching every filter given, in time order. O(traces in run)."""
        return [t for t in self._all(run)
                if (kind is None or t.kind == kind) and (tag is None or tag in t.tags)
                and (min_confidence is None or (t.confidence is not None and t.confidence >= min_confidence))]

    def children(self, run: str, trace_id: str) -> list[Trace]:
        """Direct children of a trace, in time order. :raises TraceNotFound: no such trace."""
        self.get(run, trace_id)
        return [t for t in self._all(run) if t.parent == trace_id]

    def tree(self, run: str) -> list[Trace]:
        """The run's traces as a forest: roots in time order, each with ``.children`` filled in."""
        traces = self._all(run)
        kids: dict[str | None, list[Trace]] = {}
        for t in traces:
            kids.setdefault(t.parent, []).append(t)

        def build(t: Trace) -> Trace:
            return Trace(t.id, t.run, t.kind, t.content, t.confidence, t.alternatives, t.parent, t.tags, t.ts,
                         tuple(build(c) for c in kids.get(t.id, [])))

        return [build(t) for t in kids.get(None, [])]
