"""Crash recovery: rebuild the store from the WAL when a directory is opened.

This module owns the recovery policy of SPEC.md ("Recovery"). Invariant: after
:func:`recover` returns, the state is exactly the effect of the longest
sequence of complete, checksummed commit records with LSNs 1..n, and the
files on disk end exactly where that sequence ends (a torn tail has been cut
and the cut fsynced), so the writer may append.

The rules, in order:

1. ``IDENTITY`` must exist if any segment or snapshot does. A directory with
   none of the three is new only if it holds nothing but inmem's own
   temporaries and ``LOCK``; otherwise it is not a database
   (:class:`~inmem.errors.NotADatabase`, nothing touched).
2. Every retained segment header — those the snapshot covers (read alone,
   48 bytes) as well as those replayed — must carry IDENTITY's database id
   (else: a foreign segment) and its own sequence number; a replayed one must
   also start at the LSN that follows the previous segment's last (else: a
   missing or stale segment). Sequence numbers must run with no gap from the
   first segment replayed.
3. Frames are read in order; a length is used only after the header checksum
   covering it has passed (:func:`inmem.wal.format.check_frame`).
4. A bad frame is a **torn tail** only if it lies in the *last* segment, no
   valid frame follows it (looked for with
   :func:`inmem.wal.format.find_valid_frame`), and the snapshot does not
   cover its LSN (the WAL is fsynced up to a snapshot's LSN before the
   snapshot is written, so no crash can tear a frame it covers). For the
   same reason a WAL whose valid records end below the loaded snapshot's
   LSN is damaged, not torn. The tail is cut off at the
   last good record, the cut is fsynced, and it is reported: a crash
   mid-write, not corruption.
5. Anything else bad raises :class:`~inmem.errors.CorruptionError` naming the
   file and byte offset, and nothing is opened or changed — unless
   ``salvage=True``, which keeps the longest valid prefix: the damaged segment
   is copied to ``<name>.corrupt-<ms>`` (the copy and its name made durable
   first) and only then cut at the bad frame; later segments, and foreign
   segments the snapshot covers, are renamed to ``<name>.corrupt-<ms>`` (kept
   for forensics, never read again), and the report says what was dropped.
6. Only once every check has passed is anything changed on disk (but a new
   database's IDENTITY, rule 1): inmem's own
   leftover temporaries (``IDENTITY.tmp``, ``wal-*.log.tmp``,
   ``snapshot-*.snap.tmp``, ``hist-*.idx.tmp``: interrupted creates, nothing
   acknowledged) are removed, the torn tail is cut, salvage sets files aside,
   and (writable opens only) each damaged snapshot skipped for an older one is
   set aside as ``<name>.corrupt-<ms>``. Other files in the directory are never touched.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import CorruptionError, NotADatabase
from .fs import LOCK_FILE, FileSystem
from .history.collect import RetainedSegment
from .history.sidecar import parse_index_name
from .identity import IDENTITY_FILE, Identity, create_identity, read_identity
from .snapshot import Progress, SnapshotError, parse_snapshot_name, read_snapshot, set_aside_snapshot
from .store import SortedMap
from .wal.format import (
    SEGMENT_HEADER_SIZE,
    FrameError,
    check_segment_identity,
    decode_segment_header,
    find_valid_frame,
    parse_segment_name,
    segment_name,
)
from .wal.reader import SegmentScan
from .wal.writer import ActiveSegment, WalTail

__all__ = ["Recovered", "ReplayVisitor", "check_new_directory", "is_own_temporary", "no_cyclic_gc", "recover"]

log = logging.getLogger("inmem")

#: LSN above any real one: "pass no record on" (no visitor).
_NEVER = 1 << 64


class ReplayVisitor(Protocol):
    """Consumes the WAL replay, one segment at a time (the history index's
    :class:`~inmem.history.collect.HistoryCollector`). Recovery decides nothing on its answers."""

    def wants(self, seq: int, first_lsn: int) -> int:
        """Segment ``seq`` is about to be replayed: the first LSN whose records to pass on."""

    #: How to group the records passed on: by ``key[at:at + width]`` for ``(at, width)`` (the history
    #: index: the run id, bytes 1..16).
    key_head: tuple[int, int]

    def replayed(self, seq: int, first_lsn: int, end: int, starts: Sequence[int], decoded_from: int,
                 groups: dict[bytes, array]) -> None:
        """Segment ``seq`` was replayed: its valid frames' offsets, where they end, the first LSN passed
        on (the largest of its first LSN, the snapshot's and :meth:`wants`), and from it on the records
        grouped by key head: each head (per :attr:`key_head`) -> the LSNs of the records that wrote a
        key with it, ascending (``array('Q')``; no object per record is built, so a segment's worth
        costs no collection time)."""


@dataclass
class Recovered:
    """What recovery hands to the database: the state, where the WAL continues, what it kept."""

    identity: Identity
    state: SortedMap  # sorted and complete (UnifiedStore adopts it without a copy)
    version: int  # last commit version recovered (0 for an empty database)
    tail: WalTail  # where the writer resumes (WalWriter.resume / ReadOnlyWal.from_tail)
    report: dict[str, Any] = field(default_factory=dict)
    #: Every segment kept, oldest first: covered ones (header only) then replayed ones (valid prefix).
    retained: list[RetainedSegment] = field(default_factory=list)


@dataclass
class _Damage:
    """Where the valid prefix ends because of corruption (salvage mode only)."""

    index: int  # index in the segment list of the damaged segment
    cut: int | None  # keep bytes [0, cut) of it; None drops the whole file
    message: str
    path: str
    offset: int | None


@dataclass
class _Listing:
    """Step 1's result: what the directory holds, and its identity."""

    ident: Identity
    created: bool
    removed_tmp: list[str]  # inmem's own temporaries, removed once every check has passed
    segments: list[tuple[int, str]]  # (seq, name), ascending
    snapshots: list[tuple[int, str]]  # (version, name), newest first


@dataclass
class _Base:
    """Step 2's result: the snapshot recovery starts from (or none)."""

    state: SortedMap  # filled through its dict part; its keys are indexed once replay is done
    version: int
    start_lsn: int  # the first LSN the snapshot does not cover (1 without one)
    report: dict[str, Any] | None
    skipped: list[dict[str, Any]]  # damaged snapshots passed over, set aside at the end


@dataclass
class _Plan:
    """Step 3's result: which segments are covered (headers only) and which are replayed."""

    covered: list[tuple[int, str]]
    covered_firsts: list[int | None]  # each covered segment's first LSN (None: header unreadable)
    replay: list[tuple[int, str]]
    foreign: list[tuple[int, str, str, int]]  # (seq, name, reason, offset), set aside by salvage


@dataclass
class _Replayed:
    """Step 4's result: the state after the WAL, and where its valid prefix ends."""

    version: int
    next_lsn: int | None  # None: no frame replayed after the snapshot
    records: int = 0
    bytes_read: int = 0
    kept: list[tuple[int, str, int, int]] = field(default_factory=list)  # (seq, path, size, first_lsn)
    torn: dict[str, Any] | None = None
    damage: _Damage | None = None


def is_own_temporary(name: str) -> bool:
    """Whether ``name`` is one of inmem's temporaries: ``IDENTITY.tmp``, ``wal-*.log.tmp``,
    ``snapshot-*.snap.tmp`` or ``hist-*.idx.tmp`` (the exact patterns, sequence or version in hex)."""
    if not name.endswith(".tmp"):
        return False
    base = name[:-4]
    return (base == IDENTITY_FILE or parse_segment_name(base) is not None
            or parse_snapshot_name(base) is not None or parse_index_name(base) is not None)


def _is_database(names: list[str]) -> bool:
    """Whether a listing holds an inmem database (possibly damaged): IDENTITY, a segment or a snapshot."""
    return IDENTITY_FILE in names or any(
        parse_segment_name(n) is not None or parse_snapshot_name(n) is not None for n in names)


def check_new_directory(dirpath: str, names: list[str], *, read_only: bool = False) -> None:
    """Refuse to make ``dirpath`` (listing ``names``) a database if it holds files that are not inmem's.

    A directory holding IDENTITY, a WAL segment or a snapshot is a database
    (recovery checks the rest): nothing to refuse. Otherwise it may become one
    only if it holds nothing but ``LOCK`` and inmem's own temporaries (an
    earlier creation interrupted), and only for a writable open.

    :raises NotADatabase: it is not a database, and it holds other files, or ``read_only``.
    """
    if _is_database(names):
        return
    if read_only:
        raise NotADatabase(f"{dirpath} is not an inmem database (it has no IDENTITY file)")
    foreign = [n for n in names if n != LOCK_FILE and not is_own_temporary(n)]
    if foreign:
        shown = ", ".join(repr(n) for n in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise NotADatabase(
            f"{dirpath} is not an inmem database: it has no IDENTITY, WAL segment or snapshot, but holds other "
            f"files ({shown}); open an empty or new directory instead (nothing was changed)")


def recover(
    fs: FileSystem, dirpath: str, *, salvage: bool = False, progress: Progress | None = None,
    read_only: bool = False, visitor: ReplayVisitor | None = None,
) -> Recovered:
    """Load the newest valid snapshot of ``dirpath``, replay the WAL after it, and return the state.

    The steps, each a function below: list the directory and read (or
    create) IDENTITY; choose the snapshot; check the segments (identity,
    sequence, which the snapshot covers); replay the frames after it; then,
    every check passed, change the directory (temporaries, torn tail,
    salvage, damaged snapshots); report where the WAL continues.

    Complexity: O(snapshot bytes + WAL bytes after the snapshot) time (older
    segments are skipped after reading their 48-byte headers); O(live keys)
    memory beyond two segment buffers (the one replayed and the next, read
    ahead) and, if a ``visitor`` wants them, 8 bytes per record and run it touched.

    :param progress: called as ``progress(phase, done, total)`` with phase
        ``"recovery-snapshot"`` or ``"recovery-wal"`` and byte counts.
    :param read_only: change nothing on disk: leftover temporaries stay, a
        torn tail is reported (``torn_tail["cut"]`` is False) but not cut, and
        a directory without IDENTITY is refused instead of initialised.
    :param visitor: handed the keys of each replayed segment's records it wants,
        e.g. the history index's :class:`~inmem.history.collect.HistoryCollector`.

    Nothing on disk changes before every check has passed (then: leftover
    temporaries removed, a torn tail cut, salvage), so a failed recovery
    leaves the directory as it found it.

    :raises NotADatabase: the directory holds no database and files that are
        not inmem's, or holds no database and ``read_only``.
    :raises CorruptionError: a segment is missing, foreign or out of sequence
        (covered segments are identity-checked too), IDENTITY is missing or
        damaged, a frame before the tail is bad (with ``salvage=True`` only for
        IDENTITY problems), or there is no valid snapshot and the WAL does not
        start at its beginning (names the files).
    """
    t0 = time.perf_counter()
    listing = _list_directory(fs, dirpath, read_only)
    with no_cyclic_gc():
        base = _choose_snapshot(fs, dirpath, listing, progress)
        plan = _plan_segments(fs, dirpath, listing, base, salvage)
        replayed = _replay(fs, dirpath, listing.ident.db_id, plan.replay, base, salvage, read_only, progress,
                           visitor)
        base.state.defer_index()  # filled through its dict part: sorted at the first ordered read (inmem.sortedmap.SortedMap)
    # every check has passed: from here on, the directory may change
    salvaged = _change_directory(fs, dirpath, listing, base, plan, replayed, read_only)
    tail = _wal_tail(fs, dirpath, listing, base, plan, replayed)
    report = {
        "created": listing.created,
        "snapshot": base.report,
        "snapshots_skipped": base.skipped,
        "segments": len(replayed.kept),
        "segments_skipped": len(plan.covered),
        "records": replayed.records,
        "bytes": replayed.bytes_read,
        "commit_version": replayed.version,
        "seconds": round(time.perf_counter() - t0, 6),
        "torn_tail": replayed.torn,
        "salvaged": salvaged,
        "removed_temporaries": listing.removed_tmp,
    }
    retained = [RetainedSegment(seq, first, fs.file_size(os.path.join(dirpath, name)))
                for (seq, name), first in zip(plan.covered, plan.covered_firsts)]
    retained += [RetainedSegment(seq, first_lsn, size) for seq, _path, size, first_lsn in replayed.kept]
    return Recovered(identity=listing.ident, state=base.state, version=replayed.version, tail=tail, report=report,
                     retained=retained)


class no_cyclic_gc:  # noqa: N801 - used as a context manager
    """Pause the cyclic garbage collector while the state is built; restore it after.

    Used around :func:`recover` and, by the open path, around everything built
    from its state (the sorted store, the run table, the history index).

    Loading a snapshot and replaying the WAL allocate millions of objects that
    live on (keys, values, entries) and form no cycle; each automatic
    collection would walk the growing state again (~0.1 s per million records).
    Reference counting frees everything as usual; the collector is re-enabled
    on exit, however the block ends, only if it was enabled on entry.

    :param promote: on a normal exit, move every object the collector tracks
        into its oldest generation (``gc.freeze()`` then ``gc.unfreeze()``)
        instead of leaving the new state in the youngest: otherwise the first
        young collections after the open walk the whole new map and its sorted
        list again (~0.08 s per million keys each) only to find it alive. The
        one effect on other objects: cyclic garbage that already exists waits
        for the next full collection. Skipped if the program froze objects
        itself (``gc.get_freeze_count()``), whose freeze this would undo.
    """

    def __init__(self, *, promote: bool = False):
        self.promote = promote

    def __enter__(self) -> None:
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.promote and exc_type is None and gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()  # back into the oldest generation
        if self.was_enabled:
            gc.enable()


def _list_directory(fs: FileSystem, dirpath: str, read_only: bool) -> _Listing:
    """Step 1: list the directory; read IDENTITY, or create it for a new database (rule 1).

    :raises CorruptionError: IDENTITY is missing beside segments or snapshots, or damaged.
    :raises NotADatabase: as :func:`check_new_directory`.
    """
    names = fs.listdir(dirpath)
    removed_tmp = [] if read_only else [n for n in names if is_own_temporary(n)]
    segments = sorted((seq, n) for n in names if (seq := parse_segment_name(n)) is not None)
    snapshots = sorted(((v, n) for n in names if (v := parse_snapshot_name(n)) is not None), reverse=True)
    created = False
    if IDENTITY_FILE in names:
        ident = read_identity(fs, dirpath)
    elif segments or snapshots:
        raise CorruptionError(
            "IDENTITY is missing but WAL segments or snapshots exist: the directory is damaged "
            "(restore IDENTITY from a backup)",
            path=os.path.join(dirpath, IDENTITY_FILE),
        )
    else:
        check_new_directory(dirpath, names, read_only=read_only)
        ident = create_identity(fs, dirpath)  # replaces a leftover IDENTITY.tmp itself
        created = True
        removed_tmp = [n for n in removed_tmp if n != IDENTITY_FILE + ".tmp"]
    return _Listing(ident, created, removed_tmp, segments, snapshots)


def _choose_snapshot(fs: FileSystem, dirpath: str, listing: _Listing, progress: Progress | None) -> _Base:
    """Step 2: load the newest snapshot whose every checksum passes; note the damaged ones passed over."""
    skipped: list[dict[str, Any]] = []
    for _v, name in listing.snapshots:
        t1 = time.perf_counter()
        into = SortedMap()
        cold = into.open_cold()  # the snapshot's entries to the C table too (None on the pure path)
        try:
            header, state = read_snapshot(fs, os.path.join(dirpath, name), listing.ident.db_id, progress,
                                          into=into, cold=cold)
        except SnapshotError as exc:
            skipped.append({"file": name, "reason": exc.reason, "offset": exc.offset})
            log.warning("inmem: snapshot %s is damaged (%s at offset %s); trying an older one", name, exc.reason,
                        exc.offset)
            continue
        version, start_lsn = header.commit_version, header.next_lsn
        report = {"file": name, "commit_version": version, "keys": header.keys, "next_lsn": start_lsn,
                  "seconds": round(time.perf_counter() - t1, 6)}
        return _Base(state, version, start_lsn, report, skipped)
    return _Base(SortedMap(), 0, 1, None, skipped)


def _plan_segments(fs: FileSystem, dirpath: str, listing: _Listing, base: _Base, salvage: bool) -> _Plan:
    """Step 3: which segments to replay. Those the snapshot wholly covers are skipped after reading
    their headers, each identity-checked (a foreign segment behind the snapshot would feed the history
    index); without a snapshot the WAL must start at segment 1 (rule 2).

    :raises CorruptionError: a covered segment is foreign (unless ``salvage``: set aside later), or
        there is no valid snapshot and the first segment is not 1.
    """
    segments = listing.segments
    first = 0
    foreign: list[tuple[int, str, str, int]] = []
    firsts: list[int | None] = []
    if base.report is not None:
        ours: list[tuple[int, str]] = []
        for seq, name in segments:
            path = os.path.join(dirpath, name)
            try:
                head = decode_segment_header(fs.read_range(path, 0, SEGMENT_HEADER_SIZE))
            except FrameError:
                head = None
            if head is not None:
                try:
                    check_segment_identity(head, listing.ident.db_id, seq)
                except FrameError as exc:
                    if not salvage:
                        raise CorruptionError(exc.reason, path=path, offset=exc.offset) from None
                    foreign.append((seq, name, exc.reason, exc.offset))
                    continue
            ours.append((seq, name))
            firsts.append(head.first_lsn if head is not None else None)
        segments = ours
        while first + 1 < len(segments) and firsts[first + 1] is not None and firsts[first + 1] <= base.start_lsn:
            first += 1
    elif segments and segments[0][0] != 1:
        snapshots = listing.snapshots
        files = ", ".join([n for _, n in snapshots] + [segments[0][1]])
        raise CorruptionError(
            f"no valid snapshot, and the WAL starts at {segments[0][1]}, not at its first segment: "
            f"the log's beginning is gone (files: {files})",
            path=os.path.join(dirpath, snapshots[0][1] if snapshots else segments[0][1]),
        )
    return _Plan(segments[:first], firsts[:first], segments[first:], foreign)


class _ReadAhead:
    """``fs.read(path)`` on a helper thread, started at once; :meth:`result` waits for it.

    A segment read is one ``read(2)`` of up to a segment's bytes, which releases
    the GIL: recovery reads the next segment while it replays this one. If the
    result is never taken (recovery stopped at a damaged segment), the thread
    finishes its read and the bytes are dropped.
    """

    def __init__(self, fs: FileSystem, path: str):
        self.path = path
        self._data: bytes | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, args=(fs,), name="inmem-recovery-read", daemon=True)
        self._thread.start()

    def _read(self, fs: FileSystem) -> None:
        try:
            self._data = fs.read(self.path)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
            self._error = exc

    def result(self) -> bytes:
        """The file's bytes. :raises OSError: (or whatever ``fs.read`` raised) as the read raised it."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._data is not None
        return self._data


def _replay(fs: FileSystem, dirpath: str, db_id: bytes, replay: list[tuple[int, str]], base: _Base,
            salvage: bool, read_only: bool, progress: Progress | None, visitor: ReplayVisitor | None) -> _Replayed:
    """Step 4: replay the frames after the snapshot into ``base.state`` (rules 2-5), segment by segment.

    Each segment must be the next in sequence, this database's, and start at
    the LSN following the previous one's last (a gap only where the snapshot
    covers it). A bad frame ends the valid prefix: a torn tail if it is in
    the last segment and no valid frame follows it; otherwise corruption
    (raised, or with ``salvage`` recorded in ``damage`` and replay stops).
    ``visitor`` is handed, per segment, the records it wants, grouped by key head.

    While a segment is replayed, the next one is read on a helper thread
    (:class:`_ReadAhead`: the read releases the GIL, so on a second core the
    file copy overlaps the replay); its bytes, or the error reading them,
    are taken when its turn comes, so errors surface where they did.

    :raises CorruptionError: as :func:`recover` (not with ``salvage``).
    """
    state = base.state
    cold = state.open_cold() if replay else None  # the WAL's records go to a C table (inmem.sortedmap, SPEC §7)
    start_lsn = base.start_lsn
    out = _Replayed(base.version, start_lsn if base.report is None else None)  # None: any first LSN <= start_lsn
    total_bytes = sum(fs.file_size(os.path.join(dirpath, n)) for _, n in replay)
    version = base.version
    first_seq = replay[0][0] if replay else 1
    ahead: _ReadAhead | None = None
    for index, (seq, name) in enumerate(replay):
        path = os.path.join(dirpath, name)
        expected_seq = first_seq + index
        if seq != expected_seq:
            missing = os.path.join(dirpath, segment_name(expected_seq))
            _damaged(out, salvage, f"WAL segment {segment_name(expected_seq)} is missing (next is {name})", missing,
                     None, index, None)
            break
        buf = ahead.result() if ahead is not None else fs.read(path)  # ahead: this path, started last turn
        ahead = _ReadAhead(fs, os.path.join(dirpath, replay[index + 1][1])) if index + 1 < len(replay) else None
        out.bytes_read += len(buf)
        try:
            header = decode_segment_header(buf)
        except FrameError as exc:
            _damaged(out, salvage, f"WAL segment header is bad: {exc.reason}", path, exc.offset, index, None)
            break
        try:
            check_segment_identity(header, db_id, seq)
        except FrameError as exc:
            _damaged(out, salvage, exc.reason, path, exc.offset, index, None)
            break
        # LSNs continue from the previous segment; a gap is allowed only where the snapshot covers it
        floor = out.next_lsn if out.next_lsn is not None else 1
        if not (header.first_lsn == floor or floor <= header.first_lsn <= start_lsn):
            _damaged(out, salvage,
                     f"WAL segment starts at LSN {header.first_lsn}, expected {floor} (stale or missing segment)",
                     path, 36, index, None)
            break

        scan = SegmentScan(buf, header, version, skip_below=start_lsn)
        want = visitor.wants(seq, header.first_lsn) if visitor is not None else _NEVER
        groups = scan.replay(state, want, visitor.key_head if visitor is not None else (0, 0), cold)
        if visitor is not None:
            visitor.replayed(seq, header.first_lsn, scan.end, scan.starts[:scan.skipped + scan.count],
                             max(header.first_lsn, start_lsn, want), groups)
        del groups
        out.records += scan.count
        out.next_lsn = scan.next_lsn
        version = out.version = scan.last_version
        if progress is not None:
            progress("recovery-wal", out.bytes_read, total_bytes)
        err = scan.error
        if err is not None:
            last = index == len(replay) - 1
            # frames the snapshot covers were fsynced before it was written: a crash cannot tear them
            covered = out.next_lsn < start_lsn
            if last and not covered and find_valid_frame(buf, err.offset + 1, out.next_lsn) == -1:
                out.torn = {
                    "file": name,
                    "offset": err.offset,
                    "bytes_dropped": len(buf) - err.offset,
                    "reason": err.reason,
                    "cut": not read_only,
                }
                out.kept.append((seq, path, err.offset, header.first_lsn))
            else:
                where = ("" if last else " (not in the last segment)") + (
                    f" (LSN {out.next_lsn}, which the snapshot covers: fsynced before the snapshot was written, "
                    "so not a torn tail)" if covered else "")
                _damaged(out, salvage, f"bad WAL frame{where}: {err.reason}", path, err.offset, index, err.offset)
                if out.damage is not None:
                    out.kept.append((seq, path, err.offset, header.first_lsn))
                break
        else:
            out.kept.append((seq, path, len(buf), header.first_lsn))
    if (not salvage and base.report is not None and out.damage is None and out.kept
            and out.next_lsn is not None and out.next_lsn < start_lsn):
        # the WAL is fsynced up to a snapshot's LSN before the snapshot is written: records it covers
        # cannot be missing from the last segment after a crash (found by corruptsim, seed 52: a cut at a
        # frame boundary below the snapshot left history replays that silently missed commits)
        seq, path, size, _first = out.kept[-1]
        raise CorruptionError(
            f"the WAL ends at LSN {out.next_lsn - 1} but the snapshot {base.report['file']} covers up to LSN "
            f"{start_lsn - 1}: records fsynced before the snapshot was written are missing", path=path, offset=size)
    return out


def _damaged(out: _Replayed, salvage: bool, message: str, path: str, offset: int | None, index: int,
             cut: int | None) -> None:
    """Corruption in the replayed WAL: raise, or with ``salvage`` record where the valid prefix ends.

    :raises CorruptionError: not ``salvage``.
    """
    if not salvage:
        raise CorruptionError(message, path=path, offset=offset)
    out.damage = _Damage(index, cut, message, path, offset)


def _change_directory(fs: FileSystem, dirpath: str, listing: _Listing, base: _Base, plan: _Plan,
                      replayed: _Replayed, read_only: bool) -> dict[str, Any] | None:
    """Step 5, once every check has passed (rule 6): remove inmem's leftover temporaries, cut a torn
    tail (fsynced), salvage (set aside what follows the valid prefix, and foreign covered segments),
    and set aside the damaged snapshots passed over (writable opens only). Return salvage's report."""
    removed_tmp = listing.removed_tmp
    for n in removed_tmp:
        fs.remove(os.path.join(dirpath, n))
    if removed_tmp:
        fs.sync_dir(dirpath)

    torn = replayed.torn
    if torn is not None and read_only:
        log.warning("inmem: %s ends in a torn tail of %d bytes at offset %d (%s); left in place (read-only)",
                    torn["file"], torn["bytes_dropped"], torn["offset"], torn["reason"])
    elif torn is not None:
        _cut(fs, os.path.join(dirpath, torn["file"]), torn["offset"])
        log.warning(
            "inmem: recovery cut a torn tail of %d bytes from %s at offset %d (%s): "
            "a crash during a write, not corruption",
            torn["bytes_dropped"], torn["file"], torn["offset"], torn["reason"],
        )

    salvaged = None
    if replayed.damage is not None or plan.foreign:
        salvaged = _salvage(fs, dirpath, plan.replay, replayed.damage, plan.foreign)
        log.warning(
            "inmem: salvage kept the valid prefix (commit version %d) and set aside %s: %s",
            replayed.version, ", ".join(salvaged["set_aside"]), salvaged["reason"],
        )
    for skipped in base.skipped:  # recovery succeeded without them: set aside, never read or counted again
        skipped["set_aside"] = None if read_only else set_aside_snapshot(fs, dirpath, skipped["file"])
    return salvaged


