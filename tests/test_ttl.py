"""Time to live on KV values: expiry visible at once to every read (with an injected clock, no sleeps),
swept durably in ordinary commits, leases refreshed, bad ttl refused before anything is written, the
record format pinned, and a hypothesis model (KV with expiry vs a dict with deadlines).
"""

from __future__ import annotations

import math

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inmem import CorruptionError, Database, DatabaseReadOnly, InvalidArgument, RunClosed
from inmem.expiry import EXPIRING_HEAD, unwrap, wrap
from inmem.keys import TAG_EXPIRY, TAG_KV, run_id_bytes, run_prefix
from inmem.testing import kernel

from .conftest import Clock, assert_refused_unwritten




@pytest.fixture
def db(dbdir, clock):
    with Database.open(dbdir, durability="off", clock=clock, sweep_interval_s=None) as d:
        yield d


@pytest.fixture
def run(db):
    return db.begin_run("agent")


def test_expired_value_is_invisible_at_once(db, run, clock):
    db.kv.put(run, "lease", {"holder": "a"}, ttl=10)
    db.kv.put(run, "plain", 1)
    assert db.kv.get(run, "lease") == {"holder": "a"}
    assert db.kv.expires_at(run, "lease") == int((clock.t + 10) * 1e6)
    assert db.kv.expires_at(run, "plain") is None
    clock.t += 9.999999
    assert db.kv.get(run, "lease") == {"holder": "a"}
    clock.t += 0.000001  # the expiry instant itself: expired
    assert db.kv.get(run, "lease") is None and db.kv.get(run, "lease", "gone") == "gone"
    assert list(db.kv.scan(run)) == [("plain", 1)]
    assert db.kv.expires_at(run, "lease") is None
    with db.transaction() as tx:
        assert tx.kv.get(run, "lease") is None and list(tx.kv.scan(run)) == [("plain", 1)]
    assert db.kv.delete(run, "lease") is False  # absent: False, though the record goes all the same
    assert db.sweep() == 0


def test_a_new_put_replaces_the_expiry(db, run, clock):
    db.kv.put(run, "k", 1, ttl=5)
    db.kv.put(run, "k", 2)  # no ttl: it no longer expires
    clock.t += 10
    assert db.kv.get(run, "k") == 2
    assert db.sweep() == 0  # the stale index entry goes, the value stays
    assert db.kv.get(run, "k") == 2
    db.kv.put(run, "j", 1, ttl=5)
    db.kv.put(run, "j", 2, ttl=50)  # a longer lease
    clock.t += 10
    assert db.sweep() == 0 and db.kv.get(run, "j") == 2
    clock.t += 50
    assert db.sweep() == 1 and db.kv.get(run, "j") is None


def test_refresh_ttl_extends_the_lease(db, run, clock):
    db.kv.put(run, "session", "s", ttl=10)
    clock.t += 8
    assert db.kv.get(run, "session", refresh_ttl=True) == "s"  # now expires 10 s from here
    clock.t += 8
    assert db.kv.get(run, "session") == "s"
    assert db.sweep() == 0  # the first lease's index entry is stale: the record carries the new expiry
    clock.t += 2
    assert db.kv.get(run, "session", refresh_ttl=True) is None  # expired: nothing to refresh
    with db.transaction() as tx:
        tx.kv.put(run, "t", 1, ttl=1)
    clock.t += 0.5
    with db.transaction() as tx:
        assert tx.kv.get(run, "t", refresh_ttl=True) == 1
    clock.t += 0.9
    assert db.kv.get(run, "t") == 1
    db.end_run(run)
    with pytest.raises(RunClosed):
        db.kv.get(run, "t", refresh_ttl=True)
    assert db.kv.get(run, "t") == 1  # a plain read of an ended run still works


def test_sweep_deletes_in_commits_that_history_shows(db, run, clock):
    for i in range(5):
        db.kv.put(run, f"k{i}", i, ttl=1 + i)
    clock.t += 3.5  # k0, k1, k2 are due
    before = db.stats()["commit_version"]
    assert db.sweep() == 3
    last = db.history(run)[-1]
    assert last.version == before + 1
    assert sorted(op.key for op in last.ops if op.primitive == "kv" and op.kind == "delete") == ["k0", "k1", "k2"]
    assert [k for k, _ in db.kv.scan(run)] == ["k3", "k4"]
    assert db.sweep() == 0 and db.stats()["commit_version"] == before + 1  # nothing due: no commit
    other = db.begin_run("other")
    db.kv.put(other, "x", 1, ttl=1)
    clock.t += 100
    assert db.sweep(other) == 1 and db.sweep() == 2


