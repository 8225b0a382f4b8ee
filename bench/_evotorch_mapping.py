"""evolstm LSTM policies as EvoTorch solutions, parameter for parameter.

EvoTorch's ``GymNE`` / ``VecGymNE`` build a network from a string such as
``"LSTM(obs_length, 16) >> Linear(16, act_length)"`` (a ``MultiLayered`` of EvoTorch's own
``LSTM`` and ``torch.nn.Linear``) and read a solution ``[L]`` as that network's parameters
flattened in ``named_parameters()`` order (``ModuleExpectingFlatParameters`` and
``to_torch_module``'s ``vector_to_parameters`` agree on it). A Discrete action is the argmax
of the network's outputs in both problems, as in evolstm.

evolstm's layer ``W [in+H, 4H]`` acts on ``cat([x, h])`` with gate columns ``i, f, g, o``
and one bias ``b [4H]``; EvoTorch's ``LSTM`` has per-gate ``W_i* [H, in]``,
``W_h* [H, H]`` and two biases ``b_i*``, ``b_h*`` that it adds. So ``W_i* = W[:in, gate].T``,
``W_h* = W[in:, gate].T``, ``b_i* = b[gate]``, ``b_h* = 0``, and the readout is
``Linear.weight = readout.W.T``, ``Linear.bias = readout.b``. ``L = D + 4H`` per layer
(the zero hidden biases).

EvoTorch's side runs on raw observations (its observation normalisation off), so a policy
trained with evolstm's observation normaliser is first folded into an equivalent raw-input
vector (:func:`fold_obs_norm`).
"""

from __future__ import annotations

import torch
from torch import nn

from evolstm.network.layout import ParameterLayout, PolicySpec, build_layout, unflatten
from evolstm.network.obs_norm import ObsNormalizer

GATES = "ifgo"  # evolstm's column blocks and EvoTorch's parameter suffixes, in this order


def evotorch_network(spec: PolicySpec) -> str:
    """The EvoTorch network string of ``spec`` (``lstm`` cells, flat observations).

    ``obs_length`` and ``act_length`` are the constants ``GymNE`` / ``VecGymNE`` define.
    """
    _check_supported(spec)
    H = spec.hidden
    layers = [f"LSTM(obs_length, {H})"]
    layers += [f"LSTM({H}, {H})" for _ in range(spec.layers - 1)]
    return " >> ".join([*layers, f"Linear({H}, act_length)"])


def evotorch_named_parameters(
    layout: ParameterLayout, vectors: torch.Tensor
) -> dict[str, torch.Tensor]:
    """EvoTorch's parameters of each member, named as in its ``MultiLayered`` network.

    :param layout: the evolstm layout (``lstm`` cells).
    :param vectors: evolstm flat parameters ``[P, D]`` (or ``[D]``).
    :return: name -> ``[P, *shape]`` (or ``[*shape]``), e.g. ``_submodules.0.W_ii [P, H, in]``.
    """
    blocks = unflatten(layout, vectors)
    H = layout.hidden
    named: dict[str, torch.Tensor] = {}
    for layer, n_in in enumerate(layout.layer_inputs):
        W, b = blocks[f"layer{layer}.W"], blocks[f"layer{layer}.b"]
        prefix = f"_submodules.{layer}."
        for k, gate in enumerate(GATES):
            cols = slice(k * H, (k + 1) * H)
            named[prefix + f"W_i{gate}"] = W[..., :n_in, cols].transpose(-1, -2)
            named[prefix + f"W_h{gate}"] = W[..., n_in:, cols].transpose(-1, -2)
            named[prefix + f"b_i{gate}"] = b[..., cols]
            named[prefix + f"b_h{gate}"] = torch.zeros_like(b[..., cols])
    readout = f"_submodules.{len(layout.layer_inputs)}."
    named[readout + "weight"] = blocks["readout.W"].transpose(-1, -2)
    named[readout + "bias"] = blocks["readout.b"]
    return named


def to_evotorch_solutions(net: nn.Module, spec: PolicySpec, vectors: torch.Tensor) -> torch.Tensor:
    """evolstm vectors ``[P, D]`` (or ``[D]``) -> EvoTorch solutions ``[P, L]`` (or ``[L]``).

    :param net: the problem's network (e.g. ``problem.make_net(torch.zeros(L))``): its
        ``named_parameters()`` order is the solution order.
    :param spec: the evolstm policy the vectors belong to.
    """
    _check_supported(spec)
    vectors = torch.as_tensor(vectors, dtype=torch.float32)
    single = vectors.dim() == 1
    batch = vectors.unsqueeze(0) if single else vectors
    named = evotorch_named_parameters(build_layout(spec), batch)
    expected = dict(net.named_parameters())
    if set(expected) != set(named):
        raise ValueError(
            f"EvoTorch network parameters {sorted(expected)} do not match the mapping's "
            f"{sorted(named)}; build the network from evotorch_network(spec)"
        )
    parts = []
    for name, param in expected.items():
        block = named[name]
        if tuple(block.shape[1:]) != tuple(param.shape):
            raise ValueError(f"{name}: EvoTorch shape {tuple(param.shape)}, mapped {block.shape}")
        parts.append(block.reshape(batch.shape[0], -1))
    solutions = torch.cat(parts, dim=1)
    return solutions[0] if single else solutions


def fold_obs_norm(spec: PolicySpec, vector: torch.Tensor, obs_norm: ObsNormalizer) -> torch.Tensor:
    """A raw-observation vector ``[D]`` equal to ``vector`` behind ``obs_norm``.

    ``((x - mean) / std) @ W_x = x @ (W_x / std) - (mean / std) @ W_x``: the first layer's input
    rows are divided by ``std`` and the shift moves into its bias. Exact while every
    observation stays within the normaliser's clip (``±clip`` standard deviations).
    """
    _check_supported(spec)
    layout = build_layout(spec)
    folded = torch.as_tensor(vector, dtype=torch.float32).clone()
    blocks = unflatten(layout, folded)  # views into ``folded``
    n_in = layout.layer_inputs[0]
    W, b = blocks["layer0.W"], blocks["layer0.b"]
    mean, std = obs_norm.mean.to(torch.float32), obs_norm.std.to(torch.float32)
    b -= (mean / std) @ W[:n_in]
    W[:n_in] /= std[:, None]
    return folded


def _check_supported(spec: PolicySpec) -> None:
    if spec.cell != "lstm" or not spec.memory:
        raise ValueError(
            f"only the plain 'lstm' cell with memory has an EvoTorch counterpart, got "
            f"cell={spec.cell!r}, memory={spec.memory}"
        )
