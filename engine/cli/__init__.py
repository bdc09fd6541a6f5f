"""The ``inmem`` command line: inspect, replay, diff, fork, verify and maintain a database directory.

This package owns the command line (click for arguments, rich for output).
Every command calls the public API and nothing below it, except file-name
parsers to list a directory's files. One module per command group:

- :mod:`inmem.cli.app`: the click group :data:`cli` and the options several
  commands share (``DIR``, ``RUN``, ``--json``, ``--at``-style version
  options, the ``--kv/--events/--state/--traces/--vectors`` section flags);
- :mod:`inmem.cli.open`: checking and opening a database directory
  (read-only, or for writing), with a recovery progress bar;
- :mod:`inmem.cli.inspect`: ``info``, ``runs``, ``show``;
- :mod:`inmem.cli.history`: ``history``, ``replay``, ``diff``;
- :mod:`inmem.cli.fork`: ``fork``;
- :mod:`inmem.cli.maintain`: ``verify``, ``snapshot``, ``compact``;
- :mod:`inmem.cli.demo`: ``demo``;
- :mod:`inmem.cli.mcpserve`: ``mcp`` (the MCP memory server);
- :mod:`inmem.cli.workflows`: ``workflows``;
- :mod:`inmem.cli.watchcmd`: ``watch`` (the change feed, as a follower);
- :mod:`inmem.cli.render` draws results (rich) and prints JSON;
  :mod:`inmem.cli.guard` turns engine errors into one-line messages and
  exit codes.

This module only assembles them: it imports the command modules (which
register themselves on the group) and defines :func:`main`.

Read commands (``info``, ``runs``, ``show``, ``history``, ``replay``,
``diff``, ``verify``) open with ``Database.open(path, read_only=True)``,
which never writes a byte; ``--json`` makes them print exactly one JSON
document on stdout. Write commands (``fork``, ``snapshot``, ``compact``)
open the directory normally. Errors print one line on stderr and exit 1.

Entry points: the console script ``inmem`` and ``python -m inmem`` call
:func:`main`; :data:`cli` is the click group (for ``click.testing.CliRunner``).
"""

from __future__ import annotations

import os
import sys

import click

# importing a command module registers its commands on the group
from . import demo, fork, history, inspect, maintain, mcpserve, watchcmd, workflows  # noqa: F401
from .app import CONTEXT, DIR, JSON, RUN, _section_options, _version_option, cli  # noqa: F401
from .render import plain  # noqa: F401  (kept importable as inmem.cli.plain)

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run the ``inmem`` command line on ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    try:
        rv = cli.main(args=argv, prog_name="inmem", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("inmem: interrupted", err=True)
        return 130
    except BrokenPipeError:  # `inmem runs DIR | head`: the reader left; not an error
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    return rv if isinstance(rv, int) else 0
