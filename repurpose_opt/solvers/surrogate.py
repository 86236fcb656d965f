"""The surrogate MIP of SPEC §5, solved jointly over all layers, then refit by the shared ℓ0 step.

Binaries x[l,i,k] (unit i of layer l on worker k) and, in budget mode, z[l,j,k] (input unit j of layer l
sent to worker k). With g^l_ij = ||W_l[i, j]||²·E[x_j²] the model maximises the retained importance

    Σ_l Σ_(i,j) g^l_ij · [i and j co-located, or (j, π_l(i)) opened]

under per-layer balance (and Σ_j s_{l-1}·z[l,j,·] ≤ the layer's budget in budget mode). In tolerance mode
no pair is opened by the model: it chooses the placement, and the ℓ0 step opens what each tolerance needs.
Only each layer's most important links (``keep`` fraction) get variables, which keeps the model small.

The retained mass is linearised with r[l,i,j,k] ≤ x[l,i,k] and r[l,i,j,k] ≤ x[l-1,j,k] (+ z[l,j,k]).
CP-SAT needs integer coefficients: weights are scaled to integers (largest = ``SCALE``) and the rounding
error of the objective is reported in ``stats["rounding_error"]``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..solution import Status
from .base import BackendResult
from .placement import fixed_input
from .restructure_engine import layer_importance, run_cascade

__all__ = ["SurrogateModel", "build_surrogate", "solve_surrogate_ortools", "solve_surrogate_cvxpy", "restructure_with_surrogate"]

SCALE = 100_000


@dataclass
class SurrogateModel:
    """The surrogate as plain arrays: per layer the kept links ``(i, j, weight)``."""

    k: int
    counts: tuple[int, ...]
    placed: tuple[int, ...]  # layers whose placement is a variable
    fixed0: np.ndarray | None  # input placement when fixed (or None)
    edges: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # layer l-1 index: (i, j, g) for layer l
    capacities: tuple[Any, ...]
    budgets: tuple[float, ...] | None
    message_sizes: tuple[int, ...]
    replicated: bool


def build_surrogate(problem: Any, keep: float = 0.1) -> SurrogateModel:
    """Importance weights of every layer's kept links, from the calibration data."""
    network = problem.network
    edges = []
    for g in layer_importance(network, problem.calibration_trace.activations):
        count = max(1, int(round(keep * g.size)))
        order = np.argsort(-g.ravel(), kind="stable")[:count]
        i, j = np.unravel_index(order, g.shape)
        edges.append((i.astype(np.int64), j.astype(np.int64), g.ravel()[order]))
    replicated = problem.input_mode == "replicated"
    placed = tuple(range(0 if problem.input_mode == "free" else 1, network.n_layers + 1))
    return SurrogateModel(
        k=problem.cluster.k,
        counts=network.unit_counts,
        placed=placed,
        fixed0=fixed_input(problem) if problem.input_mode == "fixed" else None,
        edges=edges,
        capacities=problem.capacities,
        budgets=problem.layer_budgets,
        message_sizes=network.message_sizes,
        replicated=replicated,
    )


def _retained(model: SurrogateModel, placements: list[np.ndarray], opened: list[np.ndarray] | None = None) -> float:
    total = 0.0
    for l, (i, j, g) in enumerate(model.edges, start=1):
        if l == 1 and model.replicated:
            continue
        here = placements[l][i]
        ok = placements[l - 1][j] == here
        if opened is not None and opened[l - 1] is not None:
            ok |= opened[l - 1][j, here]
        total += float(g[ok].sum())
    return total


