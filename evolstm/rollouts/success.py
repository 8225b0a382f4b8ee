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

A test may also accept a keyword ``stop_early`` (double pole does): the same verdict, but it
may skip its costly parts once failure is certain (used to screen every new champion, see
:class:`SuccessTests`).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from evolstm.network.layout import PolicySpec
from evolstm.network.obs_norm import ObsNormalizer
from evolstm.network.policy import RecurrentPolicy, State
from evolstm.rollouts.env_factory import EnvFactory

PolicyFn = Callable[[Any, np.ndarray], np.ndarray]


def policy_fn_maker(
    spec: PolicySpec, vector: torch.Tensor, obs_norm: ObsNormalizer | None = None
) -> Callable[[], PolicyFn]:
    """``make_policy_fn`` for the flat parameters ``vector [D]`` of ``spec``."""

    def make() -> PolicyFn:
        policy = RecurrentPolicy(spec, vector=vector, obs_norm=obs_norm)
        step = policy.frozen_actor()
        state: State | None = None

        def act(obs: Any, episode_start: np.ndarray) -> np.ndarray:
            nonlocal state
            starts = np.asarray(episode_start, dtype=bool)
            if state is None:
                state = policy.init_state(len(starts))
            action, state = step(obs, state, starts if starts.any() else None)
            return action

        return act

    return make


def task_success(
    factory: EnvFactory,
    spec: PolicySpec,
    vector: torch.Tensor,
    obs_norm: ObsNormalizer | None = None,
    *,
    stop_early: bool = False,
) -> dict[str, Any] | None:
    """The task's own success test of the policy ``vector [D]``, or ``None`` when the task
    defines none (see the module docstring). ``stop_early`` is passed on to tests that
    accept it."""
    env = factory.make()
    try:
        test = getattr(env.unwrapped, "success_test", None)
        if not callable(test):
            return None
        kwargs = {}
        if stop_early and "stop_early" in inspect.signature(test).parameters:
            kwargs["stop_early"] = True
        result = dict(test(policy_fn_maker(spec, vector, obs_norm), **kwargs))
    finally:
        env.close()
    if "solved" not in result:
        raise ValueError(f"{factory.id}: success_test returned no 'solved' entry: {result}")
    result["solved"] = bool(result["solved"])
    return result


def policy_key(vector: torch.Tensor, obs_norm: ObsNormalizer | None = None) -> str:
    """A digest of a policy (its parameters ``[D]`` and observation normaliser)."""
    digest = hashlib.sha1(vector.detach().to(torch.float32).contiguous().numpy().tobytes())
    if obs_norm is not None:
        for value in obs_norm.state_dict().values():
            digest.update(np.asarray(value, dtype=np.float64).tobytes())
    return digest.hexdigest()


class SuccessTests:
    """The task's success test with a memory: a policy already tested is not run again.

    A success test can be costly (double pole: 100,000 single steps, about 2 minutes here),
    and an evolutionary agent's policy (its best network so far) often stays the same for
    many iterations, so the trainer's periodic evaluations and its final summary reuse the
    last result when the policy did not change. A ``stop_early`` result (possibly partial)
    is reused for a full request only when it passed (a passing test ran every part).
    """

    def __init__(self, factory: EnvFactory, spec: PolicySpec) -> None:
        self.factory, self.spec = factory, spec
        self._key: str | None = None
        self._result: dict[str, Any] | None = None
        self._complete = False
        self.runs = 0  # tests actually run (for metrics and tests)

    def __call__(
        self,
        vector: torch.Tensor,
        obs_norm: ObsNormalizer | None = None,
        *,
        stop_early: bool = False,
    ) -> dict[str, Any] | None:
        """As :func:`task_success` (a fresh dict), cached for the last policy tested."""
        key = policy_key(vector, obs_norm)
        fresh = key != self._key
        if fresh or not (stop_early or self._complete):
            self._result = task_success(
                self.factory, self.spec, vector, obs_norm, stop_early=stop_early
            )
            self._key = key
            self._complete = not stop_early or bool(self._result and self._result["solved"])
            self.runs += 1
        return None if self._result is None else dict(self._result)
