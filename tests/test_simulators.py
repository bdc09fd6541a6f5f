"""The simulation harness (``tools.corruptsim``, ``tools.crashsim``) on a small budget, and the engine bugs
it found, pinned as plain tests."""

from __future__ import annotations

import json
import os

import pytest

from inmem import CorruptionError, Database
from tools import corruptsim


def _strict_powercuts(tmp_path, *, points: int, seed: int, steps: int) -> tuple[int, dict]:
    """crashsim's exit status and JSON report for POSIX power cuts under strict, on 2 workers."""
    from tools import crashsim

    out = str(tmp_path / "cr.json")
    status = crashsim.main(["--points", str(points), "--seed", str(seed), "--workers", "2", "--steps", str(steps),
                            "--mode", "strict", "--kinds", "powercut-posix", "--json", out,
                            "--workdir", str(tmp_path / "w")])
    with open(out) as f:
        return status, json.load(f)


def test_a_cut_frame_the_snapshot_covers_is_corruption_not_a_torn_tail(dbdir):
    """Found by corruptsim (seed 2, truncate-wal-last): the last segment cut inside frames the loaded snapshot
    covers was taken for a torn tail; the cut dropped WAL that history replays need, and replay_run
    returned a state without those commits. Those frames were fsynced before the snapshot existed, so a
    crash cannot tear them: the open raises CorruptionError naming the file and offset; salvage opens."""
    with Database.open(dbdir, durability="strict") as db:
        run = db.begin_run("r")
        for i in range(6):
            db.kv.put(run, f"k{i}", "x" * 100)
        db.snapshot()
    (seg,) = [n for n in os.listdir(dbdir) if n.startswith("wal-")]
    path = os.path.join(dbdir, seg)
    size = os.path.getsize(path)
    os.truncate(path, size - 50)  # inside the last frame, which the snapshot covers
    with pytest.raises(CorruptionError) as info:
        Database.open(dbdir)
    assert info.value.path == path and info.value.offset is not None and "snapshot covers" in str(info.value)
    with Database.open(dbdir, salvage=True) as db:  # the snapshot still holds every commit
        assert len(dict(db.kv.scan(run))) == 6


def test_corruptsim_small_run_passes(tmp_path, capsys):
    out = str(tmp_path / "cs.json")
    status = corruptsim.main(["--cases", "48", "--seed", "3", "--workers", "2", "--json", out,
                              "--workdir", str(tmp_path / "w")])
    report = json.load(open(out))
    assert status == 0, capsys.readouterr().out
    assert report["trials"] == 48 and report["total"]["lost"] == report["total"]["wrong"] == 0
    assert report["total"]["recovered"] > 0 and report["total"]["detected"] > 0
    assert "PASS" in capsys.readouterr().out


def test_corruptsim_catches_an_engine_that_calls_every_bad_last_frame_a_torn_tail(tmp_path, monkeypatch, capsys):
    """The harness attacks itself: with recovery's look-ahead for valid frames switched off, flips in the last
    segment silently drop intact commits, and corruptsim must say so (non-zero exit, "lost")."""
    import inmem.recovery

    monkeypatch.setattr(inmem.recovery, "find_valid_frame", lambda *a: -1)
    out = str(tmp_path / "cs.json")
    status = corruptsim.main(["--cases", "24", "--seed", "4", "--workers", "2", "--kinds", "bitflip-wal-last",
                              "--json", out, "--workdir", str(tmp_path / "w")])
    assert status == 1 and json.load(open(out))["total"]["lost"] > 0
    assert "reproduce: python -m tools.corruptsim --seed 4 --only" in capsys.readouterr().out


def test_crashsim_small_run_passes(tmp_path, capsys):
    from tools import crashsim

    out = str(tmp_path / "cr.json")
    status = crashsim.main(["--points", "48", "--seed", "5", "--workers", "2", "--steps", "30", "--json", out,
                            "--workdir", str(tmp_path / "w")])
    report = json.load(open(out))
    assert status == 0, capsys.readouterr().out
    assert report["trials"] >= 40 and report["total"]["recovered"] == report["trials"]
    kinds = {k.split()[0] for k in report["table"]}
    assert len(kinds) >= 3 and kinds & {"powercut-posix", "powercut-ext4"}


