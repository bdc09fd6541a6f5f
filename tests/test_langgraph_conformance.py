"""The official LangGraph checkpointer conformance suite against InmemSaver.

``langgraph-checkpoint-conformance`` detects which capabilities a saver
implements (by the async methods it overrides) and runs each capability's
tests on a fresh saver. InmemSaver must pass every base capability (put,
put_writes, get_tuple, list, delete_thread) and every extended one
(delete_for_runs, copy_thread, prune): conformance level FULL, 8 of 8.
Each factory call opens a fresh database in its own temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import tempfile

import pytest

pytest.importorskip("langgraph.checkpoint.conformance")

from langgraph.checkpoint.conformance import checkpointer_test, validate  # noqa: E402
from langgraph.checkpoint.conformance.capabilities import (  # noqa: E402
    BASE_CAPABILITIES,
    EXTENDED_CAPABILITIES,
)
from langgraph.checkpoint.conformance.report import ProgressCallbacks  # noqa: E402

from inmem.integrations.langgraph import InmemSaver  # noqa: E402


@checkpointer_test(name="InmemSaver")
async def inmem_saver():
    path = tempfile.mkdtemp(prefix="inmem-conformance-")
    saver = InmemSaver.from_path(path)
    try:
        yield saver
    finally:
        saver.close()
        shutil.rmtree(path, ignore_errors=True)


def test_conformance_full():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # per-test lines, printed only if something fails
        report = asyncio.run(validate(inmem_saver, progress=ProgressCallbacks.verbose()))
        report.print_report()
    text = out.getvalue()
    assert report.passed_all_base(), text
    for cap in EXTENDED_CAPABILITIES:
        result = report.results[cap.value]
        assert result.detected, f"{cap.value} not detected\n{text}"
        assert result.passed is True and result.tests_failed == 0, text
    assert report.passed_all() and report.conformance_level() == "FULL", text
    ran = {name: r.tests_passed for name, r in report.results.items()}
    assert set(ran) == {c.value for c in BASE_CAPABILITIES | EXTENDED_CAPABILITIES}
    assert all(n > 0 for n in ran.values()), ran
    print(text)
