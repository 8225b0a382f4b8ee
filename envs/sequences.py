"""Evolino's supervised sequence tasks as datasets (not RL envs).

J. Schmidhuber, D. Wierstra, M. Gagliolo and F. Gomez, "Training recurrent networks by
Evolino", Neural Computation 19(3), 2007; D. Wierstra, F. Gomez and J. Schmidhuber,
"Modeling systems with internal state using Evolino", GECCO 2005.

Every builder returns a :class:`SequenceDataset`: one time axis ``T`` with ``inputs [T, I]``,
``targets [T, O]`` and three slices of it. ``washout`` steps are fed to the network but not
scored (they let its state forget the zero start), ``train`` steps are the ones a readout
is fitted on / the training error is taken over, and ``test`` steps are held out. For the
two time series, ``inputs[t] = targets[t - 1]`` (the teacher-forced feedback of the
previous value; ``inputs[0] = 0``), so a network trained one step ahead can be run
free-running on the test steps by feeding its own output back (``metadata["test_mode"]``).

Default split sizes (``washout`` is counted inside ``train_length``; test follows train):

* superimposed sines: washout 100, train steps 100..399, test 400..699;
* Mackey-Glass: washout 100, train steps 100..2999, test 3000..3083 (the 84-step
  free-running test of Jaeger's echo-state-network benchmark, NRMSE84, that Evolino
  compares against);
* a^n b^n c^n: train strings n = 1..10, test strings n = 1..50.

Unverified: the split sizes above, whether Evolino squashed Mackey-Glass with ``tanh(x - 1)``
(Jaeger's ESN preprocessing, kept here as the ``squash`` option) and dropped a start-up
transient, and the a^n b^n c^n train/test ranges and target coding: the papers' experiment
sections were not reachable from here (only their introductions), so these defaults are this
package's reading of them; all are keyword arguments. Verified: the five sine frequencies
(0.2, 0.311, 0.42, 0.51, 0.74), which PyBrain's Evolino example
(``examples/supervised/evolino/superimposed_sine.py``, IDSIA) uses; its sampling (step 0.8)
and 1/3 washout are that example's own choices, not the paper's. Jaeger's NRMSE84 (GMD Report
148) is the error at the 84th free-running step, pooled over 50 independent 1,000-step
teacher-forced runs, and normalised by the series' variance; ``mackey_glass`` provides one
84-step test window, so a NRMSE84 comparable to published numbers needs that protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.validation import require_int

SINE_FREQUENCIES = (0.2, 0.311, 0.42, 0.51, 0.74)
LANGUAGE_SYMBOLS = ("S", "a", "b", "c")


@dataclass(frozen=True)
class SequenceDataset:
    """A supervised sequence task on one time axis T.

    :param name: task name.
    :param inputs: ``[T, I]`` network inputs.
    :param targets: ``[T, O]`` desired outputs.
    :param washout: steps fed but not scored.
    :param train: training steps.
    :param test: held-out steps.
    :param sequence_starts: ``[T]`` bool, True where an independent sequence begins (reset
        the network state there): only step 0 for the time series, each string's ``S``
        for the language.
    :param metadata: task parameters (frequencies, tau, n values, ...).
    """

    name: str
    inputs: np.ndarray
    targets: np.ndarray
    washout: slice
    train: slice
    test: slice
    sequence_starts: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)


def _series_dataset(
    name: str, series: np.ndarray, washout: int, train_length: int, test_length: int, meta: dict
) -> SequenceDataset:
    """Next-value dataset of a scalar series ``[T]`` with teacher-forced inputs."""
    targets = series[:, None]
    inputs = np.concatenate([np.zeros((1, 1)), targets[:-1]])
    starts = np.zeros(len(series), dtype=bool)
    starts[0] = True
    metadata = {**meta, "test_mode": "free-running (feed the output back as the next input)"}
    return SequenceDataset(
        name=name,
        inputs=inputs,
        targets=targets,
        washout=slice(0, washout),
        train=slice(washout, train_length),
        test=slice(train_length, train_length + test_length),
        sequence_starts=starts,
        metadata=metadata,
    )


def _check_split(washout: int, train_length: int, test_length: int) -> None:
    require_int("washout", washout, 0)
    require_int("train_length", train_length, washout + 1)
    require_int("test_length", test_length, 1)


# -- superimposed sines -------------------------------------------------------------------
def superimposed_sines(
    num_sines: int = 2, washout: int = 100, train_length: int = 400, test_length: int = 300
) -> SequenceDataset:
    """Sum of the first ``num_sines`` of Evolino's sines: ``y(t) = sum_k sin(w_k t)``,
    ``w = (0.2, 0.311, 0.42, 0.51, 0.74)``, ``t = 0, 1, 2, ...`` (Evolino's double to
    quintuple sine tasks are ``num_sines = 2 .. 5``).

    :param num_sines: how many frequencies to superimpose (1..5).
    :param washout: unscored steps at the start of training.
    :param train_length: steps of the training sequence, washout included.
    :param test_length: steps right after training to extrapolate.
    """
    require_int("num_sines", num_sines, 1, len(SINE_FREQUENCIES))
    _check_split(washout, train_length, test_length)
    frequencies = np.asarray(SINE_FREQUENCIES[:num_sines])
    t = np.arange(train_length + test_length, dtype=np.float64)
    series = np.sin(np.outer(t, frequencies)).sum(axis=1)
    meta = {"frequencies": tuple(frequencies.tolist())}
    return _series_dataset(f"sines{num_sines}", series, washout, train_length, test_length, meta)


# -- Mackey-Glass --------------------------------------------------------------------------
def mackey_glass_series(
    length: int,
    tau: float = 17.0,
    history: float = 1.2,
    substeps: int = 10,
    integrator: str = "rk4",
) -> np.ndarray:
    """Mackey-Glass ``dx/dt = 0.2 x(t - tau) / (1 + x(t - tau)^10) - 0.1 x(t)`` sampled at
    ``t = 0, 1, ..., length - 1``: ``[length]``.

    ``integrator="rk4"``: classical RK4 with step ``dt = 1 / substeps``; the delayed value at
    the half step is the mean of its two grid neighbours. ``integrator="euler"``: forward
    Euler with the same step, Jaeger's discretisation (GMD Report 148, Sec. 6.1, Eq. 23:
    step 1/10, subsampled by 10), the series of the echo-state-network benchmark.
    ``x(t) = history`` for ``t <= 0``; ``tau`` must be a multiple of ``dt``. Written by hand:
    the delay needs a history buffer, which scipy's ODE solvers do not keep.
    """
    require_int("length", length, 1)
    require_int("substeps", substeps, 1)
    if integrator not in ("rk4", "euler"):
        raise ValueError(f"integrator must be 'rk4' or 'euler', got {integrator!r}")
    delay_steps = round(tau * substeps)
    if delay_steps < 1 or abs(delay_steps - tau * substeps) > 1e-9:
        raise ValueError(f"tau must be a positive multiple of 1 / substeps, got tau={tau}")
    dt = 1.0 / substeps
    x = np.empty(delay_steps + (length - 1) * substeps + 1)
    x[: delay_steps + 1] = history

    def rate(x_now: float, x_delayed: float) -> float:
        return 0.2 * x_delayed / (1.0 + x_delayed**10) - 0.1 * x_now

    if integrator == "euler":
        for n in range(delay_steps, len(x) - 1):
            x[n + 1] = x[n] + dt * rate(x[n], x[n - delay_steps])
        return x[delay_steps::substeps].copy()
    for n in range(delay_steps, len(x) - 1):
        d0, d1 = x[n - delay_steps], x[n - delay_steps + 1]
        d_half = 0.5 * (d0 + d1)
        k1 = rate(x[n], d0)
        k2 = rate(x[n] + 0.5 * dt * k1, d_half)
        k3 = rate(x[n] + 0.5 * dt * k2, d_half)
        k4 = rate(x[n] + dt * k3, d1)
        x[n + 1] = x[n] + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return x[delay_steps::substeps].copy()


def mackey_glass(
    tau: float = 17.0,
    washout: int = 100,
    train_length: int = 3000,
    test_length: int = 84,
    squash: bool = False,
    history: float = 1.2,
    substeps: int = 10,
    integrator: str = "rk4",
) -> SequenceDataset:
    """The Mackey-Glass series (see :func:`mackey_glass_series`) as a next-value dataset.

    :param tau: delay (17: the chaotic benchmark).
    :param washout, train_length, test_length: the split (see the module docstring).
    :param squash: use ``tanh(x - 1)`` (the preprocessing of Jaeger's ESN benchmark).
    :param history: constant ``x(t)`` for ``t <= 0``.
    :param substeps: integration steps per time unit.
    :param integrator: ``"rk4"`` or ``"euler"`` (Jaeger's benchmark series, see
        :func:`mackey_glass_series`).
    """
    _check_split(washout, train_length, test_length)
    series = mackey_glass_series(train_length + test_length, tau, history, substeps, integrator)
    if squash:
        series = np.tanh(series - 1.0)
    meta = {
        "tau": tau,
        "squash": squash,
        "history": history,
        "dt": 1.0 / substeps,
        "integrator": integrator,
    }
    return _series_dataset("mackey_glass", series, washout, train_length, test_length, meta)


# -- a^n b^n c^n ---------------------------------------------------------------------------
def _anbncn_string(n: int) -> tuple[list[int], list[set[int]]]:
    """Symbol indices of ``S a^n b^n c^n`` and, per position, the legal next symbols."""
    S, a, b, c = range(4)
    symbols = [S] + [a] * n + [b] * n + [c] * n
    legal = [{a}] + [{a, b}] * n + [{b}] * (n - 1) + [{c}] + [{c}] * (n - 1) + [{S}]
    return symbols, legal


def _encode_strings(ns: range) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows_in, rows_out, starts = [], [], []
    for n in ns:
        symbols, legal = _anbncn_string(n)
        rows_in.extend(symbols)
        rows_out.extend(legal)
        starts.extend([True] + [False] * (len(symbols) - 1))
    inputs = np.eye(4)[rows_in]
    targets = np.zeros((len(rows_out), 4))
    for t, allowed in enumerate(rows_out):
        targets[t, sorted(allowed)] = 1.0
    return inputs, targets, np.asarray(starts)


def anbncn(
    train_max_n: int = 10, test_max_n: int = 50, train_min_n: int = 1, test_min_n: int = 1
) -> SequenceDataset:
    """Next-symbol prediction on the context-sensitive language ``{a^n b^n c^n : n >= 1}``.

    Each string is presented as ``S a^n b^n c^n`` (one-hot over ``(S, a, b, c)``); the
    target at every step is the set of legal next symbols (multi-hot): after ``S`` {a};
    inside the a-block {a, b} (n is not yet known); then {b} until the n-th b, {c} until
    the n-th c, and {S} (end of string) after it. A string counts as processed when every
    step's prediction equals its target. The training strings (``n = train_min_n ..
    train_max_n``) come first, then the test strings (``n = test_min_n .. test_max_n``),
    each string starting a new sequence (``sequence_starts``); there is no washout.
    """
    require_int("train_min_n", train_min_n, 1)
    require_int("train_max_n", train_max_n, train_min_n)
    require_int("test_min_n", test_min_n, 1)
    require_int("test_max_n", test_max_n, test_min_n)
    train_ns = range(train_min_n, train_max_n + 1)
    test_ns = range(test_min_n, test_max_n + 1)
    train_in, train_out, train_starts = _encode_strings(train_ns)
    test_in, test_out, test_starts = _encode_strings(test_ns)
    split = len(train_in)
    return SequenceDataset(
        name="anbncn",
        inputs=np.concatenate([train_in, test_in]),
        targets=np.concatenate([train_out, test_out]),
        washout=slice(0, 0),
        train=slice(0, split),
        test=slice(split, split + len(test_in)),
        sequence_starts=np.concatenate([train_starts, test_starts]),
        metadata={
            "symbols": LANGUAGE_SYMBOLS,
            "train_n": tuple(train_ns),
            "test_n": tuple(test_ns),
            "test_mode": "teacher-forced (inputs are the strings)",
        },
    )
