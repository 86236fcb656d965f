"""Layer types: the linear layers that own units, and the per-unit operations that follow them.

Linear layers (:class:`Dense`, :class:`Conv2d`) hold weights and define *units* (rows / output
channels). Everything else (activations, pooling, :class:`Flatten`) acts on one unit at a time, so it runs
on the worker that owns the unit and never creates communication.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.special import expit

from ._validation import as_float_array, as_int, readonly
from .errors import InvalidProblemError

__all__ = [
    "Layer",
    "Dense",
    "Conv2d",
    "Activation",
    "ReLU",
    "Identity",
    "Tanh",
    "Sigmoid",
    "MaxPool2d",
    "AvgPool2d",
    "Flatten",
]


def _pair(name: str, value: int | tuple[int, int], minimum: int) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise InvalidProblemError(f"`{name}` must be an integer or a pair of integers, got {value!r}")
        return (
            as_int(name, value[0], minimum=minimum, error=InvalidProblemError),
            as_int(name, value[1], minimum=minimum, error=InvalidProblemError),
        )
    v = as_int(name, value, minimum=minimum, error=InvalidProblemError)
    return (v, v)


class Layer:
    """Base class of every layer."""

    kind: ClassVar[str] = "layer"
    is_linear: ClassVar[bool] = False

    def to_config(self) -> dict:
        """JSON-serialisable description without weights."""
        return {"type": self.kind}


@dataclass(frozen=True, eq=False)
class Dense(Layer):
    """Fully connected layer ``z = W x + b`` with ``W`` of shape ``(n_out, n_in)``.

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> layer = ro.Dense(np.eye(2), np.array([1.0, -1.0]))
    >>> layer.W.shape, layer.b.tolist()
    ((2, 2), [1.0, -1.0])
    """

    W: np.ndarray
    b: np.ndarray | None = None
    kind: ClassVar[str] = "dense"
    is_linear: ClassVar[bool] = True

    def __post_init__(self) -> None:
        W = as_float_array("W", self.W, ndim=2)
        b = np.zeros(W.shape[0]) if self.b is None else as_float_array("b", self.b, shape=(W.shape[0],))
        object.__setattr__(self, "W", readonly(W))
        object.__setattr__(self, "b", readonly(b))

    @property
    def n_out(self) -> int:
        return int(self.W.shape[0])

    def with_weights(self, W: np.ndarray, b: np.ndarray) -> Dense:
        """A copy with new weights of the same shape."""
        W = as_float_array("W", W, shape=self.W.shape)
        return Dense(W, b)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Forward on a batch ``x`` of shape ``(N, n_in)`` (or any shape that flattens to it)."""
        return x.reshape(x.shape[0], -1) @ self.W.T + self.b


