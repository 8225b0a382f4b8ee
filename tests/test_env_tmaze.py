"""evolstm/TMaze-v0: Bakker's encoding and rewards, vector == SyncVectorEnv, memory is needed."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import SyncVectorEnv

import envs  # noqa: F401  (registers the tasks)
from envs.tmaze import TMazeEnv, TMazeVectorEnv
from tests.env_checks import assert_native_matches_sync, run_first_episodes

ENV_ID = "evolstm/TMaze-v0"
N_, E_, S_, W_ = 0, 1, 2, 3
# Bakker (2002): start 011 (goal North, our convention) / 110 (goal South), corridor 101,
# junction 010.
START_NORTH, START_SOUTH, CORRIDOR, JUNCTION = (0, 1, 1), (1, 1, 0), (1, 0, 1), (0, 1, 0)


def run_native_and_sync(kwargs: dict, num_envs: int, steps: int, seed: int, probs, make_kw=None):
    """Step the native vector env and SyncVectorEnv of singles on the same pre-sampled actions;
    assert equality every step; return (ended episodes, successes) of the native side."""
    make_kw = make_kw or {}
    native = gym.make_vec(
        ENV_ID, num_envs, vectorization_mode="vector_entry_point", **kwargs, **make_kw
    )
    sync = SyncVectorEnv([lambda: gym.make(ENV_ID, **kwargs, **make_kw)] * num_envs)
    actions = np.random.default_rng(seed).choice(4, size=(steps, num_envs), p=probs)
    # With an outer TimeLimit the single env cannot report success.
    got = assert_native_matches_sync(native, sync, seed, actions, compare_infos=not make_kw)
    native.close()
    sync.close()
    return got.episode_ends, 0 if make_kw else got.info_sum("success")


EAST_BIASED = [0.1, 0.7, 0.1, 0.1]


def test_vector_matches_sync_n10_with_autoresets():
    ended, successes = run_native_and_sync({"length": 10}, 16, 400, seed=3, probs=EAST_BIASED)
    assert ended > 100  # many autoresets happened
    assert 0 < successes < ended


def test_vector_matches_sync_n1000_short_run():
    ended, _ = run_native_and_sync({"length": 1000}, 8, 150, seed=11, probs=EAST_BIASED)
    assert ended == 0  # default step limit 2002: nothing ends in 150 steps
    ended, _ = run_native_and_sync(
        {"length": 1000, "step_limit": 40}, 8, 150, seed=12, probs=[0.25] * 4
    )
    assert ended >= 8 * 3


@pytest.mark.parametrize(
    "kwargs",
    [{"length": 1, "step_penalty": -0.01, "wall_penalty": -1.0}, {"length": 4, "step_limit": 5}],
)
def test_vector_matches_sync_options(kwargs):
    ended, _ = run_native_and_sync(kwargs, 8, 200, seed=5, probs=EAST_BIASED)
    assert ended > 20


def test_vector_matches_sync_with_outer_time_limit():
    ended, _ = run_native_and_sync(
        {"length": 6}, 8, 100, seed=7, probs=EAST_BIASED, make_kw={"max_episode_steps": 5}
    )
    assert ended >= 8 * 16


@pytest.mark.parametrize("kwargs", [{}, {"length": 1}, {"length": 1000, "step_penalty": -0.1}])
def test_check_env(kwargs):
    check_env(TMazeEnv(**kwargs), skip_render_check=True)


def test_observations_along_the_corridor_follow_bakker():
    env = TMazeEnv(length=5)
    seen_sides = set()
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        start = tuple(int(v) for v in obs)
        assert start in (START_NORTH, START_SOUTH)
        seen_sides.add(start)
        observations = []
        for _ in range(5):
            obs, reward, terminated, truncated, _ = env.step(E_)
            observations.append(tuple(int(v) for v in obs))
            assert (reward, terminated, truncated) == (0.0, False, False)
        assert observations == [CORRIDOR] * 4 + [JUNCTION]
    assert seen_sides == {START_NORTH, START_SOUTH}


def first_seed_with_goal(north: bool) -> int:
    env = TMazeEnv(length=2)
    for seed in itertools.count():
        obs, _ = env.reset(seed=seed)
        if tuple(int(v) for v in obs) == (START_NORTH if north else START_SOUTH):
            return seed
    raise AssertionError("unreachable")


def test_rewards_walls_arms_and_truncation():
    env = TMazeEnv(length=2, step_limit=9)
    env.reset(seed=first_seed_with_goal(north=True))
    # West at the start is a wall: stand still, -0.1, and the road sign is still visible.
    obs, reward, terminated, truncated, info = env.step(W_)
    assert (tuple(obs), reward, terminated, truncated, info) == (
        START_NORTH,
        -0.1,
        False,
        False,
        {},
    )
    assert env.step(E_)[:2][1] == 0.0
    obs, reward, *_ = env.step(N_)  # corridor walls
    assert (tuple(obs), reward) == (CORRIDOR, -0.1)
    obs, reward, *_ = env.step(E_)
    assert (tuple(obs), reward) == (JUNCTION, 0.0)
    obs, reward, *_ = env.step(E_)  # junction's east wall
    assert (tuple(obs), reward) == (JUNCTION, -0.1)
    _, reward, terminated, truncated, info = env.step(S_)  # wrong arm
    assert (reward, terminated, truncated, info) == (-0.1, True, False, {"success": False})

    env.reset(seed=first_seed_with_goal(north=False))
    for _ in range(2):
        env.step(E_)
    _, reward, terminated, _, info = env.step(S_)
    assert (reward, terminated, info) == (4.0, True, {"success": True})

    env.reset(seed=0)
    for step in range(1, 10):
        _, _, terminated, truncated, info = env.step(W_)
        assert not terminated and truncated == (step == 9)
    assert info == {"success": False}


def test_step_penalty_and_default_step_limit():
    env = TMazeEnv(length=3, step_penalty=-0.01)
    assert env.config.step_limit == 2 * (3 + 1)
    env.reset(seed=first_seed_with_goal(north=True))
    rewards = [env.step(a)[1] for a in (W_, E_, E_, E_, N_)]
    assert rewards == [-0.01 - 0.1, -0.01, -0.01, -0.01, 4.0]


def observation_index(obs: np.ndarray) -> np.ndarray:
    """Index 0..3 of the observations [N, 3]: start-South, start-North, corridor, junction."""
    code = obs[:, 0] * 4 + obs[:, 1] * 2 + obs[:, 2]
    lookup = np.full(8, -1)
    lookup[[6, 3, 5, 2]] = [0, 1, 2, 3]
    index = lookup[code]
    assert (index >= 0).all()
    return index


@pytest.mark.parametrize("length", [10, 1000])
def test_no_memoryless_policy_beats_half(length):
    """All 4^4 deterministic maps observation -> action, each under both goal sides (the env
    emits only the 4 codes: ``observation_index`` asserts it, so these are all memoryless
    policies). The junction looks the same for both sides, so no map succeeds for both."""
    policies = np.array(list(itertools.product(range(4), repeat=4)))  # [256, 4]
    seeds = [first_seed_with_goal(True)] * 256 + [first_seed_with_goal(False)] * 256
    env = TMazeVectorEnv(512, length=length)
    policy_of_slot = np.tile(np.arange(256), 2)

    def act(obs, first):
        return policies[policy_of_slot, observation_index(obs)]

    success = run_first_episodes(env, seeds, act).success
    by_side = success.reshape(2, 256)
    rate = by_side.mean(axis=0)
    assert rate.max() == 0.5  # e.g. "East everywhere, North at the junction" gets exactly half
    assert not (by_side[0] & by_side[1]).any()


@pytest.mark.parametrize("length", [10, 1000])
def test_oracle_with_memory_always_succeeds(length):
    env = TMazeVectorEnv(64, length=length)

    def act(obs, first):
        remembered_north = observation_index(first) == 1
        at_junction = observation_index(obs) == 3
        return np.where(at_junction, np.where(remembered_north, N_, S_), E_)

    returns, lengths, success = run_first_episodes(env, 100, act)
    assert success.all()
    np.testing.assert_array_equal(returns, 4.0)
    np.testing.assert_array_equal(lengths, length + 1)
    goals = observation_index(env.reset(seed=100)[0])
    assert 0 < goals.sum() < 64  # both goal sides occurred


def test_oracle_keeps_succeeding_across_autoresets():
    env = TMazeVectorEnv(32, length=10)
    obs, _ = env.reset(seed=0)
    first = obs.copy()
    autoreset_step = np.zeros(32, bool)
    successes = ends = 0
    for _ in range(5 * 12):
        index = observation_index(obs)
        action = np.where(index == 3, np.where(observation_index(first) == 1, N_, S_), E_)
        obs, _, terminated, truncated, info = env.step(action)
        # NEXT_STEP autoreset: the step after an episode's end returns the new first observation.
        first = np.where(autoreset_step[:, None], obs, first)
        autoreset_step = terminated | truncated
        if "success" in info:
            successes += int(info["success"].sum())
            ends += int(info["_success"].sum())
    assert ends == 32 * 5 and successes == ends


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"length": 0}, "length"),
        ({"length": 2.5}, "length"),
        ({"step_limit": 0}, "step_limit"),
        ({"wall_penalty": float("nan")}, "wall_penalty"),
    ],
)
def test_invalid_options_name_the_key(kwargs, key):
    with pytest.raises((ValueError, TypeError), match=key):
        TMazeEnv(**kwargs)
    with pytest.raises((ValueError, TypeError), match=key):
        TMazeVectorEnv(2, **kwargs)


def test_invalid_action_is_an_error():
    env = TMazeEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="actions"):
        env.step(4)
