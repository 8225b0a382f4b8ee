"""Task-defined success tests: what "solved" means is the task's business.

A task defines it by giving its (unwrapped) single env a method

    success_test(make_policy_fn) -> {"solved": bool, <other JSON-able numbers>}

where ``make_policy_fn()`` returns a fresh stateful policy function
``(obs [N, ...], episode_start [N] bool) -> actions [N, ...]`` (env-format actions; the
recurrent state of slot ``i`` starts at zero and is reset where ``episode_start[i]``), so a
task can run it on any batch of its own episodes (double pole: 100,000 steps from the
standard start and the 625-start generalisation grid; sequence tasks: a free-running error
against a threshold). The trainer's ``solved`` uses it and falls back to the registered
``reward_threshold`` when the task defines none. A user's own env plugs in the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from evolstm.env_factory import EnvFactory
from evolstm.obs_norm import ObsNormalizer
from evolstm.policy import PolicySpec, RecurrentPolicy, State

PolicyFn = Callable[[Any, np.ndarray], np.ndarray]


def policy_fn_maker(
    spec: PolicySpec, vector: torch.Tensor, obs_norm: ObsNormalizer | None = None
) -> Callable[[], PolicyFn]:
    """``make_policy_fn`` for the flat parameters ``vector [D]`` of ``spec``."""

    def make() -> PolicyFn:
        policy = RecurrentPolicy(spec, vector=vector, obs_norm=obs_norm)
        state: State | None = None

        def act(obs: Any, episode_start: np.ndarray) -> np.ndarray:
            nonlocal state
            if state is None:
                state = policy.init_state(len(episode_start))
            actions, state = policy.act(obs, state, np.asarray(episode_start, dtype=bool))
            return actions

        return act

    return make


def task_success(
    factory: EnvFactory,
    spec: PolicySpec,
    vector: torch.Tensor,
    obs_norm: ObsNormalizer | None = None,
) -> dict[str, Any] | None:
    """The task's own success test of the policy ``vector [D]``, or ``None`` when the task
    defines none (see the module docstring)."""
    env = factory.make()
    try:
        test = getattr(env.unwrapped, "success_test", None)
        if not callable(test):
            return None
        result = dict(test(policy_fn_maker(spec, vector, obs_norm)))
    finally:
        env.close()
    if "solved" not in result:
        raise ValueError(f"{factory.id}: success_test returned no 'solved' entry: {result}")
    result["solved"] = bool(result["solved"])
    return result
