"""Per-user isolation: ``db.tenant(id)``, a Database-like view of one tenant's runs, and ``delete_tenant``.

This module owns the :class:`Tenant` view and the deletion of a tenant's
data. Invariant: a view reaches runs only through its tenant's
:class:`~inmem.registry.TenantScope` — its primitives sit on contexts and
transactions built with the scope as their run registry, so every run check
and every run -> key-prefix lookup a primitive makes (``Context.check_run``,
``Context.prefix_maps``, ``Context.run_ids``) sees the tenant's runs and no
other; the few calls that do not go through a primitive (history, replay,
diff, fork, end) check the scope first. A run of another tenant, or of none,
raises the same ``RunNotFound`` as an id no run has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from . import replay as _replay
from .contexts import DIRECT, OPTIMISTIC, READS, _Autocommit, _AutoPrimitive
from .sweeping import sweep_all
from .kernel import Kernel, LockedView
from .keys import prefix_end, run_prefix
from .primitives.docs import Docs
from .primitives.events import Events
from .primitives.graph import Graph
from .primitives.kv import KV
from .primitives.runs import Runs
from .primitives.state import StateMachines
from .primitives.traces import Traces
from .primitives.vectors import Vectors
from .registry import TenantScope, check_tenant_id
from .replay import Commit, GraphChange, RunDiff, RunState
from .txn import Transaction, transact

__all__ = ["Tenant", "delete_tenant"]

T = TypeVar("T")

_CLASSES: dict[str, type] = {"events": Events, "state": StateMachines, "traces": Traces, "runs": Runs,
                             "vectors": Vectors, "docs": Docs, "graph": Graph}


class _TenantGraph:
    """``tenant.graph``: the graph primitive on the tenant's contexts, plus ``history`` (checked first)."""

    def __init__(self, kernel: Kernel, scope: TenantScope, graph: Any):
        self._kernel = kernel
        self._scope = scope
        self._graph = graph
        self.__doc__ = graph.__doc__

    def __getattr__(self, name: str) -> Any:
        return getattr(self._graph, name)

    def history(self, run: str, node: str) -> list[GraphChange]:
        """As ``db.graph.history``; :raises RunNotFound: ``run`` is not one of this tenant's runs."""
        self._scope.check(run, write=False)
        return _replay.graph_history(self._kernel, run, node)

    def __dir__(self) -> list[str]:
        return sorted({*dir(self._graph), "history"})


