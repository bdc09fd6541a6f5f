"""The simulation workload: a deterministic mix of every primitive, and a canonical digest of a database's state.

This module owns what :mod:`tools.crashsim` and :mod:`tools.corruptsim` write
and how they compare what a database holds with what was written. A workload
is a list of *steps* drawn from a seeded ``random.Random``; each step is one
call of the public API that makes at most one commit (a primitive's write, a
multi-primitive transaction, a run begun, ended or forked) or none (a
snapshot, a compaction, a sync) — except a durable workflow's start and
finish, which make two each (:mod:`tools.simflows` drives workflows one step
of theirs per workload step, and :func:`intermediate_digests` gives the state
between those two commits). :func:`digest` names each run by its name (a
workflow's by its workflow id), never its random id, and leaves out
wall-clock times and hashes that depend on them, so the same steps give the
same digests in any database.

The graph (:func:`op_graph`) is in :func:`digest` through ``RunState.graph``
(:func:`graph_of` reads the same through the graph API, for tests). LangGraph
store items (:func:`op_store`) are KV records of the store run; workflows'
records, effects and context documents are KV values, events and documents
of their runs. Adding a primitive is one function ``op_<name>(w: Workload)
-> None`` making one commit through ``w.db`` plus its entry in :data:`OPS`
and, if its state is not part of ``RunState``, a line in :func:`digest`.

Invariant: the steps of ``plan(seed, n)`` make the same calls in the same order
(and the same commits, a workflow's in its own thread included) for the same
``seed`` and ``n`` whatever the database, as long as each call returns (the steps read state only through names the workload chose).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

from tests.checkout import use_checkout

use_checkout()

from inmem import Database  # noqa: E402

from . import simflows  # noqa: E402

__all__ = ["OPS", "MAINTENANCE", "Workload", "digest", "plan"]


class Workload:
    """One workload's state on one database: its runs by name and the step rng."""

    def __init__(self, db: Database, seed: int):
        self.db = db
        self.rng = random.Random(seed)
        self.runs: dict[str, str] = {}  # name -> id, in creation order
        self.active: list[str] = []  # names of runs still active
        self.counter = 0
        self.states: set[tuple[str, str]] = set()
        self.collections: set[tuple[str, str]] = set()
        self.store: Any = None  # the InmemStore, once its run exists (op_store)
        self.flows: list[Any] = []  # workflows in flight (tools.simflows)
        #: the last step made two commits: (the run it wrote, that run's last version before), else None
        self.multi: tuple[str, int] | None = None

    def run(self) -> tuple[str, str]:
        """An active run (name, id), beginning one if there is none."""
        if not self.active:
            op_begin(self)
        name = self.rng.choice(self.active)
        return name, self.runs[name]

    def next(self) -> int:
        self.counter += 1
        return self.counter


# --- one function per primitive: each makes at most one commit ----------------------------------------


def op_begin(w: Workload) -> None:
    name = f"run{len(w.runs)}"
    w.runs[name] = w.db.begin_run(name, tags=("sim",))
    w.active.append(name)


def op_end(w: Workload) -> None:
    if len(w.active) < 2:
        return op_begin(w)
    name = w.active.pop(w.rng.randrange(len(w.active)))
    w.db.end_run(w.runs[name], w.rng.choice(("completed", "failed")))
    return None


def op_fork(w: Workload) -> None:
    src, rid = w.run()
    name = f"run{len(w.runs)}"
    w.runs[name] = w.db.fork_run(rid, name=name)
    w.active.append(name)
    w.states |= {(name, s) for (r, s) in w.states if r == src}
    w.collections |= {(name, c) for (r, c) in w.collections if r == src}


def op_kv(w: Workload) -> None:
    _, rid = w.run()
    key = f"k{w.rng.randrange(12)}"
    if w.rng.random() < 0.15:
        w.db.kv.delete(rid, key)
    else:
        w.db.kv.put(rid, key, {"n": w.next(), "pad": "x" * w.rng.randrange(200)})


def op_ttl(w: Workload) -> None:
    """KV with a time to live (long enough never to expire during a simulation, so the digest does not
    depend on the clock): a put with ``ttl``, a lease refresh (a commit), a plain put over an expiring
    value, or a sweep (nothing is due: no commit)."""
    _, rid = w.run()
    key = f"t{w.rng.randrange(6)}"
    r = w.rng.random()
    if r < 0.55:
        w.db.kv.put(rid, key, {"n": w.next()}, ttl=TTL_S)
    elif r < 0.75:
        w.db.kv.get(rid, key, refresh_ttl=True)
    elif r < 0.9:
        w.db.kv.put(rid, key, {"plain": w.next()})
    else:
        w.db.sweep()


