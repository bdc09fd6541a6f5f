"""The demo (the project's main job): agents share a task board, crash, recover, replay, fork and diff.

This module owns one scripted scenario, run by ``make demo`` / ``inmem demo``
through the public API only:

1. A planner run seeds a shared board run with tasks (state machines
   ``open -> claimed -> done``), in one transaction.
2. Agent runs, one thread each, work through the board in a **child
   process**: each task is one transaction across the board and the agent's
   run — ``state.cas`` open -> claimed, a tool call and its result in the
   agent's event log, a trace of the decision with confidence and
   alternatives, a KV scratchpad entry, a vector memory of what it learned
   (``vectors.add_text``, embedded by feature hashing), blind increments of
   the board's shared progress document (``docs.increment``, validated by a
   pydantic model; they never conflict), a node in the board's shared
   memory graph (``graph.add_node``: indexed for BM25 and embedded in the
   same commit) with a ``did`` edge from the agent's node, then
   ``state.set`` claimed -> done.
   Racing agents conflict and retry. The child prints each acknowledged
   (``strict``: fsynced) commit.
3. Part-way through, the child is **SIGKILLed**. The demo reopens the
   directory, shows what recovery did, checks every acknowledged commit and
   every event hash chain, and lets the agents finish the remaining tasks:
   every task done exactly once, none lost, one vector memory per task; an
   agent recalls its memories by semantic search with a metadata filter;
   the board's memory graph is searched (text, vector, hybrid) and walked.
   Meanwhile a follower in the demo's own process (``read_only=True,
   follow=True``: no lock) watches the board's state changes in the child's
   WAL as they are written; after the crash a watch on the reopened database
   resumes at the next version, and every task is seen done exactly once.
4. It replays one agent's run from the WAL and compares it with the live
   state, forks that run at an earlier version, makes the fork diverge, and
   prints the diff.
5. LangGraph (with the ``langgraph`` extra): a real graph checkpointed by
   ``InmemSaver`` in the same directory is SIGKILLed mid-graph in a child,
   resumed, time-travelled and forked (:mod:`inmem.integrations.langgraph_demo`).
6. Long-term memory (:mod:`inmem.memory_demo`): two users' Mem0-shaped
   memories isolated by tenant views, working memory with a time to live on
   a hand-moved database clock (expired at once, then swept in a commit), a
   conversation buffer within its limits, and a durable workflow SIGKILLed
   in a child after its third step and resumed to completion with each
   step's inmem effect exactly once.
7. It prints a summary and the ``inmem`` commands to explore the directory.

Invariant: the demo asserts what it claims; :func:`run_demo` returns the
verification figures (tests assert those, not the text).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from pydantic import BaseModel
from rich.table import Table

from .childproc import child_env
from .database import Database
from .embeddings import HashingEmbedder
from .memory_demo import run_memory_demo

__all__ = ["run_demo"]

TOOLS = ("search", "read_file", "run_tests", "write_patch", "ask_user")
TRANSITIONS = {"open": ["claimed"], "claimed": ["done"]}
#: Each agent's vector collection of what it learned (one memory per task, embedded by EMBEDDER).
MEMORY = "memory"
EMBED_DIM = 64
#: The board's shared JSON document that every task's transaction updates with blind operations.
PROGRESS = "progress"


class BoardProgress(BaseModel):
    """The schema of the board's progress document (``docs.define``): counts only, so it stays small."""

    done: int = 0
    by_tool: dict[str, int] = {}
    by_agent: dict[str, int] = {}


def _open(directory: str, **options: Any) -> Database:
    """Open the demo database with its embedder (deterministic feature hashing: no model, no download)."""
    return Database.open(directory, embedder=HashingEmbedder(dim=EMBED_DIM), **options)


def _task(i: int) -> str:
    return f"task/{i:05d}"


def _agent_node(run: str) -> str:
    return f"agent/{run[-12:]}"


