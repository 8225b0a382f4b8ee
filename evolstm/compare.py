"""Side-by-side comparisons: every variant of a base config, once per seed, in one folder.

``evolstm compare COMPARE.yaml [key=value ...]`` reads a compare file::

    name: cartpole-es            # the comparison: W&B group and folder prefix (default: file stem)
    base: quickstart.yaml        # a training config, relative to this file ...
    config: {ray: {address: null}}   # ... and/or an inline one (merged over base when both)
    seeds: [0, 1, 2]             # each variant runs once per seed (default: [0])
    variants:                    # label -> overrides of the base
      pgpe: {}
      cmaes: {agent: {name: cmaes, popsize: 64, episodes: 4, stdev_init: 0.5}}
      small: {policy.hidden: 8}

A variant's keys may be dotted (``policy.hidden: 8``) or nested (``policy: {hidden: 8}``,
merged into the section); an ``agent:`` mapping replaces the whole agent section, since
options of one agent rarely suit another. The order is: base file, inline ``config:``, the
command-line ``key=value`` overrides, then the variant's own keys. ``name`` and ``seed`` are
set per run (``<name>-<label>-s<seed>``) and may not be overridden; ``logging.wandb.group``
becomes the comparison name unless the compare file or the command line sets one (a group
in the base file names that config's own runs and is replaced).

Every variant x seed config is validated before the first run starts. The runs go one after
another through :func:`evolstm.trainer.train` into ``runs/<name>-<timestamp>/``, which
also receives ``compare.json`` (rewritten after every run, so a crash or Ctrl-C keeps the
finished runs' results): per variant its ``label``, ``agent``, ``seeds``, ``runs`` (one
entry per finished or failed seed: ``seed``, ``run_dir`` and ``summary``, or ``error``),
``eval_return_mean`` (``mean``/``std`` over the finished seeds, population std),
``env_steps_mean``, ``wall_time_mean``, ``solved`` (count; ``null`` when the task has no
threshold) and ``finished``.
"""

from __future__ import annotations

import copy
import json
import re
import statistics
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from evolstm.checkpoint import atomic_write_text
from evolstm.config import (
    RunConfig,
    apply_overrides,
    check_ray_address,
    read_yaml,
    section_for,
    validate_config,
)
from evolstm.errors import ConfigError

COMPARE_KEYS = ("name", "base", "config", "seeds", "variants")
COMPARE_REPORT = "compare.json"
# Set per run by the comparison itself.
PER_RUN_KEYS = ("name", "seed")
_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class PlannedRun:
    """One variant x seed training run, validated."""

    label: str
    seed: int
    cfg: RunConfig


@dataclass(frozen=True)
class Comparison:
    """A validated compare file: ``runs[label]`` lists the variant's runs in seed order."""

    name: str
    source: Path
    seeds: list[int]
    runs: dict[str, list[PlannedRun]]


# -- merging overrides -----------------------------------------------------------------------


