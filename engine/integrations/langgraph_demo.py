"""The LangGraph part of the demo: a real graph on InmemSaver, SIGKILLed mid-graph, resumed, time-travelled, forked.

This module owns the demo graph (``build_research_graph``), the child-process
entry point that runs it (``_child_main``) and :func:`run_langgraph_demo`,
which ``engine/demo.py`` calls. It needs the optional dependency ``langgraph``.

The graph has no LLM: ``plan`` seeds the state, ``search`` is a tool loop
(deterministic "findings"), ``review`` asks a human with ``interrupt()`` and
``write`` produces the report. The child process runs it on
``InmemSaver.from_path(dir, durability="strict")`` with LangGraph's
``durability="sync"`` and waits for a "go" from the parent after each node,
so the parent's SIGKILL lands inside a known node — no sleeps, no races.
"""

from __future__ import annotations

import operator
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from ..childproc import run_child_until
from ..embeddings import HashingEmbedder
from .langgraph import InmemSaver, InmemStore

__all__ = ["build_research_graph", "run_langgraph_demo"]

class ResearchState(TypedDict, total=False):
    query: str
    findings: Annotated[list[str], operator.add]
    searches: int
    verdict: str
    report: str


def build_research_graph(checkpointer: Any, *, loops: int = 5,
                         hook: Callable[[str], None] | None = None, store: Any = None) -> Any:
    """plan -> search (x ``loops``) -> review (``interrupt()``) -> write; ``hook(node)`` runs as each node ends.

    ``store``: a LangGraph ``BaseStore`` (an ``InmemStore``) where ``write`` keeps each report as long-term
    memory, namespace ``("reports",)``, key the query."""
    done = hook or (lambda name: None)

    def plan(state: ResearchState) -> dict[str, Any]:
        done("plan")
        return {"searches": 0, "findings": [f"plan: {loops} searches for {state['query']!r}"]}

    def search(state: ResearchState) -> dict[str, Any]:
        n = state["searches"] + 1
        done(f"search {n}")
        return {"searches": n, "findings": [f"finding {n} on {state['query']}"]}

    def review(state: ResearchState) -> dict[str, Any]:
        verdict = interrupt({"question": "publish this report?", "findings": len(state["findings"])})
        return {"verdict": verdict}

    def write(state: ResearchState) -> dict[str, Any]:
        done("write")
        report = f"{state['query']}: {state['searches']} searches, {state['verdict']}"
        if store is not None:
            store.put(("reports",), state["query"], {"text": report, "findings": state["findings"]})
        return {"report": report}

    g = StateGraph(ResearchState)
    g.add_node("plan", plan)
    g.add_node("search", search)
    g.add_node("review", review)
    g.add_node("write", write)
    g.add_edge(START, "plan")
    g.add_edge("plan", "search")
    g.add_conditional_edges("search", lambda s: "search" if s["searches"] < loops else "review", ["search", "review"])
    g.add_edge("review", "write")
    g.add_edge("write", END)
    return g.compile(checkpointer=checkpointer, store=store)


def _child_main() -> None:
    """Run in the child process: ``argv = [path, thread_id, loops, query]``; one line per node, then wait for "go"."""
    path, thread_id, loops, query = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

    def hook(name: str) -> None:
        print(name, flush=True)
        if sys.stdin.readline().strip() != "go":
            raise SystemExit(3)

    saver = InmemSaver.from_path(path, durability="strict")  # a commit returns once it is fsynced
    graph = build_research_graph(saver, loops=loops, hook=hook)
    graph.invoke({"query": query}, {"configurable": {"thread_id": thread_id}}, durability="sync")
    print("interrupted", flush=True)
    saver.close()


