"""Multi-agent coordination: agents claim tasks on a shared board, exactly once, even across SIGKILL.

The workload (SPEC.md, "Atomic steps"): a *board* run holds one state per
task (``task/<i>``), declared as a machine ``open -> claimed:<worker run>``.
Each agent is a thread with its own run. To claim task ``i`` it runs one
transaction (``db.transact``) across two runs: ``state.cas`` on the board
(``"open"`` -> ``"claimed:<its run>"``), and, only if that won, a
``claimed`` event and a KV scratchpad entry in its own run. Checks:

* every task is claimed exactly once (state version 2: 1 at ``define``, 2 at the claim);
* every claim has exactly one ``claimed`` event in the claimer's run, and no
  run has an event for a task it did not get (the transaction is all or nothing);
* every event log's hash chain verifies.

The SIGKILL variant runs the workload in a child process (strict durability,
an ack line printed after each successful ``transact``), kills it at a
seeded point, reopens, and checks the same invariants plus "every acked claim
is present"; a second child continues on the same directory and is killed
too; finally the parent finishes the remaining tasks and re-checks exactly-once.

Replay one seed: ``pytest tests/test_coordination.py -k "sigkill and 3"``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading

import pytest

from inmem import Database, InvalidTransition
from tests.conftest import run_interleaved

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --- code shared by parent and child ------------------------------------------------------------

CLAIM_CODE = r'''
def task_name(i):
    return "task/%04d" % i


def claim(db, board, run, i):
    """Claim task ``i`` for ``run`` in one transaction across the board and ``run``; return whether it won."""
    def fn(tx):
        if not tx.state.cas(board, task_name(i), "open", "claimed:" + run):
            return False
        tx.events.append(run, "claimed", {"task": i})
        tx.kv.put(run, "scratch/%04d" % i, "working")
        return True
    return db.transact(fn, retries=1000)


def agent(db, board, run, order, won):
    """Try every task in ``order``; call ``won(i)`` after each successful (committed) claim."""
    for i in order:
        if claim(db, board, run, i):
            won(i)
'''

exec(CLAIM_CODE)  # defines task_name, claim and agent here as well

CHILD_CODE = r'''
import random, sys, threading
sys.path.insert(0, sys.argv[3])
sys.setswitchinterval(1e-5)
from inmem import Database
''' + CLAIM_CODE + r'''
def main():
    path, seed = sys.argv[1], int(sys.argv[2])
    db = Database.open(path, durability="strict")
    (board,) = [i.id for i in db.runs.list(name="board")]
    workers = [i.id for i in db.runs.list(name="worker")]
    n = len(db.state.names(board))
    out = sys.stdout
    lock = threading.Lock()

    def acker(w):
        def won(i):
            with lock:
                out.write("ack %d %d\n" % (i, w))
                out.flush()
        return won

    threads = []
    for w, run in enumerate(workers):
        order = list(range(n))
        random.Random(seed * 100 + w).shuffle(order)
        threads.append(threading.Thread(target=agent, args=(db, board, run, order, acker(w))))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with lock:
        out.write("done\n")
        out.flush()
    sys.stdin.read()  # stay alive (holding the database) until killed


main()
'''


# --- setup and the invariant check ------------------------------------------------------------------


def make_board(db: Database, n_tasks: int, n_workers: int) -> tuple[str, list[str]]:
    board = db.begin_run("board", tags=["coordination"])
    workers = [db.begin_run("worker", parent=board, metadata={"index": w}) for w in range(n_workers)]
    machine = {"open": [f"claimed:{w}" for w in workers]}
    with db.transaction() as tx:
        for i in range(n_tasks):
            tx.state.define(board, task_name(i), transitions=machine, initial="open")
    return board, workers


def check_board(db: Database, board: str, workers: list[str], n_tasks: int, *, where: str,
                acked: dict[int, str] | None = None, complete: bool = False) -> dict[int, str]:
    """Assert the invariants; return task -> claimer for the claimed tasks."""
    claimed: dict[int, str] = {}
    assert db.state.names(board) == [task_name(i) for i in range(n_tasks)], where
    for i in range(n_tasks):
        s = db.state.get(board, task_name(i))
        if s.value == "open":
            assert s.version == 1, f"{where}: task {i} is open at version {s.version}"
            continue
        assert s.value.startswith("claimed:"), f"{where}: task {i} is {s.value!r}"
        run = s.value[len("claimed:"):]
        assert run in workers, f"{where}: task {i} claimed by unknown {run}"
        assert s.version == 2, f"{where}: task {i} changed {s.version - 1} times (claimed more than once?)"
        claimed[i] = run
    assert db.events.verify(board) == 0, where
    seen: dict[int, str] = {}
    for run in workers:
        events = db.events.read(run)
        assert db.events.verify(run) == len(events), f"{where}: chain of {run}"
        assert [e.seq for e in events] == list(range(len(events))), where
        assert all(e.type == "claimed" for e in events), where
        tasks = [e.payload["task"] for e in events]
        assert len(set(tasks)) == len(tasks), f"{where}: {run} has a task twice in its log"
        for t in tasks:
            assert t not in seen, f"{where}: task {t} has events in {seen[t]} and {run}"
            seen[t] = run
        mine = {i for i, r in claimed.items() if r == run}
        assert set(tasks) == mine, (
            f"{where}: run {run}: events without a claim {sorted(set(tasks) - mine)}, "
            f"claims without an event {sorted(mine - set(tasks))}"
        )
        scratch = {int(k.split("/")[1]) for k, v in db.kv.scan(run, "scratch/") if v == "working"}
        assert scratch == mine, f"{where}: run {run}: KV scratchpad disagrees with the claims"
        assert db.runs.get(run).counts == {"kv": len(mine), "events": len(mine), "state": 0, "traces": 0}
    assert seen == claimed, where
    for i, run in (acked or {}).items():
        assert claimed.get(i) == run, f"{where}: acknowledged claim of task {i} by {run} is lost ({claimed.get(i)})"
    if complete:
        assert len(claimed) == n_tasks, f"{where}: {n_tasks - len(claimed)} tasks were never claimed"
    return claimed


def run_agents(db: Database, board: str, workers: list[str], n_tasks: int, seed: int,
               only: set[int] | None = None) -> dict[str, list[int]]:
    """One thread per worker run, each trying every (remaining) task; return what each thread won."""
    won: dict[str, list[int]] = {w: [] for w in workers}
    errors: list[BaseException] = []
    tasks = [i for i in range(n_tasks) if only is None or i in only]

    def body(k: int, run: str) -> None:
        order = list(tasks)
        if k % 2:  # half the agents sweep in order (racing each other on every task), half shuffled
            random.Random(seed * 1000 + k).shuffle(order)
        try:
            agent(db, board, run, order, won[run].append)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(k, w)) for k, w in enumerate(workers)]
    run_interleaved(threads)
    assert not errors, errors
    return won


# --- in-process: 8 agents, 1,000 tasks ---------------------------------------------------------------


N_TASKS = 1000
N_AGENTS = 8


def test_agents_claim_every_task_exactly_once(dbdir):
    with Database.open(dbdir, durability="batched") as db:
        board, workers = make_board(db, N_TASKS, N_AGENTS)
        won = run_agents(db, board, workers, N_TASKS, seed=1)
        where = "in-process"
        claimed = check_board(db, board, workers, N_TASKS, where=where, complete=True)
        # what each thread saw as won is exactly what the database says it owns
        all_won = [i for w in workers for i in won[w]]
        assert sorted(all_won) == list(range(N_TASKS)), "a task was won twice or never"
        for w in workers:
            assert sorted(won[w]) == sorted(i for i, r in claimed.items() if r == w)
            assert [e.payload["task"] for e in db.events.read(w)] == won[w]  # log order = claim order
        # nothing is left to win, by cas or by a direct move (the machine allows no second claim)
        assert not any(claim(db, board, w, i) for w in workers for i in range(0, N_TASKS, 97))
        with pytest.raises(InvalidTransition):
            db.state.set(board, task_name(0), "claimed:" + workers[0])
        assert db.state.get(board, task_name(0)).version == 2
    with Database.open(dbdir) as db:  # and it all survives a reopen
        assert check_board(db, board, workers, N_TASKS, where="after reopen", complete=True) == claimed


# --- SIGKILL ----------------------------------------------------------------------------------------


KILL_TASKS = 1000
KILL_AGENTS = 8
SEEDS = list(range(10))


def run_child_and_kill(path: str, seed: int, kill_after: int) -> tuple[list[tuple[int, int]], bool, str]:
    """Start the agents' child; SIGKILL it once ``kill_after`` acks arrived (or it says done).

    Returns (acks as (task, worker index), whether it finished, stderr).
    """
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-c", CHILD_CODE, path, str(seed), ROOT],
                                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.PIPE)
        raw: list[bytes] = []
        acks = 0
        finished = False
        try:
            while acks < kill_after:
                line = proc.stdout.readline()
                if not line:  # died on its own: reported below
                    break
                raw.append(line)
                if line == b"done\n":
                    finished = True
                    break
                acks += 1
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            raw.append(proc.stdout.read())  # lines still in the pipe were acknowledged as well
            proc.stdout.close()
            proc.stdin.close()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    assert rc == -signal.SIGKILL, f"seed={seed}: the child exited with {rc} before the kill:\n{stderr}"
    lines = b"".join(raw).split(b"\n")[:-1]  # the last piece is empty or a line cut by the kill
    out = []
    for line in lines:
        if line == b"done":
            finished = True
            continue
        tag, task, worker = line.split()
        assert tag == b"ack", line
        out.append((int(task), int(worker)))
    return out, finished, stderr


@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_during_claims_keeps_exactly_once(tmp_path, seed):
    rng = random.Random(seed)
    path = str(tmp_path / "db")
    with Database.open(path, durability="strict") as db:
        board, workers = make_board(db, KILL_TASKS, KILL_AGENTS)
    acked: dict[int, str] = {}
    for round_ in range(2):
        kill_after = rng.choice([1, 2, rng.randrange(3, 60), rng.randrange(60, 250)])
        where = f"seed={seed} round={round_} kill_after={kill_after}"
        acks, finished, _ = run_child_and_kill(path, seed * 10 + round_, kill_after)
        for task, w in acks:
            assert task not in acked, f"{where}: task {task} acknowledged twice ({acked[task]}, {workers[w]})"
            acked[task] = workers[w]
        with Database.open(path, durability="strict") as db:
            check_board(db, board, workers, KILL_TASKS, where=where, acked=acked, complete=finished)
    # the parent finishes what the children left and re-checks exactly-once
    with Database.open(path, durability="strict") as db:
        claimed = check_board(db, board, workers, KILL_TASKS, where=f"seed={seed} before finishing", acked=acked)
        rest = set(range(KILL_TASKS)) - set(claimed)
        won = run_agents(db, board, workers, KILL_TASKS, seed, only=rest)
        assert sorted(i for w in workers for i in won[w]) == sorted(rest), f"seed={seed}: finishing"
        final = check_board(db, board, workers, KILL_TASKS, where=f"seed={seed} finished", acked=acked,
                            complete=True)
        assert {i: r for i, r in final.items() if i in claimed} == claimed
    with Database.open(path) as db:
        assert check_board(db, board, workers, KILL_TASKS, where=f"seed={seed} reopened", complete=True) == final
