"""Task-defined success tests and the trainer's ``solved``."""

from __future__ import annotations

import json

import numpy as np

from envs.pole_balancing import PoleBalancingEnv
from envs.pole_success import balance_steps
from envs.tmaze import TMazeEnv
from evolstm.run.config import validate_config
from evolstm.run.trainer import train

NORTH, EAST, SOUTH = 0, 1, 2


def _tmaze_oracle():
    """Remembers the road sign (011 = North) and walks East until the junction."""
    memory = {}

    def act(obs, episode_start):
        obs = np.asarray(obs)
        for i in np.flatnonzero(episode_start):
            memory[i] = NORTH if tuple(obs[i]) == (0, 1, 1) else SOUTH
        at_junction = (obs == [0, 1, 0]).all(axis=1)
        return np.array([memory[i] if at_junction[i] else EAST for i in range(len(obs))])

    return act


def _always(action):
    return lambda: lambda obs, start: np.full(len(obs), action)


def test_tmaze_success_needs_both_goal_sides():
    env = TMazeEnv(length=6)
    assert env.success_test(_tmaze_oracle) == {"solved": True, "goals_found": 2}
    memoryless = env.success_test(
        lambda: lambda obs, start: np.where((np.asarray(obs) == [0, 1, 0]).all(axis=1), NORTH, EAST)
    )
    assert memoryless == {"solved": False, "goals_found": 1}


def test_balance_steps_matches_the_single_env():
    push = lambda obs, start: np.full((len(obs), 1), 0.3, dtype=np.float32)  # noqa: E731
    env = PoleBalancingEnv(poles=2, velocities=False)
    env.reset(seed=0)
    steps = 0
    while not env.step(np.array([0.3], dtype=np.float32))[2]:
        steps += 1
    assert balance_steps(push) == steps
    result = env.success_test(lambda: push)
    assert result["balance_steps"] == steps and not result["solved"]
    assert 0 <= result["generalization"] <= 625


def test_trainer_solved_comes_from_the_task(tmp_path):
    cfg = validate_config(
        {
            "name": "t",
            "env": {"id": "evolstm/TMaze-v0", "kwargs": {"length": 4}},
            "policy": {"hidden": 2},
            "agent": {"name": "esp", "subpop_size": 12, "trials": 4, "episodes": 16},
            "budget": {"iterations": 40},
            "eval": {"every": 40, "episodes": 8},
            "logging": {"console": False, "wandb": {"mode": "disabled"}},
        }
    )
    summary = json.loads((train(cfg, runs_root=tmp_path) / "summary.json").read_text())
    # the registered TMaze has no reward_threshold: "solved" can only come from the task
    assert summary["solved"] is (summary["goals_found"] == 2)
    assert summary["solved"] is True


def test_stop_early_gives_the_full_verdict_and_skips_the_costly_parts():
    # A constant push fails within 1,000 steps from the standard start: the screen stops there
    # (no generalisation batch, no long run) and agrees with the full test.
    push = lambda: lambda obs, start: np.full((len(obs), 1), 0.3, dtype=np.float32)  # noqa: E731
    env = PoleBalancingEnv(poles=2, velocities=False)
    full = env.success_test(push)
    screened = env.success_test(push, stop_early=True)
    assert full["generalization"] < 200 and not full["solved"]
    assert full["balance_steps"] < 1000
    assert screened == {
        "solved": False,
        "balance_steps": full["balance_steps"],
        "generalization": None,
    }


def test_success_tests_run_once_per_policy(monkeypatch):
    import torch

    from evolstm.network.layout import PolicySpec, build_layout
    from evolstm.rollouts import success
    from evolstm.rollouts.env_factory import resolve_env

    calls = []

    def fake(factory, spec, vector, obs_norm=None, *, stop_early=False):
        calls.append((float(vector[0]), stop_early))
        return {"solved": float(vector[0]) > 0, "part": not stop_early}

    monkeypatch.setattr(success, "task_success", fake)
    factory = resolve_env("evolstm/DoublePoleNoVel-v0")
    env = factory.make()
    spec = PolicySpec(env.observation_space, env.action_space, hidden=2)
    tests = success.SuccessTests(factory, spec)
    a, b = torch.zeros(build_layout(spec).size), torch.ones(build_layout(spec).size)
    assert tests(a, stop_early=True) == {"solved": False, "part": False}
    assert tests(a, stop_early=True)["solved"] is False  # cached
    assert tests(a) == {"solved": False, "part": True}  # a failed screen is partial: re-run
    assert tests(a, stop_early=True)["part"] is True  # the full result serves a screen
    assert tests(b, stop_early=True) == {"solved": True, "part": False}
    assert tests(b)["solved"] is True  # a passed screen ran every part: reused
    assert calls == [(0.0, True), (0.0, False), (1.0, True)]
    assert tests.runs == 3
