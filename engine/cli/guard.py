"""Engine errors as one-line messages: the ``inmem`` command line's error and logging policy.

This module owns what a user sees when a command fails: every
:class:`~inmem.errors.InmemError` or ``OSError`` becomes one line on stderr
— what happened, which file and byte offset, what to do — and exit status 1;
the engine's log records go to stderr, never stdout (so ``--json`` output
stays one clean document). Invariant: no traceback for an expected failure;
an unexpected exception (a bug) still shows one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from ..errors import (
    CorruptionError,
    DatabaseLocked,
    DatabasePoisoned,
    HistoryUnavailable,
    InmemError,
    InvalidArgument,
    RunNotFound,
)


class CliError(click.ClickException):
    """A failure reported as one line on stderr (``inmem: ...``), exit status 1."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # one line, whatever the engine said

    def show(self, file: Any = None) -> None:
        click.echo(f"inmem: {self.message}", err=True)


def _describe(exc: BaseException, directory: str | None, run: str | None, writing: bool) -> str:
    """One line: what happened, where (file, byte offset) and what to do about it."""
    d = directory or "DIR"
    if isinstance(exc, DatabaseLocked):
        if writing:
            return f"{exc}; close the other process or wait until it is done, then retry"
        return f"cannot read {d}: {exc} (close the other process or wait, then retry)"
    if isinstance(exc, CorruptionError):
        where = ""
        if exc.path is not None:
            where = f" in {exc.path}" + (f" at byte offset {exc.offset}" if exc.offset is not None else "")
        text = str(exc).split(" [file ")[0]
        return f"{d} is damaged{where}: {text}; run `inmem verify {d}` for a full report, or reopen with " \
               f"salvage to keep the longest valid prefix: Database.open({d!r}, salvage=True)"
    if isinstance(exc, RunNotFound):
        return f"{exc}; list the runs with `inmem runs {d}`"
    if isinstance(exc, HistoryUnavailable):
        who = run or getattr(exc, "run", None) or "RUN"
        return f"{exc}; its current state is still readable: `inmem show {d} {who}`"
    if isinstance(exc, DatabasePoisoned):
        return f"{exc}; nothing more was written: run `inmem verify {d}`"
    if isinstance(exc, InvalidArgument):
        return str(exc)
    if isinstance(exc, InmemError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError):
        what = exc.strerror or str(exc)
        name = exc.filename if exc.filename is not None else directory
        return f"cannot access {name}: {what}" if name else what
    return f"{type(exc).__name__}: {exc}"


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command with the inmem logger routed to stderr and every engine error as one line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        directory = kwargs.get("directory")
        with _logging_to_stderr(quiet=bool(kwargs.get("as_json"))):
            try:
                return fn(*args, **kwargs)
            except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, BrokenPipeError):
                raise
            except (InmemError, OSError) as exc:
                raise CliError(_describe(exc, directory, kwargs.get("run"), fn.__name__ in _WRITERS)) from exc

    return wrapper


_WRITERS = {"fork", "snapshot", "compact", "demo"}


class _StderrHandler(logging.Handler):
    """Engine log records as ``inmem: warning: ...`` lines on (the current) stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = " ".join(self.format(record).split())
            if msg.startswith("inmem: "):
                msg = msg[len("inmem: "):]
            click.echo(f"inmem: {record.levelname.lower()}: {msg}", err=True)
        except Exception:  # pragma: no cover - logging must never break the command
            self.handleError(record)


@contextmanager
def _logging_to_stderr(*, quiet: bool) -> Iterator[None]:
    """Route the ``inmem`` logger to stderr (never stdout), WARNING and up; ERROR and up with ``quiet``."""
    logger = logging.getLogger("inmem")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    handler = _StderrHandler(logging.ERROR if quiet else logging.WARNING)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers = saved[2]
