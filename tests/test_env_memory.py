"""evolstm/RepeatPrevious-v0 and evolstm/DelayedRecall-v0: vector == SyncVectorEnv, the optimum
is reached exactly with memory, and memoryless policies are at chance."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import SyncVectorEnv

import envs  # noqa: F401  (registers the tasks)
from envs.memory import (
    DelayedRecallEnv,
    DelayedRecallVectorEnv,
    RepeatPreviousEnv,
    RepeatPreviousVectorEnv,
)
from tests.env_checks import assert_native_matches_sync, run_first_episodes

REPEAT_ID, RECALL_ID = "evolstm/RepeatPrevious-v0", "evolstm/DelayedRecall-v0"


def native_and_sync_episode_ends(
    env_id: str, kwargs: dict, num_envs: int, steps: int, seed: int
) -> int:
    """Same seed, same pre-sampled random actions: equal obs, rewards and flags every step.
    Returns the number of episode ends."""
    native = gym.make_vec(env_id, num_envs, vectorization_mode="vector_entry_point", **kwargs)
    sync = SyncVectorEnv([lambda: gym.make(env_id, **kwargs)] * num_envs)
    num_actions = native.single_action_space.n
    actions = np.random.default_rng(seed).integers(num_actions, size=(steps, num_envs))
    return assert_native_matches_sync(native, sync, seed, actions).episode_ends


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"num_symbols": 2, "k": 3, "length": 5},
        {"k": 0, "length": 1},
        {"length": 20, "max_episode_steps": 7},
    ],
)
def test_repeat_previous_vector_matches_sync(kwargs):
    ended = native_and_sync_episode_ends(REPEAT_ID, kwargs, 8, 260, seed=1)
    assert ended >= 8 * 4  # several autoresets per slot


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"min_delay": 0, "max_delay": 0}, {"num_symbols": 7, "min_delay": 2, "max_delay": 9}],
)
def test_delayed_recall_vector_matches_sync(kwargs):
    ended = native_and_sync_episode_ends(RECALL_ID, kwargs, 8, 200, seed=2)
    assert ended >= 8 * 8


@pytest.mark.parametrize(
    "env",
    [
        RepeatPreviousEnv(),
        RepeatPreviousEnv(num_symbols=3, k=5, length=6),
        DelayedRecallEnv(),
        DelayedRecallEnv(min_delay=0, max_delay=0),
    ],
)
def test_check_env(env):
    check_env(env, skip_render_check=True)


# -- repeat previous -----------------------------------------------------------------------
@pytest.mark.parametrize("num_symbols, k, length", [(4, 1, 64), (3, 5, 40), (2, 0, 10)])
def test_repeat_previous_oracle_attains_length_minus_k(num_symbols, k, length):
    env = RepeatPreviousVectorEnv(128, num_symbols=num_symbols, k=k, length=length)
    obs, _ = env.reset(seed=7)
    seen = [obs]
    total = np.zeros(128)
    for t in range(length):
        action = seen[t - k] if t >= k else np.zeros(128, dtype=np.int64)
        obs, reward, terminated, truncated, _ = env.step(action)
        seen.append(obs)
        total += reward
        assert terminated.all() == (t == length - 1) and not truncated.any()
    np.testing.assert_array_equal(total, length - k)


def test_repeat_previous_steps_before_k_give_zero_whatever_the_action():
    k = 3
    for action in range(4):
        env = RepeatPreviousEnv(k=k, length=8)
        env.reset(seed=0)
        assert [env.step(action)[1] for _ in range(k)] == [0.0] * k


def binomial_band(successes: int, trials: int, p: float, sigmas: float = 4.5) -> bool:
    return abs(successes - trials * p) <= sigmas * np.sqrt(trials * p * (1 - p))


@pytest.mark.parametrize("policy", ["echo", "constant", "permutation", "random"])
def test_repeat_previous_memoryless_policies_are_at_chance(policy):
    num_symbols, k, length, n = 4, 1, 64, 512
    env = RepeatPreviousVectorEnv(n, num_symbols=num_symbols, k=k, length=length)
    obs, _ = env.reset(seed=11)
    rng = np.random.default_rng(0)
    permutation = np.array([2, 0, 3, 1])
    correct = 0
    for _ in range(length):
        action = {
            "echo": obs,
            "constant": np.full(n, 2),
            "permutation": permutation[obs],
            "random": rng.integers(num_symbols, size=n),
        }[policy]
        obs, reward, *_ = env.step(action)
        correct += int(reward.sum())
    # The scored indicators are pairwise independent Bernoulli(1/num_symbols).
    assert binomial_band(correct, n * (length - k), 1 / num_symbols)


# -- delayed recall ------------------------------------------------------------------------
def test_delayed_recall_observation_sequence():
    env = DelayedRecallEnv(num_symbols=3, min_delay=2, max_delay=6)
    blank, cue = 3, 4
    for seed in range(30):
        symbol, _ = env.reset(seed=seed)
        assert 0 <= symbol < 3
        observations, rewards = [], []
        terminated = False
        while not terminated:
            obs, reward, terminated, truncated, _ = env.step(int(symbol))
            observations.append(int(obs))
            rewards.append(reward)
            assert not truncated
        delay = len(observations) - 2
        assert 2 <= delay <= 6
        assert observations == [blank] * delay + [cue, blank]
        assert rewards == [0.0] * (delay + 1) + [1.0]


def test_delayed_recall_oracle_scores_one_and_delays_cover_the_range():
    env = DelayedRecallVectorEnv(2000, num_symbols=5, min_delay=3, max_delay=8)
    returns, lengths, _ = run_first_episodes(env, 0, lambda obs, first: first)
    np.testing.assert_array_equal(returns, 1.0)
    delays = lengths - 2
    assert set(np.unique(delays)) == set(range(3, 9))
    counts = np.bincount(delays, minlength=9)[3:]
    assert all(binomial_band(c, 2000, 1 / 6) for c in counts)


@pytest.mark.parametrize("answer", [0, 1, 2, 3, "random"])
def test_delayed_recall_memoryless_policies_are_at_chance(answer):
    """At the cue a memoryless policy's answer is a fixed function of the cue observation:
    one of the constants (or a random draw)."""
    n, num_symbols = 4000, 4
    env = DelayedRecallVectorEnv(n, num_symbols=num_symbols)
    rng = np.random.default_rng(1)

    def act(obs, first):
        if answer == "random":
            return rng.integers(num_symbols, size=n)
        return np.full(n, answer)

    returns = run_first_episodes(env, 5, act).returns
    assert binomial_band(int(returns.sum()), n, 1 / num_symbols)


# -- options -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cls, kwargs, key",
    [
        (RepeatPreviousEnv, {"num_symbols": 1}, "num_symbols"),
        (RepeatPreviousEnv, {"k": 5, "length": 5}, "k"),
        (RepeatPreviousEnv, {"length": 0}, "length"),
        (RepeatPreviousEnv, {"k": 1.0}, "k"),
        (DelayedRecallEnv, {"min_delay": -1}, "min_delay"),
        (DelayedRecallEnv, {"min_delay": 4, "max_delay": 3}, "max_delay"),
        (RepeatPreviousVectorEnv, {"num_envs": 2, "num_symbols": 1}, "num_symbols"),
        (DelayedRecallVectorEnv, {"num_envs": 2, "max_delay": 2}, "max_delay"),
    ],
)
def test_invalid_options_name_the_key(cls, kwargs, key):
    with pytest.raises((ValueError, TypeError), match=key):
        cls(**kwargs)


def test_invalid_action_is_an_error():
    env = DelayedRecallEnv(num_symbols=3)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="actions"):
        env.step(3)
