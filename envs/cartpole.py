"""Cart-pole without velocities (``evolstm/CartPoleNoVel-v0``).

Gymnasium's CartPole-v1 physics exactly (Barto, Sutton & Anderson 1983; explicit Euler,
``tau = 0.02`` s, force ±10 N, the same constants and failure bounds), observing only a
chosen subset of the state, by default cart position and pole angle, which makes the task
partially observable: the velocities must be inferred from memory.

* Observation: ``state[observe]`` as float32, ``state = (x, x_dot, theta, theta_dot)``;
  default ``observe=(0, 2)`` gives ``(x [m], theta [rad])``. Bounds as CartPole-v1's
  (±4.8 m, ±0.418 rad, velocities unbounded).
* Action: ``Discrete(2)``, 0 pushes the cart left (-10 N), 1 right (+10 N).
* Reward: 1 for every step, the terminating one included.
* Termination: ``|x| > 2.4`` m or ``|theta| > 12°``; truncation at 500 steps
  (registration / ``max_episode_steps``).
* Start: ``uniform(-0.05, 0.05, 4)`` from the env's (or slot's) own generator.
* Success: an episode that balances until the 500-step limit; a policy solves the task at
  a mean return of at least 475 (the registered ``reward_threshold``, as for CartPole-v1).
  No ``info["success"]``: the single env cannot see the truncation done by ``TimeLimit``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs import render
from envs.batched import BatchedEnv

GRAVITY = 9.8
CART_MASS = 1.0
POLE_MASS = 0.1
TOTAL_MASS = POLE_MASS + CART_MASS
HALF_LENGTH = 0.5
POLEMASS_LENGTH = POLE_MASS * HALF_LENGTH
FORCE_MAG = 10.0
TAU = 0.02
THETA_LIMIT = 12 * 2 * math.pi / 360
X_LIMIT = 2.4
STATE_NAMES = ("x", "x_dot", "theta", "theta_dot")
# Observation bounds of CartPole-v1: twice the failure bounds, so a failing state still fits.
STATE_HIGH = np.array([X_LIMIT * 2, np.inf, THETA_LIMIT * 2, np.inf], dtype=np.float32)
DEFAULT_OBSERVE = (0, 2)


def cartpole_step(state: np.ndarray, action: np.ndarray) -> np.ndarray:
    """One Euler step of CartPole-v1 for N carts.

    Same operations in the same order as gymnasium's ``CartPoleEnv.step``, so results agree
    to the last bit.

    :param state: ``[N, 4]`` float64, rows ``(x, x_dot, theta, theta_dot)``.
    :param action: ``[N]`` ints; 1 pushes right, anything else left.
    :return: the next state ``[N, 4]`` float64.
    """
    x, x_dot, theta, theta_dot = state.T
    force = np.where(action == 1, FORCE_MAG, -FORCE_MAG)
    costheta = np.cos(theta)
    sintheta = np.sin(theta)
    temp = (force + POLEMASS_LENGTH * np.square(theta_dot) * sintheta) / TOTAL_MASS
    thetaacc = (GRAVITY * sintheta - costheta * temp) / (
        HALF_LENGTH * (4.0 / 3.0 - POLE_MASS * np.square(costheta) / TOTAL_MASS)
    )
    xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS
    return np.stack(
        [
            x + TAU * x_dot,
            x_dot + TAU * xacc,
            theta + TAU * theta_dot,
            theta_dot + TAU * thetaacc,
        ],
        axis=1,
    )


def cartpole_failed(state: np.ndarray) -> np.ndarray:
    """``[N]`` bool: the cart left the track or the pole passed 12° (``state [N, 4]``)."""
    x, theta = state[:, 0], state[:, 2]
    return (x < -X_LIMIT) | (x > X_LIMIT) | (theta < -THETA_LIMIT) | (theta > THETA_LIMIT)


def draw_start_state(rng: np.random.Generator) -> np.ndarray:
    """A start state ``[4]``, drawn exactly as CartPole-v1's ``reset`` draws it."""
    return rng.uniform(low=-0.05, high=0.05, size=(4,))


