"""Joining an existing Ray cluster (``ray start --head``, then ``--ray-address host:port``)
gives the same fitnesses as the in-process evaluator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evolstm.network.layout import PolicySpec, init_vector
from evolstm.rollouts.env_factory import resolve_env
from evolstm.rollouts.evaluation import PopulationEvaluator, episode_seeds
from tests.ray_processes import RAY_CLI, ray_head, wait_until_up

ray = pytest.importorskip("ray")


@pytest.fixture
def own_head():
    """A Ray head of this test's own (``tests/ray_processes.py``): stopped by killing its
    process group, never by ``ray stop``."""
    if ray.is_initialized():
        ray.shutdown()
    if not RAY_CLI.exists():
        pytest.skip("the ray command is not installed next to this Python")
    with ray_head(num_cpus=2, dashboard=False) as head:
        wait_until_up(head)
        try:
            yield head.address
        finally:
            if ray.is_initialized():
                ray.shutdown()


def test_joining_a_running_cluster_gives_the_same_fitnesses(own_head):
    from evolstm.rollouts.ray_evaluator import RayEvaluator

    factory = resolve_env("evolstm/CartPoleNoVel-v0")
    env = factory.make()
    spec = PolicySpec(env.observation_space, env.action_space, hidden=8)
    base = init_vector(spec, torch.Generator().manual_seed(0))
    vectors = base + 0.5 * torch.randn(
        (6, base.numel()), generator=torch.Generator().manual_seed(4)
    )
    seeds = episode_seeds(5, 0, 0, 3)
    expected = PopulationEvaluator(factory, spec).evaluate(vectors, seeds)
    remote = RayEvaluator(factory, spec, num_workers=2, address=own_head)
    try:
        assert ray.get_runtime_context().gcs_address.endswith(own_head.split(":")[1])
        result = remote.evaluate(vectors, seeds)
    finally:
        remote.close()
    assert not ray.is_initialized(), "the evaluator disconnects the driver it connected"
    np.testing.assert_array_equal(result.returns, expected.returns)
