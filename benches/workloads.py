"""Engines and workloads shared by ``test_kv_bench.py`` and ``compare.py``.

Each engine adapter exposes the same small surface so that every workload
runs the same Python code around the engine call:

* ``begin_run(name) -> run``
* ``put_fn(run) -> put(key: str, value)``   one autocommitted write
* ``get_fn(run) -> get(key: str) -> value`` one point read, decoded
* ``scan(run) -> [(key, value)]``           all keys of a run, in key order, decoded
* ``load(run, items)``                      fill a run for a read benchmark (not timed)
* ``close()``

Values are encoded with ``cbor2.dumps`` by every peer, as inmem's
:mod:`inmem.codec` does, and decoded with ``cbor2.loads`` on every read.

Peers:

* **sqlite3** (stdlib): table ``kv(run TEXT, key TEXT, value BLOB, PRIMARY
  KEY(run, key))``, ``journal_mode=WAL``, autocommit (``isolation_level=None``:
  every statement is its own transaction). ``synchronous`` is ``NORMAL`` (the
  peer of inmem ``batched``: in WAL mode a commit is not fsynced, the WAL is
  synced at checkpoints), ``FULL`` (peer of ``strict``: fsync per commit) or
  ``OFF`` (peer of ``off``).
* **LMDB** (``lmdb`` from PyPI, optional): one write transaction per put;
  key = 16 raw run-id bytes + UTF-8 key (inmem's layout, minus its namespace
  and tag bytes). ``sync=False`` is the peer of ``batched``/``off`` (commits
  are written to the OS, never fsynced); ``sync=True`` of ``strict``.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import cbor2

from inmem import Database

try:  # optional peer
    import lmdb  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    lmdb = None

dumps = cbor2.dumps
loads = cbor2.loads


def value_for(i: int) -> dict[str, Any]:
    """The small agent-state value every put writes (``cbor2`` encodes it in 21-25 bytes)."""
    return {"step": i, "tool": "search", "ok": True}


def key_for(i: int) -> str:
    return f"key/{i:08d}"


# --- inmem ------------------------------------------------------------------------------


class InmemKV:
    engine = "inmem"

    def __init__(self, path: str, durability: str = "batched"):
        self.label = f"inmem {durability}"
        self.db = Database.open(path, durability=durability)

    def begin_run(self, name: str) -> str:
        return self.db.begin_run(name)

    def put_fn(self, run: str) -> Callable[[str, Any], None]:
        put = self.db.kv.put

        def p(key: str, value: Any) -> None:
            put(run, key, value)

        return p

    def get_fn(self, run: str) -> Callable[[str], Any]:
        get = self.db.kv.get

        def g(key: str) -> Any:
            return get(run, key)

        return g

    def get_loop(self, run: str, keys: list[str]) -> None:
        """``kv.get`` every key, in a plain loop: what a caller's own code does."""
        get = self.db.kv.get
        for key in keys:
            get(run, key)

    def scan(self, run: str) -> list[tuple[str, Any]]:
        return list(self.db.kv.scan(run))

    def load(self, run: str, items: Iterable[tuple[str, Any]]) -> None:
        put = self.db.kv.put  # no batch API yet: one commit per key
        for k, v in items:
            put(run, k, v)

    def close(self) -> None:
        self.db.close()


# --- sqlite3 ------------------------------------------------------------------------------

_SQL_CREATE = "CREATE TABLE IF NOT EXISTS kv (run TEXT, key TEXT, value BLOB, PRIMARY KEY (run, key))"
_SQL_PUT = "INSERT OR REPLACE INTO kv (run, key, value) VALUES (?, ?, ?)"
_SQL_GET = "SELECT value FROM kv WHERE run = ? AND key = ?"
_SQL_SCAN = "SELECT key, value FROM kv WHERE run = ? ORDER BY key"


class SqliteKV:
    engine = "sqlite3"

    def __init__(self, path: str, synchronous: str = "NORMAL"):
        assert synchronous in ("OFF", "NORMAL", "FULL")
        self.label = f"sqlite3 WAL sync={synchronous}"
        os.makedirs(path, exist_ok=True)
        self.conn = sqlite3.connect(os.path.join(path, "kv.sqlite"), isolation_level=None)
        mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        assert mode.lower() == "wal", mode
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.conn.execute(_SQL_CREATE)

    def begin_run(self, name: str) -> str:
        return str(uuid.uuid4())

    def put_fn(self, run: str) -> Callable[[str, Any], None]:
        execute = self.conn.execute

        def p(key: str, value: Any) -> None:
            execute(_SQL_PUT, (run, key, dumps(value)))

        return p

    def get_fn(self, run: str) -> Callable[[str], Any]:
        execute = self.conn.execute

        def g(key: str) -> Any:
            row = execute(_SQL_GET, (run, key)).fetchone()
            return None if row is None else loads(row[0])

        return g

    def get_loop(self, run: str, keys: list[str]) -> None:
        execute = self.conn.execute
        for key in keys:
            row = execute(_SQL_GET, (run, key)).fetchone()
            None if row is None else loads(row[0])

    def scan(self, run: str) -> list[tuple[str, Any]]:
        return [(k, loads(v)) for k, v in self.conn.execute(_SQL_SCAN, (run,))]

    def load(self, run: str, items: Iterable[tuple[str, Any]]) -> None:
        c = self.conn
        c.execute("BEGIN")
        c.executemany(_SQL_PUT, ((run, k, dumps(v)) for k, v in items))
        c.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


