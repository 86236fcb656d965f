"""The km1 mixed-integer model of a :class:`~repurpose_opt.PartitionProblem`, as plain numpy/scipy data.

Both exact backends (``ortools`` through CP-SAT, ``cvxpy`` through HiGHS) build from the one description
returned by :func:`build_partition_milp`, so they solve literally the same model::

    minimise  c·v + offset   subject to   row_lower <= A v <= row_upper,   lower <= v <= upper,
                                          v[integer] integral.

Variables (column families, see :attr:`PartitionMILP.families`)
----------------------------------------------------------------
``x[l,i,k]``  unit i of layer l on worker k (binary), for every layer the model chooses (layer 0 only when
              the input placement is free; a fixed input, or the layer before a window, is a constant).
``y[l,j,k]``  activation j of layer l-1 is present on worker k (binary): ``y >= x[l,i,k]`` for every
              consumer i of j (an implication x ⇒ y), and ``y >= x[l-1,j,k]`` for its producer. Only
              activations with at least one consumer get y variables: an unconsumed activation is never
              sent, so it costs nothing. When the producer is a constant on worker p, only ``k != p`` exist.
``o[i,w]``    symmetry breaking only: worker w is used by one of the first i+1 units of the first free layer.
``u, a, g, t`` latency objective only (see below).

Volume objective (SPEC §2), exact in integers
---------------------------------------------
With a modelled producer, ``Σ_k y[l,j,k] >= 1`` always (the producer's worker holds it), so
``V_l = s_{l-1}·Σ_j (Σ_k y[l,j,k] − 1)`` over consumed j (the "−1" goes into the constant offset, and only
for consumed activations, whose producer's y is forced to 1). With a constant producer p the "−1" is
already accounted for by leaving ``y[l,j,p]`` out: ``V_l = s_{l-1}·Σ_j Σ_{k≠p} y[l,j,k]``. A replicated
input makes layer 1 free. The gather adds ``s_L·Σ_i (1 − x[L,i,0])``. At every optimum of the model y is
exactly the set of workers that need j, so the model's optimum equals the least volume.

Latency objective (SPEC §2, α-β model)
--------------------------------------
Per layer: ``t_c[l] >= Σ_i F_i/(flop_rate·speed_k)·x[l,i,k]`` for each k; ``u[l,j,s,d] >= x[l-1,j,s] +
y[l,j,d] − 1`` (activation j goes from s to d); ``a[l,s,d] >= u`` (link used); ``t_l[l] >= α_sd·a[l,s,d] +
(s_{l-1}·bytes/β_sd)·Σ_j u[l,j,s,d]`` for each link; the gather step adds ``g[k] >= x[L,i,k]`` and
``t_g >= α_k0·g[k] + (s_L·bytes/β_k0)·Σ_i x[L,i,k]``. Objective ``Σ_l (t_c[l] + t_l[l]) + t_g``. Auxiliary
variables may sit above their minimum only by raising the objective, so the optimum is exact.

Integer scaling (``integer_ticks``). CP-SAT needs integer coefficients: times are measured in ticks
(``ticks`` per second) and every time coefficient is rounded *down*, so the model's objective never exceeds
the true latency times ``ticks`` and the solver's bound divided by ``ticks`` is a valid lower bound in
seconds. Each term loses less than one tick, so ``rounding_error`` (seconds) = Σ over the max-terms of the
largest number of terms in one of its rows, divided by ``ticks``, bounds how far the model's objective can
sit below the true latency of the same placement. The volume objective is exact (``rounding_error = 0``).
Without ``integer_ticks`` the latency model is in floating point, scaled by ``scale`` only for numerics.

Symmetry breaking
-----------------
When the workers are interchangeable (identical speeds, capacities and links) and nothing pins the labels
(no fixed input, no fixed layer before the model), relabelling workers maps solutions onto solutions of
equal cost. The model then keeps one representative: in the first free layer, the interchangeable workers
are first used in increasing order of unit index (``x[i,w] <= o[i-1,w_prev]``). With ``output="gather"``
worker 0 is the sink, so only workers 1..K-1 are interchangeable. :func:`canonicalize` relabels any
placement into that representative (use it before handing a solution to the solver as a hint).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._validation import as_choice
from ..errors import InvalidParameterError
from ..simulator import REPLICATED

__all__ = [
    "PartitionMILP",
    "build_partition_milp",
    "canonicalize",
    "interchangeable_workers",
    "latency_reference",
    "LINEAR",
    "IMPLIES",
    "EXACTLY_ONE",
    "CLAUSE",
]

#: Row kinds, so a solver can use its native form: a general linear row; ``v[a] − v[b] >= 0`` with
#: binaries a, b (the implication b ⇒ a); ``Σ v = 1`` over binaries; a clause ``Σ ±v >= 1 − #negatives``
#: over binaries (the disjunction of the positive literals and the negations of the negative ones).
LINEAR, IMPLIES, EXACTLY_ONE, CLAUSE = 0, 1, 2, 3
#: How the communication of an activation with a modelled producer is written (see the module docstring).
FORMULATIONS = ("sent", "presence", "hybrid")


@dataclass(frozen=True, eq=False)
class PartitionMILP:
    """One km1 model of a partition problem (or of a window of its layers), as arrays.

    Attributes
    ----------
    objective : {"volume", "latency"}
    c, offset : objective coefficients and constant, in model units (``scale`` per problem unit).
    A, row_lower, row_upper : sparse rows and their bounds (``±inf`` when open).
    row_kind : int8 array of LINEAR / IMPLIES / EXACTLY_ONE.
    lower, upper, integer : variable bounds and integrality.
    layers : the layers whose placement the model chooses.
    x_columns : layer -> (n_l, K) column indices of ``x``.
    constants : layer -> placement of a layer the model reads but does not choose (fixed input or the
        layer before a window); ``None`` for a replicated input.
    scale : model objective units per problem unit (1 for volume; ticks per second for latency).
    rounding_error : problem units; how far the model objective can sit below the true objective of the
        same placement (0 when exact).
    integral : every coefficient and bound is an integer (ready for CP-SAT).
    symmetry_layer, symmetry_workers : where symmetry breaking was imposed (``None``/``()``: not imposed).
    families : name -> column indices of each variable family (for stats and hint completion).
    """

    objective: str
    c: np.ndarray
    offset: float
    A: sp.csr_array
    row_lower: np.ndarray
    row_upper: np.ndarray
    row_kind: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    integer: np.ndarray
    layers: tuple[int, ...]
    x_columns: dict[int, np.ndarray]
    constants: dict[int, np.ndarray | None]
    scale: float
    rounding_error: float
    integral: bool
    k: int
    symmetry_layer: int | None = None
    symmetry_workers: tuple[int, ...] = ()
    families: dict[str, np.ndarray] = field(default_factory=dict)
    _layer_vars: tuple[Any, ...] = field(default=(), repr=False)
    _time_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    _time_cols: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    _gather: Any = field(default=None, repr=False)
    _symmetry_cols: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_vars(self) -> int:
        return int(self.c.shape[0])

    @property
    def n_rows(self) -> int:
        return int(self.A.shape[0])

    def size(self) -> dict[str, int]:
        """Variables, rows and nonzeros (for stats and for choosing whole vs layer-by-layer)."""
        return {"variables": self.n_vars, "rows": self.n_rows, "nonzeros": int(self.A.nnz)}

    # ------------------------------------------------------------------------------------------ values
    def objective_value(self, values: np.ndarray) -> float:
        """The model objective of a full variable vector, in model units."""
        return float(self.c @ values + self.offset)

    def violation(self, values: np.ndarray) -> float:
        """Largest violation of a row, a bound or an integrality requirement (0 when feasible)."""
        activity = self.A @ values
        worst = max(
            float(np.max(self.row_lower - activity, initial=0.0)),
            float(np.max(activity - self.row_upper, initial=0.0)),
            float(np.max(self.lower - values, initial=0.0)),
            float(np.max(values - self.upper, initial=0.0)),
        )
        integral = values[self.integer]
        return max(worst, float(np.max(np.abs(integral - np.round(integral)), initial=0.0)))

    def decode(self, values: np.ndarray) -> dict[int, np.ndarray]:
        """Placements of the modelled layers from a solver's variable values (largest x per unit)."""
        return {l: np.argmax(values[cols], axis=1).astype(np.int64) for l, cols in self.x_columns.items()}

    def complete(self, placements: dict[int, np.ndarray]) -> np.ndarray:
        """The cheapest feasible variable vector with the given placements of the modelled layers.

        Every auxiliary variable takes the least value its rows allow, so ``objective_value`` of the result
        is the model's cost of these placements (the exact volume; the tick-rounded latency). Used to hand a
        heuristic's solution to a solver as a hint. The placements must already satisfy the symmetry
        breaking rows (see :func:`canonicalize`) for the result to be feasible.
        """
        v = np.zeros(self.n_vars)
        placed = {}
        for l, cols in self.x_columns.items():
            placement = np.asarray(placements[l], dtype=np.int64)
            placed[l] = placement
            v[cols[np.arange(cols.shape[0]), placement]] = 1.0
        for lv in self._layer_vars:
            prev = placed.get(lv.l - 1, self.constants.get(lv.l - 1))
            cur = placed[lv.l]
            needed = np.zeros((self.k, lv.n_inputs), dtype=bool)
            needed[np.repeat(cur, np.diff(lv.indptr)), lv.indices] = True  # needed[k, j]
            present = needed.T.copy()
            if lv.mode == "modelled":
                present[np.arange(lv.n_inputs), prev] = True
            present &= lv.consumed[:, None]
            sent = present & (prev[:, None] != np.arange(self.k)[None, :]) if lv.mode != "replicated" else None
            if lv.z is not None:
                mask = lv.z >= 0
                v[lv.z[mask]] = present[mask]
            if lv.y is not None:
                mask = lv.y >= 0
                v[lv.y[mask]] = (present if lv.y_is_presence else sent)[mask]
            if lv.u is not None:  # u[j, p] = x_prev[j, s_p] · y[j, d_p]
                y_vals = np.where(lv.y >= 0, v[np.maximum(lv.y, 0)], 0.0)
                src = prev[lv.u_units]
                u_vals = (src[:, None] == lv.pairs[None, :, 0]) * y_vals[lv.u_units][:, lv.pairs[:, 1]]
                v[lv.u] = u_vals
                v[lv.a[lv.pairs[:, 0], lv.pairs[:, 1]]] = u_vals.max(axis=0, initial=0.0)
            elif lv.a is not None:  # constant producer: a[s, d] = any j from s needed on d
                for s, d in zip(*np.nonzero(lv.a >= 0), strict=True):
                    from_s = lv.consumed & (prev == s)
                    v[lv.a[s, d]] = float(np.any(needed[d, from_s]))
        if self._gather is not None:
            g_cols, last = self._gather
            last_placement = placed[last]
            for w in range(1, self.k):
                v[g_cols[w - 1]] = float(np.any(last_placement == w))
        if self._symmetry_cols is not None:
            layer_x = v[self.x_columns[self.symmetry_layer]][:, list(self.symmetry_workers)]
            v[self._symmetry_cols] = np.maximum.accumulate(layer_x, axis=0)
        if self._time_rows.size:
            # t >= (everything else in its rows): with t at 0 the activity is minus that remainder.
            rest = -(self.A[self._time_rows] @ v) + self.row_lower[self._time_rows]
            need = np.zeros(self.n_vars)
            np.maximum.at(need, self._time_cols, rest)
            cols = np.unique(self._time_cols)
            vals = need[cols]
            if self.integral:
                vals = np.ceil(vals - 1e-9)
            v[cols] = np.maximum(vals, self.lower[cols])
        return v


