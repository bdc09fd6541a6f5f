"""Opening a directory safely: durable creation, locks without LOCK, foreign directories and
segments, temporaries, read-only file systems, salvage order, database ids and file modes.

Each test fails on the engine as it was before these guarantees were added (SPEC.md §1, §3, §7, §8.3).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inmem import (
    CorruptionError,
    Database,
    DatabaseLocked,
    DatabaseReadOnly,
    HistoryUnavailable,
    InmemError,
    InvalidArgument,
    NotADatabase,
)
from inmem.fs import OSFileSystem
from inmem.history import HistoryIndex, SegmentTail
from inmem.identity import read_identity
from inmem.wal.format import SEGMENT_HEADER_SIZE, decode_segment_header, segment_name
from tests.conftest import dir_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- recording and failing file systems --------------------------------------------------------


class _RecordingFile:
    """A WritableFile that logs sync and truncate into its file system's log."""

    def __init__(self, inner, log):
        self._inner = inner
        self._log = log
        self.path = inner.path

    def sync(self):
        self._inner.sync()
        self._log.append(("fsync", os.path.basename(self.path)))

    def truncate(self, size):
        self._inner.truncate(size)
        self._log.append(("truncate", os.path.basename(self.path), size))

    def __getattr__(self, name):
        return getattr(self._inner, name)


class RecordingFS(OSFileSystem):
    """The real disk, logging the operations whose order makes names and bytes durable."""

    def __init__(self):
        self.log: list[tuple] = []

    def sync_dir(self, path):
        super().sync_dir(path)
        self.log.append(("sync_dir", os.path.abspath(path)))

    def create(self, path):
        f = super().create(path)
        self.log.append(("create", os.path.basename(path)))
        return _RecordingFile(f, self.log)

    def open_append(self, path):
        return _RecordingFile(super().open_append(path), self.log)

    def rename(self, src, dst):
        super().rename(src, dst)
        self.log.append(("rename", os.path.basename(src), os.path.basename(dst)))


class ReadOnlyFS(OSFileSystem):
    """A read-only file system: every change fails with EROFS; reads and shared locks work."""

    def _erofs(self, path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    def makedirs(self, path):
        if not os.path.isdir(path):
            self._erofs(path)
        return []

    def create(self, path):
        self._erofs(path)

    def open_append(self, path):
        self._erofs(path)

    def remove(self, path):
        self._erofs(path)

    def rename(self, src, dst):
        self._erofs(src)

    def lock(self, dirpath, *, shared=False):
        if not shared:
            self._erofs(os.path.join(dirpath, "LOCK"))
        return super().lock(dirpath, shared=True)


@pytest.fixture
def umask():
    """Set the umask to 0o022 for the test (and let it change it); restore it after."""
    def set_umask(mask):
        os.umask(mask)

    old = os.umask(0o022)
    yield set_umask
    os.umask(old)


def fill(db: Database, run: str, n: int, tag: str = "a") -> None:
    for i in range(n):
        db.kv.put(run, f"k{i:04d}", tag * 40)


def build(path: str, *, tag: str = "a") -> str:
    """A database of many small segments; a snapshot covers all but the last few."""
    with Database.open(path, segment_bytes=4096, snapshot_every_bytes=None, durability="off") as db:
        run = db.begin_run("r")
        fill(db, run, 200, tag)
        db.snapshot()
        for i in range(30):
            db.kv.put(run, f"after{i:02d}", tag * 40)
    return run


def segs(path: str) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.startswith("wal-") and n.endswith(".log"))


# --- 1. a new directory is fsynced into its parent ----------------------------------------------


def test_new_directory_and_missing_parents_are_fsynced_before_open_returns(tmp_path):
    fs = RecordingFS()
    path = tmp_path / "a" / "b" / "db"
    db = Database.open(str(path), fs=fs, durability="strict")
    try:
        synced = [entry[1] for entry in fs.log if entry[0] == "sync_dir"]
        for parent in (tmp_path, tmp_path / "a", tmp_path / "a" / "b"):
            assert str(parent) in synced, f"the new name in {parent} was never fsynced: {fs.log}"
        # ... and before the first file of the database is created
        first_create = next(i for i, e in enumerate(fs.log) if e[0] == "create")
        last_parent = max(i for i, e in enumerate(fs.log)
                          if e[0] == "sync_dir" and e[1] == str(tmp_path / "a" / "b"))
        assert last_parent < first_create
        run = db.begin_run()
        db.kv.put(run, "k", 1)  # strict: acknowledged only after the parents were fsynced
    finally:
        db.close()


def test_existing_directory_syncs_no_parent(tmp_path):
    os.mkdir(tmp_path / "db")
    fs = RecordingFS()
    Database.open(str(tmp_path / "db"), fs=fs).close()
    assert ("sync_dir", str(tmp_path)) not in fs.log


