"""``RecurrentPolicy.predict``: one observation or a batch of every supported space, against
a step-by-step reference built on ``gymnasium.spaces.flatten``."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from evolstm.network.layout import PolicySpec
from evolstm.network.policy import RecurrentPolicy
from tests.test_policy import _batch
from tests.test_spaces import OBSERVATION_SPACES

ACTION_SPACES = [
    spaces.Discrete(3, start=1),
    spaces.MultiDiscrete([2, 3]),
    spaces.Box(-2.0, 2.0, (2,), np.float32),
]
B, T = 4, 3


def _policy(obs_space: gym.Space, action_space: gym.Space) -> RecurrentPolicy:
    spec = PolicySpec(obs_space, action_space, hidden=6)
    policy = RecurrentPolicy(spec, seed=1)
    with torch.no_grad():  # larger weights, so actions differ between observations
        policy.vector.mul_(4.0)
    return policy


def _reference(policy: RecurrentPolicy, samples: list, restart_at: int | None = None) -> list:
    """Actions of one slot over time: flatten -> core.forward -> greedy head, state by hand."""
    space = policy.spec.observation_space
    state = policy.core.init_state((1,))
    actions = []
    for t, obs in enumerate(samples):
        if t == restart_at:
            state = policy.core.init_state((1,))
        x = torch.as_tensor(spaces.flatten(space, obs), dtype=torch.float32)[None]
        with torch.no_grad():
            out, state = policy.core.forward(policy.params(), x, state)
        actions.append(policy.head.to_env(policy.head.deterministic(out))[0])
    return actions


@pytest.mark.parametrize("name", list(OBSERVATION_SPACES))
def test_single_and_batched_predict_equal_the_reference(name):
    obs_space = OBSERVATION_SPACES[name]
    action_space = ACTION_SPACES[list(OBSERVATION_SPACES).index(name) % len(ACTION_SPACES)]
    policy = _policy(obs_space, action_space)
    obs_space.seed(7)
    samples = [[obs_space.sample() for _ in range(T)] for _ in range(B)]  # [B][T]

    expected = [_reference(policy, samples[b]) for b in range(B)]
    # One observation at a time, one slot at a time.
    for b in range(B):
        state = None
        for t in range(T):
            action, state = policy.predict(samples[b][t], state)
            assert action_space.contains(action), (action, action_space)
            np.testing.assert_allclose(action, expected[b][t], rtol=1e-6, atol=1e-6)
        assert all(tensor.shape[0] == 1 for layer in state for tensor in layer)
    # A batch of B slots per step, as a vector env returns it.
    state = None
    for t in range(T):
        batch = _batch(obs_space, [samples[b][t] for b in range(B)])
        actions, state = policy.predict(batch, state)
        assert len(actions) == B
        for b in range(B):
            np.testing.assert_allclose(actions[b], expected[b][t], rtol=1e-6, atol=1e-6)


def test_episode_start_zeroes_the_state_of_those_slots():
    obs_space = OBSERVATION_SPACES["dict_nested"]
    policy = _policy(obs_space, ACTION_SPACES[1])
    obs_space.seed(3)
    samples = [[obs_space.sample() for _ in range(T)] for _ in range(2)]
    # Slot 0 starts a new episode at t = 2, slot 1 does not.
    expected = [_reference(policy, samples[0], restart_at=2), _reference(policy, samples[1])]
    state = None
    for t in range(T):
        batch = _batch(obs_space, [samples[0][t], samples[1][t]])
        actions, state = policy.predict(batch, state, episode_start=[t == 2, False])
        for b in range(2):
            np.testing.assert_array_equal(actions[b], expected[b][t])
    # A single observation with episode_start=True ignores the state passed in.
    _, carried = policy.predict(samples[0][0])
    fresh, _ = policy.predict(samples[0][1])
    again, _ = policy.predict(samples[0][1], carried, episode_start=True)
    np.testing.assert_array_equal(fresh, again)


def test_sampled_actions_follow_the_distribution_and_stay_in_the_space():
    policy = _policy(OBSERVATION_SPACES["box"], spaces.Discrete(3))
    obs = OBSERVATION_SPACES["box"].sample()
    greedy, _ = policy.predict(obs)
    torch.manual_seed(0)
    draws = [int(policy.predict(obs, deterministic=False)[0]) for _ in range(400)]
    out, _ = policy.step(np.asarray(obs)[None], policy.init_state(1))
    probs = torch.softmax(out[0], -1).detach().numpy()
    freq = np.bincount(draws, minlength=3) / len(draws)
    # 400 draws: the standard error of each frequency is at most 0.025.
    np.testing.assert_allclose(freq, probs, atol=0.08)
    assert int(greedy) == int(np.argmax(probs))


def test_a_wrong_shape_is_a_clear_error():
    policy = _policy(OBSERVATION_SPACES["box"], spaces.Discrete(3))
    with pytest.raises(ValueError, match=r"neither one observation of Box"):
        policy.predict(np.zeros((5,)))
