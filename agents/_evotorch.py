"""The EvoTorch side of the EvoTorch agents, imported only when one of them is built.

``import evotorch`` takes seconds (see :func:`_without_pycma`), so
:mod:`agents.es` keeps its options and docstrings importable without it and imports this
module inside :class:`agents.es.EvoTorchAgent`'s constructor.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

import torch

from evolstm.network.obs_norm import ObsNormalizer, RunningStats
from evolstm.rollouts.evaluation import TRAIN_STREAM, EvaluationResult, Evaluator, episode_seeds


@contextlib.contextmanager
def _without_pycma() -> Iterator[None]:
    """Import EvoTorch without the ``cma`` package (pycma and SciPy's stats: about 40% of
    ``import evotorch``). EvoTorch imports it only for ``PyCMAES``, which no evolstm agent
    uses (``cmaes`` is EvoTorch's own ``CMAES``), and takes its absence as optional. The
    block lasts only for this import: a later ``import cma`` elsewhere works as usual."""
    blocked = "cma" not in sys.modules
    if blocked:
        sys.modules["cma"] = None  # type: ignore[assignment]  # makes `import cma` fail
    try:
        yield
    finally:
        if blocked and sys.modules.get("cma", 0) is None:
            del sys.modules["cma"]


with _without_pycma():
    from evotorch import Problem, SolutionBatch
    from evotorch.algorithms.searchalgorithm import SearchAlgorithm
    from evotorch.distributions import SymmetricSeparableGaussian

# EvoTorch logs every Problem's dtype/device at INFO; the trainer reports what matters.
logging.getLogger("evotorch").setLevel(logging.WARNING)


class EvaluatorProblem(Problem):
    """An EvoTorch problem whose fitness is the mean return of ``episodes`` episodes.

    :param evaluator: evaluates ``[P, D]`` batches (local or Ray).
    :param dim: D, the flat parameter count.
    :param run_seed: root of the episode-seed stream and of EvoTorch's sampling generator.
    :param episodes: episodes per member per generation (E).
    :param obs_norm: normalise observations with running statistics gathered while
        evaluating (frozen within a generation).
    """

    def __init__(
        self,
        evaluator: Evaluator,
        dim: int,
        *,
        run_seed: int,
        episodes: int,
        init_radius: float,
        obs_norm: bool,
    ) -> None:
        super().__init__(
            objective_sense="max",
            solution_length=dim,
            initial_bounds=(-init_radius, init_radius),
            dtype=torch.float32,
            seed=run_seed,
        )
        self.evaluator: Evaluator | None = evaluator
        self.run_seed = run_seed
        self.episodes = episodes
        self.generation = 0
        self.last_result: EvaluationResult | None = None
        self.last_values: torch.Tensor | None = None
        self.env_steps_taken = 0
        self.members_evaluated = 0
        self.obs_stats: RunningStats | None = RunningStats() if obs_norm else None

    def _evaluate_batch(self, batch: SolutionBatch) -> None:
        if self.evaluator is None:
            raise RuntimeError("EvaluatorProblem has no evaluator attached (restored state?)")
        seeds = episode_seeds(self.run_seed, TRAIN_STREAM, self.generation, self.episodes)
        normalizer = self.obs_normalizer()
        # A plain contiguous copy: EvoTorch's ReadOnlyTensor would ride through every op of
        # the population forward via __torch_function__ (FIELD-NOTES: 2.9x slower).
        values = batch.values.detach().as_subclass(torch.Tensor).contiguous().clone()
        result = self.evaluator.evaluate(
            values,
            seeds,
            obs_norm=normalizer,
            collect_stats=self.obs_stats is not None,
        )
        if self.obs_stats is not None and result.obs_stats is not None:
            self.obs_stats.merge(result.obs_stats)
        batch.set_evals(torch.as_tensor(result.mean_returns, dtype=torch.float32))
        self.last_result = result
        self.last_values = values
        self.generation += 1
        # Every evaluation counts, not only the last of a step: EvoTorch's Cosyne evaluates
        # its initial population and then its first offspring within one step().
        self.env_steps_taken += result.env_steps
        self.members_evaluated += len(values)

    def take_counts(self) -> tuple[int, int]:
        """Env steps and members evaluated since the last call, and reset both."""
        counts = (self.env_steps_taken, self.members_evaluated)
        self.env_steps_taken = self.members_evaluated = 0
        return counts

    def obs_normalizer(self) -> ObsNormalizer | None:
        """The normaliser of the statistics gathered so far (``None`` when disabled)."""
        return None if self.obs_stats is None else self.obs_stats.normalizer()

    def _get_cloned_state(self, *, memo: dict) -> dict:
        # The evaluator (env handles, Ray actors) is not part of the algorithm's state, nor
        # is the last generation's copy of the population and its result: the agent reads
        # them right after the step that set them (dropping them halves a P = 256 checkpoint).
        kept = self.evaluator, self.last_result, self.last_values
        self.evaluator = self.last_result = self.last_values = None
        try:
            return super()._get_cloned_state(memo=memo)
        finally:
            self.evaluator, self.last_result, self.last_values = kept


class ContiguousSymmetricGaussian(SymmetricSeparableGaussian):
    """EvoTorch's antithetic separable Gaussian (``PGPE``'s), drawn 6x faster.

    EvoTorch fills ``out[0::2]`` with ``normal_`` in place: on a strided view torch takes
    its slow element-wise path (measured 13.0 ms for ``[256, 1233]``). This draws the
    ``[P / 2, D]`` noise into a contiguous buffer and interleaves ``centre ± stdev * noise``
    in one ``stack`` (2.2 ms). The layout is EvoTorch's (row ``2k`` plus, ``2k + 1`` minus),
    so its gradient estimate reads it unchanged; only the noise stream differs.
    """

    def _fill(self, out: torch.Tensor, *, generator: object = None) -> None:
        if out.dim() != 2 or out.shape[0] % 2 or not out.is_contiguous():
            super()._fill(out, generator=generator)
            return
        gen = getattr(generator, "generator", generator)  # EvoTorch passes the Problem
        noise = torch.empty((out.shape[0] // 2, out.shape[1]), dtype=out.dtype)
        noise.normal_(generator=gen)  # None: torch's default generator
        noise.mul_(self.sigma)
        torch.stack((self.mu + noise, self.mu - noise), dim=1, out=out.view(-1, 2, out.shape[1]))


def use_contiguous_sampling(searcher: SearchAlgorithm) -> SearchAlgorithm:
    """Swap a searcher's :class:`SymmetricSeparableGaussian` for
    :class:`ContiguousSymmetricGaussian` (same parameters). EvoTorch builds each update's
    distribution with ``self.__class__``, so the swap lasts the whole run."""
    dist = getattr(searcher, "_distribution", None)
    if type(dist) is SymmetricSeparableGaussian:
        searcher._distribution = ContiguousSymmetricGaussian(
            dist.parameters, dtype=dist.dtype, device=dist.device
        )
    return searcher
