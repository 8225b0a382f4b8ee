"""The path users run: ``evolstm train`` against ``PopulationEvaluator.evaluate`` alone.

* :func:`trainer_vs_evaluator`: env-steps/s of ``evolstm train`` (a subprocess running the
  console script, the agent, its ask/tell, observation statistics, logging, held-out
  evaluation and checkpoints included; whole iterations from ``metrics.jsonl``, the first
  one skipped) beside the evaluator alone on the same workload (``P`` members around the
  agent's initial centre, ``PGPE``'s initial stdev, episode seeds moving like a run's), in
  one run, and their ratio.
* :func:`time_to_first_generation`: seconds from launching ``evolstm train`` to its first
  iteration in ``metrics.jsonl``, beside ``import torch, gymnasium``.
* :func:`generation_fixed_cost`: microseconds per generation when every episode lasts one
  step (``env.kwargs.max_episode_steps: 1``): env reset with per-slot seeds, policy set-up,
  Python bookkeeping, ask/tell and the trainer, with almost no stepping.

``bench/throughput.py`` prints these rows beside its evaluator rows; alone:

    python bench/_user_paths.py [--population 256] [--iterations 30]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_bench_dir = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _bench_dir]
sys.path.insert(0, str(_bench_dir.parent))
importlib.import_module("envs")

import torch  # noqa: E402
import yaml  # noqa: E402

from evolstm.network.layout import PolicySpec, init_vector  # noqa: E402
from evolstm.rollouts.env_factory import resolve_env  # noqa: E402
from evolstm.rollouts.evaluation import TRAIN_STREAM, PopulationEvaluator, episode_seeds  # noqa: E402

PENDULUM = "evolstm/PendulumNoVel-v0"
CARTPOLE = "evolstm/CartPoleNoVel-v0"


def train_config(
    env_id: str, population: int, iterations: int, env_kwargs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A user's config: PGPE, LSTM-16, defaults everywhere else (console and W&B offline)."""
    return {
        "name": "bench",
        "seed": 0,
        "env": {"id": env_id, "kwargs": env_kwargs or {}},
        "policy": {"cell": "lstm", "hidden": 16},
        "agent": {"name": "pgpe", "popsize": population},
        "budget": {"iterations": iterations},
    }


def run_train(config: dict[str, Any], workdir: Path) -> list[dict[str, Any]]:
    """Run ``evolstm train`` as a user would (the console script, in ``workdir``); return
    the records of ``metrics.jsonl``."""
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    evolstm = Path(sys.executable).parent / "evolstm"
    subprocess.run(
        [str(evolstm), "train", str(path), "--runs-dir", str(workdir / "runs")],
        cwd=workdir,
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "WANDB_SILENT": "true"},
    )
    (run_dir,) = (workdir / "runs").iterdir()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def trainer_rate(records: list[dict[str, Any]]) -> tuple[float, float]:
    """Env-steps/s and seconds per iteration over whole iterations, the first one skipped."""
    first, last = records[0], records[-1]
    steps = last["env_steps"] - first["env_steps"]
    seconds = last["wall_time"] - first["wall_time"]
    return steps / seconds, seconds / (len(records) - 1)


