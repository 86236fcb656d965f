"""``cvxpy``: the km1 model of :mod:`.milp_model` as a MILP through cvxpy, solved by HiGHS.

The model is the same array description the ``ortools`` backend solves (one source of truth); here it is
handed to cvxpy as two variable vectors (integer and continuous columns) and sparse constraint blocks, and
solved with ``cp.HIGHS``. The latency objective is modelled in floating point (seconds times a power-of-ten
``scale`` for numerics), so nothing is rounded.

Bound: HiGHS's MIP dual bound (``solver_stats.extra_stats.mip_dual_bound``), read only when HiGHS's own
objective value agrees with ``c·v`` of the returned solution (so the offset and sense are known to match);
otherwise, or when HiGHS has no finite dual bound (time limit before the root LP), the LP relaxation is
solved and its value used. With option ``relaxation=True`` the LP relaxation is always solved and reported
in ``stats["lp_relaxation"]`` (the bound is the larger of the valid bounds). OPTIMAL only when HiGHS reports
optimal *and* its dual bound matches the simulator's recount of the solution (bound = objective).

The time limit (default 30 s) is passed to HiGHS as ``time_limit``; ``seed`` as ``random_seed``.

Extending: a new problem type adds its name to ``problem_types`` and a ``_solve_<ProblemType>`` method;
:meth:`CvxpyBackend.solve` dispatches on the type name, and :func:`solve_milp_highs` solves any array model
shaped like :class:`~.milp_model.PartitionMILP` (``c``, ``offset``, ``A``, row and column bounds,
``integer``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..errors import InvalidParameterError, SolverError
from ..solution import Status
from .base import Backend, BackendResult, Option
from .milp_model import PartitionMILP, build_partition_milp, full_assignment

__all__ = ["CvxpyBackend", "solve_milp_highs"]

DEFAULT_TIME_LIMIT = 30.0
# HiGHS's objective must agree with c·v this closely before its dual bound is trusted.
_CONSISTENCY_RTOL = 1e-6
_PROOF_RTOL = 1e-7


def _cvxpy_problem(model: Any, relax: bool):
    """Two variable vectors (integer / continuous columns) and the model's rows as sparse blocks."""
    import cvxpy as cp

    n = model.c.shape[0]
    integer = np.asarray(model.integer, dtype=bool) & (not relax)
    int_cols, cont_cols = np.flatnonzero(integer), np.flatnonzero(~integer)
    parts, variables = [], {}
    if int_cols.size:
        variables["int"] = cp.Variable(int(int_cols.size), integer=True, bounds=[model.lower[int_cols], model.upper[int_cols]])
        parts.append((int_cols, variables["int"]))
    if cont_cols.size:
        variables["cont"] = cp.Variable(int(cont_cols.size), bounds=[model.lower[cont_cols], model.upper[cont_cols]])
        parts.append((cont_cols, variables["cont"]))
    A = model.A.tocsc()

    def affine(rows: np.ndarray):
        block = A[rows] if rows.size < A.shape[0] else A
        return sum(block[:, cols] @ var for cols, var in parts)

    lo, hi = model.row_lower, model.row_upper
    equal = np.isfinite(lo) & (lo == hi)
    upper_only = np.isfinite(hi) & ~equal
    lower_only = np.isfinite(lo) & ~equal
    constraints = []
    for mask, build in (
        (equal, lambda rows: affine(rows) == lo[rows]),
        (upper_only, lambda rows: affine(rows) <= hi[rows]),
        (lower_only, lambda rows: affine(rows) >= lo[rows]),
    ):
        rows = np.flatnonzero(mask)
        if rows.size:
            constraints.append(build(rows))
    objective = sum(model.c[cols] @ var for cols, var in parts)
    problem = cp.Problem(cp.Minimize(objective), constraints)

    def values() -> np.ndarray | None:
        out = np.zeros(n)
        for cols, var in parts:
            if var.value is None:
                return None
            out[cols] = np.asarray(var.value, dtype=np.float64).ravel()
        return out

    return problem, values


