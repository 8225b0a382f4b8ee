"""Observation normalisation: running statistics and the frozen normaliser a policy applies.

Neuroevolution on raw observations stalls when their scales differ (cart-pole's pole
angle lives within ±0.21 rad, its cart position within ±2.4 m): the policy's output barely
depends on the small inputs, so perturbations hardly change behaviour. As in EvoTorch's
``observation_normalization``, the evaluator collects statistics of the (flattened)
observations it sees, the agent merges them after each generation, and the policy uses
the statistics frozen at the start of the generation: ``clip((x - mean) / std, ±clip)``.
Statistics are merged with Chan et al.'s parallel update, so shards evaluated on Ray
actors combine exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class RunningStats:
    """Count, mean ``[D]`` and sum of squared deviations ``[D]`` of observations seen."""

    count: float = 0.0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None

    def update(self, x: np.ndarray) -> None:
        """Add a batch ``x [N, D]``."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] == 0:
            return
        mean = x.mean(axis=0)
        self.merge(RunningStats(float(x.shape[0]), mean, ((x - mean) ** 2).sum(axis=0)))

    def merge(self, other: RunningStats) -> None:
        """Fold ``other`` into these statistics (exact, order independent up to rounding)."""
        if other.count == 0 or other.mean is None or other.m2 is None:
            return
        if self.count == 0 or self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = other.count, other.mean.copy(), other.m2.copy()
            return
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / total)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / total)
        self.count = total

    @property
    def var(self) -> np.ndarray:
        assert self.m2 is not None
        return self.m2 / max(self.count, 1.0)

    def normalizer(self, clip: float = 5.0, eps: float = 1e-8) -> ObsNormalizer | None:
        """The frozen normaliser for these statistics (``None`` before any observation)."""
        if self.count < 2 or self.mean is None:
            return None
        std = np.sqrt(self.var + eps)
        return ObsNormalizer(
            torch.as_tensor(self.mean, dtype=torch.float32),
            torch.as_tensor(std, dtype=torch.float32),
            clip,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> RunningStats:
        return cls(d["count"], d["mean"], d["m2"])

    def to_tensors(self) -> dict[str, Any] | None:
        """These statistics as checkpoint data (a float and tensors ``[D]``, loadable with
        ``torch.load(weights_only=True)``); ``None`` before any observation."""
        if self.mean is None or self.m2 is None:
            return None
        return {
            "count": float(self.count),
            "mean": torch.from_numpy(np.asarray(self.mean).copy()),
            "m2": torch.from_numpy(np.asarray(self.m2).copy()),
        }

    @classmethod
    def from_tensors(cls, d: dict[str, Any] | None) -> RunningStats:
        """The inverse of :meth:`to_tensors` (``None``: no observation yet)."""
        if d is None or d["mean"] is None:
            return cls()
        return cls(float(d["count"]), d["mean"].numpy().copy(), d["m2"].numpy().copy())


@dataclass(frozen=True)
class ObsNormalizer:
    """``x [..., D] -> clip((x - mean) / std, -clip, clip)`` with fixed ``mean``/``std [D]``."""

    mean: torch.Tensor
    std: torch.Tensor
    clip: float = 5.0

    def __post_init__(self) -> None:
        # x * (1 / std) - mean / std: one fused addcmul and an in-place clamp per step
        # instead of three ops and three temporaries (the evaluator calls this every step).
        inv_std = 1.0 / self.std
        object.__setattr__(self, "_scale", inv_std)
        object.__setattr__(self, "_shift", -self.mean * inv_std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self._shift, x, self._scale).clamp_(-self.clip, self.clip)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.clone(), "std": self.std.clone(), "clip": self.clip}

    @classmethod
    def from_state_dict(cls, d: dict[str, Any] | None) -> ObsNormalizer | None:
        if d is None:
            return None
        return cls(torch.as_tensor(d["mean"]), torch.as_tensor(d["std"]), float(d["clip"]))
