"""A built-in task wrapped in wrappers that have a vector form keeps its native vector env
(with the vector wrappers) and gives exactly what the SyncVectorEnv path gives."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from gymnasium.vector import SyncVectorEnv

from envs.cartpole import CartPoleNoVelVectorEnv
from envs.pendulum import PendulumNoVelVectorEnv
from envs.wrappers import VectorFlickerObservation, VectorObservationNoise
from evolstm.network.layout import PolicySpec, init_vector
from evolstm.rollouts.env_factory import EnvFactory, resolve_env
from evolstm.rollouts.evaluation import PopulationEvaluator, episode_seeds
from tests.env_checks import assert_native_matches_sync

WRAPPED = resolve_env(
    "evolstm/CartPoleNoVel-v0",
    wrappers=[
        {"path": "envs.wrappers:FlickerObservation", "kwargs": {"p": 0.3}},
        {"path": "envs.wrappers:ObservationNoise", "kwargs": {"std": 0.05}},
    ],
)


@dataclasses.dataclass
class SyncOnly(EnvFactory):
    """The same task and wrappers, forced onto gymnasium's SyncVectorEnv (the reference)."""

    def sync_reason(self) -> str | None:
        return "forced by the test"


def _sync(factory: EnvFactory) -> SyncOnly:
    return SyncOnly(**dataclasses.asdict(factory))


def test_own_wrappers_keep_the_native_env_and_equal_the_sync_path():
    vec = WRAPPED.make_vector(6)
    assert WRAPPED.sync_reason() is None
    assert isinstance(vec, VectorObservationNoise) and isinstance(vec.env, VectorFlickerObservation)
    assert isinstance(vec.unwrapped, CartPoleNoVelVectorEnv)
    sync = _sync(WRAPPED).make_vector(6)
    assert isinstance(sync, SyncVectorEnv)
    rng = np.random.default_rng(0)
    assert_native_matches_sync(vec, sync, list(range(10, 16)), rng.integers(0, 2, (300, 6)))

    env = WRAPPED.make()
    spec = PolicySpec(env.observation_space, env.action_space, hidden=8)
    base = init_vector(spec, torch.Generator().manual_seed(0))
    vectors = base + 0.5 * torch.randn(
        (5, base.numel()), generator=torch.Generator().manual_seed(1)
    )
    seeds = episode_seeds(0, 0, 0, 3)
    native = PopulationEvaluator(WRAPPED, spec).evaluate(vectors, seeds, collect_stats=True)
    reference = PopulationEvaluator(_sync(WRAPPED), spec).evaluate(vectors, seeds)
    np.testing.assert_array_equal(native.returns, reference.returns)
    np.testing.assert_array_equal(native.lengths, reference.lengths)


def test_gymnasium_stateless_wrappers_keep_the_native_env():
    factory = resolve_env(
        "evolstm/PendulumNoVel-v0",
        wrappers=[{"path": "gymnasium.wrappers:ClipAction"}],
    )
    vec = factory.make_vector(4)
    assert isinstance(vec.unwrapped, PendulumNoVelVectorEnv)
    rng = np.random.default_rng(1)
    actions = rng.uniform(-4, 4, (50, 4, 1)).astype(np.float32)
    assert_native_matches_sync(vec, _sync(factory).make_vector(4), 7, actions)


def test_a_wrapper_without_vector_form_falls_back_and_says_why():
    factory = resolve_env(
        "evolstm/CartPoleNoVel-v0", wrappers=["gymnasium.wrappers:RecordEpisodeStatistics"]
    )
    assert isinstance(factory.make_vector(2), SyncVectorEnv)
    assert "'gymnasium.wrappers:RecordEpisodeStatistics' has no vector form" in (
        factory.sync_reason() or ""
    )
