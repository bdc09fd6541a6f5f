"""The state machine primitive: named values coordinated by compare-and-swap (tag ``TAG_STATE``).

This module owns state records and the transition rules. Invariants: a
state's ``version`` rises by exactly one per change (1 at creation); a state
with declared transitions only ever moves along them (``InvalidTransition``
otherwise, and nothing is written); every read-compare-write happens in one
atomic step (one commit outside a transaction, or inside the caller's
transaction), so two agents racing a ``cas`` cannot both win.

Key: ``run prefix | TAG_STATE | name (UTF-8)``. Value (CBOR map):
``{"value", "version", "updated_us", "transitions": {from: [to]} | None}``.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any

from ..codec import decode_value, encode_value, now_us, utc_from_us
from ..errors import InvalidArgument, InvalidTransition
from ..keys import TAG_STATE, encode_user_key, prefix_end, run_prefix
from .context import Context

__all__ = ["State", "StateMachines", "state_from_record"]



@dataclass(frozen=True)
class State:
    """A state's ``value``, its ``version`` (1, 2, 3 ... per change) and ``updated_at`` (UTC)."""

    value: Any
    version: int
    updated_at: _dt.datetime


def _member(value: Any, states: set[Any]) -> bool:
    try:
        return value in states
    except TypeError:  # an unhashable value is no declared state
        return False


def state_from_record(record: dict[str, Any]) -> State:
    """The :class:`State` of a decoded state record."""
    return State(record["value"], record["version"], utc_from_us(record["updated_us"]))


class StateMachines:
    """Named states per run: ``db.state`` / ``tx.state``."""

    def __init__(self, ctx: Context):
        self._ctx = ctx

    def _key(self, run: str, name: str, *, write: bool) -> bytes:
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"state names are non-empty str, got {name!r:.80}")
        return run_prefix(self._ctx.check_run(run, write=write), TAG_STATE) + encode_user_key(name)

    def _record(self, key: bytes) -> dict[str, Any] | None:
        entry = self._ctx.lookup(key)
        return None if entry is None else decode_value(entry[1])

    def get(self, run: str, name: str) -> State | None:
        """The state ``name`` of ``run``, or ``None`` if it was never set. O(1)."""
        record = self._record(self._key(run, name, write=False))
        return None if record is None or record["version"] == 0 else state_from_record(record)

    def define(self, run: str, name: str, *, transitions: dict[str, list[str]], initial: Any) -> State:
        """Declare the allowed moves of ``name`` (``{from: [to, ...]}``) and set it to ``initial`` if unset.

        States are hashable values (str, int, ...) compared by equality.
        Returns the current state.

        :raises InvalidArgument: ``transitions`` is not a dict of lists, or
            ``initial`` is not one of its states.
        """
        if not isinstance(transitions, dict) or not all(isinstance(v, (list, tuple)) for v in transitions.values()):
            raise InvalidArgument("transitions must be a dict mapping a state to a list of states")
        try:
            states = set(transitions) | {t for targets in transitions.values() for t in targets}
            declared = initial in states
        except TypeError:
            raise InvalidArgument("states must be hashable values (str, int, ...)") from None
        if not declared:
            raise InvalidArgument(f"initial state {initial!r} is not among the declared states")
        key = self._key(run, name, write=True)
        record = self._record(key)
        now = now_us()
        if record is None:
            record = {"value": initial, "version": 1, "updated_us": now}
        elif not _member(record["value"], states):
            raise InvalidTransition(f"state {name!r} is {record['value']!r}, which the new transitions do not name")
        record["transitions"] = {k: list(v) for k, v in transitions.items()}
        self._ctx.write(run, key, encode_value(record))
        return state_from_record(record)

    def set(self, run: str, name: str, value: Any) -> State:
        """Set ``name`` to ``value`` unconditionally (still obeying declared transitions).

        :raises InvalidTransition: the move is not declared; nothing is written.
        :raises InvalidValue: ``value`` cannot be encoded.
        """
        key = self._key(run, name, write=True)
        return self._move(run, name, key, self._record(key), value)

    def cas(self, run: str, name: str, expected: Any, new: Any) -> bool:
        """Set ``name`` to ``new`` only if its value equals ``expected`` (``None``: only if absent).

        Returns whether it did. Atomic: of two agents racing the same ``cas``,
        one wins. :raises InvalidTransition: it matched but the move is not declared.
        """
        key = self._key(run, name, write=True)
        record = self._record(key)
        current = None if record is None else record["value"]
        if (record is None) != (expected is None) or (record is not None and current != expected):
            return False
        self._move(run, name, key, record, new)
        return True

    def cas_version(self, run: str, name: str, expected_version: int, new: Any) -> bool:
        """Set ``name`` to ``new`` only if its version is ``expected_version`` (0: only if absent)."""
        key = self._key(run, name, write=True)
        record = self._record(key)
        if (0 if record is None else record["version"]) != expected_version:
            return False
        self._move(run, name, key, record, new)
        return True

    def _move(self, run: str, name: str, key: bytes, record: dict[str, Any] | None, value: Any) -> State:
        transitions = None if record is None else record.get("transitions")
        if transitions is not None and record is not None:
            try:
                allowed = transitions.get(record["value"], [])
            except TypeError:  # an unhashable current value names no declared state
                allowed = []
            if value not in allowed:
                raise InvalidTransition(
                    f"state {name!r} of run {run} may not move from {record['value']!r} to {value!r} "
                    f"(allowed: {allowed})"
                )
        new = {
            "value": value,
            "version": (0 if record is None else record["version"]) + 1,
            "updated_us": now_us(),
        }
        if transitions is not None:
            new["transitions"] = transitions
        self._ctx.write(run, key, encode_value(new))
        return state_from_record(new)

    def names(self, run: str) -> list[str]:
        """Names of ``run``'s states, in order."""
        base = run_prefix(self._ctx.check_run(run, write=False), TAG_STATE)
        return [k[len(base):].decode() for k, _ in self._ctx.scan(base, prefix_end(base))]
