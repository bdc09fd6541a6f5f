"""``inmem fork``: start a new run from a run's state, the command line's one run-writing command.

This module owns the ``fork`` command: it opens the directory for writing,
forks a run (its live state or its state at a past version) as one commit,
prints the new run's id alone on stdout and a note on stderr. Invariant: the
parent run is untouched; a directory that is not a database is refused, never
created.
"""

from __future__ import annotations

import click
from rich.text import Text

from .app import CONTEXT, DIR, RUN, _version_option, cli
from .guard import _guard
from .open import _open
from .render import _err_console


@cli.command(context_settings=CONTEXT)
@DIR
@RUN
@_version_option("--at", "Fork the run as it was at this commit version (default: its live state).")
@click.option("--name", default=None, help="Name of the new run (default: the parent's name).")
@_guard
def fork(directory: str, run: str, at: int | None, name: str | None) -> None:
    """Start a new active run from a run's state (now, or at a past version); print its id.

    WRITES: opens the directory for writing (fails if another process has it
    open) and commits the new run and a copy of the state as one commit. The
    parent is untouched. Only the new id goes to stdout.

    \b
    Example:
      NEW=$(inmem fork ./state RUN --at 42 --name retry)
      inmem diff ./state RUN "$NEW"
    """
    with _open(directory, write=True) as db:
        new = db.fork_run(run, at_version=at, name=name)
        version = db.stats()["commit_version"]
    _err_console().print(Text(f"forked run {run} at {'its live state' if at is None else f'version {at}'} "
                              f"as a new active run (commit version {version})", style="dim"))
    click.echo(new)
