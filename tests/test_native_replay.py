"""The native recovery replay (``native/inmem_replay.c``) leaves exactly what the Python replay leaves.

Differential: random segments of commit records (puts, deletes, several ops,
no ops, duplicate keys, records below the snapshot LSN), intact or damaged
(a flipped byte, a cut, garbage appended, an LSN out of sequence, a version
out of order, a malformed payload behind a *valid* checksum). Each is
replayed by :meth:`SegmentScan.replay` on the native path and with the native
replay switched off; the state dict (keys, versions, values, insertion
order), the records' LSNs grouped by key head (what the history visitor
gets), the frame offsets, ``end``,
``next_lsn``, ``last_version``, ``skipped``/``count`` and the error (reason
and offset) must all agree. Skipped when the extension is not built or
``INMEM_PURE=1``.
"""

from __future__ import annotations

import gc
import struct
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inmem import native
from inmem.checksum import masked_crc32c
from inmem.store import SortedMap
from inmem.wal import fast
from inmem.wal.format import (
    COMMIT_HEADER,
    RECORD_COMMIT,
    encode_commit_frame,
    encode_frame,
    encode_segment_header,
)
from inmem.wal.reader import SegmentScan

pytestmark = pytest.mark.skipif(fast.replay is None, reason="native replay not built or INMEM_PURE=1")

DB = b"\x11" * 16
KEYS = [bytes([0]) + b"r" * 16 + bytes([t]) + s for t in (1, 2) for s in (b"a", b"b", b"cc", b"")]
KEYS += [bytes([0]) + b"s" * 16 + b"\x01x", b"\x00short", b""]  # a second run id; heads cut short
#: key heads to group by: the run id (what the history index asks), and heads past or across the end
HEADS = [(1, 16), (0, 0), (0, 3), (17, 2), (20, 5), (40, 16)]


def _replay(buf: bytes, first_lsn: int, last_version: int, skip_below: int, want: int, use_native: bool,
            head: tuple[int, int] = (1, 16), cold: bool = False):
    from inmem.wal.format import decode_segment_header

    header = decode_segment_header(buf)
    assert header.first_lsn == first_lsn
    saved = fast.replay
    if not use_native:
        fast.replay = None
    try:
        scan = SegmentScan(buf, header, last_version, skip_below=skip_below)
        if cold:  # a SortedMap with a pre-existing (snapshot) key in its dict part, replayed into its cold table
            state = SortedMap()
            dict.__setitem__(state, b"pre-existing", (1, b"v"))
            table = state.open_cold()
            groups = scan.replay(state, want, head, table)
            parts = [(k, tuple(v)) for k, v in dict.items(state)], [(k, tuple(v)) for k, v in table.items()]
            assert not {k for k, _ in parts[0]} & {k for k, _ in parts[1]}  # disjoint parts
            state = dict(sorted(parts[0] + parts[1]))
        else:
            state = {b"pre-existing": (1, b"v")}
            groups = scan.replay(state, want, head)
    finally:
        fast.replay = saved
    assert all(type(lsns) is array and lsns.typecode == "Q" for lsns in groups.values())
    assert all(list(lsns) == sorted(set(lsns)) and lsns[0] >= want for lsns in groups.values())  # once each
    err = None if scan.error is None else (scan.error.reason, scan.error.offset)
    return (list(state.items()), {h: list(lsns) for h, lsns in groups.items()},
            list(scan.starts[: scan.skipped + scan.count]), list(scan.starts), scan.end,
            scan.next_lsn, scan.last_version, scan.skipped, scan.count, err)


def _same(buf, first_lsn=1, last_version=0, skip_below=0, want=1, head=(1, 16)):
    a = _replay(buf, first_lsn, last_version, skip_below, want, True, head)
    b = _replay(buf, first_lsn, last_version, skip_below, want, False, head)
    assert a == b
    # into a cold table (native, and the Python replay's cold.load/unload): the same map, in key order
    expected = (sorted((k, tuple(v)) for k, v in a[0]),) + a[1:]
    for use_native in (True, False):
        c = _replay(buf, first_lsn, last_version, skip_below, want, use_native, head, cold=True)
        assert c == expected
    return a


