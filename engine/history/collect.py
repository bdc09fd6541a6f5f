"""What the history index learns from recovery: a consumer of the WAL replay.

This module owns :class:`HistoryCollector`, the visitor
:func:`inmem.recovery.recover` hands each replayed segment's records to, and
:class:`SegmentTail`, what it hands on to
:meth:`inmem.history.index.HistoryIndex.load` for each retained segment.
Recovery knows nothing of runs: it applies records to the state and passes
on each segment's records grouped by the key head this module asks for
(:attr:`HistoryCollector.key_head`: bytes 1..16 of every key, the run id,
:func:`inmem.keys.run_id_of`), so the grouping is done while replaying (in C
on the native path), with no object built per record.

Invariant: for each replayed segment, ``SegmentTail.runs`` holds every LSN in
``[decoded_from, end of the valid prefix)`` under each run the record touched,
ascending; LSNs below ``decoded_from`` (covered by a snapshot, or by a
sidecar per ``indexed_until``) are left to the sidecar or a re-scan.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..keys import RUN_ID_BYTES, run_id_of

__all__ = ["HistoryCollector", "RetainedSegment", "SegmentTail", "touched_runs"]

Writes = list[tuple[bytes, bytes | None]]


def touched_runs(writes: Writes) -> set[bytes]:
    """The 16-byte run ids a commit's writes touch (bytes 1..16 of each key)."""
    return {run_id_of(k) for k, _ in writes}


@dataclass
class SegmentTail:
    """What recovery learned of one retained segment, handed to :meth:`HistoryIndex.load`.

    ``offsets``: offsets of every valid frame (empty if recovery read only the
    header); ``decoded_from``: first LSN whose runs are in ``runs`` (recovery
    decodes frames from the snapshot's LSN on); ``runs``: run id -> LSNs.
    """

    seq: int
    first_lsn: int
    size: int  # bytes of the valid prefix
    offsets: array = field(default_factory=lambda: array("I"))
    decoded_from: int | None = None
    runs: dict[bytes, array] = field(default_factory=dict)  # LSNs ascending, array('Q')


@dataclass
class RetainedSegment:
    """A segment recovery keeps: ``first_lsn`` ``None`` if its header could not be read (covered only)."""

    seq: int
    first_lsn: int | None
    size: int  # bytes of the valid prefix


class HistoryCollector:
    """Collects per-run LSNs from recovery's replay, one segment at a time (a ``ReplayVisitor``).

    :param indexed_until: ``indexed_until(seq, first_lsn)`` -> the first LSN
        of segment ``seq`` its sidecar does not already hold
        (:meth:`HistoryIndex.indexed_until`); earlier records are not collected.
    """

    def __init__(self, indexed_until: Callable[[int, int], int] | None = None):
        self._indexed_until = indexed_until
        self._tails: dict[int, SegmentTail] = {}

    def wants(self, seq: int, first_lsn: int) -> int:
        """Recovery is about to replay segment ``seq``: the first LSN whose records it should pass on
        (those its sidecar does not hold)."""
        return self._indexed_until(seq, first_lsn) if self._indexed_until is not None else first_lsn

    #: The records are grouped by run id: bytes 1..16 of each key (:func:`inmem.keys.run_id_of`).
    key_head = (1, RUN_ID_BYTES)

    def replayed(self, seq: int, first_lsn: int, end: int, starts: Sequence[int], decoded_from: int,
                 groups: dict[bytes, array]) -> None:
        """Segment ``seq`` was replayed: ``starts`` are its valid frames' offsets, ``end`` where they end;
        ``groups`` maps each run id to the LSNs (from ``decoded_from`` on) of the records that touched it."""
        self._tails[seq] = SegmentTail(seq, first_lsn, end, array("I", starts), decoded_from, groups)

    def tails(self, retained: list[RetainedSegment], next_lsn: int) -> tuple[list[SegmentTail], int]:
        """The tails of the ``retained`` segments (oldest first) and the history floor.

        Each is what was collected if the segment was replayed, else its
        header alone; its size is the retained valid prefix. A segment whose
        header could not be read ends the history before it. The floor is the
        first retained LSN (``next_lsn`` if no segment is retained).
        """
        history: list[SegmentTail] = []
        for seg in retained:
            if seg.first_lsn is None:
                history = []  # an unreadable header: history before it is unavailable
                continue
            tail = self._tails.get(seg.seq)
            if tail is None:
                tail = SegmentTail(seg.seq, seg.first_lsn, seg.size)
            tail.size = seg.size  # a cut segment keeps only its valid prefix
            history.append(tail)
        self._tails.clear()
        return history, (history[0].first_lsn if history else next_lsn)
