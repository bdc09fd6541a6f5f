"""The run registry: which runs exist, their status, and their key prefixes.

This module owns the run record (key ``NS_RUN | run id | TAG_RUN``, a CBOR map)
and the in-memory table of runs rebuilt from the store on open. Invariant:
the table equals what the run records in the store say, because it changes
only under the commit lock, right after the commit that wrote the record is
applied. (The full run index with queries comes with the Primitives issue.)

Run record value (CBOR map)::

    {"name": str | None, "parent": str | None, "tags": [str], "metadata": {...},
     "status": "active" | "completed" | "failed" | "cancelled",
     "started_at": datetime (UTC), "ended_at": datetime (UTC) | None,
     "first_version": int (the commit that created it), "archived": bool (absent: False)}
"""

from __future__ import annotations

import datetime as _dt
import uuid
from collections.abc import Iterable
from typing import Any

from .codec import decode_value, encode_value
from .errors import InvalidArgument, InvalidValue, RunClosed, RunNotFound
from .keys import NS_RUN, TAG_RUN, new_run_id, prefix_end, run_id_bytes, run_id_of, run_prefix
from .store import UnifiedStore

__all__ = ["END_STATUSES", "RunRegistry"]

ACTIVE = "active"
#: Statuses ``end_run`` accepts.
END_STATUSES = ("completed", "failed", "cancelled")


def run_record_key(rid: bytes) -> bytes:
    """Key of a run's own record: the first key of the run's range."""
    return run_prefix(rid, TAG_RUN)


