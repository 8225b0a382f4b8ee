"""Base class of the native batched (numpy) vector envs.

Written by hand because gymnasium's own vector envs (e.g. ``CartPoleVectorEnv``) share
one ``np_random`` across slots, so a slot's start state depends on how many other slots
reset; here every slot owns its generator, seeded exactly as the matching single env
would be, so ``BatchedEnv(seed=s)`` steps identically to ``SyncVectorEnv`` of the single
env reset with ``seed=s`` (slot ``i`` gets ``s + i``, or ``seed[i]`` for a list), and all
members of a population can meet the same episodes (common random numbers).

Autoreset is gymnasium 1.x ``NEXT_STEP``: the step after a slot's episode ends resets that
slot, ignores its action, and returns reward 0 with both flags cleared.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv


class BatchedEnv(VectorEnv):
    """A numpy vector env over ``num_envs`` slots with per-slot seeding and NEXT_STEP autoreset.

    Subclasses set their spaces with :meth:`_set_spaces` and implement :meth:`_reset_slots`,
    :meth:`_step_all` and :meth:`_observe`. State arrays are ``[N, ...]`` (N = ``num_envs``).

    :param num_envs: number of slots N.
    :param max_episode_steps: truncation limit per episode (``None``: no limit).
    """

    metadata: ClassVar[dict[str, Any]] = {
        "autoreset_mode": AutoresetMode.NEXT_STEP,
        "render_modes": [],
    }

    def __init__(self, num_envs: int, max_episode_steps: int | None = None) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.slot_rngs: list[np.random.Generator] = [
            seeding.np_random(None)[0] for _ in range(num_envs)
        ]
        self.elapsed_steps = np.zeros(num_envs, dtype=np.int64)
        self.prev_done = np.zeros(num_envs, dtype=bool)

    def _set_spaces(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        """Set the single env's spaces and the batched spaces built from them."""
        from gymnasium.vector.utils import batch_space

        self.single_observation_space = observation_space
        self.single_action_space = action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    # -- subclass hooks -------------------------------------------------------------
    @abstractmethod
    def _reset_slots(self, idx: np.ndarray) -> None:
        """Draw new start states for slots ``idx`` from ``self.slot_rngs[i]`` (one by one,
        in the same order of draws as the single env's ``reset``)."""

    @abstractmethod
    def _step_all(self, actions: Any) -> tuple[np.ndarray, np.ndarray]:
        """Advance every slot by one action; return ``(reward [N] float, terminated [N] bool)``.

        Slots that are about to be reset are stepped too; their results are discarded.
        """

    @abstractmethod
    def _observe(self) -> Any:
        """The batched observation of the current states (``[N, ...]``)."""

    def _step_infos(self, terminated: np.ndarray, truncated: np.ndarray) -> dict[str, Any]:
        """Extra per-step info (vector-info format: arrays ``[N]`` with ``_key`` masks)."""
        return {}

    # -- gymnasium API ---------------------------------------------------------------
    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset all slots (seed: int ``s`` -> slot i gets ``s + i``; or one seed per slot)."""
        if seed is not None:
            seeds = (
                [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            )
            if len(seeds) != self.num_envs:
                raise ValueError(f"expected {self.num_envs} seeds, got {len(seeds)}")
            self._seed_slots(seeds)
        all_slots = np.arange(self.num_envs)
        self._reset_slots(all_slots)
        self.elapsed_steps[:] = 0
        self.prev_done[:] = False
        return self._observe(), {}

    def _seed_slots(self, seeds: list[int | None]) -> None:
        """Give slot ``i`` the generator ``gymnasium.utils.seeding.np_random(seeds[i])``
        would; a ``None`` entry keeps that slot's generator, as ``Env.reset(seed=None)`` does.

        A population's members share their episode seeds, so most seeds repeat: each
        distinct seed is seeded once (~40 µs) and its state copied into the slots' own
        generators (~2 µs), not seeded again per slot.
        """
        if len(set(map(id, self.slot_rngs))) < self.num_envs:  # one generator in many slots
            self.slot_rngs = [
                rng if s is None else np.random.Generator(np.random.PCG64())
                for rng, s in zip(self.slot_rngs, seeds, strict=True)
            ]
        seeded: dict[int, dict[str, Any]] = {}
        for i, s in enumerate(seeds):
            if s is None:
                continue
            if s not in seeded:
                seeded[s] = seeding.np_random(s)[0].bit_generator.state
            rng = self.slot_rngs[i]
            if isinstance(rng.bit_generator, np.random.PCG64):
                rng.bit_generator.state = seeded[s]
            else:  # a generator put there by hand: replace it, as gymnasium would
                self.slot_rngs[i] = seeding.np_random(s)[0]

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        reward, terminated = self._step_all(actions)
        reward = np.asarray(reward, dtype=np.float64).copy()
        terminated = np.asarray(terminated, dtype=bool).copy()
        self.elapsed_steps += 1
        if self.max_episode_steps is None:
            truncated = np.zeros(self.num_envs, dtype=bool)
        else:
            truncated = self.elapsed_steps >= self.max_episode_steps
        restart = np.flatnonzero(self.prev_done)
        if restart.size:
            self._reset_slots(restart)
            reward[restart] = 0.0
            terminated[restart] = False
            truncated[restart] = False
            self.elapsed_steps[restart] = 0
        self.prev_done = terminated | truncated
        infos = self._step_infos(terminated, truncated)
        return self._observe(), reward, terminated, truncated, infos
