"""What the policy-gradient agents (``agents/rpg.py``, ``agents/ppo.py``) share.

The network (:class:`~evolstm.network.pg_model.PGNetwork`: the ES agents' actor vector plus a
critic), Adam, the collectors (in-process or Ray), observation normalisation as for ES
(running statistics of the encoded observations, frozen during a rollout), masked losses,
and a state that is data (tensors and plain Python only) so a run resumes bitwise.
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar, Literal

import numpy as np
import pydantic
import torch

from evolstm.agent import Agent, AgentContext, AgentOptions
from evolstm.errors import TrainingDiverged
from evolstm.network.layout import init_vector
from evolstm.network.obs_norm import ObsNormalizer, RunningStats
from evolstm.network.pg_model import PGNetwork
from evolstm.rollouts.evaluation import single_torch_thread
from evolstm.rollouts.pg_rollout import Rollout

RETURN_WINDOW = 100  # episodes behind the reported return_mean (as SB3's ep_info_buffer)


class PGOptions(AgentOptions):
    """Options both policy-gradient agents share."""

    num_envs: int = pydantic.Field(8, ge=1, description="env slots stepped in lockstep (N)")
    lr: float = pydantic.Field(1e-3, gt=0, description="Adam learning rate")
    adam_eps: float = pydantic.Field(1e-5, gt=0, description="Adam epsilon")
    gamma: float = pydantic.Field(0.99, gt=0, le=1, description="discount factor")
    ent_coef: float = pydantic.Field(0.0, ge=0, description="entropy bonus weight")
    vf_coef: float = pydantic.Field(
        0.5,
        ge=0,
        description="value loss weight; the value loss is 0.5 * mean squared error "
        "(CleanRL's form), so SB3's vf_coef v is 2 * v here",
    )
    max_grad_norm: float | None = pydantic.Field(
        0.5, gt=0, description="clip the global gradient norm to this (null: no clipping)"
    )
    critic: Literal["shared", "separate"] = pydantic.Field(
        "separate",
        description="value head on the actor's recurrent features (shared) or its own "
        "recurrent core of the same kind (separate)",
    )
    obs_norm: bool = pydantic.Field(
        True, description="normalise observations with running statistics (frozen per rollout)"
    )
    obs_norm_env_steps: int | None = pydantic.Field(
        None,
        ge=0,
        description="stop updating the observation statistics once this many env steps are "
        "done (null: never); the normaliser then stays fixed while the policy converges",
    )
    obs_clip: float = pydantic.Field(
        5.0,
        gt=0,
        description="normalised observations are clipped to +-obs_clip (SB3's VecNormalize: "
        "10; a clip of a few stds saturates the rarer large inputs, e.g. a drifting cart)",
    )
    reward_scale: float = pydantic.Field(
        1.0, gt=0, description="rewards are multiplied by this for the losses (not the metrics)"
    )
    init_log_std: float = pydantic.Field(0.0, description="initial log stdev of Box actions")
    forget_bias: float | None = pydantic.Field(
        None,
        description="initial forget-gate bias of the LSTM cells (null: the cells' 1); larger "
        "keeps memories longer at the start (long delays, e.g. the T-maze)",
    )
    fused: bool = pydantic.Field(
        True, description="use torch.lstm over sequences without an episode start (lstm cell)"
    )
    anneal_env_steps: int | None = pydantic.Field(
        None, ge=1, description="decay the learning rate linearly to 0 over this many env steps"
    )


def masked_mean(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over the True entries of ``mask`` (same shape); garbage elsewhere is
    ignored, NaN included (``torch.where``, not a product)."""
    return torch.where(mask, t, torch.zeros_like(t)).sum() / mask.sum().clamp(min=1)


