"""The policy-gradient learner's network: the ES agents' actor plus a critic, unrolled by BPTT.

The actor is a :class:`~evolstm.network.policy.RecurrentPolicy` (the same cells and flat layout the
neuroevolution agents evolve), so ``actor.vector`` is exactly what the trainer evaluates and
saves. The critic lives outside that vector: either a linear value head on the actor's
recurrent features (``critic: shared``) or a second recurrent core of the same kind with a
one-output readout (``critic: separate``).

Letters: ``T`` time, ``B`` envs (sequences), ``H`` hidden, ``A`` head outputs.

Two ways to unroll a sequence, proven equal by ``tests/test_pg_sequences.py``:

* the **step path**: one tensor program per time step for the whole batch
  (:meth:`RecurrentCore.features`), resetting the state where ``episode_start`` is True;
* the **fused path** for the ``lstm`` cell: ``torch.lstm`` (the kernel behind
  ``torch.nn.LSTM``) over the whole sequence at once, with our pre-transposed ``[in+H, 4H]``
  weights mapped to torch's ``weight_ih [4H, in]`` / ``weight_hh [4H, H]`` (same gate order
  ``i, f, g, o``). A batch whose sequences hold no episode start after step 0 is one call
  (a start at step 0 is folded into the initial state); otherwise one call per segment
  between the steps where some sequence starts an episode, zeroing those sequences' state
  in between exactly as the step path does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from evolstm.network import cells
from evolstm.network.layout import PolicySpec, init_vector, unflatten
from evolstm.network.policy import RecurrentCore, RecurrentPolicy, State

CRITICS = ("shared", "separate")


def flat_state(state: State) -> list[torch.Tensor]:
    """Per-layer ``(h, c)`` tuples -> one flat list of tensors ``[B, ...]``."""
    return [t for layer in state for t in layer]


def nest_state(tensors: Sequence[torch.Tensor], per_layer: int) -> State:
    """Inverse of :func:`flat_state`."""
    return [tuple(tensors[i : i + per_layer]) for i in range(0, len(tensors), per_layer)]


def unroll_core(
    core: RecurrentCore,
    vector: torch.Tensor,
    x: torch.Tensor,
    state: State,
    episode_start: torch.Tensor,
    *,
    fused: bool = True,
) -> torch.Tensor:
    """Features ``[T, B, F]`` of ``x [T, B, in]`` from ``state`` (per layer ``[B, H]``).

    ``episode_start [T, B]`` zeroes a slot's state before that step (inside the unroll, so no
    gradient or information crosses an episode boundary). ``fused`` allows the ``torch.lstm``
    path for the sequences without an episode start after step 0.
    """
    params = unflatten(core.layout, vector)
    if not (fused and core.spec.cell == "lstm" and core.spec.memory):
        return _step_unroll(core, params, x, state, episode_start)
    # Fused: one torch.lstm call per segment between the time steps where any sequence
    # starts an episode; at a segment's first step the state of exactly those sequences
    # is zeroed, as the step path does.
    T = x.shape[0]
    cuts = (episode_start[1:].any(1).nonzero().squeeze(1) + 1).tolist()
    ys = []
    for a, b in zip([0, *cuts], [*cuts, T], strict=True):
        state = cells.reset_state(state, episode_start[a])
        y, state = _fused_lstm(core, params, x[a:b], state)
        ys.append(y)
    return ys[0] if len(ys) == 1 else torch.cat(ys)


def _step_unroll(core, params, x, state, episode_start) -> torch.Tensor:
    ys = []
    for t in range(x.shape[0]):
        y, state = core.features(params, x[t], state, episode_start[t])
        ys.append(y)
    return torch.stack(ys)


def _fused_lstm(
    core: RecurrentCore, params, x: torch.Tensor, state: State
) -> tuple[torch.Tensor, State]:
    """``torch.lstm`` over ``x [T, B, in]`` with our layout's weights (see the module doc)."""
    flat = []
    for layer, size in enumerate(core.layout.layer_inputs):
        W, b = params[f"layer{layer}.W"], params[f"layer{layer}.b"]
        flat += [W[:size].t(), W[size:].t(), b, torch.zeros_like(b)]
    h0 = torch.stack([layer[0] for layer in state])
    c0 = torch.stack([layer[1] for layer in state])
    y, hn, cn = torch.lstm(x, (h0, c0), flat, True, len(state), 0.0, False, False, False)
    return y, [(hn[i], cn[i]) for i in range(len(state))]


