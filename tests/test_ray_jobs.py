"""Ray clusters and jobs, for real: a training job submitted through the Jobs API to a Ray head
of the test's own (``ray[default]``), and a two-node ``ray.cluster_utils.Cluster`` whose
evaluation shards run on both nodes. Each test stops only the Ray processes it started."""

from __future__ import annotations

import json
import textwrap
import time

import numpy as np
import pytest
import torch
import yaml

from evolstm.network.layout import PolicySpec, init_vector
from evolstm.rollouts.env_factory import resolve_env
from evolstm.rollouts.evaluation import PopulationEvaluator, episode_seeds
from tests.ray_processes import RAY_CLI, processes_using, ray_head
from tests.test_workflow import USER_MODULE

ray = pytest.importorskip("ray")
job_submission = pytest.importorskip(
    "ray.job_submission",
    reason="the Ray Jobs API needs ray[default] (pip install evolstm[cluster])",
)
pytest.importorskip("aiohttp", reason="the Ray Jobs API needs ray[default]")


def _client(url: str, timeout: float = 90.0):
    """A JobSubmissionClient once the head's job server answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return job_submission.JobSubmissionClient(url)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.skipif(not RAY_CLI.exists(), reason="the ray command is not next to this Python")
def test_a_training_job_submitted_through_the_jobs_api(tmp_path):
    # The user's folder, as `ray job submit --working-dir .` uploads it: a config naming an
    # env in a module beside it.
    project = tmp_path / "project"
    project.mkdir()
    (project / "my_task_module.py").write_text(textwrap.dedent(USER_MODULE))
    config = {
        "name": "job",
        "env": {"id": "my_task_module:ThreeSteps"},
        "policy": {"hidden": 4},
        "agent": {"name": "pgpe", "popsize": 4, "episodes": 1},
        "budget": {"iterations": 2},
        "eval": {"every": 1, "episodes": 2},
        "ray": {"address": "auto", "num_workers": 1},
        "logging": {"wandb": {"mode": "disabled"}, "console": True},
    }
    (project / "job.yaml").write_text(yaml.safe_dump(config))
    runs = tmp_path / "runs"
    evolstm_cli = RAY_CLI.with_name("evolstm")

    with ray_head(num_cpus=1) as head:
        client = _client(head.dashboard_url)
        job_id = client.submit_job(
            entrypoint=f"{evolstm_cli} train job.yaml --runs-dir {runs}",
            runtime_env={"working_dir": str(project)},
        )
        deadline = time.monotonic() + 240
        status = client.get_job_status(job_id)
        while not status.is_terminal() and time.monotonic() < deadline:
            time.sleep(1)
            status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        assert status == job_submission.JobStatus.SUCCEEDED, logs
        # The console said where the run executed: the cluster, with one worker.
        port = head.address.rsplit(":", 1)[1]
        assert "evaluation on the Ray cluster at auto (" in logs, logs
        assert f":{port}) with 1 worker(s)" in logs, logs
        assert processes_using(str(head.temp_dir)), "the head ran until the test stopped it"
    assert not processes_using(str(head.temp_dir))

    (run_dir,) = runs.iterdir()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [1, 2]
    # Every policy returns exactly 3 x 2 in the user's env.
    assert [x["eval_return_mean"] for x in lines] == [6.0, 6.0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval_return_mean"] == 6.0 and summary["iterations"] == 2
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["ray"]["address"] == "auto"


def test_two_node_cluster_evaluates_shards_on_both_nodes():
    from ray.cluster_utils import Cluster

    from evolstm.rollouts.ray_evaluator import RayEvaluator
    from evolstm.run.trainer import where_it_runs

    if ray.is_initialized():
        ray.shutdown()
    factory = resolve_env("evolstm/CartPoleNoVel-v0")
    env = factory.make()
    spec = PolicySpec(env.observation_space, env.action_space, hidden=4)
    base = init_vector(spec, torch.Generator().manual_seed(0))
    vectors = base + 0.5 * torch.randn(
        (6, base.numel()), generator=torch.Generator().manual_seed(1)
    )
    seeds = episode_seeds(2, 0, 0, 2)
    expected = PopulationEvaluator(factory, spec).evaluate(vectors, seeds)

    # One CPU per node: the two one-CPU shard actors cannot share a node.
    args = {"num_cpus": 1, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=args, shutdown_at_exit=False)
    try:
        cluster.add_node(num_cpus=1)
        evaluator = RayEvaluator(factory, spec, num_workers=2, address=cluster.address)
        try:
            result = evaluator.evaluate(vectors, seeds)
            nodes = ray.get(
                [
                    worker.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
                    for worker in evaluator.workers
                ]
            )
            alive = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
            line = where_it_runs(cluster.address, evaluator.num_workers)
        finally:
            evaluator.close()
        assert len(alive) == 2 and set(nodes) == alive, (nodes, alive)
        np.testing.assert_array_equal(result.returns, expected.returns)
        assert line.startswith(f"evaluation on the Ray cluster at {cluster.address}")
        assert line.endswith("with 2 worker(s)")
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    remaining = [node.all_processes for node in [cluster.head_node, *cluster.worker_nodes] if node]
    assert not any(remaining)
