"""``ortools``: the km1 model of :mod:`.milp_model` solved by OR-tools CP-SAT, warm-started, with its bound.

Modes (option ``mode``)
-----------------------
``"whole"``      one model of every layer: OPTIMAL when CP-SAT proves it, else FEASIBLE with CP-SAT's
                 ``best_objective_bound`` as the (valid, global) lower bound.
``"layerwise"``  one model per window of layers with the layer before it fixed (the first window also takes
                 the first layer that carries a cost: layers 0-1 for a free input, 1-2 for a replicated one),
                 committing each window before the next. For networks too large for one model. It is a
                 heuristic: status FEASIBLE, no bound (a window's bound says nothing about the whole network).
``"auto"``       ``whole`` unless the model would have more than ``whole_limit`` consumer implications
                 (Σ_l nnz(M_l)·K) or exceed the memory budget, then ``layerwise``.

Warm start: the best of the fast heuristics that are installed (``greedy``, ``munkres``, and always
``direct``) is relabelled into the model's symmetry-breaking representative, completed into a full variable
vector and given to CP-SAT as a solution hint (``stats["warm_start"]``); it gets a tenth of the time limit.

Latency objective: CP-SAT needs integers, so times are in ticks (option ``latency_ticks``, default: the power
of ten that maps an upper bound of the latency to <= 1e9 ticks), every coefficient rounded *down*. The bound
divided by the ticks is therefore a valid lower bound in seconds; ``stats["rounding_error"]`` bounds how far
the model can understate a placement's latency. OPTIMAL is claimed only when CP-SAT proves the tick model
optimal *and* the placement's true latency is within 1e-7 (relative) of that valid bound; otherwise the
status is FEASIBLE with the bound, and the message says so.

Search portfolio (option ``core_first``, default ``"auto"``). With fewer than 8 workers CP-SAT's default
portfolio leaves out its core-based (max-SAT) search. For the volume objective, a weighted sum of Booleans
(``y``) whose LP relaxation is nearly empty, the cores are what close the bound, so ``"auto"`` puts the core
search first. For the latency objective it does the opposite: the objective is a sum of a few integer
max-terms whose domains span ~1e8 ticks, where a core raises the bound by almost nothing, and the core
worker takes the slot of the LP-based tree search that actually proves these models (measured on a 24-unit
K = 2 instance: core first, bound stuck at 24 % of the optimum after 20 s; default portfolio, OPTIMAL in
0.5-1.5 s). So ``"auto"`` keeps CP-SAT's default portfolio for the latency objective.

Time limit, Ctrl-C, size. Everything runs inside ``time_limit`` (default 30 s): the warm start gets a tenth,
the model is built in what remains (the Python-side translation costs ~10-20 µs per row and checks the
clock, giving up when the time is gone), and CP-SAT gets the rest. CP-SAT runs in a helper thread
(:func:`solve_cpsat`) with its own SIGINT handling off: the calling thread waits, stops the search with
``stop_search`` at the deadline (CP-SAT's presolve can overrun ``max_time_in_seconds`` by seconds) or when
Ctrl-C arrives, and then reads CP-SAT's best solution. The warm start is offered as an incumbent as soon as
it is known, and returned (status FEASIBLE, with CP-SAT's bound in whole mode) when CP-SAT finds nothing
better in time. ``can_solve`` refuses a model whose estimated size (~800 bytes per row, measured: CP-SAT's
copies and presolve included) exceeds :func:`~.base.memory_budget`, naming the estimate.

CP-SAT's presolve symmetry detection is switched off by default (``symmetry_level = 0``): on these models it
can run far past the time limit, and the model already breaks the worker symmetry itself. Any CP-SAT
parameter can be set through the ``parameters`` option.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np

from ..errors import BackendCannotSolveError, InvalidParameterError, SolverError
from ..solution import Status
from .base import (
    MEMORY_ENV,
    Backend,
    BackendResult,
    Option,
    boolean,
    choice,
    format_bytes,
    integer,
    mapping,
    memory_budget,
    number,
    text,
)
from .milp_model import (
    CLAUSE,
    EXACTLY_ONE,
    FORMULATIONS,
    IMPLIES,
    PartitionMILP,
    auto_ticks,
    build_partition_milp,
    canonicalize,
    full_assignment,
)

__all__ = ["OrtoolsBackend", "solve_milp_cpsat", "solve_cpsat", "solve_interruptibly", "warm_start_assignment", "model_rows"]

DEFAULT_TIME_LIMIT = 30.0
MODES = ("auto", "whole", "layerwise")
CORE_FIRST_PORTFOLIO = ("core", "default_lp", "max_lp", "no_lp", "quick_restart", "reduced_costs")
# OPTIMAL for the latency objective: the true latency of the incumbent within this of the valid bound.
_LATENCY_PROOF_RTOL = 1e-7
#: Measured peak memory of a CP-SAT km1 model per row (proto, presolve copies, search), in bytes.
BYTES_PER_ROW = 800
# CP-SAT gets this long past its own time limit before the waiting thread stops it.
_STOP_GRACE = 0.5


class _OutOfTime(Exception):
    """The model could not be built within the time limit."""


def solve_cpsat(solver: Any, model: Any, *, deadline: float | None = None) -> tuple[Any, bool]:
    """``solver.solve(model)`` in a helper thread that Ctrl-C and a hard deadline can stop.

    CP-SAT's own SIGINT handler is switched off (``catch_sigint_signal``): it would end the search as if
    the time limit had run out and swallow the Ctrl-C. Instead the calling thread waits; on
    ``KeyboardInterrupt`` it calls ``solver.stop_search()`` (repeatedly, in case the search had not started)
    and waits for CP-SAT to return its best solution; at ``deadline`` (``time.perf_counter()`` seconds) plus a
    grace of 0.5 s it stops the search the same way. Returns ``(status, interrupted)``; the solver holds the
    response as after ``solver.solve``.
    """
    solver.parameters.catch_sigint_signal = False
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["status"] = solver.solve(model)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            box["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=run, name="repurpose-cpsat", daemon=True)
    worker.start()
    interrupted = False
    try:
        while not done.wait(0.1):
            if deadline is not None and time.perf_counter() > deadline + _STOP_GRACE:
                solver.stop_search()
    except KeyboardInterrupt:
        interrupted = True
        while not done.wait(0.05):
            solver.stop_search()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["status"], interrupted


def solve_interruptibly(solver: Any, model: Any, *, deadline: float | None = None) -> Any:
    """``solver.solve(model)`` for callers that keep nothing on Ctrl-C: stops CP-SAT, then re-raises.

    A drop-in replacement of ``status = solver.solve(model)`` (see :func:`solve_cpsat`).
    """
    status, interrupted = solve_cpsat(solver, model, deadline=deadline)
    if interrupted:
        raise KeyboardInterrupt
    return status


def model_rows(problem: Any, layers: Any = None) -> int:
    """Rows of the km1 model of ``layers`` (default: every placed layer), estimated from the connectivity.

    One consumer row per (nonzero, worker) of every modelled layer, plus the assignment, balance and
    producer rows; the latency objective adds a row per (consumed activation, link).
    """
    network, k = problem.network, problem.cluster.k
    first = 0 if problem.input_mode == "free" else 1
    layers = range(first, network.n_layers + 1) if layers is None else layers
    rows = 0
    for l in layers:
        rows += network.unit_counts[l] + k
        if l == 0 or (l == 1 and problem.input_mode == "replicated"):
            continue
        M = network.structure[l - 1].connectivity
        rows += int(M.nnz) * k + M.shape[1] * k
        if problem.objective == "latency":
            rows += M.shape[1] * k * (k - 1)
    return int(rows)


def warm_start_assignment(problem: Any, choice: Any, budget: float, seed: int | None) -> tuple[tuple | None, dict[str, Any]]:
    """The best placement of the fast heuristics (``choice``: "auto", "none" or a backend name).

    Returns the assignment (or None) and a stats record naming every heuristic tried and its objective.
    """
    if choice in (None, "none", False):
        return None, {"used": False, "reason": "disabled"}
    from ..api import solve
    from ..errors import RepurposeError
    from .registry import backend_names, get_backend

    if choice == "auto":
        names = [n for n in ("greedy", "munkres") if n in backend_names() and get_backend(n).available()] + ["direct"]
    elif isinstance(choice, str):
        names = [choice]
    else:
        raise InvalidParameterError(f"`warm_start` must be 'auto', 'none' or a backend name, got {choice!r}")
    tried: dict[str, Any] = {}
    best, best_name, best_value = None, None, math.inf
    begun = time.perf_counter()
    for name in names:
        started = time.perf_counter()
        try:
            # The heuristics share the budget; direct (instant) always runs.
            sol = solve(problem, name, time_limit=max(budget - (started - begun), 0.05), seed=seed)
        except RepurposeError as exc:
            tried[name] = f"failed: {exc}"
            continue
        tried[name] = {"status": sol.status.value, "objective": sol.objective, "seconds": time.perf_counter() - started}
        if sol.status.has_solution and sol.objective < best_value:
            best, best_name, best_value = sol.assignment, name, float(sol.objective)
    record: dict[str, Any] = {"used": best is not None, "tried": tried}
    if best is not None:
        record.update(backend=best_name, objective=best_value)
    return best, record


def _cpsat_model(model: PartitionMILP, hint: np.ndarray | None, deadline: float | None = None):
    """Translate the array model into a CpModel (implications and exactly-one rows in native form).

    Raises ``_OutOfTime`` when ``deadline`` (``time.perf_counter()`` seconds) passes during the translation.
    """
    from ortools.sat.python import cp_model

    if not model.integral:
        raise SolverError("CP-SAT needs an integral model (build it with integer_ticks for the latency objective)")
    A = model.A
    if A.nnz and not np.all(A.data == np.round(A.data)):
        raise SolverError("CP-SAT needs integer coefficients; the model has fractional ones")
    cp = cp_model.CpModel()
    lower, upper = model.lower, model.upper
    binary = (lower == 0) & (upper == 1)
    variables = [
        cp.new_bool_var("") if is_bool else cp.new_int_var(int(math.ceil(lo)), int(math.floor(hi)), "")
        for is_bool, lo, hi in zip(binary.tolist(), lower.tolist(), upper.tolist(), strict=True)
    ]
    indptr, indices, data = A.indptr, A.indices, A.data.astype(np.int64)
    lo_rows, hi_rows = model.row_lower, model.row_upper
    weighted = cp_model.LinearExpr.weighted_sum
    for r, kind in enumerate(model.row_kind.tolist()):
        if deadline is not None and not r % 4096 and time.perf_counter() > deadline:
            raise _OutOfTime
        cols = indices[indptr[r] : indptr[r + 1]].tolist()
        coefs = data[indptr[r] : indptr[r + 1]].tolist()
        if kind == IMPLIES:
            ante, cons = (cols[0], cols[1]) if coefs[0] < 0 else (cols[1], cols[0])
            cp.add_implication(variables[ante], variables[cons])
        elif kind == EXACTLY_ONE:
            cp.add_exactly_one([variables[j] for j in cols])
        elif kind == CLAUSE:
            cp.add_bool_or([variables[j] if a > 0 else variables[j].Not() for j, a in zip(cols, coefs, strict=True)])
        else:
            lo = -(2**62) if not np.isfinite(lo_rows[r]) else int(math.ceil(lo_rows[r] - 1e-9))
            hi = 2**62 if not np.isfinite(hi_rows[r]) else int(math.floor(hi_rows[r] + 1e-9))
            cp.add_linear_constraint(weighted([variables[j] for j in cols], coefs), lo, hi)
    nz = np.flatnonzero(model.c)
    c = model.c[nz]
    if not np.all(c == np.round(c)) or model.offset != round(model.offset):
        raise SolverError("CP-SAT needs an integral objective; the model has fractional costs")
    cp.minimize(weighted([variables[j] for j in nz.tolist()], c.astype(np.int64).tolist()) + int(round(model.offset)))
    if hint is not None:
        for var, value in zip(variables, np.round(hint).astype(np.int64).tolist(), strict=True):
            cp.add_hint(var, value)
    return cp, variables


def solve_milp_cpsat(
    model: PartitionMILP,
    *,
    time_limit: float,
    seed: int | None,
    num_workers: int,
    hint: np.ndarray | None = None,
    parameters: dict[str, Any] | None = None,
    log: bool = False,
    core_first: bool = True,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Solve an array model with CP-SAT: status name, values, objective and bound (model units), stats.

    ``deadline`` (``time.perf_counter()`` seconds, default: now + ``time_limit``) bounds the model's
    translation too: past it the status is ``"OUT_OF_TIME"`` with no values. ``interrupted`` is True when
    Ctrl-C stopped the search (the values are CP-SAT's best solution at that point, if any); the caller
    decides what to do with them and re-raises ``KeyboardInterrupt``.
    """
    from ortools.sat.python import cp_model

    built = time.perf_counter()
    if deadline is None:
        deadline = built + float(time_limit)
    try:
        cp, _ = _cpsat_model(model, hint, deadline)
    except _OutOfTime:
        return {"status": "OUT_OF_TIME", "values": None, "objective": None, "bound": None, "interrupted": False,
                "stats": {"cpsat_status": "not run: the model's translation used up the time limit",
                          "build_seconds": time.perf_counter() - built, "wall_time": 0.0}}
    build_seconds = time.perf_counter() - built
    time_limit = min(float(time_limit), deadline - time.perf_counter())
    solver = cp_model.CpSolver()
    params = solver.parameters
    params.max_time_in_seconds = max(float(time_limit), 0.01)
    params.num_workers = int(num_workers)
    if seed is not None:
        params.random_seed = int(seed)
    params.symmetry_level = 0
    params.log_search_progress = bool(log)
    if core_first and int(num_workers) < 8:
        # With few workers CP-SAT's default portfolio leaves out the core-based (max-SAT) search, and the LP
        # relaxation of a km1 model is nearly empty (x = 1/K makes every y = 1/K): the cores are what close
        # the bound. The first entries get the full-problem workers; LNS still runs interleaved.
        params.subsolvers.extend(CORE_FIRST_PORTFOLIO)
    for key, value in (parameters or {}).items():
        if not hasattr(params, key):
            raise InvalidParameterError(f"unknown CP-SAT parameter {key!r} in option `parameters`")
        if isinstance(value, (list, tuple)):  # repeated fields, e.g. subsolvers
            field = getattr(params, key)
            field.clear()
            field.extend(value)
        else:
            setattr(params, key, value)
    status, interrupted = solve_cpsat(solver, cp, deadline=deadline)
    name = solver.status_name(status)
    if name == "MODEL_INVALID":
        # The model's own validation, or (invalid parameters) the reason CP-SAT gives in its response.
        raise SolverError(f"CP-SAT rejected the model: {cp.validate() or solver.solution_info() or 'no reason given'}")
    has_solution = name in ("OPTIMAL", "FEASIBLE")
    values = np.array(list(solver.response_proto.solution), dtype=np.float64) if has_solution else None
    return {
        "status": name,
        "values": values,
        "objective": float(solver.objective_value) if has_solution else None,
        "bound": float(solver.best_objective_bound) if name not in ("INFEASIBLE", "MODEL_INVALID") else None,
        "interrupted": interrupted,
        "stats": {
            "cpsat_status": name,
            "wall_time": float(solver.wall_time),
            "build_seconds": build_seconds,
            "num_conflicts": int(solver.num_conflicts),
            "num_branches": int(solver.num_branches),
            "solution_info": solver.solution_info(),
        },
    }


