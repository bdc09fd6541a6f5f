"""The MCP memory server (``inmem mcp``): the reference server's nine tools, inmem's extra tools,
the ``memory://graph`` resource and its change notifications, stdio and HTTP transports, crashes.

In-process tests use the SDK's client (``mcp.Client(server)``); a scripted session runs against
inmem and against ``RefModel``, a line-by-line Python port of the reference server's
``KnowledgeGraphManager`` (``@modelcontextprotocol/server-memory`` 2026.x, ``dist/index.js``),
and every result must be the same. Skipped when the ``mcp`` package is not installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
import warnings

import pytest

mcp = pytest.importorskip("mcp")

from mcp import Client, StdioServerParameters  # noqa: E402

from inmem import Database  # noqa: E402
from inmem.embeddings import HashingEmbedder  # noqa: E402
from inmem.integrations.mcp_memory import KnowledgeGraph  # noqa: E402
from inmem.integrations.mcp_server import GRAPH_URI, REFERENCE_URI, build_server  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_TOOLS = ["create_entities", "create_relations", "add_observations", "delete_entities",
                   "delete_observations", "delete_relations", "read_graph", "search_nodes", "open_nodes"]
EXTRA_TOOLS = ["search_memory", "memory_history", "list_runs", "replay_run", "diff_runs"]
# the child imports this checkout's engine/ (tests/checkout.py), writes its pid, then runs `inmem ...`
LAUNCH = ("import os, sys; sys.path.insert(0, {root!r}); from tests.checkout import use_checkout; use_checkout(); "
          "open({pidfile!r}, 'w').write(str(os.getpid())); from inmem.cli import main; sys.exit(main())")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


@pytest.fixture
def db(tmp_path):
    d = Database.open(str(tmp_path / "db"))
    yield d
    d.close()


def E(name, type_="person", obs=()):
    return {"name": name, "entityType": type_, "observations": list(obs)}


def R(a, rel, b):
    return {"from": a, "to": b, "relationType": rel}


async def call(client, tool, **args):
    r = await client.call_tool(tool, args)
    if r.is_error:
        raise ToolFailed(r.content[0].text)
    return r.structured_content


class ToolFailed(Exception):
    pass


# --- a reimplementation of the reference server (dist/index.js, KnowledgeGraphManager) -------------

class RefModel:
    """The reference's semantics on an in-memory graph (its JSONL file is read and rewritten whole)."""

    def __init__(self):
        self.entities, self.relations = [], []

    def create_entities(self, entities):
        new = [e for e in entities if not any(x["name"] == e["name"] for x in self.entities)]
        self.entities += [dict(e, observations=list(e["observations"])) for e in new]
        return {"entities": new}

    def create_relations(self, relations):
        new = [r for r in relations if not any(x["from"] == r["from"] and x["to"] == r["to"]
                                               and x["relationType"] == r["relationType"] for x in self.relations)]
        self.relations += new
        return {"relations": new}

    def add_observations(self, observations):
        results = []
        staged = [dict(e, observations=list(e["observations"])) for e in self.entities]  # saved only on success
        for o in observations:
            ent = next((e for e in staged if e["name"] == o["entityName"]), None)
            if ent is None:
                raise ToolFailed(f"Entity with name {o['entityName']} not found")
            new = [c for c in o["contents"] if c not in ent["observations"]]
            ent["observations"] += new
            results.append({"entityName": o["entityName"], "addedObservations": new})
        self.entities = staged
        return {"results": results}

    def delete_entities(self, entityNames):
        self.entities = [e for e in self.entities if e["name"] not in entityNames]
        self.relations = [r for r in self.relations if r["from"] not in entityNames and r["to"] not in entityNames]
        return {"success": True, "message": "Entities deleted successfully"}

    def delete_observations(self, deletions):
        for d in deletions:
            ent = next((e for e in self.entities if e["name"] == d["entityName"]), None)
            if ent is not None:
                ent["observations"] = [o for o in ent["observations"] if o not in d["observations"]]
        return {"success": True, "message": "Observations deleted successfully"}

    def delete_relations(self, relations):
        self.relations = [r for r in self.relations if not any(
            r["from"] == d["from"] and r["to"] == d["to"] and r["relationType"] == d["relationType"]
            for d in relations)]
        return {"success": True, "message": "Relations deleted successfully"}

    def read_graph(self):
        return {"entities": self.entities, "relations": self.relations}

    def _sub(self, ents):
        names = {e["name"] for e in ents}
        return {"entities": ents, "relations": [r for r in self.relations if r["from"] in names or r["to"] in names]}

    def search_nodes(self, query):
        q = query.lower()
        return self._sub([e for e in self.entities if q in e["name"].lower() or q in e["entityType"].lower()
                          or any(q in o.lower() for o in e["observations"])])

    def open_nodes(self, names):
        return self._sub([e for e in self.entities if e["name"] in names])


