"""Shared fixtures. The suite runs on the native path when built, and on the
pure-Python path with INMEM_PURE=1 (see the Makefile's ``test`` target)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `tests` and `benches` import each other's helpers from the checkout root
    sys.path.insert(0, ROOT)

from tests.checkout import use_checkout  # noqa: E402

use_checkout()  # `import inmem` tests this checkout's engine/, installed or not


@pytest.fixture
def dbdir(tmp_path):
    """A fresh, empty database directory (as a str)."""
    d = tmp_path / "db"
    return str(d)


def dir_bytes(path: str) -> dict[str, bytes]:
    """Every file in a directory, name -> content (LOCK excluded: it holds a pid)."""
    out = {}
    for name in sorted(os.listdir(path)):
        if name == "LOCK":
            continue
        with open(os.path.join(path, name), "rb") as f:
            out[name] = f.read()
    return out


def assert_refused_unwritten(db, dbdir: str, call, error: type[BaseException]) -> None:
    """``call()`` raises ``error`` and writes nothing: the directory's bytes and the commit version are unchanged."""
    db.sync()
    before = dir_bytes(dbdir)
    version = db.stats()["commit_version"]
    with pytest.raises(error):
        call()
    db.sync()
    assert dir_bytes(dbdir) == before  # the WAL did not grow
    assert db.stats()["commit_version"] == version


def run_interleaved(threads: list[threading.Thread]) -> None:
    """Start and join ``threads`` with the GIL switching every 10 µs, so transactions really interleave."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)


def acks_until_sigkill(child: str, dbdir: str, kill_after: int) -> list[list[bytes]]:
    """Run ``python -c child dbdir`` (the installed inmem, from the checkout root), collect its
    ``ack ...`` lines (split into words, without ``ack``) until ``kill_after`` of them or ``done``, then
    SIGKILL it. The child must print ``done`` at the end and then block on stdin.

    :raises AssertionError: the child stopped before ``kill_after`` acks (its stderr in the message).
    """
    acks: list[list[bytes]] = []
    env = {**os.environ, "PYTHONPATH": ""}
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-c", child, dbdir], stdout=subprocess.PIPE, stderr=err,
                                stdin=subprocess.PIPE, cwd=ROOT, env=env)
        try:
            while len(acks) < kill_after:
                line = proc.stdout.readline()
                if not line or line == b"done\n":
                    break
                acks.append(line.split()[1:])
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            proc.stdin.close()
        err.seek(0)
        assert len(acks) >= kill_after, err.read().decode()
    return acks


class Clock:
    """An injected database clock (``Database.open(clock=)``): seconds since the epoch in ``t``, moved by
    the test — time to live and commit times without sleeping."""

    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()

