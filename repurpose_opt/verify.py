"""``verify``: check a solution against its problem without trusting any backend.

Everything is recomputed from the problem and the solution's assignment: completeness and range of the
placement, the input mode, per-layer balance, FLOPs/parameter capacities, the objective (by the
simulator), and the bound and status claims. Violations are collected, not raised, so one call reports
them all; :func:`verify` raises only when it is called with the wrong types.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validation import _describe
from .errors import InvalidParameterError, RepurposeError
from .network import Network
from .simulator import REPLICATED, normalize_assignment, simulate
from .solution import Solution, Status

__all__ = ["verify", "VerificationReport"]

_TOL = 1e-6


@dataclass(frozen=True)
class VerificationReport:
    """``ok`` is True when ``violations`` is empty; ``checks`` names what was checked."""

    ok: bool
    violations: tuple[str, ...]
    checks: tuple[str, ...]

    def __bool__(self) -> bool:
        return self.ok


def _real(value: Any) -> float | None:
    """``value`` as a float when it is a real number (bools excluded) that a float can hold, else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except (OverflowError, TypeError, ValueError):  # an int beyond the float range, an odd Real subclass
        return None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_TOL, abs_tol=1e-9)


def verify(problem: Any, solution: Solution) -> VerificationReport:
    """Check ``solution`` against ``problem``, recomputing everything from the assignment.

    Checks: the status is consistent with the presence of an assignment and an objective; the assignment
    is complete and in range; the input placement matches the problem's mode (replicated, free or fixed);
    every layer (and a free input) meets its balance capacity; the network keeps the problem's topology
    (and its weights, for a partition problem); the objective equals the simulator's recount (relative
    tolerance 1e-6) as does a stored report; FLOPs/parameter capacities hold; the bound is not above the
    objective, matches it when the status is OPTIMAL, and the gap agrees with both; plus the problem's own
    checks (calibration tolerance, budgets) when it defines ``extra_violations``.

    Parameters
    ----------
    problem : PartitionProblem, RestructureProblem or PruningProblem
    solution : Solution

    Returns
    -------
    VerificationReport
        ``ok`` and the list of ``violations`` (empty when ok); it never raises for a wrong solution.

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> net = ro.Network([ro.Dense(np.eye(4)), ro.ReLU(), ro.Dense(np.eye(4))], input_shape=(4,))
    >>> problem = ro.PartitionProblem(net, ro.Cluster(k=2))
    >>> ro.verify(problem, ro.solve(problem, backend="direct")).ok
    True
    """
    if not isinstance(solution, Solution):
        raise InvalidParameterError(f"`solution` must be a repurpose_opt.Solution, got {type(solution).__name__}")
    if not hasattr(problem, "cluster") or not hasattr(problem, "network"):
        raise InvalidParameterError(f"`problem` must be a repurpose_opt problem, got {type(problem).__name__}")
    violations: list[str] = []
    checks: list[str] = ["status"]
    status = solution.status
    if not isinstance(status, Status):
        return VerificationReport(False, (f"status {status!r} is not a Status",), tuple(checks))
    claimed, bound = _real(solution.objective), _real(solution.bound)
    if solution.objective is not None and (claimed is None or not math.isfinite(claimed)):
        return VerificationReport(False, (f"objective {_describe(solution.objective)} is not a finite number",), tuple(checks))
    if solution.bound is not None and (bound is None or math.isnan(bound)):
        return VerificationReport(False, (f"bound {_describe(solution.bound)} is not a number",), tuple(checks))
    if solution.gap is not None and _real(solution.gap) is None:
        return VerificationReport(False, (f"gap {_describe(solution.gap)} is not a number",), tuple(checks))

    if not status.has_solution:
        if solution.assignment is not None:
            violations.append(f"status {status.value} but an assignment is present")
        if solution.objective is not None:
            violations.append(f"status {status.value} but an objective is present")
        return VerificationReport(not violations, tuple(violations), tuple(checks))

    if solution.assignment is None or solution.objective is None:
        violations.append(f"status {status.value} without an assignment and an objective")
        return VerificationReport(False, tuple(violations), tuple(checks))

    cluster, network = problem.cluster, problem.network
    k = cluster.k
    solved_net = solution.network if solution.network is not None else network
    if not isinstance(solved_net, Network):
        return VerificationReport(False, (f"the solution's network is a {type(solved_net).__name__}, not a Network",), tuple(checks))
    checks.append("placement")
    try:
        if isinstance(solution.assignment, (str, bytes)) or not isinstance(solution.assignment, Iterable):
            raise InvalidParameterError(f"`assignment` must be a sequence of placements, got {type(solution.assignment).__name__}")
        placements = normalize_assignment(network, list(solution.assignment), k)
    except RepurposeError as exc:
        violations.append(f"assignment is malformed: {exc}")
        return VerificationReport(False, tuple(violations), tuple(checks))

    checks.append("input placement")
    mode = problem.input_mode
    first = placements[0]
    if mode == "replicated" and not np.all(first == REPLICATED):
        violations.append("input placement must be replicated (all -1)")
    if mode == "fixed" and not np.array_equal(first, problem.input_placement):
        violations.append("input placement differs from the fixed input placement")
    if mode != "replicated" and np.any(first == REPLICATED):
        violations.append(f"input placement is {mode} but the solution replicates the input")

    checks.append("balance")
    for l, (placement, cap) in enumerate(zip(placements, problem.capacities, strict=True)):
        if cap is None:
            continue
        load = np.bincount(placement, minlength=k)
        over = np.flatnonzero(load > cap)
        for worker in over:
            violations.append(f"layer {l}: worker {worker} holds {load[worker]} units, capacity {cap[worker]}")

    checks.append("topology")
    structure, weights = _topology_violations(network, solved_net, type(problem).__name__ == "PartitionProblem")
    violations += structure + weights
    if structure:
        # The placements were checked against the problem's network; another topology cannot be recounted.
        return VerificationReport(False, tuple(violations), tuple(checks))

    checks.append("simulator recount")
    # The placements are validated already; an input-mode mismatch is reported above, so the recount
    # reads assignment[0] as it is (replicated inputs are all -1) instead of refusing it.
    report = simulate(solved_net, list(placements), cluster, output=problem.output,
                      input_placement="replicated" if mode == "replicated" else None)
    objective = problem.objective_value(report, solved_net)
    if not _close(objective, claimed):
        violations.append(f"objective {solution.objective!r} differs from the simulator's recount {objective!r}")
    if solution.report is not None:
        for field in ("comm_scalars", "latency"):
            stored = getattr(solution.report, field, None)
            if _real(stored) is None or not _close(_real(stored), float(getattr(report, field))):
                violations.append(f"the stored report's {field} {stored!r} differs from the simulator's recount "
                                  f"{getattr(report, field)!r}")

    checks.append("capacities")
    if cluster.flops_capacity is not None:
        for worker in np.flatnonzero(report.flops > cluster.flops_capacity * (1 + 1e-12)):
            violations.append(f"worker {worker} needs {report.flops[worker]:.6g} FLOPs, capacity {cluster.flops_capacity[worker]:.6g}")
    if cluster.param_capacity is not None:
        for worker in np.flatnonzero(report.params > cluster.param_capacity * (1 + 1e-12)):
            violations.append(f"worker {worker} holds {report.params[worker]} parameters, capacity {cluster.param_capacity[worker]:.6g}")

    checks.append("bound")
    if bound is not None:
        if bound > objective and not _close(bound, objective):
            violations.append(f"bound {bound!r} is above the objective {objective!r}")
        if status is Status.OPTIMAL and not _close(bound, objective):
            violations.append(f"status OPTIMAL but bound {bound!r} does not match the objective {objective!r}")
    elif status is Status.OPTIMAL:
        violations.append("status OPTIMAL without a bound")
    if bound is not None:
        expected_gap = 0.0 if status is Status.OPTIMAL else max(0.0, (objective - bound) / max(abs(objective), 1e-12))
        if solution.gap is None or not _close(_real(solution.gap), expected_gap):
            violations.append(f"gap {solution.gap!r} differs from (objective - bound) / |objective| = {expected_gap!r}")
    elif solution.gap is not None:
        violations.append(f"gap {solution.gap!r} given without a bound")

    extra = getattr(problem, "extra_violations", None)
    if extra is not None:
        checks.append("problem-specific")
        # A solution without a network means "the problem's network, unchanged": the checks see that one.
        checked = solution if solution.network is not None else dataclasses.replace(solution, network=solved_net)
        violations += list(extra(checked, report))
    return VerificationReport(not violations, tuple(violations), tuple(checks))


def _topology_violations(original: Any, solved: Any, weights_fixed: bool) -> tuple[list[str], list[str]]:
    """``(structure, weights)``: differences in topology, and weight changes a partition problem forbids."""
    if len(original.layers) != len(solved.layers) or original.input_shape != solved.input_shape:
        return ["the solution's network does not have the problem network's topology"], []
    structure, weights = [], []
    for position, (a, b) in enumerate(zip(original.layers, solved.layers, strict=True)):
        if type(a) is not type(b) or a.to_config() != b.to_config():
            structure.append(f"layer {position} differs in type or configuration")
        elif a.is_linear:
            if a.W.shape != b.W.shape:
                structure.append(f"layer {position}: weight shape {b.W.shape} differs from {a.W.shape}")
            elif weights_fixed and (not np.array_equal(a.W, b.W) or not np.array_equal(a.b, b.b)):
                weights.append(f"layer {position}: weights changed, but a partition problem keeps them fixed")
    return structure, weights
