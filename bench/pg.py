"""Recurrent PPO time-to-solve: sb3-contrib's ``RecurrentPPO`` against evolstm's ``ppo``.

One task (``evolstm/CartPoleNoVel-v0``: CartPole-v1 physics observing cart position and pole
angle, 500-step episodes), the RL Zoo's tuned RecurrentPPO hyperparameters for
CartPoleNoVel-v1 on the sb3 side (8 envs, n_steps 32, batch 256, 20 epochs, gamma 0.98,
gae_lambda 0.8, lr 1e-3 and clip 0.2 both linearly decayed over 100k steps, ent_coef 0,
LSTM 64 with a critic LSTM, pi/vf MLPs [64] ReLU, ortho_init off, VecNormalize with
gamma 0.98 as RL Zoo passes it), and ``configs/cartpole_nv_ppo.yaml`` on the evolstm side
(the same sizes and schedule, ``readout_hidden: [64]``, ``reward_norm: true``, and as
SB3 has them: ``vf_coef: 1.0``, ``obs_clip: 10``, ``forget_bias: 0``).

Both sides are evaluated the same way: after the first update at which the env.step calls
reach each multiple of ``--eval-every`` (sb3's callback waits for the update of the rollout
in progress, as evolstm's loop does; so both evaluate after the same number of updates),
``--episodes`` deterministic episodes on the held-out seeds of the run seed (one fixed set),
the recurrent state reset at each episode start. evolstm's reported env steps are actions
(NEXT_STEP autoreset's reset steps excluded), sb3's are its ``num_timesteps``.
Evaluation time is excluded from both clocks; the clocks count training only (collection +
updates). Each side stops at its first evaluation mean >= 475 (or at ``--max-steps``).
Printed: env steps and training seconds to that point for each side, and evolstm / sb3 as
ratios. One torch thread on both sides (measured faster for both on this 2-core machine).

    python bench/pg.py                 # both sides, seed 0
    python bench/pg.py --seeds 0 1 2   # several seeds, one line each, then medians
    python bench/pg.py --skip-sb3      # evolstm only (profile breakdown)
    python bench/pg.py --skip-sb3 --set agent.critic=shared   # the shared-critic variant
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

_bench_dir = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _bench_dir]
sys.path.insert(0, str(_bench_dir.parent))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import envs  # noqa: E402, F401
from evolstm.rollouts.evaluation import PopulationEvaluator  # noqa: E402
from evolstm.run.config import load_config  # noqa: E402
from evolstm.run.registry import get_agent  # noqa: E402
from evolstm.run.trainer import env_factory_for, eval_seeds, policy_spec_for  # noqa: E402

ENV_ID = "evolstm/CartPoleNoVel-v0"
THRESHOLD = 475.0
CONFIG = _bench_dir.parent / "configs" / "cartpole_nv_ppo.yaml"


def run_evolstm(
    seed: int,
    eval_every: int,
    episodes: int,
    max_steps: int,
    overrides: list[str],
    curve: bool = False,
) -> dict:
    """evolstm PPO driven directly (no trainer), evaluated by the trainer's evaluator."""
    from evolstm.agent import AgentContext

    cfg = load_config(CONFIG, [f"seed={seed}", *overrides])
    factory = env_factory_for(cfg)
    spec = policy_spec_for(cfg, factory)
    agent_cls = get_agent("ppo")
    options = agent_cls.Options(**cfg.agent.options)
    evaluator = PopulationEvaluator(factory, spec)
    ctx = AgentContext(spec, seed, evaluator, factory.make_vector)
    agent = agent_cls(options, ctx)
    seeds = eval_seeds(seed, episodes)
    # Evaluate after the same updates as sb3's side: when the env.step calls (N per step of
    # every slot, reset steps included, as sb3's num_timesteps counts them) reach a multiple
    # of eval_every. Reported env steps are actions (valid steps): NEXT_STEP autoreset's
    # reset steps are no actions, so they are a few dozen fewer than the calls.
    calls_per_iteration = options.num_envs * options.n_steps
    train_s, steps, calls, next_eval = 0.0, 0, 0, eval_every
    parts = dict.fromkeys(("time_rollout", "time_forward", "time_backward", "time_optimizer"), 0.0)
    result = {"side": "evolstm", "seed": seed, "solved_steps": None, "solved_s": None}
    while steps < max_steps:
        t0 = time.perf_counter()
        metrics = agent.step()
        train_s += time.perf_counter() - t0
        steps += int(metrics["env_steps"])
        calls += calls_per_iteration
        for k in parts:
            parts[k] += metrics[k]
        if calls >= next_eval:
            next_eval += eval_every
            res = evaluator.evaluate(
                agent.policy_vector()[None], seeds, obs_norm=agent.obs_normalizer()
            )
            mean = float(res.returns.mean())
            if curve:
                print(
                    f"         evolstm eval at {steps} steps: {mean:.1f}"
                    + _stats(
                        metrics["entropy"],
                        2 * metrics["value_loss"],  # 0.5 * MSE here, MSE on sb3's side
                        metrics["explained_variance"],
                        metrics["approx_kl"],
                        metrics["clip_fraction"],
                    ),
                    flush=True,
                )
            if mean >= THRESHOLD:
                result.update(solved_steps=steps, solved_s=train_s, eval=mean)
                break
    agent.close()
    evaluator.close()
    result.update(steps=steps, train_s=train_s, **parts)
    return result


