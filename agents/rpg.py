"""Recurrent policy gradients (Wierstra, Foerster, Peters & Schmidhuber, "Solving deep memory
POMDPs with recurrent policy gradients", ICANN 2007; Logic Journal of the IGPL 18(5), 2010,
https://doi.org/10.1093/jigpal/jzp049).

The likelihood-ratio gradient of whole episodes, back-propagated through time through the
LSTM: each iteration plays one fresh episode in each of ``num_envs`` slots (new seeds every
iteration, as the ES agents draw them), and ascends

    sum_t grad log pi(a_t | h_t) (R_t - b(h_t))

with ``R_t`` the discounted return-to-go (a truncated episode bootstraps from the value of
its final observation; a terminated one does not) and ``b(h_t)`` a history-dependent
baseline: the critic's value of the same history (:class:`~evolstm.network.pg_model.PGNetwork`),
regressed on ``R_t``. Optional entropy bonus and gradient-norm clipping; Discrete,
MultiDiscrete and Box actions through the policy's action head.
"""

from __future__ import annotations

import time
from typing import ClassVar

import pydantic
import torch

from evolstm.agent import AgentOptions
from evolstm.pg_agent import PGAgent, PGOptions, explained_variance, masked_mean
from evolstm.rollouts.evaluation import TRAIN_STREAM, episode_seeds
from evolstm.rollouts.pg_rollout import gae


class RPGOptions(PGOptions):
    """Recurrent policy-gradient options."""

    num_envs: int = pydantic.Field(16, ge=1, description="episodes per update (N)")
    max_steps: int = pydantic.Field(
        1000, ge=1, description="cap on an iteration's rollout length (steps per slot)"
    )
    normalize_advantages: bool = pydantic.Field(
        True, description="standardise R_t - b(h_t) over the batch's valid steps"
    )
    max_grad_norm: float | None = pydantic.Field(
        1.0, gt=0, description="clip the global gradient norm to this (null: no clipping)"
    )


class RPG(PGAgent):
    """REINFORCE through an LSTM by BPTT over whole episodes, with a value baseline on the
    recurrent state (Wierstra et al.'s recurrent policy gradients)."""

    Options: ClassVar[type[AgentOptions]] = RPGOptions

    def iterate(self) -> dict[str, float]:
        o: RPGOptions = self.options  # type: ignore[assignment]
        seeds = episode_seeds(self.ctx.seed, TRAIN_STREAM, self.iteration, o.num_envs)
        self.collectors.reset(seeds)
        rollout, t_rollout = self.collect(steps=o.max_steps, first_episode_only=True)
        valid = rollout["valid"]
        adv, ret = gae(
            rollout["rewards"] * o.reward_scale,
            rollout["values"],
            rollout["terminated"],
            rollout["truncated"],
            valid,
            o.gamma,
            1.0,
        )
        f0 = time.perf_counter()
        x = torch.where(valid[..., None], rollout["x"], torch.zeros_like(rollout["x"]))
        state = self.net.init_state(o.num_envs)
        out, value = self.net.unroll(x, state, rollout["episode_start"], fused=o.fused)
        dist = self.net.distribution(out)
        head = self.net.actor.head
        actions = rollout["actions"]
        if head.is_discrete:
            vmask = valid if actions.dim() == valid.dim() else valid[..., None]
            actions = torch.where(vmask, actions, head.deterministic(out).detach())
        logp = dist.log_prob(actions)
        if o.normalize_advantages:
            mean = masked_mean(adv, valid)
            std = masked_mean((adv - mean) ** 2, valid).sqrt()
            adv = (adv - mean) / (std + 1e-8)
        pg_loss = -masked_mean(logp * adv, valid)
        v_loss = 0.5 * masked_mean((value - ret) ** 2, valid)
        entropy = masked_mean(dist.entropy(), valid)
        loss = pg_loss + o.vf_coef * v_loss - o.ent_coef * entropy
        t_fwd = time.perf_counter() - f0
        grad_norm, t_bwd, t_opt = self.optimise(
            loss, {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy}
        )
        self.iteration += 1
        metrics = self.episode_metrics(rollout)
        metrics.update(
            policy_loss=float(pg_loss.detach()),
            value_loss=float(v_loss.detach()),
            entropy=float(entropy.detach()),
            grad_norm=grad_norm,
            explained_variance=explained_variance(rollout["values"][:-1], ret, valid),
            episode_length_mean=float(valid.sum()) / o.num_envs,
            time_rollout=t_rollout,
            time_forward=t_fwd,
            time_backward=t_bwd,
            time_optimizer=t_opt,
        )
        return metrics
