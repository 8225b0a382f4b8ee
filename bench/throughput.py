"""Population env-steps per second: the evolstm evaluator against EvoTorch's VecGymNE and GymNE.

One task (``evolstm/CartPoleNoVel-v0``), one policy size (LSTM, hidden 16, linear readout),
and the SAME population on every side: ``P`` members around a balancing centre (centre +
Gaussian noise), mapped parameter for parameter into EvoTorch's network
``"LSTM(obs_length, 16) >> Linear(16, act_length)"`` (``bench/_evotorch_mapping.py``, tested
in ``tests/test_bench_mapping.py``). Nearly every episode then runs its full 500 steps on every
side, so each side does the same work per generation; the table shows each side's mean episode
length to prove it. EvoTorch runs as configured for a fair race: no observation
normalisation, no action noise, ``num_actors=0`` (in-process), one episode per member.

Rows (warm-up run excluded, median of ``--repeats`` timed runs):

* ``evolstm``: ``PopulationEvaluator.evaluate`` on the native numpy vector env, P x E slots;
* ``VecGymNE`` (env id string): what a user gets; EvoTorch builds its own ``SyncVectorEnv``
  (eager autoreset) of ``gymnasium.make`` single envs, stepped one by one in Python;
* ``VecGymNE`` (native env): handed a callable that returns evolstm's native vector env, with
  each slot's generator preset like evolstm's, so both play the very same episodes; this row
  isolates EvoTorch's policy and loop overhead from the env;
* ``GymNE``: one solution at a time on one env (slow: a subset of the population is timed);
* ``evolstm`` E=4: the same population, 4 episodes per member (P x 4 slots).

Then (not with ``--quick``) the paths users run (``bench/_user_paths.py``): a user's
gymnasium env (``Pendulum-v1``: evolstm vs VecGymNE vs the raw ``SyncVectorEnv`` bound),
``evolstm train`` (PGPE, P = 256, PendulumNoVel) beside the evaluator alone with their
ratio, and the fixed cost of a generation (one-step episodes) in µs.

Headline rows use ``--threads`` torch threads on both sides (default 1: ops on ``[P, B, 4H]``
tensors gain nothing from more, and on a busy machine each parallel region can wait a
scheduler time slice for its second thread); the E=1 rows are repeated at torch's default
thread count (not with ``--quick``).

The centre comes from ``--policy runs/<run>/policy.pt`` (a trained quickstart policy) or, when
absent, is trained here first with the quickstart's agent and options
(``configs/quickstart.yaml``, in-process, capped); if that does not reach a held-out mean of
475, or with ``--centre hand``, the hand-set balancing LSTM of ``bench/_balancing_lstm.py`` is
used instead (same network, same size; the output says which centre was used). A centre
trained with observation normalisation has its normaliser folded into its input weights, so
both sides run the same raw-observation network.

    python bench/throughput.py                      # train a centre, then the full table
    python bench/throughput.py --policy runs/quickstart-.../policy.pt
    python bench/throughput.py --centre hand        # skip training: the hand-set LSTM
    python bench/throughput.py --quick              # short smoke run (no timing claims)
    python bench/throughput.py --ray                # adds Ray rows (2 actors on both sides)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Run as a script, this folder heads sys.path and a plain `import envs` would find
# bench/envs.py; the repository root takes its place (as in bench/envs.py).
_bench_dir = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _bench_dir]
sys.path.insert(0, str(_bench_dir.parent))
importlib.import_module("envs")  # registers evolstm/CartPoleNoVel-v0 with gymnasium

import evotorch  # noqa: E402
import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from evotorch import SolutionBatch  # noqa: E402
from evotorch.neuroevolution import GymNE, VecGymNE  # noqa: E402
from gymnasium.utils import seeding  # noqa: E402

from bench._balancing_lstm import balancing_vector  # noqa: E402
from bench._evotorch_mapping import (  # noqa: E402
    evotorch_network,
    fold_obs_norm,
    to_evotorch_solutions,
)
from bench._user_paths import (  # noqa: E402
    generation_fixed_cost,
    sync_vector_bound,
    time_to_first_generation,
    trainer_vs_evaluator,
    wrapper_rows,
)
from evolstm.agent import AgentContext  # noqa: E402
from evolstm.network.layout import PolicySpec, init_vector  # noqa: E402
from evolstm.network.obs_norm import ObsNormalizer  # noqa: E402
from evolstm.network.policy import RecurrentPolicy  # noqa: E402
from evolstm.rollouts.env_factory import EnvFactory, resolve_env  # noqa: E402
from evolstm.rollouts.evaluation import EVAL_STREAM, Evaluator, PopulationEvaluator, episode_seeds  # noqa: E402
from evolstm.run.config import load_config, resolve_agent  # noqa: E402

ENV_ID = "evolstm/CartPoleNoVel-v0"
QUICKSTART = _bench_dir.parent / "configs" / "quickstart.yaml"
# gymnasium's "module:EnvId" form: gymnasium.make imports `envs` first, also in EvoTorch's Ray
# actors, which never import it otherwise.
EVOTORCH_ENV_ID = f"envs:{ENV_ID}"
HIDDEN = 16
SOLVED = 475.0
USER_ENV_ID = "Pendulum-v1"  # a user's gymnasium env: no native vector env
BY_ID = "id string -> EvoTorch SyncVectorEnv"
BY_CALLABLE = "callable -> evolstm native env"
EPISODE_SEED = 12345  # the one start every member meets on the evolstm and native-env rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, help="a trained policy.pt to centre the population")
    parser.add_argument("--quick", action="store_true", help="small, short smoke run")
    parser.add_argument("--population", type=int, help="P (default 256; 32 with --quick)")
    parser.add_argument("--gymne-members", type=int, help="GymNE subset (default 16; 4 quick)")
    parser.add_argument("--repeats", type=int, help="timed runs per row (default 3; 1 quick)")
    parser.add_argument("--noise", type=float, default=0.01, help="population noise stdev")
    parser.add_argument(
        "--centre", choices=("train", "hand"), default="train", help="without --policy"
    )
    parser.add_argument(
        "--max-generations", type=int, help="training cap (default: the config's; 10 quick)"
    )
    parser.add_argument(
        "--save-policy", type=Path, help="save a trained centre (normaliser folded in)"
    )
    parser.add_argument("--ray", action="store_true", help="add rows with 2 Ray actors per side")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of the headline rows (both sides)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the population noise")
    parser.add_argument(
        "--train-iterations", type=int, default=30, help="iterations of the `evolstm train` rows"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    for name, full, short in (
        ("population", 256, 32),
        ("gymne_members", 16, 4),
        ("repeats", 3, 1),
        ("max_generations", None, 10),
    ):
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    return args


@dataclass
class Row:
    """One line of the table."""

    side: str
    path: str
    members: int
    episodes: int
    threads: str
    mean_length: float
    steps_per_s: float
    reference: Row | None = None  # the evolstm row this side is compared with

    def ratio(self) -> str:
        if self.reference is None:
            return "-"
        return f"{self.reference.steps_per_s / self.steps_per_s:.1f}x"


def timed(run: Callable[[], int], repeats: int) -> tuple[float, list[int]]:
    """Median env-steps/s of ``repeats`` calls of ``run`` (returns env steps), after one
    untimed warm-up call; also every timed call's step count."""
    run()
    rates, counts = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        steps = run()
        rates.append(steps / (time.perf_counter() - start))
        counts.append(steps)
    return statistics.median(rates), counts


