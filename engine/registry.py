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
     "first_version": int (the commit that created it), "archived": bool (absent: False),
     "tenant": str (absent: the run belongs to no tenant)}

Tenants (``db.tenant(id)``): a :class:`TenantScope` is the registry as one
tenant sees it — the same ``check`` / ``prefix_maps`` / ``ids`` a context
calls, restricted to the tenant's runs (a foreign run raises the very
``RunNotFound`` a missing one does). The registry keeps each scope's live
maps up to date on begin, end and delete, under the same commit lock.
Runs are deleted only by ``delete_tenant`` (:meth:`RunRegistry.applied_delete`).
"""

from __future__ import annotations

import datetime as _dt
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from .codec import decode_value, encode_value
from .errors import InvalidArgument, InvalidValue, RunClosed, RunNotFound
from .keys import NS_RUN, RUN_ID_BYTES, TAG_RUN, new_run_id, run_id_bytes, run_prefix
from .store import UnifiedStore

__all__ = ["END_STATUSES", "RunRegistry", "TenantScope", "check_tenant_id"]

ACTIVE = "active"
#: Statuses ``end_run`` accepts.
END_STATUSES = ("completed", "failed", "cancelled")


#: Longest tenant id, in UTF-8 bytes.
MAX_TENANT_BYTES = 256


def check_tenant_id(tenant: object) -> str:
    """Return ``tenant`` if it is a valid tenant id: a non-empty str of at most 256 UTF-8 bytes, no NUL.

    :raises InvalidArgument: it is not.
    """
    if not isinstance(tenant, str):
        raise InvalidArgument(f"tenant id must be a str, got {type(tenant).__name__}")
    if not tenant:
        raise InvalidArgument("tenant id must be a non-empty str")
    if "\x00" in tenant:
        raise InvalidArgument("tenant id must not contain NUL")
    try:
        size = len(tenant.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"tenant id must be valid Unicode text: {exc}") from None
    if size > MAX_TENANT_BYTES:
        raise InvalidArgument(f"tenant id is {size} bytes in UTF-8; at most {MAX_TENANT_BYTES}")
    return tenant


class _Archived(set):  # type: ignore[type-arg]
    """The archived run ids (16 bytes), as history retention asks: a run the registry no longer knows
    (deleted by ``delete_tenant``, in this process or before it opened) counts as archived."""

    def __init__(self, known: dict[bytes, str]):
        super().__init__()
        self._known = known

    def __contains__(self, rid: object) -> bool:
        return set.__contains__(self, rid) or rid not in self._known


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
        #: 16-byte id -> run id text of every run (what "known" means for :class:`_Archived`).
        self._known: dict[bytes, str] = {}
        #: 16-byte ids of archived runs (their history is no longer retained under history="active");
        #: a deleted run counts as archived.
        self.archived: set[bytes] = _Archived(self._known)
        #: run id -> tenant id, for runs that belong to a tenant.
        self._tenant: dict[str, str] = {}
        #: tenant of a run between ``prepare_begin`` and ``applied_begin``.
        self._pending: dict[str, str] = {}
        #: tenant id -> its scope (made on first use, kept up to date from then on).
        self._scopes: dict[str, TenantScope] = {}
        #: run id -> commit version that deleted it (this handle only: a clearer RunNotFound).
        self._deleted: dict[str, int] = {}
        # guards _tenant and _scopes between scope creation (any thread) and the commit path
        self._lock = threading.Lock()

    # --- loading ---------------------------------------------------------------

    def load(self, store: UnifiedStore) -> None:
        """Rebuild the table from the run records in ``store``.

        The run ids come from :meth:`UnifiedStore.key_heads` (the run namespace's
        distinct 16-byte heads, ascending): by bisection from run to run,
        O(runs * log n), or, right after recovery while the sorted index is
        deferred, one C walk of the keys, O(n), which leaves it deferred.
        """
        for rid in store.key_heads(NS_RUN, RUN_ID_BYTES):
            entry = store.get(run_record_key(rid))
            if entry is not None:
                record = decode_value(entry[1])
                self._add(str(uuid.UUID(bytes=rid)), rid, record["status"], record.get("tenant"))
                if record.get("archived"):
                    self.archived.add(rid)

    def _add(self, run: str, rid: bytes, status: str, tenant: str | None = None) -> None:
        self._status[run] = status
        self._rid[run] = rid
        self._known[rid] = run
        if tenant is not None:
            with self._lock:
                self._tenant[run] = tenant
                scope = self._scopes.get(tenant)
                if scope is not None:
                    scope._add(run, rid, status == ACTIVE)  # noqa: SLF001 - the scope's owner
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
            if run in self._deleted:
                raise RunNotFound(f"no run {run!r} in this database: it was deleted by delete_tenant "
                                  f"at commit version {self._deleted[run]}")  # type: ignore[index]
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

    def tenant_of(self, run: str) -> str | None:
        """The tenant ``run`` belongs to, or None (no tenant, or no such run). O(1)."""
        return self._tenant.get(run)

    def tenant_runs(self, tenant: str) -> list[str]:
        """Ids of ``tenant``'s runs, in start order. O(runs)."""
        with self._lock:
            return sorted(r for r, t in self._tenant.items() if t == tenant)

    def scope(self, tenant: str) -> TenantScope:
        """The registry as ``tenant`` sees it (made once, then kept up to date). O(runs) the first time."""
        scope = self._scopes.get(tenant)
        if scope is not None:
            return scope
        with self._lock:
            scope = self._scopes.get(tenant)
            if scope is None:
                scope = TenantScope(self, tenant)
                for run, t in self._tenant.items():
                    if t == tenant:
                        scope._add(run, self._rid[run], self._status[run] == ACTIVE)  # noqa: SLF001
                self._scopes[tenant] = scope
            return scope

    def count_by_status(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self._status.values():
            out[s] = out.get(s, 0) + 1
        return out

    # --- changes (prepared outside the commit lock, applied under it) ----------------

    def prepare_begin(
        self, name: str | None, parent: str | None, tags: Iterable[str], metadata: Any, tenant: str | None = None
    ) -> tuple[str, bytes, dict[str, Any]]:
        """Validate a new run and return ``(run id, record key, record)``.

        The run belongs to ``tenant`` if given, else to its ``parent``'s tenant
        (so a fork of a tenant's run is the tenant's), else to none; the record
        then has ``"tenant"``, and :meth:`applied_begin` files the run under it.

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
        if tenant is None and parent is not None:
            tenant = self._tenant.get(parent)
        run = new_run_id()
        rid = run_id_bytes(run)
        if tenant is not None:
            self._pending[run] = tenant
        record = {
            "name": name,
            "parent": parent,
            "tags": tag_list,
            "metadata": metadata or {},
            "status": ACTIVE,
            "started_at": _dt.datetime.now(_dt.timezone.utc),
            "ended_at": None,
        }
        if tenant is not None:
            record["tenant"] = tenant
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
        if version:
            self._created_at_version[run] = version
            self._last_begin_version = max(self._last_begin_version, version)
        self._add(run, run_id_bytes(run), ACTIVE, self._pending.pop(run, None))

    def applied_end(self, run: str, status: str, version: int = 0) -> None:
        """The end commit (at ``version``) is applied: the run is read-only from now on."""
        self._status[run] = status
        self._ended_at_version[run] = version
        self._last_end_version = max(self._last_end_version, version)
        self.active.discard(run)
        for table in self._active.values():
            table.pop(run, None)
        tenant = self._tenant.get(run)
        if tenant is not None:
            with self._lock:
                scope = self._scopes.get(tenant)
                if scope is not None:
                    scope._end(run, version)  # noqa: SLF001 - the scope's owner

    def applied_delete(self, runs: Iterable[str], version: int) -> None:
        """The commit (at ``version``) that deleted every key of ``runs`` is applied: they no longer exist.

        Each is dropped from every table and scope; a transaction that had
        checked one fails at commit (its run record changed) or gets
        ``RunNotFound``; one that listed runs conflicts (:meth:`changed_after`).
        """
        for run in runs:
            rid = self._rid.pop(run)
            self._status.pop(run, None)
            self._known.pop(rid, None)
            set.discard(self.archived, rid)
            self.active.discard(run)
            self._created_at_version.pop(run, None)
            self._ended_at_version.pop(run, None)
            for table in (*self._all.values(), *self._active.values()):
                table.pop(run, None)
            self._deleted[run] = version
            with self._lock:
                tenant = self._tenant.pop(run, None)
                scope = None if tenant is None else self._scopes.get(tenant)
                if scope is not None:
                    scope._remove(run, version)  # noqa: SLF001 - the scope's owner
        self._last_end_version = max(self._last_end_version, version)


class TenantScope:
    """The run registry as one tenant sees it: only its runs exist.

    Offers what the contexts and transactions call on a registry
    (:meth:`check`, :meth:`prefix_maps`, :meth:`ids`, :meth:`visible_at`,
    :meth:`created_version`, :meth:`changed_after`), so every primitive
    built on a context holding a scope is isolated without knowing of
    tenants. A foreign run id raises exactly the ``RunNotFound`` of an id no
    run has. Made by :meth:`RunRegistry.scope`; its tables change only
    through the registry, under the registry's lock, on the commit path.
    """

    def __init__(self, registry: RunRegistry, tenant: str):
        self._registry = registry
        #: The tenant id.
        self.tenant = tenant
        self._rid: dict[str, bytes] = {}
        self._active: set[str] = set()
        self._all_maps: dict[int, dict[str, bytes]] = {}
        self._active_maps: dict[int, dict[str, bytes]] = {}
        self._last_change = 0

    # --- kept up to date by the registry (its lock held) ---------------------------------

    def _add(self, run: str, rid: bytes, active: bool) -> None:
        self._rid[run] = rid
        for tag, table in self._all_maps.items():
            table[run] = run_prefix(rid, tag)
        if active:
            self._active.add(run)
            for tag, table in self._active_maps.items():
                table[run] = run_prefix(rid, tag)
        self._last_change = max(self._last_change, self._registry.created_version(run))

    def _end(self, run: str, version: int) -> None:
        self._active.discard(run)
        for table in self._active_maps.values():
            table.pop(run, None)
        self._last_change = max(self._last_change, version)

    def _remove(self, run: str, version: int) -> None:
        self._end(run, version)
        self._rid.pop(run, None)
        for table in self._all_maps.values():
            table.pop(run, None)

    # --- what a context calls -----------------------------------------------------------

    def check(self, run: object, *, write: bool) -> bytes:
        """As :meth:`RunRegistry.check`, and a run of another tenant (or of none) does not exist.

        :raises RunNotFound: no such run of this tenant (the same message as for any missing id).
        :raises RunClosed: ``write`` and the run has ended.
        """
        if not isinstance(run, str) or run not in self._rid:
            run_id_bytes(run)  # a malformed id: the registry's precise message
            raise RunNotFound(f"no run {run!r} in this database")
        return self._registry.check(run, write=write)

    def prefix_maps(self, tag: int) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """Live ``(all runs, active runs)`` maps of this tenant's runs to the key prefix of ``tag``."""
        if tag not in self._all_maps:
            with self._registry._lock:  # noqa: SLF001 - the registry's own lock, same module
                if tag not in self._all_maps:
                    self._active_maps[tag] = {r: run_prefix(self._rid[r], tag) for r in self._active}
                    self._all_maps[tag] = {r: run_prefix(rid, tag) for r, rid in self._rid.items()}
        return self._all_maps[tag], self._active_maps[tag]

    def ids(self, status: str | None = None, snapshot: int | None = None) -> list[str]:
        """As :meth:`RunRegistry.ids`, this tenant's runs only. O(runs)."""
        mine = self._rid
        return [r for r in self._registry.ids(status, snapshot) if r in mine]

    def visible_at(self, run: str, snapshot: int) -> bool:
        return self._registry.visible_at(run, snapshot)

    def created_version(self, run: str) -> int:
        return self._registry.created_version(run)

    def changed_after(self, snapshot: int) -> int:
        """The newest commit version after ``snapshot`` that created, ended or deleted one of this
        tenant's runs, else 0. O(1)."""
        return self._last_change if self._last_change > snapshot else 0

    def status(self, run: str) -> str:
        """The run's status. :raises RunNotFound: no such run of this tenant."""
        self.check(run, write=False)
        return self._registry.status(run)

    def record(self, store: UnifiedStore, run: str) -> dict[str, Any]:
        """The decoded run record. :raises RunNotFound: no such run of this tenant."""
        self.check(run, write=False)
        return self._registry.record(store, run)

    def runs(self) -> list[str]:
        """This tenant's run ids, in start order."""
        return sorted(self._rid)

    def __len__(self) -> int:
        return len(self._rid)

    def __contains__(self, run: object) -> bool:
        return run in self._rid
