"""Observation encoders and action heads: gymnasium spaces in, tensors out, and back.

:class:`ObservationEncoder` turns a batch of observations, as a gymnasium vector env returns
them, into a float32 tensor ``[N, size]`` whose rows equal ``gymnasium.spaces.flatten``
(one-hot for ``Discrete``/``MultiDiscrete``, ``Dict`` in gymnasium's key order), or keeps an
image ``Box [ht, wd, C]`` as ``[N, C, ht, wd]`` for ``conv_peephole``.

:class:`ActionHead` reads a policy's output ``[..., num_outputs]`` as logits (``Discrete``,
``MultiDiscrete``) or means (``Box``), gives the deterministic action, the sampling
distribution, and converts actions to what the env's ``step`` expects.

Letters: ``N`` rows (env slots), ``D`` = ``num_outputs``, ``K`` action components.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

OBSERVATION_SPACES: tuple[str, ...] = (
    "Box",
    "Discrete",
    "MultiDiscrete",
    "MultiBinary",
    "Tuple",
    "Dict",
    "OneOf",
)
ACTION_SPACES: tuple[str, ...] = ("Discrete", "MultiDiscrete", "Box")

_FLAT_LEAVES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def _check_observation_space(space: gym.Space, root: gym.Space) -> None:
    if isinstance(space, _FLAT_LEAVES):
        return
    if isinstance(space, spaces.Tuple | spaces.OneOf):
        for sub in space.spaces:
            _check_observation_space(sub, root)
        return
    if isinstance(space, spaces.Dict):
        for sub in space.spaces.values():
            _check_observation_space(sub, root)
        return
    where = "" if space is root else f" inside {root}"
    raise ValueError(
        f"unsupported observation space {space}{where}; supported: {', '.join(OBSERVATION_SPACES)}"
    )


def _is_image(space: gym.Space) -> bool:
    return (
        isinstance(space, spaces.Box)
        and len(space.shape) == 3
        and (space.dtype == np.uint8 or np.issubdtype(space.dtype, np.floating))
    )


def _batch_len(space: gym.Space, batch: Any) -> int:
    if isinstance(space, spaces.Tuple):
        return _batch_len(space.spaces[0], batch[0])
    if isinstance(space, spaces.Dict):
        key = next(iter(space.spaces))
        return _batch_len(space.spaces[key], batch[key])
    if isinstance(space, spaces.OneOf):
        return len(batch)
    return len(np.asarray(batch))


def _checked_index(space: gym.Space, index: np.ndarray, n: np.ndarray | int) -> np.ndarray:
    # A negative index would wrap around silently in numpy's fancy indexing.
    if np.any(index < 0) or np.any(index >= n):
        raise ValueError(f"observation outside {space}")
    return index


def _write_flat(space: gym.Space, batch: Any, out: np.ndarray) -> None:
    """Write the flattened batch into ``out [N, flatdim(space)]`` (zeros where one-hot)."""
    n = out.shape[0]
    if isinstance(space, spaces.Box | spaces.MultiBinary):
        out[:] = np.asarray(batch).reshape(n, -1)
    elif isinstance(space, spaces.Discrete):
        index = _checked_index(space, np.asarray(batch).reshape(n) - space.start, space.n)
        out[:] = 0.0
        out[np.arange(n), index] = 1.0
    elif isinstance(space, spaces.MultiDiscrete):
        nvec = space.nvec.reshape(-1)
        index = np.asarray(batch).reshape(n, -1) - space.start.reshape(-1)
        _checked_index(space, index, nvec)
        offsets = np.concatenate(([0], np.cumsum(nvec)[:-1]))
        out[:] = 0.0
        out[np.arange(n)[:, None], offsets + index] = 1.0
    elif isinstance(space, spaces.Tuple | spaces.Dict):
        parts = (
            zip(space.spaces, batch, strict=True)
            if isinstance(space, spaces.Tuple)
            else ((sub, batch[key]) for key, sub in space.spaces.items())
        )
        column = 0
        for sub, sub_batch in parts:
            width = spaces.flatdim(sub)
            _write_flat(sub, sub_batch, out[:, column : column + width])
            column += width
    else:  # OneOf: a vector env returns a tuple of N (index, sample) pairs, so go row by row.
        for row, item in enumerate(batch):
            out[row] = spaces.flatten(space, item)


class ObservationEncoder:
    """Encodes batches of observations of one space as float32 tensors.

    :param space: the single-env observation space (Box, Discrete, MultiDiscrete,
        MultiBinary, and Tuple, Dict or OneOf of these).
    :param keep_image: keep an image Box (3 dims ``[ht, wd, C]``, uint8 or float) as a map
        ``[N, C, ht, wd]`` instead of flattening it. Values are not rescaled (uint8 stays
        0..255), so both forms carry the same numbers.
    """

    def __init__(self, space: gym.Space, *, keep_image: bool = False) -> None:
        _check_observation_space(space, space)
        self.space = space
        self.size: int = int(spaces.flatdim(space))
        self.image_shape: tuple[int, int, int] | None = None
        if keep_image and _is_image(space):
            ht, wd, channels = space.shape
            self.image_shape = (channels, ht, wd)

    def __call__(self, batch_obs: Any, *, device: torch.device | str | None = None) -> torch.Tensor:
        """Encode a batch: ``[N, size]``, or ``[N, C, ht, wd]`` when :attr:`image_shape` is set.

        :param batch_obs: a batch as a gymnasium vector env returns it: an array ``[N, ...]``
            for Box/MultiBinary/MultiDiscrete, an int array ``[N]`` for Discrete, a tuple
            (Tuple) or dict (Dict) of such batches, a tuple of ``N`` samples for OneOf.
        """
        if self.image_shape is not None:
            images = torch.as_tensor(np.asarray(batch_obs), device=device)
            return images.permute(0, 3, 1, 2).to(torch.float32).contiguous()
        out = np.empty((_batch_len(self.space, batch_obs), self.size), dtype=np.float32)
        _write_flat(self.space, batch_obs, out)
        return torch.from_numpy(out).to(device)


class IndependentCategoricals(torch.distributions.Distribution):
    """``K`` independent categoricals whose values are shifted by ``start``.

    ``log_prob`` and ``entropy`` sum over the components. Values are ``[..., K]``, or
    ``[...]`` when ``scalar`` (one component: a Discrete space).

    :param logits: ``[..., K, n_max]``; components with fewer choices are padded with -inf.
    :param start: ``[K]`` the smallest value of each component.
    """

    arg_constraints: dict = {}

    def __init__(self, logits: torch.Tensor, start: torch.Tensor, *, scalar: bool) -> None:
        self.categorical = torch.distributions.Categorical(logits=logits, validate_args=False)
        self.start = start
        self.scalar = scalar
        event_shape = () if scalar else logits.shape[-2:-1]
        super().__init__(logits.shape[:-2], event_shape, validate_args=False)

    def _shift(self, index: torch.Tensor) -> torch.Tensor:
        value = index + self.start
        return value.squeeze(-1) if self.scalar else value

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        return self._shift(self.categorical.sample(sample_shape))

    @property
    def mode(self) -> torch.Tensor:
        return self._shift(self.categorical.logits.argmax(-1))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        value = value.unsqueeze(-1) if self.scalar else value
        return self.categorical.log_prob(value - self.start).sum(-1)

    def entropy(self) -> torch.Tensor:
        return self.categorical.entropy().sum(-1)


class ActionHead:
    """Maps a policy's outputs ``[..., D]`` to actions of a Discrete, MultiDiscrete or Box space.

    Actions on the torch side are flat: ``[...]`` (Discrete, values include ``start``),
    ``[..., K]`` (MultiDiscrete, ``K = nvec.size``, values include ``start``), ``[..., D]``
    (Box, env-space values). :meth:`to_env` reshapes a batch to the env's shape and dtype.

    Box choice: the distribution is a diagonal Normal over the *pre-squash* value ``u``
    (mean = the output, std = ``exp(log_std)``), so ``log_prob`` is the Gaussian's and has no
    tanh Jacobian term; :meth:`action_from_sample` squashes ``u`` into the bounds exactly as
    :meth:`deterministic` squashes the mean. Dimensions bounded on both sides are squashed
    with ``low + (tanh(u) + 1) / 2 * (high - low)``; other dimensions pass raw (and
    :meth:`to_env` clips a one-sided bound).
    """

    def __init__(self, space: gym.Space) -> None:
        self.space = space
        if isinstance(space, spaces.Discrete | spaces.MultiDiscrete):
            scalar = isinstance(space, spaces.Discrete)
            nvec = np.array([space.n]) if scalar else space.nvec.reshape(-1)
            start = np.array([space.start]) if scalar else space.start.reshape(-1)
            self.is_discrete, self._scalar = True, scalar
            self.num_outputs = int(nvec.sum())
            self._start = torch.as_tensor(start, dtype=torch.int64)
            self._scalar_start = int(start[0])
            # Column of the output read at [component, choice]; padded choices read column 0.
            offsets = np.concatenate(([0], np.cumsum(nvec)[:-1]))
            choice = np.arange(nvec.max())
            self._gather = torch.as_tensor(offsets[:, None] + choice * (choice < nvec[:, None]))
            self._padding = torch.as_tensor(choice >= nvec[:, None])
        elif isinstance(space, spaces.Box):
            self.is_discrete = False
            self.num_outputs = int(np.prod(space.shape))
            low = space.low.reshape(-1).astype(np.float64)
            high = space.high.reshape(-1).astype(np.float64)
            bounded = np.isfinite(low) & np.isfinite(high)
            self._bounded = torch.as_tensor(bounded)
            self._all_bounded = bool(bounded.all())
            # low + (tanh(u) + 1) / 2 * (high - low) = mid + half * tanh(u): one addcmul per
            # step. Finite stand-ins where unbounded, so torch.where never meets inf - inf.
            low, high = np.where(bounded, low, 0.0), np.where(bounded, high, 0.0)
            self._mid = torch.as_tensor(
                np.where(bounded, (low + high) / 2, 0.0), dtype=torch.float32
            )
            self._half = torch.as_tensor(
                np.where(bounded, (high - low) / 2, 1.0), dtype=torch.float32
            )
            self._int_box = bool(np.issubdtype(space.dtype, np.integer))
        else:
            raise ValueError(
                f"unsupported action space {space}; supported: {', '.join(ACTION_SPACES)}"
            )

    @property
    def needs_log_std(self) -> bool:
        """Whether :meth:`distribution` needs a ``log_std`` (Box)."""
        return not self.is_discrete

    def _logits(self, out: torch.Tensor) -> torch.Tensor:
        """``[..., D]`` -> ``[..., K, n_max]``."""
        gather, padding = self._gather.to(out.device), self._padding.to(out.device)
        return out[..., gather].masked_fill(padding, float("-inf"))

    def action_from_sample(self, sample: torch.Tensor) -> torch.Tensor:
        """A sample of :meth:`distribution` as an env-space action (squashed for a Box)."""
        if self.is_discrete:
            return sample
        mid, half = self._mid, self._half
        if mid.dtype != sample.dtype or mid.device != sample.device:
            mid, half = mid.to(sample), half.to(sample)
        squashed = torch.addcmul(mid, torch.tanh(sample), half)
        if self._all_bounded:
            return squashed
        return torch.where(self._bounded.to(sample.device), squashed, sample)

    def deterministic(self, out: torch.Tensor) -> torch.Tensor:
        """The greedy action: argmax per component (plus ``start``), or the squashed mean."""
        if self.is_discrete:
            if self._scalar:
                # A Discrete space's outputs ARE its logits (no gather, no padding): argmax
                # them directly, which skips two indexing ops on the evaluator's hot path.
                index = out.argmax(-1)
                return index + self._scalar_start if self._scalar_start else index
            return self._logits(out).argmax(-1) + self._start.to(out.device)
        return self.action_from_sample(out)

    def distribution(
        self, out: torch.Tensor, log_std: torch.Tensor | None = None
    ) -> torch.distributions.Distribution:
        """The sampling distribution; ``log_prob`` and ``entropy`` sum over components.

        :param out: ``[..., D]`` logits or means.
        :param log_std: ``[D]`` (or broadcastable to ``out``), required for a Box and
            refused for the discrete spaces.
        """
        if self.is_discrete:
            if log_std is not None:
                raise ValueError(f"log_std is meaningless for the action space {self.space}")
            start = self._start.to(out.device)
            return IndependentCategoricals(self._logits(out), start, scalar=self._scalar)
        if log_std is None:
            raise ValueError(f"the action space {self.space} needs a log_std")
        std = torch.exp(log_std).expand_as(out)
        return torch.distributions.Independent(torch.distributions.Normal(out, std), 1)

    def to_env(self, actions: torch.Tensor) -> np.ndarray:
        """A batch of env-space actions ``[N, ...]`` as the env's array (shape and dtype)."""
        batch = actions.detach().cpu().numpy()
        n = batch.shape[0]
        shape = self.space.shape
        if isinstance(self.space, spaces.Box):
            batch = batch.reshape(n, *shape)
            if self._int_box:
                batch = np.rint(batch)
            # Clips float rounding at the bounds (and one-sided bounds) so space.contains holds
            # (two ufuncs: np.clip's Python wrapper costs more than both on a [256, 1] batch).
            batch = np.minimum(np.maximum(batch, self.space.low), self.space.high)
        return batch.reshape(n, *shape).astype(self.space.dtype, copy=False)
