"""Population evaluation: ``P`` parameter vectors x ``E`` episodes in lockstep on one vector env.

*What* is evaluated lives here; *where* (in-process or on Ray actors) is the backend's
business (:mod:`evolstm.rollouts.ray_evaluator` wraps this class). Slot ``p * E + e`` of the vector
env plays episode ``e`` of member ``p`` and is reset with ``seeds[e]``, so every member
meets the same episodes (common random numbers). Every slot runs exactly one episode from
a fresh zero recurrent state; a finished slot stops accumulating return and steps.
"""

from __future__ import annotations

import math
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from evolstm.errors import EnvError
from evolstm.network.layout import PolicySpec
from evolstm.network.obs_norm import ObsNormalizer, RunningStats
from evolstm.network.policy import PopulationPolicy, RecurrentCore

if TYPE_CHECKING:
    from evolstm.rollouts.env_factory import EnvFactory


@dataclass
class EvaluationResult:
    """Returns of ``P`` members over ``E`` episodes each.

    :param returns: undiscounted episode returns ``[P, E]``.
    :param lengths: episode lengths ``[P, E]``.
    :param env_steps: env steps taken (the sum of ``lengths``).
    :param successes: ``info["success"]`` at each episode's end ``[P, E]`` when the env
        reports it, else ``None``.
    :param obs_stats: statistics of the encoded observations seen (when asked for).
    :param penalized: episodes ended by a non-finite observation or reward under
        ``env.on_nan: penalize`` ``[P, E]`` (their return: see :func:`apply_nan_penalty`).
    :param timings: seconds spent in this evaluation: ``time_env_s`` (env stepping),
        ``time_policy_s`` (policy forward); the Ray evaluator adds ``time_ray_s``.
    """

    returns: np.ndarray
    lengths: np.ndarray
    env_steps: int
    successes: np.ndarray | None = None
    obs_stats: RunningStats | None = None
    penalized: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)

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
        penalized = None
        if any(p.penalized is not None for p in parts):
            penalized = np.concatenate(
                [
                    np.zeros(p.returns.shape, bool) if p.penalized is None else p.penalized
                    for p in parts
                ]
            )
        timings: dict[str, float] = {}
        for p in parts:
            for key, value in p.timings.items():
                timings[key] = timings.get(key, 0.0) + value
        return EvaluationResult(
            returns=np.concatenate([p.returns for p in parts]),
            lengths=np.concatenate([p.lengths for p in parts]),
            env_steps=int(sum(p.env_steps for p in parts)),
            successes=None if any(s is None for s in succ) else np.concatenate(succ),
            obs_stats=stats,
            penalized=penalized,
            timings=timings,
        )


def apply_nan_penalty(result: EvaluationResult) -> EvaluationResult:
    """Score every penalized episode as the evaluation's worst: the lowest return of its
    unpenalized episodes (0 when none is left). Applied once over the whole population
    (after Ray shards are joined), so fitnesses do not depend on the sharding."""
    if result.penalized is None or not result.penalized.any():
        return result
    clean = result.returns[~result.penalized]
    worst = float(clean.min()) if clean.size else 0.0
    result.returns = np.where(result.penalized, worst, result.returns)
    return result


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
        self.on_nan = getattr(env_factory, "on_nan", "error")
        self.max_steps, self._limit_chosen = env_factory.episode_step_limit()
        self._warned_limit = False

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
        return apply_nan_penalty(self.evaluate_shard(vectors, seeds, obs_norm, collect_stats))

    def evaluate_shard(
        self,
        vectors: torch.Tensor,
        seeds: Sequence[int],
        obs_norm: ObsNormalizer | None = None,
        collect_stats: bool = False,
    ) -> EvaluationResult:
        """:meth:`evaluate` without :func:`apply_nan_penalty` (penalized returns are NaN):
        what a Ray shard returns, penalized once the shards are joined."""
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
        reset_seeds = [int(seeds[e]) for _ in range(pop) for e in range(n_ep)]
        obs, _ = self._guarded(env, 0, n_ep, lambda: env.reset(seed=reset_seeds))
        state = policy.init_state(n_ep)
        alive = np.ones(n, dtype=bool)
        returns = np.zeros(n, dtype=np.float64)
        lengths = np.zeros(n, dtype=np.int64)
        successes: np.ndarray | None = None
        penalized: np.ndarray | None = None
        env_s = policy_s = 0.0
        step = 0
        while alive.any():
            t0 = time.perf_counter()
            x = self.core.encoder(obs)
            # NaN/inf anywhere makes the sum non-finite: one cheap reduction on the normal
            # path (measured 4x cheaper than isfinite().all()); rows are found only on a hit.
            if not math.isfinite(float(x.sum())):
                bad = ~torch.isfinite(x).all(dim=1).numpy()
                penalized = self._non_finite("observation", bad & alive, penalized, step, n_ep)
                alive &= ~bad
                x[torch.from_numpy(bad)] = 0.0  # finished/penalized slots: keep the batch finite
            if sums is not None:
                sums.add(x, alive)
            actions, state = policy.act_encoded(x, state, n_ep)
            t1 = time.perf_counter()
            step += 1
            obs, reward, terminated, truncated, info = self._guarded(
                env, step, n_ep, lambda a=actions: env.step(a)
            )
            t2 = time.perf_counter()
            policy_s += t1 - t0
            env_s += t2 - t1
            if not math.isfinite(float(np.sum(reward))):
                bad = ~np.isfinite(reward) & alive
                penalized = self._non_finite("reward", bad, penalized, step, n_ep)
                reward = np.where(bad, 0.0, reward)
                terminated = terminated | bad  # the step counts; the episode ends here
            np.add(returns, reward, out=returns, where=alive)  # no temporary, unlike np.where
            lengths += alive
            ended = alive & (terminated | truncated | (lengths >= self.max_steps))
            successes = _record_success(successes, info, ended, n)
            alive &= ~ended
        if not self._limit_chosen and not self._warned_limit and (lengths >= self.max_steps).any():
            self._warned_limit = True
            warnings.warn(
                f"env {self.env_factory.id!r}: episodes reached {self.max_steps} steps without "
                "ending and were truncated there; set env.max_episode_steps",
                stacklevel=2,
            )
        shape = (pop, n_ep)
        if penalized is not None:
            returns[penalized] = np.nan
        return EvaluationResult(
            returns=returns.reshape(shape),
            lengths=lengths.reshape(shape),
            env_steps=int(lengths.sum()),
            successes=None if successes is None else successes.reshape(shape),
            obs_stats=None if sums is None else sums.stats(),
            penalized=None if penalized is None else penalized.reshape(shape),
            timings={"time_env_s": env_s, "time_policy_s": policy_s},
        )

    def _non_finite(
        self, what: str, bad: np.ndarray, penalized: np.ndarray | None, step: int, n_ep: int
    ) -> np.ndarray | None:
        """Live slots ``bad`` saw a non-finite ``what``: an :class:`EnvError`, or (under
        ``on_nan: penalize``) the updated mask of penalized slots (the caller ends them)."""
        if not bad.any():
            return penalized
        if self.on_nan != "penalize":
            raise EnvError(
                self.env_factory.id,
                f"non-finite {what} (set env.on_nan: penalize to score such episodes as the "
                "worst instead)",
                step,
                int(np.flatnonzero(bad)[0]),
                n_ep,
            )
        return bad.copy() if penalized is None else penalized | bad

    def _guarded(self, env: gym.vector.VectorEnv, step: int, n_ep: int, call: Any) -> Any:
        """``call()`` (the vector env's reset or step), its exceptions as one :class:`EnvError`
        naming the env, the step and the failing slot; the traceback goes into ``details``."""
        try:
            return call()
        except EnvError:
            raise
        except Exception as err:
            slot, what = _diagnose(env, err)
            details = "".join(traceback.format_exception(err))
            verb = "reset" if step == 0 else "step"
            if what is None:
                what = f"{verb}() raised {type(err).__name__}: {err}"
            raise EnvError(self.env_factory.id, what, step, slot, n_ep, details=details) from None

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


