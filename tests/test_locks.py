"""CommitLock: mutual exclusion under real threads, and the contention it exists for."""

from __future__ import annotations

import threading
import time

from inmem.locks import CommitLock


def test_commit_lock_excludes_even_when_the_holder_is_preempted():
    lock = CommitLock()
    counter = [0]
    inside = [0]
    overlaps = []

    def worker():
        for _ in range(2000):
            with lock:
                inside[0] += 1
                if inside[0] != 1:
                    overlaps.append(inside[0])
                value = counter[0]
                time.sleep(0)  # force a thread switch inside the critical section
                counter[0] = value + 1
                inside[0] -= 1

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter[0] == 6 * 2000 and overlaps == []
    assert not lock.locked()


def test_commit_lock_acquire_and_release():
    lock = CommitLock()
    assert lock.acquire() is True and lock.locked()
    lock.release()
    assert not lock.locked()
