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
* Agent state is private by default: files are created with mode
  :attr:`OSFileSystem.file_mode` (``0o600``) and the database directory with
  :func:`dir_mode` of it (``0o700``), as PostgreSQL does with its data
  directory; the process umask still applies.
* A file that must appear whole or not at all (IDENTITY, a snapshot, a WAL
  segment's header, a history sidecar) is written by :func:`write_atomically`:
  ``<name>.tmp``, fsync, rename, directory fsync — always through the
  :class:`FileSystem` it is given, so a wrapper sees every fsync.
* A directory lock is a ``flock(2)`` on the directory itself (shared for
  read-only handles, exclusive for the writer), plus, for the writer, an
  exclusive ``flock`` on ``LOCK`` holding its pid (SPEC.md §8.3).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable
from typing import Protocol, TypeVar

from .errors import DatabaseLocked, DatabaseReadOnly, InvalidArgument

__all__ = ["DEFAULT_FILE_MODE", "LOCK_FILE", "FileLock", "FileSystem", "OSFileSystem", "ReadableFile",
           "WritableFile", "check_file_mode", "dir_mode", "open_error", "write_atomically"]

#: Permission bits of every file inmem creates, unless ``Database.open(file_mode=...)`` says otherwise.
DEFAULT_FILE_MODE = 0o600
#: The writer's lock file inside a database directory (holds its pid as text).
LOCK_FILE = "LOCK"


def check_file_mode(file_mode: object) -> None:
    """:raises InvalidArgument: not an int permission mask with owner read+write and no execute or special bit."""
    if type(file_mode) is not int or file_mode & ~0o666 or file_mode & 0o600 != 0o600:
        raise InvalidArgument("file_mode must be an int of permission bits including 0o600 (owner read and "
                              f"write) and no execute bit, e.g. 0o600 or 0o640; got {file_mode!r}")


#: errno values that mean "this directory cannot be written" on a writable open.
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def open_error(exc: OSError, dirpath: str, read_only: bool) -> DatabaseReadOnly | None:
    """The :class:`DatabaseReadOnly` a writable open raises for ``exc`` (EROFS, EACCES, EPERM), else ``None``."""
    if read_only or exc.errno not in _NOT_WRITABLE:
        return None
    what = "is on a read-only file system" if exc.errno == errno.EROFS else "cannot be written (permission denied)"
    where = f" ({exc.filename})" if exc.filename else ""
    return DatabaseReadOnly(f"{dirpath} {what}{where}: {exc.strerror or exc}; to read it, open it with "
                            "Database.open(path, read_only=True)")


def dir_mode(file_mode: int) -> int:
    """The directory mode matching ``file_mode``: each read bit adds its search bit (0o600 -> 0o700, 0o640 -> 0o750)."""
    return file_mode | ((file_mode & 0o444) >> 2)


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
    """A lock on a database directory (exclusive or shared), held until :meth:`release`."""

    def release(self) -> None: ...


class FileSystem(Protocol):
    """The operations the engine performs on a database directory."""

    def makedirs(self, path: str) -> list[str]:
        """Create directory ``path`` and any missing parents; return those created, outermost first.

        The caller fsyncs the parent of each (:meth:`sync_dir`) for the new
        names to be durable. ``path`` itself is created with :func:`dir_mode`
        of the file mode; parents with the default mode.
        """

    def listdir(self, path: str) -> list[str]: ...
    def exists(self, path: str) -> bool: ...
    def file_size(self, path: str) -> int: ...
    def read(self, path: str) -> bytes: ...
    def read_range(self, path: str, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer at the end of the file)."""

    def open_read(self, path: str) -> ReadableFile:
        """Open an existing file for positioned reads. :raises FileNotFoundError: it does not exist."""

    def create(self, path: str) -> WritableFile:
        """Create a new, empty file (mode ``file_mode``); fail with ``FileExistsError`` if it exists."""

    def open_append(self, path: str) -> WritableFile:
        """Open an existing file for appending at its end."""

    def rename(self, src: str, dst: str) -> None: ...
    def remove(self, path: str) -> None: ...
    def sync_dir(self, path: str) -> None: ...
    def lock(self, dirpath: str, *, shared: bool = False) -> FileLock:
        """Lock the database directory ``dirpath`` without blocking.

        Exclusive (a writer): ``flock`` on the directory itself and on
        ``dirpath/LOCK`` (created if missing, the holder's pid written).
        ``shared=True`` (read-only handles): a shared ``flock`` on the
        directory (and on ``LOCK`` if it exists), writing nothing. Shared locks
        coexist; an exclusive lock excludes and is excluded by every other
        lock, whether or not ``LOCK`` exists.

        :raises DatabaseLocked: another handle, in this or another process, holds it incompatibly.
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
    __slots__ = ("_fds",)

    def __init__(self, *fds: int):
        self._fds = [fd for fd in fds if fd >= 0]

    def release(self) -> None:
        fds, self._fds = self._fds, []
        for fd in reversed(fds):
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class OSFileSystem:
    """The real disk, through ``os``: the default :class:`FileSystem`.

    :param file_mode: permission bits of the files it creates (default
        ``0o600``); directories get :func:`dir_mode` of it. The umask applies.
    """

    #: Permission bits of created files (a class default, so subclasses need not call ``__init__``).
    file_mode = DEFAULT_FILE_MODE

    def __init__(self, file_mode: int = DEFAULT_FILE_MODE):
        self.file_mode = file_mode

    def makedirs(self, path: str) -> list[str]:
        missing: list[str] = []
        p = os.path.abspath(path)
        while not os.path.isdir(p):
            missing.append(p)
            parent = os.path.dirname(p)
            if parent == p:
                break
            p = parent
        created: list[str] = []
        for d in reversed(missing):  # outermost first
            try:
                os.mkdir(d, dir_mode(self.file_mode) if d == missing[0] else 0o777)
            except FileExistsError:
                if not os.path.isdir(d):
                    raise
                continue  # made meanwhile by someone else: not ours to fsync
            created.append(d)
        return created

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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
                     self.file_mode)
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

    def lock(self, dirpath: str, *, shared: bool = False) -> FileLock:
        # flock(2) locks belong to the open file description, so a second open of the same
        # directory conflicts even inside one process. The directory itself is always locked,
        # so a read-only handle needs no file of its own (LOCK may be missing: it writes
        # nothing); LOCK is locked too, for its pid and for older inmem versions, which lock
        # only LOCK.
        lock_path = os.path.join(dirpath, LOCK_FILE)
        dfd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        _flock(dfd, dirpath, lock_path, shared=shared)
        try:
            if shared:
                try:
                    lfd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    return _OSLock(dfd)
                _flock(lfd, dirpath, lock_path, shared=True)
                return _OSLock(dfd, lfd)
            lfd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self.file_mode)
            _flock(lfd, dirpath, lock_path, shared=False)
            try:
                os.ftruncate(lfd, 0)
                os.pwrite(lfd, f"{os.getpid()}\n".encode(), 0)
            except BaseException:
                os.close(lfd)
                raise
        except BaseException:
            os.close(dfd)
            raise
        return _OSLock(dfd, lfd)


