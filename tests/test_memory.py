"""Agent memory recipes (``inmem.memory``): ConversationBuffer limits under concurrent appenders (checked
after every commit, from the history), context formats, a hypothesis model against a deque with limits;
WorkingMemory time to live with an injected clock; Memory (Mem0 shape) scoping, filters, dedup, update,
history, delete_all, persistence; bad input refused before anything is written.
"""

from __future__ import annotations

import collections
import itertools
import math
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inmem import Database, InvalidArgument, InvalidKey, InvalidValue, RunClosed, RunNotFound
from inmem.embeddings import HashingEmbedder
from inmem.memory import ConversationBuffer, Memory, MemoryEvent, MemoryItem, Message, WorkingMemory, estimate_tokens

from .conftest import assert_refused_unwritten, run_interleaved




@pytest.fixture
def db(dbdir, clock):
    with Database.open(dbdir, durability="off", clock=clock, sweep_interval_s=None) as d:
        yield d


@pytest.fixture
def run(db):
    return db.begin_run("agent")


# --- ConversationBuffer ----------------------------------------------------------------------------


def test_estimate_tokens_is_ceil_of_four_thirds_of_words():
    assert estimate_tokens("") == 0
    assert estimate_tokens("one") == 2  # ceil(4/3)
    assert estimate_tokens("a b c") == 4
    assert estimate_tokens("  a\n\tb  ") == 3


def test_buffer_trims_oldest_by_messages_and_tokens(db, run):
    buf = ConversationBuffer(db, run, "chat", max_messages=3, max_tokens=10, count_tokens=len)
    for text in ["aa", "bbb", "c", "dddd"]:
        buf.append("user", text)
    assert [m.content for m in buf.messages()] == ["bbb", "c", "dddd"]  # by count
    m = buf.append("assistant", "eeeee", {"model": "x"})  # 3+1+4+5 = 13 > 10: drop bbb -> 10
    assert isinstance(m, Message) and (m.seq, m.role, m.tokens, m.metadata) == (4, "assistant", 5, {"model": "x"})
    assert [x.content for x in buf.messages()] == ["c", "dddd", "eeeee"]
    assert [x.seq for x in buf.messages()] == [2, 3, 4]
    assert buf.messages(limit=2)[0].content == "dddd" and buf.messages(limit=0) == []
    s = buf.stats()
    assert (s["messages"], s["tokens"], s["roles"], s["first_seq"], s["next_seq"]) == \
        (3, 10, {"user": 2, "assistant": 1}, 2, 5)
    buf.append("user", "ffffffffff")  # exactly max_tokens: everything else goes
    assert [x.content for x in buf.messages()] == ["ffffffffff"]
    assert buf.stats()["roles"] == {"user": 1}


def test_buffer_append_and_trim_are_one_commit(db, run):
    buf = ConversationBuffer(db, run, "chat", max_messages=2)
    for i in range(3):
        buf.append("user", f"m{i}")
    last = db.history(run)[-1]
    keys = {(op.key, op.kind) for op in last.ops}
    assert keys == {("buffer/chat/msg/0000000000000002", "put"), ("buffer/chat/msg/0000000000000000", "delete"),
                    ("buffer/chat/head", "put")}


def test_buffer_context_formats(db, run):
    buf = ConversationBuffer(db, run, "chat", max_tokens=None)
    assert buf.context() == "" and buf.context("summary") == ""
    buf.append("system", "Be brief.")
    buf.append("user", "What is\n  the   capital of France?")
    buf.append("assistant", "Paris.")
    assert buf.context() == "system: Be brief.\nuser: What is\n  the   capital of France?\nassistant: Paris."
    assert buf.context("compact") == "system: Be brief. | user: What is the capital of France? | assistant: Paris."
    assert buf.context(max_messages=1) == "assistant: Paris."
    # newest that fit: Paris. (2) + question (ceil(6*4/3)=8) = 10 fits; + Be brief. (3) does not
    assert buf.context("compact", max_tokens=10) == "user: What is the capital of France? | assistant: Paris."
    assert buf.context(max_tokens=1) == ""
    assert buf.context("summary") == ("3 messages (system: 1, user: 1, assistant: 1), about 13 tokens.\n"
                                      "First system: Be brief.\nLast assistant: Paris.")
    buf.append("user", "x " * 300)
    assert buf.context("summary", max_messages=1).endswith("…") and \
        len(buf.context("summary", max_messages=1).splitlines()[1]) == len("First user: ") + 200


