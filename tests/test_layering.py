"""Layering: lower layers never import upper ones; every module says what it owns.

Walks each module's imports with ``ast`` (no import side effects).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parent.parent / "engine"

# lowest first; a module may import only modules of its own layer or below
LAYERS = [
    {"errors", "childproc"},
    {"keys", "codec", "checksum", "native", "_native", "locks", "filters", "embeddings", "jsondoc", "expiry", "channels"},
    {"fs", "wal.format", "wal.fast"},
    {"sortedmap", "store", "mvcc", "identity", "snapshot", "wal.reader", "wal.writer", "wal.readonly", "wal.follow", "wal"},
    {"history", "history.index", "history.sidecar", "history.retention", "history.collect"},
    {"recovery", "registry", "opening"},
    {"kernel"},
    {"txn", "checkpoint"},
    {"primitives", "primitives.context", "primitives.kv", "primitives.events", "primitives.state", "primitives.traces", "primitives.runs", "primitives.vectors",
     "primitives.docs", "primitives.graph", "primitives.graphalgo", "primitives.graphrecords",
     "primitives.graphsearch", "primitives.expiry", "fulltext"},
    {"contexts", "vectorindex", "sweeping"},
    {"runviews"},
    {"replay", "changefeed"},
    {"tenants"},
    {"database"},
    {"verify", "integrations", "integrations.langgraph", "integrations.langgraph_demo",
     "integrations.langgraph_store", "memory", "memorystore", "integrations.mcp_memory",
     "integrations.mcp_server", "integrations.mcp_schemas",
     "workflows", "workflows.records", "workflows.runtime", "workflows.declare", "workflows.manage",
     "workflows.engine"},
    {"demo", "memory_demo", "cli", "cli.app", "cli.open", "cli.render", "cli.guard", "cli.inspect", "cli.history", "cli.fork",
     "cli.maintain", "cli.demo", "cli.mcpserve", "cli.workflows", "cli.watchcmd", "__main__", "__init__", "testing"},
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}


def modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        yield ".".join(parts), path


def engine_imports(name: str, path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    package = name.split(".")[:-1] if not path.name == "__init__.py" else name.split(".")
    if name == "__init__":
        package = []
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            target = ".".join(base + ([node.module] if node.module else []))
            if node.module is None:  # from . import x
                out.update(".".join(base + [a.name]) for a in node.names)
            else:
                out.add(target)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("inmem."):
            out.add(node.module[len("inmem."):])
        elif isinstance(node, ast.Import):
            out.update(a.name[len("inmem."):] for a in node.names if a.name.startswith("inmem."))
    return {m for m in out if m}


@pytest.mark.parametrize("name,path", list(modules()), ids=[m for m, _ in modules()])
def test_module_is_layered_and_documented(name, path):
    assert name in RANK, f"engine/{path.relative_to(PKG)} is not placed in a layer (tests/test_layering.py)"
    for target in engine_imports(name, path):
        # `from .wal.format import x` resolves to "wal.format"; `from . import native` to "native"
        assert target in RANK, f"{name} imports unknown module {target}"
        assert RANK[target] <= RANK[name], f"{name} (layer {RANK[name]}) imports upper layer {target} ({RANK[target]})"
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and len(doc) > 40, f"{name} has no module docstring saying what it owns"
