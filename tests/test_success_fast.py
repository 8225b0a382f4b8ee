"""The success test's fast paths give the same bits as the general ones.

A success test steps one cart up to 100,000 times, so ``balance_steps`` runs the cart on Python
floats and ``policy_fn_maker`` groups the policy's parameters once. The references here are the
general code: :func:`envs.pole_balancing.advance` on numpy arrays, a one-slot
:class:`~envs.pole_balancing.PoleBalancingVectorEnv` and :meth:`RecurrentPolicy.act`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.pole_balancing import PoleBalancingEnv, PoleBalancingVectorEnv, action_to_force, advance
from envs.pole_success import (
    _advance_one,
    balance_steps,
    generalization_starts,
    generalization_test,
)
from evolstm.network.layout import PolicySpec, init_vector
from evolstm.network.obs_norm import ObsNormalizer
from evolstm.network.policy import RecurrentPolicy
from evolstm.rollouts.success import policy_fn_maker
from tests.test_env_pole_balancing import lqr_policy

# An LSTM-4 controller that SNES found for double pole without velocities (seed 2, 1,920
# evaluations): it balances 1104 steps from the standard start.
CHAMPION = [
    1.6528377532958984,
    0.6677314043045044,
    -3.877131938934326,
    -1.0145169496536255,
    -1.4174456596374512,
    1.541554570198059,
    -1.4864559173583984,
    1.7148454189300537,
    1.0171318054199219,
    -3.2219133377075195,
    -1.5849863290786743,
    0.15377457439899445,
    0.44923412799835205,
    -2.4179229736328125,
    -3.642939805984497,
    0.9224100708961487,
    2.672417640686035,
    -0.7061440944671631,
    -1.7238149642944336,
    2.0366532802581787,
    1.6753618717193604,
    2.750861167907715,
    2.1343767642974854,
    -1.3277450799942017,
    4.611682415008545,
    -1.9805727005004883,
    -1.9711965322494507,
    -4.859874725341797,
    -0.5544654726982117,
    1.6518027782440186,
    0.7690568566322327,
    0.13813558220863342,
    -0.2704763114452362,
    0.048502687364816666,
    -1.5051758289337158,
    -1.8779217004776,
    0.21152515709400177,
    -1.0271728038787842,
    1.0854759216308594,
    0.9305123090744019,
    -3.3540592193603516,
    -1.2423405647277832,
    0.6892706155776978,
    -0.43313685059547424,
    0.905441164970398,
    -2.4731454849243164,
    -0.8248850107192993,
    1.5691585540771484,
    -1.7645957469940186,
    -1.311460256576538,
    1.4428205490112305,
    -0.74687659740448,
    1.1866061687469482,
    -0.6834662556648254,
    3.031521797180176,
    -1.1128888130187988,
    -1.7828185558319092,
    4.248327732086182,
    0.6698440909385681,
    -1.8143380880355835,
    0.7813486456871033,
    3.1828036308288574,
    0.960919976234436,
    -0.5652872920036316,
    0.8209162950515747,
    -0.11693772673606873,
    3.35659122467041,
    -1.55727219581604,
    1.8328723907470703,
    1.0599480867385864,
    0.855958104133606,
    -1.6734459400177002,
    -2.427729606628418,
    1.6442863941192627,
    -3.377887487411499,
    -2.523261070251465,
    2.8658509254455566,
    -0.5785860419273376,
    1.1180458068847656,
    2.2778103351593018,
    0.5590116381645203,
    0.36671578884124756,
    1.8597503900527954,
    -0.8275054693222046,
    -0.7741488814353943,
    0.20042172074317932,
    -0.14344194531440735,
    3.0963311195373535,
    -0.3655310571193695,
    1.4929100275039673,
    -5.040402889251709,
    -0.019457340240478516,
    1.8858152627944946,
    0.6799817681312561,
    0.08992727100849152,
    -0.19881382584571838,
    -0.8132305145263672,
    -0.8908610939979553,
    -2.1541147232055664,
    1.6574740409851074,
    -2.2097933292388916,
    -2.368350028991699,
    -0.20503821969032288,
    -0.8209604024887085,
    0.7213157415390015,
    -0.9437658786773682,
    1.0475040674209595,
    -0.6726900935173035,
    -0.7993711233139038,
    -0.430662602186203,
    -1.4143056869506836,
    0.6696312427520752,
    0.6532514095306396,
    -2.864501714706421,
    0.06994006782770157,
    0.5290812253952026,
    0.3317873477935791,
    -0.9273692965507507,
    2.933119535446167,
    5.5002760887146,
    -0.060251593589782715,
    -1.038710117340088,
    -0.26577261090278625,
    -3.593442440032959,
    3.350703716278076,
    2.465202808380127,
    -2.164584159851074,
    -1.0836962461471558,
    -2.1725351810455322,
    0.6026739478111267,
    1.950799822807312,
    -1.1881014108657837,
    0.10735565423965454,
]
CHAMPION_STEPS = 1104


def _spec(cell: str = "lstm") -> PolicySpec:
    env = PoleBalancingEnv(poles=2, velocities=False)
    return PolicySpec(env.observation_space, env.action_space, cell=cell, hidden=4)


def _general_act(policy: RecurrentPolicy, obs, state, start):
    """Deterministic actions through the training path (``step``: parameters regrouped every
    call, resets inside ``RecurrentCore.features``), not the prepared path under test."""
    with torch.no_grad():
        out, state = policy.step(obs, state, start)
        return policy.head.to_env(policy.head.deterministic(out)), state


def _reference_balance_steps(spec: PolicySpec, vector: torch.Tensor, steps: int) -> int:
    """The general path: a one-slot vector env and the training path's actions."""
    policy = RecurrentPolicy(spec, vector=vector)
    env = PoleBalancingVectorEnv(1, poles=2, velocities=False, max_steps=steps)
    obs, _ = env.reset(seed=0)
    state, start = policy.init_state(1), np.ones(1, dtype=bool)
    for t in range(steps):
        action, state = _general_act(policy, obs, state, start)
        obs, _, terminated, _, _ = env.step(action)
        start[:] = False
        if terminated[0]:
            return t
    return steps


