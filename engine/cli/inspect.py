"""Read commands that look at a database as it is now: ``info``, ``runs`` and ``show``.

This module owns the ``info`` (summary: format, size, commits, runs, WAL,
snapshots, recovery), ``runs`` (the run listing, with filters) and ``show``
(one run's record and current KV, events, states, traces and vectors) commands.
Invariant: each opens the directory read-only (never writes a byte) and, with
``--json``, prints exactly one JSON document on stdout.
"""

from __future__ import annotations

import os

import click
from rich.table import Table
from rich.text import Text

from ..snapshot import parse_snapshot_name
from ..wal.format import parse_segment_name
from .app import CONTEXT, DIR, JSON, RUN, _section_options, _sections, cli
from .guard import _guard
from .open import _open
from .render import (
    _console,
    _dir_files,
    _emit_json,
    _human_bytes,
    _kv_table,
    _render_state,
    _run_header,
    _short,
    _state_doc,
    _torn,
)

STATUSES = ("active", "completed", "failed", "cancelled")


@cli.command(context_settings=CONTEXT)
@DIR
@JSON
@_guard
def info(directory: str, as_json: bool) -> None:
    """Summarise a database: format, size, commits, runs, WAL, snapshots, recovery.

    READ-ONLY: opens with read_only=True and changes nothing; a torn tail is
    reported, not cut.

    \b
    Example:
      inmem info ./state
      inmem info ./state --json | jq .runs_by_status
    """
    with _open(directory, show_progress=not as_json) as db:
        stats = db.stats()
        files = _dir_files(directory)
    segments = [{"file": e.name, "bytes": e.stat().st_size} for e in files if parse_segment_name(e.name) is not None]
    snapshots = [{"file": e.name, "commit_version": parse_snapshot_name(e.name), "bytes": e.stat().st_size}
                 for e in files if parse_snapshot_name(e.name) is not None]
    size = sum(e.stat().st_size for e in files)
    rec = stats["recovery"]
    doc = {
        "path": os.path.abspath(directory),
        "format_version": stats["format_version"],
        "size_bytes": size,
        "files": len(files),
        "commit_version": stats["commit_version"],
        "keys": stats["keys"],
        "runs": stats["runs"],
        "runs_by_status": stats["runs_by_status"],
        "wal": {"segments": stats["wal_segments"], "bytes": stats["wal_bytes"], "files": segments},
        "snapshots": snapshots,
        "durability": {"stored": False, "default": "batched",
                       "note": "not stored on disk: chosen per open, Database.open(path, durability=...)"},
        "native": stats["native"],
        "history": stats["history"],
        "recovery": rec,
    }
    if as_json:
        _emit_json(doc)
        return
    out = _console()
    by_status = ", ".join(f"{n} {s}" for s, n in sorted(stats["runs_by_status"].items())) or "none"
    hist = stats["history"]
    snap_text = ", ".join(f"{s['file']} (version {s['commit_version']}, {_human_bytes(s['bytes'])})"
                          for s in snapshots) or "none"
    used = rec.get("snapshot")
    recovered = [
        f"snapshot used: {used['file']} (version {used['commit_version']})" if used else "snapshot used: none",
        f"records replayed: {rec.get('records', 0):,} from {rec.get('segments', 0)} segment(s), "
        f"{rec.get('bytes', 0):,} bytes read",
        f"torn tail: {_torn(rec.get('torn_tail'))}",
        f"seconds: {rec.get('seconds', 0):.3f}",
    ]
    for skipped in rec.get("snapshots_skipped") or ():
        recovered.append(f"snapshot skipped: {_short(skipped, 160)}")
    out.print(_kv_table(f"inmem database {os.path.abspath(directory)}", [
        ("format version", stats["format_version"]),
        ("size on disk", f"{_human_bytes(size)} in {len(files)} files"),
        ("commit version", f"{stats['commit_version']:,}"),
        ("keys", f"{stats['keys']:,}"),
        ("runs", f"{stats['runs']:,} ({by_status})"),
        ("WAL segments", f"{stats['wal_segments']} ({_human_bytes(stats['wal_bytes'])})"),
        ("snapshots", snap_text),
        ("durability", "not stored on disk: chosen per open (Database.open(durability=...)), default \"batched\""),
        ("native path", "on (C hot path)" if stats["native"] else "off (pure Python)"),
        ("history", f"mode {hist.get('mode')} (chosen per open), floor LSN {hist.get('floor')} "
                    "(runs that began earlier cannot be replayed)"),
        ("recovery", Text("\n".join(recovered))),
    ]))


