"""Snapshots against concurrent writers, against a model across reopens, and their progress reports.

1. Writer threads keep committing small transactions on their own keys while
   ``db.snapshot()`` runs on a 50,000-key store; the snapshot file must hold
   exactly the state at its ``commit_version``: the seed state plus every
   logged commit up to that version (key set, values *and* the version that
   wrote each entry), and nothing committed after it.
2. A hypothesis test interleaving writes, deletes, transactions, runs,
   snapshots and reopens against a dict model: after every reopen the state
   equals the model, recovery used the newest snapshot, and
   ``stats()["recovery"]["records"]`` is the number of commits made after it.
3. The progress callback during recovery (snapshot, then WAL) and during a snapshot.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import threading
import time
import uuid

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inmem import Database
from inmem import testing
from inmem.errors import RunClosed
from inmem.fs import OSFileSystem
from inmem.keys import TAG_KV, TAG_RUN
from inmem.snapshot import parse_snapshot_name, read_snapshot

# --- 1. snapshot while writers commit --------------------------------------------------------------

SEED_KEYS = 50_000
WRITERS = 3


def read_snapshot_file(db: Database, path: str) -> tuple[object, dict[bytes, tuple[int, bytes]]]:
    """(header, {store key: (version, value bytes)}): the file's content, every checksum verified."""
    return read_snapshot(OSFileSystem(), path, testing.kernel(db).identity.db_id)


def decode_state(state: dict[bytes, tuple[int, bytes]]) -> tuple[dict[tuple[str, str], tuple[int, object]], dict]:
    """({(run, kv key): (version, value)}, {run: version of its run record}) from store entries."""
    kv: dict[tuple[str, str], tuple[int, object]] = {}
    runs: dict[str, int] = {}
    run_ids: dict[bytes, str] = {}
    for key, (version, value) in state.items():
        rid = key[1:17]
        run = run_ids.get(rid)
        if run is None:
            run = run_ids[rid] = str(uuid.UUID(bytes=rid))
        if key[17] == TAG_KV:
            kv[(run, key[18:].decode())] = (version, cbor2.loads(value))
        else:
            assert key[17] == TAG_RUN and len(key) == 18, key
            runs[run] = version
    return kv, runs