# ---------------------------------------------------------------------------------------------- helpers
def interchangeable_workers(problem: Any) -> tuple[int, ...]:
    """Workers that relabelling may permute freely (empty when the input is fixed or workers differ)."""
    if problem.input_mode == "fixed" or not problem.cluster.identical_workers or problem.cluster.k < 2:
        return ()
    k = problem.cluster.k
    return tuple(range(1, k)) if problem.output == "gather" else tuple(range(k))


def canonicalize(model: PartitionMILP, placements: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Relabel the interchangeable workers by first use in the symmetry layer (the model's representative).

    The cost and every capacity are unchanged, because the relabelled workers are identical.
    """
    if model.symmetry_layer is None or len(model.symmetry_workers) < 2:
        return {l: np.asarray(p, dtype=np.int64) for l, p in placements.items()}
    workers = np.asarray(model.symmetry_workers)
    first = np.asarray(placements[model.symmetry_layer])
    n = first.shape[0]
    first_use = np.array([np.flatnonzero(first == w)[0] if np.any(first == w) else n + i for i, w in enumerate(workers)])
    ordered = workers[np.argsort(first_use, kind="stable")]  # ordered[m] becomes workers[m]
    relabel = np.arange(model.k)
    relabel[ordered] = workers
    return {l: relabel[np.asarray(p, dtype=np.int64)] for l, p in placements.items()}


def latency_reference(problem: Any) -> float:
    """A placement-independent upper bound on the α-β latency (seconds), used to choose the time scale."""
    cluster, network = problem.cluster, problem.network
    total = 0.0
    slowest = float(np.min(cluster.speed))
    off = ~np.eye(cluster.k, dtype=bool)
    worst_alpha = float(np.max(cluster.latency[off], initial=0.0))
    narrowest = float(np.min(cluster.bandwidth[off], initial=np.inf))
    for l, layer in enumerate(network.structure, start=1):
        total += float(layer.flops_per_unit.sum()) / (cluster.flop_rate * slowest)
        if not (l == 1 and problem.input_mode == "replicated") and cluster.k > 1:
            total += worst_alpha + layer.n_inputs * layer.in_message_size * cluster.dtype_bytes / narrowest
    if problem.output == "gather" and cluster.k > 1:
        total += worst_alpha + network.unit_counts[-1] * network.message_sizes[-1] * cluster.dtype_bytes / narrowest
    return max(total, 1e-30)


def auto_ticks(problem: Any, target: float = 1e9) -> float:
    """A power of ten of ticks per second that maps the latency reference to at most ``target`` ticks."""
    return float(10.0 ** math.floor(math.log10(target / latency_reference(problem))))


@dataclass
class _LayerVars:
    l: int
    mode: str  # "modelled" (producer is a variable), "constant" (producer fixed), "replicated"
    n_inputs: int
    indptr: np.ndarray
    indices: np.ndarray
    consumed: np.ndarray
    y: np.ndarray | None = None  # (n_{l-1}, K) columns or -1
    u: np.ndarray | None = None  # (m, P) columns
    u_units: np.ndarray | None = None  # (m,) the consumed j of each u row
    pairs: np.ndarray | None = None  # (P, 2) (src, dst)
    a: np.ndarray | None = None  # (K, K) columns or -1
    z: np.ndarray | None = None  # hybrid formulation: presence columns or -1
    y_is_presence: bool = False  # presence formulation: y means "present on k", not "sent to k"


class _Builder:
    """Accumulates columns and rows as arrays (no Python loop over nonzeros)."""

    def __init__(self) -> None:
        self.lower: list[np.ndarray] = []
        self.upper: list[np.ndarray] = []
        self.integer: list[np.ndarray] = []
        self.n_vars = 0
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.row_lower: list[np.ndarray] = []
        self.row_upper: list[np.ndarray] = []
        self.kinds: list[np.ndarray] = []
        self.n_rows = 0
        self.cost_cols: list[np.ndarray] = []
        self.cost_vals: list[np.ndarray] = []

    def var(self, shape: tuple[int, ...], lb: float, ub: Any, integer: bool) -> np.ndarray:
        count = int(np.prod(shape)) if len(shape) else 1
        idx = np.arange(self.n_vars, self.n_vars + count, dtype=np.int64).reshape(shape)
        self.n_vars += count
        self.lower.append(np.full(count, float(lb)))
        self.upper.append(np.broadcast_to(np.asarray(ub, dtype=np.float64), (count,)).copy())
        self.integer.append(np.full(count, integer))
        return idx

    def add(self, row_of_entry: np.ndarray, cols: np.ndarray, vals: np.ndarray, lo: np.ndarray, hi: np.ndarray, kind: int) -> np.ndarray:
        """Rows given as entries (local row index, column, value); returns their global row indices."""
        m = int(lo.shape[0])
        self.rows.append(np.asarray(row_of_entry, dtype=np.int64) + self.n_rows)
        self.cols.append(np.asarray(cols, dtype=np.int64))
        self.vals.append(np.asarray(vals, dtype=np.float64))
        self.row_lower.append(np.asarray(lo, dtype=np.float64))
        self.row_upper.append(np.asarray(hi, dtype=np.float64))
        self.kinds.append(np.full(m, kind, dtype=np.int8))
        out = np.arange(self.n_rows, self.n_rows + m, dtype=np.int64)
        self.n_rows += m
        return out

    def implies(self, antecedent: np.ndarray, consequent: np.ndarray) -> None:
        """``consequent >= antecedent`` for binaries, row by row."""
        antecedent, consequent = np.ravel(antecedent), np.ravel(consequent)
        m = antecedent.shape[0]
        if m == 0:
            return
        local = np.repeat(np.arange(m), 2)
        cols = np.stack([consequent, antecedent], axis=1).ravel()
        vals = np.tile([1.0, -1.0], m)
        self.add(local, cols, vals, np.zeros(m), np.full(m, np.inf), IMPLIES)

    def cost(self, cols: np.ndarray, value: Any) -> None:
        cols = np.ravel(np.asarray(cols, dtype=np.int64))
        self.cost_cols.append(cols)
        self.cost_vals.append(np.broadcast_to(np.asarray(value, dtype=np.float64), cols.shape).copy())

    def finish(self) -> dict[str, Any]:
        c = np.zeros(self.n_vars)
        if self.cost_cols:
            np.add.at(c, np.concatenate(self.cost_cols), np.concatenate(self.cost_vals))

        def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

        A = sp.csr_array(
            (cat(self.vals, np.float64), (cat(self.rows, np.int64), cat(self.cols, np.int64))), shape=(self.n_rows, self.n_vars)
        )
        A.sum_duplicates()
        return {
            "c": c,
            "A": A,
            "row_lower": cat(self.row_lower, np.float64),
            "row_upper": cat(self.row_upper, np.float64),
            "row_kind": cat(self.kinds, np.int8),
            "lower": cat(self.lower, np.float64),
            "upper": cat(self.upper, np.float64),
            "integer": cat(self.integer, bool),
        }


def _first_free_layer(problem: Any) -> int | None:
    mode = problem.input_mode
    return 0 if mode == "free" else (1 if mode == "replicated" else None)


# ------------------------------------------------------------------------------------------------ build
def build_partition_milp(
    problem: Any,
    *,
    layers: Any = None,
    previous: np.ndarray | None = None,
    used_flops: np.ndarray | None = None,
    used_params: np.ndarray | None = None,
    integer_ticks: float | None = None,
    symmetry_breaking: bool = True,
    formulation: str = "sent",
) -> PartitionMILP:
    """The km1 model of ``problem``, or of the window ``layers`` of consecutive layers.

    Parameters
    ----------
    problem : PartitionProblem
    layers : sequence of int, optional
        Consecutive layers to place (default: every free layer, the input included when it is free). The
        model's objective covers the communication into each of them (and the gather when the last layer
        is included); layers after the window are ignored.
    previous : int array, optional
        Placement of the layer just before the window; required when the window starts at layer >= 2
        (layer 0 is taken from the problem when it is fixed or replicated).
    used_flops, used_params : arrays of shape (K,), optional
        Loads already committed by layers outside the window, subtracted from the FLOPs/parameter capacities.
    integer_ticks : float, optional
        Latency objective only: build the integer model with times in ticks (``ticks`` per second, rounded
        down). ``None`` builds a floating-point latency model. Ignored for the volume objective (always
        integral).
    symmetry_breaking : bool
        Impose the first-use order of interchangeable workers (only when nothing pins the labels).
    formulation : {"sent", "presence", "hybrid"}
        How an activation with a modelled producer is counted (module docstring); all are exact.

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> from repurpose_opt.solvers.milp_model import build_partition_milp
    >>> net = ro.Network([ro.Dense(np.eye(4)), ro.ReLU(), ro.Dense(np.eye(4))], input_shape=(4,))
    >>> problem = ro.PartitionProblem(net, ro.Cluster(k=2), input_placement="free", output="distributed")
    >>> model = build_partition_milp(problem)
    >>> model.layers, model.integral
    ((0, 1, 2), True)
    >>> placements = {0: np.array([0, 0, 1, 1]), 1: np.array([0, 1, 0, 1]), 2: np.array([0, 1, 0, 1])}
    >>> v = model.complete(placements)
    >>> model.objective_value(v), model.violation(v)   # layer 1 sends two activations, layer 2 none
    (2.0, 0.0)
    """
    formulation = as_choice("formulation", formulation, FORMULATIONS)
    network, cluster = problem.network, problem.cluster
    k, L = cluster.k, network.n_layers
    first_free = 0 if problem.input_mode == "free" else 1
    if layers is None:
        layers = tuple(range(first_free, L + 1))
    layers = tuple(int(l) for l in layers)
    if not layers or any(b != a + 1 for a, b in zip(layers[:-1], layers[1:], strict=True)) or layers[0] < first_free or layers[-1] > L:
        raise InvalidParameterError(
            f"`layers` must be consecutive layers within {first_free}..{L}, got {list(layers)}"
        )
    start = layers[0]
    constants: dict[int, np.ndarray | None] = {}
    if start >= 1:
        if start == 1 and problem.input_mode == "replicated":
            constants[0] = None
        elif start == 1 and problem.input_mode == "fixed":
            constants[0] = np.asarray(problem.input_placement, dtype=np.int64)
        else:
            if previous is None:
                raise InvalidParameterError(f"`previous` (the placement of layer {start - 1}) is required for a window starting at layer {start}")
            constants[start - 1] = np.asarray(previous, dtype=np.int64)
    latency = problem.objective == "latency"
    integral = (not latency) or integer_ticks is not None
    if latency:
        scale = float(integer_ticks) if integer_ticks is not None else float(10.0 ** round(math.log10(1e3 / latency_reference(problem))))
        if not np.isfinite(scale) or scale <= 0:
            raise InvalidParameterError(f"`integer_ticks` must be a positive number, got {integer_ticks!r}")
    else:
        scale = 1.0

    def tick(coef: np.ndarray) -> np.ndarray:
        scaled = np.asarray(coef, dtype=np.float64) * scale
        # Rounded down: the model never overstates a time, so its bound stays a valid lower bound.
        return np.floor(scaled + 1e-9 * np.abs(scaled)) if integer_ticks is not None else scaled

    b = _Builder()
    offset = 0.0
    rounding = 0.0
    families: dict[str, list[np.ndarray]] = {}

    def fam(name: str, cols: np.ndarray) -> None:
        families.setdefault(name, []).append(np.ravel(cols))

    # x and the per-layer assignment / balance rows
    x_columns: dict[int, np.ndarray] = {}
    for l in layers:
        n = network.unit_counts[l]
        X = b.var((n, k), 0, 1, True)
        x_columns[l] = X
        fam("x", X)
        b.add(np.repeat(np.arange(n), k), X.ravel(), np.ones(n * k), np.ones(n), np.ones(n), EXACTLY_ONE)
        cap = problem.capacities[l]
        b.add(np.tile(np.arange(k), n), X.ravel(), np.ones(n * k), np.full(k, -np.inf), cap.astype(np.float64), LINEAR)

    time_rows: list[np.ndarray] = []
    time_cols: list[np.ndarray] = []
    time_ub = 0.0

    def time_var(name: str, rows_entries: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """A max-term: t >= Σ coef·col for each row (rows given as (cols, integer/float coefs))."""
        nonlocal rounding, time_ub
        if not rows_entries:
            return
        upper = max(float(np.sum(np.maximum(coefs, 0.0))) for _, coefs in rows_entries)
        t = b.var((), 0, upper if integral else np.inf, integral)
        fam(name, np.atleast_1d(t))
        local, cols, vals = [], [], []
        for r, (cs, coefs) in enumerate(rows_entries):
            local.append(np.full(cs.shape[0] + 1, r))
            cols.append(np.concatenate([[int(t)], cs]))
            vals.append(np.concatenate([[1.0], -coefs]))
        m = len(rows_entries)
        rows = b.add(np.concatenate(local), np.concatenate(cols), np.concatenate(vals), np.zeros(m), np.full(m, np.inf), LINEAR)
        time_rows.append(rows)
        time_cols.append(np.full(m, int(t)))
        b.cost(np.atleast_1d(t), 1.0)
        time_ub += upper
        if integer_ticks is not None:
            rounding += max(cs.shape[0] for cs, _ in rows_entries) / scale

    layer_vars: list[_LayerVars] = []
    for l in layers:
        if l == 0:
            continue
        layer = network.structure[l - 1]
        M = layer.connectivity
        indptr, indices = np.asarray(M.indptr), np.asarray(M.indices)
        n_in, s_in = layer.n_inputs, float(layer.in_message_size)
        consumed = np.zeros(n_in, dtype=bool)
        consumed[indices] = True
        consumers = np.repeat(np.arange(layer.n_units), np.diff(indptr))  # consumer i of each nonzero
        X = x_columns[l]
        if l - 1 in x_columns:
            mode = "modelled"
        elif constants.get(l - 1) is None and l == 1 and problem.input_mode == "replicated":
            mode = "replicated"
        else:
            mode = "constant"
        lv = _LayerVars(l=l, mode=mode, n_inputs=n_in, indptr=indptr, indices=indices, consumed=consumed)
        if mode != "replicated":
            Y = np.full((n_in, k), -1, dtype=np.int64)
            if mode == "modelled":
                sendable = np.broadcast_to(consumed[:, None], (n_in, k))
            else:
                src = constants[l - 1]
                sendable = consumed[:, None] & (src[:, None] != np.arange(k)[None, :])
            Y[sendable] = b.var((int(sendable.sum()),), 0, 1, True)
            fam("y", Y[sendable])
            lv.y = Y
            if mode == "modelled":
                Xp = x_columns[l - 1]
                if formulation == "sent":
                    # consumer i of j on worker k => j produced on k, or sent there: y + x_prev - x_i >= 0
                    m = indices.shape[0] * k
                    cols = np.stack([Y[indices], Xp[indices], X[consumers]], axis=2).ravel()
                    b.add(np.repeat(np.arange(m), 3), cols, np.tile([1.0, 1.0, -1.0], m), np.zeros(m), np.full(m, np.inf), CLAUSE)
                else:
                    # presence z[j,k]: consumer => z, producer => z (implications)
                    Z = Y if formulation == "presence" else np.full((n_in, k), -1, dtype=np.int64)
                    if formulation == "hybrid":
                        Z[consumed] = b.var((int(consumed.sum()), k), 0, 1, True)
                        fam("z", Z[consumed])
                        lv.z = Z
                        # present but not produced here => sent: y + x_prev - z >= 0
                        m = int(consumed.sum()) * k
                        cols = np.stack([Y[consumed], Xp[consumed], Z[consumed]], axis=2).ravel()
                        b.add(np.repeat(np.arange(m), 3), cols, np.tile([1.0, 1.0, -1.0], m), np.zeros(m), np.full(m, np.inf), CLAUSE)
                    b.implies(X[consumers], Z[indices])
                    b.implies(Xp[consumed], Z[consumed])
                    if formulation == "presence":
                        lv.y_is_presence = True
                        if not latency:  # Σ_k z − 1 per consumed activation
                            offset -= s_in * float(consumed.sum())
            else:
                # consumer i of j on worker k != producer => j sent to k
                ante, cons = X[consumers], Y[indices]  # (nnz, K)
                mask = cons >= 0
                b.implies(ante[mask], cons[mask])
            if not latency:
                b.cost(Y[sendable], s_in)
            else:
                pairs = np.array([(s, d) for s in range(k) for d in range(k) if s != d], dtype=np.int64).reshape(-1, 2)
                coef_link = s_in * cluster.dtype_bytes / cluster.bandwidth[pairs[:, 0], pairs[:, 1]]
                alpha = cluster.latency[pairs[:, 0], pairs[:, 1]]
                A_cols = np.full((k, k), -1, dtype=np.int64)
                rows_entries = []
                if mode == "modelled" and pairs.size:
                    units = np.flatnonzero(consumed)
                    m, P = units.shape[0], pairs.shape[0]
                    U = b.var((m, P), 0, 1, integral)
                    fam("u", U)
                    Xp = x_columns[l - 1]
                    # u[j,p] - x_prev[j,s_p] - y[j,d_p] >= -1
                    local = np.repeat(np.arange(m * P), 3)
                    cols = np.stack([U, Xp[units][:, pairs[:, 0]], Y[units][:, pairs[:, 1]]], axis=2).ravel()
                    vals = np.tile([1.0, -1.0, -1.0], m * P)
                    b.add(local, cols, vals, np.full(m * P, -1.0), np.full(m * P, np.inf), LINEAR)
                    Acol = b.var((P,), 0, 1, integral)
                    fam("a", Acol)
                    A_cols[pairs[:, 0], pairs[:, 1]] = Acol
                    b.implies(U, np.broadcast_to(Acol[None, :], (m, P)))
                    lv.u, lv.u_units, lv.pairs = U, units, pairs
                    link_coef, link_alpha = tick(coef_link), tick(alpha)
                    for p in range(P):
                        rows_entries.append(
                            (np.concatenate([[Acol[p]], U[:, p]]), np.concatenate([[link_alpha[p]], np.full(m, link_coef[p])]))
                        )
                elif mode == "constant" and pairs.size:
                    src = constants[l - 1]
                    link_coef, link_alpha = tick(coef_link), tick(alpha)
                    for p, (s, d) in enumerate(pairs.tolist()):
                        from_s = np.flatnonzero(consumed & (src == s))
                        if from_s.size == 0:
                            continue
                        a_sd = int(b.var((), 0, 1, integral))
                        fam("a", np.atleast_1d(a_sd))
                        A_cols[s, d] = a_sd
                        b.implies(Y[from_s, d], np.full(from_s.size, a_sd))
                        rows_entries.append(
                            (np.concatenate([[a_sd], Y[from_s, d]]), np.concatenate([[link_alpha[p]], np.full(from_s.size, link_coef[p])]))
                        )
                lv.a = A_cols
                time_var("t_link", rows_entries)
        if latency:
            per_worker = layer.flops_per_unit[:, None] / (cluster.flop_rate * cluster.speed[None, :])  # (n_l, K)
            coefs = tick(per_worker)
            time_var("t_compute", [(X[:, w], coefs[:, w]) for w in range(k)])
        layer_vars.append(lv)

    gather = None
    if problem.output == "gather" and L in layers and k > 1:
        X = x_columns[L]
        n_L, s_L = network.unit_counts[L], float(network.message_sizes[L])
        if not latency:
            b.cost(X[:, 1:], s_L)  # = s_L·Σ_i (1 − x[L,i,0]) by the assignment rows, with positive terms
        else:
            G = b.var((k - 1,), 0, 1, integral)
            fam("g", G)
            b.implies(X[:, 1:], np.broadcast_to(G[None, :], (n_L, k - 1)))
            coef = tick(s_L * cluster.dtype_bytes / cluster.bandwidth[1:, 0])
            alpha = tick(cluster.latency[1:, 0])
            time_var("t_gather", [(np.concatenate([[G[w - 1]], X[:, w]]), np.concatenate([[alpha[w - 1]], np.full(n_L, coef[w - 1])])) for w in range(1, k)])
            gather = (G, L)

    # FLOPs / parameter capacities (sums over every layer, minus what layers outside the window already use)
    for cap, used, per_unit in (
        (cluster.flops_capacity, used_flops, "flops_per_unit"),
        (cluster.param_capacity, used_params, "params_per_unit"),
    ):
        if cap is None:
            continue
        used = np.zeros(k) if used is None else np.asarray(used, dtype=np.float64)
        local, cols, vals = [], [], []
        for l in layers:
            if l == 0:
                continue
            load = getattr(network.structure[l - 1], per_unit)
            X = x_columns[l]
            local.append(np.tile(np.arange(k), X.shape[0]))
            cols.append(X.ravel())
            vals.append(np.repeat(load, k))
        if not cols:
            continue
        limit = cap * (1 + 1e-12) - used  # the verifier's own tolerance
        if integral:
            limit = np.floor(limit + 1e-9)
        b.add(np.concatenate(local), np.concatenate(cols), np.concatenate(vals), np.full(k, -np.inf), limit, LINEAR)

    # symmetry breaking on the first free layer, only when nothing fixes the labels
    sym_layer, sym_workers, sym_cols = None, (), None
    workers = interchangeable_workers(problem)
    first = _first_free_layer(problem)
    if symmetry_breaking and len(workers) >= 2 and first is not None and start == first and first in x_columns:
        X = x_columns[first]
        n = X.shape[0]
        W = len(workers)
        O = b.var((n, W), 0, 1, True)  # O[i, m]: workers[m] is used by one of units 0..i
        fam("o", O)
        Xw = X[:, list(workers)]
        b.implies(Xw, O)
        if n > 1:
            b.implies(O[:-1], O[1:])
            # O[i] <= O[i-1] + X[i]
            m = (n - 1) * W
            local = np.repeat(np.arange(m), 3)
            cols = np.stack([O[1:], O[:-1], Xw[1:]], axis=2).ravel()
            vals = np.tile([1.0, -1.0, -1.0], m)
            b.add(local, cols, vals, np.full(m, -np.inf), np.zeros(m), LINEAR)
            # first use in increasing order: workers[m] only after workers[m-1] is used
            b.implies(Xw[1:, 1:], O[:-1, :-1])
        # unit 0 can only open the first interchangeable worker
        b.add(np.arange(W - 1), Xw[0, 1:], np.ones(W - 1), np.zeros(W - 1), np.zeros(W - 1), LINEAR)
        sym_layer, sym_workers, sym_cols = first, workers, O

    data = b.finish()
    return PartitionMILP(
        objective=problem.objective,
        offset=offset,
        layers=layers,
        x_columns=x_columns,
        constants=constants,
        scale=scale,
        rounding_error=rounding,
        integral=integral,
        k=k,
        symmetry_layer=sym_layer,
        symmetry_workers=sym_workers,
        families={name: np.concatenate(parts) for name, parts in families.items()},
        _layer_vars=tuple(layer_vars),
        _time_rows=np.concatenate(time_rows) if time_rows else np.zeros(0, dtype=np.int64),
        _time_cols=np.concatenate(time_cols) if time_cols else np.zeros(0, dtype=np.int64),
        _gather=gather,
        _symmetry_cols=sym_cols,
        **data,
    )


def full_assignment(problem: Any, model: PartitionMILP, placements: dict[int, np.ndarray], base: Any = None) -> tuple[np.ndarray, ...]:
    """The problem's assignment tuple: the model's placements, the input's constant, and ``base`` elsewhere."""
    counts = problem.network.unit_counts
    out = []
    for l in range(len(counts)):
        if l in placements:
            out.append(np.asarray(placements[l], dtype=np.int64))
        elif l == 0 and problem.input_mode == "replicated":
            out.append(np.full(counts[0], REPLICATED, dtype=np.int64))
        elif l == 0 and problem.input_mode == "fixed":
            out.append(np.asarray(problem.input_placement, dtype=np.int64))
        elif base is not None:
            out.append(np.asarray(base[l], dtype=np.int64))
        else:
            raise InvalidParameterError(f"no placement for layer {l}")
    return tuple(out)
