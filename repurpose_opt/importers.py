"""Import trained models from scikit-learn and PyTorch.

torch is imported only inside :func:`network_from_torch`, never at package import time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ._validation import as_float_array, as_int
from .errors import InvalidProblemError
from .layers import AvgPool2d, Conv2d, Dense, Flatten, Identity, Layer, MaxPool2d, ReLU, Sigmoid, Tanh

__all__ = ["network_from_sklearn", "network_from_torch"]

_SKLEARN_ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "logistic": Sigmoid, "identity": Identity}


def network_from_sklearn(model: Any):
    """Build a :class:`~repurpose_opt.Network` from a fitted ``MLPClassifier``/``MLPRegressor``."""
    from .network import Network

    name = type(model).__name__
    if name not in ("MLPClassifier", "MLPRegressor"):
        raise InvalidProblemError(f"`model` must be a scikit-learn MLPClassifier or MLPRegressor, got {name}")
    if not hasattr(model, "coefs_"):
        raise InvalidProblemError(f"`model` ({name}) is not fitted: call .fit first")
    activation_name = getattr(model, "activation", None)
    activation = _SKLEARN_ACTIVATIONS.get(activation_name) if isinstance(activation_name, str) else None
    if activation is None:
        supported = ", ".join(repr(a) for a in _SKLEARN_ACTIVATIONS)
        raise InvalidProblemError(f"`model.activation` must be one of {supported}, got {activation_name!r:.60}")
    coefs, intercepts = getattr(model, "coefs_", None), getattr(model, "intercepts_", None)
    if not isinstance(coefs, (list, tuple)) or not isinstance(intercepts, (list, tuple)) or not coefs \
            or len(coefs) != len(intercepts):
        raise InvalidProblemError(
            f"`model` ({name}) has malformed fitted weights: `coefs_` and `intercepts_` must be non-empty lists of "
            "the same length"
        )
    layers: list[Layer] = []
    for index, (coef, intercept) in enumerate(zip(coefs, intercepts, strict=True)):
        if index:
            layers.append(activation())
        W = as_float_array(f"model.coefs_[{index}]", coef, ndim=2)
        layers.append(Dense(W.T, as_float_array(f"model.intercepts_[{index}]", intercept, shape=(W.shape[1],))))
    return Network(layers, input_shape=(layers[0].W.shape[1],))


def _pair(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def _to_numpy(tensor: Any, where: str, what: str) -> np.ndarray:
    """A real tensor's values as float64 (on the CPU); complex, data-less or odd tensors are refused."""
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise InvalidProblemError(f"{where}: its {what} is a {type(tensor).__name__}, not a tensor")
    if tensor.is_complex():
        raise InvalidProblemError(f"{where}: its {what} is complex ({tensor.dtype}); only real weights are supported")
    try:
        return tensor.detach().cpu().double().numpy()
    except (RuntimeError, TypeError, NotImplementedError) as exc:  # a meta tensor holds no data, ...
        raise InvalidProblemError(f"{where}: its {what} cannot be read as numbers ({tensor.device} {tensor.dtype}): {exc}") from exc


def _with_context(where: str, build: Any, *args: Any, **kwargs: Any) -> Any:
    """``build(*args, **kwargs)``; an InvalidProblemError (NaN weights, ...) is re-raised naming the module."""
    try:
        return build(*args, **kwargs)
    except InvalidProblemError as exc:
        raise InvalidProblemError(f"{where}: {exc}") from exc


def _fold_batchnorm(linear: Layer, bn: Any, where: str) -> Layer:
    """``BN(W x + b)`` as one linear layer: rows scaled by ``γ/√(var+ε)``, bias shifted (eval-mode statistics)."""
    if bn.running_mean is None or bn.running_var is None:
        raise InvalidProblemError(
            f"{where} has no running statistics (track_running_stats=False): it cannot be folded"
        )
    mean = _to_numpy(bn.running_mean, where, "running_mean")
    var = _to_numpy(bn.running_var, where, "running_var")
    gamma = _to_numpy(bn.weight, where, "weight") if bn.weight is not None else np.ones_like(mean)
    beta = _to_numpy(bn.bias, where, "bias") if bn.bias is not None else np.zeros_like(mean)
    if np.any(var + bn.eps <= 0) or not np.all(np.isfinite(var)):
        raise InvalidProblemError(f"{where}: `running_var` + eps must be finite and > 0 for every feature")
    scale = gamma / np.sqrt(var + bn.eps)
    if scale.shape[0] != linear.W.shape[0]:
        raise InvalidProblemError(
            f"{where} has {scale.shape[0]} features but the layer before it has {linear.W.shape[0]} units"
        )
    W = linear.W * scale.reshape((-1,) + (1,) * (linear.W.ndim - 1))
    return _with_context(where, linear.with_weights, W, (linear.b - mean) * scale + beta)