def test_buffers_are_independent_and_clear(db, run):
    a = ConversationBuffer(db, run, "a", max_messages=2)
    b = ConversationBuffer(db, run, "ab")
    for i in range(3):
        a.append("user", f"a{i}")
        b.append("user", f"b{i}")
    assert [m.content for m in a.messages()] == ["a1", "a2"]
    assert [m.content for m in b.messages()] == ["b0", "b1", "b2"]
    assert a.clear() == 2 and a.messages() == [] and a.stats()["messages"] == 0
    assert a.append("user", "again").seq == 3  # sequence numbers go on
    assert len(b.messages()) == 3


def test_buffer_refuses_bad_input_before_writing(db, dbdir, run):
    buf = ConversationBuffer(db, run, "chat", max_tokens=5)
    buf.append("user", "hello")
    for call, error in [
        (lambda: buf.append("", "x"), InvalidArgument),
        (lambda: buf.append(None, "x"), InvalidArgument),
        (lambda: buf.append("user", b"x"), InvalidArgument),
        (lambda: buf.append("user", "x", metadata=[1]), InvalidArgument),
        (lambda: buf.append("user", "x", metadata={"f": object()}), InvalidValue),
        (lambda: buf.append("user", "one two three four five"), InvalidArgument),  # 7 tokens > 5
        (lambda: ConversationBuffer(db, run, "c", count_tokens=lambda s: -1).append("user", "x"), InvalidArgument),
        (lambda: ConversationBuffer(db, run, "c", count_tokens=lambda s: 1.5).append("user", "x"), InvalidArgument),
        (lambda: ConversationBuffer(db, "no-such-run", "c").append("user", "x"), RunNotFound),
        (lambda: buf.context("prose"), InvalidArgument),
        (lambda: buf.context(max_tokens=0), InvalidArgument),
        (lambda: buf.messages(limit=-1), InvalidArgument),
    ]:
        assert_refused_unwritten(db, dbdir, call, error)
    for kwargs in [{"name": ""}, {"name": "a/b"}, {"name": "x\x00"}, {"name": 3}, {"name": "c", "max_messages": 0},
                   {"name": "c", "max_tokens": True}, {"name": "c", "count_tokens": 3}]:
        with pytest.raises(InvalidArgument):
            ConversationBuffer(db, run, **kwargs)
    db.end_run(run)
    assert_refused_unwritten(db, dbdir, lambda: buf.append("user", "late"), RunClosed)
    assert [m.content for m in buf.messages()] == ["hello"]  # an ended run stays readable


def _states_after_each_commit(db, run, name):
    """(head, {seq: record}) of buffer ``name`` after each commit of ``run``, from the history."""
    head_key, prefix = f"buffer/{name}/head", f"buffer/{name}/msg/"
    head, msgs = None, {}
    for commit in db.history(run):
        touched = False
        for op in commit.ops:
            if op.primitive != "kv":
                continue
            if op.key == head_key:
                head, touched = op.value, True
            elif op.key.startswith(prefix):
                touched = True
                seq = int(op.key[len(prefix):], 16)
                if op.kind == "delete":
                    del msgs[seq]
                else:
                    msgs[seq] = op.value
        if touched:
            yield head, dict(msgs)


