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
        "full_evaluation_limit": Option(
            4_000_000,
            "layers with n_out·n_in·K above this rank candidates by their local-only refit error and adjust "
            "only the best one (no re-assignment rounds), instead of adjusting every candidate",
        ),
    }

    def solve(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        chain = importance_chain(problem, problem.network.trace(problem.calibration).activations)
        first = first_layer_placement(problem, chain[0])

        def placer(ctx: LayerContext) -> list[np.ndarray]:
            candidates = [chain[ctx.l]] if options["importance"] or ctx.in_placement is None else []
            if not options["residual"] or ctx.in_placement is None:
                return candidates or [chain[ctx.l]]
            cost = residual_costs(ctx.data, ctx.in_placement, ctx.k)
            placement = capacitated_assignment(cost, ctx.capacity)
            candidates.append(placement)
            if ctx.data.C.shape[0] * ctx.data.n_groups * ctx.k > options["full_evaluation_limit"]:
                # Wide layer: the local-only refit error (already in `cost`) ranks the candidates.
                local_error = [float(cost[np.arange(cost.shape[0]), c].sum()) for c in candidates]
                return [candidates[int(np.argmin(local_error))]]
            for _ in range(0 if ctx.out_of_time() else int(options["rounds"])):
                adjusted = ctx.adjust(placement)
                opened = [[g for g, w in adjusted.opened if w == worker] for worker in range(ctx.k)]
                placement = capacitated_assignment(residual_costs(ctx.data, ctx.in_placement, ctx.k, extra_groups=opened), ctx.capacity)
                if any(np.array_equal(placement, c) for c in candidates):
                    break
                candidates.append(placement)
            return candidates

        return run_cascade(problem, first, placer, time_limit=time_limit, name="repurpose")
