"""Vectors with the rest of inmem: replay, time travel, history, fork, diff and verify.

What is checked:

* **Determinism** (Hypothesis): random collection creates, upserts (new and
  replacing), deletes, snapshots and reopens against a dict model recorded after every
  commit: ``replay_run(run) == run_state(run)``, and ``replay_run(run,
  at_version=v).vectors`` equals the model at every recorded ``v``, before
  and after reopen.
* ``RunState.vectors`` is read-only plain data (components as float32 bytes
  and a tuple of floats) and takes part in ``==``: one changed component,
  metadata or text makes two states differ.
* ``history`` names vector ops ``("vectors", (collection, id) | (collection,
  None), kind, record)``.
* ``fork_run(at_version=)`` copies the vectors as they were; ``diff_runs``
  reports added, removed and changed vectors and collections by
  ``(collection, id)``, ignores ``updated_at``, and ``str(diff)`` shows them.
* ``verify_directory`` counts vectors and names every bad record written
  through the kernel behind the API: wrong length, non-finite component, no
  collection record, undecodable record.
"""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inmem import Database
from inmem.codec import encode_value
from inmem.keys import TAG_VECTOR, run_id_bytes, run_prefix
from inmem.replay import StoredVector
from inmem.testing import kernel
from inmem.verify import verify_directory


def version(db: Database) -> int:
    return db.stats()["commit_version"]


def flat(rs) -> dict[tuple[str, str], tuple]:
    """``(collection, id) -> (components, metadata, text)`` of a RunState's vectors."""
    return {(c, i): (v.vector, v.metadata, v.text) for c, col in rs.vectors.items() for i, v in col["vectors"].items()}


def vector_key(run: str, collection: str, id: str | None) -> bytes:
    base = run_prefix(run_id_bytes(run), TAG_VECTOR) + collection.encode() + b"\x00"
    return base + (b"\x00" if id is None else b"\x01" + id.encode())


# --- determinism and time travel --------------------------------------------------------------------

OPS = st.lists(st.one_of(
    st.tuples(st.just("create"), st.sampled_from(["a", "b"])),
    st.tuples(st.just("upsert"), st.sampled_from(["a", "b"]), st.sampled_from(["x", "y", "z"]),
              st.lists(st.integers(-3, 3), min_size=3, max_size=3), st.sampled_from([None, {"n": 1}]),
              st.sampled_from([None, "t"])),
    st.tuples(st.just("delete"), st.sampled_from(["a", "b"]), st.sampled_from(["x", "y", "z"])),
    st.tuples(st.just("reopen")),
    st.tuples(st.just("snapshot")),
), min_size=1, max_size=25)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_replay_of_vectors_is_deterministic_and_time_travels(tmp_path_factory, ops):
    path = str(tmp_path_factory.mktemp("vh") / "db")
    db = Database.open(path, durability="off", segment_bytes=4096)
    try:
        run = db.begin_run("agent")
        model: dict[tuple[str, str], tuple] = {}
        collections: set[str] = set()
        at: dict[int, dict] = {version(db): {}}
        for op in ops:
            kind = op[0]
            if kind == "reopen":
                db.close()
                db = Database.open(path, durability="off", segment_bytes=4096)
                continue
            if kind == "snapshot":
                db.snapshot()
                continue
            if kind == "create":
                db.vectors.create(run, op[1], dim=3, metric="dot")
                collections.add(op[1])
            elif op[1] not in collections:
                continue
            elif kind == "upsert":
                _, c, i, vec, meta, text = op
                db.vectors.upsert(run, c, i, vec, metadata=meta, text=text)
                model[(c, i)] = (tuple(float(x) for x in vec), meta, text)
            else:
                _, c, i = op
                assert db.vectors.delete(run, c, i) == ((c, i) in model)
                model.pop((c, i), None)
            at[version(db)] = dict(model)
        for reopened in (False, True):
            if reopened:
                db.close()
                db = Database.open(path, durability="off", segment_bytes=4096)
            live = db.run_state(run)
            assert db.replay_run(run) == live
            assert flat(live) == model
            assert sorted(live.vectors) == sorted(collections)
            for v, expected in at.items():
                assert flat(db.replay_run(run, at_version=v)) == expected, v
    finally:
        db.close()