def _stats(entropy: float, value_mse: float, ev: float, kl: float, clip_frac: float) -> str:
    """The last update's statistics, in the same units on both sides (``--curve``)."""
    return (
        f" | last update: entropy {entropy:.3f}, value MSE {value_mse:.4f}, "
        f"explained var {ev:.2f}, approx KL {kl:.4f}, clip frac {clip_frac:.3f}"
    )


def _sb3_eval(model, vecnorm, seeds: list[int]) -> float:
    """Deterministic episodes of sb3's policy on ``seeds``, one env per seed, stepped in
    lockstep; finished episodes stop."""
    env_list = [gym.make(ENV_ID) for _ in seeds]
    obs = np.stack([e.reset(seed=int(s))[0] for e, s in zip(env_list, seeds, strict=True)])
    n = len(seeds)
    state, start = None, np.ones(n, dtype=bool)
    alive, returns = np.ones(n, dtype=bool), np.zeros(n)
    while alive.any():
        action, state = model.predict(
            vecnorm.normalize_obs(obs), state=state, episode_start=start, deterministic=True
        )
        start = np.zeros(n, dtype=bool)
        for i in np.flatnonzero(alive):
            o, r, term, trunc, _ = env_list[i].step(int(action[i]))
            obs[i] = o
            returns[i] += r
            alive[i] = not (term or trunc)
    return float(returns.mean())