def _work_one(db: Database, board: str, run: str, key: str, rng: random.Random) -> bool:
    """Claim, work and finish one task in one transaction (retried on conflict); False if it was taken."""
    tool = rng.choice(TOOLS)
    tokens = rng.randrange(50, 4000)
    confidence = round(rng.uniform(0.5, 0.99), 2)

    def step(tx: Any) -> bool:
        if not tx.state.cas(board, key, "open", "claimed"):
            return False
        tx.events.append(run, "tool_call", {"task": key, "tool": tool, "args": {"query": f"how to do {key}"}})
        tx.events.append(run, "tool_result", {"task": key, "ok": True, "tokens": tokens})
        tx.traces.record(run, "decision", f"use {tool} for {key}", confidence=confidence,
                         alternatives=[t for t in TOOLS if t != tool][:2], tags=["claim"])
        tx.kv.put(run, f"scratch/{key}", {"tool": tool, "tokens": tokens})
        tx.kv.put(run, "last_task", key)
        # what the agent learned, as a vector memory in the same commit as the event that explains it
        tx.vectors.add_text(run, MEMORY, f"{key}: {tool} finished it with {tokens} tokens",
                            metadata={"task": key, "tool": tool, "tokens": tokens})
        # the shared progress document: blind increments, so racing agents never conflict on it
        tx.docs.increment(board, PROGRESS, "done")
        tx.docs.increment(board, PROGRESS, ["by_tool", tool])
        tx.docs.increment(board, PROGRESS, ["by_agent", run[-12:]])
        # the board's shared memory graph: the task as a node (full-text indexed and embedded in this
        # commit), linked from the agent's node; indexing never makes racing agents conflict
        tx.graph.add_node(board, f"{key} done with {tool}: {tokens} tokens", id=key, kind="task",
                          metadata={"tool": tool, "tokens": tokens})
        tx.graph.add_edge(board, _agent_node(run), "did", key)
        tx.state.set(board, key, "done")
        return True

    return db.transact(step, retries=100)


def _agent_loop(db: Database, board: str, run: str, tasks: int, seed: int, on_done: Any) -> int:
    """Work through the board in a private random order; return how many tasks this agent did."""
    rng = random.Random(seed)
    order = list(range(tasks))
    rng.shuffle(order)
    done = 0
    for i in order:
        key = _task(i)
        state = db.state.get(board, key)
        if state is None or state.value != "open":
            continue
        if _work_one(db, board, run, key, rng):
            done += 1
            on_done(run, key)
    return done


# --- the child process (phase 2) ----------------------------------------------------------------