@pytest.mark.parametrize("poles", [1, 2])
def test_one_cart_on_floats_equals_the_numpy_dynamics_bit_for_bit(poles):
    rng = np.random.default_rng(poles)
    state = np.zeros((1, 2 + 2 * poles))
    state[0, :4] = rng.uniform(-0.05, 0.05, 4)
    floats = [float(v) for v in state[0]]
    for action in rng.uniform(-1.2, 1.2, 2000):
        state = advance(state, np.array([[action]]))
        floats = _advance_one(floats, float(action_to_force(np.array([action]))[0]), poles)
        assert floats == state[0].tolist()
    assert np.abs(state).max() > 0.1  # the carts went somewhere: not a trivial trajectory


def test_balance_steps_equals_the_vector_env_with_the_general_policy():
    spec = _spec()
    vector = torch.tensor(CHAMPION)
    fast = balance_steps(policy_fn_maker(spec, vector)(), steps=5000)
    assert fast == _reference_balance_steps(spec, vector, 5000) == CHAMPION_STEPS
    # a budget that ends before the failure: all of it balanced
    assert balance_steps(policy_fn_maker(spec, vector)(), steps=500) == 500


@pytest.mark.parametrize("cell", ["lstm", "gru", "peephole"])
def test_policy_fn_and_act_equal_the_training_path_with_resets_and_normaliser(cell):
    spec = _spec(cell)
    vector = init_vector(spec, torch.Generator().manual_seed(3))
    norm = ObsNormalizer(torch.tensor([0.1, -0.2, 0.3]), torch.tensor([0.5, 2.0, 1.5]))
    rng = np.random.default_rng(0)
    act = policy_fn_maker(spec, vector, norm)()
    policy = RecurrentPolicy(spec, vector=vector, obs_norm=norm)
    state = policy.init_state(5)
    for t in range(60):
        obs = rng.uniform(-1, 1, (5, 3)).astype(np.float32)
        start = rng.random(5) < 0.1 if t else np.ones(5, dtype=bool)
        acted, acted_state = policy.act(obs, state, start)
        expected, state = _general_act(policy, obs, state, start)
        assert np.array_equal(act(obs, start), expected)
        assert np.array_equal(acted, expected)
        for mine, reference in zip(acted_state, state, strict=True):
            assert all(torch.equal(a, b) for a, b in zip(mine, reference, strict=True))


def _recording(policy_fn, seen: list[np.ndarray]):
    """``policy_fn`` that also keeps a copy of every observation batch it is given."""

    def act(obs, episode_start):
        seen.append(np.array(obs, copy=True))
        return policy_fn(obs, episode_start)

    return act


def _reference_generalization(policy_fn, velocities: bool, seen: list[np.ndarray]) -> np.ndarray:
    """The general path: all 625 starts in one :class:`PoleBalancingVectorEnv` stepped every
    step for 1,000 steps (failed slots reset and run on). Returns ``[1000, 625]``: whether each
    start had failed before each step's action."""
    starts = generalization_starts(2)
    env = PoleBalancingVectorEnv(
        len(starts), poles=2, velocities=velocities, max_steps=1000, initial_state=starts
    )
    obs, _ = env.reset(seed=0)
    act = _recording(policy_fn, seen)
    episode_start = np.ones(len(starts), dtype=bool)
    done = np.zeros(len(starts), dtype=bool)
    ever_failed = np.zeros(len(starts), dtype=bool)
    failed_before = []
    for _ in range(1000):
        failed_before.append(ever_failed.copy())
        actions = np.asarray(act(obs, episode_start), dtype=np.float32)  # as the test casts
        obs, _, terminated, truncated, _ = env.step(actions)
        ever_failed |= terminated
        episode_start, done = done, terminated | truncated
    failed_before.append(ever_failed.copy())
    return np.array(failed_before)


@pytest.mark.parametrize("network", ["champion", "random1", "lqr"])
def test_generalization_test_equals_the_vector_env_start_by_start(network):
    """Stepping only the carts still balancing gives every start the same trajectory (the
    observations of each start, bit for bit, until it falls) and the same count."""
    velocities = network == "lqr"
    if velocities:
        make = lambda: lqr_policy(2)  # noqa: E731
    else:
        spec = _spec()
        vector = (
            torch.tensor(CHAMPION)
            if network == "champion"
            else init_vector(spec, torch.Generator().manual_seed(int(network[-1])))
        )
        make = policy_fn_maker(spec, vector)
    reference_seen: list[np.ndarray] = []
    failed_before = _reference_generalization(make(), velocities, reference_seen)
    want = int((~failed_before[-1]).sum())
    seen: list[np.ndarray] = []
    got = generalization_test(_recording(make(), seen), velocities=velocities)
    assert got == want
    assert len(seen) == (1000 if want else int(failed_before.all(axis=1).argmax()))
    for step, obs in enumerate(seen):
        live = ~failed_before[step]
        assert np.array_equal(obs[live], reference_seen[step][live])
    # the screen: the same verdict, and the exact count when it stops at the last failure
    assert generalization_test(make(), velocities=velocities, stop_below=want + 1) == want
    if network == "lqr":
        assert want > 500  # a controller that balances most starts: a non-trivial comparison
