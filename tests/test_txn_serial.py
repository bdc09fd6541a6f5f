"""Serializability of optimistic transactions, checked by serial replay.

Hypothesis draws 2-4 transactions over a few keys (``a``, ``b``, ``c``,
``p/1``, ``p/2``) in one or two runs, each a list of ``get``/``put``/
``delete``/``scan`` operations ending in commit or rollback, plus a few
autocommit operations on ``db.kv``. A random schedule interleaves every step
(begin, each op, commit-or-rollback; an autocommit op is one step) in one
thread, with explicit ``db.transaction()`` objects, recording what each op
observed. Then:

(a) replaying the committed transactions (and the autocommit writes) serially
    in commit-version order against a dict model, every read a committed
    transaction made (get result, delete's bool, scan result) equals what the
    same op returns in the replay at that point;
(b) the final state (``db.kv.scan``) equals the model;
(c) aborted transactions (conflicted or rolled back) leave no trace: no commit
    version is consumed, nothing they wrote is visible;
(d) every read-only transaction's reads equal the serial state as of its
    ``begin_version`` (all commits with version <= it, seeding included);
(e) after close and reopen the state is still the model;
(f) ``retained_versions == 0`` and ``active_transactions == 0`` at the end.

Beyond the brief (same spirit): every transaction, committed or not, reads a
consistent snapshot (its reads equal the serial state at ``begin_version`` plus
its own writes); commit versions are consecutive and ``stats()`` counts the
commits and conflicts that happened; read-only transactions never conflict;
after every step ``db.kv`` shows the serial state at the latest version.

The test does not assert that a conflict was *necessary*: optimistic
validation may abort conservatively.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inmem import Database, TransactionClosed, TransactionConflict

KEYS = ("a", "b", "c", "p/1", "p/2")
PREFIXES = ("", "p/")
MODES = ("off", "batched", "strict")

State = dict[tuple[int, str], int]  # (run index, key) -> value


# --- the model ------------------------------------------------------------------------------


def apply_op(state: State, op: tuple) -> Any:
    """Run one op against the dict model (mutating it); return what the op observes."""
    kind, r = op[0], op[1]
    if kind == "get":
        return state.get((r, op[2]))
    if kind == "put":
        state[(r, op[2])] = op[3]
        return None
    if kind == "delete":
        return state.pop((r, op[2]), None) is not None
    if kind == "scan":
        return sorted((k, v) for (rr, k), v in state.items() if rr == r and k.startswith(op[2]))
    raise AssertionError(op)


def writes_something(state: State, ops: list[tuple]) -> bool:
    """Whether ``ops``, run from ``state``, would buffer a write (a put, or a delete that finds its key)."""
    s = dict(state)
    for op in ops:
        if op[0] == "put":
            return True
        if op[0] == "delete" and apply_op(s, op):
            return True
        apply_op(s, op)
    return False


def run_op(kv: Any, runs: list[str], op: tuple) -> Any:
    """Run one op through ``db.kv`` or ``tx.kv``; return what it observes, shaped like :func:`apply_op`."""
    kind, run = op[0], runs[op[1]]
    if kind == "get":
        return kv.get(run, op[2])
    if kind == "put":
        kv.put(run, op[2], op[3])
        return None
    if kind == "delete":
        return kv.delete(run, op[2])
    if kind == "scan":
        return list(kv.scan(run, op[2]))
    raise AssertionError(op)


def db_state(db: Database, runs: list[str]) -> State:
    return {(r, k): v for r, run in enumerate(runs) for k, v in db.kv.scan(run)}


# --- strategies -----------------------------------------------------------------------------


def ops_strategy(nruns: int) -> st.SearchStrategy[tuple]:
    run = st.integers(0, nruns - 1)
    key = st.sampled_from(KEYS)
    return st.one_of(
        st.tuples(st.just("get"), run, key),
        st.tuples(st.just("put"), run, key, st.integers(0, 4)),
        st.tuples(st.just("delete"), run, key),
        st.tuples(st.just("scan"), run, st.sampled_from(PREFIXES)),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    nruns = draw(st.integers(1, 2))
    op = ops_strategy(nruns)
    seed = draw(st.dictionaries(st.tuples(st.integers(0, nruns - 1), st.sampled_from(KEYS)), st.integers(0, 4)))
    txs = draw(
        st.lists(
            st.tuples(st.lists(op, max_size=6), st.sampled_from(["commit", "commit", "commit", "rollback"])),
            min_size=2,
            max_size=4,
        )
    )
    autos = draw(st.lists(op, max_size=3))
    # The schedule: one entry per step. Actor i < len(txs) is transaction i (begin, ops, end);
    # the others are single autocommit ops.
    steps = [i for i, (ops, _) in enumerate(txs) for _ in range(len(ops) + 2)]
    steps += [len(txs) + j for j in range(len(autos))]
    schedule = draw(st.permutations(steps))
    mode = draw(st.sampled_from(MODES))
    return {"nruns": nruns, "seed": seed, "txs": txs, "autos": autos, "schedule": schedule, "mode": mode}


# --- the test -------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_interleaved_transactions_are_serializable(sc: dict[str, Any]) -> None:
    path = tempfile.mkdtemp(prefix="inmem-serial-")
    db = None
    try:
        db = Database.open(path, durability=sc["mode"])
        runs = [db.begin_run(f"r{i}") for i in range(sc["nruns"])]
        base = db.stats()
        base_version, base_commits, base_conflicts = base["commit_version"], base["commits"], base["conflicts"]

        # Every commit after the runs exist: (version, ops) — replaying ops reproduces its writes.
        commits: list[tuple[int, list[tuple]]] = []
        for (r, k), v in sorted(sc["seed"].items()):
            db.kv.put(runs[r], k, v)
            commits.append((db.stats()["commit_version"], [("put", r, k, v)]))

        def state_at(version: int) -> State:
            s: State = {}
            for v, ops in sorted(commits, key=lambda c: c[0]):
                if v > version:
                    break
                for op in ops:
                    apply_op(s, op)
            return s

        txs = sc["txs"]
        ntx = len(txs)
        handles: list[Any] = [None] * ntx
        progress = [0] * ntx  # steps done per transaction
        observed: list[list[Any]] = [[] for _ in range(ntx)]
        outcome: list[str | None] = [None] * ntx  # "committed" | "conflict" | "rolled back"
        auto_seen: dict[int, Any] = {}
        conflicts_seen = 0

        for actor in sc["schedule"]:
            if actor >= ntx:  # an autocommit op on db.kv
                op = sc["autos"][actor - ntx]
                before = db.stats()["commit_version"]
                expected = apply_op(state_at(before), op)
                got = run_op(db.kv, runs, op)
                assert got == expected, f"autocommit {op} at version {before}"
                auto_seen[actor - ntx] = got
                after = db.stats()["commit_version"]
                if op[0] == "put" or (op[0] == "delete" and got):
                    assert after == before + 1, f"autocommit {op} must commit once"
                    commits.append((after, [op]))
                else:
                    assert after == before, f"{op} committed something"
            else:
                ops, end = txs[actor]
                step = progress[actor]
                progress[actor] += 1
                if step == 0:
                    tx = handles[actor] = db.transaction()
                    assert tx.begin_version == db.stats()["commit_version"]
                elif step <= len(ops):
                    observed[actor].append(run_op(handles[actor].kv, runs, ops[step - 1]))
                else:
                    tx = handles[actor]
                    if end == "rollback":
                        tx.rollback()
                        outcome[actor] = "rolled back"
                    else:
                        before = db.stats()["commit_version"]
                        try:
                            tx.commit()
                        except TransactionConflict:
                            outcome[actor] = "conflict"
                            conflicts_seen += 1
                            assert tx.commit_version is None
                            assert db.stats()["commit_version"] == before, "a conflicted commit consumed a version"
                        else:
                            outcome[actor] = "committed"
                            if tx.commit_version is None:
                                assert db.stats()["commit_version"] == before, "a read-only commit wrote"
                            else:
                                assert tx.commit_version == before + 1 == db.stats()["commit_version"]
                                commits.append((tx.commit_version, ops))
                    assert tx.finished
                    for bad in (tx.commit, tx.rollback, lambda: tx.kv.get(runs[0], "a")):
                        try:
                            bad()
                        except TransactionClosed:
                            pass
                        else:
                            raise AssertionError("a finished transaction accepted a call")
            # After every step db.kv shows the serial state at the latest commit version.
            assert db_state(db, runs) == state_at(db.stats()["commit_version"])

        assert all(o is not None for o in outcome)

        # Commit versions are consecutive: nothing but the recorded commits consumed one (c).
        versions = sorted(v for v, _ in commits)
        final = db.stats()
        assert versions == list(range(base_version + 1, final["commit_version"] + 1))
        assert final["commits"] - base_commits == len(commits)
        assert final["conflicts"] - base_conflicts == conflicts_seen

        # (a) serial replay in commit-version order reproduces every read of every committed tx.
        model: State = {}
        tx_at_version = {handles[i].commit_version: i for i in range(ntx) if outcome[i] == "committed"}
        for version, ops in sorted(commits, key=lambda c: c[0]):
            i = tx_at_version.get(version)
            replayed = [apply_op(model, op) for op in ops]
            if i is not None:
                assert observed[i] == replayed, f"tx {i} (commit version {version}) read differently from the replay"

        # (b) the final state is the model.
        assert db_state(db, runs) == model

        for i in range(ntx):
            ops = txs[i][0]
            tx = handles[i]
            snap = state_at(tx.begin_version)
            from_snapshot = [apply_op(snap, op) for op in ops]
            # Every transaction reads one consistent snapshot plus its own writes.
            assert observed[i] == from_snapshot, f"tx {i} did not read its snapshot at {tx.begin_version}"
            read_only = not writes_something(state_at(tx.begin_version), ops)
            if read_only and txs[i][1] == "commit":
                # (d) read-only: never conflicts, writes nothing, serialised at begin_version.
                assert outcome[i] == "committed", f"read-only tx {i} conflicted"
                assert tx.commit_version is None
            elif outcome[i] == "committed":
                assert tx.commit_version is not None

        # (f) nothing retained once no transaction is open.
        assert final["active_transactions"] == 0
        assert final["retained_versions"] == 0

        # (e) close and reopen: still the model.
        db.close()
        db = Database.open(path, durability=sc["mode"])
        assert db_state(db, runs) == model
        assert db.stats()["commit_version"] == final["commit_version"]
    finally:
        if db is not None:
            db.close()
        shutil.rmtree(path, ignore_errors=True)