@pytest.fixture
def db(dbdir):
    with Database.open(dbdir, durability="off") as d:
        yield d


def test_time_travel_at_known_versions(db):
    run = db.begin_run("agent")
    db.vectors.create(run, "mem", dim=2, metric="l2")
    v_created = version(db)
    db.vectors.upsert(run, "mem", "a", [1, 2], metadata={"k": 1}, text="first")
    v_a = version(db)
    db.vectors.upsert(run, "mem", "b", [3, 4])
    db.vectors.upsert(run, "mem", "a", [5, 6], text="second")  # replaces a
    v_replaced = version(db)
    db.vectors.delete(run, "mem", "b")
    v_deleted = version(db)

    assert db.replay_run(run, at_version=v_created).vectors == {
        "mem": {"dim": 2, "metric": "l2", "index": "exact", "embedder": None, "vectors": {}}}
    rs = db.replay_run(run, at_version=v_a)
    assert flat(rs) == {("mem", "a"): ((1.0, 2.0), {"k": 1}, "first")}
    assert rs.version == v_a
    assert flat(db.replay_run(run, at_version=v_replaced)) == {("mem", "a"): ((5.0, 6.0), None, "second"),
                                                              ("mem", "b"): ((3.0, 4.0), None, None)}
    assert flat(db.replay_run(run, at_version=v_deleted)) == {("mem", "a"): ((5.0, 6.0), None, "second")}
    assert db.replay_run(run) == db.run_state(run)


def test_run_state_vectors_are_read_only_data_and_part_of_equality(db):
    run = db.begin_run("agent")
    db.vectors.create(run, "mem", dim=3)
    rec = db.vectors.upsert(run, "mem", "a", [0.1, 0.2, 0.3], metadata={"tag": "x"}, text="hello")
    rs = db.run_state(run)
    coll = rs.vectors["mem"]
    v = coll["vectors"]["a"]
    assert isinstance(v, StoredVector) and v.id == "a" and v.dim == 3
    assert v.data == rec.vector.tobytes() and len(v.data) == 12  # float32 little-endian, as stored
    assert v.vector == tuple(float(x) for x in rec.vector)  # exact: float32 -> float
    assert (v.array() == rec.vector).all() and v.array().dtype == rec.vector.dtype
    assert math.isclose(v.norm, math.sqrt(0.01 + 0.04 + 0.09), rel_tol=1e-6)
    assert (v.metadata, v.text, v.updated_at) == ({"tag": "x"}, "hello", rec.updated_at)
    for attempt in (lambda: rs.vectors.__setitem__("x", 1), lambda: coll.__setitem__("dim", 4),
                    lambda: coll["vectors"].pop("a"), lambda: rs.vectors.clear()):
        with pytest.raises(TypeError):
            attempt()
    with pytest.raises(AttributeError):
        v.data = b""  # type: ignore[misc]
    # equality compares the vectors as data: a replaced component, metadata or text makes states differ
    before = db.run_state(run)
    assert before == rs
    for change in ({"vector": [0.1, 0.2, 0.30001]}, {"metadata": {"tag": "y"}}, {"text": "bye"}):
        args = {"vector": [0.1, 0.2, 0.3], "metadata": {"tag": "x"}, "text": "hello", **change}
        db.vectors.upsert(run, "mem", "a", args.pop("vector"), **args)
        after = db.run_state(run)
        assert after != before and db.replay_run(run) == after
        assert db.replay_run(run, at_version=before.version) == before


