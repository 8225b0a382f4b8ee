"""The return normaliser (``agent.reward_norm``) against a hand computation and SB3's
``VecNormalize``; its state resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evolstm.reward_norm import ReturnNormalizer

GAMMA = 0.9
# Two slots over five steps; slot 0's episode ends at step 1, slot 1's step 2 is a reset
# step (NEXT_STEP autoreset: invalid, no reward).
REWARDS = torch.tensor([[1.0, 2.0], [3.0, 0.5], [-1.0, 0.0], [2.0, 1.0], [0.5, 4.0]])
VALID = torch.tensor([[1, 1], [1, 1], [1, 0], [1, 1], [1, 1]], dtype=torch.bool)
ENDED = torch.tensor([[0, 0], [1, 1], [0, 0], [0, 0], [0, 0]], dtype=torch.bool)


def _by_hand(rewards, valid, ended, gamma, prior=1e-4):
    """Each step: the returns, then r / std of every return seen so far (plus SB3's prior
    pseudo-observation of weight 1e-4 with mean 0 and variance 1), written out directly."""
    seen, out = [], np.zeros(rewards.shape)
    ret = np.zeros(rewards.shape[1])
    for t in range(rewards.shape[0]):
        for n in range(rewards.shape[1]):
            if valid[t, n]:
                ret[n] = gamma * ret[n] + rewards[t, n]
        seen += [ret[n] for n in range(rewards.shape[1]) if valid[t, n]]
        x = np.asarray(seen)
        count = prior + len(x)
        mean = x.sum() / count
        # E[X^2] - mean^2 over the pooled set (prior: E[X^2] = var + mean^2 = 1)
        var = (prior * 1.0 + (x**2).sum()) / count - mean**2
        for n in range(rewards.shape[1]):
            if valid[t, n]:
                out[t, n] = np.clip(rewards[t, n] / np.sqrt(var + 1e-8), -10, 10)
            if valid[t, n] and ended[t, n]:
                ret[n] = 0.0
    return out


def test_matches_a_hand_computation_and_skips_reset_steps() -> None:
    norm = ReturnNormalizer(2, GAMMA)
    got = norm(REWARDS, VALID, ENDED)
    want = _by_hand(REWARDS.numpy(), VALID.numpy(), ENDED.numpy(), GAMMA)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-9)
    assert got[2, 1] == 0.0  # the reset step
    # Slot 0's return restarted after its episode ended at step 1: 0.9 * 0 + (-1).
    assert norm.returns[0] == pytest.approx((-1.0 * GAMMA + 2.0) * GAMMA + 0.5)


def test_split_rollouts_and_resume_give_the_same_rewards() -> None:
    whole = ReturnNormalizer(2, GAMMA)(REWARDS, VALID, ENDED)
    first = ReturnNormalizer(2, GAMMA)
    a = first(REWARDS[:3], VALID[:3], ENDED[:3])
    resumed = ReturnNormalizer(2, GAMMA)
    state = first.state_dict()
    assert all(isinstance(v, torch.Tensor | float) for v in state.values())
    resumed.load_state_dict(state)
    b = resumed(REWARDS[3:], VALID[3:], ENDED[3:])
    assert torch.equal(torch.cat([a, b]), whole)


def test_matches_sb3_vecnormalize() -> None:
    vec_env = pytest.importorskip("stable_baselines3.common.vec_env")
    from stable_baselines3.common.running_mean_std import RunningMeanStd

    rng = np.random.default_rng(0)
    T, N = 40, 3
    rewards = rng.normal(1.0, 2.0, (T, N))
    dones = rng.random((T, N)) < 0.1
    sb3 = vec_env.VecNormalize.__new__(vec_env.VecNormalize)  # only its reward statistics
    sb3.ret_rms, sb3.norm_reward = RunningMeanStd(shape=()), True
    sb3.returns, sb3.gamma, sb3.epsilon, sb3.clip_reward = np.zeros(N), 0.98, 1e-8, 10.0
    want = np.zeros((T, N))
    for t in range(T):
        sb3._update_reward(rewards[t])
        want[t] = sb3.normalize_reward(rewards[t])
        sb3.returns[dones[t]] = 0
    ours = ReturnNormalizer(N, 0.98)
    got = ours(
        torch.from_numpy(rewards), torch.ones(T, N, dtype=torch.bool), torch.from_numpy(dones)
    )
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)  # SB3 returns float32
