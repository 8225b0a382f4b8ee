"""CartPoleNoVel: CartPole-v1's physics, the native vector env against SyncVectorEnv."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the tasks)
from envs.cartpole import CartPoleNoVelEnv, CartPoleNoVelVectorEnv, cartpole_failed, cartpole_step
from tests.env_checks import assert_native_matches_sync, rollout

ENV_ID = "evolstm/CartPoleNoVel-v0"


def test_step_equals_gymnasium_cartpole_from_the_same_states():
    reference = gym.make("CartPole-v1").unwrapped
    reference.reset(seed=0)
    rng = np.random.default_rng(1)
    states = rng.uniform([-2.4, -3, -0.2, -3], [2.4, 3, 0.2, 3], size=(300, 4))
    actions = rng.integers(0, 2, size=300)
    for state, action in zip(states, actions, strict=True):
        reference.state, reference.steps_beyond_terminated = state.copy(), None
        _, _, terminated, _, _ = reference.step(int(action))
        mine = cartpole_step(state[None], np.array([action]))
        np.testing.assert_allclose(mine[0], reference.state, rtol=0, atol=1e-9)
        assert bool(cartpole_failed(mine)[0]) == terminated


def test_episodes_equal_cartpole_v1_seen_through_position_and_angle():
    mine, reference = gym.make(ENV_ID), gym.make("CartPole-v1")
    rng = np.random.default_rng(2)
    for seed in range(5):
        actions = rng.integers(0, 2, size=600)
        obs, _ = mine.reset(seed=seed)
        ref_obs, _ = reference.reset(seed=seed)
        np.testing.assert_array_equal(obs, ref_obs[[0, 2]])
        for action in actions:
            obs, reward, terminated, truncated, _ = mine.step(int(action))
            ref_obs, ref_reward, ref_terminated, ref_truncated, _ = reference.step(int(action))
            np.testing.assert_allclose(mine.unwrapped.state, reference.unwrapped.state, atol=1e-9)
            np.testing.assert_allclose(obs, ref_obs[[0, 2]], atol=1e-6)
            assert (reward, terminated, truncated) == (ref_reward, ref_terminated, ref_truncated)
            if terminated or truncated:
                break


def test_balanced_episode_is_truncated_at_500():
    env = gym.make(ENV_ID, observe=(0, 1, 2, 3))
    obs, _ = env.reset(seed=3)
    for t in range(1, 501):
        # A PD controller on the full state keeps the pole up: the limit ends the episode.
        action = int(obs[2] + 0.2 * obs[3] + 0.01 * obs[0] + 0.05 * obs[1] > 0)
        obs, reward, terminated, truncated, _ = env.step(action)
        assert reward == 1.0 and not terminated
        assert truncated == (t == 500)


@pytest.mark.parametrize("max_episode_steps", [500, 15])
def test_vector_env_equals_sync_vector_env_of_single_envs(max_episode_steps):
    n, steps = 6, 1200
    actions = np.random.default_rng(4).integers(0, 2, size=(steps, n))
    native = CartPoleNoVelVectorEnv(n, max_episode_steps=max_episode_steps)
    sync = gym.vector.SyncVectorEnv(
        [lambda: gym.make(ENV_ID, max_episode_steps=max_episode_steps)] * n
    )
    # A None entry keeps that slot's generator running, as ``Env.reset(seed=None)`` does.
    for seed in (7, [11, 3, 11, 0, 5, 9], [None, 2, None, None, 8, None]):
        got = assert_native_matches_sync(native, sync, seed, actions)
        assert got.terminated.sum() > 100  # many autoresets were exercised
        if max_episode_steps == 15:
            assert got.truncated.sum() > 50


def test_slots_with_the_same_seed_follow_the_same_trajectory_whatever_their_neighbours_do():
    steps = 1000
    rng = np.random.default_rng(5)
    shared = rng.integers(0, 2, size=steps)
    actions = np.stack([shared, shared, rng.integers(0, 2, size=steps)], axis=1)
    env = CartPoleNoVelVectorEnv(3, observe=(0, 1, 2, 3))
    out = rollout(env, [42, 42, 1], actions)
    np.testing.assert_array_equal(out.obs[:, 0], out.obs[:, 1])
    np.testing.assert_array_equal(out.terminated[:, 0], out.terminated[:, 1])
    # The neighbour resets at other times, so a shared generator would have desynchronised them.
    assert not np.array_equal(out.terminated[:, 0], out.terminated[:, 2])
    assert out.terminated[:, 2].sum() > 10


def test_observe_selects_state_components_and_bounds():
    env = CartPoleNoVelEnv(observe=(3, 0))
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, env.state[[3, 0]].astype(np.float32))
    assert env.observation_space.shape == (2,)
    assert env.observation_space.high[1] == np.float32(4.8)
    assert np.isinf(env.observation_space.high[0])


@pytest.mark.parametrize("observe", [(), (0, 0), (4,), (-1, 2), "ab"])
def test_bad_observe_is_a_clear_error(observe):
    with pytest.raises(ValueError, match="observe"):
        CartPoleNoVelEnv(observe=observe)
    with pytest.raises(ValueError, match="observe"):
        CartPoleNoVelVectorEnv(2, observe=observe)


def test_env_checker_passes():
    check_env(gym.make(ENV_ID).unwrapped)
    check_env(CartPoleNoVelEnv(observe=(0, 1, 2, 3)))


def test_reset_with_repeated_seeds_gives_every_slot_gymnasiums_own_independent_generator():
    """Seeds shared by many slots are seeded once and copied: each slot still holds its own
    generator in the state ``seeding.np_random(seed)`` gives, and a ``None`` keeps its own."""
    from gymnasium.utils import seeding

    env = CartPoleNoVelVectorEnv(num_envs=5)
    env.reset(seed=[7, 7, 9, None, 7])
    kept = env.slot_rngs[3].bit_generator.state
    env.reset(seed=[7, 7, 9, None, 7])
    assert env.slot_rngs[3].bit_generator.state != kept, "the None slot kept drawing"
    assert len({id(rng) for rng in env.slot_rngs}) == 5
    draws = [env.slot_rngs[i].random(3) for i in (0, 1, 2, 4)]
    for draw, seed in zip(draws, [7, 7, 9, 7], strict=True):
        reference = seeding.np_random(seed)[0]
        reference.uniform(-0.05, 0.05, size=(4,))  # the start state this reset drew
        np.testing.assert_array_equal(draw, reference.random(3))
