"""Maintenance commands: ``verify`` (read-only), ``snapshot``, ``compact`` and ``sweep`` (write).

This module owns the ``verify`` command (every WAL frame, snapshot, event
hash chain and vector record checked through :func:`inmem.verify.verify_directory`; exit 0 if
clean, 1 if damaged) and the two write commands that manage the files on
disk: ``snapshot`` (write a snapshot now) and ``compact`` (delete the WAL
segments and snapshots nothing needs, by history retention mode) and
``sweep`` (delete the values whose time to live has passed).
Invariant: ``verify`` never changes a byte; ``snapshot`` and ``compact``
refuse a directory that is not a database rather than create one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from ..history import HISTORY_MODES
from .app import CONTEXT, DIR, JSON, cli
from .guard import _guard
from .open import _check_database_dir, _open
from .render import _console, _emit_json, _err_console, _human_bytes, _kv_table, _render_verify, _short, plain


@cli.command(context_settings=CONTEXT)
@DIR
@JSON
@_guard
def verify(directory: str, as_json: bool) -> None:
    """Check every WAL frame, snapshot, event hash chain and vector record; exit 0 if clean, 1 if damaged.

    READ-ONLY: holds the shared lock and changes nothing. Reports every
    problem found rather than stopping at the first. A torn tail at the end
    of the last segment (a crash mid-write) is reported but is not damage.

    \b
    Example:
      inmem verify ./state && echo clean
      inmem verify ./state --json | jq .problems
    """
    from ..verify import verify_directory

    _check_database_dir(directory)
    console = _err_console()
    labels = {"wal": "WAL frames (bytes)", "snapshots": "snapshots", "chains": "chains, vectors (runs)"}
    with Progress(TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(), console=console,
                  transient=True, disable=as_json or not console.is_terminal) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(labels.get(phase, phase), total=total)
            bar.update(tasks[phase], completed=done, total=total)

        report = verify_directory(directory, progress=progress)
    ok = bool(report.get("ok"))
    if as_json:
        _emit_json(report)
    else:
        _render_verify(_console(), directory, report)
    if not ok:
        raise click.exceptions.Exit(1)


@cli.command(context_settings=CONTEXT)
@DIR
@JSON
@_guard
def snapshot(directory: str, as_json: bool) -> None:
    """Write a snapshot of the whole store now, so the next open replays less WAL.

    WRITES: opens the directory for writing, writes snapshot-<version>.snap and
    may delete WAL segments two snapshots cover (if history retention allows).

    \b
    Example:
      inmem snapshot ./state
    """
    with _open(directory, write=True, show_progress=not as_json) as db:
        taken = db.snapshot()
    if as_json:
        _emit_json(taken)
        return
    _console().print(_kv_table("snapshot written", [
        ("file", taken.path),
        ("commit version", f"{taken.commit_version:,}"),
        ("keys", f"{taken.keys:,}"),
        ("size", _human_bytes(taken.bytes)),
        ("seconds", f"{taken.seconds:.3f}"),
        ("longest writer pause", f"{taken.pause_ms:.2f} ms"),
        ("WAL segments deleted", ", ".join(taken.wal_segments_deleted) or "none"),
    ]))


@cli.command(context_settings=CONTEXT)
@DIR
@click.option("--run", "run", default=None, metavar="RUN", help="Only this run (default: every active run).")
@JSON
@_guard
def sweep(directory: str, run: str | None, as_json: bool) -> None:
    """Delete the values whose time to live has passed (kv.put(..., ttl=), docs.set(..., ttl=)).

    WRITES: opens the directory for writing and deletes what is due in
    ordinary commits (at most 10,000 per commit), so `inmem history` shows when
    each went. Expired values are already invisible to every read; sweeping
    frees their space. An open database's background sweeper does the same
    every minute (Database.open(sweep_interval_s=)).

    \b
    Example:
      inmem sweep ./state
      inmem sweep ./state --run RUN --json
    """
    with _open(directory, write=True, show_progress=not as_json) as db:
        before = db.stats()["commit_version"]
        swept = db.sweep(run)
        after = db.stats()["commit_version"]
    if as_json:
        _emit_json({"swept": swept, "commits": after - before})
        return
    _console().print(_kv_table("sweep", [("values deleted", f"{swept:,}"), ("commits", f"{after - before:,}")]))


@cli.command(context_settings=CONTEXT)
@DIR
@click.option("--history", type=click.Choice(HISTORY_MODES), default="keep", show_default=True,
              help="History retention to compact by: keep (all WAL history stays), active (drop the history "
                   "of archived runs), none (keep only what recovery needs: no replay of older runs).")
@JSON
@_guard
def compact(directory: str, history: str, as_json: bool) -> None:
    """Delete the WAL segments and snapshots nothing needs any more.

    WRITES: opens the directory for writing, snapshots it if needed, then
    deletes the WAL segments that --history lets go (oldest first) and the
    snapshots that no longer have WAL behind them. With the default
    --history keep no WAL segment is deleted (every run stays replayable).

    \b
    Example:
      inmem compact ./state --history active    # drop archived runs' history
      inmem compact ./state --history none      # smallest directory; old runs no longer replay
    """
    with _open(directory, write=True, show_progress=not as_json, history=history) as db:
        result = db.compact()
    if as_json:
        _emit_json(result)
        return
    rows = []
    for key, value in result.items():
        if value is None:
            value = "none"
        elif key == "bytes_freed" and isinstance(value, int):
            value = _human_bytes(value)
        elif isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value)) or "none"
        elif isinstance(value, Mapping) or dataclasses.is_dataclass(value):
            value = _short(plain(value), 300)
        rows.append((key.replace("_", " "), value))
    _console().print(_kv_table("compacted", rows))