def op_store(w: Workload) -> None:
    """LangGraph store items (``InmemStore``: KV records of the store's run, one batch = one commit): the
    first call begins the store's run (its one commit); later ones put an item (with a long ttl, in
    minutes, half the time), delete one, or put three in one batch."""
    from inmem.integrations.langgraph_store import LANGGRAPH_TAG, STORE_TAG, InmemStore

    if w.store is None:
        if not w.db.runs.list(status="active", tag=STORE_TAG, name="langgraph-store"):
            w.db.begin_run("langgraph-store", tags=[LANGGRAPH_TAG, STORE_TAG], metadata={"langgraph": "store"})
            return
        w.store = InmemStore(w.db)
    ns = ("users", f"u{w.rng.randrange(3)}", w.rng.choice(("memories", "prefs")))
    key = f"i{w.rng.randrange(8)}"
    r = w.rng.random()
    if r < 0.6:
        w.store.put(ns, key, {"n": w.next(), "text": "x" * w.rng.randrange(80)},
                    ttl=TTL_S / 60 if w.rng.random() < 0.5 else None)
    elif r < 0.8:
        w.store.delete(ns, key)
    else:
        from langgraph.store.base import PutOp
        w.store.batch([PutOp(ns, f"b{j}", {"n": w.next()}) for j in range(3)])


#: The time to live of the simulation's expiring values, in seconds (11.6 days: none expires during a run).
TTL_S = 1_000_000


def op_events(w: Workload) -> None:
    _, rid = w.run()
    w.db.events.append(rid, w.rng.choice(("tool_call", "observation", "thought")), {"n": w.next()})


def op_state(w: Workload) -> None:
    name, rid = w.run()
    s = f"m{w.rng.randrange(2)}"
    if (name, s) not in w.states:
        w.states.add((name, s))
        w.db.state.define(rid, s, transitions={"idle": ["busy"], "busy": ["idle", "done"], "done": []},
                          initial="idle")
        return
    cur = w.db.state.get(rid, s).value
    nxt = {"idle": "busy", "busy": w.rng.choice(("idle", "done")), "done": "done"}[cur]
    if nxt != cur:
        w.db.state.cas(rid, s, cur, nxt)


def op_traces(w: Workload) -> None:
    _, rid = w.run()
    w.db.traces.record(rid, w.rng.choice(("decision", "plan")), {"n": w.next()}, confidence=0.5)


def op_vectors(w: Workload) -> None:
    name, rid = w.run()
    c = "mem"
    if (name, c) not in w.collections:
        w.collections.add((name, c))
        w.db.vectors.create(rid, c, dim=4)
        return
    vid = f"v{w.rng.randrange(8)}"
    if w.rng.random() < 0.15:
        w.db.vectors.delete(rid, c, vid)
    else:
        w.db.vectors.upsert(rid, c, vid, [w.rng.uniform(-1, 1) for _ in range(4)], metadata={"n": w.next()})


def op_docs(w: Workload) -> None:
    """Document operations: autocommit ops, and a transaction of blind ops (resolved at commit)."""
    _, rid = w.run()
    n = w.next()
    r = w.rng.random()
    if r < 0.3:
        w.db.docs.increment(rid, "ctx", "count")
    elif r < 0.5:
        w.db.docs.append(rid, "ctx", "log", n)
    elif r < 0.68:
        w.db.docs.merge(rid, "ctx", {"user": {"seen": n, "pad": "x" * w.rng.randrange(100)}})
    elif r < 0.75:  # RFC 6902 needs a document to add a member to
        if w.db.docs.get(rid, "ctx") is None:
            w.db.docs.set(rid, "ctx", {"last": n})
        else:
            w.db.docs.patch(rid, "ctx", [{"op": "add", "path": "/last", "value": n}])
    else:
        with w.db.transaction() as tx:
            tx.docs.increment(rid, "ctx", "count")
            tx.docs.append(rid, "ctx", "log", n)
            tx.kv.put(rid, "doc-txn", n)


_RELATIONS = ("about", "part_of")


