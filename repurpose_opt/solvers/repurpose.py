"""``repurpose``: the full RePurpose method (SPEC §5) on a RestructureProblem.

Per layer, in cascade: candidate placements from (1) the importance chain, which keeps the most
``W²·E[x²]`` mass local across *all* layers at once (so a layer's placement also serves its consumers),
(2) the paper's assignment step, a capacitated assignment on local-refit residual costs, and (3) rounds of
re-assignment on costs re-derived from the adjusted support; each candidate gets the ℓ0 adjustment, and
the one that sends the least (then errs the least) is kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Backend, BackendResult, Option
from .restructure_engine import (
    LayerContext,
    capacitated_assignment,
    first_layer_placement,
    importance_chain,
    residual_costs,
    run_cascade,
)


class RepurposeBackend(Backend):
    """Alternating capacitated assignment and ℓ0 adjustment, layer by layer, in cascade."""

    name = "repurpose"
    description = "RePurpose: importance-chain + residual assignment, group-OMP ℓ0 adjustment, cascade refit"
    problem_types = ("RestructureProblem",)
    options = {
        "rounds": Option(2, "re-assignment rounds per layer on costs re-derived from the adjusted support"),
        "importance": Option(True, "propose the importance-chain placement (co-clusters consecutive layers)"),
        "residual": Option(True, "propose the residual-cost assignment of the paper"),
    }

    def solve(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        chain = importance_chain(problem, problem.network.trace(problem.calibration).activations)
        first = first_layer_placement(problem, chain[0])

        def placer(ctx: LayerContext) -> list[np.ndarray]:
            candidates = [chain[ctx.l]] if options["importance"] or ctx.in_placement is None else []
            if options["residual"] and ctx.in_placement is not None:
                placement = capacitated_assignment(residual_costs(ctx.data, ctx.in_placement, ctx.k), ctx.capacity)
                candidates.append(placement)
                for _ in range(int(options["rounds"])):
                    adjusted = ctx.adjust(placement)
                    opened = [[g for g, w in adjusted.opened if w == worker] for worker in range(ctx.k)]
                    cost = residual_costs(ctx.data, ctx.in_placement, ctx.k, extra_groups=opened)
                    placement = capacitated_assignment(cost, ctx.capacity)
                    if any(np.array_equal(placement, c) for c in candidates):
                        break
                    candidates.append(placement)
            return candidates or [chain[ctx.l]]

        return run_cascade(problem, first, placer, time_limit=time_limit, name="repurpose")