def _flatten_modules(module: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(name, module)`` of every leaf, nested Sequentials expanded; names as in ``named_modules()``."""
    import torch.nn as nn

    out: list[tuple[str, Any]] = []
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(child, nn.Sequential):
            out.extend(_flatten_modules(child, path))
        else:
            out.append((path, child))
    return out


SUPPORTED_TORCH = (
    "Linear, Conv2d, ReLU, Tanh, Sigmoid, Identity, Dropout, BatchNorm1d, BatchNorm2d, MaxPool2d, AvgPool2d, Flatten"
)


def network_from_torch(module: Any, input_shape: Sequence[int] | None = None):
    """Build a :class:`~repurpose_opt.Network` from a ``torch.nn.Sequential``.

    Supported modules: Linear, Conv2d (groups=1, dilation=1, zero padding), ReLU, Tanh, Sigmoid,
    Identity, Dropout (a no-op at inference), BatchNorm1d/2d (folded into the preceding linear layer with
    its running statistics, i.e. eval-mode behaviour), MaxPool2d/AvgPool2d (no padding, floor mode),
    Flatten (start_dim=1). Nested Sequentials are expanded. Anything else is refused with an
    :class:`~repurpose_opt.InvalidProblemError` naming the module (its name in ``named_modules()`` and its
    class). A Linear layer reading a feature map needs a Flatten before it: torch's Linear would act on
    the last axis only, which is not what the network model means.
    """
    try:
        import torch.nn as nn
    except ImportError as exc:  # pragma: no cover - exercised without torch
        from .errors import BackendUnavailableError

        raise BackendUnavailableError("Network.from_torch needs torch: pip install 'repurpose-opt[torch]'") from exc
    from .network import Network

    if not isinstance(module, nn.Sequential):
        raise InvalidProblemError(f"`module` must be a torch.nn.Sequential, got {type(module).__name__}")
    if isinstance(input_shape, (int, np.integer)):
        input_shape = (int(input_shape),)
    if input_shape is not None:
        refused = f"`input_shape` must be a tuple of positive integers, got {input_shape!r:.60}"
        if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Iterable):
            raise InvalidProblemError(refused)
        try:
            input_shape = tuple(as_int("input_shape", d, minimum=1, error=InvalidProblemError) for d in input_shape)
        except TypeError as exc:  # iterable in type only, such as a 0-d array
            raise InvalidProblemError(refused) from exc
    layers: list[Layer] = []
    feature_map = input_shape is not None and len(input_shape) == 3  # a (C, H, W) tensor flows here
    for path, child in _flatten_modules(module):
        name = type(child).__name__
        where = f"module {path!r} ({name})"
        if isinstance(child, nn.Linear):
            if feature_map:
                raise InvalidProblemError(f"{where} reads a (channels, height, width) feature map: put a Flatten before it")
            b = _to_numpy(child.bias, where, "bias") if child.bias is not None else None
            W = _to_numpy(child.weight, where, "weight")
            layers.append(_with_context(where, Dense, W, b))
        elif isinstance(child, nn.Conv2d):
            if child.groups != 1 or _pair(child.dilation) != (1, 1) or child.padding_mode != "zeros":
                raise InvalidProblemError(f"{where}: only groups=1, dilation=1, zero padding are supported")
            if isinstance(child.padding, str):
                raise InvalidProblemError(f"{where}: string padding {child.padding!r} is not supported")
            b = _to_numpy(child.bias, where, "bias") if child.bias is not None else None
            W = _to_numpy(child.weight, where, "weight")
            layers.append(_with_context(where, Conv2d, W, b, stride=_pair(child.stride), padding=_pair(child.padding)))
            feature_map = True
        elif isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not layers or not layers[-1].is_linear:
                raise InvalidProblemError(f"{where} must directly follow a Linear or Conv2d layer to be folded")
            expected = nn.BatchNorm2d if isinstance(layers[-1], Conv2d) else nn.BatchNorm1d
            if not isinstance(child, expected):
                raise InvalidProblemError(f"{where} follows a {type(layers[-1]).__name__} layer: use {expected.__name__}")
            layers[-1] = _fold_batchnorm(layers[-1], child, where)
        elif isinstance(child, nn.ReLU):
            layers.append(ReLU())
        elif isinstance(child, nn.Tanh):
            layers.append(Tanh())
        elif isinstance(child, nn.Sigmoid):
            layers.append(Sigmoid())
        elif isinstance(child, (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)):
            continue
        elif isinstance(child, (nn.MaxPool2d, nn.AvgPool2d)):
            if _pair(child.padding) != (0, 0) or child.ceil_mode:
                raise InvalidProblemError(f"{where}: only padding=0 and ceil_mode=False are supported")
            if isinstance(child, nn.MaxPool2d) and (_pair(child.dilation) != (1, 1) or child.return_indices):
                raise InvalidProblemError(f"{where}: dilation and return_indices are not supported")
            if isinstance(child, nn.AvgPool2d) and child.divisor_override is not None:
                raise InvalidProblemError(f"{where}: divisor_override is not supported")
            cls = MaxPool2d if isinstance(child, nn.MaxPool2d) else AvgPool2d
            stride = child.stride if child.stride is not None else child.kernel_size
            layers.append(cls(kernel_size=_pair(child.kernel_size), stride=_pair(stride)))
        elif isinstance(child, nn.Flatten):
            if child.start_dim != 1 or child.end_dim != -1:
                raise InvalidProblemError(f"{where}: only Flatten(start_dim=1, end_dim=-1) is supported")
            layers.append(Flatten())
            feature_map = False
        else:
            raise InvalidProblemError(f"{where} is not supported; supported modules: {SUPPORTED_TORCH}")
    if not layers:
        raise InvalidProblemError("`module` holds no layers")
    if input_shape is None:
        first = next((layer for layer in layers if layer.is_linear), None)
        if not isinstance(first, Dense) or any(isinstance(layer, Flatten) for layer in layers[: layers.index(first)]):
            raise InvalidProblemError("`input_shape` is required when the first layer is not a Linear layer")
        input_shape = (first.W.shape[1],)
    return Network(layers, input_shape=tuple(input_shape))
