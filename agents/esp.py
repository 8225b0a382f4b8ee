"""Enforced SubPopulations (ESP) over LSTM memory cells.

F. Gomez and R. Miikkulainen, "Incremental evolution of complex general behavior",
Adaptive Behavior 5, 1997, and "Solving non-Markovian control tasks with neuroevolution",
IJCAI 1999; applied to LSTM by F. Gomez and J. Schmidhuber, "Co-evolving recurrent neurons
learn deep memory POMDPs", GECCO 2005.

One subpopulation per memory cell. A chromosome is everything that belongs to that cell
(:meth:`evolstm.network.layout.ParameterLayout.unit_indices`: its weights into the cell input and
every gate, its peepholes, its biases, and the readout rows reading it); the parameters no
cell owns (the readout bias) form one more subpopulation. Each generation:

1. **Assembly.** ``trials`` rounds; in each round every subpopulation is shuffled and network
   ``j`` takes the ``j``-th chromosome of every subpopulation, so each chromosome joins
   exactly ``trials`` networks (``N = subpop_size * trials`` networks per generation).
2. **Evaluation.** All ``N`` networks go to the evaluator as ONE ``[N, D]`` batch (so Ray
   shards it like any other population); every network meets the same episode seeds.
3. **Credit.** A chromosome's fitness is the best (or mean, ``credit``) fitness of the
   networks it joined.
4. **Recombination.** In each subpopulation the top quarter mate with a random better-ranked
   (or equal) member of the top quarter by one-point crossover; the offspring replace the
   bottom half and get Cauchy mutation (each gene with probability ``mutation_rate``).
5. **Burst mutation.** After ``stagnation`` generations without a better network, every
   subpopulation is re-seeded around the best network's chromosome (that chromosome plus
   Cauchy noise of scale ``burst_scale``; member 0 keeps it exactly).
6. **Adapting the size** (``adapt_cells``). When ``bursts_before_resize`` bursts in a row
   brought no improvement, the best network is evaluated with each active cell lesioned; a
   cell whose loss costs nothing is removed, otherwise an inactive cell is added. The network
   shape (``policy.hidden``) stays fixed, so the evaluator and its Ray actors never change: an
   inactive cell has all its incoming parameters at zero, which keeps its state and output at
   exactly zero for every cell type (gates sigma(0), candidate tanh(0) = 0).

Written by hand: no maintained library has ESP (EvoTorch has CoSyNE, not ESP).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import pydantic
import torch

from evolstm.agent import Agent, AgentContext, AgentOptions
from evolstm.network.layout import ParameterLayout, build_layout
from evolstm.rollouts.evaluation import TRAIN_STREAM, episode_seeds


class ESPOptions(AgentOptions):
    """ESP's options (the keys under ``agent:``)."""

    subpop_size: int = pydantic.Field(
        20, ge=4, description="chromosomes per subpopulation (n); a multiple of 4 is natural"
    )
    trials: int = pydantic.Field(
        10, ge=1, description="networks each chromosome joins per generation (N = n * trials)"
    )
    episodes: int = pydantic.Field(1, ge=1, description="episodes per network per generation")
    credit: Literal["best", "mean"] = pydantic.Field(
        "best", description="chromosome fitness: best or mean fitness of the networks it joined"
    )
    init_range: float = pydantic.Field(
        1.0, gt=0, description="initial chromosomes are uniform in [-init_range, init_range]"
    )
    mutation_rate: float = pydantic.Field(
        0.4, ge=0, le=1, description="probability that an offspring gene gets Cauchy noise"
    )
    mutation_scale: float = pydantic.Field(
        0.3, gt=0, description="scale of the Cauchy mutation of offspring"
    )
    stagnation: int = pydantic.Field(
        20, ge=1, description="generations without a better network before a burst mutation"
    )
    burst_scale: float = pydantic.Field(
        0.3, gt=0, description="scale of the Cauchy noise a burst adds around the best chromosome"
    )
    adapt_cells: bool = pydantic.Field(
        False, description="add or remove a cell when bursts bring no improvement"
    )
    bursts_before_resize: int = pydantic.Field(
        2, ge=1, description="consecutive fruitless bursts before a cell is added or removed"
    )
    newest_best: bool = pydantic.Field(
        True,
        description="a network that ties the best fitness so far replaces the best network "
        "(the policy): with a capped fitness many networks tie at the cap",
    )
    initial_cells: int | None = pydantic.Field(
        None, ge=1, description="active cells at the start (None: all policy.hidden cells)"
    )


