"""CoSyNE (agents/cosyne.py): the permutation keeps each weight's column of values, the
marking rule is the paper's formula, every episode played is counted, and the saved policy is
the winner of selection rounds on fresh episodes, not the best single training fitness."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from agents.cosyne import SELECT_STREAM, CoSyNE, mark_probability, permute_marked
from evolstm.agent import AgentContext
from evolstm.network.layout import PolicySpec
from evolstm.rollouts.env_factory import resolve_env
from evolstm.rollouts.evaluation import PopulationEvaluator, episode_seeds
from evolstm.run.checkpoint import save_checkpoint


class CountEpisodeSteps(gym.Wrapper):
    """Counts the steps and episodes started by a seeded ``reset`` (the episodes an evaluator
    plays); autoreset episodes, which the evaluator ignores, are not counted."""

    steps: ClassVar[int] = 0
    episodes: ClassVar[int] = 0

    def reset(self, *, seed: int | None = None, options: Any = None):
        self.counting = seed is not None
        CountEpisodeSteps.episodes += int(self.counting)
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        out = self.env.step(action)
        if self.counting:
            CountEpisodeSteps.steps += 1
            self.counting = not (out[2] or out[3])
        return out


COUNTED = resolve_env("evolstm/CartPoleNoVel-v0", wrappers=[f"{__name__}:CountEpisodeSteps"])


def _cosyne(factory, seed: int = 0, **options) -> tuple[CoSyNE, PopulationEvaluator]:
    env = factory.make()
    spec = PolicySpec(env.observation_space, env.action_space, hidden=4)
    evaluator = PopulationEvaluator(factory, spec)
    ctx = AgentContext(spec, seed, evaluator, factory.make_vector)
    return CoSyNE(CoSyNE.Options(**options), ctx), evaluator


def test_marking_probability_is_the_papers_formula_on_a_hand_example():
    # f = 10, 4, 0 with n = 4 weights: normalised 1, 0.4, 0 -> 1 - u ** (1/4)
    p = mark_probability(torch.tensor([10.0, 4.0, 0.0]), 4)
    fourth_root = math.sqrt(math.sqrt(0.4))  # 0.7952707...
    torch.testing.assert_close(p, torch.tensor([0.0, 1 - fourth_root, 1.0], dtype=torch.float64))
    # so a network keeps all 4 weights with probability equal to its normalised fitness
    assert math.isclose(float((1 - p[1]) ** 4), 0.4, rel_tol=1e-12)
    assert mark_probability(torch.full((5,), 3.0), 7).eq(0).all()  # no network is worse


def test_permutation_stays_within_each_column_and_moves_only_marked_values():
    g = torch.Generator().manual_seed(0)
    pop = torch.arange(60, dtype=torch.float32).reshape(12, 5)  # distinct values
    marks = torch.rand(12, 5, generator=g) < 0.5
    out = permute_marked(pop, marks, torch.Generator().manual_seed(1))
    for j in range(5):
        col, new, m = pop[:, j], out[:, j], marks[:, j]
        assert torch.equal(torch.sort(new).values, col), "the column's multiset is kept"
        assert torch.equal(new[~m], col[~m]), "unmarked values stay in place"
        assert set(new[m].tolist()) == set(col[m].tolist()), "marked values swap among marked"
    moved = (out != pop) & marks
    assert moved.any()  # and it does permute (5 columns of ~6 marked values)
    everything = permute_marked(pop, torch.ones_like(marks), torch.Generator().manual_seed(2))
    assert all(torch.equal(torch.sort(everything[:, j]).values, pop[:, j]) for j in range(5))


def test_counted_evaluations_and_env_steps_equal_the_episodes_actually_run():
    for reevaluate in (True, False):
        agent, _ = _cosyne(
            COUNTED,
            popsize=8,
            stdev_init=0.3,
            select_top=2,
            select_episodes=3,
            episodes=2,
            reevaluate=reevaluate,
        )
        CountEpisodeSteps.steps = CountEpisodeSteps.episodes = 0
        metrics = [agent.step() for _ in range(4)]
        assert sum(m["env_steps"] for m in metrics) == CountEpisodeSteps.steps > 0
        assert sum(m["evaluations"] for m in metrics) == CountEpisodeSteps.episodes
        networks = [m["members_evaluated"] for m in metrics]
        if reevaluate:  # popsize means the networks of every generation
            assert networks == [8, 8, 8, 8]
        else:  # the first generation all 8, then only the changed ones (the 4 children +)
            assert networks[0] == 8 and all(4 <= n < 8 for n in networks[1:]), networks


def test_the_best_network_survives_unchanged_and_the_population_stays_diverse():
    agent, _ = _cosyne(COUNTED, popsize=12, stdev_init=0.3, select_top=0, reevaluate=False)
    for _ in range(6):
        metrics = agent.step()
        best, _ = agent.generation_best
        assert (agent.population == best).all(dim=1).any(), "the best is never marked"
        assert metrics["distinct_networks"] == 12


def test_state_is_data_and_resumes_exactly(tmp_path):
    agent, _ = _cosyne(COUNTED, seed=3, popsize=8, stdev_init=0.2, select_top=2)
    agent.step()
    path = save_checkpoint(tmp_path, 1, {"agent": agent.state_dict()})  # refuses non-data
    state = torch.load(path, weights_only=True)
    twin, _ = _cosyne(COUNTED, seed=3, popsize=8, stdev_init=0.2, select_top=2)
    twin.load_state_dict(state["agent"])
    for _ in range(2):
        a, b = agent.step(), twin.step()
        assert a == b
    torch.testing.assert_close(agent.policy_vector(), twin.policy_vector(), rtol=0, atol=0)


def test_the_saved_policy_wins_a_selection_round_on_fresh_episodes():
    factory = resolve_env("evolstm/CartPoleNoVel-v0")
    agent, evaluator = _cosyne(factory, popsize=8, stdev_init=0.3, select_top=3)
    for _ in range(3):
        champion, defends = agent.policy_vector(), np.isfinite(agent.best_fitness)
        population, generation = agent.population.clone(), agent.generation
        agent.step()
        fitness = agent.generation_fitness.numpy()
        top = population[np.argsort(-fitness, kind="stable")[:3]]
        candidates = torch.cat((champion[None], top)) if defends else top
        seeds = episode_seeds(0, SELECT_STREAM, generation, 8)
        norm = agent.obs_normalizer()
        scores = evaluator.evaluate(candidates, seeds, obs_norm=norm).mean_returns
        winner = candidates[int(np.argmax(scores))]
        torch.testing.assert_close(agent.policy_vector(), winner, rtol=0, atol=0)
        assert agent.best_fitness == scores.max()


def test_a_tie_at_the_top_names_a_network_evaluated_in_this_generation():
    """Every network scores the same (a capped fitness, as double pole's 1,000 steps): the old
    best keeps its fitness without re-evaluation, but the generation's best must be one of the
    networks the evaluator ran in this generation, so the bench tests a new one."""
    batches = []

    class Flat(PopulationEvaluator):
        def evaluate(self, vectors, seeds, **kwargs):
            batches.append(vectors.clone())
            result = super().evaluate(vectors, seeds, **kwargs)
            result.returns = np.ones_like(result.returns)
            return result

    env = COUNTED.make()
    spec = PolicySpec(env.observation_space, env.action_space, hidden=2)
    ctx = AgentContext(spec, 0, Flat(COUNTED, spec), None)
    agent = CoSyNE(CoSyNE.Options(popsize=8, select_top=0, reevaluate=False), ctx)
    agent.step()
    first_best, _ = agent.generation_best
    for _ in range(2):
        agent.step()
        best, fitness = agent.generation_best
        assert fitness == 1.0
        # all tie, so nothing is marked: the survivors (the old best first) keep their
        # fitness and are not run again; only the 4 children are, and the best is one of them
        assert batches[-1].shape[0] == 4
        assert (batches[-1] == best).all(dim=1).any()
        assert not torch.equal(best, first_best)
