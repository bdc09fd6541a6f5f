"""Import this checkout's ``engine/`` folder as the ``inmem`` package.

The distribution installs the source folder ``engine/`` under the name
``inmem`` (``package-dir`` in pyproject.toml), so a plain ``sys.path`` entry
cannot find it. The test suite, the benchmarks and ``tools/`` call
:func:`use_checkout` first, so that they test the code beside them (a git
worktree, an uninstalled clone) rather than whatever ``inmem`` is installed.
Child processes that the tests start import the installed package.
"""

from __future__ import annotations

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def use_checkout() -> None:
    """Make ``import inmem`` load ``ROOT/engine`` (idempotent; a no-op once ``inmem`` is imported)."""
    if "inmem" in sys.modules:
        return
    source = os.path.join(ROOT, "engine")
    spec = importlib.util.spec_from_file_location("inmem", os.path.join(source, "__init__.py"),
                                                  submodule_search_locations=[source])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["inmem"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["inmem"]
        raise
