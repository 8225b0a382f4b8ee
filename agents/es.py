"""EvoTorch's search algorithms over the flat LSTM parameters.

PGPE (Sehnke et al. 2010, https://doi.org/10.1016/j.neunet.2009.12.004), CMA-ES (Hansen &
Ostermeier 2001), SNES (Schaul et al. 2011), XNES (Glasmachers et al. 2010) and CEM
(Rubinstein 1999) come from EvoTorch (CoSyNE is evolstm's own: :mod:`agents.cosyne` says
why); evolstm supplies the fitness: an EvoTorch ``Problem`` whose batch evaluation hands
the whole population ``[P, D]`` to the evolstm evaluator (batched, optionally on Ray)
instead of GymNE's one-solution-at-a-time loop. Every member of a generation meets the
same episode seeds; the seeds move on each generation. Fitness is maximised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pydantic
import torch

from evolstm.agent import Agent, AgentContext, AgentOptions
from evolstm.network.layout import init_vector
from evolstm.network.obs_norm import ObsNormalizer
from evolstm.rollouts.evaluation import single_torch_thread
from evolstm.run import safe_pickle

if TYPE_CHECKING:  # EvoTorch is imported only when an EvoTorch agent is built
    from evotorch import Problem
    from evotorch.algorithms.searchalgorithm import SearchAlgorithm


def __getattr__(name: str) -> Any:
    # ``agents.es.EvaluatorProblem`` still resolves (lazily) for code that imported it here.
    if name == "EvaluatorProblem":
        from agents._evotorch import EvaluatorProblem

        return EvaluatorProblem
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ESOptions(AgentOptions):
    """Options every EvoTorch agent shares."""

    popsize: int = pydantic.Field(64, ge=2, description="members per generation (P)")
    episodes: int = pydantic.Field(1, ge=1, description="episodes per member per generation (E)")
    stdev_init: float = pydantic.Field(0.1, gt=0, description="initial search stdev")
    obs_norm: bool = pydantic.Field(True, description="normalise observations (running stats)")
    restart_after: int | None = pydantic.Field(
        None,
        ge=1,
        description="restart the search after this many generations in a row without a new "
        "best training fitness of the current distribution: a fresh centre (a new draw of the "
        "policy's initialisation) and the initial stdev; every evaluation stays counted "
        "(None: never restart)",
    )
    restart_below: float | None = pydantic.Field(
        None,
        description="restarts fire only while the best training fitness so far is below this "
        "(e.g. a capped episode return, where members tie at the cap and a stalled best means "
        "nothing; None: no limit)",
    )


# Every class (and bound method) an EvoTorch searcher's state refers to, found by pickling
# all five searchers after a few generations: the allowlist of evolstm.run.safe_pickle.loads, so
# a checkpoint can name nothing else. tests/test_safe_files.py checks it is exactly this set.
SEARCHER_ALLOWLIST = frozenset(
    {
        "agents._evotorch.ContiguousSymmetricGaussian",
        "agents._evotorch.EvaluatorProblem",
        "evolstm.network.obs_norm.RunningStats",
        "evotorch.algorithms.cmaes.CMAES",
        "evotorch.algorithms.distributed.gaussian.CEM",
        "evotorch.algorithms.distributed.gaussian.PGPE",
        "evotorch.algorithms.distributed.gaussian.SNES",
        "evotorch.algorithms.distributed.gaussian.XNES",
        "evotorch.algorithms.searchalgorithm.LazyReporter._missing_status_producer",
        "evotorch.algorithms.searchalgorithm.SinglePopulationAlgorithmMixin.ObjectiveStatusReporter",
        "evotorch.core.Solution",
        "evotorch.core.SolutionBatch",
        "evotorch.distributions.ExpGaussian",
        "evotorch.distributions.ExpSeparableGaussian",
        "evotorch.distributions.SeparableGaussian",
        "evotorch.distributions.SymmetricSeparableGaussian",
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
        from agents._evotorch import EvaluatorProblem

        center = self.initial_center(0)
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
        # restarts (ESOptions.restart_after): how many so far, the current distribution's best
        # generation fitness and the generations since it last improved
        self.restarts = 0
        self.run_best = -np.inf
        self.stale = 0

    def initial_center(self, restart: int) -> torch.Tensor:
        """The centre ``[D]`` of the ``restart``-th distribution (0: the first): the policy's
        initialisation drawn from the run's seed (restart 0) or from ``(seed, restart)``."""
        seed = self.ctx.seed
        if restart:
            seed = int(np.random.SeedSequence([self.ctx.seed, restart]).generate_state(1)[0])
        return init_vector(self.ctx.policy_spec, torch.Generator().manual_seed(seed))

    def build_searcher(self, problem: Problem, center: torch.Tensor) -> SearchAlgorithm:
        raise NotImplementedError

    def step(self) -> dict[str, float]:
        # EvoTorch's ask/tell on [P, D] at one torch thread, like the evaluator: measured
        # 21 ms against 140 ms per generation at two threads (P = 256, 2 busy cores).
        with single_torch_thread():
            self.searcher.step()
        result, values = self.problem.last_result, self.problem.last_values
        assert result is not None and values is not None
        env_steps, members = self.problem.take_counts()
        fitness = result.mean_returns
        metrics = {
            "env_steps": float(env_steps),
            "members_evaluated": float(members),
            "return_mean": float(fitness.mean()),
            "return_max": float(fitness.max()),
            "return_min": float(fitness.min()),
        }
        for key, value in self.update_best(values, fitness).items():
            metrics[key] = metrics.get(key, 0.0) + value  # selection env steps add up
        if result.successes is not None:
            metrics["success_rate"] = float(result.successes.mean())
        metrics.update(result.timings)  # time_env_s, time_policy_s (+ time_ray_s on Ray)
        if "stdev" in self.searcher.status:
            metrics["stdev_mean"] = float(torch.as_tensor(self.searcher.status["stdev"]).mean())
        self.maybe_restart(float(fitness.max()))
        metrics["restarts"] = float(self.restarts)
        return metrics

    def maybe_restart(self, generation_best: float) -> None:
        """Count a stalled generation (its best is no better than the current distribution's
        best so far) and, after ``restart_after`` in a row while the best ever is below
        ``restart_below``, replace the searcher by a new one around :meth:`initial_center`
        with the initial stdev (the same problem: episode seeds and counters go on)."""
        o: ESOptions = self.options  # type: ignore[assignment]
        if generation_best > self.run_best:
            self.run_best, self.stale = generation_best, 0
            return
        self.stale += 1
        if o.restart_after is None or self.stale < o.restart_after:
            return
        if o.restart_below is not None and self.best_fitness >= o.restart_below:
            return
        self.restarts += 1
        self.run_best, self.stale = -np.inf, 0
        self.searcher = self.build_searcher(self.problem, self.initial_center(self.restarts))

    def update_best(self, values: torch.Tensor, fitness: np.ndarray) -> dict[str, float]:
        """Track the best member by training fitness (``values [P, D]``, ``fitness [P]``);
        returns metrics (``env_steps`` among them add to the step's)."""
        best = int(np.argmax(fitness))
        if fitness[best] > self.best_fitness:
            self.best_fitness = float(fitness[best])
            self.best_vector = values[best].clone()
        return {"best_fitness_ever": self.best_fitness}

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
            "restarts": self.restarts,
            "run_best": self.run_best,
            "stale": self.stale,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        searcher = safe_pickle.loads(state["searcher"], SEARCHER_ALLOWLIST)
        searcher.problem.evaluator = self.ctx.evaluator
        self.searcher = searcher
        self.problem = searcher.problem
        self.best_vector = state["best_vector"].clone()
        self.best_fitness = float(state["best_fitness"])
        self.restarts = int(state.get("restarts", 0))  # checkpoints before 27 Nov lack these
        self.run_best = float(state.get("run_best", -np.inf))
        self.stale = int(state.get("stale", 0))


