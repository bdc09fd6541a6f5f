"""The native commit-frame encoders (``native/inmem_encode.c``) are byte-identical to the Python ones.

Differential: random LSNs, versions, timestamps (the whole u64 / i64 ranges),
keys, values and write lists (puts, deletes, empty) through
``format.encode_put_frame`` / ``encode_commit_frame`` (native when built) and
``format._py_encode_put_frame`` / ``_py_encode_commit_frame``; out-of-range
ints and odd types (a bytearray key, a list instead of a tuple, a negative
version) must give the same bytes or the same exception, and every native
frame must pass the frame check and decode back to its writes. Skipped when
the extension is not built or ``INMEM_PURE=1``.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inmem import native
from inmem.wal import format as fmt

pytestmark = pytest.mark.skipif(
    not native.ENABLED or fmt.encode_put_frame is fmt._py_encode_put_frame,  # noqa: SLF001
    reason="native encoders not built or INMEM_PURE=1",
)

u64 = st.integers(0, 2**64 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
blob = st.binary(max_size=300)


def _both(fn_native, fn_py, *args):
    try:
        a = ("ok", fn_native(*args))
    except Exception as exc:  # noqa: BLE001 - compared below
        a = ("err", type(exc))
    try:
        b = ("ok", fn_py(*args))
    except Exception as exc:  # noqa: BLE001
        b = ("err", type(exc))
    assert a == b
    return a


@settings(max_examples=150)
@given(u64, u64, i64, blob, blob)
def test_put_frame_is_byte_identical(lsn, version, ts, key, value):
    kind, frame = _both(fmt.encode_put_frame, fmt._py_encode_put_frame, lsn, version, ts, key, value)  # noqa: SLF001
    assert kind == "ok" and type(frame) is bytes
    got_lsn, _, start, end = fmt.check_frame(frame, 0)
    assert got_lsn == lsn and end == len(frame)
    assert fmt.decode_commit(frame, start, end) == (version, ts, [(key, value)])


@settings(max_examples=150)
@given(u64, u64, i64, st.lists(st.tuples(blob, st.one_of(st.none(), blob)), max_size=8))
def test_commit_frame_is_byte_identical(lsn, version, ts, writes):
    kind, frame = _both(fmt.encode_commit_frame, fmt._py_encode_commit_frame, lsn, version, ts, writes)  # noqa: SLF001
    assert kind == "ok"
    _, _, start, end = fmt.check_frame(frame, 0)
    assert fmt.decode_commit(frame, start, end) == (version, ts, writes)
    if len(writes) == 1 and writes[0][1] is not None:
        assert frame == fmt.encode_put_frame(lsn, version, ts, *writes[0])


@pytest.mark.parametrize("args", [
    (-1, 1, 0, b"k", b"v"), (2**64, 1, 0, b"k", b"v"), (1, -1, 0, b"k", b"v"), (1, 2**64, 0, b"k", b"v"),
    (1, 1, 2**63, b"k", b"v"), (1, 1, -(2**63) - 1, b"k", b"v"), (1.0, 1, 0, b"k", b"v"),
    (1, 1, 0, bytearray(b"k"), b"v"), (1, 1, 0, b"k", memoryview(b"v")), (1, 1, 0, "k", b"v"),
    (1, 1, 0, b"k", None), (True, 2, 3, b"k", b"v"),
])
def test_put_frame_odd_inputs_behave_like_python(args):
    _both(fmt.encode_put_frame, fmt._py_encode_put_frame, *args)  # noqa: SLF001


@pytest.mark.parametrize("writes", [
    [[b"k", b"v"]], ((b"k", b"v"),), [(bytearray(b"k"), b"v")], [(b"k", memoryview(b"v"))], [(b"k",)],
    [(b"k", b"v", b"x")], [("k", b"v")], [(b"k", 1)], [], [(b"k", None)] * 3, "nope",
])
def test_commit_frame_odd_inputs_behave_like_python(writes):
    _both(fmt.encode_commit_frame, fmt._py_encode_commit_frame, 7, 8, 9, writes)  # noqa: SLF001
    _both(fmt.encode_commit_frame, fmt._py_encode_commit_frame, -7, 8, 9, writes)  # noqa: SLF001


def test_the_kernel_commits_through_the_native_encoder(tmp_path):
    from inmem import Database

    with Database.open(str(tmp_path / "db")) as db:
        run = db.begin_run("r")
        db.kv.put(run, "a", {"x": 1})
        with db.transaction() as tx:
            tx.kv.put(run, "b", 2)
            tx.kv.delete(run, "a")
    with Database.open(str(tmp_path / "db")) as db:
        assert db.kv.get(run, "b") == 2 and db.kv.get(run, "a") is None
    assert fmt.encode_put_frame.__module__ == "inmem._native"  # a builtin from the extension (native.builtins)
    assert struct.calcsize("<QqIBI") == 25
