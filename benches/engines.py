"""One small adapter per engine for ``benches/compare.py``: the same surface, the same Python around each call.

Every adapter stores agent-state values (a ``dict``) under ``(run, key)``
pairs, encodes values with ``cbor2.dumps`` and decodes them with
``cbor2.loads`` on every read (inmem's codec does the same), and offers:

* ``Adapter(path, mode)`` — open or create; ``mode`` is the durability:
  ``"off"`` (survives a process crash, not a power loss), ``"batched"``
  (fsync in the background / at checkpoints: a crash loses a bounded window),
  ``"strict"`` (each commit is fsynced before it returns);
* ``begin_run(name) -> run`` (a ``str``: kept in JSON between processes);
* ``put_fn(run)`` -> ``put(key, value)``: one autocommitted write (safe to use from another
  thread than the opener's, one thread per function; sqlite3 offers ``thread_put_fn``, a
  connection of its own);
* ``get_fn(run)`` -> ``get(key) -> value | None``;
* ``scan(run) -> [(key, value)]`` in key order (``None`` if the engine has no ordered scan);
* ``scan_from(run, start, count) -> [(key, value)]``: at most ``count`` of ``run``'s keys ``>= start``,
  in key order (YCSB-E's short scans; ``None`` without an ordered scan);
* ``load(run, items)``: bulk fill (batches of 1,000 writes per commit; not timed);
* ``sync()``: everything written so far reaches the OS (survives SIGKILL);
* ``close()``.

Peers and their durability modes:

============  =======================  ==========================  ========================
engine        off                      batched                     strict
============  =======================  ==========================  ========================
inmem         ``durability="off"``     ``"batched"`` (100 ms)      ``"strict"``
sqlite3       WAL, synchronous=OFF     WAL, synchronous=NORMAL     WAL, synchronous=FULL
lmdb          sync=False               sync=False                  sync=True
rocksdb       WAL, no fsync            WAL, no fsync               WriteOptions.sync=True
diskcache     sqlite_synchronous=0     sqlite_synchronous=1        sqlite_synchronous=2
floor         ``os.write`` per put     1 MiB buffer, fsync 100 ms  ``os.write`` + fsync
============  =======================  ==========================  ========================

``floor`` is no engine: a plain ``dict`` per run plus an append-only log of
length-prefixed records, replayed into the dicts on open — what no store
written in Python can beat on put and get. ``diskcache`` has no ordered
prefix scan (``scan`` returns ``None``: the workload is skipped for it).
Peers are optional (the ``bench`` extra); :func:`available` says which import.
"""

from __future__ import annotations

import bisect
import itertools
import os
import sqlite3
import struct
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import cbor2

dumps = cbor2.dumps
loads = cbor2.loads
MODES = ("off", "batched", "strict")
BATCH = 1000


def key_for(i: int) -> str:
    """The i-th key: 24 ASCII bytes (``key/00000000000000000042``)."""
    return f"key/{i:020d}"


_NOTE = "n" * 64


def value_for(i: int) -> dict[str, Any]:
    """The i-th value: an agent-state dict that ``cbor2`` encodes in about 100 bytes."""
    return {"step": i, "tool": "search", "ok": True, "note": _NOTE}


