"""``direct``: the contiguous index split (Megatron-style), weights unchanged: the "direct parallel" baseline."""

from __future__ import annotations

import time
from typing import Any

from ..solution import Status
from .base import Backend, BackendResult
from .placement import block_sizes, contiguous_placement, extra_capacity_violation, fixed_input


class DirectBackend(Backend):
    """Cuts every layer's units, in index order, into K consecutive blocks sized by worker speed.

    It ignores connectivity entirely, which is what makes it the baseline every other backend must beat.
    If the split breaks a FLOPs/parameter capacity the status is NO_SOLUTION (it has no search to repair it).
    """

    name = "direct"
    description = "contiguous index split, no weight change (the direct-parallel baseline)"
    problem_types = ("PartitionProblem", "RestructureProblem")

    def solve(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        if type(problem).__name__ == "RestructureProblem":
            # The paper's "sparse implementation": contiguous placement, then the shared ℓ0 adjustment.
            from .restructure_engine import cascade_plan

            deadline = None if time_limit is None else time.perf_counter() + time_limit
            return cascade_plan(problem, list(self._split(problem)), deadline=deadline, name="direct")
        assignment = self._split(problem)
        violation = extra_capacity_violation(problem, assignment)
        if violation is not None:
            return BackendResult(Status.NO_SOLUTION, message=f"the contiguous split is not feasible: {violation}")
        return BackendResult(Status.FEASIBLE, assignment, message="contiguous split")

    @staticmethod
    def _split(problem: Any) -> tuple:
        cluster = problem.cluster
        first = fixed_input(problem)
        if first is None:
            first = contiguous_placement(block_sizes(problem.network.unit_counts[0], cluster.speed, problem.capacities[0]))
        return (first,) + tuple(
            contiguous_placement(block_sizes(n, cluster.speed, cap))
            for n, cap in zip(problem.network.unit_counts[1:], problem.capacities[1:], strict=True)
        )
