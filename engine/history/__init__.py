"""The history of runs: the WAL indexed per run, its sidecar files, and its retention.

This package owns SPEC.md's "History" section, in four modules:

* :mod:`~inmem.history.index` — :class:`HistoryIndex`, the in-memory per-run
  index (where each run's commit records are in the WAL);
* :mod:`~inmem.history.sidecar` — the ``hist-<seq>.idx`` file format that
  lets the index survive reopen (a cache, rebuilt when missing or damaged);
* :mod:`~inmem.history.retention` — which covered segments survive a
  snapshot (:data:`HISTORY_MODES`: keep / active / none);
* :mod:`~inmem.history.collect` — :class:`HistoryCollector`, the consumer of
  recovery's replay that hands the index what recovery decoded.

Invariant (the index's): for every retained segment every frame is indexed,
and the retained WAL is one contiguous LSN range ``[floor, next LSN)``.
The names below are re-exported so importers need not know the split.
"""

from __future__ import annotations

from .collect import HistoryCollector, RetainedSegment, SegmentTail, touched_runs
from .index import HistoryIndex
from .retention import HISTORY_MODES
from .sidecar import index_name, parse_index_name

__all__ = ["HISTORY_MODES", "HistoryCollector", "HistoryIndex", "RetainedSegment", "SegmentTail", "index_name",
           "parse_index_name", "touched_runs"]
