"""``cvxpy``: the km1 model of :mod:`.milp_model` as a MILP through cvxpy, solved by HiGHS.

The model is the same array description the ``ortools`` backend solves (one source of truth); here it is
handed to cvxpy as two variable vectors (integer and continuous columns) and sparse constraint blocks, and
solved with ``cp.HIGHS``. The latency objective is modelled in floating point (seconds times a power-of-ten
``scale`` for numerics), so nothing is rounded.

Bound: HiGHS's MIP dual bound (``solver_stats.extra_stats.mip_dual_bound``), read only when HiGHS's own
objective value agrees with ``c·v`` of the returned solution (so the offset and sense are known to match);
otherwise, or when HiGHS has no finite dual bound (time limit before the root LP), the LP relaxation is
solved in the time left and its value used. With option ``relaxation=True`` the LP relaxation is solved
first (before the MIP, so the MIP cannot use up its time) and reported in ``stats["lp_relaxation"]`` (the
bound is the larger of the valid bounds). OPTIMAL only when HiGHS reports
optimal *and* its dual bound matches the simulator's recount of the solution (bound = objective).

Time limit (default 30 s). Every phase runs inside it: the model is built after the clock starts, HiGHS gets
what is left (less a small grace), the LP relaxation runs only in the time that remains after that, and HiGHS
runs in a child process (forked where the platform allows it, so it starts in milliseconds) that is killed at
the deadline. The kill is needed because HiGHS 1.14 does not honour its own ``time_limit`` inside a root-node
cut separation round: its mod-k separator (``HighsGFkSolve::findNonzero``, ~90 % of the samples in a perf
profile) checks neither the clock nor the interrupt callback, and one round took 5-30 s on 1 500-column km1
models given 2 s. HiGHS is asked to log every improving solution to a private file
(``mip_improving_solution_file``), so after a kill the last complete incumbent in that log is still returned
(checked against the model's rows; status FEASIBLE, no bound: the dual bound dies with the child).
``stats["highs_killed"]`` says when that happened. ``seed`` is passed as ``random_seed``.

Ctrl-C and crashes. The child ignores SIGINT (a terminal's Ctrl-C reaches the whole process group): the
parent, waiting for it, receives the ``KeyboardInterrupt``, kills the child, reads its last logged incumbent,
offers it (:func:`~.base.offer_incumbent`) and re-raises, so :func:`repurpose_opt.solve` returns it with
status FEASIBLE. The child's stderr goes to a private file; if the child dies (a segfault, an abort in the
native library) the error is a :class:`~repurpose_opt.SolverError` with the exit signal and the last lines
HiGHS wrote there, and the calling process is unaffected. When HiGHS finds nothing in time, the warm start
(an incumbent the backend already holds) is the answer, with status FEASIBLE and a message saying so.
``can_solve`` refuses a model whose estimated size (600 bytes per nonzero; ~450 measured for cvxpy's
canonicalisation and HiGHS) exceeds :func:`~.base.memory_budget`.

Warm start (option ``warm_start``, as for ``ortools``): the best placement of the fast heuristics, found in a
tenth of the time limit, completed into a full variable vector and handed to HiGHS as a MIP start through a
solution file (``read_solution_file``; cvxpy passes no initial values to HiGHS). ``stats["warm_start"]``.

Extending: a new problem type adds its name to ``problem_types`` and a ``_solve_<ProblemType>`` method;
:meth:`CvxpyBackend.solve` dispatches on the type name, and :func:`solve_milp_highs` solves any array model
shaped like :class:`~.milp_model.PartitionMILP` (``c``, ``offset``, ``A``, row and column bounds,
``integer``).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import sys
import tempfile
import time
import warnings
from typing import Any

import numpy as np

from ..errors import InvalidParameterError, SolverError
from ..solution import Status
from .base import (
    MEMORY_ENV,
    Backend,
    BackendResult,
    Option,
    boolean,
    choice,
    describe_exit,
    format_bytes,
    mapping,
    memory_budget,
    number,
    text,
)
from .milp_model import FORMULATIONS, PartitionMILP, build_partition_milp, full_assignment

__all__ = ["CvxpyBackend", "solve_milp_highs"]

DEFAULT_TIME_LIMIT = 30.0
# HiGHS's objective must agree with c·v this closely before its dual bound is trusted.
_CONSISTENCY_RTOL = 1e-6
_PROOF_RTOL = 1e-7
# The LP relaxation is not started with less than this left of the time limit.
_MIN_LP_SECONDS = 0.1
#: Peak memory per model nonzero through cvxpy + HiGHS (measured ~450 bytes on 80k-580k nonzeros, rounded up).
BYTES_PER_NONZERO = 600


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

    values.columns = {id(var): cols for cols, var in parts}  # model columns of each cvxpy variable
    return problem, values


# Seconds between HiGHS's own time limit and the kill of its process (HiGHS normally stops well within this).
_GRACE_SECONDS = 0.5
_GRACE_FRACTION = 0.2


def solve_milp_highs(
    model: Any,
    *,
    time_limit: float,
    seed: int | None,
    relax: bool = False,
    mip_rel_gap: float = 1e-9,
    verbose: bool = False,
    highs_options: dict[str, Any] | None = None,
    isolate: bool = True,
    start: np.ndarray | None = None,
) -> dict[str, Any]:
    """Solve an array model (or its LP relaxation) with HiGHS through cvxpy, within ``time_limit`` seconds.

    Returns a dict with the cvxpy status, the values (or None), HiGHS's objective and dual bound in model
    units (offset included; ``None`` when not available or not trustworthy), and stats.

    With ``isolate`` (the default) HiGHS runs in a child process that is killed when ``time_limit`` runs
    out (module docstring: HiGHS can overrun its own limit by many seconds); the status is then
    ``"killed"``, with the last improving solution HiGHS logged (or None) and no bound. HiGHS itself gets
    ``time_limit`` less a grace of ``min(0.5 s, 20 %)`` to stop on its own first. ``start`` (a full variable
    vector in model columns, e.g. :meth:`PartitionMILP.complete`) is handed to HiGHS as a MIP start.
    """
    time_limit = max(float(time_limit), 0.01)
    if not isolate:
        return _solve_highs_here(model, time_limit=time_limit, seed=seed, relax=relax, mip_rel_gap=mip_rel_gap,
                                 verbose=verbose, highs_options=highs_options, start=start)
    grace = min(_GRACE_SECONDS, _GRACE_FRACTION * time_limit)
    started = time.perf_counter()
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with tempfile.TemporaryDirectory(prefix="repurpose-highs-") as folder:
        log_path = None if relax else os.path.join(folder, "incumbents.txt")
        stderr_path = os.path.join(folder, "stderr.txt")
        receive, send = context.Pipe(duplex=False)
        kwargs = {"time_limit": max(time_limit - grace, 0.01), "seed": seed, "relax": relax, "mip_rel_gap": mip_rel_gap,
                  "verbose": verbose, "highs_options": highs_options, "incumbent_log": log_path, "start": start}
        child = context.Process(target=_highs_child, args=(send, model, kwargs, stderr_path), daemon=True,
                                name="repurpose-highs")
        child.start()
        send.close()
        order = None
        interrupted = False
        try:
            while True:
                left = time_limit - (time.perf_counter() - started)
                if left <= 0 or not receive.poll(left):
                    break
                kind, payload = receive.recv()
                if kind == "order":
                    order = payload
                elif kind == "result":
                    return payload
                else:  # "error": cvxpy/HiGHS raised inside the child
                    return {"status": "solver_error", "values": None, "objective": None, "bound": None,
                            "stats": {"highs_error": payload, "seconds": time.perf_counter() - started}}
        except EOFError:  # the child died without answering (a crash of the native library)
            child.join(1.0)
            return {"status": "solver_error", "values": None, "objective": None, "bound": None,
                    "stats": {"highs_error": _death_notice(child.exitcode, stderr_path),
                              "seconds": time.perf_counter() - started}}
        except KeyboardInterrupt:  # Ctrl-C: stop HiGHS, keep its last incumbent (the caller re-raises)
            interrupted = True
        finally:
            if child.is_alive():
                child.kill()
            child.join()
            receive.close()
        # Out of time (HiGHS overran its own limit) or interrupted. Recover its last logged incumbent, if any.
        values = None if (log_path is None or order is None) else _last_incumbent(log_path, order, model)
        status = "interrupted" if interrupted else "killed"
        stats = {"cvxpy_status": status, "highs_killed": True, "seconds": time.perf_counter() - started,
                 "highs_time_limit": kwargs["time_limit"]}
        objective = None if values is None else float(model.c @ values) + model.offset
        return {"status": status, "values": values, "objective": objective, "bound": None, "stats": stats}


def _death_notice(exitcode: int | None, stderr_path: str) -> str:
    """What a dead HiGHS child says: how it died and the last lines of its stderr (the native message)."""
    try:
        with open(stderr_path, encoding="utf-8", errors="replace") as handle:
            tail = handle.read()[-600:].strip()
    except OSError:
        tail = ""
    return f"the HiGHS process {describe_exit(exitcode)}" + (f"; its last output: {tail}" if tail else "")


def _highs_child(connection: Any, model: Any, kwargs: dict[str, Any], stderr_path: str | None = None) -> None:
    """The child process: solve, stream the column order first (for the incumbent log), then the result.

    It ignores SIGINT (the parent decides when it stops) and writes its stderr to ``stderr_path`` so that
    the parent can quote a native crash.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import faulthandler

    faulthandler.disable()  # inherited from the parent (pytest enables it): its dump would bury HiGHS's message
    if stderr_path is not None:
        handle = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(handle, 2)
        os.close(handle)
        sys.stderr = open(2, "w", buffering=1, errors="replace", closefd=False)  # Python-level writes too
    try:
        warnings.filterwarnings("ignore", message="Solution may be inaccurate")
        result = _solve_highs_here(model, on_built=lambda order: connection.send(("order", order)), **kwargs)
        connection.send(("result", result))
    except Exception as exc:  # reported to the parent, which turns it into a SolverError
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        connection.close()


