"""How to add a backend: a small, complete, working example (``template``: best of seeded random restarts).

A backend is one class in one module. Copy this file, rename the class and ``name``, and replace
:meth:`TemplateBackend.solve`'s search with yours. What the package expects:

1. **Declarations** (class attributes, read without running anything):

   - ``name``: what users pass as ``solve(problem, backend=name)``;
   - ``requires``: modules it needs, looked up with ``importlib.util.find_spec`` (never imported) to tell
     whether the backend is installed; ``extra``: the pip extra that brings them (named in the error a
     user gets when they are missing);
   - ``problem_types``: the problem classes it accepts, by name; ``exact``: whether it proves optimality,
     ``True`` for all of them or the tuple of those it is exact on, e.g. ``("PartitionProblem",)`` (the
     conformance suite then demands the brute-force optimum with status OPTIMAL on those);
   - ``options``: every option with its default and a one-line doc. ``solve`` rejects unknown keys
     before the backend runs, and passes the defaults merged with the user's values.

2. **can_solve(problem)** returns ``None`` or the reason it cannot solve this problem (a sentence, which
   ``solve`` puts in a :class:`~repurpose_opt.BackendCannotSolveError`). Refuse up front, not halfway.

3. **solve(problem, *, time_limit, seed, options)** returns a :class:`BackendResult`:

   - ``status``: ``FEASIBLE`` for a heuristic answer, ``OPTIMAL`` only with a proof (``bound`` equal to the
     objective), ``INFEASIBLE`` with a proof of infeasibility, ``NO_SOLUTION`` when the search found
     nothing (time limit, no incumbent). These are statuses, not exceptions.
   - ``assignment``: one int array per layer, index 0 the input (all -1, or the fixed array, when the
     problem does not let the backend choose it).
   - ``objective`` (optional): the backend's own value. The package recounts it with the simulator and
     raises :class:`~repurpose_opt.SolverError` if they disagree, so a claim is checked, never trusted.
   - ``bound`` (optional): a proven lower bound.
   - Import native libraries inside ``solve``; honour ``time_limit`` (return the best incumbent when it
     runs out) and ``seed`` (same seed, same answer).

4. **Registration**: built-in backends are listed in ``registry.BUILTIN_BACKENDS``; a third-party package
   declares an entry point in the ``repurpose_opt.backends`` group; tests (and notebooks) call
   :func:`~repurpose_opt.solvers.registry.register_backend`.

5. **Conformance**: run ``repurpose_opt.testing.check_backend(YourBackend)``; it chooses its checks
   from the declarations above and raises ``AssertionError`` naming the check and the instance that failed.

Examples
--------
>>> import numpy as np, repurpose_opt as ro
>>> from repurpose_opt.solvers.registry import register_backend, unregister_backend
>>> from repurpose_opt.solvers.template import TemplateBackend
>>> _ = register_backend(TemplateBackend)
>>> P = np.eye(4)[[2, 0, 3, 1]]                        # each unit reads one input, in shuffled order
>>> net = ro.Network([ro.Dense(P), ro.ReLU(), ro.Dense(P)], input_shape=(4,))
>>> problem = ro.PartitionProblem(net, ro.Cluster(k=2), input_placement="free", output="distributed")
>>> sol = ro.solve(problem, backend="template", seed=0, verify=True)
>>> sol.status.value, sol.objective, ro.solve(problem, backend="direct").objective
('FEASIBLE', 2.0, 4.0)
>>> unregister_backend("template")
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..simulator import simulate
from ..solution import Status
from .base import Backend, BackendResult, Option, integer
from .placement import block_sizes, contiguous_placement, fixed_input

__all__ = ["TemplateBackend"]


class TemplateBackend(Backend):
    """Best of ``restarts`` seeded random balanced placements, each scored by the simulator.

    A deliberately simple search: what matters here is the shape of a backend. It handles every input
    and output mode and both objectives; it refuses clusters with FLOPs or parameter capacities.
    """

    name = "template"
    description = "example backend: best of seeded random balanced placements (see solvers/template.py)"
    # Core dependencies only, so the template is always installed. A real backend names its solver
    # module here (e.g. ("ortools",)) and the extra that installs it (e.g. "ortools").
    requires = ("numpy",)
    extra = None
    problem_types = ("PartitionProblem",)
    exact = False
    options = {
        "restarts": Option(32, "random balanced placements drawn; the best one is returned", check=integer(minimum=1)),
    }

    def can_solve(self, problem: Any) -> str | None:
        reason = super().can_solve(problem)  # checks problem_types
        if reason is not None:
            return reason
        cluster = problem.cluster
        if cluster.flops_capacity is not None or cluster.param_capacity is not None:
            return "it does not handle FLOPs or parameter capacities"
        return None

    def solve(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        restarts = options["restarts"]
        if isinstance(restarts, bool) or not isinstance(restarts, (int, np.integer)) or restarts < 1:
            from ..errors import InvalidParameterError

            raise InvalidParameterError(f"option `restarts` must be an integer >= 1, got {restarts!r}")
        started = time.perf_counter()
        rng = np.random.default_rng(seed)
        network, cluster = problem.network, problem.cluster
        first = fixed_input(problem)  # None when the backend chooses the input placement ("free")
        # Speed-proportional block sizes always fit the balance capacities: shuffling them keeps balance.
        blocks = [contiguous_placement(block_sizes(n, cluster.speed, cap)) if cap is not None else None
                  for n, cap in zip(network.unit_counts, problem.capacities, strict=True)]
        best: tuple[float, tuple[np.ndarray, ...]] | None = None
        tried = 0
        for _ in range(int(restarts)):
            if time_limit is not None and best is not None and time.perf_counter() - started > time_limit:
                break
            layer0 = first if first is not None else rng.permutation(blocks[0])
            assignment = (layer0,) + tuple(rng.permutation(block) for block in blocks[1:])
            report = simulate(network, list(assignment), cluster, output=problem.output,
                              input_placement=problem.input_placement)
            value = problem.objective_value(report, network)
            tried += 1
            if best is None or value < best[0]:
                best = (value, assignment)
        assert best is not None
        return BackendResult(
            Status.FEASIBLE,  # no proof of optimality: never OPTIMAL
            assignment=best[1],
            objective=best[0],  # recounted by the package; a wrong claim becomes a SolverError
            message=f"best of {tried} random balanced placements",
            stats={"restarts": tried},
        )
