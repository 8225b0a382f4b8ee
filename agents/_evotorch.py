"""The EvoTorch side of the EvoTorch agents, imported only when one of them is built.

``import evotorch`` takes seconds (it pulls in Ray and torch's compiler stack), so
:mod:`agents.es` keeps its options and docstrings importable without it and imports this
module inside :class:`agents.es.EvoTorchAgent`'s constructor.
"""

from __future__ import annotations

import logging

import torch
from evotorch import Problem, SolutionBatch

from evolstm.evaluation import TRAIN_STREAM, EvaluationResult, Evaluator, episode_seeds
from evolstm.obs_norm import ObsNormalizer, RunningStats

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
        # The evaluator (env handles, Ray actors) is not part of the algorithm's state.
        evaluator, self.evaluator = self.evaluator, None
        try:
            return super()._get_cloned_state(memo=memo)
        finally:
            self.evaluator = evaluator
