"""ESP: assembly, credit, burst mutation and a small learning run, against hand-made references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.esp import ESP, assemble, credit, subpopulations
from evolstm.agent import AgentContext
from evolstm.network.layout import PolicySpec, build_layout
from evolstm.rollouts.env_factory import resolve_env
from evolstm.rollouts.evaluation import PopulationEvaluator


def _esp(env_id: str, seed: int = 0, hidden: int = 3, cell: str = "lstm", **options):
    factory = resolve_env(env_id, options.pop("env_kwargs", {}))
    env = factory.make()
    spec = PolicySpec(env.observation_space, env.action_space, cell=cell, hidden=hidden)
    evaluator = PopulationEvaluator(factory, spec)
    ctx = AgentContext(spec, seed, evaluator, factory.make_vector)
    return ESP(ESP.Options(**options), ctx)


@pytest.mark.parametrize("cell", ["lstm", "peephole", "gru", "conv_peephole"])
def test_subpopulations_partition_the_vector(cell):
    env = resolve_env("evolstm/DoublePoleNoVel-v0").make()
    spec = PolicySpec(env.observation_space, env.action_space, cell=cell, hidden=3, layers=2)
    layout = build_layout(spec)
    subs = subpopulations(layout)
    counts = torch.zeros(layout.size, dtype=torch.long)
    for s in subs:
        counts[s.indices] += 1
    assert torch.equal(counts, torch.ones_like(counts))  # every parameter in exactly one
    assert len(subs) == 2 * 3 + 1  # one per cell of each layer + the readout bias
    # without the readout (Evolino): readout.W and readout.b belong to no chromosome
    ro = layout["readout.W"].offset
    assert all(int(s.indices.max()) < ro for s in subpopulations(layout, readout=False))


@pytest.mark.parametrize("trials", [1, 3, 10])
def test_assembly_gives_every_chromosome_the_configured_trials(trials):
    assignment = assemble(5, 8, trials, torch.Generator().manual_seed(trials))
    assert assignment.shape == (8 * trials, 5)
    for s in range(5):
        counts = torch.bincount(assignment[:, s], minlength=8)
        assert torch.all(counts >= trials), counts


def test_agent_assembles_each_chromosome_trials_times():
    agent = _esp("evolstm/DoublePoleNoVel-v0", subpop_size=8, trials=4)
    seen: list[torch.Tensor] = []
    original = agent.evaluate_networks

    def record(vectors):
        seen.append(vectors.clone())
        return original(vectors)

    agent.evaluate_networks = record
    population = [p.clone() for p in agent.population]
    agent.step()
    (vectors,) = seen
    assert vectors.shape[0] == 8 * 4  # ONE batch for the whole generation
    for s, sub in enumerate(agent.subpops):
        genes = vectors[:, sub.indices]
        for member in population[s]:
            assert int((genes == member).all(dim=1).sum()) >= 4


def test_credit_best_and_mean_against_a_loop():
    gen = torch.Generator().manual_seed(1)
    assignment = assemble(3, 4, 5, gen)
    fitness = torch.randn(20, generator=gen, dtype=torch.float64)
    best, mean = credit(fitness, assignment, 4, "best"), credit(fitness, assignment, 4, "mean")
    for s in range(3):
        for m in range(4):
            joined = fitness[assignment[:, s] == m]
            assert best[s, m] == joined.max()
            assert torch.isclose(mean[s, m], joined.mean())


def test_burst_mutation_fires_after_stagnation_and_recentres_on_best():
    agent = _esp("evolstm/DoublePoleNoVel-v0", subpop_size=8, trials=2, stagnation=3)
    fitness_seq = [5.0, 1.0, 1.0, 1.0, 1.0]
    calls = iter(fitness_seq)

    def fake_evaluate(vectors):
        f = torch.full((vectors.shape[0],), next(calls), dtype=torch.float64)
        f[7] += 0.5  # network 7 is the best of the generation
        return f, 10, vectors

    agent.evaluate_networks = fake_evaluate
    bursts = []
    for generation in range(4):
        metrics = agent.step()
        bursts.append(metrics["burst"])
        if generation == 0:
            best = [c.clone() for c in agent.best_chromosomes]
            assert agent.best_fitness == 5.5
    # generation 0 improves; 1, 2, 3 do not: the burst fires at the 3rd stagnant generation
    assert bursts == [0.0, 0.0, 0.0, 1.0]
    for s, pop in enumerate(agent.population):
        assert torch.equal(pop[0], best[s])  # member 0 is the best chromosome itself
        deviation = (pop[1:] - best[s]).abs()
        assert float(deviation.median()) < 3 * agent.options.burst_scale
        assert float(deviation.max()) > 0
    assert agent.since_improvement == 0


def test_state_dict_is_data_and_resumes_exactly(tmp_path):
    agent = _esp("evolstm/DoublePoleNoVel-v0", seed=2, subpop_size=8, trials=2)
    agent.step()
    state = agent.state_dict()
    path = tmp_path / "esp.pt"
    torch.save(state, path)
    loaded = torch.load(path, weights_only=True)
    twin = _esp("evolstm/DoublePoleNoVel-v0", seed=99, subpop_size=8, trials=2)
    twin.load_state_dict(loaded)
    a, b = agent.step(), twin.step()
    assert a == b
    assert torch.equal(agent.policy_vector(), twin.policy_vector())


def test_inactive_cell_outputs_exactly_zero():
    agent = _esp("evolstm/TMaze-v0", subpop_size=4, trials=1, initial_cells=2, hidden=3)
    vectors = agent.networks(assemble(len(agent.subpops), 4, 1, torch.Generator()))
    from evolstm.network.policy import PopulationPolicy, RecurrentCore

    core = RecurrentCore(agent.ctx.policy_spec)
    policy = PopulationPolicy(core, vectors)
    state = policy.init_state(1)
    x = torch.randn(4, 1, core.layout.layer_inputs[0])
    for _ in range(5):
        _, state = core.forward(policy.params, x, state)
    h, c = state[0]
    assert torch.all(h[..., 2] == 0) and torch.all(c[..., 2] == 0)
    assert torch.all(h[..., :2] != 0)


def test_esp_learns_the_tmaze():
    agent = _esp(
        "evolstm/TMaze-v0",
        seed=0,
        hidden=2,
        subpop_size=12,
        trials=4,
        episodes=16,
        env_kwargs={"length": 5},
    )
    for _ in range(60):
        metrics = agent.step()
        if metrics["best_fitness_ever"] >= 4.0:
            break
    evaluator = agent.ctx.evaluator
    result = evaluator.evaluate(agent.policy_vector()[None], list(range(100, 164)))
    # a memoryless policy succeeds in at most half of the episodes
    assert float(np.mean(result.successes)) == 1.0


@pytest.mark.parametrize("newest_best", [True, False])
def test_a_tie_with_the_best_replaces_the_policy_but_is_no_progress(newest_best):
    agent = _esp(
        "evolstm/DoublePoleNoVel-v0", subpop_size=8, trials=2, stagnation=5, newest_best=newest_best
    )
    winners = iter([3, 11])  # generation 0: network 3 reaches 1000; generation 1: network 11

    def capped(vectors):
        f = torch.zeros(vectors.shape[0], dtype=torch.float64)
        f[next(winners)] = 1000.0
        return f, 10, vectors

    agent.evaluate_networks = capped
    tested = []
    original = agent.networks

    def record(assignment):
        tested.append(original(assignment))
        return tested[-1]

    agent.networks = record
    agent.step()
    agent.step()
    expected = tested[1][11] if newest_best else tested[0][3]
    assert torch.equal(agent.policy_vector(), expected)
    assert agent.best_fitness == 1000.0
    assert agent.since_improvement == 1  # the tie did not count as progress


def test_generation_best_is_the_last_generations_best_even_below_the_record():
    """``generation_best`` (what bench/dpnv.py tests, as Gomez et al. test each generation's
    best) is the best network of the generation just run, also when it trails the record."""
    agent = _esp("evolstm/DoublePoleNoVel-v0", subpop_size=8, trials=2)
    fitnesses = iter([(5, 0.7), (9, 0.4)])  # generation 0: network 5 at 0.7; then 9 at 0.4

    def scripted(vectors):
        row, value = next(fitnesses)
        f = torch.zeros(vectors.shape[0], dtype=torch.float64)
        f[row] = value
        return f, 10, vectors

    agent.evaluate_networks = scripted
    tested = []
    original = agent.networks
    agent.networks = lambda assignment: tested.append(original(assignment)) or tested[-1]
    agent.step()
    assert torch.equal(agent.generation_best[0], tested[0][5])
    assert agent.generation_best[1] == 0.7
    agent.step()
    assert torch.equal(agent.generation_best[0], tested[1][9])
    assert agent.generation_best[1] == 0.4
    assert torch.equal(agent.policy_vector(), tested[0][5])  # the record stays the policy
    twin = _esp("evolstm/DoublePoleNoVel-v0", subpop_size=8, trials=2)
    twin.load_state_dict(agent.state_dict())
    assert torch.equal(twin.generation_best[0], tested[1][9])
    assert twin.generation_best[1] == 0.4
