"""The switch between the optional cffi-compiled C hot path and pure Python.

This module owns one decision, made once at import: is the compiled extension
``inmem._native`` (built from ``native/`` by ``python native/build.py``)
present and wanted? Set ``INMEM_PURE=1`` to force the pure-Python path (the
test suite runs with both). Invariant: the two paths produce byte-identical
output; nothing outside this module asks how an answer was computed.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

__all__ = ["ENABLED", "builtins", "ffi", "lib"]

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


class _MethodDef(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("meth", ctypes.c_void_p), ("flags", ctypes.c_int),
                ("doc", ctypes.c_char_p)]


_builtins: dict[str, Any] | None = None


def builtins() -> dict[str, Any]:
    """The extension's CPython-API functions, by name, as builtin function objects; ``{}`` when disabled.

    ``native/inmem_encode.c`` lists them in a ``PyMethodDef`` table (cffi cannot
    pass Python objects, so they are not in its ``lib``); each entry becomes a
    builtin function here, once (``PyCFunction_NewEx`` through ``ctypes``), so
    a call costs what any builtin call costs. Names: ``encode_put_frame``,
    ``encode_commit_frame``, ``load_snapshot_chunk``,
    ``make_entry`` (:mod:`inmem.wal.fast`), ``put_version`` and ``key_heads``
    (:mod:`inmem.store`), ``encode_value`` and ``decode_value``
    (:mod:`inmem.codec`); an older build may lack the later ones.
    """
    global _builtins
    if _builtins is None:
        table: dict[str, Any] = {}
        if ENABLED:
            try:
                methods = ctypes.PyDLL(_native.__file__).inmem_py_methods
            except (OSError, AttributeError):  # an older build without the table
                methods = None
            if methods is not None:
                methods.restype = ctypes.c_void_p
                methods.argtypes = [ctypes.POINTER(ctypes.c_int)]
                new_function = ctypes.pythonapi.PyCFunction_NewEx
                new_function.restype = ctypes.py_object
                new_function.argtypes = [ctypes.c_void_p, ctypes.py_object, ctypes.py_object]
                count = ctypes.c_int()
                base = methods(ctypes.byref(count))
                for i in range(count.value):
                    addr = base + i * ctypes.sizeof(_MethodDef)
                    table[_MethodDef.from_address(addr).name.decode()] = new_function(addr, None, "inmem._native")
        _builtins = table
    return _builtins
