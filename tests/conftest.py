"""Shared fixtures: a deterministic fake agent registered in place of the entry points."""

from __future__ import annotations

import random
from typing import Any, ClassVar

import numpy as np
import pydantic
import pytest
import torch

from evolstm.agent import Agent, AgentContext, AgentOptions
from evolstm.network.layout import init_vector
from evolstm.run import registry, trainer


class FakeOptions(AgentOptions):
    popsize: int = pydantic.Field(3, ge=2)
    episodes: int = pydantic.Field(2, ge=1)
    sigma: float = pydantic.Field(0.5, gt=0)


class FakeAgent(Agent):
    """A tiny hill climber that draws from every global RNG (python, numpy, torch), so an
    inexact resume of any of them changes its metrics.

    ``interrupt_at`` (a class attribute, set by tests) raises ``KeyboardInterrupt`` inside
    that iteration's ``step`` after the centre has already been half-updated.
    """

    family: ClassVar[str] = "es"
    Options: ClassVar[type[AgentOptions]] = FakeOptions
    interrupt_at: ClassVar[int | None] = None

    def __init__(self, options: FakeOptions, ctx: AgentContext) -> None:
        super().__init__(options, ctx)
        self.center = init_vector(ctx.policy_spec, torch.Generator().manual_seed(ctx.seed))
        self.generation = 0
        self.closed = False

    def step(self) -> dict[str, float]:
        self.generation += 1
        noise = torch.randn(self.options.popsize, self.center.numel())
        population = self.center + self.options.sigma * noise
        seeds = [int(s) for s in np.random.randint(0, 2**31 - 1, size=self.options.episodes)]
        if FakeAgent.interrupt_at == self.generation:
            self.center += 1000.0
            raise KeyboardInterrupt
        result = self.ctx.evaluator.evaluate(population, seeds)
        fitness = result.mean_returns
        self.center = population[int(np.argmax(fitness))].clone()
        return {
            "env_steps": float(result.env_steps),
            "return_mean": float(fitness.mean()),
            "return_max": float(fitness.max()),
            "python_draw": random.random(),
        }

    def policy_vector(self) -> torch.Tensor:
        return self.center.clone()

    def state_dict(self) -> dict[str, Any]:
        return {"center": self.center, "generation": self.generation}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.center = state["center"].clone()
        self.generation = int(state["generation"])

    def close(self) -> None:
        self.closed = True


@pytest.fixture(autouse=True)
def snapshot_every_iteration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every in-memory snapshot counts as cheap, so a crash always resumes from the last
    completed iteration. The trainer skips a snapshot costing over ``SNAPSHOT_FREE`` (5 ms)
    to stay within its time share, and on a loaded machine even a fake agent's can: tests
    that assert the iteration a crash saved would then depend on the machine's load.
    ``tests/test_trainer_snapshots.py`` sets its own values to test the costly case."""
    monkeypatch.setattr(trainer, "SNAPSHOT_FREE", float("inf"))


@pytest.fixture
def fake_agent(monkeypatch: pytest.MonkeyPatch) -> type[FakeAgent]:
    """Registers ``FakeAgent`` as the only agent, named ``fake``."""
    monkeypatch.setattr(registry, "available_agents", lambda: {"fake": FakeAgent})
    monkeypatch.setattr(FakeAgent, "interrupt_at", None)
    return FakeAgent


@pytest.fixture
def quiet_wandb_home(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Keep W&B's process-wide files and environment changes inside the test."""
    for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_SILENT", "WANDB_DISABLE_WEAVE"):
        monkeypatch.setenv(name, "")  # records the original value, restored at teardown
        monkeypatch.delenv(name)
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