def op_graph(w: Workload) -> None:
    """Graph writes on ids the workload chooses (``g0`` .. ``g4``, and ``t<n>`` in transactions): add or update a node, add (or
    re-weight) and remove an edge, delete a node (cascading to its edges), and a transaction adding a
    node with edges to it and a kv write; every call makes one commit or none (a refused or no-op call)."""
    _, rid = w.run()
    g = w.db.graph
    n = w.next()
    a, b = f"g{w.rng.randrange(5)}", f"g{w.rng.randrange(5)}"
    rel = w.rng.choice(_RELATIONS)
    r = w.rng.random()
    have_a, have_b = g.get_node(rid, a) is not None, g.get_node(rid, b) is not None
    if r < 0.25 or not have_a:
        if have_a:
            g.update_node(rid, a, f"memory {n} " + "y" * w.rng.randrange(60), metadata={"n": n})
        else:
            g.add_node(rid, f"memory {n}", kind=w.rng.choice((None, "fact", "episode")), metadata={"n": n}, id=a)
    elif r < 0.6:
        if have_b:
            g.add_edge(rid, a, rel, b, weight=w.rng.choice((0.5, 1.0, 2.0)), metadata={"n": n})
        else:
            g.add_node(rid, f"memory {n}", metadata={"n": n}, id=b)
    elif r < 0.68:
        if not g.remove_edge(rid, a, rel, b):
            g.update_node(rid, a, metadata={"touched": n})
    elif r < 0.75:
        g.delete_node(rid, a)  # and every edge into or out of it, in the same commit
    else:
        with w.db.transaction() as tx:
            fresh = f"t{n}"
            tx.graph.add_node(rid, f"memory {n} in a transaction", kind="fact", id=fresh)
            tx.graph.add_edge(rid, fresh, rel, a, weight=float(n % 3))
            if have_b:
                tx.graph.add_edge(rid, b, rel, fresh)
            if w.rng.random() < 0.3:
                tx.graph.delete_node(rid, a)  # cascades, including the edge just added
            tx.kv.put(rid, "graph-txn", n)


def op_txn(w: Workload) -> None:
    """One transaction over kv, events and traces: all or nothing after a crash."""
    _, rid = w.run()
    n = w.next()
    with w.db.transaction() as tx:
        tx.kv.put(rid, "txn", n)
        tx.events.append(rid, "txn", {"n": n})
        tx.traces.record(rid, "txn", {"n": n})


#: Steps that commit, by name, with their weights in a workload.
OPS: dict[str, tuple[Callable[[Workload], None], int]] = {
    "begin": (op_begin, 1), "end": (op_end, 1), "fork": (op_fork, 1), "kv": (op_kv, 6), "events": (op_events, 4),
    "state": (op_state, 3), "traces": (op_traces, 2), "vectors": (op_vectors, 3), "txn": (op_txn, 3),
    "docs": (op_docs, 3), "graph": (op_graph, 4), "ttl": (op_ttl, 2), "store": (op_store, 2),
    "workflow": (simflows.op_workflow, 4),
}


def _snapshot(w: Workload) -> None:
    w.db.snapshot()


def _compact(w: Workload) -> None:
    w.db.compact()


def _sync(w: Workload) -> None:
    w.db.sync()


#: Steps that commit nothing: maintenance (sync is a durability point in every mode).
MAINTENANCE: dict[str, tuple[Callable[[Workload], None], int]] = {
    "snapshot": (_snapshot, 1), "compact": (_compact, 1), "sync": (_sync, 1),
}


def warm_up(path: str) -> None:
    """Run every step twice on a new database in ``path`` and digest it, so that what the steps and the
    engine import lazily (the LangGraph store alone takes a good part of a second) is imported before the
    simulators fork their trial workers, which then share it instead of each importing it again."""
    with Database.open(path, durability="off") as db:
        w = Workload(db, 0)
        try:
            for name in ["begin", *OPS, *MAINTENANCE] * 2:
                step(w, name)
            digest(db)
        finally:
            stop(w)


def plan(seed: int, n: int) -> list[str]:
    """The names of ``n`` steps for ``seed`` (commits about nine in ten)."""
    rng = random.Random(f"plan:{seed}")
    names = list(OPS) + list(MAINTENANCE)
    weights = [w for _, w in OPS.values()] + [w for _, w in MAINTENANCE.values()]
    out = ["begin"] + rng.choices(names, weights, k=n - 1)
    return out


def step(w: Workload, name: str) -> None:
    """Make step ``name`` (at most one commit, or a workflow's start or finish: two, see
    :func:`intermediate_digests`)."""
    fn = OPS[name][0] if name in OPS else MAINTENANCE[name][0]
    w.multi = None
    fn(w)


