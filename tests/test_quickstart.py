"""The README's main job: its config is valid, and training it on the embedded local Ray
gives exactly the metrics of the in-process evaluator for the same seed."""

from __future__ import annotations

import json
from pathlib import Path

from evolstm.run.config import load_config
from evolstm.run.trainer import train

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
TIMING = {"wall_time", "steps_per_s"}


def test_quickstart_config_is_the_documented_job():
    cfg = load_config(QUICKSTART)
    assert cfg.env.id == "evolstm/CartPoleNoVel-v0"
    assert cfg.agent.name == "pgpe" and cfg.policy.cell == "lstm"
    assert cfg.ray.address == "local" and cfg.logging.wandb.mode == "offline"


def _metrics(tmp_path: Path, *overrides: str) -> list[dict]:
    common = ("budget.iterations=4", "logging.wandb.mode=disabled", "logging.console=false")
    cfg = load_config(QUICKSTART, (*common, *overrides))
    run_dir = train(cfg, runs_root=tmp_path)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(line).items() if k not in TIMING and not k.startswith("time_")}
        for line in lines
    ]


def test_local_ray_and_in_process_give_identical_metrics(tmp_path):
    with_ray = _metrics(tmp_path, "name=ray")
    in_process = _metrics(tmp_path, "name=local", "ray.address=null")
    assert len(with_ray) == 4
    assert with_ray == in_process