def script(seed, steps):
    """A random session of tool calls over a small name pool, avoiding the two documented differences
    (relations to missing entities; the same name twice in one create call)."""
    rnd = random.Random(seed)
    names = ["Ann", "bob", "Cleo", "dan", "Eve", "Фёдор", "z 1"]
    types = ["person", "Org", "place"]
    words = ["likes tea", "Likes TEA", "works at ACME", "born 1990", "tea", "", "speaks Русский"]
    alive = set()
    out = []
    for _ in range(steps):
        op = rnd.choice(["create_entities"] * 3 + ["create_relations"] * 2 + ["add_observations"] * 2
                        + ["delete_entities", "delete_observations", "delete_relations", "search_nodes",
                           "open_nodes", "read_graph"])
        if op == "create_entities":
            pick = rnd.sample(names, rnd.randint(1, 3))
            args = {"entities": [E(n, rnd.choice(types), rnd.sample(words, rnd.randint(0, 3))) for n in pick]}
            alive.update(pick)
        elif op in ("create_relations", "delete_relations"):
            if not alive:
                continue
            pool = sorted(alive)
            rels = [R(rnd.choice(pool), rnd.choice(["knows", "works_with"]), rnd.choice(pool))
                    for _ in range(rnd.randint(1, 3))]
            args = {"relations": [r for i, r in enumerate(rels) if r not in rels[:i]]}
        elif op == "add_observations":
            if not alive:
                continue
            pick = rnd.sample(sorted(alive), rnd.randint(1, min(2, len(alive))))
            if rnd.random() < 0.15:
                pick.append("nobody")  # the whole call fails, nothing written
            args = {"observations": [{"entityName": n, "contents": rnd.sample(words, 2)} for n in pick]}
        elif op == "delete_observations":
            args = {"deletions": [{"entityName": rnd.choice(names), "observations": rnd.sample(words, 2)}]}
        elif op == "delete_entities":
            pick = rnd.sample(names, rnd.randint(1, 2))
            alive.difference_update(pick)
            args = {"entityNames": pick}
        elif op == "search_nodes":
            args = {"query": rnd.choice(["tea", "ANN", "org", "e", "русский", "zzz"])}
        elif op == "open_nodes":
            args = {"names": rnd.sample(names, 2)}
        else:
            args = {}
        out.append((op, args))
    return out


# --- the reference's nine tools -------------------------------------------------------------------------

def test_tools_have_the_reference_names_schemas_and_annotations(db):
    async def go():
        async with Client(build_server(db)) as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
        assert sorted(tools) == sorted(REFERENCE_TOOLS + EXTRA_TOOLS)
        want_args = {"create_entities": ["entities"], "create_relations": ["relations"],
                     "add_observations": ["observations"], "delete_entities": ["entityNames"],
                     "delete_observations": ["deletions"], "delete_relations": ["relations"], "read_graph": [],
                     "search_nodes": ["query"], "open_nodes": ["names"]}
        for name, args in want_args.items():
            t = tools[name]
            assert sorted(t.input_schema.get("required", [])) == args, name
            assert t.output_schema is not None, name
            assert t.annotations.read_only_hint == (name in ("read_graph", "search_nodes", "open_nodes")), name
            assert t.annotations.destructive_hint == name.startswith("delete_"), name
        rel = tools["create_relations"].input_schema["$defs"]["Relation"]
        assert sorted(rel["required"]) == ["from", "relationType", "to"]
        for name in EXTRA_TOOLS:
            assert tools[name].output_schema is not None and tools[name].annotations.read_only_hint
    run(go())


