"""Offline verification of a database directory: every checksum, every hash chain, nothing changed.

This module owns ``inmem verify``'s checks. It reads every WAL segment frame
by frame (header and payload CRCs, LSN and commit-version order), every
snapshot (digest, header, chunk checksums), and — when the directory opens —
every run's event hash chain, and reports what it found instead of stopping
at the first problem. Invariant: it writes nothing; it holds the shared
(read-only) lock, so no writer changes the files while they are read.

A torn tail at the end of the last segment is reported but is not damage:
recovery cuts it on the next read-write open (SPEC.md §7).

:func:`verify_directory` opens the directory itself (read-only, under the
shared lock); :func:`verify_database` runs the same checks on a handle the
caller already has open (the files through the file system it was opened
with), without a second open: what the crash simulator runs after every
recovery.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from .database import Database
from .errors import ChainBroken, CorruptionError, DatabaseClosed, InmemError, NotADatabase
from .fs import FileSystem, OSFileSystem
from .identity import IDENTITY_FILE, read_identity
from .replay import RunState
from .snapshot import SnapshotError, parse_snapshot_name, verify_snapshot
from .wal.format import (
    FrameError,
    check_segment_identity,
    decode_segment_header,
    find_valid_frame,
    parse_segment_name,
)
from .wal.reader import SegmentScan

__all__ = ["verify_database", "verify_directory"]

Progress = Callable[[str, int, int], None]


def verify_directory(path: str, *, progress: Progress | None = None) -> dict[str, Any]:
    """Check every WAL frame, snapshot, event chain and vector record of the database in ``path``.

    :param progress: ``progress(phase, done, total)``: phase ``"wal"``
        (bytes), ``"snapshots"`` (files), ``"chains"`` (runs; chains and vectors).
    :returns: ``{"ok": bool, "segments": [{"file", "frames", "bytes", "error"}],
        "torn_tail": None | {"file", "offset", "bytes", "reason"}, "snapshots":
        [{"file", "ok", "error"}], "runs": int, "events": int,
        "chains_broken": [{"run", "seq"}], "collections": int, "vectors": int,
        "vectors_bad": [{"run", "collection", "id", "problem"}], "docs": int, "graph_nodes": int,
        "graph_edges": int, "problems": [str]}``;
        ``ok`` is False if anything is damaged (a torn tail alone is not
        damage). ``vectors_bad``: ``id`` is None for a problem of the
        collection itself, ``collection`` too when the run's vector records
        do not decode at all. Complexity: O(database size).
    :raises DatabaseLocked: a writer has the directory open.
    :raises NotADatabase: ``path`` is not a database directory (also ``InvalidArgument``).
    """
    fs = OSFileSystem()
    if not os.path.isdir(path) or not os.path.exists(os.path.join(path, IDENTITY_FILE)):
        raise NotADatabase(f"{path} is not an inmem database (no IDENTITY file)")
    lock = fs.lock(path, shared=True)
    try:
        report = _new_report()
        _verify_files(fs, path, report, progress)
        # 3. every run's event hash chain and vector records, through a read-only open (recovers in memory only)
        try:
            db = Database.open(path, read_only=True, snapshot_every_bytes=None)
        except InmemError as exc:
            report["problems"].append(f"the database does not open: {exc}")
        else:
            try:
                _verify_runs(db, report, progress, {})
            finally:
                db.close()
        report["ok"] = not report["problems"]
        return report
    finally:
        lock.release()


def verify_database(db: Database, *, fs: FileSystem | None = None, progress: Progress | None = None,
                    states: Mapping[str, RunState] | None = None) -> dict[str, Any]:
    """:func:`verify_directory`'s checks on an open handle: every WAL frame and snapshot of ``db.path``
    (read through ``fs``), and every run's event chain, vector records and graph through ``db`` itself.

    For a caller that holds the handle anyway (the crash simulator after a
    recovery): no second open, no lock of its own (the handle's lock keeps
    other writers out). Files are read as they are now, so call it when no
    write of this handle is in flight (a torn tail a read-write open already
    cut is not there any more).

    :param fs: the file system ``db`` was opened with (default: the real disk).
    :param progress: as for :func:`verify_directory`.
    :param states: ``db.run_state(run)`` by run id, for runs the caller has already built (their records
        are checked from these instead of being read and decoded again).
    :returns: the report of :func:`verify_directory`, same shape.
    :raises DatabaseClosed: ``db`` is closed.
    """
    if db.closed:
        raise DatabaseClosed("verify_database needs an open handle")
    report = _new_report()
    _verify_files(fs if fs is not None else OSFileSystem(), db.path, report, progress)
    _verify_runs(db, report, progress, states or {})
    report["ok"] = not report["problems"]
    return report


def _new_report() -> dict[str, Any]:
    return {"ok": True, "segments": [], "torn_tail": None, "snapshots": [], "runs": 0, "events": 0,
            "chains_broken": [], "collections": 0, "vectors": 0, "vectors_bad": [], "docs": 0, "graph_nodes": 0,
            "graph_edges": 0, "problems": []}


def _verify_files(fs: FileSystem, path: str, report: dict[str, Any], progress: Progress | None) -> None:
    """Checks 1 (every WAL frame) and 2 (every snapshot) into ``report``."""
    problems: list[str] = report["problems"]
    try:
        db_id: bytes | None = read_identity(fs, path).db_id
    except CorruptionError as exc:
        problems.append(f"IDENTITY: {exc}")
        db_id = None

    # 1. the WAL, every frame
    listing = fs.listdir(path)
    names = sorted((seq, n) for n in listing if (seq := parse_segment_name(n)) is not None)
    total = sum(fs.file_size(os.path.join(path, n)) for _, n in names)
    done = 0
    version = 0
    next_lsn: int | None = None
    for i, (seq, name) in enumerate(names):
        file = os.path.join(path, name)
        buf = fs.read(file)
        entry: dict[str, Any] = {"file": name, "frames": 0, "bytes": len(buf), "error": None}
        report["segments"].append(entry)
        done += len(buf)
        try:
            header = decode_segment_header(buf)
            check_segment_identity(header, header.db_id if db_id is None else db_id, seq)
            if next_lsn is not None and header.first_lsn != next_lsn:
                raise FrameError(f"starts at LSN {header.first_lsn}, expected {next_lsn} (missing segment?)", 36)
        except FrameError as exc:
            entry["error"] = f"{exc.reason} (offset {exc.offset})"
            problems.append(f"{name}: {entry['error']}")
            next_lsn = None
            version = 0
            continue
        scan = SegmentScan(buf, header, version)
        for _ in scan.records():
            pass
        entry["frames"] = scan.count
        version = scan.last_version
        next_lsn = scan.next_lsn
        err = scan.error
        if err is not None:
            last = i == len(names) - 1
            if last and find_valid_frame(buf, err.offset + 1, next_lsn) == -1:
                report["torn_tail"] = {"file": name, "offset": err.offset, "bytes": len(buf) - err.offset,
                                       "reason": err.reason}
            else:
                entry["error"] = f"{err.reason} (offset {err.offset})"
                problems.append(f"{name}: bad frame at offset {err.offset}: {err.reason}")
                next_lsn, version = None, 0  # what follows cannot be checked for continuity
        if progress is not None:
            progress("wal", done, total)

    # 2. snapshots, every checksum
    snaps = sorted(n for n in listing if parse_snapshot_name(n) is not None)
    for k, name in enumerate(snaps, start=1):
        entry = {"file": name, "ok": True, "error": None}
        try:
            if db_id is None:
                raise SnapshotError("IDENTITY is unreadable: cannot check the database id", 0)
            verify_snapshot(fs, os.path.join(path, name), db_id)
        except SnapshotError as exc:
            entry.update(ok=False, error=f"{exc.reason} (offset {exc.offset})")
            problems.append(f"{name}: {entry['error']}")
        report["snapshots"].append(entry)
        if progress is not None:
            progress("snapshots", k, len(snaps))


def _verify_runs(db: Database, report: dict[str, Any], progress: Progress | None,
                 states: Mapping[str, RunState]) -> None:
    """Check 3: every run's event hash chain, vector records and graph, through ``db``, into ``report``."""
    problems: list[str] = report["problems"]
    runs = db.runs.ids()  # ids only: no per-run scan
    report["runs"] = len(runs)
    for k, run in enumerate(runs, start=1):
        try:
            report["events"] += db.events.verify(run)
        except ChainBroken as exc:
            report["chains_broken"].append({"run": exc.run, "seq": exc.seq})
            problems.append(f"run {exc.run}: event hash chain broken at seq {exc.seq}")
        _check_vectors(db, run, report, states.get(run))
        graph = db.graph.check(run)  # adjacency symmetric, both ends of each edge are nodes
        report["graph_nodes"] += graph["nodes"]
        report["graph_edges"] += graph["edges"]
        problems.extend(f"run {run}: {p}" for p in graph["problems"])
        if progress is not None:
            progress("chains", k, len(runs))


