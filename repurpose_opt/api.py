"""``solve``: one function for every problem and backend."""

from __future__ import annotations

import math
import time
from typing import Any

from ._validation import as_float, as_int
from .errors import InvalidParameterError, RepurposeError, SolverError
from .simulator import simulate
from .solution import Solution, Status
from .solvers.base import BackendResult
from .solvers.registry import resolve_backend

__all__ = ["solve", "PROBLEM_TYPES"]

PROBLEM_TYPES = ("PartitionProblem", "RestructureProblem", "PruningProblem")

# Objective agreement between a backend's claim and the simulator's recount.
_REL_TOL = 1e-6
_ABS_TOL = 1e-9


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=_ABS_TOL)


def check_options(backend: Any, options: Any) -> dict[str, Any]:
    """Backend defaults overridden by ``options``; unknown keys raise, listing the valid ones."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise InvalidParameterError(f"`options` must be a dict, got {type(options).__name__}")
    valid = backend.options
    unknown = sorted(str(key) for key in options if key not in valid)
    if unknown:
        listed = ", ".join(sorted(valid)) or "none"
        raise InvalidParameterError(f"unknown option(s) {unknown} for backend {backend.name!r}; valid options: {listed}")
    merged = {key: opt.default for key, opt in valid.items()}
    merged.update(options)
    return merged


def solve(
    problem: Any,
    backend: str = "auto",
    *,
    time_limit: float | None = None,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    verify: bool = False,
) -> Solution:
    """Solve ``problem`` with ``backend`` and return a new :class:`Solution`; the problem is not changed.

    Parameters
    ----------
    problem : PartitionProblem, RestructureProblem or PruningProblem
    backend : str
        A name from :func:`list_backends`, or ``"auto"`` for the first installed backend that can solve it.
    time_limit : float, optional
        Seconds; backends return their best incumbent when it runs out.
    seed : int, optional
        Makes randomised backends reproducible.
    options : dict, optional
        Backend-specific options; unknown keys raise, listing the valid ones.
    verify : bool
        Run :func:`repurpose_opt.verify` on the result and raise :class:`SolverError` if it fails.

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> net = ro.Network([ro.Dense(np.eye(4)), ro.ReLU(), ro.Dense(np.eye(4))], input_shape=(4,))
    >>> problem = ro.PartitionProblem(net, ro.Cluster(k=2), input_placement="free", output="distributed")
    >>> sol = ro.solve(problem, backend="bruteforce")
    >>> sol.status.value, sol.objective, sol.bound
    ('OPTIMAL', 0.0, 0.0)
    """
    kind = type(problem).__name__
    if kind not in PROBLEM_TYPES:
        raise InvalidParameterError(f"`problem` must be one of {', '.join(PROBLEM_TYPES)}, got {kind}")
    engine = resolve_backend(backend, problem)
    merged = check_options(engine, options)
    if time_limit is not None:
        time_limit = as_float("time_limit", time_limit, strictly_positive=True)
    if seed is not None:
        seed = as_int("seed", seed, minimum=0)
    started = time.perf_counter()
    try:
        result = engine.solve(problem, time_limit=time_limit, seed=seed, options=merged)
    except RepurposeError:
        raise
    except Exception as exc:  # a crash inside a backend or a native library
        raise SolverError(f"backend {engine.name!r} failed on this {kind}: {type(exc).__name__}: {exc}") from exc
    solved = time.perf_counter() - started
    if not isinstance(result, BackendResult):
        raise SolverError(f"backend {engine.name!r} returned {type(result).__name__}, not a BackendResult")
    solution = _finish(problem, engine.name, result, seed)
    timings = {"solve": solved, **result.stats.pop("timings", {}), "total": time.perf_counter() - started}
    object.__setattr__(solution, "timings", timings)
    if verify:
        from .verify import verify as run_verify

        check = run_verify(problem, solution)
        if not check.ok:
            raise SolverError(f"backend {engine.name!r} returned a solution that fails verification: {'; '.join(check.violations)}")
    return solution


def _finish(problem: Any, name: str, result: BackendResult, seed: int | None) -> Solution:
    """Recount the objective with the simulator and refuse inconsistent claims."""
    status = Status(result.status)
    network = result.network if result.network is not None else getattr(problem, "network", None)
    report = objective = None
    assignment = result.assignment
    if status.has_solution:
        if assignment is None:
            raise SolverError(f"backend {name!r} reported {status.value} without an assignment")
        report = simulate(network, list(assignment), problem.cluster, output=problem.output, input_placement=problem.input_placement)
        objective = problem.objective_value(report, network)
        if result.objective is not None and not _close(result.objective, objective):
            raise SolverError(
                f"backend {name!r} reported objective {result.objective!r} but the simulator measures {objective!r}"
            )
        from .simulator import normalize_assignment

        assignment = normalize_assignment(network, list(assignment), problem.cluster.k, problem.input_placement)
    elif assignment is not None:
        raise SolverError(f"backend {name!r} returned an assignment with status {status.value}")
    bound = None if result.bound is None else float(result.bound)
    gap = None
    if objective is not None and bound is not None:
        if bound > objective and not _close(bound, objective):
            raise SolverError(f"backend {name!r} reported bound {bound!r} above its objective {objective!r}")
        gap = max(0.0, (objective - bound) / max(abs(objective), 1e-12))
    if status is Status.OPTIMAL and (bound is None or not _close(bound, objective)):
        raise SolverError(f"backend {name!r} claimed OPTIMAL without a matching lower bound (bound={bound}, objective={objective})")
    if status is Status.OPTIMAL:
        gap = 0.0
    return Solution(
        status=status,
        objective=objective,
        bound=bound,
        gap=gap,
        backend=name,
        assignment=assignment,
        network=network,
        report=report,
        guarantee=result.guarantee,
        message=result.message,
        stats=dict(result.stats),
        cluster=problem.cluster,
        output=problem.output,
        seed=seed,
    )
