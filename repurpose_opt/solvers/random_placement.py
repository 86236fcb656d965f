"""``random``: a seeded random balanced placement (a baseline and a source of starting points)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..solution import Status
from .base import Backend, BackendResult, Option, integer
from .placement import block_sizes, contiguous_placement, extra_capacity_violation, fixed_input


class RandomBackend(Backend):
    """Shuffles each layer's units and cuts them into speed-proportional blocks.

    With FLOPs/parameter capacities it redraws up to ``attempts`` times; NO_SOLUTION if none fits.
    """

    name = "random"
    description = "seeded random balanced placement"
    problem_types = ("PartitionProblem",)
    options = {"attempts": Option(100, "draws tried when FLOPs/parameter capacities reject a placement", check=integer(minimum=1))}

    def solve(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        rng = np.random.default_rng(seed)
        cluster = problem.cluster
        fixed = fixed_input(problem)
        counts = problem.network.unit_counts
        violation = None
        for _ in range(max(1, int(options["attempts"]))):
            layers = []
            for l, (n, cap) in enumerate(zip(counts, problem.capacities, strict=True)):
                if l == 0 and fixed is not None:
                    layers.append(fixed)
                    continue
                layers.append(rng.permutation(contiguous_placement(block_sizes(n, cluster.speed, cap))))
            assignment = tuple(layers)
            violation = extra_capacity_violation(problem, assignment)
            if violation is None:
                return BackendResult(Status.FEASIBLE, assignment, message="random balanced placement")
        return BackendResult(Status.NO_SOLUTION, message=f"no random draw met the capacities: {violation}")