def test_crashsim_catches_an_engine_whose_wal_fsync_does_nothing(tmp_path, monkeypatch, capsys):
    """The harness attacks itself: a WAL fsync that makes nothing durable loses strict commits."""
    from tools import faultfs

    real = faultfs._FaultFile.sync

    def sync(self):
        if not self.path.endswith(".log"):
            real(self)

    monkeypatch.setattr(faultfs._FaultFile, "sync", sync)
    status, report = _strict_powercuts(tmp_path, points=36, seed=4, steps=30)
    assert status == 1 and report["total"]["lost"] > 0
    assert "reproduce: python -m tools.crashsim --seed 4 --mode strict" in capsys.readouterr().out


def test_a_wal_ending_cleanly_below_the_snapshot_is_corruption(dbdir):
    """Found by corruptsim (seed 52, truncate-wal-last): the last segment cut exactly at a frame boundary
    below the snapshot's LSN opened from the snapshot, and replay_run silently missed the cut commits. The
    WAL is fsynced up to the snapshot's LSN before the snapshot exists, so this is damage: CorruptionError
    naming the segment and where its records end; salvage still opens from the snapshot."""
    from inmem.wal.format import SEGMENT_HEADER_SIZE, check_frame

    with Database.open(dbdir, durability="strict") as db:
        run = db.begin_run("r")
        for i in range(6):
            db.kv.put(run, f"k{i}", i)
        db.snapshot()
    (seg,) = [n for n in os.listdir(dbdir) if n.startswith("wal-")]
    path = os.path.join(dbdir, seg)
    buf = open(path, "rb").read()
    ends, pos = [], SEGMENT_HEADER_SIZE
    while pos < len(buf):
        pos = check_frame(buf, pos)[3]
        ends.append(pos)
    os.truncate(path, ends[3])  # a clean end, three commits short of the snapshot
    with pytest.raises(CorruptionError) as info:
        Database.open(dbdir)
    assert info.value.path == path and info.value.offset == ends[3] and "snapshot" in str(info.value)
    with Database.open(dbdir, salvage=True) as db:
        assert dict(db.kv.scan(run)) == {f"k{i}": i for i in range(6)}



def test_the_simulators_digest_sees_every_graph_change(dbdir):
    """crashsim and corruptsim compare a recovered database with the workload by digest: a node's content,
    kind or metadata, an edge's weight or metadata, a missing edge or node must each change it."""
    from tools import simworkload

    with Database.open(dbdir) as db:
        w = simworkload.Workload(db, 15)
        for name in simworkload.plan(15, 120):
            simworkload.step(w, name)
        simworkload.stop(w)
        run, edge = next((r.id, e) for r in db.runs.list(status="active") for n in db.graph.nodes(r.id)
                         for e in db.graph.edges(r.id, n.id))
        g = db.graph
        changes = [lambda: g.add_edge(run, edge.source, edge.relation, edge.target, weight=edge.weight + 1),
                   lambda: g.add_edge(run, edge.source, edge.relation, edge.target, metadata={"x": 1}),
                   lambda: g.update_node(run, edge.source, metadata={"x": 1}),
                   lambda: g.update_node(run, edge.source, "other content"),
                   lambda: g.remove_edge(run, edge.source, edge.relation, edge.target),
                   lambda: g.add_node(run, "new", id="new"), lambda: g.delete_node(run, "new"),
                   lambda: g.delete_node(run, edge.target)]
        seen = [simworkload.digest(db)]
        for change in changes:
            change()
            seen.append(simworkload.digest(db))
        assert len(set(seen)) == len(seen) - 1 and seen[-2] == seen[-4]  # add then delete "new": back to before