def test_buffer_limits_hold_after_every_commit_with_8_concurrent_appenders(db, run):
    max_messages, max_tokens, per_thread = 6, 60, 15
    # each thread appends messages of its own sizes (count_tokens=len: 1..20 tokens)
    barrier = threading.Barrier(8)
    errors = []

    def appender(t):
        buf = ConversationBuffer(db, run, "chat", max_messages=max_messages, max_tokens=max_tokens,
                                 count_tokens=len)
        try:
            for i in range(per_thread):
                barrier.wait()  # rounds: all 8 race for each append
                buf.append(f"t{t}", f"{t}:{i}:" + "x" * ((t * 7 + i * 3) % 15))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    run_interleaved([threading.Thread(target=appender, args=(t,)) for t in range(8)])
    assert errors == []
    commits = 0
    for head, msgs in _states_after_each_commit(db, run, "chat"):
        commits += 1
        seqs = sorted(msgs)
        assert len(msgs) <= max_messages and sum(m["tokens"] for m in msgs.values()) <= max_tokens
        assert seqs == list(range(head["first"], head["next"]))  # contiguous: the newest, none skipped
        assert head["count"] == len(msgs) and head["tokens"] == sum(m["tokens"] for m in msgs.values())
        assert head["roles"] == dict(collections.Counter(m["role"] for m in msgs.values()))
    assert commits == 8 * per_thread  # one commit per append
    order = [op.value["role"] for c in db.history(run) for op in c.ops
             if op.primitive == "kv" and op.kind == "put" and op.key.startswith("buffer/chat/msg/")]
    assert sum(a != b for a, b in zip(order, order[1:])) >= 7 * per_thread  # the appenders really interleaved
    buf = ConversationBuffer(db, run, "chat", max_messages=max_messages, max_tokens=max_tokens, count_tokens=len)
    assert buf.stats()["next_seq"] == 8 * per_thread
    final = buf.messages()
    assert [m.seq for m in final] == list(range(final[0].seq, 8 * per_thread))
    # each thread's messages keep its own order
    for t in range(8):
        mine = [int(m.content.split(":")[1]) for m in final if m.role == f"t{t}"]
        assert mine == sorted(mine)


class _Model:
    """A plain deque with the buffer's limits: the specification."""

    def __init__(self, max_messages, max_tokens):
        self.q = collections.deque()
        self.max_messages, self.max_tokens = max_messages, max_tokens

    def append(self, role, content, tokens):
        self.q.append((role, content, tokens))
        while (self.max_messages is not None and len(self.q) > self.max_messages) or \
                (self.max_tokens is not None and sum(t for _, _, t in self.q) > self.max_tokens):
            self.q.popleft()


_names = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(max_messages=st.one_of(st.none(), st.integers(1, 6)), max_tokens=st.one_of(st.none(), st.integers(1, 12)),
       ops=st.lists(st.tuples(st.sampled_from(["user", "assistant", "tool"]),
                              st.lists(st.sampled_from(["a", "bb", "c"]), max_size=8).map(" ".join)),
                    max_size=14))
def test_buffer_matches_a_deque_with_limits(db, run, max_messages, max_tokens, ops):
    buf = ConversationBuffer(db, run, f"b{next(_names)}", max_messages=max_messages, max_tokens=max_tokens)
    model = _Model(max_messages, max_tokens)
    for role, content in ops:
        tokens = estimate_tokens(content)
        if max_tokens is not None and tokens > max_tokens:
            with pytest.raises(InvalidArgument):
                buf.append(role, content)
            continue
        buf.append(role, content)
        model.append(role, content, tokens)
        assert [(m.role, m.content, m.tokens) for m in buf.messages()] == list(model.q)
    s = buf.stats()
    assert s["messages"] == len(model.q) and s["tokens"] == sum(t for _, _, t in model.q)
    assert s["roles"] == dict(collections.Counter(r for r, _, _ in model.q))
    assert buf.context() == "\n".join(f"{r}: {c}" for r, c, _ in model.q)


# --- WorkingMemory -----------------------------------------------------------------------------------


