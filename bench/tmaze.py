"""ESP on Bakker's T-maze: seeds solved per corridor length N, and the evaluations it took.

A seed counts as solved when the best network so far passes the task's own success test
(:meth:`envs.tmaze.TMazeEnv.success_test`: the goal arm found for both road signs) within
``--generations``. Settings are those of ``configs/tmaze_esp.yaml``.

    .venv/bin/python bench/tmaze.py --lengths 100 --seeds 10         # the issue's target
    .venv/bin/python bench/tmaze.py --lengths 100 150 200 300 --seeds 3

Bakker (NIPS 2002) reported RL-LSTM on corridors up to about N = 70.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.esp import ESP
from evolstm.agent import AgentContext
from evolstm.network.layout import PolicySpec
from evolstm.rollouts.env_factory import resolve_env
from evolstm.rollouts.evaluation import PopulationEvaluator
from evolstm.rollouts.success import policy_fn_maker

OPTIONS = {"subpop_size": 12, "trials": 4, "episodes": 16, "stagnation": 20}


def run(length: int, seed: int, generations: int, hidden: int) -> tuple[bool, int, int]:
    """(solved, evaluations, generations) of one ESP run."""
    factory = resolve_env("evolstm/TMaze-v0", {"length": length})
    env = factory.make()
    spec = PolicySpec(env.observation_space, env.action_space, hidden=hidden)
    evaluator = PopulationEvaluator(factory, spec)
    agent = ESP(ESP.Options(**OPTIONS), AgentContext(spec, seed, evaluator, factory.make_vector))
    evaluations, last_best = 0, None
    try:
        for generation in range(1, generations + 1):
            metrics = agent.step()
            evaluations += int(metrics["evaluations"])
            # the policy changes when the record is beaten or tied (ESP's newest_best)
            vector = agent.policy_vector()
            if last_best is None or not torch.equal(vector, last_best):
                last_best = vector
                test = env.unwrapped.success_test(policy_fn_maker(spec, vector))
                if test["solved"]:
                    return True, evaluations, generation
    finally:
        evaluator.close()
    return False, evaluations, generations


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[100])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--generations", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=2)
    parser.add_argument("--verbose", action="store_true", help="print every run's result")
    args = parser.parse_args(argv)
    print("$ " + " ".join([sys.executable, *sys.argv]))
    print(f"ESP {OPTIONS}, LSTM hidden {args.hidden}, at most {args.generations} generations")
    print(f"{'N':>5} {'solved':>8} {'median evals':>13} {'mean evals':>11} {'seconds':>8}")
    for length in args.lengths:
        start = time.perf_counter()
        runs = []
        for seed in range(args.seeds):
            runs.append(run(length, seed, args.generations, args.hidden))
            if args.verbose:
                ok, evaluations, generations = runs[-1]
                print(
                    f"  N {length} seed {seed}: solved {ok}, {evaluations:,} evaluations, "
                    f"{generations} generations",
                    flush=True,
                )
        evals = [e for ok, e, _ in runs if ok]
        median = f"{statistics.median(evals):,.0f}" if evals else "-"
        mean = f"{statistics.mean(evals):,.0f}" if evals else "-"
        solved = f"{len(evals)}/{args.seeds}"
        print(
            f"{length:>5} {solved:>8} {median:>13} {mean:>11} {time.perf_counter() - start:>8.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
