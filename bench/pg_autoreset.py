"""Diagnostic for issue 9's env-step gap: evolstm's PPO on sb3-contrib's kind of env.

``bench/pg.py`` runs evolstm's PPO on the native batch env (``CartPoleNoVelVectorEnv``,
gymnasium 1.x NEXT_STEP autoreset: one reset step per episode that is no action), and
sb3-contrib on a ``DummyVecEnv`` of 8 single envs with same-step autoreset. This script
separates env from learner by running evolstm's learner unchanged on

* ``--env sync-next``: gymnasium's ``SyncVectorEnv`` of 8 separate ``CartPoleNoVelEnv``
  (NEXT_STEP, the library's own collector: only the env implementation changes), or
* ``--env sync-same``: the same with ``autoreset_mode=SAME_STEP``, collected as sb3 does:
  every step is an action, the step after a done starts the next episode, and a truncated
  step bootstraps from the critic's value of ``info["final_obs"]`` (the state carried into
  it, as sb3-contrib's ``collect_rollouts`` does).

Evaluation and everything else as in ``bench/pg.py`` (same cadence, seeds and threshold).

    python bench/pg_autoreset.py --env sync-same --seeds 0 1 2 3 4 5 6 7
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from pathlib import Path

_bench_dir = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _bench_dir]
sys.path.insert(0, str(_bench_dir.parent))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from gymnasium.vector import AutoresetMode, SyncVectorEnv  # noqa: E402

import envs  # noqa: E402, F401
import evolstm.pg_agent  # noqa: E402
from agents.ppo import PPO  # noqa: E402
from evolstm.network.obs_norm import RunningStats  # noqa: E402
from evolstm.network.pg_model import sample_actions  # noqa: E402
from evolstm.rollouts.pg_collector import LocalCollectors  # noqa: E402
from evolstm.rollouts.pg_rollout import Collector  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_pg", _bench_dir / "pg.py")
pg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pg)  # bench/ is not a package (and its envs.py shadows envs/)


def sync_env(num_envs: int, mode: AutoresetMode) -> gym.vector.VectorEnv:
    return SyncVectorEnv(
        [lambda: gym.make(pg.ENV_ID) for _ in range(num_envs)], autoreset_mode=mode
    )


class SameStepCollector(Collector):
    """:class:`Collector` for SAME_STEP autoreset (every step an action, as sb3's)."""

    def _collect(self, net, obs_norm, steps, seq_len, first_episode_only):
        N = self.num_envs
        head = net.actor.head
        if self.state is None:
            self.state = net.init_state(N)
        stats = RunningStats()
        xs, acts, logps, values, rewards, terms, truncs, starts, seq_states = ([] for _ in range(9))
        next_values = []  # V of the observation after each step (final_obs when it ended)
        done_returns, done_lengths = [], []
        for t in range(steps):
            raw = net.core.encoder(self.obs)
            stats.update(raw.numpy())
            x = raw if obs_norm is None else obs_norm(raw)
            start = torch.from_numpy(self.episode_start.copy())
            if seq_len is not None and t % seq_len == 0:
                seq_states.append([s.clone() for s in self.state])
            out, value, self.state = net.step(x, self.state, start)
            dist = net.distribution(out)
            sample = sample_actions(head, dist, self.generator)
            logp = dist.log_prob(sample)
            actions = head.to_env(head.action_from_sample(sample))
            self.obs, reward, terminated, truncated, info = self.env.step(actions)
            terminated, truncated = np.asarray(terminated), np.asarray(truncated)
            boot = torch.zeros(N)
            if truncated.any():
                final = np.stack(
                    [info["final_obs"][i] if truncated[i] else self.obs[i] for i in range(N)]
                )
                fx = net.core.encoder(final)
                fx = fx if obs_norm is None else obs_norm(fx)
                _, fv, _ = net.step(fx, self.state, torch.zeros(N, dtype=torch.bool))
                boot = torch.where(torch.from_numpy(truncated), fv, boot)
            xs.append(x)
            acts.append(sample)
            logps.append(logp)
            values.append(value)
            next_values.append(boot)
            rewards.append(torch.from_numpy(np.asarray(reward, dtype=np.float64)))
            terms.append(torch.from_numpy(terminated))
            truncs.append(torch.from_numpy(truncated))
            starts.append(start)
            ended = terminated | truncated
            self.episode_return += reward
            self.episode_length += 1
            if ended.any():
                done_returns += self.episode_return[ended].tolist()
                done_lengths += self.episode_length[ended].tolist()
                self.episode_return[ended] = 0.0
                self.episode_length[ended] = 0
            self.episode_start = ended.copy()
        raw = net.core.encoder(self.obs)
        x = raw if obs_norm is None else obs_norm(raw)
        _, last_value, _ = net.step(x, self.state, torch.from_numpy(self.episode_start.copy()))
        T = len(xs)
        return {
            "x": torch.stack(xs),
            "actions": torch.stack(acts),
            "logp": torch.stack(logps),
            "values": torch.cat([torch.stack(values), last_value[None]]),
            "final_values": torch.stack(next_values),
            "rewards": torch.stack(rewards).float(),
            "terminated": torch.stack(terms),
            "truncated": torch.stack(truncs),
            "valid": torch.ones(T, N, dtype=torch.bool),
            "episode_start": torch.stack(starts),
            "seq_states": [torch.stack(s) for s in zip(*seq_states, strict=True)]
            if seq_states
            else [],
            "obs_stats": stats.state_dict(),
            "episode_returns": done_returns,
            "episode_lengths": done_lengths,
            "successes": [],
        }


def same_step_gae(rollout, rewards, gamma: float, lam: float):
    """GAE where the step after a done is the next episode's first step (sb3's buffer):
    a truncated step bootstraps from ``final_values``, a terminated one from nothing."""
    values, T = rollout["values"], rewards.shape[0]
    term, trunc = rollout["terminated"], rollout["truncated"]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(T)):
        ended = term[t] | trunc[t]
        nxt = torch.where(trunc[t], rollout["final_values"][t], values[t + 1])
        nxt = torch.where(term[t], torch.zeros_like(nxt), nxt)
        delta = rewards[t] + gamma * nxt - values[t]
        last = delta + gamma * lam * (~ended).float() * last
        adv[t] = last
    return adv, adv + values[:T]