def test_working_memory_ttl_with_injected_clock(db, run, clock):
    wm = WorkingMemory(db, run, default_ttl=60)
    wm.set("goal", {"step": 1})
    wm.set("scratch", [1, 2], ttl=5)
    assert wm.get("goal") == {"step": 1} and wm.all() == {"goal": {"step": 1}, "scratch": [1, 2]}
    assert wm.expires_at("scratch").timestamp() == pytest.approx(clock.t + 5)
    assert db.kv.get(run, "wm/goal") == {"step": 1}  # documented layout
    clock.t += 5
    assert wm.get("scratch") is None and wm.get("scratch", "gone") == "gone"  # expired at once, unswept
    assert wm.all() == {"goal": {"step": 1}} and wm.expires_at("scratch") is None
    clock.t += 50
    assert wm.get("goal", refresh=True) == {"step": 1}  # lease renewed: 60 s from now
    clock.t += 59
    assert wm.get("goal") == {"step": 1}
    assert db.sweep() == 1  # scratch is deleted in an ordinary commit
    assert ("kv", "wm/scratch", "delete") in {(op.primitive, op.key, op.kind) for op in db.history(run)[-1].ops}
    assert wm.delete("goal") is True and wm.delete("goal") is False and wm.all() == {}
    forever = WorkingMemory(db, run, default_ttl=None)
    forever.set("k", 1)
    clock.t += 1e6
    assert forever.get("k") == 1 and forever.expires_at("k") is None


def test_working_memory_refuses_bad_input_before_writing(db, dbdir, run):
    wm = WorkingMemory(db, run)
    for call, error in [(lambda: wm.set("", 1), InvalidKey), (lambda: wm.set(3, 1), InvalidKey),
                        (lambda: wm.set("k", 1, ttl=0), InvalidArgument),
                        (lambda: wm.set("k", 1, ttl=float("nan")), InvalidArgument),
                        (lambda: wm.set("k", object()), InvalidValue), (lambda: wm.get(None), InvalidKey)]:
        assert_refused_unwritten(db, dbdir, call, error)
    for bad in (0, -1, True, "60"):
        with pytest.raises(InvalidArgument):
            WorkingMemory(db, run, default_ttl=bad)


# --- Memory --------------------------------------------------------------------------------------------


@pytest.fixture
def mem(db):
    return Memory(db, embedder=HashingEmbedder(128))


def test_memory_add_get_search_scoped(mem):
    a = mem.add("likes green tea", user_id="alice", metadata={"topic": "food"})
    assert isinstance(a, MemoryItem) and (a.memory, a.user_id, a.agent_id, a.run_id, a.metadata) == \
        ("likes green tea", "alice", None, None, {"topic": "food"})
    assert len(a.hash) == 64 and a.created_at == a.updated_at and a.score is None
    mem.add("plays tennis on weekends", user_id="alice", agent_id="coach")
    mem.add("likes green tea a lot", user_id="bob")
    assert mem.get(a.id) == a and mem.get("nope") is None
    hits = mem.search("green tea", user_id="alice")
    assert [h.memory for h in hits] == ["likes green tea", "plays tennis on weekends"]
    assert hits[0].score > hits[1].score and all(h.user_id == "alice" for h in hits)
    assert [h.memory for h in mem.search("green tea", user_id="bob")] == ["likes green tea a lot"]
    assert [h.memory for h in mem.search("tea", agent_id="coach")] == ["plays tennis on weekends"]
    assert mem.search("green tea", user_id="carol") == []
    assert [h.memory for h in mem.search("green tea", user_id="alice", top_k=1)] == ["likes green tea"]
    assert [h.memory for h in mem.search("green tea", user_id="alice", threshold=0.5)] == ["likes green tea"]


