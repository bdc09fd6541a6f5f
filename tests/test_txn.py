"""Transactions: the public contract and the classic anomalies, as explicit interleavings.

Each scenario drives two transactions step by step in one thread (after
toydb's ``anomaly_*`` scripts), so every interleaving is exact and
repeatable. Concurrency under real threads and the serializability model
test live in test_txn_bank.py and test_txn_serial.py.
"""

from __future__ import annotations

import itertools
import shutil

import pytest

from inmem import (
    Database,
    InvalidArgument,
    InvalidValue,
    RunClosed,
    TransactionClosed,
    TransactionConflict,
)
from tests.conftest import dir_bytes


@pytest.fixture
def db(dbdir):
    d = Database.open(dbdir, durability="strict")
    yield d
    d.close()


@pytest.fixture
def run(db):
    return db.begin_run("tx")


# --- the contract ------------------------------------------------------------------------


def test_commit_on_exit_and_read_your_own_writes(db, run):
    with db.transaction() as tx:
        tx.kv.put(run, "a", 1)
        assert tx.kv.get(run, "a") == 1
        assert db.kv.get(run, "a") is None  # not visible outside before commit
        tx.kv.put(run, "a", 2)
        assert tx.kv.delete(run, "a") is True
        assert tx.kv.get(run, "a", "gone") == "gone"
        tx.kv.put(run, "b", [1, 2])
        assert [k for k, _ in tx.kv.scan(run)] == ["b"]
    assert db.kv.get(run, "a") is None and db.kv.get(run, "b") == [1, 2]
    assert tx.finished and tx.commit_version == db.stats()["commit_version"]


def test_exception_rolls_back_and_propagates(db, run):
    db.kv.put(run, "a", "before")
    with pytest.raises(ZeroDivisionError):
        with db.transaction() as tx:
            tx.kv.put(run, "a", "during")
            1 / 0
    assert db.kv.get(run, "a") == "before"
    assert tx.finished


def test_explicit_commit_and_rollback(db, run):
    tx = db.transaction()
    tx.kv.put(run, "x", 1)
    tx.rollback()
    assert db.kv.get(run, "x") is None
    tx = db.transaction()
    tx.kv.put(run, "x", 2)
    tx.commit()
    assert db.kv.get(run, "x") == 2


@pytest.mark.parametrize("how", ["commit", "rollback", "conflict"])
def test_a_finished_transaction_refuses_everything(db, run, how):
    db.kv.put(run, "k", 0)
    tx = db.transaction()
    tx.kv.put(run, "k", tx.kv.get(run, "k") + 1)
    if how == "conflict":
        db.kv.put(run, "k", 5)
        with pytest.raises(TransactionConflict):
            tx.commit()
    else:
        getattr(tx, how)()
    for call in (lambda: tx.kv.get(run, "k"), lambda: tx.kv.put(run, "k", 1), lambda: tx.kv.delete(run, "k"),
                 lambda: tx.kv.scan(run), tx.commit, tx.rollback):
        with pytest.raises(TransactionClosed):
            call()
    with pytest.raises(TransactionClosed):
        with tx:
            pass


def test_read_only_transaction_writes_nothing_and_never_conflicts(db, run, dbdir):
    db.kv.put(run, "k", 1)
    with db.transaction() as tx:
        assert tx.kv.get(run, "k") == 1
        assert list(tx.kv.scan(run)) == [("k", 1)]
        db.kv.put(run, "k", 2)  # a concurrent commit to what it read and scanned: no conflict
    assert tx.commit_version is None and tx.read_only
    db.sync()
    before, version = dir_bytes(dbdir), db.stats()["commit_version"]
    with db.transaction() as tx:
        assert tx.kv.get(run, "k") == 2
    db.sync()
    assert dir_bytes(dbdir) == before and db.stats()["commit_version"] == version


def test_a_transaction_is_one_wal_record_across_runs(db, dbdir):
    a, b = db.begin_run("a"), db.begin_run("b")
    with db.transaction() as tx:
        for i in range(50):
            tx.kv.put(a, f"k{i}", i)
            tx.kv.put(b, f"k{i}", -i)
    version = db.stats()["commit_version"]
    db.close()
    with Database.open(dbdir) as again:
        assert again.stats()["recovery"]["records"] == version == 3  # two begin_runs + one transaction
        assert dict(again.kv.scan(a)) == {f"k{i}": i for i in range(50)}
        assert dict(again.kv.scan(b)) == {f"k{i}": -i for i in range(50)}


