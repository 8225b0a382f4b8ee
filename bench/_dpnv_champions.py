"""The tests ``bench/dpnv.py``'s :func:`run` gives each generation's best double-pole network
(see that module's docstring for the protocol)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from envs.pole_success import SUCCESS_STEPS
from evolstm.network.layout import PolicySpec
from evolstm.rollouts.success import SuccessTests


class ChampionTests:
    """The tests a generation's best network goes through in ``bench/dpnv.py``'s ``run``,
    cheapest first, and what they found (``out``: the evaluations at which a criterion was
    first met, the first 100k network's generalisation, the passing network's success test).

    Every test starts from fixed states, so a network already tested is skipped (CoSyNE keeps
    its best unchanged, and it stays the generation's best for many generations: the
    100,000-step run would repeat).

    :param make_fn: ``make_fn(spec, vector [D])()`` -> a policy function for the tests
        (the torch policy or the faster numpy LSTM).
    :param trained_100k: the training episode itself was the 100,000-step run (standard
        fitness on 100,000-step episodes from the standard start).
    :param measure_100k: measure the 100k criterion on its own (``out["evaluations_100k"]``).
    :param min_generalization: the pass mark of 625 (200: the task's own).
    :param stop_at_balance: end the run at the 100k criterion (``until="balance"``).
    :param balance_steps, generalization_test: :mod:`envs.pole_success`'s functions, passed in
        so that a caller (and the bench's tests) can substitute them.
    """

    def __init__(
        self,
        *,
        spec: PolicySpec,
        tests: SuccessTests,
        make_fn: Any,
        trained_100k: bool,
        measure_100k: bool,
        min_generalization: int,
        stop_at_balance: bool,
        balance_steps: Callable[..., int],
        generalization_test: Callable[..., int],
    ) -> None:
        self.spec, self.tests, self.make_fn = spec, tests, make_fn
        self.trained_100k, self.measure_100k = trained_100k, measure_100k
        self.min_generalization, self.stop_at_balance = min_generalization, stop_at_balance
        self.balance_steps, self.generalization_test = balance_steps, generalization_test
        self.out: dict[str, Any] = {"evaluations_100k": None, "evaluations": None}
        self.tested: set[bytes] = set()
        self.balance_runs = self.retests_skipped = self.screens = self.candidates = 0

    def counts(self) -> dict[str, int]:
        return {
            "tests": self.tests.runs,
            "balance_runs": self.balance_runs,
            "retests_skipped": self.retests_skipped,
            "candidates": self.candidates,
            "screens": self.screens,
        }

    def test(self, vector: torch.Tensor, evaluations: int) -> bool:
        """Test a generation's best (``vector [D]``, which balanced its training episode)
        after ``evaluations``; True when the run ends here (solved, or the 100k criterion met
        under ``stop_at_balance``)."""
        key = vector.numpy().tobytes()
        if key in self.tested:
            self.retests_skipped += 1
            return False
        self.tested.add(key)
        self.candidates += 1  # a distinct generation best that balanced its training episode
        out = self.out
        if out["evaluations_100k"] is None and self.measure_100k:
            # the standard-fitness column's criterion (Gomez et al.: balance 100,000 steps),
            # measured on its own: the task's "solved" below also needs >= 200/625
            if self.trained_100k:
                steps = SUCCESS_STEPS  # its training episode was that run
            else:
                self.balance_runs += 1
                steps = self.balance_steps(self._policy(vector), poles=2, velocities=False)
            if steps < SUCCESS_STEPS:
                return False  # it cannot pass the task's test either (it fell before 100,000)
            out["evaluations_100k"] = evaluations
            out["generalization_100k"] = self.generalization_test(
                self._policy(vector), poles=2, velocities=False
            )
            if self.stop_at_balance:
                return True
            if out["generalization_100k"] < self.min_generalization:
                return False  # the same network cannot pass the (stricter) test
        else:  # the score is not known yet: a cheap screen first (stops once out of reach)
            self.screens += 1
            score = self.generalization_test(
                self._policy(vector),
                poles=2,
                velocities=False,
                stop_below=self.min_generalization,
            )
            if score < self.min_generalization:
                return False
        test = self.tests(vector, stop_early=True)
        if test["solved"] and test["generalization"] >= self.min_generalization:
            out.update(evaluations=evaluations, **test)
            return True
        return False

    def _policy(self, vector: torch.Tensor):
        return self.make_fn(self.spec, vector)()
