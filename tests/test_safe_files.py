"""Policies and checkpoints are data: they load with ``weights_only=True``, EvoTorch searcher
state goes through an exact allowlist, and a file crafted to run a command runs nothing."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import pytest
import torch
import yaml

from agents.es import SEARCHER_ALLOWLIST
from evolstm.agent import AgentContext
from evolstm.errors import FileFormatError
from evolstm.network.layout import PolicySpec
from evolstm.network.policy import RecurrentPolicy
from evolstm.rollouts.env_factory import resolve_env
from evolstm.rollouts.evaluation import PopulationEvaluator
from evolstm.run import safe_pickle
from evolstm.run.checkpoint import load_checkpoint
from evolstm.run.cli import main
from evolstm.run.registry import available_agents

CARTPOLE = resolve_env("evolstm/CartPoleNoVel-v0")
SIX = ["cem", "cmaes", "pgpe", "snes", "xnes"]  # the EvoTorch searchers (CoSyNE is own)


class Payload:
    """Unpickling this runs ``touch MARKER`` (a real shell command)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _agent(name: str):
    env = CARTPOLE.make()
    spec = PolicySpec(env.observation_space, env.action_space, hidden=4)
    cls = available_agents()[name]
    ctx = AgentContext(spec, 1, PopulationEvaluator(CARTPOLE, spec), CARTPOLE.make_vector)
    return cls(cls.Options(popsize=6, stdev_init=0.2), ctx)


def test_every_evotorch_searcher_round_trips_through_a_weights_only_file_and_exact_allowlist(
    tmp_path,
):
    used: set[str] = set()
    for name in SIX:
        agent = _agent(name)
        agent.step()
        torch.save(agent.state_dict(), tmp_path / f"{name}.pt")
        state = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        safe_pickle.loads(state["searcher"], SEARCHER_ALLOWLIST, used)
        twin = _agent(name)
        twin.load_state_dict(state)
        untimed = [
            {k: v for k, v in m.items() if not k.startswith("time_")}
            for m in (twin.step(), agent.step())
        ]
        assert untimed[0] == untimed[1], name
        torch.testing.assert_close(twin.policy_vector(), agent.policy_vector(), rtol=0, atol=0)
    assert used - safe_pickle.SAFE_CALLABLES == SEARCHER_ALLOWLIST, "allowlist = what is used"


@pytest.mark.parametrize(
    "qualname", ["os.system", "builtins.eval", "builtins.getattr", "subprocess.Popen"]
)
def test_safe_unpickler_refuses_any_other_global(tmp_path, qualname):
    module, name = qualname.rsplit(".", 1)
    raw = b"\x80\x04\x8c" + bytes([len(module)]) + module.encode()
    raw += b"\x8c" + bytes([len(name)]) + name.encode() + b"\x93\x8c\x04true\x85R."
    data = {"pickle": torch.frombuffer(bytearray(raw), dtype=torch.uint8), "tensors": []}
    with pytest.raises(safe_pickle.UnsafePickleError, match=f"'{qualname}' is not on the allow"):
        safe_pickle.loads(data, SEARCHER_ALLOWLIST)


def test_safe_unpickler_refuses_calling_an_allowlisted_class():
    # REDUCE with an allowlisted class: allowed to be *built* (NEWOBJ), never *called*.
    raw = pickle.dumps(("agents._evotorch", "EvaluatorProblem"), protocol=4)  # two strings
    assert pickle.loads(raw)
    payload = b"\x80\x04\x8c\x10agents._evotorch\x8c\x10EvaluatorProblem\x93)R."
    data = {"pickle": torch.frombuffer(bytearray(payload), dtype=torch.uint8), "tensors": []}
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"calling .* is not allowed"):
        safe_pickle.loads(data, SEARCHER_ALLOWLIST)


def _run(tmp_path: Path):
    config = {
        "name": "safe",
        "seed": 2,
        "env": {"id": "evolstm/CartPoleNoVel-v0"},
        "policy": {"hidden": 4},
        "agent": {"name": "pgpe", "popsize": 6},
        "budget": {"iterations": 2},
        "eval": {"every": 2, "episodes": 2},
        "checkpoint": {"every": 1},
        "logging": {"wandb": {"mode": "disabled"}, "console": False},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--runs-dir", str(tmp_path / "runs")]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    return path, run_dir


def _one_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_crafted_files_run_nothing_in_eval_resume_and_policy_load(tmp_path, capsys):
    config, run_dir = _run(tmp_path)
    capsys.readouterr()
    marker = tmp_path / "pwned"
    policy_file, latest = run_dir / "policy.pt", run_dir / "checkpoints" / "latest.pt"
    torch.save({"format": "evolstm.policy/2", "spec": Payload(marker)}, policy_file)
    torch.save({"format": "evolstm.checkpoint/1", "agent": Payload(marker)}, latest)

    with pytest.raises(FileFormatError, match=r"policy\.pt: not a valid evolstm policy file"):
        RecurrentPolicy.load(policy_file)
    assert main(["eval", str(policy_file)]) == 2
    _one_line(capsys.readouterr().err, str(policy_file), "refers to code", "system")
    assert main(["eval", str(latest)]) == 2
    _one_line(capsys.readouterr().err, str(latest), "refers to code")
    argv = ["train", str(config), "--resume", str(run_dir), "budget.iterations=3"]
    assert main(argv) == 2
    _one_line(capsys.readouterr().err, str(latest), "not a valid evolstm checkpoint")
    # a checkpoint that is valid data but whose searcher pickle names os.system
    raw = b"\x80\x04\x8c\x05posix\x8c\x06system\x93\x8c\x04true\x85R."
    blob = torch.load(run_dir / "checkpoints" / "ckpt-000002.pt", weights_only=True)
    blob["agent"]["searcher"]["pickle"] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    torch.save(blob, latest)
    assert main(argv) == 2
    _one_line(capsys.readouterr().err, str(latest), "agent state rejected", "'posix.system'")
    assert not marker.exists(), "the payload ran"


def test_eval_of_a_bare_policy_file_imports_no_module_it_names(tmp_path, capsys, monkeypatch):
    _, run_dir = _run(tmp_path)
    capsys.readouterr()
    policy = RecurrentPolicy.load(run_dir / "policy.pt")
    assert policy.metadata["env"]["id"] == "evolstm/CartPoleNoVel-v0"
    bare = tmp_path / "shared" / "policy.pt"
    bare.parent.mkdir()
    (run_dir / "policy.pt").rename(bare)
    assert main(["eval", str(bare), "--episodes", "2"]) == 0
    assert "evolstm/CartPoleNoVel-v0: eval return" in capsys.readouterr().out

    marker = tmp_path / "imported"
    (tmp_path / "evilenv.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    policy.save(bare, {"env": {"id": "evilenv:Env", "kwargs": {}, "wrappers": []}})
    assert main(["eval", str(bare)]) == 2
    _one_line(capsys.readouterr().err, str(bare), "would import 'evilenv:Env'", "--env")
    assert not marker.exists() and "evilenv" not in sys.modules
    # naming the env on the command line is the user's choice
    assert main(["eval", str(bare), "--env", "evolstm/CartPoleNoVel-v0", "--episodes", "1"]) == 0


def test_checkpoints_hold_only_data(tmp_path):
    _, run_dir = _run(tmp_path)
    blob = load_checkpoint(run_dir)
    assert isinstance(blob["agent"]["searcher"]["pickle"], torch.Tensor)
    assert blob["iteration"] == 2
