"""Read commands over a run's WAL history: ``history``, ``replay`` and ``diff``.

This module owns the ``history`` (the commits that wrote to a run, with their
operations), ``replay`` (a run rebuilt from the WAL alone, optionally at a
past version, checked against the live state) and ``diff`` (two runs, or one
run at two versions, git-style) commands. Invariant: each opens the directory
read-only (never writes a byte) and, with ``--json``, prints exactly one JSON
document on stdout.
"""

from __future__ import annotations

import click
from rich.table import Table
from rich.text import Text

from ..replay import Op, edge_label, vector_label
from .app import CONTEXT, DIR, JSON, RUN, _section_options, _sections, _version_option, cli
from .guard import _guard
from .open import _open
from .render import _console, _diff_doc, _emit_json, _render_state, _run_header, _short, _state_doc, _time


@cli.command(context_settings=CONTEXT)
@DIR
@RUN
@JSON
@_guard
def history(directory: str, run: str, as_json: bool) -> None:
    """List the commits that wrote to a run, oldest first, with their operations.

    READ-ONLY. Each row: commit version, UTC time, and the run's ops in it as
    `primitive key kind` (e.g. `kv plan put`, `vectors mem/doc-1 put`,
    `vectors mem (collection) put`, `docs ctx increment metrics.count`: one
    row per document operation, with its path; `graph n1 add_node`,
    `graph n1 -cites-> n2 remove_edge`: one row per node or edge change); a commit that also touched other runs (a
    cross-run transaction) lists them. --json includes the values.

    \b
    Example:
      inmem history ./state RUN
      inmem history ./state RUN --json | jq '.[-1]'
    """
    with _open(directory, show_progress=not as_json) as db:
        commits = db.history(run)
    if as_json:
        _emit_json(commits)
        return
    out = _console()
    table = Table(title=f"history of run {run}: {len(commits)} commit(s)", title_justify="left")
    table.add_column("version", justify="right", no_wrap=True)
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("ops (primitive key kind)", overflow="fold")
    table.add_column("other runs", overflow="fold", style="dim")
    for c in commits:
        ops = "\n".join(_op_line(op) for op in c.ops)
        others = ", ".join(r for r in c.runs if r != run)
        table.add_row(str(c.version), _time(c.ts), Text(ops), others)
    out.print(table)


def _op_line(op: Op) -> str:
    """``primitive key kind`` (a document operation: ``docs name kind path``)."""
    if op.primitive == "docs" and isinstance(op.value, dict) and isinstance(op.value.get("path"), list):
        path = ".".join(str(seg) for seg in op.value["path"])
        return f"docs {_short(op.key, 60)} {op.kind}" + (f" {_short(path, 60)}" if path else "")
    return f"{op.primitive} {_op_key(op)} {op.kind}".replace("  ", " ")


def _op_key(op: Op) -> str:
    if op.key is None:
        return ""
    if op.primitive == "vectors" and isinstance(op.key, tuple):
        return _short(vector_label(op.key), 80)
    if op.primitive == "graph" and isinstance(op.key, tuple):
        return _short(edge_label(op.key), 120)

    return _short(op.key, 80)


@cli.command(context_settings=CONTEXT)
@DIR
@RUN
@_version_option("--at", "Replay up to this commit version (default: the run's last commit).")
@_section_options
@JSON
@_guard
def replay(directory: str, run: str, at: int | None, kv: bool, events: bool, state: bool, traces: bool,
           vectors: bool, docs: bool, graph: bool, as_json: bool) -> None:
    """Rebuild a run from its WAL history alone, optionally as it was at a past version.

    READ-ONLY. Prints the replayed state like `show` and whether it equals the
    live state read from the store (it must, for a replay to the last commit).
    Fails with HistoryUnavailable if retention deleted part of the history.

    \b
    Example:
      inmem replay ./state RUN
      inmem replay ./state RUN --at 42 --kv
      inmem replay ./state RUN --at 42 --vectors
      inmem replay ./state RUN --at 42 --graph
    """
    sections = _sections(kv, events, state, traces, vectors, docs, graph)
    with _open(directory, show_progress=not as_json) as db:
        info_ = db.runs.get(run)
        replayed = db.replay_run(run, at_version=at)
        live = db.run_state(run)
    equal = replayed == live
    if as_json:
        _emit_json({"run": info_, "at_version": at, **_state_doc(replayed, sections), "equals_live": equal})
        return
    out = _console()
    point = "its last commit" if at is None else f"version {at}"
    out.print(_run_header(info_, f"replayed from the WAL up to {point}: state at version {replayed.version}"))
    _render_state(out, replayed, sections)
    if equal:
        out.print(Text("replayed state == live state", style="bold green"))
    elif at is None:
        out.print(Text("replayed state != live state: replay is not deterministic here; "
                       f"run `inmem verify {directory}`", style="bold red"))
    else:
        out.print(Text(f"replayed state differs from the live state (version {live.version}): "
                       f"the run changed after version {at}", style="yellow"))


@cli.command(context_settings=CONTEXT)
@DIR
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@_version_option("--at-a", "Compare run A as it was at this version (default: live).")
@_version_option("--at-b", "Compare run B as it was at this version (default: live).")
@JSON
@_guard
def diff(directory: str, a: str, b: str, at_a: int | None, at_b: int | None, as_json: bool) -> None:
    """Compare two runs (or one run at two versions), git-style.

    READ-ONLY. `+` is in B only, `-` in A only, `~` changed; events show
    where the two logs diverge; graph nodes and edges (`a -rel-> b`) are
    compared by content, kind, metadata and weight. Exit status 0 whether or not they differ.

    \b
    Example:
      inmem diff ./state RUN FORK
      inmem diff ./state RUN RUN --at-a 10        # what RUN did since version 10
    """
    with _open(directory, show_progress=not as_json) as db:
        d = db.diff_runs(a, b, at_a=at_a, at_b=at_b)
    if as_json:
        _emit_json(_diff_doc(d))
        return
    out = _console()
    styles = {"+": "green", "-": "red", "~": "yellow"}
    for line in str(d).splitlines():
        if line.startswith("---"):
            out.print(Text(line, style="bold red"))
        elif line.startswith("+++"):
            out.print(Text(line, style="bold green"))
        elif line[:1] in styles:
            out.print(Text(line, style=styles[line[:1]]))
        else:
            out.print(Text(line, style="bold"))
