"""python -m tools.crashsim: crash a workload over every primitive at chosen points, reopen, prove nothing is lost.

This module owns the crash trials (the checks after each are
:mod:`tools.simcheck`'s). A workload (:mod:`tools.simworkload`: KV, events,
state CAS, traces, vectors, documents, the memory graph (nodes, edges,
cascading deletes; compared edge by edge), LangGraph store items, durable
workflows driven one commit at a time (:mod:`tools.simflows`),
multi-primitive transactions, runs begun, ended and forked, snapshots,
compactions and syncs; 4 KiB segments, so it rotates) runs in a forked worker
(forked from this process, which has imported inmem and run the workload
once: no fresh interpreter, no import per child) and is stopped by one of:

``powercut-posix`` / ``powercut-ext4``
    a :class:`tools.faultfs.FaultFS` crash point at the n-th file-system call
    (a write there may land torn), then the directory as a disk holds it
    after power loss in that model, with unsynced appends lost, torn,
    zero-filled or kept at random;
``powercut-recovery``
    the same, then a second crash point *during the recovery* of that
    directory, and a second power cut (recovery of a crash during recovery);
``sigkill-call``
    SIGKILL of a forked child at its n-th file-system call (what the OS has
    written survives: a process crash, not a power cut);
``sigkill-timer``
    SIGKILL of a forked child after a random delay (threads included: the
    batched flusher, group commit);
``eio`` / ``enospc``
    EIO on the n-th write, fsync, directory fsync, rename, create or remove
    (a failing write may land part of its bytes), or ENOSPC once a byte
    budget is spent: the workload runs until a call raises, one more commit
    must then raise ``DatabasePoisoned`` (SPEC §5), then a power cut; the
    reopen has space again.

After each crash the directory is reopened with the real file system and
checked: its state equals the workload's state after some step ``j`` (the
digest, :func:`tools.simworkload.digest`, is computed once per workload on
a clean database): ``j`` at least the last step durable by the mode's promise
(``strict``: every acknowledged step; ``batched``/``off``: the last
acknowledged ``sync``, snapshot or compaction — and, after SIGKILL, every
acknowledged step in ``off``) and at most one step past the last
acknowledged (or between the two commits of a workflow's start or finish);
every run's event chain verifies; ``replay_run(r) == run_state(r)`` for every
run; ``inmem verify`` finds nothing (on the recovering handle); then
``db.workflows.recover()`` completes every workflow with each inmem effect
exactly once. A trial ends
as *recovered exactly* (all checks pass), *lost* (the state is an earlier
prefix than promised), *silently wrong* (no prefix, a broken chain, a replay
that differs, a workflow effect missing or twice), *detected loudly* (the open or a check raised, or verify
complained: after a mere crash that is a failure too), *hang* or
*unexpected error*. Exit status 1 on any of those but the first.
"""

from __future__ import annotations

import argparse
import errno
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Any

from tests.checkout import use_checkout

use_checkout()

from inmem import Database  # noqa: E402
from inmem.errors import InmemError  # noqa: E402

from . import simcore, simworkload  # noqa: E402
from .simcheck import DURABLE_STEPS, check  # noqa: E402
from .faultfs import CrashPoint, FaultFS, abandon  # noqa: E402

#: crash kind -> share of the crash points
KINDS = {"powercut-posix": 30, "powercut-ext4": 30, "powercut-recovery": 10, "sigkill-call": 10, "sigkill-timer": 8,
         "eio": 8, "enospc": 4}
MULTI = ("powercut-posix", "powercut-ext4")
#: A strict or off power-cut run takes up to this many times --cuts-per-run images (see main).
GROUP = 4
SEGMENT_BYTES = 4096


def _open(path: str, mode: str, fs: Any = None) -> Database:
    # no background sweeper: TTLs in the workload never expire, and op_ttl sweeps in the foreground
    return Database.open(path, fs=fs, durability=mode, segment_bytes=SEGMENT_BYTES, snapshot_every_bytes=None,
                         flush_interval_ms=2, sweep_interval_s=None)