@dataclass(frozen=True, eq=False)
class Conv2d(Layer):
    """2-D convolution (cross-correlation, as in torch) with zero padding.

    ``W`` has shape ``(c_out, c_in, kh, kw)``; ``stride`` and ``padding`` are ints or ``(h, w)`` pairs.
    """

    W: np.ndarray
    b: np.ndarray | None = None
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    kind: ClassVar[str] = "conv2d"
    is_linear: ClassVar[bool] = True

    def __post_init__(self) -> None:
        W = as_float_array("W", self.W, ndim=4)
        b = np.zeros(W.shape[0]) if self.b is None else as_float_array("b", self.b, shape=(W.shape[0],))
        object.__setattr__(self, "W", readonly(W))
        object.__setattr__(self, "b", readonly(b))
        object.__setattr__(self, "stride", _pair("stride", self.stride, 1))
        object.__setattr__(self, "padding", _pair("padding", self.padding, 0))

    @property
    def n_out(self) -> int:
        return int(self.W.shape[0])

    def to_config(self) -> dict:
        return {"type": self.kind, "stride": list(self.stride), "padding": list(self.padding)}

    def with_weights(self, W: np.ndarray, b: np.ndarray) -> Conv2d:
        W = as_float_array("W", W, shape=self.W.shape)
        return Conv2d(W, b, stride=self.stride, padding=self.padding)

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        kh, kw = self.W.shape[2:]
        (sh, sw), (ph, pw) = self.stride, self.padding
        return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Forward on ``x`` of shape ``(N, c_in, H, W)``; returns ``(N, c_out, H_out, W_out)``."""
        return conv2d(x, self.W, self.b, self.stride, self.padding)


def conv2d(x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: tuple[int, int], padding: tuple[int, int]) -> np.ndarray:
    """Vectorised convolution: a strided window view, contracted with the kernel by one tensordot."""
    ph, pw = padding
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    kh, kw = W.shape[2:]
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, :: stride[0], :: stride[1]]
    # windows: (N, C, Ho, Wo, kh, kw); tensordot builds the im2col matrix once and runs one GEMM.
    out = np.tensordot(windows, W, axes=([1, 4, 5], [1, 2, 3]))  # (N, Ho, Wo, c_out)
    out = out.transpose(0, 3, 1, 2)
    return out + b[None, :, None, None]


class Activation(Layer):
    """Element-wise activation; ``lipschitz`` and ``value_at_zero`` feed the guarantee (SPEC §6)."""

    lipschitz: ClassVar[float] = 1.0
    value_at_zero: ClassVar[float] = 0.0

    def apply(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ReLU(Activation):
    """``max(x, 0)``."""

    kind = "relu"

    def apply(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0.0)


class Identity(Activation):
    """``x``."""

    kind = "identity"

    def apply(self, x: np.ndarray) -> np.ndarray:
        return x


class Tanh(Activation):
    """``tanh(x)``."""

    kind = "tanh"

    def apply(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(x)


class Sigmoid(Activation):
    """Logistic ``1 / (1 + exp(-x))``; 1/4-Lipschitz with ``σ(0) = 1/2``."""

    kind = "sigmoid"
    lipschitz = 0.25
    value_at_zero = 0.5

    def apply(self, x: np.ndarray) -> np.ndarray:
        return expit(x)


@dataclass(frozen=True, eq=False)
class _Pool2d(Layer):
    kernel_size: int | tuple[int, int] = 2
    stride: int | tuple[int, int] | None = None

    def __post_init__(self) -> None:
        kernel = _pair("kernel_size", self.kernel_size, 1)
        object.__setattr__(self, "kernel_size", kernel)
        object.__setattr__(self, "stride", kernel if self.stride is None else _pair("stride", self.stride, 1))

    def to_config(self) -> dict:
        return {"type": self.kind, "kernel_size": list(self.kernel_size), "stride": list(self.stride)}

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        return (h - kh) // sh + 1, (w - kw) // sw + 1

    def _windows(self, x: np.ndarray) -> np.ndarray:
        windows = sliding_window_view(x, self.kernel_size, axis=(-2, -1))
        return windows[..., :: self.stride[0], :: self.stride[1], :, :]


@dataclass(frozen=True, eq=False)
class MaxPool2d(_Pool2d):
    """Max pooling per channel (no padding, floor mode, as torch's defaults)."""

    kind: ClassVar[str] = "maxpool2d"

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self._windows(x).max(axis=(-2, -1))


@dataclass(frozen=True, eq=False)
class AvgPool2d(_Pool2d):
    """Average pooling per channel (no padding, floor mode)."""

    kind: ClassVar[str] = "avgpool2d"

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self._windows(x).mean(axis=(-2, -1))


@dataclass(frozen=True, eq=False)
class Flatten(Layer):
    """Flattens ``(C, H, W)`` to ``C·H·W`` in channel-major order (torch's order).

    The next :class:`Dense` layer's input *units* are still the C channels (H·W columns each).
    """

    kind: ClassVar[str] = "flatten"

    def apply(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(x.shape[0], -1)


ACTIVATIONS: dict[str, type[Activation]] = {cls.kind: cls for cls in (ReLU, Identity, Tanh, Sigmoid)}
POOLS: dict[str, type[_Pool2d]] = {cls.kind: cls for cls in (MaxPool2d, AvgPool2d)}


def layer_from_config(config: dict, W: np.ndarray | None = None, b: np.ndarray | None = None) -> Layer:
    """Inverse of :meth:`Layer.to_config` (weights passed separately)."""
    kind = config.get("type")
    if kind == Dense.kind:
        return Dense(W, b)
    if kind == Conv2d.kind:
        return Conv2d(W, b, stride=tuple(config["stride"]), padding=tuple(config["padding"]))
    if kind in ACTIVATIONS:
        return ACTIVATIONS[kind]()
    if kind in POOLS:
        return POOLS[kind](kernel_size=tuple(config["kernel_size"]), stride=tuple(config["stride"]))
    if kind == Flatten.kind:
        return Flatten()
    raise InvalidProblemError(f"unknown layer type {kind!r} in saved network")

