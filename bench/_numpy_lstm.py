"""A numpy float32 one-layer LSTM policy for ``bench/dpnv.py``'s screening tests."""

from __future__ import annotations

import numpy as np
import torch

from evolstm.errors import ConfigError
from evolstm.network.layout import PolicySpec, build_layout, unflatten


def numpy_policy_fn_maker(spec: PolicySpec, vector: torch.Tensor):
    """:func:`evolstm.rollouts.success.policy_fn_maker` for a one-layer ``lstm`` policy with a
    linear readout and a bounded Box action (the double pole's), written in numpy float32.

    Why by hand: the success tests step one network for up to 100,000 steps, where torch's
    per-call overhead dominates on ``[1, 7] @ [7, 16]`` (measured about 0.45 ms per step on a
    shared core, 45 s per 100,000-step test; this path is several times faster). The
    equations are :func:`evolstm.network.cells._lstm`'s (gates ``i, f, g, o``; ``c = f c + i
    tanh(g)``, ``h = o tanh(c)``) and the action is ``tanh(h W_r + b_r)`` (the Box head's
    squash into [-1, 1]).

    **A screening aid, not for reported tables**: numpy's float32 matmul rounds differently
    from torch's in the last bits (actions agree to 1e-5, tests/test_bench_dpnv.py), and over
    100,000 steps that can flip a verdict on a network at the edge of balancing. Measured: SNES
    seed 0 (popsize 14) reached 100k at 2,688 evaluations with the torch tests and at 2,800
    with these (the same training run; the 2,688 network fell at step 91,950 here).

    The state ``h, c`` is ``[N, H]`` for ``N`` parallel episodes (``episode_start [N]``).
    """
    if spec.cell != "lstm" or spec.layers != 1 or spec.readout_hidden:
        raise ConfigError(
            f"numpy tests: cell={spec.cell!r}, layers={spec.layers}, readout_hidden="
            f"{spec.readout_hidden}; only a one-layer 'lstm' with a linear readout"
        )
    blocks = {
        k: v.detach().numpy().astype(np.float32)
        for k, v in unflatten(build_layout(spec), vector.float()).items()
    }
    w, b, w_out, b_out = (blocks[k] for k in ("layer0.W", "layer0.b", "readout.W", "readout.b"))
    hidden = spec.hidden

    def make():
        h = c = np.zeros((0, hidden), np.float32)

        def act(obs: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
            nonlocal h, c
            starts = np.asarray(episode_start, dtype=bool).reshape(-1)
            if len(h) != starts.size:
                h = c = np.zeros((starts.size, hidden), np.float32)
            if starts.any():
                h = np.where(starts[:, None], np.float32(0), h)
                c = np.where(starts[:, None], np.float32(0), c)
            x = np.asarray(obs, np.float32).reshape(starts.size, -1)
            z = np.concatenate([x, h], axis=1) @ w + b
            gates = np.float32(1) / (np.float32(1) + np.exp(-z))
            c = gates[:, hidden : 2 * hidden] * c + gates[:, :hidden] * np.tanh(
                z[:, 2 * hidden : 3 * hidden]
            )
            h = gates[:, 3 * hidden :] * np.tanh(c)
            return np.tanh(h @ w_out + b_out)

        return act

    return make