def solve_surrogate_ortools(model: SurrogateModel, *, time_limit: float, seed: int | None, workers: int = 2,
                            hint: list[np.ndarray] | None = None) -> dict[str, Any]:
    """CP-SAT on the surrogate; returns placements, opened pairs, status, value, bound, rounding error."""
    from ortools.sat.python import cp_model

    from .ortools_cpsat import solve_interruptibly

    started = time.perf_counter()  # building the model counts toward ``time_limit``
    k = model.k
    cp = cp_model.CpModel()
    x: dict[int, list[list[Any]]] = {}
    for l in model.placed:
        x[l] = [[cp.new_bool_var(f"x{l}_{i}_{w}") for w in range(k)] for i in range(model.counts[l])]
        for i in range(model.counts[l]):
            cp.add_exactly_one(x[l][i])
        for w in range(k):
            cp.add(sum(x[l][i][w] for i in range(model.counts[l])) <= int(model.capacities[l][w]))
    if model.fixed0 is not None:
        x[0] = [[1 if model.fixed0[i] == w else 0 for w in range(k)] for i in range(model.counts[0])]
    z: dict[int, dict[tuple[int, int], Any]] = {}
    terms, exact_weights = [], []
    gmax = max((float(g.max()) for _, _, g in model.edges if g.size), default=1.0) or 1.0
    rounding = 0.0
    for l, (i_arr, j_arr, g_arr) in enumerate(model.edges, start=1):
        if l == 1 and model.replicated:
            continue
        if model.budgets is not None:
            z[l] = {}
            for j in np.unique(j_arr):
                for w in range(k):
                    z[l][(int(j), w)] = cp.new_bool_var(f"z{l}_{j}_{w}")
            cp.add(sum(z[l].values()) * model.message_sizes[l - 1] <= int(np.floor(model.budgets[l - 1] + 1e-9)))
        for i, j, g in zip(i_arr, j_arr, g_arr, strict=False):
            weight = int(round(g / gmax * SCALE))
            rounding += abs(weight * gmax / SCALE - g)
            if weight == 0:
                continue
            for w in range(k):
                r = cp.new_bool_var("")
                if hint is not None:  # a complete hint (r too), so CP-SAT starts from the hinted solution
                    source_here = hint[l - 1][j] == w if (l - 1) in x or model.fixed0 is not None else False
                    cp.add_hint(r, int(bool(hint[l][i] == w and source_here)))
                cp.add_implication(r, x[l][i][w])
                source = x[l - 1][j][w]
                if model.budgets is not None:
                    cp.add(r <= source + z[l][(int(j), w)])
                elif isinstance(source, int):
                    if source == 0:
                        cp.add(r == 0)
                else:
                    cp.add_implication(r, source)
                terms.append((weight, r))
                exact_weights.append(g)
    cp.maximize(sum(weight * r for weight, r in terms))
    if hint is not None:
        for l in model.placed:
            for i in range(model.counts[l]):
                for w in range(k):
                    cp.add_hint(x[l][i][w], int(hint[l][i] == w))
        for pairs in z.values():
            for var in pairs.values():
                cp.add_hint(var, 0)
    solver = cp_model.CpSolver()
    deadline = started + float(time_limit)
    solver.parameters.max_time_in_seconds = max(deadline - time.perf_counter(), MIN_SURROGATE_SECONDS)
    solver.parameters.num_workers = int(workers)
    if seed is not None:
        solver.parameters.random_seed = int(seed)
    status = solve_interruptibly(solver, cp, deadline=deadline)  # Ctrl-C stops CP-SAT and unwinds
    name = solver.status_name(status)
    if status == cp_model.MODEL_INVALID:
        from ..errors import SolverError

        raise SolverError(f"CP-SAT rejected the surrogate model: {cp.validate() or name}")
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return {"status": name, "placements": None}
    placements = _read_placements(model, lambda l, i, w: solver.value(x[l][i][w]))
    opened = None
    if model.budgets is not None:
        opened = [None] * len(model.edges)
        for l, pairs in z.items():
            mask = np.zeros((model.counts[l - 1], k), dtype=bool)
            for (j, w), var in pairs.items():
                mask[j, w] = bool(solver.value(var))
            opened[l - 1] = mask
    return {
        "status": name,
        "placements": placements,
        "opened": opened,
        "value": _retained(model, placements, opened),
        "bound_scaled": solver.best_objective_bound * gmax / SCALE,
        "rounding_error": rounding,
        "seconds": solver.wall_time,
    }


