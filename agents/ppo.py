"""Recurrent PPO with the ES agents' LSTM (Schulman et al. 2017, https://arxiv.org/abs/1707.06347).

Each iteration collects ``n_steps`` steps in each of ``num_envs`` slots, computes GAE with
NEXT_STEP autoreset handled (:func:`evolstm.rollouts.pg_rollout.gae`: truncation bootstraps from the
final observation's value, termination does not; reset steps are no loss terms), cuts each
slot's rollout into sequences of ``seq_len`` steps (padded, with a validity mask), and runs
``epochs`` passes of minibatches of whole sequences, each from one env. Every sequence
starts from the recurrent state stored when it was collected and zeroes it at each episode
start inside the unroll. Advantages are normalised, and the clipped objective, value loss,
entropy, KL, clip fraction and explained variance are averaged over valid steps only.
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

import pydantic
import torch

from evolstm.agent import AgentContext, AgentOptions
from evolstm.pg_agent import PGAgent, PGOptions, explained_variance, masked_mean
from evolstm.reward_norm import ReturnNormalizer
from evolstm.rollouts.evaluation import TRAIN_STREAM, episode_seeds
from evolstm.rollouts.pg_rollout import Rollout, gae, pad_time


class PPOOptions(PGOptions):
    """Recurrent PPO options (defaults: RL Zoo's RecurrentPPO on CartPoleNoVel-v1)."""

    n_steps: int = pydantic.Field(32, ge=1, description="steps per slot per iteration (T)")
    seq_len: int = pydantic.Field(32, ge=1, description="BPTT sequence length (L)")
    minibatches: int = pydantic.Field(1, ge=1, description="minibatches of sequences per epoch")
    epochs: int = pydantic.Field(20, ge=1, description="passes over each rollout")
    gamma: float = pydantic.Field(0.98, gt=0, le=1, description="discount factor")
    gae_lambda: float = pydantic.Field(0.8, ge=0, le=1, description="GAE lambda")
    clip: float = pydantic.Field(0.2, gt=0, description="PPO ratio clip (annealed with lr)")
    clip_vf: float | None = pydantic.Field(
        None, gt=0, description="clip the value change per update (null: no value clipping)"
    )
    target_kl: float | None = pydantic.Field(
        None, gt=0, description="stop an iteration's epochs once the mean KL passes this"
    )
    random_cut: bool = pydantic.Field(
        False,
        description="each epoch, cut one sequence in two at a random step (the second part "
        "starts from the recurrent state stored there at collection), as sb3-contrib's "
        "RecurrentRolloutBuffer does by rotating its buffer; keeps the state at every step",
    )
    reward_norm: bool = pydantic.Field(
        False,
        description="divide rewards by the running std of each slot's discounted return "
        "(gamma), clipped to +-10, as SB3's VecNormalize(norm_reward=True); reward_scale "
        "then multiplies the result",
    )


def to_sequences(t: torch.Tensor, L: int) -> torch.Tensor:
    """``[T, N, ...]`` -> ``[L, S * N, ...]`` (``S = ceil(T / L)``, zero padded); column
    ``s * N + n`` is sequence ``s`` of slot ``n``."""
    T, N = t.shape[:2]
    S = math.ceil(T / L)
    t = pad_time(t, S * L)
    return t.reshape(S, L, N, *t.shape[2:]).transpose(0, 1).reshape(L, S * N, *t.shape[2:])


def cut_sequence(
    data: dict[str, Any], column: int, offset: int, state: list[torch.Tensor]
) -> dict[str, Any]:
    """``data`` (sequences ``[L, C, ...]`` and ``"states"``, per tensor ``[C, ...]``) with
    sequence ``column`` cut at step ``0 < offset < L``: its steps from ``offset`` on become a
    new last column (``[C + 1]``, zero padded, invalid after ``L - offset`` steps) starting
    from ``state`` (per tensor ``[...]``, the state stored before that step), and are
    masked invalid in the original column. Every valid step stays in exactly one column.

    sb3-contrib's ``RecurrentRolloutBuffer.get`` does this once per epoch by rotating its
    flattened buffer by a random index (a sequence then starts mid-rollout from its stored
    state): BPTT is truncated at a random point, and nothing else changes."""
    L = data["valid"].shape[0]
    if not 0 < offset < L:
        raise ValueError(f"offset must be in (0, {L}), got {offset}")
    out: dict[str, Any] = {}
    for key, v in data.items():
        if key == "states":
            continue
        tail = torch.zeros_like(v[:, column])
        tail[: L - offset] = v[offset:, column]
        head = v[:, column].clone()
        if key == "valid":
            head[offset:] = False
        out[key] = torch.cat([v[:, :column], head[:, None], v[:, column + 1 :], tail[:, None]], 1)
    out["states"] = [torch.cat([s, t[None]]) for s, t in zip(data["states"], state, strict=True)]
    return out


def ppo_loss(agent_net, mb: dict[str, torch.Tensor], clip: float, o: PPOOptions, fused: bool):
    """The loss of one minibatch of sequences ``[L, B]``, its statistics (floats) and its
    terms (tensors: policy_loss, value_loss, entropy), all over valid steps."""
    valid = mb["valid"]
    x = torch.where(valid[..., None], mb["x"], torch.zeros_like(mb["x"]))
    out, value = agent_net.unroll(x, mb["states"], mb["episode_start"], fused=fused)
    dist = agent_net.distribution(out)
    head = agent_net.actor.head
    actions = mb["actions"]
    fill = head.deterministic(out).detach() if head.is_discrete else torch.zeros_like(actions)
    vmask = valid if actions.dim() == valid.dim() else valid[..., None]
    actions = torch.where(vmask, actions, fill.to(actions.dtype))
    logp = dist.log_prob(actions)
    log_ratio = torch.where(valid, logp - mb["logp"], torch.zeros_like(logp))
    ratio = log_ratio.exp()
    adv = mb["advantages"]
    n = valid.sum().clamp(min=1)
    mean = masked_mean(adv, valid)
    std = torch.sqrt(masked_mean((adv - mean) ** 2, valid) * n / (n - 1).clamp(min=1))
    adv = torch.where(valid, (adv - mean) / (std + 1e-8), torch.zeros_like(adv))
    pg = -torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    if o.clip_vf is None:
        v_err = (value - mb["returns"]) ** 2
    else:
        clipped = mb["values"] + (value - mb["values"]).clamp(-o.clip_vf, o.clip_vf)
        v_err = torch.max((value - mb["returns"]) ** 2, (clipped - mb["returns"]) ** 2)
    entropy = dist.entropy()
    pg_loss, v_loss = masked_mean(pg, valid), 0.5 * masked_mean(v_err, valid)
    ent = masked_mean(entropy, valid)
    loss = pg_loss + o.vf_coef * v_loss - o.ent_coef * ent
    with torch.no_grad():
        stats = {
            "policy_loss": float(pg_loss),
            "value_loss": float(v_loss),
            "entropy": float(ent),
            "approx_kl": float(masked_mean(ratio - 1 - log_ratio, valid)),
            "clip_fraction": float(masked_mean(((ratio - 1).abs() > clip).float(), valid)),
        }
    terms = {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": ent}
    return loss, stats, terms


class PPO(PGAgent):
    """Recurrent PPO: clipped surrogate, GAE, value loss and entropy over BPTT sequences of
    the same LSTM the neuroevolution agents evolve."""

    Options: ClassVar[type[AgentOptions]] = PPOOptions

    def __init__(self, options: PPOOptions, ctx: AgentContext) -> None:
        super().__init__(options, ctx)
        self.reward_norm = (
            ReturnNormalizer(options.num_envs, options.gamma) if options.reward_norm else None
        )
        self.collectors.reset(episode_seeds(ctx.seed, TRAIN_STREAM, 0, options.num_envs))

    def advantages(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE advantages and value targets ``[T, N]`` of ``rollout`` (with ``reward_norm``
        this updates the return statistics: call it once per rollout)."""
        o: PPOOptions = self.options  # type: ignore[assignment]
        rewards = rollout["rewards"]
        if self.reward_norm is not None:  # stateful: once per rollout, in time order
            ended = rollout["terminated"] | rollout["truncated"]
            rewards = self.reward_norm(rewards, rollout["valid"], ended)
        return gae(
            rewards * o.reward_scale,
            rollout["values"],
            rollout["terminated"],
            rollout["truncated"],
            rollout["valid"],
            o.gamma,
            o.gae_lambda,
        )

    def batch(
        self, rollout: Rollout, adv: torch.Tensor, ret: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The rollout as sequences ``[L, S * N, ...]`` with advantages and returns."""
        L = self.options.seq_len
        seqs = {
            "x": rollout["x"],
            "actions": rollout["actions"],
            "logp": rollout["logp"],
            "values": rollout["values"][:-1],
            "valid": rollout["valid"],
            "episode_start": rollout["episode_start"],
            "advantages": adv,
            "returns": ret,
        }
        out = {k: to_sequences(v, L) for k, v in seqs.items()}
        # Stored states [S, N, ...] (or [T, N, ...] with random_cut: every step's).
        stride = L if self.options.random_cut else 1
        out["states"] = [s[::stride].reshape(-1, *s.shape[2:]) for s in rollout["seq_states"]]
        return out

    def cut_randomly(self, data: dict[str, Any], rollout: Rollout) -> dict[str, Any]:
        """``data`` cut once at a step drawn uniformly from the rollout's ``T x N`` steps
        (no cut when it falls on a sequence's first step), as sb3-contrib's random rotation
        of its buffer: see :func:`cut_sequence`."""
        L = self.options.seq_len
        T, N = rollout["valid"].shape
        flat = int(torch.randint(T * N, (1,), generator=self.generator))
        t, n = divmod(flat, N)
        if t % L == 0:
            return data
        state = [s[t, n] for s in rollout["seq_states"]]
        return cut_sequence(data, (t // L) * N + n, t % L, state)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["reward_norm"] = None if self.reward_norm is None else self.reward_norm.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.reward_norm is not None and state.get("reward_norm") is not None:
            self.reward_norm.load_state_dict(state["reward_norm"])

    def iterate(self) -> dict[str, float]:
        o: PPOOptions = self.options  # type: ignore[assignment]
        rollout, t_rollout = self.collect(steps=o.n_steps, seq_len=1 if o.random_cut else o.seq_len)
        t0 = time.perf_counter()
        adv, ret = self.advantages(rollout)
        data = self.batch(rollout, adv, ret)
        clip = o.clip * self.progress_left()
        sums: dict[str, float] = {}
        updates, t_fwd, t_bwd, t_opt = 0, 0.0, 0.0, 0.0
        stop = False
        for _ in range(o.epochs):
            epoch = self.cut_randomly(data, rollout) if o.random_cut else data
            order = torch.randperm(epoch["x"].shape[1], generator=self.generator)
            for idx in order.chunk(o.minibatches):
                mb = {k: v[:, idx] for k, v in epoch.items() if k != "states"}
                mb["states"] = [s[idx] for s in epoch["states"]]
                f0 = time.perf_counter()
                loss, stats, terms = ppo_loss(self.net, mb, max(clip, 1e-8), o, o.fused)
                t_fwd += time.perf_counter() - f0
                _, tb, to = self.optimise(loss, terms)
                t_bwd, t_opt = t_bwd + tb, t_opt + to
                updates += 1
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                if o.target_kl is not None and stats["approx_kl"] > 1.5 * o.target_kl:
                    stop = True
                    break
            if stop:
                break
        self.iteration += 1
        metrics = self.episode_metrics(rollout)
        metrics.update({k: v / max(updates, 1) for k, v in sums.items()})
        metrics["explained_variance"] = explained_variance(
            rollout["values"][:-1], ret, rollout["valid"]
        )
        metrics.update(
            time_rollout=t_rollout,
            time_forward=t_fwd,
            time_backward=t_bwd,
            time_optimizer=t_opt,
            time_update=time.perf_counter() - t0,
            updates=float(updates),
        )
        return metrics
