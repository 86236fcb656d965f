"""The cluster: K workers, their relative speeds and capacities, and the α-β link model (SPEC §2)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import as_float, as_float_array, as_int, as_path, readonly
from .errors import FormatError, InvalidProblemError

__all__ = ["Cluster", "MAX_WORKERS", "MAX_DTYPE_BYTES"]

#: Largest K accepted. The α-β model keeps two K×K matrices and the simulator one K×K byte matrix per
#: layer, so K is capped where those stay small (8 MiB each); a layer must have at least K units anyway.
MAX_WORKERS = 1024
#: Largest ``dtype_bytes`` accepted (a float64 is 8); it keeps byte counts far from integer overflow.
MAX_DTYPE_BYTES = 1024


def _per_worker(name: str, value: Any, k: int) -> np.ndarray | None:
    if value is None:
        return None
    array = as_float_array(name, value, ndim=(0, 1))
    array = np.broadcast_to(array, (k,)) if array.ndim == 0 else array
    if array.shape != (k,):
        raise InvalidProblemError(f"`{name}` must be a scalar or have shape ({k},), got {array.shape}")
    if np.any(array <= 0):
        raise InvalidProblemError(f"`{name}` must be > 0 for every worker, got minimum {array.min()}")
    return readonly(array)


def _per_link(name: str, value: Any, k: int, *, positive: bool) -> np.ndarray:
    array = as_float_array(name, value, ndim=(0, 2))
    array = np.broadcast_to(array, (k, k)) if array.ndim == 0 else array
    if array.shape != (k, k):
        raise InvalidProblemError(f"`{name}` must be a scalar or a {k}x{k} matrix, got {array.shape}")
    off = ~np.eye(k, dtype=bool)
    if positive and np.any(array[off] <= 0):
        raise InvalidProblemError(f"`{name}` must be > 0 on every link")
    if not positive and np.any(array[off] < 0):
        raise InvalidProblemError(f"`{name}` must be >= 0 on every link")
    return readonly(array)


@dataclass(frozen=True, eq=False)
class Cluster:
    """K workers with relative speeds, optional capacities and an α-β link model.

    Parameters
    ----------
    k : int
        Number of workers, 1..:data:`MAX_WORKERS` (1024).
    speed : array-like of shape (k,), optional
        Relative speeds ``r_k`` (default all 1); they scale balance capacities and compute time.
    flop_rate : float
        FLOPs per second of a speed-1 worker.
    flops_capacity, param_capacity : float or array-like of shape (k,), optional
        Per-worker limits on FLOPs per sample and on parameters (hard constraints of every problem).
    bandwidth : float or (k, k) array
        β in bytes per second, per directed link.
    latency : float or (k, k) array
        α in seconds, per message on a directed link.
    dtype_bytes : int
        Bytes per scalar on the wire, 1..:data:`MAX_DTYPE_BYTES` (1024).

    Examples
    --------
    >>> import repurpose_opt as ro
    >>> cluster = ro.Cluster(k=4)
    >>> cluster.k, cluster.speed.tolist()
    (4, [1.0, 1.0, 1.0, 1.0])
    """

    k: int
    speed: Any = None
    flop_rate: float = 1e9
    flops_capacity: Any = None
    param_capacity: Any = None
    bandwidth: Any = 1e8
    latency: Any = 1e-4
    dtype_bytes: int = 4

    def __post_init__(self) -> None:
        k = as_int("k", self.k, minimum=1, maximum=MAX_WORKERS, error=InvalidProblemError)
        object.__setattr__(self, "k", k)
        speed = _per_worker("speed", 1.0 if self.speed is None else self.speed, k)
        with np.errstate(over="ignore"):
            if not np.isfinite(speed.sum()):  # shares are speed / Σ speed everywhere
                raise InvalidProblemError(f"`speed` must have a finite sum, got speeds up to {speed.max():.3g}")
        object.__setattr__(self, "speed", speed)
        object.__setattr__(self, "flop_rate", as_float("flop_rate", self.flop_rate, strictly_positive=True, error=InvalidProblemError))
        object.__setattr__(self, "flops_capacity", _per_worker("flops_capacity", self.flops_capacity, k))
        object.__setattr__(self, "param_capacity", _per_worker("param_capacity", self.param_capacity, k))
        object.__setattr__(self, "bandwidth", _per_link("bandwidth", self.bandwidth, k, positive=True))
        object.__setattr__(self, "latency", _per_link("latency", self.latency, k, positive=False))
        object.__setattr__(self, "dtype_bytes", as_int("dtype_bytes", self.dtype_bytes, minimum=1, maximum=MAX_DTYPE_BYTES, error=InvalidProblemError))

    @property
    def identical_workers(self) -> bool:
        """True when relabelling workers changes nothing (same speeds, capacities and links)."""
        def uniform(a: np.ndarray | None) -> bool:
            return a is None or bool(np.all(a == a.flat[0]))

        off = ~np.eye(self.k, dtype=bool)
        return (
            uniform(self.speed)
            and uniform(self.flops_capacity)
            and uniform(self.param_capacity)
            and (self.k < 2 or (uniform(self.bandwidth[off]) and uniform(self.latency[off])))
        )

    def balance_capacity(self, n_units: int, imbalance: float = 0.0) -> np.ndarray:
        """Units each worker may hold in a layer of ``n_units``: ``⌈(1 + ε)·n·r_k / Σ r⌉``."""
        relative = self.speed / self.speed.max()  # normalised first: a sum of huge speeds must not overflow
        share = (1.0 + imbalance) * n_units * relative / relative.sum()
        # A tiny slack keeps exact shares like 64·1/4 = 16 from rounding up to 17 through float noise; no
        # worker can hold more than the layer, so a huge imbalance caps at n (and never overflows int64).
        return np.minimum(np.ceil(np.minimum(share, n_units) - 1e-9), n_units).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description; :meth:`from_dict` inverts it."""
        def plain(a: Any) -> Any:
            return None if a is None else np.asarray(a).tolist()

        return {
            "k": self.k,
            "speed": plain(self.speed),
            "flop_rate": self.flop_rate,
            "flops_capacity": plain(self.flops_capacity),
            "param_capacity": plain(self.param_capacity),
            "bandwidth": plain(self.bandwidth),
            "latency": plain(self.latency),
            "dtype_bytes": self.dtype_bytes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cluster:
        """Build a cluster from :meth:`to_dict`'s output."""
        if not isinstance(data, dict) or "k" not in data:
            raise FormatError("a cluster description must be a mapping with at least the key 'k'")
        allowed = {"k", "speed", "flop_rate", "flops_capacity", "param_capacity", "bandwidth", "latency", "dtype_bytes"}
        unknown = sorted(str(key) for key in set(data) - allowed)
        if unknown:
            raise FormatError(f"unknown cluster keys {unknown}; valid keys are {sorted(allowed)}")
        return cls(**data)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the cluster as JSON (atomically: a temporary file, then a rename)."""
        from ._io import write_text_atomic

        return write_text_atomic(path, json.dumps({"format": "repurpose-opt/cluster", "version": 1, **self.to_dict()}, indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Cluster:
        """Read a cluster written by :meth:`save`."""
        path = as_path("path", path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise FormatError(f"`path` {str(path)!r} is not a readable cluster JSON file: {exc}") from exc
        if not isinstance(data, dict) or data.pop("format", None) != "repurpose-opt/cluster":
            raise FormatError(f"{str(path)!r} is not a repurpose-opt cluster file")
        version = data.pop("version", None)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise FormatError(f"{str(path)!r} has no valid cluster format version, got {version!r}")
        if version > 1:
            raise FormatError(
                f"{str(path)!r} has cluster format version {version!r}; this repurpose-opt reads version 1: upgrade the package"
            )
        try:
            return cls.from_dict(data)
        except InvalidProblemError as exc:
            raise FormatError(f"{str(path)!r} describes an invalid cluster: {exc}") from exc
