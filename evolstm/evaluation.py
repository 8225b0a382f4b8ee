"""Population evaluation: ``P`` parameter vectors x ``E`` episodes in lockstep on one vector env.

*What* is evaluated lives here; *where* (in-process or on Ray actors) is the backend's
business (:mod:`evolstm.ray_evaluator` wraps this class). Slot ``p * E + e`` of the vector
env plays episode ``e`` of member ``p`` and is reset with ``seeds[e]``, so every member
meets the same episodes (common random numbers). Every slot runs exactly one episode from
a fresh zero recurrent state; a finished slot stops accumulating return and steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from evolstm.obs_norm import ObsNormalizer, RunningStats
from evolstm.policy import PolicySpec, PopulationPolicy, RecurrentCore

if TYPE_CHECKING:
    from evolstm.env_factory import EnvFactory


@dataclass
class EvaluationResult:
    """Returns of ``P`` members over ``E`` episodes each.

    :param returns: undiscounted episode returns ``[P, E]``.
    :param lengths: episode lengths ``[P, E]``.
    :param env_steps: env steps taken (the sum of ``lengths``).
    :param successes: ``info["success"]`` at each episode's end ``[P, E]`` when the env
        reports it, else ``None``.
    :param obs_stats: statistics of the encoded observations seen (when asked for).
    """

    returns: np.ndarray
    lengths: np.ndarray
    env_steps: int
    successes: np.ndarray | None = None
    obs_stats: RunningStats | None = None

    @property
    def mean_returns(self) -> np.ndarray:
        """Fitness of each member: the mean return ``[P]`` over its episodes."""
        return self.returns.mean(axis=1)

    @staticmethod
    def concatenate(parts: Sequence[EvaluationResult]) -> EvaluationResult:
        """Join shard results along the member axis."""
        succ = [p.successes for p in parts]
        stats = None
        if all(p.obs_stats is not None for p in parts):
            stats = RunningStats()
            for p in parts:
                stats.merge(p.obs_stats)  # type: ignore[arg-type]
        return EvaluationResult(
            returns=np.concatenate([p.returns for p in parts]),
            lengths=np.concatenate([p.lengths for p in parts]),
            env_steps=int(sum(p.env_steps for p in parts)),
            successes=None if any(s is None for s in succ) else np.concatenate(succ),
            obs_stats=stats,
        )


class Evaluator(Protocol):
    """Evaluates a population of flat parameter vectors; fitness is maximised."""

    def evaluate(
        self,
        vectors: torch.Tensor,
        seeds: Sequence[int],
        *,
        obs_norm: ObsNormalizer | None = None,
        collect_stats: bool = False,
    ) -> EvaluationResult:
        """``vectors [P, D]``, one seed per episode ``[E]`` -> returns ``[P, E]``; members
        normalise observations with ``obs_norm``; ``collect_stats`` gathers their statistics."""
        ...

    def close(self) -> None: ...


def episode_seeds(root_seed: int, stream: int, index: int, count: int) -> list[int]:
    """``count`` episode seeds for generation/evaluation ``index`` of ``stream``.

    Streams keep training (0) and held-out evaluation (1) seeds apart; each index moves the
    seeds on, so a generation never re-uses its predecessor's episodes.
    """
    seq = np.random.SeedSequence([root_seed, stream, index])
    return [int(s) for s in seq.generate_state(count, dtype=np.uint32)]


TRAIN_STREAM = 0
EVAL_STREAM = 1


class PopulationEvaluator:
    """Evaluates ``P`` members x ``E`` episodes batched on one vector env of ``P * E`` slots.

    :param env_factory: builds the task's vector env (native batch env for built-in tasks,
        ``SyncVectorEnv`` for any other Gymnasium env).
    :param spec: the policy every member uses.

    ``E`` is the number of seeds given to :meth:`evaluate`.
    """

    def __init__(self, env_factory: EnvFactory, spec: PolicySpec) -> None:
        self.env_factory = env_factory
        self.spec = spec
        self.core = RecurrentCore(spec)
        self._env: gym.vector.VectorEnv | None = None

    def _vector_env(self, num_envs: int) -> gym.vector.VectorEnv:
        if self._env is None or self._env.num_envs != num_envs:
            if self._env is not None:
                self._env.close()
            self._env = self.env_factory.make_vector(num_envs)
        return self._env

    def evaluate(
        self,
        vectors: torch.Tensor,
        seeds: Sequence[int],
        *,
        obs_norm: ObsNormalizer | None = None,
        collect_stats: bool = False,
    ) -> EvaluationResult:
        """Run one episode per (member, seed) pair: ``vectors [P, D]``, ``seeds [E]``.

        :param obs_norm: the frozen observation normaliser all members apply.
        :param collect_stats: also return statistics of the encoded observations seen.
        """
        with single_torch_thread():
            return self._evaluate(vectors, seeds, obs_norm, collect_stats)

    def _evaluate(
        self,
        vectors: torch.Tensor,
        seeds: Sequence[int],
        obs_norm: ObsNormalizer | None,
        collect_stats: bool,
    ) -> EvaluationResult:
        vectors = plain_population(vectors)
        pop, n_ep = vectors.shape[0], len(seeds)
        if n_ep < 1:
            raise ValueError("evaluate needs at least one episode seed")
        n = pop * n_ep
        env = self._vector_env(n)
        policy = PopulationPolicy(self.core, vectors, obs_norm)
        sums = _ObsSums() if collect_stats else None
        obs, _ = env.reset(seed=[int(seeds[e]) for _ in range(pop) for e in range(n_ep)])
        state = policy.init_state(n_ep)
        alive = np.ones(n, dtype=bool)
        returns = np.zeros(n, dtype=np.float64)
        lengths = np.zeros(n, dtype=np.int64)
        successes: np.ndarray | None = None
        while alive.any():
            x = self.core.encoder(obs)
            if sums is not None:
                sums.add(x.numpy(), alive)
            actions, state = policy.act_encoded(x, state, n_ep)
            obs, reward, terminated, truncated, info = env.step(actions)
            np.add(returns, reward, out=returns, where=alive)  # no temporary, unlike np.where
            lengths += alive
            ended = alive & (terminated | truncated)
            successes = _record_success(successes, info, ended, n)
            alive &= ~ended
        shape = (pop, n_ep)
        return EvaluationResult(
            returns=returns.reshape(shape),
            lengths=lengths.reshape(shape),
            env_steps=int(lengths.sum()),
            successes=None if successes is None else successes.reshape(shape),
            obs_stats=None if sums is None else sums.stats(),
        )

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


class _ObsSums:
    """Count, sum and sum of squares (float64) of the encoded observations of alive slots.

    Two reductions per step instead of a Chan merge per step; turned into
    :class:`RunningStats` once, at the end of the rollout."""

    def __init__(self) -> None:
        self.count = 0
        self.total: np.ndarray | float = 0.0
        self.squares: np.ndarray | float = 0.0

    def add(self, x: np.ndarray, alive: np.ndarray) -> None:
        """``x [N, in]`` of this step; only rows where ``alive [N]`` count."""
        rows = x if alive.all() else x[alive]
        self.count += rows.shape[0]
        self.total = self.total + rows.sum(axis=0, dtype=np.float64)
        self.squares = self.squares + np.square(rows, dtype=np.float64).sum(axis=0)

    def stats(self) -> RunningStats:
        if self.count == 0:
            return RunningStats()
        mean = np.asarray(self.total) / self.count
        m2 = np.maximum(np.asarray(self.squares) - self.count * mean**2, 0.0)
        return RunningStats(float(self.count), mean, m2)


def plain_population(vectors: Any) -> torch.Tensor:
    """``vectors`` ``[P, D]`` (or ``[D]``) as a plain, contiguous float32 tensor ``[P, D]``.

    The evaluator's door: a tensor subclass (EvoTorch's ``ReadOnlyTensor``) would ride
    through every op of the population forward via ``__torch_function__`` (measured 2.9x
    slower), and a strided view would be copied block by block.
    """
    t = torch.as_tensor(vectors)
    if type(t) is not torch.Tensor:
        t = t.as_subclass(torch.Tensor)
    t = t.detach().to(torch.float32).contiguous()
    return t.unsqueeze(0) if t.dim() == 1 else t


@contextmanager
def single_torch_thread() -> Iterator[None]:
    """Run the block with one intra-op torch thread. A population step is many small ops
    (``[P, B, 4H]``); on a 2-core machine a second thread costs more in synchronisation than
    it gains, and it fights the env for the other core (``bench/throughput.py`` measures it)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _record_success(
    successes: np.ndarray | None, info: dict[str, Any], ended: np.ndarray, n: int
) -> np.ndarray | None:
    if "success" not in info or not ended.any():
        return successes
    if successes is None:
        successes = np.zeros(n, dtype=bool)
    mask = ended & np.asarray(info.get("_success", np.ones(n, dtype=bool)), dtype=bool)
    successes[mask] = np.asarray(info["success"], dtype=bool)[mask]
    return successes
