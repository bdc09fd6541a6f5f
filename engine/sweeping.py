"""Sweeping expired values: ``db.sweep()`` and the background sweeper thread.

This module owns when expired values are deleted: on demand
(:func:`sweep_all`) and every ``interval`` seconds in a daemon thread
(:class:`SweepThread`). What is deleted, and the rule that only a record
still carrying the due expiry goes, belong to
:class:`inmem.primitives.expiry.Sweeper`. Invariants: each deletion is an
ordinary commit (at most :data:`BATCH` index entries per commit, so the
commit lock is never held for long); a run that ended is skipped (its
records are immutable; reads keep hiding its expired values); sweeping
never changes what a read returns — an expired value is already invisible.
"""

from __future__ import annotations

import logging
import threading

from .contexts import atomic_call
from .errors import DatabaseClosed, DatabasePoisoned, RunClosed, RunNotFound
from .kernel import Kernel
from .primitives.expiry import Sweeper

__all__ = ["BATCH", "SweepThread", "sweep_all"]

log = logging.getLogger("inmem")

#: Most expiry index entries one sweep commit handles.
BATCH = 10_000


def sweep_all(kernel: Kernel, runs: list[str] | None = None) -> int:
    """Delete every expired value of the active ``runs`` (None: all active runs) now; return how many.

    One commit per :data:`BATCH` due entries of a run; a run with nothing due costs one range
    probe and no commit. O(runs · log n + due).
    """
    total = 0
    for run in sorted(kernel.registry.active) if runs is None else runs:
        while True:
            try:
                swept, more = atomic_call(kernel, lambda ctx, run=run: _batch(ctx, run))
            except (RunClosed, RunNotFound):  # ended or gone meanwhile: nothing to sweep there
                break
            total += swept
            if not more:
                break
    return total


def _batch(ctx: object, run: str) -> tuple[int, bool]:
    sweeper = Sweeper(ctx)  # type: ignore[arg-type]
    due = sweeper.due(run)
    if due == 0:
        return 0, False
    return sweeper.sweep(run, limit=BATCH), due > BATCH


class SweepThread:
    """A daemon thread that calls :func:`sweep_all` every ``interval_s`` seconds until :meth:`close`."""

    def __init__(self, kernel: Kernel, interval_s: float):
        self._kernel = kernel
        self._interval = interval_s
        self._stop = threading.Event()
        self._done = threading.Condition()
        #: Sweeps finished so far, and values they deleted.
        self.sweeps = 0
        self.swept = 0
        self._thread = threading.Thread(target=self._loop, name="inmem-sweeper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                swept = sweep_all(self._kernel)
            except (DatabaseClosed, DatabasePoisoned):
                return
            except Exception:  # pragma: no cover - a bug; keep the database usable, say so
                log.exception("inmem: the background sweep failed; expired values stay hidden until the next")
                swept = 0
            with self._done:
                self.sweeps += 1
                self.swept += swept
                self._done.notify_all()

    def wait_sweeps(self, n: int, timeout: float | None = None) -> bool:
        """Block until at least ``n`` sweeps have finished (or ``timeout`` seconds); return whether they had."""
        with self._done:
            return self._done.wait_for(lambda: self.sweeps >= n, timeout)

    def close(self) -> None:
        """Stop the thread and wait for a sweep in progress to finish."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