def _read_placements(model: SurrogateModel, value) -> list[np.ndarray]:
    placements = []
    for l in range(len(model.counts)):
        if l in model.placed:
            placements.append(np.array([next(w for w in range(model.k) if value(l, i, w) > 0.5) for i in range(model.counts[l])], dtype=np.int64))
        elif l == 0 and model.fixed0 is not None:
            placements.append(np.asarray(model.fixed0, dtype=np.int64))
        else:
            placements.append(np.full(model.counts[0], -1, dtype=np.int64))
    return placements


@dataclass
class _ArrayMILP:
    """The surrogate as the array model :func:`~.cvxpy_milp.solve_milp_highs` solves (minimise c·v)."""

    c: np.ndarray
    offset: float
    A: Any
    row_lower: np.ndarray
    row_upper: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    integer: np.ndarray

    def violation(self, values: np.ndarray) -> float:
        activity = self.A @ values
        worst = max(float(np.max(self.row_lower - activity, initial=0.0)), float(np.max(activity - self.row_upper, initial=0.0)),
                    float(np.max(self.lower - values, initial=0.0)), float(np.max(values - self.upper, initial=0.0)))
        integral = values[self.integer]
        return max(worst, float(np.max(np.abs(integral - np.round(integral)), initial=0.0)))


def _array_model(model: SurrogateModel) -> tuple[_ArrayMILP, dict[int, np.ndarray], dict[int, np.ndarray], list]:
    """Columns: x[l] (n_l·K, binary) per placed layer, z[l] (n_{l-1}·K, binary, budget mode), r (continuous)."""
    import scipy.sparse as sp

    k = model.k
    count = 0
    x_cols: dict[int, np.ndarray] = {}
    z_cols: dict[int, np.ndarray] = {}
    for l in model.placed:
        x_cols[l] = count + np.arange(model.counts[l] * k).reshape(model.counts[l], k)
        count += model.counts[l] * k
    active = [l for l in range(1, len(model.edges) + 1) if not (l == 1 and model.replicated)]
    if model.budgets is not None:
        for l in active:
            z_cols[l] = count + np.arange(model.counts[l - 1] * k).reshape(model.counts[l - 1], k)
            count += model.counts[l - 1] * k
    n_binary = count
    rows, cols, vals, lo, hi, cost = [], [], [], [], [], []
    r_blocks = []  # (layer, r columns (n_links, K), i, j)
    n_rows = 0

    def add_rows(row_cols: np.ndarray, row_vals: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
        # row_cols / row_vals: (n, m) blocks, one row each
        nonlocal n_rows
        n, m = row_cols.shape
        rows.append(np.repeat(n_rows + np.arange(n), m))
        cols.append(row_cols.ravel())
        vals.append(row_vals.ravel())
        lo.append(low)
        hi.append(high)
        n_rows += n

    for l in model.placed:
        n = model.counts[l]
        add_rows(x_cols[l], np.ones((n, k)), np.ones(n), np.ones(n))  # one worker per unit
        caps = np.asarray(model.capacities[l], dtype=float)
        add_rows(x_cols[l].T, np.ones((k, n)), np.full(k, -np.inf), caps)  # balance
    for l in active:
        i_arr, j_arr, g_arr = model.edges[l - 1]
        r = count + np.arange(i_arr.size * k).reshape(i_arr.size, k)
        count += i_arr.size * k
        r_blocks.append((l, r, i_arr, j_arr))
        cost.append((r.ravel(), -np.repeat(g_arr, k)))
        m = i_arr.size * k
        add_rows(np.stack([r.ravel(), x_cols[l][i_arr].ravel()], axis=1), np.tile([1.0, -1.0], (m, 1)),
                 np.full(m, -np.inf), np.zeros(m))  # r ≤ x[l, i, w]
        source_cols, source_vals, upper = [r.ravel()[:, None]], [np.ones((m, 1))], np.zeros(m)
        if l - 1 in x_cols:
            source_cols.append(x_cols[l - 1][j_arr].ravel()[:, None])
            source_vals.append(-np.ones((m, 1)))
        else:  # a fixed input: the co-location indicator is a constant
            upper = (model.fixed0[j_arr][:, None] == np.arange(k)[None, :]).astype(float).ravel()
        if l in z_cols:
            source_cols.append(z_cols[l][j_arr].ravel()[:, None])
            source_vals.append(-np.ones((m, 1)))
        add_rows(np.hstack(source_cols), np.hstack(source_vals), np.full(m, -np.inf), upper)  # r ≤ source (+ z)
        if l in z_cols:
            budget = float(np.floor(model.budgets[l - 1] + 1e-9))
            add_rows(z_cols[l].ravel()[None, :], np.full((1, z_cols[l].size), float(model.message_sizes[l - 1])),
                     np.array([-np.inf]), np.array([budget]))
    c = np.zeros(count)
    for where, value in cost:
        c[where] = value
    A = sp.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_rows, count))
    integer = np.zeros(count, dtype=bool)
    integer[:n_binary] = True
    milp = _ArrayMILP(c=c, offset=0.0, A=A, row_lower=np.concatenate(lo), row_upper=np.concatenate(hi),
                      lower=np.zeros(count), upper=np.ones(count), integer=integer)
    return milp, x_cols, z_cols, r_blocks


