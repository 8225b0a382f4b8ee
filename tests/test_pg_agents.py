"""The policy-gradient agents through the trainer: exact resume, state as data, Ray collection
equal to in-process, the registry entries."""

from __future__ import annotations

import io
import json

import pytest
import torch

from evolstm.network.policy import RecurrentPolicy
from evolstm.run.config import apply_overrides, validate_config
from evolstm.run.registry import available_agents
from evolstm.run.trainer import train

BASE = {
    "ppo": {"num_envs": 3, "n_steps": 20, "seq_len": 8, "epochs": 2, "minibatches": 2},
    "rpg": {"num_envs": 3, "max_steps": 60},
}


def _config(agent: str, *overrides: str, env: str = "evolstm/CartPoleNoVel-v0"):
    data = {
        "name": agent,
        "seed": 4,
        "env": {"id": env},
        "policy": {"hidden": 6},
        "agent": {"name": agent, **BASE[agent]},
        "budget": {"iterations": 6},
        "eval": {"every": 3, "episodes": 2},
        "checkpoint": {"every": 3},
        "logging": {"wandb": {"mode": "disabled"}, "console": False},
    }
    return validate_config(apply_overrides(data, overrides))


def _lines(run_dir) -> list[dict]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in d.items() if k not in ("wall_time", "steps_per_s")} for d in lines]


def _deterministic(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in d.items() if not k.startswith("time_")} for d in lines]


def test_registered_in_family_pg() -> None:
    agents = available_agents()
    assert agents["ppo"].family == "pg" and agents["rpg"].family == "pg"
    for name in ("ppo", "rpg"):
        fields = agents[name].Options.model_fields
        assert all(f.description for f in fields.values()), name


@pytest.mark.parametrize(
    ("agent", "env", "extra"),
    [
        ("ppo", "evolstm/CartPoleNoVel-v0", ()),
        # the return normaliser's statistics, the ReLU readout layers and the random
        # sequence cut's draws resume too
        (
            "ppo",
            "evolstm/CartPoleNoVel-v0",
            ("agent.reward_norm=true", "policy.readout_hidden=[5]", "agent.random_cut=true"),
        ),
        ("rpg", "evolstm/PendulumNoVel-v0", ()),
    ],
)
def test_resume_gives_bitwise_the_same_policy(tmp_path, agent: str, env: str, extra) -> None:
    straight = train(_config(agent, *extra, env=env), runs_root=tmp_path / "a")
    half = train(_config(agent, "budget.iterations=3", *extra, env=env), runs_root=tmp_path / "b")
    resumed = train(_config(agent, *extra, env=env), resume=half)
    a = RecurrentPolicy.load(straight / "policy.pt").to_vector()
    b = RecurrentPolicy.load(resumed / "policy.pt").to_vector()
    assert torch.equal(a, b)
    assert _deterministic(_lines(straight)) == _deterministic(_lines(resumed))
    # The agent's state is data: tensors and plain Python, loadable without unpickling code.
    blob = torch.load(half / "checkpoints" / "latest.pt", weights_only=False)
    buffer = io.BytesIO()
    torch.save(blob["agent"], buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=True)


def test_one_ray_actor_collects_what_the_learner_collects_in_process(tmp_path) -> None:
    local = train(_config("ppo", "budget.iterations=3"), runs_root=tmp_path / "a")
    remote = train(
        _config("ppo", "budget.iterations=3", "ray.address=local", "ray.num_workers=1"),
        runs_root=tmp_path / "b",
    )
    assert _deterministic(_lines(local)) == _deterministic(_lines(remote))
    a = RecurrentPolicy.load(local / "policy.pt").to_vector()
    assert torch.equal(a, RecurrentPolicy.load(remote / "policy.pt").to_vector())
