"""python -m tools.corruptsim: damage a database's files in every way a disk can, and prove nothing is lost quietly.

This module owns the corruption cases and their classification. It builds
one database (a seeded workload over every primitive, several WAL
segments, two snapshots, history sidecars), remembers the digest of its
state after every commit version and where every commit's frame lies, then
runs each case in a forked worker: copy the database, damage it, open it,
and classify the outcome as exactly one of

* **recovered exactly**: it opens and holds every commit; or it holds
  exactly the commits before a torn tail (every dropped commit's frame is
  itself damaged or cut off: damage recovery cannot tell from a torn write),
  and every run's history replays to its state;
* **detected loudly**: the open (or a replay) raises an ``InmemError`` —
  for damage to WAL or snapshot bytes a ``CorruptionError`` naming the
  file and the offset;
* **lost**: it opens with a prefix of the commits that drops an intact commit;
* **silently wrong**: it opens with a state that no commit version had, or
  a replay differs from the live state;
* **hang**: no answer within ``--timeout-s``; **unexpected error**: any other
  exception.

Fault kinds: single-bit flips (WAL, last segment, snapshot, sidecar,
IDENTITY), zeroed 4 KiB pages, truncation at an offset (last segment, a
middle segment, a snapshot, a sidecar), a deleted middle segment, a segment
from another database, both snapshots damaged, a deleted or stale sidecar.

Exit status 1 if any case is lost, silently wrong, hangs or errs. A failing
case prints the seed and a command that reruns it alone (``--only``) on the
same base database (``--base``, kept), and keeps its damaged directory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from typing import Any

from tests.checkout import use_checkout

use_checkout()

from inmem import Database  # noqa: E402
from inmem.errors import CorruptionError, InmemError  # noqa: E402
from inmem.history.sidecar import parse_index_name  # noqa: E402
from inmem.snapshot import parse_snapshot_name  # noqa: E402
from inmem.wal.format import SEGMENT_HEADER_SIZE, check_frame, decode_commit, parse_segment_name  # noqa: E402

from . import simcore, simworkload  # noqa: E402

PAGE = 4096

#: fault kind -> weight in a run of cases
KINDS = {
    "bitflip-wal": 6, "bitflip-wal-last": 6, "zero-page-wal": 3, "truncate-wal-last": 6, "truncate-wal-middle": 2,
    "delete-middle-segment": 1, "foreign-segment": 1, "bitflip-snapshot": 3, "zero-page-snapshot": 1,
    "truncate-snapshot": 2, "both-snapshots": 1, "bitflip-sidecar": 2, "truncate-sidecar": 1,
    "delete-sidecar": 1, "stale-sidecar": 1, "bitflip-identity": 1,
}


# --- the base database ------------------------------------------------------------------------------


def build(dirpath: str, seed: int, steps: int = 220) -> dict[str, Any]:
    """Create the base database in ``dirpath``; return its facts: digest per commit version, frames, files."""
    db = Database.open(dirpath, durability="off", segment_bytes=8192, snapshot_every_bytes=None)
    w = simworkload.Workload(db, seed)
    names = simworkload.plan(seed, steps)
    snap_at = {steps // 2, (3 * steps) // 4}
    digests: dict[int, str] = {0: simworkload.digest(db)}
    try:
        for i, name in enumerate(names):
            simworkload.step(w, "sync" if name == "compact" else name)  # keep every segment: history for replays
            digests.update(simworkload.intermediate_digests(w))  # inside a workflow's start or finish
            if i in snap_at:
                db.snapshot()
            digests[db.stats()["commit_version"]] = simworkload.digest(db)
        db.close()
    finally:
        simworkload.stop(w)
    frames = []  # (segment name, start, end, version)
    for name in sorted(n for n in os.listdir(dirpath) if parse_segment_name(n) is not None):
        buf = open(os.path.join(dirpath, name), "rb").read()
        pos = SEGMENT_HEADER_SIZE
        while pos < len(buf):
            _lsn, _t, start, end = check_frame(buf, pos)
            version = decode_commit(buf, start, end)[0]
            frames.append((name, pos, end, version))
            pos = end
    return {"digests": digests, "frames": frames, "final": max(digests), "files": sorted(os.listdir(dirpath))}


def _files(facts: dict[str, Any], parse: Any) -> list[str]:
    return [n for n in facts["files"] if parse(n) is not None]


# --- one case ----------------------------------------------------------------------------------------


def _flip(path: str, rng: random.Random, lo: int = 0) -> tuple[int, int]:
    size = os.path.getsize(path)
    off = rng.randrange(min(lo, size - 1), size)
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)[0]
        f.seek(off)
        f.write(bytes([b ^ (1 << rng.randrange(8))]))
    return off, off + 1


def _zero_page(path: str, rng: random.Random) -> tuple[int, int]:
    size = os.path.getsize(path)
    page = rng.randrange(max(1, (size + PAGE - 1) // PAGE))
    lo, hi = page * PAGE, min(size, page * PAGE + PAGE)
    with open(path, "r+b") as f:
        f.seek(lo)
        f.write(bytes(hi - lo))
    return lo, hi


def _truncate(path: str, rng: random.Random) -> tuple[int, int]:
    size = os.path.getsize(path)
    off = rng.randrange(size)
    os.truncate(path, off)
    return off, size


def damage(d: str, kind: str, rng: random.Random, facts: dict[str, Any], foreign: str) -> dict[str, Any]:
    """Apply one fault of ``kind`` to the copy ``d``; return where: ``{"file", "lo", "hi"}`` (hi: end of damage)."""
    segs = _files(facts, parse_segment_name)
    snaps = _files(facts, parse_snapshot_name)
    sides = _files(facts, parse_index_name)
    p = lambda n: os.path.join(d, n)  # noqa: E731
    if kind in ("bitflip-wal", "zero-page-wal", "truncate-wal-middle"):
        name = rng.choice(segs if kind != "truncate-wal-middle" else segs[:-1])
        lo, hi = {"bitflip-wal": _flip, "zero-page-wal": _zero_page, "truncate-wal-middle": _truncate}[kind](
            p(name), rng)
    elif kind == "bitflip-wal-last":
        name = segs[-1]
        lo, hi = _flip(p(name), rng, lo=max(0, os.path.getsize(p(name)) - 600))  # near the end: torn-tail paths
    elif kind == "truncate-wal-last":
        name = segs[-1]
        lo, hi = _truncate(p(name), rng)
    elif kind == "delete-middle-segment":
        name = rng.choice(segs[1:-1])
        os.remove(p(name))
        lo, hi = 0, 1 << 62
    elif kind == "foreign-segment":
        theirs = sorted(n for n in os.listdir(foreign) if parse_segment_name(n) is not None)
        name = rng.choice([n for n in segs if n in theirs] or segs)
        shutil.copyfile(os.path.join(foreign, rng.choice(theirs) if name not in theirs else name), p(name))
        lo, hi = 0, 1 << 62
    elif kind in ("bitflip-snapshot", "zero-page-snapshot", "truncate-snapshot"):
        name = rng.choice(snaps)
        lo, hi = {"bitflip-snapshot": _flip, "zero-page-snapshot": _zero_page, "truncate-snapshot": _truncate}[kind](
            p(name), rng)
    elif kind == "both-snapshots":
        for n in snaps:
            _flip(p(n), rng)
        name, lo, hi = ",".join(snaps), 0, 0
    elif kind in ("bitflip-sidecar", "truncate-sidecar", "delete-sidecar", "stale-sidecar"):
        name = rng.choice(sides)
        if kind == "bitflip-sidecar":
            lo, hi = _flip(p(name), rng)
        elif kind == "truncate-sidecar":
            lo, hi = _truncate(p(name), rng)
        elif kind == "delete-sidecar":
            os.remove(p(name))
            lo, hi = 0, 0
        else:
            other = rng.choice([s for s in sides if s != name] or sides)
            shutil.copyfile(p(other), p(name))
            lo, hi = 0, 0
    elif kind == "bitflip-identity":
        name = "IDENTITY"
        lo, hi = _flip(p(name), rng)
    else:
        raise ValueError(f"unknown fault kind {kind!r}")
    return {"file": name, "lo": lo, "hi": hi}


_RANK = {"recovered": 0, "detected": 1, "error": 2, "lost": 3, "wrong": 4}


def classify(d: str, where: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """Open the damaged copy ``d`` and classify what it holds (see the module docstring)."""
    try:
        db = Database.open(d, durability="off", snapshot_every_bytes=None)
    except CorruptionError as exc:
        named = exc.path is not None
        return {"outcome": "detected", "detail": f"CorruptionError{' (names no file)' if not named else ''}: {exc}",
                "named": named}
    except InmemError as exc:
        return {"outcome": "detected", "detail": f"{type(exc).__name__}: {exc}"}
    try:
        version = db.stats()["commit_version"]
        got = simworkload.digest(db)
        digests = {int(k): v for k, v in facts["digests"].items()}
        if digests.get(version) != got:
            return {"outcome": "wrong", "detail": f"opened at version {version} with a state no commit had"}
        res = {"outcome": "recovered", "detail": "every commit"}
        if version < facts["final"]:
            dropped = [f for f in facts["frames"] if f[3] > version]
            intact = [f for f in dropped if not _touched(f, where)]
            if intact:
                f = intact[0]
                return {"outcome": "lost", "detail": f"opened at version {version} of {facts['final']}: dropped "
                        f"{len(dropped)} commits, e.g. version {f[3]} ({f[0]} @{f[1]}) which is intact"}
            res["detail"] = f"torn tail: the {len(dropped)} damaged last commits dropped"
        for info in db.runs.list():
            try:
                if db.replay_run(info.id) != db.run_state(info.id):
                    return {"outcome": "wrong", "detail": f"replay of {info.name} differs from its state"}
            except InmemError as exc:
                res = {"outcome": "detected", "detail": f"replay of {info.name}: {type(exc).__name__}: {exc}"}
        return res
    finally:
        db.close()


def _touched(frame: tuple[str, int, int, int], where: dict[str, Any]) -> bool:
    """Whether a frame is damaged or cut off by the damage (so recovery may treat it as a torn tail);
    ``where["sizes"]``: the damaged files' sizes before recovery ran."""
    name, start, end, _v = frame
    if name not in where["file"].split(","):
        return False
    return end > where["sizes"][name] or (start < where["hi"] and end > where["lo"])


