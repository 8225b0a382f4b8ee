"""Small environments no built-in code knows, used to test the ``module:Class`` plug-in path."""

from __future__ import annotations

import gymnasium as gym


class CueRecallEnv(gym.Env):
    """A cue (1 or 2) is shown at t = 0, then a blank (0) for ``delay`` steps; at the last
    step the agent must name the cue (action 0 or 1). Reward 1 for the right answer, else 0.

    Observation ``Discrete(3)``; a memoryless policy is right half of the time.
    """

    metadata = {"render_modes": []}

    def __init__(self, delay: int = 3) -> None:
        self.delay = delay
        self.observation_space = gym.spaces.Discrete(3)
        self.action_space = gym.spaces.Discrete(2)
        self._cue = 1
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._cue = int(self.np_random.integers(1, 3))
        self._t = 0
        return self._cue, {}

    def step(self, action):
        self._t += 1
        if self._t <= self.delay:
            return 0, 0.0, False, False, {}
        success = int(action) == self._cue - 1
        return 0, float(success), True, False, {"success": success}