def test_snapshot_under_concurrent_writers_holds_exactly_its_version(dbdir):
    # batched: the writers never lead WAL I/O (see the "off" mode test below for why that matters)
    db = Database.open(dbdir, durability="batched", snapshot_every_bytes=None, segment_bytes=4 * 1024 * 1024)
    try:
        run = db.begin_run("seed")
        run_version = db.stats()["commit_version"]
        # the seed state, committed in transactions of 2,000 keys; the log holds (version, writes) of every commit
        log: list[tuple[int, list[tuple[str, object]]]] = []
        for start in range(0, SEED_KEYS, 2000):
            writes = [(f"k{i:05d}", {"i": i, "gen": 0}) for i in range(start, start + 2000)]
            with db.transaction() as tx:
                for k, v in writes:
                    tx.kv.put(run, k, v)
            log.append((tx.commit_version, writes))

        stop = threading.Event()
        logs: list[list[tuple[int, list[tuple[str, object]]]]] = [[] for _ in range(WRITERS)]
        errors: list[BaseException] = []

        def writer(w: int) -> None:
            rng = random.Random(w)
            own = [f"k{i:05d}" for i in range(w, SEED_KEYS, WRITERS)]  # seed keys of this writer
            live = set(own)
            mine = logs[w]
            n = 0
            try:
                while not stop.is_set():
                    n += 1
                    writes: list[tuple[str, object]] = []
                    with db.transaction() as tx:
                        for _ in range(rng.randint(1, 4)):
                            r = rng.random()
                            if r < 0.4:
                                k = rng.choice(own)
                                v = {"w": w, "n": n, "pad": "x" * rng.randrange(50)}
                                tx.kv.put(run, k, v)
                                live.add(k)
                                writes.append((k, v))
                            elif r < 0.7:
                                k = f"new-{w}-{n}-{len(writes)}"
                                tx.kv.put(run, k, n)
                                writes.append((k, n))
                                own.append(k)
                                live.add(k)
                            else:
                                k = rng.choice(own)
                                existed = tx.kv.delete(run, k)
                                assert existed == (k in live), (k, existed)
                                if existed:
                                    live.discard(k)
                                    writes.append((k, None))
                    if writes:
                        assert tx.commit_version is not None
                        mine.append((tx.commit_version, writes))
                    else:
                        assert tx.commit_version is None
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 30
            while sum(len(x) for x in logs) < 300 and time.monotonic() < deadline and not errors:
                time.sleep(0.005)
            infos = []
            # switch threads often, so that writers commit between the capture steps too (not only while
            # the file is written): the snapshot must then read overwritten versions from the MVCC chains
            switch = sys.getswitchinterval()
            for _ in range(3):
                sys.setswitchinterval(1e-5)
                try:
                    info = db.snapshot()
                finally:
                    sys.setswitchinterval(switch)
                end_version = db.stats()["commit_version"]
                # read the file now (the third snapshot removes the first); decode it once the writers stopped
                infos.append((info, end_version, read_snapshot_file(db, info.path)))
            time.sleep(0.05)  # and a few commits after the last one
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors, f"a writer failed: {errors[0]!r}"
        assert db.stats()["conflicts"] == 0, "writers on disjoint keys conflicted"

        everything = sorted(log + [c for x in logs for c in x], key=lambda c: c[0])
        versions = [v for v, _ in everything]
        assert len(set(versions)) == len(versions), "two commits got the same commit version"

        def state_at(version: int) -> dict[tuple[str, str], tuple[int, object]]:
            state: dict[tuple[str, str], tuple[int, object]] = {}
            for v, writes in everything:
                if v > version:
                    break
                for k, value in writes:
                    if value is None:
                        state.pop((run, k), None)
                    else:
                        state[(run, k)] = (v, value)
            return state

        report = []
        for info, end_version, (header, state) in infos:
            kv, runs = decode_state(state)
            v = info.commit_version
            during = sum(1 for x in versions if v < x <= end_version)
            report.append(f"V={v} keys={info.keys} pause_ms={info.pause_ms} seconds={info.seconds} "
                          f"commits during={during}")
            assert header.commit_version == v and header.keys == info.keys == len(kv) + len(runs)
            assert runs == {run: run_version}, runs
            want = state_at(v)
            if kv != want:
                missing = sorted(set(want) - set(kv))[:5]
                extra = sorted(set(kv) - set(want))[:5]
                wrong = sorted(k for k in set(kv) & set(want) if kv[k] != want[k])[:5]
                pytest.fail(
                    f"snapshot at V={v} is not the state at V: missing {missing}, extra {extra}, "
                    f"wrong (got, want) {[f'{k[1]}: {kv[k]!r:.60} != {want[k]!r:.60}' for k in wrong]}"
                )
            assert info.pause_ms < 2000, f"a writer could have waited {info.pause_ms} ms"
        print("\n" + "\n".join(report))
        last_v = infos[-1][0].commit_version
        assert any(x > last_v for x in versions), "no commit after the last snapshot"
        during_any = [x for info, end, _ in infos for x in versions if info.commit_version < x <= end]
        assert during_any, "no writer committed while a snapshot was being taken: " + "; ".join(report)
        final_version = db.stats()["commit_version"]
        assert versions[-1] == final_version
    finally:
        db.close()

    # and recovery (newest snapshot + the WAL after it) rebuilds the final state with the right versions
    with Database.open(dbdir, snapshot_every_bytes=None) as db:
        rec = db.stats()["recovery"]
        assert rec["snapshot"]["commit_version"] == last_v and rec["records"] == final_version - last_v, rec
        got = {(run, k): v for k, v in db.kv.scan(run)}
        assert got == {k: value for k, (_, value) in state_at(final_version).items()}
        kv, _ = decode_state(testing.store_items(db))
        assert kv == state_at(final_version), "recovered versions or values differ from the log"


SNAPSHOT_BOUND_S = 10.0


def test_snapshot_is_not_starved_by_a_writer_in_off_mode(dbdir):
    """durability="off": db.snapshot() syncs the WAL first; it must not wait until the writers pause.

    A snapshot of a 1,000-key store takes milliseconds; under one thread doing
    autocommit puts it must finish within SNAPSHOT_BOUND_S (a generous bound for
    a noisy machine), five times in a row.
    """
    db = Database.open(dbdir, durability="off", snapshot_every_bytes=None)
    try:
        run = db.begin_run()
        with db.transaction() as tx:
            for i in range(1000):
                tx.kv.put(run, f"k{i:04d}", i)
        stop = threading.Event()

        def writer() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                db.kv.put(run, f"w{i % 100}", i)

        w = threading.Thread(target=writer)
        w.start()
        starved = None
        took: list[str] = []
        try:
            time.sleep(0.1)
            for attempt in range(5):
                done: list[float] = []
                t0 = time.perf_counter()
                s = threading.Thread(target=lambda: (db.snapshot(), done.append(time.perf_counter() - t0)))
                s.start()
                s.join(SNAPSHOT_BOUND_S)
                if s.is_alive():
                    starved = attempt
                    break
                took.append(f"{done[0]:.3f} s")
        finally:
            stop.set()
            w.join()
        if starved is not None:
            s.join()
            pytest.fail(
                f"snapshot {starved + 1} had not returned after {SNAPSHOT_BOUND_S:.0f} s while one thread committed "
                f"in durability='off'; it returned {done[0]:.1f} s after starting, once the writer stopped "
                "(its WAL sync waits for a leader that fsyncs, and the off-mode committers keep taking "
                f"the leader role without fsyncing); the snapshots before it took {took}"
            )
    finally:
        db.close()


