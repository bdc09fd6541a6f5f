"""The ``inmem`` command line: inspect, replay, diff, fork, verify and maintain a database directory.

This package owns the command line. This module owns argument parsing
(click) and what each command does; every command calls the public API and
nothing below it, except file-name parsers to list a directory's files.
:mod:`engine.cli.render` draws results (rich) and prints JSON;
:mod:`engine.cli.guard` turns engine errors into one-line messages and exit
codes.

Read commands (``info``, ``runs``, ``show``, ``history``, ``replay``,
``diff``, ``verify``) open with ``Database.open(path, read_only=True)``,
which never writes a byte; ``--json`` makes them print exactly one JSON
document on stdout. Write commands (``fork``, ``snapshot``, ``compact``)
open the directory normally. Errors print one line on stderr and exit 1.

Entry points: the console script ``inmem`` and ``python -m engine`` call
:func:`main`; :data:`cli` is the click group (for ``click.testing.CliRunner``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import click
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from ..database import Database
from ..history import HISTORY_MODES
from ..identity import IDENTITY_FILE
from ..snapshot import parse_snapshot_name
from ..wal.format import parse_segment_name
from .guard import CliError, _guard
from .render import (
    SECTIONS,
    _console,
    _diff_doc,
    _dir_files,
    _emit_json,
    _err_console,
    _human_bytes,
    _kv_table,
    _render_state,
    _render_verify,
    _run_header,
    _short,
    _state_doc,
    _time,
    _torn,
    plain,
)

__all__ = ["cli", "main"]

STATUSES = ("active", "completed", "failed", "cancelled")
PROGRESS_BYTES = 16 * 1024 * 1024  # recovery of less than this is too quick for a progress bar
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# --- opening -----------------------------------------------------------------------------------


def _check_database_dir(path: str) -> None:
    """Refuse a path that is not an existing database directory (a write command must not create one)."""
    if not os.path.exists(path):
        raise CliError(f"{path}: no such directory; give the path of an existing inmem database directory")
    if not os.path.isdir(path):
        raise CliError(f"{path} is not a directory; an inmem database is a directory")
    names = os.listdir(path)
    if IDENTITY_FILE not in names and not any(
        parse_segment_name(n) is not None or parse_snapshot_name(n) is not None for n in names
    ):
        raise CliError(f"{path} is not an inmem database (no IDENTITY file and no WAL segments); "
                       "check the path, or create one with `inmem demo --dir DIR` or Database.open(DIR)")


@contextmanager
def _recovery_progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A transient progress bar for recovery on an interactive stderr; ``None`` otherwise."""
    console = _err_console()
    if not enabled or not console.is_terminal:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=console,
                  transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase.replace("-", " "), total=total or None)
            bar.update(tasks[phase], completed=done, total=total or None)

        yield progress


@contextmanager
def _open(path: str, *, write: bool = False, show_progress: bool = True, history: str = "keep") -> Iterator[Database]:
    """Open ``path`` read-only (never writes a byte), or read-write for ``write=True``; close after."""
    _check_database_dir(path)
    big = show_progress and sum(e.stat().st_size for e in _dir_files(path)) >= PROGRESS_BYTES
    with _recovery_progress(big) as progress:
        if write:
            db = Database.open(path, durability="strict", snapshot_every_bytes=None, progress=progress,
                               history=history)
        else:
            db = Database.open(path, read_only=True, progress=progress)
    try:
        yield db
    finally:
        db.close()


# --- output helpers ------------------------------------------------------------------------------


# --- the group -----------------------------------------------------------------------------------


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
        click.echo(f"inmem {getattr(sys.modules['engine'], '__version__', 'unknown')}")
        ctx.exit()


DIR = click.argument("directory", metavar="DIR", type=click.Path(file_okay=True, dir_okay=True))
RUN = click.argument("run", metavar="RUN")
JSON = click.option("--json", "as_json", is_flag=True,
                    help="Print exactly one JSON document on stdout (datetimes ISO 8601, bytes hex).")


def _version_option(name: str, help_text: str) -> Callable[[Any], Any]:
    return click.option(name, type=click.IntRange(min=0), default=None, metavar="VERSION", help=help_text)


# --- demo ----------------------------------------------------------------------------------------


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


# --- info ----------------------------------------------------------------------------------------


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


