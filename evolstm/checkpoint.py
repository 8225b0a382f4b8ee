"""Checkpoints that resume a run exactly: agent state, RNG states, counters, config.

Files live in ``run_dir/checkpoints/``: ``ckpt-{iteration:06d}.pt`` (the last
:data:`KEEP_LAST` are kept) and ``latest.pt`` (a copy of the newest). Every file is written
to a temporary name and moved into place with ``os.replace``, so a crash while saving
never leaves a truncated checkpoint behind.

A payload is a dict with the keys ``agent`` (the agent's ``state_dict``), ``rng``
(:func:`capture_rng_state`), ``config``, ``iteration``, ``env_steps``, ``wall_time``,
``eval_history`` and ``policy_vector``. Loading unpickles: load only checkpoints you trust.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evolstm.errors import ConfigError

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
KEEP_LAST = 3
FORMAT = "evolstm.checkpoint/1"


def capture_rng_state() -> dict[str, Any]:
    """The global python, numpy and torch RNG states."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp_path)`` and move the result to ``path`` in one ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def checkpoint_path(run_dir: str | Path, iteration: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"ckpt-{iteration:06d}.pt"


def save_checkpoint(run_dir: str | Path, iteration: int, payload: dict[str, Any]) -> Path:
    """Write ``ckpt-{iteration:06d}.pt`` and ``latest.pt`` atomically; prune old ones.

    :returns: the path of the new ``ckpt-*.pt``.
    """
    path = checkpoint_path(run_dir, iteration)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, **payload}
    atomic_write(path, lambda tmp: torch.save(blob, tmp))
    atomic_write(path.parent / LATEST, lambda tmp: shutil.copyfile(path, tmp))
    by_iteration = sorted(path.parent.glob("ckpt-[0-9]*.pt"), key=lambda p: int(p.stem[5:]))
    for old in by_iteration[:-KEEP_LAST]:
        old.unlink(missing_ok=True)
    return path


def find_checkpoint(path_or_run_dir: str | Path) -> Path:
    """The checkpoint file named by a file, a run folder or its ``checkpoints/`` folder."""
    path = Path(path_or_run_dir)
    for candidate in (path, path / LATEST, path / CHECKPOINT_DIR / LATEST):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no checkpoint at {path} (expected a .pt file or a run folder)")


def load_checkpoint(path_or_run_dir: str | Path) -> dict[str, Any]:
    """Load a payload written by :func:`save_checkpoint` (``latest.pt`` for a folder)."""
    path = find_checkpoint(path_or_run_dir)
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ConfigError(f"{path} is not an evolstm checkpoint")
    return blob
