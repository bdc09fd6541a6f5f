"""History retention: which WAL segments outlive the snapshots that cover them.

``Database.open(history=...)``: ``"keep"`` keeps every segment, ``"active"``
lets a segment go once every run with records in it is archived (oldest
first, stopping at the first segment that must stay), ``"none"`` keeps only
what recovery needs. Checked by listing the directory: segments really
disappear, replay of a run whose history is gone raises HistoryUnavailable,
live state never changes, and all of it survives reopen.
"""

from __future__ import annotations

import os
import shutil
import uuid

import pytest

from inmem import Database, HistoryUnavailable, InvalidArgument, RunNotFound
from inmem.wal.format import parse_segment_name

from .conftest import dir_bytes

SEG = 4096


def segs(path):
    return sorted(n for n in os.listdir(path) if parse_segment_name(n) is not None)


def snaps(path):
    return sorted(n for n in os.listdir(path) if n.startswith("snapshot-") and n.endswith(".snap"))


def open_db(path, history, **kw):
    kw.setdefault("durability", "off")  # each commit reaches the file at once: the directory listing is exact
    kw.setdefault("snapshot_every_bytes", None)
    return Database.open(path, history=history, segment_bytes=SEG, **kw)


def version(db):
    return db.stats()["commit_version"]


def fill(db, run, new_segments, tag):
    """Write to ``run`` until ``new_segments`` more WAL segments exist; every 4th write is an event."""
    path = db.path
    start = len(segs(path))
    i = 0
    while len(segs(path)) < start + new_segments:
        db.kv.put(run, f"{tag}{i:04d}", tag * 200 + str(i))
        if i % 4 == 0:
            db.events.append(run, "wrote", {"i": i})
        i += 1
        assert i < 10_000
    db.state.set(run, "last", i)
    return i


def build_abc(path, history):
    """Runs A, B, C, each filling segments in turn (A first); A and B ended, C active.

    Returns (db, runs, first segment holding B's records, first segment holding C's records).
    """
    db = open_db(path, history)
    a = db.begin_run("A")
    assert segs(path) == ["wal-0000000000000001.log"]
    fill(db, a, 3, "a")
    db.end_run(a)
    b = db.begin_run("B")
    seg_b = segs(path)[-1]  # B's first record is here; every earlier segment holds only A's
    fill(db, b, 3, "b")
    db.end_run(b)
    c = db.begin_run("C")
    seg_c = segs(path)[-1]
    fill(db, c, 2, "c")
    assert segs(path)[0] < seg_b < seg_c < segs(path)[-1]
    return db, {"A": a, "B": b, "C": c}, seg_b, seg_c


def deleted_by(res):
    """Every segment one compact() call deleted: its own, and those its snapshot's prune deleted."""
    snap = res["snapshot"]["wal_segments_deleted"] if res["snapshot"] else []
    return sorted(set(res["segments_deleted"]) | set(snap))


def assert_unavailable(db, run):
    first = db.runs.get(run).first_version
    with pytest.raises(HistoryUnavailable) as exc:
        db.replay_run(run)
    assert exc.value.run == run
    with pytest.raises(HistoryUnavailable):
        db.history(run)
    with pytest.raises(HistoryUnavailable):
        db.replay_run(run, at_version=first)
    with pytest.raises(HistoryUnavailable):
        db.replay_run(run, at_version=version(db))
    v = version(db)
    with pytest.raises(HistoryUnavailable):
        db.fork_run(run, at_version=version(db))
    with pytest.raises(HistoryUnavailable):
        db.diff_runs(run, run, at_a=version(db))
    assert version(db) == v  # the failed fork wrote nothing


def assert_replays(db, run):
    assert db.replay_run(run) == db.run_state(run)
    hist = db.history(run)
    assert hist[0].version == db.runs.get(run).first_version
    assert hist[0].ops[0].primitive == "run"


# --- history="active" --------------------------------------------------------------------------------


