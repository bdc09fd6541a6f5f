"""The WAL of a read-only handle: appends nothing, reports the log as recovery found it.

This module owns what ``Database.open(path, read_only=True)`` puts where a
:class:`~inmem.wal.writer.WalWriter` would be. Invariant: it never opens a
file for writing; every append raises :class:`~inmem.errors.DatabaseReadOnly`
before anything is applied, so a write through a read-only handle changes
neither the store nor the disk.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import DatabaseReadOnly
from .writer import WalTail

__all__ = ["ReadOnlyWal"]


class ReadOnlyWal:
    """Stands in for a :class:`~inmem.wal.writer.WalWriter` on a read-only handle.

    :param next_lsn: the LSN a next frame would carry (recovery's).
    :param tail_seq: sequence number of the last segment.
    :param wal_bytes: / :param wal_segments: the WAL's size as recovery found it, for ``stats()``.
    """

    poisoned = False
    appended_bytes = 0

    def __init__(self, *, next_lsn: int, tail_seq: int, wal_bytes: int, wal_segments: int):
        self.next_lsn = next_lsn
        self.durable_lsn = next_lsn - 1
        self.tail_seq = tail_seq
        self.last_offset = 0
        self._stats = {"bytes": wal_bytes, "segments": wal_segments, "next_lsn": next_lsn,
                       "durable_lsn": next_lsn - 1}

    @classmethod
    def from_tail(cls, tail: WalTail) -> ReadOnlyWal:
        """The read-only WAL of a log recovery found ending at ``tail``."""
        active = tail.active
        return cls(next_lsn=tail.next_lsn, tail_seq=active.seq if active is not None else tail.next_seq,
                   wal_bytes=tail.closed_bytes + (active.size if active is not None else 0),
                   wal_segments=tail.closed_segments + (1 if active is not None else 0))

    @staticmethod
    def read_only_error() -> DatabaseReadOnly:
        return DatabaseReadOnly("the database was opened with read_only=True; nothing was written")

    def append(self, frame: bytes) -> int:
        """:raises DatabaseReadOnly: always."""
        raise self.read_only_error()

    def wait(self, lsn: int) -> None:
        pass

    def poison(self, exc: BaseException, *, quiet: bool = False) -> None:
        pass  # nothing is ever written through a read-only handle, so nothing can need poisoning

    def write_through(self, lsn: int) -> None:
        pass  # every frame there is is already in the files

    def sync(self) -> None:
        pass

    def set_watermark(self, appended_bytes: int, callback: Callable[[], None]) -> None:
        pass  # no automatic snapshots

    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    def close(self) -> None:
        pass
