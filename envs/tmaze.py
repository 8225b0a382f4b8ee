"""Bakker's long-term-dependency T-maze (``evolstm/TMaze-v0``).

B. Bakker, "Reinforcement learning with long short-term memory", NIPS 14 (2002), section 4;
used as a benchmark by D. Wierstra, A. Foerster, J. Peters and J. Schmidhuber, "Solving deep
memory POMDPs with recurrent policy gradients", ICANN 2007.

Layout (N = ``length``)::

                          [North arm]
    S  c  c  ...  c  c  J
                          [South arm]
    x: 0  1  ...   N-1   N

The agent starts at the left end ``x = 0`` (S), walks N cells East to the junction ``x = N``
(J), and there moves North or South into one of the two arms, which ends the episode. The
goal arm is drawn per episode (one ``integers(2)`` draw from the env's generator at reset);
only the road sign at the start cell tells which arm it is, so the agent must carry that
one bit over at least N steps.

* **Observation**: ``MultiBinary(3)`` (int8), Bakker's codes: start cell ``011`` when the
  goal is North, ``110`` when it is South; every corridor cell ``101``; the junction ``010``
  (also returned after the episode ends). Bakker lists the two start codes without saying
  which side each one means; 011 = North is this package's convention. The sign belongs to
  the start cell, so an agent that walks back to ``x = 0`` sees it again (Bakker's grid
  maze); a memoryless policy still cannot use it at the junction, whose code is the same
  for both goal sides.
* **Action**: ``Discrete(4)``, compass moves 0 = North, 1 = East, 2 = South, 3 = West. A move
  into a wall (West at the start, East at the junction, North/South in the corridor) leaves
  the agent where it is.
* **Reward**: +4 for entering the goal arm, -0.1 for entering the other arm (Bakker's values;
  both terminate the episode). Every other step gives ``step_penalty`` (default 0), plus
  ``wall_penalty`` (default -0.1, Bakker's "reward of -.1 when it stands still") when the
  move was blocked by a wall. The optimum is +4 in N + 1 steps.
* **Episode end**: ``terminated`` on entering an arm; ``truncated`` after ``step_limit``
  steps (default ``2 * (N + 1)``, twice the shortest episode; Bakker states no limit, so
  this default is this package's choice).
* **Success**: ``info["success"]`` on the last step of an episode (terminated or truncated
  by ``step_limit``): True iff the agent entered the goal arm. A memoryless policy succeeds
  in at most 50% of episodes; an agent that remembers the first observation in 100%.

Checked against public code (Bakker's paper text past its introduction was not reachable):
PyBrain's ``TMaze`` (``pybrain/rl/environments/mazes/tasks/tmaze.py`` with ``mazes/maze.py``,
``mazes/tasks/maze.py``, ``mazes/tasks/pomdp.py``), from the same lab as Wierstra et al. 2007,
has the same layout (start at the corridor's first cell, junction ``length`` steps East), the
same four compass actions with walls leaving the agent in place, +4 for the goal arm, -0.1 for
the other arm (both ending the episode), -0.1 for a move into a wall, 0 for other steps, the
sign shown only while the agent stands on the start cell, and no step limit (``maxSteps =
None``); it codes observations 1-of-4 instead of Bakker's three bits. Public re-implementations
of Bakker's task agree on the codes 011/110 (start), 101 (corridor), 010 (junction).
Unverified: which start code means North (those re-implementations disagree: one maps 011 to
the upper goal, another 110), and the default ``step_limit`` (none in Bakker or PyBrain; ours
only bounds episodes of a policy that never turns at the junction).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs import render
from envs.batched import BatchedEnv
from envs.validation import require_int

NORTH, EAST, SOUTH, WEST = 0, 1, 2, 3
GOAL_REWARD = 4.0
WRONG_ARM_REWARD = -0.1

# Rows: start (goal South), start (goal North), corridor, junction (see tmaze_observe).
OBSERVATION_CODES = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [0, 1, 0]], dtype=np.int8)


@dataclass(frozen=True)
class TMazeConfig:
    """Validated task options (see the module docstring for their meaning)."""

    length: int = 10
    step_limit: int | None = None
    wall_penalty: float = -0.1
    step_penalty: float = 0.0

    def __post_init__(self) -> None:
        require_int("length", self.length, 1)
        if self.step_limit is None:
            object.__setattr__(self, "step_limit", 2 * (int(self.length) + 1))
        require_int("step_limit", self.step_limit, 1)
        for key in ("wall_penalty", "step_penalty"):
            value = getattr(self, key)
            if not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
                raise ValueError(f"{key} must be a finite float, got {value!r}")


def tmaze_observe(position: np.ndarray, goal_north: np.ndarray, length: int) -> np.ndarray:
    """Observations ``[N, 3]`` (int8) of agents at ``position [N]`` with goal sides ``[N]``."""
    index = np.where(position == 0, goal_north.astype(np.int64), 2)
    index = np.where(position == length, 3, index)
    return OBSERVATION_CODES[index]


def tmaze_step(
    position: np.ndarray, goal_north: np.ndarray, action: np.ndarray, config: TMazeConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One move of N agents.

    :param position: ``[N]`` int, 0 (start) .. ``config.length`` (junction).
    :param goal_north: ``[N]`` bool, True where the goal is the North arm.
    :param action: ``[N]`` int in {0, 1, 2, 3} (N, E, S, W).
    :return: ``(new_position [N], reward [N] float, terminated [N] bool, success [N] bool)``.
    """
    at_junction = position == config.length
    go_north = action == NORTH
    entered_arm = at_junction & (go_north | (action == SOUTH))
    success = entered_arm & (go_north == goal_north)
    moves_east = (action == EAST) & ~at_junction
    moves_west = (action == WEST) & (position > 0)
    new_position = position + moves_east - moves_west
    blocked = ~(moves_east | moves_west | entered_arm)
    reward = np.where(
        entered_arm,
        np.where(success, GOAL_REWARD, WRONG_ARM_REWARD),
        config.step_penalty + blocked * config.wall_penalty,
    )
    return new_position, reward, entered_arm, success