class OrtoolsBackend(Backend):
    """CP-SAT on the whole-network km1 model (or layer by layer), warm-started from the fast heuristics."""

    name = "ortools"
    description = "OR-tools CP-SAT on the km1 model (whole network or layer by layer), warm-started, with bound and gap"
    requires = ("ortools",)
    extra = "ortools"
    problem_types = ("PartitionProblem", "RestructureProblem")
    exact = ("PartitionProblem",)  # the km1 model is exact; the restructuring surrogate is a heuristic
    options = {
        "num_workers": Option(2, "CP-SAT search workers (threads); 1 makes a run that ends before the time limit reproducible for a seed (several workers race)", check=integer(minimum=1)),
        "mode": Option("auto", "'whole' (one model, global bound), 'layerwise' (window by window, no bound) or 'auto'", check=choice(*MODES)),
        "whole_limit": Option(250_000, "auto mode: use layerwise above this many consumer implications Σ_l nnz(M_l)·K", check=integer(minimum=0)),
        "window": Option(1, "layerwise mode: layers per window after the first", check=integer(minimum=1)),
        "warm_start": Option("auto", "'auto' (best of greedy/munkres/direct), 'none', or a backend name", check=text()),
        "symmetry_breaking": Option(True, "impose the first-use order of interchangeable workers", check=boolean()),
        "formulation": Option("sent", "km1 rows of a modelled producer: 'sent', 'presence' or 'hybrid' (all exact)", check=choice(*FORMULATIONS)),
        "latency_ticks": Option(None, "latency objective: ticks per second of the integer model (None: automatic)", check=number(strictly_positive=True, none=True)),
        "core_first": Option("auto", "with fewer than 8 workers, give the first worker to CP-SAT's core-based search; 'auto': for the volume objective only (module docstring)", check=boolean(auto=True)),
        "parameters": Option({}, "extra CP-SAT parameters, e.g. {'symmetry_level': 2}; lists set repeated fields", check=mapping()),
        "log": Option(False, "print CP-SAT's search log", check=boolean()),
    }

    # --------------------------------------------------------------------------------------- helpers
    @staticmethod
    def _implications(problem: Any) -> int:
        return int(sum(layer.connectivity.nnz for layer in problem.network.structure)) * problem.cluster.k

    def _mode(self, problem: Any, options: dict[str, Any]) -> str:
        mode = options["mode"]
        if mode not in MODES:
            raise InvalidParameterError(f"option `mode` must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "auto":
            small = self._implications(problem) <= int(options["whole_limit"])
            return "whole" if small and self._size_reason(problem, "whole", 1) is None else "layerwise"
        return mode

    # ----------------------------------------------------------------------------------------- solve
    def can_solve(self, problem: Any) -> str | None:
        reason = super().can_solve(problem)
        if reason is not None or type(problem).__name__ != "PartitionProblem":
            return reason
        # The smallest model this backend can build (one layer per window); a mode chosen through the options
        # is checked again by `solve` before anything is built.
        return self._size_reason(problem, "layerwise", 1)

    def _size_reason(self, problem: Any, mode: str, width: int) -> str | None:
        """Why the model of ``mode`` is too large for the memory budget (None when it fits)."""
        limit = memory_budget()
        if mode == "whole":
            rows, what = model_rows(problem), "the whole-network model"
            hint = "use mode='layerwise', or the greedy or munkres backend"
        else:
            rows = max(model_rows(problem, window) for window in self._windows(problem, width))
            what, hint = "the largest layer-by-layer model", "use the greedy or munkres backend"
        need = rows * BYTES_PER_ROW
        if need <= limit:
            return None
        return (f"{what} would have {rows:,} rows / ~{format_bytes(need)} (about {BYTES_PER_ROW} bytes per row); "
                f"limit {format_bytes(limit)} (${MEMORY_ENV}); {hint}")

    def solve(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        if type(problem).__name__ == "RestructureProblem":
            return self._solve_RestructureProblem(problem, time_limit=time_limit, seed=seed, options=options)
        started = time.perf_counter()
        total = float(time_limit) if time_limit is not None else DEFAULT_TIME_LIMIT
        deadline = started + total
        mode = self._mode(problem, options)
        too_large = self._size_reason(problem, mode, int(options["window"]) if int(options["window"]) >= 1 else 1)
        if too_large is not None:
            raise BackendCannotSolveError(f"backend 'ortools' cannot solve this PartitionProblem: {too_large}")
        num_workers = int(options["num_workers"])  # both checked by their Options
        core_first = options["core_first"]
        if core_first == "auto":
            core_first = problem.objective == "volume"
        options = {**options, "core_first": core_first}
        ticks = None
        if problem.objective == "latency":
            ticks = float(options["latency_ticks"]) if options["latency_ticks"] is not None else auto_ticks(problem)
        warm, warm_stats = warm_start_assignment(problem, options["warm_start"], 0.1 * total, seed)
        if warm is not None:
            self.offer(warm, objective=warm_stats["objective"], message=f"warm start from {warm_stats['backend']}")
        stats: dict[str, Any] = {"mode": mode, "warm_start": warm_stats, "time_limit": total, "core_first": core_first}
        if ticks is not None:
            stats["latency_ticks"] = ticks
        remaining = lambda: max(deadline - time.perf_counter(), 0.05)  # noqa: E731
        if mode == "whole":
            return self._solve_whole(problem, warm, ticks, seed, num_workers, options, remaining, stats, deadline)
        return self._solve_layerwise(problem, warm, ticks, seed, num_workers, options, remaining, stats, deadline)

    def _solve_RestructureProblem(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        # The surrogate MIP of SPEC §5 on CP-SAT, jointly over all layers, then the shared ℓ0 step (H3).
        from .surrogate import restructure_with_surrogate

        return restructure_with_surrogate(problem, "ortools", time_limit=time_limit, seed=seed, workers=int(options["num_workers"]))

    @staticmethod
    def _warm_result(warm: Any, stats: dict[str, Any], bound: float | None, reason: str) -> BackendResult:
        """The warm start as the answer when CP-SAT has nothing (better) in time; NO_SOLUTION without one."""
        if warm is None:
            return BackendResult(Status.NO_SOLUTION, bound=bound, message=reason, stats=stats)
        stats["returned_warm_start"] = True
        origin = stats["warm_start"]["backend"]
        return BackendResult(Status.FEASIBLE, warm, bound=bound, objective=stats["warm_start"]["objective"],
                             message=f"{reason}; the answer is the warm start (from {origin}), the best incumbent", stats=stats)

    def _solve_whole(self, problem, warm, ticks, seed, num_workers, options, remaining, stats, deadline) -> BackendResult:
        model = build_partition_milp(problem, integer_ticks=ticks, symmetry_breaking=bool(options["symmetry_breaking"]), formulation=options["formulation"])
        stats["model"] = model.size()
        if ticks is not None:
            stats["rounding_error"] = model.rounding_error
        hint = None
        if warm is not None:
            placements = canonicalize(model, {l: warm[l] for l in model.layers})
            hint = model.complete(placements)
            stats["warm_start"]["model_objective"] = model.objective_value(hint) / model.scale
            stats["warm_start"]["hint_feasible"] = bool(model.violation(hint) <= 1e-9)
        run = solve_milp_cpsat(
            model, time_limit=remaining(), seed=seed, num_workers=num_workers, hint=hint,
            parameters=options["parameters"], log=bool(options["log"]), core_first=bool(options["core_first"]),
            deadline=deadline,
        )
        stats.update(run["stats"])
        name = run["status"]
        bound = None if run["bound"] is None else run["bound"] / model.scale
        assignment = true_value = None
        if run["values"] is not None:
            assignment = full_assignment(problem, model, model.decode(run["values"]))
            # An incumbent's auxiliaries may sit above their minimum (a y set without a consumer), so the model
            # objective only bounds the placement's cost from above; the simulator's count is the objective.
            true_value = _true_objective(problem, assignment)
        if run["interrupted"]:
            if assignment is not None:
                self.offer(assignment, objective=true_value, bound=bound, message="CP-SAT's incumbent when it was stopped")
            raise KeyboardInterrupt
        if name == "INFEASIBLE":
            return BackendResult(Status.INFEASIBLE, message="CP-SAT proved that no placement meets the balance and capacity limits", stats=stats)
        if assignment is None:
            why = ("the time limit ran out while the model was being built" if name == "OUT_OF_TIME"
                   else f"CP-SAT found no solution within the time limit ({name})")
            return self._warm_result(warm, stats, bound, why)
        value = run["objective"] / model.scale
        stats["model_objective"] = value
        if ticks is None:  # the volume model is exact: at a proven optimum its objective is the volume
            if name == "OPTIMAL":
                return BackendResult(Status.OPTIMAL, assignment, bound=value, objective=value, message="CP-SAT proved optimality", stats=stats)
            if warm is not None and stats["warm_start"]["objective"] < true_value:
                return self._warm_result(warm, stats, bound, "CP-SAT's incumbent at the time limit is worse than its warm start")
            return BackendResult(Status.FEASIBLE, assignment, bound=bound, objective=true_value, message="CP-SAT stopped at the time limit", stats=stats)
        stats["rounding_gap"] = true_value - value
        if name == "OPTIMAL" and bound is not None and true_value - bound <= _LATENCY_PROOF_RTOL * max(abs(true_value), 1e-300):
            return BackendResult(
                Status.OPTIMAL, assignment, bound=bound,
                message=f"CP-SAT proved the tick model optimal; the tick rounding leaves at most {true_value - bound:.3g} s",
                stats=stats,
            )
        if warm is not None and stats["warm_start"]["objective"] < true_value:
            return self._warm_result(warm, stats, bound, "CP-SAT's incumbent is slower than its warm start")
        message = (
            f"CP-SAT proved the tick model optimal, but the tick rounding leaves a gap of {true_value - bound:.3g} s"
            if name == "OPTIMAL" else "CP-SAT stopped at the time limit"
        )
        return BackendResult(Status.FEASIBLE, assignment, bound=bound, message=message, stats=stats)

    def _windows(self, problem: Any, width: int) -> list[tuple[int, ...]]:
        L = problem.network.n_layers
        mode = problem.input_mode
        start = 0 if mode == "free" else 1
        # The first window reaches the first layer whose placement has a cost of its own.
        first_end = min(start + 1, L) if mode in ("free", "replicated") else start
        windows = [tuple(range(start, first_end + 1))]
        l = first_end + 1
        while l <= L:
            end = min(l + width - 1, L)
            windows.append(tuple(range(l, end + 1)))
            l = end + 1
        return windows

    def _solve_layerwise(self, problem, warm, ticks, seed, num_workers, options, remaining, stats, deadline) -> BackendResult:
        width = int(options["window"])
        if width < 1:
            raise InvalidParameterError(f"option `window` must be >= 1, got {width}")
        counts = problem.network.unit_counts
        windows = self._windows(problem, width)
        placed: dict[int, np.ndarray] = {}
        k = problem.cluster.k
        used_flops, used_params = np.zeros(k), np.zeros(k)
        records = []
        stopped = None
        for w, window in enumerate(windows):
            if time.perf_counter() >= deadline - 0.05:
                stopped = f"the time limit ran out before layers {list(window)} were modelled"
                break
            left = sum(counts[l] for win in windows[w:] for l in win)
            share = remaining() * sum(counts[l] for l in window) / max(left, 1)
            previous = placed.get(window[0] - 1)
            model = build_partition_milp(
                problem, layers=window, previous=previous, used_flops=used_flops, used_params=used_params,
                integer_ticks=ticks, symmetry_breaking=bool(options["symmetry_breaking"]),
                formulation=options["formulation"],
            )
            hint = None
            if warm is not None:
                hint = model.complete(canonicalize(model, {l: warm[l] for l in window}))
                if model.violation(hint) > 1e-9:  # the heuristic's layers may not fit after our earlier windows
                    hint = None
            run = solve_milp_cpsat(
                model, time_limit=share, seed=seed, num_workers=num_workers, hint=hint,
                parameters=options["parameters"], log=bool(options["log"]), core_first=bool(options["core_first"]),
                deadline=min(deadline, time.perf_counter() + share),
            )
            records.append({"layers": list(window), "status": run["status"], **model.size(), "wall_time": run["stats"]["wall_time"]})
            if run["values"] is not None:
                placed.update(model.decode(run["values"]))
                used_flops, used_params = _loads_of(problem, placed, k)
            if run["interrupted"]:
                best = self._best_completion(problem, placed, warm)
                if best is not None:
                    self.offer(best[0], objective=best[1], message=f"layers {sorted(placed)} by CP-SAT, the rest from the warm start")
                raise KeyboardInterrupt
            if run["values"] is None:
                stopped = f"CP-SAT found no placement of layers {list(window)} given the layers before ({run['status']})"
                break
        stats["windows"] = records
        if stopped is None:
            assignment = full_assignment(problem, model, placed)
            return BackendResult(Status.FEASIBLE, assignment, message=f"layer by layer ({len(windows)} windows); no global bound", stats=stats)
        best = self._best_completion(problem, placed, warm)
        if best is None:
            return BackendResult(Status.NO_SOLUTION, message=f"layerwise mode: {stopped}, and there is no warm start; try mode='whole'", stats=stats)
        stats["completed_from_warm_start"] = sorted(set(range(len(counts))) - set(placed))
        return BackendResult(Status.FEASIBLE, best[0], objective=best[1], stats=stats,
                             message=f"layerwise mode: {stopped}; the other layers keep the warm start's placement (no global bound)")

    @staticmethod
    def _best_completion(problem: Any, placed: dict[int, np.ndarray], warm: Any) -> tuple[tuple, float] | None:
        """The better of the warm start and (the layers CP-SAT placed + the warm start elsewhere), if feasible."""
        if warm is None:
            return None
        from .placement import extra_capacity_violation

        candidates = [tuple(np.asarray(p, dtype=np.int64) for p in warm)]
        if placed:
            mixed = tuple(np.asarray(placed[l], dtype=np.int64) if l in placed else np.asarray(warm[l], dtype=np.int64)
                          for l in range(len(warm)))
            if extra_capacity_violation(problem, mixed) is None:
                candidates.append(mixed)
        scored = [(_true_objective(problem, c), i, c) for i, c in enumerate(candidates)]
        value, _, assignment = min(scored)
        return assignment, value


def _loads_of(problem: Any, placed: dict[int, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """FLOPs and parameters per worker of the layers placed so far (layer 0 carries none)."""
    flops, params = np.zeros(k), np.zeros(k)
    for l, placement in placed.items():
        if l == 0:
            continue
        layer = problem.network.structure[l - 1]
        flops += np.bincount(placement, weights=layer.flops_per_unit, minlength=k)
        params += np.bincount(placement, weights=layer.params_per_unit, minlength=k)
    return flops, params


def _true_objective(problem: Any, assignment: tuple[np.ndarray, ...]) -> float:
    from ..simulator import simulate

    report = simulate(problem.network, list(assignment), problem.cluster, output=problem.output, input_placement=problem.input_placement)
    return problem.objective_value(report)
