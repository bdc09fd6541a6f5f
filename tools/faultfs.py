"""A fault-injecting file system: what a database directory holds after a power cut, a torn write, EIO or ENOSPC.

This module owns :class:`FaultFS`, an implementation of the engine's
:class:`inmem.fs.FileSystem` seam (pass it as ``Database.open(path, fs=...)``)
in the spirit of SQLite's crash-simulating test VFS and LevelDB's
``FaultInjectionTestEnv``. Every call goes through to the real directory (so
the engine reads back what it wrote, as from the OS page cache), and beside
it FaultFS keeps a model of what a disk has made *durable*:

* per file (an inode, surviving renames): its current bytes and the bytes as
  of its last ``fsync`` (:meth:`WritableFile.sync`);
* per directory: its current entries and its entries as of its last
  directory fsync (:meth:`FileSystem.sync_dir`), which is what makes a
  create, rename or remove durable on a POSIX file system;
* the metadata journal (for the ext4 model): every create, rename and remove
  in order, and the point the last fsync of anything committed.

:meth:`FaultFS.power_cut` writes the directory as a disk would hold it after
power loss into another directory, in one of two models:

``"posix"`` (POSIX-strict)
    only directory entries made durable by a directory fsync survive, each
    naming the inode it named then; a file's content is its last fsynced
    bytes, plus, for its unsynced appends, whatever ``tail`` says.
``"ext4"`` (ext4 ``data=ordered``-like)
    metadata is journaled in order: the namespace is the one after some
    prefix of the create/rename/remove sequence, at least up to the last
    fsync or directory fsync (either commits the whole journal); contents
    as for ``"posix"``.

``tail`` says what becomes of a file's unsynced appends: ``"none"`` (lost),
``"prefix"`` (a prefix of them, cut at any byte: a torn write), ``"zeros"``
(the size grew but the data did not reach the disk: zero bytes, as ext4's
delayed allocation can leave), ``"all"`` (the OS wrote them back: a process
crash, not a power cut), or ``"random"`` (one of those per file).

Faults besides power cuts: :meth:`FaultFS.fail` makes the n-th call of a kind
(``write``, ``sync``, ``sync_dir``, ``rename``, ``remove``, ``create``,
``truncate``), optionally only on paths containing a string, raise
``OSError(EIO)`` (or another errno); ``space`` is a byte budget of live file
bytes after which a write lands what fits and raises ENOSPC; ``crash_at=n``
stops the workload at the n-th mutating call (:class:`CrashPoint`, or
``on_crash``, e.g. ``os._exit``/SIGKILL in a child), optionally landing only
``torn`` bytes of it first if it is a write. Every mutating call is numbered
and named in :attr:`FaultFS.events` (``"#7 write wal-0000000000000001.log
+412"``), like bbolt's failpoints, so a crash point can be chosen by name
(``crash_on="rename snapshot-", crash_at=1``: the first snapshot rename).

Invariant: the model describes exactly the calls that reached the real
directory; after a crash (:attr:`FaultFS.halted`) nothing reaches it any more:
the call at the crash point raises :class:`CrashPoint` in the thread that
made it, every later mutating call does nothing (a dead process writes
nothing; its handle may still be closed without noise), reads still see the
real directory, and the locks it handed out are released. A workload counts
a commit as acknowledged only if its call returned while ``halted`` was false.
"""

from __future__ import annotations

import errno as _errno
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.checkout import use_checkout

use_checkout()

from inmem.fs import FileLock, OSFileSystem, ReadableFile  # noqa: E402

__all__ = ["MODELS", "TAILS", "CrashPoint", "FaultFS", "abandon"]

#: Power-cut models (see the module docstring).
MODELS = ("posix", "ext4")
#: What becomes of unsynced appends in a power cut.
TAILS = ("none", "prefix", "zeros", "all", "random")
#: The calls that change the directory, counted and numbered (reads are not).
MUTATING = ("makedirs", "create", "open_append", "write", "sync", "truncate", "rename", "remove", "sync_dir")


class CrashPoint(BaseException):  # noqa: N818 - not an error: the simulated end of the process
    """The simulated process stopped here (a crash point), or a call came after it.

    A ``BaseException``, so that the engine's ``except Exception`` handlers do
    not swallow it, as nothing swallows a real crash.
    """


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a mutating call under its FaultFS's mutex: the disk and the model change together."""

    def wrapper(self: Any, *args: Any) -> Any:
        fs = self if isinstance(self, FaultFS) else self._fs  # noqa: SLF001 - one module
        with fs.mutex:
            return method(self, *args)

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


def abandon(db: Any) -> None:
    """Drop a database handle whose process "died" at a crash point: close it, ignoring what that raises.

    Its :class:`FaultFS` is halted, so nothing reaches the disk; the handle
    is only marked closed so that it does not try again at interpreter exit.
    """
    if db is None:
        return
    try:
        db.close()
    except BaseException:  # noqa: BLE001, S110 - a dead process's handle: any failure is expected
        pass


@dataclass(eq=False)
class _Node:
    """One file (an inode): current bytes and the bytes as of its last fsync."""

    data: bytearray = field(default_factory=bytearray)
    synced_len: int = 0
    #: the synced content when it is no longer a prefix of ``data`` (a truncate cut below it)
    frozen: bytes | None = None

    def synced(self) -> bytes:
        return self.frozen if self.frozen is not None else bytes(self.data[: self.synced_len])


@dataclass(eq=False)
class _DirNode:
    """A directory (as an entry of its parent)."""


