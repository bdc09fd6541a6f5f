"""The checks crashsim runs on a crashed directory: reopen, prefix of the workload, chains, replays, verify.

This module owns what "recovered exactly" means for :mod:`tools.crashsim`.
:func:`check` reopens a directory read-write (recovery runs: a torn tail is
cut, sidecars are rebuilt) and proves, on that one handle:

* its state equals the workload's state after some step ``j`` (the digest,
  :func:`tools.simworkload.digest`, compared with the reference digests of a
  clean run), ``j`` at least the last step durable by the mode's promise
  (:func:`floor`) and at most one step past the last acknowledged — or the
  state between the two commits of a workflow's start or finish (step ``j``),
  when step ``j - 1`` is at least that floor;
* ``replay_run(r) == run_state(r)`` for every run;
* ``inmem verify`` finds nothing (:func:`inmem.verify.verify_database` on the
  same handle: every WAL frame and snapshot of the directory, every run's
  event hash chain, vector records and graph);
* the workflow invariant: ``db.workflows.recover()`` completes every
  workflow the crash interrupted, and every workflow then has its result,
  each step recorded once and every inmem effect exactly once
  (:func:`tools.simflows.recover_and_check`);
* the handle closes cleanly.

Invariant: a check reads the directory only through the engine (and the
verifier); the result is exactly one outcome of :data:`tools.simcore.OUTCOMES`.
The checks cost what the engine costs: the file system under the reopened
handle is the real one with fsyncs skipped (:class:`NoSyncFS`: a check's
durability is not what is being tested).
"""

from __future__ import annotations

import os
from typing import Any

from tests.checkout import use_checkout

use_checkout()

from inmem import Database  # noqa: E402
from inmem.errors import InmemError  # noqa: E402
from inmem.fs import OSFileSystem, WritableFile  # noqa: E402
from inmem.verify import verify_database  # noqa: E402

from . import simflows, simworkload  # noqa: E402

__all__ = ["DURABLE_STEPS", "NoSyncFS", "check", "floor", "locate"]

#: Steps after which the mode's promise makes everything before durable (besides every step under strict).
DURABLE_STEPS = ("sync", "snapshot", "compact")


class _NoSyncFile:
    """A real file whose ``sync`` does nothing."""

    def __init__(self, inner: WritableFile):
        self.inner = inner
        self.path = getattr(inner, "path", "")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.inner.write(data)

    def sync(self) -> None:
        pass

    def truncate(self, size: int) -> None:
        self.inner.truncate(size)

    def size(self) -> int:
        return self.inner.size()

    def close(self) -> None:
        self.inner.close()


class NoSyncFS(OSFileSystem):
    """The real file system without fsyncs (of files or directories): every other call goes to the disk.

    For reopening a crashed image in a check: what recovery writes is read back
    from the page cache; whether it would survive another power cut is
    ``powercut-recovery``'s question, asked with :class:`tools.faultfs.FaultFS`.
    """

    def create(self, path: str) -> WritableFile:
        return _NoSyncFile(super().create(path))

    def open_append(self, path: str) -> WritableFile:
        return _NoSyncFile(super().open_append(path))

    def sync_dir(self, path: str) -> None:
        pass


def floor(acked: list[int], mode: str, killed: bool) -> int:
    """Steps the mode promises durable given the acknowledgements (step index + 1 per acknowledged step,
    negative for a durability point; ``killed``: a process crash, where ``off`` loses nothing the OS had)."""
    if not acked:
        return 0
    if mode == "strict" or (killed and mode == "off"):
        return max(abs(a) for a in acked)
    points = [-a for a in acked if a < 0]
    return max(points) if points else 0


