"""The run index primitive: runs as first-class entities — look up, list, tag, annotate.

This module owns the query side of run records (``run prefix | TAG_RUN``; the
record itself is written by ``begin_run``/``end_run``, see
:mod:`inmem.registry`). Invariant: it changes only a run's ``tags`` and
``metadata``, and only while the run is active (an ended run is read-only
for every primitive).

``RunInfo.first_version`` is the commit version that created the run;
``last_version`` the highest commit version among the run's current entries
and ``counts`` the entries per primitive, both from one scan of the run's
key range (O(run size)); KV values whose time to live has passed do not count
(one more scan of the run's KV range, only when it has expiring values).
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..codec import decode_value, encode_value
from ..errors import InvalidArgument, RunNotFound
from ..expiry import EXPIRING_HEAD, unwrap
from ..keys import TAG_EVENT, TAG_EXPIRY, TAG_KV, TAG_STATE, TAG_TRACE, TAGGED_PREFIX_LEN, prefix_end, run_prefix
from ..registry import END_STATUSES, run_record_key
from .context import Context

__all__ = ["RunInfo", "Runs"]

_EXPIRING3 = EXPIRING_HEAD[:3]
_COUNTED = {"kv": TAG_KV, "events": TAG_EVENT, "state": TAG_STATE, "traces": TAG_TRACE}
STATUSES = ("active", *END_STATUSES)


@dataclass(frozen=True)
class RunInfo:
    """What the run index knows of one run."""

    id: str
    name: str | None
    parent: str | None
    status: str
    tags: tuple[str, ...]
    metadata: dict[str, Any] = field(compare=False)
    started_at: _dt.datetime
    ended_at: _dt.datetime | None
    first_version: int
    last_version: int
    counts: dict[str, int] = field(compare=False)
    #: ``db.archive_run`` was called: its history is no longer retained under ``history="active"``.
    archived: bool = False
    #: The tenant the run belongs to (``db.tenant(id).begin_run``, or a fork of its run); None: no tenant.
    tenant: str | None = None


class Runs:
    """The run index: ``db.runs`` / ``tx.runs``."""

    def __init__(self, ctx: Context):
        self._ctx = ctx

    def _record(self, run: str, *, write: bool = False) -> tuple[bytes, bytes, dict[str, Any]] | None:
        rid = self._ctx.check_run(run, write=write)
        return self._read(rid)

    def _listed(self, run: str) -> tuple[bytes, bytes, dict[str, Any]] | None:
        """:meth:`_record` of a run a listing named, None if it is gone meanwhile (``delete_tenant``)."""
        try:
            rid = self._ctx.check_run(run, write=False)
        except RunNotFound:
            return None
        return self._read(rid)

    def _read(self, rid: bytes) -> tuple[bytes, bytes, dict[str, Any]] | None:
        key = run_record_key(rid)
        entry = self._ctx.lookup(key)
        return None if entry is None else (rid, key, decode_value(entry[1]))

    def _info(self, run: str, rid: bytes, record: dict[str, Any], version: int | None = None) -> RunInfo:
        base = run_prefix(rid)
        entries = self._ctx.scan_entries(base, prefix_end(base))  # one scan: versions and counts
        last = max((v for _, v in entries), default=0)
        by_tag = Counter(k[TAGGED_PREFIX_LEN - 1] for k, _ in entries)
        counts = {name: by_tag.get(tag, 0) for name, tag in _COUNTED.items()}
        if counts["kv"] and by_tag.get(TAG_EXPIRY):  # expiring values exist: expired ones do not count
            now = self._ctx.now_us()
            kv = run_prefix(rid, TAG_KV)
            counts["kv"] -= sum(1 for _, value in self._ctx.scan(kv, prefix_end(kv))
                                if value[:3] == _EXPIRING3 and (unwrap(value)[0] or 0) <= now)
        return RunInfo(
            id=run, name=record["name"], parent=record["parent"], status=record["status"],
            tags=tuple(record["tags"]), metadata=record["metadata"], started_at=record["started_at"],
            ended_at=record["ended_at"], first_version=record.get("first_version", 0), last_version=last,
            counts=counts, archived=bool(record.get("archived", False)), tenant=record.get("tenant"),
        )

    def get(self, run: str) -> RunInfo:
        """The run's :class:`RunInfo`. Complexity: O(run size). :raises RunNotFound: no such run."""
        found = self._record(run)
        if found is None:  # created after this transaction's snapshot
            raise RunNotFound(f"no run {run!r} in this transaction's snapshot")
        rid, _, record = found
        return self._info(run, rid, record)

    def ids(self, *, status: str | None = None) -> list[str]:
        """Ids of the runs (only those with ``status`` if given), in start order: the run index
        without a :class:`RunInfo` each. O(runs). :raises InvalidArgument: unknown ``status``."""
        if status is not None and status not in STATUSES:
            raise InvalidArgument(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
        if status is None:
            return [r for r in self._ctx.run_ids() if self._listed(r) is not None]
        return [r for r in self._ctx.run_ids(status) if (f := self._listed(r)) is not None and f[2]["status"] == status]

    def list(self, *, status: str | None = None, tag: str | None = None, parent: str | None = None,
             name: str | None = None, started_after: _dt.datetime | None = None,
             limit: int | None = None) -> list[RunInfo]:
        """Runs matching every filter given, in start order (oldest first), at most ``limit``.

        Complexity: O(runs) to filter by status (held in memory), plus O(size)
        of each run returned. Inside a transaction the listing is of the
        snapshot (runs created after it are left out, statuses are those at
        the snapshot), and it is validated at commit: an update transaction
        that listed runs conflicts if any run was created or ended meanwhile.

        :raises InvalidArgument: unknown ``status`` or a negative ``limit``.
        """
        if status is not None and status not in STATUSES:
            raise InvalidArgument(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidArgument(f"limit must be an int >= 0; got {limit!r}")
        out: list[RunInfo] = []
        for run in self._ctx.run_ids(status):
            if limit is not None and len(out) >= limit:
                break
            found = self._listed(run)
            if found is None:
                continue
            rid, _, r = found
            if status is not None and r["status"] != status:
                continue
            if (tag is not None and tag not in r["tags"]) or (parent is not None and r["parent"] != parent) \
                    or (name is not None and r["name"] != name) \
                    or (started_after is not None and not r["started_at"] > started_after):
                continue
            out.append(self._info(run, rid, r))
        return out

    def children(self, run: str) -> list[RunInfo]:
        """Runs whose parent is ``run`` (forks and sub-runs), in start order."""
        self._ctx.check_run(run, write=False)
        return self.list(parent=run)

    def set_metadata(self, run: str, **fields: Any) -> RunInfo:
        """Merge ``fields`` into the run's metadata. :raises RunClosed: the run has ended."""
        rid, key, record = self._writable(run)
        record["metadata"] = {**record["metadata"], **fields}
        self._ctx.write(run, key, encode_value(record))
        return self._info(run, rid, record)

    def tag(self, run: str, *tags: str) -> RunInfo:
        """Add tags (kept in first-added order, without repeats). :raises RunClosed: the run has ended."""
        if not all(isinstance(t, str) for t in tags):
            raise InvalidArgument("tags must be str")
        rid, key, record = self._writable(run)
        record["tags"] = list(dict.fromkeys([*record["tags"], *tags]))
        self._ctx.write(run, key, encode_value(record))
        return self._info(run, rid, record)

    def _writable(self, run: str) -> tuple[bytes, bytes, dict[str, Any]]:
        found = self._record(run, write=True)
        assert found is not None, "an active run always has its record"
        return found
