"""The demo's memory part: per-user memory, time to live, a conversation buffer, a durable workflow killed mid-way.

This module owns part 6 of ``make demo`` (:func:`run_memory_demo`), which
:func:`inmem.demo.run_demo` runs in the same directory after the board's
work, through the public API only:

1. **Per-user isolation.** Two users as tenant views (``db.tenant``), each
   with Mem0-shaped memories (:class:`inmem.memory.Memory`): alice's search
   finds her memories, adding one twice stores it once, and bob's view
   neither finds her memories nor can name her run (``RunNotFound``).
2. **Time to live** on a clock the demo moves by hand
   (``Database.open(clock=)``): working memory set for 30 s is there, 31 s
   later it is absent for every read, swept or not; ``db.sweep()`` then
   deletes it in an ordinary commit, which ``db.history`` shows.
3. **A conversation buffer** with limits, kept within them in each append's
   commit.
4. **A durable workflow** (process-wide ``@inmem.workflows.workflow`` and
   ``step``) runs in a child process (``strict``), which is SIGKILLed after
   its third step is acknowledged; the reopen resumes it
   (``db.workflows.recover()``) and it completes: every step's inmem effect
   exactly once, no recorded step run again.

Invariant: the part asserts what it prints; :func:`run_memory_demo` returns
the figures (tests assert those, not the text).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from rich.console import Console

from . import workflows
from .childproc import run_child_until
from .database import Database
from .embeddings import HashingEmbedder
from .errors import RunNotFound
from .memory import ConversationBuffer, Memory, WorkingMemory

__all__ = ["run_memory_demo"]

WORKFLOW_ID = "demo-onboarding"
STEPS = ("create-profile", "load-preferences", "index-history", "write-summary", "notify")
#: The child is SIGKILLed once this step (0-based) is acknowledged, i.e. durably recorded.
KILL_AFTER = 2

#: Steps run in this process (the parent's check: recorded steps never run again).
_ran: list[int] = []
#: Called by the workflow after each step returns (its record committed); the child prints an ack.
_after_step: Callable[[int], None] | None = None


@workflows.step(name="demo-onboarding-step")
def _onboarding_step(i: int) -> str:
    ctx = workflows.context()
    ctx.tx.events.append(ctx.run, "effect", {"step": i, "name": STEPS[i]})  # the inmem effect
    ctx.tx.kv.put(ctx.run, f"step/{STEPS[i]}", {"done": True})
    _ran.append(i)
    return STEPS[i]


@workflows.workflow(name="demo-onboarding", max_recovery_attempts=5)
def _onboarding(user: str) -> dict[str, Any]:
    done = []
    for i in range(len(STEPS)):
        done.append(_onboarding_step(i))
        if _after_step is not None:
            _after_step(i)
    return {"user": user, "steps": done}


def _workflow_child(directory: str) -> None:
    """Child process: run the workflow with ``strict`` durability, acknowledging each step; block after KILL_AFTER."""
    global _after_step

    def ack(i: int) -> None:
        sys.stdout.write(json.dumps({"step": i}) + "\n")
        sys.stdout.flush()
        if i == KILL_AFTER:
            threading.Event().wait()  # SIGKILLed here

    _after_step = ack
    db = Database.open(directory, durability="strict")
    db.workflows.start(_onboarding, "alice", workflow_id=WORKFLOW_ID).result()


class _Clock:
    """The database clock of this part: seconds since the epoch, moved only by :meth:`advance`."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _memories(db: Database, console: Console) -> dict[str, Any]:
    """Parts 1-3 on one handle: tenants, Mem0-shaped memories, time to live, a conversation buffer."""
    alice, bob = db.tenant("alice"), db.tenant("bob")
    embedder = HashingEmbedder(128)
    alice_memory, bob_memory = Memory(alice, embedder=embedder), Memory(bob, embedder=embedder)
    facts = ["Prefers green tea in the morning", "Works on the storage team", "Allergic to peanuts",
             "Is learning Rust on weekends"]
    items = [alice_memory.add(f, user_id="alice", metadata={"source": "chat"}) for f in facts]
    again = alice_memory.add(facts[0], user_id="alice", metadata={"source": "chat"})
    assert again.id == items[0].id, "adding the same memory twice stored it twice"
    bob_memory.add("Prefers coffee, black", user_id="bob")
    hits = alice_memory.search("which tea in the morning", user_id="alice", top_k=2)
    assert hits and hits[0].id == items[0].id, [h.memory for h in hits]
    assert bob_memory.search("green tea", user_id="alice") == [], "bob found alice's memories"
    alice_run = alice.begin_run("chat")
    alice.kv.put(alice_run, "profile", {"name": "Alice"})
    try:
        bob.kv.get(alice_run, "profile")
    except RunNotFound:
        isolated = True
    else:
        raise AssertionError("bob read alice's run")
    console.print(f"  two users as tenant views: alice's {len(facts)} memories (one added twice, stored once); "
                  f"her search 'which tea in the morning' -> '{hits[0].memory}' ({hits[0].score:.2f}); "
                  "bob finds none of them, and naming her run raises RunNotFound", highlight=False)

    # time to live, on the hand-moved clock
    clock = db.clock
    assert isinstance(clock, _Clock)
    scratch = WorkingMemory(alice, alice_run, default_ttl=3600)
    scratch.set("plan", ["search", "answer"], ttl=30)
    assert scratch.get("plan") == ["search", "answer"]
    clock.advance(31)
    assert scratch.get("plan") is None and "plan" not in scratch.all(), "an expired value was read"
    before = db.stats()["commit_version"]
    swept = db.sweep()
    sweep_commits = [c for c in db.history(alice_run) if c.version > before]
    assert swept >= 1 and sweep_commits, (swept, sweep_commits)
    console.print(f"  working memory 'plan' (ttl 30 s) read back; the database clock moved 31 s: absent for every "
                  f"read at once; db.sweep() deleted {swept} expired value(s) in commit "
                  f"v{sweep_commits[-1].version:,}, which the run's history shows")

    # a conversation buffer kept within its limits in each append's commit
    chat = ConversationBuffer(alice, alice_run, "chat", max_messages=6, max_tokens=200)
    for i in range(10):
        chat.append("user" if i % 2 == 0 else "assistant", f"message {i} about the storage team's tea rota")
    stats = chat.stats()
    assert stats["messages"] == 6, stats
    console.print(f"  conversation buffer (max 6 messages, 200 tokens): 10 appended, {stats['messages']} kept, "
                  f"{stats['tokens']} tokens; context: {chat.context(format='compact', max_messages=2)!r}",
                  highlight=False)
    return {"memories": len(facts), "deduplicated": True, "isolated": isolated, "swept": swept,
            "buffer_messages": stats["messages"]}


