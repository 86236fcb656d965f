"""``solve``: one function for every problem and backend.

Interruption (Ctrl-C). ``KeyboardInterrupt`` raised while the backend runs is caught here: the solution is
built from the last incumbent the backend offered (:func:`~repurpose_opt.solvers.base.offer_incumbent`),
recounted by the simulator and checked like any other answer, with status FEASIBLE (NO_SOLUTION when the
backend had offered nothing), a message saying it was interrupted and ``stats["interrupted"] = True``. A
solve nested inside a backend re-raises the interrupt, so the outermost call answers. A second Ctrl-C
while that answer is being assembled is not caught.

Verification. ``verify=None`` (the default) means the environment's default: on when
``$REPURPOSE_OPT_VERIFY`` is ``1``/``true``/``yes`` (the test suite sets it), off otherwise.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np

from ._validation import as_float, as_int
from .errors import InvalidParameterError, RepurposeError, SolverError
from .network import Network
from .simulator import normalize_assignment, simulate
from .solution import Solution, Status
from .solvers.base import BackendResult, incumbent_slot
from .solvers.registry import resolve_backend

__all__ = ["solve", "PROBLEM_TYPES", "VERIFY_ENV", "verify_by_default"]

PROBLEM_TYPES = ("PartitionProblem", "RestructureProblem", "PruningProblem")
#: Environment variable: ``solve(..., verify=None)`` verifies every solution when it is 1/true/yes.
VERIFY_ENV = "REPURPOSE_OPT_VERIFY"
#: Largest seed: the native solvers (CP-SAT, HiGHS, Mt-KaHyPar) take 32-bit signed seeds.
MAX_SEED = 2**31 - 1
#: Largest time limit in seconds (~116 days): the native solvers' timers overflow far beyond it.
MAX_TIME_LIMIT = 1e7

# Objective agreement between a backend's claim and the simulator's recount.
_REL_TOL = 1e-6
_ABS_TOL = 1e-9


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=_ABS_TOL)


def _close_claim(claim: Any, measured: float) -> bool:
    try:
        return _close(float(claim), measured)
    except (TypeError, ValueError):
        return False


def verify_by_default() -> bool:
    """Whether ``solve(..., verify=None)`` verifies: ``$REPURPOSE_OPT_VERIFY`` is 1, true or yes."""
    return os.environ.get(VERIFY_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def check_options(backend: Any, options: Any) -> dict[str, Any]:
    """Backend defaults overridden by ``options``; unknown keys raise, listing the valid ones, and values
    go through each option's check (an :class:`InvalidParameterError` naming the option)."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise InvalidParameterError(f"`options` must be a dict, got {type(options).__name__}")
    valid = backend.options
    unknown = sorted(str(key) for key in options if key not in valid)
    if unknown:
        listed = ", ".join(sorted(valid)) or "none"
        raise InvalidParameterError(
            f"`options` has unknown key(s) {unknown} for backend {backend.name!r}; valid options: {listed}"
        )
    merged = {key: opt.default for key, opt in valid.items()}
    for key, value in options.items():  # a user's value goes through the option's check, when it has one
        check = valid[key].check
        merged[key] = value if check is None else check(key, value)
    return merged


