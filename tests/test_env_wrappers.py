"""POMDP wrappers: kept indices, flicker rate, noise statistics, reproducibility, vector forms."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the tasks)
from envs.cartpole import CartPoleNoVelVectorEnv
from envs.pendulum import PendulumNoVelVectorEnv
from envs.wrappers import (
    FlickerObservation,
    KeepObservationIndices,
    ObservationNoise,
    VectorFlickerObservation,
    VectorKeepObservationIndices,
    VectorObservationNoise,
)

FULL_CARTPOLE = {"observe": (0, 1, 2, 3)}


def observations(env, seed, actions: np.ndarray) -> np.ndarray:
    """Observations ``[T + 1, ...]`` of a seeded run with the given actions."""
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for action in actions:
        obs, *_ = env.step(action)
        out.append(obs)
    return np.stack(out)


def pendulum_run(wrap, seed: int, steps: int = 199) -> tuple[np.ndarray, np.ndarray]:
    """(wrapped, unwrapped) observations of Pendulum-v1 under the same seed and actions."""
    actions = np.random.default_rng(0).uniform(-2, 2, size=(steps, 1)).astype(np.float32)
    base = observations(gym.make("Pendulum-v1"), seed, actions)
    return observations(wrap(gym.make("Pendulum-v1")), seed, actions), base


# -- keep indices --------------------------------------------------------------------------
def test_kept_indices_are_the_base_env_values_and_bounds():
    wrapped = KeepObservationIndices(gym.make("CartPole-v1"), [3, 0])
    base = gym.make("CartPole-v1").observation_space
    assert wrapped.observation_space == gym.spaces.Box(
        base.low[[3, 0]], base.high[[3, 0]], dtype=np.float32
    )
    actions = np.random.default_rng(1).integers(0, 2, size=8)  # short of any termination
    got = observations(wrapped, 5, actions)
    want = observations(gym.make("CartPole-v1"), 5, actions)
    np.testing.assert_array_equal(got, want[:, [3, 0]])


def test_cartpole_no_vel_equals_cartpole_v1_with_kept_position_and_angle():
    actions = np.random.default_rng(2).integers(0, 2, size=9)
    got = observations(gym.make("evolstm/CartPoleNoVel-v0"), 3, actions)
    want = observations(KeepObservationIndices(gym.make("CartPole-v1"), [0, 2]), 3, actions)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("indices", [[], [0, 0], [4], [-1], ["x"]])
def test_bad_indices_are_clear_errors(indices):
    with pytest.raises(ValueError, match="indices"):
        KeepObservationIndices(gym.make("CartPole-v1"), indices)


# -- flicker -------------------------------------------------------------------------------
def test_flicker_blanks_with_probability_p_and_leaves_other_observations_alone():
    p, blanks, total = 0.3, 0, 0
    for seed in range(10):
        got, base = pendulum_run(lambda env: FlickerObservation(env, p), seed)
        blank = (got == 0).all(axis=1)
        np.testing.assert_array_equal(got[~blank], base[~blank])
        blanks, total = blanks + blank.sum(), total + len(blank)
    tolerance = 4 * np.sqrt(p * (1 - p) / total)  # 4 binomial standard deviations
    assert abs(blanks / total - p) < tolerance


def test_flicker_is_reproducible_from_the_reset_seed():
    wrap = lambda env: FlickerObservation(env, 0.5)  # noqa: E731
    first, _ = pendulum_run(wrap, 7)
    again, _ = pendulum_run(wrap, 7)
    other, _ = pendulum_run(wrap, 8)
    np.testing.assert_array_equal(first, again)
    blanks = [(run == 0).all(axis=1) for run in (first, other)]
    assert not np.array_equal(*blanks)


def test_flicker_with_p_zero_or_one():
    never, base = pendulum_run(lambda env: FlickerObservation(env, 0.0), 1, steps=20)
    always, _ = pendulum_run(lambda env: FlickerObservation(env, 1.0), 1, steps=20)
    np.testing.assert_array_equal(never, base)
    assert (always == 0).all()


# -- noise ---------------------------------------------------------------------------------
def test_noise_has_zero_mean_and_the_given_std_per_entry():
    std = np.array([0.1, 0.5, 0.0])
    noise = np.concatenate(
        [
            np.subtract(*pendulum_run(lambda env: ObservationNoise(env, std), seed))
            for seed in range(10)
        ]
    )
    n = len(noise)
    for column in range(2):
        assert abs(noise[:, column].mean()) < 4 * std[column] / np.sqrt(n)
        assert abs(noise[:, column].std() / std[column] - 1) < 4 / np.sqrt(2 * n)
    assert np.abs(noise[:, 2]).max() == 0.0
    assert abs(np.corrcoef(noise[:, 0], noise[:, 1])[0, 1]) < 4 / np.sqrt(n)


def test_noise_is_reproducible_from_the_reset_seed_and_unbounded():
    wrap = lambda env: ObservationNoise(env, 0.2)  # noqa: E731
    first, _ = pendulum_run(wrap, 3, steps=30)
    again, _ = pendulum_run(wrap, 3, steps=30)
    other, _ = pendulum_run(wrap, 4, steps=30)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    space = wrap(gym.make("Pendulum-v1")).observation_space
    assert np.isinf(space.low).all() and space.dtype == np.float32


@pytest.mark.parametrize("std", [-0.1, [0.1, 0.2], np.nan])
def test_bad_std_is_a_clear_error(std):
    with pytest.raises(ValueError, match="std"):
        ObservationNoise(gym.make("Pendulum-v1"), std)


def test_wrappers_refuse_non_box_observations_and_bad_p():
    with pytest.raises(TypeError, match="Box"):
        FlickerObservation(gym.make("FrozenLake-v1"), 0.1)
    with pytest.raises(ValueError, match="p must"):
        FlickerObservation(gym.make("Pendulum-v1"), 1.5)


# -- vector forms --------------------------------------------------------------------------
VECTOR_CASES = {
    "keep": (
        lambda env: KeepObservationIndices(env, [2, 1]),
        lambda venv: VectorKeepObservationIndices(venv, [2, 1]),
    ),
    "flicker": (
        lambda env: FlickerObservation(env, 0.4),
        lambda venv: VectorFlickerObservation(venv, 0.4),
    ),
    "noise": (
        lambda env: ObservationNoise(env, [0.1, 0.0, 0.3, 1.0]),
        lambda venv: VectorObservationNoise(venv, [0.1, 0.0, 0.3, 1.0]),
    ),
}


@pytest.mark.parametrize("case", VECTOR_CASES)
def test_vector_form_equals_sync_vector_env_of_single_forms(case):
    wrap_single, wrap_vector = VECTOR_CASES[case]
    n, steps = 4, 400
    actions = np.random.default_rng(6).integers(0, 2, size=(steps, n))
    vector = wrap_vector(CartPoleNoVelVectorEnv(n, **FULL_CARTPOLE))
    sync = gym.vector.SyncVectorEnv(
        [lambda: wrap_single(gym.make("evolstm/CartPoleNoVel-v0", **FULL_CARTPOLE))] * n
    )
    assert vector.single_observation_space == sync.single_observation_space
    for seed in (2, [5, 5, 1, 0]):
        np.testing.assert_array_equal(
            observations(vector, seed, actions), observations(sync, seed, actions)
        )
    # reset(seed=None) keeps every slot's generator, as SyncVectorEnv's sub-envs do
    np.testing.assert_array_equal(
        observations(vector, None, actions[:50]), observations(sync, None, actions[:50])
    )


def test_vector_flicker_slots_with_the_same_seed_blank_together():
    vector = VectorFlickerObservation(PendulumNoVelVectorEnv(3), 0.5)
    actions = np.zeros((300, 3, 1), dtype=np.float32)
    blank = (observations(vector, [1, 1, 2], actions) == 0).all(axis=2)
    np.testing.assert_array_equal(blank[:, 0], blank[:, 1])
    assert not np.array_equal(blank[:, 0], blank[:, 2])
    assert abs(blank.mean() - 0.5) < 4 * np.sqrt(0.25 / blank.size)