def test_bad_input_in_a_transaction_raises_before_anything_is_written(db, run):
    with db.transaction() as tx:
        with pytest.raises(InvalidValue):
            tx.kv.put(run, "k", object())
        tx.kv.put(run, "ok", 1)
    assert db.kv.get(run, "k") is None and db.kv.get(run, "ok") == 1


def test_transact_returns_and_retries(db, run):
    db.kv.put(run, "n", 0)
    calls = []

    def bump(tx):
        calls.append(tx.begin_version)
        n = tx.kv.get(run, "n")
        if len(calls) == 1:
            db.kv.put(run, "n", 100)  # someone else wins the first attempt
        tx.kv.put(run, "n", n + 1)
        return n + 1

    assert db.transact(bump) == 101
    assert len(calls) == 2 and calls[1] > calls[0]
    assert db.kv.get(run, "n") == 101


def test_transact_gives_up_after_retries_with_the_last_conflict(db, run):
    db.kv.put(run, "n", 0)
    attempts = []

    def always_loses(tx):
        attempts.append(1)
        tx.kv.put(run, "n", tx.kv.get(run, "n") + 1)
        db.kv.put(run, "n", -len(attempts))

    with pytest.raises(TransactionConflict) as info:
        db.transact(always_loses, retries=3)
    assert len(attempts) == 4
    assert info.value.key == "n" and info.value.run == run
    with pytest.raises(InvalidArgument):
        db.transact(always_loses, retries=-1)
    assert db.stats()["active_transactions"] == 0


def test_transact_does_not_retry_other_errors(db, run):
    attempts = []

    def boom(tx):
        attempts.append(1)
        tx.kv.put(run, "x", 1)
        raise KeyError("mine")

    with pytest.raises(KeyError):
        db.transact(boom)
    assert attempts == [1] and db.kv.get(run, "x") is None


def test_conflict_names_run_key_and_versions(db, run):
    db.kv.put(run, "counter", 0)
    t1 = db.transaction()
    t1.kv.get(run, "counter")
    t1.kv.put(run, "other", 1)
    db.kv.put(run, "counter", 7)
    winner = db.stats()["commit_version"]
    with pytest.raises(TransactionConflict) as info:
        t1.commit()
    e = info.value
    assert (e.run, e.key, e.begin_version, e.conflict_version) == (run, "counter", winner - 1, winner)
    assert "counter" in str(e) and run in str(e)
    assert db.stats()["conflicts"] == 1


def test_writing_to_a_run_ended_meanwhile_conflicts_then_is_refused(db):
    r = db.begin_run()
    t1 = db.transaction()
    t1.kv.put(r, "k", 1)
    db.end_run(r)
    with pytest.raises(TransactionConflict, match="run record"):
        t1.commit()
    with pytest.raises(RunClosed):
        db.transact(lambda tx: tx.kv.put(r, "k", 1))
    assert db.kv.get(r, "k") is None


# --- anomalies ------------------------------------------------------------------------------


def _interleavings(a: list, b: list):
    """Every merge of two step lists that keeps each list's own order."""
    n = len(a) + len(b)
    for positions in itertools.combinations(range(n), len(a)):
        out, ia, ib = [], iter(a), iter(b)
        for i in range(n):
            out.append(next(ia) if i in positions else next(ib))
        yield out


def test_lost_update_is_prevented_in_every_interleaving(dbdir):
    """Two read-increment-write transactions: the counter ends equal to the number that committed."""
    seen = 0
    for order in _interleavings(["b1", "r1", "w1", "c1"], ["b2", "r2", "w2", "c2"]):
        with Database.open(dbdir, durability="off") as db:
            run = db.begin_run()
            db.kv.put(run, "counter", 0)
            tx, val, committed, conflicted = {}, {}, [], []
            for step in order:
                op, i = step[0], step[1]
                if op == "b":
                    tx[i] = db.transaction()
                elif op == "r":
                    val[i] = tx[i].kv.get(run, "counter")
                elif op == "w":
                    tx[i].kv.put(run, "counter", val[i] + 1)
                else:
                    try:
                        tx[i].commit()
                        committed.append(i)
                    except TransactionConflict:
                        conflicted.append(i)
            assert db.kv.get(run, "counter") == len(committed), order  # no update lost
            overlapped = order.index("b2") < order.index("c1") and order.index("b1") < order.index("c2")
            if overlapped:
                assert len(committed) == 1 and len(conflicted) == 1, order
            else:
                assert len(committed) == 2, order
            seen += 1
        shutil.rmtree(dbdir)
    assert seen == 70


