"""The demo workload (the project's main job, ``python -m engine demo``).

This module owns one scripted scenario: several agent runs, one thread each,
keep KV scratchpads and claim tasks from a shared board run. Each claim is one
transaction across the board and the agent's own run (``db.transact``): a
``state.cas`` of the task from "open" to "claimed", a "claimed" event in the
agent's hash-chained event log, and a trace of the decision; racing agents
conflict and retry instead of claiming a task twice. Runs end; the database is
closed and reopened; every value, claim, event and hash chain is checked. It
uses only the public API. Later issues grow it into the full crash/replay demo.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
from typing import Any

from .database import Database

__all__ = ["run_demo"]


def _agent(db: Database, run: str, steps: int, seed: int, model: dict[str, Any]) -> None:
    """One agent: a scratchpad of notes, tool results and a plan, with overwrites and deletes."""
    rng = random.Random(seed)
    kv = db.kv
    kv.put(run, "plan", {"goal": f"task-{seed}", "steps": steps})
    model["plan"] = {"goal": f"task-{seed}", "steps": steps}
    for step in range(steps):
        key = f"scratch/{rng.randrange(steps // 4 + 1):05d}"
        if rng.random() < 0.15 and key in model:
            assert kv.delete(run, key)
            del model[key]
            continue
        value = {"step": step, "tool": rng.choice(["search", "read", "write", "calc"]),
                 "tokens": rng.randrange(10, 4000), "ok": rng.random() > 0.1}
        kv.put(run, key, value)
        model[key] = value
        # agents read back what they wrote: read-your-writes outside transactions
        assert kv.get(run, key) == value
    kv.put(run, "result", {"done": True, "notes": len([k for k in model if k.startswith("scratch/")])})
    model["result"] = kv.get(run, "result")


def _claimer(db: Database, board: str, run: str, tasks: int, seed: int, model: dict[str, Any],
             claims: list[int]) -> None:
    """Try every task in a private random order; claim it in one transaction if it is still open."""
    order = list(range(tasks))
    random.Random(seed).shuffle(order)
    for task in order:
        key = f"task/{task:05d}"

        def claim(tx: Any, key: str = key) -> bool:
            if not tx.state.cas(board, key, "open", "claimed"):
                return False
            tx.events.append(run, "claimed", {"task": key})
            tx.traces.record(run, "decision", f"take {key}", confidence=0.9, alternatives=["skip"], tags=["claim"])
            tx.kv.put(run, f"claimed/{key}", {"task": key})
            return True

        if db.transact(claim, retries=50):
            model[f"claimed/{key}"] = {"task": key}
            claims.append(task)


def run_demo(directory: str | None = None, *, agents: int = 8, steps: int = 2000, tasks: int = 400,
             durability: str = "batched", seed: int = 7, out: Any = print) -> dict[str, Any]:
    """Run the demo; return its verification figures (also printed through ``out``).

    :param directory: database directory; a fresh temporary one (removed
        afterwards) when ``None``.
    :raises AssertionError: a value read back after reopening differs from
        what the agents wrote (the demo's whole point is that it cannot).
    """
    tmp = None
    if directory is None:
        tmp = directory = tempfile.mkdtemp(prefix="inmem-demo-")
    try:
        t0 = time.perf_counter()
        models: dict[str, dict[str, Any]] = {}
        with Database.open(directory, durability=durability) as db:
            board = db.begin_run("board", tags=["demo"])
            with db.transaction() as tx:  # the planner seeds the board in one commit
                for task in range(tasks):
                    tx.state.set(board, f"task/{task:05d}", "open")
            runs = [db.begin_run(f"agent-{i}", tags=["demo", f"agent-{i}"], metadata={"seed": seed + i})
                    for i in range(agents)]
            claims: dict[str, list[int]] = {}
            for run in runs:
                models[run] = {}
                claims[run] = []

            start_claiming = threading.Barrier(agents)  # all agents race for the board at once

            def work(i: int, run: str) -> None:
                _agent(db, run, steps, seed + i, models[run])
                start_claiming.wait()
                _claimer(db, board, run, tasks, seed + i, models[run], claims[run])

            threads = [threading.Thread(target=work, args=(i, run)) for i, run in enumerate(runs)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for i, run in enumerate(runs):
                db.end_run(run, "failed" if i % 5 == 4 else "completed")
            db.end_run(board)
            written = db.stats()
        t_write = time.perf_counter() - t0
        out(f"wrote   {written['commits']:,} commits from {agents} agent runs "
            f"({durability}) in {t_write:.2f} s: {written['commits'] / t_write:,.0f} commits/s")
        claimed = sorted(t for c in claims.values() for t in c)
        out(f"claims  {len(claimed):,} of {tasks:,} tasks claimed by transactions; "
            f"{written['conflicts']:,} conflicts retried, none claimed twice: {claimed == list(range(tasks))}")

        t1 = time.perf_counter()
        with Database.open(directory) as db:
            t_open = time.perf_counter() - t1
            rec = db.stats()["recovery"]
            checked = 0
            for run, model in models.items():
                stored = dict(db.kv.scan(run))
                assert stored == model, f"run {run}: stored state differs from what the agent wrote"
                checked += len(model)
            states = {n: db.state.get(board, n).value for n in db.state.names(board)}
            assert len(states) == tasks and set(states.values()) == {"claimed"}, "a task was left open"
            events = 0
            for run, mine in claims.items():
                got = sorted(e.payload["task"] for e in db.events.read(run) if e.type == "claimed")
                assert got == [f"task/{t:05d}" for t in sorted(mine)], f"run {run}: claims and events disagree"
                events += db.events.verify(run)  # every hash chain intact
            assert claimed == list(range(tasks)), "a task was lost or claimed twice"
            stats = db.stats()
        out(f"reopen  recovered {rec['records']:,} WAL records ({rec['bytes'] / 1e6:.1f} MB) "
            f"in {t_open * 1000:.0f} ms; torn tail: {rec['torn_tail'] or 'none'}")
        out(f"verify  {checked:,} keys in {len(models)} runs match what the agents wrote, value for value; "
            f"every task claimed once, with its event; {events:,} events in intact hash chains")
        out(f"runs    {stats['runs_by_status']}; commit version {stats['commit_version']:,}; "
            f"WAL {stats['wal_bytes'] / 1e6:.1f} MB in {stats['wal_segments']} segment(s); "
            f"native path {'on' if stats['native'] else 'off'}")
        return {"commits": written["commits"], "keys_verified": checked, "runs": len(models),
                "tasks_claimed": len(claimed), "conflicts": written["conflicts"],
                "recovery": rec, "commit_version": stats["commit_version"]}
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