def solve_surrogate_cvxpy(model: SurrogateModel, *, time_limit: float, seed: int | None = None,
                          hint: list[np.ndarray] | None = None) -> dict[str, Any]:
    """The same MIP through cvxpy + HiGHS (no integer scaling needed), with HiGHS's dual bound.

    HiGHS runs through :func:`~.cvxpy_milp.solve_milp_highs` (a child process stopped at the time limit:
    HiGHS alone can overrun its own limit by minutes on this model).
    """
    from ..errors import SolverError
    from .cvxpy_milp import solve_milp_highs

    started = time.perf_counter()  # building the arrays counts toward ``time_limit``
    milp, x_cols, z_cols, r_blocks = _array_model(model)
    start = None
    if hint is not None:  # a MIP start: the hinted placement, no pair opened, r = co-location
        start = np.zeros(milp.c.shape[0])
        for l, where in x_cols.items():
            start[where[np.arange(model.counts[l]), hint[l]]] = 1.0
        for l, r, i_arr, j_arr in r_blocks:
            source = hint[l - 1] if (l - 1) in x_cols else model.fixed0
            start[r] = ((hint[l][i_arr] == source[j_arr])[:, None] & (hint[l][i_arr][:, None] == np.arange(model.k)[None, :]))
    run = solve_milp_highs(milp, time_limit=max(time_limit - (time.perf_counter() - started), MIN_SURROGATE_SECONDS),
                           seed=seed, start=start)
    if run["status"] == "interrupted":  # Ctrl-C: HiGHS is stopped; nothing is refit yet, so unwind
        raise KeyboardInterrupt
    if run["status"] == "solver_error":
        raise SolverError(f"HiGHS failed on the surrogate MIP: {run['stats'].get('highs_error')}")
    values = run["values"]
    if values is None:
        return {"status": str(run["status"]), "placements": None}
    placements = _read_placements(model, lambda l, i, w: values[x_cols[l][i, w]])
    opened = None
    if model.budgets is not None:
        opened = [None] * len(model.edges)
        for l, where in z_cols.items():
            opened[l - 1] = values[where] > 0.5
    bound = None if run.get("bound") is None else -float(run["bound"])
    return {"status": str(run["status"]), "placements": placements, "opened": opened,
            "value": _retained(model, placements, opened), "bound_scaled": bound, "rounding_error": 0.0,
            "seconds": run.get("stats", {}).get("seconds")}