class SameStepPPO(PPO):
    def advantages(self, rollout):
        o = self.options
        rewards = rollout["rewards"]
        if self.reward_norm is not None:
            ended = rollout["terminated"] | rollout["truncated"]
            rewards = self.reward_norm(rewards, rollout["valid"], ended)
        return same_step_gae(rollout, rewards * o.reward_scale, o.gamma, o.gae_lambda)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=["sync-next", "sync-same"], required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--curve", action="store_true")
    parser.add_argument("--set", nargs="*", default=[])
    args = parser.parse_args()
    torch.set_num_threads(1)
    same = args.env == "sync-same"
    mode = AutoresetMode.SAME_STEP if same else AutoresetMode.NEXT_STEP

    def build(self):
        local = LocalCollectors.__new__(LocalCollectors)
        cls = SameStepCollector if same else Collector
        local.collector = cls(lambda n: sync_env(n, mode), self.options.num_envs, self.ctx.seed, 0)
        return local

    evolstm.pg_agent.PGAgent._build_collectors = build
    if same:
        import evolstm.run.registry as registry

        original = registry.get_agent
        registry.get_agent = lambda name: SameStepPPO if name == "ppo" else original(name)
        pg.get_agent = registry.get_agent
    hits = []
    for seed in args.seeds:
        r = pg.run_evolstm(seed, 2048, 32, args.max_steps, args.set, args.curve)
        print(f"[{args.env}] " + pg._fmt(r), flush=True)
        hits.append(r["solved_steps"] or float("inf"))
    print(f"[{args.env}] median env steps to the first eval >= 475: {statistics.median(hits)}")


if __name__ == "__main__":
    main()