def run_workload(path: str, mode: str, seed: int, steps: int, fs: Any = None, ack: Any = None,
                 acked: list[int] | None = None) -> list[int]:
    """Run the workload; return the acknowledgements (appended to ``acked`` as they come): step index + 1
    per step that returned (negative for a durability point). ``ack(i)`` is called for each too (the
    SIGKILL child writes them to a pipe)."""
    acked = [] if acked is None else acked
    alive = fs.check_alive if isinstance(fs, FaultFS) else (lambda: None)
    db = w = None
    try:
        db = _open(path, mode, fs)
        alive()
        w = simworkload.Workload(db, seed)
        for i, name in enumerate(simworkload.plan(seed, steps)):
            simworkload.step(w, name)
            alive()
            a = -(i + 1) if name in DURABLE_STEPS else i + 1
            acked.append(a)
            if ack is not None:
                ack(a)
        db.close()
        alive()
        acked.append(-steps)  # closed: every step durable
        if ack is not None:
            ack(-steps)
    except CrashPoint:
        abandon(db)
    except Exception:
        if not (isinstance(fs, FaultFS) and fs.halted):
            raise
        abandon(db)  # another thread (the batched flusher) hit the crash point; this one then saw the dead disk
    finally:
        if w is not None:
            simworkload.stop(w)
    return acked


def reference(seed: int, steps: int, work: str) -> list[list[str]]:
    """The digests of workload ``seed`` on a clean database: item 0 ``[before any step]``, item ``j`` the
    states step ``j`` can leave, its last the state after it (the others: inside a two-commit step, see
    :func:`tools.simworkload.intermediate_digests`)."""
    path = tempfile.mkdtemp(dir=work, prefix="ref-")
    db = _open(os.path.join(path, "db"), "off")
    w = simworkload.Workload(db, seed)
    out = [[simworkload.digest(db)]]
    try:
        for name in simworkload.plan(seed, steps):
            simworkload.step(w, name)
            out.append([d for _, d in simworkload.intermediate_digests(w)] + [simworkload.digest(db)])
        db.close()
    finally:
        simworkload.stop(w)
        abandon(db)
    shutil.rmtree(path, ignore_errors=True)
    return out


def probe_calls(seed: int, steps: int, mode: str, work: str) -> dict[str, int]:
    """How many file-system calls the workload makes (the range of crash points), ``"all"`` and per kind,
    and ``"bytes"``: the most the directory held (the ENOSPC budgets' scale)."""
    path = tempfile.mkdtemp(dir=work, prefix="probe-")
    peak = [0]

    def note(fs: FaultFS, _n: int, _kind: str) -> None:
        peak[0] = max(peak[0], fs.used())

    fs = FaultFS(os.path.join(path, "db"), real_sync=False, record=True, before_call=note)
    run_workload(os.path.join(path, "db"), mode, seed, steps, fs)
    shutil.rmtree(path, ignore_errors=True)
    counts = {"all": fs.calls, "bytes": peak[0]}
    for e in fs.events:
        kind = e.split()[1]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def prepare(wseeds: list[int], modes: list[str], steps: int,
            work: str) -> tuple[dict[int, list[list[str]]], dict[tuple[int, str], dict[str, int]]]:
    """Before the trial workers fork: one warm-up run of the workload and a check (so that every child shares
    what they import, instead of each importing it again), the reference digests of every workload
    (:func:`reference`) and its call counts in every mode (:func:`probe_calls`). In this process: forking
    children for these cost more than it saved (measured)."""
    warm = tempfile.mkdtemp(dir=work, prefix="warm-")
    simworkload.warm_up(os.path.join(warm, "db"))
    check(os.path.join(warm, "db"), [[]], [], "off", killed=False)
    shutil.rmtree(warm, ignore_errors=True)
    refs = {s: reference(s, steps, work) for s in wseeds}
    counts = {(s, m): probe_calls(s, steps, m, work) for s in wseeds for m in modes}
    return refs, counts


#: the calls an ``eio`` trial fails, and the errno of an ``enospc`` trial
EIO_CALLS = ("write", "sync", "sync_dir", "rename", "create", "remove")


