"""PartitionProblem: choose the placements π_0..π_L only; weights unchanged (SPEC §3)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .._validation import as_choice
from ..cluster import Cluster
from ..errors import InvalidProblemError
from ..network import Network
from ._common import check_imbalance, check_input_placement, check_network_and_cluster, check_output, layer_capacities

__all__ = ["PartitionProblem"]

OBJECTIVES = ("volume", "latency")


@dataclass(frozen=True, eq=False)
class PartitionProblem:
    """Place every unit of every layer on one of K workers, minimising communication or latency.

    This is the multi-layer hypergraph km1 partitioning problem with per-layer balance: the weights stay as
    they are; only the placement changes.

    Parameters
    ----------
    network : Network
    cluster : Cluster
    input_placement : {"replicated", "free"} or int array of length n_0
        Who holds the input: everybody, a placement chosen by the solver (balanced), or a fixed one.
    output : {"gather", "distributed"}
        Whether the outputs are collected on worker 0 (counted as communication).
    imbalance : float
        ε >= 0 in the balance capacity ``⌈(1 + ε)·n_l·r_k / Σ r⌉``.
    objective : {"volume", "latency"}
        Total scalars sent per sample, or the α-β latency per sample in seconds.

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> net = ro.Network([ro.Dense(np.eye(4)), ro.ReLU(), ro.Dense(np.eye(4))], input_shape=(4,))
    >>> problem = ro.PartitionProblem(net, ro.Cluster(k=2), input_placement="free", output="distributed")
    >>> [c.tolist() for c in problem.capacities]
    [[2, 2], [2, 2], [2, 2]]
    """

    network: Network
    cluster: Cluster
    input_placement: Any = "replicated"
    output: str = "gather"
    imbalance: float = 0.0
    objective: str = "volume"

    def __post_init__(self) -> None:
        check_network_and_cluster(self.network, self.cluster)
        object.__setattr__(self, "input_placement", check_input_placement(self.input_placement, self.network, self.cluster))
        object.__setattr__(self, "output", check_output(self.output))
        object.__setattr__(self, "imbalance", check_imbalance(self.imbalance))
        object.__setattr__(self, "objective", as_choice("objective", self.objective, OBJECTIVES, error=InvalidProblemError))

    @property
    def k(self) -> int:
        return self.cluster.k

    @property
    def input_mode(self) -> str:
        """``"replicated"``, ``"free"`` or ``"fixed"``."""
        return self.input_placement if isinstance(self.input_placement, str) else "fixed"

    @cached_property
    def capacities(self) -> tuple[np.ndarray | None, ...]:
        """Max units per worker in each layer (index 0 is the input; ``None`` unless it is free)."""
        return layer_capacities(self.network, self.cluster, self.imbalance, self.input_mode == "free")

    def objective_value(self, report: Any, network: Any = None) -> float:
        """The objective of a :class:`~repurpose_opt.SimulationReport` in problem units."""
        return float(report.comm_scalars if self.objective == "volume" else report.latency)

    def size(self) -> int:
        """Total number of units to place (the input counted only when it is free)."""
        counts = self.network.unit_counts
        return int(sum(counts[1:]) + (counts[0] if self.input_mode == "free" else 0))