def test_history_names_vector_ops(db):
    run = db.begin_run("agent")
    db.vectors.create(run, "mem", dim=2)
    db.vectors.upsert(run, "mem", "doc/1", [1, 0], text="t")
    with db.transaction() as tx:
        tx.vectors.upsert(run, "mem", "doc/2", [0, 1])
        tx.kv.put(run, "k", 1)
    db.vectors.delete(run, "mem", "doc/1")
    h = db.history(run)
    assert [(o.primitive, o.key, o.kind) for o in h[1].ops] == [("vectors", ("mem", None), "put")]
    assert h[1].ops[0].value["dim"] == 2 and h[1].ops[0].value["metric"] == "cosine"
    put = h[2].ops[0]
    assert (put.primitive, put.key, put.kind) == ("vectors", ("mem", "doc/1"), "put")
    assert struct.unpack("<2f", put.value["vector"]) == (1.0, 0.0) and put.value["text"] == "t"
    assert sorted((o.primitive, o.key) for o in h[3].ops) == [("kv", "k"), ("vectors", ("mem", "doc/2"))]
    assert h[4].ops == (type(put)("vectors", ("mem", "doc/1"), "delete", None),)


# --- fork and diff -------------------------------------------------------------------------------------


def test_fork_at_a_past_version_has_the_vectors_as_they_were_and_diff_shows_divergence(db):
    run = db.begin_run("agent")
    db.vectors.create(run, "mem", dim=2, metric="dot")
    db.vectors.upsert(run, "mem", "a", [1, 1], metadata={"v": 1})
    db.vectors.upsert(run, "mem", "b", [2, 2])
    past = version(db)
    db.vectors.upsert(run, "mem", "a", [9, 9])
    db.vectors.delete(run, "mem", "b")
    fork = db.fork_run(run, at_version=past, name="retry")
    assert flat(db.run_state(fork)) == flat(db.replay_run(run, at_version=past))
    assert db.run_state(fork).vectors["mem"]["dim"] == 2
    assert db.vectors.search(fork, "mem", [1, 0], k=1)[0].id == "b"  # the fork is searchable as it was
    assert db.replay_run(fork) == db.run_state(fork)

    d = db.diff_runs(run, fork)
    assert not d.is_empty() and not d.kv and not d.events
    assert set(d.vectors.added) == {("mem", "b")} and d.vectors.removed == {}  # the run deleted b later
    assert set(d.vectors.changed) == {("mem", "a")}
    old, new = d.vectors.changed[("mem", "a")]
    assert (old.vector, new.vector) == ((9.0, 9.0), (1.0, 1.0))
    assert new.metadata == {"v": 1} and old.metadata is None

    # divergence after upserts in the fork
    db.vectors.upsert(fork, "mem", "c", [0, 3], text="new")
    db.vectors.create(fork, "other", dim=4)
    d = db.diff_runs(run, fork)
    assert set(d.vectors.added) == {("mem", "b"), ("mem", "c"), ("other", None)}
    assert d.vectors.added[("other", None)] == {"dim": 4, "metric": "cosine", "index": "exact", "embedder": None}
    text = str(d)
    assert "vectors: 3 added, 0 removed, 1 changed" in text
    assert "+ vectors mem/c: [0, 3] (dim 2, norm 3) 'new'" in text
    assert "+ vectors other (collection): dim=4, metric='cosine'" in text
    assert "~ vectors mem/a: [9, 9]" in text and "-> [1, 1]" in text
    # time travel on both sides: the fork at its creation equals the parent at the fork point
    assert flat(db.replay_run(fork, at_version=db.runs.get(fork).first_version)) == \
        flat(db.replay_run(run, at_version=past))
    db.vectors.delete(fork, "mem", "c")
    assert ("mem", "c") not in db.diff_runs(run, fork).vectors.added


