"""Opening a database directory: lock it, recover it, hand back the pieces the kernel is built from.

This module owns the steps of ``Database.open`` below the kernel: creating
the directory (each new name fsynced into its parent), refusing a foreign
one, taking the directory lock (exclusive for a writer, shared for a
read-only handle, none for a follower), and recovery — the sorted map, the
run table, the history index's recovered tail and the WAL to append to.
Invariant: a failure leaves nothing half-open: the caller releases the lock
it was given, and no writer exists until recovery has finished.
"""

from __future__ import annotations

import os

from .errors import InvalidArgument
from .fs import FileLock, FileSystem, open_error
from .history import HistoryIndex
from .recovery import Recovered, check_new_directory, no_cyclic_gc, recover
from .registry import RunRegistry
from .snapshot import Progress
from .store import UnifiedStore
from .wal.readonly import ReadOnlyWal
from .wal.writer import WalWriter

__all__ = ["NoLock", "lock_directory", "recover_directory"]


class NoLock:
    """The lock of a follower (``read_only=True, follow=True``): none, so a writer may hold its own."""

    def release(self) -> None:
        pass


def lock_directory(fs: FileSystem, dirpath: str, read_only: bool) -> FileLock:
    """Create the directory if needed (fsynced into its parent), refuse a foreign one, and lock it.

    :raises NotADatabase: / :raises DatabaseLocked: / :raises DatabaseReadOnly: / :raises InvalidArgument:
        as ``Database.open`` says.
    """
    try:
        if read_only:
            if not fs.exists(dirpath):
                raise InvalidArgument(f"{dirpath} does not exist; read_only=True opens an existing database")
        else:
            created = fs.makedirs(dirpath) or []
            for d in created:  # the new names durable: a power cut must not drop the directory
                fs.sync_dir(os.path.dirname(d) or ".")
            if not created:  # refuse a foreign directory before LOCK is created in it
                check_new_directory(dirpath, fs.listdir(dirpath))
        return fs.lock(dirpath, shared=read_only)
    except OSError as exc:
        if (err := open_error(exc, dirpath, read_only)) is None:
            raise
        raise err from exc


def recover_directory(
    fs: FileSystem, dirpath: str, index: HistoryIndex, *, salvage: bool, progress: Progress | None,
    read_only: bool, durability: str, flush_interval_ms: int, segment_bytes: int,
) -> tuple[Recovered, UnifiedStore, RunRegistry, WalWriter | ReadOnlyWal]:
    """Recover the locked directory: the state in a store, the run table, the history index, the WAL to append to.

    :raises CorruptionError: / :raises DatabaseReadOnly: as ``Database.open`` says.
    """
    try:
        # millions of long-lived objects, no cycle among them: a collection walking them is pure
        # cost, now or (left in the young generation) at the first collections after the open
        with no_cyclic_gc(promote=True):
            rec = recover(fs, dirpath, salvage=salvage, progress=progress, read_only=read_only,
                          visitor=index.collector)
            store = UnifiedStore(rec.state)
            del rec.state
            registry = RunRegistry()
            registry.load(store)
            index.load_recovered(rec.identity.db_id, rec.retained, rec.tail.next_lsn)
        index.archived = registry.archived
        wal = ReadOnlyWal.from_tail(rec.tail) if read_only else WalWriter.resume(
            fs, dirpath, rec.identity.db_id, rec.tail, durability=durability,
            flush_interval_ms=flush_interval_ms, segment_bytes=segment_bytes)
    except OSError as exc:
        if (err := open_error(exc, dirpath, read_only)) is not None:
            raise err from exc
        raise
    return rec, store, registry, wal
