"""Test-only hooks: reach past the public API to simulate damage. Never use these in an application.

This module owns deliberate corruption of *in-memory* state, for tests that
prove the engine notices it (e.g. ``events.verify`` raising ``ChainBroken``).
Nothing here writes the WAL: a reopen restores the committed bytes.
"""

from __future__ import annotations

import struct
from typing import Any

from .codec import decode_value, encode_value
from .keys import TAG_EVENT, run_id_bytes, run_prefix

__all__ = ["tamper_event_payload"]


def tamper_event_payload(db: Any, run: str, seq: int, payload: Any) -> None:
    """Replace the stored payload of event ``seq`` of ``run`` in memory, leaving its hashes as they were."""
    key = run_prefix(run_id_bytes(run), TAG_EVENT) + struct.pack(">Q", seq)
    with db._commit_lock:
        version, raw = db._store.get(key)
        record = decode_value(raw)
        record["payload"] = payload
        db._store.put(key, version, encode_value(record))
