"""Observation normalisation: running statistics against numpy, the merge across shards, and
the normaliser frozen within a generation (updated only between generations)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evolstm.agent import AgentContext
from evolstm.network.layout import PolicySpec, init_vector
from evolstm.network.obs_norm import RunningStats
from evolstm.rollouts.env_factory import resolve_env
from evolstm.rollouts.evaluation import (
    TRAIN_STREAM,
    EvaluationResult,
    PopulationEvaluator,
    _ObsSums,
    episode_seeds,
)
from evolstm.run.registry import available_agents
from evolstm.run.trainer import eval_seeds

CARTPOLE = resolve_env("evolstm/CartPoleNoVel-v0")


def _spec() -> PolicySpec:
    env = CARTPOLE.make()
    return PolicySpec(env.observation_space, env.action_space, hidden=4)


def _population(spec: PolicySpec, pop: int) -> torch.Tensor:
    base = init_vector(spec, torch.Generator().manual_seed(0))
    return base + torch.randn((pop, base.numel()), generator=torch.Generator().manual_seed(1))


def test_running_stats_equal_numpy_over_uneven_batches():
    rng = np.random.default_rng(0)
    data = rng.normal([3.0, -200.0, 0.001], [1.0, 50.0, 1e-4], size=(1000, 3))
    stats = RunningStats()
    for chunk in np.split(data, [1, 7, 300, 301, 999]):
        stats.update(chunk)
    assert stats.count == 1000
    np.testing.assert_allclose(stats.mean, data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.var, data.var(axis=0), rtol=1e-10)
    norm = stats.normalizer(clip=5.0)
    x = torch.as_tensor(data[:5], dtype=torch.float32)
    expected = np.clip((data[:5] - data.mean(0)) / np.sqrt(data.var(0) + 1e-8), -5, 5)
    np.testing.assert_allclose(norm(x).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_evaluator_statistics_are_those_of_the_observations_seen(monkeypatch):
    seen: list[np.ndarray] = []
    original = _ObsSums.add  # what the evaluator accumulates each step: rows of live slots
    monkeypatch.setattr(
        _ObsSums,
        "add",
        lambda s, x, alive: (seen.append(x.numpy()[alive].copy()), original(s, x, alive)),
    )
    spec = _spec()
    result = PopulationEvaluator(CARTPOLE, spec).evaluate(
        _population(spec, 5), [11, 12], collect_stats=True
    )
    everything = np.concatenate(seen).astype(np.float64)
    assert everything.shape[0] == result.env_steps, "one row per env step of a live slot"
    np.testing.assert_allclose(result.obs_stats.mean, everything.mean(0), rtol=1e-10)
    np.testing.assert_allclose(result.obs_stats.var, everything.var(0), rtol=1e-9)


def test_shard_statistics_merge_to_the_whole_populations():
    spec = _spec()
    vectors, seeds = _population(spec, 7), [3, 4, 5]
    evaluator = PopulationEvaluator(CARTPOLE, spec)
    whole = evaluator.evaluate(vectors, seeds, collect_stats=True)
    parts = [evaluator.evaluate(v, seeds, collect_stats=True) for v in (vectors[:3], vectors[3:])]
    joined = EvaluationResult.concatenate(parts)
    np.testing.assert_array_equal(joined.returns, whole.returns)
    assert joined.obs_stats.count == whole.obs_stats.count
    np.testing.assert_allclose(joined.obs_stats.mean, whole.obs_stats.mean, rtol=1e-12)
    np.testing.assert_allclose(joined.obs_stats.var, whole.obs_stats.var, rtol=1e-10)


class RecordingEvaluator(PopulationEvaluator):
    """Records the normaliser and seeds of each call and the statistics it returned."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.calls: list[tuple] = []

    def evaluate(self, vectors, seeds, *, obs_norm=None, collect_stats=False):
        before = None if obs_norm is None else obs_norm.mean.clone()
        result = super().evaluate(vectors, seeds, obs_norm=obs_norm, collect_stats=collect_stats)
        if obs_norm is not None:  # frozen: evaluating did not move it
            torch.testing.assert_close(obs_norm.mean, before, rtol=0, atol=0)
        self.calls.append((obs_norm, list(seeds), result.obs_stats))
        return result


@pytest.fixture(scope="module")
def pgpe_calls():
    spec = _spec()
    evaluator = RecordingEvaluator(CARTPOLE, spec)
    cls = available_agents()["pgpe"]
    agent = cls(cls.Options(popsize=4, episodes=2), AgentContext(spec, 9, evaluator, None))
    for _ in range(4):
        agent.step()
    return evaluator.calls


def test_each_generation_uses_the_statistics_of_the_generations_before_it(pgpe_calls):
    assert pgpe_calls[0][0] is None, "no statistics before the first generation"
    merged = RunningStats()
    for generation, (obs_norm, _, stats) in enumerate(pgpe_calls):
        if generation > 0:
            expected = merged.normalizer()
            torch.testing.assert_close(obs_norm.mean, expected.mean, rtol=0, atol=0)
            torch.testing.assert_close(obs_norm.std, expected.std, rtol=0, atol=0)
        merged.merge(stats)


def test_training_seeds_follow_episode_seeds_and_never_meet_held_out_ones(pgpe_calls):
    for generation, (_, seeds, _) in enumerate(pgpe_calls):
        assert seeds == episode_seeds(9, TRAIN_STREAM, generation, 2)
    for run_seed in range(5):
        held_out = set(eval_seeds(run_seed, 64))
        training = {s for g in range(2000) for s in episode_seeds(run_seed, TRAIN_STREAM, g, 8)}
        assert len(training) > 15_900, "generations do not repeat their episodes"
        assert not training & held_out


def test_running_stats_as_tensors_round_trip_through_a_weights_only_file(tmp_path):
    stats = RunningStats()
    assert stats.to_tensors() is None and RunningStats.from_tensors(None).count == 0
    x = np.random.default_rng(0).normal(size=(50, 3))
    stats.update(x)
    torch.save(stats.to_tensors(), tmp_path / "s.pt")
    back = RunningStats.from_tensors(torch.load(tmp_path / "s.pt", weights_only=True))
    assert back.count == 50
    np.testing.assert_allclose(back.mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(back.var, x.var(axis=0), rtol=1e-12)
