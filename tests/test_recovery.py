"""Recovery: torn tails are cut, corruption is named, salvage keeps the valid prefix.

Byte surgery on real WAL files (after LevelDB's log tests and toydb's
every-byte truncation): truncate at every offset, flip bits, zero-fill,
delete and transplant segments, then reopen and compare with the committed
prefix.
"""

from __future__ import annotations

import os
import shutil

import pytest

from inmem import CorruptionError, Database
from inmem.wal.format import FRAME_HEADER_SIZE, SEGMENT_HEADER_SIZE, check_frame, parse_segment_name


def segments(path: str) -> list[str]:
    return sorted(n for n in os.listdir(path) if parse_segment_name(n) is not None)


def frame_offsets(seg_path: str) -> list[tuple[int, int]]:
    """(start, end) of every frame in a segment file."""
    buf = open(seg_path, "rb").read()
    out, pos = [], SEGMENT_HEADER_SIZE
    while pos < len(buf):
        _, _, _, end = check_frame(buf, pos)
        out.append((pos, end))
        pos = end
    return out


def build(path: str, commits: int, *, segment_bytes: int = 64 << 20, value_size: int = 40):
    """A strict-mode database with one run and ``commits`` KV commits (puts and deletes).

    Returns ``(run, states)`` where ``states[j]`` is the run's KV state after j KV commits.
    """""
    states = []
    with Database.open(path, durability="strict", segment_bytes=segment_bytes) as db:
        run = db.begin_run("r")
        model: dict[str, object] = {}
        states.append(dict(model))
        for i in range(commits):
            key = f"k{i % 7}"
            if i % 5 == 4 and key in model:
                assert db.kv.delete(run, key)
                del model[key]
            else:
                db.kv.put(run, key, {"i": i, "pad": "x" * value_size})
                model[key] = {"i": i, "pad": "x" * value_size}
            states.append(dict(model))
    return run, states


def state(path: str, run: str, **kw) -> tuple[dict, dict]:
    with Database.open(path, **kw) as db:
        return dict(db.kv.scan(run)), db.stats()["recovery"]


def test_truncating_the_last_record_at_every_byte_gives_the_committed_prefix(tmp_path):
    src = str(tmp_path / "src")
    run, states = build(src, 12, value_size=120)
    seg = segments(src)[-1]
    original = open(os.path.join(src, seg), "rb").read()
    start, end = frame_offsets(os.path.join(src, seg))[-1]
    for cut in range(start, end):
        d = str(tmp_path / f"cut{cut}")
        shutil.copytree(src, d)
        with open(os.path.join(d, seg), "r+b") as f:
            f.truncate(cut)
        got, rec = state(d, run)
        assert got == states[-2], f"cut at {cut}"
        if cut == start:
            assert rec["torn_tail"] is None  # a clean end between records
        else:
            assert rec["torn_tail"] == {
                "file": seg, "offset": start, "bytes_dropped": cut - start,
                "reason": rec["torn_tail"]["reason"], "cut": True,
            }, f"cut at {cut}"
            # the cut is on disk (fsynced) before anything new is written
            assert os.path.getsize(os.path.join(d, seg)) == start
        shutil.rmtree(d)
    assert len(original) == end


def test_after_a_torn_tail_new_commits_append_cleanly(dbdir):
    run, states = build(dbdir, 6)
    seg = os.path.join(dbdir, segments(dbdir)[-1])
    with open(seg, "ab") as f:
        f.write(b"\x13\x37" * 11)  # a half-written frame
    with Database.open(dbdir, durability="strict") as db:
        assert db.stats()["recovery"]["torn_tail"]["bytes_dropped"] == 22
        db.kv.put(run, "after", 1)
    got, rec = state(dbdir, run)
    assert rec["torn_tail"] is None
    assert got == {**states[-1], "after": 1}


def test_zero_filled_tail_is_a_torn_tail(dbdir):
    run, states = build(dbdir, 5)
    seg = os.path.join(dbdir, segments(dbdir)[-1])
    size = os.path.getsize(seg)
    with open(seg, "ab") as f:
        f.write(bytes(256 * 1024))  # the file grew but the data never landed
    got, rec = state(dbdir, run)
    assert got == states[-1]
    assert rec["torn_tail"]["offset"] == size and rec["torn_tail"]["bytes_dropped"] == 256 * 1024


def test_bad_last_frame_of_last_segment_is_a_torn_tail(dbdir):
    run, states = build(dbdir, 5)
    seg = os.path.join(dbdir, segments(dbdir)[-1])
    start, end = frame_offsets(seg)[-1]
    with open(seg, "r+b") as f:
        f.seek(end - 1)
        last = f.read(1)
        f.seek(end - 1)
        f.write(bytes([last[0] ^ 0x01]))
    got, rec = state(dbdir, run)
    assert got == states[-2]
    assert rec["torn_tail"]["offset"] == start


