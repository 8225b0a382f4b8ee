"""Validation of task options: errors name the key, the value and the valid range."""

from __future__ import annotations

from typing import Any

import numpy as np


def require_int(key: str, value: Any, low: int, high: int | None = None) -> None:
    """Raise a one-line error naming ``key``, its value and the valid range ``[low, high]``
    (``high`` None: no upper bound); shared by the task configs of ``envs``."""
    valid = f"[{low}, inf)" if high is None else f"[{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{key} must be an int in {valid}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{key} must be an int in {valid}, got {value}")
