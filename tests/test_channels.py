"""Ephemeral channels, ``db.publish`` / ``db.subscribe`` (issue 16): fan-out, close, overflow, async."""

from __future__ import annotations

import asyncio
import threading

import pytest

from inmem import Database, DatabaseClosed, InvalidArgument, Subscription


@pytest.fixture
def db(dbdir):
    with Database.open(dbdir) as d:
        yield d


def test_fan_out_to_every_subscriber_of_the_channel_only(db):
    a, b = db.subscribe("news"), db.subscribe("news", "alerts")
    other = db.subscribe("alerts")
    assert db.publish("news", {"n": 1}) == 2
    assert db.publish("alerts", "fire") == 2
    assert db.publish("nobody", 1) == 0  # ephemeral: nobody listening, nobody gets it
    assert a.get(timeout=0) == ("news", {"n": 1}) and a.get(timeout=0) is None
    assert [b.get(timeout=0), b.get(timeout=0)] == [("news", {"n": 1}), ("alerts", "fire")]
    assert other.get(timeout=0) == ("alerts", "fire")
    late = db.subscribe("news")
    db.publish("news", 2)
    assert late.get(timeout=0) == ("news", 2)  # what was published before it subscribed is gone


def test_close_unsubscribes_and_ends_iteration(db):
    sub = db.subscribe("c", "c")  # a duplicate channel counts once
    got = []
    t = threading.Thread(target=lambda: got.extend(sub))
    t.start()
    assert db.publish("c", 1) == 1
    sub.close()
    t.join(5)
    assert not t.is_alive() and sub.closed
    assert got in ([], [("c", 1)])
    assert db.publish("c", 2) == 0 and sub.get(timeout=0) is None
    sub.close()  # idempotent
    with db.subscribe("d") as s2:
        assert db.publish("d", 0) == 1
    assert db.publish("d", 0) == 0 and s2.closed


def test_overflow_drops_the_oldest_and_counts_it(db):
    sub = db.subscribe("busy", maxsize=3)
    for i in range(10):  # never blocks the publisher
        assert db.publish("busy", i) == 1
    assert sub.dropped == 7
    assert [sub.get(timeout=0)[1] for _ in range(3)] == [7, 8, 9]


def test_one_publisher_order_is_kept_across_threads(db):
    sub = db.subscribe("seq", maxsize=10_000)
    done = threading.Event()

    def publisher():
        for i in range(2000):
            db.publish("seq", i)
        done.set()

    t = threading.Thread(target=publisher)
    t.start()
    got = [sub.get(timeout=5)[1] for _ in range(2000)]
    t.join()
    assert got == list(range(2000))


def test_async_iteration(db):
    sub = db.subscribe("a")

    async def consume():
        out = []
        async for channel, message in sub:
            out.append((channel, message))
            if len(out) == 2:
                sub.close()
        return out

    db.publish("a", 1)
    db.publish("a", 2)
    assert asyncio.run(consume()) == [("a", 1), ("a", 2)]


@pytest.mark.parametrize("channels,kwargs", [((), {}), (("",), {}), ((1,), {}), (("x" * 2000,), {}),
                                             (("ok",), {"maxsize": 0}), (("ok",), {"maxsize": 1.5})])
def test_bad_arguments_raise_invalid_argument(db, channels, kwargs):
    with pytest.raises(InvalidArgument):
        db.subscribe(*channels, **kwargs)
    assert db.publish("ok", 1) == 0  # nothing was subscribed


def test_publish_refuses_a_bad_channel_and_a_closed_database(dbdir):
    db = Database.open(dbdir)
    with pytest.raises(InvalidArgument):
        db.publish(None, 1)
    sub = db.subscribe("x")
    assert isinstance(sub, Subscription)
    db.close()
    assert sub.closed and list(sub) == []
    with pytest.raises(DatabaseClosed):
        db.publish("x", 1)
    with pytest.raises(DatabaseClosed):
        db.subscribe("x")
