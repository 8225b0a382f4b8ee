"""The statistics and files of ``compare.md``/``.png``/``.csv`` against hand computations,
and a small real comparison (PGPE vs CMA-ES, two seeds, parallel Ray tasks, W&B offline)
read back from its files."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

from evolstm.run import compare_report as cr
from evolstm.run.cli import main
from tests.wandb_records import read_offline_run

REPO = Path(__file__).resolve().parents[1]


def test_bootstrap_interval_of_two_values_spans_them():
    # Resampled means of (0, 10): 0 (p 1/4), 5 (1/2), 10 (1/4): the 2.5% and 97.5%
    # percentiles are 0 and 10.
    low, high = cr.bootstrap_interval([0.0, 10.0])
    assert (low, high) == (0.0, 10.0)
    assert cr.bootstrap_interval([3.0]) == (3.0, 3.0)
    assert cr.bootstrap_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    low, high = cr.bootstrap_interval(list(range(20)))
    assert 6.0 < low < 9.5 < high < 13.0  # the mean 9.5; the standard error 1.3


def test_permutation_p_values_are_exact_for_few_seeds():
    # (1..4) vs (5..8): the observed split is one of the 2 most extreme of C(8, 4) = 70.
    assert cr.permutation_p_value([1, 2, 3, 4], [5, 6, 7, 8]) == pytest.approx(2 / 70)
    assert cr.smallest_p(4, 4) == pytest.approx(2 / 70)
    # One seed a side: 2 splits, both as extreme.
    assert cr.permutation_p_value([1.0], [2.0]) == 1.0
    # (0, 0) vs (1): the C(3, 2) = 3 splits give |diff| 1, 0.5, 0.5: p = 1/3.
    assert cr.permutation_p_value([0.0, 0.0], [1.0]) == pytest.approx(1 / 3)
    assert cr.permutation_p_value([5.0, 5.0], [5.0, 5.0]) == 1.0


def test_holm_adjustment():
    assert cr.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert cr.holm([0.5]) == [0.5]


def test_mean_curve_interpolates_and_holds_the_last_value():
    a = [{"env_steps": 0, "eval_return_mean": 0.0}, {"env_steps": 10, "eval_return_mean": 10.0}]
    b = [{"env_steps": 5, "eval_return_mean": 4.0}, {"env_steps": 20, "eval_return_mean": 4.0}]
    x, mean, std = cr.mean_curve([a, b], "env_steps", points=5)  # grid 0, 5, 10, 15, 20
    np.testing.assert_allclose(x, [0, 5, 10, 15, 20])
    # x=0: only a (b starts at 5); x=5: (5+4)/2; x>=10: a holds 10.
    np.testing.assert_allclose(mean, [0.0, 4.5, 7.0, 7.0, 7.0])
    np.testing.assert_allclose(std, [0.0, 0.5, 3.0, 3.0, 3.0])


def test_time_to_threshold_and_solved_fraction():
    runs = [
        cr.RunResult(
            0,
            {"eval_return_mean": 500.0, "solved": True, "env_steps": 900, "wall_time": 9.0},
            [
                {"env_steps": 100, "wall_time": 1.0, "eval_return_mean": 20, "eval_solved": False},
                {"env_steps": 400, "wall_time": 4.0, "eval_return_mean": 480, "eval_solved": True},
            ],
        ),
        cr.RunResult(
            1,
            {"eval_return_mean": 100.0, "solved": False, "env_steps": 1100, "wall_time": 11.0},
            [{"env_steps": 300, "wall_time": 3.0, "eval_return_mean": 100, "eval_solved": False}],
        ),
    ]
    stats = cr.variant_statistics(runs)
    assert stats["final_return_mean"] == 300.0 and stats["solved_fraction"] == 0.5
    assert stats["reached_threshold"] == 1
    assert (stats["env_steps_to_threshold"], stats["wall_time_to_threshold"]) == (400.0, 4.0)
    assert (stats["env_steps_mean"], stats["wall_time_mean"]) == (1000.0, 10.0)


@pytest.fixture
def small_comparison(tmp_path_factory, quiet_wandb_home, monkeypatch):
    """configs/compare_cartpole_nv.yaml at a tiny equal env-step budget, two seeds."""
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    root = tmp_path_factory.mktemp("compare")
    argv = [
        "compare",
        str(REPO / "configs" / "compare_cartpole_nv.yaml"),
        "env_steps=4000",
        "seeds=[0,1]",
        "eval.every=1",
        "eval.episodes=4",
        "--runs-dir",
        str(root),
    ]
    assert main(argv) == 0
    (folder,) = root.iterdir()
    return folder


def test_small_comparison_files_read_back(small_comparison):
    folder = small_comparison
    report = json.loads((folder / "compare.json").read_text())
    labels = ["pgpe", "cmaes", "esp", "ppo", "rpg"]
    assert [v["label"] for v in report["variants"]] == labels
    runs = [run for v in report["variants"] for run in v["runs"]]
    assert len(runs) == 10 and all("summary" in run for run in runs), runs

    # Pairs ran in parallel: as Ray tasks in separate worker processes, overlapping in time.
    workers = [run["worker"] for run in runs]
    assert len({w["pid"] for w in workers}) >= 2
    spans = sorted((w["started"], w["ended"]) for w in workers)
    if (os.cpu_count() or 1) >= 2:  # Ray runs as many one-CPU tasks at once as it has CPUs
        assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))

    # compare.csv: exactly the evaluation lines of every run's metrics.jsonl.
    with (folder / "compare.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    expected_rows = 0
    for variant in report["variants"]:
        returns = []
        for run in variant["runs"]:
            run_dir = Path(run["run_dir"])
            assert run_dir.parent == folder
            lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
            assert lines[-1]["env_steps"] >= 4000
            assert len(lines) == 1 or lines[-2]["env_steps"] < 4000
            evals = [x for x in lines if "eval_return_mean" in x]
            assert len(evals) == len(lines)  # eval.every=1
            mine = [
                r for r in rows if (r["variant"], r["seed"]) == (variant["label"], str(run["seed"]))
            ]
            assert [float(r["eval_return_mean"]) for r in mine] == [
                x["eval_return_mean"] for x in evals
            ]
            assert [int(r["env_steps"]) for r in mine] == [x["env_steps"] for x in evals]
            expected_rows += len(evals)
            returns.append(run["summary"]["eval_return_mean"])

            # One W&B offline run per (variant, seed): group = the comparison, job type =
            # the agent, every iteration's metrics.
            (record,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
            wb = read_offline_run(record)
            assert (wb.group, wb.job_type) == ("compare_cartpole_nv", variant["agent"])
            assert [row["env_steps"] for row in wb.history] == [x["env_steps"] for x in lines]
            assert [row["eval_return_mean"] for row in wb.history] == [
                x["eval_return_mean"] for x in lines
            ]
            assert wb.config["seed"] == run["seed"] and wb.exit_code == 0

        # compare.md: the variant's mean and interval, from the summaries.
        stats = variant["statistics"]
        assert stats["final_return_mean"] == pytest.approx(np.mean(returns))
        low, high = stats["final_return_ci"]
        assert min(returns) <= low <= np.mean(returns) <= high <= max(returns)
        md = (folder / "compare.md").read_text()
        row = next(line for line in md.splitlines() if line.startswith(f"| {variant['label']} |"))
        assert f"{np.mean(returns):.4g} [{low:.4g}, {high:.4g}]" in row
        assert "not reached" in row  # 4,000 env steps do not solve cart-pole
    assert len(rows) == expected_rows
    assert [(p["a"], p["b"]) for p in report["pairs"]] == list(itertools.combinations(labels, 2))
    finals = {
        v["label"]: [r["summary"]["eval_return_mean"] for r in v["runs"]]
        for v in report["variants"]
    }
    for pair in report["pairs"]:
        assert pair["smallest_p"] == pytest.approx(1 / 3)
        # The exact two-sided permutation p over the C(4, 2) = 6 relabellings, by hand.
        a, b = finals[pair["a"]], finals[pair["b"]]
        both = np.array(a + b)
        observed = abs(np.mean(a) - np.mean(b))
        extreme = sum(
            abs(both[list(i)].mean() - np.delete(both, list(i)).mean()) >= observed - 1e-12
            for i in itertools.combinations(range(4), 2)
        )
        assert pair["p"] == pytest.approx(extreme / 6)
        assert pair["significant"] is False
        expected = (
            rf"\| {pair['a']} vs {pair['b']} \| {pair['difference']:+.4g} \| {pair['p']:.3g} \| "
        )
        assert re.search(expected.replace("+", r"\+") + r"[\d.]+ \| undecidable", md), md

    # compare.png: a real PNG of the plotted size (12 x 4.5 inches at 100 dpi).
    from PIL import Image

    with Image.open(folder / "compare.png") as image:
        assert image.format == "PNG" and image.size == (1200, 450)
    assert not math.isnan(report["variants"][0]["statistics"]["final_return_mean"])