# --- 2. salvage: the forensic copy is durable before the original is cut -----------------------


def test_salvage_makes_its_copy_durable_before_cutting_the_original(tmp_path, umask):
    d = str(tmp_path / "db")
    with Database.open(d, segment_bytes=4096, snapshot_every_bytes=None, durability="off") as db:
        fill(db, db.begin_run(), 120)
    names = segs(d)
    assert len(names) >= 3
    with open(os.path.join(d, names[0]), "r+b") as f:  # a bad payload byte in segment 1's 2nd frame
        f.seek(SEGMENT_HEADER_SIZE + 200)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    fs = RecordingFS()
    with Database.open(d, fs=fs, salvage=True, segment_bytes=4096) as db:
        salvaged = db.stats()["recovery"]["salvaged"]
    copy = f"{names[0]}.corrupt-"
    log = fs.log
    i_create = next(i for i, e in enumerate(log) if e[0] == "create" and e[1].startswith(copy))
    i_fsync = next(i for i, e in enumerate(log) if e[0] == "fsync" and e[1].startswith(copy))
    i_truncate = next(i for i, e in enumerate(log) if e[0] == "truncate" and e[1] == names[0])
    i_dir = [i for i, e in enumerate(log) if e[0] == "sync_dir" and e[1] == d]
    renames = [i for i, e in enumerate(log) if e[0] == "rename" and ".corrupt-" in e[2]]
    assert i_create < i_fsync < i_truncate
    assert any(i_fsync < i < i_truncate for i in i_dir), f"the copy's name was not durable before the cut: {log}"
    assert renames and all(i_truncate < i for i in renames)
    assert any(i > max(renames) for i in i_dir), "the renames were not fsynced"
    assert len(salvaged["set_aside"]) == len(names)
    aside = os.path.join(d, next(n for n in salvaged["set_aside"] if n.startswith(copy)))
    assert os.stat(aside).st_mode & 0o077 == 0, "the salvage copy is readable by others"


# --- 3. read-only handles and writers exclude each other, LOCK file or not ----------------------


def test_read_only_handle_keeps_writer_out_without_lock_file(dbdir):
    Database.open(dbdir).close()
    os.remove(os.path.join(dbdir, "LOCK"))
    with Database.open(dbdir, read_only=True):
        with pytest.raises(DatabaseLocked):
            Database.open(dbdir)
        assert not os.path.exists(os.path.join(dbdir, "LOCK")), "the refused writer created LOCK"
        with Database.open(dbdir, read_only=True):  # read-only handles share
            pass
    Database.open(dbdir).close()


def test_writer_keeps_read_only_handle_out_after_lock_file_deleted(dbdir):
    with Database.open(dbdir):
        os.remove(os.path.join(dbdir, "LOCK"))
        with pytest.raises(DatabaseLocked):
            Database.open(dbdir, read_only=True)
        with pytest.raises(DatabaseLocked):
            Database.open(dbdir)
    with Database.open(dbdir, read_only=True):
        pass


HOLDER = r'''
import os, sys
sys.path.insert(0, sys.argv[1])
from inmem import Database
path, mode = sys.argv[2], sys.argv[3]
db = Database.open(path, read_only=(mode == "read_only"))
if mode == "writer":
    os.remove(os.path.join(path, "LOCK"))  # the lock file vanishes while the writer holds the directory
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.readline()
db.close()
'''


@pytest.mark.parametrize("holder", ["read_only", "writer"])
def test_lock_without_lock_file_across_processes(dbdir, holder):
    Database.open(dbdir).close()
    if holder == "read_only":
        os.remove(os.path.join(dbdir, "LOCK"))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, ROOT, dbdir, holder],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        with pytest.raises(DatabaseLocked):
            Database.open(dbdir, read_only=(holder == "writer"))
    finally:
        proc.stdin.close()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == 0
    Database.open(dbdir, read_only=(holder == "writer")).close()


# --- 4. foreign directories and temporaries ------------------------------------------------------


def test_non_empty_foreign_directory_is_refused_untouched(tmp_path):
    d = tmp_path / "project"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    (d / "draft.tmp").write_text("also mine")
    before = dir_bytes(str(d))
    for read_only in (False, True):
        with pytest.raises(NotADatabase) as info:
            Database.open(str(d), read_only=read_only)
        assert isinstance(info.value, InvalidArgument) and isinstance(info.value, InmemError)
        assert str(d) in str(info.value) and (read_only or "notes.txt" in str(info.value))
    assert sorted(os.listdir(d)) == ["draft.tmp", "notes.txt"], "LOCK or IDENTITY created in a foreign directory"
    assert dir_bytes(str(d)) == before


