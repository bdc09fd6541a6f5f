"""Integrations of inmem with agent frameworks, each behind an optional dependency.

* :mod:`inmem.integrations.langgraph` — ``InmemSaver``, a LangGraph checkpointer
  (``pip install 'inmem[langgraph]'``).

This package imports nothing optional itself, so ``import inmem`` never needs
a framework installed; import the submodule you use.
"""
