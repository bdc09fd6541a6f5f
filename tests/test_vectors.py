"""The vector store: contract of every call, a brute-force model, transactions, and the derived index.

* Contract: every argument error is raised before anything is written (the
  directory's bytes are unchanged).
* Model (hypothesis): random upserts, deletes and searches (dot and l2 over
  small integer vectors, so every score is exact and ties break by id), with
  reopen in between; the search, served by the derived index, equals a
  brute-force top-k over a dict model.
* Transactions: a search reads the snapshot plus own writes; a concurrent
  commit to the collection makes an updating transaction that searched it
  conflict; the index declines a snapshot older than the collection's last
  change, and the exact scan answers.
* The index follows commits: interleaved writes and searches, and a queue
  overflow that forces a rebuild, give exactly what the exact scan gives.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inmem import Database, InvalidArgument, InvalidValue, RunClosed, TransactionConflict
from inmem import vectorindex
from inmem.embeddings import HashingEmbedder
from inmem.primitives.vectors import Match

from .conftest import assert_refused_unwritten


@pytest.fixture
def db(dbdir):
    with Database.open(dbdir, durability="off", embedder=HashingEmbedder(dim=32)) as d:
        yield d


@pytest.fixture
def run(db):
    r = db.begin_run("agent")
    db.vectors.create(r, "mem", dim=4)
    return r


def ids(matches: list[Match]) -> list[str]:
    return [m.id for m in matches]


# --- contract ---------------------------------------------------------------------------------

BAD = [
    ("dim 0", lambda db, r: db.vectors.create(r, "c", dim=0), InvalidArgument),
    ("dim bool", lambda db, r: db.vectors.create(r, "c", dim=True), InvalidArgument),
    ("metric", lambda db, r: db.vectors.create(r, "c", dim=4, metric="hamming"), InvalidArgument),
    ("index", lambda db, r: db.vectors.create(r, "c", dim=4, index="lsh"), InvalidArgument),
    ("empty name", lambda db, r: db.vectors.create(r, "", dim=4), InvalidArgument),
    ("NUL in name", lambda db, r: db.vectors.create(r, "a\x00b", dim=4), InvalidArgument),
    ("recreate other dim", lambda db, r: db.vectors.create(r, "mem", dim=8), InvalidArgument),
    ("recreate other metric", lambda db, r: db.vectors.create(r, "mem", dim=4, metric="dot"), InvalidArgument),
    ("no collection", lambda db, r: db.vectors.upsert(r, "nope", "a", [1, 2, 3, 4]), InvalidArgument),
    ("short vector", lambda db, r: db.vectors.upsert(r, "mem", "a", [1, 2, 3]), InvalidValue),
    ("2-D vector", lambda db, r: db.vectors.upsert(r, "mem", "a", np.ones((2, 4))), InvalidValue),
    ("NaN", lambda db, r: db.vectors.upsert(r, "mem", "a", [1, float("nan"), 3, 4]), InvalidValue),
    ("inf", lambda db, r: db.vectors.upsert(r, "mem", "a", [1, float("inf"), 3, 4]), InvalidValue),
    ("float32 overflow", lambda db, r: db.vectors.upsert(r, "mem", "a", [1e300, 0, 0, 0]), InvalidValue),
    ("str vector", lambda db, r: db.vectors.upsert(r, "mem", "a", "1234"), InvalidValue),
    ("str components", lambda db, r: db.vectors.upsert(r, "mem", "a", ["1", "2", "3", "4"]), InvalidValue),
    ("bool components", lambda db, r: db.vectors.upsert(r, "mem", "a", [True, False, True, True]), InvalidValue),
    ("ragged", lambda db, r: db.vectors.upsert(r, "mem", "a", [1, [2, 3], 3, 4]), InvalidValue),
    ("huge int", lambda db, r: db.vectors.upsert(r, "mem", "a", [10**40, 0, 0, 1]), InvalidValue),
    ("zero cosine", lambda db, r: db.vectors.upsert(r, "mem", "a", [0, 0, 0, 0]), InvalidArgument),
    # float32 arrays take the fast path (one float32 sum of squares): attack each way it can be fooled
    ("f32 NaN", lambda db, r: db.vectors.upsert(r, "mem", "a", np.array([1, np.nan, 0, 0], "<f4")), InvalidValue),
    ("f32 +inf -inf", lambda db, r: db.vectors.upsert(r, "mem", "a", np.array([np.inf, -np.inf, 1, 1], "<f4")),
     InvalidValue),
    ("f32 zero cosine", lambda db, r: db.vectors.upsert(r, "mem", "a", np.zeros(4, "<f4")), InvalidArgument),
    ("f32 -0.0 cosine", lambda db, r: db.vectors.upsert(r, "mem", "a", np.full(4, -0.0, "<f4")), InvalidArgument),
    ("f32 short", lambda db, r: db.vectors.upsert(r, "mem", "a", np.ones(3, "<f4")), InvalidValue),
    ("f32 2-D", lambda db, r: db.vectors.upsert(r, "mem", "a", np.ones((1, 4), "<f4")), InvalidValue),
    ("empty id", lambda db, r: db.vectors.upsert(r, "mem", "", [1, 2, 3, 4]), InvalidArgument),
    ("int id", lambda db, r: db.vectors.upsert(r, "mem", 7, [1, 2, 3, 4]), InvalidArgument),
    ("metadata list", lambda db, r: db.vectors.upsert(r, "mem", "a", [1, 2, 3, 4], metadata=[1]), InvalidArgument),
    ("text int", lambda db, r: db.vectors.upsert(r, "mem", "a", [1, 2, 3, 4], text=3), InvalidArgument),
    ("metadata undecodable", lambda db, r: db.vectors.upsert(r, "mem", "a", [1, 2, 3, 4], metadata={"x": object()}),
     InvalidValue),
    ("add_text int", lambda db, r: db.vectors.add_text(r, "mem", 5), InvalidArgument),
    ("add_text wrong dim", lambda db, r: db.vectors.add_text(r, "mem", "hello"), InvalidValue),  # embedder dim 32
    ("search k 0", lambda db, r: db.vectors.search(r, "mem", [1, 2, 3, 4], k=0), InvalidArgument),
    ("search min_score str", lambda db, r: db.vectors.search(r, "mem", [1, 2, 3, 4], min_score="x"), InvalidArgument),
    ("search bad filter", lambda db, r: db.vectors.search(r, "mem", [1, 2, 3, 4], filter={"a": {"$near": 1}}),
     InvalidArgument),
    ("search short query", lambda db, r: db.vectors.search(r, "mem", [1, 2]), InvalidValue),
]


@pytest.mark.parametrize("name,call,error", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_before_anything_is_written(db, run, dbdir, name, call, error):
    db.vectors.upsert(run, "mem", "keep", [1, 0, 0, 0])
    assert_refused_unwritten(db, dbdir, lambda: call(db, run), error)
    assert ids(db.vectors.search(run, "mem", [1, 0, 0, 0])) == ["keep"]


@pytest.mark.parametrize("vector", [
    np.full(4, 3e38, "<f4"),  # the float32 sum of squares overflows; every component is finite
    np.array([1e-30, 0, 0, 0], "<f4"),  # ... underflows to 0; the vector is not zero
    np.array([1.0, 2.0, 3.0, 4.0], ">f4"),  # big-endian: not the fast path, converted
    np.arange(1, 9, dtype="<f4")[::2],  # a strided view
], ids=["f32-overflow", "f32-underflow", "big-endian", "strided"])
def test_float32_arrays_the_fast_check_cannot_settle_are_stored_exactly(db, run, vector):
    rec = db.vectors.upsert(run, "mem", "a", vector)
    stored = db.vectors.get(run, "mem", "a")
    assert stored is not None and stored.vector.dtype == np.dtype("<f4")
    assert np.array_equal(stored.vector, vector.astype("<f4")) and np.array_equal(rec.vector, stored.vector)
    vector[0] = 7  # the caller's array is never kept
    assert not np.array_equal(db.vectors.get(run, "mem", "a").vector, vector)


def test_calls_round_trip_and_survive_reopen(dbdir):
    with Database.open(dbdir) as db:
        run = db.begin_run()
        assert db.vectors.create(run, "mem", dim=3, metric="l2") == {"dim": 3, "metric": "l2", "index": "exact",
                                                                      "embedder": None}
        assert db.vectors.create(run, "mem", dim=3, metric="l2")["dim"] == 3  # idempotent
        db.vectors.create(run, "other", dim=2, metric="dot")
        rec = db.vectors.upsert(run, "mem", "a", (1.5, -2, 0.25), metadata={"k": [1, {"x": None}]}, text="hi")
        assert rec.vector.dtype == np.float32 and rec.vector.tolist() == [1.5, -2.0, 0.25]
        db.vectors.upsert(run, "mem", "b", np.array([0, 0, 1], dtype=np.float64))
        assert db.vectors.collections(run) == ["mem", "other"]
        assert db.vectors.count(run, "mem") == 2 and db.vectors.count(run, "other") == 0
        assert db.vectors.delete(run, "mem", "b") is True
        assert db.vectors.delete(run, "mem", "b") is False
        assert db.vectors.get(run, "mem", "b") is None
        db.end_run(run)
        with pytest.raises(RunClosed):
            db.vectors.upsert(run, "mem", "c", [1, 2, 3])
    with Database.open(dbdir) as db:
        got = db.vectors.get(run, "mem", "a")
        assert got.vector.tolist() == [1.5, -2.0, 0.25] and got.metadata == {"k": [1, {"x": None}]}
        assert got.text == "hi"
        [m] = db.vectors.search(run, "mem", [1.5, -2, 0.25])
        assert (m.id, m.score, m.text) == ("a", 0.0, "hi")  # l2: minus the distance


def test_add_text_deduplicates_by_content_hash(db, run):
    db.vectors.create(run, "notes", dim=32)
    a = db.vectors.add_text(run, "notes", "the cat sat on the mat", metadata={"n": 1})
    b = db.vectors.add_text(run, "notes", "the cat sat on the mat", metadata={"n": 2})
    assert a.id == b.id and len(a.id) == 64
    assert db.vectors.count(run, "notes") == 1
    db.vectors.add_text(run, "notes", "quarterly revenue grew")
    best = db.vectors.search(run, "notes", "a cat on a mat", k=1)[0]
    assert best.text == "the cat sat on the mat" and best.metadata == {"n": 2}


def test_add_text_without_an_embedder_says_how(dbdir):
    with Database.open(dbdir) as db:
        run = db.begin_run()
        db.vectors.create(run, "c", dim=8)
        with pytest.raises(InvalidArgument, match="embedder"):
            db.vectors.add_text(run, "c", "hello")
        db.vectors.create(run, "c", dim=8, embedder=HashingEmbedder(dim=8))
        assert db.vectors.add_text(run, "c", "hello").text == "hello"


def test_search_metrics_filter_min_score_and_ties(db):
    run = db.begin_run()
    db.vectors.create(run, "d", dim=2, metric="dot")
    for i, v in enumerate([[1, 0], [0, 1], [1, 1], [1, 0]]):
        db.vectors.upsert(run, "d", f"v{i}", v, metadata={"i": i, "even": i % 2 == 0})
    got = db.vectors.search(run, "d", [1, 0.5], k=3)
    assert [(m.id, m.score) for m in got] == [("v2", 1.5), ("v0", 1.0), ("v3", 1.0)]  # tie: id order
    assert ids(db.vectors.search(run, "d", [1, 0.5], filter={"even": True})) == ["v2", "v0"]
    assert ids(db.vectors.search(run, "d", [1, 0.5], min_score=1.2)) == ["v2"]
    assert db.vectors.search(run, "d", [1, 0.5], filter={"i": {"$gt": 10}}) == []


# --- a brute-force model ---------------------------------------------------------------------------

IDS = [f"id{i}" for i in range(8)]
vec = st.lists(st.integers(-3, 3), min_size=3, max_size=3)
ops = st.lists(st.one_of(
    st.tuples(st.just("upsert"), st.sampled_from(IDS), vec, st.integers(0, 3)),
    st.tuples(st.just("delete"), st.sampled_from(IDS)),
    st.tuples(st.just("search"), vec, st.integers(1, 5), st.sampled_from([None, 0, 1, 2])),
    st.tuples(st.just("reopen"),),
), max_size=40)


def model_search(model: dict, q: list[int], k: int, metric: str, tag: int | None) -> list[tuple[str, float]]:
    scored = []
    for id, (v, t) in model.items():
        if tag is not None and t != tag:
            continue
        if metric == "dot":
            s = float(sum(a * b for a, b in zip(v, q)))
        else:
            s = -float(sum((a - b) ** 2 for a, b in zip(v, q))) ** 0.5
        scored.append((-s, id))
    return [(id, -s) for s, id in sorted(scored)[:k]]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(metric=st.sampled_from(["dot", "l2"]), script=ops)
def test_search_equals_a_brute_force_model(tmp_path_factory, metric, script):
    path = str(tmp_path_factory.mktemp("vec") / "db")
    db = Database.open(path, durability="off")
    run = db.begin_run()
    db.vectors.create(run, "c", dim=3, metric=metric)
    model: dict[str, tuple[list[int], int]] = {}
    try:
        for op in script:
            if op[0] == "upsert":
                _, id, v, tag = op
                db.vectors.upsert(run, "c", id, v, metadata={"tag": tag})
                model[id] = (v, tag)
            elif op[0] == "delete":
                assert db.vectors.delete(run, "c", op[1]) == (model.pop(op[1], None) is not None)
            elif op[0] == "search":
                _, q, k, tag = op
                got = db.vectors.search(run, "c", q, k=k, filter=None if tag is None else {"tag": tag})
                want = model_search(model, q, k, metric, tag)
                assert [m.id for m in got] == [id for id, _ in want]
                assert [m.score for m in got] == pytest.approx([s for _, s in want])
            else:
                db.close()
                db = Database.open(path, durability="off")
        assert db.vectors.count(run, "c") == len(model)
    finally:
        db.close()


# --- transactions -----------------------------------------------------------------------------------


def test_search_in_a_transaction_reads_its_snapshot_and_own_writes(db, run):
    db.vectors.upsert(run, "mem", "a", [1, 0, 0, 0])
    db.vectors.search(run, "mem", [1, 0, 0, 0])  # the index exists and is current
    tx = db.transaction()
    db.vectors.upsert(run, "mem", "b", [1, 0.1, 0, 0])  # after tx's snapshot
    db.vectors.delete(run, "mem", "a")
    assert ids(tx.vectors.search(run, "mem", [1, 0, 0, 0])) == ["a"]  # the index declines; the scan answers
    tx.vectors.upsert(run, "mem", "mine", [1, 0, 0, 0])
    assert ids(tx.vectors.search(run, "mem", [1, 0, 0, 0])) == ["a", "mine"]
    tx.rollback()
    assert ids(db.vectors.search(run, "mem", [1, 0, 0, 0])) == ["b"]


def test_a_concurrent_commit_to_a_searched_collection_conflicts(db, run):
    sink = db.begin_run("sink")
    db.vectors.upsert(run, "mem", "a", [1, 0, 0, 0])
    tx = db.transaction()
    assert ids(tx.vectors.search(run, "mem", [1, 0, 0, 0])) == ["a"]  # served by the index
    db.vectors.upsert(run, "mem", "better", [1, 0, 0, 0.01])
    tx.kv.put(sink, "decision", "a is best")
    with pytest.raises(TransactionConflict):
        tx.commit()
    # an unrelated collection does not conflict
    db.vectors.create(run, "other", dim=4)
    tx = db.transaction()
    tx.vectors.search(run, "mem", [1, 0, 0, 0])
    db.vectors.upsert(run, "other", "x", [1, 1, 1, 1])
    tx.kv.put(sink, "decision", "fine")
    tx.commit()


# --- the derived index ------------------------------------------------------------------------------


def same(got: list[Match], want: list[Match]) -> bool:
    """Equal hits in the same order, scores equal to float rounding."""
    return [(m.id, m.metadata, m.text) for m in got] == [(m.id, m.metadata, m.text) for m in want] and \
        [m.score for m in got] == pytest.approx([m.score for m in want], rel=1e-6, abs=1e-6)


def exact(db, run, collection, query, **kw):
    """The reference answer: a search inside a transaction with an own write to the collection scans."""
    tx = db.transaction()
    try:
        tx.vectors.upsert(run, collection, "\uffff-probe", np.full(4, 1e-3))
        k = kw.pop("k", 10)
        hits = tx.vectors.search(run, collection, query, k=k + 1, **kw)  # the probe may take one place
        return [m for m in hits if m.id != "\uffff-probe"][:k]
    finally:
        tx.rollback()


def test_the_index_follows_interleaved_commits(db, run):
    rng = np.random.default_rng(7)
    for step in range(300):
        i = int(rng.integers(0, 40))
        if rng.random() < 0.25:
            db.vectors.delete(run, "mem", f"v{i}")
        else:
            db.vectors.upsert(run, "mem", f"v{i}", rng.normal(size=4), metadata={"g": i % 3})
        if step % 10 == 0:
            q = rng.normal(size=4)
            assert same(db.vectors.search(run, "mem", q, k=5), exact(db, run, "mem", q, k=5))
            assert same(db.vectors.search(run, "mem", q, k=5, filter={"g": 1}),
                        exact(db, run, "mem", q, k=5, filter={"g": 1}))


def test_an_overflowing_queue_is_rebuilt(db, run, monkeypatch):
    monkeypatch.setattr(vectorindex, "MAX_PENDING", 5)
    db.vectors.upsert(run, "mem", "a", [1, 0, 0, 0])
    db.vectors.search(run, "mem", [1, 0, 0, 0])
    for i in range(20):  # no search meanwhile: the queue overflows and stops following
        db.vectors.upsert(run, "mem", f"n{i}", [1, 0, 0, 0.001 * i])
    db.vectors.delete(run, "mem", "a")
    q = [1, 0, 0, 0]
    assert same(db.vectors.search(run, "mem", q, k=30), exact(db, run, "mem", q, k=30))
    assert "a" not in ids(db.vectors.search(run, "mem", q, k=30))


def test_fork_copies_vectors_and_diverges(db, run):
    db.vectors.upsert(run, "mem", "a", [1, 0, 0, 0])
    fork = db.fork_run(run)
    db.vectors.upsert(fork, "mem", "b", [1, 0.5, 0, 0])
    assert ids(db.vectors.search(fork, "mem", [1, 0, 0, 0])) == ["a", "b"]
    assert ids(db.vectors.search(run, "mem", [1, 0, 0, 0])) == ["a"]


def test_the_embedder_never_runs_inside_the_commit_lock(dbdir):
    """An embedder may call a model for a long time: commits by other threads must go on meanwhile."""
    import threading

    with Database.open(dbdir, durability="off") as db:
        run = db.begin_run()
        other = db.begin_run()
        committed = []

        def embedder(texts):
            t = threading.Thread(target=lambda: committed.append(db.kv.put(other, "k", 1)))
            t.start()
            t.join(timeout=30)  # returns at once when the put is not blocked; 30 s only if the test fails
            assert not t.is_alive(), "a commit waited for the embedder: it runs inside the commit lock"
            return np.ones((len(texts), 4))

        db.vectors.create(run, "c", dim=4, embedder=embedder)
        db.vectors.add_text(run, "c", "hello")
        assert committed == [None] and db.kv.get(other, "k") == 1


@pytest.mark.parametrize("n_bytes", [0, 4, 20, 24, 252, 256, 65_532, 65_536, 262_144])
@pytest.mark.parametrize("ts", [0, 23, 24, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 1_764_000_000_000_000, 2**64 - 1])
def test_bare_vector_record_is_byte_for_byte_what_cbor2_encodes(n_bytes, ts):
    from inmem.codec import decode_value, encode_value
    from inmem.primitives.vectors import bare_vector_record

    data = bytes(range(256)) * (n_bytes // 256) + bytes(n_bytes % 256)
    record = {"vector": data, "metadata": None, "text": None, "updated_us": ts}
    assert bare_vector_record(data, ts) == encode_value(record)
    assert decode_value(bare_vector_record(data, ts)) == record
