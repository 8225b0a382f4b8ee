"""The Ray evaluator gives the same fitnesses as the in-process one and survives dead actors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evolstm.env_factory import EnvFactory, resolve_env
from evolstm.evaluation import PopulationEvaluator, episode_seeds
from evolstm.policy import PolicySpec, init_vector

ray = pytest.importorskip("ray")

CARTPOLE = resolve_env("evolstm/CartPoleNoVel-v0")
CUE = resolve_env("tests.fixture_envs:CueRecallEnv", {"delay": 2})


@pytest.fixture(scope="module")
def local_ray():
    from evolstm.ray_evaluator import connect_ray

    started = connect_ray("local")
    yield
    if started:
        ray.shutdown()


def _setup(factory: EnvFactory, pop: int):
    env = factory.make()
    spec = PolicySpec(env.observation_space, env.action_space, hidden=8)
    base = init_vector(spec, torch.Generator().manual_seed(0))
    noise = torch.randn((pop, base.numel()), generator=torch.Generator().manual_seed(2))
    return spec, base + 0.5 * noise


@pytest.mark.parametrize("factory", [CARTPOLE, CUE], ids=["native", "user-env"])
def test_same_fitness_with_and_without_ray(local_ray, factory):
    from evolstm.ray_evaluator import RayEvaluator

    spec, vectors = _setup(factory, pop=7)
    seeds = episode_seeds(3, 0, 0, 4)
    local = PopulationEvaluator(factory, spec).evaluate(vectors, seeds)
    remote = RayEvaluator(factory, spec, num_workers=2, address="local")
    try:
        sharded = remote.evaluate(vectors, seeds)
    finally:
        remote.close()
    np.testing.assert_array_equal(sharded.returns, local.returns)
    np.testing.assert_array_equal(sharded.lengths, local.lengths)
    assert sharded.env_steps == local.env_steps


def test_dead_actor_shard_is_rerun(local_ray):
    from evolstm.ray_evaluator import RayEvaluator

    spec, vectors = _setup(CARTPOLE, pop=6)
    seeds = episode_seeds(4, 0, 0, 2)
    expected = PopulationEvaluator(CARTPOLE, spec).evaluate(vectors, seeds)
    remote = RayEvaluator(CARTPOLE, spec, num_workers=2, address="local")
    try:
        ray.kill(remote.workers[0], no_restart=True)
        result = remote.evaluate(vectors, seeds)
    finally:
        remote.close()
    np.testing.assert_array_equal(result.returns, expected.returns)
