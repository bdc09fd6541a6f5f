"""The knowledge graph of the MCP memory server, on one run's memory graph: :class:`KnowledgeGraph`.

This module owns the mapping of the reference MCP memory server's model
(``@modelcontextprotocol/server-memory``: entities ``{name, entityType,
observations}`` and relations ``{from, to, relationType}``) onto inmem's
memory graph (SPEC.md §2 "Memory graph", §15 "MCP server"), and the nine
operations of the reference with its semantics, each one transaction. It
imports no MCP code (:mod:`inmem.integrations.mcp_server` serves it).

Mapping (one run holds the graph)::

    entity   -> node   id = name, kind = entityType,
                       metadata = {"observations": [str, ...], "pos": int},
                       content = name, entityType and the observations, one per line
    relation -> edge   source = from, relation = relationType, target = to,
                       weight 1.0, metadata = {"pos": int}

The observation list in the node's metadata is the truth (exact: adding or
deleting one observation rewrites the list, order and duplicates kept); the
content is derived from it so the full-text index (and the vector index, when
an embedder is configured) search entities by their observations. ``pos`` is
the entity's (relation's) index in the call that created it: entities and
relations are listed in creation order, ``(created_us, pos)``, as the
reference lists them in file order.

Invariants: every operation that writes is one ``db.transact`` (one commit,
retried on conflict, so concurrent calls never lose an update); input is
checked before anything is written and a failing call writes nothing.

Differences from the reference, all deliberate: a relation must name two
existing entities (the reference stores dangling relations; here the call
fails and writes nothing); names, entity types and relation types are
non-empty, without NUL, at most 256 bytes of UTF-8 (graph ids); duplicates
*within* one ``create_entities`` / ``create_relations`` call are skipped like
duplicates of stored ones (the reference stores both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ..database import Database
from ..errors import InvalidArgument, RunNotFound
from ..keys import name_bytes

__all__ = ["DEFAULT_RUN", "KnowledgeGraph", "MAX_NAME_BYTES", "entity_of", "relation_of"]

T = TypeVar("T")

#: Name of the run that holds the graph unless ``--run`` says otherwise.
DEFAULT_RUN = "mcp-memory"
#: Tag of runs the MCP server created.
RUN_TAG = "mcp-memory"
#: Longest entity name, entity type or relation type, in bytes of UTF-8 (a graph id).
MAX_NAME_BYTES = 256


def _name(value: object, what: str) -> str:
    name_bytes(value, what, MAX_NAME_BYTES)
    return value  # type: ignore[return-value]


def _strings(values: object, what: str) -> list[str]:
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise InvalidArgument(f"{what} is a list of str")
    for v in values:
        try:
            v.encode()
        except UnicodeEncodeError:
            raise InvalidArgument(f"{what}: {v!r:.80} is not valid UTF-8 text") from None
    return list(values)


def content_of(name: str, entity_type: str, observations: list[str]) -> str:
    """The node content of an entity: its name, type and observations, one per line (what search indexes)."""
    return "\n".join([name, entity_type, *observations])


def entity_of(node: Any) -> dict[str, Any]:
    """The reference's entity ``{"name", "entityType", "observations"}`` of a graph node.

    A node the MCP server did not write (no ``observations`` list in its
    metadata) shows its content as its one observation and ``""`` as a missing kind.
    """
    meta = node.metadata or {}
    obs = meta.get("observations")
    if not isinstance(obs, list | tuple):
        obs = [node.content] if node.content else []
    return {"name": node.id, "entityType": node.kind or "", "observations": list(obs)}


def relation_of(edge: Any) -> dict[str, str]:
    """The reference's relation ``{"from", "to", "relationType"}`` of a graph edge."""
    return {"from": edge.source, "to": edge.target, "relationType": edge.relation}


def _order(item: Any) -> tuple[int, int, str]:
    pos = (item.metadata or {}).get("pos", 0)
    return (item.created_us, pos if isinstance(pos, int) else 0, getattr(item, "id", "") or "")


def find_run(db: Database, name: str, *, create: bool) -> str | None:
    """The id of the run ``name`` names: a run id, else the newest active run of that name; created
    (``begin_run(name, tags=["mcp-memory"])``) if there is none and ``create``. O(runs)."""
    try:
        info = db.runs.get(name)
        return str(info.id)
    except (RunNotFound, InvalidArgument):
        pass
    found = db.runs.list(status="active", name=name)
    if found:
        return str(found[-1].id)
    if not create:
        return None
    return str(db.begin_run(name, tags=[RUN_TAG], metadata={"mcp": "memory graph"}))


