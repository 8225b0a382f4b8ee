"""What the evaluator takes in and gives back besides returns: any tensor form of the
population gives the same result, and the observation statistics it collects are the
plain mean and variance of the observations its members saw."""

from __future__ import annotations

import numpy as np
import torch
from evotorch.tools.readonlytensor import as_read_only_tensor

from evolstm.network.layout import PolicySpec, init_vector
from evolstm.network.obs_norm import ObsNormalizer
from evolstm.network.policy import RecurrentPolicy
from evolstm.rollouts.env_factory import resolve_env
from evolstm.rollouts.evaluation import PopulationEvaluator, episode_seeds, plain_population

CARTPOLE = resolve_env("evolstm/CartPoleNoVel-v0")


def _setup(pop: int = 4):
    env = CARTPOLE.make()
    spec = PolicySpec(env.observation_space, env.action_space, hidden=8)
    base = init_vector(spec, torch.Generator().manual_seed(0))
    noise = torch.randn((pop, base.numel()), generator=torch.Generator().manual_seed(1))
    return spec, base + 0.5 * noise


def test_read_only_views_and_strided_populations_evaluate_as_plain_tensors():
    spec, vectors = _setup()
    seeds = episode_seeds(0, 0, 0, 2)
    evaluator = PopulationEvaluator(CARTPOLE, spec)
    plain = evaluator.evaluate(vectors, seeds)
    strided = torch.cat((vectors, vectors), dim=1)[:, : vectors.shape[1]]  # not contiguous
    assert not strided.is_contiguous()
    for form in (as_read_only_tensor(vectors), strided, vectors.double()):
        door = plain_population(form)
        assert type(door) is torch.Tensor and door.is_contiguous() and door.dtype == torch.float32
        result = evaluator.evaluate(form, seeds)
        np.testing.assert_array_equal(result.returns, plain.returns)


def test_collected_observation_statistics_are_those_of_the_observations_seen():
    spec, vectors = _setup(pop=3)
    seeds = episode_seeds(0, 0, 1, 2)
    norm = ObsNormalizer(torch.tensor([0.1, -0.2]), torch.tensor([0.5, 2.0]))
    result = PopulationEvaluator(CARTPOLE, spec).evaluate(
        vectors, seeds, obs_norm=norm, collect_stats=True
    )
    seen = []  # the raw observations each member acts on, one single env at a time
    for vector in vectors:
        policy = RecurrentPolicy(spec, vector, obs_norm=norm)
        for seed in seeds:
            env = CARTPOLE.make()
            obs, _ = env.reset(seed=int(seed))
            state, done = policy.init_state(1), False
            while not done:
                seen.append(np.asarray(obs, dtype=np.float64))
                action, state = policy.act(np.asarray(obs)[None], state)
                obs, _, term, trunc, _ = env.step(action[0])
                done = term or trunc
    seen_array = np.stack(seen)
    stats = result.obs_stats
    assert stats is not None and stats.count == len(seen) == result.env_steps
    np.testing.assert_allclose(stats.mean, seen_array.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats.var, seen_array.var(axis=0), rtol=1e-7, atol=1e-12)
