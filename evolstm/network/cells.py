"""Recurrent cells as pure functions of explicit parameter tensors.

Every cell is written once, as ``layer_step(cell, params, x, state)``, and serves two uses:
neuroevolution steps a whole population in one tensor program (every tensor carries a
leading population axis ``P``), policy gradients step one network (``P`` absent). The caller
owns the state and resets it with an ``episode_start`` mask (:func:`reset_state`).

Letters: ``P`` population, ``B`` envs per member (batch), ``H`` hidden units, ``in`` input
size, ``C`` input channels, ``ht``/``wd`` feature-map height/width, ``k`` kernel size.

Equations (``sigma_g`` logistic, ``sigma_c = tanh``, ``sigma_h = tanh``, ``(.)`` Hadamard,
``*`` same-padded convolution, ``c_0 = h_0 = 0``):

``lstm`` (forget-gate LSTM)::

    i_t = sigma_g(W_i x_t + U_i h_{t-1} + b_i)      f_t = sigma_g(W_f x_t + U_f h_{t-1} + b_f)
    g_t = sigma_c(W_c x_t + U_c h_{t-1} + b_c)      o_t = sigma_g(W_o x_t + U_o h_{t-1} + b_o)
    c_t = f_t (.) c_{t-1} + i_t (.) g_t             h_t = o_t (.) sigma_h(c_t)

``peephole`` (gates read ``c_{t-1}`` through full matrices; the cell input has no recurrent
term; ``sigma_h`` may be the identity, ``peephole_output_activation="identity"``)::

    i_t = sigma_g(W_i x_t + U_i c_{t-1} + b_i)      f_t = sigma_g(W_f x_t + U_f c_{t-1} + b_f)
    o_t = sigma_g(W_o x_t + U_o c_{t-1} + b_o)
    c_t = f_t (.) c_{t-1} + i_t (.) sigma_c(W_c x_t + b_c)
    h_t = o_t (.) sigma_h(c_t)

``conv_peephole`` (peephole convolutional LSTM; ``V`` are Hadamard peepholes; the output
gate peeks at the *new* cell state; ``sigma_h`` as for ``peephole``)::

    i_t = sigma_g(W_i * x_t + U_i * h_{t-1} + V_i (.) c_{t-1} + b_i)
    f_t = sigma_g(W_f * x_t + U_f * h_{t-1} + V_f (.) c_{t-1} + b_f)
    c_t = f_t (.) c_{t-1} + i_t (.) sigma_c(W_c * x_t + U_c * h_{t-1} + b_c)
    o_t = sigma_g(W_o * x_t + U_o * h_{t-1} + V_o (.) c_t + b_o)
    h_t = o_t (.) sigma_h(c_t)

``gru`` (the equations of ``torch.nn.GRUCell``)::

    r_t = sigma_g(W_r x_t + b_Wr + U_r h_{t-1} + b_Ur)
    z_t = sigma_g(W_z x_t + b_Wz + U_z h_{t-1} + b_Uz)
    n_t = tanh(W_n x_t + b_Wn + r_t (.) (U_n h_{t-1} + b_Un))
    h_t = (1 - z_t) (.) n_t + z_t (.) h_{t-1}

Parameter layout of one layer (:func:`param_shapes`; a population prepends ``P`` to every
tensor). Dense weights are stored pre-transposed (row layout), so a step is ``x @ W``, one
``bmm`` over the population (3-4x faster than the column layout ``W @ x``). Gate blocks of
``H`` columns come in torch's order ``i, f, g, o`` (``r, z, n`` for the GRU), so loading a
``torch.nn.LSTMCell`` is a transpose (``W = cat([weight_ih.T, weight_hh.T])``,
``b = bias_ih + bias_hh``; for ``torch.nn.GRUCell``: ``W = weight_ih.T``, ``U = weight_hh.T``,
``b_W = bias_ih``, ``b_U = bias_hh``). Conv weights keep torch's ``[out, in, k, k]`` layout:

* ``lstm``: ``W [in+H, 4H]`` applied to ``cat([x, h])``; ``b [4H]``
* ``peephole``: ``W [in, 4H]``; ``U [H, 3H]`` on ``c_{t-1}`` for ``i, f, o``; ``b [4H]``
* ``conv_peephole``: ``W [4H, C, k, k]``; ``U [4H, H, k, k]``; ``V [3, H, ht, wd]`` for
  ``i, f, o``; ``b [4H]``
* ``gru``: ``W [in, 3H]``; ``U [H, 3H]``; ``b_W [3H]``; ``b_U [3H]``

Shapes of a step: flat cells take ``x [P, B, in]`` and state tensors ``[P, B, H]`` (or
``[B, in]`` / ``[B, H]`` without ``P``); ``conv_peephole`` takes ``x [P, B, C, ht, wd]`` and
state tensors ``[P, B, H, ht, wd]`` (or without ``P``) and runs the population as one
grouped convolution. The state is ``(h, c)`` for the LSTMs and ``(h,)`` for the GRU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral

import torch
import torch.nn.functional as F

CELL_NAMES: tuple[str, ...] = ("lstm", "peephole", "conv_peephole", "gru")
OUTPUT_ACTIVATIONS: tuple[str, ...] = ("tanh", "identity")

InputSize = int | tuple[int, int, int]
State = tuple[torch.Tensor, ...]


def _check_cell(cell: str) -> None:
    if cell not in CELL_NAMES:
        raise ValueError(f"unknown cell {cell!r}; valid cells: {', '.join(CELL_NAMES)}")


def _is_size(n: object) -> bool:
    return isinstance(n, Integral) and not isinstance(n, bool) and n >= 1


def _flat_input(cell: str, input_size: InputSize) -> int:
    if not _is_size(input_size):
        raise ValueError(f"cell {cell!r} needs a positive int input size, got {input_size!r}")
    return int(input_size)


def _map_input(input_size: InputSize) -> tuple[int, int, int]:
    if (
        not isinstance(input_size, tuple | list)
        or len(input_size) != 3
        or not all(_is_size(n) for n in input_size)
    ):
        raise ValueError(
            f"cell 'conv_peephole' needs input size (channels, height, width), got {input_size!r}"
        )
    return tuple(int(n) for n in input_size)


def param_shapes(
    cell: str, input_size: InputSize, hidden: int, *, kernel_size: int = 3
) -> dict[str, tuple[int, ...]]:
    """Shapes of one layer's parameters, in a fixed order, without a population axis."""
    _check_cell(cell)
    if not _is_size(hidden):
        raise ValueError(f"hidden must be a positive int, got {hidden!r}")
    H = hidden
    if cell == "conv_peephole":
        C, ht, wd = _map_input(input_size)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
        k = kernel_size
        return {"W": (4 * H, C, k, k), "U": (4 * H, H, k, k), "V": (3, H, ht, wd), "b": (4 * H,)}
    n_in = _flat_input(cell, input_size)
    if cell == "lstm":
        return {"W": (n_in + H, 4 * H), "b": (4 * H,)}
    if cell == "peephole":
        return {"W": (n_in, 4 * H), "U": (H, 3 * H), "b": (4 * H,)}
    return {"W": (n_in, 3 * H), "U": (H, 3 * H), "b_W": (3 * H,), "b_U": (3 * H,)}


