"""Cooperative synapse neuroevolution (CoSyNE).

F. Gomez, J. Schmidhuber and R. Miikkulainen, "Accelerated neural evolution through
cooperatively coevolved synapses", JMLR 9 (2008) 937-965,
https://jmlr.org/papers/v9/gomez08a.html

Every weight of the network has a subpopulation of ``m`` values; network ``j`` is the ``j``-th
value of every subpopulation, i.e. row ``j`` of the population matrix ``[m, n]`` (``n``
weights, each subpopulation one column). Each generation:

1. **Evaluation.** Every network meets the same episode seeds (one ``[k, D]`` batch).
2. **Recombination.** Ranked by fitness, the top quarter mate by one-point crossover (each
   with a random member of the top quarter ranked at least as high) and their children, with
   Cauchy mutation, replace the bottom half (the recombination of :mod:`agents.esp`).
3. **Permutation.** In the surviving networks, weight ``i`` of network ``j`` is *marked* with
   probability ``1 - ((f_j - f_min) / (f_max - f_min)) ** (1 / n)``, and within each column
   the marked values are randomly permuted among themselves. So a network of normalised
   fitness ``u`` keeps all its weights with probability ``u``: the best is never disrupted,
   the worst always has every weight marked, and each column keeps its values (its multiset).

Why evolstm has its own rather than EvoTorch's ``Cosyne`` (measured, BENCHMARKS.md issue 8):
EvoTorch evaluates elite copies + children + all ``P`` members after permutation every
generation and keeps the best ``P`` of that union. Most permuted members are unchanged
copies, so with deterministic episodes (double pole from its standard start) copies tie their
originals and the kept population fills with duplicates of the best (13 distinct of 40 after
30 generations); it never balanced more than 167 steps. Here the population stays ``m``
networks, children replace the worst half as in the paper's loop, a network is never evaluated
twice in one generation, and (``reevaluate: false``) an unchanged network keeps its fitness.

What the paper's own text says could not be read here (stored copies end after the
abstract); the marking formula and "the top quarter ... are recombined using crossover and
mutation" are quoted second-hand (a Python reimplementation's docstrings); the children
replacing the bottom half, the Cauchy mutation and one-point crossover follow ESP (Gomez's
earlier method) and are **unconfirmed** for CoSyNE.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pydantic
import torch

from agents.esp import recombine
from evolstm.agent import Agent, AgentContext, AgentOptions
from evolstm.network.layout import init_vector
from evolstm.network.obs_norm import ObsNormalizer, RunningStats
from evolstm.rollouts.evaluation import TRAIN_STREAM, episode_seeds

# Episode seeds of the selection rounds: a stream of their own, apart from the generations'
# (TRAIN_STREAM) and the trainer's held-out evaluation.
SELECT_STREAM = 2


class CoSyNEOptions(AgentOptions):
    """CoSyNE's options (the keys under ``agent:``)."""

    popsize: int = pydantic.Field(
        64,
        ge=4,
        description="networks in the population (m; also each weight's subpopulation size); "
        "a generation evaluates every network (reevaluate) or only those that changed",
    )
    episodes: int = pydantic.Field(1, ge=1, description="episodes per network per generation")
    stdev_init: float = pydantic.Field(
        0.3, gt=0, description="scale of the Cauchy mutation of children"
    )
    mutation_probability: float | None = pydantic.Field(
        0.3, gt=0, le=1, description="chance that one weight of a child mutates (None: all)"
    )
    init_range: float | None = pydantic.Field(
        None,
        gt=0,
        description="first population uniform in [-init_range, init_range] (None: the largest "
        "magnitude of the policy's own initial parameters)",
    )
    permute: Literal["marked", "all", "none"] = pydantic.Field(
        "marked",
        description="which surviving weights are permuted within their column: marked by the "
        "paper's fitness rule, all of them, or none",
    )
    reevaluate: bool = pydantic.Field(
        True,
        description="evaluate unchanged networks again each generation (fresh episodes); "
        "false: only changed networks, the others keep their fitness (right when episodes "
        "are deterministic, e.g. every one from the same start)",
    )
    obs_norm: bool = pydantic.Field(True, description="normalise observations (running stats)")
    select_top: int = pydantic.Field(
        3,
        ge=0,
        description="best networks of each generation that challenge the saved policy on "
        "select_episodes fresh episodes (0: save the best single training fitness)",
    )
    select_episodes: int = pydantic.Field(
        8, ge=1, description="fresh training-stream episodes of each selection round"
    )


def mark_probability(fitness: torch.Tensor, n: int) -> torch.Tensor:
    """The paper's chance that each weight of a network is marked for permutation:
    ``1 - ((f - f_min) / (f_max - f_min)) ** (1 / n)`` for fitness ``[k]`` and ``n`` weights;
    all equal fitness: 0 (no network is worse than another)."""
    f = fitness.to(torch.float64)
    spread = f.max() - f.min()
    if spread <= 0:
        return torch.zeros_like(f)
    return 1.0 - ((f - f.min()) / spread) ** (1.0 / n)