# -- the centre and the population ---------------------------------------------------------
def held_out_return(
    evaluator: Evaluator, vector: torch.Tensor, obs_norm: ObsNormalizer | None, index: int
) -> float:
    seeds = episode_seeds(0, EVAL_STREAM, index, 16)
    return float(evaluator.evaluate(vector[None], seeds, obs_norm=obs_norm).returns.mean())


def train_centre(
    factory: EnvFactory, spec: PolicySpec, max_generations: int | None
) -> tuple[torch.Tensor, float]:
    """The quickstart's agent (``configs/quickstart.yaml``: its agent, options and seed, but
    in-process) until a 16-episode held-out mean >= 475, checked every 5 generations, or the
    cap (default: the config's iteration budget). Returns the best centre seen, its
    observation normaliser folded in, and its held-out score."""
    cfg, agent_cls, options = resolve_agent(load_config(QUICKSTART))
    cap = max_generations or cfg.budget.iterations or 150
    print(f"centre: training {cfg.agent.name} {cfg.agent.options} (cap {cap} generations)")
    evaluator = PopulationEvaluator(factory, spec)
    agent = agent_cls(options, AgentContext(spec, cfg.seed, evaluator, factory.make_vector))
    best, best_return = agent.policy_vector(), -np.inf
    start = time.perf_counter()
    for generation in range(1, cap + 1):
        agent.step()
        if generation % 5 and generation != cap:
            continue
        centre, obs_norm = agent.policy_vector(), agent.obs_normalizer()
        score = held_out_return(evaluator, centre, obs_norm, generation)
        if score > best_return:
            best = centre if obs_norm is None else fold_obs_norm(spec, centre, obs_norm)
            best_return = score
        if score >= SOLVED:
            break
    evaluator.close()
    print(
        f"  {generation} generations, {time.perf_counter() - start:.0f} s, "
        f"best held-out mean return {best_return:.1f}"
    )
    return best, best_return


