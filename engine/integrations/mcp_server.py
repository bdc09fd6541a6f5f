"""The MCP memory server: ``inmem mcp DIR`` serves a run's memory graph over the Model Context Protocol.

This module owns the MCP side of the memory server: the tool and resource
definitions (names, input and output schemas, annotations), the conversion of
results to MCP tool results, resource change notifications, and the stdio and
streamable-HTTP entry points. It is the only module that imports the official
MCP Python SDK (``mcp>=2.3,<3``, extra ``inmem[mcp]``); the graph operations live
in :mod:`inmem.integrations.mcp_memory` (SPEC.md §15), the schemas in
:mod:`inmem.integrations.mcp_schemas`.

Tools — the reference server's nine (``@modelcontextprotocol/server-memory``,
same names, argument shapes, result shapes, text and structured content):
``create_entities``, ``create_relations``, ``add_observations``,
``delete_entities``, ``delete_observations``, ``delete_relations``,
``read_graph``, ``search_nodes``, ``open_nodes``; and inmem's own, with
structured output: ``search_memory`` (BM25 full-text, or hybrid full-text +
vector with reciprocal rank fusion when an embedder is configured),
``memory_history``, ``list_runs``, ``replay_run``, ``diff_runs``.

Resources: ``memory://graph`` (and the reference's URI
``memory://knowledge-graph``): the whole graph as JSON. A change feed
(``db.watch(run=..., primitive="graph")``) drives ``ResourceUpdated`` events on
the SDK's subscription bus, delivered to ``subscriptions/listen`` streams; one
event per commit that touched the graph, whoever wrote it.

Invariant: a tool call that writes is one commit (a transaction retried on
conflict); a call that fails returns an MCP error result and writes nothing.
Tools run in worker threads, so concurrent calls are concurrent transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Callable, Literal, TypeVar

from pydantic import BaseModel, Field

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from mcp.types import (CallToolResult, EmptyResult, SubscribeRequestParams, TextContent, ToolAnnotations,
                       UnsubscribeRequestParams)

from ..database import Database
from ..errors import InmemError, InvalidArgument, RunNotFound
from .mcp_memory import DEFAULT_RUN, KnowledgeGraph, entity_of, find_run, relation_of
from .mcp_schemas import (AddResults, Change, ChangedEntity, Diff, Entities, Entity, EntityDiff, Graph, History, Hit,
                          ObservationAdd, ObservationDelete, Relation, RelationDiff, Relations, Replayed, RunItem,
                          Runs, SearchResults, Status)

__all__ = ["GRAPH_URI", "REFERENCE_URI", "build_server", "serve"]

#: The resource holding the whole graph as JSON.
GRAPH_URI = "memory://graph"
#: The same resource under the reference server's URI.
REFERENCE_URI = "memory://knowledge-graph"

_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
_DELETE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)
_READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


# --- helpers ------------------------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def _errors(fn: F) -> F:
    """Turn an inmem error into a ``ToolError`` (an MCP error result with the message, nothing written)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InmemError as exc:
            raise ToolError(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _result(text: str, structured: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)


def _json(value: Any) -> str:
    """``JSON.stringify(value, null, 2)``: what the reference puts in a tool result's text."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def _dumps(items: list[BaseModel]) -> list[dict[str, Any]]:
    return [i.model_dump(by_alias=True) for i in items]


def _ordered(state_graph: Any) -> dict[str, list[Any]]:
    """A replayed :class:`~inmem.replay.GraphState` as ``{"entities", "relations"}`` in creation order."""
    def key(x: Any) -> tuple[int, int]:
        pos = (x.metadata or {}).get("pos", 0)
        return (x.created_us, pos if isinstance(pos, int) else 0)

    nodes = sorted(state_graph.nodes.values(), key=key)
    edges = sorted(state_graph.edges.values(), key=key)
    return {"entities": [entity_of(n) for n in nodes], "relations": [relation_of(e) for e in edges]}


def _version(value: object, what: str) -> int | None:
    if value is not None and (type(value) is not int or value < 0):
        raise InvalidArgument(f"{what} is an int >= 0 or null, got {value!r:.40}")
    return value  # type: ignore[return-value]


# --- the server -----------------------------------------------------------------------------------------

class _Notifier:
    """Sends resource-updated notifications for the graph, fed by the change feed while a session is open.

    One watch per server, started by the first open session (lifespan) and closed by the last; a
    worker thread waits on the watch (``Watch.next``), the event loop sends. Everything committed
    to the run's graph since the last notification gives one notification (coalesced), to

    * ``subscriptions/listen`` streams (protocol 2026-07-28): a ``ResourceUpdated`` event on the bus;
    * sessions of earlier protocol versions that sent ``resources/subscribe`` (what the reference
      server and today's desktop clients use): ``notifications/resources/updated`` for each URI
      they subscribed to. A session that cannot be reached any more is dropped.
    """

    def __init__(self, db: Database, run: str, bus: InMemorySubscriptionBus):
        self.db, self.run, self.bus = db, run, bus
        self.sessions = 0
        self.task: asyncio.Task[None] | None = None
        self.watch: Any = None
        self.legacy: dict[int, tuple[Any, set[str]]] = {}  # id(connection) -> (session, subscribed URIs)

    @staticmethod
    def _key(ctx: Any) -> int:
        # each request gets its own ServerSession over the one connection; the SDK has no public
        # identity of the connection
        return id(getattr(ctx.session, "_connection", ctx.session))

    async def subscribe(self, ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        uris = self.legacy.get(self._key(ctx), (None, set()))[1]
        uris.add(str(params.uri))
        self.legacy[self._key(ctx)] = (ctx.session, uris)
        return EmptyResult()

    async def unsubscribe(self, ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        entry = self.legacy.get(self._key(ctx))
        if entry is not None:
            entry[1].discard(str(params.uri))
        return EmptyResult()

    async def _notify(self) -> None:
        for uri in (GRAPH_URI, REFERENCE_URI):
            await self.bus.publish(ResourceUpdated(uri=uri))
        for key, (session, uris) in list(self.legacy.items()):
            try:
                for uri in sorted(uris & {GRAPH_URI, REFERENCE_URI}):
                    await session.send_resource_updated(uri)
            except Exception:  # the client went away: forget it
                self.legacy.pop(key, None)

    async def _pump(self, watch: Any) -> None:
        while True:
            change = await asyncio.to_thread(watch.next, 0.25)
            if change is None:
                if watch.closed:
                    return
                continue
            while watch.poll() is not None:
                pass  # coalesce: one notification for everything committed so far
            await self._notify()

    @contextlib.asynccontextmanager
    async def lifespan(self, _server: Any) -> AsyncIterator[dict[str, Any]]:
        if self.sessions == 0:
            self.watch = self.db.watch(run=self.run, primitive="graph")
            self.task = asyncio.get_running_loop().create_task(self._pump(self.watch))
        self.sessions += 1
        try:
            yield {}
        finally:
            self.sessions -= 1
            if self.sessions == 0 and self.task is not None:
                self.watch.close()
                self.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self.task
                self.task = None
                self.legacy.clear()


def build_server(db: Database, run: str = DEFAULT_RUN, *, embedder: bool = False) -> MCPServer:
    """An :class:`mcp.server.MCPServer` serving the memory graph of run ``run`` of the open database ``db``.

    ``run``: a run id or name; the newest active run of that name, created (tag ``mcp-memory``) if
    there is none. ``embedder``: whether ``db`` was opened with an embedder (``search_memory``
    then defaults to hybrid search). Serve it with ``server.run("stdio")`` /
    ``server.run("streamable-http", host=, port=)``, or test it in-process with ``mcp.Client(server)``.

    :raises InvalidArgument: a bad run name. :raises RunClosed: (on the first write) the run ended.
    """
    kg = KnowledgeGraph(db, run)
    bus = InMemorySubscriptionBus()
    notifier = _Notifier(db, kg.run, bus)
    server: MCPServer = MCPServer(
        "inmem-memory", version="0.1.0", subscriptions=bus, lifespan=notifier.lifespan, log_level="WARNING",
        instructions=("A durable knowledge graph of entities, observations and relations (the reference "
                      "memory server's tools), with history, replay, diff and ranked search."))

    def run_id(name: str | None) -> str:
        if name is None:
            return kg.run
        found = find_run(db, name, create=False)
        if found is None:
            raise RunNotFound(f"no run {name!r} (give a run id or the name of an active run)")
        return found

    # --- the reference's nine tools ---------------------------------------------------------------

    @server.tool(title="Create Entities", description="Create multiple new entities in the knowledge graph",
                 annotations=_WRITE)
    @_errors
    def create_entities(entities: list[Entity]) -> Annotated[CallToolResult, Entities]:
        made = kg.create_entities(_dumps(entities))  # type: ignore[arg-type]
        return _result(_json(made), {"entities": made})

    @server.tool(title="Create Relations", description="Create multiple new relations between entities in the "
                 "knowledge graph. Relations should be in active voice", annotations=_WRITE)
    @_errors
    def create_relations(relations: list[Relation]) -> Annotated[CallToolResult, Relations]:
        made = kg.create_relations(_dumps(relations))  # type: ignore[arg-type]
        return _result(_json(made), {"relations": made})

    @server.tool(title="Add Observations", description="Add new observations to existing entities in the "
                 "knowledge graph", annotations=_WRITE)
    @_errors
    def add_observations(observations: list[ObservationAdd]) -> Annotated[CallToolResult, AddResults]:
        out = kg.add_observations(_dumps(observations))  # type: ignore[arg-type]
        return _result(_json(out), {"results": out})

    def _status(message: str) -> CallToolResult:
        return _result(message, {"success": True, "message": message})

    @server.tool(title="Delete Entities", description="Delete multiple entities and their associated relations "
                 "from the knowledge graph", annotations=_DELETE)
    @_errors
    def delete_entities(entityNames: Annotated[list[str], Field(description="An array of entity names to delete")]
                        ) -> Annotated[CallToolResult, Status]:
        kg.delete_entities(entityNames)
        return _status("Entities deleted successfully")

    @server.tool(title="Delete Observations", description="Delete specific observations from entities in the "
                 "knowledge graph", annotations=_DELETE)
    @_errors
    def delete_observations(deletions: list[ObservationDelete]) -> Annotated[CallToolResult, Status]:
        kg.delete_observations(_dumps(deletions))  # type: ignore[arg-type]
        return _status("Observations deleted successfully")

    @server.tool(title="Delete Relations", description="Delete multiple relations from the knowledge graph",
                 annotations=_DELETE)
    @_errors
    def delete_relations(relations: Annotated[list[Relation], Field(description="An array of relations to delete")]
                         ) -> Annotated[CallToolResult, Status]:
        kg.delete_relations(_dumps(relations))  # type: ignore[arg-type]
        return _status("Relations deleted successfully")

    @server.tool(title="Read Graph", description="Read the entire knowledge graph", annotations=_READ)
    @_errors
    def read_graph() -> Annotated[CallToolResult, Graph]:
        graph = kg.read_graph()
        return _result(_json(graph), graph)

    @server.tool(title="Search Nodes", description="Search for nodes in the knowledge graph based on a query",
                 annotations=_READ)
    @_errors
    def search_nodes(query: Annotated[str, Field(description="The search query to match against entity names, "
                                                             "types, and observation content")]
                     ) -> Annotated[CallToolResult, Graph]:
        graph = kg.search_nodes(query)
        return _result(_json(graph), graph)

    @server.tool(title="Open Nodes", description="Open specific nodes in the knowledge graph by their names",
                 annotations=_READ)
    @_errors
    def open_nodes(names: Annotated[list[str], Field(description="An array of entity names to retrieve")]
                   ) -> Annotated[CallToolResult, Graph]:
        graph = kg.open_nodes(names)
        return _result(_json(graph), graph)

    # --- inmem's tools ------------------------------------------------------------------------------

    @server.tool(title="Search Memory", annotations=_READ, description=(
        "Ranked search of the entities: 'text' is BM25 over names, types and observations; 'hybrid' fuses "
        "it with vector similarity (reciprocal rank fusion) and needs the server started with --embedder; "
        "'auto' (default) is hybrid when an embedder is configured and the graph has vectors, else text."))
    @_errors
    def search_memory(query: Annotated[str, Field(description="Words to look for")],
                      k: Annotated[int, Field(ge=1, le=1000, description="How many results at most")] = 10,
                      mode: Literal["auto", "text", "hybrid", "vector"] = "auto",
                      entityType: Annotated[str | None, Field(description="Only entities of this type")] = None,
                      ) -> SearchResults:
        used = mode
        if mode == "auto":
            used = "hybrid" if embedder else "text"
        try:
            hits = db.graph.search(kg.run, query, k=k, kind=entityType, mode=used)
        except InvalidArgument:
            if mode != "auto" or used == "text":
                raise
            used = "text"  # no node vectors yet
            hits = db.graph.search(kg.run, query, k=k, kind=entityType, mode=used)
        return SearchResults(mode=used, results=[Hit(entity=Entity(**entity_of(h.node)), score=h.score)
                                                 for h in hits])

    def _item(x: Any) -> Entity | Relation | None:
        if x is None:
            return None
        if hasattr(x, "relation"):
            return Relation(**relation_of(x))
        return Entity(**entity_of(x))

    @server.tool(title="Memory History", annotations=_READ, description=(
        "Every committed change to an entity and to its relations, oldest first, with the entity or "
        "relation before and after (from inmem's history: survives deletes)."))
    @_errors
    def memory_history(name: Annotated[str, Field(description="The entity name")]) -> History:
        changes = db.graph.history(kg.run, name)
        return History(name=name, changes=[Change(version=c.version, ts=c.ts.isoformat(), op=c.op,
                                                  before=_item(c.before), after=_item(c.after)) for c in changes])

    @server.tool(title="List Runs", annotations=_READ, description=(
        "The database's runs (the graph lives in one; forks and other runs hold other states), oldest first."))
    @_errors
    def list_runs() -> Runs:
        return Runs(runs=[RunItem(id=str(r.id), name=r.name, status=r.status, tags=list(r.tags), parent=r.parent,
                                  started_at=r.started_at.isoformat(), last_version=r.last_version,
                                  memory=str(r.id) == kg.run) for r in db.runs.list()])

    @server.tool(title="Replay Run", annotations=_READ, description=(
        "The graph of a run (default: this server's) as it was after commit version at_version "
        "(default: its last commit), rebuilt from history."))
    @_errors
    def replay_run(run: Annotated[str | None, Field(description="Run id or name (default: the memory run)")] = None,
                   at_version: Annotated[int | None, Field(description="Commit version")] = None) -> Replayed:
        rid = run_id(run)
        state = db.replay_run(rid, at_version=_version(at_version, "at_version"))
        graph = _ordered(state.graph)
        return Replayed(run=rid, version=state.version, entities=graph["entities"], relations=graph["relations"])

    @server.tool(title="Diff Runs", annotations=_READ, description=(
        "What differs between the graphs of run a and run b (each live, or at a commit version): entities "
        "added, removed and changed (type or observations), relations added and removed."))
    @_errors
    def diff_runs(a: Annotated[str, Field(description="Run id or name")],
                  b: Annotated[str, Field(description="Run id or name")],
                  at_a: int | None = None, at_b: int | None = None) -> Diff:
        ra, rb = run_id(a), run_id(b)
        d = db.diff_runs(ra, rb, at_a=_version(at_a, "at_a"), at_b=_version(at_b, "at_b"))
        nodes, edges = d.graph.nodes, d.graph.edges
        changed = [ChangedEntity(name=k, before=Entity(**entity_of(x)), after=Entity(**entity_of(y)))
                   for k, (x, y) in sorted(nodes.changed.items())]
        return Diff(a=ra, b=rb, version_a=d.version_a, version_b=d.version_b, same=not d.graph,
                    entities=EntityDiff(added=[Entity(**entity_of(n)) for _, n in sorted(nodes.added.items())],
                                        removed=[Entity(**entity_of(n)) for _, n in sorted(nodes.removed.items())],
                                        changed=changed),
                    relations=RelationDiff(added=[Relation(**relation_of(e)) for _, e in sorted(edges.added.items())],
                                           removed=[Relation(**relation_of(e))
                                                    for _, e in sorted(edges.removed.items())]))

    # --- the graph as a resource --------------------------------------------------------------------

    def graph_json() -> str:
        return _json(kg.read_graph())

    for uri, name in ((GRAPH_URI, "graph"), (REFERENCE_URI, "knowledge-graph")):
        server.resource(uri, name=name, title="Knowledge Graph", mime_type="application/json",
                        description="The full knowledge graph with all entities and relations")(graph_json)
    # resources/subscribe of handshake-era clients (the SDK's MCPServer serves only subscriptions/listen)
    lowlevel = server._lowlevel_server  # noqa: SLF001 - the SDK's documented way to add a request handler
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, notifier.subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, notifier.unsubscribe)
    server.knowledge_graph = kg  # type: ignore[attr-defined]
    return server


def serve(db: Database, run: str = DEFAULT_RUN, *, http: bool = False, host: str = "127.0.0.1", port: int = 8000,
          embedder: bool = False) -> None:
    """Serve the memory graph until the client disconnects (stdio) or the process is stopped (HTTP)."""
    server = build_server(db, run, embedder=embedder)
    if http:
        server.run("streamable-http", host=host, port=port)
    else:
        server.run("stdio")