write = st.tuples(st.sampled_from(KEYS + [b"pre-existing"]), st.one_of(st.none(), st.binary(max_size=12)))
record = st.lists(write, max_size=4)


@st.composite
def segments(draw):
    first_lsn = draw(st.integers(1, 5))
    records = draw(st.lists(record, max_size=12))
    version = draw(st.integers(0, 3))
    out = bytearray(encode_segment_header(DB, 1, first_lsn))
    for i, writes in enumerate(records):
        version += draw(st.integers(1, 3))
        out += encode_commit_frame(first_lsn + i, version, 123, writes)
    return bytes(out), first_lsn, len(records)


def _framed_payload(lsn: int, payload: bytes) -> bytes:
    return encode_frame(lsn, RECORD_COMMIT, payload)


@settings(max_examples=150, deadline=None)
@given(segments(), st.data())
def test_native_replay_matches_python(seg, data):
    buf, first_lsn, n = seg
    damage = data.draw(st.sampled_from(["none", "flip", "cut", "append", "lsn", "version", "payload"]))
    if damage == "flip" and len(buf) > 48:
        i = data.draw(st.integers(48, len(buf) - 1))
        buf = buf[:i] + bytes([buf[i] ^ data.draw(st.integers(1, 255))]) + buf[i + 1:]
    elif damage == "cut" and len(buf) > 48:
        buf = buf[: data.draw(st.integers(48, len(buf) - 1))]
    elif damage == "append":
        buf += data.draw(st.binary(min_size=1, max_size=40))
    elif damage == "lsn":
        buf += encode_commit_frame(first_lsn + n + data.draw(st.sampled_from([1, 2, -1])), 10**6, 0, [(KEYS[0], b"x")])
    elif damage == "version":
        buf += encode_commit_frame(first_lsn + n, 0, 0, [(KEYS[0], b"x")])
    elif damage == "payload":
        good = encode_commit_frame(first_lsn + n, 10**6, 0, [(KEYS[1], b"val")])[24:]
        bad = data.draw(st.sampled_from([
            good[:-1],                                  # ops end before the payload does... or overrun
            good + b"\0",                               # trailing byte
            good[:20] + b"\x03" + good[21:],            # unknown op
            good[:16] + struct.pack("<I", 2) + good[20:],  # count says 2
            COMMIT_HEADER.pack(10**6, 0, 0)[:-1],       # header short
            good[:21] + struct.pack("<I", 10**6) + good[25:],  # key length overruns
        ]))
        buf += _framed_payload(first_lsn + n, bad)
        buf += encode_commit_frame(first_lsn + n + 1, 10**6 + 1, 0, [(KEYS[2], b"after")])
    skip_below = data.draw(st.integers(0, first_lsn + n + 1))
    want = data.draw(st.sampled_from([first_lsn, first_lsn + n // 2, 1 << 64]))
    last_version = data.draw(st.integers(0, 2))
    _same(buf, first_lsn, last_version, skip_below, want, data.draw(st.sampled_from(HEADS)))


def test_native_replay_applies_puts_deletes_and_groups_lsns_by_key_head():
    buf = encode_segment_header(DB, 1, 1)
    buf += encode_commit_frame(1, 5, 0, [(KEYS[0], b"a")])
    buf += encode_commit_frame(2, 6, 0, [(KEYS[1], b"b"), (KEYS[0], None), (KEYS[1], b"b2"), (KEYS[8], b"s")])
    buf += encode_commit_frame(3, 7, 0, [])
    buf += encode_commit_frame(4, 8, 0, [(b"pre-existing", None)])
    buf += encode_commit_frame(5, 9, 0, [(KEYS[8], None), (KEYS[2], b"c")])
    items, groups, starts, _, end, nxt, last, skipped, count, err = _same(buf)
    assert items == [(KEYS[1], (6, b"b2")), (KEYS[2], (9, b"c"))]
    # each record once under each run id it touched (LSN 2 wrote three keys of run r); no record no LSN
    assert groups == {b"r" * 16: [1, 2, 5], b"s" * 16: [2, 5], b"re-existing": [4]}
    assert (end, nxt, last, skipped, count, err) == (len(buf), 6, 9, 0, 5, None)
    assert starts[0] == 48
    assert _same(buf, want=3)[1] == {b"r" * 16: [5], b"s" * 16: [5], b"re-existing": [4]}
    assert _same(buf, want=1 << 64)[1] == {}  # nothing wanted: nothing grouped


def test_native_replay_stops_before_a_bad_payload_and_python_names_it():
    """A payload with a valid checksum but a malformed record: the C side leaves it to the
    reference, which raises the same FrameError; nothing of it is applied."""
    buf = encode_segment_header(DB, 1, 1) + encode_commit_frame(1, 1, 0, [(KEYS[0], b"a")])
    payload = COMMIT_HEADER.pack(2, 0, 1) + b"\x09" + struct.pack("<I", 1) + b"k"
    body = encode_frame(2, RECORD_COMMIT, payload)
    assert body[24:] == payload and struct.unpack_from("<I", body, 16)[0] == masked_crc32c(payload)
    buf += body
    items, _, _, _, end, nxt, _, _, count, err = _same(buf)
    assert items == [(b"pre-existing", (1, b"v")), (KEYS[0], (1, b"a"))]
    assert err is not None and err[0] == "unknown op 9 in commit record" and count == 1 and nxt == 2


def test_native_replay_tuples_are_untracked_and_state_survives_collection():
    buf = encode_segment_header(DB, 1, 1) + b"".join(
        encode_commit_frame(i + 1, i + 1, 0, [(KEYS[i % 4] + str(i).encode(), b"v%d" % i)]) for i in range(200))
    header_state: dict = {}
    from inmem.wal.format import decode_segment_header

    SegmentScan(buf, decode_segment_header(buf), 0).replay(header_state, 1 << 64)
    gc.collect()
    assert len(header_state) == 200
    assert all(not gc.is_tracked(e) for e in header_state.values())
    assert header_state[KEYS[3] + b"199"] == (200, b"v199")


def test_native_replay_is_used_when_built():
    assert native.ENABLED and fast.replay is not None


# --- snapshot chunks ---------------------------------------------------------------------------

import cbor2  # noqa: E402

needs_chunk = pytest.mark.skipif(fast.load_snapshot_chunk is None, reason="native snapshot loader not built")


@needs_chunk
@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=20), st.integers(1, 2**64 - 1), st.binary(max_size=40)), max_size=30))
def test_snapshot_chunk_loads_like_cbor2(entries):
    keys, versions, values = [e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries]
    payload = cbor2.dumps([keys, versions, values])
    state: dict = {b"old": (1, b"o")}
    assert fast.load_snapshot_chunk(payload, len(entries), state) == len(entries)
    expected: dict = {b"old": (1, b"o")}
    expected.update(zip(keys, zip(versions, values)))
    assert list(state.items()) == list(expected.items())
    assert not any(gc.is_tracked(v) for v in state.values())
    # into a cold table: the same entries, none left in the dict part; a duplicate key kept once
    m = SortedMap()
    cold = m.open_cold()
    assert fast.load_snapshot_chunk(payload, len(entries), m, cold) == len(entries)
    assert dict.__len__(m) == 0 and {k: tuple(e) for k, e in cold.items()} == dict(zip(keys, zip(versions, values)))