def test_diff_compares_vectors_as_data_not_timestamps(db):
    a = db.begin_run("a")
    for r in (a,):
        db.vectors.create(r, "mem", dim=3)
        db.vectors.upsert(r, "mem", "x", [1, 2, 3], metadata={"m": [1]})
    b = db.fork_run(a)
    assert db.diff_runs(a, b).is_empty() and "no differences" in str(db.diff_runs(a, b))
    db.vectors.upsert(b, "mem", "x", [1, 2, 3], metadata={"m": [1]})  # same data, a later updated_at
    assert db.run_state(a).vectors["mem"]["vectors"]["x"] != db.run_state(b).vectors["mem"]["vectors"]["x"]
    assert db.diff_runs(a, b).is_empty()
    db.vectors.upsert(b, "mem", "x", [1, 2, 3], metadata={"m": [2]})
    assert set(db.diff_runs(a, b).vectors.changed) == {("mem", "x")}
    db.vectors.delete(a, "mem", "x")
    d = db.diff_runs(a, b)
    assert set(d.vectors.added) == {("mem", "x")} and not d.vectors.changed
    # a collection of the same name with other parameters in another run is a changed collection
    c = db.begin_run("c")
    db.vectors.create(c, "mem", dim=2, metric="l2")
    d = db.diff_runs(a, c)
    old, new = d.vectors.changed[("mem", None)]
    assert (old["dim"], new["dim"], old["metric"], new["metric"]) == (3, 2, "cosine", "l2")


# --- verify ---------------------------------------------------------------------------------------------


def test_verify_counts_vectors_and_names_bad_records(dbdir):
    with Database.open(dbdir, durability="strict") as db:
        run = db.begin_run("agent")
        db.vectors.create(run, "mem", dim=3)
        db.vectors.upsert(run, "mem", "good", [1, 2, 3])
        db.vectors.upsert(run, "mem", "also", [1, 0, 0])
    clean = verify_directory(dbdir)
    assert clean["ok"] and clean["vectors"] == 2 and clean["collections"] == 1 and clean["vectors_bad"] == []

    with Database.open(dbdir, durability="strict") as db:
        ts = 1_700_000_000_000_000
        bad = {
            vector_key(run, "mem", "short"): {"vector": struct.pack("<2f", 1, 2), "metadata": None, "text": None,
                                               "updated_us": ts},
            vector_key(run, "mem", "nan"): {"vector": struct.pack("<3f", 1, math.nan, 2), "metadata": None,
                                             "text": None, "updated_us": ts},
            vector_key(run, "ghost", "g"): {"vector": struct.pack("<3f", 1, 2, 3), "metadata": None, "text": None,
                                             "updated_us": ts},
        }
        kernel(db).commit([(k, encode_value(v)) for k, v in bad.items()], (run,))
        before = db.run_state(run)
        assert before == db.replay_run(run)  # damage is data too: replay reproduces it
    report = verify_directory(dbdir)
    assert not report["ok"] and report["vectors"] == 5 and report["collections"] == 2
    found = {(b["collection"], b["id"]): b["problem"] for b in report["vectors_bad"]}
    assert set(found) == {("mem", "short"), ("mem", "nan"), ("ghost", None)}
    assert "8 bytes of components, expected 12" in found[("mem", "short")]
    assert "NaN" in found[("mem", "nan")] and "no collection record" in found[("ghost", None)]
    assert all(run in p for p in report["problems"]) and len(report["problems"]) == 3
    assert report["chains_broken"] == [] and all(s["error"] is None for s in report["segments"])


def test_verify_reports_an_undecodable_vector_record(dbdir):
    with Database.open(dbdir, durability="strict") as db:
        run = db.begin_run("agent")
        db.vectors.create(run, "mem", dim=2)
        kernel(db).commit([(vector_key(run, "mem", "x"), encode_value({"vector": "not bytes"}))], (run,))
    report = verify_directory(dbdir)
    assert not report["ok"]
    assert [(b["run"], b["collection"]) for b in report["vectors_bad"]] == [(run, None)]
    assert "mem/x is not a vector record" in report["problems"][0]
