"""Two discrete memory tasks with a known optimum: repeat-previous and delayed recall.

Both are the classic minimal probes of recurrent memory used alongside the LSTM papers'
benchmarks (cf. Hochreiter & Schmidhuber, "Long short-term memory", Neural Computation 1997,
experiments 2 and 3; Bakker 2002): the information the agent needs is shown once and must be
held in memory, and a memoryless policy is at chance.

``evolstm/RepeatPrevious-v0`` (:class:`RepeatPreviousEnv`, :class:`RepeatPreviousVectorEnv`)

* **Observation**: ``Discrete(num_symbols)``: the symbol ``s_t`` shown at step t; the
  episode's ``length + 1`` symbols are drawn i.i.d. uniform at reset (one
  ``integers(num_symbols, size=length + 1)`` draw); ``s_length`` is the final observation.
* **Action**: ``Discrete(num_symbols)``: the agent's guess of ``s_{t-k}``.
* **Reward**: +1 at step t >= k when the action equals ``s_{t-k}``, else 0; steps t < k give
  0 whatever the action (there is nothing to repeat yet).
* **Episode end**: ``terminated`` after ``length`` steps (the sequence's natural end, not a
  time limit). Optimum return ``length - k``; a memoryless policy (k >= 1) gets
  ``(length - k) / num_symbols`` in expectation. ``k = 0`` (echo) is a memoryless control.

``evolstm/DelayedRecall-v0`` (:class:`DelayedRecallEnv`, :class:`DelayedRecallVectorEnv`)

* **Observation**: ``Discrete(num_symbols + 2)``: at t = 0 the symbol ``s`` (0 ..
  ``num_symbols - 1``); at 1 <= t <= D the blank ``num_symbols`` ("wait"); at t = D + 1 the
  cue ``num_symbols + 1`` ("answer now"); the final observation is the blank. ``s`` and
  then the delay ``D`` (uniform on ``[min_delay, max_delay]``) are drawn at reset, in that
  order.
* **Action**: ``Discrete(num_symbols)``; only the action at the cue step counts.
* **Reward**: +1 if the action at the cue step equals ``s``, else 0; all other steps 0.
* **Episode end**: ``terminated`` right after the cue step (D + 2 steps). Optimum return 1;
  a memoryless policy gets ``1 / num_symbols`` in expectation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.batched import BatchedEnv
from envs.validation import require_int


def _checked_actions(actions: Any, num_symbols: int, num_envs: int) -> np.ndarray:
    """``actions`` as an int64 array ``[num_envs]``, each in ``[0, num_symbols - 1]``."""
    action = np.asarray(actions, dtype=np.int64).reshape(num_envs)
    if np.any((action < 0) | (action >= num_symbols)):
        raise ValueError(f"actions must lie in [0, {num_symbols - 1}], got {action}")
    return action


# -- repeat previous ----------------------------------------------------------------------
@dataclass(frozen=True)
class RepeatPreviousConfig:
    """Validated options of the repeat-previous task (see the module docstring)."""

    num_symbols: int = 4
    k: int = 1
    length: int = 64

    def __post_init__(self) -> None:
        require_int("num_symbols", self.num_symbols, 2)
        require_int("length", self.length, 1)
        require_int("k", self.k, 0, self.length - 1)


def repeat_previous_observe(symbols: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Observations ``[N]``: ``symbols[i, t[i]]`` (``symbols [N, length + 1]``)."""
    last = symbols.shape[1] - 1
    return symbols[np.arange(symbols.shape[0]), np.minimum(t, last)]


