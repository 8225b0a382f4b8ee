"""Evolino: the least-squares readout, the sequence envs and a small learning run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.evolino import Evolino, free_run, predict, solve_readout
from envs.sequence_env import SequenceEnv
from evolstm.agent import AgentContext
from evolstm.network.layout import PolicySpec
from evolstm.network.policy import RecurrentPolicy
from evolstm.rollouts.env_factory import resolve_env
from evolstm.rollouts.success import policy_fn_maker


@pytest.mark.parametrize("solver", ["ridge", "lstsq"])
def test_readout_recovers_a_known_linear_map_batched_and_unbatched(solver):
    gen = torch.Generator().manual_seed(0)
    n, m, f, o = 5, 200, 7, 3
    phi = torch.randn(n, m, f, generator=gen)
    w_true = torch.randn(n, f, o, generator=gen)
    b_true = torch.randn(n, o, generator=gen)
    # one target per network: batched targets [N, M, O]
    targets = torch.bmm(phi, w_true) + b_true.unsqueeze(1)
    w, b = solve_readout(phi, targets, ridge=0.0 if solver == "lstsq" else 1e-12, solver=solver)
    assert torch.allclose(w, w_true, atol=1e-4) and torch.allclose(b, b_true, atol=1e-4)
    for i in range(n):  # unbatched: the same answer network by network
        wi, bi = solve_readout(phi[i], targets[i], ridge=1e-12, solver=solver)
        assert torch.allclose(wi, w_true[i], atol=1e-4) and torch.allclose(bi, b_true[i], atol=1e-4)
    # shared targets [M, O] (Evolino's case) against numpy's pseudo-inverse solution
    shared = targets[0]
    w, b = solve_readout(phi, shared, ridge=1e-12, solver=solver)
    for i in range(n):
        design = np.concatenate([phi[i].double().numpy(), np.ones((m, 1))], axis=1)
        ref = np.linalg.pinv(design) @ shared.double().numpy()
        assert np.allclose(w[i].numpy(), ref[:f], atol=1e-4)
        assert np.allclose(b[i].numpy(), ref[f], atol=1e-4)


def test_env_free_runs_on_its_own_predictions():
    env = SequenceEnv("sines", num_sines=1, washout=5, train_length=20, test_length=6)
    data = env.dataset
    obs, _ = env.reset(seed=0)
    seen, total = [obs.copy()], 0.0
    for t in range(data.test.stop):
        action = np.array([0.5 + t], dtype=np.float32)  # an easily recognisable prediction
        obs, reward, terminated, _, info = env.step(action)
        total += reward
        seen.append(obs.copy())
        if terminated:
            break
    seen = np.concatenate(seen[: data.test.stop])
    test = data.test
    assert np.allclose(seen[: test.start + 1], data.inputs[: test.start + 1, 0])  # teacher
    assert np.allclose(seen[test.start + 1 :], 0.5 + np.arange(test.start, test.stop - 1))
    expected = np.mean((0.5 + np.arange(test.start, test.stop) - data.targets[test, 0]) ** 2)
    assert np.isclose(-total, expected)
    assert info["success"] == (expected <= env.success_threshold)


def _evolino(env_id: str, kwargs: dict, hidden: int, **options):
    factory = resolve_env(env_id, kwargs)
    env = factory.make()
    spec = PolicySpec(env.observation_space, env.action_space, hidden=hidden)
    ctx = AgentContext(spec, 0, None, factory.make_vector)  # Evolino needs no evaluator
    return Evolino(Evolino.Options(**options), ctx), env.unwrapped


@pytest.mark.parametrize("input_scale", [None, 0.01])
def test_fitness_is_the_free_running_error_of_the_saved_policy(input_scale):
    agent, env = _evolino(
        "evolstm/Sines-v0",
        {"num_sines": 1, "washout": 20, "train_length": 80, "test_length": 30},
        hidden=3,
        subpop_size=4,
        trials=1,
        fitness_windows=1,
        input_scale=input_scale,
    )
    agent.step()
    norm = agent.obs_normalizer()
    data = env.dataset
    if input_scale is None:
        assert norm is None
    else:  # the training inputs, centred and scaled to standard deviation input_scale
        train = norm(torch.as_tensor(data.inputs[data.train], dtype=torch.float32))
        assert abs(float(train.mean())) < 1e-6
        assert np.isclose(float(train.std()), input_scale, rtol=1e-4)
    # the saved policy carries the scaling as its observation normaliser
    policy = RecurrentPolicy(agent.ctx.policy_spec, vector=agent.policy_vector(), obs_norm=norm)
    # the agent's single fitness window is the last `horizon` training steps
    start = int(agent.window_starts[0])
    window = type(data)(
        name="w",
        inputs=data.inputs[start - 20 : start + 30],
        targets=data.targets[start - 20 : start + 30],
        washout=slice(0, 20),
        train=slice(20, 20),
        test=slice(20, 50),
        sequence_starts=data.sequence_starts[:50],
    )
    predictions = free_run(policy, window)
    mse = float(np.mean((predictions - window.targets[20:50]) ** 2))
    assert np.isclose(-agent.best_fitness, mse, rtol=1e-4)
    # teacher-forced predictions from Python: the first free-running step sees only teacher
    # inputs, so it equals the teacher-forced output there
    outputs = predict(policy, window.inputs[:21])
    assert np.allclose(outputs[20], predictions[0], atol=1e-6)


def test_evolino_learns_a_sine():
    agent, env = _evolino("evolstm/Sines-v0", {"num_sines": 1}, hidden=10, subpop_size=12, trials=4)
    for _ in range(3):
        agent.step()
    result = env.success_test(policy_fn_maker(agent.ctx.policy_spec, agent.policy_vector()))
    # 300 free-running steps of sin(0.2 t) (variance 0.5) predicted to within 1e-3 MSE
    assert result["solved"] and result["test_mse"] < 1e-3


def test_scaled_inputs_learn_the_triple_sine():
    """configs/sines_evolino.yaml's settings on k = 3: centred inputs scaled to std 0.001 keep
    the cells near-linear, and 10 generations extrapolate 300 free-running steps; the same
    budget with raw inputs and small weights (the previous settings) does not."""
    task = {"num_sines": 3}
    scaled = {"input_scale": 0.001, "init_range": 1.0, "mutation_scale": 0.03, "burst_scale": 0.03}
    raw = {"init_range": 0.1, "mutation_scale": 0.01}
    errors = {}
    for name, options in {"scaled": scaled, "raw": raw}.items():
        agent, env = _evolino(
            "evolstm/Sines-v0", task, 15, subpop_size=12, trials=4, ridge=0.0, **options
        )
        for _ in range(10):
            agent.step()
        make = policy_fn_maker(agent.ctx.policy_spec, agent.policy_vector(), agent.obs_normalizer())
        errors[name] = env.success_test(make)["test_mse"]
    variance = float(env.dataset.targets[env.dataset.test].var())  # ~1.5: three unit sines
    assert errors["scaled"] < 1e-3 * variance, errors
    assert errors["raw"] > 0.1 * variance, errors


def test_elite_re_evaluates_the_best_network_so_far():
    """``elite``: every generation after the first evaluates one more network, the best so far
    rebuilt from its chromosomes, and (fitness being deterministic) it scores exactly the best
    fitness so far."""
    task = {"num_sines": 1, "washout": 20, "train_length": 80, "test_length": 30}
    agent, _ = _evolino("evolstm/Sines-v0", task, 3, subpop_size=4, trials=2, elite=True)
    seen: list[torch.Tensor] = []
    inputs: list[torch.Tensor] = []
    original = agent.evaluate_networks

    def record(vectors):
        inputs.append(vectors.clone())
        fitness, steps, evaluated = original(vectors)
        seen.append(fitness)
        return fitness, steps, evaluated

    agent.evaluate_networks = record
    metrics = agent.step()
    assert seen[0].numel() == 4 * 2 and metrics["evaluations"] == 8  # no best yet
    for _ in range(3):
        best_before, vector_before = agent.best_fitness, agent.policy_vector()
        agent.step()
        assert seen[-1].numel() == 4 * 2 + 1
        # the extra network is the best so far (to float32 round-off: other batch shapes)
        assert np.isclose(float(seen[-1][-1]), best_before, rtol=1e-4, atol=0)
        # ... with the same cell weights (the readout is re-solved to the same values)
        ro = agent.layout["readout.W"].offset
        assert torch.equal(inputs[-1][-1][:ro], vector_before[:ro])


def _window_mse(policy, data, starts, horizon: int, washout: int | None) -> float:
    """Mean over ``starts`` of the free-running MSE of ``horizon`` steps, each window
    teacher-forced from the zero state for ``washout`` steps (``None``: from step 0)."""
    squared = []
    for start in starts:
        first = 0 if washout is None else start - washout
        window = type(data)(
            name="w",
            inputs=data.inputs[first : start + horizon],
            targets=data.targets[first : start + horizon],
            washout=slice(0, start - first),
            train=slice(start - first, start - first),
            test=slice(start - first, start - first + horizon),
            sequence_starts=np.eye(1, start + horizon - first, dtype=bool)[0],
        )
        squared.append(np.mean((free_run(policy, window) - window.targets[window.test]) ** 2))
    return float(np.mean(squared))


@pytest.mark.parametrize("state", ["training", "washout"])
def test_fitness_window_state_training_or_washout(state):
    """``fitness_state: training``: each fitness window starts from the teacher-forced training
    pass's state, so the fitness equals the saved policy run teacher-forced over every step
    before the window (from step 0) and then free; ``washout`` (the default): teacher-forced
    for the washout steps only. The two differ for the same network."""
    task = {"num_sines": 2, "washout": 20, "train_length": 120, "test_length": 30}
    agent, env = _evolino(
        "evolstm/Sines-v0",
        task,
        hidden=4,
        subpop_size=4,
        trials=1,
        fitness_windows=3,
        input_scale=0.01,
        fitness_state=state,
    )
    agent.step()
    policy = RecurrentPolicy(
        agent.ctx.policy_spec, vector=agent.policy_vector(), obs_norm=agent.obs_normalizer()
    )
    starts = agent.window_starts.tolist()
    assert starts == [20, 55, 90]
    full = _window_mse(policy, env.dataset, starts, 30, washout=None)
    short = _window_mse(policy, env.dataset, starts, 30, washout=20)
    # the fitness matches its own reference to float32 round-off (~1e-5 here), while the
    # two references differ by ~3e-3 (these cells forget the zero start quickly)
    assert np.isclose(-agent.best_fitness, full if state == "training" else short, rtol=5e-5)
    assert not np.isclose(full, short, rtol=1e-3), (full, short)
