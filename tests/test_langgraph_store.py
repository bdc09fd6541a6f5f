"""InmemStore, the LangGraph BaseStore on inmem: the contract of every op (sync and async), namespace
validation and matching, the key encoding's order, TTL with an injected clock (no sleeps), the filter
table (the same answer with and without a query, including the divergences reported between
LangGraph's own stores), semantic search, history, a hypothesis differential test against LangGraph's
InMemoryStore, and a SIGKILL crash test of concurrent puts.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("langgraph.store.base")

from langgraph.store.base import (  # noqa: E402
    GetOp,
    InvalidNamespaceError,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore  # noqa: E402

from inmem import Database, DatabaseReadOnly, InvalidArgument  # noqa: E402
from inmem.embeddings import HashingEmbedder  # noqa: E402
from inmem.integrations.langgraph import InmemSaver, InmemStore  # noqa: E402
from inmem.integrations.langgraph_store import decode_key, encode_key, encode_prefix  # noqa: E402

from .conftest import acks_until_sigkill, assert_refused_unwritten  # noqa: E402

DIM = 64
_EMB = HashingEmbedder(DIM)


def embed(texts):
    return _EMB(list(texts)).tolist()




@pytest.fixture
def db(dbdir, clock):
    with Database.open(dbdir, durability="off", clock=clock, sweep_interval_s=None) as d:
        yield d


@pytest.fixture
def store(db):
    return InmemStore(db, index={"dims": DIM, "embed": embed, "fields": ["text"]})


# --- key encoding --------------------------------------------------------------------------------


def test_key_encoding_round_trips_and_orders_as_namespaces():
    cases = [(("a",), "k"), (("a", "b"), ""), (("ab",), "x\x00y"), (("a",), "\x00"), (("a", "\x01"), "k"),
             ((), "k"), (("é", "z"), "k")]
    for ns, key in cases:
        assert decode_key(encode_key(ns, key)) == (ns, key)
    by_bytes = sorted(cases, key=lambda c: encode_key(*c).encode())
    assert by_bytes == sorted(cases)  # byte order of the encoding = (namespace tuple, key) order
    assert encode_key(("a", "b"), "k").startswith(encode_prefix(("a",)))
    assert not encode_key(("ab",), "k").startswith(encode_prefix(("a",)))


# --- the contract per op ------------------------------------------------------------------------


def test_put_get_delete_and_timestamps(store, clock):
    assert store.get(("u", "1"), "k") is None
    store.put(("u", "1"), "k", {"text": "hello", "n": 1})
    item = store.get(("u", "1"), "k")
    assert (item.namespace, item.key, item.value) == (("u", "1"), "k", {"text": "hello", "n": 1})
    assert item.created_at == item.updated_at and item.created_at.timestamp() == clock.t
    clock.t += 10
    store.put(("u", "1"), "k", {"text": "bye"})
    again = store.get(("u", "1"), "k")
    assert again.value == {"text": "bye"}
    assert again.created_at == item.created_at and again.updated_at.timestamp() == clock.t
    store.delete(("u", "1"), "k")
    assert store.get(("u", "1"), "k") is None
    store.delete(("u", "1"), "k")  # deleting a missing item is a no-op


def test_batch_reads_see_the_state_before_the_batch_and_writes_commit_together(store, db):
    store.put(("a",), "k", {"v": 0})
    version = db.stats()["commit_version"]
    results = store.batch([PutOp(("a",), "k", {"v": 1}), GetOp(("a",), "k"), PutOp(("a",), "j", {"v": 2}),
                           PutOp(("a",), "k", {"v": 3}), SearchOp(("a",)), ListNamespacesOp()])
    assert results[0] is None and results[2] is None and results[3] is None
    assert results[1].value == {"v": 0}
    assert [i.value for i in results[4]] == [{"v": 0}]
    assert results[5] == [("a",)]
    assert db.stats()["commit_version"] == version + 1  # the whole batch: one commit
    assert store.get(("a",), "k").value == {"v": 3}  # the last put of a key wins
    version = db.stats()["commit_version"]
    store.batch([GetOp(("a",), "k"), SearchOp(("a",))])
    assert db.stats()["commit_version"] == version  # reads only (no TTL): nothing committed


def test_a_failing_batch_writes_nothing(store, db, dbdir):
    store.put(("a",), "k", {"v": 0})
    assert_refused_unwritten(db, dbdir, lambda: store.batch([PutOp(("a",), "k", {"v": 1}),
                                                             PutOp(("a",), "j", {"v": object()})]), TypeError)
    assert store.get(("a",), "k").value == {"v": 0}


@pytest.mark.parametrize("call, error", [
    (lambda s: s.put((), "k", {}), InvalidNamespaceError),
    (lambda s: s.put(("langgraph",), "k", {}), InvalidNamespaceError),
    (lambda s: s.put(("a.b",), "k", {}), InvalidNamespaceError),
    (lambda s: s.put(("",), "k", {}), InvalidNamespaceError),
    (lambda s: s.put(("a", 1), "k", {}), InvalidNamespaceError),
    (lambda s: s.put(("a\x00",), "k", {}), InvalidNamespaceError),
    (lambda s: s.batch([PutOp(("a.b",), "k", {"v": 1})]), InvalidNamespaceError),
    (lambda s: s.batch([GetOp(("a.b",), "k")]), InvalidNamespaceError),
    (lambda s: s.batch([SearchOp(("",))]), InvalidNamespaceError),
    (lambda s: s.batch([ListNamespacesOp((MatchCondition("prefix", ("a.b",)),))]), InvalidNamespaceError),
    (lambda s: s.put(("a",), "k", ["not", "a", "dict"]), InvalidArgument),
    (lambda s: s.batch([PutOp(("a",), 3, {"v": 1})]), InvalidArgument),
    (lambda s: s.put(("a",), "k", {"v": 1}, ttl=0), InvalidArgument),
    (lambda s: s.put(("a",), "k", {"v": 1}, ttl=-1), InvalidArgument),
    (lambda s: s.put(("a",), "k", {"v": 1}, index=["a\x00b"]), InvalidArgument),
    (lambda s: s.search(("a",), filter={"n": {"$regex": "x"}}), InvalidArgument),
    (lambda s: s.search(("a",), limit=-1), InvalidArgument),
    (lambda s: s.list_namespaces(max_depth=0), InvalidArgument),
    (lambda s: s.batch([PutOp(("a",), "k", {"v": 1}), "not an op"]), InvalidArgument),
])
def test_bad_input_is_refused_before_anything_is_written(store, db, dbdir, call, error):
    store.put(("seed",), "k", {"v": 1})
    assert_refused_unwritten(db, dbdir, lambda: call(store), error)


def test_list_namespaces_prefix_suffix_wildcards_depth_paging(store):
    for ns in [("a", "b", "c"), ("a", "b", "d"), ("a", "x"), ("b", "b"), ("c",), ("a", "b", "c", "e")]:
        store.put(ns, "k", {"v": 1})
    assert store.list_namespaces() == sorted([("a", "b", "c"), ("a", "b", "d"), ("a", "x"), ("b", "b"), ("c",),
                                              ("a", "b", "c", "e")])
    assert store.list_namespaces(prefix=("a", "b")) == [("a", "b", "c"), ("a", "b", "c", "e"), ("a", "b", "d")]
    assert store.list_namespaces(prefix=("*", "b")) == [("a", "b", "c"), ("a", "b", "c", "e"), ("a", "b", "d"),
                                                        ("b", "b")]
    assert store.list_namespaces(suffix=("b",)) == [("b", "b")]
    assert store.list_namespaces(suffix=("b", "*")) == [("a", "b", "c"), ("a", "b", "d"), ("b", "b")]
    assert store.list_namespaces(prefix=("a",), suffix=("c",)) == [("a", "b", "c")]
    assert store.list_namespaces(max_depth=2) == [("a", "b"), ("a", "x"), ("b", "b"), ("c",)]
    assert store.list_namespaces(prefix=("a",), max_depth=1) == [("a",)]
    assert store.list_namespaces(limit=2, offset=1) == [("a", "b", "c", "e"), ("a", "b", "d")]
    store.delete(("c",), "k")
    assert ("c",) not in store.list_namespaces()  # a namespace exists while it holds an item


def test_search_without_query_pages_in_key_order(store):
    for i in range(5):
        store.put(("docs", f"u{i % 2}"), f"k{i}", {"i": i})
    store.put(("other",), "k", {"i": 9})
    found = store.search(("docs",))
    assert [(i.namespace, i.key) for i in found] == sorted((("docs", f"u{i % 2}"), f"k{i}") for i in range(5))
    assert all(i.score is None for i in found)
    assert [i.key for i in store.search(("docs",), limit=2, offset=1)] == [i.key for i in found[1:3]]
    assert store.search(("docs", "u1")) == [i for i in found if i.namespace == ("docs", "u1")]
    assert len(store.search(())) == 6
    assert store.search(("nope",)) == []


def test_store_before_first_write_reads_empty_and_read_only_handle_refuses_writes(dbdir):
    with Database.open(dbdir) as db:
        s = InmemStore(db)
        assert (s.get(("a",), "k"), s.search(("a",)), s.list_namespaces(), s.history(("a",), "k")) == \
            (None, [], [], [])
        assert s.run is None
        s.put(("a",), "k", {"v": 1})
        s.put(("a",), "t", {"v": 2}, ttl=60)
    with Database.open(dbdir, read_only=True) as db:
        s = InmemStore(db)
        assert s.get(("a",), "k").value == {"v": 1}
        assert s.get(("a",), "t", refresh_ttl=True).value == {"v": 2}  # no lease renewal on a read-only handle
        assert [i.key for i in s.search(("a",), refresh_ttl=True)] == ["k", "t"]
        with pytest.raises(DatabaseReadOnly):
            s.put(("a",), "k", {"v": 2})


def test_from_path_persists_and_shares_the_database_with_a_checkpointer(tmp_path):
    path = tmp_path / "app"
    with InmemStore.from_path(path, index={"dims": DIM, "embed": embed}) as s:
        s.put(("mem", "u1"), "fact", {"text": "likes green tea"})
        with InmemSaver(s.db) as saver:
            assert saver.db is s.db  # one directory for short- and long-term memory
    with InmemStore.from_path(path, index={"dims": DIM, "embed": embed}) as s:
        assert s.get(("mem", "u1"), "fact").value == {"text": "likes green tea"}
        assert s.search(("mem",), query="green tea")[0].score > 0.5
        with pytest.raises(InvalidArgument, match="dims"):
            InmemStore(s.db, index={"dims": DIM + 1, "embed": embed})
    with pytest.raises(InvalidArgument, match="embed"):
        InmemStore.from_path(tmp_path / "x", index={"dims": 3, "embed": "nosuchprovider:model"})


def test_a_compiled_graph_uses_the_store_beside_the_checkpointer(db):
    from typing import TypedDict

    from langgraph.config import get_store
    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        text: str
        found: list

    def remember(state: State) -> dict:
        store = get_store()
        store.put(("mem", "u1"), f"m{len(state['text'])}", {"text": state["text"]})
        return {"found": sorted(i.value["text"] for i in store.search(("mem",)))}

    builder = StateGraph(State)
    builder.add_node("remember", remember)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", END)
    app = builder.compile(checkpointer=InmemSaver(db), store=InmemStore(db))
    app.invoke({"text": "hi", "found": []}, {"configurable": {"thread_id": "t1"}})
    out = app.invoke({"text": "hello", "found": []}, {"configurable": {"thread_id": "t2"}})
    assert out["found"] == ["hello", "hi"]  # long-term memory shared across threads

    async def main():
        return await app.ainvoke({"text": "hey!", "found": []}, {"configurable": {"thread_id": "t3"}})

    assert asyncio.run(main())["found"] == ["hello", "hey!", "hi"]


def test_two_named_stores_in_one_database_are_separate(db):
    a, b = InmemStore(db), InmemStore(db, run="other-store")
    a.put(("n",), "k", {"who": "a"})
    assert b.get(("n",), "k") is None
    assert InmemStore(db).get(("n",), "k").value == {"who": "a"}  # found again by name and tag


# --- async twins --------------------------------------------------------------------------------


def test_async_twins_and_an_async_only_embedder(db):
    async def aembed(texts):
        return embed(texts)

    s = InmemStore(db, index={"dims": DIM, "embed": aembed, "fields": ["text"]})

    async def main():
        await s.aput(("u",), "a", {"text": "red apples"})
        await s.aput(("u",), "b", {"text": "blue sky"})
        assert (await s.aget(("u",), "a")).value == {"text": "red apples"}
        hits = await s.asearch(("u",), query="apples")
        assert hits[0].key == "a" and hits[0].score > hits[1].score
        assert await s.alist_namespaces() == [("u",)]
        await s.adelete(("u",), "a")
        assert await s.aget(("u",), "a") is None
        results = await s.abatch([GetOp(("u",), "b"), SearchOp(("u",), filter={"text": "blue sky"})])
        assert results[0].key == "b" and [i.key for i in results[1]] == ["b"]
        assert [v[2] is None for v in await s.ahistory(("u",), "a")] == [False, True]

    asyncio.run(main())


# --- TTL ----------------------------------------------------------------------------------------


def test_ttl_expiry_is_visible_at_once_and_swept_durably(db, clock):
    s = InmemStore(db, ttl={"default_ttl": 1, "refresh_on_read": False})
    s.put(("w",), "short", {"v": 1, "l": [1, {"m": [2]}]})
    s.put(("w",), "forever", {"v": 2}, ttl=None)
    s.put(("w",), "long", {"v": 3}, ttl=10)
    clock.t += 59
    assert s.get(("w",), "short") is not None
    clock.t += 1
    assert s.get(("w",), "short") is None  # expired: invisible before any sweep
    assert [i.key for i in s.search(("w",))] == ["forever", "long"]
    s.put(("x",), "gone", {"v": 0}, ttl=0.5)
    clock.t += 31
    assert s.list_namespaces() == [("w",)]
    assert s.sweep_ttl() == 2
    versions = s.history(("w",), "short")
    assert [v[2] is None for v in versions] == [False, True]  # the sweep is in history
    assert versions[0][2].value == {"v": 1, "l": [1, {"m": [2]}]} and type(versions[0][2].value) is dict
    clock.t += 600
    assert [i.key for i in s.search(("w",))] == ["forever"]


def test_ttl_refresh_on_read_extends_the_lease(db, clock):
    s = InmemStore(db, ttl={"default_ttl": 1})  # refresh_on_read defaults to True
    s.put(("w",), "a", {"v": 1})
    s.put(("w",), "b", {"v": 2})
    for _ in range(3):
        clock.t += 50
        assert s.get(("w",), "a") is not None  # each read renews a's lease by a minute
    assert s.get(("w",), "b") is None
    s.put(("w",), "c", {"v": 3})
    clock.t += 50
    assert [i.key for i in s.search(("w",))] == ["a", "c"]  # search refreshes what it returns
    clock.t += 50
    assert s.get(("w",), "c", refresh_ttl=False) is not None
    clock.t += 50
    assert s.get(("w",), "c") is None
    assert s.get(("w",), "a") is None  # 100 s since its last refresh (the search)


def test_ttl_sweeper_thread_runs_and_stops(db, clock):
    s = InmemStore(db, ttl={"default_ttl": 1, "sweep_interval_minutes": 60})
    assert s.stop_ttl_sweeper(timeout=5)
    s.put(("w",), "k", {"v": 1})
    clock.t += 61
    swept = threading.Event()
    counts = []

    def sweep_ttl():
        counts.append(InmemStore.sweep_ttl(s))
        swept.set()

    s.sweep_ttl = sweep_ttl
    s.start_ttl_sweeper(sweep_interval_minutes=0.0005)  # 30 ms
    assert swept.wait(10)
    assert s.stop_ttl_sweeper(timeout=10)
    assert counts[0] == 1 and s.history(("w",), "k")[-1][2] is None
    with pytest.raises(InvalidArgument):
        InmemStore(db).start_ttl_sweeper()
    with pytest.raises(InvalidArgument):
        InmemStore(db, ttl={"default_ttl": -1})


# --- filters: one language, the same on every path ----------------------------------------------

FILTER_ITEMS = {
    "hyphen": {"user": {"access-level": "nested", "id": 7}, "n": 5, "tags": ["x", "y"], "flag": True},
    "deep": {"a": {"b": {"c": "hit"}}, "n": 10, "flag": False},
    "plain": {"user": "nested", "n": "5", "none": None},
    "literal": {"user.name": "x", "n": 1.0},
    "lst": {"tags": ["x", "y"], "n": 1},
}

# (filter, keys): the rows marked * are where LangGraph's own stores are reported to disagree
FILTER_TABLE = [
    ({"user.access-level": "nested"}, {"hyphen"}),        # * dotted key = nested path (InMemoryStore: [])
    ({"a.b.c": "hit"}, {"deep"}),                         # * deep dotted path
    ({"a.b": "hit"}, set()),                              # a partial path does not match
    ({"user": "nested"}, {"plain"}),
    ({"tags": ["x", "y"]}, {"hyphen", "lst"}),            # a list literal: whole-list equality
    ({"tags": {"$in": ["x"]}}, {"hyphen", "lst"}),        # element membership
    ({"user.missing": "x"}, set()),
    ({"user": {"access-level": "nested"}}, set()),        # * a dict literal is exact equality, not containment
    ({"user": {"access-level": "nested", "id": 7}}, {"hyphen"}),
    ({"n": {"$gt": 4}}, {"hyphen", "deep"}),              # * "5" (a str) is not > 4 (InMemoryStore: float("5"))
    ({"n": {"$gt": "4"}}, {"plain"}),                     # str vs str by code point
    ({"n": 5}, {"hyphen"}),
    ({"n": 1}, {"literal", "lst"}),                       # 1 == 1.0
    ({"n": {"$eq": 1}}, {"literal", "lst"}),
    ({"flag": 1}, set()),                                 # * True is not 1 (InMemoryStore: True == 1)
    ({"flag": True}, {"hyphen"}),
    ({"none": None}, {"plain"}),                          # * None matches a present None, not a missing field
    ({"n": {"$ne": 5}}, {"deep", "plain", "literal", "lst"}),   # $ne matches a missing field too
    ({"n": {"$gte": 1, "$lt": 10}}, {"hyphen", "literal", "lst"}),
    ({"n": {"$lte": 1}}, {"literal", "lst"}),
    ({"$or": [{"n": 10}, {"user": "nested"}]}, {"deep", "plain"}),
    ({"$and": [{"tags": {"$in": ["y"]}}, {"n": {"$gt": 2}}]}, {"hyphen"}),
    ({"$not": {"n": {"$exists": True}}}, set()),
    ({"user.name": "x"}, set()),                          # a key holding '.' cannot be addressed (SPEC)
    ({"nope": {"$exists": False}}, set(FILTER_ITEMS)),
    ({}, set(FILTER_ITEMS)),
]


@pytest.fixture(scope="module")
def filter_store(tmp_path_factory):
    with Database.open(str(tmp_path_factory.mktemp("f") / "db"), durability="off", sweep_interval_s=None) as db:
        s = InmemStore(db, index={"dims": DIM, "embed": embed})  # fields ["$"]: every item has a vector
        for key, value in FILTER_ITEMS.items():
            s.put(("f",), key, value)
        s.put(("g",), "outside", {"n": 5})
        yield s


@pytest.mark.parametrize("spec, keys", FILTER_TABLE, ids=[str(f) for f, _ in FILTER_TABLE])
def test_filter_table_same_with_and_without_query(filter_store, spec, keys):
    plain = filter_store.search(("f",), filter=spec, limit=100)
    ranked = filter_store.search(("f",), query="nested user", filter=spec, limit=100)
    assert {i.key for i in plain} == keys
    assert {i.key for i in ranked} == keys  # the query path filters exactly as the listing path
    assert all(i.score is not None for i in ranked)


# --- semantic search -----------------------------------------------------------------------------


def test_semantic_search_fields_paths_index_false_and_max_pooling(db):
    s = InmemStore(db, index={"dims": DIM, "embed": embed, "fields": ["title", "body.text", "notes[*].x"]})
    s.put(("d",), "tea", {"title": "green tea", "body": {"text": "leaves steeped in hot water"}})
    s.put(("d",), "code", {"title": "python", "notes": [{"x": "snakes"}, {"x": "green tea ceremony"}]})
    s.put(("d",), "skip", {"title": "green tea"}, index=False)
    s.put(("d",), "only", {"title": "unrelated", "other": "green tea"}, index=["other"])
    hits = s.search(("d",), query="green tea", limit=10)
    assert [h.key for h in hits][:2] in (["tea", "only"], ["only", "tea"])  # title / "other": exact texts
    assert hits[0].score == pytest.approx(1.0, abs=1e-6)
    by_key = {h.key: h for h in hits}
    assert by_key["code"].score > 0.5  # its best field (notes[1].x) counts: max pooling over paths
    assert by_key["skip"].score is None and hits[-1].key == "skip"  # not embedded: after every scored item
    assert [h.key for h in s.search(("d",), query="green tea", limit=1, offset=1)] == [hits[1].key]
    s.put(("d",), "tea", {"title": "coffee"})  # re-put: old vectors for dropped paths are deleted
    assert {vid.split("\x00")[0] for vid in db.vectors.ids(s.run, "store") if vid.endswith("tea")} == {"title"}
    s.delete(("d",), "code")
    assert not [vid for vid in db.vectors.ids(s.run, "store") if vid.endswith("code")]


def test_semantic_scores_and_order_match_inmemorystore(db, monkeypatch):
    import inmem.integrations.langgraph_store as mod

    index = {"dims": DIM, "embed": embed, "fields": ["text", "tags[*]"]}
    ref, s = InMemoryStore(index=index), InmemStore(db, index=index)
    words = "tea coffee green black python code graph memory agent tool plan user".split()
    for i in range(40):
        value = {"text": " ".join(words[(i * j) % len(words)] for j in range(1, 4)), "n": i,
                 "tags": [words[i % len(words)], words[(i + 5) % len(words)]]}
        ref.put(("d", f"u{i % 3}"), f"k{i:02}", value)
        s.put(("d", f"u{i % 3}"), f"k{i:02}", value)

    def ranked(store, **kw):
        return [(i.key, round(i.score, 5)) for i in store.search(("d",), query="green tea agent", **kw)]

    def same(kw):  # equal scores, and the same items wherever there is no tie at the cut
        mine, theirs = ranked(s, **kw), ranked(ref, **kw)
        assert [x for _, x in mine] == pytest.approx([x for _, x in theirs], abs=1e-4)
        cut = min(x for _, x in mine) + 1e-4
        assert {k for k, x in mine if x > cut} == {k for k, x in theirs if x > cut}

    for kw in ({"limit": 10}, {"limit": 5, "offset": 3}, {"filter": {"n": {"$gte": 30}}, "limit": 4}):
        same(kw)
    monkeypatch.setattr(mod, "_MAX_K", 8)  # past the vector store's top-k limit: the rest scored one by one
    same({"filter": {"n": {"$lt": 6}}, "limit": 4})
    assert all(i.score == 0.0 for i in s.search(("d",), query="!!!", limit=3))  # a zero query vector


def test_embedder_of_the_wrong_dims_is_refused_before_writing(db, dbdir):
    s = InmemStore(db, index={"dims": DIM, "embed": lambda texts: [[1.0, 2.0] for _ in texts]})
    s.db.begin_run("seed")
    assert_refused_unwritten(db, dbdir, lambda: s.put(("a",), "k", {"text": "x"}), InvalidArgument)


def test_vectors_commit_with_the_item(db):
    s = InmemStore(db, index={"dims": DIM, "embed": embed, "fields": ["text"]})
    s.put(("d",), "k", {"text": "hello there"})
    last = db.history(s.run)[-1]
    assert {op.primitive for op in last.ops} == {"kv", "vectors"}


# --- history -------------------------------------------------------------------------------------


def test_history_lists_every_version(store, clock):
    store.put(("h",), "k", {"v": 1})
    clock.t += 1
    store.put(("h",), "k", {"v": 2})
    store.put(("h",), "other", {"v": 9})
    store.delete(("h",), "k")
    clock.t += 1
    store.put(("h",), "k", {"v": 3})
    versions = store.history(("h",), "k")
    assert [None if item is None else item.value["v"] for _, _, item in versions] == [1, 2, None, 3]
    assert [v for v, _, _ in versions] == sorted(v for v, _, _ in versions)
    assert store.history(("h",), "missing") == []


# --- differential: against LangGraph's InMemoryStore ---------------------------------------------

_NS = st.sampled_from([("a",), ("a", "b"), ("b",), ("a", "c"), ("b", "a", "c")])
_KEY = st.sampled_from(["k0", "k1", "k2"])
_VALUE = st.fixed_dictionaries({"n": st.integers(0, 3), "s": st.sampled_from(["x", "y"])})
_FILTER = st.one_of(st.none(), st.builds(lambda n: {"n": n}, st.integers(0, 3)),
                    st.builds(lambda s: {"s": s}, st.sampled_from(["x", "y"])),
                    st.builds(lambda op, n: {"n": {op: n}}, st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt",
                                                                             "$lte"]), st.integers(0, 3)))
_PATH = st.lists(st.sampled_from(["a", "b", "c", "*"]), min_size=1, max_size=2).map(tuple)
_OP = st.one_of(
    st.tuples(st.just("put"), _NS, _KEY, _VALUE),
    st.tuples(st.just("delete"), _NS, _KEY),
    st.tuples(st.just("get"), _NS, _KEY),
    st.tuples(st.just("search"), st.sampled_from([(), ("a",), ("b",), ("a", "b")]), _FILTER),
    st.tuples(st.just("list"), st.one_of(st.none(), _PATH), st.one_of(st.none(), _PATH),
              st.one_of(st.none(), st.integers(1, 3))),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_OP, max_size=25))
def test_differential_against_inmemorystore(tmp_path_factory, ops):
    ref = InMemoryStore()
    with Database.open(str(tmp_path_factory.mktemp("d") / "db"), durability="off", sweep_interval_s=None) as db:
        s = InmemStore(db)
        for op in ops:
            kind = op[0]
            if kind == "put":
                ref.put(op[1], op[2], op[3])
                s.put(op[1], op[2], op[3])
            elif kind == "delete":
                ref.delete(op[1], op[2])
                s.delete(op[1], op[2])
            elif kind == "get":
                a, b = ref.get(op[1], op[2]), s.get(op[1], op[2])
                assert (a is None) == (b is None)
                if a is not None:
                    assert (a.namespace, a.key, a.value) == (b.namespace, b.key, b.value)
            elif kind == "search":
                # order is unspecified by BaseStore (InMemoryStore: insertion order; here: key order)
                a = {(i.namespace, i.key, repr(i.value)) for i in ref.search(op[1], filter=op[2], limit=1000)}
                b = {(i.namespace, i.key, repr(i.value)) for i in s.search(op[1], filter=op[2], limit=1000)}
                assert a == b
            else:
                # InMemoryStore keeps namespaces emptied by a delete (or touched by a get) in its listing;
                # the specified listing is of namespaces holding items, so drop its empty ones first
                for ns in [ns for ns, items in ref._data.items() if not items]:
                    del ref._data[ns]
                kw = {"prefix": op[1], "suffix": op[2], "max_depth": op[3]}
                assert ref.list_namespaces(**kw) == s.list_namespaces(**kw)


# --- crash: acknowledged puts survive SIGKILL ----------------------------------------------------

CHILD = r'''
import sys, threading
from tests.checkout import use_checkout
use_checkout()
from inmem import Database
from inmem.integrations.langgraph import InmemStore

db = Database.open(sys.argv[1], durability="strict")
store = InmemStore(db)
lock = threading.Lock()

def worker(t):
    for i in range(100000):
        ttl = 1 if i % 5 == 4 else None
        store.put(("crash", str(t)), "k%d" % i, {"t": t, "i": i, "pad": "x" * 50}, ttl=ttl)
        if i % 3 == 2:
            store.put(("crash", str(t)), "k%d" % (i - 1), {"t": t, "i": -1}, ttl=1 if i % 5 == 0 else None)
        with lock:
            sys.stdout.write("ack %d %d\n" % (t, i))
            sys.stdout.flush()

threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(4)]
for th in threads:
    th.start()
for th in threads:
    th.join()
print("done", flush=True)
sys.stdin.read()
'''


def test_acknowledged_puts_survive_sigkill(dbdir):
    acks = [(int(t), int(i)) for t, i in acks_until_sigkill(CHILD, dbdir, 400)]
    acked = set(acks)
    with Database.open(dbdir, clock=lambda: time.time() + 3600, sweep_interval_s=None) as db:
        s = InmemStore(db)
        for t, i in acks:
            item = s.get(("crash", str(t)), f"k{i}")
            if i % 5 == 4:
                assert item is None, "an expired item was returned after reopening"
            else:
                assert item is not None, f"acknowledged put {(t, i)} lost"
                if i % 3 == 1 and (t, i + 1) in acked:
                    assert item.value["i"] == -1, f"acknowledged overwrite of {(t, i)} lost"
                assert item.value["t"] == t


def test_langmem_manage_and_search_tools_on_the_store(tmp_path):
    """LangMem's memory tools (driven directly, no LLM) work on an InmemStore: create, update, delete
    and search memories in a per-user namespace; every change is a commit in the store's history."""
    langmem = pytest.importorskip("langmem")
    from inmem.embeddings import HashingEmbedder

    with Database.open(str(tmp_path / "db"), durability="off", sweep_interval_s=None) as db:
        store = InmemStore(db, index={"dims": 64, "embed": HashingEmbedder(dim=64)})
        manage = langmem.create_manage_memory_tool(namespace=("memories", "{user_id}"), store=store)
        search = langmem.create_search_memory_tool(namespace=("memories", "{user_id}"), store=store)
        cfg = {"configurable": {"user_id": "u1"}}
        created = manage.invoke({"content": "user prefers green tea", "action": "create"}, config=cfg)
        key = created.rsplit(" ", 1)[-1]
        manage.invoke({"content": "user drinks coffee in the morning", "action": "create"}, config=cfg)
        found = json.loads(search.invoke({"query": "green tea"}, config=cfg))  # what the agent reads
        assert found[0]["key"] == key and found[0]["value"] == {"content": "user prefers green tea"}
        assert [f["key"] for f in found] == [h.key for h in store.search(("memories", "u1"), query="green tea")]
        manage.invoke({"content": "user prefers oolong tea", "action": "update", "id": key}, config=cfg)
        assert store.get(("memories", "u1"), key).value == {"content": "user prefers oolong tea"}
        manage.invoke({"action": "delete", "id": key}, config=cfg)
        assert store.get(("memories", "u1"), key) is None
        assert store.search(("memories", "u2")) == []  # another user's namespace: empty
        versions = [item.value["content"] if item else None for _, _, item in store.history(("memories", "u1"), key)]
        assert versions == ["user prefers green tea", "user prefers oolong tea", None]
