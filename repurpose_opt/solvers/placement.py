"""Placement helpers shared by the backends: block sizes, contiguous splits, the input layer, capacities."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..simulator import REPLICATED

__all__ = ["block_sizes", "contiguous_placement", "fixed_input", "extra_capacity_violation", "worker_loads"]


def block_sizes(n: int, speed: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Units per worker, proportional to speed (largest remainder), each within ``capacity``."""
    share = n * speed / speed.sum()
    sizes = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - sizes), kind="stable")
    sizes[order[: n - sizes.sum()]] += 1
    if np.any(sizes > capacity):  # pragma: no cover - capacity is ⌈(1+ε)·share⌉ >= these sizes
        raise AssertionError("block sizes exceed the balance capacity")
    return sizes


def contiguous_placement(sizes: np.ndarray) -> np.ndarray:
    """Units 0..n-1 cut into consecutive blocks of ``sizes`` (worker 0 first)."""
    return np.repeat(np.arange(sizes.shape[0]), sizes).astype(np.int64)


def fixed_input(problem: Any) -> np.ndarray | None:
    """``assignment[0]`` when the problem fixes it (replicated: all -1; fixed: the given array), else None."""
    if problem.input_mode == "replicated":
        return np.full(problem.network.unit_counts[0], REPLICATED, dtype=np.int64)
    if problem.input_mode == "fixed":
        return np.asarray(problem.input_placement, dtype=np.int64)
    return None


def worker_loads(network: Any, assignment: tuple[np.ndarray, ...], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-worker FLOPs per sample and parameters of an assignment (SPEC §2)."""
    flops, params = np.zeros(k), np.zeros(k)
    for layer, placement in zip(network.structure, assignment[1:]):
        flops += np.bincount(placement, weights=layer.flops_per_unit, minlength=k)
        params += np.bincount(placement, weights=layer.params_per_unit, minlength=k)
    return flops, params


def extra_capacity_violation(problem: Any, assignment: tuple[np.ndarray, ...]) -> str | None:
    """A sentence naming the first FLOPs/parameter capacity the assignment breaks, or None."""
    cluster = problem.cluster
    if cluster.flops_capacity is None and cluster.param_capacity is None:
        return None
    flops, params = worker_loads(problem.network, assignment, cluster.k)
    for name, load, cap in (("FLOPs", flops, cluster.flops_capacity), ("parameter", params, cluster.param_capacity)):
        if cap is not None and np.any(load > cap):
            worker = int(np.argmax(load - cap))
            return f"worker {worker} exceeds its {name} capacity ({load[worker]:.6g} > {cap[worker]:.6g})"
    return None
