"""Per-vector-step cost of ``PopulationEvaluator.evaluate``: policy vs env vs loop.

``P`` members (default 256) around the hand-set balancing LSTM of ``bench/_balancing_lstm.py``
(hidden 16, ``N(0, noise^2)`` parameter noise) play ``E`` (default 1) episodes of
``evolstm/CartPoleNoVel-v0``, nearly all of them the full 500 steps. The real evaluator runs
unchanged; its env's ``step``, the encoder and ``PopulationPolicy.act_encoded`` are wrapped
with timers, so each vector step splits into

* ``policy``: ``act_encoded`` (recurrent core, readout, action head, ``to_env``);
* ``encode``: the observation encoder;
* ``env``: the vector env's ``step``;
* ``reset``: the one seeded ``reset`` of every slot, spread over the steps;
* ``loop``: the rest of the evaluator's loop (bookkeeping), by difference.

Reported per vector step in microseconds, median over ``--repeats`` runs after a warm-up.
The timers themselves cost about a microsecond per call.

    python bench/profile_evaluator.py [--population 256] [--episodes 1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Run as a script, this folder heads sys.path and `import envs` would find bench/envs.py.
_bench_dir = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _bench_dir]
sys.path.insert(0, str(_bench_dir.parent))
importlib.import_module("envs")  # registers evolstm/CartPoleNoVel-v0 with gymnasium

import torch  # noqa: E402

from bench._balancing_lstm import balancing_vector  # noqa: E402
from evolstm.network.layout import PolicySpec  # noqa: E402
from evolstm.network.policy import PopulationPolicy  # noqa: E402
from evolstm.rollouts import evaluation  # noqa: E402
from evolstm.rollouts.env_factory import resolve_env  # noqa: E402
from evolstm.rollouts.evaluation import PopulationEvaluator  # noqa: E402

ENV_ID = "evolstm/CartPoleNoVel-v0"
HIDDEN = 16
EPISODE_SEED = 12345
PARTS = ("policy", "encode", "env", "reset")


class Timers:
    """Accumulated seconds per named part."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, name: str, fn: Callable) -> Callable:
        self.seconds.setdefault(name, 0.0)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return timed


def profile_once(
    evaluator: PopulationEvaluator, vectors: torch.Tensor, seeds: list[int]
) -> tuple[dict[str, float], int]:
    """One timed ``evaluate``: seconds per part (``total`` included) and vector steps taken."""
    timers = Timers()
    env = evaluator._vector_env(vectors.shape[0] * len(seeds))
    step, reset, encoder = env.step, env.reset, evaluator.core.encoder
    env.step = timers.wrap("env", step)
    env.reset = timers.wrap("reset", reset)
    evaluator.core.encoder = timers.wrap("encode", encoder)

    class TimedPolicy(PopulationPolicy):
        act_encoded = timers.wrap("policy", PopulationPolicy.act_encoded)

    evaluation.PopulationPolicy = TimedPolicy
    try:
        start = time.perf_counter()
        result = evaluator.evaluate(vectors, seeds)
        timers.seconds["total"] = time.perf_counter() - start
    finally:
        evaluation.PopulationPolicy = PopulationPolicy
        del env.step, env.reset
        evaluator.core.encoder = encoder
    return timers.seconds, int(result.lengths.max())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--population", type=int, default=256)
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--noise", type=float, default=0.01)
    args = parser.parse_args(argv)

    factory = resolve_env(ENV_ID)
    env = factory.make()
    spec = PolicySpec(env.observation_space, env.action_space, hidden=HIDDEN)
    centre = balancing_vector(spec)
    noise = torch.randn(
        (args.population, centre.numel()), generator=torch.Generator().manual_seed(0)
    )
    vectors = centre + args.noise * noise
    seeds = [EPISODE_SEED + e for e in range(args.episodes)]
    evaluator = PopulationEvaluator(factory, spec)
    profile_once(evaluator, vectors, seeds)  # warm-up
    runs = [profile_once(evaluator, vectors, seeds) for _ in range(args.repeats)]
    evaluator.close()

    steps = runs[0][1]
    per_step: dict[str, list[float]] = {}
    for seconds, n_steps in runs:
        seconds = dict(seconds)
        seconds["loop"] = seconds["total"] - sum(seconds[k] for k in PARTS)
        for name, value in seconds.items():
            per_step.setdefault(name, []).append(value / n_steps * 1e6)
    print(
        f"P={args.population} E={args.episodes} hidden={HIDDEN} {ENV_ID}: {steps} vector steps, "
        f"median of {args.repeats} (us per vector step)"
    )
    for name in (*PARTS, "loop", "total"):
        print(f"  {name:<7}{statistics.median(per_step[name]):8.1f}")


if __name__ == "__main__":
    main()