def init_params(
    cell: str,
    input_size: InputSize,
    hidden: int,
    *,
    generator: torch.Generator,
    kernel_size: int = 3,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Fresh parameters of one layer.

    Weights (``W``, ``U``, ``V``) are uniform in ``[-1/sqrt(H), 1/sqrt(H)]`` as torch draws
    them, in the order of :func:`param_shapes`; biases are 0 except the forget-gate block of
    the LSTMs, which is 1.
    """
    bound = 1.0 / math.sqrt(hidden)
    params: dict[str, torch.Tensor] = {}
    for name, shape in param_shapes(cell, input_size, hidden, kernel_size=kernel_size).items():
        if name.startswith("b"):
            value = torch.zeros(shape, dtype=dtype)
            if cell != "gru":
                value[hidden : 2 * hidden] = 1.0
        else:
            value = torch.rand(shape, generator=generator, dtype=dtype) * (2 * bound) - bound
        params[name] = value
    return params


def zero_state(
    cell: str,
    batch_shape: tuple[int, ...],
    input_size: InputSize,
    hidden: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> State:
    """The initial state: ``(h, c)`` for the LSTMs, ``(h,)`` for the GRU.

    Each tensor is ``[*batch_shape, H]`` (``[*batch_shape, H, ht, wd]`` for conv_peephole).
    """
    _check_cell(cell)
    if cell == "conv_peephole":
        _, ht, wd = _map_input(input_size)
        shape = (*batch_shape, hidden, ht, wd)
    else:
        _flat_input(cell, input_size)
        shape = (*batch_shape, hidden)
    count = 1 if cell == "gru" else 2
    return tuple(torch.zeros(shape, dtype=dtype, device=device) for _ in range(count))


def output_size(cell: str, input_size: InputSize, hidden: int) -> int | tuple[int, int, int]:
    """What one layer emits: ``H`` (or ``(H, ht, wd)`` for conv_peephole)."""
    _check_cell(cell)
    if cell == "conv_peephole":
        _, ht, wd = _map_input(input_size)
        return (hidden, ht, wd)
    _flat_input(cell, input_size)
    return hidden


def unit_slices(cell: str, input_size: InputSize, hidden: int) -> list[dict[str, tuple]]:
    """For each memory cell ``j``, the index of every parameter entry that belongs to it.

    A unit owns its incoming weights and biases: the ``j``-th column of each gate block of
    dense weights, the ``j``-th output channel of each gate block of conv weights, and its
    own peephole map ``V[:, j]``. Every parameter entry belongs to exactly one unit (none is
    shared). Indices address a layer without ``P``; for a population, prepend
    ``slice(None)``. Each index holds at most one list, so ``tensor[idx]`` reads and
    ``tensor[idx] = value`` writes the block.
    """
    _check_cell(cell)
    param_shapes(cell, input_size, hidden)  # validates input_size
    H = hidden
    slices: list[dict[str, tuple]] = []
    for j in range(H):
        gates4 = [j, H + j, 2 * H + j, 3 * H + j]
        gates3 = gates4[:3]
        if cell == "lstm":
            unit = {"W": (slice(None), gates4), "b": (gates4,)}
        elif cell == "peephole":
            unit = {"W": (slice(None), gates4), "U": (slice(None), gates3), "b": (gates4,)}
        elif cell == "conv_peephole":
            unit = {"W": (gates4,), "U": (gates4,), "V": (slice(None), [j]), "b": (gates4,)}
        else:
            unit = {
                "W": (slice(None), gates3),
                "U": (slice(None), gates3),
                "b_W": (gates3,),
                "b_U": (gates3,),
            }
        slices.append(unit)
    return slices


def _affine(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``x @ W + b``: ``x [P, B, n], W [P, n, m], b [P, m]`` or without ``P``."""
    if W.dim() == 3:
        return torch.baddbmm(b.unsqueeze(-2), x, W)
    if x.dim() == 2:
        return torch.addmm(b, x, W)
    return torch.matmul(x, W) + b


def _output_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name == "tanh":
        return torch.tanh
    if name == "identity":
        return lambda c: c
    raise ValueError(
        f"unknown peephole_output_activation {name!r}; valid: {', '.join(OUTPUT_ACTIVATIONS)}"
    )


def _lstm(params: dict[str, torch.Tensor], x: torch.Tensor, state: State) -> State:
    h, c = state
    z = _affine(torch.cat((x, h), dim=-1), params["W"], params["b"])
    # One sigmoid over all four blocks (the g block's is unused) instead of three: fewer op
    # launches on small [P, B, 4H] tensors; elementwise, so the numbers are the same.
    H = c.shape[-1]
    gates = torch.sigmoid(z)
    c = torch.addcmul(gates[..., :H] * torch.tanh(z[..., 2 * H : 3 * H]), gates[..., H : 2 * H], c)
    h = gates[..., 3 * H :] * torch.tanh(c)
    return h, c


def _peephole(
    params: dict[str, torch.Tensor], x: torch.Tensor, state: State, sigma_h: Callable
) -> State:
    _, c = state  # the peephole cell does not read h_{t-1}
    z = _affine(x, params["W"], params["b"])
    zc = torch.matmul(c, params["U"])
    i, f, g, o = z.chunk(4, dim=-1)
    ci, cf, co = zc.chunk(3, dim=-1)
    o = torch.sigmoid(o + co)
    c = torch.sigmoid(f + cf) * c + torch.sigmoid(i + ci) * torch.tanh(g)
    return o * sigma_h(c), c


def _gru(params: dict[str, torch.Tensor], x: torch.Tensor, state: State) -> State:
    (h,) = state
    xr, xz, xn = _affine(x, params["W"], params["b_W"]).chunk(3, dim=-1)
    hr, hz, hn = _affine(h, params["U"], params["b_U"]).chunk(3, dim=-1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (n + z * (h - n),)


def _conv_gates(params: dict[str, torch.Tensor], x: torch.Tensor, h: torch.Tensor):
    """``W * x + U * h + b`` as one convolution over ``cat([x, h])``: ``[.., 4H, ht, wd]``."""
    W, U, b = params["W"], params["U"], params["b"]
    padding = W.shape[-1] // 2
    if W.dim() == 4:
        return F.conv2d(torch.cat((x, h), dim=1), torch.cat((W, U), dim=1), b, padding=padding)
    # Population: fold P into the channels and run one grouped convolution (groups=P).
    P, B, _, ht, wd = x.shape
    xh = torch.cat((x, h), dim=2).transpose(0, 1).reshape(B, -1, ht, wd)
    weight = torch.cat((W, U), dim=2).flatten(0, 1)
    out = F.conv2d(xh, weight, b.flatten(), padding=padding, groups=P)
    return out.view(B, P, -1, ht, wd).transpose(0, 1)


def _conv_peephole(
    params: dict[str, torch.Tensor], x: torch.Tensor, state: State, sigma_h: Callable
) -> State:
    h, c = state
    i, f, g, o = _conv_gates(params, x, h).chunk(4, dim=-3)
    # V [.., 3, H, ht, wd] -> each peephole [.., 1, H, ht, wd], broadcasting over B.
    v_i, v_f, v_o = (v.unsqueeze(-4) for v in params["V"].unbind(-4))
    c = torch.sigmoid(f + v_f * c) * c + torch.sigmoid(i + v_i * c) * torch.tanh(g)
    o = torch.sigmoid(o + v_o * c)
    return o * sigma_h(c), c


def layer_step(
    cell: str,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    state: State,
    *,
    peephole_output_activation: str = "tanh",
) -> tuple[torch.Tensor, State]:
    """One time step of one layer: returns ``(h_t, new_state)``.

    :param params: the layer's tensors (:func:`param_shapes`), each with or without a leading
        ``P``; ``x`` and ``state`` then carry ``[P, B, ...]`` or ``[B, ...]``.
    :param peephole_output_activation: ``sigma_h`` of the peephole cells, ``"tanh"`` or
        ``"identity"``; the other cells only accept ``"tanh"``.
    """
    _check_cell(cell)
    if cell in ("lstm", "gru") and peephole_output_activation != "tanh":
        raise ValueError(
            f"peephole_output_activation={peephole_output_activation!r} applies only to the "
            f"peephole cells, not to {cell!r}"
        )
    if cell == "lstm":
        new_state = _lstm(params, x, state)
    elif cell == "gru":
        new_state = _gru(params, x, state)
    elif cell == "peephole":
        new_state = _peephole(params, x, state, _output_activation(peephole_output_activation))
    else:
        sigma_h = _output_activation(peephole_output_activation)
        new_state = _conv_peephole(params, x, state, sigma_h)
    return new_state[0], new_state


def stack_step(
    cell: str,
    layers: list[dict[str, torch.Tensor]],
    x: torch.Tensor,
    states: list[State],
    **kw,
) -> tuple[torch.Tensor, list[State]]:
    """One time step of stacked layers (layer ``l`` reads layer ``l-1``'s ``h``).

    Returns the top layer's ``h_t`` and the new state of every layer; ``kw`` goes to
    :func:`layer_step`.
    """
    if len(layers) != len(states):
        raise ValueError(f"{len(layers)} layers but {len(states)} states")
    new_states = []
    for params, state in zip(layers, states, strict=True):
        x, state = layer_step(cell, params, x, state, **kw)
        new_states.append(state)
    return x, new_states


def reset_state(states: list[State], episode_start: torch.Tensor) -> list[State]:
    """Zero the state wherever ``episode_start`` (bool ``[P, B]`` or ``[B]``) is True.

    Every state tensor must begin with ``episode_start``'s shape; the mask broadcasts over
    the trailing dims. Differentiable (``masked_fill``), so it can sit inside a BPTT unroll.
    """
    mask = episode_start.to(torch.bool)
    reset = []
    for state in states:
        tensors = []
        for s in state:
            if s.shape[: mask.dim()] != mask.shape:
                raise ValueError(
                    f"episode_start {tuple(mask.shape)} does not lead state {tuple(s.shape)}"
                )
            tensors.append(s.masked_fill(mask.view(*mask.shape, *(1,) * (s.dim() - mask.dim())), 0))
        reset.append(tuple(tensors))
    return reset