def run_memory_demo(directory: str, console: Console) -> dict[str, Any]:
    """Run this part in ``directory`` (an inmem database the main demo has closed).

    :returns: ``memories``, ``deduplicated``, ``isolated``, ``swept``,
        ``buffer_messages``, and for the workflow ``workflow_acked`` (steps
        acknowledged before the SIGKILL), ``workflow_rerun`` (steps this
        process ran: never one recorded before the crash), ``effects`` (each
        step's inmem effect count: all 1) and ``workflow_result``.
    :raises AssertionError: a check failed.
    :raises RuntimeError: the workflow's child exited other than by the SIGKILL.
    """
    console.print("[bold]long-term memory[/bold]: per-user memories, time to live, a conversation buffer, "
                  "a durable workflow")
    with Database.open(directory, clock=_Clock(), sweep_interval_s=None) as db:
        figures = _memories(db, console)

    # the workflow in a child process, SIGKILLed once its third step is durably recorded
    code = "import sys; from inmem.memory_demo import _workflow_child; _workflow_child(sys.argv[1])"
    _pid, lines = run_child_until([code, os.path.abspath(directory)], KILL_AFTER + 1)  # the child runs elsewhere
    acked = [json.loads(line)["step"] for line in lines]
    del _ran[:]
    with Database.open(directory, durability="strict") as db:
        resumed = {h.id: h for h in db.workflows.recover()}  # what Database.open(recover_workflows=True) does
        assert WORKFLOW_ID in resumed, f"the killed workflow was not resumed: {sorted(resumed)}"
        result = resumed[WORKFLOW_ID].result(timeout=60)
        run = resumed[WORKFLOW_ID].run
        effects = Counter(e.payload["step"] for e in db.events.read(run) if e.type == "effect")
    assert result == {"user": "alice", "steps": list(STEPS)}, result
    assert effects == Counter(range(len(STEPS))), f"inmem effects per step: {dict(effects)}"
    assert set(_ran).isdisjoint(acked), f"recorded steps {sorted(set(_ran) & set(acked))} ran again"
    console.print(f"  durable workflow '{WORKFLOW_ID}' in a child process: [red]SIGKILL[/red] after step "
                  f"{KILL_AFTER + 1} of {len(STEPS)} was acknowledged; the reopen resumed it "
                  f"(db.workflows.recover()) and it completed: steps run again {sorted(_ran)} (none of the "
                  f"{len(acked)} recorded), every step's inmem effect exactly once", highlight=False)
    return {**figures, "workflow_acked": len(acked), "workflow_rerun": sorted(_ran),
            "effects": dict(effects), "workflow_result": result, "workflow_id": WORKFLOW_ID,
            "workflow_run": run}