def evaluator_rate(
    env_id: str,
    population: int,
    generations: int,
    env_kwargs: dict[str, Any] | None = None,
    stdev: float = 0.1,
    wrappers: list[dict[str, Any]] | None = None,
) -> tuple[float, float]:
    """``PopulationEvaluator.evaluate`` alone on plain tensors: env-steps/s over all calls
    (total steps / total seconds, as :func:`trainer_rate` counts the trainer: a median would
    drop the slow calls on one side only) and the median seconds per call, one warm-up call
    excluded."""
    factory = resolve_env(env_id, env_kwargs or {}, wrappers or [])
    obs_space, act_space = factory.spaces()
    spec = PolicySpec(obs_space, act_space, cell="lstm", hidden=16)
    centre = init_vector(spec, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    evaluator = PopulationEvaluator(factory, spec)
    steps, seconds = [], []
    for g in range(generations + 1):
        vectors = centre + stdev * torch.randn(population, centre.numel(), generator=gen)
        seeds = episode_seeds(0, TRAIN_STREAM, g, 1)
        start = time.perf_counter()
        result = evaluator.evaluate(vectors, seeds)
        took = time.perf_counter() - start
        if g:
            steps.append(result.env_steps)
            seconds.append(took)
    evaluator.close()
    return sum(steps) / sum(seconds), statistics.median(seconds)


def trainer_vs_evaluator(population: int, iterations: int, rounds: int = 3) -> list[str]:
    """Table lines: the evaluator alone, ``evolstm train`` and their ratio (PendulumNoVel).

    The two sides alternate, ``rounds`` training runs each between two evaluator
    measurements (E T E T ... E): this VM's speed drifts by tens of percent within a minute,
    so each run is set against the evaluator measured just before and just after it, and the
    headline ratio is the median over rounds (the pooled ratio is printed beside it)."""
    ev_rates = [evaluator_rate(PENDULUM, population, 20)[0]]
    tr_rates = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            records = run_train(train_config(PENDULUM, population, iterations), Path(tmp))
        tr_rates.append(trainer_rate(records)[0])
        ev_rates.append(evaluator_rate(PENDULUM, population, 20)[0])
    ratios = [
        tr / ((a + b) / 2) for tr, a, b in zip(tr_rates, ev_rates[:-1], ev_rates[1:], strict=True)
    ]
    pooled = statistics.mean(tr_rates) / statistics.mean(ev_rates)
    return [
        f"{PENDULUM}, P = {population}, LSTM-16, E = 1, 200-step episodes, "
        f"{rounds} rounds (evaluator / train alternating):",
        "  PopulationEvaluator.evaluate alone     "
        + " / ".join(f"{r:,.0f}" for r in ev_rates)
        + " env-steps/s",
        f"  evolstm train (pgpe, {iterations} iterations)  "
        + " / ".join(f"{r:,.0f}" for r in tr_rates)
        + " env-steps/s",
        "  train / evaluator per round            " + " / ".join(f"{r:.2f}" for r in ratios),
        f"  train / evaluator                      {statistics.median(ratios):>12.2f} "
        f"(median of rounds; pooled {pooled:.2f})",
    ]


def generation_fixed_cost(population: int, iterations: int) -> list[str]:
    """Table lines: µs per generation with one-step episodes, through ``evolstm train`` and
    through the evaluator alone."""
    kwargs = {"max_episode_steps": 1}
    _, ev_seconds = evaluator_rate(CARTPOLE, population, 50, kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        records = run_train(train_config(CARTPOLE, population, iterations, kwargs), Path(tmp))
    _, tr_seconds = trainer_rate(records)
    return [
        f"{CARTPOLE} cut to 1-step episodes, P = {population}, LSTM-16, E = 1:",
        f"  evaluator alone: {ev_seconds * 1e6:>8,.0f} µs per generation",
        f"  evolstm train:   {tr_seconds * 1e6:>8,.0f} µs per generation "
        f"(pgpe, {iterations} iterations, first skipped)",
    ]


def time_to_first_generation(population: int, repeats: int = 3) -> list[str]:
    """Table lines: seconds from launching ``evolstm train`` (PGPE, PendulumNoVel, P =
    ``population``) until its first iteration's line lands in ``metrics.jsonl`` (imports,
    config validation, env and agent set-up, W&B start-up, one generation), best of
    ``repeats``, beside ``python -c "import torch, gymnasium"``."""
    evolstm = Path(sys.executable).parent / "evolstm"
    firsts, imports = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, gymnasium"], check=True)
        imports.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.yaml"
            path.write_text(yaml.safe_dump(train_config(PENDULUM, population, 1)))
            start = time.perf_counter()
            proc = subprocess.Popen(
                [str(evolstm), "train", str(path), "--runs-dir", str(Path(tmp) / "runs")],
                cwd=tmp,
                stdout=subprocess.DEVNULL,
                env={**os.environ, "WANDB_SILENT": "true"},
            )
            first = None
            while first is None and proc.poll() is None:
                metrics = list((Path(tmp) / "runs").glob("*/metrics.jsonl"))
                if metrics and metrics[0].stat().st_size > 0:
                    first = time.perf_counter() - start
                time.sleep(0.01)
            proc.wait()
            firsts.append(first if first is not None else time.perf_counter() - start)
    return [
        f"evolstm train (pgpe, P = {population}, {PENDULUM}), best of {repeats}:",
        f"  python -c 'import torch, gymnasium'     {min(imports):>6.2f} s",
        f"  launch -> first iteration logged         {min(firsts):>6.2f} s",
    ]


def wrapper_rows(population: int, generations: int) -> list[str]:
    """Table lines: the evaluator on CartPoleNoVel bare and wrapped in
    ``envs.wrappers:FlickerObservation`` (full-length episodes are not guaranteed: the rate
    is per env step), and which vector env the wrapped task ran on."""
    flicker = [{"path": "envs.wrappers:FlickerObservation", "kwargs": {"p": 0.1}}]
    bare, _ = evaluator_rate(CARTPOLE, population, generations)
    factory = resolve_env(CARTPOLE, {}, flicker)
    wrapped, _ = evaluator_rate(CARTPOLE, population, generations, wrappers=flicker)
    env = factory.make_vector(2)
    kind = type(env.unwrapped).__name__
    env.close()
    return [
        f"{CARTPOLE}, P = {population}, LSTM-16, E = 1, evaluator alone:",
        f"  bare                        {bare:>12,.0f} env-steps/s",
        f"  + FlickerObservation(0.1)   {wrapped:>12,.0f} env-steps/s "
        f"({wrapped / bare:.2f} of bare; runs on {kind})",
    ]


def sync_vector_bound(env_id: str, population: int, steps: int, repeats: int) -> float:
    """Env-steps/s of a raw ``SyncVectorEnv`` of ``population`` gymnasium envs stepped with
    random actions, no policy: the bound any policy on that path stays below."""
    import gymnasium as gym

    env = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(population)])
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(steps)]
    rates = []
    for r in range(repeats + 1):
        env.reset(seed=r)
        start = time.perf_counter()
        for action in actions:
            env.step(action)
        if r:
            rates.append(population * steps / (time.perf_counter() - start))
    env.close()
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--population", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3, help="train/evaluator alternations")
    args = parser.parse_args(argv)
    print("\n".join(time_to_first_generation(args.population)))
    print("\n".join(wrapper_rows(args.population, 5)))
    print("\n".join(trainer_vs_evaluator(args.population, args.iterations, args.rounds)))
    print("\n".join(generation_fixed_cost(args.population, args.iterations * 5)))


if __name__ == "__main__":
    main()
