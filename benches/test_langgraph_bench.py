"""LangGraph checkpointer benchmarks: InmemSaver side by side with langgraph-checkpoint-sqlite's SqliteSaver.

Run from the repository root::

    python -m pytest benches/test_langgraph_bench.py --benchmark-only      # ~30 s on 2 cores

Method
------
Both savers run the **same workload code** in the same process, each on a
fresh store in ``tmp_path``: inmem ``Database.open(dir, durability="batched",
snapshot_every_bytes=None)``; SqliteSaver on a ``sqlite3`` file
(``check_same_thread=False``, as ``SqliteSaver.from_conn_string`` opens it),
``journal_mode=WAL`` (set by ``SqliteSaver.setup``) and
``PRAGMA synchronous=NORMAL``, the peer of inmem ``batched`` used throughout
``benches/`` (in WAL mode: no fsync per commit, fsync at checkpoints).
SqliteSaver leaves ``synchronous`` at the connection's default, ``FULL``
(2, an fsync per commit), recorded in ``extra_info["sqlite_default_synchronous"]``.
Each saver makes its own channel versions (``get_next_version``) and uses
its default serializer (``JsonPlusSerializer``, msgpack). Figures are medians
over rounds; per-op figures use ``benchmark.pedantic(op, iterations=B,
rounds=R, warmup_rounds=1)`` (a round times ``B`` consecutive ops and
divides by ``B``). The summary's ``inmem/peer`` column is the ratio of
ops/s (> 1: InmemSaver faster).

The state is LangGraph-shaped: ``channel_versions`` / ``versions_seen`` for
every channel, metadata ``{"source": "loop", "step": i, "parents": {}}``.

``lg-step-small`` / ``lg-step-100k``
    One superstep: ``put_writes`` of the running task's two writes on the
    current checkpoint, ``put`` of the next checkpoint (new versions for the
    channels that changed: ``small`` every step, plus ``large`` on the first
    step only) and ``get_tuple`` of the thread's latest checkpoint (values and
    pending writes decoded). ``small`` is ``{"step": i, "note": <40 chars>}``;
    ``lg-step-100k`` adds ``large``, a 100,000-character string written at
    step 0 and never changed. ``B`` = 200 supersteps, 9 rounds, one growing
    thread per saver.
``lg-list-1000``
    ``list(saver.list({"configurable": {"thread_id": ...}}))`` of a thread of
    1,000 checkpoints built by the growth workload below (``large`` +
    ``small``): 1,000 ``CheckpointTuple`` with values and pending writes.
    7 rounds of 1.
``lg-growth-1000``
    The growth workload: 1,000 ``put`` calls on a fresh store, ``small``
    changing every step, ``large`` (100 KB) written at step 0 only. One op =
    the whole 1,000 puts (3 rounds, fresh store each). ``extra_info`` holds
    the bytes on disk after it (inmem: the directory after ``close``;
    sqlite: the ``.sqlite`` file plus any ``-wal``/``-shm`` after ``close``)
    and ``bytes_ratio`` (inmem / sqlite).
"""

from __future__ import annotations

import itertools
import os
import sqlite3
from datetime import datetime, timezone
from typing import Any

import pytest
from workloads import record

pytest.importorskip("langgraph.checkpoint.sqlite")

from langgraph.checkpoint.base.id import uuid6  # noqa: E402
from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: E402

from inmem import Database  # noqa: E402
from inmem.integrations.langgraph import InmemSaver  # noqa: E402

STEP_BATCH = 200
STEP_ROUNDS = 9
LIST_ROUNDS = 7
GROWTH_STEPS = 1_000
GROWTH_ROUNDS = 3
LARGE = "x" * 100_000
NOTE = "searched the index and kept three results"
_SIZES: dict[str, int] = {}


class Engine:
    """A saver plus how to close it and measure its bytes on disk."""

    def __init__(self, kind: str, path: str):
        self.kind = kind
        self.path = path
        self.default_synchronous: int | None = None
        if kind == "inmem":
            self.label = "InmemSaver batched"
            self.db = Database.open(path, durability="batched", snapshot_every_bytes=None)
            self.saver: Any = InmemSaver(self.db)
        else:
            self.label = "SqliteSaver WAL NORMAL"
            self.file = path + ".sqlite"
            self.conn = sqlite3.connect(self.file, check_same_thread=False)
            self.saver = SqliteSaver(self.conn)
            self.saver.setup()
            self.default_synchronous = self.conn.execute("PRAGMA synchronous").fetchone()[0]
            self.conn.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        if self.kind == "inmem":
            self.db.close()
        else:
            self.conn.close()

    def bytes_on_disk(self) -> int:
        if self.kind == "inmem":
            return sum(os.path.getsize(os.path.join(self.path, f)) for f in os.listdir(self.path))
        return sum(os.path.getsize(self.file + s) for s in ("", "-wal", "-shm") if os.path.exists(self.file + s))