def test_write_skew_on_call_doctors_is_prevented(db, run):
    """Alice and Bob both on call; each goes off call if the other is on. SI alone lets both go."""
    db.kv.put(run, "oncall/alice", True)
    db.kv.put(run, "oncall/bob", True)
    t1, t2 = db.transaction(), db.transaction()
    for tx, me in ((t1, "alice"), (t2, "bob")):
        on = sum(1 for _, v in tx.kv.scan(run, "oncall/") if v)
        if on >= 2:
            tx.kv.put(run, f"oncall/{me}", False)
    t1.commit()
    with pytest.raises(TransactionConflict):
        t2.commit()
    assert sum(1 for _, v in db.kv.scan(run, "oncall/") if v) == 1


def test_write_skew_with_point_reads_is_prevented(db, run):
    db.kv.put(run, "x", 1)
    db.kv.put(run, "y", 1)
    t1, t2 = db.transaction(), db.transaction()
    if t1.kv.get(run, "x") + t1.kv.get(run, "y") >= 2:
        t1.kv.put(run, "x", 0)
    if t2.kv.get(run, "x") + t2.kv.get(run, "y") >= 2:
        t2.kv.put(run, "y", 0)
    t1.commit()
    with pytest.raises(TransactionConflict):
        t2.commit()


@pytest.mark.parametrize("change", ["insert", "delete", "update"])
def test_phantom_in_a_scanned_prefix_conflicts(db, run, change):
    db.kv.put(run, "task/1", "open")
    db.kv.put(run, "task/2", "open")
    t1 = db.transaction()
    n = len(list(t1.kv.scan(run, "task/")))
    t1.kv.put(run, "summary", n)
    if change == "insert":
        db.kv.put(run, "task/3", "open")
    elif change == "delete":
        db.kv.delete(run, "task/1")
    else:
        db.kv.put(run, "task/2", "done")
    with pytest.raises(TransactionConflict, match="range this transaction scanned"):
        t1.commit()


def test_writes_outside_what_a_transaction_touched_do_not_conflict(db, run):
    db.kv.put(run, "task/1", "open")
    t1 = db.transaction()
    list(t1.kv.scan(run, "task/"))
    t1.kv.get(run, "config")
    t1.kv.put(run, "summary", 1)
    db.kv.put(run, "tasks", "not in the range task/")
    db.kv.put(run, "zzz", 1)
    other = db.begin_run()
    db.kv.put(other, "task/9", "another run's key")
    t1.commit()
    assert db.kv.get(run, "summary") == 1


def test_read_of_a_missing_key_conflicts_when_it_appears(db, run):
    t1 = db.transaction()
    assert t1.kv.get(run, "lock") is None
    t1.kv.put(run, "lock", "t1")
    t2 = db.transaction()
    assert t2.kv.get(run, "lock") is None
    t2.kv.put(run, "lock", "t2")
    t2.commit()
    with pytest.raises(TransactionConflict):
        t1.commit()
    assert db.kv.get(run, "lock") == "t2"


def test_delete_and_recreate_after_the_snapshot_conflicts(db, run):
    t1 = db.transaction()
    assert t1.kv.get(run, "k") is None
    t1.kv.put(run, "other", 1)
    db.kv.put(run, "k", 1)
    db.kv.delete(run, "k")  # gone again: but it was written after the snapshot
    with pytest.raises(TransactionConflict):
        t1.commit()


# --- snapshots and old versions ----------------------------------------------------------------