class KnowledgeGraph:
    """The reference memory server's operations on the memory graph of run ``run`` of ``db``.

    ``run``: a run id or name (default ``"mcp-memory"``); the newest active run of that name is
    used, created on first use. Every method takes and returns plain JSON-able data in the
    reference's shapes. Writing methods are one transaction each (``db.transact``, retried on
    conflict). Costs: reads of the whole graph are O(entities + relations); writes
    O(items · log n).

    :raises InvalidArgument: a malformed argument (before anything is written).
    :raises RunClosed: the run has ended (``inmem`` refuses writes to an ended run).
    """

    def __init__(self, db: Database, run: str = DEFAULT_RUN):
        _name(run, "run")
        self.db = db
        self.run_name = run
        self.run = find_run(db, run, create=True)

    # --- plumbing ---------------------------------------------------------------------------------

    def _write(self, fn: Callable[[Any], T]) -> T:
        return self.db.transact(fn)  # type: ignore[no-any-return]

    def _read(self, fn: Callable[[Any], T]) -> T:
        """``fn(tx)`` on one snapshot, nothing written."""
        with self.db.transaction() as tx:
            out = fn(tx)
            tx.rollback()
        return out

    def _graph(self, tx: Any) -> tuple[list[Any], list[Any]]:
        nodes = sorted(tx.graph.nodes(self.run), key=_order)
        edges = [e for n in nodes for e in tx.graph.edges(self.run, n.id, direction="out")]
        edges.sort(key=lambda e: (e.created_us, (e.metadata or {}).get("pos", 0), e.source, e.relation, e.target))
        return nodes, edges

    # --- the reference's nine operations --------------------------------------------------------------

    def create_entities(self, entities: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Create the entities whose names are new; return those created (existing names and repeats
        in the call skipped). Each ``{"name": str, "entityType": str, "observations": [str]}``."""
        items = []
        for e in _list(entities, "entities"):
            name = _name(_field(e, "name"), "entity name")
            kind = _name(_field(e, "entityType"), "entity type")
            items.append((name, kind, _strings(_field(e, "observations"), "observations")))

        def fn(tx: Any) -> list[dict[str, Any]]:
            made: list[dict[str, Any]] = []
            seen: set[str] = set()
            for pos, (name, kind, obs) in enumerate(items):
                if name in seen or tx.graph.get_node(self.run, name) is not None:
                    continue
                seen.add(name)
                tx.graph.add_node(self.run, content_of(name, kind, obs), kind=kind, id=name,
                                  metadata={"observations": obs, "pos": pos})
                made.append({"name": name, "entityType": kind, "observations": obs})
            return made

        return self._write(fn)

    def create_relations(self, relations: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
        """Create the relations not stored yet; return those created (duplicate triples skipped).

        :raises InvalidArgument: a relation names an entity that does not exist (nothing written).
        """
        items = [_relation(r) for r in _list(relations, "relations")]

        def fn(tx: Any) -> list[dict[str, str]]:
            made: list[dict[str, str]] = []
            for pos, (a, rel, b) in enumerate(items):
                for end in (a, b):
                    if tx.graph.get_node(self.run, end) is None:
                        raise InvalidArgument(f"Entity with name {end} not found (create it with create_entities "
                                              f"before relating it)")
                if any(e.target == b for e in tx.graph.edges(self.run, a, direction="out", relation=rel)):
                    continue
                tx.graph.add_edge(self.run, a, rel, b, metadata={"pos": pos})
                made.append({"from": a, "to": b, "relationType": rel})
            return made

        return self._write(fn)

    def add_observations(self, observations: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append to each named entity the observations it does not hold yet; return
        ``[{"entityName", "addedObservations"}]`` in request order.

        :raises InvalidArgument: ``Entity with name X not found`` — nothing is written.
        """
        items = []
        for o in _list(observations, "observations"):
            items.append((_name(_field(o, "entityName"), "entity name"), _strings(_field(o, "contents"), "contents")))

        def fn(tx: Any) -> list[dict[str, Any]]:
            out = []
            for name, contents in items:
                node = tx.graph.get_node(self.run, name)
                if node is None:
                    raise InvalidArgument(f"Entity with name {name} not found")
                current = entity_of(node)["observations"]
                new = [c for c in contents if c not in current]
                if new:
                    obs = current + new
                    tx.graph.update_node(self.run, name, content_of(name, node.kind or "", obs),
                                         metadata={"observations": obs})
                out.append({"entityName": name, "addedObservations": new})
            return out

        return self._write(fn)

    def delete_entities(self, names: Iterable[str]) -> None:
        """Delete the named entities and every relation into or out of them; unknown names (and names
        no entity can have: empty, with NUL, too long) are ignored, as the reference ignores them."""
        items = [n for n in _strings(_list(names, "entityNames"), "entityNames") if _valid(n)]

        def fn(tx: Any) -> None:
            for name in items:
                tx.graph.delete_node(self.run, name)

        self._write(fn)

    def delete_observations(self, deletions: Iterable[dict[str, Any]]) -> None:
        """Remove every copy of the given observations from each named entity; unknown entities and
        observations are ignored."""
        items = []
        for d in _list(deletions, "deletions"):
            name = _field(d, "entityName")
            if not isinstance(name, str):
                raise InvalidArgument(f"entityName is a str, got {type(name).__name__}")
            gone = _strings(_field(d, "observations"), "observations")
            if _valid(name):
                items.append((name, gone))

        def fn(tx: Any) -> None:
            for name, gone in items:
                node = tx.graph.get_node(self.run, name)
                if node is None:
                    continue
                current = entity_of(node)["observations"]
                kept = [o for o in current if o not in gone]
                if kept != current:
                    tx.graph.update_node(self.run, name, content_of(name, node.kind or "", kept),
                                         metadata={"observations": kept})

        self._write(fn)

    def delete_relations(self, relations: Iterable[dict[str, Any]]) -> None:
        """Delete the given relations; ones not stored (or that no relation can be) are ignored."""
        items = []
        for r in _list(relations, "relations"):
            triple = tuple(_field(r, k) for k in ("from", "relationType", "to"))
            _strings(list(triple), "a relation's from, relationType and to")
            if all(_valid(x) for x in triple):
                items.append(triple)

        def fn(tx: Any) -> None:
            for a, rel, b in items:
                tx.graph.remove_edge(self.run, a, rel, b)

        self._write(fn)

    def read_graph(self) -> dict[str, list[Any]]:
        """The whole graph ``{"entities": [...], "relations": [...]}``, in creation order, one snapshot."""
        nodes, edges = self._read(self._graph)
        return {"entities": [entity_of(n) for n in nodes], "relations": [relation_of(e) for e in edges]}

    def _touching(self, tx: Any, nodes: list[Any]) -> dict[str, list[Any]]:
        """``nodes`` (in creation order) and the relations with at least one end among them:
        O(matches · degree · log n), not a scan of every edge."""
        nodes = sorted(nodes, key=_order)
        edges: dict[tuple[str, str, str], Any] = {}
        for n in nodes:
            for e in tx.graph.edges(self.run, n.id, direction="both"):
                edges[(e.source, e.relation, e.target)] = e
        ordered = sorted(edges.values(), key=lambda e: (e.created_us, (e.metadata or {}).get("pos", 0), e.source,
                                                         e.relation, e.target))
        return {"entities": [entity_of(n) for n in nodes], "relations": [relation_of(e) for e in ordered]}

    def search_nodes(self, query: str) -> dict[str, list[Any]]:
        """Entities whose name, type or an observation contains ``query`` (case-insensitive substring),
        and the relations with at least one end among them, one snapshot. O(entities + matches · degree)."""
        if not isinstance(query, str):
            raise InvalidArgument(f"query is a str, got {type(query).__name__}")
        q = query.lower()

        def match(e: dict[str, Any]) -> bool:
            return q in e["name"].lower() or q in e["entityType"].lower() or any(q in o.lower()
                                                                                for o in e["observations"])

        return self._read(lambda tx: self._touching(tx, [n for n in tx.graph.nodes(self.run) if match(entity_of(n))]))

    def open_nodes(self, names: Iterable[str]) -> dict[str, list[Any]]:
        """The named entities that exist, and the relations with at least one end among them, one
        snapshot. O(names · (log n + degree))."""
        wanted = _strings(names, "names")

        def fn(tx: Any) -> dict[str, list[Any]]:
            found = []
            for name in dict.fromkeys(wanted):
                try:
                    node = tx.graph.get_node(self.run, name)
                except InvalidArgument:  # not a valid graph id: no such entity
                    node = None
                if node is not None:
                    found.append(node)
            return self._touching(tx, found)

        return self._read(fn)


def _valid(name: str) -> bool:
    """Whether ``name`` can be a graph id (so an entity, type or relation can have it)."""
    try:
        name_bytes(name, "name", MAX_NAME_BYTES)
    except InvalidArgument:
        return False
    return True


def _list(values: object, what: str) -> list[Any]:
    if not isinstance(values, list | tuple):
        raise InvalidArgument(f"{what} is a list, got {type(values).__name__}")
    return list(values)


def _field(item: object, key: str) -> Any:
    if not isinstance(item, dict) or key not in item:
        raise InvalidArgument(f"each item needs a {key!r} field, got {item!r:.80}")
    return item[key]


def _relation(r: object) -> tuple[str, str, str]:
    return (_name(_field(r, "from"), "entity name"), _name(_field(r, "relationType"), "relation type"),
            _name(_field(r, "to"), "entity name"))