def merge_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with ``overrides`` applied: dotted keys set one value, nested
    mappings merge into their section, a top-level ``agent`` mapping replaces the section."""
    out = copy.deepcopy(dict(data))
    for key, value in overrides.items():
        parts = str(key).split(".")
        if not all(parts):
            raise ConfigError(f"override key {key!r} is not of the form key or key.sub")
        node = section_for(out, parts, str(key))
        last = parts[-1]
        replace = parts == ["agent"]
        if isinstance(value, Mapping) and isinstance(node.get(last), dict) and not replace:
            node[last] = _deep_merge(node[last], value)
        else:
            node[last] = copy.deepcopy(value)
    return out


def _deep_merge(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(old)
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# -- loading and validating ------------------------------------------------------------------


def _folder_part(what: str, value: Any) -> str:
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
    if text is None or not _FOLDER_NAME.fullmatch(text):
        raise ConfigError(
            f"{what}: expected letters, digits, '.', '_' or '-' (it names run folders), "
            f"got {value!r}"
        )
    return text


def _seeds(value: Any) -> list[int]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"seeds: expected a non-empty list of integers >= 0, got {value!r}")
    for seed in value:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"seeds: expected integers >= 0, got {seed!r} in {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"seeds: each seed once, got {value!r}")
    return list(value)


def _wandb_section(data: dict[str, Any]) -> dict[str, Any] | None:
    logging = data.get("logging")
    wandb = logging.get("wandb") if isinstance(logging, dict) else None
    return wandb if isinstance(wandb, dict) else None


def _base_data(spec: Mapping[str, Any], source: Path) -> dict[str, Any]:
    """The base training config: the ``base`` file (its own W&B group dropped), with the
    inline ``config`` merged over it."""
    if "base" not in spec and "config" not in spec:
        raise ConfigError(
            "missing required key 'base' (a training config file) or 'config' "
            f"(an inline training config) in compare file {source}"
        )
    data: dict[str, Any] = {}
    if "base" in spec:
        base = spec["base"]
        if not isinstance(base, str) or not base:
            raise ConfigError(f"base: expected a path to a training config, got {base!r}")
        data = read_yaml(source.parent / base)
        wandb = _wandb_section(data)
        if wandb is not None:
            wandb["group"] = None
    inline = spec.get("config", {})
    if not isinstance(inline, Mapping):
        raise ConfigError(f"config: expected a mapping (an inline training config), got {inline!r}")
    return merge_overrides(data, inline)


def _check_not_per_run(where: str, keys: Sequence[str]) -> None:
    for key in keys:
        if str(key).split(".")[0] in PER_RUN_KEYS:
            raise ConfigError(
                f"{where}: {key!r} cannot be overridden; the comparison sets name and seed "
                "per run (<name>-<label>-s<seed>, from seeds:)"
            )


def load_comparison(path: str | Path, overrides: Sequence[str] = ()) -> Comparison:
    """Read a compare file, apply the command-line ``key=value`` overrides to its base and
    validate every variant x seed config.

    :raises ConfigError: (one line) an unknown key, a missing base, a bad seed list or
        label, or any variant's config failing :func:`evolstm.config.validate_config`.
    """
    source = Path(path)
    spec = read_yaml(source)
    unknown = sorted(str(k) for k in spec if k not in COMPARE_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in compare file {source}; "
            f"valid keys: {', '.join(COMPARE_KEYS)}"
        )
    name = _folder_part("name", spec.get("name", source.stem))
    seeds = _seeds(spec.get("seeds", [0]))
    variants = spec.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise ConfigError(
            f"variants: expected a mapping of label -> overrides (at least one), got {variants!r}"
        )
    _check_not_per_run("command line", [item.partition("=")[0].strip() for item in overrides])
    base = apply_overrides(_base_data(spec, source), overrides)

    runs: dict[str, list[PlannedRun]] = {}
    for raw_label, changes in variants.items():
        label = _folder_part(f"variants: label {raw_label!r}", raw_label)
        if label in runs:
            raise ConfigError(f"variants: label {label!r} appears twice")
        if changes is None:
            changes = {}
        if not isinstance(changes, Mapping):
            raise ConfigError(
                f"variant {label!r}: expected a mapping of overrides (key: value), got {changes!r}"
            )
        _check_not_per_run(f"variant {label!r}", list(changes))
        try:
            data = merge_overrides(base, changes)
        except ConfigError as err:
            raise ConfigError(f"variant {label!r}: {err}") from None
        runs[label] = [_planned_run(name, label, seed, data) for seed in seeds]
    return Comparison(name=name, source=source, seeds=seeds, runs=runs)


def _planned_run(name: str, label: str, seed: int, data: Mapping[str, Any]) -> PlannedRun:
    try:
        data = merge_overrides(data, {"name": f"{name}-{label}-s{seed}", "seed": seed})
        wandb = _wandb_section(data)
        if wandb is None or wandb.get("group") is None:
            data = merge_overrides(data, {"logging.wandb.group": name})
        cfg = validate_config(data)
    except ConfigError as err:
        raise ConfigError(f"variant {label!r}: {err}") from None
    return PlannedRun(label=label, seed=seed, cfg=cfg)


# -- running and reporting -------------------------------------------------------------------


def aggregate(label: str, agent: str, seeds: list[int], runs: list[dict]) -> dict[str, Any]:
    """One variant's entry of ``compare.json`` from its ``runs`` (``{"seed", "run_dir",
    "summary"}`` or ``{"seed", "error"}``); statistics over the finished runs only."""
    summaries = [run["summary"] for run in runs if "summary" in run]
    returns = [float(s["eval_return_mean"]) for s in summaries]
    solved_flags = [s.get("solved") for s in summaries]
    known = [flag for flag in solved_flags if flag is not None]
    return {
        "label": label,
        "agent": agent,
        "seeds": seeds,
        "runs": runs,
        "finished": len(summaries),
        "eval_return_mean": {
            "mean": statistics.fmean(returns) if returns else None,
            "std": statistics.pstdev(returns) if returns else None,
        },
        "env_steps_mean": statistics.fmean(s["env_steps"] for s in summaries)
        if summaries
        else None,
        "wall_time_mean": statistics.fmean(s["wall_time"] for s in summaries)
        if summaries
        else None,
        "solved": sum(bool(flag) for flag in known) if known else None,
    }


def _write_report(path: Path, report: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")


def run_comparison(
    comparison: Comparison,
    *,
    ray_address: str | None = None,
    runs_root: Path = Path("runs"),
    console: Console | None = None,
) -> Path:
    """Train every planned run in turn; return the comparison folder (with ``compare.json``).

    A run that raises an ordinary exception is recorded with its error and the others go
    on; a :class:`ConfigError` or ``KeyboardInterrupt`` stops the comparison after writing
    ``compare.json`` with what has finished.

    :param ray_address: overrides every run's ``ray.address``.
    :param runs_root: where the comparison folder is created.
    """
    from evolstm.trainer import SUMMARY_FILE, new_run_dir, train

    try:
        check_ray_address(ray_address)
    except ValueError as err:
        raise ConfigError(f"ray address {ray_address!r}: {err}") from None
    console = console or Console()
    folder = new_run_dir(Path(runs_root), comparison.name)
    results: dict[str, list[dict]] = {label: [] for label in comparison.runs}

    def report() -> dict[str, Any]:
        return {
            "name": comparison.name,
            "compare_file": str(comparison.source),
            "seeds": comparison.seeds,
            "variants": [
                aggregate(label, planned[0].cfg.agent.name, comparison.seeds, results[label])
                for label, planned in comparison.runs.items()
            ],
        }

    total = sum(len(planned) for planned in comparison.runs.values())
    done = 0
    _write_report(folder / COMPARE_REPORT, report())
    for label, planned in comparison.runs.items():
        for run in planned:
            done += 1
            console.print(
                f"[{done}/{total}] {comparison.name}: variant {label}, seed {run.seed}",
                markup=False,
                highlight=False,
            )
            try:
                run_dir = train(run.cfg, ray_address=ray_address, runs_root=folder)
            except ConfigError:
                raise
            except Exception as err:
                traceback.print_exc(file=sys.stderr)
                results[label].append({"seed": run.seed, "error": f"{type(err).__name__}: {err}"})
            else:
                summary = json.loads((run_dir / SUMMARY_FILE).read_text())
                results[label].append(
                    {"seed": run.seed, "run_dir": str(run_dir), "summary": summary}
                )
            _write_report(folder / COMPARE_REPORT, report())
    final = report()
    console.print(comparison_table(final))
    console.print(f"comparison folder {folder}", markup=False, highlight=False, soft_wrap=True)
    return folder


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