def _last_incumbent(path: str, order: np.ndarray, model: Any) -> np.ndarray | None:
    """The last complete solution in HiGHS's improving-solution log, in model columns, if it is feasible.

    The log holds blocks ``Objective v`` / ``# Columns n`` / n lines ``name value`` in HiGHS's column order,
    which is cvxpy's variable order (``order[t]`` = model column of HiGHS column t).
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    n = order.shape[0]
    best = None
    t = 0
    while t < len(lines):
        if lines[t].startswith("Objective") and t + 1 < len(lines) and lines[t + 1].startswith("# Columns"):
            block = lines[t + 2 : t + 2 + n]
            if len(block) == n:
                try:
                    raw = np.array([float(line.rsplit(None, 1)[-1]) for line in block])
                except (ValueError, IndexError):
                    break
                best = raw
            t += 2 + n
        else:
            t += 1
    if best is None:
        return None
    values = np.zeros(model.c.shape[0])
    values[order] = best
    integer = np.asarray(model.integer, dtype=bool)
    values[integer] = np.round(values[integer])
    return values if model.violation(values) <= 1e-6 else None


def _solve_highs_here(
    model: Any,
    *,
    time_limit: float,
    seed: int | None,
    relax: bool = False,
    mip_rel_gap: float = 1e-9,
    verbose: bool = False,
    highs_options: dict[str, Any] | None = None,
    incumbent_log: str | None = None,
    on_built: Any = None,
    start: np.ndarray | None = None,
) -> dict[str, Any]:
    """:func:`solve_milp_highs` in this process (HiGHS's own time limit only)."""
    import cvxpy as cp
    from cvxpy.error import SolverError as CvxpySolverError

    problem, values_of = _cvxpy_problem(model, relax)
    # HiGHS's columns follow cvxpy's variable order (the order of problem.variables()).
    order = np.concatenate([values_of.columns[id(var)] for var in problem.variables()])
    if on_built is not None:
        on_built(order)
    opts: dict[str, Any] = {"time_limit": max(float(time_limit), 0.01)}
    folder = None
    if start is not None and not relax:
        # A MIP start: HiGHS reads it from a solution file (cvxpy passes no initial values to HiGHS).
        folder = tempfile.TemporaryDirectory(prefix="repurpose-highs-start-")
        path = os.path.join(folder.name, "start.txt")
        x = np.asarray(start, dtype=np.float64)[order]
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"Model status\nUnknown\n\n# Primal solution values\nFeasible\nObjective {float(model.c @ start)!r}\n")
            handle.write(f"# Columns {x.size}\n" + "".join(f"c{t} {value!r}\n" for t, value in enumerate(x.tolist())) + "# Rows 0\n")
        opts["read_solution_file"] = path
    if incumbent_log is not None:
        opts.update(mip_improving_solution_save=True, mip_improving_solution_file=incumbent_log)
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
    if folder is not None:
        folder.cleanup()
    return {"status": status, "values": values, "objective": objective, "bound": bound, "stats": stats}