def test_reference_contract_tool_by_tool(db):
    async def go():
        async with Client(build_server(db)) as c:
            r = await call(c, "create_entities", entities=[E("Ann", "person", ["likes tea"]), E("ACME", "org")])
            assert r == {"entities": [E("Ann", "person", ["likes tea"]), E("ACME", "org")]}
            r = await call(c, "create_entities", entities=[E("Ann", "robot"), E("Bob")])
            assert r == {"entities": [E("Bob")]}  # existing name skipped, not changed
            r = await call(c, "create_relations", relations=[R("Ann", "works_at", "ACME"), R("Bob", "knows", "Ann")])
            assert r["relations"] == [R("Ann", "works_at", "ACME"), R("Bob", "knows", "Ann")]
            r = await call(c, "create_relations", relations=[R("Ann", "works_at", "ACME"), R("Ann", "knows", "Bob")])
            assert r["relations"] == [R("Ann", "knows", "Bob")]  # duplicate triple skipped
            r = await call(c, "add_observations", observations=[{"entityName": "Ann", "contents": ["likes tea", "x"]}])
            assert r == {"results": [{"entityName": "Ann", "addedObservations": ["x"]}]}
            r = await c.call_tool("add_observations", {"observations": [{"entityName": "Ann", "contents": ["y"]},
                                                                        {"entityName": "Zed", "contents": ["z"]}]})
            assert r.is_error and "Entity with name Zed not found" in r.content[0].text
            r = await call(c, "delete_observations", deletions=[{"entityName": "Ann", "observations": ["x", "nope"]},
                                                               {"entityName": "Nobody", "observations": ["x"]}])
            assert r == {"success": True, "message": "Observations deleted successfully"}
            r = await call(c, "search_nodes", query="TEA")
            assert r == {"entities": [E("Ann", "person", ["likes tea"])],
                         "relations": [R("Ann", "works_at", "ACME"), R("Bob", "knows", "Ann"), R("Ann", "knows", "Bob")]}
            assert (await call(c, "search_nodes", query="ORG"))["entities"] == [E("ACME", "org")]  # by type
            r = await call(c, "open_nodes", names=["ACME", "ghost"])
            assert r == {"entities": [E("ACME", "org")], "relations": [R("Ann", "works_at", "ACME")]}
            r = await call(c, "delete_relations", relations=[R("Ann", "knows", "Bob"), R("Ann", "knows", "ACME")])
            assert r["success"] is True
            for tool, args in (("delete_entities", {"entityNames": ["", "a\x00b"]}),  # no entity has them: ignored
                               ("delete_relations", {"relations": [R("", "knows", "Ann")]}),
                               ("delete_observations", {"deletions": [{"entityName": "", "observations": ["x"]}]})):
                assert (await call(c, tool, **args))["success"] is True
            r = await call(c, "delete_entities", entityNames=["Bob", "ghost"])
            assert r == {"success": True, "message": "Entities deleted successfully"}
            g = await call(c, "read_graph")
            assert g == {"entities": [E("Ann", "person", ["likes tea"]), E("ACME", "org")],
                         "relations": [R("Ann", "works_at", "ACME")]}  # Bob's relations went with him
            text = (await c.call_tool("read_graph", {})).content[0].text
            assert json.loads(text) == g and text.startswith("{\n  \"entities\": [")  # JSON.stringify(g, null, 2)
    run(go())


def test_a_failing_call_writes_nothing(db):
    async def go():
        server = build_server(db)
        async with Client(server) as c:
            await call(c, "create_entities", entities=[E("Ann")])
            before = db.stats()["commit_version"]
            bad = [("create_relations", {"relations": [R("Ann", "knows", "Ann"), R("Ann", "knows", "Ghost")]}),
                   ("create_entities", {"entities": [E("Bob"), E("bad\x00name")]}),
                   ("create_entities", {"entities": [E("Bob"), E("x" * 300)]}),
                   ("create_entities", {"entities": [E("Bob", "")]}),
                   ("add_observations", {"observations": [{"entityName": "Ann", "contents": ["a"]},
                                                          {"entityName": "Nope", "contents": ["b"]}]}),
                   ("create_entities", {"entities": [{"name": "Bob"}]}),  # schema: missing fields
                   ("delete_entities", {"entityNames": "Ann"})]
            for tool, args in bad:
                r = await c.call_tool(tool, args)
                assert r.is_error, (tool, args)
            assert "Entity with name Ghost not found" in (await c.call_tool(*bad[0])).content[0].text
            assert db.stats()["commit_version"] == before
            assert await call(c, "read_graph") == {"entities": [E("Ann")], "relations": []}
    run(go())


