"""The demo (the project's main job) end to end with small sizes: assert its verification results."""

from __future__ import annotations

from engine.cli import main
from engine.demo import run_demo


def test_demo_verifies_every_value_and_claim(tmp_path):
    lines: list[str] = []
    result = run_demo(str(tmp_path / "db"), agents=3, steps=200, tasks=60, durability="strict", out=lines.append)
    assert result["runs"] == 3 and result["tasks_claimed"] == 60
    assert result["keys_verified"] > 60
    assert result["recovery"]["records"] == result["commit_version"] == result["commits"]
    assert result["recovery"]["torn_tail"] is None
    assert len(lines) == 5


def test_cli_demo_runs_in_a_temporary_directory(capsys):
    assert main(["demo", "--agents", "2", "--steps", "50", "--tasks", "10"]) == 0
    out = capsys.readouterr().out
    assert "10 of 10 tasks claimed" in out and "none claimed twice: True" in out