def _integral_objective(model: Any) -> bool:
    return bool(np.all(model.c == np.round(model.c)) and float(model.offset).is_integer())


class CvxpyBackend(Backend):
    """The km1 MILP through cvxpy + HiGHS, with HiGHS's dual bound (or the LP relaxation) as the bound."""

    name = "cvxpy"
    description = "the km1 MILP through cvxpy + HiGHS, with its MIP dual bound / LP relaxation bound"
    requires = ("cvxpy", "highspy")
    extra = "cvxpy"
    problem_types = ("PartitionProblem", "PruningProblem", "RestructureProblem")
    exact = ("PartitionProblem",)  # the MILP is exact; pruning (group lasso) and the surrogate are heuristics
    options = {
        "mip_rel_gap": Option(1e-9, "HiGHS's relative gap at which it stops (OPTIMAL still needs bound = objective)", check=number(minimum=0.0)),
        "relaxation": Option(False, "also solve the LP relaxation and report its value in stats", check=boolean()),
        "symmetry_breaking": Option(True, "impose the first-use order of interchangeable workers", check=boolean()),
        "formulation": Option("sent", "km1 rows of a modelled producer: 'sent', 'presence' or 'hybrid' (all exact)", check=choice(*FORMULATIONS)),
        "warm_start": Option("auto", "MIP start: 'auto' (best of greedy/munkres/direct, a tenth of the time limit), 'none', or a backend name", check=text()),
        "highs_options": Option({}, "extra HiGHS options passed through cvxpy", check=mapping()),
        "verbose": Option(False, "print HiGHS's log", check=boolean()),
    }

    def solve(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        handler = getattr(self, f"_solve_{type(problem).__name__}", None)
        if handler is None:  # pragma: no cover - resolve_backend checks problem_types first
            raise InvalidParameterError(f"backend 'cvxpy' cannot solve {type(problem).__name__}")
        return handler(problem, time_limit=time_limit, seed=seed, options=options)

    def _solve_PruningProblem(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        # Relaxed ℓ0 (group lasso path with a conic solver), pair selection and exact refit (H3).
        from .cvxpy_pruning import solve_pruning_group_lasso

        return solve_pruning_group_lasso(problem, time_limit=time_limit)

    def _solve_RestructureProblem(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        # The surrogate MIP of SPEC §5 through cvxpy + HiGHS, jointly over all layers, then the shared ℓ0 step (H3).
        from .surrogate import restructure_with_surrogate

        return restructure_with_surrogate(problem, "cvxpy", time_limit=time_limit, seed=seed)

    def can_solve(self, problem: Any) -> str | None:
        reason = super().can_solve(problem)
        if reason is None and type(problem).__name__ == "PruningProblem":
            from . import cvxpy_pruning

            nonzeros, where = cvxpy_pruning.group_lasso_nonzeros(problem)
            need, limit = nonzeros * cvxpy_pruning.BYTES_PER_NONZERO, memory_budget()
            if need > limit:
                return (f"the group-lasso path would hold ~{nonzeros:,} nonzeros / ~{format_bytes(need)} in cvxpy and "
                        f"Clarabel (largest {where}; about {cvxpy_pruning.BYTES_PER_NONZERO} bytes per nonzero); limit "
                        f"{format_bytes(limit)} (${MEMORY_ENV}); use the greedy backend")
        if reason is not None or type(problem).__name__ != "PartitionProblem":
            return reason
        from .ortools_cpsat import model_rows

        # Nonzeros of the km1 model: ~3 per consumer row (the "sent" clauses) plus the assignment rows.
        network = problem.network
        nonzeros = 3 * model_rows(problem) + 2 * sum(network.unit_counts) * problem.cluster.k
        need, limit = nonzeros * BYTES_PER_NONZERO, memory_budget()
        if need > limit:
            return (f"the MILP would have ~{nonzeros:,} nonzeros / ~{format_bytes(need)} in cvxpy and HiGHS (about "
                    f"{BYTES_PER_NONZERO} bytes per nonzero); limit {format_bytes(limit)} (${MEMORY_ENV}); use the "
                    f"ortools backend with mode='layerwise', or greedy / munkres")
        return None

    def _solve_PartitionProblem(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        started = time.perf_counter()
        total = float(time_limit) if time_limit is not None else DEFAULT_TIME_LIMIT
        model: PartitionMILP = build_partition_milp(problem, symmetry_breaking=bool(options["symmetry_breaking"]), formulation=options["formulation"])
        stats: dict[str, Any] = {"model": model.size(), "time_limit": total, "scale": model.scale}
        left = lambda: total - (time.perf_counter() - started)  # noqa: E731
        from .milp_model import canonicalize
        from .ortools_cpsat import warm_start_assignment

        warm, warm_stats = warm_start_assignment(problem, options["warm_start"], 0.1 * total, seed)
        stats["warm_start"] = warm_stats
        if warm is not None:
            self.offer(warm, objective=warm_stats["objective"], message=f"warm start from {warm_stats['backend']}")
        start = None
        if warm is not None:
            start = model.complete(canonicalize(model, {l: warm[l] for l in model.layers}))
            feasible = bool(model.violation(start) <= 1e-9)
            warm_stats.update(hint_feasible=feasible, model_objective=model.objective_value(start) / model.scale)
            start = start if feasible else None

        def settle(run: dict[str, Any]) -> dict[str, Any]:
            """Ctrl-C stopped HiGHS: offer its last incumbent (if it logged one) and unwind."""
            if run["status"] == "interrupted":
                if run["values"] is not None:
                    assignment = full_assignment(problem, model, model.decode(run["values"]))
                    self.offer(assignment, message="HiGHS's last logged incumbent when it was stopped")
                raise KeyboardInterrupt
            return run

        lp_bound = None
        if options["relaxation"]:
            # Asked for: solve the LP first (it is fast), so the MIP cannot use up its time.
            lp = settle(solve_milp_highs(model, time_limit=max(left(), 0.01), seed=seed, relax=True, highs_options=options["highs_options"]))
            lp_bound = lp["bound"]
            if lp_bound is not None:
                stats["lp_relaxation"] = lp_bound / model.scale
        run = settle(solve_milp_highs(
            model, time_limit=max(left(), 0.01), seed=seed, mip_rel_gap=float(options["mip_rel_gap"]),
            verbose=bool(options["verbose"]), highs_options=options["highs_options"], start=start,
        ))
        stats.update(run["stats"])
        bounds = [b / model.scale for b in (run["bound"], lp_bound) if b is not None]
        if not bounds and not options["relaxation"] and run["status"] not in ("infeasible", "solver_error"):
            # The LP relaxation only gets what is left of the time limit (nothing left: no LP bound).
            if left() > _MIN_LP_SECONDS:
                lp = solve_milp_highs(model, time_limit=left(), seed=seed, relax=True, highs_options=options["highs_options"])
                if lp["status"] == "interrupted":
                    if run["values"] is not None:
                        settle({**run, "status": "interrupted"})
                    raise KeyboardInterrupt
                if lp["bound"] is not None:
                    stats["lp_relaxation"] = lp["bound"] / model.scale
                    bounds.append(lp["bound"] / model.scale)
            else:
                stats["lp_relaxation_skipped"] = "no time left"
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
            how = "HiGHS overran the time limit and was stopped before it logged an incumbent" if status == "killed" else f"HiGHS found no solution within the time limit ({status})"
            return self._warm_result(problem, warm, warm_stats, bound, how, stats)
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
        if warm is not None and warm_stats["objective"] < value:
            return self._warm_result(problem, warm, warm_stats, bound, f"HiGHS's incumbent ({status}) is worse than its warm start", stats)
        if status == "killed":
            message = ("HiGHS overran its time limit and was stopped at the deadline; the solution is the last incumbent "
                       "it logged (no bound)")
        elif status != "optimal":
            message = "HiGHS stopped at the time limit"
        else:
            message = "HiGHS reported optimal, but its bound does not match the objective"
        return BackendResult(Status.FEASIBLE, assignment, bound=bound, objective=value, message=message, stats=stats)

    @staticmethod
    def _warm_result(problem: Any, warm: Any, warm_stats: dict[str, Any], bound: float | None, reason: str,
                     stats: dict[str, Any]) -> BackendResult:
        """The warm start as the answer when HiGHS has nothing (better) in time; NO_SOLUTION without one."""
        if warm is None:
            return BackendResult(Status.NO_SOLUTION, bound=bound, message=reason, stats=stats)
        if bound is not None and bound > warm_stats["objective"]:
            bound = None  # only possible through HiGHS's tolerances; never claim a bound above the answer
        stats["returned_warm_start"] = True
        return BackendResult(Status.FEASIBLE, warm, bound=bound, objective=warm_stats["objective"], stats=stats,
                             message=f"{reason}; the answer is the warm start (from {warm_stats['backend']}), the best incumbent")
