"""Reward normalisation by the running standard deviation of the discounted return.

What SB3's ``VecNormalize(norm_reward=True)`` does (and RL Zoo's ``normalize: true`` turns
on for its tuned RecurrentPPO settings): each env slot keeps its discounted return
``R <- gamma * R + r`` (zeroed when its episode ends), the running variance of every ``R``
seen is updated at each step, and the reward the learner sees is
``clip(r / sqrt(Var[R] + eps), -clip, clip)``. The scale follows the returns as episodes
lengthen, so the value targets stay O(1) throughout training instead of growing with the
episode length as under a fixed ``reward_scale``.

Written here rather than wrapping the env in SB3's class: the rewards are normalised in the
learner, after a rollout (collectors on Ray actors would otherwise each keep their own
statistics), over valid steps only (NEXT_STEP autoreset's reset steps are no rewards), and
the state is data for exact resume. The statistics start from the same prior as SB3's
``RunningMeanStd(epsilon=1e-4)`` (count 1e-4, mean 0, variance 1), so the first steps match.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from evolstm.network.obs_norm import RunningStats

PRIOR_COUNT = 1e-4  # SB3's RunningMeanStd(epsilon=1e-4): a pseudo-count of mean 0, variance 1


class ReturnNormalizer:
    """Divides rewards by the running std of the per-slot discounted return.

    :param num_envs: N, the env slots.
    :param gamma: discount of the return whose variance is tracked (RL Zoo uses the agent's).
    :param clip: the normalised reward is clipped to ``[-clip, clip]`` (SB3: 10).
    :param eps: added to the variance (SB3: 1e-8).
    """

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8) -> None:
        self.gamma, self.clip, self.eps = gamma, clip, eps
        self.returns = np.zeros(num_envs)
        self.stats = RunningStats(PRIOR_COUNT, np.zeros(1), np.full(1, PRIOR_COUNT))

    def __call__(
        self, rewards: torch.Tensor, valid: torch.Tensor, ended: torch.Tensor
    ) -> torch.Tensor:
        """Normalised rewards ``[T, N]`` of one rollout (``rewards``, ``valid`` and ``ended``
        ``[T, N]``; ``ended``: the episode ended at that step). Steps in time order, each with
        the statistics updated by that step's returns, as SB3 does; invalid steps are 0 and
        change nothing."""
        r, ok, done = rewards.double().numpy(), valid.numpy(), ended.numpy()
        out = np.zeros_like(r)
        for t in range(r.shape[0]):
            v = ok[t]
            if not v.any():
                continue
            self.returns[v] = self.returns[v] * self.gamma + r[t, v]
            self.stats.update(self.returns[v][:, None])
            std = np.sqrt(self.stats.var[0] + self.eps)
            out[t, v] = np.clip(r[t, v] / std, -self.clip, self.clip)
            self.returns[done[t] & v] = 0.0
        return torch.from_numpy(out).to(rewards.dtype)

    def state_dict(self) -> dict[str, Any]:
        """Tensors and floats only (a checkpoint loads with ``weights_only=True``)."""
        return {"returns": torch.from_numpy(self.returns.copy()), **self.stats.to_tensors()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.returns = state["returns"].numpy().copy()
        self.stats = RunningStats.from_tensors(state)
