"""The ``inmem`` command line (first version: ``demo``).

This module owns argument parsing and nothing else; each command calls the
public API. The full command set (info, runs, show, verify, ...) arrives with
the command-line issue.
"""

from __future__ import annotations

import argparse
import sys

from .errors import InmemError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inmem",
        description="inmem: durable, replayable state for AI agents, in one directory.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="run the demo workload: agents write KV state and claim tasks, reopen, verify",
        description="Agent runs write KV state and claim tasks from a shared board in transactions, "
        "from threads; the database is closed, reopened and every value and claim verified. "
        "Uses a fresh temporary directory unless --dir is given.",
    )
    demo.add_argument("--dir", help="database directory to use (kept afterwards)")
    demo.add_argument("--agents", type=int, default=8, help="agent runs, one thread each (default 8)")
    demo.add_argument("--steps", type=int, default=2000, help="KV operations per agent (default 2000)")
    demo.add_argument("--tasks", type=int, default=400, help="tasks on the shared board (default 400)")
    demo.add_argument("--durability", choices=("strict", "batched", "off"), default="batched",
                      help="WAL durability mode (default batched)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from .demo import run_demo

            run_demo(args.dir, agents=args.agents, steps=args.steps, tasks=args.tasks,
                     durability=args.durability, seed=args.seed)
    except InmemError as exc:
        print(f"inmem: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
