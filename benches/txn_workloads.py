"""Helpers for ``test_txn_bench.py``: a seeded zipfian generator, a thread-round runner, raw fsync timing.

Nothing here touches the engine's internals: the benches go through the
public API (``Database.open``, ``db.transaction()``, ``db.transact``,
``db.kv``, ``db.stats()``) and the documented ``fs=`` seam of
``Database.open`` (to count the WAL's fsyncs).
"""

from __future__ import annotations

import os
import random
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from inmem.fs import OSFileSystem

# --- zipfian keys ---------------------------------------------------------------------------------


class Zipfian:
    """Ranks ``0 .. n-1`` drawn with P(rank i) proportional to ``1 / (i + 1) ** theta``.

    A precomputed cumulative distribution and :func:`bisect.bisect_left` on
    a uniform draw (no numpy): O(n) set-up, O(log n) per draw. Rank 0 is the
    hottest. Seeded, so every session draws the same sequence.
    With ``n = 1000, theta = 0.99`` rank 0 gets 12.9 % of draws, the top 10
    ranks 38 %, the top 100 69 %.
    """

    def __init__(self, n: int, theta: float, seed: int):
        if n < 1:
            raise ValueError("n must be >= 1")
        weights = [1.0 / (i + 1) ** theta for i in range(n)]
        total = sum(weights)
        cdf = []
        acc = 0.0
        for w in weights:
            acc += w
            cdf.append(acc / total)
        cdf[-1] = 1.0  # no draw can fall past the end through rounding
        self.n = n
        self.theta = theta
        self.cdf = cdf
        self._random = random.Random(seed).random

    def probability(self, rank: int) -> float:
        return self.cdf[rank] - (self.cdf[rank - 1] if rank else 0.0)

    def next(self) -> int:
        return bisect_left(self.cdf, self._random())

    def distinct_pair(self) -> tuple[int, int]:
        """Two different ranks (the second is redrawn until it differs)."""
        a = self.next()
        b = self.next()
        while b == a:
            b = self.next()
        return a, b


# --- one round of N threads -----------------------------------------------------------------------


class ThreadRound:
    """``n`` threads, each running ``work(i)``, released together by a :class:`threading.Barrier`.

    :meth:`start` starts the threads, which block at the barrier (``n + 1``
    parties: the main thread is the last); :meth:`run` releases them, joins
    them and returns the round's wall time: from the
    earliest ``perf_counter`` any thread took just after the barrier to the
    latest one taken when its work ended. Timing inside the threads avoids
    counting thread start-up and the main thread's wake-up (up to a 5 ms
    GIL switch interval) as work. The first exception of any thread is
    re-raised by :meth:`run`.
    """

    def __init__(self, n: int, work: Callable[[int], Any]):
        self.n = n
        self._work = work
        self._barrier = threading.Barrier(n + 1)
        self._starts = [0.0] * n
        self._ends = [0.0] * n
        self._errors: list[BaseException] = []
        self.results: list[Any] = [None] * n
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"bench-{i}") for i in range(n)]

    def _run(self, i: int) -> None:
        try:
            self._barrier.wait()
            self._starts[i] = time.perf_counter()
            self.results[i] = self._work(i)
            self._ends[i] = time.perf_counter()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self._errors.append(exc)
            self._barrier.abort()

    def start(self) -> ThreadRound:
        for t in self._threads:
            t.start()
        return self

    def run(self) -> float:
        try:
            self._barrier.wait()
        except threading.BrokenBarrierError:
            pass  # a thread failed before the start; its error is raised below
        for t in self._threads:
            t.join()
        if self._errors:
            raise self._errors[0]
        return max(self._ends) - min(self._starts)


# --- raw fsync ------------------------------------------------------------------------------------


class RawFsync:
    """The disk's raw fsync rate: append 100 bytes to a file and ``os.fsync`` it, ``n`` times.

    The file is opened ``O_APPEND`` and keeps growing across batches, as a
    WAL segment does (an fsync after an append also journals the new size).
    """

    def __init__(self, path: str):
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._payload = b"x" * 99 + b"\n"

    def batch(self, n: int) -> float:
        """Seconds per append+fsync, averaged over ``n`` consecutive ones."""
        fd, data, write, fsync = self._fd, self._payload, os.write, os.fsync
        t0 = time.perf_counter()
        for _ in range(n):
            write(fd, data)
            fsync(fd)
        return (time.perf_counter() - t0) / n

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


# --- counting the WAL's fsyncs ---------------------------------------------------------------------


class _CountingFile:
    __slots__ = ("_f", "_fs")

    def __init__(self, f: Any, fs: CountingFS):
        self._f = f
        self._fs = fs

    def write(self, data: Any) -> None:
        self._fs.writes += 1
        self._f.write(data)

    def sync(self) -> None:
        self._f.sync()
        self._fs.syncs += 1

    def truncate(self, size: int) -> None:
        self._f.truncate(size)

    def size(self) -> int:
        return self._f.size()

    def close(self) -> None:
        self._f.close()


class CountingFS(OSFileSystem):
    """The real disk, counting ``write`` and ``sync`` calls on WAL files (``Database.open(fs=...)``).

    Counts only files opened for appending or created (WAL segments and
    their temporaries); directory fsyncs are not counted. Counters are read
    between rounds (threads joined), so no lock.
    """

    def __init__(self) -> None:
        self.writes = 0
        self.syncs = 0

    def create(self, path: str) -> Any:
        return _CountingFile(super().create(path), self)

    def open_append(self, path: str) -> Any:
        return _CountingFile(super().open_append(path), self)


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if not n:
        return float("nan")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
