"""The memory graph survives crashes: every acknowledged write is there after reopen, and adjacency is consistent.

Two attacks:

* **SIGKILL during concurrent writes.** A child process (strict durability:
  a call that returned is on disk) runs 4 threads. Each thread ``t`` builds a
  chain of nodes ``t-i`` (an edge ``t-i -next-> t-(i-1)``), links the shared
  ``hub`` node to some of them and re-weights the hub's metadata (a hot key
  every thread writes), in autocommit calls (one commit each) on even ``i``
  and in a transaction (node, its chain edge and the hub's edge, all or
  nothing, :meth:`Database.transact` retrying on conflict) on odd ``i``;
  every fifth step deletes an earlier node of the chain, cascading to its
  edges in the same commit. It prints an ack after each call; the parent
  SIGKILLs it after a seed-dependent number of acks. After reopen: every
  acknowledged node, edge, update and deletion is there; a transaction's
  node never appears without its edges; ``db.graph.check`` and ``inmem
  verify`` (:func:`inmem.verify.verify_directory` and the CLI) find nothing.
* **Kill at each step of the WAL.** One process writes a scripted graph
  workload (strict); its WAL is then cut at every frame boundary and inside
  every frame: the reopened graph equals the graph after the last whole
  commit below the cut (a cut frame is a torn tail: that commit is gone,
  whole), and adjacency checks clean.
"""

from __future__ import annotations

import os
import shutil

import pytest
from click.testing import CliRunner

from inmem import Database
from inmem.cli import cli
from inmem.verify import verify_directory
from inmem.wal.format import SEGMENT_HEADER_SIZE, check_frame
from tools.simworkload import graph_of

from .conftest import acks_until_sigkill

THREADS = 4
PER_THREAD = 400
DELETE_EVERY = 5  # step i (i % 5 == 0, i >= 5) deletes node i - 3 of the chain

CHILD = r'''
import sys, threading
from tests.checkout import use_checkout
use_checkout()  # the parent's engine (this checkout's), whatever inmem is installed
from inmem import Database

db = Database.open(sys.argv[1], durability="strict")
(run,) = [r.id for r in db.runs.list(name="graph")]
g = db.graph
lock = threading.Lock()

def ack(*words):
    with lock:
        sys.stdout.write("ack " + " ".join(str(w) for w in words) + "\n")
        sys.stdout.flush()

def worker(t):
    for i in range(%(per)d):
        me, prev = "%%d-%%d" %% (t, i), "%%d-%%d" %% (t, i - 1)
        text = "memory %%d of thread %%d: the agent saw a tool call and wrote it down" %% (i, t)
        if i %% 2 == 0:
            g.add_node(run, text, kind="fact", metadata={"t": t, "i": i}, id=me)
            ack("node", me)
            if i:
                g.add_edge(run, me, "next", prev, weight=float(i))
                ack("edge", me, "next", prev)
            g.update_node(run, me, metadata={"seen": i})
            ack("update", me, i)
            g.update_node(run, "hub", metadata={"last-%%d" %% t: i})  # a hot key: every thread writes it
        else:
            def step(tx):
                tx.graph.add_node(run, text, kind="episode", id=me)
                tx.graph.add_edge(run, me, "next", prev)
                tx.graph.add_edge(run, "hub", "has", me, weight=0.5)
            db.transact(step, retries=10000)
            ack("txnode", me)
        if i >= %(every)d and i %% %(every)d == 0:
            gone = "%%d-%%d" %% (t, i - 3)
            assert g.delete_node(run, gone)  # cascades to its edges, in the same commit
            ack("delete", gone)

threads = [threading.Thread(target=worker, args=(t,)) for t in range(%(threads)d)]
for t in threads:
    t.start()
for t in threads:
    t.join()
sys.stdout.write("done\n")
sys.stdout.flush()
sys.stdin.read()
''' % {"per": PER_THREAD, "threads": THREADS, "every": DELETE_EVERY}


def _doomed(node: str) -> bool:
    """Whether the child deletes ``node`` later (``i + 3`` is a deleting step)."""
    i = int(node.split("-")[1])
    return (i + 3) >= DELETE_EVERY and (i + 3) % DELETE_EVERY == 0


