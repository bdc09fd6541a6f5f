"""The file-system seam (VFS): every byte inmem reads or writes in a database directory.

This module owns the interface between the engine and the disk, after SQLite's
VFS and LevelDB's ``Env``: create, append, read, fsync, directory fsync,
rename, remove, list, truncate and lock. :class:`OSFileSystem` is the default;
tests (and a later fault-injecting implementation) stand in for the disk by
passing another :class:`FileSystem` to ``Database.open(..., fs=...)``.

Invariants:

* Writes are unbuffered (``os.write`` on a raw descriptor, looped until every
  byte is written). There is no user-space buffer that could write bytes of a
  failed write again later, e.g. when a buffered file is closed after ENOSPC.
* :meth:`WritableFile.sync` is ``fsync(2)``; :meth:`FileSystem.sync_dir` is
  ``fsync(2)`` on the directory, needed after a create, rename or remove for
  the change of name to be durable.
* Nothing here retries or swallows an ``OSError``: the caller decides (the WAL
  poisons the database).
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import Protocol

from .errors import DatabaseLocked

__all__ = ["FileLock", "FileSystem", "OSFileSystem", "ReadableFile", "WritableFile"]


class ReadableFile(Protocol):
    """A file open for positioned reads (the history index reads many frames of one segment)."""

    def read_at(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer at the end of the file)."""

    def close(self) -> None: ...


class WritableFile(Protocol):
    """An open file written only at its end."""

    path: str

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append every byte of ``data``; raise ``OSError`` if any could not be written."""

    def sync(self) -> None:
        """fsync: make everything written so far durable."""

    def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes; later writes append after it."""

    def size(self) -> int:
        """Current length in bytes."""

    def close(self) -> None:
        """Close without syncing (call :meth:`sync` first where durability matters)."""


class FileLock(Protocol):
    """An exclusive lock on a database directory, held until :meth:`release`."""

    def release(self) -> None: ...


class FileSystem(Protocol):
    """The operations the engine performs on a database directory."""

    def makedirs(self, path: str) -> None: ...
    def listdir(self, path: str) -> list[str]: ...
    def exists(self, path: str) -> bool: ...
    def file_size(self, path: str) -> int: ...
    def read(self, path: str) -> bytes: ...
    def read_range(self, path: str, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer at the end of the file)."""

    def open_read(self, path: str) -> ReadableFile:
        """Open an existing file for positioned reads. :raises FileNotFoundError: it does not exist."""

    def create(self, path: str) -> WritableFile:
        """Create a new, empty file; fail with ``FileExistsError`` if it exists."""

    def open_append(self, path: str) -> WritableFile:
        """Open an existing file for appending at its end."""

    def rename(self, src: str, dst: str) -> None: ...
    def remove(self, path: str) -> None: ...
    def sync_dir(self, path: str) -> None: ...
    def lock(self, path: str, *, shared: bool = False) -> FileLock:
        """Take an exclusive, non-blocking lock on ``path`` (created if missing, holder's pid written).

        ``shared=True`` (read-only handles): a shared lock on the existing file,
        writing nothing; it excludes writers and is excluded by them.

        :raises DatabaseLocked: another handle, in this or another process, holds it.
        """


class _OSFile:
    """A :class:`WritableFile` on a raw, unbuffered file descriptor."""

    __slots__ = ("_fd", "_size", "path")

    def __init__(self, path: str, fd: int):
        self.path = path
        self._fd = fd
        self._size = os.fstat(fd).st_size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            self._size += n
            view = view[n:]

    def sync(self) -> None:
        os.fsync(self._fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        os.lseek(self._fd, size, os.SEEK_SET)
        self._size = size

    def size(self) -> int:
        return self._size

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class _OSReader:
    __slots__ = ("_fd",)

    def __init__(self, fd: int):
        self._fd = fd

    def read_at(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class _OSLock:
    __slots__ = ("_fd",)

    def __init__(self, fd: int):
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class OSFileSystem:
    """The real disk, through ``os``: the default :class:`FileSystem`."""

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def file_size(self, path: str) -> int:
        return os.stat(path).st_size

    def read(self, path: str) -> bytes:
        with open(path, "rb", buffering=0) as f:
            return f.read()

    def open_read(self, path: str) -> ReadableFile:
        return _OSReader(os.open(path, os.O_RDONLY | os.O_CLOEXEC))

    def read_range(self, path: str, offset: int, size: int) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)

    def create(self, path: str) -> WritableFile:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        return _OSFile(path, fd)

    def open_append(self, path: str) -> WritableFile:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        return _OSFile(path, fd)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def lock(self, path: str, *, shared: bool = False) -> FileLock:
        # flock(2) locks belong to the open file description, so a second open
        # of the same directory conflicts even inside one process.
        if shared:
            # a read-only handle: LOCK_SH on the existing file, writing nothing. A directory
            # with no lock file has never been opened for writing: nothing to lock against.
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return _OSLock(-1)
            _flock(fd, path, shared=True)
            return _OSLock(fd)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        _flock(fd, path, shared=False)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return _OSLock(fd)


def _flock(fd: int, path: str, *, shared: bool) -> None:
    """``flock`` ``fd`` without blocking; on failure close it and raise.

    :raises DatabaseLocked: the lock is held incompatibly (naming the last writer's pid, if any).
    """
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as exc:
        holder = ""
        try:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        except OSError:
            pass
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        where = os.path.dirname(path) or "."
        if shared:
            who = f" by pid {holder}" if holder else ""
            raise DatabaseLocked(f"{where} is open for writing{who}; "
                                 "read-only access waits until that handle is closed") from None
        who = f" (last opened for writing by pid {holder})" if holder else ""
        raise DatabaseLocked(f"{where} is already open{who}; close that handle first "
                             "(one writer per directory, and none while read-only handles are open)") from None
