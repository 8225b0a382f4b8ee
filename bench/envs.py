"""Stepping rate of every registered task: native numpy vector env vs gymnasium's SyncVectorEnv.

For each task in ``envs.TASKS`` this steps the native vector env (1,024 slots by default) and
a ``SyncVectorEnv`` of the task's single env (64 copies) for a fixed wall-clock budget each,
with random actions sampled beforehand (sampling is not timed; a pool of batches is cycled),
and prints env-steps per second for both and their ratio. Autoresets happen as in training.
A task whose module does not import is skipped with a note.

    python bench/envs.py            # about 1.5 s per side and task (well under 2 minutes)
    python bench/envs.py --quick    # a short smoke run
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import SyncVectorEnv

# This file is bench/envs.py: run as a script, its folder heads sys.path and a plain
# `import envs` would import this script; the repository root takes its place instead.
_bench_dir = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _bench_dir]
sys.path.insert(0, str(_bench_dir.parent))
envs = importlib.import_module("envs")

ACTION_POOL = 64  # distinct pre-sampled action batches, cycled


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (0.2 s per side)")
    parser.add_argument("--num-envs", type=int, default=1024, help="native vector env slots")
    parser.add_argument("--sync-envs", type=int, default=64, help="SyncVectorEnv copies")
    parser.add_argument("--seconds", type=float, default=None, help="timed seconds per side")
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 0.2 if args.quick else 1.5
    return args


def importable(entry_point: str) -> str | None:
    """None if the entry point's class imports, else the error as one line."""
    module, _, name = entry_point.partition(":")
    try:
        getattr(importlib.import_module(module), name)
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def steps_per_second(env: gym.vector.VectorEnv, seconds: float, seed: int = 0) -> float:
    """Env-steps per second (vector steps x num_envs) over about ``seconds`` of stepping."""
    env.action_space.seed(seed)
    actions: list[Any] = [env.action_space.sample() for _ in range(ACTION_POOL)]
    env.reset(seed=seed)
    for i in range(8):  # warm-up
        env.step(actions[i])
    steps = 0
    start = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds:
        for _ in range(16):
            env.step(actions[steps % ACTION_POOL])
            steps += 1
        elapsed = time.perf_counter() - start
    return steps * env.num_envs / elapsed


def bench_task(name: str, args: argparse.Namespace) -> tuple[float, float] | str:
    """``(native rate, sync rate)``, or a note why the task was skipped."""
    entry_point, vector_entry_point, _ = envs.TASKS[name]
    for point in (entry_point, vector_entry_point):
        error = importable(point)
        if error is not None:
            return f"skipped ({point} does not import: {error})"
    env_id = f"{envs.NAMESPACE}/{name}"
    native = gym.make_vec(env_id, args.num_envs, vectorization_mode="vector_entry_point")
    native_rate = steps_per_second(native, args.seconds)
    native.close()
    sync = SyncVectorEnv([lambda: gym.make(env_id)] * args.sync_envs)
    sync_rate = steps_per_second(sync, args.seconds)
    sync.close()
    return native_rate, sync_rate


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print("$ " + " ".join([sys.executable, *sys.argv]))
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"gymnasium {gym.__version__}, {args.seconds} s per side"
    )
    header = (
        f"{'task':<22} {'native envs':>11} {'native steps/s':>15} "
        f"{'sync envs':>9} {'sync steps/s':>13} {'ratio':>7}"
    )
    print(header)
    print("-" * len(header))
    for name in sorted(envs.TASKS):
        result = bench_task(name, args)
        if isinstance(result, str):
            print(f"{name:<22} {result}")
            continue
        native_rate, sync_rate = result
        print(
            f"{name:<22} {args.num_envs:>11} {native_rate:>15,.0f} "
            f"{args.sync_envs:>9} {sync_rate:>13,.0f} {native_rate / sync_rate:>6.0f}x"
        )


if __name__ == "__main__":
    main()
