"""Evolino's sequence tasks (:mod:`envs.sequences`) as gymnasium envs, so that a sequence task
is a config like any other (``evolstm/Sines-v0``, ``evolstm/MackeyGlass-v0``,
``evolstm/AnBnCn-v0``).

The env carries its :class:`~envs.sequences.SequenceDataset` as ``env.dataset``: a supervised
agent (Evolino) reads the training sequences from there, while every other part of evolstm
(held-out evaluation, ``evolstm eval``, a saved ``policy.pt``) treats the task as an episode.

* **Observation**: the network input at step ``t`` (``Box(I)``); **action**: the prediction of
  ``targets[t]`` (``Box(O)``, unbounded: the readout is linear).
* **Time series** (sines, Mackey-Glass): one episode runs the whole sequence. Up to and
  including the first test step the observation is the teacher-forced input
  (``inputs[t] = targets[t - 1]``); after it, the observation is the env's previous action,
  so the test steps are **free-running** (the prediction is fed back).
* **a^n b^n c^n**: one episode is one test string (picked by the reset's generator, or
  ``options={"string": k}``); inputs are always the string's symbols.
* **Reward**: ``-mean((action - target)^2) / S`` on the ``S`` scored (test) steps, 0 elsewhere,
  so an episode's return is minus its test MSE.
* **Success** (``info["success"]`` on the last step and :meth:`SequenceEnv.success_test`, the
  trainer's ``solved``): time series: the free-running test error (``metric``: ``mse`` or
  ``nrmse``, the RMSE over the series' standard deviation) at most ``success_threshold``;
  a^n b^n c^n: every string with ``n <= success_threshold`` (default: the largest training n)
  predicted exactly (each output rounded at 0.5 equals the legal-next-symbol target).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs import sequences

BUILDERS: dict[str, Callable[..., sequences.SequenceDataset]] = {
    "sines": sequences.superimposed_sines,
    "mackey_glass": sequences.mackey_glass,
    "anbncn": sequences.anbncn,
}
METRICS = ("mse", "nrmse")


def segments(starts: np.ndarray, begin: int, end: int) -> list[tuple[int, int]]:
    """The independent sequences ``[(start, stop), ...]`` inside steps ``begin..end``."""
    cuts = [t for t in range(begin, end) if starts[t] or t == begin] + [end]
    return list(itertools.pairwise(cuts))


def string_correct(outputs: np.ndarray, targets: np.ndarray) -> bool:
    """a^n b^n c^n: every output ``[T, 4]`` rounded at 0.5 equals the target."""
    return bool(((outputs > 0.5) == (targets > 0.5)).all())


class SequenceEnv(gym.Env):
    """One of Evolino's sequence tasks as an episode (see the module docstring).

    :param task: ``"sines"``, ``"mackey_glass"`` or ``"anbncn"``.
    :param success_threshold: time series: the largest test error that counts as solved;
        a^n b^n c^n: the largest n that must be processed exactly (None: the largest train n).
    :param metric: time series: ``"mse"`` or ``"nrmse"`` for the success test.
    :param task_kwargs: passed to the dataset builder (``num_sines``, ``test_length``, ...).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        task: str = "sines",
        success_threshold: float | None = None,
        metric: str = "mse",
        **task_kwargs: Any,
    ) -> None:
        if task not in BUILDERS:
            raise ValueError(f"task must be one of {sorted(BUILDERS)}, got {task!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.task = task
        self.metric = metric
        self.dataset = BUILDERS[task](**task_kwargs)
        self.language = task == "anbncn"
        if self.language and success_threshold is None:
            success_threshold = max(self.dataset.metadata["train_n"])
        if success_threshold is None:
            success_threshold = {"mse": 1e-2, "nrmse": 0.1}[metric]
        self.success_threshold = float(success_threshold)
        data = self.dataset
        self.series_std = float(data.targets[data.train].std()) or 1.0
        self.observation_space = spaces.Box(-np.inf, np.inf, (data.inputs.shape[1],), np.float32)
        self.action_space = spaces.Box(-np.inf, np.inf, (data.targets.shape[1],), np.float32)
        test = data.test
        if self.language:
            self.episodes = segments(data.sequence_starts, test.start, test.stop)
        else:
            self.episodes = [(0, test.stop)]
        self._t = self._start = self._stop = 0
        self._errors: list[float] = []
        self._correct = True

    def _observe(self, t: int, previous_action: np.ndarray | None) -> np.ndarray:
        free = not self.language and t > self.dataset.test.start and previous_action is not None
        source = previous_action if free else self.dataset.inputs[t]
        return np.asarray(source, dtype=np.float32).reshape(self.observation_space.shape)

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if options and "string" in options:
            index = int(options["string"])
        else:
            index = int(self.np_random.integers(len(self.episodes)))
        self._t, self._stop = self.episodes[index]
        self._start = self._t
        self._errors, self._correct = [], True
        return self._observe(self._t, None), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        data = self.dataset
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        t = self._t
        scored = data.test.start <= t < data.test.stop
        reward = 0.0
        if scored:
            error = float(np.mean((action - data.targets[t]) ** 2))
            self._errors.append(error)
            self._correct &= string_correct(action[None], data.targets[t][None])
            reward = -error / self._scored_steps()
        self._t += 1
        terminated = self._t >= self._stop
        info: dict[str, Any] = {}
        if terminated:
            info["success"] = self._passed(np.asarray(self._errors))
            obs = np.zeros(self.observation_space.shape, dtype=np.float32)
        else:
            obs = self._observe(self._t, action)
        return obs, reward, terminated, False, info

    def _scored_steps(self) -> int:
        if self.language:
            return self._stop - self._start
        return self.dataset.test.stop - self.dataset.test.start

    def _passed(self, errors: np.ndarray) -> bool:
        if self.language:
            return self._correct
        return self.error(errors) <= self.success_threshold

    def error(self, squared_errors: np.ndarray) -> float:
        """The success metric of per-step squared errors (mse, or nrmse = rmse / std)."""
        mse = float(np.mean(squared_errors))
        return mse if self.metric == "mse" else float(np.sqrt(mse) / self.series_std)

    def success_test(self, make_policy_fn: Callable[[], Any]) -> dict[str, Any]:
        """The task's own "solved" (see :mod:`evolstm.rollouts.success`) with the test errors.

        Time series: ``test_mse`` and ``test_nrmse`` over the free-running test steps and,
        when there are at least 84, ``test_nrmse84``: the error at the 84th free-running
        step of this ONE window over the series' standard deviation. The standard NRMSE84
        (Jaeger & Haas 2004) pools that error over many windows: ``bench/evolino.py``."""
        if self.language:
            return self._language_test(make_policy_fn())
        predictions = free_run(make_policy_fn(), self.dataset)
        data = self.dataset
        squared = ((predictions - data.targets[data.test]) ** 2).mean(axis=1)
        out = {
            "test_mse": float(squared.mean()),
            "test_nrmse": float(np.sqrt(squared.mean()) / self.series_std),
            "test_steps": int(squared.size),
        }
        if squared.size >= 84:
            out["test_nrmse84"] = float(np.sqrt(squared[83]) / self.series_std)
        return {"solved": self.error(squared) <= self.success_threshold, **out}

    def _language_test(self, policy_fn: Callable[..., np.ndarray]) -> dict[str, Any]:
        data = self.dataset
        outputs = run_strings(policy_fn, data, self.episodes)
        ns = data.metadata["test_n"]
        correct = [
            string_correct(out, data.targets[a:b])
            for out, (a, b) in zip(outputs, self.episodes, strict=True)
        ]
        largest = 0
        for n, ok in zip(ns, correct, strict=True):
            if not ok:
                break
            largest = n
        return {
            "solved": largest >= self.success_threshold,
            "generalizes_to_n": largest,
            "strings_correct": int(sum(correct)),
            "strings": len(correct),
        }


def free_run(
    policy_fn: Callable[..., np.ndarray], dataset: sequences.SequenceDataset
) -> np.ndarray:
    """Predictions ``[T_test, O]`` of a time series' test steps: teacher-forced through the
    washout and training steps (and the first test input, the last known value), then fed
    back its own output. ``policy_fn`` as in :mod:`evolstm.rollouts.success`."""
    test = dataset.test
    obs = dataset.inputs[:1].astype(np.float32)
    start = np.ones(1, dtype=bool)
    predictions = []
    for t in range(test.stop):
        if t > 0:
            teacher = t <= test.start
            obs = (dataset.inputs[t : t + 1] if teacher else predictions[-1]).astype(np.float32)
        action = np.asarray(policy_fn(obs, start), dtype=np.float64).reshape(1, -1)
        start = np.zeros(1, dtype=bool)
        if t >= test.start:
            predictions.append(action)
    return np.concatenate(predictions)


def run_strings(
    policy_fn: Callable[..., np.ndarray],
    dataset: sequences.SequenceDataset,
    strings: list[tuple[int, int]],
) -> list[np.ndarray]:
    """Outputs ``[len, O]`` of each string ``(start, stop)``, all strings as one batch
    (shorter strings padded with zero inputs after their end)."""
    longest = max(b - a for a, b in strings)
    n = len(strings)
    outputs = np.zeros((n, longest, dataset.targets.shape[1]))
    for t in range(longest):
        obs = np.zeros((n, dataset.inputs.shape[1]), dtype=np.float32)
        for i, (a, b) in enumerate(strings):
            if a + t < b:
                obs[i] = dataset.inputs[a + t]
        start = np.full(n, t == 0)
        outputs[:, t] = np.asarray(policy_fn(obs, start), dtype=np.float64).reshape(n, -1)
    return [outputs[i, : b - a] for i, (a, b) in enumerate(strings)]
