"""Model-based test: the database against a plain dict model, driven by a hypothesis state machine.

Rules: begin_run, end_run, put, delete, get, scan, a read of an unknown run,
and reopen (close, then ``Database.open`` again on the same directory with a
durability mode drawn from the three). After every step the store's internal
invariant checker runs. Each example gets a fresh directory, removed in
teardown after the database is closed.

Keys come from a small alphabet with non-ASCII text, so prefix scans and
Unicode code-point order (UTF-8 byte order, not UTF-16 order) are exercised.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, precondition, rule

from inmem import Database
from inmem import testing
from inmem.errors import RunClosed, RunNotFound

MODES = ("strict", "batched", "off")

KEYS = st.sampled_from(
    [
        "",
        "a",
        "ab",
        "abc",
        "a/b",
        "a/c",
        "b",
        "é",
        "éa",
        "日本",
        "日本語",
        "\x00",
        "\x7f",
        "\x80",
        "\uffef",
        "\U0001f600",
        "\U0001f600x",
    ]
)
PREFIXES = st.sampled_from(["", "a", "a/", "ab", "b", "é", "日", "日本", "\x00", "\uffef", "\U0001f600", "zz"])

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)

ABSENT = object()


class DatabaseMachine(RuleBasedStateMachine):
    runs = Bundle("runs")

    def __init__(self) -> None:
        super().__init__()
        self.dir: str | None = None
        self.db: Database | None = None
        self.kv: dict[str, dict[str, Any]] = {}  # run -> key -> value
        self.active: dict[str, bool] = {}  # run -> still writable

    @initialize(target=runs, mode=st.sampled_from(MODES))
    def open_db(self, mode: str) -> str:
        self.dir = tempfile.mkdtemp(prefix="inmem-model-")
        self.db = Database.open(self.dir, durability=mode)
        return self.begin_run("first")  # so rules that need a run are enabled from the first step

    def teardown(self) -> None:
        try:
            if self.db is not None:
                self.db.close()
        finally:
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)

    # --- runs -----------------------------------------------------------------------

    @rule(target=runs, name=st.none() | st.text(max_size=8))
    def begin_run(self, name: str | None) -> str:
        run = self.db.begin_run(name)
        assert run not in self.kv
        self.kv[run] = {}
        self.active[run] = True
        return run

    @rule(run=runs, status=st.sampled_from(["completed", "failed", "cancelled"]))
    def end_run(self, run: str, status: str) -> None:
        if self.active[run]:
            self.db.end_run(run, status=status)
            self.active[run] = False
        else:
            with pytest.raises(RunClosed):
                self.db.end_run(run, status=status)

    # --- KV writes ---------------------------------------------------------------------

    @rule(run=runs, key=KEYS, value=VALUES)
    def put(self, run: str, key: str, value: Any) -> None:
        if self.active[run]:
            assert self.db.kv.put(run, key, value) is None
            self.kv[run][key] = value
        else:
            with pytest.raises(RunClosed):
                self.db.kv.put(run, key, value)

    @rule(run=runs, key=KEYS)
    def delete(self, run: str, key: str) -> None:
        if self.active[run]:
            existed = self.db.kv.delete(run, key)
            assert existed == (key in self.kv[run]), (run, key, existed)
            self.kv[run].pop(key, None)
        else:
            with pytest.raises(RunClosed):
                self.db.kv.delete(run, key)

    # --- KV reads ------------------------------------------------------------------------

    @rule(run=runs, key=KEYS)
    def get(self, run: str, key: str) -> None:
        got = self.db.kv.get(run, key, default=ABSENT)
        want = self.kv[run].get(key, ABSENT)
        assert got == want, (run, key, got, want)
        if want is ABSENT:
            assert self.db.kv.get(run, key) is None

    @rule(run=runs, prefix=PREFIXES)
    def scan(self, run: str, prefix: str) -> None:
        got = list(self.db.kv.scan(run, prefix=prefix))
        items = self.kv[run]
        want = [(k, items[k]) for k in sorted(items) if k.startswith(prefix)]  # str order = code-point order
        assert [k for k, _ in got] == [k for k, _ in want], (run, prefix, got, want)
        assert got == want, (run, prefix, got, want)

    @rule(key=KEYS)
    def unknown_run(self, key: str) -> None:
        missing = "01890000-0000-7000-8000-000000000000"
        with pytest.raises(RunNotFound):
            self.db.kv.get(missing, key)
        with pytest.raises(RunNotFound):
            self.db.kv.put(missing, key, 1)

    # --- lifecycle -------------------------------------------------------------------------

    @rule(mode=st.sampled_from(MODES))
    def reopen(self, mode: str) -> None:
        self.db.close()
        self.db = None  # if open fails, teardown must not close the old handle again
        self.db = Database.open(self.dir, durability=mode)
        stats = self.db.stats()
        assert stats["recovery"]["torn_tail"] is None, stats["recovery"]
        assert stats["recovery"]["salvaged"] is None, stats["recovery"]
        # everything survived the close/open: compare the whole model
        for run, items in self.kv.items():
            got = list(self.db.kv.scan(run))
            assert got == [(k, items[k]) for k in sorted(items)], (run, got, items)

    @precondition(lambda self: self.db is not None)
    @invariant()
    def store_invariants(self) -> None:
        testing.check_store(self.db)
        stats = self.db.stats()
        assert stats["runs"] == len(self.kv)
        ended = sum(1 for a in self.active.values() if not a)
        assert stats["runs_by_status"].get("active", 0) == len(self.kv) - ended
        # run records + KV entries
        assert stats["keys"] == len(self.kv) + sum(len(d) for d in self.kv.values())


DatabaseMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestDatabaseModel = DatabaseMachine.TestCase