@pytest.mark.parametrize("seed", [1, 2])
def test_scripted_session_matches_the_reference_model(db, seed):
    async def go():
        ref = RefModel()
        async with Client(build_server(db)) as c:
            for op, args in script(seed, 70):
                try:
                    want = getattr(ref, op)(**args)
                except ToolFailed as exc:
                    r = await c.call_tool(op, args)
                    assert r.is_error and str(exc) in r.content[0].text
                    continue
                assert await call(c, op, **args) == json.loads(json.dumps(want)), (op, args)
            assert await call(c, "read_graph") == ref.read_graph()
        # the graph is a run: a fresh server on the database sees the same memory
        assert KnowledgeGraph(db).read_graph() == ref.read_graph()
    run(go())


# --- inmem's tools -----------------------------------------------------------------------------------------

def test_extra_tools_search_history_runs_replay_diff(tmp_path):
    with Database.open(str(tmp_path / "db"), embedder=HashingEmbedder()) as db:
        async def go():
            server = build_server(db, embedder=True)
            async with Client(server) as c:
                await call(c, "create_entities", entities=[E("Ann", "person", ["drinks green tea daily"]),
                                                           E("Bob", "person", ["plays chess"]),
                                                           E("ACME", "org", ["sells tea and coffee"])])
                v1 = db.stats()["commit_version"]
                await call(c, "add_observations", observations=[{"entityName": "Bob", "contents": ["hates tea"]}])
                await call(c, "create_relations", relations=[R("Ann", "works_at", "ACME")])
                hits = await call(c, "search_memory", query="tea", k=2)
                assert hits["mode"] == "hybrid" and len(hits["results"]) == 2
                assert all(h["score"] > 0 for h in hits["results"])
                text = await call(c, "search_memory", query="chess", mode="text", entityType="person")
                assert text["mode"] == "text" and [h["entity"]["name"] for h in text["results"]] == ["Bob"]
                r = await c.call_tool("search_memory", {"query": "tea", "k": 0})
                assert r.is_error

                await call(c, "delete_entities", entityNames=["Ann"])
                hist = (await call(c, "memory_history", name="Ann"))["changes"]
                assert [h["op"] for h in hist] == ["add_node", "add_edge", "remove_edge", "delete_node"]
                assert hist[0]["after"] == E("Ann", "person", ["drinks green tea daily"])
                assert hist[1]["after"] == R("Ann", "works_at", "ACME") and hist[-1]["after"] is None
                assert (await call(c, "memory_history", name="never"))["changes"] == []

                runs = (await call(c, "list_runs"))["runs"]
                mine = [r for r in runs if r["memory"]]
                assert len(mine) == 1 and mine[0]["name"] == "mcp-memory"
                rid = mine[0]["id"]

                old = await call(c, "replay_run", at_version=v1)
                assert old["version"] == v1 and [e["name"] for e in old["entities"]] == ["Ann", "Bob", "ACME"]
                assert old["entities"][1]["observations"] == ["plays chess"] and old["relations"] == []
                assert (await call(c, "replay_run", run="mcp-memory"))["entities"] == \
                    (await call(c, "read_graph"))["entities"]
                r = await c.call_tool("replay_run", {"run": "no-such-run"})
                assert r.is_error and "no run" in r.content[0].text

                fork = db.fork_run(rid, at_version=v1, name="before")
                d = await call(c, "diff_runs", a=fork, b="mcp-memory")
                assert [e["name"] for e in d["entities"]["removed"]] == ["Ann"]
                assert [(x["name"], x["after"]["observations"]) for x in d["entities"]["changed"]] == \
                    [("Bob", ["plays chess", "hates tea"])]
                assert d["relations"] == {"added": [], "removed": []} and d["same"] is False
                assert (await call(c, "diff_runs", a=rid, b=rid))["same"] is True
        run(go())


def test_graph_resource_and_change_notifications(db):
    async def go():
        server = build_server(db)
        async with Client(server) as c:
            await call(c, "create_entities", entities=[E("Ann")])
            for uri in (GRAPH_URI, REFERENCE_URI):
                body = (await c.read_resource(uri)).contents[0]
                assert body.mime_type == "application/json"
                assert json.loads(body.text) == {"entities": [E("Ann")], "relations": []}
            async with c.listen(resource_subscriptions=[GRAPH_URI]) as sub:
                events = sub.__aiter__()
                await call(c, "add_observations", observations=[{"entityName": "Ann", "contents": ["new"]}])
                ev = await asyncio.wait_for(events.__anext__(), 10)
                assert ev.uri == GRAPH_URI
                # a write by anyone else (here the library API, same run) notifies too: it is the change feed
                run_id = server.knowledge_graph.run
                await asyncio.to_thread(db.graph.add_node, run_id, "x", id="Bob", kind="person")
                ev = await asyncio.wait_for(events.__anext__(), 10)
                assert ev.uri == GRAPH_URI
                assert [e["name"] for e in json.loads((await c.read_resource(GRAPH_URI)).contents[0].text)
                        ["entities"]] == ["Ann", "Bob"]
    run(go())