def test_active_compact_deletes_only_archived_runs_segments_and_survives_reopen(dbdir):
    db, runs, seg_b, seg_c = build_abc(dbdir, "active")
    a, b, c = runs["A"], runs["B"], runs["C"]
    db.archive_run(a)
    assert db.runs.get(a).archived and not db.runs.get(b).archived
    live = {name: db.run_state(r) for name, r in runs.items()}
    kv = {name: dict(db.kv.scan(r)) for name, r in runs.items()}
    before = segs(dbdir)
    sizes = {n: os.path.getsize(os.path.join(dbdir, n)) for n in before}
    expected = [n for n in before if n < seg_b]
    assert len(expected) >= 3

    res = db.compact()
    after = segs(dbdir)
    assert res["segments_deleted"] == expected
    assert sorted(set(before) - set(after)) == expected
    assert after == [n for n in before if n >= seg_b]
    assert res["bytes_freed"] == sum(sizes[n] for n in expected)
    assert res["snapshot"] is not None and res["snapshot"]["commit_version"] == version(db)
    assert res["history_floor"] == db.stats()["history"]["floor"]
    assert db.runs.get(a).first_version < res["history_floor"] <= db.runs.get(b).first_version
    assert db.stats()["wal_segments"] == len(after)
    assert not any(n.startswith("hist-") and n[5:21] == e[4:20] for e in expected for n in os.listdir(dbdir))

    assert_unavailable(db, a)
    assert db.run_state(a) == live["A"]  # the live state is untouched
    for name, r in runs.items():
        assert db.run_state(r) == live[name]
    assert_replays(db, b)
    assert_replays(db, c)
    # a live fork of the archived run has a history of its own
    fork = db.fork_run(a)
    assert db.replay_run(fork) == db.run_state(fork)
    assert dict(db.run_state(fork).kv) == kv["A"]
    assert db.events.verify(fork) == len(live["A"].events)
    # nothing more to delete: B is not archived
    after = segs(dbdir)  # (the fork's big copy commit may have started a segment)
    again = db.compact()
    assert deleted_by(again) == [] and segs(dbdir) == after
    db.close()

    db = open_db(dbdir, "active")
    assert segs(dbdir) == after
    for name, r in runs.items():
        assert dict(db.kv.scan(r)) == kv[name]
        assert db.run_state(r) == live[name]
    assert db.runs.get(a).archived and not db.runs.get(b).archived and not db.runs.get(c).archived
    assert_unavailable(db, a)
    assert_replays(db, b)
    assert_replays(db, c)
    assert db.replay_run(fork) == db.run_state(fork)

    # after reopen: archive B too; its segments (up to C's first) go, C's stay
    db.archive_run(b)
    live_b = db.run_state(b)
    before = segs(dbdir)
    res = db.compact()
    expected = [n for n in before if n < seg_c]
    assert expected and deleted_by(res) == expected
    assert segs(dbdir) == [n for n in before if n >= seg_c]
    assert_unavailable(db, b)
    assert db.run_state(b) == live_b
    assert_replays(db, c)
    db.kv.put(c, "after", 1)
    c_state = db.run_state(c)
    db.close()

    # the history sidecars are a cache: without them the index is rebuilt from the segments
    for n in os.listdir(dbdir):
        if n.startswith("hist-"):
            os.remove(os.path.join(dbdir, n))
    db = open_db(dbdir, "active")
    assert db.run_state(c) == c_state
    assert db.run_state(b) == live_b
    assert db.run_state(a) == live["A"]
    assert_unavailable(db, a)
    assert_unavailable(db, b)
    assert_replays(db, c)
    assert db.runs.get(b).archived
    db.close()


