"""The change feed, ``db.watch`` (issue 16): every committed write, in commit order, each exactly once.

Every delivered stream is compared with the WAL itself, through ``db.history`` (one
:class:`inmem.Commit` per commit record): same versions, same ops, same order.
"""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from inmem import Change, Database, DatabaseClosed, HistoryUnavailable, InvalidArgument, Watch
from inmem.fs import OSFileSystem

from .conftest import acks_until_sigkill


def _expected(db, run, since=1):
    """``(version, primitive, key, op)`` of every write to ``run`` with version >= since, from the WAL."""
    return [(c.version, op.primitive, op.key, op.kind) for c in db.history(run) if c.version >= since
            for op in c.ops]


def _seen(changes):
    return [(c.version, c.primitive, c.key, c.op) for c in changes]


def _drain(watch):
    return list(iter(watch.poll, None))


def test_four_writers_two_watchers_one_resuming_mid_stream(dbdir):
    with Database.open(dbdir, durability="off") as db:
        run = db.begin_run("w")
        first = db.watch(from_version=1)
        per = 150

        def writer(t):
            for i in range(per):
                if i % 5 == 0:
                    with db.transaction() as tx:
                        tx.kv.put(run, f"t{t}/{i}", i)
                        tx.kv.put(run, f"t{t}/last", i)
                else:
                    db.kv.put(run, f"t{t}/{i}", i)

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        got = []
        while (c := first.next()).version < 100:  # consume while the writers run
            got.append(c)
        got.append(c)
        resume_at = got[-1].version - 40  # a second watcher resumes from a version mid-stream, racing the writers
        second = db.watch(from_version=resume_at)
        for t in threads:
            t.join()
        got += _drain(first)
        resumed = _drain(second)
        assert _seen(got) == _expected(db, run)
        assert _seen(resumed) == _expected(db, run, since=resume_at)
        assert len({(c.version, c.key) for c in got}) == len(got) == 4 * per + 4 * per // 5 + 1
        versions = [c.version for c in got]
        assert versions == sorted(versions) and set(versions) == set(range(1, db.stats()["commit_version"] + 1))


CHILD = r'''
import sys, threading
from tests.checkout import use_checkout
use_checkout()  # this checkout's engine/ (db.watch may not be in the installed inmem yet)
from inmem import Database

db = Database.open(sys.argv[1], durability="strict")
(run,) = [r.id for r in db.runs.list(name="feed")]
watch = db.watch()
out = threading.Lock()

def say(line):
    with out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

def writer(t):
    for i in range(400):
        db.kv.put(run, "%d-%d" % (t, i), i)
        say("ack w %d-%d" % (t, i))

def watcher():
    for change in watch:
        say("ack s %d %s" % (change.version, change.key))

threading.Thread(target=watcher, daemon=True).start()
threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("done", flush=True)
sys.stdin.read()
'''


def test_sigkill_the_writer_then_resume_from_the_last_version_seen(dbdir):
    with Database.open(dbdir) as db:
        run = db.begin_run("feed")
        start = db.stats()["commit_version"] + 1
    acks = acks_until_sigkill(CHILD, dbdir, 600)
    seen = [(int(a[1]), a[2].decode()) for a in acks if a[0] == b"s"]
    written = {a[1].decode() for a in acks if a[0] == b"w"}
    assert seen, "the child's watcher saw nothing before the kill"
    with Database.open(dbdir) as db, db.watch(from_version=seen[-1][0] + 1) as watch:
        resumed = [(c.version, c.key) for c in _drain(watch)]
        every = [(c.version, op.key) for c in db.history(run) for op in c.ops if c.version >= start]
    assert [v for v, _ in seen] == sorted(v for v, _ in seen)
    assert seen + resumed == every, "a change was missed or seen twice across the kill"
    assert written <= {k for _, k in every}, "an acknowledged put is missing from the feed"


