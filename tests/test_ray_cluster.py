"""Joining an existing Ray cluster (``ray start --head``, then ``--ray-address host:port``)
gives the same fitnesses as the in-process evaluator."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
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


def start_own_head(port: int, temp_dir: Path) -> subprocess.Popen:
    """``ray start --head --block`` as a child in its own process group: the test stops
    exactly the processes it started (never ``ray stop``, which stops every Ray on the
    machine, a user's cluster included)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    start = [str(RAY_CLI), "start", "--head", "--block", f"--port={port}", "--num-cpus=2"]
    start += ["--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"]
    start += ["--node-ip-address=127.0.0.1"]
    head = subprocess.Popen(
        start, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start --head exited with {head.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return head
        except OSError:
            time.sleep(0.5)
    stop_own_head(head, temp_dir)
    raise RuntimeError("the test's Ray head did not come up within 90 s")


def stop_own_head(head: subprocess.Popen, temp_dir: Path) -> None:
    """Stop the head's process group (SIGTERM, then SIGKILL) and remove its temp dir."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, sig)
        try:
            head.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # Ray daemons that left the group still name our private temp dir on their command line.
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and str(temp_dir) in (proc / "cmdline").read_text():
                os.kill(int(proc.name), signal.SIGKILL)
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def ray_head(tmp_path):
    if ray.is_initialized():
        ray.shutdown()
    if not RAY_CLI.exists():
        pytest.skip("the ray command is not installed next to this Python")
    port = _free_port()
    temp_dir = Path("/tmp") / f"ray-test-{port}"  # Ray's socket paths must stay short
    head = start_own_head(port, temp_dir)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stop_own_head(head, temp_dir)


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
