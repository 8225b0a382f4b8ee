"""What a comparison decides with: statistics over seeds, learning curves, ``compare.md``,
``compare.png``, ``compare.csv`` and the console table.

Input: per variant, its finished runs, each a :class:`RunResult` (the run's ``summary.json``
and its evaluation curve from ``metrics.jsonl``). Statistics:

* final evaluation return: mean over seeds with a 95% percentile-bootstrap interval
  (``scipy.stats.bootstrap``, 10,000 resamples of the seeds, fixed seed);
* solved fraction: seeds whose final evaluation meets the task's success test;
* env steps / wall-clock to the threshold: at the first evaluation that met the success test
  (the trainer's ``eval_solved``), mean over the seeds that got there (the others are
  censored: their count is shown beside it);
* significance: every pair of variants, a two-sided permutation test of the difference of
  the mean final returns (``scipy.stats.permutation_test``, exact when the number of
  relabellings is small), Holm-corrected over the pairs at alpha = 0.05. With ``n`` seeds a
  side the smallest attainable p is ``2 / C(2n, n)``: the report says when the seeds are too
  few for any difference to count.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

COMPARE_MD = "compare.md"
COMPARE_PNG = "compare.png"
COMPARE_CSV = "compare.csv"
ALPHA = 0.05
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
CSV_COLUMNS = (
    "variant",
    "agent",
    "seed",
    "iteration",
    "env_steps",
    "wall_time",
    "eval_return_mean",
    "eval_return_std",
    "eval_solved",
)


@dataclass
class RunResult:
    """One finished (variant, seed) run: its summary and evaluation curve."""

    seed: int
    summary: dict[str, Any]
    curve: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl eval lines

    @property
    def final_return(self) -> float:
        return float(self.summary["eval_return_mean"])

    def first_solved(self) -> dict[str, Any] | None:
        """The first evaluation line that met the success test, if any."""
        return next((point for point in self.curve if point.get("eval_solved")), None)


def read_curve(metrics_path: str | Path) -> list[dict[str, Any]]:
    """The evaluation lines of a ``metrics.jsonl`` (those with ``eval_return_mean``)."""
    points = []
    for line in Path(metrics_path).read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if record.get("eval_return_mean") is not None:
                points.append(record)
    return points


# -- statistics ------------------------------------------------------------------------------


def bootstrap_interval(values: Sequence[float], seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of ``values`` (``(x, x)`` for one value
    or identical values, where resampling has nothing to vary)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return (math.nan, math.nan)
    if data.size == 1 or np.all(data == data[0]):
        return (float(data[0]), float(data[0]))
    from scipy import stats

    result = stats.bootstrap(
        (data,),
        np.mean,
        confidence_level=CONFIDENCE,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return (float(result.confidence_interval.low), float(result.confidence_interval.high))


def permutation_p_value(a: Sequence[float], b: Sequence[float], seed: int = 0) -> float:
    """Two-sided permutation test of ``mean(a) - mean(b)`` (exact for few seeds)."""
    from scipy import stats

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.concatenate([x, y])
    if np.all(both == x[0]):
        return 1.0
    if min(x.size, y.size) < 2:
        # scipy refuses a one-seed side; the exact test enumerates the C(n, k) splits.
        observed = abs(x.mean() - y.mean())
        splits = list(itertools.combinations(range(both.size), x.size))
        extreme = 0
        for chosen in splits:
            mask = np.zeros(both.size, dtype=bool)
            mask[list(chosen)] = True
            extreme += abs(both[mask].mean() - both[~mask].mean()) >= observed - 1e-12
        return extreme / len(splits)
    result = stats.permutation_test(
        (x, y),
        lambda u, v, axis: np.mean(u, axis=axis) - np.mean(v, axis=axis),
        permutation_type="independent",
        alternative="two-sided",
        n_resamples=BOOTSTRAP_RESAMPLES,
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    order = np.argsort(p_values)
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[index])))
        adjusted[index] = running
    return adjusted


def smallest_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided p an exact permutation test can give with these seed counts."""
    return min(1.0, 2.0 / math.comb(n_a + n_b, n_a))