@pytest.mark.parametrize("seed", range(2))
def test_acknowledged_graph_writes_survive_sigkill(dbdir, seed):
    with Database.open(dbdir) as db:
        run = db.begin_run("graph")
        db.graph.add_node(run, "the hub every thread links to", id="hub")
    kill_after = 200 + 500 * seed
    acks = [[w.decode() for w in a] for a in acks_until_sigkill(CHILD, dbdir, kill_after)]
    deleted = {a[1] for a in acks if a[0] == "delete"}
    with Database.open(dbdir) as db:
        g = db.graph
        report = g.check(run)
        assert report["problems"] == []
        nodes = {n.id: n for n in g.nodes(run)}
        out = {(e.source, e.relation, e.target) for n in nodes for e in g.edges(run, n, direction="out")}
        for a in acks:
            what, node = a[0], a[1]
            if what == "delete":
                assert node not in nodes, f"acknowledged delete of {node} lost"
                assert not [e for e in out if node in (e[0], e[2])], f"{node}'s edges outlived it"
                continue
            if _doomed(node) and node not in nodes:
                continue  # its delete may have committed just before the kill, unacknowledged
            assert node in nodes, f"acknowledged {what} of {node} lost"
            if what == "edge" and a[3] not in deleted and not (_doomed(a[3]) and a[3] not in nodes):
                assert (node, "next", a[3]) in out, f"acknowledged edge {a[1:]} lost"
            if what == "update":
                assert nodes[node].metadata["seen"] >= int(a[2])
        # a transaction's node never appears without the edges it committed with (all or nothing)
        for n in nodes.values():
            if n.kind == "episode":
                t, i = n.id.split("-")
                prev = f"{t}-{int(i) - 1}"
                assert ("hub", "has", n.id) in out
                assert (n.id, "next", prev) in out or prev not in nodes
        assert report["nodes"] == len(nodes) and report["edges"] == len(out)
    rep = verify_directory(dbdir)
    assert rep["ok"] and rep["problems"] == [], rep["problems"][:3]
    assert rep["graph_nodes"] == len(nodes) and rep["graph_edges"] == len(out)
    if seed == 0:  # the command line says the same
        res = CliRunner().invoke(cli, ["verify", dbdir])
        assert res.exit_code == 0, res.output


def _script(db: Database, run: str) -> list:
    """A graph workload: each item is one call making one commit (autocommit and transactions, cascading deletes)."""
    g = db.graph
    steps = [lambda i=i: g.add_node(run, f"memory {i}: a sentence an agent might keep about its work today",
                                    id=f"n{i}", kind="fact" if i % 2 else None, metadata={"i": i}) for i in range(8)]
    steps += [lambda i=i: g.add_edge(run, f"n{i}", "after", f"n{i - 1}", weight=i / 2) for i in range(1, 8)]

    def tx_add():
        with db.transaction() as tx:
            tx.graph.add_node(run, "a node and its edges in one commit", id="tx")
            tx.graph.add_edge(run, "tx", "about", "n3")
            tx.graph.add_edge(run, "n5", "about", "tx")

    def tx_replace():
        with db.transaction() as tx:
            tx.graph.delete_node(run, "tx")
            tx.graph.add_node(run, "after the cascade", id="n3")
            tx.graph.add_edge(run, "n3", "after", "n2")

    return [*steps, lambda: g.add_edge(run, "n7", "about", "n0"), tx_add,
            lambda: g.update_node(run, "n2", "memory 2, rewritten", metadata={"edited": True}),
            lambda: g.add_edge(run, "n1", "after", "n0", weight=9.0),  # an existing edge: re-weighted
            lambda: g.delete_node(run, "n3"),  # cascades: n3->n2, n4->n3, tx->n3
            lambda: g.remove_edge(run, "n7", "about", "n0"), tx_replace]


def test_graph_cut_at_every_wal_frame_boundary_and_inside_each_frame(tmp_path):
    src = str(tmp_path / "src")
    with Database.open(src, durability="strict", snapshot_every_bytes=None) as db:
        run = db.begin_run("g")
        (seg,) = [n for n in os.listdir(src) if n.startswith("wal-")]
        wal = os.path.join(src, seg)
        states = [(os.path.getsize(wal), graph_of(db, run))]  # (WAL bytes after a commit, the graph then)
        for step in _script(db, run):
            step()
            states.append((os.path.getsize(wal), graph_of(db, run)))
    buf = open(wal, "rb").read()
    ends, pos = [], SEGMENT_HEADER_SIZE
    while pos < len(buf):
        pos = check_frame(buf, pos)[3]
        ends.append(pos)
    assert [s for s, _ in states] == ends[-len(states):]  # one frame per step
    cuts = sorted({s for s, _ in states} | {(a + b) // 2 for (a, _), (b, _) in zip(states, states[1:])}
                  | {states[-1][0] - 1})
    for cut in cuts:
        d = str(tmp_path / f"cut-{cut}")
        shutil.copytree(src, d, ignore=shutil.ignore_patterns("LOCK", "hist-*"))
        os.truncate(os.path.join(d, seg), cut)
        want = max((s for s in states if s[0] <= cut), key=lambda s: s[0])[1]
        with Database.open(d) as db:
            assert graph_of(db, run) == want, f"cut at byte {cut}"
            assert db.graph.check(run)["problems"] == []
        assert verify_directory(d)["problems"] == []
        shutil.rmtree(d)