def obtain_centre(factory: EnvFactory, spec: PolicySpec, args: argparse.Namespace) -> torch.Tensor:
    """The raw-observation centre ``[D]`` (any observation normaliser folded in)."""
    if args.policy is not None:
        policy = RecurrentPolicy.load(args.policy)
        if policy.spec.cell != "lstm" or policy.spec.hidden != HIDDEN or policy.spec.layers != 1:
            raise SystemExit(f"{args.policy}: expected a 1-layer lstm policy with hidden {HIDDEN}")
        note = "" if policy.obs_norm is None else " (its observation normaliser folded in)"
        print(f"centre: {args.policy}{note}")
        vector = policy.to_vector()
        return vector if policy.obs_norm is None else fold_obs_norm(spec, vector, policy.obs_norm)
    if args.centre == "train":
        centre, score = train_centre(factory, spec, args.max_generations)
        if score >= SOLVED:
            print("centre: the trained policy")
            if args.save_policy is not None:
                RecurrentPolicy(spec, centre).save(args.save_policy)
            return centre
        print(f"  not solved (< {SOLVED:.0f}): its episodes would be short")
    print("centre: the hand-set balancing LSTM (bench/_balancing_lstm.py)")
    return balancing_vector(spec)


# -- the sides -----------------------------------------------------------------------------
def evolstm_side(
    evaluator: Evaluator, vectors: torch.Tensor, episodes: int
) -> tuple[Callable[[], int], list[np.ndarray]]:
    """A run closure (one ``evaluate`` of ``vectors [P, D]``) and the lengths ``[P, E]`` of
    every run so far."""
    seeds = [EPISODE_SEED + e for e in range(episodes)]
    lengths: list[np.ndarray] = []

    def run() -> int:
        result = evaluator.evaluate(vectors, seeds)
        lengths.append(result.lengths)
        return result.env_steps

    return run, lengths


def seed_slots_like_evolstm(env: gym.vector.VectorEnv) -> None:
    """Seed every native slot as evolstm's evaluator does for episode seed ``EPISODE_SEED``.

    VecGymNE resets without a seed, so the per-slot generators are set before it resets."""
    env.unwrapped.slot_rngs = [seeding.np_random(EPISODE_SEED)[0] for _ in range(env.num_envs)]


def evotorch_side(
    problem: VecGymNE | GymNE, solutions: torch.Tensor, preset: bool = False
) -> Callable[[], int]:
    """A run closure: one ``problem.evaluate`` of all ``solutions [n, L]`` as one batch.

    :param preset: re-seed the native slots first (VecGymNE on evolstm's native env)."""

    def run() -> int:
        if preset and problem.get_env() is not None:  # a new env is seeded when built
            seed_slots_like_evolstm(problem.get_env())
        before = problem.interaction_count
        batch = SolutionBatch(problem, popsize=len(solutions), empty=True)
        batch.set_values(solutions)
        problem.evaluate(batch)
        return problem.interaction_count - before

    return run


def native_vector_env(num_envs: int) -> gym.vector.VectorEnv:
    """evolstm's native vector env, for VecGymNE's callable form."""
    env = gym.make_vec(ENV_ID, num_envs, vectorization_mode="vector_entry_point")
    seed_slots_like_evolstm(env)
    return env


def template_net(problem: VecGymNE | GymNE) -> torch.nn.Module:
    """The problem's network, whose parameter order is its solution order."""
    return problem.make_net(torch.zeros(problem.solution_length))


