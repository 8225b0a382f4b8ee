"""The trainer with a deterministic fake agent (run folder, budget, exact resume, W&B offline)
and the loggers it fans out to."""

from __future__ import annotations

import io
import itertools
import json
import math
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from rich.console import Console

from evolstm.errors import ConfigError
from evolstm.network.policy import RecurrentPolicy
from evolstm.rollouts.evaluation import EVAL_STREAM, TRAIN_STREAM, episode_seeds
from evolstm.run.checkpoint import load_checkpoint
from evolstm.run.config import RunConfig, apply_overrides, load_config, validate_config
from evolstm.run.loggers import ConsoleLogger, FanOutLogger, JsonlLogger
from evolstm.run.trainer import train

ENV_ID = "evolstm/CartPoleNoVel-v0"
TIMING_KEYS = ("wall_time", "steps_per_s")


def _config(*overrides: str) -> RunConfig:
    data = {
        "name": "t",
        "seed": 3,
        "env": {"id": ENV_ID},
        "agent": {"name": "fake"},
        "budget": {"iterations": 5},
        "eval": {"every": 2, "episodes": 3},
        "checkpoint": {"every": 2},
        "logging": {"wandb": {"mode": "disabled"}, "console": False},
    }
    return validate_config(apply_overrides(data, overrides))


def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _without_timing(lines: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in line.items() if k not in TIMING_KEYS and not k.startswith("time_")}
        for line in lines
    ]


def reference_eval(policy: RecurrentPolicy, seeds: list[int]) -> np.ndarray:
    """Returns of one policy on single envs, one seed at a time (independent of the evaluator)."""
    returns = []
    for seed in seeds:
        env = gym.make(ENV_ID)
        obs, _ = env.reset(seed=seed)
        state, total, done = policy.init_state(1), 0.0, False
        while not done:
            action, state = policy.act(np.asarray(obs)[None], state)
            obs, reward, terminated, truncated, _ = env.step(action[0])
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return np.asarray(returns)


def test_run_folder_files_and_their_keys(tmp_path, fake_agent):
    cfg = _config()
    run_dir = train(cfg, runs_root=tmp_path)
    assert run_dir.parent == tmp_path and re.fullmatch(r"t-\d{8}-\d{6}", run_dir.name)
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoints",
        "config.yaml",
        "metrics.jsonl",
        "policy.pt",
        "summary.json",
    ]
    assert load_config(run_dir / "config.yaml") == cfg

    lines = _lines(run_dir)
    assert [line["iteration"] for line in lines] == [1, 2, 3, 4, 5]
    steps = [line["env_steps"] for line in lines]
    assert all(b > a for a, b in itertools.pairwise(steps)), steps
    for line in lines:
        assert {"iteration", "env_steps", "wall_time", "steps_per_s", "return_mean"} <= set(line)
    assert [line["iteration"] for line in lines if "eval_return_mean" in line] == [2, 4]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) == {
        "eval_return_mean",
        "eval_return_std",
        "env_steps",
        "wall_time",
        "solved",
        "iterations",
        "run_dir",
    }
    assert summary["env_steps"] == steps[-1] and summary["iterations"] == 5
    assert summary["run_dir"] == str(run_dir)

    policy = RecurrentPolicy.load(run_dir / "policy.pt")
    held_out = episode_seeds(cfg.seed, EVAL_STREAM, 0, cfg.eval.episodes)
    assert not set(held_out) & set(episode_seeds(cfg.seed, TRAIN_STREAM, 0, 1000))
    reference = reference_eval(policy, held_out)
    assert summary["eval_return_mean"] == pytest.approx(reference.mean(), abs=1e-9)
    assert summary["eval_return_std"] == pytest.approx(reference.std(), abs=1e-9)
    threshold = gym.spec(ENV_ID).reward_threshold
    assert summary["solved"] is bool(reference.mean() >= threshold)

    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["ckpt-000002.pt", "ckpt-000004.pt", "ckpt-000005.pt", "latest.pt"]
    latest = load_checkpoint(run_dir)
    assert latest["iteration"] == 5 and latest["env_steps"] == steps[-1]
    assert latest["config"] == cfg.to_yaml_dict()
    assert set(latest["rng"]) == {"python", "numpy", "torch"}
    assert [e["iteration"] for e in latest["eval_history"]] == [2, 4]
    torch.testing.assert_close(latest["policy_vector"], policy.to_vector(), rtol=0, atol=0)


def test_budget_in_env_steps_stops_at_the_first_iteration_that_reaches_it(tmp_path, fake_agent):
    run_dir = train(_config("budget.iterations=null", "budget.env_steps=150"), runs_root=tmp_path)
    steps = [line["env_steps"] for line in _lines(run_dir)]
    assert steps[-1] >= 150 and (len(steps) == 1 or steps[-2] < 150)