def _wal_tail(fs: FileSystem, dirpath: str, listing: _Listing, base: _Base, plan: _Plan,
              replayed: _Replayed) -> WalTail:
    """Step 6: where the writer continues — the last kept segment, unless the WAL ends before the
    snapshot (then a new segment starts at the snapshot's LSN) — and the size of what precedes it."""
    start_lsn = base.start_lsn
    kept, replay, segments = replayed.kept, plan.replay, listing.segments
    wal_next = replayed.next_lsn if replayed.next_lsn is not None else start_lsn
    active = None
    next_seq = (kept[-1][0] + 1) if kept else (replay[0][0] if replay else (segments[-1][0] + 1 if segments else 1))
    if kept and wal_next >= start_lsn:
        seq, path, size, first_lsn = kept[-1]
        active = ActiveSegment(seq, path, size, first_lsn)
    on_disk = [(n, fs.file_size(os.path.join(dirpath, n))) for _, n in plan.covered] + [
        (os.path.basename(k[1]), k[2]) for k in kept
    ]
    closed = on_disk[:-1] if active is not None else on_disk
    return WalTail(next_lsn=max(wal_next, start_lsn), active=active, next_seq=next_seq,
                   closed_bytes=sum(size for _, size in closed), closed_segments=len(closed))


def _cut(fs: FileSystem, path: str, offset: int) -> None:
    """Truncate ``path`` to ``offset`` bytes and fsync, before anything new is written."""
    f = fs.open_append(path)
    try:
        f.truncate(offset)
        f.sync()
    finally:
        f.close()