def _batches(items: Iterable[tuple[str, Any]]) -> Iterable[list[tuple[str, Any]]]:
    batch: list[tuple[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


# --- inmem ------------------------------------------------------------------------------------


class InmemAdapter:
    name = "inmem"

    def __init__(self, path: str, mode: str = "batched"):
        from inmem import Database

        self.db = Database.open(path, durability=mode, snapshot_every_bytes=None)

    def begin_run(self, name: str) -> str:
        return self.db.begin_run(name)

    def put_fn(self, run: str) -> Callable[[str, Any], None]:
        put = self.db.kv.put
        return lambda key, value: put(run, key, value)

    def get_fn(self, run: str) -> Callable[[str], Any]:
        get = self.db.kv.get
        return lambda key: get(run, key)

    def scan(self, run: str) -> list[tuple[str, Any]] | None:
        return list(self.db.kv.scan(run))

    def scan_from(self, run: str, start: str, count: int) -> list[tuple[str, Any]] | None:
        return list(itertools.islice(self.db.kv.scan(run, start=start), count))

    def load(self, run: str, items: Iterable[tuple[str, Any]]) -> None:
        for batch in _batches(items):
            with self.db.transaction() as tx:
                put = tx.kv.put
                for k, v in batch:
                    put(run, k, v)

    def sync(self) -> None:
        self.db.sync()

    def close(self) -> None:
        self.db.close()


# --- sqlite3 ----------------------------------------------------------------------------------

_SQL_CREATE = "CREATE TABLE IF NOT EXISTS kv (run TEXT, key TEXT, value BLOB, PRIMARY KEY (run, key))"
_SQL_PUT = "INSERT OR REPLACE INTO kv (run, key, value) VALUES (?, ?, ?)"
_SQL_GET = "SELECT value FROM kv WHERE run = ? AND key = ?"
_SQL_SCAN = "SELECT key, value FROM kv WHERE run = ? ORDER BY key"
_SQL_SCAN_FROM = "SELECT key, value FROM kv WHERE run = ? AND key >= ? ORDER BY key LIMIT ?"
_SQL_SYNC = {"off": "OFF", "batched": "NORMAL", "strict": "FULL"}


class SqliteAdapter:
    name = "sqlite3"

    def __init__(self, path: str, mode: str = "batched"):
        os.makedirs(path, exist_ok=True)
        self.path, self.mode = os.path.join(path, "kv.sqlite"), mode
        self.conn = self._connect()
        self.conn.execute(_SQL_CREATE)
        self._extra: list[sqlite3.Connection] = []

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={_SQL_SYNC[self.mode]}")
        return conn

    def thread_put_fn(self, run: str) -> Callable[[str, Any], None]:
        """``put_fn`` for another thread: its own connection (one is not for concurrent use)."""
        conn = self._connect()
        self._extra.append(conn)
        execute = conn.execute
        return lambda key, value: execute(_SQL_PUT, (run, key, dumps(value)))

    def begin_run(self, name: str) -> str:
        return uuid.uuid4().hex

    def put_fn(self, run: str) -> Callable[[str, Any], None]:
        execute = self.conn.execute
        return lambda key, value: execute(_SQL_PUT, (run, key, dumps(value)))

    def get_fn(self, run: str) -> Callable[[str], Any]:
        execute = self.conn.execute

        def get(key: str) -> Any:
            row = execute(_SQL_GET, (run, key)).fetchone()
            return None if row is None else loads(row[0])

        return get

    def scan(self, run: str) -> list[tuple[str, Any]] | None:
        return [(k, loads(v)) for k, v in self.conn.execute(_SQL_SCAN, (run,))]

    def scan_from(self, run: str, start: str, count: int) -> list[tuple[str, Any]] | None:
        return [(k, loads(v)) for k, v in self.conn.execute(_SQL_SCAN_FROM, (run, start, count))]

    def load(self, run: str, items: Iterable[tuple[str, Any]]) -> None:
        c = self.conn
        for batch in _batches(items):
            c.execute("BEGIN")
            c.executemany(_SQL_PUT, ((run, k, dumps(v)) for k, v in batch))
            c.execute("COMMIT")

    def sync(self) -> None:
        pass  # every commit is in the WAL file (written with write(2)) when it returns

    def close(self) -> None:
        for conn in self._extra:
            conn.close()
        self.conn.close()


# --- LMDB -------------------------------------------------------------------------------------


class LmdbAdapter:
    name = "lmdb"

    def __init__(self, path: str, mode: str = "batched"):
        import lmdb

        sync = mode == "strict"
        self.env = lmdb.open(path, map_size=16 << 30, sync=sync, metasync=sync, readahead=False,
                             max_spare_txns=4)

    def begin_run(self, name: str) -> str:
        return uuid.uuid4().hex

    def put_fn(self, run: str) -> Callable[[str, Any], None]:
        begin, prefix = self.env.begin, bytes.fromhex(run)

        def put(key: str, value: Any) -> None:
            with begin(write=True) as txn:
                txn.put(prefix + key.encode(), dumps(value))

        return put

    def get_fn(self, run: str) -> Callable[[str], Any]:
        begin, prefix = self.env.begin, bytes.fromhex(run)

        def get(key: str) -> Any:
            with begin() as txn:
                raw = txn.get(prefix + key.encode())
            return None if raw is None else loads(raw)

        return get

    def scan(self, run: str) -> list[tuple[str, Any]] | None:
        prefix = bytes.fromhex(run)
        skip = len(prefix)
        out = []
        with self.env.begin() as txn:
            cur = txn.cursor()
            if cur.set_range(prefix):
                for k, v in cur:
                    if not k.startswith(prefix):
                        break
                    out.append((k[skip:].decode(), loads(v)))
        return out

    def scan_from(self, run: str, start: str, count: int) -> list[tuple[str, Any]] | None:
        prefix = bytes.fromhex(run)
        skip = len(prefix)
        out: list[tuple[str, Any]] = []
        with self.env.begin() as txn:
            cur = txn.cursor()
            if cur.set_range(prefix + start.encode()):
                for k, v in cur:
                    if len(out) == count or not k.startswith(prefix):
                        break
                    out.append((k[skip:].decode(), loads(v)))
        return out

    def load(self, run: str, items: Iterable[tuple[str, Any]]) -> None:
        prefix = bytes.fromhex(run)
        for batch in _batches(items):
            with self.env.begin(write=True) as txn:
                for k, v in batch:
                    txn.put(prefix + k.encode(), dumps(v))

    def sync(self) -> None:
        pass  # a write transaction's pages are in the shared mapping when it commits

    def close(self) -> None:
        self.env.close()


# --- RocksDB (rocksdict) -----------------------------------------------------------------------


class RocksAdapter:
    name = "rocksdb"

    def __init__(self, path: str, mode: str = "batched"):
        from rocksdict import Options, Rdict, WriteOptions

        self._batch_cls = __import__("rocksdict").WriteBatch
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        self.db = Rdict(path, opts)
        wo = WriteOptions()
        wo.sync = mode == "strict"
        self.db.set_write_options(wo)

    def begin_run(self, name: str) -> str:
        return uuid.uuid4().hex

    def put_fn(self, run: str) -> Callable[[str, Any], None]:
        put, prefix = self.db.put, bytes.fromhex(run)
        return lambda key, value: put(prefix + key.encode(), dumps(value))

    def get_fn(self, run: str) -> Callable[[str], Any]:
        get, prefix = self.db.get, bytes.fromhex(run)

        def g(key: str) -> Any:
            raw = get(prefix + key.encode())
            return None if raw is None else loads(raw)

        return g

    def scan(self, run: str) -> list[tuple[str, Any]] | None:
        prefix = bytes.fromhex(run)
        skip = len(prefix)
        out = []
        it = self.db.iter()
        it.seek(prefix)
        while it.valid():
            k = it.key()
            if not k.startswith(prefix):
                break
            out.append((k[skip:].decode(), loads(it.value())))
            it.next()
        return out

    def scan_from(self, run: str, start: str, count: int) -> list[tuple[str, Any]] | None:
        prefix = bytes.fromhex(run)
        skip = len(prefix)
        out: list[tuple[str, Any]] = []
        it = self.db.iter()
        it.seek(prefix + start.encode())
        while it.valid() and len(out) < count:
            k = it.key()
            if not k.startswith(prefix):
                break
            out.append((k[skip:].decode(), loads(it.value())))
            it.next()
        return out

    def load(self, run: str, items: Iterable[tuple[str, Any]]) -> None:
        prefix = bytes.fromhex(run)
        for batch in _batches(items):
            wb = self._batch_cls(raw_mode=True)
            for k, v in batch:
                wb.put(prefix + k.encode(), dumps(v))
            self.db.write(wb)

    def sync(self) -> None:
        pass  # each write is in the WAL file (write(2)) when it returns

    def close(self) -> None:
        self.db.close()


# --- diskcache --------------------------------------------------------------------------------


class DiskcacheAdapter:
    name = "diskcache"

    def __init__(self, path: str, mode: str = "batched"):
        import diskcache

        level = {"off": 0, "batched": 1, "strict": 2}[mode]
        self.cache = diskcache.Cache(path, size_limit=1 << 40, eviction_policy="none",
                                     sqlite_synchronous=level, cull_limit=0)

    def begin_run(self, name: str) -> str:
        return uuid.uuid4().hex

    def put_fn(self, run: str) -> Callable[[str, Any], None]:
        set_ = self.cache.set
        return lambda key, value: set_(run + key, dumps(value))

    def get_fn(self, run: str) -> Callable[[str], Any]:
        get = self.cache.get

        def g(key: str) -> Any:
            raw = get(run + key)
            return None if raw is None else loads(raw)

        return g

    def scan(self, run: str) -> list[tuple[str, Any]] | None:
        return None  # no ordered prefix scan

    def scan_from(self, run: str, start: str, count: int) -> list[tuple[str, Any]] | None:
        return None  # no ordered scan

    def load(self, run: str, items: Iterable[tuple[str, Any]]) -> None:
        cache = self.cache
        for batch in _batches(items):
            with cache.transact():
                for k, v in batch:
                    cache.set(run + k, dumps(v))

    def sync(self) -> None:
        pass

    def close(self) -> None:
        self.cache.close()


# --- the floor: dict + append-only file ---------------------------------------------------------

_REC = struct.Struct("<HHI")  # run length, key length, value length


class FloorAdapter:
    """A dict per run plus an append-only log; reopening replays the log. Not crash-consistent
    beyond "whole records up to a torn tail", and no checksums: a floor, not an engine."""

    name = "floor"

    def __init__(self, path: str, mode: str = "batched"):
        os.makedirs(path, exist_ok=True)
        self.mode = mode
        self.runs: dict[str, dict[str, bytes]] = {}
        log = os.path.join(path, "log")
        if os.path.exists(log):
            with open(log, "rb") as f:
                data = f.read()
            pos, n, runs, unpack = 0, len(data), self.runs, _REC.unpack_from
            while pos + 8 <= n:
                rl, kl, vl = unpack(data, pos)
                end = pos + 8 + rl + kl + vl
                if end > n:
                    break
                r = data[pos + 8:pos + 8 + rl].decode()
                k = data[pos + 8 + rl:pos + 8 + rl + kl].decode()
                d = runs.get(r)
                if d is None:
                    d = runs[r] = {}
                d[k] = data[end - vl:end]
                pos = end
        self.fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.buf = bytearray()
        self.last_sync = time.monotonic()

    def begin_run(self, name: str) -> str:
        run = uuid.uuid4().hex
        self.runs[run] = {}
        return run

    def put_fn(self, run: str) -> Callable[[str, Any], None]:
        d, fd, rb, mode = self.runs[run], self.fd, run.encode(), self.mode
        pack, write, fsync, buf, mono = _REC.pack, os.write, os.fsync, self.buf, time.monotonic

        def put(key: str, value: Any) -> None:
            v = dumps(value)
            kb = key.encode()
            rec = pack(len(rb), len(kb), len(v)) + rb + kb + v
            if mode == "batched":
                buf.extend(rec)
                if len(buf) >= 1 << 20 or mono() - self.last_sync >= 0.1:
                    write(fd, buf)
                    buf.clear()
                    fsync(fd)
                    self.last_sync = mono()
            else:
                write(fd, rec)
                if mode == "strict":
                    fsync(fd)
            d[key] = v

        return put

    def get_fn(self, run: str) -> Callable[[str], Any]:
        get = self.runs[run].get

        def g(key: str) -> Any:
            raw = get(key)
            return None if raw is None else loads(raw)

        return g

    def scan(self, run: str) -> list[tuple[str, Any]] | None:
        return [(k, loads(v)) for k, v in sorted(self.runs[run].items())]

    def scan_from(self, run: str, start: str, count: int) -> list[tuple[str, Any]] | None:
        keys = sorted(self.runs[run])
        data = self.runs[run]
        i = bisect.bisect_left(keys, start)
        return [(k, loads(data[k])) for k in keys[i:i + count]]

    def load(self, run: str, items: Iterable[tuple[str, Any]]) -> None:
        d = self.runs.setdefault(run, {})
        rb = run.encode()
        for batch in _batches(items):
            out = bytearray()
            for k, v in batch:
                raw = dumps(v)
                kb = k.encode()
                out += _REC.pack(len(rb), len(kb), len(raw)) + rb + kb + raw
                d[k] = raw
            os.write(self.fd, out)

    def sync(self) -> None:
        if self.buf:
            os.write(self.fd, self.buf)
            self.buf.clear()

    def close(self) -> None:
        self.sync()
        os.close(self.fd)


ADAPTERS: dict[str, type] = {
    "inmem": InmemAdapter,
    "inmem-pure": InmemAdapter,  # the same adapter in a process with INMEM_PURE=1
    "sqlite3": SqliteAdapter,
    "lmdb": LmdbAdapter,
    "rocksdb": RocksAdapter,
    "diskcache": DiskcacheAdapter,
    "floor": FloorAdapter,
}
_MODULES = {"lmdb": "lmdb", "rocksdb": "rocksdict", "diskcache": "diskcache"}


def available() -> tuple[list[str], dict[str, str]]:
    """The engines that can run here, and a note for each that cannot (its package is missing)."""
    import importlib.util

    ok, missing = [], {}
    for name in ADAPTERS:
        mod = _MODULES.get(name)
        if mod is not None and importlib.util.find_spec(mod) is None:
            missing[name] = f"the {mod} package is not installed (pip install 'inmem[bench]')"
        else:
            ok.append(name)
    return ok, missing


def versions() -> dict[str, str]:
    """Versions of the engines' packages (for the report)."""
    out = {"sqlite3": sqlite3.sqlite_version, "cbor2": getattr(cbor2, "__version__", "?")}
    for name, mod in _MODULES.items():
        try:
            from importlib.metadata import version

            out[name] = version(mod)
        except Exception:  # noqa: BLE001 - not installed
            pass
    return out
