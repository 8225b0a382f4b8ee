"""Policy gradients: the sequence pitfalls of recurrent PPO / RPG, pinned.

Fused path = step path; no information crosses an episode boundary through the state;
garbage in padded and reset steps changes neither the loss nor the gradient; truncation
bootstraps and termination does not (GAE known answers and the collector's reset step).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.ppo import PPO, cut_sequence, ppo_loss, to_sequences
from evolstm.agent import AgentContext
from evolstm.network.layout import PolicySpec
from evolstm.network.pg_model import PGNetwork
from evolstm.rollouts.env_factory import resolve_env
from evolstm.rollouts.pg_rollout import Collector, gae

BOX2 = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def _net(cell="lstm", layers=1, critic="separate", action=None, memory=True) -> PGNetwork:
    spec = PolicySpec(
        BOX2, action or gym.spaces.Discrete(3), cell=cell, hidden=5, layers=layers, memory=memory
    )
    return PGNetwork(spec, None, critic=critic, seed=1)


def _starts(T: int, B: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    starts = torch.rand(T, B, generator=g) < 0.15
    starts[0, 0] = True
    starts[:, 1] = False  # one sequence without any start: the single-call fused case
    return starts


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("critic", ["shared", "separate"])
def test_fused_sequence_path_equals_step_path(layers: int, critic: str) -> None:
    net = _net(layers=layers, critic=critic)
    T, B = 12, 4
    x = torch.randn(T, B, 2, generator=torch.Generator().manual_seed(0))
    state = [torch.randn(s.shape) for s in net.init_state(B)]
    grads = {}
    outputs = {}
    for fused in (True, False):
        net.zero_grad()
        out, value = net.unroll(x, state, _starts(T, B, 3), fused=fused)
        (out.square().sum() + value.sin().sum()).backward()
        outputs[fused] = (out.detach(), value.detach())
        grads[fused] = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    torch.testing.assert_close(outputs[True], outputs[False], atol=1e-6, rtol=1e-5)
    for a, b in zip(grads[True], grads[False], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # The step path is also the collector's: stepping one at a time gives the same numbers.
    s = state
    for t in range(T):
        o, v, s = net.step(x[t], s, _starts(T, B, 3)[t])
        torch.testing.assert_close(o.detach(), outputs[False][0][t], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(v.detach(), outputs[False][1][t], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "peephole"])
@pytest.mark.parametrize("fused", [True, False])
def test_no_information_crosses_an_episode_boundary(cell: str, fused: bool) -> None:
    """Outputs from an episode start on depend on nothing before it: neither the earlier
    inputs nor the initial state (values and gradients)."""
    net = _net(cell=cell)
    T, B, k = 10, 3, 4
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[k] = True
    x = torch.randn(T, B, 2, requires_grad=True)
    state = [torch.randn(s.shape, requires_grad=True) for s in net.init_state(B)]
    out, value = net.unroll(x, state, starts, fused=fused)
    (out[k:].sum() + value[k:].sum()).backward()
    assert torch.count_nonzero(x.grad[:k]) == 0
    assert all(s.grad is None or torch.count_nonzero(s.grad) == 0 for s in state)
    x2 = x.detach().clone()
    x2[:k] = torch.randn(k, B, 2) * 100
    state2 = [torch.randn(s.shape) for s in state]
    out2, value2 = net.unroll(x2, state2, starts, fused=fused)
    assert torch.equal(out2[k:], out[k:].detach()) and torch.equal(value2[k:], value[k:].detach())


def test_gae_truncation_bootstraps_and_termination_does_not() -> None:
    g, lam = 0.9, 0.5
    # One slot: steps 0-1 of an episode truncated at step 1, reset step 2 (value = V(final
    # obs) = 10), new episode 3-4 terminated at 4, reset step 5; bootstrap value 7.
    rewards = torch.tensor([[1.0], [2.0], [0.0], [3.0], [4.0], [0.0]])
    values = torch.tensor([[0.5], [1.0], [10.0], [2.0], [3.0], [6.0], [7.0]])
    term = torch.tensor([[0], [0], [0], [0], [1], [0]], dtype=torch.bool)
    trunc = torch.tensor([[0], [1], [0], [0], [0], [0]], dtype=torch.bool)
    valid = torch.tensor([[1], [1], [0], [1], [1], [0]], dtype=torch.bool)
    adv, ret = gae(rewards, values, term, trunc, valid, g, lam)
    d1 = 2.0 + g * 10.0 - 1.0  # truncated: bootstraps from V(final obs)
    d0 = 1.0 + g * 1.0 - 0.5
    d4 = 4.0 - 3.0  # terminated: no bootstrap, nothing from the next episode
    d3 = 3.0 + g * 3.0 - 2.0
    expected = [d0 + g * lam * d1, d1, 0.0, d3 + g * lam * d4, d4, 0.0]
    torch.testing.assert_close(adv[:, 0], torch.tensor(expected))
    torch.testing.assert_close(ret[:, 0], torch.tensor(expected) + values[:6, 0] * valid[:, 0])


class _Fixed(gym.Env):
    """Obs = the step index within the episode; ``end`` decides how episodes end at step 3."""

    observation_space = gym.spaces.Box(0.0, 10.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(3)

    def __init__(self, end: str = "truncate") -> None:
        self.end, self.t = end, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0, 1.0], np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t == 3
        obs = np.array([self.t, 1.0], np.float32)
        return obs, 1.0, done and self.end == "terminate", done and self.end == "truncate", {}


@pytest.mark.parametrize("end", ["truncate", "terminate"])
def test_collector_reset_step_is_not_a_loss_term_and_carries_the_bootstrap(end: str) -> None:
    factory = resolve_env("tests.test_pg_sequences:_Fixed", {"end": end})
    net = _net()
    col = Collector(factory.make_vector, 2, seed=0)
    col.reset([0, 1])
    r = col.collect(net, None, 9, seq_len=9)
    # Episodes of 3 steps, then a reset step: valid pattern 1 1 1 0 | 1 1 1 0 | 1.
    expected_valid = torch.tensor([1, 1, 1, 0, 1, 1, 1, 0, 1], dtype=torch.bool)
    assert torch.equal(r["valid"][:, 0], expected_valid)
    assert torch.equal(r["episode_start"][:, 0], torch.tensor([1, 0, 0, 0, 1, 0, 0, 0, 1]) > 0)
    assert r["rewards"][3, 0] == 0 and r["rewards"][2, 0] == 1
    flag = r["truncated"] if end == "truncate" else r["terminated"]
    assert torch.equal(flag[:, 0], torch.tensor([0, 0, 1, 0, 0, 0, 1, 0, 0]) > 0)
    assert r["episode_lengths"] == [3] * 4 and r["episode_returns"] == [3.0] * 4
    # The reset step's value is V(final obs | the ended episode's history): recompute it.
    x = r["x"][:, :1]
    _, v = net.unroll(x[:4], [s[:1] for s in net.init_state(2)], r["episode_start"][:4, :1])
    torch.testing.assert_close(r["values"][3, 0], v[3, 0].detach())
    adv, _ = gae(r["rewards"], r["values"], r["terminated"], r["truncated"], r["valid"], 0.9, 1.0)
    boot = 0.9 * r["values"][3, 0] if end == "truncate" else 0.0
    torch.testing.assert_close(adv[2, 0], 1.0 + boot - r["values"][2, 0])


def _ppo(n_steps: int, seq_len: int, action: gym.Space | None = None, **kw) -> PPO:
    factory = resolve_env("evolstm/CartPoleNoVel-v0")
    obs_space, act_space = factory.spaces()
    spec = PolicySpec(obs_space, act_space, hidden=6)
    ctx = AgentContext(spec, 0, None, factory.make_vector)  # type: ignore[arg-type]
    opts = PPO.Options(num_envs=3, n_steps=n_steps, seq_len=seq_len, epochs=1, **kw)
    return PPO(opts, ctx)


@pytest.mark.parametrize("fused", [True, False])
def test_garbage_in_padded_and_reset_steps_changes_neither_loss_nor_gradient(fused) -> None:
    agent = _ppo(n_steps=90, seq_len=16)  # 90 = 5 * 16 + 10: the last sequence is padded
    rollout, _ = agent.collect(steps=90, seq_len=16)
    adv, ret = agent.advantages(rollout)
    data = agent.batch(rollout, adv, ret)
    invalid = ~data["valid"]
    assert invalid[-6:, -3:].all() and invalid[:-6].sum() > 0  # padding and reset steps

    def loss_and_grad(d):
        agent.net.zero_grad()
        loss, stats, _ = ppo_loss(agent.net, d, 0.2, agent.options, fused)
        loss.backward()
        return loss.detach(), stats, [p.grad.clone() for p in agent.net.parameters()]

    clean = loss_and_grad(data)
    dirty = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in data.items()}
    g = torch.Generator().manual_seed(5)
    for key in ("x", "logp", "values", "advantages", "returns"):
        noise = torch.randn(dirty[key].shape, generator=g) * 1e3
        mask = invalid if dirty[key].dim() == 2 else invalid[..., None]
        dirty[key] = torch.where(mask, noise, dirty[key])
    dirty["logp"] = torch.where(invalid, torch.tensor(float("nan")), dirty["logp"])
    dirty["actions"] = torch.where(invalid, torch.full_like(dirty["actions"], 1), data["actions"])
    got = loss_and_grad(dirty)
    assert torch.equal(clean[0], got[0]) and clean[1] == got[1]
    for a, b in zip(clean[2], got[2], strict=True):
        assert torch.equal(a, b)


def test_forget_bias_sets_the_forget_gate_of_actor_and_critic() -> None:
    """``forget_bias`` initialises exactly the forget gates: one step of torch's own LSTMCell
    (our weights mapped into it) from a zero state gives forget activation sigmoid(b)."""
    from evolstm.network.layout import PolicySpec, init_vector, unflatten

    space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    spec = PolicySpec(space, gym.spaces.Discrete(2), hidden=5)
    net = PGNetwork(spec, init_vector(spec, torch.Generator().manual_seed(0)), forget_bias=4.0)
    for core, vector in ((net.core, net.actor.vector), (net.critic_core, net.critic_vector)):
        p = unflatten(core.layout, vector.detach())
        W, b = p["layer0.W"], p["layer0.b"]
        cell = torch.nn.LSTMCell(3, 5)
        with torch.no_grad():
            cell.weight_ih.copy_(W[:3].t())
            cell.weight_hh.copy_(W[3:].t())
            cell.bias_ih.copy_(b)
            cell.bias_hh.zero_()
        # x = 0, h = 0: each gate is its bias's activation; g = tanh(0) = 0, so c1 = f * c0.
        c0 = torch.ones(1, 5)
        _, c1 = cell(torch.zeros(1, 3), (torch.zeros(1, 5), c0))
        torch.testing.assert_close(c1, torch.sigmoid(torch.tensor(4.0)) * c0)


def test_random_cut_keeps_every_valid_step_once_from_the_stored_state() -> None:
    """sb3-contrib's per-epoch cut (``random_cut``): each valid step is in exactly one column
    at its own inputs, nothing invalid becomes valid, and the cut-off part, unrolled from the
    state stored at collection, gives the outputs of the uncut unroll (the net unchanged
    since collection), while no gradient crosses the cut (BPTT truncated there)."""
    T, L = 40, 16  # sequences 0-15, 16-31, 32-39 (+ padding) of 3 slots
    agent = _ppo(n_steps=T, seq_len=L, random_cut=True)
    rollout, _ = agent.collect(steps=T, seq_len=1)  # the state before every step
    data = agent.batch(rollout, *agent.advantages(rollout))
    # The stored states at the sequence starts are those a seq_len collection keeps.
    plain = _ppo(n_steps=T, seq_len=L)
    plain_rollout, _ = plain.collect(steps=T, seq_len=L)
    reference = plain.batch(plain_rollout, *plain.advantages(plain_rollout))
    for a, b in zip(data["states"], reference["states"], strict=True):
        assert torch.equal(a, b)
    ids = torch.arange(T * 3).reshape(T, 3)
    data["id"] = to_sequences(ids, L)
    uncut_out, uncut_v = agent.net.unroll(data["x"], data["states"], data["episode_start"])
    seen_cuts = set()
    for _ in range(12):
        cut = agent.cut_randomly(data, rollout)
        if cut is data:
            continue
        C = data["x"].shape[1]
        assert cut["x"].shape[1] == C + 1
        # Valid ids: the same set, each exactly once.
        got = cut["id"][cut["valid"]]
        assert sorted(got.tolist()) == sorted(data["id"][data["valid"]].tolist())
        # Each valid entry carries its own step's data.
        for key in ("x", "actions", "logp", "advantages", "returns", "episode_start"):
            valid = data["valid"]
            by_id = dict(zip(data["id"][valid].tolist(), data[key][valid], strict=True))
            for i, v in zip(got.tolist(), cut[key][cut["valid"]], strict=True):
                assert torch.equal(by_id[i], v)
        # The new column starts at its cut step, from the state stored before that step.
        first = int(cut["id"][0, C])
        t, n = divmod(first, 3)
        seen_cuts.add(t % L)
        for s, full in zip(cut["states"], rollout["seq_states"], strict=True):
            assert torch.equal(s[C], full[t, n])
        out, v = agent.net.unroll(cut["x"], cut["states"], cut["episode_start"])
        pos = {int(data["id"][r, c]): (r, c) for r, c in data["valid"].nonzero().tolist()}
        for r, c in cut["valid"].nonzero().tolist():
            r0, c0 = pos[int(cut["id"][r, c])]
            torch.testing.assert_close(out[r, c], uncut_out[r0, c0], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(v[r, c], uncut_v[r0, c0], atol=1e-5, rtol=1e-4)
    assert len(seen_cuts) > 3  # different cut points were drawn
    # Truncation: the tail's outputs do not depend on the head's inputs.
    x = data["x"].clone().requires_grad_(True)
    cut = cut_sequence({**data, "x": x}, 1, 5, [s[5, 1] for s in rollout["seq_states"]])
    out, v = agent.net.unroll(cut["x"], cut["states"], cut["episode_start"])
    (out[:, -1].sum() + v[:, -1].sum()).backward()
    assert torch.count_nonzero(x.grad[:5, 1]) == 0 and torch.count_nonzero(x.grad[5:, 1]) > 0
    assert torch.count_nonzero(x.grad[:, [0, 2]]) == 0  # other columns untouched


def test_obs_clip_bounds_the_normalised_observations() -> None:
    """``obs_clip``: the next rollout is normalised by the statistics of the steps seen so far
    (numpy's mean and population std here) and clipped to exactly ``+-obs_clip``."""
    agent = _ppo(n_steps=40, seq_len=16, obs_clip=0.5)
    first, _ = agent.collect(steps=40)  # no statistics yet: raw observations
    raw = first["x"][first["valid"]].double().numpy()
    second, _ = agent.collect(steps=40)
    norm = agent.obs_normalizer()
    assert norm is not None and norm.clip == 0.5
    np.testing.assert_allclose(norm.mean.numpy(), raw.mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.std.numpy(), raw.std(0), rtol=1e-5)
    x = second["x"][second["valid"]]
    assert x.abs().max() == 0.5 and (x.abs() < 0.5).any()
    assert _ppo(n_steps=40, seq_len=16).options.obs_clip == 5.0  # the ES agents' default


def test_obs_norm_env_steps_freezes_the_statistics() -> None:
    """``obs_norm_env_steps``: the statistics take in the rollouts that start before the
    limit (each rollout's own steps, as numpy computes them) and no rollout after it."""
    agent = _ppo(n_steps=20, seq_len=16, obs_norm_env_steps=30)  # 3 slots: ~60 steps a rollout
    first, _ = agent.collect(steps=20)  # starts at 0 < 30: counted
    agent.collect(steps=20)  # starts at ~60 >= 30: not counted
    frozen = agent.obs_stats.normalizer()
    raw = first["x"][first["valid"]].double().numpy()
    np.testing.assert_allclose(frozen.mean.numpy(), raw.mean(0), rtol=1e-5)
    np.testing.assert_allclose(frozen.std.numpy(), raw.std(0), rtol=1e-5)
    agent.collect(steps=20)
    assert torch.equal(agent.obs_normalizer().mean, frozen.mean)
    assert torch.equal(agent.obs_normalizer().std, frozen.std)
    moving = _ppo(n_steps=20, seq_len=16)
    for _ in range(2):
        moving.collect(steps=20)
    assert moving.obs_stats.count > agent.obs_stats.count  # without the limit: both rollouts


def test_value_loss_is_half_vf_coef_times_the_mean_squared_error() -> None:
    """The value term is ``vf_coef * 0.5 * MSE`` over valid steps (CleanRL's form), so SB3's
    ``vf_coef * MSE`` with vf_coef 0.5 is ``vf_coef: 1.0`` here (``cartpole_nv_ppo.yaml``)."""
    agent = _ppo(n_steps=40, seq_len=16, vf_coef=1.0)
    rollout, _ = agent.collect(steps=40, seq_len=16)
    data = agent.batch(rollout, *agent.advantages(rollout))
    loss, _, terms = ppo_loss(agent.net, data, 0.2, agent.options, True)
    with torch.no_grad():
        _, value = agent.net.unroll(
            torch.where(data["valid"][..., None], data["x"], torch.zeros_like(data["x"])),
            data["states"],
            data["episode_start"],
        )
    valid = data["valid"]
    mse = ((value - data["returns"])[valid] ** 2).mean()
    sb3_loss = terms["policy_loss"] + 0.5 * mse  # SB3: pg + vf_coef 0.5 * MSE (entropy 0)
    torch.testing.assert_close(loss.detach(), sb3_loss.detach(), rtol=1e-5, atol=1e-6)
