"""The throughput benchmark's EvoTorch side runs the very policies evolstm runs.

``bench/_evotorch_mapping.py`` maps an evolstm LSTM vector onto the network EvoTorch's
``GymNE`` / ``VecGymNE`` build from ``"LSTM(obs_length, 16) >> Linear(16, act_length)"``.
EvoTorch is the independent reference: its own LSTM layer, its own flattening order, its own
batched ``Policy`` (vmap) and its own rollout loops, all checked against evolstm's.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from evotorch import SolutionBatch
from evotorch.neuroevolution import GymNE, VecGymNE
from evotorch.neuroevolution.net.vecrl import Policy
from gymnasium.utils import seeding

import envs  # noqa: F401  (registers evolstm/CartPoleNoVel-v0 for gymnasium.make)
from bench._balancing_lstm import balancing_vector
from bench._evotorch_mapping import evotorch_network, fold_obs_norm, to_evotorch_solutions
from evolstm.network.layout import PolicySpec, init_vector, unflatten
from evolstm.network.obs_norm import ObsNormalizer
from evolstm.network.policy import RecurrentCore, RecurrentPolicy
from evolstm.rollouts.env_factory import resolve_env
from evolstm.rollouts.evaluation import PopulationEvaluator

ENV_ID = "evolstm/CartPoleNoVel-v0"
HIDDEN = 16


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Ops on [P, B, 4H] tensors gain nothing from a second thread, and on a busy 2-core
    machine a parallel region waits a scheduler time slice (ms) for it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def spec() -> PolicySpec:
    env = gym.make(ENV_ID)
    return PolicySpec(env.observation_space, env.action_space, hidden=HIDDEN)


@pytest.fixture(scope="module")
def vec_problem(spec) -> VecGymNE:
    return VecGymNE(ENV_ID, evotorch_network(spec), num_actors=0)


@pytest.fixture(scope="module")
def gym_problem(spec) -> GymNE:
    return GymNE(ENV_ID, evotorch_network(spec), num_actors=0)


def _members(spec: PolicySpec, count: int, seed: int) -> torch.Tensor:
    """``[count, D]`` distinct vectors: fresh initialisations plus noise, so that every block
    (biases and readout included) is non-zero and the hidden state matters."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.stack([init_vector(spec, gen) for _ in range(count)])
    return base + 0.4 * torch.randn(base.shape, generator=gen)


def _net_template(problem) -> torch.nn.Module:
    return problem.make_net(torch.zeros(problem.solution_length))


def test_solution_length_is_evolstm_plus_the_zero_hidden_biases(spec, vec_problem, gym_problem):
    d = _members(spec, 1, 0).shape[1]
    assert vec_problem.solution_length == gym_problem.solution_length == d + 4 * HIDDEN
    solution = to_evotorch_solutions(_net_template(vec_problem), spec, _members(spec, 1, 0)[0])
    net = vec_problem.make_net(solution)
    for gate in "ifgo":
        assert torch.count_nonzero(getattr(net[0], f"b_h{gate}")) == 0


@pytest.mark.parametrize("problem_name", ["vec", "gym"])
def test_evotorch_network_outputs_equal_recurrent_policy(
    spec, vec_problem, gym_problem, problem_name
):
    problem = vec_problem if problem_name == "vec" else gym_problem
    vectors = _members(spec, 3, seed=1)
    solutions = to_evotorch_solutions(_net_template(problem), spec, vectors)
    obs = torch.randn(25, 2, generator=torch.Generator().manual_seed(2))
    for vector, solution in zip(vectors, solutions, strict=True):
        ours = RecurrentPolicy(spec, vector)
        net = problem.make_net(solution)
        state, hidden = ours.init_state(1), None
        for x in obs:
            with torch.no_grad():
                out, state = ours.step(x[None].numpy(), state)
                theirs, hidden = net(x, hidden)
            torch.testing.assert_close(theirs, out[0], atol=1e-5, rtol=0)


def test_evotorch_batched_policy_equals_population_forward(spec, vec_problem):
    """VecGymNE steps its population through ``Policy`` (vmap over flat solutions)."""
    vectors = _members(spec, 5, seed=3)
    policy = Policy(_net_template(vec_problem))
    policy.set_parameters(to_evotorch_solutions(_net_template(vec_problem), spec, vectors))
    core = RecurrentCore(spec)
    params = unflatten(core.layout, vectors)
    state = core.init_state((5, 1))
    gen = torch.Generator().manual_seed(4)
    for _ in range(20):
        x = torch.randn(5, 2, generator=gen)
        with torch.no_grad():
            ours, state = core.forward(params, x[:, None], state)
            theirs = policy(x)
        torch.testing.assert_close(theirs, ours[:, 0], atol=1e-5, rtol=0)