class FaultFS:
    """A :class:`inmem.fs.FileSystem` over the real directory ``root`` that can lose what a power cut loses.

    :param root: the database directory (it may not exist yet; its parent is
        modelled as far as ``root``'s own entry goes).
    :param crash_at: stop at the n-th mutating call (1-based; ``None``: never).
    :param crash_on: count only calls whose name (``"<kind> <file name>"``, e.g. ``"rename
        snapshot-"``) contains this: ``crash_at=2, crash_on="sync wal-"`` stops at the second WAL fsync.
    :param torn: with ``crash_at`` on a write, land this many bytes of it
        first (clamped to its length).
    :param on_crash: called at the crash point instead of raising
        :class:`CrashPoint` (it should not return, e.g. ``os._exit``).
    :param space: live bytes the directory may hold before writes fail with
        ENOSPC (``None``: unlimited; may be changed any time).
    :param record: keep :attr:`events` (names of every mutating call).
    :param real_sync: pass fsyncs on to the disk; ``False`` only models them
        (a simulator's power cut reads the model, not the disk: ~10x faster).
    :param before_call: ``before_call(fs, n, kind)`` before mutating call ``n``
        reaches the disk (e.g. :meth:`image` there: a power cut at every
        chosen call of one run, without running the workload again).

    Existing files under ``root`` count as durable. Complexity: every write is
    mirrored in memory (O(bytes written)); a power cut is O(directory size).
    """

    def __init__(self, root: str, *, crash_at: int | None = None, crash_on: str | None = None,
                 torn: int | None = None,
                 on_crash: Callable[[FaultFS], None] | None = None, space: int | None = None,
                 record: bool = False, real_sync: bool = True, file_mode: int = OSFileSystem.file_mode,
                 before_call: Callable[[FaultFS, int, str], None] | None = None):
        self.root = os.path.abspath(root)
        self._os = OSFileSystem(file_mode)
        self.crash_at = crash_at
        self.crash_on = crash_on
        self._named = 0
        self.torn = torn
        self.on_crash = on_crash
        self.space = space
        self.record = record
        self.real_sync = real_sync
        self.before_call = before_call
        #: held by every mutating call while it changes the disk and the model (and by :meth:`image`)
        self.mutex = threading.RLock()
        #: names of the mutating calls so far ("#n kind file +bytes"), if ``record``
        self.events: list[str] = []
        #: mutating calls so far
        self.calls = 0
        self.halted = False
        #: where the crash point struck ("kind path"), once it has
        self.crashed_at = ""
        self._owner = threading.get_ident()
        self._rules: list[dict[str, Any]] = []
        self._locks: list[FileLock] = []
        self._used = 0
        # namespace: directory path -> {name: node}; the parent of root holds root's own entry
        self._parent = os.path.dirname(self.root)
        self._rootname = os.path.basename(self.root)
        self._ns: dict[str, dict[str, Any]] = {self._parent: {}, self.root: {}}
        if os.path.isdir(self.root):
            self._ns[self._parent][self._rootname] = _DirNode()
            for name in sorted(os.listdir(self.root)):
                p = os.path.join(self.root, name)
                if os.path.isfile(p) and name != "LOCK":
                    with open(p, "rb") as f:
                        data = bytearray(f.read())
                    self._ns[self.root][name] = _Node(data, len(data))
                    self._used += len(data)
        self._durable = {d: dict(e) for d, e in self._ns.items()}
        #: ext4 model: namespace as of the last journal commit, and the metadata ops since
        self._committed = {d: dict(e) for d, e in self._ns.items()}
        self._journal: list[tuple[Any, ...]] = []

    # --- fault configuration ----------------------------------------------------------------

    def fail(self, kind: str, nth: int = 1, *, err: int = _errno.EIO, path_contains: str | None = None,
             land: int = 0) -> None:
        """Make the ``nth`` call of ``kind`` (counted from now, among calls on paths containing
        ``path_contains``) raise ``OSError(err)``; a failing ``write`` lands ``land`` bytes first.

        :raises ValueError: unknown ``kind`` or ``nth < 1``.
        """
        if kind not in MUTATING or nth < 1:
            raise ValueError(f"kind must be one of {MUTATING} and nth >= 1; got {kind!r}, {nth!r}")
        self._rules.append({"kind": kind, "nth": nth, "err": err, "sub": path_contains, "land": land, "seen": 0})

    # --- the event counter ------------------------------------------------------------------

    def _event(self, kind: str, path: str, nbytes: int | None = None) -> str | dict[str, Any] | None:
        """Count a mutating call: ``"crash"`` if it is the crash point, the matching failure rule if
        one fires, else ``None``."""
        if self.halted:
            return "dead"
        self.calls += 1
        n = self.calls
        if self.before_call is not None:
            self.before_call(self, n, kind)
        if self.record:
            self.events.append(f"#{n} {kind} {os.path.basename(path)}" + (f" +{nbytes}" if nbytes is not None else ""))
        if self.crash_at is not None:
            if self.crash_on is None:
                if n >= self.crash_at:
                    return "crash"  # the caller lands `torn` bytes (writes) and calls _crash
            elif self.crash_on in f"{kind} {os.path.basename(path)}":
                self._named += 1
                if self._named == self.crash_at:
                    return "crash"
        for rule in self._rules:
            if rule["kind"] == kind and (rule["sub"] is None or rule["sub"] in path):
                rule["seen"] += 1
                if rule["seen"] == rule["nth"]:
                    return rule
        return None

    def _crash(self, where: str) -> None:
        """The process dies here. In the workload's thread (the one that made this FaultFS) that is
        :class:`CrashPoint`; another thread (a WAL flusher, a background snapshot) just stops
        reaching the disk, and the workload sees ``halted`` (:meth:`check_alive`) at its next step."""
        self.halted = True
        self.crashed_at = where
        self.release_locks()
        if self.on_crash is not None:
            self.on_crash(self)
        if threading.get_ident() == self._owner:
            raise CrashPoint(f"crash point #{self.calls}: {where}")

    def check_alive(self) -> None:
        """:raises CrashPoint: the crash point was reached (in any thread)."""
        if self.halted:
            raise CrashPoint(f"crash point #{self.calls}: {self.crashed_at}")

    def _inject(self, kind: str, path: str, nbytes: int | None = None) -> bool:
        """For calls that land nothing partially: crash or raise an injected error. ``True``: the
        process is already dead (past the crash point): the caller does nothing."""
        r = self._event(kind, path, nbytes)
        if r is None:
            return False
        if r == "dead":
            return True
        if r == "crash":
            self._crash(f"{kind} {path}")
            return True
        raise _injected(r, kind, path)

    def release_locks(self) -> None:
        """Release every directory lock handed out (a dead process holds none)."""
        locks, self._locks = self._locks, []
        for lock in locks:
            try:
                lock.release()
            except OSError:
                pass

    def used(self) -> int:
        """Bytes of the files the directory currently names (what ``space`` limits)."""
        return self._used

    def halt(self) -> None:
        """Stop here, as at a crash point: later calls raise :class:`CrashPoint`; locks are released."""
        self.halted = True
        self.release_locks()

    # --- namespace helpers --------------------------------------------------------------------

    def _split(self, path: str) -> tuple[str, str]:
        p = os.path.abspath(path)
        return os.path.dirname(p), os.path.basename(p)

    def _entries(self, d: str) -> dict[str, Any]:
        return self._ns.setdefault(d, {})

    def _node(self, path: str) -> _Node:
        d, name = self._split(path)
        node = self._entries(d).get(name)
        if node is None:  # a file this model did not see created (outside root): adopt it as durable
            with open(path, "rb") as f:
                data = bytearray(f.read())
            node = _Node(data, len(data))
            self._entries(d)[name] = node
            self._durable.setdefault(d, {})[name] = node
            self._committed.setdefault(d, {})[name] = node
        return node

    def _commit_journal(self) -> None:
        self._committed = {d: dict(e) for d, e in self._ns.items()}
        self._journal.clear()

    def _live(self, node: _Node) -> bool:
        return any(node is n for e in self._ns.values() for n in e.values())

    # --- FileSystem: reads go to the real directory ---------------------------------------------

    def listdir(self, path: str) -> list[str]:
        self._check()
        return self._os.listdir(path)

    def exists(self, path: str) -> bool:
        self._check()
        return self._os.exists(path)

    def file_size(self, path: str) -> int:
        self._check()
        return self._os.file_size(path)

    def read(self, path: str) -> bytes:
        self._check()
        return self._os.read(path)

    def read_range(self, path: str, offset: int, size: int) -> bytes:
        self._check()
        return self._os.read_range(path, offset, size)

    def open_read(self, path: str) -> ReadableFile:
        self._check()
        return self._os.open_read(path)

    def _check(self) -> None:
        """Reads after the crash point still see the real directory (an abandoned handle may read)."""

    def lock(self, dirpath: str, *, shared: bool = False) -> FileLock:
        self._check()
        lock = self._os.lock(dirpath, shared=shared)
        self._locks.append(lock)
        return lock

    # --- FileSystem: mutating calls ---------------------------------------------------------------

    @property
    def file_mode(self) -> int:
        return self._os.file_mode

    @file_mode.setter
    def file_mode(self, mode: int) -> None:
        self._os.file_mode = mode

    @_locked
    def makedirs(self, path: str) -> list[str]:
        if self._inject("makedirs", path):
            return []
        created = self._os.makedirs(path)
        for d in created:
            parent, name = self._split(d)
            self._entries(parent)[name] = _DirNode()
            self._ns.setdefault(d, {})
            self._journal.append(("link", parent, name, self._entries(parent)[name]))
        return created

    @_locked
    def create(self, path: str) -> _FaultFile:
        if self._inject("create", path):
            return _DeadFile(path)  # type: ignore[return-value]
        f = self._os.create(path)
        d, name = self._split(path)
        node = _Node()
        self._entries(d)[name] = node
        self._journal.append(("link", d, name, node))
        return _FaultFile(self, f, node)

    @_locked
    def open_append(self, path: str) -> _FaultFile:
        if self._inject("open_append", path):
            return _DeadFile(path)  # type: ignore[return-value]
        f = self._os.open_append(path)
        return _FaultFile(self, f, self._node(path))

    @_locked
    def rename(self, src: str, dst: str) -> None:
        if self._inject("rename", src):
            return
        self._os.rename(src, dst)
        sd, sn = self._split(src)
        dd, dn = self._split(dst)
        node = self._entries(sd).pop(sn, None)
        old = self._entries(dd).get(dn)
        if node is not None:
            self._entries(dd)[dn] = node
        if isinstance(old, _Node) and old is not node and not self._live(old):
            self._used -= len(old.data)
        self._journal.append(("rename", sd, sn, dd, dn))

    @_locked
    def remove(self, path: str) -> None:
        if self._inject("remove", path):
            return
        self._os.remove(path)
        d, name = self._split(path)
        node = self._entries(d).pop(name, None)
        if isinstance(node, _Node) and not self._live(node):
            self._used -= len(node.data)
        self._journal.append(("unlink", d, name))

    @_locked
    def sync_dir(self, path: str) -> None:
        if self._inject("sync_dir", path):
            return
        if self.real_sync:
            self._os.sync_dir(path)
        d = os.path.abspath(path)
        self._durable[d] = dict(self._entries(d))
        self._commit_journal()

    # --- power cut ----------------------------------------------------------------------------------

    def power_cut(self, dest: str, *, model: str = "posix", tail: str = "none",
                  rng: random.Random | None = None) -> dict[str, Any]:
        """Halt, then :meth:`image`: what the disk holds after a power loss now."""
        self.halt()
        return self.image(dest, model=model, tail=tail, rng=rng)

    def image(self, dest: str, *, model: str = "posix", tail: str = "none",
              rng: random.Random | None = None) -> dict[str, Any]:
        """Write into the new directory ``dest`` what the disk would hold after a power loss now.

        ``dest`` must not exist; it is not created at all if ``root``'s own
        entry did not survive. Returns ``{"model", "tail", "files": {name:
        {"bytes", "synced", "unsynced_kept"}}, "journal_ops_kept"}``.

        :raises ValueError: unknown ``model`` or ``tail``.
        """
        if model not in MODELS or tail not in TAILS:
            raise ValueError(f"model must be one of {MODELS} and tail one of {TAILS}; got {model!r}, {tail!r}")
        rng = rng or random.Random(0)
        with self.mutex:
            return self._image(dest, model, tail, rng)

    def _image(self, dest: str, model: str, tail: str, rng: random.Random) -> dict[str, Any]:
        kept = 0
        if model == "posix":
            ns = self._durable
        else:
            ns = {d: dict(e) for d, e in self._committed.items()}
            kept = rng.randint(0, len(self._journal))
            for op in self._journal[:kept]:
                if op[0] == "link":
                    ns.setdefault(op[1], {})[op[2]] = op[3]
                elif op[0] == "unlink":
                    ns.setdefault(op[1], {}).pop(op[2], None)
                else:
                    node = ns.setdefault(op[1], {}).pop(op[2], None)
                    if node is not None:
                        ns.setdefault(op[3], {})[op[4]] = node
        report: dict[str, Any] = {"model": model, "tail": tail, "files": {}, "journal_ops_kept": kept,
                                  "journal_ops": len(self._journal)}
        if not isinstance(ns.get(self._parent, {}).get(self._rootname), _DirNode):
            report["root"] = "lost"
            return report
        os.makedirs(dest)
        for name, node in sorted(ns.get(self.root, {}).items()):
            if not isinstance(node, _Node):
                continue
            content, extra = self._after_cut(node, tail, rng)
            with open(os.path.join(dest, name), "wb") as f:
                f.write(content)
            report["files"][name] = {"bytes": len(content), "synced": len(content) - extra, "unsynced_kept": extra}
        return report

    @staticmethod
    def _after_cut(node: _Node, tail: str, rng: random.Random) -> tuple[bytes, int]:
        """A file's bytes after the cut and how many of them were never fsynced."""
        synced = node.synced()
        if node.frozen is not None:  # truncated below its synced length since: either version
            if tail != "none" and rng.random() < 0.5:
                return bytes(node.data), 0
            return synced, 0
        unsynced = bytes(node.data[len(synced):])
        how = tail if tail != "random" else rng.choice(("none", "prefix", "zeros", "all"))
        if not unsynced or how == "none":
            return synced, 0
        if how == "all":
            return synced + unsynced, len(unsynced)
        n = rng.randint(0, len(unsynced))
        return synced + (unsynced[:n] if how == "prefix" else bytes(n)), n


