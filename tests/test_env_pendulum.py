"""PendulumNoVel: Pendulum-v1's physics and rewards, the native vector env against SyncVectorEnv."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the tasks)
from envs.pendulum import PendulumNoVelEnv, PendulumNoVelVectorEnv, pendulum_step
from tests.env_checks import assert_native_matches_sync, rollout

ENV_ID = "evolstm/PendulumNoVel-v0"


def test_step_and_reward_equal_gymnasium_pendulum_from_the_same_states():
    reference = gym.make("Pendulum-v1").unwrapped
    reference.reset(seed=0)
    rng = np.random.default_rng(1)
    states = rng.uniform([-10, -8], [10, 8], size=(300, 2))
    actions = rng.uniform(-2.5, 2.5, size=(300, 1)).astype(np.float32)  # clipping included
    for state, action in zip(states, actions, strict=True):
        reference.state = state.copy()
        _, ref_reward, _, _, _ = reference.step(action)
        mine, reward = pendulum_step(state[None], action[None])
        np.testing.assert_allclose(mine[0], reference.state, rtol=0, atol=1e-9)
        assert abs(reward[0] - ref_reward) <= 1e-9


def test_episodes_equal_pendulum_v1_seen_through_cos_and_sin():
    mine, reference = gym.make(ENV_ID), gym.make("Pendulum-v1")
    actions = np.random.default_rng(2).uniform(-2, 2, size=(200, 1)).astype(np.float32)
    for seed in range(3):
        got, want = rollout(mine, seed, actions), rollout(reference, seed, actions)
        np.testing.assert_allclose(got.obs, want.obs[:, :2], rtol=0, atol=1e-6)
        np.testing.assert_allclose(got.reward, want.reward, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(got.truncated, want.truncated)
        assert got.truncated[-1] and not got.terminated.any()


def test_vector_env_equals_sync_vector_env_of_single_envs():
    n, steps = 5, 1000  # five 200-step episodes per slot: autoresets on truncation
    actions = np.random.default_rng(3).uniform(-2, 2, size=(steps, n, 1)).astype(np.float32)
    native = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point")
    sync = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="sync")
    assert isinstance(native.unwrapped, PendulumNoVelVectorEnv)
    for seed in (9, [4, 4, 0, 1, 2]):
        got = assert_native_matches_sync(native, sync, seed, actions)
        assert got.truncated.sum() == 4 * n


def test_gravity_kwarg_matches_pendulum_v1_and_is_validated():
    mine, reference = PendulumNoVelEnv(g=9.81), gym.make("Pendulum-v1", g=9.81)
    actions = np.random.default_rng(5).uniform(-2, 2, size=(50, 1)).astype(np.float32)
    got, want = rollout(mine, 0, actions), rollout(reference, 0, actions)
    np.testing.assert_allclose(got.reward, want.reward, rtol=0, atol=1e-9)
    for bad in (0, -1.0, float("inf"), "10"):
        with pytest.raises(ValueError, match="g must"):
            PendulumNoVelEnv(g=bad)
        with pytest.raises(ValueError, match="g must"):
            PendulumNoVelVectorEnv(2, g=bad)


def test_env_checker_passes():
    check_env(gym.make(ENV_ID).unwrapped)