def test_filters_by_run_primitive_and_prefix(dbdir):
    with Database.open(dbdir) as db:
        a, b = db.begin_run("a"), db.begin_run("b")
        by_run = db.watch(run=a)
        by_prim = db.watch(primitive="state")
        by_prefix = db.watch(primitive="kv", prefix="user/")
        by_bytes = db.watch(run=b, prefix=b"doc")
        for run in (a, b):
            db.kv.put(run, "user/1", {"n": 1})
            db.kv.put(run, "other", 2)
            db.state.set(run, "phase", "plan")
            db.events.append(run, "tick", {})
            db.docs.set(run, "doc1", {"x": [1]})
        db.kv.delete(a, "user/1")
        assert {c.run for c in _drain(by_run)} == {a}
        states = _drain(by_prim)
        assert [(c.run, c.key, c.value.value) for c in states] == [(a, "phase", "plan"), (b, "phase", "plan")]
        prefixed = _drain(by_prefix)
        assert [(c.run, c.key, c.op, c.value) for c in prefixed] == [
            (a, "user/1", "put", {"n": 1}), (b, "user/1", "put", {"n": 1}), (a, "user/1", "delete", None)]
        docs = _drain(by_bytes)
        assert [(c.primitive, c.key, c.op, c.value) for c in docs] == [("docs", "doc1", "put", {"x": [1]})]
        future = "018f0000-0000-7000-8000-000000000000"  # a run that does not exist yet may be watched
        assert db.watch(run=future).poll() is None


def test_a_transaction_arrives_as_one_version(dbdir):
    with Database.open(dbdir) as db:
        run = db.begin_run("tx")
        w = db.watch()
        with db.transaction() as tx:
            tx.kv.put(run, "a", 1)
            tx.kv.put(run, "b", 2)
            tx.events.append(run, "e", {"k": 1})
        changes = _drain(w)
        assert len(changes) == 3 and len({c.version for c in changes}) == 1
        assert {c.primitive for c in changes} == {"kv", "events"}
        assert changes[0].ts.tzinfo is not None


def test_the_seam_between_wal_replay_and_live_commits(dbdir):
    with Database.open(dbdir, durability="off") as db:
        run = db.begin_run("seam")
        for i in range(50):
            db.kv.put(run, f"pre{i}", i)
        stop = threading.Event()

        def writer():
            i = 0
            while not stop.is_set() or i < 200:
                db.kv.put(run, f"live{i}", i)
                i += 1

        t = threading.Thread(target=writer)
        t.start()
        watches = [db.watch(from_version=v) for v in (1, 20, 40)]  # opened while commits race in
        firsts = [w.next() for w in watches]
        stop.set()
        t.join()
        last = db.stats()["commit_version"]
        for w, f, v in zip(watches, firsts, (1, 20, 40)):
            versions = [f.version] + [c.version for c in _drain(w)]
            assert versions == list(range(v, last + 1)), "a gap or a duplicate at the seam"


def test_overflow_never_blocks_committers_and_loses_nothing(dbdir):
    with Database.open(dbdir, durability="off", segment_bytes=4096) as db:
        run = db.begin_run("slow")
        w = db.watch(buffer=4)
        v0 = db.stats()["commit_version"]
        for i in range(300):  # the consumer does not read: committers go on (same thread: a block would hang)
            db.kv.put(run, f"k{i}", "v" * 40)
        assert w.overflows >= 290 and db.stats()["wal_segments"] > 3  # the gap spans several segments
        got = [w.next(timeout=0) for _ in range(150)]
        for i in range(300, 400):  # more commits while it catches up: buffered again, then gaps again
            db.kv.put(run, f"k{i}", "v" * 40)
        got += _drain(w)
        assert [c.version for c in got] == list(range(v0 + 1, v0 + 401))
        assert [c.key for c in got] == [f"k{i}" for i in range(400)]


def test_overflow_past_a_deleted_wal_segment_fails_loudly_with_the_version_to_resume(dbdir):
    with Database.open(dbdir, durability="off", history="none", segment_bytes=4096,
                       snapshot_every_bytes=None) as db:
        run = db.begin_run("gone")
        w = db.watch(buffer=2)
        pos = w.position
        for rounds in range(2):  # history="none": the WAL the older of two snapshots covers is deleted
            for i in range(200):
                db.kv.put(run, f"k{i}", "x" * 100)
            info = db.snapshot()
        assert info.wal_segments_deleted
        assert [w.next(timeout=0).version for _ in range(2)] == [pos, pos + 1]  # what the buffer held
        with pytest.raises(HistoryUnavailable, match=f"from_version={pos + 2} "):  # the rest is gone
            w.next(timeout=0)
        with pytest.raises(HistoryUnavailable, match="oldest version still there is"):
            db.watch(from_version=1)


