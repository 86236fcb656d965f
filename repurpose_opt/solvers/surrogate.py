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
from .restructure_engine import _group_energy, run_cascade

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
    activations = network.trace(problem.calibration).activations
    edges = []
    for l, (layer, structure) in enumerate(zip(network.linear_layers, network.structure), start=1):
        x = activations[l - 1]
        if structure.kind == "dense":
            power = np.mean(x.reshape(x.shape[0], -1) ** 2, axis=0)
        else:
            kh, kw = layer.W.shape[2:]
            power = np.repeat(np.mean(x**2, axis=(0, 2)), kh * kw)
        g = _group_energy(layer.W, structure.n_inputs, power)
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
        for i, j, g in zip(i_arr, j_arr, g_arr):
            weight = int(round(g / gmax * SCALE))
            rounding += abs(weight * gmax / SCALE - g)
            if weight == 0:
                continue
            for w in range(k):
                r = cp.new_bool_var("")
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
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = float(time_limit)
    solver.parameters.num_workers = int(workers)
    if seed is not None:
        solver.parameters.random_seed = int(seed)
    status = solver.solve(cp)
    name = solver.status_name(status)
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


def solve_surrogate_cvxpy(model: SurrogateModel, *, time_limit: float) -> dict[str, Any]:
    """The same MIP through cvxpy + HiGHS (no integer scaling needed); its LP relaxation bounds it."""
    import cvxpy as cp

    k = model.k
    x = {l: cp.Variable((model.counts[l], k), boolean=True) for l in model.placed}
    constraints = []
    for l in model.placed:
        constraints += [cp.sum(x[l], axis=1) == 1, cp.sum(x[l], axis=0) <= np.asarray(model.capacities[l], dtype=float)]
    objective = 0
    z = {}
    for l, (i_arr, j_arr, g_arr) in enumerate(model.edges, start=1):
        if l == 1 and model.replicated:
            continue
        r = cp.Variable((i_arr.size, k), nonneg=True)
        constraints.append(r <= x[l][i_arr, :])
        if model.fixed0 is not None and l == 1:
            source = (model.fixed0[j_arr][:, None] == np.arange(k)[None, :]).astype(float)
        else:
            source = x[l - 1][j_arr, :]
        if model.budgets is not None:
            z[l] = cp.Variable((model.counts[l - 1], k), boolean=True)
            constraints += [r <= source + z[l][j_arr, :], model.message_sizes[l - 1] * cp.sum(z[l]) <= np.floor(model.budgets[l - 1] + 1e-9)]
        else:
            constraints.append(r <= source)
        objective = objective + cp.sum(cp.multiply(np.repeat(g_arr[:, None], k, axis=1), r))
    problem = cp.Problem(cp.Maximize(objective), constraints)
    problem.solve(solver=cp.HIGHS, time_limit=float(time_limit))
    if x[model.placed[0]].value is None:
        return {"status": str(problem.status), "placements": None}
    placements = _read_placements(model, lambda l, i, w: x[l].value[i, w])
    opened = None
    if model.budgets is not None:
        opened = [None] * len(model.edges)
        for l, var in z.items():
            opened[l - 1] = var.value > 0.5
    return {"status": str(problem.status), "placements": placements, "opened": opened,
            "value": _retained(model, placements, opened), "rounding_error": 0.0}


def restructure_with_surrogate(problem: Any, engine: str, *, time_limit: float | None, seed: int | None,
                               keep: float = 0.1, workers: int = 2) -> BackendResult:
    """Place with the surrogate MIP (``engine``: "ortools" or "cvxpy"), then the shared ℓ0 step."""
    from .restructure_engine import importance_chain

    started = time.perf_counter()
    model = build_surrogate(problem, keep)
    limit = 30.0 if time_limit is None else max(1.0, 0.7 * time_limit)
    if engine == "ortools":
        hint = importance_chain(problem, problem.network.trace(problem.calibration).activations)
        out = solve_surrogate_ortools(model, time_limit=limit, seed=seed, workers=workers, hint=hint)
    else:
        out = solve_surrogate_cvxpy(model, time_limit=limit)
    if out["placements"] is None:
        return BackendResult(Status.NO_SOLUTION, message=f"surrogate MIP ({engine}) found no placement: {out['status']}")
    plan = out["placements"]
    result = run_cascade(problem, plan[0], lambda ctx: [plan[ctx.l]], time_limit=time_limit, name=f"{engine} surrogate MIP")
    result.stats["surrogate"] = {key: value for key, value in out.items() if key not in ("placements", "opened")}
    result.stats.setdefault("timings", {})["surrogate"] = time.perf_counter() - started
    return result