def test_active_deletion_is_oldest_first_and_stops_at_a_kept_segment(dbdir):
    db, runs, seg_b, seg_c = build_abc(dbdir, "active")
    a, b, c = runs["A"], runs["B"], runs["C"]
    db.archive_run(b)  # B's segments alone are deletable, but A's (older) are not
    before = segs(dbdir)
    res = db.compact()
    assert res["segments_deleted"] == [] and res["bytes_freed"] == 0
    assert segs(dbdir) == before
    assert res["history_floor"] == 1
    for r in runs.values():
        assert_replays(db, r)

    db.archive_run(a)
    res = db.compact()
    expected = [n for n in before if n < seg_c]
    assert deleted_by(res) == expected
    assert segs(dbdir) == [n for n in before if n >= seg_c]
    assert_unavailable(db, a)
    assert_unavailable(db, b)
    assert_replays(db, c)
    db.close()


def test_active_archived_run_that_keeps_writing_stays_writable(dbdir):
    db = open_db(dbdir, "active")
    a = db.begin_run("A")
    db.archive_run(a)  # archiving does not end the run
    assert db.runs.get(a).status == "active"
    fill(db, a, 3, "a")
    b = db.begin_run("B")
    seg_b = segs(dbdir)[-1]
    fill(db, b, 1, "b")
    before = segs(dbdir)
    res = db.compact()
    assert res["segments_deleted"] == [n for n in before if n < seg_b] != []
    assert_unavailable(db, a)
    db.kv.put(a, "still", "writable")
    assert db.kv.get(a, "still") == "writable"
    state = db.run_state(a)
    assert_replays(db, b)
    db.close()
    db = open_db(dbdir, "active")
    assert db.run_state(a) == state
    assert_unavailable(db, a)
    db.close()


# --- history="none" ---------------------------------------------------------------------------------------


def test_none_compact_keeps_only_what_recovery_needs(dbdir):
    db = open_db(dbdir, "none")
    x = db.begin_run("X")
    fill(db, x, 3, "x")
    db.end_run(x)
    w = db.begin_run("W")  # begins in the segment that stays active
    active = segs(dbdir)[-1]
    db.kv.put(w, "small", 1)
    assert segs(dbdir)[-1] == active
    live_x = db.run_state(x)
    before = segs(dbdir)
    assert len(before) >= 4

    res = db.compact()
    assert res["segments_deleted"] == before[:-1]
    assert segs(dbdir) == [active]
    assert_unavailable(db, x)
    assert db.run_state(x) == live_x
    assert_replays(db, w)  # every record of W is in the retained segment

    y = db.begin_run("Y")
    fill(db, y, 2, "y")
    assert_replays(db, y)
    f = db.fork_run(x)  # live fork of a run without history
    assert db.diff_runs(x, f).is_empty()
    states = {r: db.run_state(r) for r in (x, w, y, f)}
    db.close()

    db = open_db(dbdir, "none")
    assert {r: db.run_state(r) for r in (x, w, y, f)} == states
    assert_unavailable(db, x)
    assert_replays(db, w)
    assert_replays(db, y)
    assert_replays(db, f)
    # compacting again: now Y began before the floor
    res = db.compact()
    assert res["segments_deleted"] and len(segs(dbdir)) == 1
    assert_unavailable(db, y)
    assert db.run_state(y) == states[y]
    db.close()


# --- history="keep" --------------------------------------------------------------------------------------


def test_keep_compact_deletes_no_segment(dbdir):
    db, runs, _, _ = build_abc(dbdir, "keep")
    db.archive_run(runs["A"])  # archiving does not matter under "keep"
    db.archive_run(runs["B"])
    before = segs(dbdir)
    res = db.compact()
    assert res["segments_deleted"] == [] and res["bytes_freed"] == 0
    assert res["history_floor"] == 1
    assert res["snapshot"] is not None
    assert segs(dbdir) == before
    assert db.compact()["snapshot"] is None  # the newest snapshot already holds the last commit
    states = {r: db.run_state(r) for r in runs.values()}
    for r in runs.values():
        assert_replays(db, r)
    db.close()
    db = open_db(dbdir, "keep")
    assert segs(dbdir) == before
    assert db.stats()["history"]["mode"] == "keep"
    for r in runs.values():
        assert_replays(db, r)
        assert db.replay_run(r) == states[r]
    assert db.history(runs["A"])[0].version == 1
    db.close()