@needs_chunk
@pytest.mark.parametrize("payload,count", [
    (cbor2.dumps([[b"k"], [1], [b"v"]]), 2),                     # count mismatch
    (cbor2.dumps([[b"k"], [1], [b"v"]]) + b"\0", 1),             # trailing byte
    (cbor2.dumps([[b"k"], [1]]), 1),                             # two arrays
    (cbor2.dumps([["k"], [1], [b"v"]]), 1),                      # a text key
    (cbor2.dumps([[b"k"], [-1], [b"v"]]), 1),                    # a negative version
    (cbor2.dumps([[b"k"], [1.0], [b"v"]]), 1),                   # a float version
    (cbor2.dumps([[b"k"], [1], [None]]), 1),                     # a null value
    (cbor2.dumps([[b"k"], [0], [b"v"]]), 1),                     # version 0: no commit wrote it
    (b"\x83\x9f\x41k\xff\x81\x01\x81\x41v", 1),                  # an indefinite-length array
    (cbor2.dumps([[b"k"], [1], [b"v"]])[:-1], 1),                # cut short
    (b"", 0),
])
def test_snapshot_chunk_leaves_anything_else_to_cbor2(payload, count):
    state: dict = {b"old": (1, b"o")}
    assert fast.load_snapshot_chunk(payload, count, state) == -1
    assert state == {b"old": (1, b"o")}
    m = SortedMap()
    cold = m.open_cold()
    assert fast.load_snapshot_chunk(payload, count, m, cold) == -1
    assert len(m) == 0


