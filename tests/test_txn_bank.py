"""Transactions under real concurrency: conservation, snapshot stability, version collection.

* **Bank**: 100 accounts of 1,000 each; 8 threads make 20,000 random transfers
  with ``db.transact`` while a reader repeatedly checks, in read-only
  transactions, that the total is 100,000. Money is conserved, every transfer
  either committed or gave up after its retries, the database counted exactly
  the committed ones, and the state survives close and reopen.
* **Snapshot stability**: a long read-only transaction scans 10,000 keys three
  times while a writer keeps committing; the three scans are identical and
  sum to the invariant, though the live state has moved on.
* **Collection with overlapping transactions**: versions only an older
  transaction could read are dropped when it finishes, while a younger one
  still reads its snapshot; nothing is retained once both are done.

No sleeps: threads are joined, and hand-offs use ``threading.Condition``
(with generous timeouts so a dead writer fails the test instead of hanging it).
"""

from __future__ import annotations

import random
import threading
from typing import Any

from inmem import Database, TransactionConflict

WAIT = 60.0  # seconds: a bound on hand-offs that normally take milliseconds


class Failures:
    """Exceptions raised in worker threads, re-raised in the test thread."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()

    def wrap(self, fn: Any) -> Any:
        def run(*args: Any) -> None:
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - reported in the main thread
                with self.lock:
                    self.errors.append(e)

        return run

    def check(self) -> None:
        if self.errors:
            raise self.errors[0]


def kv_total(items: list[tuple[str, int]]) -> int:
    return sum(v for _, v in items)


# --- bank -------------------------------------------------------------------------------------

ACCOUNTS = 100
START = 1_000
TOTAL = ACCOUNTS * START
THREADS = 8
PER_THREAD = 2_500
RETRIES = 25


def test_bank_transfers_conserve_money(dbdir: str) -> None:
    db = Database.open(dbdir, durability="batched")
    try:
        run = db.begin_run("bank")
        names = [f"acct/{i:03d}" for i in range(ACCOUNTS)]
        for name in names:
            db.kv.put(run, name, START)
        seeded = db.stats()

        failures = Failures()
        committed = [0] * THREADS
        gave_up = [0] * THREADS
        skipped = [0] * THREADS
        writers_done = threading.Event()
        reader_checks = [0]
        reader_checks_during = [0]

        def worker(t: int) -> None:
            rng = random.Random(1000 + t)
            for _ in range(PER_THREAD):
                src, dst = rng.sample(names, 2)
                amount = rng.randint(1, 600)

                def transfer(tx: Any) -> bool:
                    a = tx.kv.get(run, src)
                    b = tx.kv.get(run, dst)
                    if a < amount:
                        # Insufficient: no move, but still a write transaction (the balances are
                        # written back unchanged) so each committed transfer is one commit.
                        tx.kv.put(run, src, a)
                        tx.kv.put(run, dst, b)
                        return False
                    tx.kv.put(run, src, a - amount)
                    tx.kv.put(run, dst, b + amount)
                    return True

                try:
                    moved = db.transact(transfer, retries=RETRIES)
                except TransactionConflict:
                    gave_up[t] += 1
                else:
                    committed[t] += 1
                    if not moved:
                        skipped[t] += 1

        def reader() -> None:
            while True:
                during = not writers_done.is_set()
                with db.transaction() as tx:
                    items = list(tx.kv.scan(run, "acct/"))
                    # Lock-free point reads of the same snapshot agree with the scan.
                    points = [(name, tx.kv.get(run, name)) for name in names]
                assert points == items, f"point reads differ from the scan at snapshot {tx.begin_version}"
                assert tx.commit_version is None  # read-only: nothing committed
                assert len(items) == ACCOUNTS, len(items)
                assert all(v >= 0 for _, v in items), "a negative balance"
                assert kv_total(items) == TOTAL, f"total {kv_total(items)} at snapshot {tx.begin_version}"
                reader_checks[0] += 1
                reader_checks_during[0] += during
                if not during:
                    return

        threads = [threading.Thread(target=failures.wrap(worker), args=(t,)) for t in range(THREADS)]
        rthread = threading.Thread(target=failures.wrap(reader))
        rthread.start()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        writers_done.set()
        rthread.join()
        failures.check()

        stats = db.stats()
        ok, lost = sum(committed), sum(gave_up)
        assert ok + lost == THREADS * PER_THREAD
        assert stats["commits"] - seeded["commits"] == ok
        assert stats["commit_version"] - seeded["commit_version"] == ok
        assert stats["conflicts"] - seeded["conflicts"] >= lost * (RETRIES + 1)
        assert lost <= (THREADS * PER_THREAD) // 100, f"{lost} transfers gave up after {RETRIES} retries"
        assert reader_checks_during[0] >= 5, f"only {reader_checks_during[0]} reader checks ran during the transfers"
        assert stats["active_transactions"] == 0
        assert stats["retained_versions"] == 0

        before = dict(db.kv.scan(run, "acct/"))
        assert sorted(before) == names
        assert sum(before.values()) == TOTAL
        assert min(before.values()) >= 0
        assert before != dict.fromkeys(names, START)  # money really moved
    finally:
        db.close()

    db = Database.open(dbdir, durability="batched")
    try:
        after = dict(db.kv.scan(run, "acct/"))
        assert after == before
        assert sum(after.values()) == TOTAL
        assert db.stats()["commit_version"] == stats["commit_version"]
    finally:
        db.close()


# --- snapshot stability --------------------------------------------------------------------------

NKEYS = 10_000
VALUE = 10


def test_long_read_only_transaction_sees_one_snapshot(dbdir: str) -> None:
    db = Database.open(dbdir, durability="batched")
    try:
        run = db.begin_run("snap")
        names = [f"k/{i:05d}" for i in range(NKEYS)]
        for start in range(0, NKEYS, 1_000):
            with db.transaction() as tx:
                for name in names[start : start + 1_000]:
                    tx.kv.put(run, name, VALUE)
        assert sum(v for _, v in db.kv.scan(run, "k/")) == NKEYS * VALUE

        failures = Failures()
        progress = threading.Condition()
        done = [0]  # transfers committed by the writer
        stop = threading.Event()

        def writer() -> None:
            rng = random.Random(7)
            try:
                while not stop.is_set():
                    src, dst = rng.sample(names, 2)

                    def move(tx: Any) -> None:
                        a = tx.kv.get(run, src)
                        b = tx.kv.get(run, dst)
                        tx.kv.put(run, src, a - 1)
                        tx.kv.put(run, dst, b + 1)

                    db.transact(move, retries=100)
                    with progress:
                        done[0] += 1
                        progress.notify_all()
            finally:
                with progress:
                    done[0] = -(10**9) if not stop.is_set() else done[0]  # a dead writer wakes the waiter
                    progress.notify_all()

        def wait_for_commits(n: int) -> None:
            with progress:
                ok = progress.wait_for(lambda: done[0] >= n or done[0] < 0, timeout=WAIT)
            failures.check()
            assert ok and done[0] >= n, f"the writer committed {done[0]} transfers, waited for {n}"

        wthread = threading.Thread(target=failures.wrap(writer))
        wthread.start()
        try:
            wait_for_commits(50)
            long_tx = db.transaction()
            opened_at = done[0]
            scans = []
            sample_rng = random.Random(11)
            for i in range(3):
                if i:
                    with progress:
                        target = done[0] + 100
                    wait_for_commits(target)
                items = list(long_tx.kv.scan(run, "k/"))
                assert len(items) == NKEYS
                for name, value in sample_rng.sample(items, 500):  # lock-free point reads agree
                    assert long_tx.kv.get(run, name) == value, name
                assert kv_total(items) == NKEYS * VALUE, f"scan {i} sums to {kv_total(items)}"
                scans.append(items)
            assert scans[0] == scans[1] == scans[2], "the long transaction's scans differ"
            assert done[0] >= opened_at + 200
            live = list(db.kv.scan(run, "k/"))
            assert kv_total(live) == NKEYS * VALUE
            assert live != scans[0], "no commit happened during the long transaction"
        finally:
            stop.set()
            wthread.join()
        failures.check()

        stats = db.stats()
        assert stats["active_transactions"] == 1
        assert stats["retained_versions"] > 0  # what the long transaction can still read
        again = list(long_tx.kv.scan(run, "k/"))
        assert again == scans[0]  # still its snapshot after the writer stopped
        long_tx.commit()
        assert long_tx.commit_version is None
        stats = db.stats()
        assert stats["active_transactions"] == 0
        assert stats["retained_versions"] == 0
        assert kv_total(list(db.kv.scan(run, "k/"))) == NKEYS * VALUE
    finally:
        db.close()


# --- collection with overlapping transactions ------------------------------------------------------

ROUNDS = 100


def test_versions_only_an_older_transaction_reads_are_collected(dbdir: str) -> None:
    db = Database.open(dbdir, durability="batched")
    try:
        run = db.begin_run("gc")
        db.kv.put(run, "x", -1)
        db.kv.put(run, "y", -1)
        db.kv.put(run, "z", "untouched")
        assert db.stats()["retained_versions"] == 0

        def overwrite(start: int) -> None:
            for i in range(start, start + ROUNDS):
                db.kv.put(run, "x", i)  # x: a chain of overwrites
                if i % 2:  # y: deleted and re-created (tombstones)
                    assert db.kv.delete(run, "y")
                else:
                    db.kv.put(run, "y", i)

        t1 = db.transaction()
        assert t1.kv.get(run, "x") == -1
        overwrite(0)  # x = 99, y absent (99 is odd)
        t2 = db.transaction()
        assert t2.kv.get(run, "x") == ROUNDS - 1
        assert t2.kv.get(run, "y") is None
        overwrite(ROUNDS)  # x = 199, y absent
        with_both = db.stats()["retained_versions"]
        assert with_both > 0

        # Both snapshots read correctly with the chains in place.
        assert t1.kv.get(run, "x") == -1 and t1.kv.get(run, "y") == -1
        assert list(t1.kv.scan(run)) == [("x", -1), ("y", -1), ("z", "untouched")]
        assert list(t2.kv.scan(run)) == [("x", ROUNDS - 1), ("z", "untouched")]

        t1.rollback()
        stats = db.stats()
        assert stats["active_transactions"] == 1
        with_t2 = stats["retained_versions"]
        # Versions superseded by the first ROUNDS commits to x were readable only by t1 (at least
        # ROUNDS of them: x's -1 and 0..ROUNDS-2); they must be gone now.
        assert with_t2 <= with_both - ROUNDS, (with_both, with_t2)
        assert with_t2 > 0  # t2 still needs its x and y versions

        # t2 still reads its snapshot, by point reads and by scans.
        assert t2.kv.get(run, "x") == ROUNDS - 1
        assert t2.kv.get(run, "y") is None
        assert t2.kv.get(run, "z") == "untouched"
        assert list(t2.kv.scan(run)) == [("x", ROUNDS - 1), ("z", "untouched")]
        assert db.kv.get(run, "x") == 2 * ROUNDS - 1 and db.kv.get(run, "y") is None

        t2.commit()
        assert t2.commit_version is None
        stats = db.stats()
        assert stats["active_transactions"] == 0
        assert stats["retained_versions"] == 0
        assert list(db.kv.scan(run)) == [("x", 2 * ROUNDS - 1), ("z", "untouched")]
    finally:
        db.close()
