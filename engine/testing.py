"""Test-only hooks: reach past the public API to simulate damage. Never use these in an application.

This module owns deliberate corruption of *in-memory* state, for tests that
prove the engine notices it (e.g. ``events.verify`` raising ``ChainBroken``).
Nothing here writes the WAL: a reopen restores the committed bytes.
"""

from __future__ import annotations

import struct
from typing import Any

from .codec import decode_value, encode_value
from .database import Database
from .kernel import Kernel, LockedView
from .keys import TAG_EVENT, run_id_bytes, run_prefix

__all__ = ["check_store", "kernel", "key_index_built", "overwrite_value", "store_items", "tamper_event_payload"]


def kernel(db: Database) -> Kernel:
    """The storage kernel behind ``db`` (white-box tests commit and read through it)."""
    return db._kernel  # noqa: SLF001 - this module exists to reach past the facade


def check_store(db: Database) -> None:
    """Assert the sorted map's internal invariants (sortedcontainers' ``_check``)."""
    kernel(db)._store._check()  # noqa: SLF001


def key_index_built(db: Database) -> bool:
    """Whether the store's sorted key index is built (``False`` after a recovery until the first ordered read)."""
    return kernel(db)._store.sorted_map.indexed  # type: ignore[no-any-return]  # noqa: SLF001


def overwrite_value(db: Database, key: bytes, raw: bytes) -> None:
    """Replace the stored bytes of ``key`` in memory (no WAL record), keeping its version: simulated damage."""
    store = kernel(db)._store  # noqa: SLF001
    kernel(db).atomic(lambda _view: store.put(key, store.get(key)[0], raw))


def store_items(db: Database) -> dict[bytes, tuple[int, bytes]]:
    """Every entry of the store at the last commit: key -> (version, value bytes)."""
    return dict(kernel(db)._store.items())  # noqa: SLF001


def tamper_event_payload(db: Database, run: str, seq: int, payload: Any) -> None:
    """Replace the stored payload of event ``seq`` of ``run`` in memory, leaving its hashes as they were."""
    key = run_prefix(run_id_bytes(run), TAG_EVENT) + struct.pack(">Q", seq)
    store = kernel(db)._store  # noqa: SLF001

    def tamper(view: LockedView) -> None:  # under the commit lock, writing no WAL record
        version, raw = store.get(key)
        record = decode_value(raw)
        record["payload"] = payload
        store.put(key, version, encode_value(record))

    kernel(db).atomic(tamper)
