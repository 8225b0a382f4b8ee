"""Checkpoints that resume a run exactly: agent state, RNG states, counters, config.

Files live in ``run_dir/checkpoints/``: ``ckpt-{iteration:06d}.pt`` (the last
:data:`KEEP_LAST` are kept) and ``latest.pt`` (a copy of the newest). Every file is written
to a temporary name and moved into place with ``os.replace``, so a crash while saving
never leaves a truncated checkpoint behind.

A payload is a dict with the keys ``agent`` (the agent's ``state_dict``), ``rng``
(:func:`capture_rng_state`), ``config``, ``iteration``, ``env_steps``, ``wall_time``,
``eval_history``, ``policy_vector`` and ``obs_norm``.

Checkpoints are *data*: torch tensors and plain Python values (int, float, bool, str, None
and lists/tuples/dicts of these; see :meth:`evolstm.agent.Agent.state_dict`), loaded with
``torch.load(weights_only=True)``, which refuses any file that names code. A file that is
not such data fails with a one-line :class:`~evolstm.errors.FileFormatError` naming it.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evolstm.errors import ConfigError, FileFormatError

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
KEEP_LAST = 3
FORMAT = "evolstm.checkpoint/1"


def capture_rng_state() -> dict[str, Any]:
    """The global python, numpy and torch RNG states, as plain data and a tensor."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"] = {**numpy_state["state"], "key": numpy_state["state"]["key"].tolist()}
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = dict(state["numpy"])
    key = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
    numpy_state["state"] = {**numpy_state["state"], "key": key}
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])


def load_data_file(path: str | Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain data only, nothing in the
    file is run. :raises FileFormatError: one line naming the file and the reason."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        text = str(err)
        found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", text)
        if found:
            reason = f"it refers to code ({found.group(1)}), refused"
        elif "Weights only load failed" in text:
            paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
            detail = paragraphs[1].splitlines()[0] if len(paragraphs) > 2 else "not plain data"
            reason = f"it is not plain data, refused ({detail[:120]})"
        else:
            first = text.strip().splitlines()[0] if text.strip() else ""
            reason = f"unreadable ({type(err).__name__}: {first[:120]})"
        raise FileFormatError(f"{path}: not a valid evolstm {what} file: {reason}") from None


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


DATA_LEAVES = (torch.Tensor, int, float, bool, str, type(None))


def check_data(obj: Any, where: str = "checkpoint") -> None:
    """Raise ``TypeError`` naming the first value in ``obj`` that is not data: tensors,
    int/float/bool/str/None, and lists/tuples/dicts (str or int keys) of these."""
    if isinstance(obj, DATA_LEAVES):
        return
    if isinstance(obj, list | tuple):
        for i, item in enumerate(obj):
            check_data(item, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for key, item in obj.items():
            if not isinstance(key, str | int):
                raise TypeError(f"{where}: key {key!r} is not a str or int")
            check_data(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}, not data (tensors, "
        "int, float, bool, str, None and lists/tuples/dicts of these; see Agent.state_dict)"
    )


def checkpoint_path(run_dir: str | Path, iteration: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"ckpt-{iteration:06d}.pt"


def save_checkpoint(run_dir: str | Path, iteration: int, payload: dict[str, Any]) -> Path:
    """Write ``ckpt-{iteration:06d}.pt`` and ``latest.pt`` atomically; prune old ones.

    :returns: the path of the new ``ckpt-*.pt``.
    """
    blob = {"format": FORMAT, **payload}
    check_data(blob)
    path = checkpoint_path(run_dir, iteration)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(blob, tmp))
    atomic_write(path.parent / LATEST, lambda tmp: shutil.copyfile(path, tmp))
    by_iteration = sorted(path.parent.glob("ckpt-[0-9]*.pt"), key=lambda p: int(p.stem[5:]))
    for old in by_iteration[:-KEEP_LAST]:
        old.unlink(missing_ok=True)
    return path


def find_checkpoint(path_or_run_dir: str | Path, what: str = "checkpoint") -> Path:
    """The checkpoint file named by a file, a run folder or its ``checkpoints/`` folder.

    :param what: how the path was given (``"--resume"``), for the error message.
    """
    path = Path(path_or_run_dir)
    for candidate in (path, path / LATEST, path / CHECKPOINT_DIR / LATEST):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"{what} {path}: no checkpoint there (expected a .pt file, or a run folder with "
        f"{CHECKPOINT_DIR}/{LATEST})"
    )


def load_checkpoint(path_or_run_dir: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """Load a payload written by :func:`save_checkpoint` (``latest.pt`` for a folder),
    with ``weights_only=True``. :raises FileFormatError: crafted, corrupted or foreign."""
    path = find_checkpoint(path_or_run_dir, what)
    blob = load_data_file(path, "checkpoint")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise FileFormatError(f"{path}: not an evolstm checkpoint ({FORMAT})")
    return blob
