"""Child Python processes that import this inmem, run until a chosen line and are SIGKILLed: what the demos use.

This module owns starting such a child (``python -c CODE ARGS...`` with this
checkout's package importable: :func:`child_env`) and the SIGKILL protocol of
:func:`run_child_until`. Invariant: a child it returns from was SIGKILLed by
it; any other exit raises, with the child's stderr.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

__all__ = ["ENGINE_PARENT", "child_env", "run_child_until"]

#: The directory holding the package's source folder: put on a child's ``PYTHONPATH``.
ENGINE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_env() -> dict[str, str]:
    """This process's environment, with :data:`ENGINE_PARENT` first on ``PYTHONPATH``."""
    return {**os.environ, "PYTHONPATH": ENGINE_PARENT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run_child_until(args: list[str], kill_after: int) -> tuple[int, list[str]]:
    """Run ``python -c args...`` (engine importable); answer "go" to each stdout line until line
    ``kill_after``, then SIGKILL the child (blocked waiting for its next "go", or blocked however it
    likes). Returns (pid, lines).

    :raises RuntimeError: the child exited some other way (its stderr is in the message).
    """
    proc = subprocess.Popen([sys.executable, "-c", *args], env=child_env(), cwd=ENGINE_PARENT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None and proc.stdin is not None
        for line in proc.stdout:
            lines.append(line.strip())
            if len(lines) >= kill_after:
                proc.send_signal(signal.SIGKILL)
                break
            proc.stdin.write("go\n")
            proc.stdin.flush()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != -signal.SIGKILL:
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"the child exited with {proc.returncode} after {lines}: {err[-2000:]}")
    return proc.pid, lines