def test_verify_database_checks_an_open_handle_like_verify_directory(dbdir):
    """crashsim verifies on the handle it recovered with (no second open): the same report as ``inmem verify``
    on a clean database, the same damage found in a middle segment flipped under the open handle, and a
    closed handle refused."""
    from inmem.errors import DatabaseClosed
    from inmem.verify import verify_database, verify_directory

    with Database.open(dbdir, durability="strict", segment_bytes=4096) as db:
        run = db.begin_run("r")
        for i in range(40):
            db.events.append(run, "e", {"i": i, "pad": "x" * 100})
        db.vectors.create(run, "c", dim=2)
        db.vectors.upsert(run, "c", "v", [1.0, 2.0])
    clean = verify_directory(dbdir)
    db = Database.open(dbdir, durability="strict")
    try:
        mine = verify_database(db)
        assert mine == clean and mine["ok"] and mine["events"] == 40 and mine["vectors"] == 1
        segs = sorted(n for n in os.listdir(dbdir) if n.startswith("wal-"))
        assert len(segs) >= 3
        middle = os.path.join(dbdir, segs[1])
        with open(middle, "r+b") as f:
            f.seek(200)
            b = f.read(1)
            f.seek(200)
            f.write(bytes([b[0] ^ 0x10]))
        bad = verify_database(db)
        assert not bad["ok"] and any(segs[1] in p for p in bad["problems"])
        assert [s["error"] is not None for s in bad["segments"]] == [n == segs[1] for n in segs]
    finally:
        db.close()
    assert verify_directory(dbdir)["segments"] == bad["segments"]
    with pytest.raises(DatabaseClosed):
        verify_database(db)


def test_crashsim_proves_workflows_resume_with_every_effect_once(tmp_path, capsys):
    """Workflows are in the workload, driven one commit per step: after power cuts, recover() resumes the
    interrupted ones and each completes with its result, every step recorded once and every inmem effect
    (KV value, event, context-document update) exactly once."""
    from tools import crashsim

    out = str(tmp_path / "cr.json")
    status = crashsim.main(["--points", "60", "--seed", "7", "--workers", "2", "--steps", "40", "--mode", "strict",
                            "--kinds", "powercut-posix,powercut-ext4", "--json", out, "--workdir", str(tmp_path / "w")])
    report = json.load(open(out))
    assert status == 0, capsys.readouterr().out
    assert report["workflows_resumed"] > 0 and report["workflows_checked"] >= report["workflows_resumed"]


def test_crashsim_catches_a_recover_that_runs_recorded_steps_again(tmp_path, monkeypatch, capsys):
    """The harness attacks itself: a recover() that forgets which steps a workflow recorded runs their bodies
    again (events appended twice, counters incremented twice); crashsim must call that silently wrong."""
    import inmem.workflows.manage as manage
    from inmem.workflows.records import STEP_PREFIX

    real = manage.Management.recover

    def recover(self):
        for info in self.list(status="pending"):
            for key, _ in list(self._db.kv.scan(info.run, STEP_PREFIX)):
                self._db.kv.delete(info.run, key)
        return real(self)

    monkeypatch.setattr(manage.Management, "recover", recover)
    status, report = _strict_powercuts(tmp_path, points=24, seed=7, steps=40)
    assert status == 1 and report["total"]["wrong"] > 0
    assert all("workflows after recover()" in f["detail"] and "expected" in f["detail"] for f in report["failing"])