class Tenant:
    """``db.tenant(tenant_id)``: the database as one tenant sees it. Make it with :meth:`Database.tenant`.

    Offers ``kv``, ``events``, ``state``, ``traces``, ``runs``, ``vectors``,
    ``docs``, ``graph``, :meth:`begin_run`, :meth:`end_run`,
    :meth:`transaction`, :meth:`transact`, :meth:`history`,
    :meth:`replay_run`, :meth:`run_state`, :meth:`diff_runs` and
    :meth:`fork_run`, :meth:`sweep`, ``path`` and ``read_only``, with the signatures and errors of
    ``Database``'s (so code written against a ``Database`` — ``InmemStore``, ``inmem.memory`` — runs on
    a view unchanged, confined to the tenant). Every
    run it begins belongs to the tenant (its run record has ``"tenant"``);
    forks of them too. Runs of other tenants and runs of no tenant do not
    exist through the view: naming one raises ``RunNotFound`` with the
    message of an id that no run has; ``runs.list()`` / ``runs.ids()`` list
    the tenant's runs only. The root ``db`` sees every run
    (``RunInfo.tenant`` says whose). Views are cheap (O(1) after the first
    of a tenant, which is O(runs)); any number may be used from any threads.
    """

    kv: KV
    events: Events
    state: StateMachines
    traces: Traces
    runs: Runs
    vectors: Vectors
    docs: Docs
    graph: Any  # Graph, plus ``history``

    def __init__(self, kernel: Kernel, scope: TenantScope, primitives: dict[str, Callable[[Any], Any]]):
        self._kernel = kernel
        self._scope = scope
        self._primitives = primitives
        self._autocommit = autocommit = _Autocommit(kernel, scope)
        if kernel.closed:
            autocommit.closed()
        self.kv = KV(autocommit)
        for name, cls in _CLASSES.items():
            make = primitives[name]
            wrapper = _AutoPrimitive(kernel, cls, READS[name], make, DIRECT.get(name, frozenset()), autocommit,
                                     registry=scope, optimistic=OPTIMISTIC.get(name, frozenset()))
            setattr(self, name, wrapper)
        self.graph = _TenantGraph(kernel, scope, self.graph)

    def closed(self) -> None:
        """The database closed: point reads raise ``DatabaseClosed`` from now on (``Database.close`` calls it)."""
        self._autocommit.closed()

    @property
    def tenant_id(self) -> str:
        """The tenant's id."""
        return self._scope.tenant

    @property
    def path(self) -> str:
        """The database directory."""
        return self._kernel.path

    @property
    def read_only(self) -> bool:
        """The database was opened with ``read_only=True``: every write raises ``DatabaseReadOnly``."""
        return self._kernel.read_only

    def sweep(self, run: str | None = None) -> int:
        """As ``Database.sweep``, over this tenant's active runs (or ``run``, one of them); return the count.

        :raises RunNotFound: ``run`` is not one of this tenant's runs. :raises RunClosed: it has ended.
        :raises DatabaseReadOnly: a read-only handle.
        """
        self._kernel.check_can_write()
        if run is not None:
            self._scope.check(run, write=True)
            return sweep_all(self._kernel, [run])
        return sweep_all(self._kernel, self._scope.ids("active"))

    def __repr__(self) -> str:
        return f"<inmem.Tenant {self._scope.tenant!r} of {self._kernel.path!r}>"

    # --- runs --------------------------------------------------------------------------------

    def begin_run(self, name: str | None = None, *, parent: str | None = None, tags: Iterable[str] = (),
                  metadata: dict[str, Any] | None = None) -> str:
        """Start a run of this tenant and return its id (see ``Database.begin_run``).

        :raises RunNotFound: ``parent`` is not one of this tenant's runs.
        :raises InvalidArgument: / :raises InvalidValue: as ``Database.begin_run``.
        """
        scope, registry = self._scope, self._kernel.registry
        if parent is not None:
            scope.check(parent, write=False)
        run, key, record = registry.prepare_begin(name, parent, tags, metadata, tenant=scope.tenant)

        def begin(view: LockedView) -> None:
            if parent is not None:
                scope.check(parent, write=False)  # again under the lock: not deleted meanwhile
            record["first_version"] = view.version + 1
            view.commit([(key, registry.encode_record(record))], (), lambda v: registry.applied_begin(run, v))

        self._kernel.atomic(begin)
        return run

    def end_run(self, run: str, status: str = "completed") -> None:
        """End one of this tenant's runs (see ``Database.end_run``). :raises RunNotFound: not the tenant's."""
        self._scope.check(run, write=False)
        self._kernel.end_run(run, status)

    # --- history ------------------------------------------------------------------------------

    def history(self, run: str) -> list[Commit]:
        """As ``Database.history``; :raises RunNotFound: not one of this tenant's runs."""
        self._scope.check(run, write=False)
        return _replay.history(self._kernel, run)

    def replay_run(self, run: str, *, at_version: int | None = None) -> RunState:
        """As ``Database.replay_run``; :raises RunNotFound: not one of this tenant's runs."""
        self._scope.check(run, write=False)
        return _replay.replay(self._kernel, run, at_version)

    def run_state(self, run: str) -> RunState:
        """As ``Database.run_state``; :raises RunNotFound: not one of this tenant's runs."""
        self._scope.check(run, write=False)
        return _replay.live(self._kernel, run)

    def diff_runs(self, a: str, b: str, *, at_a: int | None = None, at_b: int | None = None) -> RunDiff:
        """As ``Database.diff_runs``; :raises RunNotFound: ``a`` or ``b`` is not one of this tenant's runs."""
        self._scope.check(a, write=False)
        self._scope.check(b, write=False)
        return _replay.diff(self._kernel, a, b, at_a, at_b)

    def fork_run(self, run: str, *, at_version: int | None = None, name: str | None = None,
                 tags: Iterable[str] = ()) -> str:
        """As ``Database.fork_run``; the fork belongs to this tenant. :raises RunNotFound: not the tenant's run."""
        self._scope.check(run, write=False)
        return _replay.fork(self._kernel, run, at_version, name, tags)

    # --- transactions -------------------------------------------------------------------------

    def transaction(self) -> Transaction:
        """As ``Database.transaction``: its primitives see only this tenant's runs."""
        return Transaction(self._kernel, self._primitives, self._scope)

    def transact(self, fn: Callable[[Transaction], T], *, retries: int = 10) -> T:
        """As ``Database.transact`` (retries on conflict with jittered backoff), in this tenant's view."""
        return transact(self.transaction, fn, retries)


def delete_tenant(kernel: Kernel, tenant: str) -> int:
    """Delete every key of every run of ``tenant`` (run records included) in one commit; return the runs deleted.

    Run under the commit lock: the runs are listed, every key in their
    ranges is written as a delete, and once that commit is applied the runs
    leave the registry (``RunNotFound`` for everyone from then on). No
    commit when the tenant has no runs. O(keys of the tenant's runs).

    :raises InvalidArgument: bad tenant id. :raises DatabaseReadOnly: / :raises DatabaseClosed: /
        :raises DatabasePoisoned: as for any write.
    """
    check_tenant_id(tenant)
    registry = kernel.registry

    def delete(view: LockedView) -> int:
        runs = registry.tenant_runs(tenant)
        writes: list[tuple[bytes, bytes | None]] = []
        for run in runs:
            base = run_prefix(registry.check(run, write=False))
            writes += [(k, None) for k, _v in view.scan_values(base, prefix_end(base))]
        if writes:
            view.commit(writes, (), lambda v: registry.applied_delete(runs, v))
        return len(runs)

    return kernel.atomic(delete)  # type: ignore[no-any-return]
