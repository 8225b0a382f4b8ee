"""W&B, read back: an offline run's transaction log holds the config, every iteration's
metrics on the env-steps and wall-clock axes, the summary, the policy artifact, the group
and the job type; online without a network and errors inside W&B never end a run."""

from __future__ import annotations

import json

import pytest

from evolstm.run.loggers import WandbLogger, wandb_run_id
from evolstm.run.trainer import train
from tests.test_trainer import _config, _lines
from tests.wandb_records import read_offline_run

# Any attempt to reach W&B or a proxy hits a closed local port.
NO_NETWORK = {
    "WANDB_BASE_URL": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
}


@pytest.fixture
def no_network(monkeypatch, quiet_wandb_home):
    for name, value in NO_NETWORK.items():
        monkeypatch.setenv(name, value)


def _offline_run(run_dir):
    (record,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    return read_offline_run(record)


def test_offline_run_reads_back(tmp_path, fake_agent, no_network, capfd):
    cfg = _config("budget.iterations=4", "logging.wandb.mode=offline", "logging.wandb.group=cmp")
    run_dir = train(cfg, runs_root=tmp_path)
    assert "warning" not in capfd.readouterr().err
    run = _offline_run(run_dir)
    assert (run.group, run.job_type, run.project) == ("cmp", "fake", "evolstm")
    assert run.run_id == wandb_run_id(run_dir) and run.exit_code == 0
    logged_config = {k: v for k, v in run.config.items() if k != "_wandb"}
    assert logged_config == cfg.to_yaml_dict()

    # Every iteration: the numbers of metrics.jsonl, twice (env-steps and wall-clock axes).
    lines = _lines(run_dir)
    assert len(run.history) == len(lines) == 4
    for row, line in zip(run.history, lines, strict=True):
        for key, value in line.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            assert row[key] == pytest.approx(value, rel=1e-12), key
            if key not in ("env_steps", "wall_time"):
                assert row[f"time/{key}"] == pytest.approx(value, rel=1e-12), key
    assert {"eval_return_mean", "eval_return_std"} <= set(run.history[1])
    assert run.metrics["time/*"] == "wall_time"
    for key in ("iteration", "return_mean", "eval_return_mean", "steps_per_s"):
        assert run.metrics[key] == "env_steps", key
    assert run.metrics["env_steps"] == "" and run.metrics["wall_time"] == ""

    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("eval_return_mean", "eval_return_std", "env_steps", "iterations", "solved"):
        assert run.summary[key] == summary[key], key
    (artifact,) = run.artifacts
    assert (artifact.type, artifact.name) == ("model", f"policy-{run.run_id}")
    assert json.loads(artifact.metadata)["eval_return_mean"] == summary["eval_return_mean"]
    assert [entry.path for entry in artifact.manifest.contents] == ["policy.pt"]


def test_online_without_network_finishes_with_one_warning(
    tmp_path, fake_agent, no_network, monkeypatch, capfd
):
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    cfg = _config(
        "budget.iterations=3",
        "logging.wandb.mode=online",
        "logging.wandb.init_timeout=3",
        "logging.wandb.group=g",
    )
    run_dir = train(cfg, runs_root=tmp_path)
    err = capfd.readouterr().err
    (line,) = err.splitlines()
    assert line.startswith("warning: W&B online failed (CommError:"), err
    assert "logging offline to" in line
    # ... and the run was kept offline, whole.
    assert len(_lines(run_dir)) == 3
    run = _offline_run(run_dir)
    assert len(run.history) == 3 and run.group == "g" and run.exit_code == 0


def test_an_error_inside_wandb_does_not_end_the_run(
    tmp_path, fake_agent, no_network, monkeypatch, capfd
):
    calls = []
    real_log = WandbLogger._log

    def flaky(self, metrics):
        calls.append(metrics["iteration"])
        if len(calls) == 2:
            raise OSError("disk full")
        real_log(self, metrics)

    monkeypatch.setattr(WandbLogger, "_log", flaky)
    cfg = _config("budget.iterations=4", "logging.wandb.mode=offline")
    run_dir = train(cfg, runs_root=tmp_path)
    (line,) = capfd.readouterr().err.splitlines()
    assert line == (
        "warning: W&B failed while logging metrics (OSError: disk full); "
        "the run goes on without W&B"
    )
    assert calls == [1, 2], "W&B is not called again after its error"
    assert [x["iteration"] for x in _lines(run_dir)] == [1, 2, 3, 4]
    assert (run_dir / "summary.json").is_file() and (run_dir / "policy.pt").is_file()
    assert len(_offline_run(run_dir).history) == 1
