"""The protocol every optimiser implements, and the context the trainer hands it.

The trainer never knows which agent it drives: it builds an :class:`AgentContext`,
constructs the agent with its validated options, and calls :meth:`Agent.step` until the
budget is spent. Fitness and returns are **maximised** everywhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import gymnasium as gym
import pydantic
import torch

from evolstm.network.layout import PolicySpec
from evolstm.network.obs_norm import ObsNormalizer
from evolstm.rollouts.evaluation import Evaluator

Family = Literal["es", "pg"]


class AgentOptions(pydantic.BaseModel):
    """Base for agent-specific options (the keys under ``agent:`` besides ``name``).

    Unknown keys are errors so that a typo never silently falls back to a default.
    """

    model_config = pydantic.ConfigDict(extra="forbid")


@dataclass
class AgentContext:
    """What the trainer gives an agent.

    :param policy_spec: the network every member/learner uses.
    :param seed: the run's seed; agents derive all their randomness from it.
    :param evaluator: evaluates a population ``[P, D]`` of flat parameter vectors
        (local or Ray-backed; es family).
    :param make_vector_env: builds a vector env of ``n`` slots for the task (pg family).
    :param ray_address: where rollouts run (``None``: in-process; else as ``ray.address``;
        pg family, whose collectors are not an :class:`Evaluator`).
    :param num_workers: Ray rollout actors (``ray.num_workers``; pg family).
    :param shard_timeout_s: seconds a Ray rollout call may take before its actor counts as
        lost and is replaced (``ray.shard_timeout_s``; pg family).
    """

    policy_spec: PolicySpec
    seed: int
    evaluator: Evaluator
    make_vector_env: Callable[[int], gym.vector.VectorEnv]
    ray_address: str | None = None
    num_workers: int = 0
    shard_timeout_s: float = 600.0


class Agent(ABC):
    """One optimiser. Subclasses set ``family`` and ``Options`` and implement the methods."""

    family: ClassVar[Family]
    Options: ClassVar[type[AgentOptions]] = AgentOptions

    def __init__(self, options: AgentOptions, ctx: AgentContext) -> None:
        self.options = options
        self.ctx = ctx

    @abstractmethod
    def step(self) -> dict[str, float]:
        """Run one iteration (one generation / one update).

        Returns metrics; must contain ``env_steps`` (env steps taken in this iteration)
        and should contain ``return_mean`` and ``return_max`` (returns seen in it).
        """

    @abstractmethod
    def policy_vector(self) -> torch.Tensor:
        """The flat parameters ``[D]`` of the policy to evaluate and save now."""

    def obs_normalizer(self) -> ObsNormalizer | None:
        """The observation normaliser that goes with :meth:`policy_vector` (``None``: raw)."""
        return None

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly, as **data**.

        Allowed: torch tensors; Python ``int``, ``float``, ``bool``, ``str``, ``None``; and
        ``list``/``tuple``/``dict`` (str or int keys) of these -- what
        ``torch.load(weights_only=True)`` reads back. Not allowed: numpy arrays (use
        ``torch.from_numpy`` or ``.tolist()``), pickled bytes, custom classes. RNG state:
        ``torch.Generator.get_state()`` (a tensor) or ``np.random.Generator.bit_generator
        .state`` (a dict of ints); optimiser ``state_dict()`` s are data. A library object
        with no ``state_dict`` goes through :func:`evolstm.run.safe_pickle.dumps` and back with
        :func:`evolstm.run.safe_pickle.loads` and an explicit allowlist (see ``agents/es.py``).
        :func:`evolstm.run.checkpoint.save_checkpoint` refuses anything else, naming the key.
        """

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (actors, envs)."""