class Thread:
    """One LangGraph-shaped thread on a saver: ``step()`` = put_writes + put + get_tuple; ``put()`` = one put."""

    def __init__(self, saver: Any, thread_id: str, large: str | None):
        self.saver = saver
        self.large = large
        self.config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        self.latest = {"configurable": {"thread_id": thread_id}}
        self.versions: dict[str, Any] = {}
        self.i = 0

    def put(self) -> None:
        i, saver, versions = self.i, self.saver, self.versions
        new = {}
        values: dict[str, Any] = {"small": {"step": i, "note": NOTE}}
        if self.large is not None:
            values["large"] = self.large
            if i == 0:
                versions["large"] = new["large"] = saver.get_next_version(None, None)
        versions["small"] = new["small"] = saver.get_next_version(versions.get("small"), None)
        checkpoint = {"v": 4, "id": str(uuid6(clock_seq=i)), "ts": datetime.now(timezone.utc).isoformat(),
                      "channel_values": values, "channel_versions": dict(versions),
                      "versions_seen": {"agent": dict(versions)}, "updated_channels": sorted(new)}
        self.config = saver.put(self.config, checkpoint, {"source": "loop", "step": i, "parents": {}}, new)
        self.i += 1

    def step(self) -> None:
        if self.i:
            self.saver.put_writes(self.config, [("small", {"step": self.i}), ("log", NOTE)], f"task-{self.i}")
        self.put()
        tup = self.saver.get_tuple(self.latest)
        assert tup.checkpoint["channel_values"]["small"]["step"] == self.i - 1


@pytest.fixture(params=["inmem", "sqlite"])
def engine(request, tmp_path):
    eng = Engine(request.param, str(tmp_path / "store"))
    yield eng
    eng.close()


def _extra(eng: Engine) -> dict[str, Any]:
    return {} if eng.default_synchronous is None else {"sqlite_default_synchronous": eng.default_synchronous}


@pytest.mark.parametrize("size", ["small", "100k"])
def test_superstep(benchmark, results, engine, size):
    benchmark.group = f"lg-step-{size}"
    thread = Thread(engine.saver, "bench", LARGE if size == "100k" else None)
    benchmark.pedantic(thread.step, iterations=STEP_BATCH, rounds=STEP_ROUNDS, warmup_rounds=1)
    tup = engine.saver.get_tuple(thread.latest)
    assert tup.metadata["step"] == thread.i - 1 and len(tup.pending_writes) == 0
    assert (tup.checkpoint["channel_values"].get("large") == LARGE) == (size == "100k")
    record(benchmark, results, engine.kind, engine.label,
           f"1 superstep: put_writes + put + get_tuple ({size} state)", supersteps=thread.i, **_extra(engine))


def test_list_1000(benchmark, results, engine):
    benchmark.group = "lg-list-1000"
    thread = Thread(engine.saver, "long", LARGE)
    for _ in range(GROWTH_STEPS):
        thread.put()
    config = {"configurable": {"thread_id": "long"}}

    def list_all() -> list[Any]:
        return list(engine.saver.list(config))

    listed = benchmark.pedantic(list_all, rounds=LIST_ROUNDS, warmup_rounds=1)
    assert len(listed) == GROWTH_STEPS and listed[-1].checkpoint["channel_values"]["large"] == LARGE
    record(benchmark, results, engine.kind, engine.label, "list() of 1,000 checkpoints (100 KB state each)",
           **_extra(engine))


@pytest.mark.parametrize("kind", ["inmem", "sqlite"])
def test_growth_1000(benchmark, results, tmp_path, kind):
    benchmark.group = "lg-growth-1000"
    counter = itertools.count()
    engines: list[Engine] = []

    def setup() -> tuple[tuple[Thread], dict[str, Any]]:
        eng = Engine(kind, str(tmp_path / f"store-{next(counter)}"))
        engines.append(eng)
        return (Thread(eng.saver, "long", LARGE),), {}

    def grow(thread: Thread) -> None:
        for _ in range(GROWTH_STEPS):
            thread.put()

    benchmark.pedantic(grow, setup=setup, rounds=GROWTH_ROUNDS, warmup_rounds=0)
    for eng in engines:
        eng.close()
    size = engines[-1].bytes_on_disk()
    _SIZES[kind] = size
    extra: dict[str, Any] = {"bytes_on_disk": size, **_extra(engines[-1])}
    if len(_SIZES) == 2:
        extra["bytes_ratio"] = round(_SIZES["inmem"] / _SIZES["sqlite"], 5)
    record(benchmark, results, kind, engines[-1].label,
           f"1,000 puts (100 KB channel unchanged); {size / 1e6:.2f} MB on disk", per_call=1, **extra)
