"""The flat parameter vector every policy lives in, and what names its blocks.

:class:`PolicySpec` says what a policy is (the task's spaces and the recurrent core);
:class:`ParameterLayout` names every block of its flat vector ``[D]`` (per layer, per cell
parameter, and the readout), and gives the indices of one memory cell's parameters
(:meth:`ParameterLayout.unit_indices`: what ESP and Evolino evolve as one chromosome);
:func:`init_vector` draws a fresh vector and :func:`unflatten` views ``[D]`` or ``[P, D]`` as
named blocks. :mod:`evolstm.network.policy` runs the network these describe.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import gymnasium as gym
import torch

from evolstm.network import cells
from evolstm.network.space_data import space_from_data, space_to_data
from evolstm.network.spaces import ActionHead, ObservationEncoder


@dataclass(frozen=True)
class PolicySpec:
    """What a policy is: the task's spaces and the recurrent core.

    :param observation_space: the single env's observation space (anything gymnasium flattens).
    :param action_space: the single env's action space (Discrete, MultiDiscrete or Box).
    :param cell: one of :data:`evolstm.network.cells.CELL_NAMES`.
    :param hidden: memory cells per layer (channels for ``conv_peephole``).
    :param layers: stacked recurrent layers.
    :param kernel_size: convolution kernel of ``conv_peephole``.
    :param memory: ``False`` zeroes the recurrent state before every step, turning the
        network into a feed-forward policy with the same parameters (a memory ablation).
    :param readout_hidden: widths of ReLU layers between the recurrent core and the linear
        readout (``()``: the readout reads the cells directly, as ESP and Evolino need; RL
        Zoo's RecurrentPPO settings put one layer of 64 after the LSTM).
    """

    observation_space: gym.Space
    action_space: gym.Space
    cell: str = "lstm"
    hidden: int = 16
    layers: int = 1
    kernel_size: int = 3
    memory: bool = True
    readout_hidden: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "readout_hidden", tuple(int(m) for m in self.readout_hidden))
        if any(m < 1 for m in self.readout_hidden):
            raise ValueError(
                f"policy.readout_hidden widths must be >= 1, got {self.readout_hidden}"
            )
        if self.cell not in cells.CELL_NAMES:
            raise ValueError(
                f"policy.cell: unknown cell {self.cell!r}; valid: {', '.join(cells.CELL_NAMES)}"
            )
        if self.hidden < 1 or self.layers < 1:
            raise ValueError(
                f"policy.hidden and policy.layers must be >= 1, got {self.hidden}, {self.layers}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (spaces described by :func:`evolstm.network.space_data.space_to_data`): what a
        policy file stores and ``torch.load(weights_only=True)`` reads back."""
        data = asdict(self)
        data["observation_space"] = space_to_data(self.observation_space)
        data["action_space"] = space_to_data(self.action_space)
        return data

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PolicySpec:
        """The spec :meth:`to_dict` described (:class:`ValueError` when malformed)."""
        data = dict(d)
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown policy spec keys {sorted(unknown)}")
        for key in ("observation_space", "action_space"):
            if key in data and not isinstance(data[key], gym.Space):
                data[key] = space_from_data(data[key])
        return cls(**data)


@dataclass(frozen=True)
class LayoutEntry:
    """One named parameter block of the flat vector: ``vector[offset : offset + numel]``."""

    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ParameterLayout:
    """The order and shapes of every parameter block in the flat vector ``[D]``.

    Names are ``layer{l}.{param}`` (see :func:`evolstm.network.cells.param_shapes`) and
    ``readout.W`` ``[F, A]`` / ``readout.b`` ``[A]`` (F = the last layer's flattened output,
    A = the action head's outputs). With ``readout_hidden`` (widths ``M_k``), the ReLU layers
    ``readout.hidden{k}.W`` ``[M_{k-1}, M_k]`` / ``readout.hidden{k}.b`` ``[M_k]`` come before
    the readout (``M_{-1} = F``), and ``readout.W`` is ``[M_last, A]``.
    """

    entries: tuple[LayoutEntry, ...]
    cell: str
    layer_inputs: tuple[Any, ...]
    hidden: int
    readout_in: int
    _by_name: dict[str, LayoutEntry] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({e.name: e for e in self.entries})

    @property
    def size(self) -> int:
        """D, the length of the flat vector."""
        last = self.entries[-1]
        return last.offset + last.numel

    def __getitem__(self, name: str) -> LayoutEntry:
        return self._by_name[name]

    def layer_param_names(self, layer: int) -> list[tuple[str, str]]:
        """``(cell parameter name, layout name)`` of every block of ``layer``, in order."""
        prefix = f"layer{layer}."
        return [(e.name[len(prefix) :], e.name) for e in self.entries if e.name.startswith(prefix)]

    def unit_indices(self, layer: int, unit: int) -> torch.Tensor:
        """Flat indices ``[K]`` of every parameter that belongs to memory cell ``unit`` of
        ``layer``: its gate weights and biases (incoming), and its outgoing weights (the
        readout rows reading it when ``layer`` is the last one: ``readout.W``, or
        ``readout.hidden0.W`` with ``readout_hidden``). ESP evolves these as one genome."""
        if not 0 <= layer < len(self.layer_inputs) or not 0 <= unit < self.hidden:
            raise IndexError(f"no unit {unit} in layer {layer}")
        parts = []
        slices = cells.unit_slices(self.cell, self.layer_inputs[layer], self.hidden)
        for pname, idx in slices[unit].items():
            parts.append(self._entry_indices(f"layer{layer}.{pname}", idx))
        if layer == len(self.layer_inputs) - 1:
            per_unit = self.readout_in // self.hidden
            rows = slice(unit * per_unit, (unit + 1) * per_unit)
            first = "readout.hidden0.W" if "readout.hidden0.W" in self._by_name else "readout.W"
            parts.append(self._entry_indices(first, (rows, slice(None))))
        return torch.cat(parts)

    def _entry_indices(self, name: str, idx: Any) -> torch.Tensor:
        entry = self[name]
        grid = torch.arange(entry.numel).reshape(entry.shape)
        return grid[idx].reshape(-1) + entry.offset


def build_layout(spec: PolicySpec) -> ParameterLayout:
    """The :class:`ParameterLayout` of ``spec``."""
    return layout_for(spec, encoder_for(spec), ActionHead(spec.action_space))


def encoder_for(spec: PolicySpec) -> ObservationEncoder:
    """The observation encoder of ``spec`` (images kept whole for the convolutional cell)."""
    return ObservationEncoder(spec.observation_space, keep_image=spec.cell == "conv_peephole")


def layout_for(spec: PolicySpec, encoder: ObservationEncoder, head: ActionHead) -> ParameterLayout:
    """:func:`build_layout` with the encoder and head already built (a policy keeps them)."""
    input_size = _core_input_size(spec, encoder)
    entries: list[LayoutEntry] = []
    offset = 0
    layer_inputs = []
    size: Any = input_size
    for layer in range(spec.layers):
        layer_inputs.append(size)
        shapes = cells.param_shapes(spec.cell, size, spec.hidden, kernel_size=spec.kernel_size)
        for pname, shape in shapes.items():
            entries.append(LayoutEntry(f"layer{layer}.{pname}", tuple(shape), offset))
            offset += math.prod(shape)
        size = cells.output_size(spec.cell, size, spec.hidden)
    readout_in = math.prod(size) if isinstance(size, tuple) else int(size)
    blocks, width = [], readout_in
    for k, m in enumerate(spec.readout_hidden):
        blocks += [(f"readout.hidden{k}.W", (width, m)), (f"readout.hidden{k}.b", (m,))]
        width = m
    blocks += [("readout.W", (width, head.num_outputs)), ("readout.b", (head.num_outputs,))]
    for name, shape in blocks:
        entries.append(LayoutEntry(name, shape, offset))
        offset += math.prod(shape)
    return ParameterLayout(
        entries=tuple(entries),
        cell=spec.cell,
        layer_inputs=tuple(layer_inputs),
        hidden=spec.hidden,
        readout_in=readout_in,
    )


def _core_input_size(spec: PolicySpec, encoder: ObservationEncoder) -> Any:
    if spec.cell != "conv_peephole":
        return encoder.size
    if encoder.image_shape is not None:
        return tuple(encoder.image_shape)
    return (encoder.size, 1, 1)  # a flat observation is a 1x1 image with one channel per entry


def init_vector(spec: PolicySpec, generator: torch.Generator) -> torch.Tensor:
    """A fresh flat parameter vector ``[D]`` (the cells' initialisation; readout and its
    hidden layers uniform ``±1/sqrt(fan_in)`` like ``nn.Linear``, biases 0)."""
    layout = build_layout(spec)
    chunks = []
    for layer, size in enumerate(layout.layer_inputs):
        params = cells.init_params(
            spec.cell, size, spec.hidden, generator=generator, kernel_size=spec.kernel_size
        )
        for pname, name in layout.layer_param_names(layer):
            assert layout[name].shape == tuple(params[pname].shape)
            chunks.append(params[pname].reshape(-1))
    names = [f"readout.hidden{k}" for k in range(len(spec.readout_hidden))] + ["readout"]
    for name in names:
        w = layout[f"{name}.W"]
        bound = 1.0 / math.sqrt(w.shape[0])
        chunks.append((torch.rand(w.numel, generator=generator) * 2 - 1) * bound)
        chunks.append(torch.zeros(layout[f"{name}.b"].numel))
    return torch.cat(chunks).to(torch.float32)


def unflatten(layout: ParameterLayout, vectors: torch.Tensor) -> dict[str, torch.Tensor]:
    """Views of ``vectors`` ``[D]`` / ``[P, D]`` as named blocks ``[*shape]`` / ``[P, *shape]``."""
    lead = vectors.shape[:-1]
    if vectors.shape[-1] != layout.size:
        raise ValueError(f"expected parameter vectors of length {layout.size}, got {vectors.shape}")
    return {
        e.name: vectors[..., e.offset : e.offset + e.numel].reshape(*lead, *e.shape)
        for e in layout.entries
    }