def run_langgraph_demo(directory: str, console: Any) -> dict[str, Any]:
    """Run the LangGraph demo in ``directory``; print a few lines to ``console``; return figures.

    ``directory`` is an inmem database directory (created if needed, or an
    existing database: the demo uses a fresh thread id) that no handle may
    have open, since the child process opens it. Takes ~1-2 s, most of it
    the child importing LangGraph.

    1. A child process runs the research graph on ``InmemSaver`` and is
       SIGKILLed inside the third search.
    2. The parent reopens the directory, resumes the thread from its last
       checkpoint with ``graph.invoke(None, config)`` (only the unfinished
       nodes run), answers the ``interrupt()`` with ``Command(resume=...)``.
    3. Time travel: it goes back to the checkpoint after the first search and
       forks it with ``update_state`` (a new query), then runs the fork to the
       end; the original branch is untouched.
    4. Long-term memory: ``write`` keeps each report in an ``InmemStore`` on the
       same database; the demo searches the reports by meaning and reads one's
       history.

    Returns e.g. ``{"resumed": True, "checkpoints": 17, "forked": True, ...}``.
    """
    t0 = time.perf_counter()
    directory = os.path.abspath(directory)  # the child runs in another working directory
    loops, kill_after = 5, 4  # lines: plan, search 1, search 2, search 3 <- SIGKILL inside it
    thread_id = f"research-{uuid.uuid4().hex[:8]}"
    config = {"configurable": {"thread_id": thread_id}}
    query = "durable agent memory"
    code = "from inmem.integrations.langgraph_demo import _child_main; _child_main()"
    pid, lines = run_child_until([code, directory, thread_id, str(loops), query], kill_after)
    console.print(f"[bold]LangGraph[/bold] graph plan -> search x{loops} -> review (interrupt) -> write, "
                  f"checkpointed by InmemSaver: child pid {pid} ran {', '.join(lines[:-1])}; "
                  f"[red]SIGKILL[/red] inside {lines[-1]}")

    ran: list[str] = []
    with InmemSaver.from_path(directory) as saver:
        # long-term memory beside the checkpoints, in the same directory: reports searchable by meaning
        store = InmemStore(saver.db, index={"dims": 128, "embed": HashingEmbedder(dim=128), "fields": ["text"]})
        graph = build_research_graph(saver, loops=loops, hook=ran.append, store=store)
        before = graph.get_state(config)
        resumed_from = before.values.get("searches")
        out = graph.invoke(None, config)
        interrupted = "__interrupt__" in out
        final = graph.invoke(Command(resume="approved"), config)
        resumed_nodes = list(ran)
        console.print(f"  reopened: last checkpoint after search {resumed_from} (step {before.metadata['step']}); "
                      f"resumed -> {', '.join(ran)}; interrupt() answered -> [green]{final['report']}[/green]")

        history = list(graph.get_state_history(config))
        ordered = all(
            newer.parent_config is not None
            and newer.parent_config["configurable"]["checkpoint_id"] == older.config["configurable"]["checkpoint_id"]
            for newer, older in zip(history, history[1:])
        )
        final_config = history[0].config
        earlier = next(s for s in history if s.values.get("searches") == 1 and s.next == ("search",))
        fork_config = graph.update_state(earlier.config, {"query": "crash-safe checkpoints"})
        graph.invoke(None, fork_config)
        forked = graph.invoke(Command(resume="approved"), config)
        original = graph.get_state(final_config).values["report"]
        checkpoints = len(list(saver.list(config)))
        console.print(f"  time travel: back to the checkpoint after search 1, forked with update_state -> "
                      f"[green]{forked['report']}[/green]; original branch still {original!r}; "
                      f"{checkpoints} checkpoints in thread {thread_id}")
        hits = store.search(("reports",), query="crash safe checkpoints", limit=2)
        versions = store.history(("reports",), "crash-safe checkpoints")
        console.print(f"  long-term memory (InmemStore, same directory): {len(store.search(('reports',)))} reports; "
                      f"search 'crash safe checkpoints' -> {hits[0].key!r} (score {hits[0].score:.2f}); "
                      f"its history: {len(versions)} version(s) at commit {versions[-1][0]}")
        remembered = [h.key for h in hits]

    return {
        "thread_id": thread_id,
        "killed_inside": lines[-1],
        "resumed": final.get("report") == f"{query}: {loops} searches, approved",
        "resumed_from_searches": resumed_from,
        "resumed_nodes": resumed_nodes,
        "interrupted": interrupted,
        "result": final["report"],
        "history_ordered": ordered,
        "checkpoints": checkpoints,
        "forked": forked["report"] == f"crash-safe checkpoints: {loops} searches, approved",
        "fork_result": forked["report"],
        "original_intact": original == final["report"],
        "remembered": remembered,
        "seconds": round(time.perf_counter() - t0, 2),
    }