def solve_milp_highs(
    model: Any,
    *,
    time_limit: float,
    seed: int | None,
    relax: bool = False,
    mip_rel_gap: float = 1e-9,
    verbose: bool = False,
    highs_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Solve an array model (or its LP relaxation) with HiGHS through cvxpy.

    Returns a dict with the cvxpy status, the values (or None), HiGHS's objective and dual bound in model
    units (offset included; ``None`` when not available or not trustworthy), and stats.
    """
    import cvxpy as cp
    from cvxpy.error import SolverError as CvxpySolverError

    problem, values_of = _cvxpy_problem(model, relax)
    opts: dict[str, Any] = {"time_limit": max(float(time_limit), 0.01)}
    if not relax:
        opts["mip_rel_gap"] = float(mip_rel_gap)
    if seed is not None:
        opts["random_seed"] = int(seed)
    opts.update(highs_options or {})
    started = time.perf_counter()
    try:
        problem.solve(solver=cp.HIGHS, verbose=bool(verbose), **opts)
    except CvxpySolverError as exc:
        return {"status": "solver_error", "values": None, "objective": None, "bound": None,
                "stats": {"highs_error": str(exc), "seconds": time.perf_counter() - started}}
    seconds = time.perf_counter() - started
    info = problem.solver_stats.extra_stats if problem.solver_stats is not None else None
    status = problem.status
    values = values_of() if status in ("optimal", "optimal_inaccurate", "user_limit") else None
    if values is not None and (info is None or int(getattr(info, "primal_solution_status", 2)) != 2):
        values = None  # a time limit before the first feasible point: cvxpy still reports user_limit
    stats: dict[str, Any] = {"cvxpy_status": status, "seconds": seconds}
    objective = bound = None
    if values is not None:
        objective = float(model.c @ values) + model.offset
    if info is not None:
        highs_value = float(info.objective_function_value)
        stats.update(
            highs_objective=highs_value,
            mip_dual_bound=float(info.mip_dual_bound) if not relax else None,
            mip_gap=float(info.mip_gap) if not relax else None,
            mip_node_count=int(info.mip_node_count) if not relax else None,
        )
        consistent = values is not None and math.isclose(
            highs_value, float(model.c @ values), rel_tol=_CONSISTENCY_RTOL, abs_tol=_CONSISTENCY_RTOL
        )
        stats["highs_consistent"] = bool(consistent)
        if relax:
            if status == "optimal" and values is not None:
                bound = float(model.c @ values) + model.offset  # the LP optimum is a lower bound
        elif consistent and np.isfinite(info.mip_dual_bound):
            # HiGHS minimises exactly c·v here (cvxpy passes no offset for an objective without constant)
            bound = float(info.mip_dual_bound) + model.offset
    return {"status": status, "values": values, "objective": objective, "bound": bound, "stats": stats}


def _integral_objective(model: Any) -> bool:
    return bool(np.all(model.c == np.round(model.c)) and float(model.offset).is_integer())


class CvxpyBackend(Backend):
    """The km1 MILP through cvxpy + HiGHS, with HiGHS's dual bound (or the LP relaxation) as the bound."""

    name = "cvxpy"
    description = "the km1 MILP through cvxpy + HiGHS, with its MIP dual bound / LP relaxation bound"
    requires = ("cvxpy", "highspy")
    extra = "cvxpy"
    problem_types = ("PartitionProblem",)
    exact = True
    options = {
        "mip_rel_gap": Option(1e-9, "HiGHS's relative gap at which it stops (OPTIMAL still needs bound = objective)"),
        "relaxation": Option(False, "also solve the LP relaxation and report its value in stats"),
        "symmetry_breaking": Option(True, "impose the first-use order of interchangeable workers"),
        "formulation": Option("sent", "km1 rows of a modelled producer: 'sent', 'presence' or 'hybrid' (all exact)"),
        "highs_options": Option({}, "extra HiGHS options passed through cvxpy"),
        "verbose": Option(False, "print HiGHS's log"),
    }

    def solve(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        handler = getattr(self, f"_solve_{type(problem).__name__}", None)
        if handler is None:  # pragma: no cover - resolve_backend checks problem_types first
            raise InvalidParameterError(f"backend 'cvxpy' cannot solve {type(problem).__name__}")
        return handler(problem, time_limit=time_limit, seed=seed, options=options)

    def _solve_PartitionProblem(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        started = time.perf_counter()
        total = float(time_limit) if time_limit is not None else DEFAULT_TIME_LIMIT
        model: PartitionMILP = build_partition_milp(problem, symmetry_breaking=bool(options["symmetry_breaking"]), formulation=options["formulation"])
        stats: dict[str, Any] = {"model": model.size(), "time_limit": total, "scale": model.scale}
        run = solve_milp_highs(
            model, time_limit=total - (time.perf_counter() - started), seed=seed, mip_rel_gap=float(options["mip_rel_gap"]),
            verbose=bool(options["verbose"]), highs_options=options["highs_options"],
        )
        stats.update(run["stats"])
        bounds = [] if run["bound"] is None else [run["bound"] / model.scale]
        if options["relaxation"] or (not bounds and run["status"] != "infeasible"):
            left = max(total - (time.perf_counter() - started), 0.5)
            lp = solve_milp_highs(model, time_limit=left, seed=seed, relax=True, highs_options=options["highs_options"])
            if lp["bound"] is not None:
                stats["lp_relaxation"] = lp["bound"] / model.scale
                bounds.append(lp["bound"] / model.scale)
        bound = max(bounds) if bounds else None
        if bound is not None and problem.objective == "volume" and _integral_objective(model):
            # every volume is an integer here, so a bound within HiGHS's tolerance of one rounds up to it
            bound = float(math.ceil(bound - 1e-6))
        status = run["status"]
        if status == "infeasible":
            return BackendResult(Status.INFEASIBLE, message="HiGHS proved that no placement meets the balance and capacity limits", stats=stats)
        if status == "solver_error":
            raise SolverError(f"HiGHS failed: {run['stats'].get('highs_error')}")
        if run["values"] is None:
            return BackendResult(Status.NO_SOLUTION, bound=bound, message=f"HiGHS found no solution within the time limit ({status})", stats=stats)
        assignment = full_assignment(problem, model, model.decode(run["values"]))
        from ..simulator import simulate

        report = simulate(problem.network, list(assignment), problem.cluster, output=problem.output, input_placement=problem.input_placement)
        value = problem.objective_value(report)
        stats["model_objective"] = run["objective"] / model.scale
        if bound is not None and bound > value:
            # HiGHS's tolerances can put its bound a hair above an optimum; never above the simulator's count
            stats["bound_clipped_from"] = bound
            bound = value if math.isclose(bound, value, rel_tol=1e-6, abs_tol=1e-9) else None
        if status == "optimal" and bound is not None and value - bound <= _PROOF_RTOL * max(abs(value), 1e-300):
            return BackendResult(Status.OPTIMAL, assignment, bound=bound, objective=value, message="HiGHS proved optimality", stats=stats)
        message = "HiGHS stopped at the time limit" if status != "optimal" else "HiGHS reported optimal, but its bound does not match the objective"
        return BackendResult(Status.FEASIBLE, assignment, bound=bound, objective=value, message=message, stats=stats)