def test_default_history_mode_is_keep(dbdir):
    with Database.open(dbdir, durability="off", segment_bytes=SEG, snapshot_every_bytes=None) as db:
        assert db.stats()["history"]["mode"] == "keep"
        a = db.begin_run("A")
        fill(db, a, 3, "a")
        db.end_run(a)
        db.archive_run(a)
        before = segs(dbdir)
        assert db.compact()["segments_deleted"] == []
        assert segs(dbdir) == before
        assert_replays(db, a)


# --- automatic snapshots ------------------------------------------------------------------------------


def commit_until(db, run, done, limit=20_000):
    """Commit small puts until ``done()``; automatic snapshots run meanwhile in their thread."""
    i = 0
    while not done():
        db.kv.put(run, f"auto{i % 50:02d}", "z" * 120 + str(i))
        i += 1
        assert i < limit, "automatic snapshots did not happen"
    return i


@pytest.mark.parametrize("mode", ["keep", "active"])
def test_automatic_snapshots_keep_history(dbdir, mode):
    db = open_db(dbdir, mode, snapshot_every_bytes=4096)
    first = db.begin_run("first")
    db.events.append(first, "hello")
    counts = []
    for i in range(300):
        db.kv.put(first, f"k{i % 40}", "v" * 100 + str(i))
        if i % 20 == 0:
            counts.append(len(segs(dbdir)))
    commit_until(db, first, lambda: db.stats()["snapshots"]["taken"] >= 3)
    names = segs(dbdir)
    seqs = [parse_segment_name(n) for n in names]
    assert seqs == list(range(1, len(seqs) + 1))  # none deleted, even below the older kept snapshot
    assert counts == sorted(counts) and len(names) > counts[0] + 5
    assert db.stats()["wal_segments"] == len(names)
    assert db.stats()["history"]["floor"] == 1
    state = db.run_state(first)
    assert db.replay_run(first) == state
    db.close()  # joins the snapshot thread: a snapshot in flight finishes, pruning included
    assert len(snaps(dbdir)) == 2
    assert segs(dbdir)[: len(names)] == names
    db = open_db(dbdir, mode)
    assert segs(dbdir)[: len(names)] == names
    assert db.run_state(first) == state
    assert db.replay_run(first) == state
    assert db.history(first)[0].version == 1
    db.close()


def test_automatic_snapshots_prune_history_under_none(dbdir):
    db = open_db(dbdir, "none", snapshot_every_bytes=4096)
    first = db.begin_run("first")
    first_seg = segs(dbdir)[0]
    commit_until(db, first, lambda: db.stats()["history"]["floor"] > 1)
    assert first_seg not in segs(dbdir)
    assert_unavailable(db, first)
    state = db.run_state(first)
    db.close()
    db = open_db(dbdir, "none")
    assert db.run_state(first) == state
    assert_unavailable(db, first)
    db.close()


# --- options and archive_run -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["bogus", "KEEP", "", None, 1, "all"])
def test_invalid_history_mode_touches_nothing(tmp_path, bad):
    fresh = tmp_path / "fresh"
    with pytest.raises(InvalidArgument):
        Database.open(fresh, history=bad)
    assert not fresh.exists()

    existing = tmp_path / "db"
    with Database.open(existing, durability="strict") as db:
        run = db.begin_run("r")
        db.kv.put(run, "k", 1)
    snapshot = dir_bytes(str(existing))
    names = sorted(os.listdir(existing))
    with pytest.raises(InvalidArgument):
        Database.open(existing, history=bad)
    assert sorted(os.listdir(existing)) == names
    assert dir_bytes(str(existing)) == snapshot
    with Database.open(existing) as db:  # and it was not left locked
        assert db.kv.get(run, "k") == 1