def test_resume_continues_exactly(tmp_path, fake_agent):
    straight = train(_config("budget.iterations=6"), runs_root=tmp_path / "straight")
    first_half = train(_config("budget.iterations=3"), runs_root=tmp_path / "split")
    resumed = train(_config("budget.iterations=6"), resume=first_half)
    assert resumed == first_half
    assert _without_timing(_lines(resumed)) == _without_timing(_lines(straight))
    torch.testing.assert_close(
        RecurrentPolicy.load(resumed / "policy.pt").to_vector(),
        RecurrentPolicy.load(straight / "policy.pt").to_vector(),
        rtol=0,
        atol=0,
    )
    summaries = [json.loads((d / "summary.json").read_text()) for d in (straight, resumed)]
    assert summaries[0]["eval_return_mean"] == summaries[1]["eval_return_mean"]


def test_interrupt_checkpoints_the_last_completed_iteration(tmp_path, fake_agent):
    straight = train(_config("budget.iterations=6"), runs_root=tmp_path / "straight")
    cfg = _config("budget.iterations=6", "checkpoint.every=10")
    fake_agent.interrupt_at = 4
    with pytest.raises(KeyboardInterrupt):
        train(cfg, runs_root=tmp_path / "crash")
    (run_dir,) = (tmp_path / "crash").iterdir()
    assert load_checkpoint(run_dir)["iteration"] == 3
    assert [line["iteration"] for line in _lines(run_dir)] == [1, 2, 3]
    fake_agent.interrupt_at = None
    train(cfg, resume=run_dir)
    assert _without_timing(_lines(run_dir)) == _without_timing(_lines(straight))


def test_resume_refuses_a_different_agent_config(tmp_path, fake_agent):
    run_dir = train(_config("budget.iterations=1"), runs_root=tmp_path)
    with pytest.raises(ConfigError, match=r"agent.popsize=3 .* 5"):
        train(_config("budget.iterations=2", "agent.popsize=5"), resume=run_dir)


def test_wandb_offline_stays_in_the_run_folder(tmp_path, fake_agent, quiet_wandb_home, monkeypatch):
    # Any attempt to reach W&B or a proxy would hit closed local ports.
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    cfg = _config("budget.iterations=2", "logging.wandb.mode=offline", "logging.wandb.group=cmp")
    run_dir = train(cfg, runs_root=tmp_path / "runs")
    (record,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data = record.read_bytes()
    for logged in (b"env_steps", b"time/return_mean", b"eval_return_mean", b"cmp", b"popsize"):
        assert logged in data, logged
    assert list(workdir.iterdir()) == []


# -- loggers ---------------------------------------------------------------------------------


def test_jsonl_logger_plain_values_and_resume_truncation(tmp_path):
    path = tmp_path / "metrics.jsonl"
    logger = JsonlLogger(path)
    for i in range(1, 6):
        logger.log({"iteration": i, "x": np.float32(i / 2), "bad": math.nan}, i)
    logger.close()
    assert json.loads(path.read_text().splitlines()[2]) == {"iteration": 3, "x": 1.5, "bad": None}
    resumed = JsonlLogger(path, keep_up_to=3)
    resumed.log({"iteration": 4, "x": torch.tensor(9.0)}, 4)
    resumed.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2, 3, 4] and lines[-1]["x"] == 9.0


def test_console_logger_prints_every_n_iterations_when_not_a_terminal():
    out = io.StringIO()
    logger = ConsoleLogger(every=3, console=Console(file=out, force_terminal=False, width=60))
    for i in range(1, 8):
        metrics = {"iteration": i, "env_steps": 10 * i, "wall_time": 61.0, "steps_per_s": 1234.4}
        metrics |= {"return_mean": i - 1, "return_max": 8 - i}
        if i == 6:
            metrics["eval_return_mean"] = 2.5
        logger.log(metrics, i)
    logger.summary(
        {"eval_return_mean": 1.5, "eval_return_std": 0.5, "solved": True, "env_steps": 1000}
        | {"wall_time": 2.0, "run_dir": "runs/a-very-long-folder-name-that-must-not-wrap-at-60"}
    )
    assert out.getvalue().splitlines() == [
        "it 1 | best 7 | mean 0 | eval - | 10 steps | 1,234 steps/s | 0:01:01",
        "it 3 | best 7 | mean 2 | eval - | 30 steps | 1,234 steps/s | 0:01:01",
        "it 6 | best 7 | mean 5 | eval 2.5 | 60 steps | 1,234 steps/s | 0:01:01",
        "done: eval return 1.5 ± 0.5 (solved) | 1,000 env steps | 2.0 s | "
        "runs/a-very-long-folder-name-that-must-not-wrap-at-60",
    ]


def test_fan_out_closes_every_logger_even_when_one_fails():
    closed = []

    class Recorder:
        def __init__(self, name, fail=False):
            self.name, self.fail, self.seen = name, fail, []

        def log(self, metrics, step):
            self.seen.append(step)

        def close(self):
            closed.append(self.name)
            if self.fail:
                raise OSError(self.name)

    loggers = [Recorder("a", fail=True), Recorder("b")]
    fan = FanOutLogger(loggers)
    fan.log({"iteration": 1}, 1)
    with pytest.raises(OSError, match="a"):
        fan.close()
    assert closed == ["a", "b"] and [r.seen for r in loggers] == [[1], [1]]