def test_memory_filters_use_the_filter_language(mem):
    mem.add("ate sushi", user_id="u", metadata={"topic": "food", "stars": 5})
    mem.add("ate pizza", user_id="u", metadata={"topic": "food", "stars": 3})
    mem.add("ran 5k", user_id="u", metadata={"topic": "sport", "stars": 4})
    mem.add("ate salad", user_id="v", metadata={"topic": "food", "stars": 5})
    memories = lambda items: sorted(m.memory for m in items)  # noqa: E731
    assert memories(mem.get_all(user_id="u", filters={"topic": "food"})) == ["ate pizza", "ate sushi"]
    assert memories(mem.get_all(filters={"stars": {"$gte": 5}})) == ["ate salad", "ate sushi"]
    assert memories(mem.get_all(filters={"$or": [{"topic": "sport"}, {"user_id": "v"}]})) == ["ate salad", "ran 5k"]
    assert memories(mem.search("ate", filters={"$and": [{"user_id": "u"}, {"stars": {"$lt": 5}}]})) == \
        ["ate pizza", "ran 5k"]
    assert [m.memory for m in mem.get_all(user_id="u")] == ["ate sushi", "ate pizza", "ran 5k"]  # oldest first
    assert len(mem.get_all(limit=2)) == 2 and len(mem.get_all()) == 4


def test_memory_dedup_per_scope(db, mem):
    a = mem.add("prefers dark mode", user_id="alice")
    version = db.stats()["commit_version"]
    assert mem.add("prefers dark mode", user_id="alice") == a
    assert db.stats()["commit_version"] == version  # nothing written
    b = mem.add("prefers dark mode", user_id="alice", agent_id="ui")  # another scope: another memory
    c = mem.add("prefers dark mode", user_id="bob")
    assert len({a.id, b.id, c.id}) == 3 and a.hash == b.hash == c.hash
    mem.update(a.id, text="prefers light mode")
    d = mem.add("prefers dark mode", user_id="alice")  # the text is free again
    assert d.id != a.id and mem.add("prefers light mode", user_id="alice").id == a.id


def test_memory_concurrent_adds_of_one_text_store_it_once(db, mem):
    ids, barrier = [], threading.Barrier(8)

    def add():
        barrier.wait()
        ids.append(mem.add("the same fact", user_id="alice").id)

    run_interleaved([threading.Thread(target=add) for _ in range(8)])
    assert len(set(ids)) == 1 and len(mem.get_all(user_id="alice")) == 1
    assert len(db.runs.list(name="memory")) == 1  # the threads began one memory run


def test_memory_update_delete_history(db, mem, clock):
    a = mem.add("lives in Paris", user_id="alice", metadata={"src": "chat"})
    u = mem.update(a.id, text="lives in Lyon")
    assert (u.id, u.memory, u.metadata, u.created_at) == (a.id, "lives in Lyon", {"src": "chat"}, a.created_at)
    assert u.hash != a.hash and u.user_id == "alice"
    assert [h.memory for h in mem.search("Lyon", user_id="alice")] == ["lives in Lyon"]  # re-embedded
    u2 = mem.update(a.id, metadata={"src": "form"})
    assert (u2.memory, u2.metadata) == ("lives in Lyon", {"src": "form"})
    assert mem.get(a.id) == u2
    assert mem.delete(a.id) is True and mem.delete(a.id) is False and mem.get(a.id) is None
    events = mem.history(a.id)
    assert all(isinstance(e, MemoryEvent) for e in events)
    assert [(e.event, e.old_memory, e.new_memory, e.metadata) for e in events] == [
        ("ADD", None, "lives in Paris", {"src": "chat"}),
        ("UPDATE", "lives in Paris", "lives in Lyon", {"src": "chat"}),
        ("UPDATE", "lives in Lyon", "lives in Lyon", {"src": "form"}),
        ("DELETE", "lives in Lyon", None, None)]
    assert [e.version for e in events] == sorted(e.version for e in events)
    assert mem.history("never-existed") == []


