"""Pole balancing, the classic neuroevolution benchmark (single and double pole).

Registered as ``evolstm/SinglePoleNoVel-v0`` (``poles=1, velocities=False``),
``evolstm/DoublePole-v0`` (``poles=2, velocities=True``) and ``evolstm/DoublePoleNoVel-v0``
(``poles=2, velocities=False``). Physics per Gomez, Schmidhuber & Miikkulainen, "Accelerated
Neural Evolution through Cooperatively Coevolved Synapses", JMLR 9, 2008, Appendix A (after
Wieland 1991): one or two poles hinged on one cart on a 4.8 m track.

* Constants: cart 1 kg; pole half-lengths 0.5 m and 0.05 m; pole masses 0.1 kg and 0.01 kg;
  hinge friction ``mu_p = 2e-6``; ``g = 9.8``. Integration: 4th-order Runge-Kutta,
  ``tau = 0.01`` s, two integration steps per action (the controller acts every 0.02 s).
* State: ``(x, x_dot, theta1, theta1_dot[, theta2, theta2_dot])`` in m, m/s, rad, rad/s,
  angles from vertical. Start: long pole at 0.07 rad (4.0156°), all else 0 (or
  ``initial_state``). The start is deterministic: seeding changes nothing (unless
  ``random_start`` > 0 draws each episode's start, a training aid).
* Action: ``Box(-1, 1, (1,))``; force = 10 N x action (clipped to [-1, 1]), with
  ``|force| >= 10/256`` N: a smaller force keeps its sign (0 counts as positive) and takes
  that magnitude.
* Observation (float32): with ``velocities=True``
  ``(x/4.8, x_dot/2, theta1/0.52, theta1_dot/2[, theta2/0.52, theta2_dot/2])``; without,
  ``(x/4.8, theta1/0.52[, theta2/0.52])``: the input scaling of Stanley's NEAT
  double-pole code (``CartPole::evalNet``, Gomez's physics) and of Shark's ``DoublePole`` /
  ``SinglePole`` (Heidrich-Meisner & Igel's code), used for one and two poles alike.
  Gomez et al. (2008) do not state an input scaling in the text available here.
* Failure (termination): ``|x| > 2.4`` m or a pole beyond ±36° (±12° for one pole).
* Reward ``"standard"``: 1 per step that ends balanced (0 on the failing step); episodes are
  truncated at ``max_steps`` (default 100,000); success = balancing all 100,000 steps.
* Reward ``"damping"`` (Gruau, Whitley & Pyeatt 1996): 1,000-step episodes, episode fitness
  ``F = 0.1 f1 + 0.9 f2``, ``f1 = t/1000`` (t = steps balanced), ``f2 = 0`` if ``t < 100``,
  else ``0.75 / sum over the last 100 balanced steps of (|x| + |x_dot| + |theta1| +
  |theta1_dot|)`` (raw state units). Delivered as ``0.1/1000`` per balanced step plus
  ``0.9 f2`` added to the episode's final step, so the episode's summed reward is ``F``.
  The env truncates by itself at ``max_steps`` (use that kwarg, not an outer ``TimeLimit``,
  which the damping reward cannot see).
* ``info["success"]`` on final steps: the episode balanced all ``max_steps`` steps.

:mod:`envs.pole_success` holds the success tests of the same paper (100,000 steps, the
625-start generalisation test).

Checked against public code (the paper's appendix text itself was not reachable): the
constants, the RK4 scheme, the 0.07 rad start and the failure angles against Gomez's cart-pole
code as shipped in PyBrain (``pybrain/rl/environments/cartpole/fast_version/cartpole.cpp``),
which also holds the force rule: clip to ±10 N, then a force in ``[0, 10/256)`` becomes
``+10/256`` and one in ``(-10/256, 0)`` becomes ``-10/256``; the damping fitness, its 1,000
steps and the 625 generalisation starts (±2.16 m, ±1.35 m/s, ±3.6°, ±8.6°/s at 0.05 .. 0.95 of
the range, 1,000 steps, ≥ 200 to pass) against Stanley's NEAT ``experiments.cpp`` and Shark's
``GruauPole.h``. Two one-step boundary cases differ between those codes and are kept as the
formula reads here: NEAT pays f2 only when more than 100 steps were balanced (here from 100),
and both codes count a start that fails on its 1,000th step as balanced (here it is not).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs import render
from envs.batched import BatchedEnv

CART_MASS = 1.0
HALF_LENGTHS = np.array([0.5, 0.05])
POLE_MASSES = np.array([0.1, 0.01])
MU_P = 2e-6
# Negative in Wieland's equations as written below: it makes the poles fall away from vertical.
GRAVITY = -9.8
TAU = 0.01
STEPS_PER_ACTION = 2
FORCE_MAG = 10.0
MIN_FORCE = FORCE_MAG / 256
X_LIMIT = 2.4
ANGLE_LIMITS = {1: np.deg2rad(12.0), 2: np.deg2rad(36.0)}
START_ANGLE = 0.07
# Input scaling of the NEAT and Shark double-pole codes (see the module docstring).
X_SCALE = 4.8
ANGLE_SCALE = 0.52
VELOCITY_SCALE = 2.0
REWARDS = ("standard", "damping")
DEFAULT_MAX_STEPS = {"standard": 100_000, "damping": 1_000}
DAMPING_WINDOW = 100
DAMPING_STEP_REWARD = 0.1 / 1000


def pole_derivatives(state: np.ndarray, force: np.ndarray) -> np.ndarray:
    """Time derivative of the cart-pole state (Wieland's equations of motion).

    :param state: ``[N, 2 + 2K]`` rows ``(x, x_dot, theta_1, theta_1_dot, ...)``, K poles.
    :param force: ``[N]`` force on the cart in N.
    :return: ``[N, 2 + 2K]`` derivatives.
    """
    poles = (state.shape[1] - 2) // 2
    mass, half = POLE_MASSES[:poles], HALF_LENGTHS[:poles]
    theta, theta_dot = state[:, 2::2], state[:, 3::2]
    cos, sin = np.cos(theta), np.sin(theta)
    g_sin = GRAVITY * sin
    friction = MU_P * theta_dot / (mass * half)
    effective_force = mass * half * theta_dot**2 * sin + 0.75 * mass * cos * (friction + g_sin)
    effective_mass = mass * (1.0 - 0.75 * cos**2)
    x_acc = (force + effective_force.sum(axis=1)) / (CART_MASS + effective_mass.sum(axis=1))
    theta_acc = -0.75 * (x_acc[:, None] * cos + g_sin + friction) / half
    derivative = np.empty_like(state)
    derivative[:, 0] = state[:, 1]
    derivative[:, 1] = x_acc
    derivative[:, 2::2] = theta_dot
    derivative[:, 3::2] = theta_acc
    return derivative


def rk4_step(state: np.ndarray, force: np.ndarray, dt: float = TAU) -> np.ndarray:
    """One classical 4th-order Runge-Kutta step of :func:`pole_derivatives` (``[N, S]``)."""
    k1 = pole_derivatives(state, force)
    k2 = pole_derivatives(state + 0.5 * dt * k1, force)
    k3 = pole_derivatives(state + 0.5 * dt * k2, force)
    k4 = pole_derivatives(state + dt * k3, force)
    return state + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def action_to_force(action: np.ndarray) -> np.ndarray:
    """``[N, 1]`` actions in [-1, 1] -> ``[N]`` forces in N (at least 10/256 N in size)."""
    force = FORCE_MAG * np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
    small = np.abs(force) < MIN_FORCE
    return np.where(small, np.where(force < 0, -MIN_FORCE, MIN_FORCE), force)


def _derivatives_rows(rows: np.ndarray, force: np.ndarray) -> np.ndarray:
    """:func:`pole_derivatives` of the transposed state ``[S, N]`` (one contiguous row per
    state entry), the same operations on the same values in the same order, so the same bits
    (tests/test_env_pole_balancing.py). About 5x faster for N = 50: every numpy call here
    covers all poles at once on contiguous rows, and numpy's per-call overhead dominates a
    small batch (an ESP generation: 50 networks)."""
    poles = (rows.shape[0] - 2) // 2
    mass, half, mass_half, mass_075 = _POLE_COLUMNS[poles]
    theta, theta_dot = rows[2::2], rows[3::2]  # [K, N]
    cos, sin = np.cos(theta), np.sin(theta)
    g_sin = GRAVITY * sin
    friction = MU_P * theta_dot / mass_half
    effective_force = mass_half * theta_dot**2 * sin + mass_075 * cos * (friction + g_sin)
    effective_mass = mass * (1.0 - 0.75 * cos**2)
    x_acc = (force + effective_force.sum(axis=0)) / (CART_MASS + effective_mass.sum(axis=0))
    derivative = np.empty_like(rows)
    derivative[0] = rows[1]
    derivative[1] = x_acc
    derivative[2::2] = theta_dot
    derivative[3::2] = -0.75 * (x_acc * cos + g_sin + friction) / half
    return derivative


# [K, 1] columns for _derivatives_rows, K = 1 or 2 poles: masses, half-lengths, and the
# products pole_derivatives forms first (mass * half, 0.75 * mass), formed once here
_POLE_COLUMNS = {
    k: (
        POLE_MASSES[:k, None],
        HALF_LENGTHS[:k, None],
        POLE_MASSES[:k, None] * HALF_LENGTHS[:k, None],
        0.75 * POLE_MASSES[:k, None],
    )
    for k in (1, 2)
}


def advance(state: np.ndarray, action: np.ndarray) -> np.ndarray:
    """The state ``[N, S]`` after one action (two RK4 steps of 0.01 s): :func:`rk4_step`'s
    arithmetic on the transposed state (:func:`_derivatives_rows`; the same bits)."""
    force = action_to_force(action)
    rows = np.ascontiguousarray(state.T)
    dt = TAU
    for _ in range(STEPS_PER_ACTION):
        k1 = _derivatives_rows(rows, force)
        k2 = _derivatives_rows(rows + 0.5 * dt * k1, force)
        k3 = _derivatives_rows(rows + 0.5 * dt * k2, force)
        k4 = _derivatives_rows(rows + dt * k3, force)
        rows = rows + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return np.ascontiguousarray(rows.T)


def failed(state: np.ndarray) -> np.ndarray:
    """``[N]`` bool: the cart left the track or a pole passed the failure angle."""
    limit = ANGLE_LIMITS[(state.shape[1] - 2) // 2]
    return (np.abs(state[:, 0]) > X_LIMIT) | (np.abs(state[:, 2::2]) > limit).any(axis=1)


def damping_reward(
    window: np.ndarray, balanced: np.ndarray, state: np.ndarray, fail: np.ndarray, final: np.ndarray
) -> np.ndarray:
    """Per-step share of Gruau's damping fitness; updates ``window``/``balanced`` in place.

    :param window: ``[N, 100]`` ring of the last jiggle values ``|x|+|x_dot|+|th1|+|th1_dot|``.
    :param balanced: ``[N]`` int, steps balanced so far in the episode.
    :param state: ``[N, S]`` the state after this step.
    :param fail: ``[N]`` bool, this step failed.
    :param final: ``[N]`` bool, this step ends the episode.
    :return: ``[N]`` reward; summed over an episode it is ``0.1 t/1000 + 0.9 f2``.
    """
    ok = ~fail
    rows = np.flatnonzero(ok)
    window[rows, balanced[rows] % DAMPING_WINDOW] = np.abs(state[rows, :4]).sum(axis=1)
    balanced += ok
    reward = DAMPING_STEP_REWARD * ok
    full = final & (balanced >= DAMPING_WINDOW)
    if full.any():
        reward[full] += 0.9 * 0.75 / window[full].sum(axis=1)
    return reward


@dataclass(frozen=True)
class PoleTask:
    """Validated task options shared by the single and the vector env."""

    poles: int
    velocities: bool
    reward: str
    max_steps: int
    initial_state: np.ndarray = field(repr=False)
    random_start: float = 0.0

    def draw_start(self, rng: np.random.Generator, fixed: np.ndarray) -> np.ndarray:
        """A start state: ``fixed`` [S], or with ``random_start > 0`` one drawn uniformly
        within ``random_start`` x the generalisation test's ranges of ``x, x_dot, theta1,
        theta1_dot`` (the other entries 0)."""
        if self.random_start == 0.0:
            return fixed.copy()
        start = np.zeros(self.state_size)
        half = self.random_start * np.asarray(GENERALIZATION_RANGES)
        start[:4] = rng.uniform(-half, half)
        return start

    @property
    def state_size(self) -> int:
        return 2 + 2 * self.poles

    @property
    def angle_limit(self) -> float:
        return float(ANGLE_LIMITS[self.poles])

    def observation_space(self) -> spaces.Box:
        # Loose bounds that also hold on the failing step: the cart stays within one step of
        # 2.4 m (|x/4.8| < 1); a pole cannot pass pi in one 0.02 s step from the failure angle.
        high = np.tile([np.pi / ANGLE_SCALE, np.inf], self.poles + 1)
        high[0] = 1.0
        if not self.velocities:
            high = high[0::2]
        return spaces.Box(-high.astype(np.float32), high.astype(np.float32), dtype=np.float32)

    def observe(self, state: np.ndarray) -> np.ndarray:
        """``[N, S]`` states -> ``[N, obs]`` float32 scaled observations."""
        scaled = state / _OBS_SCALES[self.poles]
        if not self.velocities:
            scaled = scaled[:, 0::2]
        return scaled.astype(np.float32)


def _obs_scale(poles: int) -> np.ndarray:
    """``[S]`` divisors of the state entries: ``(4.8, 2, 0.52, 2[, 0.52, 2])``."""
    scale = np.tile([ANGLE_SCALE, VELOCITY_SCALE], poles + 1)
    scale[0] = X_SCALE
    return scale


_OBS_SCALES = {k: _obs_scale(k) for k in (1, 2)}  # built once: observe runs every step


def make_task(
    poles: int = 2,
    velocities: bool = True,
    reward: str = "standard",
    max_steps: int | None = None,
    initial_state: Sequence[float] | np.ndarray | None = None,
    num_envs: int | None = None,
    random_start: float = 0.0,
) -> PoleTask:
    """Validate the task kwargs (``num_envs``: also accept one initial state per slot)."""
    if isinstance(poles, bool) or poles not in (1, 2):
        raise ValueError(f"poles must be 1 or 2, got {poles!r}")
    if not isinstance(velocities, bool | np.bool_):
        raise ValueError(f"velocities must be a bool, got {velocities!r}")
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
    if max_steps is None:
        max_steps = DEFAULT_MAX_STEPS[reward]
    if isinstance(max_steps, bool) or not isinstance(max_steps, int | np.integer) or max_steps < 1:
        raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
    size = 2 + 2 * poles
    if initial_state is None:
        start = np.zeros(size)
        start[2] = START_ANGLE
    else:
        start = np.array(initial_state, dtype=np.float64)
        shapes = [(size,)] + ([(num_envs, size)] if num_envs is not None else [])
        if start.shape not in shapes:
            raise ValueError(
                f"initial_state must have shape {' or '.join(map(str, shapes))} "
                f"(x, x_dot, theta1, theta1_dot, ...), got shape {start.shape}"
            )
        if not np.isfinite(start).all() or failed(start.reshape(-1, size)).any():
            raise ValueError(
                f"initial_state must be finite and inside the failure bounds (|x| <= {X_LIMIT}, "
                f"|theta| <= {np.rad2deg(ANGLE_LIMITS[poles]):.0f} deg), got {start.tolist()}"
            )
    if not isinstance(random_start, int | float) or not 0.0 <= random_start <= 1.0:
        raise ValueError(f"random_start must be a number in [0, 1], got {random_start!r}")
    if random_start and initial_state is not None:
        raise ValueError("give initial_state or random_start, not both")
    return PoleTask(int(poles), bool(velocities), reward, int(max_steps), start, random_start)


# Half-ranges of (x [m], x_dot [m/s], theta1 [rad], theta1_dot [rad/s]) for the start grid.
GENERALIZATION_RANGES = (2.16, 1.35, np.deg2rad(3.6), np.deg2rad(8.6))
# (obs [N, obs] float32, episode_start [N] bool) -> actions [N, 1]: a policy under test.
PolicyFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class PoleBalancingEnv(render.RenderedEnv, gym.Env[np.ndarray, np.ndarray]):
    """One or two poles on a cart (Gomez et al. 2008, Appendix A); see the module docstring.

    :param poles: 1 or 2.
    :param velocities: observe velocities too (Markov) or only positions (non-Markov).
    :param reward: ``"standard"`` or ``"damping"``.
    :param max_steps: episode length limit (default 100,000 standard, 1,000 damping).
    :param initial_state: start state ``[2 + 2 poles]`` (default: long pole at 0.07 rad).
    :param random_start: > 0: every episode starts from a random state, uniform within this
        fraction of the generalisation test's ranges (seeded by ``reset``); a training aid
        for controllers that must generalise (the success test keeps its own starts).
    :param render_mode: ``None``, ``"rgb_array"`` (600 x 400 frames) or ``"human"``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": render.RENDER_MODES, "render_fps": 50}

    def __init__(
        self,
        poles: int = 2,
        velocities: bool = True,
        reward: str = "standard",
        max_steps: int | None = None,
        initial_state: Sequence[float] | np.ndarray | None = None,
        random_start: float = 0.0,
        render_mode: str | None = None,
    ) -> None:
        self.render_mode = render.check_render_mode(render_mode)
        self.task = make_task(
            poles, velocities, reward, max_steps, initial_state, random_start=random_start
        )
        self.observation_space = self.task.observation_space()
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.state = self.task.initial_state.copy()
        self._steps = 0
        self._window = np.zeros((1, DAMPING_WINDOW))
        self._balanced = np.zeros(1, dtype=np.int64)

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.state = self.task.draw_start(self.np_random, self.task.initial_state)
        self._steps = 0
        self._window[:] = 0.0
        self._balanced[:] = 0
        self._render_human()
        return self.task.observe(self.state[None])[0], {}

    def frame(self) -> np.ndarray:
        """The cart and its poles (``uint8 [400, 600, 3]``)."""
        angles = [float(a) for a in self.state[2::2]]
        return render.cart_and_poles(
            float(self.state[0]), angles, [float(h) for h in HALF_LENGTHS[: self.task.poles]]
        )

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        state = advance(self.state[None], np.asarray(action).reshape(1, 1))
        self.state = state[0]
        self._steps += 1
        fail = failed(state)
        truncated = self._steps >= self.task.max_steps
        if self.task.reward == "damping":
            final = fail | truncated
            reward = damping_reward(self._window, self._balanced, state, fail, final)
        else:
            reward = (~fail).astype(np.float64)
        terminated = bool(fail[0])
        info = {"success": truncated and not terminated} if terminated or truncated else {}
        self._render_human()
        return self.task.observe(state)[0], float(reward[0]), terminated, truncated, info

    def success_test(
        self, make_policy_fn: Callable[[], PolicyFn], *, stop_early: bool = False
    ) -> dict[str, Any]:
        """The task's own "solved" (see :mod:`evolstm.rollouts.success`), Gomez et al. (2008): the
        policy balances ``SUCCESS_STEPS`` (100,000) steps from the standard start, and, with
        two poles, also balances at least ``GENERALIZATION_PASS`` (200) of the 625
        generalisation starts. Independent of this env's ``reward``/``max_steps``.

        :param stop_early: screen a candidate cheaply, cheapest part first: 1,000 steps from
            the standard start (at most ~1 s), then the generalisation test (625 starts as one
            batch, ~2 s), then the 100,000-step run (~2 minutes here) only when both passed.
            A part that fails ends the test; the parts not run are reported as ``None``. The
            verdict is the same as without it.
        """
        # Imported here: envs.pole_success builds on this module's physics and vector env.
        from envs.pole_success import pole_success_test

        return pole_success_test(
            make_policy_fn,
            poles=self.task.poles,
            velocities=self.task.velocities,
            stop_early=stop_early,
        )


class PoleBalancingVectorEnv(BatchedEnv):
    """N pole-balancing carts stepped as one numpy array; slot ``i`` equals a
    :class:`PoleBalancingEnv` (see :class:`envs.batched.BatchedEnv`).

    :param num_envs: number of slots N.
    :param max_episode_steps: same as ``max_steps`` (gymnasium's name; give one of them).
    :param poles, velocities, reward, max_steps: as :class:`PoleBalancingEnv`.
    :param initial_state: ``[2 + 2 poles]`` for every slot, or ``[N, 2 + 2 poles]`` per slot.
    :param random_start: as :class:`PoleBalancingEnv` (slot ``i`` draws from its own seed).
    """

    def __init__(
        self,
        num_envs: int,
        max_episode_steps: int | None = None,
        poles: int = 2,
        velocities: bool = True,
        reward: str = "standard",
        max_steps: int | None = None,
        initial_state: Sequence[float] | np.ndarray | None = None,
        random_start: float = 0.0,
    ) -> None:
        if None not in (max_episode_steps, max_steps) and max_episode_steps != max_steps:
            raise ValueError(
                f"max_episode_steps ({max_episode_steps}) and max_steps ({max_steps}) "
                "disagree; give only one"
            )
        steps = max_steps if max_steps is not None else max_episode_steps
        self.task = make_task(
            poles, velocities, reward, steps, initial_state, num_envs, random_start
        )
        super().__init__(num_envs, self.task.max_steps)
        self._set_spaces(
            self.task.observation_space(), spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        )
        self._starts = np.broadcast_to(self.task.initial_state, (num_envs, self.task.state_size))
        self.state = self._starts.copy()
        self._window = np.zeros((num_envs, DAMPING_WINDOW))
        self._balanced = np.zeros(num_envs, dtype=np.int64)

    def _reset_slots(self, idx: np.ndarray) -> None:
        if self.task.random_start:
            for i in idx:
                self.state[i] = self.task.draw_start(self.slot_rngs[i], self._starts[i])
        else:
            self.state[idx] = self._starts[idx]
        self._window[idx] = 0.0
        self._balanced[idx] = 0

    def _step_all(self, actions: Any) -> tuple[np.ndarray, np.ndarray]:
        self.state = advance(self.state, np.asarray(actions).reshape(self.num_envs, 1))
        fail = failed(self.state)
        if self.task.reward == "damping":
            final = fail | (self.elapsed_steps + 1 >= self.task.max_steps)
            return damping_reward(self._window, self._balanced, self.state, fail, final), fail
        return (~fail).astype(np.float64), fail

    def _observe(self) -> np.ndarray:
        return self.task.observe(self.state)

    def _step_infos(self, terminated: np.ndarray, truncated: np.ndarray) -> dict[str, Any]:
        final = terminated | truncated
        if not final.any():
            return {}
        return {"success": truncated & ~terminated, "_success": final}