def test_snapshot_reads_see_the_begin_state(db, run):
    db.kv.put(run, "a", "a1")
    db.kv.put(run, "b", "b1")
    db.kv.put(run, "c", "c1")
    tx = db.transaction()
    db.kv.put(run, "a", "a2")
    db.kv.delete(run, "b")
    db.kv.put(run, "d", "d1")
    db.kv.delete(run, "c")
    db.kv.put(run, "c", "c2")
    assert tx.kv.get(run, "a") == "a1"
    assert tx.kv.get(run, "b") == "b1"
    assert tx.kv.get(run, "c") == "c1"
    assert tx.kv.get(run, "d") is None
    assert list(tx.kv.scan(run)) == [("a", "a1"), ("b", "b1"), ("c", "c1")]
    assert db.stats()["retained_versions"] > 0
    tx.rollback()
    assert db.stats()["retained_versions"] == 0
    assert list(db.kv.scan(run)) == [("a", "a2"), ("c", "c2"), ("d", "d1")]


def test_a_later_snapshot_does_not_see_a_deleted_keys_old_value(db, run):
    db.kv.put(run, "k", "old")
    t1 = db.transaction()  # keeps "old" retained
    db.kv.delete(run, "k")
    t2 = db.transaction()  # began after the delete
    assert t1.kv.get(run, "k") == "old"
    assert t2.kv.get(run, "k") is None
    assert list(t2.kv.scan(run)) == []
    t1.rollback()
    t2.rollback()


def test_old_versions_are_collected_as_the_oldest_snapshot_advances(db, run):
    db.kv.put(run, "k", 0)
    t1 = db.transaction()
    for i in range(1, 51):
        db.kv.put(run, "k", i)
    t2 = db.transaction()
    for i in range(51, 101):
        db.kv.put(run, "k", i)
    held_by_both = db.stats()["retained_versions"]
    t1.rollback()
    after_t1 = db.stats()["retained_versions"]
    assert after_t1 < held_by_both
    assert after_t1 <= 51  # only what t2 (at k=50) may still read
    assert t2.kv.get(run, "k") == 50
    t2.rollback()
    assert db.stats()["retained_versions"] == 0 and db.stats()["active_transactions"] == 0


def test_no_versions_are_retained_without_transactions(db, run):
    for i in range(100):
        db.kv.put(run, "k", i)
        db.kv.delete(run, "k")
    assert db.stats()["retained_versions"] == 0


def test_a_write_set_too_large_for_one_record_is_refused_before_writing(db, run, dbdir, monkeypatch):
    import inmem.wal.format as wal_format

    monkeypatch.setattr(wal_format, "MAX_PAYLOAD_BYTES", 10_000)
    db.sync()
    before = dir_bytes(dbdir)
    tx = db.transaction()
    for i in range(20):
        tx.kv.put(run, f"k{i}", "x" * 1000)
    with pytest.raises(InvalidArgument, match="split it"):
        tx.commit()
    db.sync()
    assert dir_bytes(dbdir) == before and db.kv.get(run, "k0") is None
    assert db.stats()["active_transactions"] == 0


def test_an_abandoned_transaction_does_not_pin_old_versions(db, run):
    import gc
    import warnings

    db.kv.put(run, "k", 0)
    tx = db.transaction()
    tx.kv.put(run, "never", 1)
    for i in range(10):
        db.kv.put(run, "k", i)
    assert db.stats()["retained_versions"] > 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del tx
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    with db.transaction() as t2:  # the next begin releases the abandoned snapshot
        assert t2.kv.get(run, "never") is None
    assert db.stats()["retained_versions"] == 0 and db.stats()["active_transactions"] == 0


def test_a_commit_does_not_retain_versions_for_its_own_snapshot(db, run):
    db.kv.put(run, "k", 0)
    for _ in range(20):
        with db.transaction() as tx:
            tx.kv.put(run, "k", tx.kv.get(run, "k") + 1)
        assert db.stats()["retained_versions"] == 0
    assert db.kv.get(run, "k") == 20


def test_last_in_a_transaction_returns_its_own_overwrite_of_the_last_key(dbdir):
    from inmem.codec import decode_value
    from inmem.keys import TAG_KV, prefix_end, run_id_bytes, run_prefix

    with Database.open(dbdir, durability="off") as db:
        run = db.begin_run()
        db.kv.put(run, "a", 1)
        db.kv.put(run, "b", 1)
        lo = run_prefix(run_id_bytes(run), TAG_KV)
        with db.transaction() as tx:
            tx.kv.put(run, "b", 2)  # the last key of the range, overwritten by the transaction itself
            key, value = tx.last(lo, prefix_end(lo))
            assert key == lo + b"b" and decode_value(value) == 2