def test_archive_run_unknown_and_idempotent(dbdir):
    db = open_db(dbdir, "active")
    with pytest.raises(RunNotFound):
        db.archive_run(str(uuid.uuid4()))
    with pytest.raises(RunNotFound):
        db.archive_run("nope")
    run = db.begin_run("r")
    db.kv.put(run, "k", 1)
    v = version(db)
    assert not db.runs.get(run).archived
    db.archive_run(run)
    assert version(db) == v + 1  # archiving is one commit
    assert db.runs.get(run).archived
    db.archive_run(run)
    assert version(db) == v + 1  # the second call commits nothing
    db.end_run(run)
    assert db.runs.get(run).archived and db.runs.get(run).status == "completed"
    db.close()
    db = open_db(dbdir, "active")
    assert db.runs.get(run).archived
    v = version(db)
    db.archive_run(run)
    assert version(db) == v
    other = db.begin_run("o")
    db.end_run(other)
    db.archive_run(other)  # an ended run can be archived
    assert db.runs.get(other).archived
    db.close()


def test_active_reopen_of_a_copy_taken_while_open(dbdir, tmp_path):
    """A crash image (the directory copied while open, sidecars partly stale): the index is rebuilt."""
    db, runs, seg_b, seg_c = build_abc(dbdir, "active")
    a, b, c = runs["A"], runs["B"], runs["C"]
    db.archive_run(a)
    before = segs(dbdir)
    assert deleted_by(db.compact()) == [n for n in before if n < seg_b]
    db.archive_run(b)
    fill(db, c, 2, "d")
    live = {r: db.run_state(r) for r in runs.values()}
    copy = tmp_path / "crash"
    shutil.copytree(dbdir, copy, ignore=shutil.ignore_patterns("LOCK"))
    db.close()

    db = open_db(str(copy), "active")
    assert {r: db.run_state(r) for r in runs.values()} == live
    assert_unavailable(db, a)
    assert_replays(db, b)  # archived, but its segments were not compacted yet
    assert_replays(db, c)
    before = segs(str(copy))
    res = db.compact()
    assert deleted_by(res) == [n for n in before if n < seg_c]
    assert_unavailable(db, b)
    assert_replays(db, c)
    db.close()


def test_active_automatic_snapshots_prune_archived_history_only(dbdir):
    db = open_db(dbdir, "active", snapshot_every_bytes=4096)
    x = db.begin_run("x")
    db.archive_run(x)
    first = segs(dbdir)[0]
    commit_until(db, x, lambda: db.stats()["history"]["floor"] > 1)
    assert first not in segs(dbdir)
    assert_unavailable(db, x)
    y = db.begin_run("y")  # not archived: from its first segment on, nothing goes
    seg_y = segs(dbdir)[-1]
    n = len(segs(dbdir))
    commit_until(db, y, lambda: len(segs(dbdir)) > n + 8 and db.stats()["snapshots"]["taken"] >= 4)
    assert segs(dbdir)[0] <= seg_y
    assert_replays(db, y)
    state = db.run_state(y)
    db.close()
    db = open_db(dbdir, "active")
    assert db.run_state(y) == state
    assert_replays(db, y)
    assert_unavailable(db, x)
    db.close()


def test_compact_reports_every_segment_it_deleted(dbdir):
    db = open_db(dbdir, "none")
    run = db.begin_run("r")
    fill(db, run, 3, "a")
    db.snapshot()  # an earlier snapshot: compact's own snapshot will be the second
    fill(db, run, 2, "b")
    before = segs(dbdir)
    sizes = sum(os.path.getsize(os.path.join(dbdir, n)) for n in before[:-1])
    res = db.compact()
    gone = sorted(set(before) - set(segs(dbdir)))
    assert gone == before[:-1]  # really deleted: everything but the active segment
    assert res["segments_deleted"] == gone
    assert res["bytes_freed"] == sizes
    db.close()