def _child(directory: str, board: str, runs: list[str], tasks: int, seed: int) -> None:
    """Open the database and let every agent work; print one JSON line per acknowledged commit."""
    db = _open(directory, durability="strict", snapshot_every_bytes=256 * 1024)
    out = sys.stdout
    lock = threading.Lock()

    def acked(run: str, key: str) -> None:
        with lock:  # printed only after the commit returned: fsynced
            out.write(json.dumps({"run": run, "task": key, "conflicts": db.stats()["conflicts"]}) + "\n")
            out.flush()

    threads = [threading.Thread(target=_agent_loop, args=(db, board, run, tasks, seed + i, acked), daemon=True)
               for i, run in enumerate(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    db.close()


# --- the demo --------------------------------------------------------------------------------------


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("  {task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))


def run_demo(directory: str | None = None, *, agents: int = 8, tasks: int = 2000, seed: int = 7,
             kill_after: int | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run the whole demo in ``directory`` (a fresh temporary one if ``None``; it is left behind).

    :param kill_after: SIGKILL the child after this many acknowledged tasks
        (default: 40 % of ``tasks``).
    :returns: the verification figures: ``tasks``, ``acked_before_kill``,
        ``done_once`` (tasks done exactly once), ``lost`` (0), ``chains``
        (event chains verified), ``replay_equals_live``, ``fork``,
        ``diff_empty``, ``recovery`` (report), ``commit_version``,
        ``conflicts``, ``db_bytes``, ``seconds``, ``directory``, ``memory``
        (:func:`inmem.memory_demo.run_memory_demo`'s figures).
    :raises AssertionError: a check failed (the demo's point is that none can).
    """
    if agents < 1 or tasks < agents:
        raise ValueError("need at least one agent and at least as many tasks as agents")
    console = console or Console()
    t_start = time.perf_counter()
    # absolute: the LangGraph and workflow children run in another working directory
    directory = os.path.abspath(directory) if directory else tempfile.mkdtemp(prefix="inmem-demo-")
    kill_after = kill_after if kill_after is not None else max(1, tasks * 2 // 5)
    console.rule("[bold]inmem demo[/bold]: agents on a shared task board, a crash, recovery, replay, fork, diff")
    console.print(f"directory [cyan]{directory}[/cyan]; {agents} agents, {tasks:,} tasks, seed {seed}")

    # 1. the planner seeds the board
    with _open(directory, durability="strict") as db:
        planner = db.begin_run("planner", tags=["demo"])
        board = db.begin_run("board", parent=planner, tags=["demo", "shared"])
        with _progress(console) as bar:
            job = bar.add_task("planner seeds the board", total=tasks)
            with db.transaction() as tx:
                tx.kv.put(planner, "goal", {"tasks": tasks, "agents": agents})
                tx.events.append(planner, "plan", {"tasks": tasks})
                for i in range(tasks):
                    tx.state.define(board, _task(i), transitions=TRANSITIONS, initial="open")
                    if i % 256 == 0:
                        bar.update(job, completed=i)
            bar.update(job, completed=tasks)
        runs = [db.begin_run(f"agent-{i}", parent=planner, tags=["demo", "agent"], metadata={"seed": seed + i})
                for i in range(agents)]
        for run in runs:
            db.vectors.create(run, MEMORY, dim=EMBED_DIM)
        db.docs.define(board, PROGRESS, BoardProgress)
        for i, run in enumerate(runs):
            db.graph.add_node(board, f"agent {i} of the demo", id=_agent_node(run), kind="agent")
        seeded_version = db.stats()["commit_version"]

    # 2. the agents work in a child process, which is SIGKILLed part-way
    code = "import sys, json; from inmem.demo import _child; _child(*json.loads(sys.argv[1]))"
    args = json.dumps([directory, board, runs, tasks, seed])
    acked: list[dict[str, Any]] = []
    # a follower in this process (read-only, no lock) watches the board's state changes in the child's WAL, live
    follower = Database.open(directory, read_only=True, follow=True)
    feed = follower.watch(run=board, primitive="state", from_version=seeded_version + 1)
    seen: Counter[str] = Counter()  # task -> "done" changes delivered
    last_seen = [seeded_version]
    stop_following = threading.Event()

    def follow() -> None:
        while True:
            change = feed.next(timeout=0.2)
            if change is None:
                if stop_following.is_set():
                    return
                continue
            last_seen[0] = change.version
            if change.op == "put" and change.value is not None and change.value.value == "done":
                seen[change.key] += 1

    follower_thread = threading.Thread(target=follow, name="demo-follower", daemon=True)
    follower_thread.start()
    child = subprocess.Popen([sys.executable, "-c", code, args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=child_env())
    with _progress(console) as bar:
        job = bar.add_task(f"{agents} agents work (child pid {child.pid})", total=tasks)
        assert child.stdout is not None
        for line in child.stdout:
            acked.append(json.loads(line))
            bar.update(job, completed=len(acked))
            if len(acked) >= kill_after:
                os.kill(child.pid, signal.SIGKILL)
                break
    child.wait()
    killed = child.returncode == -signal.SIGKILL
    if not killed:
        raise AssertionError(f"the child exited with {child.returncode} before the kill: {child.stderr.read()}")
    child.stderr.close()
    child.stdout.close()
    console.print(f"  [red]SIGKILL[/red] the child after {len(acked):,} acknowledged tasks")
    stop_following.set()
    follower_thread.join()
    feed.close()
    follower.close()
    followed = sum(seen.values())
    console.print(f"  a follower in this process (read_only=True, follow=True: no lock) watched the child's WAL "
                  f"live: {followed:,} 'done' changes, up to version {last_seen[0]:,}")

    # 3. reopen: recovery, then check every acknowledged commit and every chain, then finish
    t0 = time.perf_counter()
    db = _open(directory, durability="strict")
    recovery_s = time.perf_counter() - t0
    try:
        rec = db.stats()["recovery"]
        snap = rec["snapshot"]
        console.print(f"  reopen: recovery took {recovery_s * 1000:.0f} ms — "
                      f"snapshot {'v' + str(snap['commit_version']) if snap else 'none'}, "
                      f"{rec['records']:,} WAL records replayed, torn tail: "
                      f"{'cut at offset ' + str(rec['torn_tail']['offset']) if rec['torn_tail'] else 'none'}")
        recovered_version = db.stats()["commit_version"]
        for ack in acked:
            state = db.state.get(board, ack["task"])
            assert state is not None and state.value == "done", f"acknowledged {ack} lost"
            assert db.kv.get(ack["run"], f"scratch/{ack['task']}") is not None, f"acknowledged {ack} lost"
            memory = db.vectors.search(ack["run"], MEMORY, ack["task"], k=1, filter={"task": ack["task"]})
            assert [m.metadata["task"] for m in memory] == [ack["task"]], f"acknowledged memory of {ack} lost"
            assert db.graph.get_node(board, ack["task"]) is not None, f"acknowledged graph node of {ack} lost"
        chains = sum(1 for r in [planner, *runs] if db.events.verify(r) >= 0)
        progress = db.docs.get(board, PROGRESS) or {"done": 0}
        done_now = sum(1 for i in range(tasks) if db.state.get(board, _task(i)).value == "done")
        assert progress["done"] == done_now, f"progress document says {progress['done']}, board {done_now}"
        console.print(f"  [green]ok[/green] every one of {len(acked):,} acknowledged commits is there; "
                      f"{chains} event hash chains verify; the shared progress document counts exactly "
                      f"the {done_now:,} tasks done")

        remaining = [i for i in range(tasks) if db.state.get(board, _task(i)).value == "open"]
        with _progress(console) as bar:
            job = bar.add_task("agents finish the remaining tasks", total=len(remaining))
            lock = threading.Lock()
            finished: list[str] = []

            def done(run: str, key: str) -> None:
                with lock:
                    finished.append(key)
                    bar.update(job, completed=len(finished))

            threads = [threading.Thread(target=_agent_loop, args=(db, board, run, tasks, seed + 100 + i, done))
                       for i, run in enumerate(runs)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        # the change feed resumes where the follower stopped: nothing missed, nothing twice
        with db.watch(run=board, primitive="state", from_version=last_seen[0] + 1) as resumed:
            while (change := resumed.next(timeout=0.5)) is not None:
                if change.op == "put" and change.value is not None and change.value.value == "done":
                    seen[change.key] += 1
        assert set(seen) == {_task(i) for i in range(tasks)} and set(seen.values()) == {1}, \
            "the change feed missed or repeated a task"
        console.print(f"  change feed resumed at version {last_seen[0] + 1:,}: {sum(seen.values()) - followed:,} more "
                      f"'done' changes; every one of {tasks:,} tasks seen done exactly once across the crash")
        per_task: Counter[str] = Counter()
        for run in runs:
            for e in db.events.read(run):
                if e.type == "tool_call":
                    per_task[e.payload["task"]] += 1
        states = Counter(db.state.get(board, _task(i)).value for i in range(tasks))
        done_once = sum(1 for i in range(tasks) if per_task[_task(i)] == 1)
        lost = tasks - states["done"]
        assert done_once == tasks and lost == 0 and len(per_task) == tasks, \
            f"tasks done once: {done_once} of {tasks}; lost: {lost}"
        memories = sum(db.vectors.count(r, MEMORY) for r in runs)
        assert memories == tasks, f"{memories} vector memories for {tasks} tasks"
        progress = db.docs.get(board, PROGRESS)
        assert progress["done"] == tasks and sum(progress["by_tool"].values()) == tasks, progress
        assert sum(progress["by_agent"].values()) == tasks, progress
        chains = sum(1 for r in [planner, *runs] if db.events.verify(r) >= 0)
        console.print(f"  [green]ok[/green] all {tasks:,} tasks done exactly once, none lost "
                      f"({len(remaining):,} finished after the crash); {chains} event chains verify")
        # semantic recall over an agent's memories, filtered by metadata
        recall_run = runs[0]
        hits = db.vectors.search(recall_run, MEMORY, "run_tests finished it", k=3, filter={"tool": "run_tests"})
        console.print(f"  vector memory: {memories:,} memories (one per task, written in the task's commit); "
                      f"agent {recall_run[-12:]} recalls 'run_tests finished it':")
        for m in hits:
            console.print(f"    {m.score:.2f}  {m.text}", highlight=False)
        console.print(f"  shared document '{PROGRESS}' on the board ({agents} agents, blind increments, "
                      f"validated by a pydantic model): done {progress['done']:,}, by tool "
                      f"{dict(sorted(progress['by_tool'].items()))}", highlight=False)
        # the board's memory graph: every task a node, linked from the agent that did it
        graph = db.graph.check(board)
        assert graph["problems"] == [] and graph["nodes"] == tasks + agents and graph["edges"] == tasks, graph
        query = f"{_task(tasks // 2)} run_tests"
        text = db.graph.search(board, query, k=3, kind="task")
        hybrid = db.graph.search(board, query, k=3, mode="hybrid", kind="task")
        busiest = max(runs, key=lambda r: len(db.graph.edges(board, _agent_node(r))))
        walked = list(db.graph.traverse(board, _agent_node(busiest), max_depth=1))
        console.print(f"  memory graph on the board: {graph['nodes']:,} nodes, {graph['edges']:,} 'did' edges, "
                      "adjacency and text index consistent; BM25 search "
                      f"'{query}' (kind task) and hybrid (BM25 + vectors, RRF):")
        for label, hits in (("text", text), ("hybrid", hybrid)):
            for h in hits:
                console.print(f"    {label:6} {h.score:.3f}  {h.node.content}", highlight=False)
        console.print(f"    agent {busiest[-12:]} did {len(walked) - 1:,} tasks (one hop from its node)")
        for run in runs:
            db.end_run(run, "completed")
        db.end_run(board)
        db.end_run(planner)

        # 4. replay one agent's run, fork it at an earlier version, diverge, diff
        agent = max(runs, key=lambda r: db.runs.get(r).counts["events"])
        t1 = time.perf_counter()
        replayed = db.replay_run(agent)
        replay_ms = (time.perf_counter() - t1) * 1000
        live = db.run_state(agent)
        same = replayed == live
        assert same, "replay differs from the live state"
        console.print(f"  replay of agent {agent[-12:]} from the WAL: {len(replayed.events):,} events, "
                      f"{len(replayed.kv):,} keys, {len(replayed.traces):,} traces in {replay_ms:.0f} ms; "
                      f"equals the live state: [green]{same}[/green]")
        commits = db.history(agent)
        at = commits[len(commits) // 2].version
        fork = db.fork_run(agent, at_version=at, name="agent-retry", tags=["demo", "fork"])
        db.kv.put(fork, "strategy", {"retry": True, "tool": "ask_user"})
        db.events.append(fork, "tool_call", {"task": "task/retry", "tool": "ask_user", "args": {}})
        db.state.set(fork, "mood", "careful")
        diff = db.diff_runs(agent, fork)
        console.print(f"  fork of that run at version {at:,} -> {fork}; it diverged; the diff "
                      "(lines for what the parent did after the fork point elided):")
        lines = str(diff).splitlines()
        for line in [ln for ln in lines if not ln.startswith("- ")][:14]:
            style = {"+": "green", "~": "yellow"}.get(line[:1], "bold")
            console.print(f"    [{style}]{line}[/{style}]", highlight=False)
        console.print(f"    [red]... {sum(ln.startswith('- ') for ln in lines):,} lines of '-'[/red]")
        stats = db.stats()
    finally:
        db.close()

    # 5. LangGraph: a real graph checkpointed by InmemSaver in the same directory, killed, resumed, forked
    try:
        from .integrations.langgraph_demo import run_langgraph_demo
    except ImportError:  # the optional extra is not installed
        langgraph = None
        console.print("  LangGraph part skipped: install the extra with pip install 'inmem[langgraph]'")
    else:
        langgraph = run_langgraph_demo(directory, console)
        assert langgraph["resumed"] and langgraph["forked"] and langgraph["original_intact"], langgraph

    # 6. long-term memory: per-user memories, time to live, a conversation buffer, a workflow killed mid-way
    memory = run_memory_demo(directory, console)

    # 7. the summary
    conflicts = (acked[-1]["conflicts"] if acked else 0) + stats["conflicts"]
    seconds = time.perf_counter() - t_start
    size = _dir_bytes(directory)
    table = Table(title="summary", show_header=False)
    for k, v in [("tasks", f"{tasks:,} done exactly once"), ("acknowledged before SIGKILL", f"{len(acked):,}"),
                 ("commits", f"{stats['commit_version']:,}"), ("conflicts retried", f"{conflicts:,}"),
                 ("recovery", f"{recovery_s * 1000:.0f} ms, {rec['records']:,} records"),
                 ("vector memories", f"{memories:,}, each in its task's commit"),
                 ("shared document", f"{progress['done']:,} blind increments by {agents} agents, none lost"),
                 ("memory graph", f"{graph['nodes']:,} nodes, {graph['edges']:,} edges, BM25 + vector index "
                                  "kept in each node's commit"),
                 ("database size", f"{size / 1e6:.1f} MB"), ("wall time", f"{seconds:.1f} s")]:
        table.add_row(k, v)
    table.add_row("long-term memory", f"{memory['memories']} memories per user, isolated by tenant; "
                                      f"{memory['swept']} expired value swept; workflow resumed after SIGKILL, "
                                      "each step's effect exactly once")
    if langgraph is not None:
        table.add_row("LangGraph", f"thread {langgraph['thread_id']}: {langgraph['checkpoints']} checkpoints, "
                                   "resumed after SIGKILL, forked by time travel")
    console.print(table)
    console.print("explore it:")
    for cmd in (f"inmem info {directory}", f"inmem runs {directory}", f"inmem runs {directory} --tag langgraph",
                f"inmem show {directory} {agent} --traces", f"inmem show {directory} {board} --docs",
                f"inmem show {directory} {board} --graph",
                f"inmem history {directory} {fork}", f"inmem diff {directory} {agent} {fork}",
                f"inmem runs {directory} --tenant alice", f"inmem workflows {directory} --steps {memory['workflow_id']}",
                f"inmem verify {directory}"):
        console.print(f"  [bold]{cmd}[/bold]", highlight=False, soft_wrap=True)  # whole, to copy and paste
    return {
        "directory": directory, "tasks": tasks, "acked_before_kill": len(acked), "killed": killed,
        "done_once": done_once, "lost": lost, "chains": chains, "replay_equals_live": same, "fork": fork,
        "diff_empty": diff.is_empty(), "recovery": rec, "recovered_version": recovered_version,
        "seeded_version": seeded_version, "commit_version": stats["commit_version"],
        "conflicts": conflicts, "db_bytes": size, "seconds": round(seconds, 3), "langgraph": langgraph,
        "memories": memories, "progress": progress, "graph": graph, "followed": followed,
        "feed_exactly_once": set(seen.values()) == {1} and len(seen) == tasks,
        "graph_search": [h.node.id for h in text], "memory": memory,
    }
