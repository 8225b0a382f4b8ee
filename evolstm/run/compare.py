"""Side-by-side comparisons: every variant of a base config, once per seed, in one folder.

``evolstm compare COMPARE.yaml [key=value ...]`` reads a compare file::

    name: cartpole-es            # the comparison: W&B group and folder prefix (default: file stem)
    base: quickstart.yaml        # a training config, relative to this file ...
    config: {eval: {every: 5}}   # ... and/or an inline one (merged over base when both)
    seeds: [0, 1, 2]             # each variant runs once per seed (default: [0])
    env_steps: 200000            # optional: the same env-step budget for every run
    parallel: true               # (variant, seed) runs as parallel Ray tasks (the default)
    variants:                    # label -> overrides of the base
      pgpe: {}
      cmaes: {agent: {name: cmaes, popsize: 64, episodes: 4, stdev_init: 0.5}}
      small: {policy.hidden: 8}

A variant's keys may be dotted (``policy.hidden: 8``) or nested (``policy: {hidden: 8}``,
merged into the section); an ``agent:`` mapping replaces the whole agent section, since
options of one agent rarely suit another. The order is: base file, inline ``config:``, the
command-line ``key=value`` overrides, then the variant's own keys; ``env_steps`` comes last
(``budget: {env_steps: N}`` with no iteration or time budget), so optimisers of both
families spend the same number of env steps. ``name`` and ``seed`` are set per run
(``<name>-<label>-s<seed>``) and may not be overridden; ``logging.wandb.group`` becomes the
comparison name unless the compare file or the command line sets one (a group in the base
file names that config's own runs and is replaced).

Every variant x seed config is validated before the first run starts. With ``parallel``
(the default) every run is a Ray task of one CPU, so as many run at once as the Ray cluster
has CPUs: an embedded local Ray unless ``--ray-address`` names a cluster. Each such run
evaluates its population in-process (its ``ray.address`` is set to null; the runs are the
unit of parallelism) and logs no console progress. ``parallel: false`` runs them one after
another in this process through :func:`evolstm.run.trainer.train`, each with its own
``ray.address`` (which ``--ray-address`` then overrides).

Runs go into ``runs/<name>-<timestamp>/``, which also receives ``compare.json`` (rewritten
after every run, so a crash or Ctrl-C keeps the finished runs' results): per variant its
``label``, ``agent``, ``seeds``, ``runs`` (one entry per finished or failed seed: ``seed``,
``run_dir``, ``summary`` and ``worker`` (host, pid, start and end time), or ``error``),
``eval_return_mean`` (``mean``/``std`` over the finished seeds, population std),
``env_steps_mean``, ``wall_time_mean``, ``solved`` (count; ``null`` when the task has no
threshold), ``finished`` and ``statistics`` (:mod:`evolstm.run.compare_report`); and ``pairs``
(the significance tests). When every run has ended it also receives ``compare.md``,
``compare.png`` and ``compare.csv`` (see :mod:`evolstm.run.compare_report`).
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

from evolstm.errors import ConfigError
from evolstm.run.checkpoint import atomic_write_text
from evolstm.run.config import (
    RunConfig,
    apply_overrides,
    check_ray_address,
    read_yaml,
    section_for,
    validate_config,
)

COMPARE_KEYS = ("name", "base", "config", "seeds", "env_steps", "parallel", "variants")
# Keys of the compare file that the command line may also set (`seeds=[0,1]`).
COMPARE_LEVEL_KEYS = ("seeds", "env_steps", "parallel")
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
    parallel: bool = True


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


def _override_key(item: str) -> str:
    return item.partition("=")[0].strip()


def _compare_level(overrides: Sequence[str]) -> dict[str, Any]:
    """The command line's ``seeds=[...]``, ``env_steps=N`` and ``parallel=false``: keys of
    the compare file itself, not of the training config."""
    import yaml

    out: dict[str, Any] = {}
    for item in overrides:
        key = _override_key(item)
        if key in COMPARE_LEVEL_KEYS:
            raw = item.partition("=")[2]
            try:
                out[key] = yaml.safe_load(raw)
            except yaml.YAMLError as err:
                raise ConfigError(f"override {item!r}: cannot parse {raw!r} as YAML") from err
    return out


def load_comparison(path: str | Path, overrides: Sequence[str] = ()) -> Comparison:
    """Read a compare file, apply the command-line ``key=value`` overrides to its base and
    validate every variant x seed config.

    :raises ConfigError: (one line) an unknown key, a missing base, a bad seed list or
        label, or any variant's config failing :func:`evolstm.run.config.validate_config`.
    """
    source = Path(path)
    spec = read_yaml(source)
    overrides = list(overrides)
    spec.update(_compare_level(overrides))
    overrides = [item for item in overrides if _override_key(item) not in COMPARE_LEVEL_KEYS]
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
    parallel = spec.get("parallel", True)
    if not isinstance(parallel, bool):
        raise ConfigError(f"parallel: expected true or false, got {parallel!r}")
    env_steps = spec.get("env_steps")
    if env_steps is not None and (
        not isinstance(env_steps, int) or isinstance(env_steps, bool) or env_steps < 1
    ):
        raise ConfigError(f"env_steps: expected an integer >= 1 (or null), got {env_steps!r}")
    per_run: dict[str, Any] = {}
    if env_steps is not None:
        per_run.update(
            {"budget.env_steps": env_steps, "budget.iterations": None, "budget.seconds": None}
        )
    if parallel:  # the runs are the parallel tasks: each evaluates in-process, quietly
        per_run.update({"ray.address": None, "logging.console": False})
    _check_not_per_run("command line", [_override_key(item) for item in overrides])
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
        if per_run:
            data = merge_overrides(data, per_run)
        runs[label] = [_planned_run(name, label, seed, data) for seed in seeds]
    return Comparison(name=name, source=source, seeds=seeds, runs=runs, parallel=parallel)


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


def train_one(cfg: RunConfig, runs_root: str, ray_address: str | None) -> dict[str, Any]:
    """One (variant, seed) run, in whichever process calls it (a Ray task or this one):
    ``{"run_dir", "summary", "worker": {"host", "pid", "started", "ended"}}``."""
    import os
    import socket
    import time

    from evolstm.run.trainer import SUMMARY_FILE, train

    started = time.time()
    run_dir = train(cfg, ray_address=ray_address, runs_root=Path(runs_root))
    return {
        "run_dir": str(run_dir),
        "summary": json.loads((run_dir / SUMMARY_FILE).read_text()),
        "worker": {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": started,
            "ended": time.time(),
        },
    }


def _error_text(err: BaseException) -> str:
    cause = getattr(err, "cause", None)  # a RayTaskError carries the task's own exception
    err = cause if isinstance(cause, BaseException) else err
    first = str(err).strip().splitlines()
    return f"{type(err).__name__}: {first[0] if first else ''}"


def run_comparison(
    comparison: Comparison,
    *,
    ray_address: str | None = None,
    runs_root: Path = Path("runs"),
    console: Console | None = None,
) -> Path:
    """Train every planned run (in parallel Ray tasks, or in turn when the comparison is not
    ``parallel``); write ``compare.json`` and, at the end, ``compare.md``/``.png``/``.csv``;
    return the comparison folder.

    A run that raises an ordinary exception is recorded with its error and the others go
    on; a :class:`ConfigError` (in-process runs) or ``KeyboardInterrupt`` stops the
    comparison after writing ``compare.json`` with what has finished (parallel tasks still
    running are cancelled).

    :param ray_address: parallel: where the Ray tasks run (``None``/``"local"``: an embedded
        local Ray; ``"auto"``, ``"ray://..."``, ``host:port``: a cluster). In turn: overrides
        every run's ``ray.address``.
    :param runs_root: where the comparison folder is created.
    """
    try:
        check_ray_address(ray_address)
    except ValueError as err:
        raise ConfigError(f"ray address {ray_address!r}: {err}") from None
    from evolstm.run.run_dir import new_run_dir

    console = console or Console()
    folder = new_run_dir(Path(runs_root), comparison.name)
    results: dict[str, dict[int, dict]] = {label: {} for label in comparison.runs}

    def report() -> dict[str, Any]:
        return {
            "name": comparison.name,
            "compare_file": str(comparison.source),
            "seeds": comparison.seeds,
            "parallel": comparison.parallel,
            "variants": [
                aggregate(
                    label,
                    planned[0].cfg.agent.name,
                    comparison.seeds,
                    [results[label][s] for s in comparison.seeds if s in results[label]],
                )
                for label, planned in comparison.runs.items()
            ],
        }

    def record(run: PlannedRun, outcome: dict[str, Any]) -> None:
        results[run.label][run.seed] = {"seed": run.seed, **outcome}
        _write_report(folder / COMPARE_REPORT, report())

    _write_report(folder / COMPARE_REPORT, report())
    planned = [run for runs in comparison.runs.values() for run in runs]
    if comparison.parallel:
        _run_on_ray(planned, folder, ray_address, record, console, comparison.name)
    else:
        _run_in_turn(planned, folder, ray_address, record, console, comparison.name)
    final = report()
    from evolstm.run.compare_report import comparison_table, write_outputs
    from evolstm.run.trainer import env_factory_for

    first = next(iter(comparison.runs.values()))[0].cfg
    write_outputs(
        folder,
        final,
        name=comparison.name,
        task=first.env.id,
        threshold=env_factory_for(first).reward_threshold,
        seeds=comparison.seeds,
    )
    _write_report(folder / COMPARE_REPORT, final)
    console.print(comparison_table(final))
    console.print(
        f"comparison folder {folder} (compare.md, compare.png, compare.csv)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return folder


def _say(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _run_in_turn(planned, folder, ray_address, record, console, name) -> None:
    from evolstm.run import trainer  # looked up at call time (tests replace trainer.train)

    for done, run in enumerate(planned, start=1):
        _say(console, f"[{done}/{len(planned)}] {name}: variant {run.label}, seed {run.seed}")
        try:
            outcome = _train_here(trainer, run.cfg, folder, ray_address)
        except ConfigError:
            raise
        except Exception as err:
            traceback.print_exc(file=sys.stderr)
            outcome = {"error": f"{type(err).__name__}: {err}"}
        record(run, outcome)


def _train_here(trainer_module: Any, cfg: RunConfig, folder: Path, ray_address: str | None):
    from evolstm.run.trainer import SUMMARY_FILE

    run_dir = trainer_module.train(cfg, ray_address=ray_address, runs_root=folder)
    return {"run_dir": str(run_dir), "summary": json.loads((run_dir / SUMMARY_FILE).read_text())}


def _run_on_ray(planned, folder, ray_address, record, console, name) -> None:
    import ray

    from evolstm.rollouts.ray_evaluator import connect_ray

    owns_ray = connect_ray(ray_address)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        where = ray.get_runtime_context().gcs_address
        _say(
            console,
            f"{name}: {len(planned)} runs as Ray tasks on {where} "
            f"(up to {min(cpus, len(planned))} at once, {cpus} CPUs)",
        )
        task = ray.remote(num_cpus=1, max_retries=0)(train_one)
        pending = {task.remote(run.cfg, str(folder.resolve()), None): run for run in planned}
        done = 0
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                run = pending.pop(ready[0])
                done += 1
                try:
                    outcome = ray.get(ready[0])
                    verdict = f"eval return {outcome['summary']['eval_return_mean']:.4g}"
                except Exception as err:
                    outcome = {"error": _error_text(err)}
                    verdict = f"failed: {outcome['error']}"
                    print(f"{run.cfg.name}: {outcome['error']}", file=sys.stderr)
                _say(
                    console,
                    f"[{done}/{len(planned)}] {name}: variant {run.label}, seed {run.seed}: "
                    + verdict,
                )
                record(run, outcome)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    finally:
        if owns_ray and ray.is_initialized():
            ray.shutdown()
