"""A user's daily workflow: their own module in the current folder, resuming with no config,
errors that name the key or wrapper at fault, ``--version``, ``budget.stop_when_solved``
and the start line saying where the run executes."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import pytest
import yaml

import evolstm
from evolstm.run import registry
from evolstm.run.cli import main
from tests.conftest import FakeAgent
from tests.test_cli import _assert_one_line_error, _config_file
from tests.test_trainer import _lines, _without_timing

USER_MODULE = """
import gymnasium as gym
import numpy as np


class ThreeSteps(gym.Env):
    '''Three steps of reward 2, whatever the action: every policy returns exactly 6.'''

    def __init__(self, reward=2.0):
        self.observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.reward = reward

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(2, np.float32), self.reward, self.t >= 3, False, {}
"""


def test_a_module_in_the_current_folder_trains_without_pythonpath(
    tmp_path, fake_agent, monkeypatch, capsys
):
    # The console script's sys.path: the script's folder, not the current one.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    (tmp_path / "my_task_module.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_task_module", raising=False)
    config = _config_file(tmp_path, env={"id": "my_task_module:ThreeSteps"})
    assert main(["train", str(config), "--runs-dir", "runs"]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval_return_mean"] == 6.0 and summary["eval_return_std"] == 0.0
    assert sys.path[0] == str(tmp_path)
    sys.modules.pop("my_task_module", None)


def test_resume_needs_no_config_and_continues_exactly(tmp_path, fake_agent):
    config = _config_file(tmp_path, budget={"iterations": 4})
    assert main(["train", str(config), "--runs-dir", str(tmp_path / "straight")]) == 0
    argv = ["train", str(config), "--runs-dir", str(tmp_path / "split"), "budget.iterations=2"]
    assert main(argv) == 0
    (straight,) = (tmp_path / "straight").iterdir()
    (split,) = (tmp_path / "split").iterdir()
    assert main(["train", "--resume", str(split), "budget.iterations=4"]) == 0
    assert [line["iteration"] for line in _lines(split)] == [1, 2, 3, 4]
    assert _without_timing(_lines(split)) == _without_timing(_lines(straight))


def test_train_without_config_or_resume_is_a_one_line_error(capsys):
    assert main(["train"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "train needs a CONFIG.yaml, or --resume")


class OtherFake(FakeAgent):
    """A second agent with options of its own."""

    class Options(FakeAgent.Options):
        active: bool = True


def test_changing_agent_name_on_resume_names_agent_name(tmp_path, fake_agent, monkeypatch, capsys):
    agents = {"fake": FakeAgent, "other": OtherFake}
    monkeypatch.setattr(registry, "available_agents", lambda: agents)
    config = _config_file(tmp_path, budget={"iterations": 1})
    assert main(["train", str(config), "--runs-dir", str(tmp_path / "runs")]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert main(["train", "--resume", str(run_dir), "agent.name=other"]) == 2
    _assert_one_line_error(
        capsys.readouterr().err, f"--resume {run_dir}: the run used agent.name='fake'"
    )


def test_a_wrong_wrapper_kwarg_is_blamed_on_that_wrapper(tmp_path, fake_agent, capsys):
    wrappers = [
        {"path": "gymnasium.wrappers:RecordEpisodeStatistics"},
        {"path": "gymnasium.wrappers:TimeLimit", "kwargs": {"max_steps": 3}},
    ]
    config = _config_file(tmp_path, env={"id": "evolstm/CartPoleNoVel-v0", "wrappers": wrappers})
    assert main(["train", str(config), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    _assert_one_line_error(err, "env.wrappers[1].kwargs {'max_steps': 3} rejected by wrapper")
    assert "'gymnasium.wrappers:TimeLimit'" in err and "env.kwargs" not in err


def test_a_wrong_env_kwarg_is_still_blamed_on_env_kwargs(tmp_path, fake_agent, capsys):
    config = _config_file(tmp_path, env={"id": "evolstm/CartPoleNoVel-v0", "kwargs": {"obs": 1}})
    assert main(["train", str(config), "--runs-dir", str(tmp_path / "runs")]) == 2
    _assert_one_line_error(capsys.readouterr().err, "env.kwargs {'obs': 1} rejected by")


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"evolstm {evolstm.__version__}\n"


@pytest.fixture
def easy_task():
    """Cart-pole without velocities registered with a threshold any policy meets."""
    env_id = "evolstm-test/EasyCartPole-v0"
    if env_id not in gym.registry:
        gym.register(
            env_id,
            entry_point="envs.cartpole:CartPoleNoVelEnv",
            max_episode_steps=500,
            reward_threshold=1.0,
        )
    return env_id


def test_stop_when_solved_ends_at_the_first_solving_evaluation(tmp_path, fake_agent, easy_task):
    common = {"env": {"id": easy_task}, "eval": {"every": 2, "episodes": 2}}
    for stop, runs in ((True, "stop"), (False, "full")):
        config = _config_file(
            tmp_path, budget={"iterations": 7, "stop_when_solved": stop}, **common
        )
        assert main(["train", str(config), "--runs-dir", str(tmp_path / runs)]) == 0
    (stopped,) = (tmp_path / "stop").iterdir()
    (full,) = (tmp_path / "full").iterdir()
    # Every return is >= 1 here: the first evaluation (iteration 2) solves the task.
    assert [line["iteration"] for line in _lines(stopped)] == [1, 2]
    assert [line.get("eval_solved") for line in _lines(stopped)] == [None, True]
    assert len(_lines(full)) == 7
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["solved"] is True and summary["iterations"] == 2
    assert _without_timing(_lines(stopped)) == _without_timing(_lines(full)[:2])


def test_the_console_says_where_the_run_executes(tmp_path, fake_agent, capsys):
    config = _config_file(tmp_path, logging={"wandb": {"mode": "disabled"}, "console": True})
    assert main(["train", str(config), "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "evaluation in-process (no Ray)" in out
    saved = yaml.safe_load(next((tmp_path / "runs").iterdir()).joinpath("config.yaml").read_text())
    assert saved["ray"]["address"] is None
    assert Path(config).is_file()


def test_success_on_change_tests_each_new_policy_once_and_stops_at_a_pass(
    tmp_path, fake_agent, easy_task, monkeypatch
):
    from evolstm.rollouts import success

    tested: list[tuple[bytes, bool]] = []

    def fake_test(factory, spec, vector, obs_norm=None, *, stop_early=False):
        tested.append((vector.numpy().tobytes(), stop_early))
        return {"solved": len(tested) == 3, "tests_so_far": len(tested)}

    monkeypatch.setattr(success, "task_success", fake_test)
    config = _config_file(
        tmp_path,
        env={"id": easy_task},
        budget={"iterations": 7, "stop_when_solved": True},
        eval={"every": 5, "episodes": 2, "success_on_change": True},
    )
    assert main(["train", str(config), "--runs-dir", str(tmp_path / "runs")]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    lines = _lines(run)
    # the fake agent's policy changes every iteration: tested at 1, 2, 3; the pass at 3
    # brings an evaluation there (eval.every is 5) and ends the run
    assert [line["iteration"] for line in lines] == [1, 2, 3]
    assert [line["success_test_passed"] for line in lines] == [0.0, 0.0, 1.0]
    assert [line.get("eval_solved") for line in lines] == [None, None, True]
    assert len({vector for vector, _ in tested}) == 3 and all(early for _, early in tested)
    summary = json.loads((run / "summary.json").read_text())
    # the evaluation and the summary reused the passing screen: no fourth test
    assert summary["solved"] is True and summary["tests_so_far"] == 3 and len(tested) == 3