# --- LMDB ---------------------------------------------------------------------------------


class LmdbKV:
    engine = "lmdb"

    def __init__(self, path: str, sync: bool = False):
        if lmdb is None:
            raise RuntimeError("the lmdb package is not installed")
        self.label = f"lmdb sync={sync}"
        self.env = lmdb.open(path, map_size=4 << 30, sync=sync, metasync=sync, readahead=False)

    def begin_run(self, name: str) -> bytes:
        return uuid.uuid4().bytes

    def put_fn(self, run: bytes) -> Callable[[str, Any], None]:
        begin = self.env.begin

        def p(key: str, value: Any) -> None:
            with begin(write=True) as txn:
                txn.put(run + key.encode(), dumps(value))

        return p

    def get_fn(self, run: bytes) -> Callable[[str], Any]:
        begin = self.env.begin

        def g(key: str) -> Any:
            with begin() as txn:
                raw = txn.get(run + key.encode())
            return None if raw is None else loads(raw)

        return g

    def scan(self, run: bytes) -> list[tuple[str, Any]]:
        skip = len(run)
        out = []
        with self.env.begin() as txn:
            cur = txn.cursor()
            if cur.set_range(run):
                for k, v in cur:
                    if not k.startswith(run):
                        break
                    out.append((k[skip:].decode(), loads(v)))
        return out

    def load(self, run: bytes, items: Iterable[tuple[str, Any]]) -> None:
        with self.env.begin(write=True) as txn:
            for k, v in items:
                txn.put(run + k.encode(), dumps(v))

    def close(self) -> None:
        self.env.close()


# --- provenance --------------------------------------------------------------------------------


def engine_fingerprint() -> str:
    """``<HEAD commit>[+dirty] src:<hash of engine/**/*.py>``: which engine code a figure belongs to.

    Reads ``.git/HEAD`` directly (no git command); the source hash changes with
    any uncommitted edit under ``engine/``.
    """
    import hashlib

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    head = "unknown"
    try:
        git = os.path.join(root, ".git")
        common = git
        if os.path.isfile(git):  # a worktree: ".git" names its git directory
            with open(git) as f:
                git = f.read().strip().removeprefix("gitdir: ")
            common = os.path.join(git, "..", "..")  # <repo>/.git/worktrees/<name> -> <repo>/.git
        with open(os.path.join(git, "HEAD")) as f:
            ref = f.read().strip()
        if ref.startswith("ref: "):
            for base in (git, common):
                if os.path.exists(os.path.join(base, ref[5:])):
                    with open(os.path.join(base, ref[5:])) as f:
                        ref = f.read().strip()
                    break
        head = ref[:12]
    except OSError:
        pass
    h = hashlib.sha256()
    pkg = os.path.join(root, "engine")
    for dirpath, dirnames, filenames in os.walk(pkg):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(".py"):
                p = os.path.join(dirpath, name)
                h.update(os.path.relpath(p, pkg).encode())
                with open(p, "rb") as f:
                    h.update(f.read())
    from inmem import native

    return f"{head} src:{h.hexdigest()[:12]} native:{'on' if native.ENABLED else 'off'}"


def record(benchmark, results, engine, label, op, *, per_call=1, **extra):
    """Store 1 / median as ops/s in ``extra_info`` and a row of the session summary; return the per-op median.

    ``per_call``: ops done by one timed call (a loop bench times one call per
    round). Returns 0.0 under ``--benchmark-disable``, when nothing was timed.
    """
    if getattr(benchmark, "stats", None) is None:
        return 0.0
    median = benchmark.stats.stats.median / per_call
    ops = 1.0 / median
    benchmark.extra_info.update({"ops_per_s": round(ops, 1), "median_s": median, "op": op, **extra})
    results.append({"group": benchmark.group, "engine": engine, "label": label, "ops_per_s": ops, "op": op})
    return median
