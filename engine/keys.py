"""The keyspace: how (run id, primitive tag, user key) becomes one sortable ``bytes`` key.

This module owns the byte layout of every key in the unified store and the
run-id format. Invariant: the encoding is order-preserving and prefix-closed,
so all keys of one run, and all keys of one primitive within a run, form one
contiguous range of the sorted store (a prefix scan is O(log n + k)).

Layout (see SPEC.md, "Keyspace")::

    run-scoped key = NS_RUN (1 byte) | run id (16 bytes, UUIDv7) | tag (1 byte) | user key (UTF-8)

The user key is the *last* component, so it needs no escaping: UTF-8 byte order
equals code-point order, and a user-key prefix ``p`` is the byte range
``[base + p, base + p + 0xFF...)``. The run id is fixed-width, so one run's
range never interleaves with another's.

WARNING: the namespace and tag values below are part of the on-disk format.
Never renumber them; add new ones at unused values and bump the format
version if a reader must know about them.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

from .errors import InvalidArgument, InvalidKey, RunNotFound

__all__ = [
    "MAX_KEY_BYTES",
    "NS_RUN",
    "TAG_DOC",
    "TAG_EVENT",
    "TAG_EXPIRY",
    "TAG_GRAPH",
    "TAG_KV",
    "TAG_RUN",
    "TAG_STATE",
    "TAG_TRACE",
    "TAG_VECTOR",
    "encode_user_key",
    "in_range",
    "name_bytes",
    "new_run_id",
    "prefix_end",
    "run_id_bytes",
    "run_id_of",
    "run_prefix",
    "split_key",
]

# --- namespaces (first byte of every key) -----------------------------------
NS_SYSTEM = 0x00  # reserved: database-wide records (none in format version 1)
NS_RUN = 0x01  # run-scoped records: NS_RUN | run id | tag | user key

# --- primitive tags (byte 17 of a run-scoped key) ---------------------------
TAG_RUN = 0x00  # the run record itself (user key is empty)
TAG_KV = 0x01  # KV store
TAG_EVENT = 0x02  # event log
TAG_STATE = 0x03  # state machines
TAG_TRACE = 0x04  # trace store
TAG_VECTOR = 0x05  # vector store (in-mem's tag for vectors too)
TAG_DOC = 0x06  # JSON documents
TAG_GRAPH = 0x07  # memory graph: nodes and edges
TAG_EXPIRY = 0x08  # expiry index of values with a time to live (inmem.expiry)

RUN_ID_BYTES = 16
RUN_PREFIX_LEN = 1 + RUN_ID_BYTES  # NS_RUN + run id
TAGGED_PREFIX_LEN = RUN_PREFIX_LEN + 1  # ... + tag

#: Largest user key, in bytes of UTF-8. Keys are held in memory and repeated in
#: every WAL record that writes them; agent keys are names, not documents.
MAX_KEY_BYTES = 64 * 1024  # 64 KiB


def encode_user_key(key: object) -> bytes:
    """Return the UTF-8 bytes of a user key.

    :raises InvalidKey: ``key`` is not a ``str``, contains a lone surrogate
        (not encodable as UTF-8), or is longer than :data:`MAX_KEY_BYTES`.
    """
    if type(key) is not str:
        if not isinstance(key, str):
            raise InvalidKey(f"keys are str, got {type(key).__name__}: {key!r:.80}")
    try:
        raw = key.encode("utf-8")  # type: ignore[union-attr]
    except UnicodeEncodeError as exc:
        raise InvalidKey(f"key is not valid UTF-8 text ({exc.reason}): {key!r:.80}") from None
    if len(raw) > MAX_KEY_BYTES:
        raise InvalidKey(f"key is {len(raw)} bytes; the limit is {MAX_KEY_BYTES}")
    return raw


def name_bytes(name: object, what: str, limit: int) -> bytes:
    """The UTF-8 of a name that is followed by a 0x00 separator in a key (a vector collection, a document).

    :raises InvalidArgument: not a non-empty ``str``, holding a NUL, not
        UTF-8 encodable (a lone surrogate), or longer than ``limit`` bytes.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise InvalidArgument(f"a {what} name is a non-empty str without NUL, got {name!r:.80}")
    try:
        raw = name.encode()
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what} name {name!r:.80} is not valid UTF-8 text") from None
    if len(raw) > limit:
        raise InvalidArgument(f"a {what} name is at most {limit} bytes of UTF-8")
    return raw


def run_id_bytes(run: object) -> bytes:
    """Return the 16 raw bytes of a run id given in its text form.

    :raises RunNotFound: ``run`` is not a well-formed run id (so it cannot
        name any run).
    """
    if not isinstance(run, str):
        raise RunNotFound(f"run ids are str, got {type(run).__name__}: {run!r:.80}")
    try:
        return uuid.UUID(run).bytes
    except ValueError:
        raise RunNotFound(f"no run {run!r:.80} (not a run id)") from None


def run_prefix(rid: bytes, tag: int | None = None) -> bytes:
    """Return the key prefix of a run (``tag=None``) or of one primitive within it."""
    base = bytes((NS_RUN,)) + rid
    return base if tag is None else base + bytes((tag,))


def run_id_of(key: bytes) -> bytes:
    """The 16-byte run id of a run-scoped store key (bytes 1..16). O(1)."""
    return key[1:RUN_PREFIX_LEN]


def in_range(key: bytes, lo: bytes, hi: bytes | None) -> bool:
    """Whether ``lo <= key < hi`` (``hi=None``: no upper bound): the ranges every scan uses."""
    return key >= lo and (hi is None or key < hi)


def prefix_end(prefix: bytes) -> bytes | None:
    """Return the smallest key greater than every key starting with ``prefix``.

    ``None`` means "no upper bound" (``prefix`` is empty or all 0xFF).
    """
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return None
    p[-1] += 1
    return bytes(p)


def split_key(key: bytes) -> tuple[bytes, int, bytes]:
    """Split a run-scoped key into (run id bytes, tag, user key bytes).

    :raises ValueError: ``key`` is not a run-scoped key.
    """
    if len(key) < TAGGED_PREFIX_LEN or key[0] != NS_RUN:
        raise ValueError(f"not a run-scoped key: {key!r:.80}")
    return key[1:RUN_PREFIX_LEN], key[RUN_PREFIX_LEN], key[TAGGED_PREFIX_LEN:]


# --- run ids: UUIDv7 (RFC 9562), monotonic within this process ----------------

_id_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_run_id() -> str:
    """Return a fresh run id: UUIDv7 text, sorting by creation time.

    Layout after RFC 9562 section 5.7 with the "fixed-length dedicated counter"
    method of section 6.2: 48 bits of Unix milliseconds, a 12-bit counter in
    ``rand_a`` (so ids made in the same millisecond still sort in creation
    order within this process), then 62 random bits from ``os.urandom`` —
    never ``uuid.uuid4``/``uuid1``, which applications patch for
    deterministic ids (SPEC.md §3).
    """
    global _last_ms, _counter
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms, _counter = ms, int.from_bytes(os.urandom(2), "big") & 0x3FF
        else:  # same millisecond (or the clock went back): count up, borrow the next ms on overflow
            _counter += 1
            if _counter > 0xFFF:
                _last_ms, _counter = _last_ms + 1, 0
        ms, counter = _last_ms, _counter
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))
