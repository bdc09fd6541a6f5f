# Two set-up commands for a fresh machine with python3 and make:
#   make demo   create .venv, install inmem (with the langgraph and vectors extras), run the demo (the main job)
#   make test   create .venv, install inmem with the test extra, run the whole suite
#   make simulate  the crash and corruption simulators on a small budget (~60 s; CI runs it)
# Both also try to build the optional C hot path (native/); without a compiler
# the pure-Python path is used and nothing fails.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test simulate bench native clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[native,langgraph,vectors]'
	$(BIN)/python native/build.py
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[test,native]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python -m inmem demo

# The whole suite twice: on the native path (when built), then on the pure-Python
# path (INMEM_PURE=1). Both paths must agree byte for byte.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	INMEM_PURE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# The crash and corruption simulation harness (README "Proving it: crashsim and corruptsim"),
# bounded for CI: ~300 crash points and ~1,000 corruption cases, each tool stopped after 40 s.
SIM_SEED ?= $(shell date +%j)
simulate: $(VENV)/.installed-test
	$(BIN)/python -m tools.crashsim --points 300 --seed $(SIM_SEED) --budget-s 40 --json .sim-crash.json
	$(BIN)/python -m tools.corruptsim --cases 1000 --seed $(SIM_SEED) --budget-s 40 --json .sim-corrupt.json

bench: $(VENV)/.installed-test
	$(BIN)/python -m pytest benches --benchmark-only --benchmark-columns=min,median,max,ops,rounds -p no:randomly

native: $(VENV)/.installed
	$(BIN)/python native/build.py --strict

clean:
	rm -rf $(VENV) build *.egg-info engine/_native*.so .pytest_cache .benchmarks .sim-*.json
