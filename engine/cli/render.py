"""Drawing command results for a terminal (rich) and as JSON: the ``inmem`` command line's output layer.

This module owns how runs, states, traces, diffs and verification reports
look: rich tables and trees on stdout, ``plain()`` for JSON (dataclasses as
dicts, datetimes as ISO 8601, bytes as hex). Invariant: nothing here opens a
database or decides an exit status; it only renders what a command computed.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from collections.abc import Mapping
from typing import Any

import click
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ..replay import GraphState, RunDiff, RunState, StoredVector, edge_label, vector_label

SECTIONS = ("kv", "events", "states", "traces", "vectors", "docs", "graph")
#: Characters of one document drawn in a terminal (``--json`` has it all).
MAX_DOC_CHARS = 4000
#: Rows of one vector collection drawn in a terminal (``--json`` has them all).
MAX_VECTOR_ROWS = 50
#: Rows of the graph's node table and of its edge table drawn in a terminal (``--json`` has them all).
MAX_GRAPH_ROWS = 100


def _console() -> Console:
    """The stdout console; wide when stdout is not a terminal, so piped tables keep whole ids."""
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 200
    return console


def plain(obj: Any) -> Any:
    """``obj`` as JSON-compatible data: dataclasses as dicts, datetimes as ISO 8601, bytes as hex."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).hex()
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, StoredVector):  # the components as floats, not the stored bytes
        return {"id": obj.id, "vector": list(obj.vector), "metadata": plain(obj.metadata), "text": obj.text,
                "updated_at": plain(obj.updated_at)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if type(obj).__name__ == "Trace" and not out.get("children"):
            out.pop("children", None)  # a flat trace list: the tree is in ``parent``
        return out
    if isinstance(obj, Mapping):
        return {_json_key(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [plain(v) for v in obj]
    as_dict = getattr(obj, "as_dict", None)
    if callable(as_dict):
        return plain(as_dict())
    if hasattr(obj, "tag") and hasattr(obj, "value"):  # cbor2.CBORTag
        return {"tag": plain(obj.tag), "value": plain(obj.value)}
    return str(obj)  # UUID, Decimal, Fraction, IP addresses, ...


def _json_key(key: Any) -> Any:
    if key is None or isinstance(key, (str, int, float, bool)):
        return key
    if isinstance(key, (bytes, bytearray)):
        return bytes(key).hex()
    return str(key)


def _emit_json(doc: Any) -> None:
    click.echo(json.dumps(plain(doc), indent=2, ensure_ascii=False))


def _short(value: Any, width: int = 100) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _time(ts: _dt.datetime | None) -> str:
    if ts is None:
        return ""
    if ts.tzinfo is not None:
        ts = ts.astimezone(_dt.timezone.utc)
    return ts.strftime("%Y-%m-%d %H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n:,} bytes" if unit == "bytes" else f"{n:,} bytes ({size:.1f} {unit})"
        size /= 1024
    return f"{n:,} bytes"  # pragma: no cover


def _kv_table(title: str | None, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title or None, title_justify="left", show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value if isinstance(value, Text) else Text(str(value)))
    return table


def _err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _torn(torn: Any) -> str:
    if not torn:
        return "none"
    if isinstance(torn, Mapping):
        return (f"{torn.get('bytes', '?')} bytes at offset {torn.get('offset', '?')} of {torn.get('file', '?')}"
                f" ({torn.get('reason', '')}); "
                + ("cut" if torn.get("cut") else "left in place, cut by the next read-write open"))
    return str(torn)


def _state_doc(state: RunState, sections: tuple[str, ...]) -> dict[str, Any]:
    doc: dict[str, Any] = {"version": state.version}
    for name in sections:
        doc[name] = _graph_doc(state.graph) if name == "graph" else getattr(state, name)
    return doc


def _graph_doc(graph: GraphState) -> dict[str, Any]:
    """``{"nodes": {id: node}, "edges": [edge, ...]}``: edges as a list (their key is a triple)."""
    return {"nodes": plain(graph.nodes), "edges": [plain(e) for e in graph.edges.values()]}


def _vector_head(v: StoredVector, n: int = 4) -> str:
    comps = v.vector
    return "[" + ", ".join(f"{x:.4g}" for x in comps[:n]) + (", …]" if len(comps) > n else "]")


def _render_vectors(out: Console, vectors: Mapping[str, Any]) -> None:
    total = sum(len(c["vectors"]) for c in vectors.values())
    out.print(Text(f"vectors ({len(vectors)} collection(s), {total} vector(s))", style="italic"))
    for name, c in vectors.items():
        rows = c["vectors"]
        params = (f"dim {c['dim']}, {c['metric']}, index {c['index']}" if c["dim"] is not None
                  else "NO COLLECTION RECORD (damaged: run `inmem verify`)")
        if c.get("embedder"):
            params += f", embedder {c['embedder']}"
        table = Table(title=f"collection {name} ({params}): {len(rows)} vector(s)", title_justify="left")
        table.add_column("id", overflow="fold")
        table.add_column("vector", no_wrap=True)
        table.add_column("norm", justify="right")
        table.add_column("metadata", overflow="fold")
        table.add_column("text", overflow="fold")
        table.add_column("updated (UTC)", no_wrap=True)
        for i, v in enumerate(rows.values()):
            if i == MAX_VECTOR_ROWS:
                table.add_row(Text(f"… {len(rows) - i} more (--json lists them all)", style="dim"), "", "", "", "",
                              "")
                break
            table.add_row(Text(v.id), _vector_head(v), f"{v.norm:.4g}",
                          Text("" if v.metadata is None else _short(v.metadata, 120)),
                          Text("" if v.text is None else _short(v.text, 120)), _time(v.updated_at))
        out.print(table)


def _trace_forest(traces: list[Any]) -> list[tuple[Any, list[Any]]]:
    """Roots in creation order, each ``(trace, children)``; a trace whose parent is absent is a root."""
    ids = {t.id for t in traces}
    kids: dict[str | None, list[Any]] = {}
    for t in traces:
        kids.setdefault(t.parent if t.parent in ids else None, []).append(t)

    def build(t: Any) -> tuple[Any, list[Any]]:
        return t, [build(c) for c in kids.get(t.id, [])]

    return [build(t) for t in kids.get(None, [])]


def _trace_label(t: Any) -> Text:
    label = Text()
    label.append(t.kind, style="bold cyan")
    label.append(" ")
    label.append(_short(t.content, 120))
    if t.confidence is not None:
        label.append(f"  confidence {t.confidence:g}", style="magenta")
    if t.alternatives:
        label.append(f"  alternatives {_short(list(t.alternatives), 80)}", style="dim")
    if t.tags:
        label.append(f"  tags {', '.join(t.tags)}", style="dim")
    label.append(f"  {t.id} {_time(t.ts)}", style="dim")
    return label


def _render_state(out: Console, state: RunState, sections: tuple[str, ...]) -> None:
    if "kv" in sections:
        table = Table(title=f"kv ({len(state.kv)})", title_justify="left")
        table.add_column("key", overflow="fold")
        table.add_column("value", overflow="fold")
        for key, value in state.kv.items():
            table.add_row(Text(key), Text(_short(value, 300)))
        out.print(table)
    if "events" in sections:
        table = Table(title=f"events ({len(state.events)})", title_justify="left")
        table.add_column("seq", justify="right")
        table.add_column("time (UTC)", no_wrap=True)
        table.add_column("type", overflow="fold")
        table.add_column("payload", overflow="fold")
        table.add_column("hash", no_wrap=True, style="dim")
        for e in state.events:
            table.add_row(str(e.seq), _time(e.ts), Text(e.type), Text(_short(e.payload, 200)), e.hash.hex()[:16])
        out.print(table)
    if "states" in sections:
        table = Table(title=f"states ({len(state.states)})", title_justify="left")
        table.add_column("name", overflow="fold")
        table.add_column("value", overflow="fold")
        table.add_column("version", justify="right")
        table.add_column("updated (UTC)", no_wrap=True)
        for name, s in state.states.items():
            table.add_row(Text(name), Text(_short(s.value, 200)), str(s.version), _time(s.updated_at))
        out.print(table)
    if "traces" in sections:
        tree = Tree(Text(f"traces ({len(state.traces)})", style="italic"))

        def add(node: Tree, branch: tuple[Any, list[Any]]) -> None:
            child = node.add(_trace_label(branch[0]))
            for sub in branch[1]:
                add(child, sub)

        for root in _trace_forest(list(state.traces)):
            add(tree, root)
        out.print(tree)
    if "vectors" in sections:
        _render_vectors(out, state.vectors)
    if "docs" in sections:
        _render_docs(out, state.docs)
    if "graph" in sections:
        _render_graph(out, state.graph)


def _render_graph(out: Console, graph: GraphState) -> None:
    out.print(Text(f"graph ({len(graph.nodes)} node(s), {len(graph.edges)} edge(s))", style="italic"))
    table = Table(title=f"nodes ({len(graph.nodes)})", title_justify="left")
    for name in ("id", "kind", "content", "metadata", "updated (UTC)"):
        table.add_column(name, overflow="fold", no_wrap=name == "updated (UTC)")
    for i, n in enumerate(graph.nodes.values()):
        if i == MAX_GRAPH_ROWS:
            table.add_row(Text(f"… {len(graph.nodes) - i} more (--json lists them all)", style="dim"), "", "", "", "")
            break
        table.add_row(Text(n.id), Text(n.kind or ""), Text(_short(n.content, 160)),
                      Text("" if n.metadata is None else _short(dict(n.metadata), 120)), _time(n.updated_at))
    out.print(table)
    table = Table(title=f"edges ({len(graph.edges)})", title_justify="left")
    for name in ("source", "relation", "target", "weight", "metadata", "updated (UTC)"):
        table.add_column(name, overflow="fold", no_wrap=name == "updated (UTC)", justify="right" if name == "weight"
                         else "left")
    for i, e in enumerate(graph.edges.values()):
        if i == MAX_GRAPH_ROWS:
            table.add_row(Text(f"… {len(graph.edges) - i} more (--json lists them all)", style="dim"), "", "", "",
                          "", "")
            break
        table.add_row(Text(e.source), Text(e.relation), Text(e.target), f"{e.weight:g}",
                      Text("" if e.metadata is None else _short(dict(e.metadata), 120)), _time(e.updated_at))
    out.print(table)


def _render_docs(out: Console, docs: Mapping[str, Any]) -> None:
    out.print(Text(f"docs ({len(docs)})", style="italic"))
    for name, doc in docs.items():
        text = json.dumps(plain(doc), indent=2, ensure_ascii=False)
        if len(text) > MAX_DOC_CHARS:
            text = text[:MAX_DOC_CHARS] + f"\n… {len(text) - MAX_DOC_CHARS:,} more characters (--json has it all)"
        out.print(Panel(Text(text), title=f"doc {name}", title_align="left", expand=False))


def _run_header(info: Any, note: str) -> Panel:
    rows = [
        ("name", info.name or ""),
        ("status", info.status + (" (archived)" if info.archived else "")),
        ("parent", info.parent or "none"),
        ("tags", ", ".join(info.tags) or "none"),
        ("metadata", _short(info.metadata, 300) if info.metadata else "none"),
        ("started", _time(info.started_at)),
        ("ended", _time(info.ended_at) or "still active"),
        ("versions", f"first {info.first_version}, last {info.last_version}"),
    ]
    return Panel(Group(_kv_table("", rows), Text(note, style="dim")) if note else _kv_table("", rows),
                 title=f"run {info.id}", title_align="left", expand=False)


def _diff_doc(d: RunDiff) -> dict[str, Any]:
    doc = plain(d)
    for part in ("added", "removed", "changed"):  # (collection, id) keys as "collection/id"
        doc["vectors"][part] = {vector_label(k): plain(v) for k, v in getattr(d.vectors, part).items()}
        doc["docs"][part] = {(f"{k[0]}:{k[1]}" if k[1] else k[0]): plain(v)  # (name, path) as "name:path"
                             for k, v in getattr(d.docs, part).items()}
        # (source, relation, target) as "source -relation-> target"
        doc["graph"]["edges"][part] = {edge_label(k): plain(v) for k, v in getattr(d.graph.edges, part).items()}
    doc["empty"] = d.is_empty()
    return doc  # type: ignore[no-any-return]


def _render_verify(out: Console, directory: str, report: Mapping[str, Any]) -> None:
    segs = Table(title=f"WAL segments ({len(report.get('segments', ()))})", title_justify="left")
    segs.add_column("file", no_wrap=True)
    segs.add_column("frames", justify="right")
    segs.add_column("bytes", justify="right")
    segs.add_column("result", overflow="fold")
    for s in report.get("segments", ()):
        segs.add_row(s["file"], f"{s['frames']:,}", f"{s['bytes']:,}",
                     Text("ok", style="green") if not s.get("error") else Text(str(s["error"]), style="red"))
    out.print(segs)
    torn = report.get("torn_tail")
    if torn:
        out.print(Text(f"torn tail (a crash mid-write, not damage): {_torn(torn)}", style="yellow"))
    snaps = report.get("snapshots", ())
    if snaps:
        table = Table(title=f"snapshots ({len(snaps)})", title_justify="left")
        table.add_column("file", no_wrap=True)
        table.add_column("result", overflow="fold")
        for s in snaps:
            table.add_row(s["file"], Text("ok", style="green") if s.get("ok") else Text(str(s.get("error")),
                                                                                        style="red"))
        out.print(table)
    else:
        out.print(Text("snapshots: none"))
    chains = report.get("chains_broken", ())
    out.print(Text(f"event hash chains: {report.get('events', 0):,} events in {report.get('runs', 0):,} runs, "
                   f"{len(chains)} broken", style="red" if chains else ""))
    bad_vectors = report.get("vectors_bad", ())
    out.print(Text(f"vector records: {report.get('vectors', 0):,} vectors in {report.get('collections', 0):,} "
                   f"collections, {len(bad_vectors)} bad", style="red" if bad_vectors else ""))
    out.print(Text(f"documents: {report.get('docs', 0):,} (every record decodes as JSON-like data)"))
    problems = report.get("problems", ())
    if report.get("ok"):
        out.print(Text(f"OK: {directory} is clean", style="bold green"))
        return
    out.print(Text(f"DAMAGED: {len(problems)} problem(s) in {directory}", style="bold red"))
    for p in problems:
        out.print(Text(f"  - {p}", style="red"))
    out.print(Text(f"To keep the longest valid prefix (damaged files are set aside, not deleted): "
                   f"Database.open({directory!r}, salvage=True)", style="yellow"))


def _dir_files(path: str) -> list[os.DirEntry[str]]:
    return sorted((e for e in os.scandir(path) if e.is_file(follow_symlinks=False)), key=lambda e: e.name)
