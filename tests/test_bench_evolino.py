"""``bench/evolino.py``'s NRMSE84 against a hand computation.

Jaeger's NRMSE84 (Jaeger & Haas, Science 2004): each test window is driven teacher-forced up
to a known value, then runs free on its own predictions; the error is taken at the 84th
free-running prediction, its root mean square over the windows is divided by the series'
standard deviation. A "policy" that predicts its input plus a constant ``c`` makes the 84th
free-running prediction ``y[s - 1] + 84 c`` (``y[s - 1]`` the last known value of a window
starting at ``s``), so the value follows by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench import evolino as bench
from envs.sequences import mackey_glass, mackey_glass_series


def _drift_policy(c: float, seen: list[np.ndarray]):
    """``make_policy_fn`` of ``prediction = input + c``; records every observation."""

    def make():
        def act(obs, episode_start):
            seen.append(np.asarray(obs, dtype=np.float64)[:, 0].copy())
            return np.asarray(obs, dtype=np.float64) + c

        return act

    return make


@pytest.mark.parametrize("c", [0.0, 0.003])
def test_nrmse84_equals_a_hand_computation(c):
    rng = np.random.default_rng(0)
    series = np.cumsum(rng.normal(size=400))  # any series will do
    starts, teacher, std = np.array([120, 150, 260]), 7, 2.5
    seen: list[np.ndarray] = []
    value = bench.nrmse84(_drift_policy(c, seen), series, starts, std, teacher=teacher)
    errors = series[starts - 1] + 84 * c - series[starts + 83]
    assert value == pytest.approx(np.sqrt(np.mean(errors**2)) / std, rel=1e-5)
    # the inputs: teacher values series[s - teacher - 1 .. s - 1], then its own predictions
    seen_arr = np.stack(seen, axis=1)  # [windows, teacher + 84]
    for w, s in enumerate(starts):
        assert np.allclose(seen_arr[w, : teacher + 1], series[s - teacher - 1 : s], atol=1e-4)
        free = series[s - 1] + c * np.arange(1, 84)
        assert np.allclose(seen_arr[w, teacher + 1 :], free, atol=1e-3)


@pytest.mark.parametrize("integrator", ["rk4", "euler"])
def test_dataset_nrmse84_windows_follow_the_training_steps(integrator):
    data = mackey_glass(train_length=1500, integrator=integrator)
    seen: list[np.ndarray] = []
    value = bench.dataset_nrmse84(_drift_policy(0.0, seen), data, windows=5)
    # by hand: non-overlapping blocks of 1001 teacher values + 84 predictions from step 1500
    # on (Jaeger's 1084-step evolutions); persistence predicts y[s - 1] for y[s + 83]
    series = mackey_glass_series(1500 + 5 * 1085, integrator=integrator)
    starts = 1500 + 1001 + 1085 * np.arange(5)
    errors = series[starts - 1] - series[starts + 83]
    expected = np.sqrt(np.mean(errors**2)) / series[:1500].std()
    assert value == pytest.approx(expected, rel=1e-5)
    assert bench.jaeger_windows(data, 5).tolist() == starts.tolist()
    first_inputs = np.stack(seen, axis=1)[:, 0]  # each window's first teacher value
    assert np.allclose(first_inputs, series[1500 + 1085 * np.arange(5)], atol=1e-6)


def test_report_every_tests_the_best_network_so_far():
    """``run(..., report_every=1)``: the value reported after generation 1 of a 2-generation
    run is the final test of a 1-generation run of the same seed (the runs are deterministic)."""
    options = {"subpop_size": 4, "trials": 1}
    two = bench.run("sines2", 0, 2, options, hidden=2, report_every=1)
    one = bench.run("sines2", 0, 1, options, hidden=2)
    assert [g for g, _ in two["reports"]] == [1]
    assert two["reports"][0][1] == pytest.approx(one["test_mse"], rel=1e-6)
    assert one["reports"] == []