class RunRegistry:
    """In-memory table of runs: status and per-primitive key prefixes."""

    def __init__(self) -> None:
        self._status: dict[str, str] = {}
        self._rid: dict[str, bytes] = {}
        #: Live set of active run ids (the commit path checks membership under the commit lock).
        self.active: set[str] = set()
        #: Commit version at which each ended run's status changed (for snapshot readers).
        self._ended_at_version: dict[str, int] = {}
        self._last_end_version = 0
        #: Commit version that created each run begun by this handle (runs loaded at open were
        #: created before every snapshot a transaction can take, so they are absent: version 0).
        self._created_at_version: dict[str, int] = {}
        self._last_begin_version = 0
        # per primitive tag: run id text -> key prefix, for all runs / active runs only.
        # Primitives hold these dicts and look prefixes up on their fast paths.
        self._all: dict[int, dict[str, bytes]] = {}
        self._active: dict[int, dict[str, bytes]] = {}
        #: 16-byte ids of archived runs (their history is no longer retained under history="active").
        self.archived: set[bytes] = set()

    # --- loading ---------------------------------------------------------------

    def load(self, store: UnifiedStore) -> None:
        """Rebuild the table from the run records in ``store``.

        Skips from run to run by bisection: O(runs * log n), not O(keys).
        """
        lo = bytes((NS_RUN,))
        key = store.ceiling_key(lo)
        while key is not None and key[0] == NS_RUN:
            rid = run_id_of(key)
            entry = store.get(run_record_key(rid))
            if entry is not None:
                record = decode_value(entry[1])
                self._add(str(uuid.UUID(bytes=rid)), rid, record["status"])
                if record.get("archived"):
                    self.archived.add(rid)
            end = prefix_end(run_prefix(rid))
            key = store.ceiling_key(end) if end is not None else None

    def _add(self, run: str, rid: bytes, status: str) -> None:
        self._status[run] = status
        self._rid[run] = rid
        for tag, table in self._all.items():
            table[run] = run_prefix(rid, tag)
        if status == ACTIVE:
            self.active.add(run)
            for tag, table in self._active.items():
                table[run] = run_prefix(rid, tag)

    # --- lookups -----------------------------------------------------------------

    def prefix_maps(self, tag: int) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """Return live ``(all runs, active runs)`` maps from run id to the key prefix of ``tag``."""
        if tag not in self._all:
            self._all[tag] = {r: run_prefix(rid, tag) for r, rid in self._rid.items()}
            self._active[tag] = {
                r: run_prefix(rid, tag) for r, rid in self._rid.items() if self._status[r] == ACTIVE
            }
        return self._all[tag], self._active[tag]

    def check(self, run: object, *, write: bool) -> bytes:
        """Return the run's 16-byte id, or raise why it cannot be used.

        :raises RunNotFound: no such run (or not a run id at all).
        :raises RunClosed: ``write`` and the run has ended.
        """
        status = self._status.get(run) if isinstance(run, str) else None
        if status is None:
            run_id_bytes(run)  # raises RunNotFound with a precise message for malformed ids
            raise RunNotFound(f"no run {run!r} in this database")
        if write and status != ACTIVE:
            raise RunClosed(f"run {run} has ended ({status}); its data is read-only")
        return self._rid[run]  # type: ignore[index]

    def status(self, run: str) -> str:
        """The run's status. :raises RunNotFound: no such run."""
        self.check(run, write=False)
        return self._status[run]

    def __len__(self) -> int:
        return len(self._status)

    def __contains__(self, run: object) -> bool:
        return run in self._status

    def runs(self) -> list[str]:
        """All run ids, in creation order (UUIDv7 text sorts by time)."""
        return sorted(self._status)

    def ids(self, status: str | None = None, snapshot: int | None = None) -> list[str]:
        """Run ids (only those with ``status`` if given) in start order. O(runs).

        With ``snapshot``, also the runs whose status changed after that
        commit version (their status *at* the snapshot may be ``status``);
        the caller checks each against the record it reads.
        """
        if status is None:
            return list(self._status)
        items = list(self._status.items())  # a copy: begin_run may add to the dict meanwhile
        if snapshot is not None and self._last_end_version > snapshot:  # a run ended after the snapshot
            extra = {r for r, v in list(self._ended_at_version.items()) if v > snapshot}
            return [r for r, s in items if s == status or r in extra]
        return [r for r, s in items if s == status]

    def created_version(self, run: str) -> int:
        """The commit version that created ``run``, if this handle created it; else 0. O(1)."""
        return self._created_at_version.get(run, 0)

    def visible_at(self, run: str, snapshot: int) -> bool:
        """Whether ``run`` existed at commit version ``snapshot`` (runs are never deleted). O(1)."""
        return self._created_at_version.get(run, 0) <= snapshot

    def changed_after(self, snapshot: int) -> int:
        """The newest commit version after ``snapshot`` that created or ended a run, else 0. O(1).

        What a transaction that listed runs validates against: such a commit
        may add a run to, or move a run between, the sets a listing selects.
        """
        newest = max(self._last_begin_version, self._last_end_version)
        return newest if newest > snapshot else 0

    def count_by_status(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self._status.values():
            out[s] = out.get(s, 0) + 1
        return out

    # --- changes (prepared outside the commit lock, applied under it) ----------------

    def prepare_begin(
        self, name: str | None, parent: str | None, tags: Iterable[str], metadata: Any
    ) -> tuple[str, bytes, dict[str, Any]]:
        """Validate a new run and return ``(run id, record key, record)``.

        The caller sets ``record["first_version"]`` and encodes it under the
        commit lock (:meth:`encode_record` raises ``InvalidValue`` for
        metadata cbor2 cannot encode).

        :raises InvalidArgument: ``name`` is not a str or None, a tag is not a str.
        :raises RunNotFound: ``parent`` names no run.
        :raises InvalidValue: ``metadata`` is not a dict.
        """
        if name is not None and not isinstance(name, str):
            raise InvalidArgument(f"run name must be a str or None, got {type(name).__name__}")
        if isinstance(tags, str):
            raise InvalidArgument("tags must be an iterable of str, not a single str")
        tag_list = list(tags)
        for t in tag_list:
            if not isinstance(t, str):
                raise InvalidArgument(f"tags must be str, got {type(t).__name__}: {t!r:.80}")
        if parent is not None:
            self.check(parent, write=False)
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidValue(f"metadata must be a dict or None, got {type(metadata).__name__}")
        run = new_run_id()
        rid = run_id_bytes(run)
        record = {
            "name": name,
            "parent": parent,
            "tags": tag_list,
            "metadata": metadata or {},
            "status": ACTIVE,
            "started_at": _dt.datetime.now(_dt.timezone.utc),
            "ended_at": None,
        }
        return run, run_record_key(rid), record

    @staticmethod
    def encode_record(record: dict[str, Any]) -> bytes:
        """Encode a run record. :raises InvalidValue: it holds something cbor2 cannot encode."""
        return encode_value(record)

    def prepare_end(self, store: UnifiedStore, run: str, status: str) -> tuple[bytes, bytes]:
        """Validate ending ``run`` (call under the commit lock); return ``(record key, new value)``.

        :raises InvalidArgument: ``status`` is not one of :data:`END_STATUSES`.
        :raises RunNotFound: no such run.
        :raises RunClosed: the run has already ended.
        """
        if status not in END_STATUSES:
            raise InvalidArgument(f"status must be one of {', '.join(END_STATUSES)}; got {status!r}")
        rid = self.check(run, write=True)
        key = run_record_key(rid)
        record = decode_value(self._record_bytes(store, key))
        record["status"] = status
        record["ended_at"] = _dt.datetime.now(_dt.timezone.utc)
        return key, encode_value(record)

    def prepare_archive(self, store: UnifiedStore, run: str) -> tuple[bytes, bytes] | None:
        """Validate archiving ``run`` (under the commit lock); return ``(record key, new value)``, or
        ``None`` if it is archived already.

        :raises RunNotFound: no such run.
        """
        rid = self.check(run, write=False)
        if rid in self.archived:
            return None
        key = run_record_key(rid)
        record = decode_value(self._record_bytes(store, key))
        record["archived"] = True
        return key, encode_value(record)

    def applied_archive(self, run: str) -> None:
        self.archived.add(self._rid[run])

    @staticmethod
    def _record_bytes(store: UnifiedStore, key: bytes) -> bytes:
        entry = store.get(key)
        assert entry is not None, "run in registry without a run record"
        return entry[1]

    def record(self, store: UnifiedStore, run: str) -> dict[str, Any]:
        """The decoded run record. :raises RunNotFound: no such run."""
        rid = self.check(run, write=False)
        return decode_value(self._record_bytes(store, run_record_key(rid)))

    def applied_begin(self, run: str, version: int = 0) -> None:
        """The begin commit (at ``version``) is applied: the run exists and is active."""
        self._add(run, run_id_bytes(run), ACTIVE)
        if version:
            self._created_at_version[run] = version
            self._last_begin_version = max(self._last_begin_version, version)

    def applied_end(self, run: str, status: str, version: int = 0) -> None:
        """The end commit (at ``version``) is applied: the run is read-only from now on."""
        self._status[run] = status
        self._ended_at_version[run] = version
        self._last_end_version = max(self._last_end_version, version)
        self.active.discard(run)
        for table in self._active.values():
            table.pop(run, None)
