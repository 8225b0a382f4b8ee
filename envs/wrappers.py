"""POMDP wrappers that make any Gymnasium env with a Box observation partially observable.

Each comes as a single-env ``gymnasium.ObservationWrapper`` and a vector-env
``gymnasium.vector.VectorObservationWrapper``; the vector form over N slots equals
``SyncVectorEnv`` of N single forms:

* :class:`KeepObservationIndices` / :class:`VectorKeepObservationIndices`: keep some
  entries of a 1-D Box observation (e.g. drop velocities).
* :class:`FlickerObservation` / :class:`VectorFlickerObservation`: the whole observation
  is replaced by zeros with probability ``p`` (the flickering POMDPs of Hausknecht & Stone,
  2015).
* :class:`ObservationNoise` / :class:`VectorObservationNoise`: additive Gaussian noise.

Each single form names its vector form (class attribute ``vector_form``), so a built-in
task wrapped in them keeps its native vector env (:func:`evolstm.rollouts.env_factory.vector_form`).

The random wrappers draw from their own generator, seeded from the ``reset`` seed (a
vector wrapper: slot ``i`` from ``seed + i`` or ``seed[i]``, as ``SyncVectorEnv`` seeds its
sub-envs; ``None`` keeps the current generator), so runs are reproducible and every slot
has its own stream. The generator is ``SeedSequence(seed, spawn_key=(tag,))`` with a tag per
wrapper kind, so its stream is independent of the wrapped env's ``np_random``. Exactly one
draw (flicker) or one vector of draws (noise) is made per observation, resets included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv, VectorObservationWrapper
from gymnasium.vector.utils import batch_space

FLICKER_TAG = 0x464C4B  # "FLK"
NOISE_TAG = 0x4E4F53  # "NOS"


def wrapper_rng(seed: int | None, tag: int) -> np.random.Generator:
    """A generator for a wrapper, independent of an env seeded with the same ``seed``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(tag,))))


def _box(space: gym.Space, wrapper: str) -> spaces.Box:
    if not isinstance(space, spaces.Box):
        raise TypeError(f"{wrapper} needs a Box observation space, got {space}")
    return space


def _slot_seeds(seed: int | Sequence[int | None] | None, num_envs: int) -> list[int | None]:
    """Per-slot seeds the way ``SyncVectorEnv.reset`` hands them to its sub-envs."""
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, int):
        return [seed + i for i in range(num_envs)]
    seeds = list(seed)
    if len(seeds) != num_envs:
        raise ValueError(f"expected {num_envs} seeds, got {len(seeds)}")
    return seeds


class _SeededSlots:
    """One wrapper generator per slot, reseeded on ``reset(seed=...)``."""

    def __init__(self, num_envs: int, tag: int) -> None:
        self.tag = tag
        self.rngs = [wrapper_rng(None, tag) for _ in range(num_envs)]

    def reseed(self, seed: int | Sequence[int | None] | None) -> None:
        for i, slot_seed in enumerate(_slot_seeds(seed, len(self.rngs))):
            if slot_seed is not None:
                self.rngs[i] = wrapper_rng(slot_seed, self.tag)


class _SeededObservationWrapper(gym.ObservationWrapper):
    """A single-env observation wrapper with its own generator ``slots.rngs[0]``."""

    def __init__(self, env: gym.Env, tag: int) -> None:
        super().__init__(env)
        self.slots = _SeededSlots(1, tag)

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        self.slots.reseed(seed)
        return super().reset(seed=seed, options=options)


class _SeededVectorObservationWrapper(VectorObservationWrapper):
    """A vector observation wrapper with one generator per slot, ``slots.rngs``."""

    def __init__(self, env: VectorEnv, tag: int) -> None:
        super().__init__(env)
        self.slots = _SeededSlots(self.num_envs, tag)

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        self.slots.reseed(seed)
        return super().reset(seed=seed, options=options)


def _set_single_observation_space(wrapper: VectorObservationWrapper, space: spaces.Box) -> None:
    """Set a vector wrapper's single observation space and the batched one built from it."""
    wrapper.single_observation_space = space
    wrapper.observation_space = batch_space(space, wrapper.num_envs)


# -- keep indices --------------------------------------------------------------------------
def _check_indices(space: spaces.Box, indices: Sequence[int]) -> list[int]:
    if len(space.shape) != 1:
        raise ValueError(f"KeepObservationIndices needs a 1-D Box, got shape {space.shape}")
    size = space.shape[0]
    try:
        kept = [int(i) for i in indices]
    except (TypeError, ValueError) as error:
        raise ValueError(f"indices must be a sequence of ints, got {indices!r}") from error
    if not kept or len(set(kept)) != len(kept) or not all(0 <= i < size for i in kept):
        raise ValueError(f"indices must be distinct ints in 0..{size - 1}, got {indices!r}")
    return kept


def _kept_box(space: spaces.Box, kept: list[int]) -> spaces.Box:
    return spaces.Box(space.low[kept], space.high[kept], dtype=space.dtype)


