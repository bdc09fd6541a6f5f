"""The demo (the project's main job) end to end with small sizes: assert its verification results, not its text."""

from __future__ import annotations

import io
import os
import tempfile

from rich.console import Console

from inmem import Database
from inmem.demo import run_demo


def test_demo_crashes_recovers_and_verifies(tmp_path):
    out = io.StringIO()
    d = str(tmp_path / "db")
    r = run_demo(d, agents=3, tasks=60, kill_after=20, console=Console(file=out, width=120))
    assert r["killed"] and r["acked_before_kill"] == 20
    assert r["done_once"] == 60 and r["lost"] == 0 and r["chains"] == 4  # planner + 3 agents
    assert r["memories"] == 60  # one vector memory per task, each written in its task's commit
    assert r["replay_equals_live"] and not r["diff_empty"]
    # the board's memory graph: one node per task and per agent, one 'did' edge per task, consistent index
    assert (r["graph"]["nodes"], r["graph"]["edges"], r["graph"]["problems"]) == (63, 60, [])
    assert r["graph_search"] and all(id.startswith("task/") for id in r["graph_search"])
    # the follower watched the child's WAL live, and the resumed change feed saw every task done exactly once
    assert r["followed"] >= 20 and r["feed_exactly_once"]
    # the child committed at least what it acknowledged before the SIGKILL, and the rest came after
    assert r["seeded_version"] + 20 <= r["recovered_version"] < r["commit_version"]
    assert r["recovery"]["commit_version"] == r["recovered_version"]
    # long-term memory: tenants, time to live, a buffer, and a workflow SIGKILLed after its third step
    m = r["memory"]
    assert m["isolated"] and m["deduplicated"] and m["swept"] >= 1 and m["buffer_messages"] == 6
    assert m["workflow_acked"] == 3 and m["workflow_rerun"] == [3, 4]  # no recorded step ran again
    assert m["effects"] == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1} and len(m["workflow_result"]["steps"]) == 5
    text = out.getvalue()
    assert "SIGKILL" in text and f"inmem verify {d}" in text
    # the directory it leaves behind opens and holds the fork with its lineage
    with Database.open(d, read_only=True) as db:
        fork = db.runs.get(r["fork"])
        assert fork.parent is not None and fork.metadata["forked_from"] == fork.parent
        assert db.replay_run(r["fork"]) == db.run_state(r["fork"])
        assert db.workflows.get(m["workflow_id"]).status == "completed"
        assert db.tenant("bob").runs.ids() and m["workflow_run"] in db.runs.ids()
    assert os.path.isdir(d)


def test_demo_uses_a_fresh_temporary_directory_it_leaves_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    r = run_demo(agents=2, tasks=10, console=Console(file=io.StringIO()))
    assert r["done_once"] == 10 and os.path.isdir(r["directory"])
    assert os.path.dirname(r["directory"]) == str(tmp_path) and "inmem-demo-" in r["directory"]


def test_demo_in_a_relative_directory_keeps_every_part_in_it(tmp_path, monkeypatch):
    """The LangGraph and workflow children run in another working directory: a relative path must
    still name the same database (it once made the LangGraph child open a directory of its own)."""
    monkeypatch.chdir(tmp_path)
    r = run_demo("rel", agents=2, tasks=10, console=Console(file=io.StringIO()))
    assert r["directory"] == str(tmp_path / "rel") and r["done_once"] == 10
    assert r["memory"]["workflow_acked"] == 3
    if r["langgraph"] is not None:
        assert r["langgraph"]["resumed"]