def test_the_prefix_check_places_states_inside_a_two_commit_workflow_step():
    """A workflow's start or finish is two commits: the state between them is a legal crash state only while
    that step is not promised durable; a state past the last acknowledged step + 1, or none at all, is
    wrong; an earlier state than the floor is lost."""
    from tools.simcheck import locate

    ref = [["a"], ["b"], ["c1", "c"], ["d"]]  # step 2 is two commits: c1 between them
    assert locate(ref, "c1", 1, 3) == {"outcome": "recovered", "step": 2, "inside": True}
    assert locate(ref, "c", 2, 2) == {"outcome": "recovered", "step": 2, "inside": False}
    assert locate(ref, "c1", 2, 3)["outcome"] == "lost"  # step 2 acknowledged under strict: both commits durable
    assert locate(ref, "b", 2, 3)["outcome"] == "lost"
    assert locate(ref, "d", 0, 2)["outcome"] == "wrong"  # a step past the last acknowledged + 1
    assert locate(ref, "c1", 0, 1)["outcome"] == "wrong"
    assert locate(ref, "x", 0, 3)["outcome"] == "wrong"
    assert locate([["a"], ["a"]], "a", 1, 1) == {"outcome": "recovered", "step": 1, "inside": False}  # no commit


def test_a_power_cut_inside_a_workflows_start_or_finish_recovers_and_resumes_it(tmp_path):
    """Power cut at every file-system call made during a workflow's two-commit start or finish (strict): each
    image reopens to a state the reference knows — some to the state between the two commits — and
    recover() then completes every workflow with each inmem effect exactly once."""
    from tools import crashsim, simcheck
    from tools.faultfs import FaultFS

    seed, steps = 7, 40
    ref = crashsim.reference(seed, steps, str(tmp_path))
    two = {j for j, states in enumerate(ref) if len(states) > 1}  # steps (1-based) that make two commits
    assert two
    root = str(tmp_path / "db")
    acked: list[int] = []
    images = []

    def cut(fs, n, _kind):
        if len(acked) + 1 in two:  # the step in progress
            dest = str(tmp_path / f"cut-{n}")
            fs.image(dest, model="posix", tail="none")
            images.append((dest, list(acked)))

    crashsim.run_workload(root, "strict", seed, steps, FaultFS(root, real_sync=False, before_call=cut), acked=acked)
    results = [simcheck.check(d, ref, a, "strict", killed=False) for d, a in images]
    assert [r["outcome"] for r in results] == ["recovered"] * len(results), [r["detail"] for r in results]
    assert any(r["inside_step"] for r in results)
    assert sum(r["workflows_resumed"] for r in results) > 0


@pytest.mark.parametrize("failing", [1, 2], ids=["result-commit", "run-end"])
def test_a_workflow_finish_that_fails_is_not_acknowledged_nor_left_gated(tmp_path, monkeypatch, failing):
    """Found by crashsim (seed 337: enospc strict, eio batched). The end of a workflow's run failing in its
    thread, after its result committed, left the step acknowledged (the engine logs that failure, result()
    returns, reads show the run ended); and a finish that raised before its gate was dropped left the gate
    registered, so recover() of the same workflow in the same process parked forever. Now the step raises
    (the database is poisoned), the gate is dropped before the finish, and recovery drops any left over."""
    from inmem.errors import InmemError
    from tools import simflows, simworkload
    from tools.faultfs import FaultFS, abandon

    monkeypatch.setattr(simflows, "IN_FLIGHT", 1)  # one workflow: every call moves it on
    monkeypatch.setattr(simflows, "GATE_TIMEOUT_S", 10.0)
    root, cut = str(tmp_path / "db"), str(tmp_path / "cut")
    fs = FaultFS(root, real_sync=False)
    db = Database.open(root, fs=fs, durability="strict", sweep_interval_s=None)
    w = simworkload.Workload(db, 1)
    try:
        simflows.op_workflow(w)  # start
        flow = w.flows[0]
        while flow.done < flow.k:
            simflows.op_workflow(w)
        fs.fail("write", failing)  # the finish: its result and status commit, then the end of its run
        with pytest.raises(InmemError):
            simflows.op_workflow(w)
    finally:
        simworkload.stop(w)
        fs.power_cut(cut)
        abandon(db)  # poisoned: its close raises
    with Database.open(cut, durability="strict") as db:
        problems, resumed, checked = simflows.recover_and_check(db)
        assert problems == [] and checked == 1
        assert db.runs.get(db.workflows.get(flow.id).run).status == "completed"