def _faulted(spec: dict[str, Any], d: str) -> dict[str, Any]:
    """EIO at the n-th call of one kind, or ENOSPC once a byte budget is spent; the workload goes on until
    a call raises; then one more commit must raise DatabasePoisoned; then a power cut, and the usual checks
    (every commit acknowledged before the failure is durable as promised; nothing after it was acknowledged)."""
    rng = random.Random(f"{spec['seed']}:{spec['id']}")
    root = os.path.join(d, "db")
    fs = FaultFS(root, real_sync=False)
    counts = spec["counts"]
    if spec["kind"] == "eio":
        kind = rng.choice([k for k in EIO_CALLS if counts.get(k)])
        nth = rng.randint(1, counts[kind])
        fs.fail(kind, nth, err=errno.EIO, land=rng.randrange(300) if kind == "write" else 0)
        fault = f"EIO on {kind} #{nth}"
    else:
        fs.space = int(counts["bytes"] * rng.uniform(0.05, 1.0))
        fault = f"ENOSPC after {fs.space} bytes"
    acked: list[int] = []
    db = w = None
    failure: BaseException | None = None
    try:
        db = _open(root, spec["mode"], fs)
        w = simworkload.Workload(db, spec["wseed"])
        for i, name in enumerate(simworkload.plan(spec["wseed"], spec["steps"])):
            simworkload.step(w, name)
            acked.append(-(i + 1) if name in DURABLE_STEPS else i + 1)
        db.close()
        acked.append(-spec["steps"])
    except (InmemError, OSError) as exc:
        failure = exc
    if w is not None:
        simworkload.stop(w)
    res: dict[str, Any] = {"fault": fault, "failed_with": None if failure is None else type(failure).__name__}
    if failure is not None and db is not None and w is not None and w.runs and not db.closed:
        try:
            db.kv.put(next(iter(w.runs.values())), "after-the-failure", 1)
        except InmemError:
            pass  # DatabasePoisoned, or RunClosed for an ended run: nothing acknowledged
        else:
            abandon(db)
            return {**res, "outcome": "wrong", "detail": f"{fault}: a commit was acknowledged after the failed call"}
    abandon(db)
    cut = os.path.join(d, "cut")
    fs.power_cut(cut, model=rng.choice(("posix", "ext4")), tail=rng.choice(("none", "prefix", "zeros", "all")),
                 rng=rng)
    out = check(cut, spec["ref"], acked, spec["mode"], killed=False)  # space is back: no budget on reopen
    return {**res, **out, "detail": f"{fault}: {out.get('detail', '')}"}


def _powercuts(spec: dict[str, Any], d: str) -> list[dict[str, Any]]:
    """Power cuts at several calls of one workload run: before each chosen call, the image a power loss
    there would leave (what a crash point at that call gives, without running the workload again)."""
    rng = random.Random(f"{spec['seed']}:{spec['id']}")
    root = os.path.join(d, "db")
    model = "ext4" if spec["kind"] == "powercut-ext4" else "posix"
    points = set(spec["cuts"])
    acked: list[int] = []
    images: list[tuple[int, str, str, list[int]]] = []

    def cut(fs: FaultFS, n: int, _kind: str) -> None:
        if n in points:
            tail = rng.choice(("none", "prefix", "zeros", "all", "random"))
            dest = os.path.join(d, f"cut-{n}")
            fs.image(dest, model=model, tail=tail, rng=rng)
            images.append((n, dest, tail, list(acked)))

    fs = FaultFS(root, real_sync=False, before_call=cut)
    run_workload(root, spec["mode"], spec["wseed"], spec["steps"], fs, acked=acked)
    if any(n > fs.calls for n in points):  # (batched: the flusher's timing varies the call count) after close
        dest = os.path.join(d, "cut-end")
        fs.power_cut(dest, model=model, tail=rng.choice(("none", "prefix", "zeros", "all", "random")), rng=rng)
        images.append((fs.calls + 1, dest, "after close", list(acked)))
    out = []
    for n, dest, tail, ack in images:
        res = {"model": model, "tail": tail, "crash_at": n, **check(dest, spec["ref"], ack, spec["mode"], False)}
        if res["outcome"] != "recovered":
            res["kept"] = dest
        else:
            shutil.rmtree(dest, ignore_errors=True)
        out.append(res)
    return out


def _powercut(spec: dict[str, Any], d: str) -> dict[str, Any]:
    rng = random.Random(f"{spec['seed']}:{spec['id']}")
    root = os.path.join(d, "db")
    fs = FaultFS(root, crash_at=spec["crash_at"], torn=rng.choice((None, rng.randrange(600))), real_sync=False)
    acked = run_workload(root, spec["mode"], spec["wseed"], spec["steps"], fs)
    model = "ext4" if spec["kind"] == "powercut-ext4" else ("posix" if spec["kind"] == "powercut-posix"
                                                           else rng.choice(("posix", "ext4")))
    tail = rng.choice(("none", "prefix", "zeros", "all", "random"))
    cut = os.path.join(d, "cut")
    if not fs.halted:
        fs.halt()  # the crash point lay beyond the workload: cut power after close
    fs.power_cut(cut, model=model, tail=tail, rng=rng)
    res: dict[str, Any] = {"model": model, "tail": tail}
    if spec["kind"] == "powercut-recovery" and os.path.exists(cut):
        probe_dir = os.path.join(d, "probe")
        shutil.copytree(cut, probe_dir)
        pfs = FaultFS(probe_dir, real_sync=False)
        try:
            Database.open(probe_dir, fs=pfs).close()
        except InmemError:
            pass
        k = rng.randint(1, max(1, pfs.calls))
        rfs = FaultFS(cut, crash_at=k, torn=rng.choice((None, rng.randrange(200))), real_sync=False)
        db = None
        try:
            db = Database.open(cut, fs=rfs)
            db.close()
        except CrashPoint:
            abandon(db)
        except InmemError as exc:
            return {**res, "outcome": "detected", "detail": f"first reopen raised {type(exc).__name__}: {exc}"}
        rfs.halt()
        cut2 = os.path.join(d, "cut2")
        rfs.power_cut(cut2, model=model, tail=tail, rng=rng)
        res["recovery_crash_at"] = k
        cut = cut2
    return {**res, **check(cut, spec["ref"], acked, spec["mode"], killed=False)}


