"""``inmem workflows``: list a database's durable workflows with their status, or one workflow's steps.

This module owns the ``workflows`` command. Invariant: it opens the directory read-only (never writes
a byte; a workflow left unfinished shows as ``pending``) and, with ``--json``, prints exactly one
JSON document on stdout.
"""

from __future__ import annotations

import click
from rich.table import Table

from .. import workflows as _workflows  # noqa: F401  (attaches db.workflows)
from .app import CONTEXT, DIR, JSON, cli
from .guard import _guard
from .open import _open
from .render import _console, _emit_json, _short, _time, plain

STATUSES = ("pending", "running", "completed", "failed", "cancelled")


@cli.command(context_settings=CONTEXT)
@DIR
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only workflows with this status.")
@click.option("--name", default=None, help="Only workflows registered under this name.")
@click.option("--steps", "steps_of", metavar="ID", default=None, help="Show the recorded steps of workflow ID.")
@JSON
@_guard
def workflows(directory: str, status: str | None, name: str | None, steps_of: str | None, as_json: bool) -> None:
    """List durable workflows (id, name, status, steps, run), or the recorded steps of one.

    READ-ONLY: opens with read_only=True and changes nothing. A workflow's run
    holds its history: `inmem show DIR RUN` and `inmem replay DIR RUN` show the
    step records (`_wf/step/...`) and its context document.

    \b
    Example:
      inmem workflows ./state --status pending
      inmem workflows ./state --steps order-42 --json
    """
    with _open(directory, show_progress=not as_json) as db:
        if steps_of is not None:
            info = db.workflows.get(steps_of)
            steps = db.workflows.steps(steps_of)
            doc = {"workflow": plain(info.__dict__), "steps": [
                {"seq": s.seq, "name": s.name, "output": plain(s.output), "error": None if s.error is None else
                 {"type": s.error["type"], "message": s.error["message"]}, "attempts": s.attempts,
                 "started_at": _time(s.started_at), "duration_s": s.duration_s} for s in steps]}
            if as_json:
                _emit_json(doc)
                return
            table = Table(title=f"workflow {info.id} ({info.name}, {info.status}, run {info.run})")
            for col in ("seq", "step", "outcome", "attempts", "started", "seconds"):
                table.add_column(col)
            for s, d in zip(steps, doc["steps"]):
                outcome = _short(s.output, 60) if s.error is None else f"raised {s.error['type']}: {s.error['message']}"
                table.add_row(str(s.seq), s.name, outcome, str(s.attempts), d["started_at"],
                              "" if s.duration_s is None else f"{s.duration_s:.6f}")
            _console().print(table)
            return
        found = db.workflows.list(status=status, name=name)
        rows = [{"id": w.id, "name": w.name, "status": w.status, "steps": len(db.workflows.steps(w.id)),
                 "run": w.run, "attempts": w.attempts, "recoveries": w.recoveries, "hook_of": w.hook_of,
                 "forked_from": w.forked_from, "created_at": _time(w.created_at)} for w in found]
    if as_json:
        _emit_json({"workflows": rows})
        return
    table = Table(title=f"{len(rows)} workflow(s)")
    for col in ("id", "name", "status", "steps", "run", "created"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["id"], r["name"], r["status"], str(r["steps"]), r["run"], r["created_at"])
    _console().print(table)