class KeepObservationIndices(gym.ObservationWrapper):
    """Observe only ``obs[indices]`` of a 1-D Box observation.

    :param env: the env to wrap.
    :param indices: distinct positions to keep, in the order given.
    """

    vector_form: ClassVar[str] = "envs.wrappers:VectorKeepObservationIndices"

    def __init__(self, env: gym.Env, indices: Sequence[int]) -> None:
        super().__init__(env)
        space = _box(env.observation_space, "KeepObservationIndices")
        self.indices = _check_indices(space, indices)
        self.observation_space = _kept_box(space, self.indices)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self.indices]


class VectorKeepObservationIndices(VectorObservationWrapper):
    """Vector form of :class:`KeepObservationIndices`: ``[N, k] -> [N, len(indices)]``."""

    def __init__(self, env: VectorEnv, indices: Sequence[int]) -> None:
        super().__init__(env)
        space = _box(env.single_observation_space, "VectorKeepObservationIndices")
        self.indices = _check_indices(space, indices)
        _set_single_observation_space(self, _kept_box(space, self.indices))

    def observations(self, observations: np.ndarray) -> np.ndarray:
        return observations[:, self.indices]


# -- flicker -------------------------------------------------------------------------------
def _check_probability(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    return float(p)


def _with_zero(space: spaces.Box) -> spaces.Box:
    """The Box widened to contain the all-zero observation."""
    zero = np.zeros((), dtype=space.dtype)
    return spaces.Box(np.minimum(space.low, zero), np.maximum(space.high, zero), dtype=space.dtype)


class FlickerObservation(_SeededObservationWrapper):
    """Replace the observation by zeros with probability ``p`` (independently each step).

    :param env: the env to wrap (Box observations).
    :param p: blank probability in [0, 1].
    """

    vector_form: ClassVar[str] = "envs.wrappers:VectorFlickerObservation"

    def __init__(self, env: gym.Env, p: float) -> None:
        super().__init__(env, FLICKER_TAG)
        self.p = _check_probability(p)
        self.observation_space = _with_zero(_box(env.observation_space, "FlickerObservation"))

    def observation(self, observation: np.ndarray) -> np.ndarray:
        if self.slots.rngs[0].random() < self.p:
            return np.zeros_like(observation)
        return observation


class VectorFlickerObservation(_SeededVectorObservationWrapper):
    """Vector form of :class:`FlickerObservation`; each slot blanks from its own generator."""

    def __init__(self, env: VectorEnv, p: float) -> None:
        super().__init__(env, FLICKER_TAG)
        self.p = _check_probability(p)
        space = _box(env.single_observation_space, "VectorFlickerObservation")
        _set_single_observation_space(self, _with_zero(space))

    def observations(self, observations: np.ndarray) -> np.ndarray:
        # One draw per slot from that slot's generator (a Python loop: per-slot streams).
        blank = np.array([rng.random() < self.p for rng in self.slots.rngs])
        return np.where(blank.reshape((-1,) + (1,) * (observations.ndim - 1)), 0, observations)


# -- Gaussian noise ------------------------------------------------------------------------
def _check_std(std: float | Sequence[float] | np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(std, dtype=np.float64)
    try:
        np.broadcast_to(array, shape)
    except ValueError as error:
        raise ValueError(f"std of shape {array.shape} does not fit observations {shape}") from error
    if not (np.isfinite(array).all() and (array >= 0).all()):
        raise ValueError(f"std must be finite and >= 0, got {std!r}")
    return array


def _unbounded(space: spaces.Box) -> spaces.Box:
    """Gaussian noise has unbounded support: the noisy observation space is unbounded."""
    if not np.issubdtype(space.dtype, np.floating):
        raise TypeError(f"ObservationNoise needs a floating Box, got dtype {space.dtype}")
    return spaces.Box(-np.inf, np.inf, shape=space.shape, dtype=space.dtype)


class ObservationNoise(_SeededObservationWrapper):
    """Add Gaussian noise ``N(0, std^2)`` to every observation entry.

    :param env: the env to wrap (floating Box observations).
    :param std: standard deviation, a scalar or an array broadcastable to the observation.
    """

    vector_form: ClassVar[str] = "envs.wrappers:VectorObservationNoise"

    def __init__(self, env: gym.Env, std: float | Sequence[float] | np.ndarray) -> None:
        super().__init__(env, NOISE_TAG)
        space = _box(env.observation_space, "ObservationNoise")
        self.std = _check_std(std, space.shape)
        self.observation_space = _unbounded(space)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        noise = self.slots.rngs[0].standard_normal(observation.shape)
        return (observation + self.std * noise).astype(observation.dtype)


class VectorObservationNoise(_SeededVectorObservationWrapper):
    """Vector form of :class:`ObservationNoise`; each slot draws from its own generator."""

    def __init__(self, env: VectorEnv, std: float | Sequence[float] | np.ndarray) -> None:
        super().__init__(env, NOISE_TAG)
        space = _box(env.single_observation_space, "VectorObservationNoise")
        self.std = _check_std(std, space.shape)
        _set_single_observation_space(self, _unbounded(space))

    def observations(self, observations: np.ndarray) -> np.ndarray:
        shape = observations.shape[1:]
        noise = np.stack([rng.standard_normal(shape) for rng in self.slots.rngs])
        return (observations + self.std * noise).astype(observations.dtype)
