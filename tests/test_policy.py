"""Policies: the flat layout, the population form against single policies, save/load."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from evolstm.network.layout import PolicySpec, build_layout, init_vector
from evolstm.network.policy import PopulationPolicy, RecurrentCore, RecurrentPolicy

BOX = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
SPACES = {
    "box-discrete": (BOX, gym.spaces.Discrete(3)),
    "dict-multidiscrete": (
        gym.spaces.Dict({"a": gym.spaces.Discrete(4), "b": BOX}),
        gym.spaces.MultiDiscrete([2, 3]),
    ),
    "tuple-box": (
        gym.spaces.Tuple((gym.spaces.MultiBinary(3), gym.spaces.Discrete(2, start=1))),
        gym.spaces.Box(-2.0, 2.0, (2,), np.float32),
    ),
}


def _spec(name: str, cell: str = "lstm", layers: int = 1) -> PolicySpec:
    obs, act = SPACES[name]
    return PolicySpec(obs, act, cell=cell, hidden=5, layers=layers)


def _samples(space: gym.Space, n: int, seed: int) -> list:
    space.seed(seed)
    return [space.sample() for _ in range(n)]


def _batch(space: gym.Space, samples: list):
    return gym.vector.utils.concatenate(
        space, samples, gym.vector.utils.create_empty_array(space, len(samples))
    )


def _obs_batch(space: gym.Space, n: int, seed: int):
    return _batch(space, _samples(space, n, seed))


@pytest.mark.parametrize("cell", ["lstm", "peephole", "gru", "conv_peephole"])
def test_layout_covers_vector_and_units_are_disjoint(cell):
    spec = _spec("box-discrete", cell=cell, layers=2)
    layout = build_layout(spec)
    assert sum(e.numel for e in layout.entries) == layout.size
    offsets = [e.offset for e in layout.entries]
    assert offsets == sorted(offsets) and offsets[0] == 0
    for layer in range(2):
        seen = torch.cat([layout.unit_indices(layer, j) for j in range(spec.hidden)])
        assert seen.unique().numel() == seen.numel(), "units overlap"
        if layer == 1:
            ro = layout["readout.W"]
            assert set(range(ro.offset, ro.offset + ro.numel)) <= set(seen.tolist())


def test_unit_indices_select_lstm_gate_columns():
    spec = _spec("box-discrete")
    layout = build_layout(spec)
    hidden = spec.hidden
    vector = torch.zeros(layout.size)
    vector[layout.unit_indices(0, 2)] = 1.0
    w = vector[layout["layer0.W"].offset : layout["layer0.W"].offset + layout["layer0.W"].numel]
    w = w.reshape(layout["layer0.W"].shape)
    marked_cols = sorted(set(torch.nonzero(w)[:, 1].tolist()))
    assert marked_cols == [2, hidden + 2, 2 * hidden + 2, 3 * hidden + 2]
    assert bool((w[:, marked_cols] == 1).all())


@pytest.mark.parametrize("name", list(SPACES))
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_population_matches_single_policies(name, cell):
    spec = _spec(name, cell=cell, layers=2)
    pop, episodes, steps = 3, 2, 6
    vectors = torch.stack([init_vector(spec, torch.Generator().manual_seed(s)) for s in range(pop)])
    vectors += 0.3 * torch.randn(vectors.shape, generator=torch.Generator().manual_seed(9))
    population = PopulationPolicy(RecurrentCore(spec), vectors)
    singles = [RecurrentPolicy(spec, vectors[p]) for p in range(pop)]
    pop_state = population.init_state(episodes)
    single_states = [s.init_state(episodes) for s in singles]
    for t in range(steps):
        samples = _samples(spec.observation_space, pop * episodes, seed=t)
        obs = _batch(spec.observation_space, samples)
        actions, pop_state = population.act(obs, pop_state, episodes)
        for p, policy in enumerate(singles):
            mine = _batch(spec.observation_space, samples[p * episodes : (p + 1) * episodes])
            a, single_states[p] = policy.act(mine, single_states[p])
            np.testing.assert_allclose(
                actions[p * episodes : (p + 1) * episodes], a, rtol=1e-5, atol=1e-5
            )
    for a in actions:
        assert spec.action_space.contains(a)


def test_vector_round_trip_and_save_load(tmp_path):
    spec = _spec("dict-multidiscrete")
    policy = RecurrentPolicy(spec, seed=3)
    v = policy.to_vector()
    other = RecurrentPolicy(spec, seed=4)
    assert not torch.equal(other.to_vector(), v)
    other.from_vector(v)
    assert torch.equal(other.to_vector(), v)
    with pytest.raises(ValueError, match="shape"):
        other.from_vector(torch.zeros(3))
    policy.save(tmp_path / "p.pt")
    loaded = RecurrentPolicy.load(tmp_path / "p.pt")
    assert loaded.spec == spec and torch.equal(loaded.to_vector(), v)
    obs = _obs_batch(spec.observation_space, 4, seed=1)
    a1, _ = policy.act(obs, policy.init_state(4))
    a2, _ = loaded.act(obs, loaded.init_state(4))
    np.testing.assert_array_equal(a1, a2)


def test_episode_start_resets_state_and_gradients_flow():
    spec = _spec("box-discrete")
    policy = RecurrentPolicy(spec, seed=0)
    obs = np.random.default_rng(0).uniform(-1, 1, (2, 3)).astype(np.float32)
    state = policy.init_state(2)
    _, state = policy.step(obs, state)
    fresh_out, _ = policy.step(obs, policy.init_state(2))
    carried, _ = policy.step(obs, state, episode_start=np.array([True, False]))
    torch.testing.assert_close(carried[0], fresh_out[0])
    assert not torch.allclose(carried[1], fresh_out[1])
    dist = policy.distribution(carried)
    loss = -dist.log_prob(dist.sample()).sum()
    loss.backward()
    assert policy.vector.grad is not None and policy.vector.grad.abs().sum() > 0


def test_bad_cell_is_a_clear_error():
    with pytest.raises(ValueError, match="valid: lstm"):
        PolicySpec(BOX, gym.spaces.Discrete(2), cell="lstmm")


def test_readout_hidden_layers_equal_an_nn_sequential_and_the_population_form(tmp_path):
    obs, act = SPACES["box-discrete"]
    spec = PolicySpec(obs, act, hidden=5, readout_hidden=[7, 4])
    layout = build_layout(spec)
    assert layout["readout.hidden0.W"].shape == (5, 7)
    assert layout["readout.hidden1.W"].shape == (7, 4) and layout["readout.W"].shape == (4, 3)
    vectors = torch.stack([init_vector(spec, torch.Generator().manual_seed(s)) for s in range(2)])
    vectors += 0.3 * torch.randn(vectors.shape, generator=torch.Generator().manual_seed(1))
    policy = RecurrentPolicy(spec, vectors[1])
    params = policy.params()
    # Reference: torch's own layers with the same weights (nn.Linear stores W transposed).
    ref = torch.nn.Sequential(
        torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 4), torch.nn.ReLU(),
        torch.nn.Linear(4, 3),
    )  # fmt: skip
    names = ["readout.hidden0", "readout.hidden1", "readout"]
    with torch.no_grad():
        for module, name in zip(ref[::2], names, strict=True):
            module.weight.copy_(params[f"{name}.W"].t())
            module.bias.copy_(params[f"{name}.b"])
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    features, _ = policy.core.features(params, x, policy.init_state(6))
    out, _ = policy.core.forward(params, x, policy.init_state(6))
    torch.testing.assert_close(out, ref(features))
    population = PopulationPolicy(RecurrentCore(spec), vectors)
    x2 = x[None].expand(2, -1, -1)
    pop_out, _ = population.core.step_prepared(population._prepared, x2, population.init_state(6))
    torch.testing.assert_close(pop_out[1], out)
    # ESP's unit genome holds the first hidden layer's rows reading that cell.
    w = layout["readout.hidden0.W"]
    rows = set(range(w.offset + 2 * 7, w.offset + 3 * 7))
    assert rows <= set(layout.unit_indices(0, 2).tolist())
    policy.save(tmp_path / "p.pt")
    loaded = RecurrentPolicy.load(tmp_path / "p.pt")
    assert loaded.spec == spec and torch.equal(loaded.to_vector(), policy.to_vector())
    with pytest.raises(ValueError, match="readout_hidden"):
        PolicySpec(obs, act, readout_hidden=[0])


def test_frozen_actor_keeps_the_parameters_it_was_made_with():
    spec = _spec("box-discrete")
    policy = RecurrentPolicy(spec, seed=3)
    obs = _obs_batch(spec.observation_space, 64, seed=1)
    frozen = policy.frozen_actor()
    before, _ = policy.act(obs, policy.init_state(64))
    policy.from_vector(RecurrentPolicy(spec, seed=4).to_vector())
    after, _ = policy.act(obs, policy.init_state(64))
    assert not np.array_equal(before, after)  # the new parameters act differently
    np.testing.assert_array_equal(frozen(obs, policy.init_state(64))[0], before)
