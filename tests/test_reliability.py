"""Every bad input and fault a user can meet, as a table: each case runs the ``evolstm``
command line and checks its exit code, its one-line message and what it left behind.

Exit codes: 0 done, 1 the run failed (an env misbehaved; traceback in ``error.log``),
2 a configuration / usage / file error (nothing run, nothing written).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from evolstm.network.policy import POLICY_FORMAT, RecurrentPolicy
from evolstm.run.checkpoint import FORMAT, load_checkpoint
from evolstm.run.cli import main

FAULTY = "tests.fault_envs:FaultyEnv"
HTTP2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # what any gRPC server says first


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _config(tmp: Path, env: dict | None = None, **sections) -> Path:
    data = {
        "name": "rel",
        "seed": 1,
        "env": env or {"id": "evolstm/CartPoleNoVel-v0"},
        "policy": {"hidden": 3},
        "agent": {"name": "fake", "popsize": 3, "episodes": 2},
        "budget": {"iterations": 3},
        "eval": {"every": 100, "episodes": 2},
        "checkpoint": {"every": 1},
        "logging": {"wandb": {"mode": "disabled"}, "console": False},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _train(tmp: Path, *extra: str, **sections) -> list[str]:
    return ["train", str(_config(tmp, **sections)), "--runs-dir", str(tmp / "runs"), *extra]


def _trained_run(tmp: Path) -> Path:
    (tmp / "first").mkdir()
    assert main(_train(tmp / "first")) == 0
    (run_dir,) = (tmp / "first" / "runs").iterdir()
    return run_dir


def _run_dir(tmp: Path) -> Path:
    (run_dir,) = (tmp / "runs").iterdir()
    return run_dir


def _no_run_folder(tmp: Path) -> None:
    assert not (tmp / "runs").exists() or not any((tmp / "runs").iterdir())


def _env_failed_after_two_iterations(tmp: Path) -> None:
    run_dir = _run_dir(tmp)
    assert load_checkpoint(run_dir)["iteration"] == 2, "the last checkpoint is intact"
    assert "Traceback" in (run_dir / "error.log").read_text()
    assert not (run_dir / "summary.json").exists()


def _marker_untouched(tmp: Path) -> None:
    assert not (tmp / "pwned").exists(), "the payload ran"


def _policy_file(tmp: Path, **metadata) -> Path:
    policy = RecurrentPolicy.load(_trained_run(tmp) / "policy.pt")
    path = tmp / "shared.pt"
    policy.save(path, metadata)
    return path


def _listener(reply: bytes) -> int:
    """A TCP server on localhost that answers every connection with ``reply``."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        while True:
            conn, _ = server.accept()
            with conn:
                conn.recv(64)
                conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Path, pytest.MonkeyPatch], list[str]]  # -> argv
    code: int
    needles: tuple[str, ...] = ()  # in the single stderr line ({tmp} is the test folder)
    after: Callable[[Path], None] | None = None  # checks what the command left behind


def _crafted(tmp: Path, fmt: str) -> Path:
    path = tmp / "crafted.pt"
    torch.save(
        {"format": fmt, "spec": Payload(tmp / "pwned"), "agent": Payload(tmp / "pwned")}, path
    )
    return path


def _bytes_file(tmp: Path, data: bytes) -> Path:
    path = tmp / "file.pt"
    path.write_bytes(data)
    return path


def _torch_file(tmp: Path, blob: dict) -> Path:
    path = tmp / "file.pt"
    torch.save(blob, path)
    return path


def _truncated_policy(tmp: Path) -> Path:
    path = _trained_run(tmp) / "policy.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _wrong_vector(tmp: Path) -> Path:
    path = _trained_run(tmp) / "policy.pt"
    blob = torch.load(path, weights_only=True)
    blob["vector"] = blob["vector"][:-1]
    torch.save(blob, path)
    return path