def _sigkill(spec: dict[str, Any], d: str) -> dict[str, Any]:
    rng = random.Random(f"{spec['seed']}:{spec['id']}")
    root = os.path.join(d, "db")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run the workload until killed
        os.close(r)
        try:
            def die(_fs: FaultFS) -> None:
                os.kill(os.getpid(), signal.SIGKILL)

            fs = (FaultFS(root, crash_at=spec["crash_at"], on_crash=die, real_sync=False)  # fsyncs: moot for SIGKILL
                  if spec["kind"] == "sigkill-call" else None)
            run_workload(root, spec["mode"], spec["wseed"], spec["steps"], fs,
                         ack=lambda a: os.write(w, f"{a}\n".encode()))
        finally:
            os._exit(0)
    os.close(w)
    if spec["kind"] == "sigkill-timer":
        delay = rng.uniform(0, spec["timer_s"])
        timer = threading.Timer(delay, lambda: _kill(pid))
        timer.start()
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    if spec["kind"] == "sigkill-timer":
        timer.cancel()
    acked = [int(x) for x in data.split()]
    return check(root, spec["ref"], acked, spec["mode"], killed=True)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def trial(spec: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]]:
    d = os.path.join(spec["work"], f"trial-{spec['id']}")
    os.makedirs(d)
    if spec["kind"] in ("powercut-posix", "powercut-ext4"):
        out = _powercuts(spec, d)
        for res in out:
            res["kind"] = f"{spec['kind']} {spec['mode']}"
        if all(r["outcome"] == "recovered" for r in out) and not spec.get("keep"):
            shutil.rmtree(d, ignore_errors=True)
        return out
    run = _sigkill if spec["kind"].startswith("sigkill") else _faulted if spec["kind"] in ("eio", "enospc") else _powercut
    res = run(spec, d)
    res["kind"] = f"{spec['kind']} {spec['mode']}"
    res["crash_at"] = spec["crash_at"]
    if res["outcome"] != "recovered" or spec.get("keep"):
        res["kept"] = d
    else:
        shutil.rmtree(d, ignore_errors=True)
    return res