def test_memory_delete_all_by_scope(mem):
    mem.add("one", user_id="alice", agent_id="a1")
    mem.add("two", user_id="alice", agent_id="a2")
    mem.add("three", user_id="alice", agent_id="a2", run_id="r")
    mem.add("four", user_id="bob", agent_id="a2")
    assert mem.delete_all(user_id="alice", agent_id="a2") == 2
    assert sorted(m.memory for m in mem.get_all()) == ["four", "one"]
    assert mem.delete_all(user_id="alice") == 1 and mem.delete_all(user_id="alice") == 0
    assert [m.memory for m in mem.get_all()] == ["four"]
    assert mem.add("one", user_id="alice", agent_id="a1").memory == "one"  # dedup entry went with it


def test_memory_refuses_bad_input_before_writing(db, dbdir, mem):
    for call in [lambda: mem.add("x"), lambda: mem.add("", user_id="u"), lambda: mem.add(3, user_id="u"),
                 lambda: mem.add("x", user_id=""), lambda: mem.add("x", user_id=7),
                 lambda: mem.add("x", user_id="u", metadata={"hash": 1}),
                 lambda: mem.add("x", user_id="u", metadata={"user_id": "v"}),
                 lambda: mem.add("x", user_id="u", metadata=["a"]),
                 lambda: mem.add("!!!", user_id="u"),  # no words: the zero vector
                 lambda: mem.delete_all()]:
        assert_refused_unwritten(db, dbdir, call, InvalidArgument)
    assert db.runs.list() == []  # not even the memory run was begun
    a = mem.add("fact", user_id="u")
    for call in [lambda: mem.update(a.id), lambda: mem.update("missing", text="y"),
                 lambda: mem.update(a.id, metadata={"created_us": 0}), lambda: mem.update(a.id, text=""),
                 lambda: mem.search("fact", filters={"$bad": 1}), lambda: mem.search("fact", top_k=0),
                 lambda: mem.search("fact", threshold=float("nan")), lambda: mem.get_all(filters=[1]),
                 lambda: mem.get_all(limit=-1), lambda: mem.get(None), lambda: mem.delete(""),
                 lambda: mem.history(3)]:
        assert_refused_unwritten(db, dbdir, call, InvalidArgument)
    assert_refused_unwritten(db, dbdir, lambda: mem.add("y", user_id="u", metadata={"f": object()}), InvalidValue)
    for kwargs in [{"embedder": 3}, {"dim": 0}, {"run": 5}, {"run_name": ""}]:
        with pytest.raises(InvalidArgument):
            Memory(db, **kwargs)
    with pytest.raises(InvalidArgument, match="dimension"):
        Memory(db, run_name="other").add("x", user_id="u")  # no embedder, no dim, no collection


def test_memory_empty_store_reads_write_nothing(db, dbdir, mem):
    for call in [lambda: mem.search("x", user_id="u"), lambda: mem.get_all(), lambda: mem.get("i"),
                 lambda: mem.history("i"), lambda: mem.delete("i"), lambda: mem.delete_all(user_id="u")]:
        db.sync()
        version = db.stats()["commit_version"]
        assert call() in ([], None, False, 0)
        assert db.stats()["commit_version"] == version
    assert mem.run is None


def test_memory_survives_reopen_and_uses_the_database_embedder(dbdir):
    emb = HashingEmbedder(64)
    with Database.open(dbdir, durability="strict") as db:
        a = Memory(db, embedder=emb).add("owns a cat", user_id="alice")
    with Database.open(dbdir, embedder=emb) as db:
        m = Memory(db)  # the collection exists: its dim is known, the database's embedder is used
        assert m.get(a.id) == a
        assert [h.id for h in m.search("cat", user_id="alice")] == [a.id]
        assert m.add("owns a cat", user_id="alice") == a
        assert len(db.runs.list(name="memory")) == 1
    with Database.open(dbdir) as db:
        other = Memory(db, embedder=HashingEmbedder(32), run_name="small")
        other.add("x y", user_id="u")
        assert {r.name for r in db.runs.list()} == {"memory", "small"}
        assert math.isclose(other.search("x y", user_id="u")[0].score, 1.0, rel_tol=1e-5)
