"""Import trained models from scikit-learn and PyTorch.

torch is imported only inside :func:`network_from_torch`, never at package import time.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

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
    activation = _SKLEARN_ACTIVATIONS.get(model.activation)
    if activation is None:
        raise InvalidProblemError(f"`model.activation` {model.activation!r} is not supported")
    layers: list[Layer] = []
    for index, (coef, intercept) in enumerate(zip(model.coefs_, model.intercepts_)):
        if index:
            layers.append(activation())
        layers.append(Dense(np.asarray(coef, dtype=np.float64).T, np.asarray(intercept, dtype=np.float64)))
    return Network(layers, input_shape=(model.coefs_[0].shape[0],))


def _pair(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def _fold_batchnorm(linear: Layer, bn: Any, position: int) -> Layer:
    if bn.running_mean is None or bn.running_var is None:
        raise InvalidProblemError(
            f"module {position} ({type(bn).__name__}) has no running statistics (track_running_stats=False): "
            "it cannot be folded"
        )
    mean = bn.running_mean.detach().double().numpy()
    var = bn.running_var.detach().double().numpy()
    gamma = bn.weight.detach().double().numpy() if bn.weight is not None else np.ones_like(mean)
    beta = bn.bias.detach().double().numpy() if bn.bias is not None else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + bn.eps)
    if scale.shape[0] != linear.W.shape[0]:
        raise InvalidProblemError(
            f"module {position} ({type(bn).__name__}) has {scale.shape[0]} features but the layer before "
            f"it has {linear.W.shape[0]} units"
        )
    W = linear.W * scale.reshape((-1,) + (1,) * (linear.W.ndim - 1))
    return linear.with_weights(W, (linear.b - mean) * scale + beta)


def _flatten_modules(module: Any) -> list[Any]:
    import torch.nn as nn

    if isinstance(module, nn.Sequential):
        out: list[Any] = []
        for child in module:
            out.extend(_flatten_modules(child))
        return out
    return [module]


def network_from_torch(module: Any, input_shape: Sequence[int] | None = None):
    """Build a :class:`~repurpose_opt.Network` from a ``torch.nn.Sequential``.

    Supported modules: Linear, Conv2d (groups=1, dilation=1, zero padding), ReLU, Tanh, Sigmoid,
    Identity, Dropout (a no-op at inference), BatchNorm1d/2d (folded into the preceding linear layer with
    its running statistics), MaxPool2d/AvgPool2d (no padding, floor mode), Flatten (start_dim=1).
    """
    try:
        import torch.nn as nn
    except ImportError as exc:  # pragma: no cover - exercised without torch
        from .errors import BackendUnavailableError

        raise BackendUnavailableError("Network.from_torch needs torch: pip install 'repurpose-opt[torch]'") from exc
    from .network import Network

    if not isinstance(module, nn.Sequential):
        raise InvalidProblemError(f"`module` must be a torch.nn.Sequential, got {type(module).__name__}")
    layers: list[Layer] = []
    for position, child in enumerate(_flatten_modules(module)):
        name = type(child).__name__
        if isinstance(child, nn.Linear):
            b = child.bias.detach().double().numpy() if child.bias is not None else None
            layers.append(Dense(child.weight.detach().double().numpy(), b))
        elif isinstance(child, nn.Conv2d):
            if child.groups != 1 or _pair(child.dilation) != (1, 1) or child.padding_mode != "zeros":
                raise InvalidProblemError(f"module {position} ({name}): only groups=1, dilation=1, zero padding are supported")
            if isinstance(child.padding, str):
                raise InvalidProblemError(f"module {position} ({name}): string padding {child.padding!r} is not supported")
            b = child.bias.detach().double().numpy() if child.bias is not None else None
            layers.append(Conv2d(child.weight.detach().double().numpy(), b, stride=_pair(child.stride), padding=_pair(child.padding)))
        elif isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not layers or not layers[-1].is_linear:
                raise InvalidProblemError(f"module {position} ({name}) must directly follow a Linear or Conv2d layer to be folded")
            layers[-1] = _fold_batchnorm(layers[-1], child, position)
        elif isinstance(child, nn.ReLU):
            layers.append(ReLU())
        elif isinstance(child, nn.Tanh):
            layers.append(Tanh())
        elif isinstance(child, nn.Sigmoid):
            layers.append(Sigmoid())
        elif isinstance(child, (nn.Identity, nn.Dropout)):
            continue
        elif isinstance(child, (nn.MaxPool2d, nn.AvgPool2d)):
            if _pair(child.padding) != (0, 0) or child.ceil_mode:
                raise InvalidProblemError(f"module {position} ({name}): only padding=0 and ceil_mode=False are supported")
            if isinstance(child, nn.MaxPool2d) and _pair(child.dilation) != (1, 1):
                raise InvalidProblemError(f"module {position} ({name}): dilation is not supported")
            if isinstance(child, nn.AvgPool2d) and child.divisor_override is not None:
                raise InvalidProblemError(f"module {position} ({name}): divisor_override is not supported")
            cls = MaxPool2d if isinstance(child, nn.MaxPool2d) else AvgPool2d
            stride = child.stride if child.stride is not None else child.kernel_size
            layers.append(cls(kernel_size=_pair(child.kernel_size), stride=_pair(stride)))
        elif isinstance(child, nn.Flatten):
            if child.start_dim != 1 or child.end_dim != -1:
                raise InvalidProblemError(f"module {position} ({name}): only Flatten(start_dim=1, end_dim=-1) is supported")
            layers.append(Flatten())
        else:
            raise InvalidProblemError(
                f"module {position} ({name}) is not supported; supported: Linear, Conv2d, ReLU, Tanh, Sigmoid, "
                "Identity, Dropout, BatchNorm1d, BatchNorm2d, MaxPool2d, AvgPool2d, Flatten"
            )
    if input_shape is None:
        first = next((layer for layer in layers if layer.is_linear), None)
        if not isinstance(first, Dense) or any(isinstance(layer, Flatten) for layer in layers[: layers.index(first)]):
            raise InvalidProblemError("`input_shape` is required when the first layer is not a Linear layer")
        input_shape = (first.W.shape[1],)
    return Network(layers, input_shape=tuple(input_shape))
