"""The ``inmem`` command line, end to end through click's CliRunner.

A small database (runs with KV, events, states, a trace tree, a fork, ended
runs) is built once with the Python API; read commands run against it and
must never change a byte; write commands, damage and locks use copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from inmem import Database
from inmem.cli import cli, main, plain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READ_COMMANDS = ("info", "runs", "show", "history", "replay", "diff", "verify")


def build(path: str) -> dict[str, object]:
    """Runs: A (ended, kv/events/states/trace tree), B (child of A, active), C (failed), F (fork of A, diverged)."""
    with Database.open(path, durability="strict", segment_bytes=4096) as db:
        a = db.begin_run("planner", tags=["demo", "plan"], metadata={"model": "small"})
        for i in range(40):
            db.kv.put(a, f"note/{i:02d}", {"i": i, "text": "x" * 40, "raw": b"\x00\xff"})
        db.kv.put(a, "plan", {"goal": "summarise", "steps": 3})
        db.events.append(a, "tool_call", {"tool": "search"})
        db.events.append(a, "tool_result", {"hits": 3})
        root = db.traces.record(a, "decision", "take task 7", confidence=0.9, alternatives=["task 8"], tags=["t"])
        db.traces.record(a, "step", "read the abstract", parent=root)
        db.state.define(a, "task/7", transitions={"open": ["claimed"], "claimed": ["done"]}, initial="open")
        db.state.set(a, "task/7", "claimed")
        mid = db.stats()["commit_version"]
        b = db.begin_run("worker", parent=a, tags=["worker"])
        db.kv.put(b, "status", "busy")
        fork = db.fork_run(a, name="retry")
        db.kv.put(fork, "plan", {"goal": "summarise", "steps": 2})
        db.events.append(fork, "retry", {"why": "test"})
        db.kv.put(a, "late", True)
        c = db.begin_run("doomed", tags=["demo"])
        db.end_run(c, "failed")
        db.end_run(a, "completed")
        last = db.stats()["commit_version"]
    return {"a": a, "b": b, "c": c, "fork": fork, "mid": mid, "last": last}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cli") / "db")
    ids = build(path)
    return path, ids


@pytest.fixture
def copy(base, tmp_path):
    """A private copy of the base database (for write commands, damage and locks)."""
    path = str(tmp_path / "copy")
    shutil.copytree(base[0], path)
    return path, base[1]


def run(*args: str, code: int | None = 0):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    if code is not None:
        assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result


def run_json(*args: str):
    result = run(*args, "--json")
    return json.loads(result.stdout)  # exactly one JSON document, nothing else


def one_line(text: str) -> str:
    assert text.endswith("\n") and text.count("\n") == 1, repr(text)
    assert "Traceback" not in text
    return text


def snapshot_dir(path: str) -> dict[str, str]:
    return {n: hashlib.sha256(open(os.path.join(path, n), "rb").read()).hexdigest() for n in sorted(os.listdir(path))}


def ro(path: str) -> Database:
    return Database.open(path, read_only=True)


# --- help ----------------------------------------------------------------------------------------


def test_python_m_engine_help():
    p = subprocess.run([sys.executable, "-m", "inmem", "--help"], capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    for command in (*READ_COMMANDS, "fork", "snapshot", "compact", "demo"):
        assert command in p.stdout


@pytest.mark.parametrize("command", [*READ_COMMANDS, "fork", "snapshot", "compact", "demo"])
def test_every_command_has_help_with_an_example(command):
    out = run(command, "--help").stdout
    assert "Example" in out and "inmem " + command in out
    assert ("READ-ONLY" in out) == (command in READ_COMMANDS)


def test_main_returns_exit_codes(base, capsys):
    path, ids = base
    assert main(["--help"]) == 0
    assert "Usage: inmem" in capsys.readouterr().out
    assert main(["runs", path, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 4
    assert main(["show", path, "no-such-run"]) == 1
    one_line(capsys.readouterr().err)
    assert main(["no-such-command"]) == 2
    assert main(["--version"]) == 0


# --- read commands -------------------------------------------------------------------------------


def test_info(base):
    path, ids = base
    out = run("info", path).stdout
    for word in ("format version", "size on disk", "commit version", "WAL segments", "snapshots", "durability",
                 "batched", "native path", "history", "recovery", "records replayed", "torn tail"):
        assert word in out, word
    doc = run_json("info", path)
    with ro(path) as db:
        stats = db.stats()
    assert doc["format_version"] == stats["format_version"] == 1
    assert doc["commit_version"] == stats["commit_version"] == ids["last"]
    assert doc["runs_by_status"] == {"completed": 1, "active": 2, "failed": 1}
    assert doc["wal"]["segments"] == stats["wal_segments"] == len(doc["wal"]["files"]) > 1
    assert doc["wal"]["bytes"] == stats["wal_bytes"]
    assert doc["size_bytes"] == sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))
    assert doc["snapshots"] == []
    assert doc["durability"]["stored"] is False and doc["durability"]["default"] == "batched"
    assert doc["native"] == stats["native"]
    assert doc["history"]["mode"] == "keep" and doc["history"]["floor"] == 1
    assert doc["recovery"]["records"] == ids["last"] and doc["recovery"]["torn_tail"] is None


def test_runs_and_filters(base):
    path, ids = base
    out = run("runs", path).stdout
    for key in ("a", "b", "c", "fork"):
        assert ids[key] in out
    assert "4 run(s)" in out

    def listed(*args):
        return [r["id"] for r in run_json("runs", path, *args)]

    assert listed() == [ids["a"], ids["b"], ids["fork"], ids["c"]]
    assert listed("--status", "completed") == [ids["a"]]
    assert listed("--status", "failed") == [ids["c"]]
    assert listed("--status", "active") == [ids["b"], ids["fork"]]
    assert listed("--tag", "demo") == [ids["a"], ids["c"]]
    assert listed("--parent", ids["a"]) == [ids["b"], ids["fork"]]
    assert listed("--status", "cancelled") == []
    assert "0 run(s)" in run("runs", path, "--tag", "nothing").stdout
    run("runs", path, "--status", "bogus", code=2)
    err = run("runs", path, "--parent", "nope", code=1).stderr
    assert "nope" in one_line(err)

    docs = run_json("runs", path)
    with ro(path) as db:
        api = db.runs.list()
    assert docs == [plain(r) for r in api]
    a = docs[0]
    assert a["name"] == "planner" and a["status"] == "completed" and a["tags"] == ["demo", "plan"]
    assert a["counts"] == {"kv": 42, "events": 2, "state": 1, "traces": 2}
    assert a["metadata"] == {"model": "small"} and a["archived"] is False
    assert a["started_at"] == api[0].started_at.isoformat() and a["ended_at"] is not None
    assert docs[2]["metadata"]["forked_from"] == ids["a"]


def test_show_sections(base):
    path, ids = base
    out = run("show", path, ids["a"]).stdout
    for word in ("planner", "kv (42)", "note/07", "events (2)", "tool_call", "states (1)", "task/7", "claimed",
                 "traces (2)", "take task 7", "read the abstract", "confidence 0.9"):
        assert word in out, word
    # the child trace is drawn under its parent
    assert out.index("take task 7") < out.index("read the abstract")
    only = {"--kv": "kv (", "--events": "events (", "--state": "states (", "--traces": "traces (",
            "--vectors": "vectors (", "--docs": "docs (", "--graph": "graph ("}
    for flag, title in only.items():
        out = run("show", path, ids["a"], flag).stdout
        for other_title in only.values():
            assert (other_title in out) == (other_title == title), (flag, other_title)
    out = run("show", path, ids["a"], "--kv", "--traces").stdout
    assert "kv (" in out and "traces (" in out and "events (" not in out


def test_show_json_matches_the_api(base):
    path, ids = base
    doc = run_json("show", path, ids["a"])
    with ro(path) as db:
        state = db.run_state(ids["a"])
        info = db.runs.get(ids["a"])
    assert doc["run"] == plain(info)
    assert doc["version"] == state.version == ids["last"]
    assert doc["kv"]["plan"] == {"goal": "summarise", "steps": 3}
    assert doc["kv"]["note/03"]["raw"] == "00ff"  # bytes as hex
    assert list(doc["kv"]) == list(state.kv)
    assert [e["seq"] for e in doc["events"]] == [0, 1]
    for got, e in zip(doc["events"], state.events):
        assert got["type"] == e.type and got["payload"] == e.payload
        assert got["hash"] == e.hash.hex() and got["prev_hash"] == e.prev_hash.hex()
        assert got["ts"] == e.ts.isoformat()
    assert doc["states"]["task/7"]["value"] == "claimed" and doc["states"]["task/7"]["version"] == 2
    traces = {t["id"]: t for t in doc["traces"]}
    assert set(traces) == {t.id for t in state.traces}
    root = next(t for t in doc["traces"] if t["parent"] is None)
    child = next(t for t in doc["traces"] if t["parent"] is not None)
    assert child["parent"] == root["id"] and root["confidence"] == 0.9 and root["alternatives"] == ["task 8"]
    only = run_json("show", path, ids["a"], "--events")
    assert set(only) == {"run", "version", "events"}


def test_history(base):
    path, ids = base
    out = run("history", path, ids["fork"]).stdout
    assert "3 commit(s)" in out and "kv plan put" in out and "run put" in out and "events 0 put" in out
    doc = run_json("history", path, ids["a"])
    with ro(path) as db:
        commits = db.history(ids["a"])
    assert [c["version"] for c in doc] == [c.version for c in commits]
    assert doc[0]["ops"][0]["primitive"] == "run"
    assert doc[1]["ops"] == [{"primitive": "kv", "key": "note/00", "kind": "put",
                              "value": {"i": 0, "text": "x" * 40, "raw": "00ff"}}]
    assert doc[1]["ts"] == commits[1].ts.isoformat()
    assert all(c["runs"] == [ids["a"]] for c in doc[:5])


def test_replay(base):
    path, ids = base
    out = run("replay", path, ids["a"]).stdout
    assert "replayed state == live state" in out and "note/39" in out
    doc = run_json("replay", path, ids["a"])
    assert doc["equals_live"] is True and doc["at_version"] is None and doc["version"] == ids["last"]
    assert doc["kv"]["late"] is True

    doc = run_json("replay", path, ids["a"], "--at", ids["mid"])
    with ro(path) as db:
        then = db.replay_run(ids["a"], at_version=ids["mid"])
    assert doc["equals_live"] is False and doc["version"] == then.version == ids["mid"]
    assert doc["kv"] == plain(then.kv) and "late" not in doc["kv"]
    assert doc["states"]["task/7"]["value"] == "claimed"
    out = run("replay", path, ids["a"], "--at", 5, "--kv").stdout
    assert "kv (4)" in out and "differs from the live state" in out and "events (" not in out
    err = run("replay", path, ids["a"], "--at", 10**6, code=1).stderr
    assert "10" in one_line(err)


def test_diff(base):
    path, ids = base
    out = run("diff", path, ids["a"], ids["fork"]).stdout
    assert f"--- run {ids['a']}" in out and f"+++ run {ids['fork']}" in out
    assert "~ kv plan" in out and "- kv late" in out and "+ event 2 retry" in out
    doc = run_json("diff", path, ids["a"], ids["fork"])
    with ro(path) as db:
        d = db.diff_runs(ids["a"], ids["fork"])
    assert doc["a"] == ids["a"] and doc["b"] == ids["fork"]
    assert doc["version_a"] == d.version_a and doc["version_b"] == d.version_b
    assert doc["kv"]["changed"] == {"plan": [{"goal": "summarise", "steps": 3}, {"goal": "summarise", "steps": 2}]}
    assert doc["kv"]["removed"] == {"late": True} and doc["kv"]["added"] == {}
    assert doc["events"]["diverged_at"] == 2 and [e["type"] for e in doc["events"]["only_b"]] == ["retry"]
    assert doc["empty"] is False
    same = run_json("diff", path, ids["a"], ids["a"])
    assert same["empty"] is True
    assert "no differences" in run("diff", path, ids["a"], ids["a"]).stdout
    at = run_json("diff", path, ids["a"], ids["a"], "--at-a", ids["mid"])
    assert at["version_a"] == ids["mid"] and at["kv"]["added"] == {"late": True}
    assert run_json("diff", path, ids["a"], ids["a"], "--at-b", ids["mid"])["kv"]["removed"] == {"late": True}


def test_verify_clean(base):
    path, _ = base
    out = run("verify", path).stdout
    assert "OK" in out and "wal-0000000000000001.log" in out
    doc = run_json("verify", path)
    assert doc["ok"] is True and doc["problems"] == [] and doc["runs"] == 4 and doc["events"] == 5
    assert all(s["error"] is None for s in doc["segments"]) and len(doc["segments"]) > 1


def test_read_commands_never_change_a_byte(base):
    path, ids = base
    before = snapshot_dir(path)
    a, f = ids["a"], ids["fork"]
    for args in (["info", path], ["runs", path, "--status", "active"], ["show", path, a], ["history", path, a],
                 ["replay", path, a, "--at", ids["mid"]], ["diff", path, a, f], ["verify", path]):
        run(*args)
        run(*args, "--json")
        assert snapshot_dir(path) == before, args


def test_read_commands_touch_nothing_after_a_crash(copy):
    """No history sidecars (a crash before close) and a leftover .tmp: read commands neither rebuild nor remove."""
    path, ids = copy
    for name in os.listdir(path):
        if name.startswith("hist-"):
            os.remove(os.path.join(path, name))
    open(os.path.join(path, f"snapshot-{99:016x}.snap.tmp"), "wb").close()
    before = snapshot_dir(path)
    for args in (["info", path], ["history", path, ids["a"]], ["replay", path, ids["fork"]], ["verify", path]):
        run(*args)
    assert snapshot_dir(path) == before


# --- write commands ------------------------------------------------------------------------------


def test_fork_then_runs_parent(copy):
    path, ids = copy
    result = run("fork", path, ids["a"], "--at", ids["mid"], "--name", "again")
    new = result.stdout.strip()
    assert result.stdout == new + "\n"  # only the id on stdout
    children = [r["id"] for r in run_json("runs", path, "--parent", ids["a"])]
    assert children == [ids["b"], ids["fork"], new]
    with ro(path) as db:
        info = db.runs.get(new)
        assert info.name == "again" and info.status == "active"
        assert info.metadata == {"forked_from": ids["a"], "fork_version": ids["mid"]}
        assert db.run_state(new).kv == db.replay_run(ids["a"], at_version=ids["mid"]).kv
    unnamed = run("fork", path, ids["b"]).stdout.strip()
    assert run_json("show", path, unnamed)["run"]["name"] == "worker"
    assert "nope" in one_line(run("fork", path, "nope", code=1).stderr)


def test_snapshot_and_compact(copy):
    path, ids = copy
    out = run("snapshot", path).stdout
    name = f"snapshot-{ids['last']:016x}.snap"
    assert name in out and os.path.exists(os.path.join(path, name))
    doc = run_json("compact", path)
    assert set(doc) >= {"snapshot", "segments_deleted", "snapshots_deleted", "bytes_freed", "history_floor"}
    assert "compacted" in run("compact", path).stdout
    info = run_json("info", path)
    assert [s["file"] for s in info["snapshots"]] == [name]
    assert info["recovery"]["snapshot"]["file"] == name
    with ro(path) as db:  # nothing lost
        assert db.runs.get(ids["a"]).counts["kv"] == 42
    assert run_json("verify", path)["ok"] is True
    snap = run_json("snapshot", path)
    assert snap["commit_version"] == ids["last"] and snap["path"].endswith(name)


def test_compact_by_history_mode_deletes_wal_only_when_asked(tmp_path):
    path = str(tmp_path / "db")
    with Database.open(path, segment_bytes=4096, snapshot_every_bytes=None) as db:
        old = db.begin_run("old")
        for i in range(200):
            db.kv.put(old, f"k{i}", "x" * 64)
        db.end_run(old)
    segments = lambda: sorted(n for n in os.listdir(path) if n.startswith("wal-"))  # noqa: E731
    before = segments()
    assert run_json("compact", path)["segments_deleted"] == [] and segments() == before  # keep
    assert run_json("compact", path, "--history", "active")["segments_deleted"] == []  # not archived
    with Database.open(path) as db:
        db.archive_run(old)
    doc = run_json("compact", path, "--history", "active")
    assert doc["segments_deleted"] and set(doc["segments_deleted"]).isdisjoint(segments())
    with ro(path) as db:
        assert len(db.run_state(old).kv) == 200
    assert "HistoryUnavailable" not in run("replay", path, old, code=1).stderr  # one clear line instead
    assert "is gone" in one_line(run("replay", path, old, code=1).stderr)
    assert "bogus" in run("compact", path, "--history", "bogus", code=2).stderr


def test_demo_tiny(tmp_path):
    directory = str(tmp_path / "demo")
    result = run("demo", "--dir", directory, "--agents", 2, "--tasks", 20, "--seed", 3)
    assert result.stdout
    assert run_json("verify", directory)["ok"] is True
    assert len(run_json("runs", directory)) >= 3


def test_demo_failure_is_one_line(monkeypatch, tmp_path):
    import inmem.demo

    def failing(directory, **kwargs):
        raise AssertionError("task 7 was claimed twice")

    monkeypatch.setattr(inmem.demo, "run_demo", failing)
    line = one_line(run("demo", "--dir", str(tmp_path / "d"), code=1).stderr)
    assert "demo verification FAILED: task 7 was claimed twice" in line and "inmem verify" in line


# --- errors ----------------------------------------------------------------------------------------


def flip(path: str, offset: int | None = None) -> None:
    with open(path, "r+b") as f:
        data = f.read()
        at = len(data) // 2 if offset is None else offset
        f.seek(at)
        f.write(bytes([data[at] ^ 0xFF]))


def test_damaged_wal_segment(copy):
    path, ids = copy
    segments = sorted(n for n in os.listdir(path) if n.startswith("wal-"))
    assert len(segments) > 1
    flip(os.path.join(path, segments[0]))  # not the last segment: corruption, not a torn tail
    before = snapshot_dir(path)
    for args in (["info", path], ["runs", path], ["show", path, ids["a"]], ["history", path, ids["a"]],
                 ["replay", path, ids["a"]], ["diff", path, ids["a"], ids["fork"]], ["info", path, "--json"],
                 ["snapshot", path], ["fork", path, ids["a"]]):
        result = run(*args, code=1)
        line = one_line(result.stderr)
        assert segments[0] in line and "offset" in line and "inmem verify" in line and "salvage=True" in line
        assert result.stdout == ""
    result = run("verify", path, code=1)
    assert "DAMAGED" in result.stdout and segments[0] in result.stdout
    doc = json.loads(run("verify", path, "--json", code=1).stdout)
    assert doc["ok"] is False and doc["problems"]
    assert next(s for s in doc["segments"] if s["file"] == segments[0])["error"]
    assert snapshot_dir(path) == before  # neither reads nor failed writes changed a byte
    assert main(["verify", path]) == 1


def test_damaged_identity(copy):
    path, ids = copy
    flip(os.path.join(path, "IDENTITY"), 20)
    line = one_line(run("runs", path, code=1).stderr)
    assert "IDENTITY" in line
    assert run_json_code("verify", path, code=1)["ok"] is False


def run_json_code(*args: str, code: int):
    return json.loads(run(*args, "--json", code=code).stdout)


def test_torn_tail_is_reported_and_json_stays_clean(copy):
    path, ids = copy
    last = sorted(n for n in os.listdir(path) if n.startswith("wal-"))[-1]
    with open(os.path.join(path, last), "ab") as f:
        f.write(b"\x17" * 100)  # a crash mid-write: garbage after the last frame
    before = snapshot_dir(path)
    doc = run_json("info", path)  # the engine's warning goes to stderr, never into the JSON
    assert doc["recovery"]["torn_tail"]["file"].endswith(last)
    result = run("info", path)
    assert "cut by the next read-write open" in result.stdout
    assert "warning" in result.stderr and "torn tail" in result.stderr
    verify = run_json("verify", path)
    assert verify["ok"] is True and verify["torn_tail"]["file"] == last
    assert snapshot_dir(path) == before


def test_locked_directory(copy):
    path, ids = copy
    db = Database.open(path)
    try:
        for args in (["info", path], ["runs", path, "--json"], ["show", path, ids["a"]], ["verify", path]):
            result = run(*args, code=None)
            assert result.exit_code == 1
            line = one_line(result.stderr)
            assert "open for writing" in line and "close the other process or wait" in line
            assert result.stdout == ""
        line = one_line(run("snapshot", path, code=1).stderr)
        assert "already open" in line
    finally:
        db.close()
    run("info", path)


def test_unknown_run_and_bad_paths(base, tmp_path):
    path, ids = base
    for args in (["show", path, "nope"], ["history", path, "nope"], ["replay", path, "nope"],
                 ["diff", path, ids["a"], "nope"], ["show", path, "01a1fd91-7b28-71c5-920f-4adf7a418c1a"]):
        line = one_line(run(*args, code=1).stderr)
        assert "no run" in line and "inmem runs" in line
    missing = str(tmp_path / "missing")
    assert "no such directory" in one_line(run("info", missing, code=1).stderr)
    assert "no such directory" in one_line(run("snapshot", missing, code=1).stderr)
    assert not os.path.exists(missing)  # a write command never creates a database by typo
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not an inmem database" in one_line(run("compact", str(empty), code=1).stderr)
    assert os.listdir(empty) == []
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "not a directory" in one_line(run("runs", str(a_file), code=1).stderr)


# --- vectors ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vbase(tmp_path_factory):
    """A run with two vector collections, changed over known versions, and a fork that diverges."""
    path = str(tmp_path_factory.mktemp("cli-vectors") / "db")
    with Database.open(path, durability="strict") as db:
        r = db.begin_run("memory")
        db.vectors.create(r, "notes", dim=3, metric="cosine")
        db.vectors.create(r, "docs", dim=2, metric="l2")
        db.vectors.upsert(r, "notes", "n1", [0.5, 0.25, 3.0], metadata={"topic": "plan"}, text="the plan")
        db.vectors.upsert(r, "notes", "n2", [1, 0, 0])
        db.vectors.upsert(r, "docs", "d1", [3, 4], text="a doc")
        mid = db.stats()["commit_version"]
        db.vectors.delete(r, "notes", "n2")
        db.vectors.upsert(r, "notes", "n3", [0, 1, 0])
        fork = db.fork_run(r, at_version=mid, name="alt")
        db.vectors.upsert(fork, "notes", "n1", [9, 9, 9], metadata={"topic": "plan"}, text="the plan")
    return path, {"r": r, "fork": fork, "mid": mid}


def test_show_vectors(vbase):
    path, ids = vbase
    out = run("show", path, ids["r"], "--vectors").stdout
    for word in ("vectors (2 collection(s), 3 vector(s))", "collection docs (dim 2, l2, index exact): 1 vector(s)",
                 "collection notes (dim 3, cosine, index exact): 2 vector(s)", "n1", "n3", "[0.5, 0.25, 3]",
                 "{'topic': 'plan'}", "the plan", "a doc", "3.052"):  # norm of n1
        assert word in out, word
    assert "n2" not in out and "kv (" not in out and "events (" not in out
    assert out.index("collection docs") < out.index("collection notes")  # name order
    doc = run_json("show", path, ids["r"], "--vectors")
    assert set(doc) == {"run", "version", "vectors"}
    notes = doc["vectors"]["notes"]
    assert (notes["dim"], notes["metric"], notes["index"]) == (3, "cosine", "exact")
    assert notes["vectors"]["n1"]["vector"] == [0.5, 0.25, 3.0]  # components as floats, not hex bytes
    assert notes["vectors"]["n1"]["metadata"] == {"topic": "plan"} and notes["vectors"]["n1"]["text"] == "the plan"
    assert list(notes["vectors"]) == ["n1", "n3"]
    assert doc["vectors"]["docs"]["vectors"]["d1"]["vector"] == [3.0, 4.0]
    assert "vectors" in run_json("show", path, ids["r"])  # no section flag: every section


def test_show_vectors_keeps_big_collections_short(tmp_path):
    from inmem.cli.render import MAX_VECTOR_ROWS

    path = str(tmp_path / "db")
    with Database.open(path, durability="off") as db:
        r = db.begin_run("big")
        db.vectors.create(r, "m", dim=8, metric="dot")
        with db.transaction() as tx:
            for i in range(MAX_VECTOR_ROWS + 7):
                tx.vectors.upsert(r, "m", f"v{i:03d}", [i] * 8)
    out = run("show", path, r, "--vectors").stdout
    assert "… 7 more (--json lists them all)" in out and f"v{MAX_VECTOR_ROWS - 1:03d}" in out
    assert f"v{MAX_VECTOR_ROWS:03d}" not in out and "[1, 1, 1, 1, …]" in out
    assert len(run_json("show", path, r, "--vectors")["vectors"]["m"]["vectors"]) == MAX_VECTOR_ROWS + 7


def test_replay_history_and_diff_with_vectors(vbase):
    path, ids = vbase
    out = run("replay", path, ids["r"], "--at", ids["mid"], "--vectors").stdout
    assert "n2" in out and "n3" not in out and "differs from the live state" in out
    doc = run_json("replay", path, ids["r"], "--vectors")
    assert doc["equals_live"] is True and sorted(doc["vectors"]["notes"]["vectors"]) == ["n1", "n3"]
    at = run_json("replay", path, ids["r"], "--at", ids["mid"], "--vectors")
    assert sorted(at["vectors"]["notes"]["vectors"]) == ["n1", "n2"] and at["equals_live"] is False

    out = run("history", path, ids["r"]).stdout
    for line in ("vectors notes (collection) put", "vectors notes/n1 put", "vectors notes/n2 delete",
                 "vectors docs/d1 put"):
        assert line in out, line
    hist = run_json("history", path, ids["r"])
    assert hist[1]["ops"][0]["key"] == ["notes", None] and hist[1]["ops"][0]["primitive"] == "vectors"

    out = run("diff", path, ids["r"], ids["fork"]).stdout
    assert "vectors: 1 added, 1 removed, 1 changed" in out
    assert "+ vectors notes/n2: [1, 0, 0]" in out and "- vectors notes/n3: [0, 1, 0]" in out
    assert "~ vectors notes/n1: [0.5, 0.25, 3]" in out and "-> [9, 9, 9]" in out
    d = run_json("diff", path, ids["r"], ids["fork"])
    assert d["empty"] is False and list(d["vectors"]["added"]) == ["notes/n2"]
    assert d["vectors"]["added"]["notes/n2"]["vector"] == [1.0, 0.0, 0.0]
    old, new = d["vectors"]["changed"]["notes/n1"]
    assert (old["vector"], new["vector"]) == ([0.5, 0.25, 3.0], [9.0, 9.0, 9.0])
    assert run_json("diff", path, ids["r"], ids["r"])["empty"] is True


def test_verify_names_a_bad_vector_record(vbase, tmp_path):
    from inmem.codec import encode_value
    from inmem.keys import TAG_VECTOR, run_id_bytes, run_prefix
    from inmem.testing import kernel

    src, ids = vbase
    doc = run_json("verify", src)
    assert doc["ok"] is True and doc["vectors"] == 6 and doc["collections"] == 4 and doc["vectors_bad"] == []
    assert "vector records: 6 vectors in 4 collections, 0 bad" in run("verify", src).stdout
    path = str(tmp_path / "bad")
    shutil.copytree(src, path)
    key = run_prefix(run_id_bytes(ids["r"]), TAG_VECTOR) + b"notes\x00\x01broken"
    record = {"vector": b"\x00" * 8, "metadata": None, "text": None, "updated_us": 1_700_000_000_000_000}
    with Database.open(path) as db:  # a white-box write of 2 components into a dim-3 collection
        kernel(db).commit([(key, encode_value(record))], (ids["r"],))
    result = run("verify", path, code=1)
    assert "DAMAGED: 1 problem(s)" in result.stdout and "1 bad" in result.stdout
    assert f"run {ids['r']}: collection 'notes' vector 'broken': 8 bytes of components, expected 12" in result.stdout
    doc = json.loads(run("verify", path, "--json", code=1).stdout)
    assert doc["ok"] is False and doc["vectors"] == 7
    assert doc["vectors_bad"] == [{"run": ids["r"], "collection": "notes", "id": "broken",
                                   "problem": "8 bytes of components, expected 12 (dim 3 x float32)"}]


# --- documents -------------------------------------------------------------------------------------


def test_show_history_replay_and_diff_with_documents(tmp_path):
    path = str(tmp_path / "db")
    with Database.open(path, durability="strict") as db:
        r = db.begin_run("hooks")
        db.docs.set(r, "ctx", {"user": {"name": "Ada"}, "items": [1]})
        db.docs.increment(r, "ctx", "metrics.count", 2)
        mid = db.stats()["commit_version"]
        fork = db.fork_run(r, name="alt")
        db.docs.append(fork, "ctx", "items", 2)
        db.docs.merge(fork, "ctx", {"user": {"name": None}})
    out = run("show", path, r, "--docs").stdout
    assert "docs (1)" in out and "doc ctx" in out and '"name": "Ada"' in out and "kv (" not in out
    assert run_json("show", path, r, "--docs")["docs"] == {"ctx": {"user": {"name": "Ada"}, "items": [1],
                                                                   "metrics": {"count": 2}}}
    out = run("history", path, r).stdout
    assert "docs ctx set" in out and "docs ctx increment metrics.count" in out
    hist = run_json("history", path, r)
    assert hist[2]["ops"][0] == {"primitive": "docs", "key": "ctx", "kind": "increment",
                                 "value": {"path": ["metrics", "count"], "by": 2}}
    doc = run_json("replay", path, fork, "--docs")
    assert doc["equals_live"] is True and doc["docs"]["ctx"]["items"] == [1, 2]
    assert run_json("replay", path, r, "--at", mid - 1, "--docs")["docs"]["ctx"] == {"user": {"name": "Ada"},
                                                                                      "items": [1]}
    out = run("diff", path, r, fork).stdout
    assert "docs: 0 added, 1 removed, 1 changed" in out and "~ docs ctx:items: [1] -> [1, 2]" in out
    d = run_json("diff", path, r, fork)
    assert d["docs"]["removed"] == {"ctx:user.name": "Ada"} and d["docs"]["changed"] == {"ctx:items": [[1], [1, 2]]}
    verify = run_json("verify", path)
    assert verify["ok"] is True and verify["docs"] == 2


# --- the memory graph ------------------------------------------------------------------------------


def test_show_history_replay_and_diff_with_the_graph(tmp_path):
    path = str(tmp_path / "db")
    with Database.open(path, durability="strict") as db:
        r = db.begin_run("memory")
        db.graph.add_node(r, "Ada wrote the first program", id="ada", kind="person", metadata={"born": 1815})
        db.graph.add_node(r, "the Analytical Engine", id="engine", kind="machine")
        db.graph.add_edge(r, "ada", "wrote_for", "engine", weight=0.9)
        mid = db.stats()["commit_version"]
        fork = db.fork_run(r, name="alt")
        db.graph.update_node(fork, "ada", metadata={"died": 1852})
        db.graph.add_node(fork, "Babbage", id="babbage")
        db.graph.add_edge(fork, "babbage", "designed", "engine")
        db.graph.delete_node(fork, "ada")
    out = run("show", path, r, "--graph").stdout
    for word in ("graph (2 node(s), 1 edge(s))", "nodes (2)", "edges (1)", "Ada wrote the first program", "person",
                 "wrote_for", "0.9", "{'born': 1815}"):
        assert word in out, word
    assert "kv (" not in out and "docs (" not in out
    doc = run_json("show", path, r, "--graph")["graph"]
    assert set(doc["nodes"]) == {"ada", "engine"} and doc["nodes"]["ada"]["metadata"] == {"born": 1815}
    assert [(e["source"], e["relation"], e["target"], e["weight"]) for e in doc["edges"]] == [
        ("ada", "wrote_for", "engine", 0.9)]
    out = run("history", path, fork).stdout
    for word in ("graph ada update_node", "graph babbage -designed-> engine add_edge",
                 "graph ada -wrote_for-> engine remove_edge", "graph ada delete_node"):
        assert word in out, word
    hist = run_json("history", path, r)
    assert [(o["key"], o["kind"]) for c in hist for o in c["ops"] if o["primitive"] == "graph"] == [
        ("ada", "add_node"), ("engine", "add_node"), (["ada", "wrote_for", "engine"], "add_edge")]
    assert hist[1]["ops"][0]["value"]["content"] == "Ada wrote the first program"
    rep = run_json("replay", path, fork, "--graph")
    assert rep["equals_live"] is True and set(rep["graph"]["nodes"]) == {"engine", "babbage"}
    assert set(run_json("replay", path, r, "--at", mid - 1, "--graph")["graph"]["nodes"]) == {"ada", "engine"}
    assert run_json("replay", path, r, "--at", mid - 1, "--graph")["graph"]["edges"] == []
    out = run("diff", path, r, fork).stdout
    assert "graph nodes: 1 added, 1 removed, 0 changed" in out and "graph edges: 1 added, 1 removed, 0 changed" in out
    assert "+ graph edges babbage -designed-> engine: weight 1" in out and "- graph nodes ada: [person]" in out
    d = run_json("diff", path, r, fork)
    assert set(d["graph"]["nodes"]["added"]) == {"babbage"} and set(d["graph"]["nodes"]["removed"]) == {"ada"}
    assert list(d["graph"]["edges"]["added"]) == ["babbage -designed-> engine"] and d["empty"] is False
    assert run_json("diff", path, r, r, "--at-a", mid)["empty"] is True


def test_runs_tenant_column_and_filter(tmp_path):
    path = str(tmp_path / "t")
    with Database.open(path) as db:
        a = db.tenant("alice").begin_run("chat")
        b = db.tenant("bob").begin_run("chat")
        plain_run = db.begin_run("shared")
    assert [r["id"] for r in run_json("runs", path, "--tenant", "alice")] == [a]
    assert [r["id"] for r in run_json("runs", path, "--tenant", "bob")] == [b]
    assert [r["tenant"] for r in run_json("runs", path)] == ["alice", "bob", None]
    out = run("runs", path).stdout
    assert "alice" in out and "bob" in out and plain_run in out
    assert "0 run(s)" in run("runs", path, "--tenant", "carol").stdout


def test_sweep_deletes_expired_values(tmp_path):
    path = str(tmp_path / "s")
    clock = [1_000_000.0]
    with Database.open(path, clock=lambda: clock[0], sweep_interval_s=None) as db:
        r = db.begin_run("r")
        db.kv.put(r, "old", 1, ttl=1)
        db.kv.put(r, "keep", 2)
    # the CLI opens with the real clock, far past the injected one: "old" is due
    assert run_json("sweep", path) == {"swept": 1, "commits": 1}
    assert run_json("sweep", path) == {"swept": 0, "commits": 0}
    assert "values deleted" in run("sweep", path, "--run", r).stdout
    run("sweep", path, "--run", "nope", code=1)
    with ro(path) as db:
        assert dict(db.kv.scan(r)) == {"keep": 2}


def test_watch_prints_the_change_feed_and_resumes(tmp_path):
    path = str(tmp_path / "w")
    with Database.open(path) as db:
        r = db.begin_run("feed")
        for i in range(5):
            db.kv.put(r, f"k{i}", {"n": i})
        db.state.set(r, "phase", "plan")
        start = db.history(r)[1].version
    lines = run("watch", path, "--from-version", start, "--primitive", "kv", "--limit", 3, "--json").stdout
    got = [json.loads(line) for line in lines.splitlines()]
    assert [(c["primitive"], c["key"], c["op"], c["value"]) for c in got] == [
        ("kv", f"k{i}", "put", {"n": i}) for i in range(3)]
    rest = run("watch", path, "--from-version", got[-1]["version"] + 1, "--idle", 0.3, "--json").stdout
    assert [json.loads(line)["key"] for line in rest.splitlines()] == ["k3", "k4", "phase"]
    text = run("watch", path, "--from-version", start, "--limit", 1).stdout
    assert text.startswith(f"v{start} ") and " kv k0 put " in text
    assert run("watch", path, "--idle", 0.2).stdout == ""  # nothing new: stops when idle
    with Database.open(path) as db:  # a writer holds the directory: the watch, a follower, runs beside it
        db.kv.put(r, "live", 1)
        v = db.stats()["commit_version"]
        live = json.loads(run("watch", path, "--from-version", v, "--limit", 1, "--json").stdout)
        assert (live["key"], live["value"]) == ("live", 1)
    run("watch", path, "--primitive", "bogus", code=2)
    run("watch", str(tmp_path / "nope"), "--idle", 0.1, code=1)
