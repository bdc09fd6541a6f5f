"""The public contract of Database and db.kv: round trips, runs, errors, locking, bad input.

Black-box: only the public API, plus the directory's bytes for "nothing was
written" checks.
"""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import os
import subprocess
import sys
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import inmem
from inmem import (
    Database,
    DatabaseClosed,
    DatabaseLocked,
    InmemError,
    InvalidArgument,
    InvalidKey,
    InvalidValue,
    RunClosed,
    RunNotFound,
    TransactionConflict,
)
from tests.conftest import assert_refused_unwritten

MODES = ("strict", "batched", "off")


def test_public_names_are_pinned():
    assert inmem.__all__ == sorted(inmem.__all__)
    assert set(inmem.__all__) == {
        "ChainBroken", "Change", "Changes", "Commit", "CorruptionError", "Database", "DatabaseClosed", "DatabaseLocked",
        "DatabasePoisoned", "DatabaseReadOnly", "Edge", "Event", "EventsDiff", "HistoryUnavailable", "Hit", "InmemError", "InvalidArgument",
        "InvalidKey", "InvalidTransition", "InvalidValue", "Match", "Node", "NonDeterminismError", "NotADatabase", "Op", "PatchTestFailed", "RunClosed", "RunDiff", "RunInfo", "RunNotFound",
        "RunState", "SnapshotInfo", "State", "StoredVector", "Subscription", "Tenant", "Trace", "TraceNotFound", "Transaction",
        "TransactionClosed", "TransactionConflict", "VectorRecord", "Watch", "WorkflowCancelled",
        "WorkflowError", "__version__",
    }
    for name in inmem.__all__:
        obj = getattr(inmem, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, InmemError)


@pytest.mark.parametrize("mode", MODES)
def test_round_trip_across_reopen_many_runs_keys_and_deletes(dbdir, mode):
    model: dict[str, dict[str, object]] = {}
    with Database.open(dbdir, durability=mode) as db:
        for r in range(12):
            run = db.begin_run(f"agent-{r}", tags=["t"], metadata={"r": r})
            model[run] = {}
            for i in range(150):
                key = f"k/{(i * 7919) % 97:03d}"
                db.kv.put(run, key, {"r": r, "i": i})
                model[run][key] = {"r": r, "i": i}
                if i % 9 == 0:
                    assert db.kv.delete(run, key) is True
                    del model[run][key]
    with Database.open(dbdir, durability=mode) as db:
        for run, kv in model.items():
            assert dict(db.kv.scan(run)) == kv
            for key, value in kv.items():
                assert db.kv.get(run, key) == value
        assert db.stats()["runs"] == 12


def test_values_round_trip_and_are_decoded_afresh(dbdir):
    values = [
        None, True, False, 0, -1, 2**200, -(2**70), 1.5, float("inf"), "", "日本語 ✓", b"\x00\xff",
        [], [1, [2, [3]]], {}, {"a": {"b": [None]}}, {1: "int key"},
        dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.timezone.utc), decimal.Decimal("1.25"),
        uuid.UUID(int=7), {1, 2, 3},
    ]
    with Database.open(dbdir) as db:
        run = db.begin_run()
        for i, v in enumerate(values):
            db.kv.put(run, f"v{i:02d}", v)
        got = db.kv.get(run, "v15")
        got["a"]["b"].append("mutated")  # mutating a returned object never changes the store
        assert db.kv.get(run, "v15") == {"a": {"b": [None]}}
    with Database.open(dbdir) as db:
        assert [db.kv.get(run, f"v{i:02d}") for i in range(len(values))] == values
        db.kv.put(run, "tuple", (1, 2))
        assert db.kv.get(run, "tuple") == [1, 2]  # tuples come back as lists (documented)


def test_get_default_and_delete_of_missing_key(dbdir):
    with Database.open(dbdir) as db:
        run = db.begin_run()
        assert db.kv.get(run, "nope") is None
        assert db.kv.get(run, "nope", default=42) == 42
        v = db.stats()["commit_version"]
        assert db.kv.delete(run, "nope") is False
        assert db.stats()["commit_version"] == v  # nothing was committed