def check(path: str, ref: list[list[str]], acked: list[int], mode: str, killed: bool) -> dict[str, Any]:
    """Reopen ``path`` and check it (see the module docstring).

    :param ref: the workload's digests (:func:`tools.crashsim.reference`): ``ref[j]`` the states step ``j``
        can leave, the last one the state after it.
    :param acked: the acknowledgements (see :func:`floor`).
    :returns: ``{"outcome": "recovered" | "lost" | "wrong" | "detected" | "hang", "detail": str}`` (``hang``:
        a workflow that recover() resumed did not end within :data:`tools.simflows.GATE_TIMEOUT_S`).
    """
    low = floor(acked, mode, killed)
    top = min(len(ref) - 1, (max(abs(a) for a in acked) if acked else 0) + 1)
    if not os.path.exists(path):
        if low > 0:
            return {"outcome": "lost", "detail": f"the directory is gone, {low} steps were durable"}
        return {"outcome": "recovered", "detail": "nothing was durable, nothing there"}
    fs = NoSyncFS()
    try:
        # no background threads (checkpointer, sweeper): a check writes nothing, and starting them costs more
        # than the rest of the reopen
        db = Database.open(path, durability="strict", fs=fs, snapshot_every_bytes=None, sweep_interval_s=None)
    except InmemError as exc:
        return {"outcome": "detected", "detail": f"reopen after a crash raised {type(exc).__name__}: {exc}"}
    try:
        out = _check_open(db, fs, ref, low, top)
    except TimeoutError as exc:
        out = {"outcome": "hang", "detail": f"a workflow resumed by recover() did not end: {exc}"}
    except InmemError as exc:
        out = {"outcome": "detected", "detail": f"{type(exc).__name__}: {exc}"}
    try:
        db.close()
    except InmemError as exc:
        if out["outcome"] == "recovered":
            out = {"outcome": "detected", "detail": f"close after recovery raised {type(exc).__name__}: {exc}"}
    return out


def locate(ref: list[list[str]], got: str, low: int, top: int) -> dict[str, Any]:
    """Place digest ``got`` in the workload's digests ``ref`` (see :func:`check`): the state after step ``j``
    (``ref[j][-1]``), with ``low <= j <= top``, or inside step ``j`` (an earlier item of ``ref[j]``: its
    first commit only), with ``low <= j - 1`` and ``j <= top``.

    :returns: ``{"outcome": "recovered", "step": j, "inside": bool}``, or ``{"outcome": "lost" | "wrong",
        "detail": str}`` (lost: only an earlier state than ``low`` matches).
    """
    # (j, whole): the state after step j (whole) or inside it, steps before it whole
    matches = [(j, k == len(ref[j]) - 1) for j in range(len(ref)) for k in range(len(ref[j])) if ref[j][k] == got]
    if not matches:
        return {"outcome": "wrong", "detail": "the state is no prefix of the workload (a hole or a partial "
                f"transaction); durable floor {low}, last acknowledged {top - 1}"}
    good = [(j, whole) for j, whole in matches if low <= (j if whole else j - 1) and j <= top]
    if not good:
        best, whole = max(matches)
        kind = "lost" if (best if whole else best - 1) < low else "wrong"
        return {"outcome": kind, "detail": f"state {'after' if whole else 'inside'} step {best}, but steps "
                f"{low}..{top} promised"}
    j, whole = max(good)
    return {"outcome": "recovered", "step": j, "inside": not whole}


def _check_open(db: Database, fs: NoSyncFS, ref: list[list[str]], low: int, top: int) -> dict[str, Any]:
    states = simworkload.run_states(db)
    where = locate(ref, simworkload.digest_states(states), low, top)
    if where["outcome"] != "recovered":
        return where
    for info, state in states:
        if db.replay_run(info.id) != state:
            return {"outcome": "wrong", "detail": f"replay_run({info.name}) differs from run_state"}
    rep = verify_database(db, fs=fs, states={i.id: s for i, s in states})  # and every run's event hash chain
    if not rep["ok"]:
        return {"outcome": "detected", "detail": f"inmem verify: {rep['problems'][:3]}"}
    problems, resumed, checked = simflows.recover_and_check(db)  # every inmem effect exactly once
    flows = {"workflows_resumed": resumed, "workflows_checked": checked}
    if problems:
        return {"outcome": "wrong", "detail": f"workflows after recover(): {problems[:3]}", **flows}
    return {"outcome": "recovered", "detail": f"state {'inside' if where['inside'] else 'after'} step "
            f"{where['step']}, floor {low}; {resumed} of {checked} workflows resumed by recover(), each effect "
            "once", **flows, "inside_step": where["inside"]}
