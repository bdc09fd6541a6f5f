"""The simulation harness (``tools.corruptsim``, ``tools.crashsim``) on a small budget, and the engine bugs
it found, pinned as plain tests."""

from __future__ import annotations

import json
import os

import pytest

from inmem import CorruptionError, Database
from tools import corruptsim


def test_a_cut_frame_the_snapshot_covers_is_corruption_not_a_torn_tail(dbdir):
    """Found by corruptsim (seed 2, truncate-wal-last): the last segment cut inside frames the loaded snapshot
    covers was taken for a torn tail; the cut dropped WAL that history replays need, and replay_run
    returned a state without those commits. Those frames were fsynced before the snapshot existed, so a
    crash cannot tear them: the open raises CorruptionError naming the file and offset; salvage opens."""
    with Database.open(dbdir, durability="strict") as db:
        run = db.begin_run("r")
        for i in range(6):
            db.kv.put(run, f"k{i}", "x" * 100)
        db.snapshot()
    (seg,) = [n for n in os.listdir(dbdir) if n.startswith("wal-")]
    path = os.path.join(dbdir, seg)
    size = os.path.getsize(path)
    os.truncate(path, size - 50)  # inside the last frame, which the snapshot covers
    with pytest.raises(CorruptionError) as info:
        Database.open(dbdir)
    assert info.value.path == path and info.value.offset is not None and "snapshot covers" in str(info.value)
    with Database.open(dbdir, salvage=True) as db:  # the snapshot still holds every commit
        assert len(dict(db.kv.scan(run))) == 6


def test_corruptsim_small_run_passes(tmp_path, capsys):
    out = str(tmp_path / "cs.json")
    status = corruptsim.main(["--cases", "48", "--seed", "3", "--workers", "2", "--json", out,
                              "--workdir", str(tmp_path / "w")])
    report = json.load(open(out))
    assert status == 0, capsys.readouterr().out
    assert report["trials"] == 48 and report["total"]["lost"] == report["total"]["wrong"] == 0
    assert report["total"]["recovered"] > 0 and report["total"]["detected"] > 0
    assert "PASS" in capsys.readouterr().out