def variant_statistics(runs: Sequence[RunResult]) -> dict[str, Any]:
    """A variant's numbers over its finished seeds (``None`` where nothing finished)."""
    returns = [run.final_return for run in runs]
    solved_flags = [run.summary.get("solved") for run in runs]
    known = [flag for flag in solved_flags if flag is not None]
    reached = [point for point in (run.first_solved() for run in runs) if point is not None]
    low, high = bootstrap_interval(returns) if returns else (None, None)
    return {
        "finished": len(runs),
        "final_return_mean": float(np.mean(returns)) if returns else None,
        "final_return_ci": [low, high] if returns else None,
        "final_returns": returns,
        "solved_fraction": (sum(map(bool, known)) / len(known)) if known else None,
        "reached_threshold": len(reached),
        "env_steps_to_threshold": float(np.mean([p["env_steps"] for p in reached]))
        if reached
        else None,
        "wall_time_to_threshold": float(np.mean([p["wall_time"] for p in reached]))
        if reached
        else None,
        "env_steps_mean": float(np.mean([r.summary["env_steps"] for r in runs])) if runs else None,
        "wall_time_mean": float(np.mean([r.summary["wall_time"] for r in runs])) if runs else None,
    }


def pairwise_tests(results: Mapping[str, Sequence[RunResult]]) -> list[dict[str, Any]]:
    """Every pair of variants with at least one finished seed each: difference of mean final
    returns, permutation p, Holm-adjusted p, and whether it is significant at ALPHA."""
    labels = [label for label, runs in results.items() if runs]
    pairs = []
    for first, second in itertools.combinations(labels, 2):
        a = [r.final_return for r in results[first]]
        b = [r.final_return for r in results[second]]
        pairs.append(
            {
                "a": first,
                "b": second,
                "difference": float(np.mean(a) - np.mean(b)),
                "p": permutation_p_value(a, b),
                "smallest_p": smallest_p(len(a), len(b)),
            }
        )
    for pair, adjusted in zip(pairs, holm([p["p"] for p in pairs]), strict=True):
        pair["p_holm"] = adjusted
        pair["significant"] = adjusted < ALPHA
    return pairs


# -- curves ----------------------------------------------------------------------------------


def mean_curve(
    curves: Sequence[Sequence[dict[str, Any]]], axis: str, points: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeds' evaluation curves on a common grid of ``axis`` (``env_steps`` or
    ``wall_time``): ``(x [G], mean [G], std [G])``. Each seed is interpolated linearly
    between its evaluations and holds its last value after its end (its final policy);
    before its first evaluation it has no value."""
    finals = [c[-1][axis] for c in curves if c]
    if not finals:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    grid = np.linspace(0.0, float(max(finals)), points)
    rows = []
    for c in curves:
        if not c:
            continue
        x = np.asarray([p[axis] for p in c], dtype=np.float64)
        y = np.asarray([p["eval_return_mean"] for p in c], dtype=np.float64)
        rows.append(np.interp(grid, x, y, left=np.nan, right=y[-1]))
    values = np.vstack(rows)
    present = ~np.isnan(values)
    count = present.sum(axis=0)
    keep = count > 0
    safe = np.where(present, values, 0.0)
    mean = np.where(keep, safe.sum(axis=0) / np.maximum(count, 1), np.nan)
    var = np.where(present, (values - mean) ** 2, 0.0).sum(axis=0) / np.maximum(count, 1)
    return grid[keep], mean[keep], np.sqrt(var[keep])


# -- files -----------------------------------------------------------------------------------


def write_csv(path: Path, results: Mapping[str, Sequence[RunResult]], agents: Mapping) -> None:
    """``compare.csv``: one row per evaluation of every run (the curves, long format)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for label, runs in results.items():
            for run in runs:
                for point in run.curve:
                    writer.writerow(
                        [
                            label,
                            agents[label],
                            run.seed,
                            point.get("iteration"),
                            point.get("env_steps"),
                            point.get("wall_time"),
                            point.get("eval_return_mean"),
                            point.get("eval_return_std"),
                            "" if point.get("eval_solved") is None else point["eval_solved"],
                        ]
                    )