def solve(
    problem: Any,
    backend: str = "auto",
    *,
    time_limit: float | None = None,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    verify: bool | None = None,
) -> Solution:
    """Solve ``problem`` with ``backend`` and return a new :class:`Solution`; the problem is not changed.

    Parameters
    ----------
    problem : PartitionProblem, RestructureProblem or PruningProblem
    backend : str
        A name from :func:`list_backends`, or ``"auto"`` for the first installed backend that can solve it.
    time_limit : float, optional
        Seconds, in (0, 1e7]; backends return their best incumbent when it runs out (status FEASIBLE, or NO_SOLUTION
        when they have none), within about 1.5 times the limit plus a second or two.
    seed : int, optional
        Makes randomised backends reproducible; 0..2**31-1 (the native solvers take 32-bit seeds).
    options : dict, optional
        Backend-specific options; unknown keys raise, listing the valid ones.
    verify : bool, optional
        Run :func:`repurpose_opt.verify` on the result and raise :class:`SolverError` if it fails. ``None``
        (the default): verify when ``$REPURPOSE_OPT_VERIFY`` is 1/true/yes (the test suite sets it).

    Returns
    -------
    Solution
        Its objective, report and assignment are recounted by the simulator, never copied from the backend.
        After Ctrl-C (``KeyboardInterrupt``) during the search: the backend's best incumbent so far, status
        FEASIBLE (NO_SOLUTION if it had none), ``stats["interrupted"] = True``.

    Raises
    ------
    UnknownBackendError
        No backend has that name (the message lists the known and the installed ones).
    BackendUnavailableError
        The backend's optional dependency is missing (the message names the pip extra).
    BackendCannotSolveError
        The backend does not accept this problem (the message says why).
    InvalidParameterError
        ``time_limit``, ``seed`` or ``options`` are out of their domain (unknown option keys are listed).
    SolverError
        The backend crashed, or its answer is inconsistent: a claimed objective the simulator does not
        measure, OPTIMAL without a matching bound, a bound above the objective, a malformed assignment,
        or (with ``verify=True``) a solution that fails verification.

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
        time_limit = as_float("time_limit", time_limit, strictly_positive=True, maximum=MAX_TIME_LIMIT)
    if seed is not None:
        seed = as_int("seed", seed, minimum=0, maximum=MAX_SEED)
    if verify is None:
        verify = verify_by_default()
    elif isinstance(verify, (bool, np.bool_)):
        verify = bool(verify)
    else:
        raise InvalidParameterError(f"`verify` must be True, False or None, got {verify!r}")
    started = time.perf_counter()
    with incumbent_slot(problem) as slot:
        try:
            result = engine.solve(problem, time_limit=time_limit, seed=seed, options=merged)
        except KeyboardInterrupt:
            if slot.parent is not None:  # a solve inside a backend: the outermost solve answers
                raise
            result = slot.result("interrupted (KeyboardInterrupt)")
        except RepurposeError:
            raise
        except Exception as exc:  # a crash inside a backend or a native library
            if not _caused_by_interrupt(exc):
                raise SolverError(f"backend {engine.name!r} failed on this {kind}: {type(exc).__name__}: {exc}") from exc
            # Ctrl-C while a native solver module is first imported surfaces as the ImportError it caused
            # (pybind11: "initialization failed"; a fresh machine's first `cp_model` import takes ~0.5 s).
            if slot.parent is not None:
                raise KeyboardInterrupt from exc
            result = slot.result("interrupted (KeyboardInterrupt)")
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


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` was raised because of a KeyboardInterrupt (anywhere in its cause/context chain)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _finish(problem: Any, name: str, result: BackendResult, seed: int | None) -> Solution:
    """Recount the objective with the simulator and refuse inconsistent claims."""
    try:
        status = Status(result.status)
    except ValueError:
        raise SolverError(f"backend {name!r} returned status {result.status!r}, which is not a Status") from None
    network = result.network if result.network is not None else getattr(problem, "network", None)
    report = objective = None
    assignment = result.assignment
    if status.has_solution:
        if assignment is None:
            raise SolverError(f"backend {name!r} reported {status.value} without an assignment")
        if not isinstance(network, Network):
            raise SolverError(f"backend {name!r} returned a {type(network).__name__} as its network, not a Network")
        try:
            assignment = normalize_assignment(network, list(assignment), problem.cluster.k, problem.input_placement)
            report = simulate(network, assignment, problem.cluster, output=problem.output, input_placement=problem.input_placement)
        except RepurposeError as exc:  # the backend's answer, not the user's input, is malformed
            raise SolverError(f"backend {name!r} returned a malformed assignment: {exc}") from exc
        objective = problem.objective_value(report, network)
        if result.objective is not None and not _close_claim(result.objective, objective):
            raise SolverError(
                f"backend {name!r} reported objective {result.objective!r} but the simulator measures {objective!r}"
            )
    elif assignment is not None:
        raise SolverError(f"backend {name!r} returned an assignment with status {status.value}")
    try:
        bound = None if result.bound is None else float(result.bound)
    except (TypeError, ValueError):
        raise SolverError(f"backend {name!r} returned bound {result.bound!r}, which is not a number") from None
    if bound is not None and math.isnan(bound):
        raise SolverError(f"backend {name!r} returned a NaN bound")
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