@dataclass(frozen=True)
class Subpopulation:
    """Where one subpopulation's chromosomes live in the flat vector.

    :param indices: flat parameter indices ``[K]`` of a chromosome.
    :param unit: ``(layer, cell)`` of a memory cell, ``None`` for the shared remainder.
    :param incoming: positions ``[K_in]`` within a chromosome that are the cell's own incoming
        parameters (zeroed while the cell is inactive).
    """

    indices: torch.Tensor
    unit: tuple[int, int] | None
    incoming: torch.Tensor


def subpopulations(layout: ParameterLayout, *, readout: bool = True) -> list[Subpopulation]:
    """One :class:`Subpopulation` per memory cell (all layers), then the remainder.

    :param readout: include the readout rows (and bias) in the chromosomes; Evolino computes
        the readout instead, so it passes ``False``.
    """
    ro = layout["readout.W"]
    ro_b = layout["readout.b"]
    readout_range = (ro.offset, ro_b.offset + ro_b.numel)
    out: list[Subpopulation] = []
    owned = torch.zeros(layout.size, dtype=torch.bool)
    for layer in range(len(layout.layer_inputs)):
        for unit in range(layout.hidden):
            idx = layout.unit_indices(layer, unit)
            is_readout = (idx >= readout_range[0]) & (idx < readout_range[1])
            owned[idx] = True
            if not readout:
                idx = idx[~is_readout]
                is_readout = is_readout[~is_readout]
            out.append(Subpopulation(idx, (layer, unit), torch.nonzero(~is_readout).flatten()))
    rest = torch.nonzero(~owned).flatten()
    if not readout:
        rest = rest[(rest < readout_range[0]) | (rest >= readout_range[1])]
    if rest.numel() > 0:
        out.append(Subpopulation(rest, None, torch.empty(0, dtype=torch.long)))
    return out


def assemble(
    num_subpops: int, subpop_size: int, trials: int, generator: torch.Generator
) -> torch.Tensor:
    """Which chromosome of each subpopulation every network takes: ``[N, S]`` member indices,
    ``N = subpop_size * trials``; each chromosome appears in exactly ``trials`` networks."""
    rounds = [
        torch.stack([torch.randperm(subpop_size, generator=generator) for _ in range(num_subpops)])
        for _ in range(trials)
    ]
    return torch.cat(rounds, dim=1).T.contiguous()


def credit(
    fitness: torch.Tensor, assignment: torch.Tensor, subpop_size: int, mode: str
) -> torch.Tensor:
    """Chromosome fitness ``[S, n]`` from network fitness ``[N]`` and ``assignment [N, S]``:
    the best (``"best"``) or mean (``"mean"``) fitness of the networks each one joined."""
    num_subpops = assignment.shape[1]
    flat = (assignment + torch.arange(num_subpops) * subpop_size).T.reshape(-1)  # [S * N]
    values = fitness.to(torch.float64).repeat(num_subpops)
    if mode == "best":
        out = torch.full((num_subpops * subpop_size,), -torch.inf, dtype=torch.float64)
        out.scatter_reduce_(0, flat, values, reduce="amax")
    else:
        out = torch.zeros(num_subpops * subpop_size, dtype=torch.float64)
        out.scatter_reduce_(0, flat, values, reduce="mean", include_self=False)
    return out.reshape(num_subpops, subpop_size)


