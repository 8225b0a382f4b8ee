"""Joining an existing Ray cluster (``ray start --head``, then ``--ray-address host:port``)
gives the same fitnesses as the in-process evaluator."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evolstm.env_factory import resolve_env
from evolstm.evaluation import PopulationEvaluator, episode_seeds
from evolstm.policy import PolicySpec, init_vector

ray = pytest.importorskip("ray")
RAY_CLI = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    if ray.is_initialized():
        ray.shutdown()
    if not RAY_CLI.exists():
        pytest.skip("the ray command is not installed next to this Python")
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    temp_dir = Path("/tmp") / f"ray-test-{port}"  # Ray's socket paths must stay short
    start = [str(RAY_CLI), "start", "--head", f"--port={port}", "--num-cpus=2"]
    start += ["--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"]
    subprocess.run(start, check=True, env=env, capture_output=True, timeout=120)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([str(RAY_CLI), "stop", "--force"], env=env, capture_output=True)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_joining_a_running_cluster_gives_the_same_fitnesses(ray_head):
    from evolstm.ray_evaluator import RayEvaluator

    factory = resolve_env("evolstm/CartPoleNoVel-v0")
    env = factory.make()
    spec = PolicySpec(env.observation_space, env.action_space, hidden=8)
    base = init_vector(spec, torch.Generator().manual_seed(0))
    vectors = base + 0.5 * torch.randn(
        (6, base.numel()), generator=torch.Generator().manual_seed(4)
    )
    seeds = episode_seeds(5, 0, 0, 3)
    expected = PopulationEvaluator(factory, spec).evaluate(vectors, seeds)
    remote = RayEvaluator(factory, spec, num_workers=2, address=ray_head)
    try:
        assert ray.get_runtime_context().gcs_address.endswith(ray_head.split(":")[1])
        result = remote.evaluate(vectors, seeds)
    finally:
        remote.close()
    assert not ray.is_initialized(), "the evaluator disconnects the driver it connected"
    np.testing.assert_array_equal(result.returns, expected.returns)
