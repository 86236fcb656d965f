"""One place where arguments are converted and checked.

Every public entry point funnels its arguments through these helpers so that bad input always raises the
same kind of error with a message of the form ``"`name` must be ..., got ..."``; tests pin those messages.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidParameterError, InvalidProblemError

_ErrorType = type[InvalidProblemError] | type[InvalidParameterError]


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * math.log10(2))} digits"  # repr may refuse it
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the real error
        return f"a {type(value).__name__}"
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
    """Return ``value`` as a finite float64 array, or raise ``error`` naming ``name``.

    Only real numbers are accepted: booleans and integers convert, but complex numbers (whose imaginary
    part a cast would silently drop), strings (which numpy would parse) and other objects are refused.
    """
    array = _real_array(name, value, error)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if array.ndim not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise error(f"`{name}` must be a {want}-dimensional array, got shape {array.shape}")
    if shape is not None:
        if array.ndim != len(shape) or any(
            want is not None and got != want for got, want in zip(array.shape, shape, strict=True)
        ):
            want_text = "(" + ", ".join("?" if w is None else str(w) for w in shape) + ("," if len(shape) == 1 else "") + ")"
            raise error(f"`{name}` must have shape {want_text}, got {array.shape}")
    if array.size == 0 and not allow_empty:
        raise error(f"`{name}` must not be empty, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise error(f"`{name}` must be finite, got {bad} NaN or infinite entries")
    return array


def _real_array(name: str, value: Any, error: _ErrorType) -> np.ndarray:
    """``value`` as float64 if it holds real numbers only (bool, int, float), else raise ``error``."""
    refused = f"`{name}` must be an array of real numbers, got {_describe(value)}"
    try:
        raw = value if isinstance(value, np.ndarray) else np.asarray(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:  # ragged nesting, odd objects
        raise error(refused) from exc
    if raw.dtype.kind == "O":
        # Python ints beyond int64, or numbers mixed with other objects: accept real numbers only.
        if not all(isinstance(v, numbers.Real) for v in raw.flat):
            raise error(refused)
    elif raw.dtype.kind not in "biuf":
        raise error(f"`{name}` must be an array of real numbers, got dtype {raw.dtype}")
    try:
        return np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise error(f"`{name}` must be an array of real numbers within the float64 range, got {_describe(value)}") from exc


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
        raise error(f"`{name}` must be >= {minimum}, got {_describe(result)}")
    if maximum is not None and result > maximum:
        raise error(f"`{name}` must be <= {maximum}, got {_describe(result)}")
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
    try:
        result = float(value)
    except OverflowError:  # an int beyond the float64 range
        raise error(f"`{name}` must be finite, got {_describe(value)}") from None
    if not math.isfinite(result):
        raise error(f"`{name}` must be finite, got {result}")
    if strictly_positive and result <= 0:
        raise error(f"`{name}` must be > 0, got {result}")
    if minimum is not None and result < minimum:
        raise error(f"`{name}` must be >= {minimum}, got {result}")
    if maximum is not None and result > maximum:
        raise error(f"`{name}` must be <= {maximum}, got {result}")
    return result


def as_bool(name: str, value: Any, *, error: _ErrorType = InvalidParameterError) -> bool:
    """Return ``value`` if it is a bool (``numpy.bool_`` included); truthy stand-ins such as 1 or "no" are refused."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise error(f"`{name}` must be True or False, got {_describe(value)}")


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
    if array.dtype.kind == "O" and array.size and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in array.flat
    ):  # Python ints beyond int64: integers all the same, so the range is what is wrong
        low, high = min(array.flat), max(array.flat)
        raise error(f"`{name}` must hold worker indices in 0..{k - 1}, got values in {_describe(low)}..{_describe(high)}")
    if array.dtype.kind not in "iu":
        raise error(f"`{name}` must hold integers (worker indices), got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= k):
        raise error(
            f"`{name}` must hold worker indices in 0..{k - 1}, got values in {array.min()}..{array.max()}"
        )
    array.flags.writeable = False
    return array


def as_path(name: str, value: Any, *, error: _ErrorType = InvalidParameterError) -> Path:
    """Return ``value`` as a :class:`~pathlib.Path` if it is a non-empty ``str`` or ``os.PathLike`` of str."""
    if isinstance(value, (str, os.PathLike)):
        try:
            path = Path(value)
        except TypeError:  # a PathLike whose __fspath__ returns bytes
            path = None
        if path is not None and str(value) != "" and "\0" not in str(path):
            return path
    raise error(f"`{name}` must be a file system path (a non-empty str or os.PathLike), got {_describe(value)}")


def readonly(array: np.ndarray) -> np.ndarray:
    """Return an owned, read-only copy (immutable objects must not alias the caller's buffers)."""
    out = np.array(array, copy=True)
    out.flags.writeable = False
    return out