def run_sb3(seed: int, eval_every: int, episodes: int, max_steps: int, curve: bool = False) -> dict:
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
    from torch import nn

    def linear(start: float):
        return lambda progress: progress * start

    # RL Zoo's ExperimentManager gives VecNormalize the algorithm's gamma ("use the same
    # discount factor as for the algorithm"); VecNormalize's own default is 0.99.
    venv = VecNormalize(DummyVecEnv([lambda: gym.make(ENV_ID) for _ in range(8)]), gamma=0.98)
    venv.seed(seed)
    model = RecurrentPPO(
        "MlpLstmPolicy",
        venv,
        n_steps=32,
        batch_size=256,
        gae_lambda=0.8,
        gamma=0.98,
        n_epochs=20,
        ent_coef=0.0,
        learning_rate=linear(1e-3),
        clip_range=linear(0.2),
        policy_kwargs=dict(
            ortho_init=False,
            activation_fn=nn.ReLU,
            lstm_hidden_size=64,
            enable_critic_lstm=True,
            net_arch=dict(pi=[64], vf=[64]),
        ),
        seed=seed,
        device="cpu",
        verbose=0,
    )
    seeds = eval_seeds(seed, episodes)
    result = {"side": "sb3", "seed": seed, "solved_steps": None, "solved_s": None}

    class Stop(BaseCallback):
        """Evaluates after an update, as the evolstm side does: at the start of the rollout
        that follows it (``on_rollout_start``) and at the end of training; ``_on_step`` then
        ends ``learn`` once an evaluation passed."""

        def __init__(self) -> None:
            super().__init__()
            self.next_eval, self.eval_s, self.t0 = eval_every, 0.0, time.perf_counter()
            self.solved = False

        def _check(self) -> None:
            if self.solved or self.num_timesteps < self.next_eval:
                return
            self.next_eval += eval_every
            e0 = time.perf_counter()
            train_s = e0 - self.t0 - self.eval_s  # training only, up to this evaluation
            mean = _sb3_eval(self.model, venv, seeds)
            self.eval_s += time.perf_counter() - e0
            if curve:  # the last train()'s records are still in the logger (dumped after this)
                log = self.model.logger.name_to_value
                print(
                    f"         sb3     eval at {self.num_timesteps} steps: {mean:.1f}"
                    + _stats(
                        -log.get("train/entropy_loss", float("nan")),
                        log.get("train/value_loss", float("nan")),
                        log.get("train/explained_variance", float("nan")),
                        log.get("train/approx_kl", float("nan")),
                        log.get("train/clip_fraction", float("nan")),
                    ),
                    flush=True,
                )
            if mean >= THRESHOLD:
                result.update(solved_steps=self.num_timesteps, solved_s=train_s, eval=mean)
                self.solved = True

        def _on_rollout_start(self) -> None:
            self._check()

        def _on_training_end(self) -> None:
            self._check()

        def _on_step(self) -> bool:
            return not self.solved

    cb = Stop()
    model.learn(total_timesteps=max_steps, callback=cb)
    result.update(steps=model.num_timesteps, train_s=time.perf_counter() - cb.t0 - cb.eval_s)
    return result


def _fmt(r: dict) -> str:
    solved = (
        f"first eval >= 475 at {r['solved_steps']:>6} steps, {r['solved_s']:6.1f} s"
        if r["solved_steps"]
        else f"not solved in {r['steps']} steps ({r['train_s']:.1f} s)"
    )
    rate = r["steps"] / max(r["train_s"], 1e-9)
    return f"{r['side']:8s} seed {r['seed']}: {solved}; {rate:7.0f} env-steps/s training"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--eval-every", type=int, default=2048, help="env steps")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument(
        "--curve",
        action="store_true",
        help="print every evaluation of both sides with the last update's statistics",
    )
    parser.add_argument(
        "--set", nargs="*", default=[], help="overrides of the evolstm config (agent.critic=shared)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread; eval every {args.eval_every} steps")
    ratios = []
    for seed in args.seeds:
        ours = run_evolstm(
            seed, args.eval_every, args.episodes, args.max_steps, args.set, args.curve
        )
        print(_fmt(ours), flush=True)
        total = ours["time_rollout"] + ours["time_forward"]
        total += ours["time_backward"] + ours["time_optimizer"]
        print(
            "         where the time went: "
            + ", ".join(
                f"{k[5:]} {ours[k]:.1f} s ({ours[k] / ours['train_s']:.0%})"
                for k in ("time_rollout", "time_forward", "time_backward", "time_optimizer")
            )
            + f", other {ours['train_s'] - total:.1f} s",
            flush=True,
        )
        if args.skip_sb3:
            continue
        theirs = run_sb3(seed, args.eval_every, args.episodes, args.max_steps, args.curve)
        print(_fmt(theirs), flush=True)
        if ours["solved_steps"] and theirs["solved_steps"]:
            r_steps = ours["solved_steps"] / theirs["solved_steps"]
            r_time = ours["solved_s"] / theirs["solved_s"]
            ratios.append((r_steps, r_time))
            print(f"         evolstm / sb3: env steps {r_steps:.2f}x, wall-clock {r_time:.3f}x")
    if len(ratios) > 1:
        print(
            f"median evolstm / sb3 over {len(ratios)} seeds solved by both: env steps "
            f"{statistics.median(r[0] for r in ratios):.2f}x, wall-clock "
            f"{statistics.median(r[1] for r in ratios):.3f}x"
        )


if __name__ == "__main__":
    main()