def _checked_actions(actions: Any, num_envs: int) -> np.ndarray:
    """``actions`` as an int64 array ``[num_envs]``, each a compass move in {0, 1, 2, 3}."""
    action = np.asarray(actions, dtype=np.int64).reshape(num_envs)
    if np.any((action < 0) | (action > 3)):
        raise ValueError(f"actions must lie in {{0, 1, 2, 3}} (N, E, S, W), got {action}")
    return action


class TMazeEnv(render.RenderedEnv, gym.Env):
    """Single T-maze (see the module docstring).

    :param length: corridor length N >= 1 (steps from the start to the junction).
    :param step_limit: truncation after this many steps (None: ``2 * (N + 1)``).
    :param wall_penalty: extra reward of a move blocked by a wall (Bakker: -0.1).
    :param step_penalty: reward of every non-final step (default 0).
    :param render_mode: ``None``, ``"rgb_array"`` or ``"human"`` (the corridor, the arms
        with the goal arm green, the road sign at the start, the agent as a disc).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": render.RENDER_MODES, "render_fps": 4}

    def __init__(
        self,
        length: int = 10,
        step_limit: int | None = None,
        wall_penalty: float = -0.1,
        step_penalty: float = 0.0,
        render_mode: str | None = None,
    ) -> None:
        self.render_mode = render.check_render_mode(render_mode)
        self.config = TMazeConfig(length, step_limit, wall_penalty, step_penalty)
        self.observation_space = spaces.MultiBinary(3)
        self.action_space = spaces.Discrete(4)
        self._position = np.zeros(1, dtype=np.int64)
        self._goal_north = np.zeros(1, dtype=bool)
        self._steps = 0

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._goal_north[0] = self.np_random.integers(2) == 1
        self._position[0] = 0
        self._steps = 0
        self._render_human()
        return tmaze_observe(self._position, self._goal_north, self.config.length)[0], {}

    def frame(self) -> np.ndarray:
        """``uint8 [5 * 24, (length + 3) * 24, 3]``."""
        return render.tmaze(self.config.length, int(self._position[0]), bool(self._goal_north[0]))

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        action_array = _checked_actions(action, 1)
        self._position, reward, terminated, success = tmaze_step(
            self._position, self._goal_north, action_array, self.config
        )
        self._steps += 1
        truncated = self._steps >= self.config.step_limit
        info = {"success": bool(success[0])} if terminated[0] or truncated else {}
        obs = tmaze_observe(self._position, self._goal_north, self.config.length)[0]
        self._render_human()
        return obs, float(reward[0]), bool(terminated[0]), bool(truncated), info

    def success_test(self, make_policy_fn: Callable[[], Any]) -> dict[str, Any]:
        """The task's own "solved" (see :mod:`evolstm.rollouts.success`): the deterministic policy
        reaches the goal arm for both road signs. The maze is deterministic given the goal
        side, so these two episodes decide every episode the policy can meet."""
        policy_fn = make_policy_fn()
        env = TMazeVectorEnv(2, **dataclasses.asdict(self.config))
        env.reset(seed=0)
        env.goal_north[:] = [True, False]
        obs = env._observe()
        episode_start = np.ones(2, dtype=bool)
        success = np.zeros(2, dtype=bool)
        alive = np.ones(2, dtype=bool)
        while alive.any():
            obs, _, terminated, truncated, info = env.step(policy_fn(obs, episode_start))
            episode_start[:] = False
            ended = alive & (terminated | truncated)
            if ended.any():
                success[ended] = np.asarray(info["success"])[ended]
            alive &= ~ended
        env.close()
        return {"solved": bool(success.all()), "goals_found": int(success.sum())}


class TMazeVectorEnv(BatchedEnv):
    """N T-mazes stepped together in numpy; bit-identical to ``SyncVectorEnv`` of ``TMazeEnv``.

    :param num_envs: number of slots N.
    :param max_episode_steps: optional extra truncation limit; the effective limit is
        ``min(max_episode_steps, step_limit)``.
    :param length, step_limit, wall_penalty, step_penalty: as for :class:`TMazeEnv`.

    Infos: ``"success"`` (bool ``[N]``) with mask ``"_success"`` on steps where an episode ends.
    """

    def __init__(
        self,
        num_envs: int,
        max_episode_steps: int | None = None,
        length: int = 10,
        step_limit: int | None = None,
        wall_penalty: float = -0.1,
        step_penalty: float = 0.0,
    ) -> None:
        self.config = TMazeConfig(length, step_limit, wall_penalty, step_penalty)
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
        limit = self.config.step_limit
        if max_episode_steps is not None:
            limit = min(limit, max_episode_steps)
        super().__init__(num_envs, max_episode_steps=limit)
        self._set_spaces(spaces.MultiBinary(3), spaces.Discrete(4))
        self.position = np.zeros(num_envs, dtype=np.int64)
        self.goal_north = np.zeros(num_envs, dtype=bool)
        self._success = np.zeros(num_envs, dtype=bool)

    def _reset_slots(self, idx: np.ndarray) -> None:
        for i in idx:
            self.goal_north[i] = self.slot_rngs[i].integers(2) == 1
        self.position[idx] = 0

    def _step_all(self, actions: Any) -> tuple[np.ndarray, np.ndarray]:
        action = _checked_actions(actions, self.num_envs)
        self.position, reward, terminated, self._success = tmaze_step(
            self.position, self.goal_north, action, self.config
        )
        return reward, terminated

    def _observe(self) -> np.ndarray:
        return tmaze_observe(self.position, self.goal_north, self.config.length)

    def _step_infos(self, terminated: np.ndarray, truncated: np.ndarray) -> dict[str, Any]:
        ended = terminated | truncated
        if not ended.any():
            return {}
        return {"success": self._success & ended, "_success": ended}
