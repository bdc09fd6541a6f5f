"""InmemSaver with real LangGraph graphs: interrupts, SIGKILL and resume, time travel, fork, concurrency, growth.

The graph (``build_graph``) has no LLM: ``plan`` seeds the state, ``tool``
runs a loop of ``loops`` iterations (a conditional edge back to itself),
``review`` asks a human with ``interrupt()`` and ``finish`` writes the
result. Every node is deterministic, so a resumed run must end in exactly the
state an uninterrupted one does.
"""

from __future__ import annotations

import asyncio
import operator
import os
import threading
import time
from datetime import datetime, timezone
from typing import Annotated, Any, Callable, TypedDict

import pytest

pytest.importorskip("langgraph")

from langgraph.channels.delta import DeltaChannel  # noqa: E402
from langgraph.checkpoint.base.id import uuid6  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.types import Command, interrupt  # noqa: E402

from inmem import Database, DatabaseReadOnly  # noqa: E402
from inmem.integrations.langgraph import InmemSaver  # noqa: E402
from inmem.childproc import run_child_until  # noqa: E402
from tests.conftest import run_interleaved  # noqa: E402
from inmem.txn import Transaction  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class State(TypedDict, total=False):
    task: str
    log: Annotated[list[str], operator.add]
    count: int
    approved: str
    result: str


def build_graph(checkpointer: Any, *, loops: int = 3, review: bool = True,
                hook: Callable[[str], None] | None = None) -> Any:
    """plan -> tool (x ``loops``) -> [review: interrupt()] -> finish. ``hook(name)`` runs as each node ends."""
    done = hook or (lambda name: None)

    def plan(state: State) -> dict[str, Any]:
        done("plan")
        return {"log": ["plan"], "count": 0}

    def tool(state: State) -> dict[str, Any]:
        n = state["count"] + 1
        done(f"tool:{n}")
        return {"log": [f"tool:{n}"], "count": n}

    def route(state: State) -> str:
        if state["count"] < loops:
            return "tool"
        return "review" if review else "finish"

    def review_node(state: State) -> dict[str, Any]:
        answer = interrupt({"question": "approve?", "count": state["count"]})
        return {"log": ["review"], "approved": answer}

    def finish(state: State) -> dict[str, Any]:
        done("finish")
        return {"log": ["finish"], "result": f"{state['task']}:{state['count']}:{state.get('approved', 'auto')}"}

    g = StateGraph(State)
    g.add_node("plan", plan)
    g.add_node("tool", tool)
    g.add_node("review", review_node)
    g.add_node("finish", finish)
    g.add_edge(START, "plan")
    g.add_edge("plan", "tool")
    g.add_conditional_edges("tool", route, ["tool", "review", "finish"])
    g.add_edge("review", "finish")
    g.add_edge("finish", END)
    return g.compile(checkpointer=checkpointer)


def expected_log(loops: int, review: bool) -> list[str]:
    return ["plan", *[f"tool:{i}" for i in range(1, loops + 1)], *(["review"] if review else []), "finish"]


