"""RestructureProblem: choose placements and adjusted weights together (SPEC §3, the RePurpose problem)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .._validation import as_choice, as_float, as_float_array, readonly
from ..cluster import Cluster
from ..errors import InvalidProblemError
from ..network import Network, NetworkTrace
from ._common import (
    check_imbalance,
    check_input_placement,
    check_network_and_cluster,
    check_no_overflow,
    check_output,
    layer_capacities,
)

__all__ = ["RestructureProblem", "calibration_errors"]

FIT_MODES = ("cascade",)


def calibration_errors(original: Network, restructured: Network, X: np.ndarray,
                       reference: NetworkTrace | None = None) -> np.ndarray:
    """Per-layer ``||Ẑ_l − Z_l||_F / ||Z_l||_F`` with both networks run on ``X`` (cascade errors);
    ``reference``: ``original.trace(X)`` when the caller already has it."""
    a, b = original.trace(X) if reference is None else reference, restructured.trace(X)
    out = []
    for z, z_hat in zip(a.pre_activations, b.pre_activations, strict=False):
        norm = float(np.linalg.norm(z))
        out.append(float(np.linalg.norm(z_hat - z)) / norm if norm > 0 else float(np.linalg.norm(z_hat)))
    return np.asarray(out)


def per_layer(name: str, value: Any, n_layers: int | None, error: type = InvalidProblemError) -> tuple[float, ...]:
    """``value`` (a scalar or one entry per linear layer, each >= 0) as one float per layer, or ``error`` naming
    ``name``; ``n_layers=None`` checks everything but the length (and keeps a scalar as one entry)."""
    array = as_float_array(name, value, ndim=(0, 1), error=error)
    if array.ndim == 0 and n_layers is not None:
        array = np.full(n_layers, float(array))
    if n_layers is not None and array.shape != (n_layers,):
        raise error(f"`{name}` must be a scalar or have one entry per linear layer ({n_layers}), got shape {array.shape}")
    if np.any(array < 0):
        raise error(f"`{name}` must be >= 0, got minimum {array.min()}")
    return tuple(float(v) for v in array.reshape(-1))


@dataclass(frozen=True, eq=False)
class RestructureProblem:
    """Restructure a trained network for K workers: placements plus ℓ0-pruned, refit weights.

    Parameters
    ----------
    network : Network
        The trained network.
    cluster : Cluster
    calibration : array-like (N, *input_shape)
        Calibration inputs; layer l is refit on the restructured layer l-1 outputs against the original
        layer-l pre-activations (cascade), so errors do not pile up.
    input_placement : {"replicated", "free"} or int array
    output : {"gather", "distributed"}
    imbalance : float
    tolerance : float or sequence of float, optional
        Relative calibration error allowed per layer: ``||Ẑ_l − Z_l||_F ≤ tolerance_l · ||Z_l||_F``.
    comm_budget : float or sequence of float, optional
        Scalars per sample: a total (split over layers in proportion to their all-to-all volume, after the
        smallest possible gather) or one budget per layer. Exactly one of ``tolerance`` and
        ``comm_budget`` must be given.
    fit : {"cascade"}

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> rng = np.random.default_rng(0)
    >>> net = ro.Network([ro.Dense(rng.normal(size=(8, 6))), ro.ReLU(), ro.Dense(rng.normal(size=(4, 8)))],
    ...                  input_shape=(6,))
    >>> problem = ro.RestructureProblem(net, ro.Cluster(k=2), calibration=rng.normal(size=(100, 6)), tolerance=0.1)
    >>> problem.tolerances
    (0.1, 0.1)
    """

    network: Network
    cluster: Cluster
    calibration: Any
    input_placement: Any = "replicated"
    output: str = "gather"
    imbalance: float = 0.0
    tolerance: Any = None
    comm_budget: Any = None
    fit: str = "cascade"

    def __post_init__(self) -> None:
        check_network_and_cluster(self.network, self.cluster)
        X = self.network._check_input(self.calibration, "calibration")
        if X.shape[0] < 1:
            raise InvalidProblemError("`calibration` must hold at least one sample")
        object.__setattr__(self, "calibration", readonly(X))
        check_no_overflow("calibration", self.calibration_trace)
        object.__setattr__(self, "input_placement", check_input_placement(self.input_placement, self.network, self.cluster))
        object.__setattr__(self, "output", check_output(self.output))
        object.__setattr__(self, "imbalance", check_imbalance(self.imbalance))
        object.__setattr__(self, "fit", as_choice("fit", self.fit, FIT_MODES, error=InvalidProblemError))
        if (self.tolerance is None) == (self.comm_budget is None):
            raise InvalidProblemError("give exactly one of `tolerance` and `comm_budget`")
        L = self.network.n_layers
        if self.tolerance is not None:
            object.__setattr__(self, "tolerance", per_layer("tolerance", self.tolerance, L))
        else:
            budget = as_float_array("comm_budget", self.comm_budget, ndim=(0, 1))  # refuses ragged lists too
            if budget.ndim == 0:
                object.__setattr__(self, "comm_budget", as_float("comm_budget", float(budget), minimum=0.0, error=InvalidProblemError))
            else:
                object.__setattr__(self, "comm_budget", per_layer("comm_budget", budget, L))

    @property
    def k(self) -> int:
        return self.cluster.k

    @property
    def objective(self) -> str:
        return "volume"

    @property
    def input_mode(self) -> str:
        return self.input_placement if isinstance(self.input_placement, str) else "fixed"

    @property
    def tolerances(self) -> tuple[float, ...] | None:
        """Per-layer tolerances (``None`` in budget mode)."""
        return self.tolerance

    @cached_property
    def capacities(self) -> tuple[np.ndarray | None, ...]:
        return layer_capacities(self.network, self.cluster, self.imbalance, self.input_mode == "free")

    @cached_property
    def calibration_trace(self) -> NetworkTrace:
        """The original network's forward pass on the calibration data, every intermediate kept (read-only);
        computed once and shared by the validation and every engine."""
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported by check_no_overflow
            trace = self.network.trace(self.calibration)
        return NetworkTrace(tuple(map(readonly, trace.activations)), tuple(map(readonly, trace.pre_activations)))

    @cached_property
    def minimum_gather(self) -> float:
        """Scalars per sample every placement sends to gather the outputs on worker 0 (0 when distributed):
        the outputs that do not fit on worker 0 under the balance constraint."""
        if self.output != "gather":
            return 0.0
        counts, sizes = self.network.unit_counts, self.network.message_sizes
        return float(sizes[-1] * max(counts[-1] - int(self.capacities[-1][0]), 0))

    @cached_property
    def layer_budgets(self) -> tuple[float, ...] | None:
        """Per-layer volume budgets in scalars (``None`` in tolerance mode)."""
        if self.comm_budget is None:
            return None
        if isinstance(self.comm_budget, tuple):
            return self.comm_budget
        counts, sizes = self.network.unit_counts, self.network.message_sizes
        spare = max(self.comm_budget - self.minimum_gather, 0.0)
        all_to_all = np.array([counts[l - 1] * sizes[l - 1] for l in range(1, len(counts))], dtype=float)
        if self.input_mode == "replicated":
            all_to_all[0] = 0.0
        share = all_to_all / all_to_all.sum() if all_to_all.sum() > 0 else np.zeros_like(all_to_all)
        return tuple(float(v) for v in spare * share)

    def objective_value(self, report: Any, network: Any = None) -> float:
        return float(report.comm_scalars)

    def extra_violations(self, solution: Any, report: Any) -> list[str]:
        """Calibration errors within tolerance and volume within budget, recomputed from scratch."""
        out = []
        if self.tolerance is not None:
            errors = calibration_errors(self.network, solution.network, self.calibration)
            for l, (err, tol) in enumerate(zip(errors, self.tolerance, strict=False), start=1):
                if err > tol * (1 + 1e-7) + 1e-7:
                    out.append(f"layer {l}: calibration error {err:.6g} exceeds its tolerance {tol:.6g}")
        elif isinstance(self.comm_budget, tuple):
            for l, (vol, budget) in enumerate(zip(report.comm_per_layer, self.comm_budget, strict=False), start=1):
                if vol > budget + 1e-9:
                    out.append(f"layer {l}: volume {vol:.6g} exceeds its budget {budget:.6g}")
        elif report.comm_scalars > self.comm_budget + 1e-9:
            out.append(f"volume {report.comm_scalars:.6g} exceeds the budget {self.comm_budget:.6g}")
        return out
