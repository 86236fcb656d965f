"""The network model: a sequence of layers with the unit structure of SPEC §2.

A :class:`Network` is immutable. It knows, for every linear layer l = 1..L, its units, the message size of
each unit, the connectivity ``M_l`` and the FLOPs per unit (:class:`LayerStructure`), and runs a
vectorised numpy forward pass.

Activations move between layers in *unit form*: an array of shape ``(N, n_units, message_size)``, one slot
per unit, which is exactly what a worker sends when it sends a unit's activation.

Layer-order rules (decisions where the SPEC is silent): activations, pooling and Flatten belong to the linear
layer before them (only a Flatten may precede the first linear layer); pooling and Conv2d need a
``(channels, height, width)`` input, so they are refused after a Flatten or a Dense layer; a Dense layer may
read a feature map with or without a Flatten before it (channel-major order either way, as torch's Flatten),
and its input units are the channels in both cases. :meth:`Network.from_torch` is stricter and requires the
Flatten, because torch's Linear on a feature map would act on its last axis only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from . import _io
from ._validation import as_float_array, as_int
from .errors import FormatError, InvalidProblemError
from .layers import Activation, Conv2d, Dense, Flatten, Identity, Layer, _Pool2d, conv2d, layer_from_config

__all__ = ["Network", "LayerStructure", "NetworkTrace"]

_FORMAT = "repurpose-opt/network"
_FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class LayerStructure:
    """What SPEC §2 defines for one linear layer ``l`` (1-based).

    Attributes
    ----------
    index : int
        ``l``; layer 0 is the input.
    kind : str
        ``"dense"`` or ``"conv2d"``.
    n_units, n_inputs : int
        ``n_l`` and ``n_{l-1}``.
    in_message_size, message_size : int
        ``s_{l-1}`` (scalars per input unit) and ``s_l`` (scalars each unit of this layer sends, after its
        activation and pooling).
    output_positions : int
        ``o_l``: 1 for dense, ``H_out·W_out`` for conv (before pooling).
    connectivity : scipy.sparse.csr_array
        ``M_l`` of shape ``(n_l, n_{l-1})``, boolean.
    nnz_per_unit : ndarray
        Nonzero weights of each unit.
    """

    index: int
    kind: str
    n_units: int
    n_inputs: int
    in_message_size: int
    message_size: int
    output_positions: int
    connectivity: sp.csr_array
    nnz_per_unit: np.ndarray

    @cached_property
    def dense_connectivity(self) -> np.ndarray | None:
        """``M_l`` as a read-only dense boolean array when it has at most 2**22 entries, else ``None``."""
        if self.n_units * self.n_inputs > 1 << 22:
            return None
        dense = self.connectivity.toarray().astype(bool)
        dense.flags.writeable = False
        return dense

    @property
    def flops_per_unit(self) -> np.ndarray:
        """``2·nnz(W_i)·o_l + o_l`` per unit (multiply-adds plus the bias)."""
        o = self.output_positions
        return (2 * self.nnz_per_unit * o + o).astype(np.float64)

    @property
    def params_per_unit(self) -> np.ndarray:
        """``nnz(W_i) + 1`` per unit (weights plus the bias)."""
        return (self.nnz_per_unit + 1).astype(np.int64)


@dataclass(frozen=True, eq=False)
class NetworkTrace:
    """Every intermediate of a forward pass.

    ``activations[l]`` is layer l's output in unit form ``(N, n_l, s_l)`` (``activations[0]`` is the input);
    ``pre_activations[l-1]`` is linear layer l's raw output ``Z_l`` in native shape (``(N, n_l)`` or
    ``(N, c, H, W)``), before activation and pooling.
    """

    activations: tuple[np.ndarray, ...]
    pre_activations: tuple[np.ndarray, ...]


@dataclass(frozen=True, eq=False)
class _Stage:
    linear: Dense | Conv2d
    post: tuple[Layer, ...]
    in_shape: tuple[int, ...]  # native input shape (per sample) the linear layer reads
    pre_shape: tuple[int, ...]  # native shape of Z_l
    out_shape: tuple[int, ...]  # native shape after the post ops (before any Flatten)


class Network:
    """An immutable feed-forward network of :mod:`repurpose_opt.layers`.

    Parameters
    ----------
    layers : sequence of Layer
        ``Dense``/``Conv2d`` layers, each optionally followed by activations, pooling and ``Flatten``.
        The output is the last linear layer's output (logits); nothing may follow it.
    input_shape : tuple of int
        ``(n_features,)`` for a dense input or ``(channels, height, width)`` for images.

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> rng = np.random.default_rng(0)
    >>> net = ro.Network([ro.Dense(rng.normal(size=(8, 4))), ro.ReLU(), ro.Dense(rng.normal(size=(3, 8)))],
    ...                  input_shape=(4,))
    >>> net.unit_counts, net.message_sizes
    ((4, 8, 3), (1, 1, 1))
    >>> net.forward(rng.normal(size=(5, 4))).shape
    (5, 3)
    """

    def __init__(self, layers: Sequence[Layer], input_shape: Sequence[int] | int):
        if isinstance(input_shape, (int, np.integer)):
            input_shape = (int(input_shape),)
        try:
            shape = tuple(as_int("input_shape", d, minimum=1, error=InvalidProblemError) for d in input_shape)
        except TypeError as exc:
            raise InvalidProblemError(f"`input_shape` must be a tuple of positive integers, got {input_shape!r}") from exc
        if len(shape) not in (1, 3):
            raise InvalidProblemError(
                f"`input_shape` must be (features,) or (channels, height, width), got {shape}"
            )
        if isinstance(layers, Layer) or not isinstance(layers, Iterable):
            raise InvalidProblemError(f"`layers` must be a sequence of repurpose_opt layers, got {type(layers).__name__}")
        layers = tuple(layers)
        for position, layer in enumerate(layers):
            if not isinstance(layer, Layer) or type(layer) in (Layer, Activation, _Pool2d):
                raise InvalidProblemError(f"`layers[{position}]` must be a repurpose_opt layer, got {layer!r}")
        if not any(layer.is_linear for layer in layers):
            raise InvalidProblemError("`layers` must contain at least one Dense or Conv2d layer")
        self._layers = layers
        self._input_shape = shape
        self._stages = self._build_stages(layers, shape)

    # ----------------------------------------------------------------------------------------- building
    @staticmethod
    def _build_stages(layers: tuple[Layer, ...], input_shape: tuple[int, ...]) -> tuple[_Stage, ...]:
        stages: list[_Stage] = []
        shape = input_shape
        current: dict[str, Any] | None = None
        flattened = len(input_shape) == 1  # after a Flatten (or for a dense input) only Dense layers may read
        for position, layer in enumerate(layers):
            where = f"`layers[{position}]` ({type(layer).__name__})"
            if flattened and isinstance(layer, (Conv2d, _Pool2d)):
                raise InvalidProblemError(
                    f"{where} needs a (channels, height, width) input, but the layers before it produce a flat "
                    "vector (a Flatten or a Dense layer precedes it)"
                )
            if isinstance(layer, Flatten):
                flattened = True
            if layer.is_linear:
                flattened = isinstance(layer, Dense)
                if current is not None:
                    stages.append(_Stage(**current))
                if isinstance(layer, Dense):
                    n_in = int(np.prod(shape))
                    if layer.W.shape[1] != n_in:
                        raise InvalidProblemError(
                            f"{where} expects {layer.W.shape[1]} inputs but receives {n_in} (shape {shape})"
                        )
                    pre = (layer.n_out,)
                else:
                    if len(shape) != 3:
                        raise InvalidProblemError(f"{where} needs a (channels, height, width) input, got {shape}")
                    if layer.W.shape[1] != shape[0]:
                        raise InvalidProblemError(
                            f"{where} expects {layer.W.shape[1]} input channels but receives {shape[0]}"
                        )
                    h, w = layer.output_hw(shape[1], shape[2])
                    if h < 1 or w < 1:
                        raise InvalidProblemError(f"{where}: kernel larger than its padded {shape[1]}x{shape[2]} input")
                    pre = (layer.n_out, h, w)
                current = {"linear": layer, "post": (), "in_shape": shape, "pre_shape": pre, "out_shape": pre}
                shape = pre
                continue
            if current is None and not isinstance(layer, Flatten):
                raise InvalidProblemError(f"{where} comes before the first linear layer; only Flatten may")
            if isinstance(layer, _Pool2d):
                if len(shape) != 3:
                    raise InvalidProblemError(f"{where} needs a (channels, height, width) input, got {shape}")
                h, w = layer.output_hw(shape[1], shape[2])
                if h < 1 or w < 1:
                    raise InvalidProblemError(f"{where}: window larger than its {shape[1]}x{shape[2]} input")
                shape = (shape[0], h, w)
            if current is not None:
                current["post"] += (layer,)
                if not isinstance(layer, Flatten):
                    # Flatten is a pure re-indexing: the next Dense layer still reads channels as units.
                    current["out_shape"] = shape
        assert current is not None
        if any(not isinstance(op, Flatten) for op in current["post"]):
            raise InvalidProblemError(
                "the network's output is its last linear layer's output (logits): remove the layers after "
                "the last Dense/Conv2d layer"
            )
        stages.append(_Stage(**current))
        return tuple(stages)

    # ------------------------------------------------------------------------------------ properties
    @property
    def layers(self) -> tuple[Layer, ...]:
        """All layers in order."""
        return self._layers

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample input shape."""
        return self._input_shape

    @property
    def linear_layers(self) -> tuple[Dense | Conv2d, ...]:
        """The Dense/Conv2d layers in order (``linear_layers[l-1]`` is layer l)."""
        return tuple(stage.linear for stage in self._stages)

    @property
    def n_layers(self) -> int:
        """``L``, the number of linear layers."""
        return len(self._stages)

    @cached_property
    def structure(self) -> tuple[LayerStructure, ...]:
        """:class:`LayerStructure` of layers 1..L."""
        result = []
        n_prev, s_prev = self._input_units()
        for index, stage in enumerate(self._stages, start=1):
            W = stage.linear.W
            n_units = stage.linear.n_out
            if isinstance(stage.linear, Dense):
                blocks = W.reshape(n_units, n_prev, s_prev)
                kind, positions = "dense", 1
            else:
                blocks = W.reshape(n_units, n_prev, -1)
                kind, positions = "conv2d", int(stage.pre_shape[1] * stage.pre_shape[2])
            connectivity = sp.csr_array(np.any(blocks != 0, axis=2))
            out = stage.out_shape
            message = 1 if len(out) == 1 else int(out[1] * out[2])
            result.append(
                LayerStructure(
                    index=index,
                    kind=kind,
                    n_units=n_units,
                    n_inputs=n_prev,
                    in_message_size=s_prev,
                    message_size=message,
                    output_positions=positions,
                    connectivity=connectivity,
                    nnz_per_unit=np.count_nonzero(W.reshape(n_units, -1), axis=1).astype(np.int64),
                )
            )
            n_prev, s_prev = n_units, message
        return tuple(result)

    def _input_units(self) -> tuple[int, int]:
        shape = self._input_shape
        return (shape[0], 1) if len(shape) == 1 else (shape[0], shape[1] * shape[2])

    @property
    def unit_counts(self) -> tuple[int, ...]:
        """``(n_0, n_1, ..., n_L)``."""
        return (self._input_units()[0],) + tuple(s.n_units for s in self.structure)

    @property
    def message_sizes(self) -> tuple[int, ...]:
        """``(s_0, s_1, ..., s_L)``: scalars per sample each unit of each layer sends."""
        return (self._input_units()[1],) + tuple(s.message_size for s in self.structure)

    @property
    def n_outputs(self) -> int:
        """Width of :meth:`forward`'s output."""
        return self.unit_counts[-1] * self.message_sizes[-1]

    def __repr__(self) -> str:
        body = ", ".join(f"{type(layer).__name__}" for layer in self._layers)
        return f"Network([{body}], input_shape={self._input_shape})"

    # --------------------------------------------------------------------------------------- forward
    def _check_input(self, X: Any, name: str = "X") -> np.ndarray:
        X = as_float_array(name, X, ndim=(2, 4))
        shape = self._input_shape
        if X.shape[1:] == shape:
            return X
        if X.ndim == 2 and X.shape[1] == int(np.prod(shape)):
            return X.reshape((X.shape[0],) + shape)
        flat = "" if len(shape) == 1 else f" or (N, {int(np.prod(shape))})"
        raise InvalidProblemError(f"`{name}` must have shape (N, {', '.join(map(str, shape))}){flat}, got {X.shape}")

    def to_units(self, X: Any) -> np.ndarray:
        """The input batch in unit form ``(N, n_0, s_0)``."""
        X = self._check_input(X)
        n0, s0 = self._input_units()
        return X.reshape(X.shape[0], n0, s0)

    def stage_linear(self, l: int, x_units: np.ndarray, rows: np.ndarray | slice = slice(None),
                     cols: np.ndarray | slice = slice(None), weights: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Raw output ``Z_l`` of units ``rows`` of layer ``l`` computed from input units ``cols`` only.

        ``x_units`` holds just those input units, in unit form ``(N, len(cols), s_{l-1})``. This is how a
        worker computes its units from what it holds; ``weights`` overrides ``(W, b)``.
        """
        stage = self._stages[l - 1]
        W, b = weights if weights is not None else (stage.linear.W, stage.linear.b)
        n_units = W.shape[0]
        n_in, s_in = x_units.shape[1], x_units.shape[2]
        if isinstance(stage.linear, Dense):
            n_prev = self.structure[l - 1].n_inputs
            W_sub = W.reshape(n_units, n_prev, -1)[rows]
            if not (isinstance(cols, slice) and cols == slice(None)):
                W_sub = W_sub[:, cols]
            # Explicit shapes: a worker whose units read no input unit (all their weights pruned) has n_in = 0,
            # where a -1 cannot be inferred.
            return x_units.reshape(x_units.shape[0], n_in * s_in) @ W_sub.reshape(W_sub.shape[0], n_in * s_in).T + b[rows]
        _, h, w = stage.in_shape
        x = x_units.reshape(x_units.shape[0], n_in, h, w)
        W_sub = W[rows]
        if not (isinstance(cols, slice) and cols == slice(None)):
            W_sub = W_sub[:, cols]
        return conv2d(x, W_sub, b[rows], stage.linear.stride, stage.linear.padding)

    def stage_post(self, l: int, z: np.ndarray) -> np.ndarray:
        """Activation and pooling of layer ``l`` applied to ``z``; returns unit form ``(N, units, s_l)``."""
        for op in self._stages[l - 1].post:
            if not isinstance(op, Flatten):
                z = op.apply(z)
        return z.reshape(z.shape[0], z.shape[1], -1)

    def trace(self, X: Any) -> NetworkTrace:
        """Run the forward pass and keep every layer's pre-activations and unit-form outputs."""
        a = self.to_units(X)
        activations, pre = [a], []
        for l in range(1, self.n_layers + 1):
            z = self.stage_linear(l, a)
            pre.append(z)
            a = self.stage_post(l, z)
            activations.append(a)
        return NetworkTrace(tuple(activations), tuple(pre))

    def forward(self, X: Any) -> np.ndarray:
        """Outputs (logits) of shape ``(N, n_outputs)`` for a batch ``X`` of shape ``(N, *input_shape)``.

        A flat ``(N, prod(input_shape))`` batch is accepted for image inputs too.
        """
        a = self.to_units(X)
        for l in range(1, self.n_layers + 1):
            a = self.stage_post(l, self.stage_linear(l, a))
        return a.reshape(a.shape[0], -1)

    __call__ = forward

    def activation_after(self, l: int) -> Activation:
        """The activation applied after linear layer ``l`` (``Identity`` when there is none)."""
        acts = [op for op in self._stages[l - 1].post if isinstance(op, Activation)]
        if len(acts) > 1:
            raise InvalidProblemError(f"layer {l} has {len(acts)} stacked activations; at most one is supported here")
        return acts[0] if acts else Identity()

    def post_ops(self, l: int) -> tuple[Layer, ...]:
        """Activation/pooling/Flatten layers that follow linear layer ``l``."""
        return self._stages[l - 1].post

    def shapes(self, l: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Native per-sample shapes of layer ``l``: its input, its raw output ``Z_l``, after activation/pooling."""
        stage = self._stages[l - 1]
        return stage.in_shape, stage.pre_shape, stage.out_shape

    # --------------------------------------------------------------------------------- transformations
    def with_weights(self, weights: Iterable[tuple[np.ndarray, np.ndarray]]) -> Network:
        """The same topology with new ``(W, b)`` for every linear layer, in order."""
        weights = list(weights)
        if len(weights) != self.n_layers:
            raise InvalidProblemError(f"`weights` must hold {self.n_layers} (W, b) pairs, got {len(weights)}")
        new_layers, it = [], iter(weights)
        for layer in self._layers:
            if layer.is_linear:
                W, b = next(it)
                new_layers.append(layer.with_weights(W, b))
            else:
                new_layers.append(layer)
        return Network(new_layers, self._input_shape)

    # ------------------------------------------------------------------------------------- persistence
    def to_payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(header, arrays)``: the architecture as JSON-able data plus the weight arrays."""
        arrays: dict[str, np.ndarray] = {}
        configs = []
        for position, layer in enumerate(self._layers):
            configs.append(layer.to_config())
            if layer.is_linear:
                arrays[f"W{position}"] = layer.W
                arrays[f"b{position}"] = layer.b
        return {"input_shape": list(self._input_shape), "layers": configs}, arrays

    @classmethod
    def from_payload(cls, header: dict[str, Any], arrays: dict[str, np.ndarray], where: str = "file") -> Network:
        """Inverse of :meth:`to_payload`."""
        try:
            configs = header["layers"]
            if not isinstance(configs, list) or not all(isinstance(config, dict) for config in configs):
                raise TypeError("`layers` must be a list of layer descriptions")
            layers = []
            for position, config in enumerate(configs):
                weights = (arrays.get(f"W{position}"), arrays.get(f"b{position}"))
                if config.get("type") in (Dense.kind, Conv2d.kind) and any(w is None for w in weights):
                    raise KeyError(f"W{position} and b{position}, the weights of layer {position}")
                layers.append(layer_from_config(config, *weights))
            return cls(layers, tuple(header["input_shape"]))
        except (KeyError, TypeError, ValueError, AttributeError, InvalidProblemError) as exc:
            raise FormatError(f"{where} has a malformed network description: {exc}") from exc

    def save(self, path: str | os.PathLike) -> Path:
        """Write the network to a versioned, checksummed ``.npz`` (no pickle, atomic). Returns the path."""
        header, arrays = self.to_payload()
        return _io.write_npz(path, _FORMAT, _FORMAT_VERSION, header, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Network:
        """Read a network written by :meth:`save`."""
        header, arrays = _io.read_npz(path, _FORMAT, _FORMAT_VERSION)
        return cls.from_payload(header, arrays, where=repr(str(path)))

    # ------------------------------------------------------------------------------------------ import
    @classmethod
    def from_sklearn(cls, model: Any) -> Network:
        """Import a fitted scikit-learn ``MLPClassifier`` or ``MLPRegressor``.

        The output activation (softmax / logistic) is not part of the network: its output is the logits.
        """
        from .importers import network_from_sklearn

        return network_from_sklearn(model)

    @classmethod
    def from_torch(cls, module: Any, input_shape: Sequence[int] | None = None) -> Network:
        """Import a ``torch.nn.Sequential`` of Linear/Conv2d/ReLU/Tanh/Sigmoid/BatchNorm/pooling/Flatten.

        BatchNorm layers are folded into the preceding linear layer (eval-mode statistics).
        """
        from .importers import network_from_torch

        return network_from_torch(module, input_shape)

