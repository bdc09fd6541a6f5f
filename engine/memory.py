"""Agent memory recipes: a conversation buffer, TTL working memory and a Mem0-shaped memory store.

This module owns two thin classes over the public :class:`~inmem.database.Database`
API — :class:`ConversationBuffer` and :class:`WorkingMemory` — and re-exports
:class:`~inmem.memorystore.Memory` (long-term memories with vectors, scopes,
dedup and history), so ``from inmem.memory import ...`` reaches all three.
They store nothing a plain ``db.kv`` / ``db.vectors`` user could not read back;
the record layouts are in SPEC.md §2 "Agent memory recipes".

Invariants: a :class:`ConversationBuffer` append, and the trimming that keeps
the buffer within ``max_messages`` / ``max_tokens`` (oldest first), are one
commit (a :meth:`~inmem.database.Database.transact` transaction), so after
every commit the buffer holds the newest messages, in order, within the
limits of the buffer that wrote last, however many threads append; every
argument is checked before anything is written.

KV layout in the buffer's run (``<seq>``: 16 lowercase hex digits, from 0)::

    buffer/<name>/head        -> {"first", "next", "count", "tokens", "roles": {role: count}}
    buffer/<name>/msg/<seq>   -> {"role", "content", "metadata", "tokens", "ts_us"}
    wm/<key>                  -> the WorkingMemory value (with a time to live)
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .codec import now_us, utc_from_us
from .errors import InvalidArgument, InvalidKey
from .expiry import check_ttl
from .memorystore import Memory, MemoryEvent, MemoryItem

if TYPE_CHECKING:  # pragma: no cover
    from .database import Database

__all__ = ["ConversationBuffer", "Memory", "MemoryEvent", "MemoryItem", "Message", "WorkingMemory",
           "estimate_tokens"]

FORMATS = ("conversation", "compact", "summary")
MAX_NAME_CHARS = 256
#: Transaction retries of one append: 8 threads appending to one buffer conflict on its head record.
_APPEND_RETRIES = 200
_SPACE = re.compile(r"\s+")


def estimate_tokens(text: str) -> int:
    """The default token count: ``ceil(words * 4 / 3)``, words being whitespace-separated runs.

    English text averages about 0.75 words per token with OpenAI's BPE tokenizers
    (OpenAI, "What are tokens and how to count them?"), hence 4/3 tokens a word.
    An estimate: plug a real tokenizer with ``count_tokens=`` (README, "Agent memory").
    O(len(text)).
    """
    return math.ceil(len(text.split()) * 4 / 3)


def _limit(value: object, what: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise InvalidArgument(f"{what} must be an int >= 1 or None; got {value!r}")
    return value


def _name(name: object) -> str:
    if type(name) is not str or not name or len(name) > MAX_NAME_CHARS or "/" in name or "\x00" in name:
        raise InvalidArgument(f"name must be a non-empty str of at most {MAX_NAME_CHARS} characters without "
                              f"'/' or NUL; got {name!r:.80}")
    return name


@dataclass(frozen=True)
class Message:
    """One message of a :class:`ConversationBuffer`: ``seq`` (its position since the buffer began,
    from 0), ``role``, ``content``, ``metadata`` (dict or None), ``tokens`` (as counted at append)
    and ``created_at`` (UTC datetime of the append)."""

    seq: int
    role: str
    content: str
    metadata: dict[str, Any] | None
    tokens: int
    created_at: _dt.datetime


def _message(seq: int, record: dict[str, Any]) -> Message:
    return Message(seq, record["role"], record["content"], record.get("metadata"), record["tokens"],
                   utc_from_us(record["ts_us"]))


class ConversationBuffer:
    """A bounded conversation log in one run's KV: the newest messages within ``max_messages``
    messages and ``max_tokens`` tokens (``None``: no such limit).

    >>> import tempfile
    >>> from inmem import Database
    >>> with Database.open(tempfile.mkdtemp()) as db:
    ...     buf = ConversationBuffer(db, db.begin_run(), "chat", max_messages=2)
    ...     for i in range(3):
    ...         _ = buf.append("user", f"message {i}")
    ...     print(buf.context())
    user: message 1
    user: message 2

    ``count_tokens``: any ``str -> int`` (default :func:`estimate_tokens`);
    the count of each message is stored with it, so trimming never recounts.
    The limits are this object's: appenders of one buffer should agree on them
    (each append trims to the limits of the object that made it).
    Constructing writes nothing.

    :raises InvalidArgument: a bad ``name`` (empty, ``/`` or NUL in it, over 256
        characters), a limit that is not an int >= 1 or None, ``count_tokens`` not callable.
    """

    __slots__ = ("_db", "run", "name", "max_messages", "max_tokens", "_count", "_head", "_msg")

    def __init__(self, db: Database, run: str, name: str, *, max_messages: int | None = 100,
                 max_tokens: int | None = 4000, count_tokens: Callable[[str], int] | None = None):
        if type(run) is not str:
            raise InvalidArgument(f"run must be a run id (str); got {type(run).__name__}")
        self._db = db
        self.run = run
        self.name = _name(name)
        self.max_messages = _limit(max_messages, "max_messages")
        self.max_tokens = _limit(max_tokens, "max_tokens")
        if count_tokens is not None and not callable(count_tokens):
            raise InvalidArgument("count_tokens must be a callable str -> int, or None")
        self._count = count_tokens or estimate_tokens
        self._head = f"buffer/{name}/head"
        self._msg = f"buffer/{name}/msg/"

    def __repr__(self) -> str:
        return (f"ConversationBuffer(run={self.run!r}, name={self.name!r}, max_messages={self.max_messages}, "
                f"max_tokens={self.max_tokens})")

    def _tokens(self, content: str) -> int:
        n = self._count(content)
        if type(n) is not int or n < 0:
            raise InvalidArgument(f"count_tokens must return an int >= 0; it returned {n!r:.40}")
        return n

    def append(self, role: str, content: str, metadata: dict[str, Any] | None = None) -> Message:
        """Append a message and, in the same commit, drop the oldest ones until the buffer is within
        its limits; return the message as stored.

        Concurrent appenders are serialised by the buffer's head record (optimistic
        transactions, retried on conflict): sequence numbers are dense and every
        commit leaves the buffer within limits. Complexity: O(1 + trimmed) point
        reads and writes, plus ``count_tokens(content)``.

        :raises InvalidArgument: ``role`` not a non-empty str, ``content`` not a str,
            ``metadata`` not a dict or None, ``count_tokens`` returned a non-int or a
            negative number, or the message alone has more than ``max_tokens`` tokens.
        :raises InvalidValue: ``metadata`` holds a value inmem cannot store.
        :raises RunNotFound: / :raises RunClosed: no such run / it has ended.
        :raises TransactionConflict: still conflicting after 200 retries.
        """
        if type(role) is not str or not role:
            raise InvalidArgument(f"role must be a non-empty str; got {role!r:.40}")
        if type(content) is not str:
            raise InvalidArgument(f"content must be a str; got {type(content).__name__}")
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidArgument(f"metadata must be a dict or None; got {type(metadata).__name__}")
        tokens = self._tokens(content)
        if self.max_tokens is not None and tokens > self.max_tokens:
            raise InvalidArgument(f"the message has {tokens} tokens; the buffer holds at most {self.max_tokens}")
        record = {"role": role, "content": content, "metadata": metadata, "tokens": tokens, "ts_us": now_us()}
        run, head_key, msg, max_messages, max_tokens = self.run, self._head, self._msg, self.max_messages, \
            self.max_tokens

        def append(tx: Any) -> int:
            kv = tx.kv
            head = kv.get(run, head_key)
            if head is None:
                head = {"first": 0, "next": 0, "count": 0, "tokens": 0, "roles": {}}
            seq = head["next"]
            kv.put(run, f"{msg}{seq:016x}", record)
            roles = head["roles"]
            head["next"] = seq + 1
            head["count"] += 1
            head["tokens"] += tokens
            roles[role] = roles.get(role, 0) + 1
            while (max_messages is not None and head["count"] > max_messages) or \
                    (max_tokens is not None and head["tokens"] > max_tokens):
                key = f"{msg}{head['first']:016x}"
                old = kv.get(run, key)
                head["first"] += 1
                if old is None:  # pragma: no cover - a message deleted behind the buffer's back
                    continue
                kv.delete(run, key)
                head["count"] -= 1
                head["tokens"] -= old["tokens"]
                left = roles.get(old["role"], 0) - 1
                if left > 0:
                    roles[old["role"]] = left
                else:
                    roles.pop(old["role"], None)
            kv.put(run, head_key, head)
            return seq

        seq = self._db.transact(append, retries=_APPEND_RETRIES)
        return _message(seq, record)

    def messages(self, limit: int | None = None) -> list[Message]:
        """The buffer's messages, oldest first; ``limit``: only the newest ``limit``. O(n) (one scan).

        :raises InvalidArgument: ``limit`` not an int >= 0 or None.
        :raises RunNotFound: no such run.
        """
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidArgument(f"limit must be an int >= 0 or None; got {limit!r}")
        skip = len(self._msg)
        out = [_message(int(key[skip:], 16), value) for key, value in self._db.kv.scan(self.run, self._msg)]
        return out if limit is None else out[len(out) - limit:] if limit else []

    def context(self, format: str = "conversation", max_messages: int | None = None,
                max_tokens: int | None = None) -> str:
        """The buffer as prompt text: the newest messages that fit ``max_messages`` and
        ``max_tokens`` (stored counts; None: no further limit), oldest first.

        ``format``: ``"conversation"`` — ``role: content`` per message, joined by
        newlines; ``"compact"`` — one line, ``role: content`` with every whitespace
        run collapsed to one space, messages joined by `` | ``; ``"summary"`` — an
        extractive digest, no model involved: ``"<n> messages (<role>: <count>, ...),
        about <tokens> tokens."`` then ``"First <role>: <text>"`` and ``"Last
        <role>: <text>"`` lines (each text collapsed and cut to 200 characters, ``…``
        marking a cut). An empty selection gives ``""``. O(n).

        :raises InvalidArgument: unknown ``format``, a limit not an int >= 1 or None.
        """
        if format not in FORMATS:
            raise InvalidArgument(f"format must be one of {', '.join(FORMATS)}; got {format!r:.40}")
        max_messages = _limit(max_messages, "max_messages")
        max_tokens = _limit(max_tokens, "max_tokens")
        chosen: list[Message] = []
        total = 0
        for m in reversed(self.messages()):
            if (max_messages is not None and len(chosen) >= max_messages) or \
                    (max_tokens is not None and total + m.tokens > max_tokens):
                break
            chosen.append(m)
            total += m.tokens
        chosen.reverse()
        if not chosen:
            return ""
        if format == "conversation":
            return "\n".join(f"{m.role}: {m.content}" for m in chosen)
        if format == "compact":
            return " | ".join(f"{m.role}: {_collapse(m.content)}" for m in chosen)
        roles: dict[str, int] = {}
        for m in chosen:
            roles[m.role] = roles.get(m.role, 0) + 1
        counts = ", ".join(f"{r}: {n}" for r, n in roles.items())
        lines = [f"{len(chosen)} messages ({counts}), about {total} tokens.",
                 f"First {chosen[0].role}: {_cut(chosen[0].content)}"]
        if len(chosen) > 1:
            lines.append(f"Last {chosen[-1].role}: {_cut(chosen[-1].content)}")
        return "\n".join(lines)

    def stats(self) -> dict[str, Any]:
        """``{"messages", "tokens", "roles": {role: count}, "first_seq", "next_seq", "max_messages",
        "max_tokens"}`` from the head record (one point read). :raises RunNotFound: no such run."""
        head = self._db.kv.get(self.run, self._head) or {"first": 0, "next": 0, "count": 0, "tokens": 0,
                                                          "roles": {}}
        return {"messages": head["count"], "tokens": head["tokens"], "roles": dict(head["roles"]),
                "first_seq": head["first"], "next_seq": head["next"], "max_messages": self.max_messages,
                "max_tokens": self.max_tokens}

    def clear(self) -> int:
        """Delete every message (one commit); sequence numbers go on from where they were.
        Return how many were deleted. :raises RunNotFound: / :raises RunClosed: as every write."""
        run, head_key, msg = self.run, self._head, self._msg

        def clear(tx: Any) -> int:
            head = tx.kv.get(run, head_key)
            if head is None:
                return 0
            keys = [k for k, _ in tx.kv.scan(run, msg)]
            for k in keys:
                tx.kv.delete(run, k)
            tx.kv.put(run, head_key, {"first": head["next"], "next": head["next"], "count": 0, "tokens": 0,
                                      "roles": {}})
            return len(keys)

        return self._db.transact(clear, retries=_APPEND_RETRIES)


def _collapse(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def _cut(text: str, width: int = 200) -> str:
    text = _collapse(text)
    return text if len(text) <= width else text[:width - 1] + "…"


class WorkingMemory:
    """Short-lived scratch values of one run, each with a time to live: KV keys ``wm/<key>``.

    ``default_ttl``: seconds (> 0) given to a :meth:`set` without ``ttl``;
    None: such values never expire. Expiry is judged by the database's clock
    (``Database.open(clock=)``): an expired value is absent for every read at
    once, and the sweeper deletes it later in an ordinary commit (SPEC.md §2
    "Time to live"). Constructing writes nothing.

    :raises InvalidArgument: ``default_ttl`` not a number of seconds > 0 or None.
    """

    __slots__ = ("_db", "run", "default_ttl")
    PREFIX = "wm/"

    def __init__(self, db: Database, run: str, *, default_ttl: float | None = 3600):
        if type(run) is not str:
            raise InvalidArgument(f"run must be a run id (str); got {type(run).__name__}")
        check_ttl(default_ttl)
        self._db = db
        self.run = run
        self.default_ttl = default_ttl

    def __repr__(self) -> str:
        return f"WorkingMemory(run={self.run!r}, default_ttl={self.default_ttl})"

    @classmethod
    def _key(cls, key: object) -> str:
        if type(key) is not str or not key:
            raise InvalidKey(f"a working-memory key is a non-empty str; got {key!r:.40}")
        return cls.PREFIX + key

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Set ``key`` to ``value``, expiring ``ttl`` seconds from now (None: ``default_ttl``). One commit.

        :raises InvalidKey: ``key`` not a non-empty str. :raises InvalidValue: ``value`` not storable.
        :raises InvalidArgument: a bad ``ttl``. :raises RunNotFound: / :raises RunClosed: as every write.
        """
        k = self._key(key)
        ttl = self.default_ttl if ttl is None else ttl
        check_ttl(ttl)
        self._db.kv.put(self.run, k, value, ttl=ttl)

    def get(self, key: str, default: Any = None, *, refresh: bool = False) -> Any:
        """The value of ``key``, or ``default`` if absent or expired. O(1).
        ``refresh=True``: renew its lease (it expires its original ttl from now; a commit).

        :raises InvalidKey: ``key`` not a non-empty str. :raises RunNotFound: no such run.
        """
        return self._db.kv.get(self.run, self._key(key), default, refresh_ttl=refresh)

    def expires_at(self, key: str) -> _dt.datetime | None:
        """When ``key``'s value expires (UTC), or None (absent, expired, or no time to live)."""
        us = self._db.kv.expires_at(self.run, self._key(key))
        return None if us is None else utc_from_us(us)

    def all(self) -> dict[str, Any]:
        """Every live (unexpired) key and value, in key order. O(n) (one scan)."""
        skip = len(self.PREFIX)
        return {k[skip:]: v for k, v in self._db.kv.scan(self.run, self.PREFIX)}

    def delete(self, key: str) -> bool:
        """Delete ``key``; return whether a live value was there. :raises InvalidKey: / :raises RunClosed:."""
        return self._db.kv.delete(self.run, self._key(key))
