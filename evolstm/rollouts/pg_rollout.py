"""Policy-gradient rollouts: a collector on a vector env, the trajectory batch, GAE.

A :class:`Collector` owns one vector env of ``N`` slots (the native batch env for built-in
tasks), the running recurrent state, and its own sampling generator, and steps the whole
batch as one tensor program per time step. Under gymnasium 1.x NEXT_STEP autoreset the
step after an episode's last one is a *reset step*: the env ignores its action and returns
reward 0 and the next episode's first observation. The collector still runs the network on
that step, because its input is the ended episode's final observation, and its value is the
bootstrap a *truncated* episode needs (a terminated one bootstraps nothing). A reset step is
marked invalid: it is neither an action nor a loss term. The state is zeroed at the next
step (``episode_start``), inside every later unroll as well.

Letters: ``T`` time, ``N`` env slots, ``in`` encoded observation size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from evolstm.network.obs_norm import ObsNormalizer, RunningStats
from evolstm.network.pg_model import PGNetwork, sample_actions
from evolstm.rollouts.evaluation import single_torch_thread

Rollout = dict[str, Any]


class Collector:
    """Steps ``num_envs`` env slots with a :class:`PGNetwork`, keeping state between calls.

    :param make_vector_env: builds the vector env (``ctx.make_vector_env``).
    :param num_envs: N.
    :param seed: root seed (env resets and the sampling generator derive from it).
    :param index: which collector of several (Ray workers), so their seeds differ.
    """

    def __init__(
        self,
        make_vector_env: Callable[[int], gym.vector.VectorEnv],
        num_envs: int,
        seed: int,
        index: int = 0,
    ) -> None:
        self.env = make_vector_env(num_envs)
        self.num_envs = num_envs
        self.seed, self.index = seed, index
        seq = np.random.SeedSequence([seed, 17, index])
        self.generator = torch.Generator().manual_seed(int(seq.generate_state(1)[0]))
        self.obs: Any = None
        self.state: list[torch.Tensor] | None = None
        self.episode_start = np.ones(num_envs, dtype=bool)
        self.prev_done = np.zeros(num_envs, dtype=bool)
        self.episode_return = np.zeros(num_envs)
        self.episode_length = np.zeros(num_envs, dtype=np.int64)

    def reset(self, seeds: list[int]) -> None:
        """Start a fresh episode in every slot (``seeds [N]``)."""
        self.obs, _ = self.env.reset(seed=[int(s) for s in seeds])
        self.state = None
        self.episode_start[:] = True
        self.prev_done[:] = False
        self.episode_return[:] = 0.0
        self.episode_length[:] = 0

    def collect(
        self,
        net: PGNetwork,
        obs_norm: ObsNormalizer | None,
        steps: int,
        *,
        seq_len: int | None = None,
        first_episode_only: bool = False,
    ) -> Rollout:
        """Run ``steps`` env steps in every slot (``first_episode_only``: until every slot's
        current episode has ended, at most ``steps``) and return the batch (see
        :func:`empty_keys`). ``seq_len``: also keep the state at every ``seq_len``-th step."""
        with torch.no_grad(), single_torch_thread():
            return self._collect(net, obs_norm, steps, seq_len, first_episode_only)

    def _collect(self, net, obs_norm, steps, seq_len, first_episode_only) -> Rollout:
        if self.obs is None:
            raise RuntimeError("call reset() before collect()")
        N = self.num_envs
        head = net.actor.head
        if self.state is None:
            self.state = net.init_state(N)
        stats = RunningStats()
        xs, acts, logps, values, rewards = [], [], [], [], []
        terms, truncs, valids, starts, seq_states = [], [], [], [], []
        done_returns, done_lengths, successes = [], [], []
        alive = np.ones(N, dtype=bool)  # first_episode_only: slots still in their episode
        for t in range(steps):
            if first_episode_only and not alive.any():
                break
            raw = net.core.encoder(self.obs)
            valid = ~self.prev_done & alive
            if valid.any():
                stats.update(raw[torch.from_numpy(valid)].numpy())
            x = raw if obs_norm is None else obs_norm(raw)
            start = torch.from_numpy(self.episode_start.copy())
            if seq_len is not None and t % seq_len == 0:
                seq_states.append([s.clone() for s in self.state])
            out, value, self.state = net.step(x, self.state, start)
            dist = net.distribution(out)
            sample = sample_actions(head, dist, self.generator)
            logp = dist.log_prob(sample)
            actions = head.to_env(head.action_from_sample(sample))
            self.obs, reward, terminated, truncated, info = self.env.step(actions)
            reward = np.asarray(reward, dtype=np.float64)
            terminated, truncated = np.asarray(terminated), np.asarray(truncated)
            xs.append(x)
            acts.append(sample)
            logps.append(logp)
            values.append(value)
            rewards.append(torch.from_numpy(np.where(valid, reward, 0.0)))
            terms.append(torch.from_numpy(terminated & valid))
            truncs.append(torch.from_numpy(truncated & valid))
            valids.append(torch.from_numpy(valid))
            starts.append(start)
            self.episode_return += np.where(valid, reward, 0.0)
            self.episode_length += valid
            ended = valid & (terminated | truncated)
            if ended.any():
                done_returns += self.episode_return[ended].tolist()
                done_lengths += self.episode_length[ended].tolist()
                if "success" in info:
                    successes += np.asarray(info["success"], dtype=float)[ended].tolist()
                self.episode_return[ended] = 0.0
                self.episode_length[ended] = 0
                if first_episode_only:
                    alive &= ~ended
            self.episode_start = self.prev_done.copy()  # the step after a reset step
            self.prev_done = ended
        # The bootstrap value of the last observation (a reset step's input when a slot
        # just ended: its final observation).
        raw = net.core.encoder(self.obs)
        x = raw if obs_norm is None else obs_norm(raw)
        _, last_value, _ = net.step(x, self.state, torch.from_numpy(self.episode_start.copy()))
        return {
            "x": torch.stack(xs),
            "actions": torch.stack(acts),
            "logp": torch.stack(logps),
            "values": torch.cat([torch.stack(values), last_value[None]]),
            "rewards": torch.stack(rewards).float(),
            "terminated": torch.stack(terms),
            "truncated": torch.stack(truncs),
            "valid": torch.stack(valids),
            "episode_start": torch.stack(starts),
            "seq_states": [torch.stack(s) for s in zip(*seq_states, strict=True)]
            if seq_states
            else [],
            "obs_stats": stats.state_dict(),
            "episode_returns": done_returns,
            "episode_lengths": done_lengths,
            "successes": successes,
        }

    # -- exact resume --------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything the next :meth:`collect` depends on, as tensors and plain Python
        (the env's state when it is a native batch env, see :func:`env_state`)."""
        return {
            "generator": self.generator.get_state(),
            "obs": None if self.obs is None else torch.as_tensor(np.asarray(self.obs)),
            "state": None if self.state is None else [s.clone() for s in self.state],
            "episode_start": torch.from_numpy(self.episode_start.copy()),
            "prev_done": torch.from_numpy(self.prev_done.copy()),
            "episode_return": torch.from_numpy(self.episode_return.copy()),
            "episode_length": torch.from_numpy(self.episode_length.copy()),
            "env": env_state(self.env),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.obs = None if state["obs"] is None else state["obs"].numpy().copy()
        self.state = None if state["state"] is None else [s.clone() for s in state["state"]]
        self.episode_start = state["episode_start"].numpy().copy()
        self.prev_done = state["prev_done"].numpy().copy()
        self.episode_return = state["episode_return"].numpy().copy()
        self.episode_length = state["episode_length"].numpy().copy()
        load_env_state(self.env, state["env"])

    def close(self) -> None:
        self.env.close()


def env_state(env: gym.vector.VectorEnv) -> dict[str, Any] | None:
    """The state of a native batch env (:class:`envs.batched.BatchedEnv`): its numpy arrays
    as tensors and its per-slot generators' states (dicts of ints). ``None`` for other vector
    envs, whose state is not reachable (such runs resume with fresh episodes)."""
    if not hasattr(env, "slot_rngs"):
        return None
    out: dict[str, Any] = {"slot_rngs": [g.bit_generator.state for g in env.slot_rngs]}
    for key, value in vars(env).items():
        if isinstance(value, np.ndarray) and value.dtype != object:
            out[key] = torch.from_numpy(value.copy())
    return out


def load_env_state(env: gym.vector.VectorEnv, state: dict[str, Any] | None) -> None:
    """Restore what :func:`env_state` returned (no-op for ``None``)."""
    if state is None:
        return
    for g, s in zip(env.slot_rngs, state["slot_rngs"], strict=True):
        g.bit_generator.state = s
    for key, value in state.items():
        if key != "slot_rngs":
            setattr(env, key, value.numpy().copy())


def merge_rollouts(parts: list[Rollout]) -> Rollout:
    """Join rollouts of several collectors along the env axis (dim 1 of ``[T, N, ...]``)."""
    if len(parts) == 1:
        return parts[0]
    T = max(p["x"].shape[0] for p in parts)
    out: Rollout = {}
    for key in ("x", "actions", "logp", "rewards", "terminated", "truncated", "valid"):
        out[key] = torch.cat([pad_time(p[key], T) for p in parts], dim=1)
    out["episode_start"] = torch.cat([pad_time(p["episode_start"], T) for p in parts], dim=1)
    out["values"] = torch.cat([pad_time(p["values"], T + 1) for p in parts], dim=1)
    states = zip(*(p["seq_states"] for p in parts), strict=True)
    out["seq_states"] = [torch.cat(s, dim=1) for s in states]
    stats = RunningStats()
    for p in parts:
        stats.merge(RunningStats.from_state_dict(p["obs_stats"]))
    out["obs_stats"] = stats.state_dict()
    for key in ("episode_returns", "episode_lengths", "successes"):
        out[key] = [v for p in parts for v in p[key]]
    return out


def pad_time(t: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad ``t [T, ...]`` to ``[length, ...]``."""
    if t.shape[0] == length:
        return t
    pad = t.new_zeros((length - t.shape[0], *t.shape[1:]))
    return torch.cat([t, pad])


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    valid: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over ``[T, N]`` with NEXT_STEP autoreset.

    ``values [T + 1, N]``: ``values[t + 1]`` is the value of the observation after step
    ``t``; after an episode's last step that is the reset step's input, the final
    observation, so a **truncated** step bootstraps ``r + gamma * V(final obs)`` and a
    **terminated** one uses ``r`` alone. Neither carries the next episode's advantage back.
    Invalid steps (reset steps, padding) get advantage 0. Returns ``(advantages, returns)``
    ``[T, N]``, ``returns = advantages + values[:T]`` (the value targets).
    """
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(T)):
        bootstrap = (~terminated[t]).float()
        cont = (~(terminated[t] | truncated[t])).float()
        delta = rewards[t] + gamma * bootstrap * values[t + 1] - values[t]
        last = torch.where(valid[t], delta + gamma * lam * cont * last, torch.zeros_like(last))
        adv[t] = last
    return adv, torch.where(valid, adv + values[:T], torch.zeros_like(adv))