# --- 2. snapshots, writes and reopens against a model --------------------------------------------

KEYS = ["a", "b", "c", "d/1", "d/2", "é"]

op_st = st.one_of(
    st.tuples(st.just("put"), st.integers(0, 7), st.sampled_from(KEYS), st.integers(0, 3000)),
    st.tuples(st.just("delete"), st.integers(0, 7), st.sampled_from(KEYS)),
    st.tuples(
        st.just("tx"),
        st.integers(0, 7),
        st.lists(st.tuples(st.sampled_from(KEYS), st.one_of(st.none(), st.integers(0, 2000))), max_size=4),
    ),
    st.just(("begin",)),
    st.tuples(st.just("end"), st.integers(0, 7)),
    st.just(("snapshot",)),
    st.just(("reopen",)),
)


def value_of(n: int, key: str) -> object:
    return {"n": n, "key": key, "pad": "p" * n} if n % 3 else n


class SnapshotModel:
    """The expected contents, the commit count and the version of the newest snapshot."""

    def __init__(self) -> None:
        self.kv: dict[str, dict[str, object]] = {}  # run -> key -> value
        self.active: list[str] = []
        self.ended: set[str] = set()
        self.version = 0  # commits so far = last commit version
        self.snapshot_version: int | None = None


def check_against(db: Database, m: SnapshotModel, where: str) -> None:
    for run, kv in m.kv.items():
        assert dict(db.kv.scan(run)) == kv, f"{where}: run {run} differs"
        try:
            db.kv.delete(run, "\x00absent")  # writes nothing; raises if the run has ended
            ended = False
        except RunClosed:
            ended = True
        assert ended == (run in m.ended), f"{where}: run {run} ended={ended}"
    stats = db.stats()
    assert stats["commit_version"] == m.version, f"{where}: commit version {stats['commit_version']} != {m.version}"
    assert stats["runs"] == len(m.kv)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_st, max_size=80))
def test_snapshots_writes_and_reopens_match_a_model(ops):
    run_model_ops(ops)


def random_ops(seed: int, n: int) -> list[tuple]:
    """A long seeded sequence: mostly writes, a snapshot or reopen every few dozen steps."""
    rng = random.Random(seed)
    ops: list[tuple] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.45:
            ops.append(("put", rng.randrange(8), rng.choice(KEYS), rng.choice([0, 5, 100, 1500, 3000])))
        elif r < 0.6:
            ops.append(("delete", rng.randrange(8), rng.choice(KEYS)))
        elif r < 0.8:
            ops.append(("tx", rng.randrange(8), [(rng.choice(KEYS), rng.choice([None, 1, 700, 2000]))
                                                 for _ in range(rng.randrange(5))]))
        elif r < 0.84:
            ops.append(("begin",))
        elif r < 0.87:
            ops.append(("end", rng.randrange(8)))
        elif r < 0.94:
            ops.append(("snapshot",))
        else:
            ops.append(("reopen",))
    return ops


@pytest.mark.parametrize("seed", range(4))
def test_long_seeded_sequences_of_snapshots_writes_and_reopens(seed):
    run_model_ops(random_ops(seed, 600))