def permute_marked(
    population: torch.Tensor, marks: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """``population [k, n]`` with, in every column, the values at ``marks [k, n]`` randomly
    permuted among the marked rows; unmarked values stay where they are."""
    k = population.shape[0]
    rows = torch.arange(k, dtype=torch.float64).unsqueeze(1).expand_as(marks)
    keys = torch.rand(marks.shape, generator=generator, dtype=torch.float64)
    # source order: marked rows in random order, then unmarked rows in row order;
    # target order: marked rows in row order, then unmarked rows in row order
    source = torch.argsort(torch.where(marks, keys - 2.0, rows), dim=0, stable=True)
    target = torch.argsort(torch.where(marks, rows - k - 1.0, rows), dim=0, stable=True)
    out = torch.empty_like(population)
    out.scatter_(0, target, torch.gather(population, 0, source))
    return out


class CoSyNE(Agent):
    """Cooperative synapse neuroevolution (Gomez, Schmidhuber & Miikkulainen 2008): one
    subpopulation per weight, the worse networks' weights permuted within their column.

    ``popsize`` is the population (m networks). Every episode played counts in ``env_steps``
    and ``evaluations`` (``members_evaluated`` networks x ``episodes``), selection rounds
    included. The saved policy is the champion of selection rounds on fresh episodes (see
    ``select_top``): the best single training fitness favours networks that met easy episodes
    (measured with EvoTorch's CoSyNE: training fitness 500, held-out 293).
    """

    family: ClassVar[Literal["es"]] = "es"
    Options: ClassVar[type[AgentOptions]] = CoSyNEOptions

    def __init__(self, options: CoSyNEOptions, ctx: AgentContext) -> None:
        super().__init__(options, ctx)
        self.generator = torch.Generator().manual_seed(ctx.seed)
        start = init_vector(ctx.policy_spec, self.generator)
        radius = options.init_range or float(start.abs().max())
        m, n = options.popsize, start.numel()
        self.population = (torch.rand(m, n, generator=self.generator) * 2 - 1) * radius
        self.fitness = torch.full((m,), -torch.inf, dtype=torch.float64)
        self.stale = torch.ones(m, dtype=torch.bool)  # needs evaluating
        self.generation = 0
        self.obs_stats: RunningStats | None = RunningStats() if options.obs_norm else None
        self.best_vector = self.population[0].clone()
        self.best_fitness = -float("inf")
        # the best network of the generation just evaluated (bench/dpnv.py tests it)
        self.generation_best: tuple[torch.Tensor, float] = (self.best_vector.clone(), -np.inf)
        self.generation_fitness = torch.empty(0, dtype=torch.float64)  # of that generation [m]

    def obs_normalizer(self) -> ObsNormalizer | None:
        return None if self.obs_stats is None else self.obs_stats.normalizer()

    def _evaluate(self) -> tuple[int, int]:
        """Evaluate the networks that need it; returns (env steps, networks evaluated)."""
        o: CoSyNEOptions = self.options  # type: ignore[assignment]
        todo = torch.ones_like(self.stale) if o.reevaluate else self.stale
        idx = torch.nonzero(todo).flatten()
        if idx.numel() == 0:
            return 0, 0
        seeds = episode_seeds(self.ctx.seed, TRAIN_STREAM, self.generation, o.episodes)
        result = self.ctx.evaluator.evaluate(
            self.population[idx].contiguous(),
            seeds,
            obs_norm=self.obs_normalizer(),
            collect_stats=self.obs_stats is not None,
        )
        if self.obs_stats is not None and result.obs_stats is not None:
            self.obs_stats.merge(result.obs_stats)
        self.fitness[idx] = torch.as_tensor(result.mean_returns, dtype=torch.float64)
        self.stale[idx] = False
        return int(result.env_steps), int(idx.numel())

    def step(self) -> dict[str, float]:
        o: CoSyNEOptions = self.options  # type: ignore[assignment]
        fresh = torch.ones_like(self.stale) if o.reevaluate else self.stale.clone()
        env_steps, evaluated = self._evaluate()
        fitness = self.generation_fitness = self.fitness.clone()
        best = self._generation_best_index(fitness, fresh)
        self.generation_best = (self.population[best].clone(), float(fitness[best]))
        metrics = {
            "members_evaluated": float(evaluated),
            "evaluations": float(evaluated * o.episodes),
            "return_mean": float(fitness.mean()),
            "return_max": float(fitness.max()),
            "return_min": float(fitness.min()),
        }
        env_steps += self._select(fitness, metrics)
        metrics["env_steps"] = float(env_steps)
        self._breed(fitness)
        metrics["distinct_networks"] = float(torch.unique(self.population, dim=0).shape[0])
        self.generation += 1
        return metrics

    @staticmethod
    def _generation_best_index(fitness: torch.Tensor, fresh: torch.Tensor) -> int:
        """The generation's best network: the first of those with the top fitness, preferring
        one evaluated in this generation (``fresh [m]``). Without re-evaluation the old best
        keeps its fitness, so when a capped fitness ties (double pole's standard fitness: 1,000
        steps) it would stay "the best" and a newer network of equal fitness would never be
        the one tested (bench/dpnv.py tests each generation's best)."""
        top = fitness == fitness.max()
        pick = top & fresh if bool((top & fresh).any()) else top
        return int(torch.nonzero(pick).flatten()[0])

    def _breed(self, fitness: torch.Tensor) -> None:
        """Recombination (children replace the bottom half), then permutation of the
        survivors' marked weights; marks which networks changed."""
        o: CoSyNEOptions = self.options  # type: ignore[assignment]
        order = torch.argsort(fitness, descending=True, stable=True)
        ranked, ranked_fitness = self.population[order], fitness[order]
        bred = recombine(
            ranked,
            ranked_fitness,
            mutation_rate=1.0 if o.mutation_probability is None else o.mutation_probability,
            mutation_scale=o.stdev_init,
            generator=self.generator,
        )
        m = o.popsize  # recombine's 2 * max(1, m // 4) children (at most m - m // 2) replace
        keep = m - min(2 * max(1, m // 4), m - m // 2)  # the worst; the rest survive
        survivors = bred[:keep]
        if o.permute == "marked":
            chance = mark_probability(ranked_fitness[:keep], survivors.shape[1])
            draws = torch.rand(survivors.shape, generator=self.generator, dtype=torch.float64)
            marks = draws < chance.unsqueeze(1)
        else:
            marks = torch.full(survivors.shape, o.permute == "all")
        bred[:keep] = permute_marked(survivors, marks, self.generator)
        self.population = bred
        self.fitness = ranked_fitness.clone()
        self.stale = torch.ones(o.popsize, dtype=torch.bool)
        self.stale[:keep] = (bred[:keep] != ranked[:keep]).any(dim=1)
        self.fitness[self.stale] = -torch.inf

    def _select(self, fitness: torch.Tensor, metrics: dict[str, float]) -> int:
        """Update the champion (the saved policy); returns the env steps this took."""
        o: CoSyNEOptions = self.options  # type: ignore[assignment]
        if o.select_top == 0:
            best = int(torch.argmax(fitness))
            if float(fitness[best]) > self.best_fitness:
                self.best_fitness = float(fitness[best])
                self.best_vector = self.population[best].clone()
            metrics["best_fitness_ever"] = self.best_fitness
            return 0
        top = torch.argsort(fitness, descending=True, stable=True)[: o.select_top]
        candidates = [self.population[int(i)] for i in top]
        if np.isfinite(self.best_fitness):  # a champion exists: it defends its place first
            candidates.insert(0, self.best_vector)
        seeds = episode_seeds(self.ctx.seed, SELECT_STREAM, self.generation, o.select_episodes)
        result = self.ctx.evaluator.evaluate(
            torch.stack(candidates), seeds, obs_norm=self.obs_normalizer()
        )
        scores = result.mean_returns
        winner = int(np.argmax(scores))  # the first of equal scores: the champion
        self.best_vector = candidates[winner].clone()
        self.best_fitness = float(scores[winner])
        metrics["champion_score"] = self.best_fitness
        metrics["best_fitness_ever"] = self.best_fitness
        metrics["evaluations"] += len(candidates) * o.select_episodes
        return int(result.env_steps)

    # -- the agent protocol -----------------------------------------------------------------
    def policy_vector(self) -> torch.Tensor:
        return self.best_vector.clone()

    def state_dict(self) -> dict[str, Any]:
        return {
            "population": self.population.clone(),
            "fitness": self.fitness.clone(),
            "stale": self.stale.clone(),
            "generator": self.generator.get_state(),
            "generation": self.generation,
            "obs_stats": None if self.obs_stats is None else self.obs_stats.to_tensors(),
            "best_vector": self.best_vector.clone(),
            "best_fitness": self.best_fitness,
            "generation_best": [self.generation_best[0].clone(), self.generation_best[1]],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.population = state["population"].clone()
        self.fitness = state["fitness"].clone()
        self.stale = state["stale"].clone()
        self.generator.set_state(state["generator"])
        self.generation = int(state["generation"])
        self.obs_stats = (
            RunningStats.from_tensors(state["obs_stats"]) if self.options.obs_norm else None
        )
        self.best_vector = state["best_vector"].clone()
        self.best_fitness = float(state["best_fitness"])
        vector, fit = state["generation_best"]
        self.generation_best = (vector.clone(), float(fit))