def _fill_sink(problem: Any, model: SurrogateModel, plan: list[np.ndarray]) -> list[np.ndarray]:
    """In budget mode with gathered outputs, put as many output units on worker 0 as its capacity allows.

    The layer budgets (``problem.layer_budgets``) assume the least gather; the surrogate does not model the
    gather, so its last layer may send more. Units move to worker 0 in the order of the importance they
    would keep local there (minus what they keep where they are); other workers only lose units.
    """
    if problem.comm_budget is None or problem.output != "gather":
        return plan
    last = plan[-1]
    need = min(int(problem.capacities[-1][0]), last.size) - int(np.sum(last == 0))
    if need <= 0:
        return plan
    i_arr, j_arr, g_arr = model.edges[-1]
    source = plan[-2] if len(plan) > 1 else None
    gain = np.zeros(last.size)
    if source is not None and source[0] >= 0:  # a replicated input keeps nothing local either way
        np.add.at(gain, i_arr, g_arr * ((source[j_arr] == 0).astype(float) - (source[j_arr] == last[i_arr])))
    movable = np.flatnonzero(last != 0)
    chosen = movable[np.argsort(-gain[movable], kind="stable")[:need]]
    last[chosen] = 0
    return plan


#: Solver statuses that mean "stopped by the time limit without a solution" (CP-SAT; HiGHS through cvxpy, or
#: its child process killed at the limit).
_OUT_OF_TIME = ("UNKNOWN", "killed", "user_limit")
#: Share of the time left after building the surrogate MIP that its solver gets (the cascade gets the rest).
SURROGATE_SHARE = 0.6
#: The MIP solver's time without a ``time_limit``, and its least time (CP-SAT and HiGHS need a moment to load
#: the model and take the warm start; below this they may return nothing).
DEFAULT_SURROGATE_SECONDS, MIN_SURROGATE_SECONDS = 30.0, 0.05


def restructure_with_surrogate(problem: Any, engine: str, *, time_limit: float | None, seed: int | None,
                               keep: float = 0.1, workers: int = 2) -> BackendResult:
    """Place with the surrogate MIP (``engine``: "ortools" or "cvxpy"), then the shared ℓ0 step."""
    from .restructure_engine import importance_chain

    started = time.perf_counter()
    model = build_surrogate(problem, keep)
    # Warm start: the importance chain maximises the same retained mass by alternating exact assignments.
    hint = importance_chain(problem, problem.calibration_trace.activations)
    # The MIP gets SURROGATE_SHARE of what is left of the limit after building it; the cascade the rest.
    left = None if time_limit is None else time_limit - (time.perf_counter() - started)
    limit = DEFAULT_SURROGATE_SECONDS if left is None else max(MIN_SURROGATE_SECONDS, SURROGATE_SHARE * left)
    if engine == "ortools":
        out = solve_surrogate_ortools(model, time_limit=limit, seed=seed, workers=workers, hint=hint)
    else:
        out = solve_surrogate_cvxpy(model, time_limit=limit, seed=seed, hint=hint)
    out["hint_value"] = _retained(model, hint)
    name = f"{engine} surrogate MIP"
    if out["placements"] is None:
        if out["status"] not in _OUT_OF_TIME:
            return BackendResult(Status.NO_SOLUTION, message=f"surrogate MIP ({engine}) found no placement: {out['status']}")
        # Stopped by the time limit before it improved on (or even loaded) its warm start: the warm start is
        # the MIP's incumbent, as it would be for any MIP solver given a start.
        out.update(placements=hint, used_warm_start=True)
        name = f"{engine} surrogate MIP stopped at its time limit ({out['status']}) before improving its warm start (importance chain)"
    plan = _fill_sink(problem, model, [np.asarray(p, dtype=np.int64).copy() for p in out["placements"]])
    left = None if time_limit is None else max(time_limit - (time.perf_counter() - started), 0.1)
    result = run_cascade(problem, plan[0], lambda ctx: [plan[ctx.l]], time_limit=left, name=name)
    result.stats["surrogate"] = {key: value for key, value in out.items() if key not in ("placements", "opened")}
    result.stats.setdefault("timings", {})["surrogate"] = time.perf_counter() - started
    return result
