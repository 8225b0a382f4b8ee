"""Recurrent policies: one network definition for a single learner and for a population.

A policy is a stack of recurrent layers (:mod:`evolstm.network.cells`) followed by a linear
readout to the action head (:mod:`evolstm.network.spaces`). Its parameters live in ONE flat
vector ``[D]`` whose :class:`ParameterLayout` names every block, so that

* neuroevolution evolves ``[P, D]`` matrices and steps all ``P`` members in one batched
  tensor program (:class:`PopulationPolicy`, inputs ``[P, B, ...]``);
* policy gradients train the same vector as an ``nn.Parameter`` (:class:`RecurrentPolicy`,
  inputs ``[B, ...]``);
* ESP / Evolino address the parameters of one memory cell (:meth:`ParameterLayout.unit_indices`).

The spec, the layout and the fresh vector are :mod:`evolstm.network.layout`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from evolstm.errors import FileFormatError
from evolstm.network import cells
from evolstm.network.layout import (
    ParameterLayout,
    PolicySpec,
    encoder_for,
    init_vector,
    layout_for,
    unflatten,
)
from evolstm.network.obs_norm import ObsNormalizer
from evolstm.network.spaces import ActionHead

State = list[tuple[torch.Tensor, ...]]
POLICY_FORMAT = "evolstm.policy/2"


class RecurrentCore:
    """The forward computation shared by :class:`RecurrentPolicy` and :class:`PopulationPolicy`.

    All methods take named parameter blocks with an optional leading ``P`` axis and inputs
    ``[P, B, ...]`` (or ``[B, ...]`` when ``P`` is absent).
    """

    def __init__(self, spec: PolicySpec) -> None:
        self.spec = spec
        self.encoder = encoder_for(spec)
        self.head = ActionHead(spec.action_space)
        self.layout = layout_for(spec, self.encoder, self.head)
        self._layer_param_names = [
            self.layout.layer_param_names(layer) for layer in range(len(self.layout.layer_inputs))
        ]

    def init_state(self, batch_shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> State:
        """Zero recurrent state for every layer, each tensor ``[*batch_shape, H(, ht, wd)]``."""
        return [
            cells.zero_state(self.spec.cell, batch_shape, size, self.spec.hidden, dtype=dtype)
            for size in self.layout.layer_inputs
        ]

    def encode(
        self, obs: Any, batch_shape: tuple[int, ...], obs_norm: ObsNormalizer | None = None
    ) -> torch.Tensor:
        """Raw env observations (``prod(batch_shape)`` rows) -> ``[*batch_shape, in]``."""
        return self.shape_input(self.encoder(obs), batch_shape, obs_norm)

    def shape_input(
        self, x: torch.Tensor, batch_shape: tuple[int, ...], obs_norm: ObsNormalizer | None = None
    ) -> torch.Tensor:
        """Encoded observations ``[N, in]`` -> normalised ``[*batch_shape, in]``."""
        if obs_norm is not None:
            x = obs_norm(x)
        return x.reshape(*batch_shape, *x.shape[1:])

    def forward(
        self,
        params: Mapping[str, torch.Tensor],
        x: torch.Tensor,
        state: State,
        episode_start: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, State]:
        """One step: ``x [P, B, in]`` -> head outputs ``[P, B, A]`` and the new state.

        ``episode_start [P, B]`` (bool) zeroes the state of slots whose episode begins now.
        """
        y, state = self.features(params, x, state, episode_start)
        return self.readout(params, y), state

    def features(
        self,
        params: Mapping[str, torch.Tensor],
        x: torch.Tensor,
        state: State,
        episode_start: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, State]:
        """The recurrent part of :meth:`forward`: the top layer's flattened output
        ``[P, B, F]`` and the new state (policy gradients put a value head on it)."""
        if not self.spec.memory:
            state = [tuple(torch.zeros_like(t) for t in layer) for layer in state]
        elif episode_start is not None:
            state = cells.reset_state(state, episode_start)
        return self._stack(self._layers(params), x, state)

    def readout(self, params: Mapping[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """Features ``[P, B, F]`` -> head outputs ``[P, B, A]`` (any leading dims without P)."""
        return _apply_readout(*self._readout_blocks(params), y)

    def prepare(self, params: Mapping[str, torch.Tensor]) -> PreparedParams:
        """Group named blocks the way :meth:`step_prepared` reads them (once per population,
        not once per step)."""
        hidden, w, b = self._readout_blocks(params)
        return PreparedParams(self._layers(params), w, b, hidden)

    def _readout_blocks(
        self, params: Mapping[str, torch.Tensor]
    ) -> tuple[tuple[tuple[torch.Tensor, torch.Tensor], ...], torch.Tensor, torch.Tensor]:
        """The ReLU layers' ``(W, b [(P,) 1, M])`` and the readout's ``W``, ``b [(P,) 1, A]``."""
        hidden = tuple(
            (params[f"readout.hidden{k}.W"], params[f"readout.hidden{k}.b"].unsqueeze(-2))
            for k in range(len(self.spec.readout_hidden))
        )
        return hidden, params["readout.W"], params["readout.b"].unsqueeze(-2)

    def step_prepared(
        self, prepared: PreparedParams, x: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, State]:
        """:meth:`forward` without ``episode_start``, on :meth:`prepare`'s grouping (the
        population's hot path: no per-step regrouping of the parameters)."""
        if not self.spec.memory:
            state = [tuple(torch.zeros_like(t) for t in layer) for layer in state]
        y, state = self._stack(prepared.layers, x, state)
        readout = _apply_readout(prepared.readout_hidden, prepared.readout_w, prepared.readout_b, y)
        return readout, state

    def _layers(self, params: Mapping[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [{pname: params[full] for pname, full in names} for names in self._layer_param_names]

    def _stack(
        self, layers: list[dict[str, torch.Tensor]], x: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, State]:
        y, state = cells.stack_step(self.spec.cell, layers, x, state)
        if self.spec.cell == "conv_peephole":
            y = y.flatten(start_dim=-3)
        return y, state


def _apply_readout(
    hidden: tuple[tuple[torch.Tensor, torch.Tensor], ...],
    w: torch.Tensor,
    b: torch.Tensor,
    y: torch.Tensor,
) -> torch.Tensor:
    """Features ``y [P, B, F]`` through the ReLU layers ``hidden`` and the readout ``w``, ``b``."""
    for hidden_w, hidden_b in hidden:
        y = torch.relu(_readout(y, hidden_w, hidden_b))
    return _readout(y, w, b)


def _readout(y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``y @ w + b``: ``y [P, B, F]``, ``w [P, F, A]``, ``b [P, 1, A]`` (or without P)."""
    # torch.baddbmm: the batched product and the bias in one op, without torch.matmul's
    # broadcasting bookkeeping; the single-policy path stays on torch.matmul.
    if w.dim() == 3 and y.dim() == 3:
        return torch.baddbmm(b, y, w)
    return torch.matmul(y, w) + b


@dataclass(frozen=True)
class PreparedParams:
    """One policy's (or population's) parameters grouped for stepping.

    :param layers: per layer, the cell's named tensors (:func:`evolstm.network.cells.param_shapes`).
    :param readout_w: ``[(P,) F, A]``.
    :param readout_b: ``[(P,) 1, A]`` (broadcasts over the batch).
    :param readout_hidden: per ReLU layer before the readout, ``(W [(P,) M', M], b [(P,) 1, M])``.
    """

    layers: list[dict[str, torch.Tensor]]
    readout_w: torch.Tensor
    readout_b: torch.Tensor
    readout_hidden: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()


class RecurrentPolicy(nn.Module):
    """A single recurrent policy owning its flat parameter vector (policy-gradient use).

    :param spec: the :class:`PolicySpec`.
    :param vector: initial parameters ``[D]``; a fresh initialisation when omitted.
    :param seed: seed of the fresh initialisation.
    """

    def __init__(
        self,
        spec: PolicySpec,
        vector: torch.Tensor | None = None,
        seed: int = 0,
        obs_norm: ObsNormalizer | None = None,
    ):
        super().__init__()
        self.obs_norm = obs_norm
        self.spec = spec
        self.metadata: dict[str, Any] = {}  # plain data saved with the policy (see save)
        self.core = RecurrentCore(spec)
        if vector is None:
            vector = init_vector(spec, torch.Generator().manual_seed(seed))
        self.vector = nn.Parameter(vector.detach().clone().to(torch.float32))
        self.log_std: nn.Parameter | None = (
            None
            if self.core.head.is_discrete
            else nn.Parameter(torch.zeros(self.core.head.num_outputs))
        )

    @property
    def layout(self) -> ParameterLayout:
        return self.core.layout

    @property
    def head(self) -> ActionHead:
        return self.core.head

    def params(self) -> dict[str, torch.Tensor]:
        """Named views of the parameter vector (gradients flow into ``self.vector``)."""
        return unflatten(self.layout, self.vector)

    def init_state(self, batch_size: int) -> State:
        """Zero state for ``B = batch_size`` envs: per layer ``(h, c)`` ``[B, H]``."""
        return self.core.init_state((batch_size,))

    def step(
        self, obs: Any, state: State, episode_start: torch.Tensor | np.ndarray | None = None
    ) -> tuple[torch.Tensor, State]:
        """Raw batched observations (``B`` rows) -> head outputs ``[B, A]`` and the new state."""
        n = _space_batch_len(self.spec.observation_space, obs)
        x = self.core.encode(obs, (n,), self.obs_norm)
        if episode_start is not None:
            episode_start = torch.as_tensor(episode_start, dtype=torch.bool)
        return self.core.forward(self.params(), x, state, episode_start)

    def act(
        self, obs: Any, state: State, episode_start: torch.Tensor | np.ndarray | None = None
    ) -> tuple[np.ndarray, State]:
        """Deterministic actions for ``B`` envs, in the env's format, and the new state."""
        return self.frozen_actor()(obs, state, episode_start)

    def frozen_actor(self) -> Callable[..., tuple[np.ndarray, State]]:
        """:meth:`act` on the parameters as they are now, grouped once (``core.prepare``)
        instead of at every call: for long stepping loops such as a 100,000-step success
        test. The returned ``act(obs, state, episode_start=None)`` gives the same bits as
        :meth:`act`; it does not see later changes to the parameters.
        """
        core, head, space = self.core, self.head, self.spec.observation_space
        with torch.no_grad():
            prepared = core.prepare(unflatten(self.layout, self.vector.detach().clone()))

        def act(
            obs: Any, state: State, episode_start: torch.Tensor | np.ndarray | None = None
        ) -> tuple[np.ndarray, State]:
            with torch.no_grad():
                x = core.encode(obs, (_space_batch_len(space, obs),), self.obs_norm)
                if episode_start is not None and self.spec.memory:
                    state = cells.reset_state(state, torch.as_tensor(episode_start, dtype=bool))
                out, state = core.step_prepared(prepared, x, state)
                return head.to_env(head.deterministic(out)), state

        return act

    def predict(
        self,
        observation: Any,
        state: State | None = None,
        episode_start: bool | Sequence[bool] | np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, State]:
        """Actions for one observation or a batch of ``B``, carrying the recurrent state
        explicitly (Stable-Baselines3's ``predict``)::

            policy = RecurrentPolicy.load("runs/quickstart-.../policy.pt")
            obs, _ = env.reset(seed=0)
            action, state = policy.predict(obs)                 # the first step: state=None
            while True:
                obs, reward, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    break
                action, state = policy.predict(obs, state)

        :param observation: one observation of the policy's observation space (any supported
            space: Box, Discrete, MultiDiscrete, MultiBinary, Tuple, Dict, OneOf), or a batch
            as a gymnasium vector env returns it (arrays ``[B, ...]``; tuples/dicts of them).
        :param state: the state this method returned last time; ``None`` starts from zeros.
        :param episode_start: ``True`` (or ``[B]`` bools) where an episode begins with this
            observation: those slots' state is zeroed first (needed when a vector env
            autoresets); ``None`` means no slot starts.
        :param deterministic: the greedy action (argmax / squashed mean); ``False`` samples
            from the policy's distribution (torch's global generator).
        :returns: ``(action, state)``: the action in the env's format (one action for one
            observation, ``[B, ...]`` for a batch) and the new state (per layer a tuple of
            ``[B, H]`` tensors; ``B = 1`` for a single observation).
        """
        single = _is_single(self.spec.observation_space, observation)
        space = self.spec.observation_space
        batch = _add_batch_axis(space, observation) if single else observation
        n = _space_batch_len(space, batch)
        if state is None:
            state = self.init_state(n)
        starts = None
        if episode_start is not None:
            starts = torch.as_tensor(np.asarray(episode_start, dtype=bool).reshape(-1))
            starts = starts.expand(n) if starts.numel() == 1 else starts
        with torch.no_grad():
            out, state = self.step(batch, state, starts)
            if deterministic:
                action = self.head.deterministic(out)
            else:
                sample = self.distribution(out).sample()
                action = self.head.action_from_sample(sample)
        actions = self.head.to_env(action)
        return (actions[0] if single else actions), state

    def distribution(self, out: torch.Tensor) -> torch.distributions.Distribution:
        """The action distribution for head outputs ``out [..., A]``."""
        return self.head.distribution(out, self.log_std)

    def to_vector(self) -> torch.Tensor:
        """A detached copy of the flat parameters ``[D]``."""
        return self.vector.detach().clone()

    def from_vector(self, vector: torch.Tensor) -> None:
        """Load flat parameters ``[D]``."""
        if vector.shape != self.vector.shape:
            raise ValueError(
                f"expected a vector of shape {tuple(self.vector.shape)}, got {tuple(vector.shape)}"
            )
        with torch.no_grad():
            self.vector.copy_(vector)

    def save(self, path: str | Path, metadata: Mapping[str, Any] | None = None) -> None:
        """Save the spec and the weights, so :meth:`load` rebuilds the policy without the agent.

        The file holds only tensors and plain data (it loads with ``weights_only=True``).
        :param metadata: plain data kept beside the weights (the trainer stores the run's
            ``env`` section and seed there, for ``evolstm eval`` of the bare file).
        """
        torch.save(
            {
                "format": POLICY_FORMAT,
                "spec": self.spec.to_dict(),
                "vector": self.to_vector(),
                "log_std": None if self.log_std is None else self.log_std.detach().clone(),
                "obs_norm": None if self.obs_norm is None else self.obs_norm.state_dict(),
                "metadata": dict(metadata or {}),
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path) -> RecurrentPolicy:
        """Rebuild a policy saved by :meth:`save` (a run's ``policy.pt``) without its agent:
        the spec (spaces, cell, sizes), the weights, the Box ``log_std`` and the observation
        normaliser. Nothing from the file runs (``weights_only=True``). Act with
        :meth:`predict` (one observation or a batch) or :meth:`act` (batches).

        :param path: a file written by :meth:`save`.
        :raises FileFormatError: a crafted, corrupted or foreign file (one line naming it).
        """
        from evolstm.run.checkpoint import load_data_file

        blob = load_data_file(path, "policy")
        if not isinstance(blob, dict) or blob.get("format") != POLICY_FORMAT:
            raise FileFormatError(f"{path}: not an evolstm policy file ({POLICY_FORMAT})")
        try:
            policy = cls(
                PolicySpec.from_dict(blob["spec"]),
                blob["vector"],
                obs_norm=ObsNormalizer.from_state_dict(blob.get("obs_norm")),
            )
            if policy.vector.shape != (policy.layout.size,):
                raise ValueError(
                    f"vector of shape {tuple(policy.vector.shape)} for D = {policy.layout.size}"
                )
            if policy.log_std is not None:
                with torch.no_grad():
                    policy.log_std.copy_(blob["log_std"])
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
            raise FileFormatError(f"{path}: malformed policy file ({err})") from None
        policy.metadata = dict(blob.get("metadata") or {})
        return policy


class PopulationPolicy:
    """``P`` policies stepped as one batched tensor program (neuroevolution use).

    :param core: the shared :class:`RecurrentCore`.
    :param vectors: flat parameters ``[P, D]``.
    :param obs_norm: the observation normaliser every member applies (or ``None``).
    """

    def __init__(
        self, core: RecurrentCore, vectors: torch.Tensor, obs_norm: ObsNormalizer | None = None
    ) -> None:
        self.obs_norm = obs_norm
        if vectors.dim() != 2:
            raise ValueError(
                f"expected population vectors [P, D], got shape {tuple(vectors.shape)}"
            )
        self.core = core
        self.size = vectors.shape[0]
        self.params = {k: v.contiguous() for k, v in unflatten(core.layout, vectors).items()}
        self._prepared = core.prepare(self.params)

    def init_state(self, episodes: int) -> State:
        """Zero state ``[P, B, H]`` per layer for ``B = episodes`` envs per member."""
        return self.core.init_state((self.size, episodes))

    def act(self, obs: Any, state: State, episodes: int) -> tuple[np.ndarray, State]:
        """Raw observations of ``P * B`` slots (member-major) -> env actions ``[P * B, ...]``."""
        return self.act_encoded(self.core.encoder(obs), state, episodes)

    @torch.inference_mode()
    def act_encoded(self, x: torch.Tensor, state: State, episodes: int) -> tuple[np.ndarray, State]:
        """Encoded observations ``[P * B, in]`` -> env actions ``[P * B, ...]``.

        Runs under ``torch.inference_mode`` (cheaper per op than ``no_grad``): the returned
        state is an inference tensor, to be fed back here, never into an autograd graph.
        """
        core = self.core
        x = core.shape_input(x, (self.size, episodes), self.obs_norm)
        out, state = core.step_prepared(self._prepared, x, state)
        actions = core.head.deterministic(out)
        return core.head.to_env(actions.reshape(-1, *actions.shape[2:])), state


def _is_single(space: gym.Space, obs: Any) -> bool:
    """Whether ``obs`` is one observation of ``space`` (else a batch along axis 0)."""
    if isinstance(space, gym.spaces.Dict):
        key = next(iter(space.spaces))
        return _is_single(space.spaces[key], obs[key])
    if isinstance(space, gym.spaces.Tuple):
        return _is_single(space.spaces[0], obs[0])
    if isinstance(space, gym.spaces.OneOf):  # one obs is (index, sample); a batch, N of those
        return isinstance(obs[0], int | np.integer)
    shape = np.shape(obs)
    if shape == tuple(space.shape):
        return True
    if shape[1:] == tuple(space.shape):
        return False
    raise ValueError(
        f"observation of shape {shape} is neither one observation of {space} nor a batch of them"
    )


def _add_batch_axis(space: gym.Space, obs: Any) -> Any:
    """One observation -> a batch of one, as a vector env would return it."""
    if isinstance(space, gym.spaces.Dict):
        return {key: _add_batch_axis(sub, obs[key]) for key, sub in space.spaces.items()}
    if isinstance(space, gym.spaces.Tuple):
        return tuple(_add_batch_axis(sub, o) for sub, o in zip(space.spaces, obs, strict=True))
    if isinstance(space, gym.spaces.OneOf):  # a vector env returns a tuple of N samples
        return (obs,)
    return np.asarray(obs)[None]


def _space_batch_len(space: gym.Space, batch: Any) -> int:
    """``B``, the rows of a batch of observations of ``space``."""
    if isinstance(space, gym.spaces.Dict):
        key = next(iter(space.spaces))
        return _space_batch_len(space.spaces[key], batch[key])
    if isinstance(space, gym.spaces.Tuple):
        return _space_batch_len(space.spaces[0], batch[0])
    return len(batch)