def _check_vectors(db: Database, run: str, report: dict[str, Any], state: RunState | None) -> None:
    """Check every vector record of ``run`` (decodes, ``4 x dim`` bytes, finite, its collection exists) and,
    through :meth:`run_state`, that every record of every primitive decodes (documents: JSON-like)."""
    bad: list[dict[str, Any]] = report["vectors_bad"]

    def problem(collection: str | None, id: str | None, what: str) -> None:
        bad.append({"run": run, "collection": collection, "id": id, "problem": what})
        where = "" if collection is None else f" collection {collection!r}" + ("" if id is None else f" vector {id!r}")
        report["problems"].append(f"run {run}:{where}: {what}")

    try:
        if state is None:
            state = db.run_state(run)
    except CorruptionError as exc:  # a vector key or record that does not decode (or another primitive's)
        problem(None, None, f"its records do not decode: {exc}")
        return
    report["docs"] += len(state.docs)
    for name, c in state.vectors.items():
        report["collections"] += 1
        dim = c["dim"]
        if dim is None:
            problem(name, None, f"no collection record for its {len(c['vectors'])} vector(s)")
        elif type(dim) is not int or dim < 1:
            problem(name, None, f"the collection record has dim {dim!r}")
            dim = None
        for id, v in c["vectors"].items():
            report["vectors"] += 1
            if dim is not None and len(v.data) != 4 * dim:
                problem(name, id, f"{len(v.data)} bytes of components, expected {4 * dim} (dim {dim} x float32)")
            elif len(v.data) % 4:
                problem(name, id, f"{len(v.data)} bytes of components: not whole float32 values")
            elif not all(math.isfinite(x) for x in v.vector):
                problem(name, id, "a component is NaN or an infinity")