def trial(spec: dict[str, Any]) -> dict[str, Any]:
    """One case in a worker: copy, damage, classify; the copy is removed unless the case fails."""
    rng = random.Random(f"{spec['seed']}:{spec['id']}")
    d = os.path.join(spec["work"], f"case-{spec['id']}")
    shutil.copytree(spec["base"], d)
    where = damage(d, spec["kind"], rng, spec["facts"], spec["foreign"])
    where["sizes"] = {n: os.path.getsize(os.path.join(d, n)) if os.path.exists(os.path.join(d, n)) else 0
                      for n in where["file"].split(",")}  # after the damage, before recovery cuts anything
    res = classify(d, where, spec["facts"])
    res["where"] = where
    if res["outcome"] in simcore.FAILURES or spec.get("keep"):
        res["kept"] = d
    else:
        shutil.rmtree(d, ignore_errors=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.corruptsim", description=__doc__.splitlines()[0],
                                 epilog="Fault kinds: " + ", ".join(KINDS))
    ap.add_argument("--cases", type=int, default=1000, help="number of corruption cases (default 1000)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the base database and of the cases")
    ap.add_argument("--base", default=None, help="reuse a base directory kept by an earlier run")
    ap.add_argument("--workdir", default=None,
                    help="where to build (default: a new temporary directory, under /dev/shm if there is one)")
    simcore.add_common_options(ap, unit="case", kind="fault", timeout_s=30.0)
    args = ap.parse_args(argv)
    kinds, work = simcore.setup_run(ap, args, KINDS, kind="fault", tool="corruptsim")
    t0 = time.monotonic()
    base = args.base or os.path.join(work, "base")
    if args.base is None:
        facts = build(os.path.join(base, "db"), args.seed)
        build(os.path.join(base, "foreign"), args.seed + 1, steps=120)
        with open(os.path.join(base, "facts.json"), "w") as f:
            json.dump(facts, f)
    else:
        with open(os.path.join(base, "facts.json")) as f:
            facts = json.load(f)
    rng = random.Random(f"cases:{args.seed}")
    weights = [KINDS[k] for k in kinds]
    ids = [args.only] if args.only is not None else range(args.cases)
    kind_of = [rng.choices(kinds, weights)[0] for _ in range(max(ids) + 1)]
    specs = [{"id": i, "kind": kind_of[i], "seed": args.seed, "work": work, "base": os.path.join(base, "db"),
              "foreign": os.path.join(base, "foreign"), "facts": facts, "keep": args.only is not None} for i in ids]
    results = list(simcore.run_trials(trial, specs, workers=max(1, args.workers), timeout_s=args.timeout_s,
                                      budget_s=args.budget_s))
    seconds = time.monotonic() - t0
    failing = any(r["outcome"] in simcore.FAILURES for r in results)
    unnamed = [r for r in results if r.get("named") is False]
    if unnamed:
        print(f"{len(unnamed)} CorruptionErrors named no file, e.g. case {unnamed[0]['id']}: {unnamed[0]['detail']}")
    if args.only is not None:
        for r in results:
            print(f"case {r['id']} ({r['kind']}): {r['outcome']}: {r.get('detail', '')}; damage {r.get('where')}; "
                  f"directory {r.get('kept')}")
    status = simcore.report(
        "corruptsim", results, seed=args.seed, seconds=seconds, skipped=len(specs) - len(results),
        json_path=args.json, extra={"unnamed_corruption_errors": len(unnamed)},
        repro=lambda r: f"python -m tools.corruptsim --seed {args.seed} --only {r['id']} --base {base}")
    if not failing and args.workdir is None and args.base is None and args.only is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"directories kept under {work}")
    return status


if __name__ == "__main__":
    sys.exit(main())