def _draw(rng: random.Random, n: int) -> int:
    """A number in 1..n from one draw of ``rng``, whatever ``n``: the batched call counts vary with timing, and
    ``randint``/``sample`` would then consume ``rng`` differently, giving every later trial another spec
    (``--only`` could not reproduce it)."""
    return 1 + min(n - 1, int(rng.random() * n))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.crashsim", description=__doc__.splitlines()[0],
                                 epilog="Crash kinds: " + ", ".join(KINDS))
    ap.add_argument("--points", type=int, default=300,
                    help="crash points to try, about (default 300; a batched power-cut run may reach fewer)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the workloads and the crash points")
    ap.add_argument("--mode", default="all", choices=("strict", "batched", "off", "all"),
                    help="durability mode (default: all three in turn)")
    ap.add_argument("--steps", type=int, default=60, help="workload steps per trial (default 60)")
    ap.add_argument("--cuts-per-run", type=int, default=12,
                    help="power-cut images taken from one workload run (default 12; a strict or off run, "
                    "which makes the same calls every time, gathers up to 4 times as many)")
    ap.add_argument("--workloads", type=int, default=4, help="distinct workloads (seeds) per mode (default 4)")
    ap.add_argument("--workdir", default=None,
                    help="where trials run (default: a new temporary directory, under /dev/shm if there is one)")
    simcore.add_common_options(ap, unit="trial", kind="crash", timeout_s=60.0)
    args = ap.parse_args(argv)
    kinds, work = simcore.setup_run(ap, args, KINDS, kind="crash", tool="crashsim")
    modes = ["strict", "batched", "off"] if args.mode == "all" else [args.mode]
    t0 = time.monotonic()
    rng = random.Random(f"crashsim:{args.seed}")
    wseeds = [args.seed * 1000 + i for i in range(args.workloads)]
    refs, counts = prepare(wseeds, modes, args.steps, work)
    calls = {k: c["all"] for k, c in counts.items()}
    specs_all: list[dict[str, Any]] = []
    # strict and off runs of one workload make the same calls each time (no background thread decides when):
    # power cuts of one (workload, mode, model) share a run, up to GROUP x --cuts-per-run images; batched
    # runs vary with the flusher's timing: one run per spec
    shared: dict[tuple[int, str, str], dict[str, Any]] = {}
    points = draws = 0
    while points < args.points:  # a power-cut run gives up to --cuts-per-run crash points, the others one
        mode = modes[draws % len(modes)]
        draws += 1
        wseed = rng.choice(wseeds)
        kind = rng.choices(kinds, [KINDS[k] / (args.cuts_per_run if k in MULTI else 1) for k in kinds])[0]
        n = calls[(wseed, mode)]
        crash_at = _draw(rng, n + 2)
        spec = {"id": len(specs_all), "kind": kind, "mode": mode, "wseed": wseed, "steps": args.steps,
                "crash_at": crash_at, "seed": args.seed, "ref": refs[wseed], "work": work, "timer_s": 0.4,
                "keep": args.only is not None, "counts": counts[(wseed, mode)]}
        if kind in MULTI:
            k = max(1, min(args.cuts_per_run, args.points - points, n))
            span = n if mode != "batched" else n + n // 2  # batched: the call count varies with timing
            cuts = {_draw(rng, span) for _ in range(k)}  # (a repeated draw: one point fewer)
            into = shared.get((wseed, mode, kind))
            if into is not None and len(into["cuts"]) + k <= GROUP * args.cuts_per_run and \
                    len(cuts | set(into["cuts"])) > len(into["cuts"]):
                before = len(into["cuts"])
                into["cuts"] = sorted(cuts | set(into["cuts"]))
                points += len(into["cuts"]) - before
                continue
            spec["cuts"] = sorted(cuts)
            spec["crash_at"] = None
            points += len(cuts)
            if mode != "batched":
                shared[(wseed, mode, kind)] = spec
        else:
            points += 1
        specs_all.append(spec)
    # the longest first (a shared power-cut run takes up to GROUP x --cuts-per-run images): workers end together
    specs = [specs_all[args.only]] if args.only is not None else \
        sorted(specs_all, key=lambda sp: -len(sp.get("cuts") or [None]))
    results = list(simcore.run_trials(trial, specs, workers=max(1, args.workers), timeout_s=args.timeout_s,
                                      budget_s=args.budget_s))
    seconds = time.monotonic() - t0
    if args.only is not None:
        for r in results:
            print(f"trial {r['id']} ({r['kind']}, crash at call {r.get('crash_at')}): {r['outcome']}: "
                  f"{r.get('detail', '')}; directory {r.get('kept')}")
    mode_arg = "" if args.mode == "all" else f" --mode {args.mode}"
    flows = {"workflows_resumed": sum(r.get("workflows_resumed", 0) for r in results),
             "workflows_checked": sum(r.get("workflows_checked", 0) for r in results),
             "trials_inside_a_two_commit_step": sum(1 for r in results if r.get("inside_step"))}
    print(f"workflows: {flows['workflows_checked']} checked for exactly-once effects after recovery "
          f"({flows['workflows_resumed']} of them resumed by recover() first); "
          f"{flows['trials_inside_a_two_commit_step']} trials recovered to the state between a workflow's two "
          "start or finish commits")
    status = simcore.report(
        "crashsim", results, seed=args.seed, seconds=seconds, skipped=len(specs) - len({r["spec"] for r in results}),
        json_path=args.json,
        failures=simcore.FAILURES + ("detected",), extra={"steps": args.steps, "workloads": wseeds, **flows,
                                                          "fs_calls": {f"{s} {m}": c for (s, m), c in calls.items()}},
        repro=lambda r: (f"python -m tools.crashsim --seed {args.seed}{mode_arg} --steps {args.steps} "
                         f"--workloads {args.workloads} --points {args.points} --cuts-per-run {args.cuts_per_run}"
                         f"{' --kinds ' + args.kinds if args.kinds else ''} --only {r['spec']}"))
    if status == 0 and args.workdir is None and args.only is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"directories kept under {work}")
    return status


if __name__ == "__main__":
    sys.exit(main())
