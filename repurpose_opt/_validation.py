"""One place where arguments are converted and checked.

Every public entry point funnels its arguments through these helpers so that bad input always raises the
same kind of error with a message of the form ``"`name` must be ..., got ..."``; tests pin those messages.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .errors import InvalidParameterError, InvalidProblemError

_ErrorType = type[InvalidProblemError] | type[InvalidParameterError]


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def as_float_array(
    name: str,
    value: Any,
    *,
    ndim: int | tuple[int, ...] | None = None,
    shape: tuple[int | None, ...] | None = None,
    error: _ErrorType = InvalidProblemError,
    allow_empty: bool = False,
) -> np.ndarray:
    """Return ``value`` as a finite float64 array, or raise ``error`` naming ``name``."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise error(f"`{name}` must be an array of real numbers, got {_describe(value)}") from exc
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if array.ndim not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise error(f"`{name}` must be a {want}-dimensional array, got shape {array.shape}")
    if shape is not None:
        if array.ndim != len(shape) or any(
            want is not None and got != want for got, want in zip(array.shape, shape)
        ):
            want_text = "(" + ", ".join("?" if w is None else str(w) for w in shape) + ")"
            raise error(f"`{name}` must have shape {want_text}, got {array.shape}")
    if array.size == 0 and not allow_empty:
        raise error(f"`{name}` must not be empty, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise error(f"`{name}` must be finite, got {bad} NaN or infinite entries")
    return array


def as_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    error: _ErrorType = InvalidParameterError,
) -> int:
    """Return ``value`` as a Python int (bools and non-integral floats refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise error(f"`{name}` must be an integer, got {_describe(value)}")
    result = int(value)
    if minimum is not None and result < minimum:
        raise error(f"`{name}` must be >= {minimum}, got {result}")
    if maximum is not None and result > maximum:
        raise error(f"`{name}` must be <= {maximum}, got {result}")
    return result


def as_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    strictly_positive: bool = False,
    maximum: float | None = None,
    error: _ErrorType = InvalidParameterError,
) -> float:
    """Return ``value`` as a finite Python float within the given range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise error(f"`{name}` must be a real number, got {_describe(value)}")
    result = float(value)
    if not math.isfinite(result):
        raise error(f"`{name}` must be finite, got {result}")
    if strictly_positive and result <= 0:
        raise error(f"`{name}` must be > 0, got {result}")
    if minimum is not None and result < minimum:
        raise error(f"`{name}` must be >= {minimum}, got {result}")
    if maximum is not None and result > maximum:
        raise error(f"`{name}` must be <= {maximum}, got {result}")
    return result


def as_choice(name: str, value: Any, choices: tuple[str, ...], *, error: _ErrorType = InvalidParameterError) -> str:
    """Return ``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise error(f"`{name}` must be one of {listed}, got {_describe(value)}")
    return value


def as_placement(name: str, value: Any, n_units: int, k: int, *, error: _ErrorType = InvalidParameterError) -> np.ndarray:
    """Return a read-only int64 placement of length ``n_units`` with entries in ``0..k-1``."""
    try:
        array = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is the user's input
        raise error(f"`{name}` must be an integer array, got {_describe(value)}") from exc
    if array.ndim != 1 or array.shape[0] != n_units:
        raise error(f"`{name}` must be a 1-D array of length {n_units}, got shape {array.shape}")
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise error(f"`{name}` must hold integers (worker indices), got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= k):
        raise error(
            f"`{name}` must hold worker indices in 0..{k - 1}, got values in {array.min()}..{array.max()}"
        )
    array.flags.writeable = False
    return array


def readonly(array: np.ndarray) -> np.ndarray:
    """Return an owned, read-only copy (immutable objects must not alias the caller's buffers)."""
    out = np.array(array, copy=True)
    out.flags.writeable = False
    return out