def test_read_only_follower_sees_the_writers_later_commits(dbdir):
    with Database.open(dbdir, durability="off", segment_bytes=4096) as db:
        run = db.begin_run("follow")
        db.kv.put(run, "before", 0)
        ro = Database.open(dbdir, read_only=True, follow=True)  # no lock: beside the writer
        try:
            live = ro.watch()
            past = ro.watch(from_version=1, primitive="kv")
            assert live.poll() is None
            for i in range(100):  # ~4 segments: the follower steps over rotations
                db.kv.put(run, f"k{i}", "v" * 50)
            db.sync()
            got = [live.next(timeout=5) for _ in range(100)]
            assert [c.key for c in got] == [f"k{i}" for i in range(100)]
            assert [c.key for c in _drain(past)] == ["before"] + [f"k{i}" for i in range(100)]
            db.kv.put(run, "after", 1)
            db.sync()
            assert live.next(timeout=5).key == "after"
        finally:
            ro.close()
        assert live.closed and live.poll() is None


def test_the_wal_follower_treats_a_torn_or_zeroed_tail_as_not_yet(dbdir, tmp_path):
    from inmem.wal.follow import WalFollower

    with Database.open(dbdir) as db:
        run = db.begin_run("torn")
        for i in range(10):
            db.kv.put(run, f"k{i}", i)
    (name,) = [n for n in os.listdir(dbdir) if n.startswith("wal-")]
    data = open(os.path.join(dbdir, name), "rb").read()
    copy = tmp_path / "copy"
    copy.mkdir()
    seg = copy / name
    reader = WalFollower(OSFileSystem(), str(copy), _db_id(dbdir))
    seg.write_bytes(data[:-7])  # the last frame torn: a write in progress
    assert [v for v, _, _ in reader.read(1)] == list(range(1, 11))
    assert reader.read(11) == []
    seg.write_bytes(data[:-7] + bytes(4096))  # zero bytes where the rest will land
    assert reader.read(11) == []
    seg.write_bytes(data)  # the frame completes
    ((version, _ts, writes),) = reader.read(11)
    assert version == 11 and writes[0][0].endswith(b"k9")
    assert [v for v, _, _ in reader.read(2, upto=3)] == [2, 3]  # a jump back re-locates
    reader.close()


def _db_id(dbdir):
    from inmem.identity import read_identity
    return read_identity(OSFileSystem(), dbdir).db_id


def test_close_ends_iteration_and_database_close_closes_watches(dbdir):
    db = Database.open(dbdir)
    run = db.begin_run("c")
    w = db.watch()
    seen = []
    t = threading.Thread(target=lambda: seen.extend(w))  # blocks in iteration until closed
    t.start()
    db.kv.put(run, "a", 1)
    w.close()  # from another thread than the one iterating
    t.join(5)
    assert not t.is_alive() and w.closed
    assert [c.key for c in seen] in ([], ["a"])
    assert w.next(timeout=0) is None
    w.close()  # idempotent
    with db.watch() as w3:
        pass
    assert w3.closed
    w4 = db.watch()
    db.close()
    assert w4.closed and list(w4) == []
    with pytest.raises(DatabaseClosed):
        db.watch()


def test_async_iteration(dbdir):
    with Database.open(dbdir) as db:
        run = db.begin_run("async")
        w = db.watch(from_version=1, primitive="kv")

        async def consume():
            out = []
            async for change in w:
                out.append(change)
                if len(out) == 3:
                    break
            return out

        for i in range(3):
            db.kv.put(run, f"k{i}", i)
        got = asyncio.run(consume())
        assert [c.key for c in got] == ["k0", "k1", "k2"] and all(isinstance(c, Change) for c in got)

        async def ends_on_close():
            async def closer():
                w.close()
            task = asyncio.ensure_future(closer())
            rest = [c async for c in w]
            await task
            return rest

        assert asyncio.run(ends_on_close()) == []