class PGPEOptions(ESOptions):
    center_lr: float = pydantic.Field(0.1, gt=0, description="centre learning rate")
    stdev_lr: float = pydantic.Field(0.1, gt=0, description="stdev learning rate")
    optimizer: Literal["adam", "clipup", "sgd"] = pydantic.Field(
        "adam", description="optimiser applied to the centre's gradient estimate"
    )
    stdev_max_change: float = pydantic.Field(
        0.2, gt=0, description="largest relative change of the stdev in one generation"
    )
    ranking: Literal["centered", "linear", "nes", "raw"] = pydantic.Field(
        "centered", description="fitness shaping before the gradient estimate"
    )
    symmetric: bool = pydantic.Field(
        True, description="antithetic pairs (centre ± noise); popsize must then be even"
    )


class PGPE(EvoTorchAgent):
    """Policy gradients with parameter-based exploration (EvoTorch ``PGPE``).

    A Gaussian search distribution (centre and per-parameter stdev) over the flat policy
    vector; each generation samples ``popsize`` members (antithetic pairs when
    ``symmetric``), and the fitness-shaped returns move the centre (through ``optimizer``)
    and the stdev. The saved policy is the distribution's centre.
    """

    Options = PGPEOptions

    def build_searcher(self, problem: Problem, center: torch.Tensor) -> SearchAlgorithm:
        from evotorch.algorithms import PGPE as EvoPGPE

        from agents._evotorch import use_contiguous_sampling

        o: PGPEOptions = self.options  # type: ignore[assignment]
        searcher = EvoPGPE(
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
        return use_contiguous_sampling(searcher)


class CMAESOptions(ESOptions):
    separable: bool = pydantic.Field(
        False, description="diagonal covariance only (sep-CMA-ES; cheaper for large D)"
    )
    active: bool = pydantic.Field(
        True, description="active CMA: the worst members also update the covariance"
    )


class CMAES(EvoTorchAgent):
    """Covariance matrix adaptation evolution strategy (EvoTorch ``CMAES``).

    A Gaussian with a full (or, ``separable``, diagonal) covariance adapted from the ranked
    members of each generation of ``popsize``; ``stdev_init`` is the initial step size.
    The saved policy is the distribution's centre.
    """

    Options = CMAESOptions

    def build_searcher(self, problem: Problem, center: torch.Tensor) -> SearchAlgorithm:
        from evotorch.algorithms import CMAES as EvoCMAES

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
    center_lr: float | None = pydantic.Field(
        None, gt=0, description="centre learning rate (None: the NES default, 1.0)"
    )
    stdev_lr: float | None = pydantic.Field(
        None,
        gt=0,
        description="stdev learning rate as a multiple of the NES default (EvoTorch scales it: "
        "SNES (3 + ln D) / (5 sqrt D), XNES 0.6 (3 + ln D) / (D sqrt D); None: 1.0)",
    )


class SNES(EvoTorchAgent):
    """Separable natural evolution strategy (EvoTorch ``SNES``).

    A Gaussian with a diagonal covariance, updated along the natural gradient of the
    expected fitness from ``popsize`` members per generation. The saved policy is the
    distribution's centre.
    """

    Options = NESOptions
    searcher_name: ClassVar[str] = "SNES"  # the class in evotorch.algorithms

    def build_searcher(self, problem: Problem, center: torch.Tensor) -> SearchAlgorithm:
        import evotorch.algorithms

        o: NESOptions = self.options  # type: ignore[assignment]
        return getattr(evotorch.algorithms, self.searcher_name)(
            problem,
            stdev_init=o.stdev_init,
            popsize=o.popsize,
            center_learning_rate=o.center_lr,
            stdev_learning_rate=o.stdev_lr,
            center_init=center,
        )


class XNES(SNES):
    """Exponential natural evolution strategy (EvoTorch ``XNES``): SNES's options, with a
    full covariance matrix.

    The saved policy is the distribution's centre.
    """

    searcher_name = "XNES"


class CEMOptions(ESOptions):
    parenthood_ratio: float = pydantic.Field(
        0.5, gt=0, lt=1, description="fraction of the best members the new Gaussian is fit to"
    )
    stdev_max_change: float | None = pydantic.Field(
        None, gt=0, description="largest relative stdev change per generation (None: no limit)"
    )


class CEM(EvoTorchAgent):
    """Cross-entropy method (EvoTorch ``CEM``).

    Each generation samples ``popsize`` members from a diagonal Gaussian and refits it to
    the best ``parenthood_ratio`` of them. The saved policy is the distribution's centre.
    """

    Options = CEMOptions

    def build_searcher(self, problem: Problem, center: torch.Tensor) -> SearchAlgorithm:
        from evotorch.algorithms import CEM as EvoCEM

        o: CEMOptions = self.options  # type: ignore[assignment]
        return EvoCEM(
            problem,
            popsize=o.popsize,
            parenthood_ratio=o.parenthood_ratio,
            stdev_init=o.stdev_init,
            stdev_max_change=o.stdev_max_change,
            center_init=center,
        )