def _holder(lock_path: str) -> str:
    """The pid in ``LOCK`` (the last writer), or "" if it cannot be read."""
    try:
        with open(lock_path, "rb", buffering=0) as f:
            return f.read(64).decode("ascii", "replace").strip()
    except OSError:
        return ""


def _flock(fd: int, dirpath: str, lock_path: str, *, shared: bool) -> None:
    """``flock`` ``fd`` without blocking; on failure close it and raise.

    :raises DatabaseLocked: the lock is held incompatibly (naming the last writer's pid, if any).
    """
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        holder = _holder(lock_path)
        where = dirpath or "."
        if shared:
            who = f" by pid {holder}" if holder else ""
            raise DatabaseLocked(f"{where} is open for writing{who}; "
                                 "read-only access waits until that handle is closed") from None
        who = f" (last opened for writing by pid {holder})" if holder else ""
        raise DatabaseLocked(f"{where} is already open{who}; close that handle first "
                             "(one writer per directory, and none while read-only handles are open)") from None


_T = TypeVar("_T")


def write_atomically(fs: FileSystem, dirpath: str, name: str, write: Callable[[WritableFile], _T], *,
                     durable: bool = True, remove_on_error: bool = False) -> _T:
    """Create ``dirpath/name`` whole or not at all; return what ``write`` returned.

    Steps, in this order: remove a leftover ``<name>.tmp``; create ``<name>.tmp``;
    ``write(file)`` (which may write in as many pieces as it likes, e.g. a
    snapshot streaming ~1 MiB at a time and reporting progress); fsync the
    file; close it; rename it to ``name``; fsync ``dirpath``. A crash at any
    point leaves either no ``name`` or the complete file (plus, at worst, a
    ``.tmp`` that recovery removes). Every operation goes through ``fs``.

    :param durable: ``False`` skips both fsyncs (a cache that is rebuilt when
        lost or torn, e.g. a history sidecar).
    :param remove_on_error: if ``write`` or the file fsync raises, close and
        remove the temporary (best effort) before the error propagates;
        otherwise it is closed and left for recovery.
    :raises OSError: a step failed (``name`` is not renamed into place if the
        write or the file fsync failed).
    """
    path = os.path.join(dirpath, name)
    tmp = path + ".tmp"
    if fs.exists(tmp):
        fs.remove(tmp)
    f = fs.create(tmp)
    try:
        result = write(f)
        if durable:
            f.sync()
    except BaseException:
        f.close()
        if remove_on_error:
            try:
                fs.remove(tmp)  # nothing refers to it; recovery would remove it anyway
            except OSError:
                pass
        raise
    f.close()
    fs.rename(tmp, path)
    if durable:
        fs.sync_dir(dirpath)
    return result