def test_empty_or_missing_directory_becomes_a_database(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "crashed").mkdir()  # an earlier creation died after LOCK and IDENTITY.tmp
    (tmp_path / "crashed" / "LOCK").write_text("1\n")
    (tmp_path / "crashed" / "IDENTITY.tmp").write_bytes(b"\0" * 7)
    for name in ("empty", "crashed", "missing"):
        with Database.open(str(tmp_path / name)) as db:
            assert db.stats()["recovery"]["created"] is True
        assert "IDENTITY.tmp" not in os.listdir(tmp_path / name)


OWN_TEMPORARIES = ["LOCK", "IDENTITY.tmp", "wal-0000000000000001.log.tmp", "snapshot-0000000000000002.snap.tmp",
                   "hist-0000000000000001.idx.tmp"]
OTHER_NAMES = ["notes.txt", "x.tmp", "IDENTITY.bak", "wal-1.log", "hist-0000000000000001.idx",
               "wal-0000000000000001.log.corrupt-1", ".hidden", "snapshot-1.snap.tmp"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(own=st.sets(st.sampled_from(OWN_TEMPORARIES)), other=st.sets(st.sampled_from(OTHER_NAMES), max_size=3))
def test_a_directory_without_a_database_becomes_one_only_if_nothing_in_it_is_foreign(tmp_path, own, other):
    d = tmp_path / uuid.UUID(bytes=os.urandom(16)).hex
    d.mkdir()
    for n in own | other:
        (d / n).write_bytes(b"x")
    if other:
        with pytest.raises(NotADatabase):
            Database.open(str(d))
        assert sorted(os.listdir(d)) == sorted(own | other)  # not a byte created or removed
    else:
        with Database.open(str(d)) as db:
            assert db.stats()["recovery"]["created"]
        assert not [n for n in os.listdir(d) if n.endswith(".tmp")]


def test_failed_open_leaves_temporaries_and_everything_else(tmp_path):
    d = str(tmp_path / "db")
    build(d)
    names = segs(d)
    with open(os.path.join(d, names[-2]), "r+b") as f:  # a bad frame before the last segment
        f.seek(SEGMENT_HEADER_SIZE + 30)
        f.write(b"\xff\xff")
    for tmp in (names[-1] + ".tmp", "snapshot-00000000000000ff.snap.tmp", "hist-0000000000000001.idx.tmp"):
        open(os.path.join(d, tmp), "wb").close()
    before = dir_bytes(d)
    with pytest.raises(CorruptionError):
        Database.open(d)
    assert dir_bytes(d) == before, "a failed open changed the directory"


def test_only_inmem_temporaries_are_removed(tmp_path):
    d = str(tmp_path / "db")
    build(d)
    own = ["IDENTITY.tmp", "wal-00000000000000ff.log.tmp", "snapshot-00000000000000ff.snap.tmp",
           "hist-00000000000000ff.idx.tmp"]
    other = ["user.tmp", "wal-1.log.tmp", "notes.txt"]
    for n in own + other:
        open(os.path.join(d, n), "wb").close()
    with Database.open(d) as db:
        assert sorted(db.stats()["recovery"]["removed_temporaries"]) == sorted(own)
    left = os.listdir(d)
    assert not set(own) & set(left) and set(other) <= set(left)


# --- 5. a read-only file system -----------------------------------------------------------------


def test_read_only_file_system_raises_database_read_only(tmp_path):
    d = str(tmp_path / "db")
    build(d)
    for path in (d, str(tmp_path / "missing")):
        with pytest.raises(DatabaseReadOnly) as info:
            Database.open(path, fs=ReadOnlyFS())
        msg = str(info.value)
        assert path in msg and "read_only=True" in msg
        assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.EROFS
    with Database.open(d, fs=ReadOnlyFS(), read_only=True) as db:  # what the message suggests works
        assert db.stats()["commit_version"] > 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory_raises_database_read_only(tmp_path):
    d = str(tmp_path / "db")
    build(d)
    os.remove(os.path.join(d, "LOCK"))
    os.chmod(d, 0o500)
    try:
        with pytest.raises(DatabaseReadOnly, match="read_only=True"):
            Database.open(d)
    finally:
        os.chmod(d, 0o700)


# --- 6. foreign segments behind the snapshot ----------------------------------------------------


def _two_databases(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    run_a = build(a, tag="a")
    build(b, tag="b")
    names = segs(a)
    assert names == segs(b) and len(names) >= 5
    heads = [decode_segment_header(open(os.path.join(p, names[2]), "rb").read(SEGMENT_HEADER_SIZE)) for p in (a, b)]
    assert heads[0].first_lsn == heads[1].first_lsn  # same layout: only the database id tells them apart
    return a, b, run_a, names[2]


def test_foreign_segment_covered_by_snapshot_is_corruption(tmp_path):
    a, b, run, name = _two_databases(tmp_path)
    os.replace(os.path.join(b, name), os.path.join(a, name))
    before = dir_bytes(a)
    with pytest.raises(CorruptionError, match="foreign") as info:
        Database.open(a)
    assert info.value.path == os.path.join(a, name)
    with pytest.raises(CorruptionError, match="foreign"):
        Database.open(a, read_only=True)
    assert dir_bytes(a) == before
    # salvage sets the foreign file aside; the state (from the snapshot) is whole, the history
    # before the gap is unavailable, never wrong
    with Database.open(a, salvage=True) as db:
        salvaged = db.stats()["recovery"]["salvaged"]
        assert salvaged["file"] == name and len(salvaged["set_aside"]) == 1
        assert salvaged["set_aside"][0].startswith(f"{name}.corrupt-")
        assert db.kv.get(run, "k0199") == "a" * 40 and db.kv.get(run, "after29") == "a" * 40
        with pytest.raises(HistoryUnavailable):
            db.replay_run(run)
    assert name not in os.listdir(a)


def test_segment_with_another_sequence_number_behind_snapshot_is_corruption(tmp_path):
    a = str(tmp_path / "a")
    build(a)
    names = segs(a)
    os.replace(os.path.join(a, names[1]), os.path.join(a, names[2]))  # segment 2 posing as segment 3
    with pytest.raises(CorruptionError, match="sequence"):
        Database.open(a)


def test_history_index_ignores_a_foreign_segment_and_its_sidecar(tmp_path):
    a, b, _run, name = _two_databases(tmp_path)
    db_id = read_identity(OSFileSystem(), a).db_id
    seq = int(name[4:20], 16)
    assert os.path.exists(os.path.join(a, f"hist-{seq:016x}.idx"))  # A's sidecar, describing A's segment
    os.replace(os.path.join(b, name), os.path.join(a, name))
    head = decode_segment_header(open(os.path.join(a, name), "rb").read(SEGMENT_HEADER_SIZE))
    nxt = decode_segment_header(open(os.path.join(a, segment_name(seq + 1)), "rb").read(SEGMENT_HEADER_SIZE))
    index = HistoryIndex(OSFileSystem(), a, "keep", read_only=True)
    tail = SegmentTail(seq, head.first_lsn, os.path.getsize(os.path.join(a, name)))
    index.load(db_id, [tail], head.first_lsn, nxt.first_lsn)
    assert index.stats()["segments"] == 0 and index.floor == nxt.first_lsn


# --- 7. database and run ids never use uuid.uuid4 / uuid1 ----------------------------------------


def test_opening_and_writing_never_calls_uuid4(dbdir, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("inmem called a patched uuid function")

    monkeypatch.setattr(uuid, "uuid4", forbidden)
    monkeypatch.setattr(uuid, "uuid1", forbidden)
    with Database.open(dbdir, durability="strict") as db:
        run = db.begin_run("r")
        db.kv.put(run, "k", 1)
        db.traces.record(run, "thought", "x")
        with db.transaction() as txn:
            txn.kv.put(run, "t", 2)
        child = db.fork_run(run)
    with Database.open(dbdir) as db:
        assert db.kv.get(run, "t") == 2 and db.kv.get(child, "k") == 1
    ident = read_identity(OSFileSystem(), dbdir)
    assert uuid.UUID(bytes=ident.db_id).version == 4


# --- 8. private file modes ----------------------------------------------------------------------


def _modes(d):
    return {n: os.stat(os.path.join(d, n)).st_mode & 0o777 for n in os.listdir(d)}


def test_database_is_private_by_default(tmp_path, umask):
    d = str(tmp_path / "db")
    with Database.open(d, segment_bytes=4096) as db:
        run = db.begin_run()
        fill(db, run, 100)
        db.snapshot()
    modes = _modes(d)
    assert os.stat(d).st_mode & 0o777 == 0o700
    kinds = {"LOCK", "IDENTITY"} | {n for n in modes if n.endswith((".log", ".snap", ".idx"))}
    assert kinds == set(modes) and any(n.endswith(".idx") for n in modes) and any(n.endswith(".snap") for n in modes)
    assert all(m == 0o600 for m in modes.values()), modes


def test_file_mode_relaxes_and_is_validated(tmp_path, umask):
    umask(0)
    d = str(tmp_path / "shared")
    with Database.open(d, file_mode=0o640) as db:
        db.begin_run()
    assert os.stat(d).st_mode & 0o777 == 0o750
    assert set(_modes(d).values()) == {0o640}
    for bad in (0o700, 0o644 | 0o111, 0o400, 0o4600, "0o600", True, 1.5):
        with pytest.raises(InvalidArgument):
            Database.open(str(tmp_path / "never"), file_mode=bad)
    assert not os.path.exists(tmp_path / "never")