def stop(w: Workload) -> None:
    """The workload is over (finished, crashed or failed): stop driving its workflows in flight (call it
    after closing or abandoning the database; their threads end without a commit)."""
    simflows.stop_workflows(w)


def intermediate_digests(w: Workload) -> list[tuple[int, str]]:
    """``[(commit version, digest)]`` of the states inside the step just made, if it made two commits
    (a workflow's start or finish): a crash may leave the first without the second. Empty otherwise."""
    return [(v, digest_states(pairs)) for v, pairs in simflows.intermediate_states(w)]


# --- the digest -------------------------------------------------------------------------------------


def _event(e: Any) -> Any:
    return (e.seq, e.type, e.payload)


def _trace(t: Any) -> Any:
    return (t.kind, t.content, t.confidence, t.tags)


def _vectors(cols: Any) -> Any:
    return {c: (v["dim"], v["metric"], {i: (sv.data, sv.metadata) for i, sv in v["vectors"].items()})
            for c, v in cols.items()}


def graph_of(db: Database, run: str) -> tuple[Any, Any]:
    """The run's graph without wall-clock times: nodes ``(id, kind, content, content_hash, metadata)`` in id
    order, and out-edges ``(source, relation, target, weight, metadata)`` in key order (read through the
    public API, so an out-edge without its in-edge key makes the in-edge lists differ: checked here too)."""
    nodes = db.graph.nodes(run)
    edges = []
    for n in nodes:
        out = db.graph.edges(run, n.id, direction="out")
        edges += [(e.source, e.relation, e.target, e.weight, repr(e.metadata)) for e in out]
    ins = sorted((e.source, e.relation, e.target) for n in nodes for e in db.graph.edges(run, n.id, direction="in"))
    if ins != sorted(e[:3] for e in edges):
        edges.append(("adjacency not symmetric", repr(ins)))
    return [(n.id, n.kind, n.content, n.content_hash, repr(n.metadata)) for n in nodes], edges


def _graph_state(graph: Any) -> tuple[Any, Any]:
    """:func:`graph_of`'s shape, from a ``RunState.graph`` (one state build, not an API call per node;
    adjacency symmetry is ``inmem verify``'s, which every check runs)."""
    nodes = [(n.id, n.kind, n.content, n.content_hash, repr(n.metadata)) for _, n in sorted(graph.nodes.items())]
    edges = [(e.source, e.relation, e.target, e.weight, repr(e.metadata)) for _, e in sorted(graph.edges.items())]
    return nodes, edges


#: Wall-clock members of records: a LangGraph store item's, a workflow's status, step and result records'.
_TIMES = ("created_us", "updated_us", "started_us", "finished_us")


def _untimed(value: Any) -> Any:
    """A KV value without the wall-clock members a record may carry (:data:`_TIMES`)."""
    if isinstance(value, dict) and any(t in value for t in _TIMES):
        return {k: v for k, v in value.items() if k not in _TIMES}
    return value


def run_states(db: Database) -> list[tuple[Any, Any]]:
    """``(RunInfo, RunState)`` of every run, in :meth:`runs.list` order (one state build per run: a check
    digests them and compares them with ``replay_run``)."""
    return [(info, db.run_state(info.id)) for info in db.runs.list()]


def _run_entry(info: Any, st: Any) -> tuple[str, Any]:
    return simflows.workflow_key(info) or info.name or info.id, (
        info.status, sorted((k, _untimed(v)) for k, v in st.kv.items()), [_event(e) for e in st.events],
        sorted((k, v.value, v.version) for k, v in st.states.items()), [_trace(t) for t in st.traces],
        sorted(_vectors(st.vectors).items()), sorted((k, repr(v)) for k, v in st.docs.items()),
        _graph_state(st.graph),
    )


def snapshot_of(db: Database) -> dict[str, Any]:
    """Every run's state by name, without ids or wall-clock times."""
    return dict(_run_entry(info, st) for info, st in run_states(db))


def digest_states(states: list[tuple[Any, Any]]) -> str:
    """:func:`digest` of the :func:`run_states` of a database."""
    return hashlib.blake2b(repr(sorted(_run_entry(i, s) for i, s in states)).encode(), digest_size=16).hexdigest()


def digest(db: Database) -> str:
    """A hex digest of :func:`snapshot_of` (equal digests: equal states)."""
    return digest_states(run_states(db))
