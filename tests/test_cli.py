"""The command line: exit codes, one-line errors, train / eval / envs / agents."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import yaml

import envs
from evolstm.network.policy import RecurrentPolicy
from evolstm.rollouts.evaluation import EVAL_STREAM, episode_seeds
from evolstm.run.checkpoint import load_checkpoint
from evolstm.run.cli import main
from tests.test_trainer import ENV_ID, reference_eval

REPO = Path(__file__).resolve().parents[1]


def _config_file(tmp_path: Path, **changes) -> Path:
    data = {
        "name": "cli",
        "env": {"id": ENV_ID},
        "agent": {"name": "fake"},
        "budget": {"iterations": 3},
        "eval": {"every": 2, "episodes": 3},
        "logging": {"wandb": {"mode": "disabled"}, "console": False},
        **changes,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evolstm", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def _assert_one_line_error(stderr: str, starts: str) -> None:
    assert "Traceback" not in stderr
    assert stderr.count("\n") == 1 and stderr.endswith("\n"), stderr
    assert stderr.startswith(f"error: {starts}"), stderr


def test_unknown_key_exits_2_with_one_line_and_no_traceback(tmp_path):
    config = _config_file(tmp_path, polcy={"hidden": 4})
    done = _run_module("train", str(config), "--runs-dir", str(tmp_path / "runs"))
    assert done.returncode == 2
    _assert_one_line_error(done.stderr, "unknown key 'polcy'; valid keys at the top level: agent,")
    assert not (tmp_path / "runs").exists()


def test_missing_config_file_exits_2(tmp_path):
    done = _run_module("train", str(tmp_path / "missing.yaml"))
    assert done.returncode == 2
    _assert_one_line_error(done.stderr, "config file not found")


def test_usage_errors_exit_2(capsys):
    assert main(["train"]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["envs", "extra=1"]) == 2
    assert "usage: evolstm" in capsys.readouterr().err
    assert main(["--help"]) == 0


def test_unknown_agent_in_process(tmp_path, fake_agent, capsys):
    config = _config_file(tmp_path, agent={"name": "ppoo"})
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert err == "error: unknown agent.name 'ppoo'; available agents: fake\n"


def test_train_with_overrides_after_options_then_eval(tmp_path, fake_agent, capsys):
    config = _config_file(tmp_path)
    runs = tmp_path / "runs"
    argv = ["train", str(config), "--runs-dir", str(runs), "budget.iterations=2", "seed=5"]
    assert main(argv) == 0
    (run_dir,) = runs.iterdir()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["seed"] == 5
    capsys.readouterr()

    before = sorted((p, p.stat().st_mtime_ns, p.stat().st_size) for p in run_dir.rglob("*"))
    assert main(["eval", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    mean, std = summary["eval_return_mean"], summary["eval_return_std"]
    assert f"eval return {mean:.4g} ± {std:.4g} over 3 episodes (seed 5)" in capsys.readouterr().out

    latest = run_dir / "checkpoints" / "latest.pt"
    assert main(["eval", str(latest), "--episodes", "2", "--seed", "9"]) == 0
    vector = load_checkpoint(run_dir)["policy_vector"]
    policy = RecurrentPolicy.load(run_dir / "policy.pt")
    policy.from_vector(vector)
    expected = reference_eval(policy, episode_seeds(9, EVAL_STREAM, 0, 2))
    out = capsys.readouterr().out
    assert f"eval return {expected.mean():.4g} ± {expected.std():.4g} over 2 episodes" in out
    after = sorted((p, p.stat().st_mtime_ns, p.stat().st_size) for p in run_dir.rglob("*"))
    assert after == before, "eval writes nothing"


def test_eval_of_a_missing_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope")]) == 2
    _assert_one_line_error(capsys.readouterr().err, "no run folder, checkpoint or policy file")


def test_envs_lists_every_task_with_its_spaces(capsys):
    assert main(["envs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    ids = envs.task_ids()
    assert len(lines) == len(ids) + 1
    for task_id, line in zip(ids, lines[:-1], strict=True):
        env = gym.make(task_id)
        assert line.split()[0] == task_id
        assert f"observation {env.observation_space}" in line
        assert line.endswith(f"action {env.action_space}")
    assert "any registered gymnasium id" in lines[-1] and "'module:Class'" in lines[-1]


def test_agents_lists_names_with_their_family(fake_agent, capsys):
    assert main(["agents"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("fake ")]
    assert line.split()[:3] == ["fake", "es", "tests.conftest:FakeAgent"]


@pytest.mark.parametrize("address", ["nowhere", "ray:/x"])
def test_bad_ray_address_is_a_config_error(tmp_path, fake_agent, capsys, address):
    config = _config_file(tmp_path)
    argv = ["train", str(config), "--ray-address", address, "--runs-dir", str(tmp_path / "r")]
    assert main(argv) == 2
    assert not (tmp_path / "r").exists()
    _assert_one_line_error(capsys.readouterr().err, f"ray address {address!r}")
