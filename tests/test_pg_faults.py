"""Faults in the policy-gradient learner: a diverging loss stops the run with a clear error and
a resumable checkpoint. (A hung Ray rollout actor: ``tests/test_ray_evaluator.py``, which
shares its Ray instance.)"""

from __future__ import annotations

import pytest
import torch

from evolstm.errors import TrainingDiverged
from evolstm.network.policy import RecurrentPolicy
from evolstm.run.checkpoint import load_checkpoint
from evolstm.run.config import apply_overrides, validate_config
from evolstm.run.trainer import ERROR_LOG, train

# FaultyEnv: 10-step episodes (11 env steps with the NEXT_STEP reset step); from the fifth
# episode of each slot on, step 3 pays 1e30: finite, but the value loss (1e30)^2 overflows.
HUGE = {
    "id": "tests.fault_envs:FaultyEnv",
    "kwargs": {"mode": "huge_reward", "from_episode": 4},
}


def _config(env: dict, *overrides: str):
    data = {
        "name": "ppo",
        "seed": 3,
        "env": env,
        "policy": {"hidden": 5},
        "agent": {"name": "ppo", "num_envs": 2, "n_steps": 11, "seq_len": 11, "epochs": 2},
        "budget": {"iterations": 8},
        "eval": {"every": 100, "episodes": 2},
        "checkpoint": {"every": 100},
        "logging": {"wandb": {"mode": "disabled"}, "console": False},
    }
    return validate_config(apply_overrides(data, overrides))


def test_a_diverging_loss_stops_with_a_clear_error_after_a_resumable_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged) as info:
        train(_config(HUGE), runs_root=tmp_path / "crash")
    message = str(info.value)
    # Episode 5 of a slot starts at env step 44, in iteration 5 (11 steps per iteration).
    assert "value_loss is inf in iteration 5" in message, message
    assert "continue with --resume" in message and "\n" not in message
    (run_dir,) = (tmp_path / "crash").iterdir()
    assert "TrainingDiverged" in (run_dir / ERROR_LOG).read_text()
    # The trainer snapshots the last completed iteration when snapshots are cheap, else
    # every few iterations: the crash checkpoint is one of iterations 1-4.
    saved = load_checkpoint(run_dir)["iteration"]
    assert 1 <= saved <= 4 and f"last checkpoint: iteration {saved}," in message
    # The checkpoint holds exactly what a straight run of that many iterations ends with (no
    # NaN/inf reached the parameters) ...
    straight = train(_config(HUGE, f"budget.iterations={saved}"), runs_root=tmp_path / "ok")
    reference = RecurrentPolicy.load(straight / "policy.pt").to_vector()
    assert torch.equal(load_checkpoint(run_dir)["agent"]["net"]["actor.vector"], reference)
    # ... and it resumes (a user env's episodes start afresh, so the fault is 4 episodes away).
    resumed = train(_config(HUGE, f"budget.iterations={saved + 2}"), resume=run_dir)
    policy = RecurrentPolicy.load(resumed / "policy.pt").to_vector()
    assert torch.isfinite(policy).all() and not torch.equal(policy, reference)
