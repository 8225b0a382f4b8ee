"""CoSyNE, corrected: every evaluation's env steps are counted, and the saved policy is the
winner of selection rounds on fresh episodes, not the best single training fitness."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from agents.es import SELECT_STREAM, CoSyNE
from evolstm.agent import AgentContext
from evolstm.network.layout import PolicySpec
from evolstm.rollouts.env_factory import resolve_env
from evolstm.rollouts.evaluation import PopulationEvaluator, episode_seeds


class CountEpisodeSteps(gym.Wrapper):
    """Counts the steps of episodes started by a seeded ``reset`` (the episodes an evaluator
    plays); the steps of autoreset episodes, which the evaluator ignores, are not counted."""

    steps: ClassVar[int] = 0

    def reset(self, *, seed: int | None = None, options: Any = None):
        self.counting = seed is not None
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        out = self.env.step(action)
        if self.counting:
            CountEpisodeSteps.steps += 1
            self.counting = not (out[2] or out[3])
        return out


COUNTED = resolve_env("evolstm/CartPoleNoVel-v0", wrappers=[f"{__name__}:CountEpisodeSteps"])


def _cosyne(factory, **options) -> tuple[CoSyNE, PopulationEvaluator]:
    env = factory.make()
    spec = PolicySpec(env.observation_space, env.action_space, hidden=4)
    evaluator = PopulationEvaluator(factory, spec)
    agent = CoSyNE(CoSyNE.Options(**options), AgentContext(spec, 0, evaluator, factory.make_vector))
    return agent, evaluator


def test_reported_env_steps_equal_the_steps_taken():
    agent, _ = _cosyne(COUNTED, popsize=8, stdev_init=0.3, select_top=2, select_episodes=3)
    CountEpisodeSteps.steps = 0
    reported, evaluated = [], []
    for _ in range(3):
        metrics = agent.step()
        reported.append(metrics["env_steps"])
        evaluated.append(metrics["members_evaluated"])
    assert sum(reported) == CountEpisodeSteps.steps > 0
    # popsize 8: 0 elites + 2 * 2 children + 8 permuted; the first generation also its 8.
    assert evaluated == [20, 12, 12]


def test_the_saved_policy_wins_a_selection_round_on_fresh_episodes():
    factory = resolve_env("evolstm/CartPoleNoVel-v0")
    agent, evaluator = _cosyne(factory, popsize=8, stdev_init=0.3, select_top=3)
    for _ in range(3):
        champion, defends = agent.policy_vector(), np.isfinite(agent.best_fitness)
        agent.step()
        values = agent.problem.last_values
        fitness = agent.problem.last_result.mean_returns
        top = values[np.argsort(-fitness, kind="stable")[:3]]
        candidates = torch.cat((champion[None], top)) if defends else top
        seeds = episode_seeds(0, SELECT_STREAM, agent.problem.generation, 8)
        norm = agent.obs_normalizer()
        scores = evaluator.evaluate(candidates, seeds, obs_norm=norm).mean_returns
        winner = candidates[int(np.argmax(scores))]
        torch.testing.assert_close(agent.policy_vector(), winner, rtol=0, atol=0)
        assert agent.best_fitness == scores.max()
