"""Shared checks of the env tests: record a rollout, and step a native vector env next to
``SyncVectorEnv`` of its single env, asserting that both give the same results every step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np


class Rollout(NamedTuple):
    """One env's trajectory over T steps (a vector env adds a slot axis N after T).

    :param obs: ``[T + 1, ...]`` the reset observation, then one per step.
    :param reward, terminated, truncated: ``[T, ...]``.
    :param infos: the T step infos.
    """

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    infos: list[dict[str, Any]]

    @property
    def episode_ends(self) -> int:
        """How many episodes ended (terminated or truncated), summed over steps and slots."""
        return int((self.terminated | self.truncated).sum())

    def info_sum(self, key: str) -> int:
        """``infos[t][key]`` summed over the steps that report it (e.g. successes)."""
        return int(sum(info[key].sum() for info in self.infos if key in info))


def _stacked(record: list[list]) -> Rollout:
    """``record``: the per-step lists of obs, reward, terminated, truncated and infos."""
    *arrays, infos = record
    return Rollout(*(np.stack(values) for values in arrays), infos)


def rollout(env: gym.Env | gym.vector.VectorEnv, seed: Any, actions: np.ndarray) -> Rollout:
    """Reset ``env`` with ``seed`` and apply ``actions [T, ...]`` in turn."""
    obs, _ = env.reset(seed=seed)
    record: list[list] = [[obs], [], [], [], []]
    for action in actions:
        for values, value in zip(record, env.step(action), strict=True):
            values.append(value)
    return _stacked(record)


def _assert_same(name: str, got: Any, want: Any, t: int | str) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, f"{name} dtype at step {t}: {got.dtype} != {want.dtype}"
    np.testing.assert_array_equal(got, want, err_msg=f"{name} at step {t}")


def assert_native_matches_sync(
    native: gym.vector.VectorEnv,
    sync: gym.vector.VectorEnv,
    seed: Any,
    actions: np.ndarray | Callable[[int, np.ndarray], np.ndarray],
    *,
    steps: int | None = None,
    compare_infos: bool = True,
) -> Rollout:
    """Step ``native`` and ``sync`` side by side after resetting both with ``seed``; assert
    equal observations, rewards and flags (values and dtypes) and, if ``compare_infos``, equal
    info keys and arrays at every step. Returns native's rollout.

    :param actions: ``[T, N, ...]`` pre-sampled actions, or a closed-loop
        ``policy(t, obs [N, ...]) -> actions [N, ...]`` run for ``steps`` steps (it sees
        native's observation, asserted equal to sync's).
    """
    policy = actions if callable(actions) else lambda t, _: actions[t]
    obs_n, _ = native.reset(seed=seed)
    obs_s, _ = sync.reset(seed=seed)
    _assert_same("obs", obs_n, obs_s, "reset")
    record: list[list] = [[obs_n], [], [], [], []]
    for t in range(len(actions) if steps is None else steps):
        action = policy(t, record[0][-1])
        out_n, out_s = native.step(action), sync.step(action)
        for name, got, want in zip(Rollout._fields[:4], out_n[:4], out_s[:4], strict=True):
            _assert_same(name, got, want, t)
        if compare_infos:
            info_n, info_s = out_n[4], out_s[4]
            assert info_n.keys() == info_s.keys(), f"info keys at step {t}"
            for key in info_n:
                _assert_same(f"info[{key!r}]", info_n[key], info_s[key], t)
        for values, value in zip(record, out_n, strict=True):
            values.append(value)
    return _stacked(record)


class FirstEpisodes(NamedTuple):
    """Every slot's first episode: ``returns``, ``lengths`` and ``success`` (``info["success"]``
    at the episode's last step; False where the env reports none), each ``[N]``."""

    returns: np.ndarray
    lengths: np.ndarray
    success: np.ndarray


def run_first_episodes(
    env: gym.vector.VectorEnv, seed: Any, act: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> FirstEpisodes:
    """Run every slot's first episode with ``act(obs [N, ...], first_obs [N, ...]) -> [N]``."""
    obs, _ = env.reset(seed=seed)
    first = obs.copy()
    n = env.num_envs
    returns, lengths, success = np.zeros(n), np.zeros(n, int), np.zeros(n, bool)
    running = np.ones(n, bool)
    while running.any():
        obs, reward, terminated, truncated, info = env.step(act(obs, first))
        returns += np.where(running, reward, 0.0)
        lengths += running
        done = (terminated | truncated) & running
        if "success" in info:
            success[done] = info["success"][done]
        running &= ~done
    return FirstEpisodes(returns, lengths, success)
