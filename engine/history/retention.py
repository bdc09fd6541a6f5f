"""History retention: which WAL segments a snapshot covers may still be deleted.

This module owns the policy of ``Database.open(history=...)`` (SPEC.md,
"History"): ``"keep"`` keeps every covered segment, ``"active"`` keeps a
segment while one run with a record in it is not archived, ``"none"`` keeps
none beyond what recovery needs. :meth:`inmem.history.index.HistoryIndex.prune`
applies it, oldest segment first.

Invariant: a segment is let go only when the policy says so and it is known
(indexed); an unindexed segment is kept, to be safe. Segments are deleted
oldest first, so the retained WAL stays one contiguous LSN range.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import InvalidArgument

__all__ = ["HISTORY_MODES", "check_mode", "segment_survives"]

#: ``Database.open(history=...)``: keep all history; keep until a run is archived; keep none beyond recovery.
HISTORY_MODES = ("keep", "active", "none")


def check_mode(mode: object) -> None:
    """:raises InvalidArgument: ``mode`` is not one of :data:`HISTORY_MODES`."""
    if mode not in HISTORY_MODES:
        raise InvalidArgument(f"history must be one of {', '.join(HISTORY_MODES)}; got {mode!r}")


def segment_survives(mode: str, archived: set[bytes], runs: Iterable[bytes] | None) -> bool:
    """Whether a covered segment must outlive the snapshots that cover it.

    :param runs: the run ids (16 bytes) with a record in the segment, consumed
        lazily; ``None`` if the segment is not indexed (then it is kept).
    """
    if mode == "keep":
        return True
    if mode == "none":
        return False
    if runs is None:
        return True  # not indexed: keep, to be safe
    return any(rid not in archived for rid in runs)
