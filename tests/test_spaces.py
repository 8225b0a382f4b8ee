"""Observation encoders against gymnasium.spaces.flatten; action heads against hand computations."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.vector.utils import concatenate, create_empty_array, iterate

from evolstm.network.spaces import ActionHead, ObservationEncoder

N = 6


def vector_batch(space: gym.Space, n: int = N, seed: int = 0):
    """n samples, and the batch a gymnasium vector env would return for them."""
    space.seed(seed)
    items = [space.sample() for _ in range(n)]
    return items, concatenate(space, items, create_empty_array(space, n))


OBSERVATION_SPACES = {
    "box": spaces.Box(-2.0, 3.0, shape=(2, 3), dtype=np.float64),
    "discrete_start": spaces.Discrete(5, start=-2),
    "multidiscrete": spaces.MultiDiscrete([[3, 4], [2, 5]], start=[[1, 0], [-1, 2]]),
    "multibinary": spaces.MultiBinary([2, 3]),
    "tuple": spaces.Tuple(
        (spaces.Discrete(3, start=1), spaces.Box(0, 1, shape=(2,)), spaces.MultiBinary(2))
    ),
    "dict_nested": spaces.Dict(
        {
            "position": spaces.Box(-1, 1, shape=(3,)),
            "inventory": spaces.MultiDiscrete([2, 3]),
            "agent": spaces.Tuple(
                (
                    spaces.Discrete(4),
                    spaces.Dict({"z": spaces.Discrete(2), "a": spaces.MultiBinary(3)}),
                )
            ),
        }
    ),
    "image_flat": spaces.Box(0, 255, shape=(4, 5, 3), dtype=np.uint8),
    "oneof": spaces.OneOf((spaces.Discrete(3), spaces.Box(-1, 1, shape=(4,)))),
}


@pytest.mark.parametrize("name", list(OBSERVATION_SPACES))
def test_encoder_rows_equal_gymnasium_flatten(name):
    space = OBSERVATION_SPACES[name]
    items, batch = vector_batch(space)
    encoder = ObservationEncoder(space)
    encoded = encoder(batch)
    assert encoded.dtype == torch.float32 and encoded.shape == (N, spaces.flatdim(space))
    assert encoder.size == spaces.flatdim(space) and encoder.image_shape is None
    for row, item in enumerate(items):
        expected = spaces.flatten(space, item).astype(np.float32)
        np.testing.assert_array_equal(encoded[row].numpy(), expected)


def test_encoder_on_a_gymnasium_vector_env():
    """Blackjack's Tuple of Discretes, batched by gymnasium's own SyncVectorEnv."""
    envs = gym.make_vec("Blackjack-v1", num_envs=4, vectorization_mode="sync")
    try:
        obs, _ = envs.reset(seed=3)
        encoder = ObservationEncoder(envs.single_observation_space)
        encoded = encoder(obs, device="cpu")
        rows = list(iterate(envs.observation_space, obs))
        assert len(rows) == 4
        for row, item in enumerate(rows):
            expected = spaces.flatten(envs.single_observation_space, item)
            np.testing.assert_array_equal(encoded[row].numpy(), expected.astype(np.float32))
    finally:
        envs.close()


def test_encoder_rejects_out_of_range_discrete():
    encoder = ObservationEncoder(spaces.Discrete(3, start=1))
    with pytest.raises(ValueError, match="outside Discrete"):
        encoder(np.array([0, 1]))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_image_kept_as_channels_first(dtype):
    space = spaces.Box(0, 255, shape=(4, 5, 3), dtype=dtype)
    items, batch = vector_batch(space)
    encoder = ObservationEncoder(space, keep_image=True)
    assert encoder.image_shape == (3, 4, 5) and encoder.size == 60
    images = encoder(batch)
    assert images.shape == (N, 3, 4, 5) and images.dtype == torch.float32
    for row, item in enumerate(items):
        # Same numbers as the flat path, in channel-first order.
        flat = images[row].permute(1, 2, 0).reshape(-1).numpy()
        np.testing.assert_array_equal(flat, spaces.flatten(space, item).astype(np.float32))
        assert images[row, 2, 1, 4] == float(item[1, 4, 2])


def test_image_shape_only_for_image_boxes():
    assert ObservationEncoder(spaces.Box(0, 1, shape=(4, 5)), keep_image=True).image_shape is None
    int_box = spaces.Box(0, 9, shape=(4, 5, 3), dtype=np.int64)
    assert ObservationEncoder(int_box, keep_image=True).image_shape is None
    assert ObservationEncoder(OBSERVATION_SPACES["image_flat"]).image_shape is None


@pytest.mark.parametrize(
    ("space", "named"),
    [
        (spaces.Text(5), "Text"),
        (spaces.Graph(spaces.Box(0, 1, shape=(2,)), None), "Graph"),
        (spaces.Sequence(spaces.Discrete(2)), "Sequence"),
        (spaces.Dict({"ok": spaces.Discrete(2), "bad": spaces.Text(3)}), r"Text.* inside Dict"),
    ],
)
def test_encoder_rejects_unsupported_spaces(space, named):
    with pytest.raises(ValueError, match=rf"unsupported observation space {named}.*supported: Box"):
        ObservationEncoder(space)


# --- action heads ---------------------------------------------------------------------------

ACTION_SPACES = {
    "discrete_start": spaces.Discrete(4, start=3),
    "multidiscrete": spaces.MultiDiscrete([[3, 4], [2, 5]], start=[[1, 0], [-1, 2]]),
    "box_bounded": spaces.Box(
        low=np.array([[-1.0, 0.0], [2.0, -5.0]], dtype=np.float32),
        high=np.array([[1.0, 0.5], [4.0, 5.0]], dtype=np.float32),
        dtype=np.float32,
    ),
    "box_unbounded": spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32),
    "box_mixed": spaces.Box(
        low=np.array([-1.0, 0.0, -np.inf]), high=np.array([1.0, np.inf, np.inf]), dtype=np.float64
    ),
}


def head_outputs(head, seed=0, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(N, head.num_outputs, generator=gen) * scale


@pytest.mark.parametrize("name", list(ACTION_SPACES))
def test_actions_lie_in_the_space(name):
    space = ACTION_SPACES[name]
    head = ActionHead(space)
    out = head_outputs(head)
    log_std = torch.zeros(head.num_outputs) if head.needs_log_std else None
    torch.manual_seed(0)
    sampled = head.action_from_sample(head.distribution(out, log_std).sample())
    for actions in (head.deterministic(out), sampled):
        env_actions = head.to_env(actions)
        assert env_actions.shape == (N, *space.shape) and env_actions.dtype == space.dtype
        for row in env_actions:
            assert space.contains(row), row


def test_discrete_deterministic_is_argmax_plus_start():
    head = ActionHead(ACTION_SPACES["discrete_start"])
    out = head_outputs(head)
    np.testing.assert_array_equal(head.to_env(head.deterministic(out)), out.argmax(-1).numpy() + 3)


def test_multidiscrete_deterministic_is_argmax_per_component():
    space = ACTION_SPACES["multidiscrete"]
    head = ActionHead(space)
    assert head.num_outputs == 14
    out = head_outputs(head)
    actions = head.to_env(head.deterministic(out))
    column = 0
    for k, (n, start) in enumerate(zip(space.nvec.ravel(), space.start.ravel(), strict=True)):
        expected = out[:, column : column + n].argmax(-1).numpy() + start
        np.testing.assert_array_equal(actions.reshape(N, -1)[:, k], expected)
        column += n


def test_box_deterministic_squashes_bounded_dims_only():
    space = ACTION_SPACES["box_mixed"]
    head = ActionHead(space)
    out = head_outputs(head).double()
    actions = head.deterministic(out)
    expected = out.clone()
    expected[:, 0] = -1.0 + (torch.tanh(out[:, 0]) + 1) / 2 * 2.0
    torch.testing.assert_close(actions, expected)
    # one-sided bound: raw, then clipped by to_env
    assert (head.to_env(actions)[:, 1] >= 0).all()
    out.requires_grad_()
    head.deterministic(out).sum().backward()
    assert torch.isfinite(out.grad).all()


def test_discrete_log_prob_and_entropy_by_hand():
    head = ActionHead(ACTION_SPACES["discrete_start"])
    out = head_outputs(head)
    actions = torch.tensor([3, 4, 5, 6, 3, 6])
    dist = head.distribution(out)
    log_p = torch.log_softmax(out, -1)
    expected = torch.stack([log_p[r, a - 3] for r, a in enumerate(actions.tolist())])
    torch.testing.assert_close(dist.log_prob(actions), expected)
    torch.testing.assert_close(dist.entropy(), -(log_p.exp() * log_p).sum(-1))
    assert set(dist.sample((200,)).unique().tolist()) <= {3, 4, 5, 6}


def test_multidiscrete_log_prob_and_entropy_by_hand():
    space = ACTION_SPACES["multidiscrete"]
    head = ActionHead(space)
    out = head_outputs(head)
    dist = head.distribution(out)
    torch.manual_seed(1)
    actions = dist.sample()
    assert actions.shape == (N, 4)
    expected_lp = torch.zeros(N)
    expected_h = torch.zeros(N)
    column = 0
    for k, (n, start) in enumerate(zip(space.nvec.ravel(), space.start.ravel(), strict=True)):
        log_p = torch.log_softmax(out[:, column : column + n], -1)
        for r in range(N):
            expected_lp[r] += log_p[r, actions[r, k] - start]
        expected_h -= (log_p.exp() * log_p).sum(-1)
        column += n
    torch.testing.assert_close(dist.log_prob(actions), expected_lp)
    torch.testing.assert_close(dist.entropy(), expected_h)


def test_box_log_prob_is_diagonal_gaussian_in_pre_squash_space():
    head = ActionHead(ACTION_SPACES["box_bounded"])
    out = head_outputs(head).double()
    log_std = torch.linspace(-1.0, 0.5, head.num_outputs, dtype=torch.float64)
    dist = head.distribution(out, log_std)
    u = dist.sample()
    expected = torch.zeros(N, dtype=torch.float64)
    for r in range(N):
        for d in range(head.num_outputs):
            sigma = math.exp(log_std[d])
            z = (u[r, d] - out[r, d]) / sigma
            expected[r] += -0.5 * z**2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(dist.log_prob(u), expected)
    entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum()
    torch.testing.assert_close(dist.entropy(), entropy.expand(N))
    # the deterministic action is the squashed mean
    torch.testing.assert_close(head.action_from_sample(out), head.deterministic(out))


def test_action_head_errors():
    for space, named in [
        (spaces.MultiBinary(3), "MultiBinary"),
        (spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3))), "Tuple"),
    ]:
        with pytest.raises(
            ValueError, match=rf"unsupported action space {named}.*Discrete, MultiDiscrete, Box"
        ):
            ActionHead(space)
    box = ActionHead(ACTION_SPACES["box_unbounded"])
    with pytest.raises(ValueError, match="needs a log_std"):
        box.distribution(torch.zeros(2, 3))
    discrete = ActionHead(ACTION_SPACES["discrete_start"])
    with pytest.raises(ValueError, match="meaningless"):
        discrete.distribution(torch.zeros(2, 4), torch.zeros(4))
