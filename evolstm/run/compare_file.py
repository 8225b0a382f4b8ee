"""The compare file of ``evolstm compare``: read, merged and validated into one training
config per (variant, seed) run, before the first run starts (:mod:`evolstm.run.compare` runs
them).

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
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolstm.errors import ConfigError
from evolstm.run.config import (
    RunConfig,
    apply_overrides,
    read_yaml,
    section_for,
    validate_config,
)

COMPARE_KEYS = ("name", "base", "config", "seeds", "env_steps", "parallel", "variants")
# Keys of the compare file that the command line may also set (`seeds=[0,1]`).
COMPARE_LEVEL_KEYS = ("seeds", "env_steps", "parallel")
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