@pytest.mark.parametrize("kwargs", [
    {"run": 123}, {"run": "not-a-run-id"}, {"primitive": "tables"}, {"primitive": 1}, {"prefix": 5},
    {"from_version": -1}, {"from_version": "3"}, {"from_version": True}, {"from_version": 1.0},
    {"from_version": 10**6}, {"buffer": 0}, {"buffer": 2.5},
])
def test_bad_arguments_raise_invalid_argument_before_anything(dbdir, kwargs):
    with Database.open(dbdir) as db:
        run = db.begin_run("bad")
        before = db.stats()
        with pytest.raises(InvalidArgument):
            db.watch(**kwargs)
        db.kv.put(run, "k", 1)  # nothing registered: the commit path is as before
        assert db.stats()["commit_version"] == before["commit_version"] + 1
        assert isinstance(db.watch(), Watch)


def test_values_with_a_ttl_and_derived_keys_arrive_as_their_changes(tmp_path):
    """A KV value with a time to live arrives as the value; the expiry index, the graph's in-edge
    markers and its full-text index are bookkeeping, never changes of their own."""
    from inmem import Database

    with Database.open(str(tmp_path / "d"), durability="off", sweep_interval_s=None) as db:
        run = db.begin_run("r")
        with db.watch(run=run) as w:
            db.kv.put(run, "lease", {"holder": "a"}, ttl=60)
            db.graph.add_node(run, "alpha beta", id="a")
            db.graph.add_node(run, "gamma", id="b")
            db.graph.add_edge(run, "a", "knows", "b")
            got = [w.next(timeout=10) for _ in range(4)]
            assert w.next(timeout=0.05) is None
    assert [(c.primitive, c.key, c.op) for c in got] == [
        ("kv", "lease", "put"), ("graph", ("n", "a"), "put"), ("graph", ("n", "b"), "put"),
        ("graph", ("o", "a", "knows", "b"), "put")]
    assert got[0].value == {"holder": "a"}


WRITER = r'''
import sys
from tests.checkout import use_checkout
use_checkout()
from inmem import Database

db = Database.open(sys.argv[1], durability="strict", segment_bytes=4096)
(run,) = [r.id for r in db.runs.list(name="feed")]
print("ready", flush=True)
sys.stdin.readline()
for i in range(300):
    db.kv.put(run, "k%03d" % i, "v" * 40)
print("done", flush=True)
sys.stdin.read()
'''


def test_a_follower_in_another_process_watches_a_live_writer(dbdir):
    """``read_only=True, follow=True`` takes no lock: it opens beside a writer in another process and
    its watch follows the writer's WAL (over segment rotations) with nothing missed or repeated."""
    import subprocess
    import sys

    from .conftest import ROOT

    with Database.open(dbdir) as db:
        db.begin_run("feed")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, dbdir], stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": ""})
    try:
        assert proc.stdout.readline() == b"ready\n"  # the writer holds its exclusive lock now
        with pytest.raises(Exception):
            Database.open(dbdir, read_only=True)  # a plain read-only handle is locked out ...
        with Database.open(dbdir, read_only=True, follow=True) as ro:  # ... a follower is not
            watch = ro.watch(primitive="kv")
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
            got = [watch.next(timeout=30) for _ in range(300)]
            assert [c.key for c in got] == [f"k{i:03d}" for i in range(300)]
            assert watch.poll() is None
        assert proc.stdout.readline() == b"done\n"
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(InvalidArgument):
        Database.open(dbdir, follow=True)  # a follower is read-only


def test_a_commit_buffered_during_the_durability_wait_waits_for_its_own(dbdir):
    """Found by the SIGKILL test (1 run in 5): the feed settled (waited for the durability of) the newest
    buffered commit, then delivered every commit buffered by the time it looked again — including ones
    the listener appended during the wait, not yet durable, which a crash then took back. Now nothing
    is delivered past the version settled."""
    with Database.open(dbdir, durability="strict") as db:
        run = db.begin_run("r")
        watch = db.watch(run=run)
        settled: list[int] = []
        real_settle, real_deliver = watch._settle, watch._deliver  # noqa: SLF001 - the race, pinned

        def settle(version):
            real_settle(version)
            settled.append(version)
            if len(settled) == 1:
                db.kv.put(run, "late", 2)  # lands in the buffer while the first settle "waited"

        def deliver(version, ts_us, writes):
            assert settled and version <= max(settled), f"version {version} delivered before it was settled"
            real_deliver(version, ts_us, writes)

        watch._settle, watch._deliver = settle, deliver  # noqa: SLF001
        db.kv.put(run, "first", 1)
        got = [watch.next(timeout=5).key for _ in range(2)]
        assert got == ["first", "late"] and len(settled) == 2
        watch.close()
