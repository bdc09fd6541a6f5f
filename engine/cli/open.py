"""Opening a database directory for a command: the ``inmem`` command line's only way in.

This module owns how a command gets a :class:`~inmem.database.Database`:
:func:`_check_database_dir` refuses a path that is not an existing database
directory (so a write command never creates one), :func:`_recovery_progress`
draws a transient recovery progress bar on an interactive stderr, and
:func:`_open` opens read-only (never writes a byte) or, for write commands,
read-write with ``durability="strict"``, and closes afterwards.
Invariant: a read command never changes a byte of the directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn

from ..database import Database
from ..identity import IDENTITY_FILE
from ..snapshot import parse_snapshot_name
from ..wal.format import parse_segment_name
from .guard import CliError
from .render import _dir_files, _err_console

PROGRESS_BYTES = 16 * 1024 * 1024  # recovery of less than this is too quick for a progress bar


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
