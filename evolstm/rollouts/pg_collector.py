"""Where policy-gradient rollouts run: in-process, or on Ray rollout actors.

Both backends split the learner's ``N`` env slots into collectors (one in-process; one per
Ray actor, each with its own vector env and a copy of the network) and return one
:data:`~evolstm.rollouts.pg_rollout.Rollout` joined along the env axis. Collector ``k`` of
``K`` owns the slots ``np.array_split(range(N), K)[k]`` and its own sampling generator, so one Ray
actor (``K = 1``) computes exactly what the in-process backend does.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from evolstm.network.layout import PolicySpec
from evolstm.network.obs_norm import ObsNormalizer
from evolstm.network.pg_model import PGNetwork
from evolstm.rollouts.pg_rollout import Collector, Rollout, merge_rollouts
from evolstm.rollouts.ray_evaluator import (
    DEFAULT_SHARD_TIMEOUT_S,
    MAX_SHARD_RETRIES,
    START_TIMEOUT_S,
)


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
    """The body of a Ray rollout actor: its own vector env, collector and network copy.
    Every call that changes the collector returns its state after the call (see
    :class:`RayCollectors`: what a replacement actor restores)."""

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

    def reset(self, seeds: list[int]) -> dict[str, Any]:
        self.collector.reset(seeds)
        return self.collector.state_dict()

    def collect(
        self, net_state: dict[str, torch.Tensor], obs_norm: Any, kw: dict
    ) -> tuple[Rollout, dict[str, Any]]:
        self.net.load_state_dict(net_state)
        rollout = self.collector.collect(self.net, obs_norm, **kw)
        return rollout, self.collector.state_dict()

    def state_dict(self) -> dict[str, Any]:
        return self.collector.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> dict[str, Any]:
        self.collector.load_state_dict(state)
        return self.collector.state_dict()

    def restore(self, state: dict[str, Any], seeds: list[int] | None, after_reset: bool) -> bool:
        """Take over a lost actor's collector: ``state`` is its state after its last
        completed call, ``seeds`` its last reset's. Returns whether the restore is exact.

        A native batch env's state is in ``state``: exact. A user's env cannot be restored,
        so its last reset is replayed: exact when nothing was collected since (RPG resets
        every iteration), else its slots start fresh episodes (the sampling generator is
        still restored)."""
        if state["env"] is not None or seeds is None:
            self.collector.load_state_dict(state)
            return state["env"] is not None or state["obs"] is None
        self.collector.reset(seeds)
        if after_reset:
            self.collector.load_state_dict(state)
            return True
        self.collector.generator.set_state(state["generator"])
        return False


class RayCollectors:
    """``num_workers`` Ray actors, each collecting on its share of the ``N`` slots.

    Faults: an actor that dies (``RayActorError``) or does not answer a call within
    ``timeout_s`` (a hung env, a lost node) is killed and replaced by a fresh actor that
    restores the lost one's collector state after its last completed call
    (:meth:`_RolloutWorker.restore`), and the call is re-run there: with a native batch env,
    or right after a reset, the result is what the lost actor would have returned. After
    ``MAX_SHARD_RETRIES`` losses per actor in one call a ``RuntimeError`` names it.

    :param address: where Ray runs (:func:`evolstm.rollouts.ray_evaluator.connect_ray`).
    :param timeout_s: seconds one call may take (``ray.shard_timeout_s``).
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
        timeout_s: float = DEFAULT_SHARD_TIMEOUT_S,
    ) -> None:
        import ray

        from evolstm.rollouts.ray_evaluator import connect_ray

        self._owns_ray = connect_ray(address)
        if num_workers <= 0:
            num_workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.slots = [s for s in np.array_split(np.arange(num_envs), num_workers) if s.size]
        self.timeout_s = timeout_s
        self.replacements = 0  # actors replaced so far (dead or hung)
        self.inexact = 0  # replacements that had to restart a user env's episodes
        self._actor = ray.remote(num_cpus=1, max_restarts=0)(_RolloutWorker)
        self._args = [
            (make_vector_env, spec.to_dict(), net_kwargs, len(s), seed, k)
            for k, s in enumerate(self.slots)
        ]
        self.workers = [self._actor.remote(*args) for args in self._args]
        # Per actor: its collector state after its last completed call, its last reset's
        # seeds, and whether it has collected since that reset.
        self._states: list[dict[str, Any] | None] = [None] * len(self.workers)
        self._seeds: list[list[int] | None] = [None] * len(self.workers)
        self._after_reset = [False] * len(self.workers)
        self._wait_ready(self.workers)

    def _wait_ready(self, workers: list[Any]) -> None:
        import ray

        ray.get([w.__ray_ready__.remote() for w in workers], timeout=START_TIMEOUT_S)

    def _replace(self, k: int) -> None:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        ray.kill(self.workers[k], no_restart=True)
        self.workers[k] = self._actor.remote(*self._args[k])
        self.replacements += 1
        state = self._states[k]
        if state is None:
            return
        ref = self.workers[k].restore.remote(state, self._seeds[k], self._after_reset[k])
        # A replacement that does not even start counts against the call's retries.
        with contextlib.suppress(GetTimeoutError, RayActorError):
            if not ray.get(ref, timeout=START_TIMEOUT_S + self.timeout_s):
                self.inexact += 1
                warnings.warn(
                    f"Ray rollout actor {k} was replaced; its user env's episodes restart",
                    stacklevel=3,
                )

    def _call(self, what: str, submit: Callable[[int], Any]) -> list[Any]:
        """``submit(k)`` (a remote call on ``self.workers[k]``) for every actor; results in
        actor order, with lost calls re-run on replacement actors."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        pending = {k: (submit(k), time.monotonic()) for k in range(len(self.workers))}
        results: dict[int, Any] = {}
        retries = dict.fromkeys(pending, 0)
        while pending:
            by_ref = {ref: k for k, (ref, _) in pending.items()}
            oldest = min(t for _, t in pending.values())
            wait_s = max(0.0, oldest + self.timeout_s - time.monotonic())
            ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=wait_s)
            lost: list[int] = []
            for ref in ready:
                k = by_ref[ref]
                try:
                    results[k] = ray.get(ref, timeout=self.timeout_s)
                    del pending[k]
                except (RayActorError, GetTimeoutError):
                    lost.append(k)
            now = time.monotonic()
            for k, (_, submitted) in pending.items():
                if k not in lost and now - submitted >= self.timeout_s:
                    lost.append(k)  # hung: treated as dead
            for k in lost:
                retries[k] += 1
                if retries[k] > MAX_SHARD_RETRIES:
                    raise RuntimeError(
                        f"Ray rollout actor {k} lost {retries[k]} times in a row during "
                        f"{what} (dead, or no answer within ray.shard_timeout_s = "
                        f"{self.timeout_s:g} s); giving up"
                    )
                self._replace(k)
                pending[k] = (submit(k), time.monotonic())
        return [results[k] for k in range(len(self.workers))]

    def reset(self, seeds: list[int]) -> None:
        shares = [[int(seeds[i]) for i in s] for s in self.slots]
        self._states = self._call("reset", lambda k: self.workers[k].reset.remote(shares[k]))
        self._seeds, self._after_reset = shares, [True] * len(self.workers)

    def collect(self, net: PGNetwork, obs_norm: ObsNormalizer | None, **kw) -> Rollout:
        import ray

        net_state = ray.put({k: v.detach().clone() for k, v in net.state_dict().items()})
        out = self._call(
            "collect", lambda k: self.workers[k].collect.remote(net_state, obs_norm, kw)
        )
        self._states = [state for _, state in out]
        self._after_reset = [False] * len(self.workers)
        return merge_rollouts([rollout for rollout, _ in out])

    def state_dict(self) -> list[dict[str, Any]]:
        return self._call("state_dict", lambda k: self.workers[k].state_dict.remote())

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        self._states = self._call(
            "load_state_dict", lambda k: self.workers[k].load_state_dict.remote(states[k])
        )

    def close(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w)
        self.workers = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
