"""The population evaluator against a plain loop over single envs and single policies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evolstm.network.layout import PolicySpec, init_vector
from evolstm.network.policy import RecurrentPolicy
from evolstm.rollouts.env_factory import EnvFactory, resolve_env
from evolstm.rollouts.evaluation import PopulationEvaluator, episode_seeds

CARTPOLE = resolve_env("evolstm/CartPoleNoVel-v0")
CUE = resolve_env("tests.fixture_envs:CueRecallEnv", {"delay": 2})


def _population(spec: PolicySpec, pop: int, scale: float = 1.0) -> torch.Tensor:
    base = init_vector(spec, torch.Generator().manual_seed(0))
    noise = torch.randn((pop, base.numel()), generator=torch.Generator().manual_seed(1))
    return base + scale * noise


def _reference_returns(factory: EnvFactory, spec: PolicySpec, vectors, seeds):
    """One single env and one single policy at a time: the plainest possible rollout."""
    returns = np.zeros((len(vectors), len(seeds)))
    lengths = np.zeros((len(vectors), len(seeds)), dtype=int)
    for p, vector in enumerate(vectors):
        policy = RecurrentPolicy(spec, vector)
        for e, seed in enumerate(seeds):
            env = factory.make()
            obs, _ = env.reset(seed=int(seed))
            state = policy.init_state(1)
            done = False
            while not done:
                batch = np.asarray(obs)[None]
                action, state = policy.act(batch, state)
                obs, reward, term, trunc, _ = env.step(action[0])
                returns[p, e] += reward
                lengths[p, e] += 1
                done = term or trunc
    return returns, lengths


def _spec(factory: EnvFactory) -> PolicySpec:
    env = factory.make()
    return PolicySpec(env.observation_space, env.action_space, hidden=8)


@pytest.mark.parametrize("factory", [CARTPOLE, CUE], ids=["native", "sync-vector"])
def test_evaluator_matches_single_env_loop(factory):
    spec = _spec(factory)
    vectors = _population(spec, pop=5, scale=0.5)
    seeds = episode_seeds(0, 0, 0, 3)
    evaluator = PopulationEvaluator(factory, spec)
    result = evaluator.evaluate(vectors, seeds)
    ref_returns, ref_lengths = _reference_returns(factory, spec, vectors, seeds)
    np.testing.assert_allclose(result.returns, ref_returns, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(result.lengths, ref_lengths)
    assert result.env_steps == ref_lengths.sum()
    assert len(set(result.mean_returns.round(6))) > 1, "members should differ"


def test_common_random_numbers_and_moving_seeds():
    spec = _spec(CARTPOLE)
    one = _population(spec, pop=1, scale=0.5)
    clones = one.repeat(4, 1)
    evaluator = PopulationEvaluator(CARTPOLE, spec)
    seeds = episode_seeds(7, 0, 0, 5)
    result = evaluator.evaluate(clones, seeds)
    assert (result.returns == result.returns[0]).all(), "identical members, identical episodes"
    assert len(set(result.returns[0])) > 1, "episodes within a generation differ"
    assert episode_seeds(7, 0, 1, 5) != seeds and episode_seeds(7, 1, 0, 5) != seeds
    assert episode_seeds(7, 0, 0, 5) == seeds


def test_success_is_reported_and_short_episodes_stop_counting():
    spec = _spec(CUE)
    vectors = _population(spec, pop=3)
    result = PopulationEvaluator(CUE, spec).evaluate(vectors, list(range(8)))
    assert result.successes is not None and result.successes.shape == (3, 8)
    assert (result.lengths == 3).all()
    np.testing.assert_array_equal(result.returns, result.successes.astype(float))