def test_expiry_survives_reopen_and_sweep_is_durable(dbdir, clock):
    with Database.open(dbdir, clock=clock, sweep_interval_s=None) as db:
        run = db.begin_run("r")
        db.kv.put(run, "a", "x", ttl=10)
        db.kv.put(run, "b", "y", ttl=100)
    clock.t += 50
    with Database.open(dbdir, clock=clock, sweep_interval_s=None) as db:
        assert db.kv.get(run, "a") is None and db.kv.get(run, "b") == "y"  # absolute expiry, not restarted
        assert db.sweep() == 1
    with Database.open(dbdir, clock=clock, sweep_interval_s=None) as db:
        base = run_prefix(run_id_bytes(run), TAG_KV)
        assert kernel(db).get(base + b"a") is None  # really deleted
        exp = run_prefix(run_id_bytes(run), TAG_EXPIRY)
        assert len(kernel(db).scan(exp, exp + b"\xff" * 9)) == 1  # only b's index entry is left


def test_ended_runs_are_skipped_and_read_only_cannot_sweep(dbdir, clock):
    with Database.open(dbdir, clock=clock, sweep_interval_s=None) as db:
        run = db.begin_run("r")
        db.kv.put(run, "a", 1, ttl=1)
        db.end_run(run)
        clock.t += 5
        assert db.sweep() == 0 and db.kv.get(run, "a") is None
        with pytest.raises(RunClosed):
            db.sweep(run)
    with Database.open(dbdir, read_only=True, clock=clock) as ro:
        assert ro.kv.get(run, "a") is None
        with pytest.raises(DatabaseReadOnly):
            ro.sweep()


def test_background_sweeper(dbdir, clock):
    with Database.open(dbdir, clock=clock, sweep_interval_s=0.001) as db:
        run = db.begin_run("r")
        db.kv.put(run, "a", 1, ttl=1)
        clock.t += 2
        sweeper = db._sweeper  # noqa: SLF001 - the test waits on the thread's own condition, not a sleep
        n = sweeper.sweeps
        assert sweeper.wait_sweeps(n + 2, timeout=30)
        assert sweeper.swept == 1
    assert not sweeper._thread.is_alive()  # noqa: SLF001 - close() stopped it


@pytest.mark.parametrize("ttl", [0, -1, math.nan, math.inf, True, "10", 1e12, [1]])
def test_bad_ttl_refused_before_writing(db, dbdir, run, ttl):
    assert_refused_unwritten(db, dbdir, lambda: db.kv.put(run, "k", 1, ttl=ttl), InvalidArgument)
    with db.transaction() as tx:
        with pytest.raises(InvalidArgument):
            tx.kv.put(run, "k", 1, ttl=ttl)
        assert tx.kv.get(run, "k") is None


def test_bad_open_arguments(dbdir):
    for kwargs in (dict(clock=5), dict(sweep_interval_s=0), dict(sweep_interval_s=-1.0),
                   dict(sweep_interval_s=math.inf), dict(sweep_interval_s=True)):
        with pytest.raises(InvalidArgument):
            Database.open(dbdir, **kwargs)


def test_record_format_is_one_cbor_item(db, run, clock):
    db.kv.put(run, "k", {"v": [1, 2]}, ttl=2.5)
    stored = kernel(db).get(run_prefix(run_id_bytes(run), TAG_KV) + b"k")[1]
    assert stored.startswith(EXPIRING_HEAD)
    expires = int(clock.t * 1e6) + 2_500_000
    item = cbor2.loads(stored)
    assert item.tag == 26990 and list(item.value[:2]) == [expires, 2_500_000]
    assert cbor2.loads(stored[22:]) == {"v": [1, 2]} and item.value[2] == {"v": (1, 2)}  # cbor2 freezes a tagged item
    assert unwrap(stored)[:2] == (expires, 2_500_000)
    assert unwrap(b"\xa0") == (None, None, b"\xa0")
    with pytest.raises(CorruptionError):
        unwrap(EXPIRING_HEAD + b"\x00" * 5)


