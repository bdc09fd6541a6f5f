"""The agent primitives: thin layers over the unified store, one key tag each.

Each primitive is one module holding one class that works through a
:class:`~inmem.primitives.context.Context` (an autocommit context of
:mod:`inmem.contexts`, or a transaction). Primitives share only that
protocol (``primitives/context.py``), never import each other, and never own
storage of their own.
"""

from .kv import KV

__all__ = ["KV"]
