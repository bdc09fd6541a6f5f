"""``inmem demo``: the guided tour that makes a database to look at.

This module owns the ``demo`` command: it runs :func:`inmem.demo.run_demo`
(agents share a task board, a child process is SIGKILLed, the directory is
reopened and checked, one run replayed, forked and diffed) and turns a failed
check into a one-line error and exit status 1. Invariant: it writes only the
``--dir`` directory (or a fresh temporary one).
"""

from __future__ import annotations

import click

from .app import CONTEXT, cli
from .guard import CliError, _guard


@cli.command(context_settings=CONTEXT)
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Database directory to create (default: a fresh temporary one, left behind to explore).")
@click.option("--agents", type=click.IntRange(min=1), default=8, show_default=True,
              help="Agent runs, one thread each.")
@click.option("--tasks", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Tasks on the shared board.")
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed.")
@_guard
def demo(directory: str | None, agents: int, tasks: int, seed: int) -> None:
    """Run the demo: agents share a task board, crash, recover, replay, fork and diff.

    Agent runs claim tasks from a shared board in transactions (state, events,
    traces, KV) in a child process that is SIGKILLed part-way; the directory
    is reopened, every acknowledged commit and hash chain checked, the work
    finished, one run replayed, forked and diffed. WRITES the --dir directory
    (or a fresh temporary one). Exits 1 if a check fails.

    \b
    Example:
      inmem demo --dir ./state --agents 4 --tasks 500
      inmem runs ./state
    """
    from ..demo import run_demo

    try:
        run_demo(directory, agents=agents, tasks=tasks, seed=seed)
    except AssertionError as exc:
        raise CliError(f"demo verification FAILED: {exc or 'a value read back differs from what was written'}"
                       f"{'' if directory is None else f'; the database is kept in {directory}: run `inmem verify {directory}`'}") from exc
