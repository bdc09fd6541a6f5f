"""Documents: the operations against RFC 7396 / RFC 6902 and a jsonpatch oracle, the contract of every
call, schemas, history/replay/diff/fork — and blind operations under concurrency.

The concurrency tests are the point of the primitive: 8 threads incrementing
and appending on one document never conflict and lose nothing; a transaction
that *read* the document is validated as usual (a lost update is caught); a
blind operation that no longer applies at commit fails the whole commit.
"""

from __future__ import annotations

import copy
import threading

import jsonpatch
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inmem import Database, InvalidArgument, InvalidValue, PatchTestFailed, TransactionConflict
from inmem.jsondoc import MISSING, apply_op, apply_patch, make_op, merge_patch

from .conftest import assert_refused_unwritten, run_interleaved


@pytest.fixture
def db(dbdir):
    with Database.open(dbdir, durability="off") as d:
        yield d


@pytest.fixture
def run(db):
    return db.begin_run("agent")


# --- RFC 7396 Appendix A: every example ------------------------------------------------------------

RFC7396 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize("target,patch,result", RFC7396)
def test_rfc7396_appendix_a(db, run, target, patch, result):
    assert merge_patch(copy.deepcopy(target), copy.deepcopy(patch)) == result
    db.docs.set(run, "d", target)
    db.docs.merge(run, "d", patch)
    assert db.docs.get(run, "d") == result


# --- RFC 6902 Appendix A: every example ------------------------------------------------------------