def make_vecgymne(
    env: str | Callable[[int], gym.vector.VectorEnv], network: str, num_actors: int = 0
) -> VecGymNE:
    """VecGymNE set up for the race: raw observations, no action noise, one episode."""
    problem = VecGymNE(
        env,
        network,
        observation_normalization=False,
        action_noise_stdev=None,
        num_episodes=1,
        num_actors=num_actors,
    )
    assert not problem.observation_normalization and problem._action_noise_stdev is None
    return problem


# -- main ----------------------------------------------------------------------------------
def print_table(rows: list[Row]) -> None:
    header = (
        f"{'side':<9} {'env path':<40} {'P':>4} {'E':>2} {'thr':>3} "
        f"{'mean len':>8} {'env-steps/s':>12} {'evolstm/side':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.side:<9} {r.path:<40} {r.members:>4} {r.episodes:>2} {r.threads:>3} "
            f"{r.mean_length:>8.1f} {r.steps_per_s:>12,.0f} {r.ratio():>12}"
        )


@dataclass
class Bench:
    """What every row shares: the task, the policy, the population and the repeats."""

    factory: EnvFactory
    spec: PolicySpec
    vectors: torch.Tensor  # [P, D]
    network: str
    repeats: int

    def evolstm(self, threads: int, episodes: int) -> Row:
        torch.set_num_threads(threads)
        evaluator = PopulationEvaluator(self.factory, self.spec)
        run, lengths = evolstm_side(evaluator, self.vectors, episodes)
        rate, _ = timed(run, self.repeats)
        evaluator.close()
        P, length = len(self.vectors), float(lengths[-1].mean())
        # The evaluator pins itself to one torch thread (evaluation.single_torch_thread).
        return Row("evolstm", "native numpy vector env", P, episodes, "1", length, rate)

    def vecgymne(self, problem: VecGymNE, native: bool, threads: int, ref: Row) -> Row:
        """``native``: the problem runs evolstm's native env (its slots are re-seeded)."""
        torch.set_num_threads(threads)
        solutions = to_evotorch_solutions(template_net(problem), self.spec, self.vectors)
        run = evotorch_side(problem, solutions, preset=native)
        rate, counts = timed(run, self.repeats)
        P = len(self.vectors)
        path = BY_CALLABLE if native else BY_ID
        return Row("VecGymNE", path, P, 1, str(threads), counts[-1] / P, rate, ref)

    def gymne(self, members: int, threads: int, ref: Row) -> Row:
        torch.set_num_threads(threads)
        problem = GymNE(
            EVOTORCH_ENV_ID, self.network, observation_normalization=False, num_actors=0
        )
        subset = self.vectors[:members]
        solutions = to_evotorch_solutions(template_net(problem), self.spec, subset)
        rate, counts = timed(evotorch_side(problem, solutions), self.repeats)
        path = "gymnasium.make single env, 1 at a time"
        return Row("GymNE", path, len(subset), 1, str(threads), counts[-1] / len(subset), rate, ref)

    def ray(self) -> list[Row]:
        """2 Ray actors per side, 1 torch thread each (evolstm's workers set it; Ray sets
        ``OMP_NUM_THREADS=1`` in EvoTorch's actors); Ray start-up and actors untimed."""
        from evolstm.rollouts.ray_evaluator import RayEvaluator

        P = len(self.vectors)
        evaluator = RayEvaluator(self.factory, self.spec, num_workers=2, address="local")
        run, lengths = evolstm_side(evaluator, self.vectors, 1)
        rate, _ = timed(run, self.repeats)
        path = "Ray, 2 actors, native env"
        ours = Row("evolstm", path, P, 1, "1/a", float(lengths[-1].mean()), rate)
        problem = make_vecgymne(EVOTORCH_ENV_ID, self.network, num_actors=2)
        solutions = to_evotorch_solutions(template_net(problem), self.spec, self.vectors)
        rate, counts = timed(evotorch_side(problem, solutions), self.repeats)
        path = "Ray, 2 actors, id -> EvoTorch SyncVecEnv"
        theirs = Row("VecGymNE", path, P, 1, "1/a", counts[-1] / P, rate, ours)
        evaluator.close()
        return [ours, theirs]


