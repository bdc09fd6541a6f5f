"""The distribution is ``inmem``: imported as ``inmem``, nothing named ``engine`` installed, names pinned.

Also runs every docstring example of the package (``--doctest-modules`` would
import ``engine/`` under its folder name, a second copy of the package).
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import subprocess
import sys
import tomllib

import pytest

import inmem
from tests.checkout import ROOT

MODULES = ["inmem"] + sorted(m.name for m in pkgutil.walk_packages(inmem.__path__, "inmem.")
                             if m.name.split(".")[-1] not in ("__main__", "_native"))


def test_version_and_sorted_pinned_all():
    assert isinstance(inmem.__version__, str) and inmem.__version__
    assert inmem.__all__ == sorted(inmem.__all__)
    for name in inmem.__all__:
        assert getattr(inmem, name) is not None


def test_pyproject_installs_the_folder_as_inmem_and_nothing_as_engine():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    tool = project["tool"]["setuptools"]
    assert tool["package-dir"] == {"inmem": "engine"}
    assert all(p == "inmem" or p.startswith("inmem.") for p in tool["packages"])
    assert project["project"]["scripts"]["inmem"] == "inmem.cli:main"
    found = {"inmem"} | {p.replace("/", ".") for p in tool["packages"]}
    on_disk = {"inmem" + ("." + os.path.relpath(d, os.path.join(ROOT, "engine")).replace(os.sep, ".")
                          if d != os.path.join(ROOT, "engine") else "")
               for d, _, files in os.walk(os.path.join(ROOT, "engine")) if "__init__.py" in files}
    assert on_disk <= found, f"packages missing from pyproject.toml: {sorted(on_disk - found)}"


def test_a_script_beside_an_engine_py_imports_inmem(tmp_path):
    """The old top-level name `engine` was shadowed by any engine.py; `inmem` is not, and `engine` is gone."""
    (tmp_path / "engine.py").write_text("raise SystemExit('the wrong engine was imported')\n")
    (tmp_path / "agent.py").write_text(
        "import importlib.util, tempfile\n"
        "from inmem import Database\n"
        "with Database.open(tempfile.mkdtemp()) as db:\n"
        "    run = db.begin_run()\n"
        "    db.kv.put(run, 'k', 1)\n"
        "    print(db.kv.get(run, 'k'))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "agent.py"], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = subprocess.run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('engine'))"],
                           cwd=elsewhere, capture_output=True, text=True, env=env, timeout=60)
    assert probe.stdout.strip() == "None", "a package named `engine` is importable outside the checkout"


def test_python_dash_m_inmem(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "inmem", "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (see the output above)"
