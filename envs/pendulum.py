"""Pendulum swing-up without angular velocity (``evolstm/PendulumNoVel-v0``).

Gymnasium's Pendulum-v1 physics exactly (``dt = 0.05``, ``m = l = 1``, ``g = 10``,
``|theta_dot| <= 8``, torque in ``[-2, 2]``), observing only ``(cos theta, sin theta)``: the
angular velocity must be inferred from memory.

* Observation: ``(cos theta, sin theta)`` float32 in ``Box(-1, 1, (2,))``.
* Action: ``Box(-2, 2, (1,))`` torque (clipped to [-2, 2] as Pendulum-v1 does).
* Reward: ``-(angle_normalize(theta)^2 + 0.1 theta_dot^2 + 0.001 torque^2)`` of the state
  before the step, in ``[-16.27, 0]``.
* Start: ``uniform(low=(-pi, -1), high=(pi, 1))`` for ``(theta, theta_dot)``, drawn as
  Pendulum-v1's ``reset`` draws it (reset options are not supported).
* No termination; truncation at 200 steps (registration / ``max_episode_steps``).
* Success: none per episode; return is the measure (well-trained policies reach about -150
  mean return on Pendulum-v1).
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs import render
from envs.batched import BatchedEnv

MAX_SPEED = 8.0
MAX_TORQUE = 2.0
DT = 0.05
MASS = 1.0
LENGTH = 1.0
DEFAULT_GRAVITY = 10.0
START_HIGH = np.array([np.pi, 1.0])


def angle_normalize(angle: np.ndarray) -> np.ndarray:
    """Wrap angles to ``[-pi, pi)``."""
    return ((angle + np.pi) % (2 * np.pi)) - np.pi


def pendulum_step(
    state: np.ndarray, action: np.ndarray, g: float = DEFAULT_GRAVITY
) -> tuple[np.ndarray, np.ndarray]:
    """One step of Pendulum-v1 for N pendulums (same operations as gymnasium's ``step``).

    :param state: ``[N, 2]`` float64 rows ``(theta, theta_dot)``.
    :param action: ``[N, 1]`` torques (kept in their dtype, as Pendulum-v1 keeps float32).
    :param g: gravity.
    :return: ``(next state [N, 2], reward [N])``.
    """
    th, thdot = state[:, 0], state[:, 1]
    u = np.clip(action, -MAX_TORQUE, MAX_TORQUE)[:, 0]
    costs = angle_normalize(th) ** 2 + 0.1 * thdot**2 + 0.001 * (u**2)
    newthdot = thdot + (3 * g / (2 * LENGTH) * np.sin(th) + 3.0 / (MASS * LENGTH**2) * u) * DT
    newthdot = np.clip(newthdot, -MAX_SPEED, MAX_SPEED)
    newth = th + newthdot * DT
    return np.stack([newth, newthdot], axis=1), -costs


def observe(state: np.ndarray) -> np.ndarray:
    """``[N, 2]`` states -> ``[N, 2]`` float32 ``(cos theta, sin theta)``."""
    theta = state[:, 0]
    return np.stack([np.cos(theta), np.sin(theta)], axis=1).astype(np.float32)


def draw_start_state(rng: np.random.Generator) -> np.ndarray:
    """A start state ``[2]``, drawn exactly as Pendulum-v1's ``reset`` draws it."""
    return rng.uniform(low=-START_HIGH, high=START_HIGH)


def check_gravity(g: float) -> float:
    """Validate the ``g`` kwarg (a finite positive number)."""
    if isinstance(g, bool) or not isinstance(g, int | float) or not 0 < g < np.inf:
        raise ValueError(f"g must be a finite number > 0, got {g!r}")
    return float(g)


def _spaces() -> tuple[spaces.Box, spaces.Box]:
    observation = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    action = spaces.Box(-MAX_TORQUE, MAX_TORQUE, shape=(1,), dtype=np.float32)
    return observation, action


class PendulumNoVelEnv(render.RenderedEnv, gym.Env[np.ndarray, np.ndarray]):
    """Pendulum-v1 observing ``(cos theta, sin theta)`` only.

    :param g: gravity (Pendulum-v1's default 10).
    :param render_mode: ``None``, ``"rgb_array"`` (300 x 300 frames) or ``"human"``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": render.RENDER_MODES, "render_fps": 30}

    def __init__(self, g: float = DEFAULT_GRAVITY, render_mode: str | None = None) -> None:
        self.render_mode = render.check_render_mode(render_mode)
        self.g = check_gravity(g)
        self.observation_space, self.action_space = _spaces()
        self.state: np.ndarray | None = None

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.state = draw_start_state(self.np_random)
        self._render_human()
        return observe(self.state[None])[0], {}

    def frame(self) -> np.ndarray:
        """The pendulum (``uint8 [300, 300, 3]``; upright at theta = 0)."""
        return render.pendulum(0.0 if self.state is None else float(self.state[0]))

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        state, reward = pendulum_step(self.state[None], np.asarray(action).reshape(1, 1), self.g)
        self.state = state[0]
        self._render_human()
        return observe(state)[0], float(reward[0]), False, False, {}


class PendulumNoVelVectorEnv(BatchedEnv):
    """N pendulums stepped as one numpy array; slot ``i`` equals a seeded
    :class:`PendulumNoVelEnv` (see :class:`envs.batched.BatchedEnv`).

    :param num_envs: number of slots N.
    :param max_episode_steps: truncation limit (200, as Pendulum-v1).
    :param g: gravity.
    """

    def __init__(
        self, num_envs: int, max_episode_steps: int | None = 200, g: float = DEFAULT_GRAVITY
    ) -> None:
        super().__init__(num_envs, max_episode_steps)
        self.g = check_gravity(g)
        self._set_spaces(*_spaces())
        self.state = np.zeros((num_envs, 2))

    def _reset_slots(self, idx: np.ndarray) -> None:
        for i in idx:
            self.state[i] = draw_start_state(self.slot_rngs[i])

    def _step_all(self, actions: Any) -> tuple[np.ndarray, np.ndarray]:
        actions = np.asarray(actions).reshape(self.num_envs, 1)
        self.state, reward = pendulum_step(self.state, actions, self.g)
        return reward, np.zeros(self.num_envs, dtype=bool)

    def _observe(self) -> np.ndarray:
        return observe(self.state)
