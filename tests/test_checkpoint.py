"""Checkpoint files: atomic writes, latest.pt, pruning, RNG round trip."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from evolstm.errors import ConfigError
from evolstm.run import checkpoint as ckpt


def _payload(iteration: int) -> dict:
    return {"agent": {"w": torch.full((3,), float(iteration))}, "iteration": iteration}


def test_save_writes_numbered_file_and_latest(tmp_path):
    path = ckpt.save_checkpoint(tmp_path, 7, _payload(7))
    assert path == tmp_path / "checkpoints" / "ckpt-000007.pt"
    for loaded in (ckpt.load_checkpoint(path), ckpt.load_checkpoint(tmp_path)):
        assert loaded["iteration"] == 7
        torch.testing.assert_close(loaded["agent"]["w"], torch.full((3,), 7.0))
    assert ckpt.load_checkpoint(tmp_path / "checkpoints")["iteration"] == 7


def test_latest_follows_the_newest_and_old_ones_are_pruned(tmp_path):
    for iteration in (1, 2, 3, 4, 5, 1_000_000):
        ckpt.save_checkpoint(tmp_path, iteration, _payload(iteration))
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    kept = [f"ckpt-{i:06d}.pt" for i in (4, 5, 1_000_000)]
    assert names == sorted([*kept, "latest.pt"])
    assert ckpt.load_checkpoint(tmp_path)["iteration"] == 1_000_000


def test_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    ckpt.save_checkpoint(tmp_path, 1, _payload(1))

    def half_write(obj, path):
        Path(path).write_bytes(b"PK\x03\x04 half a zip")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", half_write)
    with pytest.raises(RuntimeError, match="disk full"):
        ckpt.save_checkpoint(tmp_path, 2, _payload(2))
    monkeypatch.undo()
    assert ckpt.load_checkpoint(tmp_path)["iteration"] == 1
    leftovers = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert sorted(leftovers) == ["ckpt-000001.pt", "latest.pt"], "no temporary files remain"


def test_rng_state_round_trip_restores_every_generator():
    state = ckpt.capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    ckpt.restore_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert first[:2] == again[:2]
    torch.testing.assert_close(first[2], again[2], rtol=0, atol=0)


def test_missing_or_foreign_checkpoint_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint"):
        ckpt.load_checkpoint(tmp_path)
    torch.save({"something": "else"}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match=r"other\.pt: not an evolstm checkpoint"):
        ckpt.load_checkpoint(tmp_path / "other.pt")