def test_a_damaged_head_is_corruption_not_data(db, run):
    base = run_prefix(run_id_bytes(run), TAG_KV)
    kernel(db).commit([(base + b"bad", wrap(b"\x01", 5, 5)[:10])], (run,))
    with pytest.raises(CorruptionError):
        db.kv.get(run, "bad")


_OPS = st.lists(st.one_of(
    st.tuples(st.just("put"), st.sampled_from("abc"), st.integers(0, 9), st.one_of(st.none(), st.integers(1, 5))),
    st.tuples(st.just("tick"), st.just(""), st.integers(0, 4), st.none()),
    st.tuples(st.just("get"), st.sampled_from("abc"), st.just(0), st.booleans()),
    st.tuples(st.just("delete"), st.sampled_from("abc"), st.just(0), st.none()),
    st.tuples(st.just("sweep"), st.just(""), st.just(0), st.none()),
), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_kv_with_expiry_matches_a_model(tmp_path_factory, ops):
    clock = Clock()
    model: dict[str, tuple[int, float | None, float | None]] = {}  # key -> (value, deadline, ttl)

    def live(k):
        v = model.get(k)
        return v is not None and (v[1] is None or clock.t < v[1])

    with Database.open(tmp_path_factory.mktemp("m"), durability="off", clock=clock, sweep_interval_s=None) as db:
        run = db.begin_run("r")
        for op, key, n, extra in ops:
            if op == "put":
                db.kv.put(run, key, n, ttl=extra)
                model[key] = (n, None if extra is None else clock.t + extra, extra)
            elif op == "tick":
                clock.t += n
            elif op == "get":
                got = db.kv.get(run, key, refresh_ttl=extra)
                assert got == (model[key][0] if live(key) else None)
                if extra and live(key) and model[key][2] is not None:
                    model[key] = (model[key][0], clock.t + model[key][2], model[key][2])
            elif op == "delete":
                assert db.kv.delete(run, key) == live(key)
                model.pop(key, None)
            else:
                due = sum(1 for k in model if model[k][1] is not None and not live(k))
                assert db.sweep() == due
                model = {k: v for k, v in model.items() if live(k)}
            assert dict(db.kv.scan(run)) == {k: v[0] for k, v in model.items() if live(k)}


def test_replay_history_fork_and_diff_see_values_not_wrappers(db, run, clock):
    db.kv.put(run, "k", {"a": 1}, ttl=10)
    db.kv.put(run, "p", 2)
    v_put = db.history(run)[-1].version
    assert [(op.primitive, op.key, op.kind, op.value) for c in db.history(run) for op in c.ops
            if op.primitive != "run"] == [
        ("kv", "k", "put", {"a": 1}), ("kv", "p", "put", 2)]  # the expiry index entry is no op of its own
    assert db.run_state(run).kv == {"k": {"a": 1}, "p": 2} and db.replay_run(run) == db.run_state(run)
    fork = db.fork_run(run)
    assert db.diff_runs(run, fork).is_empty()
    clock.t += 20
    assert db.run_state(run).kv == {"p": 2} and db.replay_run(run) == db.run_state(run)
    assert db.replay_run(run, at_version=v_put).kv == {"k": {"a": 1}, "p": 2}  # as it was at that commit
    assert db.run_state(fork).kv == {"p": 2}  # the fork copied the expiry as it was
    assert db.sweep() == 2  # one in each run
    assert [(op.primitive, op.key, op.kind) for op in db.history(fork)[-1].ops] == [("kv", "k", "delete")]


# --- documents ---------------------------------------------------------------------------------------


def test_document_with_a_ttl_expires_whole(db, run, clock):
    db.docs.set(run, "session", {"user": "ada", "turns": 0}, ttl=30)
    db.docs.increment(run, "session", "turns")  # other operations keep the expiry
    db.docs.set(run, "keep", {"x": 1})
    assert db.docs.get(run, "session") == {"user": "ada", "turns": 1}
    assert db.docs.names(run) == ["keep", "session"]
    clock.t += 30
    assert db.docs.get(run, "session") is None and db.docs.get(run, "session", "user") is None
    assert db.docs.names(run) == ["keep"]
    assert "session" not in db.run_state(run).docs and db.replay_run(run) == db.run_state(run)
    db.docs.increment(run, "session", "turns")  # on an expired document: it starts afresh, without expiry
    assert db.docs.get(run, "session") == {"turns": 1}
    clock.t += 1000
    assert db.docs.get(run, "session") == {"turns": 1}
    assert db.sweep() == 0  # the index entry is stale: the record no longer carries that expiry


def test_document_set_without_ttl_removes_the_expiry_and_sweep_deletes(db, run, clock):
    db.docs.set(run, "a", {"v": 1}, ttl=10)
    db.docs.set(run, "b", {"v": 2}, ttl=10)
    db.docs.set(run, "a", {"v": 3})  # whole-document set without ttl: no expiry any more
    clock.t += 11
    assert db.docs.get(run, "a") == {"v": 3} and db.docs.get(run, "b") is None
    assert db.sweep() == 1
    last = db.history(run)[-1]
    assert [(op.primitive, op.key) for op in last.ops] == [("docs", "b")]


def test_document_ttl_in_a_transaction_and_conflict_free_ops(db, run, clock):
    with db.transaction() as tx:
        tx.docs.set(run, "d", {"n": 0}, ttl=5)
        tx.docs.increment(run, "d", "n")
        assert tx.docs.get(run, "d") == {"n": 1}
    t1, t2 = db.transaction(), db.transaction()
    t1.docs.increment(run, "d", "n")
    t2.docs.increment(run, "d", "n")
    t1.commit()
    t2.commit()  # blind: no conflict, the expiry kept by both
    assert db.docs.get(run, "d") == {"n": 3}
    clock.t += 5
    assert db.docs.get(run, "d") is None


def test_document_ttl_refused_before_writing(db, dbdir, run):
    refuse = lambda fn, err: assert_refused_unwritten(db, dbdir, fn, err)  # noqa: E731
    refuse(lambda: db.docs.set(run, "d", {"a": 1}, ttl=0), InvalidArgument)
    refuse(lambda: db.docs.set(run, "d", {"a": 1}, ttl=-5), InvalidArgument)
    refuse(lambda: db.docs.set(run, "d", 1, path="a.b", ttl=5), InvalidArgument)  # whole documents only


def test_document_ttl_survives_reopen_and_fork(dbdir, clock):
    with Database.open(dbdir, clock=clock, sweep_interval_s=None) as db:
        run = db.begin_run("r")
        db.docs.set(run, "d", {"a": 1}, ttl=100)
        fork = db.fork_run(run)
    clock.t += 50
    with Database.open(dbdir, clock=clock, sweep_interval_s=None) as db:
        assert db.docs.get(run, "d") == {"a": 1} and db.docs.get(fork, "d") == {"a": 1}
        clock.t += 50
        assert db.docs.get(fork, "d") is None
        assert db.sweep() == 2


def test_re_putting_and_refreshing_a_lease_keeps_one_index_entry(db, run, clock):
    """A session renewed every second for a day must not leave 86,400 index entries behind."""
    exp = run_prefix(run_id_bytes(run), TAG_EXPIRY)

    def entries():
        return len(kernel(db).scan(exp, exp + b"\xff" * 9))

    for _ in range(50):
        db.kv.put(run, "session", "s", ttl=3600)
        clock.t += 1
    assert entries() == 1
    for _ in range(50):
        db.kv.get(run, "session", refresh_ttl=True)
        clock.t += 1
    assert entries() == 1
    with db.transaction() as tx:
        tx.kv.put(run, "session", "t", ttl=10)
        tx.kv.put(run, "session", "u", ttl=20)  # its own earlier write: that entry is dropped too
    assert entries() == 1
    clock.t += 20
    assert db.sweep() == 1 and entries() == 0


def test_run_counts_leave_out_expired_values(db, run, clock):
    db.kv.put(run, "a", 1, ttl=5)
    db.kv.put(run, "b", 2)
    assert db.runs.get(run).counts["kv"] == 2
    clock.t += 5
    assert db.runs.get(run).counts["kv"] == 1  # expired: not counted, swept or not
    with db.transaction() as tx:
        assert tx.runs.get(run).counts["kv"] == 1
    db.sweep()
    assert db.runs.get(run).counts["kv"] == 1
