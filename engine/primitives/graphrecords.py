"""Memory-graph records: ``Node`` and ``Edge``, their CBOR record layout, key parsing and argument checks.

This module owns what one graph record is (SPEC.md §2 "Memory graph"):
node ``{"kind", "content", "content_hash", "metadata", "created_us",
"updated_us"}``, edge ``{"weight", "metadata", "created_us",
"updated_us"}``, and how a graph user key splits into its parts.
Invariant: a record that does not have its shape raises
:class:`~inmem.errors.CorruptionError` on decode, never returns as data;
every argument check raises :class:`~inmem.errors.InvalidArgument` and
writes nothing (this module never writes).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
from dataclasses import dataclass
from typing import Any

from ..codec import decode_value, utc_from_us
from ..errors import CorruptionError, InvalidArgument

__all__ = ["DIRECTIONS", "Edge", "Node", "check_content", "check_depth", "check_direction", "check_metadata",
           "check_weight", "edge_from_record", "edge_key_parts", "node_from_record"]

DIRECTIONS = ("out", "in", "both")
_SEP = b"\x00"


class _Times:
    """``created_at`` / ``updated_at``: a record's ``created_us`` / ``updated_us`` as UTC datetimes."""

    created_us: int
    updated_us: int

    @property
    def created_at(self) -> _dt.datetime:
        return utc_from_us(self.created_us)

    @property
    def updated_at(self) -> _dt.datetime:
        return utc_from_us(self.updated_us)


@dataclass(frozen=True)
class Node(_Times):
    """A memory: ``id``, ``kind`` (str | None), ``content`` (str), ``content_hash`` (SHA-256 hex of
    the content's UTF-8), ``metadata`` (dict | None), ``created_us``/``updated_us`` (Unix µs; ``created_at``/``updated_at``: the same as UTC datetimes)."""

    id: str
    kind: str | None
    content: str
    content_hash: str
    metadata: dict[str, Any] | None
    created_us: int
    updated_us: int

    __hash__ = None  # type: ignore[assignment]  # metadata is a dict


@dataclass(frozen=True)
class Edge(_Times):
    """A typed, weighted edge ``source -relation-> target`` with ``metadata`` and Unix-µs times."""

    source: str
    relation: str
    target: str
    weight: float
    metadata: dict[str, Any] | None
    created_us: int
    updated_us: int

    __hash__ = None  # type: ignore[assignment]


def node_from_record(id: str, value: bytes) -> Node:
    """The :class:`Node` a stored record holds. :raises CorruptionError: not a node record."""
    r = decode_value(value)
    if not isinstance(r, dict) or not isinstance(r.get("content"), str) or "created_us" not in r:
        raise CorruptionError(f"graph node {id!r} is not a node record")
    return Node(id, r.get("kind"), r["content"], r["content_hash"], r.get("metadata"), r["created_us"],
                r["updated_us"])


def edge_from_record(source: str, relation: str, target: str, value: bytes) -> Edge:
    r = decode_value(value)
    if not isinstance(r, dict) or "weight" not in r:
        raise CorruptionError(f"graph edge {source!r} -{relation!r}-> {target!r} is not an edge record")
    return Edge(source, relation, target, r["weight"], r.get("metadata"), r["created_us"], r["updated_us"])


def edge_key_parts(user: bytes) -> tuple[str, str, str, str] | None:
    """``("n", id, "", "")`` or ``("o" | "i", a, relation, b)`` of a graph user key (after the tag), or None."""
    parts = user.split(_SEP)
    try:
        text = [p.decode() for p in parts]
    except UnicodeDecodeError:
        return None
    if len(text) == 2 and text[0] == "n" and text[1]:
        return ("n", text[1], "", "")
    if len(text) == 4 and text[0] in ("o", "i") and all(text[1:]):
        return (text[0], text[1], text[2], text[3])
    return None


def check_content(content: object) -> tuple[str, str]:
    """``(content, SHA-256 hex)``. :raises InvalidArgument: not a str or not UTF-8 encodable."""
    if not isinstance(content, str):
        raise InvalidArgument(f"node content is a str, got {type(content).__name__}")
    try:
        raw = content.encode()
    except UnicodeEncodeError:
        raise InvalidArgument("node content is not valid UTF-8 text (a lone surrogate)") from None
    return content, hashlib.sha256(raw).hexdigest()


def check_metadata(metadata: object) -> dict[str, Any] | None:
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidArgument(f"metadata must be a dict or None, got {type(metadata).__name__}")
    return metadata


def check_weight(weight: object) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise InvalidArgument(f"an edge weight is a finite int or float, got {weight!r:.80}")
    return float(weight)


def check_direction(direction: object) -> str:
    if direction not in DIRECTIONS:
        raise InvalidArgument(f"direction is 'out', 'in' or 'both', got {direction!r:.80}")
    return direction  # type: ignore[return-value]


def check_depth(depth: object, what: str, *, optional: bool) -> int | None:
    if depth is None and optional:
        return None
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise InvalidArgument(f"{what} is an int >= 0{' or None' if optional else ''}, got {depth!r:.80}")
    return depth