def _evil_env_policy(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    (tmp / "evilenv.py").write_text(f"open({str(tmp / 'pwned')!r}, 'w').close()\n")
    mp.syspath_prepend(str(tmp))
    return _policy_file(tmp, env={"id": "evilenv:Env", "kwargs": {}, "wrappers": []})


def _tampered_latest(tmp: Path) -> list[str]:
    latest = _trained_run(tmp) / "checkpoints" / "latest.pt"
    data = bytearray(latest.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    latest.write_bytes(bytes(data))
    return _train(tmp, "--resume", str(latest.parent.parent))


def _crafted_latest(tmp: Path) -> list[str]:
    run_dir = _trained_run(tmp)
    torch.save(
        {"format": FORMAT, "agent": Payload(tmp / "pwned")}, run_dir / "checkpoints/latest.pt"
    )
    return _train(tmp, "--resume", str(run_dir))


def _no_wandb(mp: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise RuntimeError("wandb.init timed out: no network")

    mp.setattr("evolstm.run.loggers.WandbLogger", refuse)


def _no_auto_cluster(mp: pytest.MonkeyPatch) -> None:
    def nothing(*args):
        raise ConnectionError("Could not find any running Ray instance.")

    mp.setattr("ray._private.services.get_ray_address_from_environment", nothing)


def _fault(mode: str, **kwargs) -> dict:
    return {"id": FAULTY, "kwargs": {"mode": mode, "from_episode": 2, **kwargs}}


def _steps_per_iteration(tmp: Path) -> None:
    rows = [json.loads(x) for x in (_run_dir(tmp) / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [42, 84, 126], "3 members x 2 episodes x 7 steps"


def _penalized_run_finished(tmp: Path) -> None:
    summary = json.loads((_run_dir(tmp) / "summary.json").read_text())
    assert summary["iterations"] == 3


def _finished(tmp: Path) -> None:
    assert json.loads((_run_dir(tmp) / "summary.json").read_text())["iterations"] == 3


ENV_ID = f"env {FAULTY!r}"
CASES = [
    # -- files are data ---------------------------------------------------------------
    Case(
        "eval-crafted-policy",
        lambda t, mp: ["eval", str(_crafted(t, POLICY_FORMAT))],
        2,
        ("{tmp}/crafted.pt: not a valid evolstm", "refers to code", "system"),
        _marker_untouched,
    ),
    Case(
        "eval-crafted-checkpoint",
        lambda t, mp: ["eval", str(_crafted(t, FORMAT))],
        2,
        ("{tmp}/crafted.pt", "refers to code"),
        _marker_untouched,
    ),
    Case(
        "eval-random-bytes",
        lambda t, mp: ["eval", str(_bytes_file(t, bytes(range(256)) * 4))],
        2,
        ("{tmp}/file.pt: not a valid evolstm checkpoint or policy file: ",),
    ),
    Case(
        "eval-empty-file",
        lambda t, mp: ["eval", str(_bytes_file(t, b""))],
        2,
        ("{tmp}/file.pt", "unreadable"),
    ),
    Case(
        "eval-truncated-policy",
        lambda t, mp: ["eval", str(_truncated_policy(t))],
        2,
        ("policy.pt: not a valid evolstm", "unreadable"),
    ),
    Case(
        "eval-foreign-torch-file",
        lambda t, mp: ["eval", str(_torch_file(t, {"w": torch.ones(2)}))],
        2,
        ("{tmp}/file.pt: neither an evolstm checkpoint nor a policy file",),
    ),
    Case(
        "eval-malformed-policy",
        lambda t, mp: [
            "eval",
            str(
                _torch_file(t, {"format": POLICY_FORMAT, "spec": {"x": 1}, "vector": torch.ones(3)})
            ),
        ],
        2,
        ("{tmp}/file.pt: malformed policy file",),
    ),
    Case(
        "eval-policy-vector-wrong-length",
        lambda t, mp: ["eval", str(_wrong_vector(t))],
        2,
        ("policy.pt: malformed policy file", "vector of shape"),
    ),
    Case(
        "eval-bare-policy-imports-nothing",
        lambda t, mp: ["eval", str(_evil_env_policy(t, mp))],
        2,
        ("{tmp}/shared.pt: its env would import 'evilenv:Env'", "--env"),
        lambda t: (_marker_untouched(t), sys.modules.get("evilenv") is None or pytest.fail()),
    ),
    Case(
        "eval-bare-policy-wrappers-import-nothing",
        lambda t, mp: [
            "eval",
            str(_policy_file(t, env={"id": "CartPole-v1", "wrappers": [{"path": "evilenv:W"}]})),
        ],
        2,
        ("shared.pt: its env would import 'evilenv:W'",),
    ),
    Case(
        "eval-bare-policy-without-env",
        lambda t, mp: ["eval", str(_policy_file(t))],
        2,
        ("{tmp}/shared.pt: records no env; pass --env ENV_ID",),
    ),
    Case(
        "eval-policy-on-other-spaces",
        lambda t, mp: ["eval", str(_policy_file(t)), "--env", "evolstm/TMaze-v0"],
        2,
        ("shared.pt: the policy takes observations Box", "'evolstm/TMaze-v0' has"),
    ),
    Case(
        "eval-missing-path",
        lambda t, mp: ["eval", str(t / "nope.pt")],
        2,
        ("no run folder, checkpoint or policy file at {tmp}/nope.pt",),
    ),
    Case(
        "eval-zero-episodes",
        lambda t, mp: ["eval", str(_trained_run(t)), "--episodes", "0"],
        2,
        ("--episodes must be >= 1, got 0",),
    ),
    # -- resume ---------------------------------------------------------------------------
    Case(
        "resume-folder-without-checkpoint",
        lambda t, mp: _train(t, "--resume", str(t)),
        2,
        ("--resume {tmp}: no checkpoint there",),
    ),
    Case(
        "resume-not-a-folder",
        lambda t, mp: _train(t, "--resume", str(t / "nothing")),
        2,
        ("--resume {tmp}/nothing: not a run folder",),
    ),
    Case(
        "resume-tampered-checkpoint",
        lambda t, mp: _tampered_latest(t),
        2,
        ("latest.pt: not a valid evolstm checkpoint file",),
    ),
    Case(
        "resume-crafted-checkpoint",
        lambda t, mp: _crafted_latest(t),
        2,
        ("latest.pt: not a valid evolstm checkpoint file: it refers to code",),
        _marker_untouched,
    ),
    Case(
        "resume-with-another-seed",
        lambda t, mp: [*_train(t, "--resume", str(_trained_run(t))), "seed=7"],
        2,
        ("the run used seed=1 but the config gives 7",),
    ),
    # -- spaces ----------------------------------------------------------------------------
    Case(
        "unsupported-action-space",
        lambda t, mp: _train(t, env={"id": "tests.fault_envs:TextActionEnv"}),
        2,
        ("unsupported action space Text", "supported: Discrete, MultiDiscrete, Box"),
        _no_run_folder,
    ),
    Case(
        "unsupported-observation-space",
        lambda t, mp: _train(t, env={"id": "tests.fault_envs:TextObservationEnv"}),
        2,
        ("unsupported observation space Text", "supported: Box, Discrete, MultiDiscrete"),
        _no_run_folder,
    ),
    # -- environments that misbehave mid-run ------------------------------------------------
    Case(
        "nan-observation",
        lambda t, mp: _train(t, env=_fault("nan_obs")),
        1,
        (ENV_ID, "non-finite observation", "at step 3, member 0, episode 0 (slot 0)", "error.log"),
        _env_failed_after_two_iterations,
    ),
    Case(
        "nan-reward",
        lambda t, mp: _train(t, env=_fault("nan_reward")),
        1,
        (ENV_ID, "non-finite reward", "at step 3", "last checkpoint: iteration 2"),
        _env_failed_after_two_iterations,
    ),
    Case(
        "inf-reward",
        lambda t, mp: _train(t, env=_fault("inf_reward")),
        1,
        (ENV_ID, "non-finite reward", "env.on_nan: penalize"),
        _env_failed_after_two_iterations,
    ),
    Case(
        "env-raises-in-step",
        lambda t, mp: _train(t, env=_fault("raise_step")),
        1,
        (ENV_ID, "step() raised RuntimeError: step failed on purpose", "at step 3", "(slot 0)"),
        _env_failed_after_two_iterations,
    ),
    Case(
        "env-raises-in-reset",
        lambda t, mp: _train(t, env=_fault("raise_reset")),
        1,
        (ENV_ID, "reset() raised RuntimeError: reset failed on purpose", "at step 0"),
        _env_failed_after_two_iterations,
    ),
    Case(
        "observation-of-the-wrong-shape",
        lambda t, mp: _train(t, env=_fault("wrong_shape")),
        1,
        (ENV_ID, "observation of shape (3,) does not fit", "(shape (4,))", "slot 0"),
        _env_failed_after_two_iterations,
    ),
    Case(
        "nan-penalized-on-request",
        lambda t, mp: _train(t, env={**_fault("nan_reward", only_action=1), "on_nan": "penalize"}),
        0,
        (),
        _penalized_run_finished,
    ),
    Case(
        "episode-bounded-by-max-episode-steps",
        lambda t, mp: _train(t, env={**_fault("never_ends"), "max_episode_steps": 7}),
        0,
        (),
        _steps_per_iteration,
    ),
    # -- Ray addresses ------------------------------------------------------------------------
    Case(
        "ray-address-nobody-listens",
        lambda t, mp: _train(t, "--ray-address", f"127.0.0.1:{_closed_port()}"),
        2,
        ("--ray-address 127.0.0.1:", "cannot connect", "ray start --head"),
        _no_run_folder,
    ),
    Case(
        "ray-address-not-ray",
        lambda t, mp: _train(t, "--ray-address", f"127.0.0.1:{_listener(b'HTTP/1.0 400 no')}"),
        2,
        ("--ray-address 127.0.0.1:", "something listens there, but it is not Ray"),
        _no_run_folder,
    ),
    Case(
        "ray-address-speaks-grpc-but-is-not-ray",
        lambda t, mp: _train(t, "--ray-address", f"127.0.0.1:{_listener(HTTP2_SETTINGS)}"),
        2,
        ("--ray-address 127.0.0.1:", "something listens there, but it is not Ray ("),
        _no_run_folder,
    ),
    Case(
        "ray-address-auto-without-cluster",
        lambda t, mp: (_no_auto_cluster(mp), _train(t, "--ray-address", "auto"))[1],
        2,
        ("--ray-address auto: no running Ray cluster found",),
        _no_run_folder,
    ),
    # -- run folder and loggers ------------------------------------------------------------
    Case(
        "runs-dir-unwritable",
        lambda t, mp: [
            *_train(t)[:2],
            "--runs-dir",
            str(_bytes_file(t, b"a file, not a folder") / "runs"),
        ],
        2,
        ("--runs-dir {tmp}/file.pt/runs: cannot create a run folder there",),
    ),
    Case(
        "wandb-unavailable",
        lambda t, mp: (_no_wandb(mp), _train(t, logging={"wandb": {"mode": "offline"}}))[1],
        0,
        ("warning: W&B unavailable (RuntimeError: wandb.init timed out", "the run goes on"),
        _finished,
    ),
    # -- config keys of this hardening -------------------------------------------------------
    Case(
        "on-nan-unknown",
        lambda t, mp: _train(t, env={"id": FAULTY, "on_nan": "ignore"}),
        2,
        ("env.on_nan: Input should be 'error' or 'penalize', got 'ignore'",),
        _no_run_folder,
    ),
    Case(
        "max-episode-steps-zero",
        lambda t, mp: _train(t, env={"id": FAULTY, "max_episode_steps": 0}),
        2,
        ("env.max_episode_steps: Input should be greater than or equal to 1, got 0",),
        _no_run_folder,
    ),
    Case(
        "shard-timeout-negative",
        lambda t, mp: _train(t, ray={"shard_timeout_s": -1}),
        2,
        ("ray.shard_timeout_s: Input should be greater than 0, got -1",),
        _no_run_folder,
    ),
]


def test_the_table_has_at_least_30_cases():
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Case, tmp_path, fake_agent, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = case.setup(tmp_path, monkeypatch)
    capsys.readouterr()
    assert main(argv) == case.code
    err = capsys.readouterr().err.strip()
    if case.needles:
        lines = err.splitlines()
        assert len(lines) == 1, err
        for needle in case.needles:
            assert needle.format(tmp=tmp_path) in lines[0], (needle, lines[0])
        if case.code == 2:
            assert lines[0].startswith("error: ")
    else:
        assert err == "", err
    if case.after is not None:
        case.after(tmp_path)
