"""PruningProblem: one layer, placement fixed; choose the remote pairs to open and refit (SPEC §3)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .._validation import as_float, as_float_array, as_int, as_placement, readonly
from ..cluster import Cluster
from ..errors import InvalidProblemError
from ..layers import Conv2d, Dense
from ..network import Network

__all__ = ["PruningProblem"]


@dataclass(frozen=True, eq=False)
class PruningProblem:
    """Prune and refit one layer whose units and inputs are already placed.

    Worker k reads its local input units for free; opening a remote pair (input unit j, worker k) costs
    ``s_{l-1}`` scalars per sample and lets every unit on k read j. Minimise ``||Y − Ŵ X̂||_F²`` under a
    volume budget, or the volume under ``||Y − Ŵ X̂||_F ≤ tolerance · ||Y||_F``.

    Parameters
    ----------
    inputs : array-like
        ``X̂``, samples first: ``(N, n_in)`` for a Dense layer (``(N, C·s)`` when each input unit is a
        channel of ``s`` scalars, see ``input_message_size``), ``(N, C, H, W)`` for a Conv2d layer.
        (SPEC §3 writes X̂ as n_in×N; every array in this package is samples-first, like ``forward``.)
    targets : array-like
        ``Y``, the pre-activations to reproduce: ``(N, n_out)`` or ``(N, c_out, H_out, W_out)``.
    layer : Dense or Conv2d
        The original layer: its shape, stride and padding (its weights are not used by the fit).
    output_placement : int array (n_out,)
        Worker of each unit.
    cluster : Cluster
    input_placement : "replicated" or int array (n_in units,)
    tolerance, comm_budget : float
        Exactly one: relative error allowed, or scalars per sample allowed.
    input_message_size : int
        Scalars per input unit for a Dense layer reading flattened channels (1 otherwise).
    nnz_budget : float or array-like (k,), optional
        Compute budget: most nonzero weights worker k's units may hold together (one value for every
        worker, or one per worker). A unit reading an input unit holds all of that input's weights
        (``input_message_size`` for a Dense reading a channel, ``kh·kw`` for a conv), so worker k can read
        at most ``⌊nnz_budget_k / (units on k · weights per input unit)⌋`` input units, local ones included.

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> rng = np.random.default_rng(0)
    >>> layer = ro.Dense(rng.normal(size=(4, 6)))
    >>> X = rng.normal(size=(40, 6))
    >>> problem = ro.PruningProblem(X, layer.apply(X), layer, [0, 0, 1, 1], ro.Cluster(k=2),
    ...                             input_placement=[0, 0, 0, 1, 1, 1], tolerance=0.0)
    >>> sol = ro.solve(problem, backend="greedy")
    >>> sol.objective  # every remote pair is needed for an exact fit: 3 inputs x 2 workers
    6.0
    """

    inputs: Any
    targets: Any
    layer: Any
    output_placement: Any
    cluster: Cluster
    input_placement: Any = "replicated"
    tolerance: Any = None
    comm_budget: Any = None
    input_message_size: int = 1
    nnz_budget: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.layer, (Dense, Conv2d)):
            raise InvalidProblemError(f"`layer` must be a repurpose_opt Dense or Conv2d layer, got {type(self.layer).__name__}")
        if not isinstance(self.cluster, Cluster):
            raise InvalidProblemError(f"`cluster` must be a repurpose_opt.Cluster, got {type(self.cluster).__name__}")
        s = as_int("input_message_size", self.input_message_size, minimum=1, error=InvalidProblemError)
        object.__setattr__(self, "input_message_size", s)
        network = self.network  # validates the layer against the input shape
        X = network._check_input(self.inputs, "inputs")
        object.__setattr__(self, "inputs", readonly(X))
        n_out = self.layer.n_out
        pre_shape = network.shapes(1)[1]
        Y = as_float_array("targets", self.targets, shape=(X.shape[0],) + pre_shape)
        object.__setattr__(self, "targets", readonly(Y))
        if self.cluster.k > n_out:
            raise InvalidProblemError(f"`cluster.k` = {self.cluster.k} is larger than the layer, which has {n_out} units")
        object.__setattr__(self, "output_placement", as_placement("output_placement", self.output_placement, n_out, self.cluster.k, error=InvalidProblemError))
        if isinstance(self.input_placement, str):
            if self.input_placement != "replicated":
                raise InvalidProblemError(f"`input_placement` must be 'replicated' or an int array, got {self.input_placement!r}")
        else:
            object.__setattr__(self, "input_placement", as_placement("input_placement", self.input_placement, network.unit_counts[0], self.cluster.k, error=InvalidProblemError))
        if (self.tolerance is None) == (self.comm_budget is None):
            raise InvalidProblemError("give exactly one of `tolerance` and `comm_budget`")
        if self.tolerance is not None:
            object.__setattr__(self, "tolerance", as_float("tolerance", self.tolerance, minimum=0.0, error=InvalidProblemError))
        else:
            object.__setattr__(self, "comm_budget", as_float("comm_budget", self.comm_budget, minimum=0.0, error=InvalidProblemError))
        if self.nnz_budget is not None:
            budget = as_float_array("nnz_budget", self.nnz_budget, ndim=(0, 1), error=InvalidProblemError)
            if budget.ndim == 0:
                budget = np.full(self.cluster.k, float(budget))
            if budget.shape != (self.cluster.k,):
                raise InvalidProblemError(f"`nnz_budget` must be a scalar or have one entry per worker ({self.cluster.k}), got shape {budget.shape}")
            if np.any(budget < 0):
                raise InvalidProblemError(f"`nnz_budget` must be >= 0, got minimum {budget.min()}")
            object.__setattr__(self, "nnz_budget", readonly(budget))

    @property
    def weights_per_input(self) -> int:
        """Weights one unit holds per input unit it reads (1, the channel size, or kh·kw)."""
        return int(self.layer.W.size // (self.layer.n_out * self.network.unit_counts[0]))

    @property
    def max_groups(self) -> np.ndarray | None:
        """Most input units each worker's units may read under ``nnz_budget`` (None: no budget)."""
        if self.nnz_budget is None:
            return None
        rows = np.bincount(self.output_placement, minlength=self.k)
        per_input = rows * self.weights_per_input
        with np.errstate(divide="ignore"):
            caps = np.where(per_input > 0, np.floor(np.asarray(self.nnz_budget) / np.maximum(per_input, 1) + 1e-9), self.network.unit_counts[0])
        return np.minimum(caps, self.network.unit_counts[0]).astype(np.int64)

    def worker_nnz(self, network: Network) -> np.ndarray:
        """Nonzero weights held by each worker's units in a candidate one-layer network."""
        W = network.linear_layers[0].W.reshape(self.layer.n_out, -1)
        return np.bincount(self.output_placement, weights=np.count_nonzero(W, axis=1), minlength=self.k)

    @cached_property
    def network(self) -> Network:
        """The layer as a one-layer network (its input units and message sizes as in the full network)."""
        if isinstance(self.layer, Conv2d):
            X = np.asarray(self.inputs)
            if X.ndim != 4:
                raise InvalidProblemError(f"`inputs` of a Conv2d layer must have shape (N, C, H, W), got {X.shape}")
            return Network([self.layer], input_shape=X.shape[1:])
        n_in = self.layer.W.shape[1]
        s = self.input_message_size
        if n_in % s:
            raise InvalidProblemError(f"`input_message_size` = {s} does not divide the layer's {n_in} inputs")
        shape = (n_in,) if s == 1 else (n_in // s, s, 1)
        return Network([self.layer], input_shape=shape)

    @property
    def k(self) -> int:
        return self.cluster.k

    @property
    def output(self) -> str:
        return "distributed"

    @property
    def objective(self) -> str:
        """``"volume"`` under a tolerance, ``"error"`` (relative) under a budget."""
        return "volume" if self.tolerance is not None else "error"

    @property
    def input_mode(self) -> str:
        return "replicated" if isinstance(self.input_placement, str) else "fixed"

    @property
    def capacities(self) -> tuple[None, None]:
        """Placement is fixed: no balance constraint is chosen here."""
        return (None, None)

    @property
    def max_pairs(self) -> int | None:
        if self.comm_budget is None:
            return None
        return int(np.floor(self.comm_budget / self.network.structure[0].in_message_size + 1e-9))

    def fit_data(self, ridge: float | None = None):
        """Gram matrix and correlations of the refit, regularised toward the layer's weights by ``ridge``
        (relative; default :data:`repurpose_opt.lsq.DEFAULT_RIDGE`), memoised per ridge."""
        from ..lsq import DEFAULT_RIDGE, layer_data

        ridge = DEFAULT_RIDGE if ridge is None else float(ridge)
        cache = self.__dict__.setdefault("_fit_data", {})
        if ridge not in cache:
            cache[ridge] = layer_data(self.network, 1, self.network.to_units(self.inputs), np.asarray(self.targets), ridge=ridge)
        return cache[ridge]

    @property
    def in_placement(self) -> np.ndarray | None:
        return None if self.input_mode == "replicated" else self.input_placement

    def objective_value(self, report: Any, network: Network | None = None) -> float:
        """Volume (scalars per sample) in tolerance mode; relative error in budget mode."""
        if self.tolerance is None:
            return self.relative_error(network if network is not None else self.network)
        return float(report.comm_scalars)

    def relative_error(self, network: Network) -> float:
        """``||Y − Ŵ X̂||_F / ||Y||_F`` of a candidate one-layer network."""
        Y = np.asarray(self.targets)
        Y_hat = network.stage_linear(1, network.to_units(self.inputs))
        norm = float(np.linalg.norm(Y))
        return float(np.linalg.norm(Y_hat - Y)) / norm if norm > 0 else float(np.linalg.norm(Y_hat))

    def extra_violations(self, solution: Any, report: Any) -> list[str]:
        out = []
        if not np.array_equal(solution.assignment[1], self.output_placement):
            out.append("the units' placement differs from the fixed `output_placement`")
        if self.tolerance is not None:
            err = self.relative_error(solution.network)
            if err > self.tolerance * (1 + 1e-7) + 1e-7:
                out.append(f"relative error {err:.6g} exceeds the tolerance {self.tolerance:.6g}")
        elif report.comm_scalars > self.comm_budget + 1e-9:
            out.append(f"volume {report.comm_scalars:.6g} exceeds the budget {self.comm_budget:.6g}")
        if self.nnz_budget is not None:
            nnz = self.worker_nnz(solution.network)
            for worker in np.flatnonzero(nnz > np.asarray(self.nnz_budget) + 1e-9):
                out.append(f"worker {worker} holds {nnz[worker]:.0f} nonzero weights, above its nnz budget {self.nnz_budget[worker]:.6g}")
        return out

    def result_network(self, coef: np.ndarray) -> Network:
        """A one-layer network with the refit coefficients (n_out, F+1), bias last."""
        W = coef[:, :-1].reshape(self.layer.W.shape)
        return Network([self.layer.with_weights(W, coef[:, -1])], input_shape=self.network.input_shape)

    def assignment(self) -> tuple[np.ndarray, np.ndarray]:
        first = np.full(self.network.unit_counts[0], -1, dtype=np.int64) if self.in_placement is None else self.input_placement
        return (first, self.output_placement)