def explained_variance(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """``1 - Var[target - pred] / Var[target]`` over the valid steps (NaN when flat)."""
    y, p = target[mask].double(), pred[mask].double()
    var = y.var(unbiased=False) if y.numel() else torch.tensor(0.0)
    if var <= 0:
        return float("nan")
    return float(1 - (y - p).var(unbiased=False) / var)


class PGAgent(Agent):
    """The base of the recurrent policy-gradient agents (family ``pg``)."""

    family: ClassVar[Literal["pg"]] = "pg"
    Options: ClassVar[type[AgentOptions]] = PGOptions

    def __init__(self, options: PGOptions, ctx: AgentContext) -> None:
        super().__init__(options, ctx)
        spec = ctx.policy_spec
        vector = init_vector(spec, torch.Generator().manual_seed(ctx.seed))
        self.net_kwargs = {
            "critic": options.critic,
            "seed": ctx.seed,
            "init_log_std": options.init_log_std,
            "forget_bias": options.forget_bias,
        }
        self.net = PGNetwork(spec, vector, **self.net_kwargs)
        self.optimizer = torch.optim.Adam(
            self.net.parameters(), lr=options.lr, eps=options.adam_eps
        )
        seq = np.random.SeedSequence([ctx.seed, 23])
        self.generator = torch.Generator().manual_seed(int(seq.generate_state(1)[0]))
        self.obs_stats: RunningStats | None = RunningStats() if options.obs_norm else None
        self.rollout_norm: ObsNormalizer | None = None
        self.iteration = 0
        self.env_steps = 0
        self.recent_returns: list[float] = []
        self.collectors = self._build_collectors()

    def _build_collectors(self) -> Any:
        o, ctx = self.options, self.ctx
        address = ctx.ray_address
        if address is None:
            from evolstm.rollouts.pg_collector import LocalCollectors

            return LocalCollectors(ctx.make_vector_env, o.num_envs, ctx.seed)
        from evolstm.rollouts.pg_collector import RayCollectors

        return RayCollectors(
            ctx.make_vector_env,
            ctx.policy_spec,
            self.net_kwargs,
            o.num_envs,
            ctx.seed,
            num_workers=ctx.num_workers,
            address=address,
            timeout_s=ctx.shard_timeout_s,
        )

    # -- shared steps ----------------------------------------------------------------
    def collect(self, **kw) -> tuple[Rollout, float]:
        """One rollout with the normaliser frozen now; merges its observation statistics.
        Returns the rollout and the seconds it took."""
        start = time.perf_counter()
        norm = None if self.obs_stats is None else self.obs_stats.normalizer(self.options.obs_clip)
        rollout = self.collectors.collect(self.net, norm, **kw)
        self.rollout_norm = norm
        limit = self.options.obs_norm_env_steps
        if self.obs_stats is not None and (limit is None or self.env_steps < limit):
            self.obs_stats.merge(RunningStats.from_state_dict(rollout["obs_stats"]))
        self.recent_returns = (self.recent_returns + list(rollout["episode_returns"]))[
            -RETURN_WINDOW:
        ]
        self.env_steps += int(rollout["valid"].sum())
        return rollout, time.perf_counter() - start

    def progress_left(self) -> float:
        """1 at the start, falling linearly to 0 at ``anneal_env_steps`` (1 without it)."""
        total = self.options.anneal_env_steps
        return 1.0 if total is None else max(0.0, 1.0 - self.env_steps / total)

    def optimise(
        self, loss: torch.Tensor, terms: dict[str, torch.Tensor | float] | None = None
    ) -> tuple[float, float, float]:
        """Backward, clip, Adam step. Returns ``(grad_norm, backward_s, optimiser_s)``.

        ``terms`` names the parts of ``loss`` (``policy_loss``, ``value_loss``, ...). A NaN or
        infinite loss or gradient raises :class:`~evolstm.errors.TrainingDiverged` naming the
        iteration and the culprit *before* Adam steps, so the parameters stay finite (the
        trainer then checkpoints the last completed iteration).
        """
        for group in self.optimizer.param_groups:
            group["lr"] = self.options.lr * self.progress_left()
        self._check_finite({**(terms or {}), "loss": loss}, "is")
        t0 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t1 = time.perf_counter()
        max_norm = self.options.max_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(
            self.net.parameters(), max_norm if max_norm is not None else math.inf
        )
        if not torch.isfinite(norm):
            grads = {
                f"the gradient of {name}": p.grad
                for name, p in self.net.named_parameters()
                if p.grad is not None
            }
            self._check_finite(grads, "has")
        self.optimizer.step()
        return float(norm), t1 - t0, time.perf_counter() - t1

    def _check_finite(self, named: dict[str, torch.Tensor | float], verb: str) -> None:
        for name, value in named.items():
            t = torch.as_tensor(value).detach()
            if not bool(torch.isfinite(t).all()):
                bad = t[~torch.isfinite(t)].flatten()[0].item()
                raise TrainingDiverged(
                    f"{type(self).__name__.lower()}: {name} {verb} {bad} in iteration "
                    f"{self.iteration + 1} (at {self.env_steps} env steps); the update was not "
                    "applied. Try a smaller agent.lr or agent.reward_scale, or "
                    "agent.max_grad_norm"
                )

    def episode_metrics(self, rollout: Rollout) -> dict[str, float]:
        recent = self.recent_returns or [float("nan")]
        out = {
            "env_steps": float(int(rollout["valid"].sum())),
            "return_mean": float(np.mean(recent)),
            "return_max": float(np.max(recent)),
            "episodes": float(len(rollout["episode_returns"])),
        }
        if rollout["successes"]:
            out["success_rate"] = float(np.mean(rollout["successes"]))
        return out

    # -- the Agent protocol ----------------------------------------------------------
    def step(self) -> dict[str, float]:
        """One iteration (:meth:`iterate`) at one torch thread: the tensors are small, and on
        a shared 2-core machine a second thread made the update 6-30x slower, not faster
        (``bench/pg.py``)."""
        with single_torch_thread():
            return self.iterate()

    def iterate(self) -> dict[str, float]:
        """Collect and update once; return the metrics (see :meth:`Agent.step`)."""
        raise NotImplementedError

    def policy_vector(self) -> torch.Tensor:
        return self.net.actor.to_vector()

    def obs_normalizer(self) -> ObsNormalizer | None:
        """The normaliser the current policy was trained with (the last rollout's)."""
        return self.rollout_norm

    def state_dict(self) -> dict[str, Any]:
        stats = self.obs_stats
        return {
            "net": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "obs_stats": None if stats is None else stats.to_tensors(),
            "rollout_norm": None if self.rollout_norm is None else self.rollout_norm.state_dict(),
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "recent_returns": list(self.recent_returns),
            "collectors": self.collectors.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        if self.obs_stats is not None:
            self.obs_stats = RunningStats.from_tensors(state["obs_stats"])
        self.rollout_norm = ObsNormalizer.from_state_dict(state["rollout_norm"])
        self.iteration = int(state["iteration"])
        self.env_steps = int(state["env_steps"])
        self.recent_returns = [float(r) for r in state["recent_returns"]]
        self.collectors.load_state_dict(state["collectors"])

    def close(self) -> None:
        self.collectors.close()
