"""What the two simulators share: forked trial workers with a hang watchdog, the outcome table and verdict.

This module owns the outcome classes, running trials in forked children of
a process that already imported inmem (``os.fork``, no fresh interpreter:
thousands of trials a minute), and the report. A trial is described by a
plain ``dict`` (its spec, inherited by the forked worker: nothing is
pickled); ``fn(spec)`` runs in a worker child and returns a JSON-able result
(or a list of them) with an ``"outcome"`` (one of :data:`OUTCOMES`) and a
``"kind"`` (the fault kind, a table row).

Invariant: every spec handed to :func:`run_trials` ends as exactly one result
(a worker that dies or goes silent past ``timeout_s`` while on a trial makes
that trial a ``"hang"``, and a fresh worker carries on with the rest), unless
the ``budget_s`` runs out first: then the trials not started are left out and
counted in ``skipped``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["FAILURES", "OUTCOMES", "report", "run_trials"]

#: Every outcome a trial can have, in table order.
OUTCOMES = ("recovered", "detected", "lost", "wrong", "hang", "error")
#: Column titles.
TITLES = {"recovered": "recovered exactly", "detected": "detected loudly", "lost": "lost",
          "wrong": "silently wrong", "hang": "hangs", "error": "unexpected error"}
#: Outcomes that fail a run (non-zero exit).
FAILURES = ("lost", "wrong", "hang", "error")


def _worker(fn: Callable[[dict[str, Any]], Any], specs: list[dict[str, Any]], wfd: int) -> None:
    """Child: run each spec; write one JSON line when it starts, one per result, one when it ends; ``os._exit``."""
    code = 0

    def send(msg: dict[str, Any]) -> None:
        line = (json.dumps(msg, default=str) + "\n").encode()
        while line:
            n = os.write(wfd, line)
            line = line[n:]

    try:
        for spec in specs:
            send({"start": spec["id"]})
            try:
                out = fn(spec)
            except BaseException as exc:  # noqa: BLE001 - reported as the trial's outcome
                out = {"outcome": "error", "detail": f"{type(exc).__name__}: {exc}",
                       "trace": traceback.format_exc(limit=8)}
            many = isinstance(out, list)
            for j, res in enumerate(out if many else [out]):
                res.setdefault("kind", spec.get("kind", "?"))
                res["id"] = f"{spec['id']}.{j}" if many else spec["id"]
                res["spec"] = spec["id"]
                send(res)
            send({"end": spec["id"]})
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        os._exit(code)


def run_trials(fn: Callable[[dict[str, Any]], dict[str, Any]], specs: list[dict[str, Any]], *, workers: int,
               timeout_s: float, budget_s: float | None = None,
               progress: Callable[[int, int], None] | None = None) -> Iterator[dict[str, Any]]:
    """Run ``fn`` on every spec in ``workers`` forked children; yield each result as it arrives.

    ``fn`` returns one result dict, or a list of them (ids ``"<spec id>.<j>"``).

    Specs need a unique ``"id"``. A child silent for ``timeout_s`` on one
    trial is killed (SIGKILL): that trial is a ``"hang"`` and a new child
    takes the rest of its share. Stops starting trials once ``budget_s``
    seconds have passed (the results then lack those specs).
    """
    start = time.monotonic()
    queue = list(specs)
    chunk = max(1, min(64, len(queue) // max(1, workers * 4) or 1))
    live: dict[int, dict[str, Any]] = {}  # read fd -> {"pid", "buf", "current", "since", "specs"}
    done = 0

    def spawn() -> None:
        if not queue or (budget_s is not None and time.monotonic() - start > budget_s):
            return
        share = [queue.pop(0) for _ in range(min(chunk, len(queue)))]
        r, wfd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _worker(fn, share, wfd)
        os.close(wfd)
        live[r] = {"pid": pid, "buf": b"", "current": None, "since": time.monotonic(),
                   "specs": {s["id"]: s for s in share}}

    for _ in range(workers):
        spawn()
    while live:
        ready, _, _ = select.select(list(live), [], [], 0.5)
        now = time.monotonic()
        for r in ready:
            w = live[r]
            data = os.read(r, 1 << 16)
            if data:
                w["buf"] += data
                *lines, w["buf"] = w["buf"].split(b"\n")
                for line in lines:
                    msg = json.loads(line)
                    if "start" in msg:
                        w["current"], w["since"] = msg["start"], now
                    elif "end" in msg:
                        w["specs"].pop(msg["end"], None)
                        w["current"] = None
                        done += 1
                        if progress:
                            progress(done, len(specs))
                    else:
                        w["since"] = now
                        yield msg
                continue
            os.close(r)  # EOF: the worker exited
            del live[r]
            os.waitpid(w["pid"], 0)
            if w["current"] is not None:  # died on a trial: report it, requeue the rest
                spec = w["specs"].pop(w["current"])
                done += 1
                yield {"id": spec["id"], "kind": spec.get("kind", "?"), "outcome": "error",
                       "detail": "the worker process died during the trial"}
            queue[:0] = list(w["specs"].values())
            spawn()
        for r, w in list(live.items()):
            if w["current"] is not None and now - w["since"] > timeout_s:
                os.kill(w["pid"], signal.SIGKILL)
                os.waitpid(w["pid"], 0)
                os.close(r)
                del live[r]
                spec = w["specs"].pop(w["current"])
                done += 1
                yield {"id": spec["id"], "kind": spec.get("kind", "?"), "outcome": "hang",
                       "detail": f"no result after {timeout_s:.0f} s"}
                queue[:0] = list(w["specs"].values())
                spawn()
        if len(live) < workers and queue:
            spawn()


def report(title: str, results: list[dict[str, Any]], *, seed: int, seconds: float, skipped: int,
           json_path: str | None, extra: dict[str, Any] | None = None, repro: Callable[[dict[str, Any]], str],
           failures: tuple[str, ...] = FAILURES) -> int:
    """Print the table (fault kind x outcome), every failing trial with its reproducing command, and a
    one-line verdict; write the JSON if asked. Returns the exit status (1 if any trial failed)."""
    from rich.console import Console
    from rich.table import Table

    rows: dict[str, dict[str, int]] = {}
    for r in results:
        row = rows.setdefault(r["kind"], dict.fromkeys(OUTCOMES, 0))
        row[r["outcome"]] += 1
    total = dict.fromkeys(OUTCOMES, 0)
    for row in rows.values():
        for k, v in row.items():
            total[k] += v
    console = Console(width=120)
    table = Table(title=f"{title}  (seed {seed}, {len(results)} trials, {seconds:.1f} s)")
    table.add_column("fault kind", no_wrap=True)
    table.add_column("trials", justify="right")
    for o in OUTCOMES:
        table.add_column(TITLES[o], justify="right")
    for kind in sorted(rows):
        row = rows[kind]
        table.add_row(kind, str(sum(row.values())), *(str(row[o]) for o in OUTCOMES))
    table.add_row("[b]all[/b]", f"[b]{len(results)}[/b]", *(f"[b]{total[o]}[/b]" for o in OUTCOMES))
    console.print(table)
    failing = [r for r in results if r["outcome"] in failures]
    for r in failing[:20]:
        console.print(f"[red]FAIL[/red] trial {r['id']} ({r['kind']}): {r['outcome']}: {r.get('detail', '')}",
                      markup=True, highlight=False)
        if r.get("kept"):
            console.print(f"     kept: {r['kept']}", highlight=False)
        console.print(f"     reproduce: {repro(r)}", highlight=False)
    if len(failing) > 20:
        console.print(f"... and {len(failing) - 20} more failing trials (all in the JSON)")
    bad = {o: total[o] for o in failures if total[o]}
    if bad:
        verdict = "FAIL: " + ", ".join(f"{n} {TITLES[o]}" for o, n in bad.items()) + f" in {len(results)} trials"
    else:
        verdict = (f"PASS: {len(results)} trials, {total['recovered']} recovered exactly"
                   + (f", {total['detected']} detected loudly" if "detected" not in failures else "")
                   + ", nothing lost, nothing silently wrong, no hang")
    if skipped:
        verdict += f" ({skipped} trials not run: budget spent)"
    console.print(verdict, highlight=False, soft_wrap=True)
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"title": title, "seed": seed, "seconds": round(seconds, 3), "trials": len(results),
                       "skipped": skipped, "table": rows, "total": total, "verdict": verdict,
                       "failing": failing, **(extra or {})}, f, indent=1, default=str)
    return 1 if bad else 0


def scratch_dir() -> str | None:
    """Where a run's trials go by default: ``/dev/shm`` (a tmpfs) when it is there and writable, else
    ``None`` (the system's temporary directory). The simulated disk is FaultFS's model, not the real one,
    so a memory file system changes no outcome; it makes each image and reopen several times cheaper."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


def add_common_options(ap: argparse.ArgumentParser, *, unit: str, kind: str, timeout_s: float) -> None:
    """The options both simulators take: ``--workers``, ``--budget-s``, ``--timeout-s``, ``--kinds``,
    ``--only``, ``--json``, ``--verbose`` (``unit``: "trial" or "case"; ``kind``: "crash" or "fault")."""
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="forked worker processes")
    ap.add_argument("--budget-s", type=float, default=None, help=f"stop starting {unit}s after this many seconds")
    ap.add_argument("--timeout-s", type=float, default=timeout_s, help=f"a {unit} silent this long is a hang")
    ap.add_argument("--kinds", default=None, help=f"comma-separated {kind} kinds (default: all)")
    ap.add_argument("--only", type=int, default=None, help=f"run only {unit} ID (keeps its directory)")
    ap.add_argument("--json", default=None, metavar="PATH", help=f"write the table and every failing {unit} as JSON")
    ap.add_argument("--verbose", action="store_true", help="show the engine's log (recovery warnings)")


def setup_run(ap: argparse.ArgumentParser, args: argparse.Namespace, known: Iterable[str], *, kind: str,
              tool: str) -> tuple[list[str], str]:
    """After parsing :func:`add_common_options`: quiet the engine's log unless ``--verbose``; return the
    kinds chosen (``ap.error`` on an unknown one) and the work directory (``--workdir`` or a new
    temporary one named after ``tool``, under :func:`scratch_dir`), created."""
    if not args.verbose:
        logging.getLogger("inmem").setLevel(logging.CRITICAL)
    known = list(known)
    kinds = args.kinds.split(",") if args.kinds else known
    for k in kinds:
        if k not in known:
            ap.error(f"unknown {kind} kind {k!r}; known: {', '.join(known)}")
    work = args.workdir or tempfile.mkdtemp(prefix=f"inmem-{tool}-", dir=scratch_dir())
    os.makedirs(work, exist_ok=True)
    return kinds, work

