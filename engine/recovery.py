"""Crash recovery: rebuild the store from the WAL when a directory is opened.

This module owns the recovery policy of SPEC.md ("Recovery"). Invariant: after
:func:`recover` returns, the state is exactly the effect of the longest
sequence of complete, checksummed commit records with LSNs 1..n, and the
files on disk end exactly where that sequence ends (a torn tail has been cut
and the cut fsynced), so the writer may append.

The rules, in order:

1. Leftover ``*.tmp`` files (an interrupted segment or IDENTITY creation) hold
   nothing acknowledged; they are removed.
2. ``IDENTITY`` must exist if any segment does; every segment header must
   carry its database id (else: a foreign segment), its own sequence number,
   and the first LSN that follows the previous segment's last (else: a missing
   or stale segment). Sequence numbers must run 1, 2, 3 ... with no gap.
3. Frames are read in order; a length is used only after the header checksum
   covering it has passed (:func:`engine.wal.format.check_frame`).
4. A bad frame is a **torn tail** only if it lies in the *last* segment and no
   valid frame follows it (looked for with
   :func:`engine.wal.format.find_valid_frame`). The tail is cut off at the
   last good record, the cut is fsynced, and it is reported: a crash
   mid-write, not corruption.
5. Anything else bad raises :class:`~engine.errors.CorruptionError` naming the
   file and byte offset, and nothing is opened — unless ``salvage=True``,
   which keeps the longest valid prefix: the damaged segment is copied to
   ``<name>.corrupt-<ms>`` and cut at the bad frame, later segments are renamed
   to ``<name>.corrupt-<ms>`` (kept for forensics, never read again), and the
   report says what was dropped.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import CorruptionError
from .fs import FileSystem
from .identity import IDENTITY_FILE, Identity, create_identity, read_identity
from .store import Entry
from .wal.format import (
    SEGMENT_HEADER_SIZE,
    FrameError,
    decode_segment_header,
    find_valid_frame,
    parse_segment_name,
    segment_name,
)
from .wal.reader import SegmentScan
from .wal.writer import ActiveSegment

__all__ = ["Recovered", "recover"]

log = logging.getLogger("inmem")


@dataclass
class Recovered:
    """What recovery hands to the database: the state and where the WAL continues."""

    identity: Identity
    state: dict[bytes, Entry]
    version: int  # last commit version recovered (0 for an empty database)
    next_lsn: int
    active: ActiveSegment | None  # last kept segment, to append to
    closed_bytes: int  # bytes in kept segments before the active one
    closed_segments: int
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Damage:
    """Where the valid prefix ends because of corruption (salvage mode only)."""

    index: int  # index in the segment list of the damaged segment
    cut: int | None  # keep bytes [0, cut) of it; None drops the whole file
    message: str
    path: str
    offset: int | None


def recover(fs: FileSystem, dirpath: str, *, salvage: bool = False) -> Recovered:
    """Read the WAL of ``dirpath`` and return the recovered state.

    Complexity: O(WAL bytes) time; O(live keys) memory beyond one segment buffer.

    :raises CorruptionError: a segment is missing, foreign or out of sequence,
        IDENTITY is missing or damaged, or a frame before the tail is bad
        (with ``salvage=True`` only for IDENTITY problems).
    """
    t0 = time.perf_counter()
    names = fs.listdir(dirpath)
    removed_tmp = [n for n in names if n.endswith(".tmp")]
    for n in removed_tmp:
        fs.remove(os.path.join(dirpath, n))
    if removed_tmp:
        fs.sync_dir(dirpath)
    segments = sorted((seq, n) for n in names if (seq := parse_segment_name(n)) is not None)

    created = False
    if IDENTITY_FILE in names:
        ident = read_identity(fs, dirpath)
    elif segments:
        raise CorruptionError(
            "IDENTITY is missing but WAL segments exist: the directory is damaged "
            "(restore IDENTITY from a backup)",
            path=os.path.join(dirpath, IDENTITY_FILE),
        )
    else:
        ident = create_identity(fs, dirpath)
        created = True

    state: dict[bytes, Entry] = {}
    version = 0
    next_lsn = 1
    records = 0
    bytes_read = 0
    torn: dict[str, Any] | None = None
    damage: _Damage | None = None
    kept: list[tuple[int, str, int, int]] = []  # (seq, path, size, first_lsn)

    def damaged(message: str, path: str, offset: int | None, index: int, cut: int | None) -> None:
        nonlocal damage
        if not salvage:
            raise CorruptionError(message, path=path, offset=offset)
        damage = _Damage(index, cut, message, path, offset)

    for index, (seq, name) in enumerate(segments):
        path = os.path.join(dirpath, name)
        expected_seq = index + 1
        if seq != expected_seq:
            missing = os.path.join(dirpath, segment_name(expected_seq))
            damaged(f"WAL segment {segment_name(expected_seq)} is missing (next is {name})", missing, None, index, None)
            break
        buf = fs.read(path)
        bytes_read += len(buf)
        try:
            header = decode_segment_header(buf)
        except FrameError as exc:
            damaged(f"WAL segment header is bad: {exc.reason}", path, exc.offset, index, None)
            break
        if header.db_id != ident.db_id:
            damaged("foreign WAL segment: it belongs to another database", path, 12, index, None)
            break
        if header.seq != seq:
            damaged(f"WAL segment header says sequence {header.seq}, file name says {seq}", path, 28, index, None)
            break
        if header.first_lsn != next_lsn:
            damaged(
                f"WAL segment starts at LSN {header.first_lsn}, expected {next_lsn} (stale or missing segment)",
                path, 36, index, None,
            )
            break

        scan = SegmentScan(buf, header, version)
        get = state.pop
        for _lsn, version, _ts, writes in scan.records():
            for key, value in writes:
                if value is None:
                    get(key, None)
                else:
                    state[key] = (version, value)
        records += scan.count
        next_lsn = scan.next_lsn
        version = scan.last_version
        err = scan.error
        if err is not None:
            last = index == len(segments) - 1
            if last and find_valid_frame(buf, err.offset + 1, next_lsn) == -1:
                torn = {
                    "file": name,
                    "offset": err.offset,
                    "bytes_dropped": len(buf) - err.offset,
                    "reason": err.reason,
                }
                kept.append((seq, path, err.offset, header.first_lsn))
            else:
                where = "" if last else " (not in the last segment)"
                damaged(f"bad WAL frame{where}: {err.reason}", path, err.offset, index, err.offset)
                if damage is not None:
                    kept.append((seq, path, err.offset, header.first_lsn))
                break
        else:
            kept.append((seq, path, len(buf), header.first_lsn))

    if torn is not None:
        _cut(fs, os.path.join(dirpath, torn["file"]), torn["offset"])
        log.warning(
            "inmem: recovery cut a torn tail of %d bytes from %s at offset %d (%s): "
            "a crash during a write, not corruption",
            torn["bytes_dropped"], torn["file"], torn["offset"], torn["reason"],
        )

    salvaged = None
    if damage is not None:
        salvaged = _salvage(fs, dirpath, segments, damage)
        log.warning(
            "inmem: salvage kept the valid prefix (commit version %d) and set aside %s: %s",
            version, ", ".join(salvaged["set_aside"]), damage.message,
        )

    active = None
    if kept:
        seq, path, size, first_lsn = kept[-1]
        active = ActiveSegment(seq, path, size, first_lsn)
    report = {
        "created": created,
        "segments": len(kept),
        "records": records,
        "bytes": bytes_read,
        "commit_version": version,
        "seconds": round(time.perf_counter() - t0, 6),
        "torn_tail": torn,
        "salvaged": salvaged,
        "removed_temporaries": removed_tmp,
    }
    return Recovered(
        identity=ident,
        state=state,
        version=version,
        next_lsn=next_lsn,
        active=active,
        closed_bytes=sum(k[2] for k in kept[:-1]),
        closed_segments=max(len(kept) - 1, 0),
        report=report,
    )


def _cut(fs: FileSystem, path: str, offset: int) -> None:
    """Truncate ``path`` to ``offset`` bytes and fsync, before anything new is written."""
    f = fs.open_append(path)
    try:
        f.truncate(offset)
        f.sync()
    finally:
        f.close()


def _salvage(fs: FileSystem, dirpath: str, segments: list[tuple[int, str]], damage: _Damage) -> dict[str, Any]:
    """Set aside everything after the valid prefix; return what was dropped."""
    stamp = time.time_ns() // 1_000_000
    set_aside: list[str] = []
    dropped = 0
    for index in range(damage.index, len(segments)):
        name = segments[index][1]
        path = os.path.join(dirpath, name)
        aside = f"{name}.corrupt-{stamp}"
        size = fs.file_size(path)
        if index == damage.index and damage.cut is not None and damage.cut >= SEGMENT_HEADER_SIZE:
            # keep a full copy for forensics, then cut the original at the bad frame
            copy = fs.create(os.path.join(dirpath, aside))
            try:
                copy.write(fs.read(path))
                copy.sync()
            finally:
                copy.close()
            _cut(fs, path, damage.cut)
            dropped += size - damage.cut
        else:
            fs.rename(path, os.path.join(dirpath, aside))
            dropped += size
        set_aside.append(aside)
    fs.sync_dir(dirpath)
    return {
        "reason": damage.message,
        "file": os.path.basename(damage.path),
        "offset": damage.offset,
        "bytes_dropped": dropped,
        "set_aside": set_aside,
    }