@cli.command(context_settings=CONTEXT)
@DIR
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only runs with this status.")
@click.option("--tag", default=None, metavar="TAG", help="Only runs carrying this tag.")
@click.option("--parent", default=None, metavar="RUN", help="Only children (forks, sub-runs) of this run.")
@click.option("--tenant", default=None, metavar="TENANT", help="Only runs of this tenant (db.tenant(TENANT)).")
@JSON
@_guard
def runs(directory: str, status: str | None, tag: str | None, parent: str | None, tenant: str | None,
         as_json: bool) -> None:
    """List the runs, oldest first, with status, lineage, tags and entry counts.

    READ-ONLY. Columns: id, name, status, tenant, parent, tags, first/last
    commit version, entries per primitive (kv, events, states, traces), archived.

    \b
    Example:
      inmem runs ./state --status completed --tag demo
      inmem runs ./state --parent RUN          # the forks of RUN
      inmem runs ./state --tenant alice        # what db.tenant("alice") sees
    """
    with _open(directory, show_progress=not as_json) as db:
        if parent is not None:
            db.runs.get(parent)  # an unknown parent is an error, not an empty list
        found = db.runs.list(status=status, tag=tag, parent=parent)
        if tenant is not None:
            found = [r for r in found if r.tenant == tenant]
    if as_json:
        _emit_json(found)
        return
    out = _console()
    filters = ", ".join(f"{k} {v}" for k, v in (("status", status), ("tag", tag), ("parent", parent),
                                                 ("tenant", tenant)) if v)
    table = Table(title=f"{len(found)} run(s)" + (f" ({filters})" if filters else ""), title_justify="left")
    table.add_column("id", no_wrap=True, min_width=36)
    table.add_column("name", overflow="fold")
    table.add_column("status")
    table.add_column("tenant", overflow="fold")
    table.add_column("parent", overflow="fold")
    table.add_column("tags", overflow="fold")
    table.add_column("first", justify="right")
    table.add_column("last", justify="right")
    table.add_column("kv", justify="right")
    table.add_column("events", justify="right")
    table.add_column("states", justify="right")
    table.add_column("traces", justify="right")
    table.add_column("archived")
    colours = {"active": "green", "completed": "blue", "failed": "red", "cancelled": "yellow"}
    for r in found:
        table.add_row(r.id, Text(r.name or ""), Text(r.status, style=colours.get(r.status, "")), Text(r.tenant or ""),
                      r.parent or "",
                      Text(", ".join(r.tags)), str(r.first_version), str(r.last_version),
                      str(r.counts.get("kv", 0)), str(r.counts.get("events", 0)), str(r.counts.get("state", 0)),
                      str(r.counts.get("traces", 0)), "yes" if r.archived else "")
    out.print(table)


@cli.command(context_settings=CONTEXT)
@DIR
@RUN
@_section_options
@JSON
@_guard
def show(directory: str, run: str, kv: bool, events: bool, state: bool, traces: bool, vectors: bool,
         docs: bool, graph: bool, as_json: bool) -> None:
    """Show a run: its record and its current KV, events, states, traces, vectors, documents and graph.

    READ-ONLY. With no section flag every section is shown; traces are drawn
    as a tree of parent and child steps; vectors as a table per collection
    (id, first components, norm, metadata, text; --json: every component);
    documents as indented JSON; the memory graph as a table of nodes and
    one of edges (--json: {"nodes": {id: node}, "edges": [edge, ...]}).

    \b
    Example:
      inmem show ./state RUN
      inmem show ./state RUN --events --traces
      inmem show ./state RUN --kv --json
      inmem show ./state RUN --vectors
      inmem show ./state RUN --docs --json
      inmem show ./state RUN --graph
    """
    sections = _sections(kv, events, state, traces, vectors, docs, graph)
    with _open(directory, show_progress=not as_json) as db:
        info_ = db.runs.get(run)
        current = db.run_state(run)
    if as_json:
        _emit_json({"run": info_, **_state_doc(current, sections)})
        return
    out = _console()
    out.print(_run_header(info_, f"state at version {current.version} (the run's last commit)"))
    _render_state(out, current, sections)
