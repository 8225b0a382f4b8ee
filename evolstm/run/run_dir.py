"""The run folder: a fresh one per run, the one ``--resume`` names, and its ``config.yaml``.

A run folder ``runs/<name>-<timestamp>/`` receives ``config.yaml``, ``metrics.jsonl``,
``checkpoints/``, ``summary.json`` and ``policy.pt`` (the public contract in DESIGN.md). On
``--resume``, the config given must match the run's own except in :data:`RESUME_MAY_CHANGE`.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from evolstm.errors import ConfigError
from evolstm.run.checkpoint import CHECKPOINT_DIR, atomic_write_text
from evolstm.run.config import RunConfig

CONFIG_FILE = "config.yaml"
# Sections that may change when a run is resumed; the others must match the run's own.
RESUME_MAY_CHANGE = ("name", "budget", "eval", "checkpoint", "ray", "logging")


def new_run_dir(runs_root: Path, name: str) -> Path:
    """Create and return a fresh ``runs_root/<name>-<timestamp>[-k]/`` folder."""
    stem = f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    for suffix in ["", *(f"-{i}" for i in range(1, 1000))]:
        run_dir = runs_root / f"{stem}{suffix}"
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue
    raise FileExistsError(f"no free run folder name for {runs_root / stem}")


def resume_dir(resume: Path) -> Path:
    """The run folder named by ``--resume`` (a run folder or one of its checkpoints)."""
    if resume.is_file() and resume.parent.name == CHECKPOINT_DIR:
        return resume.parent.parent
    if not resume.is_dir():
        raise ConfigError(f"--resume {resume}: not a run folder")
    return resume


def _first_difference(old: Any, new: Any, key: str) -> tuple[str, Any, Any] | None:
    if isinstance(old, dict) and isinstance(new, dict):
        # Keys both sides have first: a changed `agent.name` is named before the options
        # that differ only because the agent did.
        shared = sorted(set(old) & set(new))
        for sub in [*shared, *sorted(set(old) ^ set(new))]:
            found = _first_difference(old.get(sub), new.get(sub), f"{key}.{sub}" if key else sub)
            if found is not None:
                return found
        return None
    return None if old == new else (key, old, new)


def check_resumable(saved: dict[str, Any], cfg: RunConfig, run_dir: Path) -> None:
    """A :class:`ConfigError` naming the first key where ``cfg`` differs from the run's own
    config ``saved`` outside :data:`RESUME_MAY_CHANGE`."""
    current = cfg.to_yaml_dict()
    fixed = [k for k in current if k not in RESUME_MAY_CHANGE]
    diff = _first_difference({k: saved.get(k) for k in fixed}, {k: current[k] for k in fixed}, "")
    if diff is not None:
        key, was, now = diff
        raise ConfigError(
            f"--resume {run_dir}: the run used {key}={was!r} but the config gives {now!r}; "
            f"only {', '.join(RESUME_MAY_CHANGE)} may change on resume"
        )


def write_config(run_dir: Path, cfg: RunConfig, what: str) -> None:
    """``run_dir/config.yaml``, atomically; a :class:`ConfigError` (naming the ``what``
    option) when the folder cannot be written."""
    try:
        atomic_write_text(
            run_dir / CONFIG_FILE, yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False)
        )
    except OSError as err:
        raise ConfigError(f"{what} {run_dir}: cannot write there ({err.strerror or err})") from None


def writable_run_dir(runs_root: Path, cfg: RunConfig) -> Path:
    """A new run folder with its ``config.yaml``, or a :class:`ConfigError` before training
    when the folder cannot be created or written (read-only, full disk)."""
    try:
        run_dir = new_run_dir(runs_root, cfg.name)
    except OSError as err:
        raise ConfigError(
            f"--runs-dir {runs_root}: cannot create a run folder there ({err.strerror or err})"
        ) from None
    try:
        write_config(run_dir, cfg, "--runs-dir")
    except ConfigError:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir
