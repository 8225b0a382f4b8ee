"""Faults that must lose nothing: SIGKILL mid-checkpoint, constant fitness, NaN penalties,
episodes that never end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import torch

from evolstm.agent import AgentContext
from evolstm.network.layout import PolicySpec, init_vector
from evolstm.rollouts import env_factory
from evolstm.rollouts.env_factory import resolve_env
from evolstm.rollouts.evaluation import EvaluationResult, PopulationEvaluator, apply_nan_penalty
from evolstm.run.checkpoint import load_checkpoint
from evolstm.run.registry import available_agents


def _faulty(**kwargs):
    factory = resolve_env("tests.fault_envs:FaultyEnv", kwargs)
    env = factory.make()
    return factory, PolicySpec(env.observation_space, env.action_space, hidden=4)


def _population(spec, pop: int) -> torch.Tensor:
    base = init_vector(spec, torch.Generator().manual_seed(0))
    return base + 2 * torch.randn((pop, base.numel()), generator=torch.Generator().manual_seed(3))


def test_sigkill_while_writing_a_checkpoint_leaves_the_previous_one_loadable(tmp_path):
    script = textwrap.dedent(
        f"""
        import pathlib, time, torch
        from evolstm.run import checkpoint
        run = pathlib.Path({str(tmp_path)!r})
        checkpoint.save_checkpoint(run, 1, {{"agent": {{"w": torch.ones(3)}}, "iteration": 1}})
        real_save = torch.save
        def slow_save(obj, path):  # write half a file, say so, then stall until killed
            real_save(obj, path)
            data = pathlib.Path(path).read_bytes()
            pathlib.Path(path).write_bytes(data[: len(data) // 2])
            (run / "writing").touch()
            time.sleep(60)
        torch.save = slow_save
        checkpoint.save_checkpoint(run, 2, {{"agent": {{"w": torch.zeros(3)}}, "iteration": 2}})
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "writing").exists():
            assert child.poll() is None and time.monotonic() < deadline, "child never wrote"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    loaded = load_checkpoint(tmp_path)
    assert loaded["iteration"] == 1
    torch.testing.assert_close(loaded["agent"]["w"], torch.ones(3))
    assert not (tmp_path / "checkpoints" / "ckpt-000002.pt").exists()


@pytest.mark.parametrize("name", ["cem", "cmaes", "cosyne", "pgpe", "snes", "xnes"])
def test_constant_fitness_and_ties_keep_every_searcher_finite(name):
    factory, spec = _faulty(mode="constant")
    cls = available_agents()[name]
    ctx = AgentContext(spec, 0, PopulationEvaluator(factory, spec), factory.make_vector)
    agent = cls(cls.Options(popsize=6), ctx)
    for _ in range(3):
        metrics = agent.step()
        assert metrics["return_min"] == metrics["return_max"] == 10.0
    assert torch.isfinite(agent.policy_vector()).all()
    assert all(np.isfinite(v) for v in metrics.values())


def test_penalized_episodes_score_as_the_evaluations_worst_return():
    factory, spec = _faulty(mode="nan_reward", only_action=1, at_step=4)
    factory.on_nan = "penalize"
    vectors = _population(spec, 8)
    result = PopulationEvaluator(factory, spec).evaluate(vectors, [1, 2])
    assert result.penalized is not None and 0 < result.penalized.sum() < result.penalized.size
    clean = result.returns[~result.penalized]
    np.testing.assert_array_equal(result.returns[result.penalized], clean.min())
    assert (result.lengths[result.penalized] == 4).all(), "the episode ended where NaN came"
    # sharded the same way Ray does: penalize after joining, so fitness ignores sharding
    evaluator = PopulationEvaluator(factory, spec)
    shards = [evaluator.evaluate_shard(v, [1, 2]) for v in (vectors[:3], vectors[3:])]
    joined = apply_nan_penalty(EvaluationResult.concatenate(shards))
    np.testing.assert_array_equal(joined.returns, result.returns)


def test_an_episode_that_never_ends_is_bounded_with_one_warning(monkeypatch):
    monkeypatch.setattr(env_factory, "DEFAULT_MAX_EPISODE_STEPS", 25)
    factory, spec = _faulty(mode="never_ends")
    evaluator = PopulationEvaluator(factory, spec)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for seed in (1, 2):
            result = evaluator.evaluate(_population(spec, 2), [seed])
            assert (result.lengths == 25).all()
    messages = [str(w.message) for w in caught if "max_episode_steps" in str(w.message)]
    assert messages == [
        "env 'tests.fault_envs:FaultyEnv': episodes reached 25 steps without ending and were "
        "truncated there; set env.max_episode_steps"
    ]
