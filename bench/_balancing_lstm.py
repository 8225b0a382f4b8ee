"""A hand-set LSTM that balances cart-pole without velocities: a benchmark centre that needs
no training.

The benchmark needs a population whose episodes run their full 500 steps; a trained policy
does that, and so does this construction, instantly and independently of optimiser tuning.
Four memory cells with their gates held open or shut by large biases
(``i ~ 1``, ``f ~ 0``, ``o ~ 1``) copy their input: ``h_t = tanh(tanh(g_t))``.

* cell 0 reads ``s_x * x_t``, cell 1 reads cell 0's ``h_{t-1}``: ``x_t`` and ``x_{t-1}``;
* cells 2 and 3 do the same for the pole angle (scale ``s_theta``).

The readout then forms the linear bang-bang controller
``push right iff k_x x + k_v v + k_theta theta + k_omega omega > 0`` with the velocities as
finite differences, ``v ~ (x_t - x_{t-1}) / tau``. The gains were found by a small random
search on the native env and keep ~500-step episodes under ``N(0, 0.01^2)`` parameter noise.
Cells 4..H-1 stay zero. Requires ``hidden >= 4``, one ``lstm`` layer, observation ``(x, theta)``
and ``Discrete(2)`` (action 1 pushes right).
"""

from __future__ import annotations

import torch

from envs.cartpole import TAU
from evolstm.network.layout import PolicySpec, build_layout, unflatten

GAINS = (1.0, 0.5, 25.0, 2.0)  # k_x, k_v, k_theta, k_omega
INPUT_SCALES = (1.0, 3.0)  # s_x, s_theta: small enough for tanh to stay near-linear
GATE_BIAS = 10.0  # sigmoid(10) = 0.99995


def balancing_vector(spec: PolicySpec) -> torch.Tensor:
    """The flat parameters ``[D]`` of the hand-set balancing LSTM for ``spec``."""
    if spec.cell != "lstm" or spec.layers != 1 or spec.hidden < 4 or not spec.memory:
        raise ValueError("the hand-set controller needs one 'lstm' layer with hidden >= 4")
    layout = build_layout(spec)
    if layout.layer_inputs[0] != 2 or layout.readout_in != spec.hidden:
        raise ValueError("the hand-set controller needs observations (x, theta)")
    vector = torch.zeros(layout.size)
    blocks = unflatten(layout, vector)  # views: writing them fills ``vector``
    W, b, readout = blocks["layer0.W"], blocks["layer0.b"], blocks["readout.W"]
    H, n_in = spec.hidden, 2
    i_gate, f_gate, o_gate = (slice(k * H, k * H + 4) for k in (0, 1, 3))
    g_col = 2 * H  # first column of the cell-input block g
    b[i_gate], b[f_gate], b[o_gate] = GATE_BIAS, -GATE_BIAS, GATE_BIAS
    for obs_index, (now, before) in enumerate(((0, 1), (2, 3))):
        W[obs_index, g_col + now] = INPUT_SCALES[obs_index]
        W[n_in + now, g_col + before] = 1.0  # the "now" cell's h_{t-1}: the previous value
    k_x, k_v, k_theta, k_omega = GAINS
    s_x, s_theta = INPUT_SCALES
    z = torch.tensor(
        [
            (k_x + k_v / TAU) / s_x,
            -(k_v / TAU) / s_x,
            (k_theta + k_omega / TAU) / s_theta,
            -(k_omega / TAU) / s_theta,
        ]
    )
    readout[:4, 1], readout[:4, 0] = z / 2, -z / 2
    return vector