def test_flipped_bit_mid_last_segment_is_corruption_not_a_torn_tail(dbdir):
    run, _ = build(dbdir, 10)
    seg = os.path.join(dbdir, segments(dbdir)[-1])
    start, _end = frame_offsets(seg)[4]
    with open(seg, "r+b") as f:
        f.seek(start + FRAME_HEADER_SIZE + 3)
        b = f.read(1)
        f.seek(start + FRAME_HEADER_SIZE + 3)
        f.write(bytes([b[0] ^ 0x20]))
    with pytest.raises(CorruptionError) as info:
        Database.open(dbdir)
    assert info.value.path == seg and info.value.offset == start
    assert f"offset {start}" in str(info.value) and seg in str(info.value)


def _multi_segment(dbdir):
    run, states = build(dbdir, 60, segment_bytes=4096, value_size=200)
    segs = segments(dbdir)
    assert len(segs) >= 4
    return run, states, segs


def test_flipped_bit_in_an_earlier_segment_raises_then_salvage_keeps_the_prefix(dbdir):
    run, states, segs = _multi_segment(dbdir)
    victim = os.path.join(dbdir, segs[1])
    frames = frame_offsets(victim)
    bad_start, _ = frames[2]
    with open(victim, "r+b") as f:
        f.seek(bad_start + 40)
        b = f.read(1)
        f.seek(bad_start + 40)
        f.write(bytes([b[0] ^ 0x04]))
    before = {n: open(os.path.join(dbdir, n), "rb").read() for n in os.listdir(dbdir) if n != "LOCK"}

    with pytest.raises(CorruptionError) as info:
        Database.open(dbdir)
    assert info.value.path == victim and info.value.offset == bad_start
    # a failed open changes nothing on disk
    assert {n: open(os.path.join(dbdir, n), "rb").read() for n in os.listdir(dbdir) if n != "LOCK"} == before

    # records before the bad one: all of segment 1, two of segment 2 (the run record is commit 1)
    kept_commits = len(frame_offsets(os.path.join(dbdir, segs[0]))) + 2 - 1
    with Database.open(dbdir, salvage=True, durability="strict") as db:
        rec = db.stats()["recovery"]
        assert dict(db.kv.scan(run)) == states[kept_commits]
        assert rec["salvaged"]["file"] == segs[1] and rec["salvaged"]["offset"] == bad_start
        assert len(rec["salvaged"]["set_aside"]) == len(segs) - 1
        assert rec["salvaged"]["bytes_dropped"] > 0
        db.kv.put(run, "new", "after salvage")
    # the set-aside files are kept for forensics, and the database opens cleanly now
    assert sum(".corrupt-" in n for n in os.listdir(dbdir)) == len(segs) - 1
    got, rec = state(dbdir, run)
    assert rec["salvaged"] is None and rec["torn_tail"] is None
    assert got == {**states[kept_commits], "new": "after salvage"}


def test_missing_segment_is_corruption_naming_it(dbdir):
    run, states, segs = _multi_segment(dbdir)
    os.remove(os.path.join(dbdir, segs[2]))
    with pytest.raises(CorruptionError, match="missing") as info:
        Database.open(dbdir)
    assert info.value.path == os.path.join(dbdir, segs[2])
    with Database.open(dbdir, salvage=True) as db:
        kept = sum(len(frame_offsets(os.path.join(dbdir, s))) for s in segs[:2]) - 1
        assert dict(db.kv.scan(run)) == states[kept]


def test_missing_last_segment_is_detected_only_as_a_shorter_log(dbdir):
    """Deleting the newest segment cannot be told from a crash before it was created: a documented limit."""
    run, states, segs = _multi_segment(dbdir)
    os.remove(os.path.join(dbdir, segs[-1]))
    kept = sum(len(frame_offsets(os.path.join(dbdir, s))) for s in segs[:-1]) - 1
    got, _ = state(dbdir, run)
    assert got == states[kept]