def _salvage(fs: FileSystem, dirpath: str, segments: list[tuple[int, str]], damage: _Damage | None,
             foreign: list[tuple[int, str, str, int]]) -> dict[str, Any]:
    """Set aside everything after the valid prefix, and foreign segments; return what was dropped.

    Order (SPEC.md §1): the forensic copy of a segment to be cut is written,
    fsynced, and its name made durable (directory fsync) before the original
    is cut; then later segments are renamed aside and the directory fsynced
    again. A crash at any point leaves every byte either in the original or
    in a durable copy.
    """
    stamp = time.time_ns() // 1_000_000
    copy: tuple[str, str, int] | None = None  # (original path, copy path, cut)
    renames: list[tuple[str, str]] = []
    set_aside: list[str] = []
    dropped = 0
    if damage is not None:
        for index in range(damage.index, len(segments)):
            name = segments[index][1]
            path = os.path.join(dirpath, name)
            aside = f"{name}.corrupt-{stamp}"
            size = fs.file_size(path)
            if index == damage.index and damage.cut is not None and damage.cut >= SEGMENT_HEADER_SIZE:
                copy = (path, os.path.join(dirpath, aside), damage.cut)  # keep a full copy, cut the original
                dropped += size - damage.cut
            else:
                renames.append((path, os.path.join(dirpath, aside)))
                dropped += size
            set_aside.append(aside)
    for _seq, name, _reason, _offset in foreign:
        path = os.path.join(dirpath, name)
        aside = f"{name}.corrupt-{stamp}"
        dropped += fs.file_size(path)
        renames.append((path, os.path.join(dirpath, aside)))
        set_aside.append(aside)
    if copy is not None:
        # 1. the forensic copy, durable in content and name, before the original changes
        original, aside_path, cut = copy
        f = fs.create(aside_path)
        try:
            f.write(fs.read(original))
            f.sync()
        finally:
            f.close()
        fs.sync_dir(dirpath)
        # 2. then cut the original at the bad frame (fsynced)
        _cut(fs, original, cut)
    for src, dst in renames:
        fs.rename(src, dst)
    fs.sync_dir(dirpath)
    if damage is not None:
        reason, file, offset = damage.message, os.path.basename(damage.path), damage.offset
    else:
        _seq, file, reason, offset = foreign[0]
    return {
        "reason": reason,
        "file": file,
        "offset": offset,
        "bytes_dropped": dropped,
        "set_aside": set_aside,
    }