# --- runs ----------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@DIR
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only runs with this status.")
@click.option("--tag", default=None, metavar="TAG", help="Only runs carrying this tag.")
@click.option("--parent", default=None, metavar="RUN", help="Only children (forks, sub-runs) of this run.")
@JSON
@_guard
def runs(directory: str, status: str | None, tag: str | None, parent: str | None, as_json: bool) -> None:
    """List the runs, oldest first, with status, lineage, tags and entry counts.

    READ-ONLY. Columns: id, name, status, parent, tags, first/last commit
    version, entries per primitive (kv, events, states, traces), archived.

    \b
    Example:
      inmem runs ./state --status completed --tag demo
      inmem runs ./state --parent RUN          # the forks of RUN
    """
    with _open(directory, show_progress=not as_json) as db:
        if parent is not None:
            db.runs.get(parent)  # an unknown parent is an error, not an empty list
        found = db.runs.list(status=status, tag=tag, parent=parent)
    if as_json:
        _emit_json(found)
        return
    out = _console()
    filters = ", ".join(f"{k} {v}" for k, v in (("status", status), ("tag", tag), ("parent", parent)) if v)
    table = Table(title=f"{len(found)} run(s)" + (f" ({filters})" if filters else ""), title_justify="left")
    table.add_column("id", no_wrap=True, min_width=36)
    table.add_column("name", overflow="fold")
    table.add_column("status")
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
        table.add_row(r.id, Text(r.name or ""), Text(r.status, style=colours.get(r.status, "")), r.parent or "",
                      Text(", ".join(r.tags)), str(r.first_version), str(r.last_version),
                      str(r.counts.get("kv", 0)), str(r.counts.get("events", 0)), str(r.counts.get("state", 0)),
                      str(r.counts.get("traces", 0)), "yes" if r.archived else "")
    out.print(table)


# --- show / replay -------------------------------------------------------------------------------


def _sections(kv: bool, events: bool, state: bool, traces: bool) -> tuple[str, ...]:
    chosen = tuple(name for name, on in zip(SECTIONS, (kv, events, state, traces)) if on)
    return chosen or SECTIONS


def _section_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for flag, name, what in reversed((("--kv", "kv", "the KV entries"), ("--events", "events", "the event log"),
                                      ("--state", "state", "the state machines"),
                                      ("--traces", "traces", "the traces (as a tree)"))):
        fn = click.option(flag, name, is_flag=True, help=f"Show {what}. No section flag: all sections.")(fn)
    return fn


@cli.command(context_settings=CONTEXT)
@DIR
@RUN
@_section_options
@JSON
@_guard
def show(directory: str, run: str, kv: bool, events: bool, state: bool, traces: bool, as_json: bool) -> None:
    """Show a run: its record and its current KV, events, states and traces.

    READ-ONLY. With no section flag every section is shown; traces are drawn
    as a tree of parent and child steps.

    \b
    Example:
      inmem show ./state RUN
      inmem show ./state RUN --events --traces
      inmem show ./state RUN --kv --json
    """
    sections = _sections(kv, events, state, traces)
    with _open(directory, show_progress=not as_json) as db:
        info_ = db.runs.get(run)
        current = db.run_state(run)
    if as_json:
        _emit_json({"run": info_, **_state_doc(current, sections)})
        return
    out = _console()
    out.print(_run_header(info_, f"state at version {current.version} (the run's last commit)"))
    _render_state(out, current, sections)


@cli.command(context_settings=CONTEXT)
@DIR
@RUN
@_version_option("--at", "Replay up to this commit version (default: the run's last commit).")
@_section_options
@JSON
@_guard
def replay(directory: str, run: str, at: int | None, kv: bool, events: bool, state: bool, traces: bool,
           as_json: bool) -> None:
    """Rebuild a run from its WAL history alone, optionally as it was at a past version.

    READ-ONLY. Prints the replayed state like `show` and whether it equals the
    live state read from the store (it must, for a replay to the last commit).
    Fails with HistoryUnavailable if retention deleted part of the history.

    \b
    Example:
      inmem replay ./state RUN
      inmem replay ./state RUN --at 42 --kv
    """
    sections = _sections(kv, events, state, traces)
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


# --- history -------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@DIR
@RUN
@JSON
@_guard
def history(directory: str, run: str, as_json: bool) -> None:
    """List the commits that wrote to a run, oldest first, with their operations.

    READ-ONLY. Each row: commit version, UTC time, and the run's ops in it as
    `primitive key kind` (e.g. `kv plan put`); a commit that also touched
    other runs (a cross-run transaction) lists them. --json includes the values.

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
        ops = "\n".join(f"{op.primitive} {'' if op.key is None else _short(op.key, 80)} {op.kind}".replace("  ", " ")
                        for op in c.ops)
        others = ", ".join(r for r in c.runs if r != run)
        table.add_row(str(c.version), _time(c.ts), Text(ops), others)
    out.print(table)


# --- diff ----------------------------------------------------------------------------------------


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
    where the two logs diverge. Exit status 0 whether or not they differ.

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


# --- fork, snapshot, compact (write) --------------------------------------------------------------


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


# --- verify --------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@DIR
@JSON
@_guard
def verify(directory: str, as_json: bool) -> None:
    """Check every WAL frame, snapshot and event hash chain; exit 0 if clean, 1 if damaged.

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
    labels = {"wal": "WAL frames (bytes)", "snapshots": "snapshots", "chains": "event chains (runs)"}
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


# --- entry point ---------------------------------------------------------------------------------


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