def run_model_ops(ops: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "db")

        def open_db() -> Database:
            return Database.open(path, durability="off", segment_bytes=4096, snapshot_every_bytes=None)

        m = SnapshotModel()
        db = open_db()
        try:
            for step, op in enumerate(ops):
                where = f"step {step} {op}"
                kind = op[0]
                if kind in ("put", "delete", "tx", "end") and not m.active:
                    kind, op = "begin", ("begin",)
                if kind == "begin":
                    run = db.begin_run()
                    m.active.append(run)
                    m.kv[run] = {}
                    m.version += 1
                elif kind == "end":
                    run = m.active.pop(op[1] % len(m.active))
                    db.end_run(run)
                    m.ended.add(run)
                    m.version += 1
                    with pytest.raises(RunClosed):
                        db.kv.put(run, "x", 1)
                elif kind == "put":
                    run = m.active[op[1] % len(m.active)]
                    db.kv.put(run, op[2], value_of(op[3], op[2]))
                    m.kv[run][op[2]] = value_of(op[3], op[2])
                    m.version += 1
                elif kind == "delete":
                    run = m.active[op[1] % len(m.active)]
                    existed = db.kv.delete(run, op[2])
                    assert existed == (op[2] in m.kv[run]), where
                    if existed:
                        del m.kv[run][op[2]]
                        m.version += 1
                elif kind == "tx":
                    run = m.active[op[1] % len(m.active)]
                    view = dict(m.kv[run])
                    wrote = False
                    with db.transaction() as tx:
                        for key, n in op[2]:
                            if n is None:
                                existed = tx.kv.delete(run, key)
                                assert existed == (key in view), where
                                if existed:
                                    del view[key]
                                    wrote = True
                            else:
                                tx.kv.put(run, key, value_of(n, key))
                                view[key] = value_of(n, key)
                                wrote = True
                    m.kv[run] = view
                    if wrote:
                        m.version += 1
                        assert tx.commit_version == m.version, where
                    else:
                        assert tx.commit_version is None, where
                elif kind == "snapshot":
                    info = db.snapshot()
                    assert info.commit_version == m.version, where
                    m.snapshot_version = m.version
                    snaps = [n for n in os.listdir(path) if parse_snapshot_name(n) is not None]
                    assert 1 <= len(snaps) <= 2, f"{where}: {snaps}"
                else:
                    db.close()
                    db = open_db()
                    rec = db.stats()["recovery"]
                    assert rec["torn_tail"] is None and rec["snapshots_skipped"] == [], f"{where}: {rec}"
                    if m.snapshot_version is None:
                        assert rec["snapshot"] is None, f"{where}: {rec}"
                    else:
                        assert rec["snapshot"]["commit_version"] == m.snapshot_version, f"{where}: {rec}"
                    since = m.version - (m.snapshot_version or 0)
                    assert rec["records"] == since, f"{where}: replayed {rec['records']} records, {since} commits since"
                    testing.check_store(db)
                    check_against(db, m, where)
            check_against(db, m, "at the end")
        finally:
            db.close()
        with open_db() as db:
            check_against(db, m, "final reopen")
            assert db.stats()["recovery"]["records"] == m.version - (m.snapshot_version or 0)


# --- 3. progress ------------------------------------------------------------------------------------


def check_monotonic(calls: list[tuple[str, int, int]], phase: str) -> list[tuple[int, int]]:
    seen = [(done, total) for p, done, total in calls if p == phase]
    assert seen, f"no {phase!r} progress call in {calls[:10]}"
    totals = {t for _, t in seen}
    assert len(totals) == 1, f"{phase}: total changed: {totals}"
    dones = [d for d, _ in seen]
    assert all(0 <= d <= t for d, t in seen), f"{phase}: done outside 0..total: {seen}"
    assert dones == sorted(dones), f"{phase}: done went backwards: {dones}"
    return seen


def test_progress_callback_for_snapshot_and_recovery(dbdir):
    calls: list[tuple[str, int, int]] = []

    def progress(phase: str, done: int, total: int) -> None:
        calls.append((phase, done, total))

    value = "v" * 300
    with Database.open(dbdir, durability="off", segment_bytes=64 * 1024, snapshot_every_bytes=None,
                       progress=progress) as db:
        assert calls == [], f"progress called while creating an empty database: {calls}"
        run = db.begin_run()
        for start in range(0, 12_000, 1000):
            with db.transaction() as tx:
                for i in range(start, start + 1000):
                    tx.kv.put(run, f"k{i:05d}", value)
        info = db.snapshot()
        snap = check_monotonic(calls, "snapshot")
        assert len(snap) >= 2, f"a {info.bytes}-byte snapshot reported progress only once: {snap}"
        assert snap[-1] == (info.keys, info.keys), f"snapshot progress does not end at total: {snap}"
        assert {p for p, _, _ in calls} == {"snapshot"}
        # WAL after the snapshot, over several segments
        for i in range(600):
            db.kv.put(run, f"after{i:04d}", value)
        snap_file = os.path.basename(info.path)

    calls.clear()
    with Database.open(dbdir, snapshot_every_bytes=None, progress=progress) as db:
        rec = db.stats()["recovery"]
        assert rec["snapshot"]["file"] == snap_file and rec["records"] == 600, rec
        assert rec["segments"] >= 3, rec
        assert db.kv.get(run, "after0599") == value and db.kv.get(run, "k11999") == value
    phases = [p for p, _, _ in calls]
    assert set(phases) == {"recovery-snapshot", "recovery-wal"}, set(phases)
    # the snapshot is read first, then the WAL
    assert phases == sorted(phases, key=lambda p: p != "recovery-snapshot"), phases
    snap = check_monotonic(calls, "recovery-snapshot")
    assert snap[0][1] == os.path.getsize(os.path.join(dbdir, snap_file))
    assert len(snap) >= 2, snap  # one call per chunk: 12,001 keys are 3 chunks
    wal = check_monotonic(calls, "recovery-wal")
    assert len(wal) == rec["segments"], wal  # one call per segment replayed
    assert wal[-1][0] == wal[-1][1], f"WAL progress does not end at total: {wal}"