def check_observe(observe: Sequence[int]) -> tuple[int, ...]:
    """Validate the ``observe`` kwarg (distinct indices into ``STATE_NAMES``)."""
    try:
        kept = tuple(int(i) for i in observe)
    except (TypeError, ValueError) as error:
        raise ValueError(f"observe must be a sequence of ints in 0..3, got {observe!r}") from error
    if not kept or len(set(kept)) != len(kept) or not all(0 <= i < 4 for i in kept):
        raise ValueError(
            f"observe must be distinct indices in 0..3 of {STATE_NAMES}, got {observe!r}"
        )
    return kept


def observation_space_for(observe: tuple[int, ...]) -> spaces.Box:
    """The float32 Box of the kept state components."""
    high = STATE_HIGH[list(observe)]
    return spaces.Box(-high, high, dtype=np.float32)


class CartPoleNoVelEnv(render.RenderedEnv, gym.Env[np.ndarray, int]):
    """CartPole-v1 observing only ``state[observe]`` (default: position and angle).

    :param observe: indices into ``(x, x_dot, theta, theta_dot)`` to observe.
    :param render_mode: ``None``, ``"rgb_array"`` (600 x 400 frames) or ``"human"``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": render.RENDER_MODES, "render_fps": 50}

    def __init__(
        self, observe: Sequence[int] = DEFAULT_OBSERVE, render_mode: str | None = None
    ) -> None:
        self.render_mode = render.check_render_mode(render_mode)
        self.observe = check_observe(observe)
        self.observation_space = observation_space_for(self.observe)
        self.action_space = spaces.Discrete(2)
        self.state: np.ndarray | None = None

    def _obs(self) -> np.ndarray:
        return self.state[list(self.observe)].astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.state = draw_start_state(self.np_random)
        self._render_human()
        return self._obs(), {}

    def frame(self) -> np.ndarray:
        """The cart and its pole (``uint8 [400, 600, 3]``)."""
        state = np.zeros(4) if self.state is None else self.state
        return render.cart_and_poles(float(state[0]), [float(state[2])], [HALF_LENGTH])

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"action must be 0 or 1, got {action!r}")
        state = cartpole_step(self.state[None], np.asarray([action]))
        self.state = state[0]
        terminated = bool(cartpole_failed(state)[0])
        self._render_human()
        return self._obs(), 1.0, terminated, False, {}


class CartPoleNoVelVectorEnv(BatchedEnv):
    """N cart-poles stepped as one numpy array; slot ``i`` equals a seeded
    :class:`CartPoleNoVelEnv` (see :class:`envs.batched.BatchedEnv`).

    :param num_envs: number of slots N.
    :param max_episode_steps: truncation limit (500, as CartPole-v1).
    :param observe: indices into ``(x, x_dot, theta, theta_dot)`` to observe.
    """

    def __init__(
        self,
        num_envs: int,
        max_episode_steps: int | None = 500,
        observe: Sequence[int] = DEFAULT_OBSERVE,
    ) -> None:
        super().__init__(num_envs, max_episode_steps)
        self.observe = check_observe(observe)
        self._set_spaces(observation_space_for(self.observe), spaces.Discrete(2))
        self.state = np.zeros((num_envs, 4))

    def _reset_slots(self, idx: np.ndarray) -> None:
        for i in idx:
            self.state[i] = draw_start_state(self.slot_rngs[i])

    def _step_all(self, actions: Any) -> tuple[np.ndarray, np.ndarray]:
        actions = np.asarray(actions).reshape(self.num_envs)
        self.state = cartpole_step(self.state, actions)
        return np.ones(self.num_envs), cartpole_failed(self.state)

    def _observe(self) -> np.ndarray:
        return self.state[:, list(self.observe)].astype(np.float32)