def _injected(rule: dict[str, Any], kind: str, path: str) -> OSError:
    return OSError(rule["err"], f"{os.strerror(rule['err'])} (injected on {kind} #{rule['nth']})", path)


class _DeadFile:
    """What a create or open returns after the crash point: a file whose every call does nothing."""

    def __init__(self, path: str):
        self.path = path

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def sync(self) -> None:
        pass

    def truncate(self, size: int) -> None:
        pass

    def size(self) -> int:
        return 0

    def close(self) -> None:
        pass


class _FaultFile:
    """A :class:`inmem.fs.WritableFile` whose writes and fsyncs pass through :class:`FaultFS`."""

    def __init__(self, fs: FaultFS, inner: Any, node: _Node):
        self._fs = fs
        self._inner = inner
        self._node = node
        self.path = inner.path

    @_locked
    def write(self, data: bytes | bytearray | memoryview) -> None:
        fs = self._fs
        data = bytes(data)
        r = fs._event("write", self.path, len(data))  # noqa: SLF001 - one module
        if r == "dead":
            return
        land, exc = len(data), None
        if r == "crash":
            land = len(data) if fs.torn is None else max(0, min(fs.torn, len(data)))
        elif r is not None:
            land = min(r["land"], len(data))
            exc = _injected(r, "write", self.path)
        if fs.space is not None and fs._used + land > fs.space:  # noqa: SLF001
            land = max(0, fs.space - fs._used)  # noqa: SLF001
            exc = OSError(_errno.ENOSPC, "No space left on device (injected: budget spent)", self.path)
        if land:
            self._inner.write(data[:land])
            self._node.data += data[:land]
            fs._used += land  # noqa: SLF001
        if r == "crash":
            fs._crash(f"write {self.path} ({land} of {len(data)} bytes landed)")  # noqa: SLF001
            return
        if exc is not None:
            raise exc

    @_locked
    def sync(self) -> None:
        if self._fs._inject("sync", self.path):  # noqa: SLF001
            return
        if self._fs.real_sync:
            self._inner.sync()
        node = self._node
        node.synced_len = len(node.data)
        node.frozen = None
        self._fs._commit_journal()  # noqa: SLF001 - an fsync commits the whole ext4 journal

    @_locked
    def truncate(self, size: int) -> None:
        if self._fs._inject("truncate", self.path):  # noqa: SLF001
            return
        self._inner.truncate(size)
        node = self._node
        if size < node.synced_len and node.frozen is None:
            node.frozen = node.synced()
        self._fs._used -= max(0, len(node.data) - size)  # noqa: SLF001
        del node.data[size:]
        node.synced_len = min(node.synced_len, size)

    def size(self) -> int:
        return self._inner.size()

    def close(self) -> None:
        self._inner.close()  # not a mutating call: closing writes nothing
