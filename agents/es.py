"""EvoTorch's search algorithms over the flat LSTM parameters.

PGPE (Sehnke et al. 2010, https://doi.org/10.1016/j.neunet.2009.12.004), CMA-ES (Hansen &
Ostermeier 2001), SNES (Schaul et al. 2011), XNES (Glasmachers et al. 2010), CEM
(Rubinstein 1999) and CoSyNE (Gomez, Schmidhuber & Miikkulainen, JMLR 2008) come from
EvoTorch; evolstm supplies the fitness: an EvoTorch ``Problem`` whose batch evaluation
hands the whole population ``[P, D]`` to the evolstm evaluator (batched, optionally on Ray)
instead of GymNE's one-solution-at-a-time loop. Every member of a generation meets the
same episode seeds; the seeds move on each generation. Fitness is maximised.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

import numpy as np
import pydantic
import torch
from evotorch import Problem, SolutionBatch
from evotorch.algorithms import CEM as EvoCEM
from evotorch.algorithms import CMAES as EvoCMAES
from evotorch.algorithms import PGPE as EvoPGPE
from evotorch.algorithms import SNES as EvoSNES
from evotorch.algorithms import XNES as EvoXNES
from evotorch.algorithms import Cosyne as EvoCosyne
from evotorch.algorithms.searchalgorithm import SearchAlgorithm

from evolstm import safe_pickle
from evolstm.agent import Agent, AgentContext, AgentOptions
from evolstm.evaluation import TRAIN_STREAM, EvaluationResult, Evaluator, episode_seeds
from evolstm.obs_norm import ObsNormalizer, RunningStats
from evolstm.policy import init_vector

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
        self.obs_stats: RunningStats | None = RunningStats() if obs_norm else None

    def _evaluate_batch(self, batch: SolutionBatch) -> None:
        if self.evaluator is None:
            raise RuntimeError("EvaluatorProblem has no evaluator attached (restored state?)")
        seeds = episode_seeds(self.run_seed, TRAIN_STREAM, self.generation, self.episodes)
        normalizer = self.obs_normalizer()
        result = self.evaluator.evaluate(
            batch.values.detach(),
            seeds,
            obs_norm=normalizer,
            collect_stats=self.obs_stats is not None,
        )
        if self.obs_stats is not None and result.obs_stats is not None:
            self.obs_stats.merge(result.obs_stats)
        batch.set_evals(torch.as_tensor(result.mean_returns, dtype=torch.float32))
        self.last_result = result
        self.last_values = batch.values.detach().clone()
        self.generation += 1

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


class ESOptions(AgentOptions):
    """Options every EvoTorch agent shares."""

    popsize: int = pydantic.Field(64, ge=2, description="members per generation (P)")
    episodes: int = pydantic.Field(1, ge=1, description="episodes per member per generation (E)")
    stdev_init: float = pydantic.Field(0.1, gt=0, description="initial search stdev")
    obs_norm: bool = pydantic.Field(True, description="normalise observations (running stats)")


# Every class (and bound method) an EvoTorch searcher's state refers to, found by pickling
# all six searchers after a few generations: the allowlist of evolstm.safe_pickle.loads, so
# a checkpoint can name nothing else. tests/test_safe_files.py checks it is exactly this set.
SEARCHER_ALLOWLIST = frozenset(
    {
        "agents.es.EvaluatorProblem",
        "evolstm.evaluation.EvaluationResult",
        "evolstm.obs_norm.RunningStats",
        "evotorch.algorithms.cmaes.CMAES",
        "evotorch.algorithms.distributed.gaussian.CEM",
        "evotorch.algorithms.distributed.gaussian.PGPE",
        "evotorch.algorithms.distributed.gaussian.SNES",
        "evotorch.algorithms.distributed.gaussian.XNES",
        "evotorch.algorithms.ga.Cosyne",
        "evotorch.algorithms.searchalgorithm.LazyReporter._missing_status_producer",
        "evotorch.algorithms.searchalgorithm.SinglePopulationAlgorithmMixin.ObjectiveStatusReporter",
        "evotorch.core.Solution",
        "evotorch.core.SolutionBatch",
        "evotorch.distributions.ExpGaussian",
        "evotorch.distributions.ExpSeparableGaussian",
        "evotorch.distributions.SeparableGaussian",
        "evotorch.distributions.SymmetricSeparableGaussian",
        "evotorch.operators.real.CosynePermutation",
        "evotorch.operators.real.GaussianMutation",
        "evotorch.operators.real.OnePointCrossOver",
        "evotorch.optimizers.Adam",
        "evotorch.tools.hook.Hook",
        "torch.optim.adam.Adam",
        # bound methods stored in the searchers' status reporters and hooks
        "evotorch.algorithms.cmaes.CMAES._get_center",
        "evotorch.algorithms.cmaes.CMAES._get_sigma",
        *(
            f"evotorch.algorithms.distributed.gaussian.{cls}.{method}"
            for cls in ("CEM", "PGPE", "SNES", "XNES")
            for method in ("_get_mu", "_get_sigma", "_step_non_distributed")
        ),
    }
)


class EvoTorchAgent(Agent):
    """Drives one EvoTorch searcher; subclasses only build it."""

    family: ClassVar[Literal["es"]] = "es"
    Options: ClassVar[type[AgentOptions]] = ESOptions

    def __init__(self, options: ESOptions, ctx: AgentContext) -> None:
        super().__init__(options, ctx)
        center = init_vector(ctx.policy_spec, torch.Generator().manual_seed(ctx.seed))
        self.problem = EvaluatorProblem(
            ctx.evaluator,
            center.numel(),
            run_seed=ctx.seed,
            episodes=options.episodes,
            init_radius=float(center.abs().max()),
            obs_norm=options.obs_norm,
        )
        self.searcher = self.build_searcher(self.problem, center)
        self.best_vector = center.clone()
        self.best_fitness = -np.inf

    def build_searcher(self, problem: Problem, center: torch.Tensor) -> SearchAlgorithm:
        raise NotImplementedError

    def step(self) -> dict[str, float]:
        self.searcher.step()
        result, values = self.problem.last_result, self.problem.last_values
        assert result is not None and values is not None
        fitness = result.mean_returns
        best = int(np.argmax(fitness))
        if fitness[best] > self.best_fitness:
            self.best_fitness = float(fitness[best])
            self.best_vector = values[best].clone()
        metrics = {
            "env_steps": float(result.env_steps),
            "return_mean": float(fitness.mean()),
            "return_max": float(fitness.max()),
            "return_min": float(fitness.min()),
            "best_fitness_ever": self.best_fitness,
        }
        if result.successes is not None:
            metrics["success_rate"] = float(result.successes.mean())
        metrics.update(result.timings)  # time_env_s, time_policy_s (+ time_ray_s on Ray)
        if "stdev" in self.searcher.status:
            metrics["stdev_mean"] = float(torch.as_tensor(self.searcher.status["stdev"]).mean())
        return metrics

    def policy_vector(self) -> torch.Tensor:
        if "center" in self.searcher.status:
            return torch.as_tensor(self.searcher.status["center"]).detach().clone().float()
        return self.best_vector.clone()

    def obs_normalizer(self) -> ObsNormalizer | None:
        return self.problem.obs_normalizer()

    def state_dict(self) -> dict[str, Any]:
        # The evaluator (env handles, Ray actors) is not state; the rest goes through
        # safe_pickle: tensors plus a pickle that names only SEARCHER_ALLOWLIST.
        evaluator, self.problem.evaluator = self.problem.evaluator, None
        try:
            searcher = safe_pickle.dumps(self.searcher)
        finally:
            self.problem.evaluator = evaluator
        return {
            "searcher": searcher,
            "best_vector": self.best_vector.clone(),
            "best_fitness": self.best_fitness,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        searcher = safe_pickle.loads(state["searcher"], SEARCHER_ALLOWLIST)
        searcher.problem.evaluator = self.ctx.evaluator
        self.searcher = searcher
        self.problem = searcher.problem
        self.best_vector = state["best_vector"].clone()
        self.best_fitness = float(state["best_fitness"])


class PGPEOptions(ESOptions):
    center_lr: float = pydantic.Field(0.1, gt=0, description="centre learning rate")
    stdev_lr: float = pydantic.Field(0.1, gt=0, description="stdev learning rate")
    optimizer: Literal["adam", "clipup", "sgd"] = "adam"
    stdev_max_change: float = pydantic.Field(0.2, gt=0)
    ranking: Literal["centered", "linear", "nes", "raw"] = "centered"
    symmetric: bool = True


class PGPE(EvoTorchAgent):
    """Policy gradients with parameter-based exploration (EvoTorch ``PGPE``)."""

    Options = PGPEOptions

    def build_searcher(self, problem: Problem, center: torch.Tensor) -> SearchAlgorithm:
        o: PGPEOptions = self.options  # type: ignore[assignment]
        return EvoPGPE(
            problem,
            popsize=o.popsize,
            center_learning_rate=o.center_lr,
            stdev_learning_rate=o.stdev_lr,
            stdev_init=o.stdev_init,
            optimizer=o.optimizer,
            ranking_method=o.ranking,
            stdev_max_change=o.stdev_max_change,
            symmetric=o.symmetric,
            center_init=center,
        )


class CMAESOptions(ESOptions):
    separable: bool = False
    active: bool = True


class CMAES(EvoTorchAgent):
    """Covariance matrix adaptation evolution strategy (EvoTorch ``CMAES``)."""

    Options = CMAESOptions

    def build_searcher(self, problem: Problem, center: torch.Tensor) -> SearchAlgorithm:
        o: CMAESOptions = self.options  # type: ignore[assignment]
        return EvoCMAES(
            problem,
            stdev_init=o.stdev_init,
            popsize=o.popsize,
            center_init=center,
            separable=o.separable,
            active=o.active,
        )


class NESOptions(ESOptions):
    center_lr: float | None = pydantic.Field(None, gt=0, description="None: the NES default")
    stdev_lr: float | None = pydantic.Field(None, gt=0, description="None: the NES default")


class SNES(EvoTorchAgent):
    """Separable natural evolution strategy (EvoTorch ``SNES``)."""

    Options = NESOptions
    searcher_class: ClassVar[type[SearchAlgorithm]] = EvoSNES

    def build_searcher(self, problem: Problem, center: torch.Tensor) -> SearchAlgorithm:
        o: NESOptions = self.options  # type: ignore[assignment]
        return self.searcher_class(
            problem,
            stdev_init=o.stdev_init,
            popsize=o.popsize,
            center_learning_rate=o.center_lr,
            stdev_learning_rate=o.stdev_lr,
            center_init=center,
        )


class XNES(SNES):
    """Exponential natural evolution strategy (EvoTorch ``XNES``): SNES's options, with a
    full covariance matrix."""

    searcher_class = EvoXNES


class CEMOptions(ESOptions):
    parenthood_ratio: float = pydantic.Field(0.5, gt=0, lt=1)
    stdev_max_change: float | None = pydantic.Field(None, gt=0)


class CEM(EvoTorchAgent):
    """Cross-entropy method (EvoTorch ``CEM``)."""

    Options = CEMOptions

    def build_searcher(self, problem: Problem, center: torch.Tensor) -> SearchAlgorithm:
        o: CEMOptions = self.options  # type: ignore[assignment]
        return EvoCEM(
            problem,
            popsize=o.popsize,
            parenthood_ratio=o.parenthood_ratio,
            stdev_init=o.stdev_init,
            stdev_max_change=o.stdev_max_change,
            center_init=center,
        )


class CoSyNEOptions(ESOptions):
    tournament_size: int = pydantic.Field(4, ge=2)
    mutation_probability: float | None = pydantic.Field(0.3, gt=0, le=1)
    elitism_ratio: float | None = pydantic.Field(0.1, ge=0, lt=1)
    permute_all: bool = False


class CoSyNE(EvoTorchAgent):
    """Cooperative synapse neuroevolution (EvoTorch ``Cosyne``): per-weight subpopulations
    permuted across members. ``stdev_init`` is the Gaussian mutation stdev. The first
    population is drawn uniformly within the initial weights' range."""

    Options = CoSyNEOptions

    def build_searcher(self, problem: Problem, center: torch.Tensor) -> SearchAlgorithm:
        o: CoSyNEOptions = self.options  # type: ignore[assignment]
        return EvoCosyne(
            problem,
            popsize=o.popsize,
            tournament_size=o.tournament_size,
            mutation_stdev=o.stdev_init,
            mutation_probability=o.mutation_probability,
            elitism_ratio=o.elitism_ratio,
            permute_all=o.permute_all,
        )
