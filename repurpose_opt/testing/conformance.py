"""The backend conformance suite (like scikit-learn's ``check_estimator``).

:func:`check_backend` runs a backend on the tiny instances of :mod:`repurpose_opt.testing.instances` and
checks, according to what the backend *declares* (``problem_types``, and ``exact``: every problem type, or
the tuple of those on which it proves optimality):

``declaration``
    name, problem types, options and requirements are well formed; the backend is installed.
``refusal``
    when ``can_solve`` refuses an instance it gives a reason, and ``solve`` raises
    :class:`~repurpose_opt.BackendCannotSolveError` carrying it.
``solve``
    ``solve`` raises nothing (a :class:`~repurpose_opt.SolverError` there means the package refused an
    inconsistent claim: a wrong objective, OPTIMAL without proof, a malformed assignment, a crash).
``consistency``
    the status agrees with the presence of an assignment and an objective; a bound is never above the
    objective; OPTIMAL only with a matching bound (the package enforces this in ``solve``; the check makes
    sure nothing slips through).
``verify``
    :func:`repurpose_opt.verify` accepts every solution.
``optimum``
    against the known optimum (hand-made or planted) or the brute-force oracle: exact backends return it
    with status OPTIMAL; no backend does better than it; no bound is above it.
``infeasible``
    no solution is returned for an infeasible instance; exact backends say INFEASIBLE.
``k1``
    with one worker the volume is zero.
``determinism``
    the same seed gives the same placement, objective and weights (on the quick subset).
``time_limit``
    a short ``time_limit`` is accepted and honoured (back within 1.5 × the limit + 3 s).
``relabel``
    with identical workers, renaming the workers of the fixed input leaves the optimum (exact backends)
    unchanged; the backend's own answer with its workers renamed verifies with the same objective.
``unknown-option``
    an unknown option key raises :class:`~repurpose_opt.InvalidParameterError`.

A failure raises ``AssertionError`` naming the backend, the check and the instance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from ..api import PROBLEM_TYPES
from ..api import solve as _solve
from ..errors import BackendCannotSolveError, InvalidParameterError, RepurposeError
from ..problems import PartitionProblem
from ..simulator import simulate
from ..solution import Solution, Status
from ..solvers.base import Backend, Option
from ..solvers.registry import backend_names, get_backend, register_backend, unregister_backend
from ..verify import verify
from .instances import Instance, conformance_instances, relabel_workers

__all__ = ["CheckResult", "check_backend", "oracle_optimum"]

_TOL = 1e-6


@dataclass(frozen=True)
class CheckResult:
    """One passed check: which, on which instance, how long it took, and what was seen."""

    check: str
    instance: str
    seconds: float
    detail: str = ""


class _Failure(AssertionError):
    pass


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_TOL, abs_tol=1e-9)


@contextlib.contextmanager
def _backend_name(backend: str | type[Backend]) -> Iterator[str]:
    """The name to pass to ``solve``; a class not yet known is registered for the duration."""
    if isinstance(backend, str):
        yield backend
        return
    if not (isinstance(backend, type) and issubclass(backend, Backend)):
        raise InvalidParameterError(f"`backend` must be a backend name or a Backend subclass, got {backend!r}")
    if backend.name in backend_names() and get_backend(backend.name) is backend:
        yield backend.name
        return
    register_backend(backend)
    try:
        yield backend.name
    finally:
        unregister_backend(backend.name)


@cache
def _oracle(instance_name: str) -> tuple[Status, float | None]:
    instance = next(i for i in conformance_instances() if i.name == instance_name)
    sol = _solve(instance.problem, backend="bruteforce", verify=True)
    return sol.status, sol.objective


def oracle_optimum(instance: Instance) -> float | None:
    """The instance's optimum: known by construction, else computed once by the ``bruteforce`` oracle.

    ``None`` when nothing is known (restructuring instances) or the instance is infeasible.
    """
    if instance.optimum is not None:
        return instance.optimum
    if not instance.feasible or instance.problem_type == "RestructureProblem":
        return None
    status, objective = _oracle(instance.name)
    return objective if status.has_solution else None


class _Runner:
    def __init__(self, name: str, cls: type[Backend], options: dict[str, Any] | None, time_limit: float):
        self.name, self.cls, self.options, self.time_limit = name, cls, options, time_limit
        self.results: list[CheckResult] = []

    def fail(self, check: str, instance: str, message: str) -> None:
        raise _Failure(f"check_backend({self.name!r}): check {check!r} failed on instance {instance!r}: {message}")

    def passed(self, check: str, instance: str, started: float, detail: str = "") -> None:
        self.results.append(CheckResult(check, instance, time.perf_counter() - started, detail))

    def solve(self, instance: Instance, problem: Any = None, *, check: str = "solve", seed: int | None = 0,
              time_limit: float | None = None) -> Solution:
        """Solve ``problem`` (default: the instance's); an error from ``solve`` fails the check."""
        try:
            # verify=False: the suite runs `verify` as its own check, which names what failed.
            return _solve(instance.problem if problem is None else problem, backend=self.name, seed=seed,
                          options=self.options, time_limit=self.time_limit if time_limit is None else time_limit,
                          verify=False)
        except RepurposeError as exc:
            self.fail(check, instance.name, f"solve raised {type(exc).__name__}: {exc}")
            raise  # pragma: no cover - fail() raised already

    # --------------------------------------------------------------------------------------- checks
    def declaration(self) -> None:
        started = time.perf_counter()
        cls = self.cls
        if not isinstance(cls.name, str) or not cls.name:
            self.fail("declaration", "-", f"`name` must be a non-empty string, got {cls.name!r}")
        unknown = [t for t in cls.problem_types if t not in PROBLEM_TYPES]
        if not cls.problem_types or unknown:
            self.fail("declaration", "-", f"`problem_types` must be a non-empty subset of {PROBLEM_TYPES}, got {cls.problem_types!r}")
        if not isinstance(cls.exact, bool) and not (
            isinstance(cls.exact, tuple) and all(t in cls.problem_types for t in cls.exact)
        ):
            self.fail("declaration", "-", f"`exact` must be a bool or a tuple of its problem types, got {cls.exact!r}")
        if not isinstance(cls.requires, tuple) or not all(isinstance(m, str) for m in cls.requires):
            self.fail("declaration", "-", f"`requires` must be a tuple of module names, got {cls.requires!r}")
        if not isinstance(cls.options, dict) or not all(isinstance(o, Option) for o in cls.options.values()):
            self.fail("declaration", "-", "`options` must map names to repurpose_opt.solvers.Option")
        if not cls.available():
            self.fail("declaration", "-", f"not installed: missing {cls.missing_modules()}")
        self.passed("declaration", "-", started)

    def unknown_option(self, instance: Instance) -> None:
        started = time.perf_counter()
        try:
            _solve(instance.problem, backend=self.name, options={"__no_such_option__": 1})
        except InvalidParameterError as exc:
            if "__no_such_option__" not in str(exc):
                self.fail("unknown-option", instance.name, f"the error does not name the key: {exc}")
        else:
            self.fail("unknown-option", instance.name, "an unknown option key was accepted")
        self.passed("unknown-option", instance.name, started)

    def refusal(self, instance: Instance, reason: Any) -> None:
        started = time.perf_counter()
        if not isinstance(reason, str) or not reason.strip():
            self.fail("refusal", instance.name, f"can_solve must return None or a reason (str), got {reason!r}")
        try:
            _solve(instance.problem, backend=self.name, seed=0, options=self.options, time_limit=self.time_limit)
        except BackendCannotSolveError as exc:
            if reason not in str(exc):
                self.fail("refusal", instance.name, f"the error does not carry the reason {reason!r}: {exc}")
        else:
            self.fail("refusal", instance.name, f"can_solve refused ({reason}) but solve did not raise")
        self.passed("refusal", instance.name, started, reason)

    def consistency(self, instance: Instance, sol: Solution) -> None:
        started = time.perf_counter()
        if sol.backend != self.name:
            self.fail("consistency", instance.name, f"solution.backend is {sol.backend!r}")
        if sol.status.has_solution != (sol.assignment is not None) or sol.status.has_solution != (sol.objective is not None):
            self.fail("consistency", instance.name, f"status {sol.status.value} with assignment={sol.assignment is not None}, "
                                                    f"objective={sol.objective}")
        if sol.status is Status.ERROR:
            self.fail("consistency", instance.name, f"status ERROR: {sol.message}")
        if sol.objective is not None and sol.bound is not None and sol.bound > sol.objective and not _close(sol.bound, sol.objective):
            self.fail("consistency", instance.name, f"bound {sol.bound} above objective {sol.objective}")
        if sol.status is Status.OPTIMAL and (sol.bound is None or not _close(sol.bound, sol.objective)):
            self.fail("consistency", instance.name, f"OPTIMAL without a matching bound (bound={sol.bound}, objective={sol.objective})")
        if sol.status.has_solution and sol.report is None:
            self.fail("consistency", instance.name, "a solution without the simulator's report")
        self.passed("consistency", instance.name, started, sol.status.value)

    def verified(self, instance: Instance, sol: Solution) -> None:
        started = time.perf_counter()
        check = verify(instance.problem, sol)
        if not check.ok:
            self.fail("verify", instance.name, "; ".join(check.violations))
        self.passed("verify", instance.name, started)

    def optimum(self, instance: Instance, sol: Solution) -> None:
        started = time.perf_counter()
        best = oracle_optimum(instance)
        if best is None:
            return
        if self.cls.is_exact(instance.problem_type):
            if sol.status is not Status.OPTIMAL:
                self.fail("optimum", instance.name, f"exact backend returned {sol.status.value} ({sol.message}), not OPTIMAL")
            if not _close(sol.objective, best):
                self.fail("optimum", instance.name, f"exact backend found {sol.objective}, the optimum is {best}")
        if sol.objective is not None and sol.objective < best and not _close(sol.objective, best):
            self.fail("optimum", instance.name, f"objective {sol.objective} is below the optimum {best}")
        if sol.bound is not None and sol.bound > best and not _close(sol.bound, best):
            self.fail("optimum", instance.name, f"bound {sol.bound} is above the optimum {best}")
        self.passed("optimum", instance.name, started, f"objective {sol.objective}, optimum {best}")

    def infeasible(self, instance: Instance, sol: Solution) -> None:
        started = time.perf_counter()
        if sol.status.has_solution:
            self.fail("infeasible", instance.name, f"status {sol.status.value} on an infeasible instance")
        if self.cls.is_exact(instance.problem_type) and sol.status is not Status.INFEASIBLE:
            self.fail("infeasible", instance.name, f"exact backend returned {sol.status.value}, not INFEASIBLE")
        self.passed("infeasible", instance.name, started, sol.status.value)

    def k1(self, instance: Instance, sol: Solution) -> None:
        started = time.perf_counter()
        if not sol.status.has_solution:
            self.fail("k1", instance.name, f"no solution with one worker: {sol.status.value} ({sol.message})")
        if sol.report.comm_scalars != 0.0:
            self.fail("k1", instance.name, f"volume {sol.report.comm_scalars} with one worker")
        self.passed("k1", instance.name, started)

    def determinism(self, instance: Instance, sol: Solution) -> None:
        started = time.perf_counter()
        again = self.solve(instance, check="determinism")
        if again.status is not sol.status:
            self.fail("determinism", instance.name, f"status {sol.status.value} then {again.status.value} with seed 0")
        if sol.assignment is not None:
            same = all(np.array_equal(a, b) for a, b in zip(sol.assignment, again.assignment, strict=True))
            if not same or sol.objective != again.objective:
                self.fail("determinism", instance.name, "two solves with seed 0 gave different placements or objectives")
            for a, b in zip(sol.network.linear_layers, again.network.linear_layers, strict=True):
                if not (np.array_equal(a.W, b.W) and np.array_equal(a.b, b.b)):
                    self.fail("determinism", instance.name, "two solves with seed 0 gave different weights")
        self.passed("determinism", instance.name, started)

    def time_limit_check(self, instance: Instance, limit: float = 0.5) -> None:
        started = time.perf_counter()
        sol = self.solve(instance, check="time_limit", time_limit=limit)
        elapsed = time.perf_counter() - started
        if elapsed > 1.5 * limit + 3.0:
            self.fail("time_limit", instance.name, f"time_limit={limit} s but the solve took {elapsed:.2f} s")
        if sol.status.has_solution:
            self.verified(instance, sol)
        self.passed("time_limit", instance.name, started, f"{elapsed:.3f} s, {sol.status.value}")

    def relabel(self, instance: Instance, sol: Solution) -> None:
        started = time.perf_counter()
        problem = instance.problem
        if not isinstance(problem, PartitionProblem) or not problem.cluster.identical_workers or problem.k < 2:
            return
        k = problem.k
        sigma = np.roll(np.arange(k), 1) if problem.output == "distributed" else np.r_[0, np.roll(np.arange(1, k), 1)]
        fixed = problem.input_placement if problem.input_mode == "fixed" else None
        renamed = dataclasses.replace(problem, input_placement=sigma[fixed] if fixed is not None else problem.input_placement)
        if sol.status.has_solution:
            assignment = relabel_workers(sol.assignment, sigma)
            report = simulate(problem.network, list(assignment), problem.cluster, output=problem.output,
                              input_placement=renamed.input_placement)
            moved = dataclasses.replace(sol, assignment=assignment, report=report)
            check = verify(renamed, moved)
            if not check.ok:
                self.fail("relabel", instance.name, "the solution with its workers renamed does not verify: "
                                                    + "; ".join(check.violations))
        if self.cls.is_exact(instance.problem_type) and fixed is not None and self.cls().can_solve(renamed) is None:
            other = self.solve(instance, renamed, check="relabel")
            if other.status is not sol.status or (other.objective is not None and not _close(other.objective, sol.objective)):
                self.fail("relabel", instance.name, f"renaming the workers of the fixed input changed the optimum: "
                                                    f"{sol.objective} vs {other.objective}")
        self.passed("relabel", instance.name, started)


def check_backend(backend: str | type[Backend], *, quick: bool = False, options: dict[str, Any] | None = None,
                  time_limit: float = 20.0) -> list[CheckResult]:
    """Run the conformance suite on ``backend`` and return the checks that passed.

    Parameters
    ----------
    backend : str or Backend subclass
        A registered backend name, or a class (registered for the duration of the run if it is not).
    quick : bool
        Only the quick subset of instances, and no time-limit check.
    options : dict, optional
        Options passed to every solve.
    time_limit : float
        Passed to every solve (seconds): a safety net, the instances are tiny.

    Returns
    -------
    list of CheckResult

    Raises
    ------
    AssertionError
        On the first failed check, naming the backend, the check and the instance.

    Examples
    --------
    >>> from repurpose_opt.testing import check_backend
    >>> results = check_backend("random", quick=True)
    >>> sorted({r.check for r in results})  # doctest: +NORMALIZE_WHITESPACE
    ['consistency', 'declaration', 'determinism', 'infeasible', 'k1', 'optimum', 'relabel', 'unknown-option',
     'verify']
    """
    with _backend_name(backend) as name:
        cls = get_backend(name)
        runner = _Runner(name, cls, options, time_limit)
        runner.declaration()
        for problem_type in cls.problem_types:
            instances = conformance_instances(problem_type, quick=quick)
            accepted = 0
            for instance in instances:
                reason = cls().can_solve(instance.problem)
                if reason is not None:
                    runner.refusal(instance, reason)
                    continue
                accepted += 1
                if accepted == 1:
                    runner.unknown_option(instance)
                sol = runner.solve(instance)
                runner.consistency(instance, sol)
                if sol.status.has_solution:
                    runner.verified(instance, sol)
                if not instance.feasible:
                    runner.infeasible(instance, sol)
                    continue
                if instance.problem.cluster.k == 1:
                    runner.k1(instance, sol)
                runner.optimum(instance, sol)
                if instance.quick:  # determinism costs a second solve: the quick subset suffices
                    runner.determinism(instance, sol)
                runner.relabel(instance, sol)
                if not quick and accepted == 1:
                    runner.time_limit_check(instance)
            if instances and not accepted:
                runner.fail("declaration", "-", f"declares {problem_type} but refused every conformance instance of it")
        return runner.results