def repeat_previous_step(
    symbols: np.ndarray, t: np.ndarray, action: np.ndarray, config: RepeatPreviousConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of N episodes: ``(t + 1 [N], reward [N], terminated [N])``.

    :param symbols: ``[N, length + 1]`` the episodes' symbol sequences.
    :param t: ``[N]`` current step index.
    :param action: ``[N]`` guesses of ``symbols[:, t - k]``.
    """
    rows = np.arange(symbols.shape[0])
    recalled = symbols[rows, np.clip(t - config.k, 0, symbols.shape[1] - 1)]
    reward = ((t >= config.k) & (action == recalled)).astype(np.float64)
    t_next = t + 1
    return t_next, reward, t_next >= config.length


class RepeatPreviousEnv(gym.Env):
    """Output the symbol seen ``k`` steps ago (see the module docstring).

    :param num_symbols: alphabet size (>= 2).
    :param k: how many steps back to recall (0 <= k < length).
    :param length: steps per episode (>= 1).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, num_symbols: int = 4, k: int = 1, length: int = 64) -> None:
        self.config = RepeatPreviousConfig(num_symbols, k, length)
        self.observation_space = spaces.Discrete(num_symbols)
        self.action_space = spaces.Discrete(num_symbols)
        self._symbols = np.zeros((1, length + 1), dtype=np.int64)
        self._t = np.zeros(1, dtype=np.int64)

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.int64, dict]:
        super().reset(seed=seed)
        cfg = self.config
        self._symbols[0] = self.np_random.integers(cfg.num_symbols, size=cfg.length + 1)
        self._t[0] = 0
        return repeat_previous_observe(self._symbols, self._t)[0], {}

    def step(self, action: int) -> tuple[np.int64, float, bool, bool, dict]:
        action_array = _checked_actions(action, self.config.num_symbols, 1)
        self._t, reward, terminated = repeat_previous_step(
            self._symbols, self._t, action_array, self.config
        )
        obs = repeat_previous_observe(self._symbols, self._t)[0]
        return obs, float(reward[0]), bool(terminated[0]), False, {}


class RepeatPreviousVectorEnv(BatchedEnv):
    """N repeat-previous episodes in numpy; bit-identical to ``SyncVectorEnv`` of the single env.

    :param num_envs: number of slots N.
    :param max_episode_steps: optional truncation limit (None: episodes end by themselves).
    :param num_symbols, k, length: as for :class:`RepeatPreviousEnv`.
    """

    def __init__(
        self,
        num_envs: int,
        max_episode_steps: int | None = None,
        num_symbols: int = 4,
        k: int = 1,
        length: int = 64,
    ) -> None:
        self.config = RepeatPreviousConfig(num_symbols, k, length)
        super().__init__(num_envs, max_episode_steps=max_episode_steps)
        self._set_spaces(spaces.Discrete(num_symbols), spaces.Discrete(num_symbols))
        self.symbols = np.zeros((num_envs, length + 1), dtype=np.int64)
        self.t = np.zeros(num_envs, dtype=np.int64)

    def _reset_slots(self, idx: np.ndarray) -> None:
        cfg = self.config
        for i in idx:
            self.symbols[i] = self.slot_rngs[i].integers(cfg.num_symbols, size=cfg.length + 1)
        self.t[idx] = 0

    def _step_all(self, actions: Any) -> tuple[np.ndarray, np.ndarray]:
        action = _checked_actions(actions, self.config.num_symbols, self.num_envs)
        self.t, reward, terminated = repeat_previous_step(self.symbols, self.t, action, self.config)
        return reward, terminated

    def _observe(self) -> np.ndarray:
        return repeat_previous_observe(self.symbols, self.t)


# -- delayed recall -----------------------------------------------------------------------
@dataclass(frozen=True)
class DelayedRecallConfig:
    """Validated options of the delayed-recall task (see the module docstring)."""

    num_symbols: int = 4
    min_delay: int = 5
    max_delay: int = 15

    def __post_init__(self) -> None:
        require_int("num_symbols", self.num_symbols, 2)
        require_int("min_delay", self.min_delay, 0)
        require_int("max_delay", self.max_delay, self.min_delay)

    @property
    def blank(self) -> int:
        """The "wait" observation."""
        return self.num_symbols

    @property
    def cue(self) -> int:
        """The "answer now" observation."""
        return self.num_symbols + 1


