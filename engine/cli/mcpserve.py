"""``inmem mcp``: serve a run's memory graph to MCP clients (stdio, or streamable HTTP).

This module owns the ``mcp`` command: it opens (creating if needed) the
database directory for writing, resolves the embedder option, and hands the
open database to :func:`inmem.integrations.mcp_server.serve`. Invariant: in
stdio mode nothing but the MCP protocol is written to stdout (messages and
logs go to stderr); the database is closed when the server stops.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from .app import CONTEXT, cli
from .guard import CliError, _guard


def load_embedder(spec: str | None) -> Any:
    """``None``, ``"hashing"`` (:class:`inmem.embeddings.HashingEmbedder`, 256 dims, unigrams and
    bigrams) or ``"module:attr"``: an embedder callable, or a class/factory called with no arguments.

    :raises CliError: the module or attribute cannot be imported.
    """
    if spec is None:
        return None
    if spec == "hashing":
        from ..embeddings import HashingEmbedder

        return HashingEmbedder()
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise CliError(f"--embedder is 'hashing' or 'module:attr', got {spec!r}")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise CliError(f"cannot load embedder {spec!r}: {exc}") from exc
    return obj() if isinstance(obj, type) else obj


@cli.command("mcp", context_settings=CONTEXT)
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, dir_okay=True))
@click.option("--run", "run_name", default="mcp-memory", show_default=True,
              help="Run holding the graph: a run id, or the name of an active run (created if there is none).")
@click.option("--http", is_flag=True, help="Serve streamable HTTP (endpoint /mcp) instead of stdio.")
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP: address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="HTTP: port.")
@click.option("--embedder", default=None, metavar="hashing|module:attr",
              help="Embed entities for search_memory's hybrid search: 'hashing' (built in, no model), or an "
                   "import path to a callable list[str] -> (n, dim) array (a class is instantiated).")
@click.option("--durability", type=click.Choice(["strict", "batched", "off"]), default="strict", show_default=True,
              help="strict: a tool call returns once its commit is fsynced; off: written to the OS (survives a "
                   "process crash, not a power loss); batched: fsynced every 100 ms.")
@_guard
def mcp(directory: str, run_name: str, http: bool, host: str, port: int, embedder: str | None,
        durability: str) -> None:
    """Serve the memory graph of run RUN in DIR as an MCP server (the reference memory server's tools).

    WRITES: opens DIR for writing (creating it if needed; fails if another process has it open)
    and serves until the client disconnects (stdio) or the process is stopped (HTTP). Each tool
    call that changes the graph is one commit; `inmem history/replay/diff/fork` work on the run.

    \b
    Tools: create_entities, create_relations, add_observations, delete_entities,
      delete_observations, delete_relations, read_graph, search_nodes, open_nodes
      (as @modelcontextprotocol/server-memory), and search_memory, memory_history,
      list_runs, replay_run, diff_runs. Resource: memory://graph.
    \b
    MCP client configuration (stdio):
      {"mcpServers": {"memory": {"command": "inmem", "args": ["mcp", "/path/to/dir"]}}}
    \b
    Examples:
      inmem mcp ./memory
      inmem mcp ./memory --embedder hashing
      inmem mcp ./memory --http --port 8000       # http://127.0.0.1:8000/mcp
    """
    try:
        from ..integrations.mcp_server import serve
    except ImportError as exc:
        raise CliError(f"the MCP server needs the mcp package: pip install 'inmem[mcp]' ({exc})") from exc
    from ..database import Database

    emb = load_embedder(embedder)
    with Database.open(directory, durability=durability, embedder=emb) as db:
        serve(db, run_name, http=http, host=host, port=port, embedder=emb is not None)