def test_scan_is_in_unicode_order_and_respects_prefix(dbdir):
    keys = ["b", "a", "ab", "a/b", "a\x00", "é", "z", "日本", "\U0001f600", "aa", ""]
    with Database.open(dbdir) as db:
        run = db.begin_run()
        other = db.begin_run()
        for k in keys:
            db.kv.put(run, k, k)
            db.kv.put(other, k, "other")
        assert [k for k, _ in db.kv.scan(run)] == sorted(keys)  # Python str order = code-point order
        assert [k for k, _ in db.kv.scan(run, "a")] == sorted(k for k in keys if k.startswith("a"))
        assert list(db.kv.scan(run, "nothing")) == []
        assert all(v == "other" for _, v in db.kv.scan(other))


def test_scan_is_a_view_as_of_the_call(dbdir):
    with Database.open(dbdir) as db:
        run = db.begin_run()
        for i in range(5):
            db.kv.put(run, f"k{i}", i)
        it = db.kv.scan(run)
        db.kv.put(run, "k9", 9)
        db.kv.delete(run, "k0")
        assert [k for k, _ in it] == ["k0", "k1", "k2", "k3", "k4"]


def test_runs_sort_by_creation_and_status_survives_reopen(dbdir):
    with Database.open(dbdir) as db:
        runs = [db.begin_run(f"r{i}") for i in range(50)]
        assert runs == sorted(runs)
        assert all(uuid.UUID(r).version == 7 for r in runs)
        child = db.begin_run("child", parent=runs[0])
        db.kv.put(runs[1], "x", 1)
        db.end_run(runs[1])
        db.end_run(runs[2], "failed")
        db.end_run(runs[3], status="cancelled")
    with Database.open(dbdir) as db:
        assert db.stats()["runs_by_status"] == {"active": 48, "completed": 1, "failed": 1, "cancelled": 1}
        assert db.kv.get(runs[1], "x") == 1  # ended runs stay readable
        with pytest.raises(RunClosed):
            db.kv.put(runs[1], "x", 2)
        with pytest.raises(RunClosed):
            db.kv.delete(runs[1], "x")
        with pytest.raises(RunClosed):
            db.end_run(runs[2])
        db.kv.put(child, "ok", True)


def test_run_errors(dbdir):
    with Database.open(dbdir) as db:
        run = db.begin_run()
        with pytest.raises(RunNotFound):
            db.kv.get(str(uuid.uuid4()), "k")
        with pytest.raises(RunNotFound):
            db.kv.put("not-a-run-id", "k", 1)
        with pytest.raises(RunNotFound):
            db.kv.scan(12345)  # type: ignore[arg-type]
        with pytest.raises(RunNotFound):
            db.begin_run(parent=str(uuid.uuid4()))
        with pytest.raises(InvalidArgument):
            db.end_run(run, "done")
        with pytest.raises(InvalidArgument):
            db.begin_run(tags="single-string")
        with pytest.raises(InvalidValue):
            db.begin_run(metadata={"f": object()})


BAD_INPUTS = [
    ("non-encodable value", lambda db, run: db.kv.put(run, "k", object()), InvalidValue),
    ("set of objects", lambda db, run: db.kv.put(run, "k", {"a": [1, {2: object()}]}), InvalidValue),
    ("naive datetime", lambda db, run: db.kv.put(run, "k", dt.datetime(2026, 1, 1)), InvalidValue),
    ("cyclic value", lambda db, run: db.kv.put(run, "k", _cyclic()), InvalidValue),
    ("bytes key", lambda db, run: db.kv.put(run, b"k", 1), InvalidKey),
    ("int key", lambda db, run: db.kv.put(run, 1, 1), InvalidKey),
    ("None key on delete", lambda db, run: db.kv.delete(run, None), InvalidKey),
    ("lone surrogate key", lambda db, run: db.kv.put(run, "\udc80", 1), InvalidKey),
    ("huge key", lambda db, run: db.kv.put(run, "k" * (64 * 1024 + 1), 1), InvalidKey),
    ("unknown run", lambda db, run: db.kv.put(str(uuid.uuid4()), "k", 1), RunNotFound),
    ("ended run", lambda db, run: db.kv.put(db._ended, "k", 1), RunClosed),
    ("ended run delete", lambda db, run: db.kv.delete(db._ended, "k"), RunClosed),
    ("bad end status", lambda db, run: db.end_run(run, "finished"), InvalidArgument),
]


