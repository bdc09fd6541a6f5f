"""The ``inmem`` click group and the options several commands share.

This module owns the group object :data:`cli` (its help text and
``-V/--version``), the click context settings every command uses
(:data:`CONTEXT`), and the shared argument and option decorators: ``DIR``,
``RUN``, ``JSON``, :func:`_version_option`, :func:`_section_options` and
:func:`_sections`. Command modules import the group from here and register
themselves with ``@cli.command``; :mod:`inmem.cli` imports them all.
Invariant: this module imports no command module (no import cycle).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from .render import SECTIONS

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT, help="""
inmem: durable, replayable state for AI agents, in one directory.

Read commands (info, runs, show, history, replay, diff, verify) never change a byte of the
directory and accept --json; write commands (fork, snapshot, compact) open it for writing.
A directory another process has open for writing cannot be read until it is closed.

\b
Examples:
  inmem demo --dir ./state            # make a database to look at
  inmem info ./state
  inmem runs ./state --status active
  inmem show ./state RUN --events
  inmem verify ./state
""")
@click.option("-V", "--version", is_flag=True, expose_value=False, is_eager=True,
              callback=lambda ctx, _param, value: _print_version(ctx, value),
              help="Show the version and exit.")
def cli() -> None:
    pass


def _print_version(ctx: click.Context, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        # read from the package at run time (the package's __init__ is this module's own layer)
        click.echo(f"inmem {getattr(sys.modules['inmem'], '__version__', 'unknown')}")
        ctx.exit()


DIR = click.argument("directory", metavar="DIR", type=click.Path(file_okay=True, dir_okay=True))
RUN = click.argument("run", metavar="RUN")
JSON = click.option("--json", "as_json", is_flag=True,
                    help="Print exactly one JSON document on stdout (datetimes ISO 8601, bytes hex).")


def _version_option(name: str, help_text: str) -> Callable[[Any], Any]:
    return click.option(name, type=click.IntRange(min=0), default=None, metavar="VERSION", help=help_text)


def _sections(kv: bool, events: bool, state: bool, traces: bool, vectors: bool, docs: bool = False,
              graph: bool = False) -> tuple[str, ...]:
    chosen = tuple(name for name, on in zip(SECTIONS, (kv, events, state, traces, vectors, docs, graph)) if on)
    return chosen or SECTIONS


def _section_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for flag, name, what in reversed((("--kv", "kv", "the KV entries"), ("--events", "events", "the event log"),
                                      ("--state", "state", "the state machines"),
                                      ("--traces", "traces", "the traces (as a tree)"),
                                      ("--vectors", "vectors", "the vector collections (a table each)"),
                                      ("--docs", "docs", "the JSON documents (with their paths' values)"),
                                      ("--graph", "graph", "the memory graph (a table of nodes, one of edges)"))):
        fn = click.option(flag, name, is_flag=True, help=f"Show {what}. No section flag: all sections.")(fn)
    return fn
