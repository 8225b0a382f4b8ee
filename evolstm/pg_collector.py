"""Where policy-gradient rollouts run: in-process, or on Ray rollout actors.

Both backends split the learner's ``N`` env slots into collectors (one in-process; one per
Ray actor, each with its own vector env and a copy of the network) and return one
:data:`~evolstm.pg_rollout.Rollout` joined along the env axis. Collector ``k`` of ``K`` owns
the slots ``np.array_split(range(N), K)[k]`` and its own sampling generator, so one Ray
actor (``K = 1``) computes exactly what the in-process backend does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from evolstm.obs_norm import ObsNormalizer
from evolstm.pg_model import PGNetwork
from evolstm.pg_rollout import Collector, Rollout, merge_rollouts
from evolstm.policy import PolicySpec


class LocalCollectors:
    """One :class:`Collector` over all ``N`` slots in this process, using the learner's net."""

    def __init__(
        self, make_vector_env: Callable[[int], gym.vector.VectorEnv], num_envs: int, seed: int
    ) -> None:
        self.collector = Collector(make_vector_env, num_envs, seed, 0)

    def reset(self, seeds: list[int]) -> None:
        self.collector.reset(seeds)

    def collect(self, net: PGNetwork, obs_norm: ObsNormalizer | None, **kw) -> Rollout:
        return self.collector.collect(net, obs_norm, **kw)

    def state_dict(self) -> list[dict[str, Any]]:
        return [self.collector.state_dict()]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        self.collector.load_state_dict(states[0])

    def close(self) -> None:
        self.collector.close()


class _RolloutWorker:
    """The body of a Ray rollout actor: its own vector env, collector and network copy."""

    def __init__(
        self,
        make_vector_env: Callable[[int], gym.vector.VectorEnv],
        spec_dict: dict[str, Any],
        net_kwargs: dict[str, Any],
        num_envs: int,
        seed: int,
        index: int,
    ) -> None:
        import envs  # noqa: F401  (registers the built-in tasks inside the worker process)

        self.net = PGNetwork(PolicySpec.from_dict(spec_dict), None, **net_kwargs)
        self.collector = Collector(make_vector_env, num_envs, seed, index)

    def reset(self, seeds: list[int]) -> None:
        self.collector.reset(seeds)

    def collect(self, net_state: dict[str, torch.Tensor], obs_norm: Any, kw: dict) -> Rollout:
        self.net.load_state_dict(net_state)
        return self.collector.collect(self.net, obs_norm, **kw)

    def state_dict(self) -> dict[str, Any]:
        return self.collector.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.collector.load_state_dict(state)


class RayCollectors:
    """``num_workers`` Ray actors, each collecting on its share of the ``N`` slots.

    :param address: where Ray runs (:func:`evolstm.ray_evaluator.connect_ray`).
    """

    def __init__(
        self,
        make_vector_env: Callable[[int], gym.vector.VectorEnv],
        spec: PolicySpec,
        net_kwargs: dict[str, Any],
        num_envs: int,
        seed: int,
        *,
        num_workers: int,
        address: str | None,
    ) -> None:
        import ray

        from evolstm.ray_evaluator import connect_ray

        self._owns_ray = connect_ray(address)
        if num_workers <= 0:
            num_workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.slots = [s for s in np.array_split(np.arange(num_envs), num_workers) if s.size]
        actor = ray.remote(num_cpus=1)(_RolloutWorker)
        self.workers = [
            actor.remote(make_vector_env, spec.to_dict(), net_kwargs, len(s), seed, k)
            for k, s in enumerate(self.slots)
        ]

    def reset(self, seeds: list[int]) -> None:
        import ray

        pairs = zip(self.workers, self.slots, strict=True)
        ray.get([w.reset.remote([seeds[i] for i in s]) for w, s in pairs])

    def collect(self, net: PGNetwork, obs_norm: ObsNormalizer | None, **kw) -> Rollout:
        import ray

        net_state = ray.put({k: v.detach().clone() for k, v in net.state_dict().items()})
        refs = [w.collect.remote(net_state, obs_norm, kw) for w in self.workers]
        return merge_rollouts(ray.get(refs))

    def state_dict(self) -> list[dict[str, Any]]:
        import ray

        return ray.get([w.state_dict.remote() for w in self.workers])

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        import ray

        ray.get([w.load_state_dict.remote(s) for w, s in zip(self.workers, states, strict=True)])

    def close(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w)
        self.workers = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
