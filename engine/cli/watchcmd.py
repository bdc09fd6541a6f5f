"""``inmem watch``: follow a database's change feed from the command line.

This module owns the ``watch`` command: it opens the directory as a
follower (``Database.open(path, read_only=True, follow=True)``: no lock, so
it runs beside a writer in another process) and prints each committed write
the filters select, in commit order, one line each — or one JSON object per
line with ``--json``. Invariant: it never writes a byte; each change is
printed once; a consumer that stops can resume with ``--from-version`` set
to the last version printed plus one and misses nothing.
"""

from __future__ import annotations

import json
import time

import click

from ..database import Database
from .app import CONTEXT, DIR, JSON, cli
from .guard import _guard
from .open import _check_database_dir
from .render import _short, _time, plain

PRIMITIVES = ("run", "kv", "events", "state", "traces", "vectors", "docs", "graph")
#: The members of a :class:`inmem.Change`, in order: the keys of a ``--json`` line.
FIELDS = ("version", "ts", "run", "primitive", "key", "op", "value")


def _key(key: object) -> str:
    if isinstance(key, tuple):
        return "/".join("" if k is None else str(k) for k in key)
    return "" if key is None else str(key)


@cli.command(context_settings=CONTEXT)
@DIR
@click.option("--run", "run", default=None, metavar="RUN", help="Only writes to this run.")
@click.option("--primitive", type=click.Choice(PRIMITIVES), default=None, help="Only writes of this primitive.")
@click.option("--prefix", default=None, metavar="PREFIX", help="Only keys starting with PREFIX (kv/state/docs names, "
              "vector collections).")
@click.option("--from-version", "from_version", type=click.IntRange(min=0), default=None, metavar="V",
              help="Replay from commit version V (inclusive) out of the WAL first, then follow. Default: only "
                   "commits after the start.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N", help="Stop after N changes.")
@click.option("--idle", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Stop once no change arrived for SECONDS (default: follow until interrupted).")
@JSON
@_guard
def watch(directory: str, run: str | None, primitive: str | None, prefix: str | None, from_version: int | None,
          limit: int | None, idle: float | None, as_json: bool) -> None:
    """Print every committed write, in commit order, as it happens (the change feed, db.watch).

    READ-ONLY, and takes no lock: it follows the WAL of a writer running in
    another process. Each line: version, commit time (UTC), run, primitive,
    key, op and the value. A change is printed only once it is as durable as
    the writer's durability mode promises; to resume after stopping, pass
    --from-version with the last version printed plus one.

    \b
    Example:
      inmem watch ./state --primitive kv --prefix notes/
      inmem watch ./state --from-version 1 --limit 100 --json     # replay the first 100 changes as JSON lines
      inmem watch ./state --run RUN --idle 5                      # stop after 5 s of silence
    """
    _check_database_dir(directory)
    db = Database.open(directory, read_only=True, follow=True)
    seen = 0
    try:
        feed = db.watch(run=run, primitive=primitive, prefix=prefix, from_version=from_version)
        last = time.monotonic()
        while limit is None or seen < limit:
            change = feed.next(timeout=0.5 if idle is None else min(0.5, idle))
            if change is None:
                if idle is not None and time.monotonic() - last >= idle:
                    break
                continue
            last = time.monotonic()
            seen += 1
            if as_json:
                click.echo(json.dumps(plain(dict(zip(FIELDS, change))), ensure_ascii=False))
            else:
                click.echo(f"v{change.version} {_time(change.ts)} {change.run} {change.primitive} "
                           f"{_key(change.key)} {change.op} {_short(plain(change.value), 80)}")
        feed.close()
    except KeyboardInterrupt:
        pass
    finally:
        db.close()