@needs_chunk
@pytest.mark.parametrize("entries", [([b"k"], [0], [b"v"]), (["k"], [1], [b"v"]), ([b"k"], [1], ["v"]),
                                     ([b"k"], [2**64], [b"v"]), ([b"k"], [True], [b"v"])],
                         ids=["version0", "text-key", "text-value", "version-2^64", "bool-version"])
@pytest.mark.parametrize("use_cold", [False, True])
def test_a_snapshot_entry_that_is_not_bytes_version_bytes_is_malformed_on_both_paths(tmp_path, monkeypatch, entries,
                                                                                   use_cold):
    """Behind passing checksums (a bug, not a flipped bit): refused as a damaged snapshot, native or not,
    into the dict part or a cold table (which could not hold it)."""
    from inmem.fs import OSFileSystem
    from inmem.snapshot import SnapshotError, read_snapshot, write_snapshot

    fs = OSFileSystem()
    path, _size = write_snapshot(fs, str(tmp_path), DB, 5, 9, *entries)
    for native_on in (True, False):
        if not native_on:
            monkeypatch.setattr(fast, "load_snapshot_chunk", None)
        m = SortedMap()
        cold = m.open_cold() if use_cold else None
        with pytest.raises(SnapshotError, match="malformed"):
            read_snapshot(fs, path, DB, into=m, cold=cold)


@needs_chunk
def test_snapshot_read_is_the_same_on_both_paths(tmp_path, monkeypatch):
    from inmem import Database
    from inmem.fs import OSFileSystem
    from inmem.identity import read_identity
    from inmem.snapshot import read_snapshot

    with Database.open(str(tmp_path / "db"), snapshot_every_bytes=None) as db:
        run = db.begin_run("r")
        for i in range(5000):  # > one chunk (4,096 entries)
            db.kv.put(run, f"k{i}", {"i": i})
        db.kv.delete(run, "k7")
        path = db.snapshot().path
    fs = OSFileSystem()
    db_id = read_identity(fs, str(tmp_path / "db")).db_id
    native_header, native_state = read_snapshot(fs, path, db_id)
    m = SortedMap()
    cold_header, cold_state = read_snapshot(fs, path, db_id, into=m, cold=m.open_cold())
    monkeypatch.setattr(fast, "load_snapshot_chunk", None)
    pure_header, pure_state = read_snapshot(fs, path, db_id)
    m2 = SortedMap()
    cold_pure_header, _ = read_snapshot(fs, path, db_id, into=m2, cold=m2.open_cold())  # cold.load, one by one
    assert native_header == pure_header == cold_header == cold_pure_header
    assert list(native_state.items()) == list(pure_state.items())
    assert len(native_state) == 5000  # 4,999 keys + the run record
    assert dict.__len__(m) == 0 and len(m) == len(m2) == 5000
    assert list(m.items()) == list(m2.items()) == sorted(pure_state.items())  # drained, then in key order
