"""The Ray evaluator gives the same fitnesses as the in-process one and survives dead actors."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from evolstm.network.layout import PolicySpec, init_vector
from evolstm.rollouts.env_factory import EnvFactory, resolve_env
from evolstm.rollouts.evaluation import PopulationEvaluator, episode_seeds

ray = pytest.importorskip("ray")

CARTPOLE = resolve_env("evolstm/CartPoleNoVel-v0")
CUE = resolve_env("tests.fixture_envs:CueRecallEnv", {"delay": 2})


@pytest.fixture(scope="module")
def local_ray():
    from evolstm.rollouts.ray_evaluator import connect_ray

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
    from evolstm.rollouts.ray_evaluator import RayEvaluator

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


def _slow(tmp_path, **kwargs) -> EnvFactory:
    return resolve_env("tests.fault_envs:SlowEnv", {"delay_s": 0.01, **kwargs})


def test_actor_killed_while_evaluating_its_shard_is_replaced_and_the_result_unchanged(
    local_ray, tmp_path
):
    from evolstm.rollouts.ray_evaluator import RayEvaluator

    busy = tmp_path / "busy"
    factory = _slow(tmp_path, busy_file=str(busy))
    spec, vectors = _setup(factory, pop=6)
    seeds = episode_seeds(4, 0, 0, 2)
    expected = PopulationEvaluator(factory, spec).evaluate(vectors, seeds)
    remote = RayEvaluator(factory, spec, num_workers=2, address="local")
    victim = remote.workers[0]
    victim_busy = Path(f"{busy}-{ray.get(victim.__ray_call__.remote(lambda self: os.getpid()))}")

    def kill_when_busy() -> None:
        while not victim_busy.exists():  # the victim's env has begun stepping its shard
            time.sleep(0.005)
        ray.kill(victim, no_restart=True)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    try:
        result = remote.evaluate(vectors, seeds)
    finally:
        killer.join()
        remote.close()
    assert remote.replacements == 1
    np.testing.assert_array_equal(result.returns, expected.returns)
    np.testing.assert_array_equal(result.lengths, expected.lengths)


def test_hung_actor_times_out_is_replaced_and_its_shard_rerun(local_ray, tmp_path):
    from evolstm.rollouts.ray_evaluator import RayEvaluator

    hang = tmp_path / "hang"
    factory = _slow(tmp_path, hang_file=str(hang))
    spec, vectors = _setup(factory, pop=4)
    seeds = episode_seeds(6, 0, 0, 2)
    hang.touch()  # the reference run must not hang
    expected = PopulationEvaluator(factory, spec).evaluate(vectors, seeds)
    hang.unlink()  # the first env to step on Ray now hangs for an hour
    remote = RayEvaluator(factory, spec, num_workers=2, address="local", shard_timeout_s=6)
    try:
        result = remote.evaluate(vectors, seeds)
    finally:
        remote.close()
    assert remote.replacements == 1
    np.testing.assert_array_equal(result.returns, expected.returns)
    assert set(result.timings) == {"time_env_s", "time_policy_s", "time_ray_s"}


def test_env_error_on_a_worker_names_the_worker_and_the_global_member(local_ray):
    from evolstm.errors import EnvError
    from evolstm.rollouts.ray_evaluator import RayEvaluator

    factory = resolve_env("tests.fault_envs:FaultyEnv", {"mode": "raise_step", "at_step": 2})
    spec, vectors = _setup(factory, pop=4)
    remote = RayEvaluator(factory, spec, num_workers=2, address="local")
    try:
        with pytest.raises(EnvError) as info:
            remote.evaluate(vectors, [1, 2])
    finally:
        remote.close()
    message = str(info.value)
    assert "step() raised RuntimeError: step failed on purpose at step 2" in message
    # shard 0 holds members 0-1, shard 1 members 2-3: the member is counted in the population
    assert re.search(r"member (0|2), episode 0 \(slot 0\), on Ray worker (0|1) \(pid \d+", message)
    assert ("member 0" in message) == ("worker 0" in message)


def _pg_rollouts_equal(a: dict, b: dict) -> None:
    for key in ("x", "actions", "logp", "values", "rewards", "valid", "episode_start"):
        assert torch.equal(a[key], b[key]), key
    assert a["episode_returns"] == b["episode_returns"]


def test_a_hung_pg_rollout_actor_is_replaced_and_its_rollout_rerun_exactly(local_ray, tmp_path):
    """The policy-gradient collectors survive a hung actor as the evaluator does."""
    from evolstm.network.pg_model import PGNetwork
    from evolstm.rollouts.pg_collector import LocalCollectors, RayCollectors

    hang = tmp_path / "hang"
    factory = resolve_env("tests.fault_envs:SlowEnv", {"delay_s": 0.0, "hang_file": str(hang)})
    env = factory.make()
    spec = PolicySpec(env.observation_space, env.action_space, hidden=4)
    net = PGNetwork(spec, init_vector(spec, torch.Generator().manual_seed(1)), seed=1)
    seeds = [11, 12, 13]

    def run(collectors) -> list[dict]:
        # RPG's pattern (a reset, then the episodes), then a continuing rollout (PPO's).
        collectors.reset(seeds)
        first = collectors.collect(net, None, steps=30, first_episode_only=True)
        return [first, collectors.collect(net, None, steps=15)]

    hang.touch()  # the reference must not hang
    local = LocalCollectors(factory.make_vector, len(seeds), seed=5)
    expected = run(local)
    local.close()
    hang.unlink()  # the first env to step on Ray now hangs for an hour
    remote = RayCollectors(
        factory.make_vector, spec, {"seed": 1}, len(seeds), 5,
        num_workers=1, address="local", timeout_s=5.0,
    )  # fmt: skip
    try:
        got = run(remote)
        replacements = remote.replacements
    finally:
        remote.close()
    assert hang.exists() and replacements >= 1  # more only if a rerun was slow, too
    for a, b in zip(got, expected, strict=True):
        _pg_rollouts_equal(a, b)
