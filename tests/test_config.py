"""Config loading: defaults, overrides, resolution, and a one-line error for each mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import envs
from evolstm.errors import ConfigError
from evolstm.run.config import DEFAULT_ENV_STEPS, apply_overrides, load_config, validate_config

MINIMAL = {"env": {"id": "evolstm/TMaze-v0"}, "agent": {"name": "fake"}}


def _write(tmp_path: Path, data, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _error(tmp_path: Path, data, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, data), overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_follow_the_design_contract(tmp_path, fake_agent):
    cfg = load_config(_write(tmp_path, MINIMAL))
    assert cfg.to_yaml_dict() == {
        "name": "run",
        "seed": 0,
        "env": {
            "id": "evolstm/TMaze-v0",
            "kwargs": {},
            "wrappers": [],
            "on_nan": "error",
            "max_episode_steps": None,
        },
        "policy": {
            "cell": "lstm",
            "hidden": 16,
            "layers": 1,
            "memory": True,
            "readout_hidden": [],
        },
        "agent": {"name": "fake", "popsize": 3, "episodes": 2, "sigma": 0.5},
        "budget": {
            "env_steps": DEFAULT_ENV_STEPS,
            "iterations": None,
            "seconds": None,
            "stop_when_solved": False,
        },
        "eval": {"every": 10, "episodes": 32, "success_on_change": False},
        "checkpoint": {"every": 10},
        "ray": {"address": None, "num_workers": 0, "shard_timeout_s": 600.0},
        "logging": {
            "wandb": {
                "mode": "offline",
                "project": "evolstm",
                "group": None,
                "init_timeout": 30.0,
            },
            "console": True,
        },
    }
    assert DEFAULT_ENV_STEPS == 2_000_000


def test_overrides_are_parsed_as_yaml_scalars(tmp_path, fake_agent):
    data = {**MINIMAL, "agent": {"name": "fake", "popsize": 8}, "budget": {"iterations": 5}}
    overrides = [
        "agent.popsize=32",
        "name=foo",
        "env.kwargs.length=20",
        "budget.seconds=1.5",
        "budget.iterations=null",
        "logging.console=false",
        "ray.address=ray://head:10001",
        "policy.cell=gru",
    ]
    cfg = load_config(_write(tmp_path, data), overrides)
    assert cfg.agent.options["popsize"] == 32
    assert cfg.name == "foo"
    assert cfg.env.kwargs == {"length": 20}
    assert cfg.budget.seconds == 1.5 and cfg.budget.iterations is None
    assert cfg.budget.env_steps is None, "an explicit budget replaces the default"
    assert cfg.logging.console is False
    assert cfg.ray.address == "ray://head:10001"
    assert cfg.policy.cell == "gru"


def test_apply_overrides_does_not_touch_its_input():
    data = {"agent": {"name": "x"}}
    out = apply_overrides(data, ["agent.popsize=4", "env.wrappers=[a:B]"])
    assert data == {"agent": {"name": "x"}}
    assert out == {"agent": {"name": "x", "popsize": 4}, "env": {"wrappers": ["a:B"]}}


def test_resolved_config_round_trips(tmp_path, fake_agent):
    data = {
        **MINIMAL,
        "env": {"id": "evolstm/TMaze-v0", "wrappers": ["gymnasium.wrappers:TimeLimit"]},
    }
    cfg = load_config(_write(tmp_path, data))
    again = load_config(_write(tmp_path, cfg.to_yaml_dict(), "resolved.yaml"))
    assert again == cfg
    assert cfg.to_yaml_dict()["env"]["wrappers"] == [
        {"path": "gymnasium.wrappers:TimeLimit", "kwargs": {}}
    ]


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_bad_yaml_names_the_line(tmp_path):
    message = _error(tmp_path, "env:\n  id: [unclosed\nagent: {name: fake}\n")
    assert "invalid YAML" in message and "line 3" in message


def test_unknown_top_level_key_lists_valid_keys(tmp_path, fake_agent):
    message = _error(tmp_path, {**MINIMAL, "polcy": {"hidden": 3}})
    assert "'polcy'" in message
    for key in ("name", "seed", "env", "policy", "agent", "budget", "eval", "ray", "logging"):
        assert key in message


def test_unknown_nested_key_lists_that_sections_keys(tmp_path, fake_agent):
    message = _error(tmp_path, MINIMAL, ["logging.wandb.projekt=x"])
    assert message == (
        "unknown key 'logging.wandb.projekt'; valid keys under 'logging.wandb': "
        "group, init_timeout, mode, project"
    )


def test_wrong_type_names_key_value_and_expectation(tmp_path, fake_agent):
    message = _error(tmp_path, MINIMAL, ["policy.hidden=many"])
    assert message == "policy.hidden: Input should be a valid integer, got 'many'"
    message = _error(tmp_path, MINIMAL, ["policy.cell=lstmm"])
    assert "'lstmm'" in message
    for cell in ("lstm", "peephole", "conv_peephole", "gru"):
        assert f"'{cell}'" in message
    assert "greater than or equal to 1" in _error(tmp_path, MINIMAL, ["policy.layers=0"])
    assert "ray.address" in _error(tmp_path, MINIMAL, ["ray.address=somewhere"])
    message = _error(tmp_path, {**MINIMAL, "policy": 5})
    assert message == (
        "policy: expected a mapping (keys: cell, hidden, layers, memory, readout_hidden), got 5"
    )


def test_missing_required_keys(tmp_path, fake_agent):
    message = _error(tmp_path, {"agent": {}})
    assert message == "missing required key 'env'; missing required key 'agent.name'"


def test_unknown_agent_lists_registered_names(tmp_path, fake_agent):
    message = _error(tmp_path, {**MINIMAL, "agent": {"name": "pgpee"}})
    assert message == "unknown agent.name 'pgpee'; available agents: fake"


def test_unknown_agent_option_lists_the_agents_keys(tmp_path, fake_agent):
    message = _error(tmp_path, MINIMAL, ["agent.popsiz=4"])
    assert message == (
        "unknown key 'agent.popsiz'; valid keys under 'agent': "
        "episodes, name, popsize, sigma (agent 'fake')"
    )
    assert "agent.popsize" in _error(tmp_path, MINIMAL, ["agent.popsize=1"])


def test_unknown_env_lists_tasks_and_other_forms(tmp_path, fake_agent):
    message = _error(tmp_path, MINIMAL, ["env.id=evolstm/TMase-v0"])
    assert "'evolstm/TMase-v0'" in message and "did you mean evolstm/TMaze-v0" in message
    for task_id in envs.task_ids():
        assert task_id in message
    assert "module:Class" in message and "module:factory" in message


@pytest.mark.parametrize("override", ["agentpopsize", "=3", "agent..popsize=3"])
def test_malformed_override(tmp_path, fake_agent, override):
    assert "key.sub=value" in _error(tmp_path, MINIMAL, [override])


def test_override_into_a_value(tmp_path, fake_agent):
    message = _error(tmp_path, MINIMAL, ["env.id.x=1"])
    assert message == "override 'env.id.x=1': 'env.id' is a value, not a section"


def test_validate_config_can_skip_agent_and_env():
    cfg = validate_config(
        {"env": {"id": "not/registered-v0"}, "agent": {"name": "nobody", "anything": 1}},
        check_agent=False,
        check_env=False,
    )
    assert cfg.agent.options == {"anything": 1}


def test_evolino_needs_the_linear_readout(tmp_path):
    data = {"env": {"id": "evolstm/MackeyGlass-v0"}, "agent": {"name": "evolino"}}
    message = _error(tmp_path, {**data, "policy": {"readout_hidden": [8]}})
    assert "policy.readout_hidden" in message and "evolino" in message