def pendulum_v1_rows(population: int, repeats: int) -> list[Row]:
    """A user's gymnasium env (``Pendulum-v1``, fixed 200-step episodes, no native vector env):
    evolstm's evaluator, VecGymNE, and a raw ``SyncVectorEnv`` with random actions (the
    bound of that path), all at one torch thread, P members around a fresh LSTM-16."""
    torch.set_num_threads(1)
    factory = resolve_env(USER_ENV_ID)
    spec = PolicySpec(*factory.spaces(), cell="lstm", hidden=HIDDEN)
    centre = init_vector(spec, torch.Generator().manual_seed(0))
    noise = torch.randn(population, centre.numel(), generator=torch.Generator().manual_seed(1))
    vectors = centre + 0.1 * noise
    evaluator = PopulationEvaluator(factory, spec)
    run, _ = evolstm_side(evaluator, vectors, 1)
    rate, _ = timed(run, repeats)
    evaluator.close()
    ours = Row("evolstm", f"{USER_ENV_ID}: SyncVectorEnv", population, 1, "1", 200.0, rate)
    problem = make_vecgymne(USER_ENV_ID, evotorch_network(spec))
    solutions = to_evotorch_solutions(template_net(problem), spec, vectors)
    rate, counts = timed(evotorch_side(problem, solutions), repeats)
    path = f"{USER_ENV_ID}: id -> EvoTorch SyncVecEnv"
    theirs = Row("VecGymNE", path, population, 1, "1", counts[-1] / population, rate, ours)
    bound = sync_vector_bound(USER_ENV_ID, population, 200, repeats)
    path = f"{USER_ENV_ID}: SyncVectorEnv, random actions"
    raw = Row("bound", path, population, 1, "-", 200.0, bound, ours)
    return [ours, theirs, raw]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.getLogger("evotorch").setLevel(logging.WARNING)
    default_threads = torch.get_num_threads()
    print("$ " + " ".join([sys.executable, *sys.argv]))
    print(
        f"python {platform.python_version()}, torch {torch.__version__} "
        f"(torch.get_num_threads() = {default_threads}), numpy {np.__version__}, "
        f"gymnasium {gym.__version__}, evotorch {evotorch.__version__}"
    )
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPUs, load average {load:.2f} at start (other work skews timings)")
    torch.set_num_threads(args.threads)  # training a centre included
    factory = resolve_env(ENV_ID)
    obs_space, act_space = factory.spaces()
    spec = PolicySpec(obs_space, act_space, cell="lstm", hidden=HIDDEN)
    centre = obtain_centre(factory, spec, args)
    P = args.population
    gen = torch.Generator().manual_seed(args.seed + 1)
    vectors = centre + args.noise * torch.randn(P, centre.numel(), generator=gen)
    bench = Bench(factory, spec, vectors, evotorch_network(spec), args.repeats)
    print(f"population: P = {P}, centre + N(0, {args.noise}^2); EvoTorch: {bench.network!r}")
    print(
        f"timing: 1 warm-up run excluded, median of {args.repeats}; GymNE on "
        f"{args.gymne_members} members; headline rows at {args.threads} torch thread(s)"
    )

    by_id = make_vecgymne(EVOTORCH_ENV_ID, bench.network)
    by_callable = make_vecgymne(native_vector_env, bench.network)
    t = args.threads
    headline = bench.evolstm(t, 1)
    rows = [
        headline,
        bench.vecgymne(by_id, False, t, headline),
        bench.vecgymne(by_callable, True, t, headline),
        bench.gymne(args.gymne_members, t, headline),
        bench.evolstm(t, 4),
    ]
    if default_threads != t and not args.quick:
        other = bench.evolstm(default_threads, 1)
        rows += [
            other,
            bench.vecgymne(by_id, False, default_threads, other),
            bench.vecgymne(by_callable, True, default_threads, other),
        ]
    torch.set_num_threads(default_threads)
    if args.ray:
        rows += bench.ray()
    print()
    print_table(rows)
    print(
        "evolstm/side = env-steps/s of the evolstm E=1 row above it (same threads) / the side's; "
        "mean len = env steps per episode in the last timed run"
    )
    if args.quick:
        return
    print()
    print("A user's gymnasium env (no native vector env):")
    print_table(pendulum_v1_rows(P, args.repeats))
    print()
    print("Through `evolstm train` (what users run) beside the evaluator alone:")
    print("\n".join(trainer_vs_evaluator(P, args.train_iterations)))
    print("\n".join(generation_fixed_cost(P, 5 * args.train_iterations)))
    print("\n".join(time_to_first_generation(P)))
    print("\n".join(wrapper_rows(P, args.repeats)))


if __name__ == "__main__":
    main()
