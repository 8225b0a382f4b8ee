"""The POMDP task suite, registered with gymnasium under the ``evolstm/`` namespace.

Importing this package registers every task (``gymnasium.make("evolstm/TMaze-v0")`` and
``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")`` then work). Each task
has a single env (``entry_point``) and a native numpy batch env (``vector_entry_point``).
"""

from __future__ import annotations

import gymnasium as gym

NAMESPACE = "evolstm"

# id -> (single entry point, vector entry point, registration keyword arguments)
TASKS: dict[str, tuple[str, str, dict]] = {
    "CartPoleNoVel-v0": (
        "envs.cartpole:CartPoleNoVelEnv",
        "envs.cartpole:CartPoleNoVelVectorEnv",
        {"max_episode_steps": 500, "reward_threshold": 475.0},
    ),
    "TMaze-v0": ("envs.tmaze:TMazeEnv", "envs.tmaze:TMazeVectorEnv", {}),
    "SinglePoleNoVel-v0": (
        "envs.pole_balancing:PoleBalancingEnv",
        "envs.pole_balancing:PoleBalancingVectorEnv",
        {"kwargs": {"poles": 1, "velocities": False}},
    ),
    "DoublePole-v0": (
        "envs.pole_balancing:PoleBalancingEnv",
        "envs.pole_balancing:PoleBalancingVectorEnv",
        {"kwargs": {"poles": 2, "velocities": True}},
    ),
    "DoublePoleNoVel-v0": (
        "envs.pole_balancing:PoleBalancingEnv",
        "envs.pole_balancing:PoleBalancingVectorEnv",
        {"kwargs": {"poles": 2, "velocities": False}},
    ),
    "PendulumNoVel-v0": (
        "envs.pendulum:PendulumNoVelEnv",
        "envs.pendulum:PendulumNoVelVectorEnv",
        {"max_episode_steps": 200},
    ),
    "RepeatPrevious-v0": (
        "envs.memory:RepeatPreviousEnv",
        "envs.memory:RepeatPreviousVectorEnv",
        {},
    ),
    "DelayedRecall-v0": ("envs.memory:DelayedRecallEnv", "envs.memory:DelayedRecallVectorEnv", {}),
}

# Evolino's supervised sequence tasks as episodes (envs/sequence_env.py): no native vector env
# (one slot per episode is all they need; gymnasium's SyncVectorEnv serves).
SEQUENCE_TASKS: dict[str, dict] = {
    "Sines-v0": {"task": "sines"},
    "MackeyGlass-v0": {"task": "mackey_glass"},
    "AnBnCn-v0": {"task": "anbncn"},
}


def register_all() -> None:
    """Register every task (idempotent)."""
    for name, (entry_point, vector_entry_point, extra) in TASKS.items():
        env_id = f"{NAMESPACE}/{name}"
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=entry_point,
            vector_entry_point=vector_entry_point,
            **extra,
        )
    for name, kwargs in SEQUENCE_TASKS.items():
        env_id = f"{NAMESPACE}/{name}"
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="envs.sequence_env:SequenceEnv", kwargs=kwargs)


def task_ids() -> list[str]:
    """The registered evolstm task ids, sorted."""
    return sorted(f"{NAMESPACE}/{name}" for name in [*TASKS, *SEQUENCE_TASKS])


register_all()