def cauchy(shape: tuple[int, ...], scale: float, generator: torch.Generator) -> torch.Tensor:
    """Cauchy noise ``scale * tan(pi (u - 1/2))`` drawn from ``generator``."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    return (scale * torch.tan(torch.pi * (u - 0.5))).to(torch.float32)


def recombine(
    chromosomes: torch.Tensor,
    fitness: torch.Tensor,
    *,
    mutation_rate: float,
    mutation_scale: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """One subpopulation's next generation ``[n, K]`` from ``chromosomes [n, K]`` and their
    fitness ``[n]``: sorted best first; each of the top quarter mates with a random member
    of the top quarter ranked at least as high (one-point crossover, two children); the
    children replace the bottom half and get Cauchy mutation."""
    n, k = chromosomes.shape
    ranked = chromosomes[torch.argsort(fitness, descending=True, stable=True)].clone()
    quarter = max(1, n // 4)
    children = []
    for i in range(quarter):
        mate = int(torch.randint(0, i + 1, (1,), generator=generator))
        if mate == i and i > 0:
            mate = int(torch.randint(0, i, (1,), generator=generator))
        cut = int(torch.randint(0, k + 1, (1,), generator=generator))
        a, b = ranked[i], ranked[mate]
        children.append(torch.cat([a[:cut], b[cut:]]))
        children.append(torch.cat([b[:cut], a[cut:]]))
    kids = torch.stack(children)[: n - n // 2]
    mask = torch.rand(kids.shape, generator=generator) < mutation_rate
    kids = kids + mask * cauchy(tuple(kids.shape), mutation_scale, generator)
    ranked[n - kids.shape[0] :] = kids
    return ranked


class ESP(Agent):
    """Enforced SubPopulations: one subpopulation per LSTM memory cell (Gomez & Schmidhuber
    2005), assembled networks evaluated as one batch, burst mutation on stagnation."""

    family: ClassVar[Literal["es"]] = "es"
    Options: ClassVar[type[AgentOptions]] = ESPOptions
    # Evolino computes the readout; ESP evolves it as part of each cell's chromosome.
    evolve_readout: ClassVar[bool] = True

    def __init__(self, options: ESPOptions, ctx: AgentContext) -> None:
        super().__init__(options, ctx)
        self.layout = build_layout(ctx.policy_spec)
        self.subpops = subpopulations(self.layout, readout=self.evolve_readout)
        self.generator = torch.Generator().manual_seed(ctx.seed)
        n = options.subpop_size
        self.population = [
            (torch.rand(n, s.indices.numel(), generator=self.generator) * 2 - 1)
            * options.init_range
            for s in self.subpops
        ]
        units = [s for s in self.subpops if s.unit is not None]
        self.active = [True] * len(self.subpops)
        if options.initial_cells is not None:
            if options.initial_cells > len(units):
                from evolstm.errors import ConfigError

                raise ConfigError(
                    f"agent.initial_cells={options.initial_cells}: more than the "
                    f"{len(units)} cells of the policy (policy.hidden x policy.layers)"
                )
            for i in range(options.initial_cells, len(units)):
                self.active[i] = False
        self.generation = 0
        self.best_fitness = -float("inf")
        self.best_vector = self._blank_vector()
        self.best_chromosomes = [p[0].clone() for p in self.population]
        # the last generation's best network and its fitness (Gomez et al. test each
        # generation's best; with a fitness that is not capped it can trail the record)
        self.generation_best: tuple[torch.Tensor, float] = (self.best_vector.clone(), -torch.inf)
        self.since_improvement = 0
        self.fruitless_bursts = 0
        self.bursts = 0

    # -- hooks Evolino overrides ------------------------------------------------------------
    def _blank_vector(self) -> torch.Tensor:
        """The flat vector ``[D]`` that assembled chromosomes are written into."""
        return torch.zeros(self.layout.size)

    def evaluate_networks(self, vectors: torch.Tensor) -> tuple[torch.Tensor, int, torch.Tensor]:
        """Fitness ``[N]`` (maximised) of networks ``[N, D]``, env steps taken, and the
        vectors as evaluated (Evolino fills in the computed readout)."""
        seeds = episode_seeds(self.ctx.seed, TRAIN_STREAM, self.generation, self.options.episodes)
        result = self.ctx.evaluator.evaluate(vectors, seeds)
        return torch.as_tensor(result.mean_returns, dtype=torch.float64), result.env_steps, vectors

    # -- the generation ---------------------------------------------------------------------
    def assign(self) -> torch.Tensor:
        """This generation's networks as member indices ``[N, S]`` (:func:`assemble`)."""
        o: ESPOptions = self.options  # type: ignore[assignment]
        return assemble(len(self.subpops), o.subpop_size, o.trials, self.generator)

    def _chromosomes(self, s: int, members: torch.Tensor) -> torch.Tensor:
        genes = self.population[s][members]
        if not self.active[s]:
            genes = genes.clone()
            genes[:, self.subpops[s].incoming] = 0.0
        return genes

    def networks(self, assignment: torch.Tensor) -> torch.Tensor:
        """Flat vectors ``[N, D]`` of the networks ``assignment [N, S]`` describes."""
        vectors = self._blank_vector().repeat(assignment.shape[0], 1)
        for s, sub in enumerate(self.subpops):
            vectors[:, sub.indices] = self._chromosomes(s, assignment[:, s])
        return vectors

    def step(self) -> dict[str, float]:
        o: ESPOptions = self.options  # type: ignore[assignment]
        assignment = self.assign()
        fitness, env_steps, evaluated = self.evaluate_networks(self.networks(assignment))
        # With ``newest_best`` a network of this generation that ties the best fitness so far
        # replaces the best network: with a capped fitness (1,000 steps balanced) many
        # networks tie at the cap, and keeping the first one would freeze the policy on that
        # early, often brittle network (double pole: it generalised to 3 of 625 starts), where
        # Gomez et al. test each generation's best. Only a strictly better fitness counts as
        # progress for burst mutation.
        best = int(torch.argmax(fitness))
        self.generation_best = (evaluated[best].clone(), float(fitness[best]))
        improved = bool(fitness[best] > self.best_fitness)
        if improved or (o.newest_best and fitness[best] == self.best_fitness):
            self.best_fitness = float(fitness[best])
            self.best_vector = evaluated[best].clone()
            self.best_chromosomes = [
                self.population[s][assignment[best, s]].clone() for s in range(len(self.subpops))
            ]
        if improved:
            self.since_improvement = 0
            self.fruitless_bursts = 0
        else:
            self.since_improvement += 1
        scores = credit(fitness, assignment, o.subpop_size, o.credit)
        for s in range(len(self.subpops)):
            self.population[s] = recombine(
                self.population[s],
                scores[s],
                mutation_rate=o.mutation_rate,
                mutation_scale=o.mutation_scale,
                generator=self.generator,
            )
        burst = self.since_improvement >= o.stagnation
        resized = 0.0
        if burst:
            self.fruitless_bursts += 1
            if o.adapt_cells and self.fruitless_bursts > o.bursts_before_resize:
                resized, lesion_steps = self._resize()
                env_steps += lesion_steps
                self.fruitless_bursts = 0
            self.burst_mutation()
        self.generation += 1
        evaluations = fitness.numel() * o.episodes
        return {
            "env_steps": float(env_steps),
            "evaluations": float(evaluations),
            "return_mean": float(fitness.mean()),
            "return_max": float(fitness.max()),
            "return_min": float(fitness.min()),
            "best_fitness_ever": self.best_fitness,
            "burst": float(burst),
            "bursts": float(self.bursts),
            "resized": resized,
            "active_cells": float(self.active_cells()),
        }

    def active_cells(self) -> int:
        """How many memory cells are active (see ``adapt_cells``)."""
        units = [i for i, s in enumerate(self.subpops) if s.unit is not None]
        return sum(self.active[i] for i in units)

    def burst_mutation(self) -> None:
        """Re-seed every subpopulation around the best network's chromosome: member 0 is that
        chromosome, the others add Cauchy noise of scale ``burst_scale``."""
        o: ESPOptions = self.options  # type: ignore[assignment]
        for s, best in enumerate(self.best_chromosomes):
            noise = cauchy((o.subpop_size, best.numel()), o.burst_scale, self.generator)
            noise[0] = 0.0
            self.population[s] = best.unsqueeze(0) + noise
        self.since_improvement = 0
        self.bursts += 1

    def _resize(self) -> tuple[float, int]:
        """Lesion test on the best network: remove a cell whose loss costs nothing, else add
        one. Returns (+1 added / -1 removed / 0, env steps of the lesion test)."""
        cells = [i for i, s in enumerate(self.subpops) if s.unit is not None and self.active[i]]
        if len(cells) > 1:
            lesioned = self.best_vector.repeat(len(cells), 1)
            for row, i in enumerate(cells):
                sub = self.subpops[i]
                lesioned[row, sub.indices[sub.incoming]] = 0.0
            fitness, env_steps, _ = self.evaluate_networks(lesioned)
            row = int(torch.argmax(fitness))
            if float(fitness[row]) >= self.best_fitness:
                self.active[cells[row]] = False
                return -1.0, env_steps
        else:
            env_steps = 0
        inactive = [
            i for i, s in enumerate(self.subpops) if s.unit is not None and not self.active[i]
        ]
        if inactive:
            i = inactive[0]
            self.active[i] = True
            o: ESPOptions = self.options  # type: ignore[assignment]
            self.population[i] = (
                torch.rand(self.population[i].shape, generator=self.generator) * 2 - 1
            ) * o.init_range
            self.best_chromosomes[i] = self.population[i][0].clone()
            return 1.0, env_steps
        return 0.0, env_steps

    # -- the agent protocol -----------------------------------------------------------------
    def policy_vector(self) -> torch.Tensor:
        return self.best_vector.clone()

    def state_dict(self) -> dict[str, Any]:
        return {
            "population": [p.clone() for p in self.population],
            "active": list(self.active),
            "generator": self.generator.get_state(),
            "generation": self.generation,
            "best_fitness": self.best_fitness,
            "best_vector": self.best_vector.clone(),
            "best_chromosomes": [c.clone() for c in self.best_chromosomes],
            "generation_best": [self.generation_best[0].clone(), self.generation_best[1]],
            "since_improvement": self.since_improvement,
            "fruitless_bursts": self.fruitless_bursts,
            "bursts": self.bursts,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.population = [p.clone() for p in state["population"]]
        self.active = [bool(a) for a in state["active"]]
        self.generator.set_state(state["generator"])
        self.generation = int(state["generation"])
        self.best_fitness = float(state["best_fitness"])
        self.best_vector = state["best_vector"].clone()
        self.best_chromosomes = [c.clone() for c in state["best_chromosomes"]]
        vector, fit = state.get("generation_best", (self.best_vector, -torch.inf))
        self.generation_best = (vector.clone(), float(fit))
        self.since_improvement = int(state["since_improvement"])
        self.fruitless_bursts = int(state["fruitless_bursts"])
        self.bursts = int(state["bursts"])
