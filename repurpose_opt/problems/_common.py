"""Validation shared by every problem that places a network on a cluster."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import as_choice, as_float, as_placement
from ..cluster import Cluster
from ..errors import InvalidProblemError
from ..network import Network, NetworkTrace

INPUT_MODES = ("replicated", "free")
OUTPUT_MODES = ("gather", "distributed")


def check_network_and_cluster(network: Any, cluster: Any) -> None:
    """Type checks, and K must not exceed any layer's width (a worker would own nothing)."""
    if not isinstance(network, Network):
        raise InvalidProblemError(f"`network` must be a repurpose_opt.Network, got {type(network).__name__}")
    if not isinstance(cluster, Cluster):
        raise InvalidProblemError(f"`cluster` must be a repurpose_opt.Cluster, got {type(cluster).__name__}")
    for l, n in enumerate(network.unit_counts[1:], start=1):
        if cluster.k > n:
            raise InvalidProblemError(
                f"`cluster.k` = {cluster.k} is larger than layer {l}, which has {n} units: every worker must "
                "own at least one unit; use fewer workers"
            )


def check_input_placement(value: Any, network: Network, cluster: Cluster) -> str | np.ndarray:
    """``"replicated"``, ``"free"`` or a read-only int array of length n_0 with entries in 0..K-1."""
    if isinstance(value, str):
        mode = as_choice("input_placement", value, INPUT_MODES, error=InvalidProblemError)
        if mode == "free" and cluster.k > network.unit_counts[0]:
            raise InvalidProblemError(
                f"`cluster.k` = {cluster.k} is larger than the input, which has {network.unit_counts[0]} units: "
                "a free input placement cannot give every worker a unit"
            )
        return mode
    return as_placement("input_placement", value, network.unit_counts[0], cluster.k, error=InvalidProblemError)


def check_output(value: Any) -> str:
    return as_choice("output", value, OUTPUT_MODES, error=InvalidProblemError)


def check_imbalance(value: Any) -> float:
    return as_float("imbalance", value, minimum=0.0, error=InvalidProblemError)


def layer_capacities(network: Network, cluster: Cluster, imbalance: float, input_free: bool) -> tuple[np.ndarray | None, ...]:
    """Per layer (index 0 = input, ``None`` unless free) the max units per worker."""
    caps: list[np.ndarray | None] = [cluster.balance_capacity(network.unit_counts[0], imbalance) if input_free else None]
    caps += [cluster.balance_capacity(n, imbalance) for n in network.unit_counts[1:]]
    for cap in caps:
        if cap is not None:
            cap.flags.writeable = False
    return tuple(caps)


# Sums of squares over a calibration batch (Gram matrices, energies) must stay finite: float64 holds ~1.8e308.
_ENERGY_LIMIT = 1e300


def check_no_overflow(name: str, trace: NetworkTrace) -> None:
    """Refuse calibration data whose forward pass (``trace``), or whose sums of squares, overflow float64.

    Finite inputs such as ``1e300`` pass the finiteness check but make every Gram matrix infinite, so every
    backend would fail later with a native message; this names the argument up front instead.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        for where, array in [("the input", trace.activations[0])] + [
            (f"layer {l}'s pre-activations", z) for l, z in enumerate(trace.pre_activations, start=1)
        ]:
            peak = float(np.max(np.abs(array))) if array.size else 0.0
            if not np.isfinite(peak) or peak * peak * array.size > _ENERGY_LIMIT:
                raise InvalidProblemError(
                    f"`{name}` overflows float64 in {where} (largest magnitude {peak:.3g}); rescale the network or the data"
                )
