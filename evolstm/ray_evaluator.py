"""Population evaluation spread over Ray actors.

Each actor owns a :class:`~evolstm.evaluation.PopulationEvaluator` (and so its own vector
env) and evaluates one contiguous shard of the population batched. Shards are re-run on
a fresh actor when an actor dies, so a generation is never lost. Member ``p`` meets the
same episode seeds whichever shard it lands in, so fitnesses do not depend on the sharding.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from evolstm.evaluation import EvaluationResult, PopulationEvaluator
from evolstm.obs_norm import ObsNormalizer
from evolstm.policy import PolicySpec

if TYPE_CHECKING:
    from evolstm.env_factory import EnvFactory

MAX_SHARD_RETRIES = 3


class _ShardWorker:
    """The body of a Ray actor: one evaluator with its own vector env."""

    def __init__(self, env_factory: EnvFactory, spec_dict: dict[str, Any]) -> None:
        import envs  # noqa: F401  (registers the built-in tasks inside the worker process)

        self.evaluator = PopulationEvaluator(env_factory, PolicySpec.from_dict(spec_dict))

    def evaluate(
        self, vectors: np.ndarray, seeds: list[int], obs_norm: Any, collect_stats: bool
    ) -> EvaluationResult:
        return self.evaluator.evaluate(
            torch.from_numpy(vectors), seeds, obs_norm=obs_norm, collect_stats=collect_stats
        )


def connect_ray(address: str | None) -> bool:
    """Start or join Ray. ``None``/``"local"``: an embedded local Ray; ``"auto"``, ``"ray://..."``
    or ``host:port``: an existing cluster. Returns True when this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    if address in (None, "local"):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(
            # "local" always starts a new Ray: with no address, ray.init joins a Ray
            # already running on this machine (someone else's) when it finds one.
            address="local",
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
            configure_logging=True,
        )
    else:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    return True


class RayEvaluator:
    """Splits ``[P, D]`` into shards over ``num_workers`` Ray actors.

    :param env_factory: picklable env builder, shipped to every actor.
    :param spec: the policy every member uses.
    :param num_workers: actors (0: one per CPU Ray reports).
    :param address: where Ray runs (see :func:`connect_ray`).
    """

    def __init__(
        self,
        env_factory: EnvFactory,
        spec: PolicySpec,
        *,
        num_workers: int = 0,
        address: str | None = "local",
    ) -> None:
        import ray

        self._owns_ray = connect_ray(address)
        if num_workers <= 0:
            num_workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.num_workers = num_workers
        self._args = (env_factory, spec.to_dict())
        self._actor_cls = ray.remote(num_cpus=1)(_ShardWorker)
        self.workers = [self._new_worker() for _ in range(num_workers)]

    def _new_worker(self) -> Any:
        return self._actor_cls.remote(*self._args)

    def evaluate(
        self,
        vectors: torch.Tensor,
        seeds: Sequence[int],
        *,
        obs_norm: ObsNormalizer | None = None,
        collect_stats: bool = False,
    ) -> EvaluationResult:
        """Evaluate ``vectors [P, D]`` on ``seeds [E]``; shards run in parallel."""
        import ray
        from ray.exceptions import RayActorError

        array = torch.as_tensor(vectors, dtype=torch.float32).numpy()
        if array.ndim == 1:
            array = array[None]
        seeds = [int(s) for s in seeds]
        shards = [s for s in np.array_split(np.arange(len(array)), self.num_workers) if s.size]
        args = (seeds, obs_norm, collect_stats)
        pending = {
            i: self.workers[i].evaluate.remote(array[idx], *args) for i, idx in enumerate(shards)
        }
        results: dict[int, EvaluationResult] = {}
        retries = 0
        while pending:
            for i, ref in list(pending.items()):
                try:
                    results[i] = ray.get(ref)
                    del pending[i]
                except RayActorError:
                    retries += 1
                    if retries > MAX_SHARD_RETRIES * len(shards):
                        raise
                    self.workers[i] = self._new_worker()
                    pending[i] = self.workers[i].evaluate.remote(array[shards[i]], *args)
        return EvaluationResult.concatenate([results[i] for i in range(len(shards))])

    def close(self) -> None:
        import ray

        for worker in self.workers:
            ray.kill(worker)
        self.workers = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