def write_plot(
    path: Path,
    results: Mapping[str, Sequence[RunResult]],
    *,
    title: str,
    threshold: float | None = None,
) -> None:
    """``compare.png``: evaluation return against env steps and against wall-clock, the
    mean over seeds as a line with a ±1 std band, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for (axis, xlabel), ax in zip(
        (("env_steps", "env steps"), ("wall_time", "wall-clock [s]")), axes, strict=True
    ):
        for index, (label, runs) in enumerate(results.items()):
            x, mean, std = mean_curve([run.curve for run in runs], axis)
            if x.size == 0:
                continue
            color = f"C{index % 10}"
            ax.plot(x, mean, color=color, label=f"{label} ({len(runs)} seeds)")
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
        if threshold is not None:
            ax.axhline(threshold, color="0.4", linestyle="--", linewidth=1, label="threshold")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("evaluation return")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    fig.suptitle(f"{title}: mean over seeds, band ±1 std")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def markdown(
    name: str,
    variants: Sequence[Mapping[str, Any]],
    pairs: Sequence[Mapping[str, Any]],
    *,
    task: str,
    threshold: float | None,
    seeds: Sequence[int],
) -> str:
    """``compare.md``: the per-variant table and the pairwise tests, in words a reader can
    act on."""
    lines = [
        f"# Comparison `{name}`",
        "",
        f"Task `{task}`; seeds {', '.join(map(str, seeds))}. Solved: the task's own success "
        "test when it defines one, else "
        + (
            f"a mean evaluation return >= {threshold:g} (its registered threshold)."
            if threshold is not None
            else "never (no registered threshold)."
        )
        + " Curves: [compare.png](compare.png), [compare.csv](compare.csv).",
        "",
        "| variant | agent | seeds | final eval return: mean [95% CI] | solved | "
        "env steps to threshold | wall-clock to threshold | env steps | wall-clock |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        s = v["stats"]
        ci = s["final_return_ci"]
        ret = (
            "–" if ci is None else f"{_fmt(s['final_return_mean'])} [{_fmt(ci[0])}, {_fmt(ci[1])}]"
        )
        failed = len(v["seeds"]) - s["finished"]
        seeds_text = f"{s['finished']}" + (f" ({failed} failed)" if failed else "")
        solved = "–" if s["solved_fraction"] is None else f"{s['solved_fraction']:.0%}"
        reached = s["reached_threshold"]
        to_steps = (
            "not reached"
            if not reached
            else f"{_fmt(s['env_steps_to_threshold'], ',.0f')} ({reached}/{s['finished']})"
        )
        to_time = (
            "not reached"
            if not reached
            else f"{_fmt(s['wall_time_to_threshold'], '.1f')} s ({reached}/{s['finished']})"
        )
        lines.append(
            f"| {v['label']} | {v['agent']} | {seeds_text} | {ret} | {solved} | {to_steps} | "
            f"{to_time} | {_fmt(s['env_steps_mean'], ',.0f')} | "
            f"{_fmt(s['wall_time_mean'], '.1f')} s |"
        )
    lines += [
        "",
        "Final eval return: each seed's final held-out evaluation; the interval is a 95% "
        "percentile bootstrap over seeds. To threshold: the first evaluation that met the "
        "task's success test, mean over the seeds that reached it (reached/finished).",
        "",
        "## Which differences are significant",
        "",
    ]
    if not pairs:
        lines.append("Only one variant finished: nothing to compare.")
        return "\n".join(lines) + "\n"
    lines += [
        "Two-sided permutation test of the difference of mean final returns, Holm-corrected "
        f"over {len(pairs)} pair(s), alpha = {ALPHA}.",
        "",
        "| pair | difference of means | p | p (Holm) | verdict |",
        "|---|---|---|---|---|",
    ]
    for p in pairs:
        if p["significant"]:
            better = p["a"] if p["difference"] > 0 else p["b"]
            verdict = f"significant: **{better}** is better"
        elif p["smallest_p"] >= ALPHA:
            verdict = f"undecidable with these seeds (smallest attainable p {p['smallest_p']:.2g})"
        else:
            verdict = "not significant"
        lines.append(
            f"| {p['a']} vs {p['b']} | {p['difference']:+.4g} | {p['p']:.3g} | "
            f"{p['p_holm']:.3g} | {verdict} |"
        )
    significant = [p for p in pairs if p["significant"]]
    lines += [
        "",
        f"{len(significant)} of {len(pairs)} difference(s) significant."
        + (
            " More seeds per variant are needed for a permutation test to reach "
            f"p < {ALPHA} (at least 4 a side)."
            if all(p["smallest_p"] >= ALPHA for p in pairs)
            else ""
        ),
    ]
    return "\n".join(lines) + "\n"


def write_outputs(
    folder: Path,
    report: dict[str, Any],
    *,
    name: str,
    task: str,
    threshold: float | None,
    seeds: Sequence[int],
) -> None:
    """``compare.md``, ``compare.png`` and ``compare.csv`` in ``folder``, from the finished
    runs of ``report`` (the ``compare.json`` data: their summaries and ``metrics.jsonl``
    curves); adds each variant's ``statistics`` and the ``pairs`` to ``report``."""
    from evolstm.run.checkpoint import atomic_write_text
    from evolstm.run.loggers import METRICS_FILE

    results: dict[str, list[RunResult]] = {}
    agents: dict[str, str] = {}
    for variant in report["variants"]:
        label = variant["label"]
        agents[label] = variant["agent"]
        results[label] = [
            RunResult(
                seed=run["seed"],
                summary=run["summary"],
                curve=read_curve(Path(run["run_dir"]) / METRICS_FILE),
            )
            for run in variant["runs"]
            if "summary" in run
        ]
        variant["statistics"] = variant_statistics(results[label])
    report["pairs"] = pairwise_tests(results)
    write_csv(folder / COMPARE_CSV, results, agents)
    write_plot(folder / COMPARE_PNG, results, title=f"{name} on {task}", threshold=threshold)
    text = markdown(
        name,
        [{**v, "stats": v["statistics"]} for v in report["variants"]],
        report["pairs"],
        task=task,
        threshold=threshold,
        seeds=seeds,
    )
    atomic_write_text(folder / COMPARE_MD, text)


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def comparison_table(report: Mapping[str, Any]) -> Table:
    """The ``compare.json`` report as a table: one row per variant, statistics over seeds."""
    table = Table(title=f"comparison {report['name']}")
    for column in ("variant", "agent", "seeds", "eval return", "env steps", "wall time"):
        table.add_column(column, justify="left" if column in ("variant", "agent") else "right")
    table.add_column("solved", justify="right")
    for variant in report["variants"]:
        ret = variant["eval_return_mean"]
        eval_text = "-" if ret["mean"] is None else f"{ret['mean']:.4g} ± {ret['std']:.3g}"
        failed = len(variant["runs"]) - variant["finished"]
        seeds = ", ".join(str(s) for s in variant["seeds"])
        solved = variant["solved"]
        table.add_row(
            variant["label"],
            variant["agent"],
            seeds + (f" ({failed} failed)" if failed else ""),
            eval_text,
            _number(variant["env_steps_mean"], ",.0f"),
            "-" if variant["wall_time_mean"] is None else f"{variant['wall_time_mean']:.1f} s",
            "-" if solved is None else f"{solved}/{variant['finished']}",
        )
    return table
