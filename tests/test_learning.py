"""End-to-end learning through the public trainer, with fixed seeds and bounded budgets:
CartPoleNoVel needs memory, and an env no built-in code knows trains via ``module:Class``."""

from __future__ import annotations

import json

import pytest

from evolstm.network.policy import RecurrentPolicy
from evolstm.run.config import apply_overrides, validate_config
from evolstm.run.trainer import train

PGPE = {
    "name": "pgpe",
    "popsize": 64,
    "episodes": 4,
    "stdev_init": 0.5,
    "center_lr": 0.2,
}


def _train(tmp_path, data: dict, *overrides: str) -> dict:
    base = {
        "seed": 0,
        "eval": {"every": 1000, "episodes": 32},
        "checkpoint": {"every": 1000},
        "logging": {"wandb": {"mode": "disabled"}, "console": False},
    }
    cfg = validate_config(apply_overrides({**base, **data}, overrides))
    run_dir = train(cfg, runs_root=tmp_path)
    return json.loads((run_dir / "summary.json").read_text()) | {"run_dir": run_dir}


@pytest.fixture(scope="module")
def cartpole_runs(tmp_path_factory):
    """The same PGPE budget (80 generations) for an LSTM and for the same network with its
    recurrent state zeroed at every step (a feed-forward policy)."""
    root = tmp_path_factory.mktemp("runs")
    data = {
        "name": "novel",
        "env": {"id": "evolstm/CartPoleNoVel-v0"},
        "policy": {"cell": "lstm", "hidden": 16},
        "agent": PGPE,
        "budget": {"iterations": 80},
    }
    return {
        "lstm": _train(root, data),
        "feedforward": _train(root, data, "policy.memory=false", "name=ff"),
    }


def test_lstm_solves_cartpole_without_velocities(cartpole_runs):
    summary = cartpole_runs["lstm"]
    assert summary["eval_return_mean"] >= 475, summary
    assert summary["solved"] is True


def test_feedforward_policy_stays_well_below_under_the_same_budget(cartpole_runs):
    lstm, ff = cartpole_runs["lstm"], cartpole_runs["feedforward"]
    assert ff["eval_return_mean"] < 0.4 * lstm["eval_return_mean"], (ff, lstm)
    assert ff["iterations"] == lstm["iterations"]


def test_saved_policy_reproduces_the_final_evaluation(cartpole_runs):
    from evolstm.run.trainer import eval_seeds
    from tests.test_trainer import reference_eval

    summary = cartpole_runs["lstm"]
    policy = RecurrentPolicy.load(summary["run_dir"] / "policy.pt")
    assert policy.obs_norm is not None, "observation normaliser must travel with the policy"
    returns = reference_eval(policy, eval_seeds(0, 32))
    assert abs(returns.mean() - summary["eval_return_mean"]) < 1e-9


def test_user_env_with_discrete_observations_trains_via_module_class(tmp_path):
    summary = _train(
        tmp_path,
        {
            "name": "cue",
            "env": {"id": "tests.fixture_envs:CueRecallEnv", "kwargs": {"delay": 3}},
            "policy": {"hidden": 8},
            "agent": {**PGPE, "popsize": 32, "episodes": 16},
            "budget": {"iterations": 60},
        },
    )
    assert summary["eval_success_rate"] >= 0.95, summary
    assert summary["solved"] is None  # no reward threshold registered for a user class