class PGNetwork(nn.Module):
    """Actor (the ES layout) and critic for policy gradients.

    :param spec: the actor's :class:`PolicySpec` (``ctx.policy_spec``).
    :param vector: the actor's initial flat parameters ``[D]`` (None: a fresh one).
    :param critic: ``"shared"`` (value head on the actor's features) or ``"separate"``.
    :param seed: seed of the critic's initialisation.
    :param init_log_std: initial log standard deviation of a Box action.
    :param forget_bias: initial forget-gate bias of the LSTM cells, actor and critic (None:
        the cells' default 1). A larger one keeps the cell state longer at the start, so
        gradients reach observations many steps back (Gers et al. 2000; sigmoid(1) = 0.73
        keeps 0.73^20 = 0.2% of a value over 20 steps, sigmoid(4) = 0.98 keeps 70%).
    """

    def __init__(
        self,
        spec: PolicySpec,
        vector: torch.Tensor | None,
        *,
        critic: str = "separate",
        seed: int = 0,
        init_log_std: float = 0.0,
        forget_bias: float | None = None,
    ) -> None:
        super().__init__()
        self.actor = RecurrentPolicy(spec, vector)
        if self.actor.log_std is not None:
            with torch.no_grad():
                self.actor.log_std.fill_(init_log_std)
        self.critic_kind = critic
        gen = torch.Generator().manual_seed(seed + 1)
        if critic == "shared":
            F = self.actor.layout.readout_in
            bound = 1.0 / np.sqrt(F)
            self.value_w = nn.Parameter((torch.rand(F, generator=gen) * 2 - 1) * bound)
            self.value_b = nn.Parameter(torch.zeros(()))
            self.critic_core = None
        elif critic == "separate":
            value_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
            critic_spec = dataclasses.replace(spec, action_space=value_space)
            self.critic_core = RecurrentCore(critic_spec)
            self.critic_vector = nn.Parameter(init_vector(critic_spec, gen))
        else:
            raise ValueError(f"critic must be one of {CRITICS}, got {critic!r}")
        if forget_bias is not None and spec.cell != "gru":
            with torch.no_grad():
                set_forget_bias(self.actor.layout, self.actor.vector, spec.hidden, forget_bias)
                if self.critic_core is not None:
                    layout = self.critic_core.layout
                    set_forget_bias(layout, self.critic_vector, spec.hidden, forget_bias)

    @property
    def core(self) -> RecurrentCore:
        return self.actor.core

    @property
    def per_layer(self) -> int:
        return 1 if self.core.spec.cell == "gru" else 2

    def init_state(self, batch: int) -> list[torch.Tensor]:
        """Zero state of actor (and critic) as a flat list of ``[B, ...]`` tensors."""
        state = flat_state(self.core.init_state((batch,)))
        if self.critic_core is not None:
            state += flat_state(self.critic_core.init_state((batch,)))
        return state

    def _split(self, state: Sequence[torch.Tensor]) -> tuple[State, State | None]:
        n = len(self.core.layout.layer_inputs) * self.per_layer
        actor = nest_state(state[:n], self.per_layer)
        critic = nest_state(state[n:], self.per_layer) if self.critic_core is not None else None
        return actor, critic

    def _value(self, y: torch.Tensor) -> torch.Tensor:
        return y @ self.value_w + self.value_b

    def step(
        self, x: torch.Tensor, state: Sequence[torch.Tensor], episode_start: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """One step for ``B`` envs: ``x [B, in]`` -> head outputs ``[B, A]``, values ``[B]``,
        new state."""
        a_state, c_state = self._split(state)
        params = self.actor.params()
        y, a_state = self.core.features(params, x, a_state, episode_start)
        out = self.core.readout(params, y)
        new_state = flat_state(a_state)
        if self.critic_core is None:
            return out, self._value(y), new_state
        cparams = unflatten(self.critic_core.layout, self.critic_vector)
        yc, c_state = self.critic_core.features(cparams, x, c_state, episode_start)
        value = self.critic_core.readout(cparams, yc)[..., 0]
        return out, value, new_state + flat_state(c_state)

    def unroll(
        self,
        x: torch.Tensor,
        state: Sequence[torch.Tensor],
        episode_start: torch.Tensor,
        *,
        fused: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """BPTT unroll: ``x [T, B, in]``, initial state, ``episode_start [T, B]`` -> head
        outputs ``[T, B, A]`` and values ``[T, B]``."""
        a_state, c_state = self._split(state)
        y = unroll_core(self.core, self.actor.vector, x, a_state, episode_start, fused=fused)
        out = self.core.readout(self.actor.params(), y)
        if self.critic_core is None:
            return out, self._value(y)
        yc = unroll_core(
            self.critic_core, self.critic_vector, x, c_state, episode_start, fused=fused
        )
        cparams = unflatten(self.critic_core.layout, self.critic_vector)
        return out, self.critic_core.readout(cparams, yc)[..., 0]

    def distribution(self, out: torch.Tensor) -> torch.distributions.Distribution:
        return self.actor.distribution(out)


def set_forget_bias(layout, vector: torch.Tensor, hidden: int, value: float) -> None:
    """Set the forget-gate block (``[H:2H]`` of each LSTM layer's ``b``, torch's gate order
    ``i, f, g, o``) of the flat ``vector [D]`` to ``value``, in place."""
    for layer in range(len(layout.layer_inputs)):
        entry = layout[f"layer{layer}.b"]
        vector[entry.offset + hidden : entry.offset + 2 * hidden] = value


def sample_actions(
    head, dist: torch.distributions.Distribution, generator: torch.Generator
) -> torch.Tensor:
    """A sample of ``dist`` drawn from ``generator`` (torch's ``sample`` only uses the global
    RNG, which would tie a rollout worker's actions to everything else drawing from it):
    Gumbel-max for the categoricals, ``mean + std * eps`` for the Normal."""
    if head.is_discrete:
        logits = dist.categorical.logits
        u = torch.rand(logits.shape, generator=generator).clamp_(1e-20, 1.0)
        return dist._shift((logits - torch.log(-torch.log(u))).argmax(-1))
    normal = dist.base_dist
    eps = torch.randn(normal.loc.shape, generator=generator)
    return normal.loc + normal.scale * eps
