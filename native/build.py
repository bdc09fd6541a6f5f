"""Build the optional C hot path ``inmem._native`` (cffi, API mode).

Usage, from anywhere (paths are relative to this file)::

    python native/build.py            # build; never fails: without cffi or a C
                                      # compiler it warns and the engine stays pure Python
    python native/build.py --strict   # same, but exit 1 if the extension was not built
    python native/build.py --verbose  # also show the compiler's output

The extension is compiled in a temporary directory; only the resulting
``engine/_native.<abi-tag>.so`` is copied into the package (no .c/.o files).
Before it is installed it is loaded and checked against known CRC-32C values,
so a miscompiled library is never put in place.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PACKAGE_DIR = os.path.join(ROOT, "engine")
MODULE = "inmem._native"


def _read(name: str) -> str:
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


def make_ffibuilder():
    """Return the cffi ``FFI`` builder for ``inmem._native`` (importable by setuptools' cffi_modules)."""
    from cffi import FFI

    ffibuilder = FFI()
    ffibuilder.cdef(_read("cdef.h"))
    # inmem_replay.c, inmem_cold*.c and inmem_encode.c use the CPython API; engine/wal/fast.py and
    # inmem.native.builtins reach them through ctypes
    sources = ("inmem_native.c", "inmem_replay.c", "inmem_cold.c", "inmem_cold_type.c", "inmem_cbor.c",
               "inmem_encode.c")
    ffibuilder.set_source(MODULE, "\n".join(_read(n) for n in sources),
                          extra_compile_args=["-O2", "-Werror=implicit-function-declaration", "-Werror=int-conversion"])
    return ffibuilder


@contextmanager
def _captured_output(path: str, enabled: bool):
    """Send fds 1 and 2 (the compiler's chatter included) to ``path`` while active."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "wb") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _self_check(so_path: str) -> None:
    """Load the freshly built library from ``so_path`` and check a few known answers."""
    spec = importlib.util.spec_from_file_location(MODULE, so_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ffi, lib = mod.ffi, mod.lib
    data = b"123456789"
    for fn in (lib.inmem_crc32c, lib.inmem_crc32c_portable):
        if fn(ffi.from_buffer("uint8_t[]", data), len(data), 0) != 0xE3069283:
            raise RuntimeError("self-check failed: CRC-32C of '123456789' is wrong")
        if fn(ffi.from_buffer("uint8_t[]", b"6789"), 4, fn(ffi.from_buffer("uint8_t[]", b"12345"), 5, 0)) != 0xE3069283:
            raise RuntimeError("self-check failed: continued CRC-32C is wrong")
    if lib.inmem_mask(0) != 0xA282EAD8:
        raise RuntimeError("self-check failed: mask(0) is wrong")


def build(verbose: bool = False) -> str:
    """Compile, self-check and install the extension; return the installed path. Raises on any failure."""
    ffibuilder = make_ffibuilder()
    with tempfile.TemporaryDirectory(prefix="inmem-native-") as tmp:
        log = os.path.join(tmp, "build.log")
        try:
            with _captured_output(log, not verbose):
                built = ffibuilder.compile(tmpdir=tmp, verbose=verbose)
        except BaseException as exc:
            detail = ""
            if os.path.exists(log):
                with open(log, encoding="utf-8", errors="replace") as f:
                    lines = [ln.strip() for ln in f if ln.strip()]
                if lines:
                    detail = f" [{lines[-1][:200]}]"
            raise RuntimeError(f"{type(exc).__name__}: {exc}".splitlines()[0] + detail) from exc
        _self_check(built)
        dest = os.path.join(PACKAGE_DIR, os.path.basename(built))
        tmp_dest = dest + ".tmp"
        shutil.copyfile(built, tmp_dest)
        os.replace(tmp_dest, dest)  # atomic: a running process never sees half a library
    return dest


def main(argv: list[str]) -> int:
    strict = "--strict" in argv
    verbose = "--verbose" in argv or "-v" in argv
    try:
        import cffi  # noqa: F401
    except ImportError:
        print("inmem: cffi is not installed; inmem._native not built, the pure-Python path will be used")
        return 1 if strict else 0
    try:
        dest = build(verbose=verbose)
    except Exception as exc:  # no compiler, no headers, no setuptools, self-check failure ...
        print(f"inmem: could not build inmem._native ({exc}); the pure-Python path will be used")
        return 1 if strict else 0
    print(f"inmem: built {os.path.relpath(dest, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
