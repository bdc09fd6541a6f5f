"""pytest set-up for the benchmarks in ``benches/`` (not collected by ``pytest tests``).

* Makes ``import inmem`` load this checkout's ``engine/``, installed or not
  (:func:`tests.checkout.use_checkout`).
* Offers the ``results`` fixture: each bench appends one row (group, name,
  median ops/s, what one op is) and :func:`pytest_terminal_summary` prints
  them after pytest-benchmark's own table, with each peer's ratio to inmem in
  the same group. pytest-benchmark's ``OPS`` column is ``1 / mean``; this
  summary uses ``1 / median``, which is what the README quotes.
"""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from tests.checkout import use_checkout  # noqa: E402

use_checkout()
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # benches/workloads.py, shared with compare.py
    sys.path.insert(0, HERE)

_ROWS: list[dict] = []


@pytest.fixture
def results():
    """The list the summary table is printed from; benches append dicts to it."""
    return _ROWS


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record which engine code the figures belong to in --benchmark-json / --benchmark-autosave."""
    from workloads import engine_fingerprint

    machine_info["inmem_engine"] = engine_fingerprint()


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _ROWS:
        return
    from workloads import engine_fingerprint

    tr = terminalreporter
    tr.section("inmem benches: medians (ops/s = 1 / median per-op time)")
    tr.write_line(f"engine: {engine_fingerprint()}")
    inmem_by_group = {r["group"]: r["ops_per_s"] for r in _ROWS if r["engine"] == "inmem"}
    tr.write_line(f"{'group':<14} {'engine':<24} {'median ops/s':>13} {'inmem/peer':>10}  one op")
    for r in sorted(_ROWS, key=lambda r: (r["group"], r["engine"] != "inmem", r["engine"])):
        base = inmem_by_group.get(r["group"])
        ratio = f"{base / r['ops_per_s']:.2f}x" if base and r["engine"] != "inmem" else ""
        ops = r["ops_per_s"]
        shown = f"{ops:,.0f}" if ops >= 100 else f"{ops:.3f}"
        tr.write_line(f"{r['group']:<14} {r['label']:<24} {shown:>13} {ratio:>10}  {r['op']}")