def test_foreign_segment_is_corruption(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    build(a, 3)
    build(b, 3)
    seg = segments(a)[0]
    shutil.copy(os.path.join(b, seg), os.path.join(a, seg))
    with pytest.raises(CorruptionError, match="foreign") as info:
        Database.open(a)
    assert info.value.path == os.path.join(a, seg)


def test_segment_starting_at_the_wrong_lsn_is_corruption(tmp_path):
    d = str(tmp_path / "d")
    _, _, segs = _multi_segment(d)
    # swap two segments' contents: names and sequence numbers now disagree
    p1, p2 = os.path.join(d, segs[1]), os.path.join(d, segs[2])
    b1, b2 = open(p1, "rb").read(), open(p2, "rb").read()
    open(p1, "wb").write(b2)
    open(p2, "wb").write(b1)
    with pytest.raises(CorruptionError, match="sequence"):
        Database.open(d)


def test_identity_missing_with_segments_is_corruption(dbdir):
    build(dbdir, 2)
    os.remove(os.path.join(dbdir, "IDENTITY"))
    with pytest.raises(CorruptionError, match="IDENTITY is missing"):
        Database.open(dbdir)


def test_damaged_identity_is_corruption(dbdir):
    build(dbdir, 2)
    p = os.path.join(dbdir, "IDENTITY")
    data = bytearray(open(p, "rb").read())
    data[20] ^= 1
    open(p, "wb").write(bytes(data))
    with pytest.raises(CorruptionError, match="IDENTITY checksum"):
        Database.open(dbdir)


def test_leftover_temporary_files_are_removed(dbdir):
    run, states = build(dbdir, 3)
    for name in ("wal-0000000000000002.log.tmp", "IDENTITY.tmp"):
        open(os.path.join(dbdir, name), "wb").write(b"half")
    got, rec = state(dbdir, run)
    assert got == states[-1]
    assert sorted(rec["removed_temporaries"]) == ["IDENTITY.tmp", "wal-0000000000000002.log.tmp"]
    assert not [n for n in os.listdir(dbdir) if n.endswith(".tmp")]


def test_recovery_reports_what_it_replayed(dbdir):
    build(dbdir, 9)
    with Database.open(dbdir) as db:
        rec = db.stats()["recovery"]
        assert rec["records"] == 10  # begin_run + 9
        assert rec["commit_version"] == db.stats()["commit_version"] == 10
        assert rec["segments"] == 1 and rec["bytes"] == db.stats()["wal_bytes"]
        assert rec["created"] is False and rec["seconds"] >= 0


# --- reading ahead: the next segment is read on a helper thread while one is replayed -------------


def _three_segments(path: str) -> list[str]:
    from inmem.wal.format import parse_segment_name

    db = Database.open(path, segment_bytes=4096)
    run = db.begin_run("r")
    for i in range(150):
        db.kv.put(run, f"k{i:04d}", "x" * 40)
    db.close()
    names = sorted(n for n in os.listdir(path) if parse_segment_name(n) is not None)
    assert len(names) >= 3
    return names


@pytest.mark.parametrize("which", [1, -1])
def test_a_read_error_on_a_segment_read_ahead_is_raised_as_before_and_changes_nothing(tmp_path, which):
    """EIO reading the second (or last) segment, which the helper thread reads while the one before is
    replayed: the open raises that OSError, nothing on disk changes, and the next open recovers all."""
    import errno

    from inmem.fs import OSFileSystem

    path = str(tmp_path / "db")
    names = _three_segments(path)
    victim = os.path.join(path, names[which])
    before = {n: open(os.path.join(path, n), "rb").read() for n in os.listdir(path)}
    reads: list[str] = []

    class FailingRead(OSFileSystem):
        def read(self, p: str) -> bytes:
            reads.append(os.path.basename(p))
            if p == victim:
                raise OSError(errno.EIO, "Input/output error (injected)", p)
            return super().read(p)

    with pytest.raises(OSError) as info:
        Database.open(path, fs=FailingRead())
    assert info.value.errno == errno.EIO and info.value.filename == victim
    assert [n for n in reads if n.startswith("wal-")] == names[: names.index(names[which]) + 1]
    after = {n: open(os.path.join(path, n), "rb").read() for n in os.listdir(path) if n != "LOCK"}
    assert after == {n: b for n, b in before.items() if n != "LOCK"}
    with Database.open(path) as db:
        assert len(list(db.kv.scan(db.runs.ids()[0]))) == 150


def test_a_segment_read_ahead_is_dropped_when_recovery_stops_before_it(tmp_path):
    """Corruption in the first segment (salvage): recovery stops there; the second segment, already
    being read ahead, is neither applied nor waited for as an error."""
    path = str(tmp_path / "db")
    names = _three_segments(path)
    first = os.path.join(path, names[0])
    data = bytearray(open(first, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(first, "wb").write(bytes(data))
    with pytest.raises(CorruptionError):
        Database.open(path)
    with Database.open(path, salvage=True) as db:
        stats = db.stats()["recovery"]
        assert stats["segments"] == 1 and stats["salvaged"]