def test_resource_subscribe_of_handshake_era_clients(db):
    """The reference server's (2025) protocol: resources/subscribe, then notifications/resources/updated."""
    async def go():
        got: asyncio.Queue = asyncio.Queue()

        async def on_message(message):
            root = getattr(message, "root", message)
            if getattr(root, "method", None) == "notifications/resources/updated":
                got.put_nowait(str(root.params.uri))

        async with Client(build_server(db), mode="legacy", message_handler=on_message) as c:
            assert c.server_capabilities.resources.subscribe is True
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # resources/subscribe is deprecated from 2026-07-28 on
                await c.subscribe_resource(REFERENCE_URI)
                await call(c, "create_entities", entities=[E("Ann")])
                assert await asyncio.wait_for(got.get(), 10) == REFERENCE_URI
                await c.unsubscribe_resource(REFERENCE_URI)
                await call(c, "create_entities", entities=[E("Bob")])
                await c.subscribe_resource(GRAPH_URI)
                await call(c, "create_entities", entities=[E("Cleo")])
                seen = [await asyncio.wait_for(got.get(), 10)]
                while seen[-1] != GRAPH_URI:
                    seen.append(await asyncio.wait_for(got.get(), 10))
                assert REFERENCE_URI not in seen  # unsubscribed
    run(go())


def test_concurrent_calls_never_lose_an_update(db):
    async def go():
        async with Client(build_server(db)) as c:
            await call(c, "create_entities", entities=[E("Ann")])
            await asyncio.gather(*[call(c, "add_observations", observations=[{"entityName": "Ann",
                                                                              "contents": [f"o{i}"]}])
                                   for i in range(12)])
            obs = (await call(c, "open_nodes", names=["Ann"]))["entities"][0]["observations"]
            assert sorted(obs) == sorted(f"o{i}" for i in range(12))
    run(go())


# --- transports and crashes -------------------------------------------------------------------------------

def _launch_args(tmp_path, *args):
    pidfile = str(tmp_path / "server.pid")
    return ["-c", LAUNCH.format(root=ROOT, pidfile=pidfile), *args], pidfile


def test_stdio_through_a_subprocess(tmp_path, capsys):
    args, _ = _launch_args(tmp_path, "mcp", str(tmp_path / "db"), "--run", "agent-1")

    async def go():
        async with Client(StdioServerParameters(command=sys.executable, args=args, cwd=ROOT)) as c:
            assert (await call(c, "create_entities", entities=[E("Ann", "person", ["x"])]))["entities"]
            assert (await call(c, "read_graph"))["entities"] == [E("Ann", "person", ["x"])]
    run(go())
    with Database.open(str(tmp_path / "db"), read_only=True) as db:  # the server closed the database
        (info,) = db.runs.list(name="agent-1")
        assert [n.id for n in db.graph.nodes(info.id)] == ["Ann"]
    from inmem.cli import main  # the memory is a run: the command line's history shows the call's commit
    assert main(["history", str(tmp_path / "db"), info.id, "--json"]) == 0
    assert '"add_node"' in capsys.readouterr().out


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_through_a_real_port(tmp_path):
    port = _free_port()
    args, _ = _launch_args(tmp_path, "mcp", str(tmp_path / "db"), "--http", "--port", str(port))
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:  # wait for the port, watching the process's stderr meanwhile
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
                select.select([proc.stderr], [], [], 0.05)

        async def go():
            async with Client(f"http://127.0.0.1:{port}/mcp") as a, Client(f"http://127.0.0.1:{port}/mcp") as b:
                await call(a, "create_entities", entities=[E("Ann")])
                await asyncio.gather(*[call(cl, "add_observations",
                                            observations=[{"entityName": "Ann", "contents": [f"{i}"]}])
                                       for i, cl in enumerate([a, b] * 4)])
                obs = (await call(b, "read_graph"))["entities"][0]["observations"]
                assert sorted(obs) == sorted(str(i) for i in range(8))
        run(go())
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_sigkill_during_a_burst_keeps_every_acknowledged_call(tmp_path):
    args, pidfile = _launch_args(tmp_path, "mcp", str(tmp_path / "db"))
    acked: list[str] = []

    async def go():
        try:
            async with Client(StdioServerParameters(command=sys.executable, args=args, cwd=ROOT)) as c:
                pid = int(open(pidfile).read())
                for i in range(200):
                    if i == 25:
                        pending = asyncio.ensure_future(call(c, "create_entities", entities=[E(f"e{i}")]))
                        os.kill(pid, signal.SIGKILL)  # mid-burst, with a call in flight
                        try:
                            await asyncio.wait_for(pending, 10)
                            acked.append(f"e{i}")
                        except Exception:
                            pass
                        break
                    await call(c, "create_entities", entities=[E(f"e{i}", "t", [f"o{i}"])])
                    acked.append(f"e{i}")
        except Exception:  # the connection died with the server
            pass
    run(go())
    assert len(acked) >= 25
    with Database.open(str(tmp_path / "db")) as db:
        names = {e["name"] for e in KnowledgeGraph(db).read_graph()["entities"]}
        assert set(acked) <= names
        assert db.graph.check(KnowledgeGraph(db).run)["problems"] == []


