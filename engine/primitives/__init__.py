"""The agent primitives: thin layers over the unified store, one key tag each.

Each primitive is one module holding one class that works through a
:class:`~engine.primitives.kv.Context` (the database's autocommit context or,
from the Transactions issue, a transaction). Primitives never import each
other and never own storage of their own.
"""

from .kv import KV

__all__ = ["KV"]