def _cyclic():
    a: list = []
    a.append(a)
    return a


@pytest.mark.parametrize("what,call,error", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
@pytest.mark.parametrize("mode", ["strict", "off"])
def test_bad_input_raises_and_leaves_the_directory_byte_for_byte_unchanged(dbdir, mode, what, call, error):
    with Database.open(dbdir, durability=mode) as db:
        run = db.begin_run()
        db.kv.put(run, "k", "before")
        ended = db.begin_run()
        db.kv.put(ended, "k", "kept")
        db.end_run(ended)
        db._ended = ended  # test-only handle for the lambdas above
        assert_refused_unwritten(db, dbdir, lambda: call(db, run), error)
        assert db.kv.get(run, "k") == "before"
    # the TypeError family is usable as such
    assert issubclass(InvalidValue, TypeError) and issubclass(InvalidKey, TypeError)


def test_second_open_in_this_process_is_locked(dbdir):
    with Database.open(dbdir):
        with pytest.raises(DatabaseLocked, match="already open"):
            Database.open(dbdir)
    Database.open(dbdir).close()  # released on close


def test_open_from_another_process_is_locked(dbdir):
    code = "import sys; from inmem import Database, DatabaseLocked\n" \
           "try:\n    Database.open(sys.argv[1])\nexcept DatabaseLocked as e:\n    print('locked', e)\n"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with Database.open(dbdir):
        out = subprocess.run([sys.executable, "-c", code, dbdir], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": root}, check=True).stdout
    assert out.startswith("locked") and f"pid {os.getpid()}" in out


def test_closed_database_refuses_everything(dbdir):
    db = Database.open(dbdir)
    run = db.begin_run()
    db.kv.put(run, "k", 1)
    db.close()
    db.close()  # idempotent
    for call in (lambda: db.kv.get(run, "k"), lambda: db.kv.put(run, "k", 2), lambda: db.kv.delete(run, "k"),
                 lambda: db.kv.scan(run), lambda: db.begin_run(), lambda: db.end_run(run), db.sync):
        with pytest.raises(DatabaseClosed):
            call()


@pytest.mark.parametrize("kwargs", [
    {"durability": "sometimes"}, {"flush_interval_ms": 0}, {"flush_interval_ms": 1.5},
    {"segment_bytes": 100}, {"segment_bytes": "64MB"},
])
def test_bad_options_raise_before_touching_disk(tmp_path, kwargs):
    d = tmp_path / "never"
    with pytest.raises(InvalidArgument):
        Database.open(d, **kwargs)
    assert not d.exists()


def test_database_cannot_be_constructed_directly():
    with pytest.raises(TypeError, match="Database.open"):
        Database()


def test_stats_shape(dbdir):
    with Database.open(dbdir, durability="off", flush_interval_ms=50, segment_bytes=1 << 20) as db:
        run = db.begin_run()
        db.kv.put(run, "a", 1)
        s = db.stats()
    assert s["keys"] == 2 and s["runs"] == 1 and s["commit_version"] == 2 and s["commits"] == 2
    assert s["durability"] == "off" and s["flush_interval_ms"] == 50 and s["segment_bytes"] == 1 << 20
    assert s["wal_segments"] == 1 and s["wal_bytes"] > 48 and s["format_version"] == 1
    assert isinstance(s["native"], bool) and s["poisoned"] is False
    assert s["recovery"]["created"] is True and s["runs_by_status"] == {"active": 1}


def test_segments_rotate_at_segment_bytes(dbdir):
    with Database.open(dbdir, durability="batched", flush_interval_ms=60_000, segment_bytes=8192) as db:
        run = db.begin_run()
        for i in range(200):
            db.kv.put(run, f"k{i}", "v" * 200)
        pending = db.stats()  # nothing written yet: the figures already count the pending frames
        db.sync()
        n, size = db.stats()["wal_segments"], db.stats()["wal_bytes"]
    files = sorted(f for f in os.listdir(dbdir) if f.startswith("wal-"))
    assert n == len(files) >= 5
    assert size == sum(os.path.getsize(os.path.join(dbdir, f)) for f in files)
    assert (pending["wal_segments"], pending["wal_bytes"]) == (n, size)
    assert all(os.path.getsize(os.path.join(dbdir, f)) <= 8192 for f in files)
    with Database.open(dbdir) as db:
        assert len(list(db.kv.scan(run))) == 200


def test_a_record_larger_than_a_segment_gets_its_own(dbdir):
    with Database.open(dbdir, segment_bytes=4096) as db:
        run = db.begin_run()
        db.kv.put(run, "big", "x" * 20_000)
        db.kv.put(run, "small", 1)
    with Database.open(dbdir) as db:
        assert len(db.kv.get(run, "big")) == 20_000 and db.kv.get(run, "small") == 1


def test_a_file_where_the_directory_should_be_is_a_clear_error(tmp_path):
    f = tmp_path / "file"
    f.write_bytes(b"not a database")
    with pytest.raises(InvalidArgument, match="not a directory"):
        Database.open(f)
    assert f.read_bytes() == b"not a database"


def test_a_handle_left_open_is_flushed_at_interpreter_exit(dbdir):
    """batched mode with a 60 s flush interval: only the exit hook can make the write durable."""
    code = (
        "import sys; from inmem import Database\n"
        "db = Database.open(sys.argv[1], durability='batched', flush_interval_ms=60000)\n"
        "run = db.begin_run(); db.kv.put(run, 'k', 'v'); print(run)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-c", code, dbdir], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": root}, check=True).stdout.strip()
    with Database.open(dbdir) as db:
        assert db.kv.get(run, "k") == "v"


# --- scan(start=): paging through a run ------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.sets(st.text(alphabet="ab/é\x00", max_size=4), max_size=25), st.text(alphabet="ab/é", max_size=2),
       st.text(alphabet="ab/é\x00", max_size=4))
def test_scan_from_start_is_the_sorted_keys_at_or_after_it_within_the_prefix(tmp_path_factory, keys, prefix, start):
    with Database.open(str(tmp_path_factory.mktemp("db"))) as db:
        run = db.begin_run("r")
        for k in keys:
            db.kv.put(run, k, k)
        order = sorted(keys, key=lambda k: k.encode())
        want = [k for k in order if k.startswith(prefix) and k.encode() >= start.encode()]
        assert [k for k, _ in db.kv.scan(run, prefix, start=start)] == want
        with db.transaction() as tx:  # the same through a transaction's snapshot
            assert [k for k, v in tx.kv.scan(run, prefix, start=start)] == want
        # paging: pages of 3, each starting after the last key of the one before
        pages, after = [], None
        while True:
            page = list(itertools.islice(db.kv.scan(run, prefix, start=after), 3))
            pages += [k for k, _ in page]
            if len(page) < 3:
                break
            after = page[-1][0] + "\0"
        assert pages == [k for k in order if k.startswith(prefix)]


def test_scan_start_reads_only_from_start_so_a_write_before_it_is_no_conflict(tmp_path):
    with Database.open(str(tmp_path / "db")) as db:
        run = db.begin_run("r")
        for k in ("a", "m", "z"):
            db.kv.put(run, k, 1)
        tx = db.transaction()
        assert [k for k, _ in tx.kv.scan(run, start="m")] == ["m", "z"]
        tx.kv.put(run, "0", 1)
        db.kv.put(run, "b", 2)  # before start: outside what the scan read
        tx.commit()
        tx = db.transaction()
        assert [k for k, _ in tx.kv.scan(run, start="m")] == ["m", "z"]
        tx.kv.put(run, "0", 2)
        db.kv.put(run, "n", 2)  # a phantom in the range the scan read
        with pytest.raises(TransactionConflict):
            tx.commit()


def test_scan_start_refuses_what_is_not_a_key(tmp_path):
    with Database.open(str(tmp_path / "db")) as db:
        run = db.begin_run("r")
        for bad in (b"a", 5, "\ud800"):
            with pytest.raises(InvalidKey):
                db.kv.scan(run, start=bad)
