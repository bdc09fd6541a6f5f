"""The switch between the optional cffi-compiled C hot path and pure Python.

This module owns one decision, made once at import: is the compiled extension
``inmem._native`` (built from ``native/`` by ``python native/build.py``)
present and wanted? Set ``INMEM_PURE=1`` to force the pure-Python path (the
test suite runs with both). Invariant: the two paths produce byte-identical
output; nothing outside this module asks how an answer was computed.
"""

from __future__ import annotations

import os

__all__ = ["ENABLED", "ffi", "lib"]

ffi = None
lib = None
ENABLED = False

if os.environ.get("INMEM_PURE", "") in ("", "0"):
    try:  # pragma: no branch - depends on whether the extension was built
        from . import _native  # type: ignore[attr-defined]

        ffi, lib = _native.ffi, _native.lib
        ENABLED = True
    except ImportError:
        pass