# --- side by side with the real reference server (opt-in: needs node and the npm package) ------------

REFERENCE_JS = os.environ.get("INMEM_MCP_REFERENCE", "")  # path of @modelcontextprotocol/server-memory/dist/index.js


@pytest.mark.skipif(not (REFERENCE_JS and os.path.exists(REFERENCE_JS)),
                    reason="set INMEM_MCP_REFERENCE to the reference server's dist/index.js (npm install "
                           "@modelcontextprotocol/server-memory) to run the side-by-side session")
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_side_by_side_with_the_reference_server(tmp_path, seed):
    ref = StdioServerParameters(command="node", args=[REFERENCE_JS],
                                env={**os.environ, "MEMORY_FILE_PATH": str(tmp_path / "memory.jsonl")})
    args, _ = _launch_args(tmp_path, "mcp", str(tmp_path / "db"))
    ours = StdioServerParameters(command=sys.executable, args=args, cwd=ROOT)

    async def go():
        async with Client(ref) as a, Client(ours) as b:
            tools_a = {t.name: t for t in (await a.list_tools()).tools}
            tools_b = {t.name: t for t in (await b.list_tools()).tools}
            assert set(tools_a) <= set(tools_b)
            for name, t in tools_a.items():
                assert sorted(t.input_schema.get("required", [])) == sorted(tools_b[name].input_schema.get("required", []))
                assert t.annotations == tools_b[name].annotations, name
            for op, args in script(seed, 80):
                ra, rb = await a.call_tool(op, args), await b.call_tool(op, args)
                assert ra.is_error == rb.is_error, (op, args, ra, rb)
                if ra.is_error:
                    assert ra.content[0].text.split(": ")[-1] in rb.content[0].text
                    continue
                assert ra.structured_content == rb.structured_content, (op, args)
                assert ra.content[0].text == rb.content[0].text, (op, args)  # byte for byte
            assert (await a.call_tool("read_graph", {})).structured_content == \
                (await b.call_tool("read_graph", {})).structured_content
    run(go())


# --- the command line ------------------------------------------------------------------------------------

def test_cli_help_errors_and_embedder_option(tmp_path, capsys):
    from inmem.cli import main
    from inmem.cli.mcpserve import load_embedder

    assert main(["mcp", "--help"]) == 0
    out = capsys.readouterr().out
    assert '"args": ["mcp", "/path/to/dir"]' in out and "--embedder" in out and "search_memory" in out
    assert load_embedder(None) is None
    assert isinstance(load_embedder("hashing"), HashingEmbedder)
    assert isinstance(load_embedder("inmem.embeddings:HashingEmbedder"), HashingEmbedder)  # a class: instantiated
    for bad in ("nonexistent_module_xyz:f", "inmem.embeddings:Nope", "justaname"):
        assert main(["mcp", str(tmp_path / "x"), "--embedder", bad]) == 1
        assert "embedder" in capsys.readouterr().err
    with Database.open(str(tmp_path / "db")):  # another handle holds the directory: one line, exit 1
        assert main(["mcp", str(tmp_path / "db")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("inmem: ") and err.count("\n") == 1
