"""Costly agent snapshots are not taken every iteration; an interrupt then saves the latest
snapshot (here: the last periodic checkpoint), and the run still resumes exactly."""

from __future__ import annotations

import pytest

from evolstm.run import trainer
from evolstm.run.checkpoint import load_checkpoint
from evolstm.run.trainer import train
from tests.test_trainer import _config, _lines, _without_timing


def test_without_per_iteration_snapshots_an_interrupt_resumes_from_the_checkpoint(
    tmp_path, fake_agent, monkeypatch
):
    straight = train(_config("budget.iterations=6"), runs_root=tmp_path / "straight")
    monkeypatch.setattr(trainer, "SNAPSHOT_FREE", 0.0)  # every snapshot counts as costly
    monkeypatch.setattr(trainer, "SNAPSHOT_SHARE", 0.0)  # and none fits the budget
    cfg = _config("budget.iterations=6", "checkpoint.every=2")
    fake_agent.interrupt_at = 5
    with pytest.raises(KeyboardInterrupt):
        train(cfg, runs_root=tmp_path / "crash")
    (run_dir,) = (tmp_path / "crash").iterdir()
    assert load_checkpoint(run_dir)["iteration"] == 4
    fake_agent.interrupt_at = None
    train(cfg, resume=run_dir)
    assert _without_timing(_lines(run_dir)) == _without_timing(_lines(straight))