def cfg(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


@pytest.fixture
def db(dbdir):
    d = Database.open(dbdir)
    yield d
    d.close()


# --- interrupts, history, time travel, fork --------------------------------------------------------


def test_interrupt_then_resume_with_command(db):
    graph = build_graph(InmemSaver(db), loops=3)
    out = graph.invoke({"task": "t"}, cfg("hitl"))
    assert out["count"] == 3 and "__interrupt__" in out
    assert out["__interrupt__"][0].value == {"question": "approve?", "count": 3}
    state = graph.get_state(cfg("hitl"))
    assert state.next == ("review",)
    out = graph.invoke(Command(resume="yes"), cfg("hitl"))
    assert out["result"] == "t:3:yes"
    assert out["log"] == expected_log(3, True)
    assert graph.get_state(cfg("hitl")).next == ()


def test_history_is_complete_and_ordered(db):
    saver = InmemSaver(db)
    graph = build_graph(saver, loops=3)
    graph.invoke({"task": "t"}, cfg("h"))
    graph.invoke(Command(resume="ok"), cfg("h"))
    history = list(graph.get_state_history(cfg("h")))
    # input, plan, tool x3, review (interrupted, then resumed), finish: steps -1 .. 6
    steps = [s.metadata["step"] for s in history]
    assert steps == list(range(steps[0], -2, -1)) and steps[0] == 6
    ids = [s.config["configurable"]["checkpoint_id"] for s in history]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    for newer, older in zip(history, history[1:]):
        assert newer.parent_config["configurable"]["checkpoint_id"] == older.config["configurable"]["checkpoint_id"]
    assert history[-1].parent_config is None
    assert history[0].values["result"] == "t:3:ok"
    # the saver's own list agrees with LangGraph's view, and get_tuple finds each one
    listed = list(saver.list(cfg("h")))
    assert [t.config["configurable"]["checkpoint_id"] for t in listed] == ids
    for t in listed[:3]:
        assert saver.get_tuple(t.config).checkpoint["id"] == t.checkpoint["id"]
    assert len(list(saver.list(cfg("h"), limit=2))) == 2
    assert [t.metadata["step"] for t in saver.list(cfg("h"), before=listed[2].config, limit=2)] == [3, 2]


def test_time_travel_and_fork_with_update_state(db):
    graph = build_graph(InmemSaver(db), loops=3)
    graph.invoke({"task": "t"}, cfg("tt"))
    final = graph.invoke(Command(resume="yes"), cfg("tt"))
    assert final["result"] == "t:3:yes"
    history = list(graph.get_state_history(cfg("tt")))
    final_config = history[0].config
    # the checkpoint after the first tool call: count 1, tool next
    earlier = next(s for s in history if s.values.get("count") == 1 and s.next == ("tool",))

    # time travel: re-run from that checkpoint; it replays the rest of the loop and interrupts again
    replay = graph.invoke(None, earlier.config)
    assert replay["count"] == 3 and "__interrupt__" in replay
    replay_head = graph.get_state(cfg("tt"))
    assert replay_head.next == ("review",)
    assert replay_head.config["configurable"]["checkpoint_id"] > final_config["configurable"]["checkpoint_id"]

    # fork: change the task at that checkpoint, run the fork to the end
    fork_config = graph.update_state(earlier.config, {"task": "forked"})
    fork_state = graph.get_state(fork_config)
    assert fork_state.values["task"] == "forked" and fork_state.values["count"] == 1
    assert fork_state.parent_config["configurable"]["checkpoint_id"] == earlier.config["configurable"]["checkpoint_id"]
    graph.invoke(None, fork_config)
    forked = graph.invoke(Command(resume="again"), cfg("tt"))
    assert forked["result"] == "forked:3:again"
    assert forked["log"] == expected_log(3, True)  # the fork's log starts from the earlier checkpoint's

    # the original branch is untouched
    assert graph.get_state(final_config).values["result"] == "t:3:yes"
    # every parent link in the branched history points at a stored checkpoint
    history = list(graph.get_state_history(cfg("tt")))
    ids = {s.config["configurable"]["checkpoint_id"] for s in history}
    assert all(s.parent_config is None or s.parent_config["configurable"]["checkpoint_id"] in ids for s in history)
    assert [s.config["configurable"]["checkpoint_id"] for s in history] == sorted(ids, reverse=True)


class SubState(TypedDict, total=False):
    log: Annotated[list, operator.add]


def build_nested(checkpointer: Any) -> Any:
    """A parent graph whose subgraph interrupts: its checkpoints live in a child namespace."""
    def inner(state: SubState) -> dict[str, Any]:
        return {"log": [f"inner:{interrupt('sub?')}"]}

    sub = StateGraph(SubState)
    sub.add_node("inner", inner)
    sub.add_edge(START, "inner")
    sub.add_edge("inner", END)
    outer = StateGraph(SubState)
    outer.add_node("pre", lambda s: {"log": ["pre"]})
    outer.add_node("sub", sub.compile())
    outer.add_edge(START, "pre")
    outer.add_edge("pre", "sub")
    outer.add_edge("sub", END)
    return outer.compile(checkpointer=checkpointer)


def test_subgraph_namespaces_behave_as_with_inmemorysaver(db):
    from langgraph.checkpoint.memory import InMemorySaver

    runs = {}
    for name, saver in (("reference", InMemorySaver()), ("inmem", InmemSaver(db))):
        graph = build_nested(saver)
        first = graph.invoke({"log": []}, cfg("nested"))
        sub_state = graph.get_state(cfg("nested"), subgraphs=True).tasks[0].state
        final = graph.invoke(Command(resume="ok"), cfg("nested"))
        by_ns: dict[str, int] = {}
        for t in saver.list(None):
            ns = t.config["configurable"]["checkpoint_ns"]
            by_ns[ns.split(":")[0]] = by_ns.get(ns.split(":")[0], 0) + 1
        runs[name] = (first["log"], first["__interrupt__"][0].value, sub_state.next, final, by_ns)
    assert runs["inmem"] == runs["reference"]
    assert set(runs["inmem"][4]) == {"", "sub"}  # root and subgraph namespaces both checkpointed


# --- SIGKILL mid-graph, resume in another process ---------------------------------------------------

CHILD = """
import sys
from tests.test_langgraph import build_graph
from inmem.integrations.langgraph import InmemSaver

def hook(name):
    print(name, flush=True)
    if sys.stdin.readline().strip() != "go":   # wait for the parent: it may SIGKILL us right here
        raise SystemExit(3)

saver = InmemSaver.from_path(sys.argv[1], durability="strict")
graph = build_graph(saver, loops=int(sys.argv[2]), review=False, hook=hook)
graph.invoke({"task": "crash"}, {"configurable": {"thread_id": "victim"}}, durability="sync")
print("done", flush=True)
"""


def run_child_and_kill(path: str, loops: int, kill_after: int) -> list[str]:
    """Run the graph in a child; answer "go" to each node's line until line ``kill_after``, then SIGKILL it."""
    _pid, lines = run_child_until([CHILD, path, str(loops)], kill_after)  # killed inside node `kill_after`
    return lines


def test_resume_after_sigkill_mid_graph(dbdir):
    loops, kill_after = 5, 4  # lines: plan, tool:1, tool:2, tool:3 <- killed inside tool:3
    lines = run_child_and_kill(dbdir, loops, kill_after)
    assert lines == ["plan", "tool:1", "tool:2", "tool:3"]

    ran: list[str] = []
    with InmemSaver.from_path(dbdir) as saver:
        graph = build_graph(saver, loops=loops, review=False, hook=ran.append)
        before = graph.get_state(cfg("victim"))
        # the last durable checkpoint is the one after tool:2; tool:3 never committed
        assert before.values["count"] == 2 and before.next == ("tool",)
        assert before.values["log"] == ["plan", "tool:1", "tool:2"]
        out = graph.invoke(None, cfg("victim"))
        assert ran == ["tool:3", "tool:4", "tool:5", "finish"]  # resumed from the last checkpoint, not from scratch
        assert out["log"] == expected_log(loops, False)
        assert out["result"] == "crash:5:auto"
        history = list(graph.get_state_history(cfg("victim")))
        for newer, older in zip(history, history[1:]):
            assert newer.parent_config["configurable"]["checkpoint_id"] == older.config["configurable"]["checkpoint_id"]
        assert saver.db.closed is False
    assert saver.db.closed  # from_path: the saver owned the database and closed it


def test_read_only_handle_reads_and_refuses_writes(dbdir):
    with InmemSaver.from_path(dbdir) as saver:
        graph = build_graph(saver, loops=2, review=False)
        graph.invoke({"task": "ro"}, cfg("ro"))
        ids = [t.checkpoint["id"] for t in saver.list(cfg("ro"))]
    with InmemSaver.from_path(dbdir, read_only=True) as reader:
        assert [t.checkpoint["id"] for t in reader.list(cfg("ro"))] == ids
        assert build_graph(reader, loops=2).get_state(cfg("ro")).values["result"] == "ro:2:auto"
        with pytest.raises(DatabaseReadOnly):
            reader.put_writes(reader.get_tuple(cfg("ro")).config, [("x", 1)], "t")
    empty = os.path.join(os.path.dirname(dbdir), "empty")
    Database.open(empty).close()
    with InmemSaver.from_path(empty, read_only=True) as reader:  # no directory run yet: nothing to read
        assert reader.get_tuple(cfg("ro")) is None and list(reader.list(None)) == []
        with pytest.raises(DatabaseReadOnly):
            reader.put(cfg("ro"), checkpoint(0, {}, {}), meta(0), {})


def test_demo_runs_kills_resumes_and_forks(tmp_path):
    import io

    from rich.console import Console

    from inmem.integrations.langgraph_demo import run_langgraph_demo

    out = io.StringIO()
    figures = run_langgraph_demo(str(tmp_path / "lg"), Console(file=out, width=200))
    assert figures["resumed"] and figures["forked"] and figures["original_intact"] and figures["interrupted"]
    assert figures["killed_inside"] == "search 3" and figures["resumed_from_searches"] == 2
    assert figures["resumed_nodes"] == ["search 3", "search 4", "search 5", "write"]
    assert figures["history_ordered"] and figures["checkpoints"] > 10
    assert figures["remembered"][0] == "crash-safe checkpoints"  # the store beside the checkpoints, searched
    assert "SIGKILL" in out.getvalue() and "update_state" in out.getvalue()


# --- storage model: threads are runs -------------------------------------------------------------------


def test_threads_are_runs_and_delete_thread_ends_the_run(db):
    saver = InmemSaver(db)
    graph = build_graph(saver, loops=2, review=False)
    graph.invoke({"task": "a"}, cfg("one"))
    [info] = db.runs.list(tag="langgraph", name="one")
    assert info.status == "active" and info.counts["kv"] > 0
    saver.delete_thread("one")
    assert db.runs.get(info.id).status == "cancelled"
    assert db.runs.get(info.id).counts["kv"] == 0  # its keys went in one transaction
    assert saver.get_tuple(cfg("one")) is None and list(saver.list(cfg("one"))) == []
    graph.invoke({"task": "b"}, cfg("one"))  # a later put starts a new run
    runs = db.runs.list(tag="langgraph", name="one")
    assert len(runs) == 2 and runs[1].status == "active" and runs[1].id != info.id
    assert graph.get_state(cfg("one")).values["result"] == "b:2:auto"
    # a second saver on the same handle finds the same directory and threads; it does not own the handle
    with InmemSaver(db) as other:
        assert other.get_tuple(cfg("one")).checkpoint["id"] == saver.get_tuple(cfg("one")).checkpoint["id"]
    assert not db.closed


def test_copy_thread_is_a_fork_of_the_run(db):
    saver = InmemSaver(db)
    graph = build_graph(saver, loops=2)
    graph.invoke({"task": "src"}, cfg("src"))
    saver.copy_thread("src", "dst")
    [src_run] = db.runs.list(tag="langgraph", name="src")
    [dst_run] = db.runs.list(tag="langgraph", name="dst")
    assert dst_run.parent == src_run.id and dst_run.metadata["forked_from"] == src_run.id
    src_ids = [t.checkpoint["id"] for t in saver.list(cfg("src"))]
    assert [t.checkpoint["id"] for t in saver.list(cfg("dst"))] == src_ids
    # the copy resumes on its own; the source is untouched
    out = graph.invoke(Command(resume="copy"), cfg("dst"))
    assert out["result"] == "src:2:copy"
    assert graph.get_state(cfg("src")).next == ("review",)
    assert [t.checkpoint["id"] for t in saver.list(cfg("src"))] == src_ids
    # into an existing thread: merged in one transaction; the newest checkpoint of either is the head
    graph.invoke({"task": "other"}, cfg("existing"))
    own = [t.checkpoint["id"] for t in saver.list(cfg("existing"))]
    saver.copy_thread("src", "existing")
    merged = [t.checkpoint["id"] for t in saver.list(cfg("existing"))]
    assert merged == sorted(own + src_ids, reverse=True)
    assert saver.get_tuple(cfg("existing")).checkpoint["id"] == max(own + src_ids)
    assert len(db.runs.list(tag="langgraph", name="existing")) == 1


def test_delete_for_runs_uses_the_run_index(db):
    saver = InmemSaver(db)
    heads = {}
    for thread in ("x", "y"):
        config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        versions: dict[str, Any] = {}
        for step, run_id in enumerate(["keep", "keep", "drop", "drop"]):
            versions["v"] = saver.get_next_version(versions.get("v"), None)
            config = saver.put(config, checkpoint(step, versions, {"v": f"{thread}{step}"}), meta(step, run_id=run_id),
                               {"v": versions["v"]})
            saver.put_writes(config, [("w", step)], "t")
            if run_id == "keep":
                heads[thread] = config["configurable"]["checkpoint_id"]
    directory = db.runs.list(tag="langgraph-directory")[0].id
    assert sorted(v for _, v in db.kv.scan(directory, "r/drop\x00")) == ["x", "y"]
    saver.delete_for_runs(["drop", "unknown"])
    for thread in ("x", "y"):
        listed = list(saver.list(cfg(thread)))
        assert [t.metadata["run_id"] for t in listed] == ["keep", "keep"]
        latest = saver.get_tuple(cfg(thread))  # the head pointer moved back
        assert latest.checkpoint["id"] == heads[thread] and latest.checkpoint["channel_values"] == {"v": f"{thread}1"}
        run = db.kv.get(directory, f"t/{thread}")
        assert len(list(db.kv.scan(run, "b/"))) == 2  # the dropped checkpoints' values went with them
        assert len(list(db.kv.scan(run, "w/"))) == 2
    assert list(db.kv.scan(directory, "r/drop\x00")) == []


def test_prune_keep_latest_keeps_the_values_the_latest_needs(db):
    saver = InmemSaver(db)
    large = "L" * 50_000
    config = {"configurable": {"thread_id": "p", "checkpoint_ns": ""}}
    versions: dict[str, Any] = {}
    for step in range(10):
        new = {}
        if step == 0:
            versions["large"] = new["large"] = saver.get_next_version(None, None)
        versions["small"] = new["small"] = saver.get_next_version(versions.get("small"), None)
        config = saver.put(config, checkpoint(step, versions, {"large": large, "small": step}), meta(step), new)
        saver.put_writes(config, [("small", step + 1)], f"task-{step}")
    saver.prune(["p"])
    [kept] = list(saver.list(cfg("p")))
    assert kept.checkpoint["channel_values"] == {"large": large, "small": 9}  # large was written at step 0
    assert [w[2] for w in kept.pending_writes] == [10]
    run = db.kv.get(db.runs.list(tag="langgraph-directory")[0].id, "t/p")
    blobs = [k for k, _ in db.kv.scan(run, "b/")]
    assert len(blobs) == 2  # the 9 superseded versions of "small" are gone, "large" stays
    assert len([k for k, _ in db.kv.scan(run, "w/")]) == 1


def extend(state: list, writes: list) -> list:
    return state + [x for w in writes for x in w]


class DeltaState(TypedDict, total=False):
    items: Annotated[list, DeltaChannel(extend, snapshot_frequency=4)]  # a snapshot every 4th update
    n: int


def test_prune_keep_latest_respects_delta_channel_ancestry(db):
    S = DeltaState

    def step(state: S) -> dict[str, Any]:
        n = state.get("n", 0) + 1
        return {"items": [n], "n": n}

    g = StateGraph(S)
    g.add_node("step", step)
    g.add_edge(START, "step")
    g.add_conditional_edges("step", lambda s: "step" if s["n"] < 10 else END, ["step", END])
    saver = InmemSaver(db)
    graph = g.compile(checkpointer=saver)
    graph.invoke({"items": [0]}, cfg("delta"))
    assert graph.get_state(cfg("delta")).values["items"] == list(range(11))
    total = len(list(saver.list(cfg("delta"))))
    saver.prune(["delta"])
    remaining = list(saver.list(cfg("delta")))
    # older checkpoints went, but not the ancestors back to the last snapshot of "items"
    # (keeping only the newest would make "items" rebuild as [] - no error, just lost state)
    assert 1 < len(remaining) < total
    assert graph.get_state(cfg("delta")).values["items"] == list(range(11))
    # and the history walk reads the right writes through InmemSaver's own walk
    hist = saver.get_delta_channel_history(config=remaining[0].config, channels=["items"])
    assert "seed" in hist["items"]
    # the thread continues after the prune
    graph.invoke({"items": [99]}, cfg("delta"))
    assert graph.get_state(cfg("delta")).values["items"] == [*range(11), 99, 11]


# --- concurrency: two savers, several threads, one LangGraph thread ----------------------------------------


def checkpoint(step: int, versions: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    return {"v": 4, "id": str(uuid6(clock_seq=step)), "ts": datetime.now(timezone.utc).isoformat(),
            "channel_values": values, "channel_versions": dict(versions),
            "versions_seen": {"node": dict(versions)}, "updated_channels": sorted(values)}


def meta(step: int, **extra: Any) -> dict[str, Any]:
    return {"source": "loop", "step": step, "parents": {}, **extra}


def test_concurrent_savers_write_only_whole_checkpoints(db):
    savers = [InmemSaver(db), InmemSaver(db)]
    writers, per_writer = 4, 40
    barrier = threading.Barrier(writers)
    chains: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            saver = savers[w % 2]
            config = {"configurable": {"thread_id": "shared", "checkpoint_ns": ""}}
            versions: dict[str, Any] = {}
            ids = []
            barrier.wait()
            for i in range(per_writer):
                ch = f"ch{w}"
                versions[ch] = saver.get_next_version(versions.get(ch), None)
                versions["shared"] = saver.get_next_version(versions.get("shared"), None)
                values = {ch: f"w{w}:{i}", "shared": {"writer": w, "i": i, "pad": "p" * 200}}
                config = saver.put(config, checkpoint(i, versions, values), meta(i, writer=w),
                                   {ch: versions[ch], "shared": versions["shared"]})
                saver.put_writes(config, [("out", (w, i)), ("out2", i)], f"task-{w}-{i}")
                ids.append(config["configurable"]["checkpoint_id"])
            chains[w] = ids
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    run_interleaved(threads)
    assert not errors, errors
    listed = list(savers[0].list(cfg("shared")))
    assert len(listed) == writers * per_writer
    by_id = {t.checkpoint["id"]: t for t in listed}
    for w, ids in chains.items():
        for i, cid in enumerate(ids):
            t = by_id[cid]
            # whole: its own values, metadata and writes, never another writer's
            assert t.metadata["writer"] == w and t.metadata["step"] == i
            assert t.checkpoint["channel_values"] == {f"ch{w}": f"w{w}:{i}",
                                                     "shared": {"writer": w, "i": i, "pad": "p" * 200}}
            assert sorted(p[1:] for p in t.pending_writes) == [("out", [w, i]), ("out2", i)]  # msgpack: lists
            # parent chain intact
            expected_parent = ids[i - 1] if i else None
            got_parent = t.parent_config["configurable"]["checkpoint_id"] if t.parent_config else None
            assert got_parent == expected_parent
    # the head is the newest checkpoint
    assert savers[1].get_tuple(cfg("shared")).checkpoint["id"] == max(by_id)


def test_concurrent_puts_on_a_new_thread_create_one_run(db):
    savers = [InmemSaver(db) for _ in range(4)]
    barrier = threading.Barrier(4)

    def first_put(saver: InmemSaver, i: int) -> None:
        barrier.wait()
        saver.put({"configurable": {"thread_id": "race", "checkpoint_ns": ""}},
                  checkpoint(i, {}, {}), meta(i, writer=i), {})

    threads = [threading.Thread(target=first_put, args=(s, i)) for i, s in enumerate(savers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(list(savers[0].list(cfg("race")))) == 4
    [run] = db.runs.list(tag="langgraph", name="race")  # one run began, the others found it
    assert run.status == "active"


# --- storage growth and list() cost -----------------------------------------------------------------------


def dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def test_unchanged_channels_are_stored_once(dbdir):
    steps, large_bytes = 1000, 100_000
    large = "x" * large_bytes
    with InmemSaver.from_path(dbdir) as saver:
        saver.db.sync()
        start = dir_size(dbdir)
        config = {"configurable": {"thread_id": "long", "checkpoint_ns": ""}}
        versions: dict[str, Any] = {}
        for step in range(steps):  # as LangGraph does: new versions only for the channels that changed
            new = {}
            if step == 0:
                versions["large"] = new["large"] = saver.get_next_version(None, None)
            versions["small"] = new["small"] = saver.get_next_version(versions.get("small"), None)
            config = saver.put(config, checkpoint(step, versions, {"large": large, "small": {"step": step}}),
                               meta(step), new)
        saver.db.sync()
        growth = dir_size(dbdir) - start
        # The large channel is written once (~100 KB); each step adds one WAL record of ~0.7 KB
        # (checkpoint record with three 49-byte channel versions, the small value, the head
        # pointer, keys and frame header). Re-storing the large channel would be ~100 MB.
        # Bound: fewer than 10 copies' worth in all, and at most 1 KiB per step on top of one copy.
        assert growth < 10 * large_bytes, growth
        assert growth < large_bytes + steps * 1024, growth

        t0 = time.perf_counter()
        listed = list(saver.list(cfg("long")))
        elapsed = time.perf_counter() - t0
        assert len(listed) == steps
        assert elapsed < 5.0, elapsed  # a generous bound; speed is measured in benches/
        assert [t.metadata["step"] for t in listed[:3]] == [999, 998, 997]
        assert listed[0].checkpoint["channel_values"] == {"large": large, "small": {"step": 999}}
        assert listed[-1].checkpoint["channel_values"] == {"large": large, "small": {"step": 0}}


def test_list_does_a_bounded_number_of_reads(db, monkeypatch):
    saver = InmemSaver(db)
    config = {"configurable": {"thread_id": "reads", "checkpoint_ns": ""}}
    versions: dict[str, Any] = {}
    for step in range(200):
        new = {}
        if step % 50 == 0:  # 4 versions of "slow", 200 of "fast"
            versions["slow"] = new["slow"] = saver.get_next_version(versions.get("slow"), None)
        versions["fast"] = new["fast"] = saver.get_next_version(versions.get("fast"), None)
        config = saver.put(config, checkpoint(step, versions, {"slow": step // 50, "fast": step}), meta(step), new)
        saver.put_writes(config, [("w", step)], "task")
    counts = {"scan": 0, "lookup": 0}
    real_scan, real_lookup = Transaction.scan, Transaction.lookup

    def scan(self: Transaction, lo: bytes, hi: bytes | None) -> Any:
        counts["scan"] += 1
        return real_scan(self, lo, hi)

    def lookup(self: Transaction, key: bytes) -> Any:
        counts["lookup"] += 1
        return real_lookup(self, key)

    monkeypatch.setattr(Transaction, "scan", scan)
    monkeypatch.setattr(Transaction, "lookup", lookup)
    listed = list(saver.list(cfg("reads")))
    assert len(listed) == 200 and all(len(t.pending_writes) == 1 for t in listed)
    # one scan of the checkpoints + one of their writes; the directory entry + one read per distinct blob
    assert counts["scan"] == 2, counts
    assert counts["lookup"] == 1 + 4 + 200, counts


# --- async --------------------------------------------------------------------------------------------------


def test_async_api_does_not_block_the_event_loop(dbdir):
    async def main() -> None:
        saver = InmemSaver.from_path(dbdir, durability="strict")  # every commit waits for an fsync
        async with saver:
            ticks = 0
            stop = False

            async def ticker() -> None:
                nonlocal ticks
                while not stop:
                    await asyncio.sleep(0)
                    ticks += 1

            task = asyncio.create_task(ticker())
            await asyncio.sleep(0)
            config = {"configurable": {"thread_id": "a", "checkpoint_ns": ""}}
            for step in range(5):
                versions = {"v": saver.get_next_version(None, None)}
                before = ticks
                config = await saver.aput(config, checkpoint(step, versions, {"v": step}), meta(step), versions)
                assert ticks > before  # the loop kept running while the commit waited for its fsync
                before = ticks
                await saver.aput_writes(config, [("x", step)], "t")
                assert ticks > before
            tup = await saver.aget_tuple(cfg("a"))
            assert tup.checkpoint["channel_values"] == {"v": 4} and tup.pending_writes == [("t", "x", 4)]
            listed = [t async for t in saver.alist(cfg("a"), limit=3)]
            assert [t.metadata["step"] for t in listed] == [4, 3, 2]
            await saver.acopy_thread("a", "b")
            assert len([t async for t in saver.alist(cfg("b"))]) == 5
            await saver.aprune(["b"])
            assert len([t async for t in saver.alist(cfg("b"))]) == 1
            await saver.adelete_thread("a")
            assert await saver.aget_tuple(cfg("a")) is None
            stop = True
            await task
        assert saver.db.closed

    asyncio.run(main())


def test_async_graph_run(db):
    graph = build_graph(InmemSaver(db), loops=2)

    async def main() -> dict[str, Any]:
        await graph.ainvoke({"task": "as"}, cfg("async"))
        return await graph.ainvoke(Command(resume="y"), cfg("async"))

    assert asyncio.run(main())["result"] == "as:2:y"
