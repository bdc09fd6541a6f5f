"""The kernel is the only way to storage: structure pinned by walking the AST (no imports run).

* No module reaches into another object's private attributes (``x._y`` where
  ``x`` is not ``self``/``cls``), except where the line says why with
  ``# noqa: SLF001`` (same class or module) and in ``engine/testing.py``,
  whose job is to reach past the facade for white-box tests.
* No parameter or alias types a database, host or kernel as ``Any``: the
  modules above the kernel name :class:`inmem.kernel.Kernel`.
* Above the kernel, nothing imports the sorted map, the MVCC chains, the WAL
  or frame code (the CLI may use the two file-name parsers to list files).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parent.parent / "engine"
FILES = sorted(PKG.rglob("*.py"))
IDS = [str(p.relative_to(PKG)) for p in FILES]

#: Modules above the kernel, and the storage modules they must not import.
ABOVE_KERNEL = ("txn", "contexts", "replay", "primitives/", "integrations/", "cli/", "demo", "verify")
STORAGE = ("store", "mvcc", "wal", "wal.format", "wal.writer", "wal.reader", "wal.readonly", "sortedcontainers")
#: What the CLI and verify may import from storage modules: file-name parsers and the offline checker's readers.
ALLOWED = {
    ("cli/", "wal.format"): {"parse_segment_name"},
    ("verify", "wal.format"): None,  # verify reads every frame offline, by design below the kernel's API
    ("verify", "wal.reader"): None,
}


def _private_accesses(path: pathlib.Path) -> list[str]:
    src = path.read_text()
    lines = src.splitlines()
    out = []
    for node in ast.walk(ast.parse(src)):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        if "noqa: SLF001" in lines[node.lineno - 1]:
            continue
        out.append(f"{path.name}:{node.lineno}: .{node.attr}")
    return out


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_no_private_attribute_of_another_object(path):
    if path.name == "testing.py" and path.parent == PKG:
        return
    assert _private_accesses(path) == []


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_no_any_typed_database_or_kernel(path):
    tree = ast.parse(path.read_text())
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.arg in ("db", "host", "kernel", "database") \
                and isinstance(node.annotation, ast.Name) and node.annotation.id == "Any":
            bad.append(f"line {node.lineno}: parameter {node.arg}: Any")
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and node.value.id == "Any" \
                and any(isinstance(t, ast.Name) and t.id in ("Database", "Kernel", "Host") for t in node.targets):
            bad.append(f"line {node.lineno}: alias of Any")
        if isinstance(node, ast.ClassDef) and node.name in ("_Host", "Host"):
            bad.append(f"line {node.lineno}: a _Host protocol instead of the Kernel type")
    assert bad == []


def _module(path: pathlib.Path) -> str:
    rel = path.relative_to(PKG).with_suffix("").as_posix()
    return rel[: -len("/__init__")] + "/" if rel.endswith("/__init__") else rel


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_nothing_above_the_kernel_imports_storage(path):
    name = _module(path)
    group = next((g for g in ABOVE_KERNEL if name == g or (g.endswith("/") and name.startswith(g))), None)
    if group is None:
        return
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            target = (node.module or "").lstrip(".")
            if node.module and node.module.startswith("inmem."):
                target = node.module[len("inmem."):]
            if target not in STORAGE:
                continue
            allowed = ALLOWED.get((group, target), set())
            names = {a.name for a in node.names}
            if allowed is None or names <= allowed:
                continue
            bad.append(f"line {node.lineno}: from {target} import {', '.join(sorted(names - allowed))}")
        elif isinstance(node, ast.Import):
            bad += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] == "sortedcontainers"]
    assert bad == [], f"{name} reaches storage below the kernel"
