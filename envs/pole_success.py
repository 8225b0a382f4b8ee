"""Success tests of pole balancing (Gomez, Schmidhuber & Miikkulainen, JMLR 9, 2008): the
100,000-step run from the standard start (:func:`balance_steps`, standard fitness), the
625-start generalisation test (:func:`generalization_test`) and the task's verdict combining
them (:func:`pole_success_test`, what :meth:`PoleBalancingEnv.success_test` returns).
The physics, the start state and the scalings are :mod:`envs.pole_balancing`'s.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from envs.pole_balancing import (
    ANGLE_SCALE,
    CART_MASS,
    GENERALIZATION_RANGES,
    GRAVITY,
    HALF_LENGTHS,
    MU_P,
    POLE_MASSES,
    STEPS_PER_ACTION,
    TAU,
    VELOCITY_SCALE,
    X_LIMIT,
    X_SCALE,
    PolicyFn,
    action_to_force,
    advance,
    failed,
    make_task,
)

GENERALIZATION_FRACTIONS = (0.05, 0.25, 0.5, 0.75, 0.95)
GENERALIZATION_STEPS = 1_000

SUCCESS_STEPS = 100_000
GENERALIZATION_PASS = 200


def balance_steps(
    policy_fn: PolicyFn, *, poles: int = 2, velocities: bool = False, steps: int = SUCCESS_STEPS
) -> int:
    """Steps the policy balances from the standard start, at most ``steps`` (standard
    fitness); ``policy_fn`` as in :func:`generalization_test`.

    One cart stepped on Python floats (:func:`_advance_one`), bit-identical to a
    :class:`PoleBalancingVectorEnv` of one slot (tests/test_success_fast.py) and about 10x
    faster: numpy's per-call overhead dominates on a ``[1, 6]`` state, and this loop runs up
    to 100,000 steps per success test.
    """
    task = make_task(poles, velocities, "standard", steps)
    state = [float(v) for v in task.initial_state]
    limit = task.angle_limit
    scale = [X_SCALE, VELOCITY_SCALE] + [ANGLE_SCALE, VELOCITY_SCALE] * poles
    keep = range(len(state)) if velocities else range(0, len(state), 2)
    episode_start = np.ones(1, dtype=bool)
    obs = np.array([[state[i] / scale[i] for i in keep]], dtype=np.float32)
    for t in range(steps):
        action = np.asarray(policy_fn(obs, episode_start)).reshape(-1)
        episode_start = np.zeros(1, dtype=bool)
        state = _advance_one(state, float(action_to_force(action)[0]), poles)
        if abs(state[0]) > X_LIMIT or any(abs(state[k]) > limit for k in range(2, len(state), 2)):
            return t
        obs = np.array([[state[i] / scale[i] for i in keep]], dtype=np.float32)
    return steps


def _derivative_one(s: list[float], force: float, poles: int) -> list[float]:
    """:func:`pole_derivatives` of one state on Python floats, the same operations in the
    same order (IEEE doubles, so the same bits; ``cos``/``sin`` checked equal in the test)."""
    g_sins, frictions, coss = [], [], []
    force_sum = mass_sum = 0.0
    for k in range(poles):
        mass, half = float(POLE_MASSES[k]), float(HALF_LENGTHS[k])
        theta, theta_dot = s[2 + 2 * k], s[3 + 2 * k]
        cos, sin = math.cos(theta), math.sin(theta)
        g_sin = GRAVITY * sin
        friction = MU_P * theta_dot / (mass * half)
        effective_force = mass * half * (theta_dot * theta_dot) * sin + 0.75 * mass * cos * (
            friction + g_sin
        )
        effective_mass = mass * (1.0 - 0.75 * (cos * cos))
        force_sum = effective_force if k == 0 else force_sum + effective_force
        mass_sum = effective_mass if k == 0 else mass_sum + effective_mass
        g_sins.append(g_sin)
        frictions.append(friction)
        coss.append(cos)
    x_acc = (force + force_sum) / (CART_MASS + mass_sum)
    out = [s[1], x_acc]
    for k in range(poles):
        half = float(HALF_LENGTHS[k])
        out += [s[3 + 2 * k], -0.75 * (x_acc * coss[k] + g_sins[k] + frictions[k]) / half]
    return out


def _advance_one(state: list[float], force: float, poles: int) -> list[float]:
    """:func:`advance` of one state on Python floats (two RK4 steps of ``TAU``)."""
    dt = TAU
    for _ in range(STEPS_PER_ACTION):
        k1 = _derivative_one(state, force, poles)
        k2 = _derivative_one(
            [s + 0.5 * dt * k for s, k in zip(state, k1, strict=True)], force, poles
        )
        k3 = _derivative_one(
            [s + 0.5 * dt * k for s, k in zip(state, k2, strict=True)], force, poles
        )
        k4 = _derivative_one([s + dt * k for s, k in zip(state, k3, strict=True)], force, poles)
        state = [
            s + dt / 6.0 * (a + 2.0 * b + 2.0 * c + d)
            for s, a, b, c, d in zip(state, k1, k2, k3, k4, strict=True)
        ]
    return state


def generalization_starts(poles: int = 2) -> np.ndarray:
    """The 625 start states ``[625, 2 + 2 poles]`` of the generalisation test.

    Each of ``x, x_dot, theta1, theta1_dot`` takes the values at 0.05, 0.25, 0.5, 0.75 and
    0.95 of its range ``[-r, r]`` (r = 2.16 m, 1.35 m/s, 3.6°, 8.6°/s); other entries are 0.
    """
    levels = [[-r + f * 2 * r for f in GENERALIZATION_FRACTIONS] for r in GENERALIZATION_RANGES]
    starts = np.zeros((len(GENERALIZATION_FRACTIONS) ** 4, 2 + 2 * poles))
    starts[:, :4] = np.array(list(itertools.product(*levels)))
    return starts


def generalization_test(
    policy_fn: PolicyFn,
    *,
    poles: int = 2,
    velocities: bool = False,
    steps: int = GENERALIZATION_STEPS,
    stop_below: int | None = None,
) -> int:
    """Gomez et al.'s generalisation test: how many of the 625 starts the policy balances.

    All 625 starts run as one batch; a start passes if no failure occurs within ``steps``
    (1,000) actions. Only the carts still balancing are stepped (:func:`advance` on those
    rows; each row's arithmetic does not depend on the others, so a cart's trajectory is the
    same bits as in a :class:`PoleBalancingVectorEnv` of all 625, tests/test_success_fast.py);
    a fallen cart's row keeps its last observation and the policy's action there is ignored.

    :param policy_fn: ``(obs [N, obs] float32, episode_start [N] bool) -> actions [N, 1]``;
        ``episode_start`` is True on the first call (all slots open an episode) and False
        after, so a recurrent policy resets its state there.
    :param poles, velocities: the task variant.
    :param stop_below: stop as soon as fewer than this many starts are still balanced (a
        screen, e.g. ``GENERALIZATION_PASS``: the verdict "at least ``stop_below``" is the same
        as the full test's; the count returned is then only an upper bound below it).
    :return: the number of starts balanced, out of 625 (see ``stop_below``).
    """
    state = generalization_starts(poles)
    n = len(state)
    task = make_task(poles, velocities, "standard", steps, state, num_envs=n)
    obs = task.observe(state)
    episode_start = np.ones(n, dtype=bool)
    live = np.arange(n)
    for _ in range(steps):
        actions = np.asarray(policy_fn(obs, episode_start), dtype=np.float32)
        if actions.shape != (n, 1):
            raise ValueError(f"policy_fn must return actions [{n}, 1], got {actions.shape}")
        episode_start = np.zeros(n, dtype=bool)
        moved = advance(state[live], actions[live])
        state[live] = moved
        obs[live] = task.observe(moved)
        live = live[~failed(moved)]
        if live.size == 0 or (stop_below is not None and live.size < stop_below):
            break
    return int(live.size)


def pole_success_test(
    make_policy_fn: Callable[[], PolicyFn],
    *,
    poles: int = 2,
    velocities: bool = False,
    stop_early: bool = False,
) -> dict[str, Any]:
    """:meth:`envs.pole_balancing.PoleBalancingEnv.success_test` for the task variant
    ``poles``/``velocities`` (see there)."""
    if stop_early:
        short = balance_steps(
            make_policy_fn(), poles=poles, velocities=velocities, steps=GENERALIZATION_STEPS
        )
        if short < GENERALIZATION_STEPS:
            generalization = {"generalization": None} if poles == 2 else {}
            return {"solved": False, "balance_steps": short, **generalization}
    out: dict[str, Any] = {}
    if poles == 2:
        out["generalization"] = generalization_test(
            make_policy_fn(), poles=poles, velocities=velocities
        )
        if stop_early and out["generalization"] < GENERALIZATION_PASS:
            return {"solved": False, "balance_steps": None, **out}
    steps = balance_steps(make_policy_fn(), poles=poles, velocities=velocities)
    solved = steps >= SUCCESS_STEPS and (poles == 1 or out["generalization"] >= GENERALIZATION_PASS)
    return {"solved": solved, "balance_steps": steps, **out}