class _ObsSums:
    """Count, sum and sum of squares (float64) of the encoded observations of alive slots.

    A step only keeps a reference to its rows (the encoder builds a fresh tensor each
    step); they are reduced in float64 in blocks of about :attr:`BLOCK_ROWS` rows, and turned
    into :class:`RunningStats` once, at the end of the rollout. Two reductions per step cost
    about 5% of a P = 256 rollout; one block reduction per ~250 steps costs nothing."""

    BLOCK_ROWS = 1 << 16

    def __init__(self) -> None:
        self.count = 0
        self.total: np.ndarray | float = 0.0
        self.squares: np.ndarray | float = 0.0
        self._rows: list[torch.Tensor] = []
        self._buffered = 0

    def add(self, x: torch.Tensor, alive: np.ndarray) -> None:
        """``x [N, in]`` of this step; only rows where ``alive [N]`` count."""
        rows = x if alive.all() else x[torch.from_numpy(alive)]
        self._rows.append(rows)
        self._buffered += rows.shape[0]
        if self._buffered >= self.BLOCK_ROWS:
            self._reduce()

    def _reduce(self) -> None:
        if not self._rows:
            return
        block = torch.cat(self._rows).to(torch.float64)
        self._rows, self._buffered = [], 0
        self.count += block.shape[0]
        self.total = self.total + block.sum(dim=0).numpy()
        self.squares = self.squares + block.square().sum(dim=0).numpy()

    def stats(self) -> RunningStats:
        self._reduce()
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


def _diagnose(env: gym.vector.VectorEnv, err: Exception) -> tuple[int | None, str | None]:
    """The slot that failed and, for an observation that does not fit its declared space,
    what is wrong with it. Only runs after a failure, so the rollout loop pays nothing.

    ``SyncVectorEnv`` steps its envs in a loop over ``i`` and then copies their observations
    (``_env_obs``) into one preallocated array: the loop variable in the failing frame names
    the slot that raised, and a wrong-shaped ``_env_obs`` entry the slot that broke the copy.
    """
    space = getattr(env, "single_observation_space", None)
    shape = getattr(space, "shape", None)
    env_obs = getattr(env, "_env_obs", None)
    if isinstance(space, gym.spaces.Box | gym.spaces.MultiBinary | gym.spaces.MultiDiscrete) and (
        isinstance(env_obs, list)
    ):
        for slot, obs in enumerate(env_obs):
            if obs is not None and np.shape(obs) != shape:
                return slot, (
                    f"observation of shape {np.shape(obs)} does not fit its declared "
                    f"observation space {space} (shape {shape})"
                )
    slot = None
    tb = err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if isinstance(frame.f_locals.get("self"), gym.vector.SyncVectorEnv):
            found = frame.f_locals.get("i")
            slot = found if isinstance(found, int) else slot
        tb = tb.tb_next
    return slot, None


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
