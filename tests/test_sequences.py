"""Evolino's sequence datasets: splits, the sines formula, Mackey-Glass integration, and the
a^n b^n c^n targets against a brute-force enumeration of the language."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from envs.sequences import anbncn, mackey_glass, mackey_glass_series, superimposed_sines


def steps(s: slice) -> list[int]:
    return list(range(s.start, s.stop))


# -- splits --------------------------------------------------------------------------------
def test_default_splits():
    sines = superimposed_sines()
    assert (steps(sines.washout), steps(sines.train), steps(sines.test)) == (
        list(range(0, 100)),
        list(range(100, 400)),
        list(range(400, 700)),
    )
    assert sines.inputs.shape == sines.targets.shape == (700, 1)
    mg = mackey_glass()
    assert (mg.washout, mg.train, mg.test) == (slice(0, 100), slice(100, 3000), slice(3000, 3084))
    assert mg.targets.shape == (3084, 1)
    for data in (sines, mg):
        assert data.sequence_starts.tolist() == [True] + [False] * (len(data.targets) - 1)


def test_custom_split_and_teacher_forced_inputs():
    data = superimposed_sines(num_sines=3, washout=10, train_length=50, test_length=7)
    assert (data.washout, data.train, data.test) == (slice(0, 10), slice(10, 50), slice(50, 57))
    assert data.inputs[0, 0] == 0.0
    np.testing.assert_array_equal(data.inputs[1:], data.targets[:-1])


# -- sines ---------------------------------------------------------------------------------
@pytest.mark.parametrize("num_sines", [1, 2, 3, 4, 5])
def test_sines_equal_the_formula(num_sines):
    data = superimposed_sines(num_sines=num_sines)
    w = [0.2, 0.311, 0.42, 0.51, 0.74][:num_sines]
    for t in (0, 1, 17, 399, 400, 699):
        expected = sum(np.sin(wk * t) for wk in w)
        assert data.targets[t, 0] == pytest.approx(expected, abs=1e-12)
    assert data.metadata["frequencies"] == tuple(w)


# -- Mackey-Glass --------------------------------------------------------------------------
def euler_mackey_glass(units: int, dt: float = 0.001, tau: float = 17.0, x0: float = 1.2):
    """Independent transcription: forward Euler of dx/dt = 0.2 x_tau / (1 + x_tau^10) - 0.1 x."""
    per_unit = round(1 / dt)
    d = round(tau / dt)
    x = np.full(d + units * per_unit + 1, x0)
    for n in range(d, len(x) - 1):
        xd = x[n - d]
        x[n + 1] = x[n] + dt * (0.2 * xd / (1 + xd**10) - 0.1 * x[n])
    return x[d::per_unit][:units]


def test_mackey_glass_matches_an_independent_euler_integration():
    rk4 = mackey_glass_series(150)
    euler = euler_mackey_glass(150)
    assert np.abs(rk4 - euler).max() < 1e-3


def test_mackey_glass_euler_is_jaegers_discretisation():
    """``integrator="euler"``: Jaeger's Eq. 23 (GMD Report 148, Sec. 6.1), forward Euler with
    step 1/10 subsampled by 10, equals the independent transcription above with dt = 0.1."""
    series = mackey_glass_series(400, integrator="euler")
    np.testing.assert_allclose(series, euler_mackey_glass(400, dt=0.1), rtol=0, atol=1e-12)
    assert np.abs(series - mackey_glass_series(400)).max() > 1e-3  # not the RK4 series
    data = mackey_glass(train_length=200, test_length=10, integrator="euler")
    np.testing.assert_allclose(data.targets[:, 0], series[:210], rtol=0, atol=1e-12)
    assert data.metadata["integrator"] == "euler"


def test_mackey_glass_finer_step_agrees():
    coarse = mackey_glass_series(500, substeps=10)
    fine = mackey_glass_series(500, substeps=100)
    assert np.abs(coarse - fine).max() < 1e-3
    assert np.abs(coarse - fine).max() > 0  # really a different discretisation


def test_mackey_glass_range_and_chaos():
    series = mackey_glass().targets[:, 0]
    assert series[0] == 1.2
    assert series.min() > 0.2 and series.max() < 1.4
    assert series.std() > 0.15
    maxima = series[1:-1][(series[1:-1] > series[:-2]) & (series[1:-1] > series[2:])]
    assert len(np.unique(np.round(maxima, 3))) > 50  # aperiodic: peaks of many heights
    # Sensitive dependence: a 1e-8 change of the history grows by orders of magnitude.
    nudged = mackey_glass_series(3084, history=1.2 + 1e-8)
    gap = np.abs(nudged - series)
    assert gap[:100].max() < 1e-6 and gap[-500:].max() > 1e-4


def test_mackey_glass_squash():
    raw = mackey_glass(train_length=200, test_length=10).targets
    squashed = mackey_glass(train_length=200, test_length=10, squash=True).targets
    np.testing.assert_allclose(squashed, np.tanh(raw - 1.0))


# -- a^n b^n c^n ---------------------------------------------------------------------------
def legal_next_by_enumeration(prefix: str, max_n: int) -> set[str]:
    """Symbols x such that prefix + x is a prefix of some 'S a^m b^m c^m S' (1 <= m <= max_n)."""
    words = ["S" + "a" * m + "b" * m + "c" * m + "S" for m in range(1, max_n + 1)]
    return {w[len(prefix)] for w in words if w.startswith(prefix) and len(w) > len(prefix)}


def test_anbncn_targets_equal_enumeration_over_all_prefixes():
    data = anbncn(train_max_n=6, test_max_n=12)
    names = data.metadata["symbols"]
    assert names == ("S", "a", "b", "c")
    decoded = "".join(names[i] for i in data.inputs.argmax(axis=1))
    assert np.all(data.inputs.sum(axis=1) == 1)
    expected_text = "".join("S" + "a" * n + "b" * n + "c" * n for n in range(1, 7))
    expected_text += "".join("S" + "a" * n + "b" * n + "c" * n for n in range(1, 13))
    assert decoded == expected_text
    starts = np.flatnonzero(data.sequence_starts)
    assert [decoded[i] for i in starts] == ["S"] * (6 + 12)
    bounds = [*starts.tolist(), len(decoded)]
    for begin, end in itertools.pairwise(bounds):
        for t in range(begin, end):
            legal = legal_next_by_enumeration(decoded[begin : t + 1], max_n=60)
            predicted = {names[j] for j in np.flatnonzero(data.targets[t])}
            assert predicted == legal, (decoded[begin : t + 1], predicted, legal)


def test_anbncn_default_split():
    data = anbncn()
    train_len = sum(3 * n + 1 for n in range(1, 11))
    test_len = sum(3 * n + 1 for n in range(1, 51))
    assert data.train == slice(0, train_len)
    assert data.test == slice(train_len, train_len + test_len)
    assert data.washout == slice(0, 0)
    assert data.metadata["train_n"] == tuple(range(1, 11))
    assert data.metadata["test_n"] == tuple(range(1, 51))
    assert data.targets.shape == data.inputs.shape == (train_len + test_len, 4)


@pytest.mark.parametrize(
    "build, key",
    [
        (lambda: superimposed_sines(num_sines=6), "num_sines"),
        (lambda: superimposed_sines(washout=400), "train_length"),
        (lambda: superimposed_sines(test_length=0), "test_length"),
        (lambda: mackey_glass(tau=17.05), "tau"),
        (lambda: mackey_glass(integrator="rk2"), "integrator"),
        (lambda: anbncn(train_max_n=0), "train_max_n"),
        (lambda: anbncn(test_min_n=0), "test_min_n"),
    ],
)
def test_invalid_options_name_the_key(build, key):
    with pytest.raises((ValueError, TypeError), match=key):
        build()