def _evolstm_episode(policy: RecurrentPolicy, seed: int) -> tuple[float, int]:
    """One greedy episode on the single env, from the second start state drawn after
    ``reset(seed=seed)`` (GymNE's ``run`` resets without a seed)."""
    env = gym.make(ENV_ID)
    env.reset(seed=seed)
    obs, _ = env.reset()
    state, total, steps, done = policy.init_state(1), 0.0, 0, False
    while not done:
        action, state = policy.act(obs[None], state)
        obs, reward, terminated, truncated, _ = env.step(int(action[0]))
        total, steps, done = total + reward, steps + 1, terminated or truncated
    return total, steps


def test_gymne_plays_the_same_episodes_as_evolstm(spec, gym_problem):
    vectors = _members(spec, 4, seed=5)
    solutions = to_evotorch_solutions(_net_template(gym_problem), spec, vectors)
    lengths = []
    for k, (vector, solution) in enumerate(zip(vectors, solutions, strict=True)):
        gym_problem.get_env().reset(seed=100 + k)
        theirs = gym_problem.run(solution)
        ours, steps = _evolstm_episode(RecurrentPolicy(spec, vector), 100 + k)
        assert theirs["cumulative_reward"] == ours
        assert theirs["interaction_count"] == steps
        lengths.append(steps)
    assert len(set(lengths)) > 1, lengths  # the members really differ


def test_vecgymne_on_the_native_env_returns_what_the_evolstm_evaluator_returns(spec):
    """Both sides on the native vector env, each slot's generator seeded alike: the same
    fitness per member (VecGymNE resets without a seed, so the generators are preset)."""
    seed = 7

    def native_env(num_envs: int):
        env = gym.make_vec(ENV_ID, num_envs, vectorization_mode="vector_entry_point")
        env.unwrapped.slot_rngs = [seeding.np_random(seed)[0] for _ in range(num_envs)]
        return env

    problem = VecGymNE(native_env, evotorch_network(spec), num_actors=0)
    vectors = _members(spec, 6, seed=8)
    batch = SolutionBatch(problem, popsize=6, empty=True)
    batch.set_values(to_evotorch_solutions(_net_template(problem), spec, vectors))
    problem.evaluate(batch)
    result = PopulationEvaluator(resolve_env(ENV_ID), spec).evaluate(vectors, [seed])
    np.testing.assert_array_equal(batch.evals[:, 0].numpy(), result.returns[:, 0])
    assert problem.interaction_count == result.env_steps
    assert len(set(result.lengths[:, 0].tolist())) > 1


def test_folding_the_observation_normaliser_keeps_the_outputs(spec):
    norm = ObsNormalizer(torch.tensor([0.3, -0.02]), torch.tensor([0.7, 0.05]), clip=5.0)
    vector = _members(spec, 1, seed=9)[0]
    normalised = RecurrentPolicy(spec, vector, obs_norm=norm)
    folded = RecurrentPolicy(spec, fold_obs_norm(spec, vector, norm))
    # within the clip: |x - mean| < 5 std
    obs = norm.mean + norm.std * (
        4 * torch.rand(30, 2, generator=torch.Generator().manual_seed(0)) - 2
    )
    s1, s2 = normalised.init_state(1), folded.init_state(1)
    for x in obs:
        with torch.no_grad():
            out1, s1 = normalised.step(x[None].numpy(), s1)
            out2, s2 = folded.step(x[None].numpy(), s2)
        torch.testing.assert_close(out2, out1, atol=1e-4, rtol=1e-5)


def test_hand_set_centre_balances_every_noisy_member(spec):
    """The benchmark's fallback centre: members within N(0, 0.01^2) run their full 500 steps."""
    centre = balancing_vector(spec)
    noise = 0.01 * torch.randn(32, centre.numel(), generator=torch.Generator().manual_seed(10))
    result = PopulationEvaluator(resolve_env(ENV_ID), spec).evaluate(centre + noise, [1, 2])
    assert result.lengths.mean() > 495, result.lengths.mean()
    untrained = PopulationEvaluator(resolve_env(ENV_ID), spec).evaluate(_members(spec, 8, 0), [1])
    assert untrained.lengths.max() < 200  # the test env is not trivially long
