"""Policy gradients learn, and memory matters: small fixed seeds, bounded budgets.

Held-out evaluation (the trainer's) after a fixed env-step budget; the full-length learning
runs live in ``configs/`` and are recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import json

from evolstm.run.config import load_config
from evolstm.run.trainer import train

BUDGET = 16_384


def _eval(tmp_path, *overrides: str) -> float:
    cfg = load_config(
        "configs/cartpole_nv_ppo.yaml",
        [
            f"budget.env_steps={BUDGET}",
            f"agent.anneal_env_steps={BUDGET}",
            "policy.hidden=32",
            "eval.every=1000",
            "logging.wandb.mode=disabled",
            "logging.console=false",
            *overrides,
        ],
    )
    run_dir = train(cfg, runs_root=tmp_path)
    return json.loads((run_dir / "summary.json").read_text())["eval_return_mean"]


def test_feed_forward_policy_stays_well_below_the_lstm_on_cartpole_without_velocities(
    tmp_path,
) -> None:
    lstm = _eval(tmp_path, "seed=1")
    feed_forward = _eval(tmp_path, "seed=1", "policy.memory=false")
    print(f"held-out return after {BUDGET} steps: lstm {lstm}, feed-forward {feed_forward}")
    assert lstm >= 150, lstm
    assert feed_forward <= 0.5 * lstm, (feed_forward, lstm)
