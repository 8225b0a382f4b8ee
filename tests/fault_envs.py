"""Environments that misbehave on purpose, for the reliability tests (``module:Class`` ids).

:class:`FaultyEnv` is a 10-step task with a ``Box(4)`` observation and two actions whose
reward is the action (so members differ); ``mode`` picks the fault and ``at_step`` when it
strikes. :class:`SlowEnv` steps slowly and can hang once, to test Ray actor faults.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

MODES = (
    "none",
    "nan_obs",
    "nan_reward",
    "inf_reward",
    "huge_reward",
    "raise_step",
    "raise_reset",
    "wrong_shape",
    "never_ends",
    "constant",
)


class FaultyEnv(gym.Env):
    """``mode`` (see :data:`MODES`) strikes at step ``at_step`` of every episode after the
    first ``from_episode`` episodes of this instance; with ``only_action`` set, only when
    the action taken then equals it (so only some members meet it)."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        mode: str = "none",
        at_step: int = 3,
        only_action: int | None = None,
        from_episode: int = 0,
    ) -> None:
        assert mode in MODES, mode
        self.mode, self.at_step, self.only_action = mode, at_step, only_action
        self.from_episode, self._episodes = from_episode, 0
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (4,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._episodes += 1
        if self.mode == "raise_reset" and self._episodes > self.from_episode:
            raise RuntimeError("reset failed on purpose")
        self._t = 0
        return self.np_random.uniform(-1, 1, 4).astype(np.float32), {}

    def step(self, action):
        self._t += 1
        obs = self.np_random.uniform(-1, 1, 4).astype(np.float32)
        reward = 1.0 if self.mode == "constant" else float(action)
        strike = (
            self._t == self.at_step
            and self._episodes > self.from_episode
            and (self.only_action is None or int(action) == self.only_action)
        )
        if strike and self.mode == "nan_obs":
            obs[2] = np.nan
        elif strike and self.mode == "nan_reward":
            reward = float("nan")
        elif strike and self.mode == "inf_reward":
            reward = float("inf")
        elif strike and self.mode == "huge_reward":  # finite, but its square overflows float32
            reward = 1e30
        elif strike and self.mode == "raise_step":
            raise RuntimeError("step failed on purpose")
        elif strike and self.mode == "wrong_shape":
            obs = np.zeros(3, np.float32)
        done = self._t >= 10 and self.mode != "never_ends"
        return obs, reward, done, False, {}


class TextActionEnv(FaultyEnv):
    """An action space no policy head supports."""

    def __init__(self) -> None:
        super().__init__()
        self.action_space = gym.spaces.Text(5)


class TextObservationEnv(FaultyEnv):
    """An observation space no encoder supports."""

    def __init__(self) -> None:
        super().__init__()
        self.observation_space = gym.spaces.Text(5)


class SlowEnv(FaultyEnv):
    """:class:`FaultyEnv` that sleeps ``delay_s`` per step. When it steps it touches
    ``busy_file`` with its process id appended (``busy-1234``: that process is busy). With
    ``hang_file`` set, the first env to step while that file is absent creates it and hangs
    (an actor that never answers)."""

    def __init__(self, delay_s: float = 0.01, busy_file: str = "", hang_file: str = "") -> None:
        super().__init__()
        self.delay_s, self.busy_file, self.hang_file = delay_s, busy_file, hang_file

    def step(self, action):
        if self.busy_file:
            Path(f"{self.busy_file}-{os.getpid()}").touch()
        if self.hang_file and self._claim(self.hang_file):
            time.sleep(3600)
        time.sleep(self.delay_s)
        return super().step(action)

    @staticmethod
    def _claim(path: str) -> bool:
        """Create ``path`` atomically: true for exactly one process, however many race (a
        check-then-touch let two actors both hang)."""
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True
