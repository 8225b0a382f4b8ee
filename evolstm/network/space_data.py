"""Gymnasium spaces as plain data (dicts of str/int/float/bool/lists), and back.

A policy file describes its spaces with these dicts instead of pickled space objects, so it
loads with ``torch.load(weights_only=True)``. Gymnasium has no such serialisation (it
pickles spaces), hence this small codec. Only the spaces a policy accepts are encoded:
:data:`evolstm.network.spaces.OBSERVATION_SPACES` and :data:`evolstm.network.spaces.ACTION_SPACES`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from evolstm.network.spaces import ACTION_SPACES, OBSERVATION_SPACES

SUPPORTED = tuple(dict.fromkeys((*OBSERVATION_SPACES, *ACTION_SPACES)))


def _bound(values: np.ndarray) -> Any:
    """One number when every entry is the same (the usual case), else nested lists."""
    flat = values.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return flat[0].item()
    return values.tolist()


def space_to_data(space: gym.Space) -> dict[str, Any]:
    """``space`` as a dict of plain data (:class:`ValueError` for unsupported spaces)."""
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": space.dtype.str,
            "low": _bound(space.low),
            "high": _bound(space.high),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "nvec": space.nvec.tolist(),
            "start": space.start.tolist(),
            "dtype": space.dtype.str,
        }
    if isinstance(space, spaces.MultiBinary):
        n = space.n
        return {"type": "MultiBinary", "n": int(n) if np.ndim(n) == 0 else np.asarray(n).tolist()}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_data(s) for s in space.spaces]}
    if isinstance(space, spaces.OneOf):
        return {"type": "OneOf", "spaces": [space_to_data(s) for s in space.spaces]}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": [[k, space_to_data(s)] for k, s in space.spaces.items()]}
    raise ValueError(f"unsupported space {space}; supported: {', '.join(SUPPORTED)}")


def space_from_data(data: Any) -> gym.Space:
    """The space :func:`space_to_data` described (:class:`ValueError` when malformed)."""
    try:
        kind = data["type"]
        if kind == "Box":
            dtype = np.dtype(data["dtype"])
            if dtype.kind not in "fiub":
                raise ValueError(f"Box dtype {dtype} is not numeric")
            shape = tuple(int(n) for n in data["shape"])
            low = np.broadcast_to(np.asarray(data["low"], dtype=dtype), shape)
            high = np.broadcast_to(np.asarray(data["high"], dtype=dtype), shape)
            return spaces.Box(low=low.copy(), high=high.copy(), shape=shape, dtype=dtype)
        if kind == "Discrete":
            return spaces.Discrete(int(data["n"]), start=int(data["start"]))
        if kind == "MultiDiscrete":
            dtype = np.dtype(data["dtype"])
            if dtype.kind not in "iu":
                raise ValueError(f"MultiDiscrete dtype {dtype} is not an integer type")
            return spaces.MultiDiscrete(
                np.asarray(data["nvec"]), dtype=dtype, start=np.asarray(data["start"])
            )
        if kind == "MultiBinary":
            n = data["n"]
            return spaces.MultiBinary(int(n) if isinstance(n, int) else [int(k) for k in n])
        if kind == "Tuple":
            return spaces.Tuple([space_from_data(s) for s in data["spaces"]])
        if kind == "OneOf":
            return spaces.OneOf([space_from_data(s) for s in data["spaces"]])
        if kind == "Dict":
            return spaces.Dict({str(k): space_from_data(s) for k, s in data["spaces"]})
    except (KeyError, TypeError, IndexError) as err:
        raise ValueError(f"malformed space description {str(data)[:80]!r} ({err})") from None
    raise ValueError(f"unsupported space type {kind!r}; supported: {', '.join(SUPPORTED)}")