def delayed_recall_observe(
    symbol: np.ndarray, delay: np.ndarray, t: np.ndarray, config: DelayedRecallConfig
) -> np.ndarray:
    """Observations ``[N]`` at step ``t [N]`` of episodes with ``symbol [N]``, ``delay [N]``."""
    obs = np.where(t == delay + 1, config.cue, config.blank)
    return np.where(t == 0, symbol, obs)


def delayed_recall_step(
    symbol: np.ndarray, delay: np.ndarray, t: np.ndarray, action: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of N episodes: ``(t + 1 [N], reward [N], terminated [N])``."""
    recall = t == delay + 1
    reward = (recall & (action == symbol)).astype(np.float64)
    return t + 1, reward, recall


class DelayedRecallEnv(gym.Env):
    """Report the first symbol after a random delay (see the module docstring).

    :param num_symbols: alphabet size (>= 2).
    :param min_delay: shortest delay D (>= 0 blank steps between symbol and cue).
    :param max_delay: longest delay D (>= min_delay).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, num_symbols: int = 4, min_delay: int = 5, max_delay: int = 15) -> None:
        self.config = DelayedRecallConfig(num_symbols, min_delay, max_delay)
        self.observation_space = spaces.Discrete(num_symbols + 2)
        self.action_space = spaces.Discrete(num_symbols)
        self._symbol = np.zeros(1, dtype=np.int64)
        self._delay = np.zeros(1, dtype=np.int64)
        self._t = np.zeros(1, dtype=np.int64)

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.int64, dict]:
        super().reset(seed=seed)
        cfg = self.config
        self._symbol[0] = self.np_random.integers(cfg.num_symbols)
        self._delay[0] = self.np_random.integers(cfg.min_delay, cfg.max_delay + 1)
        self._t[0] = 0
        return self._observe(), {}

    def _observe(self) -> np.int64:
        return delayed_recall_observe(self._symbol, self._delay, self._t, self.config)[0]

    def step(self, action: int) -> tuple[np.int64, float, bool, bool, dict]:
        action_array = _checked_actions(action, self.config.num_symbols, 1)
        self._t, reward, terminated = delayed_recall_step(
            self._symbol, self._delay, self._t, action_array
        )
        return self._observe(), float(reward[0]), bool(terminated[0]), False, {}


class DelayedRecallVectorEnv(BatchedEnv):
    """N delayed-recall episodes in numpy; bit-identical to ``SyncVectorEnv`` of the single env.

    :param num_envs: number of slots N.
    :param max_episode_steps: optional truncation limit (None: episodes end by themselves).
    :param num_symbols, min_delay, max_delay: as for :class:`DelayedRecallEnv`.
    """

    def __init__(
        self,
        num_envs: int,
        max_episode_steps: int | None = None,
        num_symbols: int = 4,
        min_delay: int = 5,
        max_delay: int = 15,
    ) -> None:
        self.config = DelayedRecallConfig(num_symbols, min_delay, max_delay)
        super().__init__(num_envs, max_episode_steps=max_episode_steps)
        self._set_spaces(spaces.Discrete(num_symbols + 2), spaces.Discrete(num_symbols))
        self.symbol = np.zeros(num_envs, dtype=np.int64)
        self.delay = np.zeros(num_envs, dtype=np.int64)
        self.t = np.zeros(num_envs, dtype=np.int64)

    def _reset_slots(self, idx: np.ndarray) -> None:
        cfg = self.config
        for i in idx:
            rng = self.slot_rngs[i]
            self.symbol[i] = rng.integers(cfg.num_symbols)
            self.delay[i] = rng.integers(cfg.min_delay, cfg.max_delay + 1)
        self.t[idx] = 0

    def _step_all(self, actions: Any) -> tuple[np.ndarray, np.ndarray]:
        action = _checked_actions(actions, self.config.num_symbols, self.num_envs)
        self.t, reward, terminated = delayed_recall_step(self.symbol, self.delay, self.t, action)
        return reward, terminated

    def _observe(self) -> np.ndarray:
        return delayed_recall_observe(self.symbol, self.delay, self.t, self.config)