RFC6902 = [
    ("A.1", {"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}], {"baz": "qux", "foo": "bar"}),
    ("A.2", {"foo": ["bar", "baz"]}, [{"op": "add", "path": "/foo/1", "value": "qux"}],
     {"foo": ["bar", "qux", "baz"]}),
    ("A.3", {"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
    ("A.4", {"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}], {"foo": ["bar", "baz"]}),
    ("A.5", {"baz": "qux", "foo": "bar"}, [{"op": "replace", "path": "/baz", "value": "boo"}],
     {"baz": "boo", "foo": "bar"}),
    ("A.6", {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
     [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
     {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}),
    ("A.7", {"foo": ["all", "grass", "cows", "eat"]}, [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
     {"foo": ["all", "cows", "eat", "grass"]}),
    ("A.8", {"baz": "qux", "foo": ["a", 2, "c"]},
     [{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}],
     {"baz": "qux", "foo": ["a", 2, "c"]}),
    ("A.9", {"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}], PatchTestFailed),
    ("A.10", {"foo": "bar"}, [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
     {"foo": "bar", "child": {"grandchild": {}}}),
    ("A.11", {"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
     {"foo": "bar", "baz": "qux"}),
    ("A.12", {"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}], InvalidArgument),
    ("A.13", {"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}], {"foo": "bar", "baz": "qux"}),
    ("A.14", {"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}], {"/": 9, "~1": 10}),
    ("A.15", {"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": "10"}], PatchTestFailed),
    ("A.16", {"foo": ["bar"]}, [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
     {"foo": ["bar", ["abc", "def"]]}),
]


@pytest.mark.parametrize("name,doc,ops,result", RFC6902, ids=[r[0] for r in RFC6902])
def test_rfc6902_appendix_a(db, dbdir, run, name, doc, ops, result):
    db.docs.set(run, "d", doc)
    if isinstance(result, type):
        assert_refused_unwritten(db, dbdir, lambda: db.docs.patch(run, "d", ops), result)
        assert db.docs.get(run, "d") == doc  # all or nothing
    else:
        db.docs.patch(run, "d", ops)
        assert db.docs.get(run, "d") == result


def test_a_failing_patch_changes_nothing_even_after_earlier_ops_applied(db, dbdir, run):
    db.docs.set(run, "d", {"a": [1, 2], "b": 1})
    ops = [{"op": "remove", "path": "/a/0"}, {"op": "add", "path": "/c", "value": 3},
           {"op": "test", "path": "/b", "value": 2}]
    assert_refused_unwritten(db, dbdir, lambda: db.docs.patch(run, "d", ops), PatchTestFailed)
    assert db.docs.get(run, "d") == {"a": [1, 2], "b": 1}


# --- jsonpatch as a differential oracle ---------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from(["x", "y", ""]))
_json = st.recursive(_scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=3), st.dictionaries(st.sampled_from(["a", "b", "c", "~", "/"]), kids, max_size=3)),
    max_leaves=8)
_pointer = st.lists(st.sampled_from(["a", "b", "c", "0", "1", "2", "-", "~0", "~1", "01"]), max_size=3).map(
    lambda segs: "".join("/" + s for s in segs))


@st.composite
def _patch_op(draw):
    op = draw(st.sampled_from(["add", "remove", "replace", "move", "copy", "test"]))
    out = {"op": op, "path": draw(_pointer)}
    if op in ("add", "replace", "test"):
        out["value"] = draw(_json)
    if op in ("move", "copy"):
        out["from"] = draw(_pointer)
    return out


def _oracle(doc, ops):
    try:
        return jsonpatch.apply_patch(doc, ops)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError, IndexError):
        return "error"


def _ours(doc, ops):
    try:
        return apply_patch(doc, make_op("patch", ops=ops)["ops"])
    except InvalidArgument:
        return "error"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), _json, max_size=3), st.lists(_patch_op(), max_size=4))
def test_json_patch_agrees_with_jsonpatch(doc, ops):
    want = _oracle(copy.deepcopy(doc), copy.deepcopy(ops))
    got = _ours(copy.deepcopy(doc), ops)
    if want == "error" or got == "error":
        assert want == got == "error", (doc, ops, want, got)
    else:
        assert got == want and jsonpatch.make_patch(got, want).patch == []


@settings(max_examples=300, deadline=None)
@given(_json, _json)
def test_merge_patch_agrees_with_a_plain_recursive_rfc7396(target, patch):
    def reference(t, p):  # RFC 7396 §2's pseudo-code, literally
        if isinstance(p, dict):
            if not isinstance(t, dict):
                t = {}
            for name, value in p.items():
                if value is None:
                    t.pop(name, None)
                else:
                    t[name] = reference(t.get(name), value)
            return t
        return p

    assert merge_patch(copy.deepcopy(target), copy.deepcopy(patch)) == reference(copy.deepcopy(target), patch)


# --- each operation against a plain-Python model, with reopen -----------------------------------------

_segment = st.sampled_from(["a", "b", "n", "0", "1"])
_ops = st.one_of(
    st.tuples(st.just("set"), st.lists(_segment, max_size=2), _json),
    st.tuples(st.just("merge"), st.lists(_segment, max_size=2), _json),
    st.tuples(st.just("append"), st.lists(_segment, min_size=1, max_size=2), st.lists(_scalars, max_size=2)),
    st.tuples(st.just("increment"), st.lists(_segment, min_size=1, max_size=2), st.integers(-3, 3)),
    st.tuples(st.just("toggle"), st.lists(_segment, min_size=1, max_size=2), st.none()),
    st.tuples(st.just("delete"), st.lists(_segment, max_size=2), st.none()),
)


def _model_apply(doc, name, path, arg):
    """An independent model: nested dict/list walking written out plainly; raises ValueError to refuse."""
    doc = doc if doc is MISSING else copy.deepcopy(doc)

    def walk(node, segs, create):
        for s in segs:
            if isinstance(node, dict):
                if s not in node:
                    if not create:
                        return None
                    node[s] = {}
                node = node[s]
            elif isinstance(node, list):
                if not (s.isdigit() and (s == "0" or s[0] != "0")) or int(s) >= len(node):
                    raise ValueError
                node = node[int(s)]
            else:
                raise ValueError
        return node

    def get(d, segs):
        node = d
        for s in segs:
            if isinstance(node, dict) and s in node:
                node = node[s]
            elif isinstance(node, list) and s.isdigit() and (s == "0" or s[0] != "0") and int(s) < len(node):
                node = node[int(s)]
            else:
                return MISSING
        return node

    def put(d, segs, value):
        if not segs:
            return value
        if d is MISSING or d is None:
            d = {}
        parent = walk(d, segs[:-1], True)
        last = segs[-1]
        if isinstance(parent, dict):
            parent[last] = value
        elif isinstance(parent, list):
            if not (last.isdigit() and (last == "0" or last[0] != "0")) or int(last) > len(parent):
                raise ValueError
            if int(last) == len(parent):
                parent.append(value)
            else:
                parent[int(last)] = value
        else:
            raise ValueError
        return d

    cur = MISSING if doc is MISSING else get(doc, path)
    if name == "set":
        return put(doc, path, copy.deepcopy(arg))
    if name == "merge":
        base = copy.deepcopy(cur) if isinstance(cur, dict) else {}
        return put(doc, path, merge_patch(base, copy.deepcopy(arg)))
    if name == "append":
        if cur is MISSING:
            return put(doc, path, list(arg))
        if not isinstance(cur, list):
            raise ValueError
        return put(doc, path, cur + list(arg))
    if name == "increment":
        if cur is MISSING:
            return put(doc, path, arg)
        if type(cur) not in (int, float):
            raise ValueError
        return put(doc, path, cur + arg)
    if name == "toggle":
        if cur is MISSING:
            return put(doc, path, True)
        if type(cur) is not bool:
            raise ValueError
        return put(doc, path, not cur)
    # delete
    if not path:
        return MISSING
    if doc is MISSING:
        return doc
    parent = doc
    for s in path[:-1]:  # a scalar on the way refuses; a missing member or index: nothing to delete
        if not isinstance(parent, (dict, list)):
            raise ValueError
        parent = get(parent, [s])
        if parent is MISSING:
            return doc
    if isinstance(parent, dict):
        parent.pop(path[-1], None)
    elif isinstance(parent, list):
        s = path[-1]
        if s.isdigit() and (s == "0" or s[0] != "0") and int(s) < len(parent):
            del parent[int(s)]
    elif parent is not MISSING:
        raise ValueError
    return doc


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(st.lists(_ops, min_size=1, max_size=25), st.integers(0, 24))
def test_operations_match_a_plain_python_model_across_reopen(tmp_path_factory, ops, reopen_at):
    path = str(tmp_path_factory.mktemp("docs"))
    model = MISSING
    db = Database.open(path, durability="off")
    try:
        run = db.begin_run("m")
        for n, (name, segs, arg) in enumerate(ops):
            if n == reopen_at:
                db.close()
                db = Database.open(path, durability="off")
            try:
                want = _model_apply(model, name, segs, arg)
            except ValueError:
                want = "refused"
            call = {"set": lambda: db.docs.set(run, "d", arg, segs or None),
                    "merge": lambda: db.docs.merge(run, "d", arg, segs or None),
                    "append": lambda: db.docs.append(run, "d", segs, *arg),
                    "increment": lambda: db.docs.increment(run, "d", segs, arg),
                    "toggle": lambda: db.docs.toggle(run, "d", segs),
                    "delete": lambda: db.docs.delete(run, "d", segs or None)}[name]
            if want == "refused":
                with pytest.raises(InvalidArgument):
                    call()
            else:
                call()
                model = want
            got = db.docs.get(run, "d")
            assert got == (None if model is MISSING else model), (n, name, segs, arg)
        assert db.replay_run(run) == db.run_state(run)
    finally:
        db.close()


# --- the contract ----------------------------------------------------------------------------------------

BAD = [
    ("name empty", lambda db, r: db.docs.set(r, "", 1), InvalidArgument),
    ("name NUL", lambda db, r: db.docs.set(r, "a\x00", 1), InvalidArgument),
    ("name int", lambda db, r: db.docs.set(r, 5, 1), InvalidArgument),
    ("value tuple", lambda db, r: db.docs.set(r, "d", (1, 2)), InvalidValue),
    ("value set", lambda db, r: db.docs.set(r, "d", {1}), InvalidValue),
    ("value NaN", lambda db, r: db.docs.set(r, "d", {"x": float("nan")}), InvalidValue),
    ("value int key", lambda db, r: db.docs.set(r, "d", {1: 2}), InvalidValue),
    ("value bytes", lambda db, r: db.docs.set(r, "d", b"x"), InvalidValue),
    ("value cycle", lambda db, r: db.docs.set(r, "d", _cycle()), InvalidValue),
    ("path empty", lambda db, r: db.docs.set(r, "d", 1, ""), InvalidArgument),
    ("path empty segment", lambda db, r: db.docs.set(r, "d", 1, "a..b"), InvalidArgument),
    ("path negative", lambda db, r: db.docs.set(r, "d", 1, ["list", -1]), InvalidArgument),
    ("path float", lambda db, r: db.docs.set(r, "d", 1, ["a", 1.5]), InvalidArgument),
    ("path through scalar", lambda db, r: db.docs.set(r, "d", 1, "n.x"), InvalidArgument),
    ("index past end", lambda db, r: db.docs.set(r, "d", 1, "list.5"), InvalidArgument),
    ("index not a number", lambda db, r: db.docs.set(r, "d", 1, "list.x"), InvalidArgument),
    ("increment str", lambda db, r: db.docs.increment(r, "d", "s"), InvalidArgument),
    ("increment bool", lambda db, r: db.docs.increment(r, "d", "flag"), InvalidArgument),
    ("increment by str", lambda db, r: db.docs.increment(r, "d", "n", "1"), InvalidArgument),
    ("increment by bool", lambda db, r: db.docs.increment(r, "d", "n", True), InvalidArgument),
    ("increment by inf", lambda db, r: db.docs.increment(r, "d", "n", float("inf")), InvalidArgument),
    ("increment overflow", lambda db, r: db.docs.increment(r, "d", "big", 1.7e308), InvalidArgument),
    ("toggle number", lambda db, r: db.docs.toggle(r, "d", "n"), InvalidArgument),
    ("append to object", lambda db, r: db.docs.append(r, "d", "obj", 1), InvalidArgument),
    ("append tuple value", lambda db, r: db.docs.append(r, "d", "list", (1,)), InvalidValue),
    ("merge NaN", lambda db, r: db.docs.merge(r, "d", {"x": float("inf")}), InvalidValue),
    ("delete through scalar", lambda db, r: db.docs.delete(r, "d", "n.x"), InvalidArgument),
    ("patch not a list", lambda db, r: db.docs.patch(r, "d", {"op": "add"}), InvalidArgument),
    ("patch bad op", lambda db, r: db.docs.patch(r, "d", [{"op": "frobnicate", "path": "/a"}]), InvalidArgument),
    ("patch no value", lambda db, r: db.docs.patch(r, "d", [{"op": "add", "path": "/a"}]), InvalidArgument),
    ("patch bad pointer", lambda db, r: db.docs.patch(r, "d", [{"op": "remove", "path": "a"}]), InvalidArgument),
    ("patch bad escape", lambda db, r: db.docs.patch(r, "d", [{"op": "remove", "path": "/~2"}]), InvalidArgument),
    ("patch missing", lambda db, r: db.docs.patch(r, "d", [{"op": "remove", "path": "/nope"}]), InvalidArgument),
    ("patch move into child", lambda db, r: db.docs.patch(r, "d", [{"op": "move", "from": "/obj",
                                                                    "path": "/obj/x"}]), InvalidArgument),
    ("define not a model", lambda db, r: db.docs.define(r, "d", dict), InvalidArgument),
    ("define invalid doc", lambda db, r: db.docs.define(r, "d", Strict), InvalidValue),
    ("get_model undefined", lambda db, r: db.docs.get_model(r, "d"), InvalidArgument),
]


def _cycle():
    x: list = []
    x.append(x)
    return x


class Strict(pydantic.BaseModel):
    only: int


@pytest.mark.parametrize("name,call,error", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_before_anything_is_written(db, dbdir, run, name, call, error):
    doc = {"n": 1, "s": "x", "flag": True, "list": [1], "obj": {"k": 1}, "big": 1.7e308}
    db.docs.set(run, "d", doc)
    assert_refused_unwritten(db, dbdir, lambda: call(db, run), error)
    assert db.docs.get(run, "d") == doc


def test_bad_input_in_a_transaction_is_refused_at_the_call_and_the_rest_commits(db, run):
    db.docs.set(run, "d", {"s": "x", "n": 1})
    with db.transaction() as tx:
        with pytest.raises(InvalidArgument):
            tx.docs.increment(run, "d", "s")
        tx.docs.increment(run, "d", "n")
    assert db.docs.get(run, "d") == {"s": "x", "n": 2}


def test_paths_reads_and_names(db, run):
    assert db.docs.get(run, "d") is None and db.docs.names(run) == []
    db.docs.set(run, "d", "Ada", "user.name")  # intermediate objects are created
    db.docs.set(run, "d", [10, 20], ["user", "a.b"])  # a list path: a name holding a dot
    db.docs.set(run, "d", 30, "user.a.b")  # ... which the dotted form cannot reach: created beside it
    db.docs.append(run, "d", ["user", "a.b"], 40)
    db.docs.set(run, "d", 25, ["user", "a.b", 1])
    db.docs.set(run, "d", 50, "user.a\u00e9")
    assert db.docs.get(run, "d") == {"user": {"name": "Ada", "a.b": [10, 25, 40], "a": {"b": 30}, "a\u00e9": 50}}
    assert db.docs.get(run, "d", "user.a.b") == 30 and db.docs.get(run, "d", ["user", "a.b", 2]) == 40
    assert db.docs.get(run, "d", "user.nope.deeper") is None and db.docs.get(run, "d", "user.name.x") is None
    got = db.docs.get(run, "d")
    got["user"]["name"] = "changed"  # a copy
    assert db.docs.get(run, "d", "user.name") == "Ada"
    value = {"x": [1]}
    db.docs.set(run, "e", value)
    value["x"].append(2)  # the caller's object is never kept
    assert db.docs.get(run, "e") == {"x": [1]}
    db.docs.set(run, "e", None, "x")  # JSON null is a value
    assert db.docs.get(run, "e") == {"x": None}
    assert db.docs.names(run) == ["d", "e"]
    db.docs.delete(run, "e")
    db.docs.delete(run, "e")  # nothing to delete: not an error
    assert db.docs.names(run) == ["d"] and db.docs.get(run, "e") is None


def test_operations_on_a_missing_document_create_it(db, run):
    db.docs.increment(run, "c", "n", 2.5)
    db.docs.append(run, "l", "items", "a", "b")
    db.docs.toggle(run, "t", "on")
    db.docs.merge(run, "m", {"a": {"b": 1, "c": None}})
    db.docs.patch(run, "p", [{"op": "add", "path": "", "value": {"x": 1}}])
    assert [db.docs.get(run, n) for n in "cltmp"] == [{"n": 2.5}, {"items": ["a", "b"]}, {"on": True},
                                                       {"a": {"b": 1}}, {"x": 1}]
    with pytest.raises(InvalidArgument):
        db.docs.patch(run, "q", [{"op": "add", "path": "/x", "value": 1}])  # RFC 6902 has no absent document


def test_ended_run_refuses_writes_and_reads_still_work(db, run):
    from inmem import RunClosed
    db.docs.set(run, "d", {"a": 1})
    db.end_run(run, "completed")
    with pytest.raises(RunClosed):
        db.docs.increment(run, "d", "a")
    assert db.docs.get(run, "d", "a") == 1


# --- blind operations under concurrency -----------------------------------------------------------------

THREADS, PER = 8, 500


@pytest.mark.parametrize("mode", ["autocommit", "transaction"])
def test_eight_threads_increment_and_append_without_a_conflict_or_a_lost_op(db, run, mode):
    db.docs.set(run, "hot", {"count": 0, "log": []})
    conflicts = db.stats().get("conflicts", 0)

    def worker(t):
        for i in range(PER // 2):
            if mode == "autocommit":
                db.docs.increment(run, "hot", "count")
                db.docs.append(run, "hot", "log", f"{t}-{i}")
            else:
                with db.transaction() as tx:  # a conflict would raise here: no retry anywhere
                    tx.docs.increment(run, "hot", "count")
                    tx.docs.append(run, "hot", "log", f"{t}-{i}")

    run_interleaved([threading.Thread(target=worker, args=(t,)) for t in range(THREADS)])
    doc = db.docs.get(run, "hot")
    assert doc["count"] == THREADS * PER // 2
    assert sorted(doc["log"]) == sorted(f"{t}-{i}" for t in range(THREADS) for i in range(PER // 2))
    for t in range(THREADS):  # each thread's appends in its own order: commit order is respected
        mine = [x for x in doc["log"] if x.startswith(f"{t}-")]
        assert mine == [f"{t}-{i}" for i in range(PER // 2)]
    assert db.stats().get("conflicts", 0) == conflicts


def test_two_transactions_from_one_snapshot_both_increment(db, run):
    db.docs.set(run, "d", {"n": 0})
    t1, t2 = db.transaction(), db.transaction()
    t1.docs.increment(run, "d", "n", 1)
    t2.docs.increment(run, "d", "n", 10)
    t1.commit()
    t2.commit()  # blind: no conflict, applied to the latest document
    assert db.docs.get(run, "d", "n") == 11


def test_read_then_write_is_validated_a_lost_update_is_caught(db, run):
    db.docs.set(run, "d", {"n": 0})
    tx = db.transaction()
    seen = tx.docs.get(run, "d", "n")  # a read: the document joins the read set
    db.docs.increment(run, "d", "n")  # another commit
    tx.docs.set(run, "d", seen + 1, "n")  # read-modify-write would lose that increment
    with pytest.raises(TransactionConflict):
        tx.commit()
    assert db.docs.get(run, "d", "n") == 1


def test_reading_after_own_blind_ops_sees_them_and_is_validated(db, run):
    db.docs.set(run, "d", {"n": 0, "l": []})
    tx = db.transaction()
    tx.docs.increment(run, "d", "n", 5)
    tx.docs.append(run, "d", "l", "x")
    assert tx.docs.get(run, "d") == {"n": 5, "l": ["x"]}  # own ops visible
    assert db.docs.get(run, "d") == {"n": 0, "l": []}  # nobody else's
    db.docs.increment(run, "d", "n")
    with pytest.raises(TransactionConflict):  # it read: validated like any read
        tx.commit()


def test_a_blind_op_that_no_longer_applies_fails_the_whole_commit(db, run):
    db.docs.set(run, "d", {"n": 0})
    db.kv.put(run, "k", "before")
    tx = db.transaction()
    tx.docs.increment(run, "d", "n")  # valid on the snapshot
    tx.kv.put(run, "k", "after")
    db.docs.set(run, "d", "now a string", "n")  # another commit changes its type
    version = db.stats()["commit_version"]
    with pytest.raises(InvalidArgument, match="applied at commit"):
        tx.commit()
    assert db.stats()["commit_version"] == version  # nothing written, not even the kv put
    assert db.kv.get(run, "k") == "before" and db.docs.get(run, "d") == {"n": "now a string"}


def test_blind_ops_are_applied_to_the_latest_document_in_commit_order(db, run):
    db.docs.set(run, "d", {"log": []})
    tx = db.transaction()
    tx.docs.append(run, "d", "log", "tx")
    db.docs.append(run, "d", "log", "auto")  # commits first
    tx.commit()
    assert db.docs.get(run, "d", "log") == ["auto", "tx"]
    rolled = db.transaction()
    rolled.docs.append(run, "d", "log", "never")
    rolled.rollback()
    assert db.docs.get(run, "d", "log") == ["auto", "tx"]


def test_a_commit_encodes_the_document_once(db, run, monkeypatch):
    import inmem.primitives.docs as docs_module

    db.docs.set(run, "big", {"body": "x" * 100_000, "meta": {}})
    calls = []
    real = docs_module.encode_record
    monkeypatch.setattr(docs_module, "encode_record", lambda *a: calls.append(1) or real(*a))
    db.docs.merge(run, "big", {"meta": {"k": "v" * 1000}})
    assert len(calls) == 1
    calls.clear()
    with db.transaction() as tx:
        for i in range(10):
            tx.docs.merge(run, "big", {"meta": {f"k{i}": i}})
    assert len(calls) == 1  # ten merges, one encoding at commit
    calls.clear()
    tx = db.transaction()
    tx.docs.increment(run, "big", "meta.n")
    db.docs.increment(run, "big", "meta.m")  # changed meanwhile: re-applied, still one encoding
    calls.clear()
    tx.commit()
    assert len(calls) == 1 and db.docs.get(run, "big", "meta.n") == 1 and db.docs.get(run, "big", "meta.m") == 1


def test_names_in_a_transaction_see_own_new_documents(db, run):
    db.docs.set(run, "a", 1)
    with db.transaction() as tx:
        tx.docs.set(run, "b", 2)
        tx.docs.delete(run, "a")
        assert tx.docs.names(run) == ["b"]
    assert db.docs.names(run) == ["b"]


# --- schemas ----------------------------------------------------------------------------------------------

class Profile(pydantic.BaseModel):
    name: str = "anonymous"
    visits: int = 0
    tags: list[str] = []


class ProfileV2(pydantic.BaseModel):
    name: str = "anonymous"
    visits: int = 0
    tags: list[str] = []
    email: str | None = None


def test_schema_defaults_validation_and_get_model(db, dbdir, run):
    definition = db.docs.define(run, "me", Profile)
    assert definition["model"] == f"{__name__}:Profile" and definition["schema"] == Profile.model_json_schema()
    assert db.docs.get_model(run, "me") is None
    db.docs.increment(run, "me", "visits")
    assert db.docs.get(run, "me") == {"name": "anonymous", "visits": 1, "tags": []}  # defaults filled
    assert_refused_unwritten(db, dbdir, lambda: db.docs.merge(run, "me", {"visits": "many"}), InvalidValue)
    assert_refused_unwritten(db, dbdir, lambda: db.docs.append(run, "me", "tags", 5), InvalidValue)
    with pytest.raises(InvalidValue) as info:
        db.docs.set(run, "me", "x", "visits")
    assert info.value.errors[0]["loc"] == ("visits",)  # pydantic's error list
    # pydantic ignores unknown members by default: refused, never silently dropped
    assert_refused_unwritten(db, dbdir, lambda: db.docs.append(run, "me", "log", "x"), InvalidValue)
    db.docs.append(run, "me", "tags", "admin")
    profile = db.docs.get_model(run, "me")
    assert isinstance(profile, Profile) and profile.visits == 1 and profile.tags == ["admin"]
    with db.transaction() as tx:  # inside a transaction too, at the call
        with pytest.raises(InvalidValue):
            tx.docs.set(run, "me", [], "name")
        tx.docs.set(run, "me", "Ada", "name")
    assert db.docs.get(run, "me", "name") == "Ada"


def test_schema_survives_reopen_and_a_changed_schema_is_reported(dbdir, monkeypatch):
    import sys

    with Database.open(dbdir) as db:
        run = db.begin_run()
        db.docs.define(run, "me", Profile)
        db.docs.set(run, "me", {"name": "Ada"})
    with Database.open(dbdir) as db:  # the model is imported by its path
        with pytest.raises(InvalidValue):
            db.docs.set(run, "me", "lots", "visits")
        db.docs.increment(run, "me", "visits")
    monkeypatch.setattr(sys.modules[__name__], "Profile", ProfileV2)  # the class changed in the code
    with Database.open(dbdir) as db:
        with pytest.raises(InvalidArgument, match="changed .*added: email"):
            db.docs.increment(run, "me", "visits")
        db.docs.define(run, "me", ProfileV2)  # accepted again, explicitly
        db.docs.set(run, "me", "a@b.c", "email")
        assert db.docs.get(run, "me") == {"name": "Ada", "visits": 1, "tags": [], "email": "a@b.c"}


def test_a_local_model_must_be_defined_again_after_reopen(dbdir):
    class Local(pydantic.BaseModel):
        n: int = 0

    with Database.open(dbdir) as db:
        run = db.begin_run()
        db.docs.define(run, "d", Local)
        db.docs.increment(run, "d", "n")
    with Database.open(dbdir) as db:
        assert db.docs.get(run, "d") == {"n": 1}  # reads need no model
        with pytest.raises(InvalidArgument, match="cannot be imported"):
            db.docs.increment(run, "d", "n")
        db.docs.define(run, "d", Local)
        db.docs.increment(run, "d", "n")
        assert db.docs.get_model(run, "d") == Local(n=2)


# --- history, replay, diff, fork ----------------------------------------------------------------------------

def test_history_records_each_operation_and_replay_rebuilds_every_version(db, run):
    db.docs.set(run, "ctx", {"user": {"name": "x"}})
    db.docs.increment(run, "ctx", "metrics.count", 2)
    with db.transaction() as tx:
        tx.docs.append(run, "ctx", "hooks", "r1")
        tx.docs.merge(run, "ctx", {"user": {"seen": True}})
    db.docs.delete(run, "ctx", "user.name")
    db.docs.patch(run, "ctx", [{"op": "replace", "path": "/metrics/count", "value": 7}])
    db.docs.delete(run, "ctx")
    commits = db.history(run)[1:]  # after the run's creation
    assert [[(o.primitive, o.key, o.kind) for o in c.ops] for c in commits] == [
        [("docs", "ctx", "set")], [("docs", "ctx", "increment")],
        [("docs", "ctx", "append"), ("docs", "ctx", "merge")], [("docs", "ctx", "delete")],
        [("docs", "ctx", "patch")], [("docs", "ctx", "delete")]]
    assert commits[1].ops[0].value == {"path": ["metrics", "count"], "by": 2}
    assert commits[2].ops[1].value == {"path": [], "patch": {"user": {"seen": True}}}
    assert commits[-1].ops[0].value == {"path": []}
    docs_at = [db.replay_run(run, at_version=c.version).docs.get("ctx") for c in commits]
    assert docs_at == [{"user": {"name": "x"}}, {"user": {"name": "x"}, "metrics": {"count": 2}},
                       {"user": {"name": "x", "seen": True}, "metrics": {"count": 2}, "hooks": ["r1"]},
                       {"user": {"seen": True}, "metrics": {"count": 2}, "hooks": ["r1"]},
                       {"user": {"seen": True}, "metrics": {"count": 7}, "hooks": ["r1"]}, None]
    state = db.replay_run(run, at_version=commits[2].version)
    with pytest.raises(TypeError):
        state.docs["ctx"]["user"]["name"] = "changed"  # read-only all the way down
    assert db.replay_run(run) == db.run_state(run)


def test_fork_copies_documents_and_diff_shows_changes_per_path(db, run):
    db.docs.set(run, "ctx", {"user": {"name": "x"}, "items": [1]})
    fork = db.fork_run(run)
    assert db.run_state(fork).docs == {"ctx": {"user": {"name": "x"}, "items": [1]}}
    assert [(o.kind, o.key) for o in db.history(fork)[0].ops if o.primitive == "docs"] == [("put", "ctx")]
    db.docs.merge(fork, "ctx", {"user": {"name": None, "email": "e"}})
    db.docs.append(fork, "ctx", "items", 2)
    db.docs.set(fork, "new", 1)
    diff = db.diff_runs(run, fork)
    assert diff.docs.added == {("ctx", "user.email"): "e", ("new", ""): 1}
    assert diff.docs.removed == {("ctx", "user.name"): "x"}
    assert diff.docs.changed == {("ctx", "items"): ([1], [1, 2])}
    assert "~ docs ctx:items: [1] -> [1, 2]" in str(diff)
    assert db.diff_runs(run, fork, at_b=db.history(fork)[0].version).is_empty()


# --- damage: never returned as data ----------------------------------------------------------------------

@pytest.mark.parametrize("record", [
    {"doc": {"a": 1}},  # no ops: not a document record
    {"doc": {"when": __import__("datetime").datetime(2026, 1, 1, tzinfo=__import__("datetime").timezone.utc)},
     "ops": [], "updated_us": 0},  # storable, but not JSON-like
    "just a string",
], ids=["no-ops", "not-json", "not-a-map"])
def test_a_damaged_document_record_is_reported_not_returned(dbdir, record):
    from inmem import CorruptionError
    from inmem.codec import encode_value
    from inmem.keys import TAG_DOC, run_id_bytes, run_prefix
    from inmem.testing import kernel
    from inmem.verify import verify_directory

    with Database.open(dbdir, durability="strict") as db:
        run = db.begin_run("agent")
        db.docs.set(run, "good", {"x": 1})
        key = run_prefix(run_id_bytes(run), TAG_DOC) + b"bad\x00\x00"
        kernel(db).commit([(key, encode_value(record))], (run,))
        with pytest.raises(CorruptionError):
            db.docs.get(run, "bad")
        with pytest.raises(CorruptionError):
            db.run_state(run)
        assert db.docs.get(run, "good") == {"x": 1}
    report = verify_directory(dbdir)
    assert not report["ok"] and any("document 'bad'" in p for p in report["problems"])
