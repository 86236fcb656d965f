"""``munkres``: capacitated linear assignment per layer, iterated in forward and backward sweeps.

This is RePurpose's assignment step applied to the partition problem (SPEC §4). With every other layer
fixed, the cost of putting unit i of layer l on worker k is

- ``s_{l-1}·#{inputs j of i : π_{l-1}(j) ≠ k}`` -- the inputs of i that k does not hold (nothing for layer 1
  of a replicated input);
- plus the *consumers' pull*, ``s_l·#{workers other than k that hold a consumer of i in layer l+1}`` -- the
  workers i's activation must then be sent to (exact, given layer l+1);
- plus the gather on the last layer, ``s_L·[k ≠ 0]``;

and the layer is re-placed by the exact capacitated assignment of these costs
(:func:`~.placement.capacitated_assignment`: the Hungarian algorithm on capacity-replicated columns,
``scipy.optimize.linear_sum_assignment``, for up to 256 units; OR-tools min-cost flow, or the
transportation LP when OR-tools is missing, for larger layers). A free input is placed by the pull alone.

The input cost is an *approximation* of the km1 volume: it charges an input once per remote consumer,
whereas an activation already sent to worker k for one unit is free for every other unit on k (the true
cost is ``|{π_l(i) : i reads j} \\ {π_{l-1}(j)}|`` per activation, which is not linear in π_l). With
option ``costs="marginal"`` the input cost of unit i on k is instead its exact marginal cost with the
rest of the layer where it is (what i alone would add on k), which is exact for a single unit but still
ignores the interactions of units moving together; ``"held+marginal"`` runs the sweeps of the first
kind to a standstill, then continues with the second from the best placement, and the default
``"auto"`` runs both ``"held+marginal"`` and ``"marginal"`` from every start (on the pruned digits MLP
neither schedule dominates the other). Every assignment
is therefore scored with the exact objective (volume, or the α-β latency) and the best placement seen is
kept.

Sweeps: starting from the contiguous split (option ``start``: ``"direct"``, or ``"random"`` with the
seed; option ``restarts`` adds seeded random starts while the time limit allows), layers are re-assigned
forward (first free layer to L) and then backward (L down to the first),
each seeing both its inputs and its consumers, until a forward+backward sweep no longer improves the best
objective, the time limit ends, or ``max_sweeps`` is reached. FLOPs/parameter capacities are not part of
the assignment: a placement that breaks one is repaired by load-reducing moves and swaps (as ``greedy``
does) and dropped if that fails. Status FEASIBLE, never OPTIMAL. Every new best placement is offered as an
incumbent (:func:`~.base.offer_incumbent`), so Ctrl-C returns the best one so far.

RestructureProblem: this engine places the importance-sparsified network, then the shared ℓ0 adjustment
runs in cascade (SPEC §4, :func:`~.restructure_engine.restructure_with_partitioner`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..solution import Status
from .base import Backend, BackendResult, Option, choice, integer, number, offer_incumbent
from .greedy import layer_latency, repair_capacities
from .placement import PlacementState, block_sizes, capacitated_assignment, contiguous_placement, fixed_input

__all__ = ["MunkresBackend", "assignment_costs"]

_EPS = 1e-9
#: Cost schedules: each start runs every listed sequence of phases (a phase sweeps to a standstill).
SCHEDULES = {
    "held": (("held",),),
    "marginal": (("marginal",),),
    "held+marginal": (("held", "marginal"),),
    "auto": (("held", "marginal"), ("marginal",)),
}
STARTS = ("direct", "random")


def assignment_costs(state: PlacementState, l: int, costs: str = "held") -> np.ndarray:
    """(n_l, K) cost of each unit of layer l on each worker, every other layer fixed (module docstring).

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> from repurpose_opt.solvers.placement import PlacementState
    >>> net = ro.Network([ro.Dense(np.eye(2)), ro.ReLU(), ro.Dense(np.ones((2, 2)))], input_shape=(2,))
    >>> problem = ro.PartitionProblem(net, ro.Cluster(k=2), input_placement=np.array([0, 1]))
    >>> state = PlacementState(problem, [[0, 1], [0, 1], [0, 1]])
    >>> assignment_costs(state, 1).tolist()   # unit 0 reads input 0 (on worker 0) and is read on both workers
    [[1.0, 2.0], [2.0, 1.0]]
    """
    n, k = state.n[l], state.k
    cost = np.zeros((n, k))
    if l >= 1 and state.has_cost(l):
        if costs == "held":
            M = state.M[l]
            src = state.place[l - 1]
            held = M @ (src[:, None] == np.arange(k)[None, :]).astype(np.float64)  # inputs of i produced on k
            cost += state.s[l] * (np.asarray(M.sum(axis=1)).ravel()[:, None] - held)
        else:
            ME, MR = state.consumer_terms(l)
            rows = np.arange(n)
            here = state.place[l]
            marginal = ME.copy()
            marginal[rows, here] = MR[rows, here]  # what unit i costs where it is = what leaving would save
            cost += state.s[l] * marginal
    if l < state.L:
        needed = (state.counts[l + 1] > 0).astype(np.float64)
        cost += state.s[l + 1] * (needed.sum(axis=1, keepdims=True) - needed)
    if l == state.L and state.gather:
        cost += state.s_last * (np.arange(k) != 0)[None, :]
    return cost


class MunkresBackend(Backend):
    """Per-layer exact capacitated assignment (Hungarian / min-cost flow), forward and backward sweeps."""

    name = "munkres"
    description = "capacitated assignment per layer (Hungarian or min-cost flow), forward/backward sweeps, best kept"
    problem_types = ("PartitionProblem", "RestructureProblem")
    options = {
        "costs": Option("auto", "input costs: 'held' (inputs the worker does not produce), 'marginal' (exact for one unit), 'held+marginal' (held sweeps, then marginal sweeps from the best), 'auto' (both 'held+marginal' and 'marginal' from every start)", check=choice(*SCHEDULES)),
        "start": Option("direct", "first placement: 'direct' (contiguous split) or 'random' (seeded)", check=choice(*STARTS)),
        "max_sweeps": Option(50, "forward+backward sweeps at most (the loop stops earlier when a sweep finds nothing better)", check=integer(minimum=1)),
        "method": Option("auto", "assignment solver: 'auto', 'hungarian', 'flow' or 'lp' (see capacitated_assignment)", check=choice('auto', 'hungarian', 'flow', 'lp')),
        "restarts": Option("auto", "starts tried (the first from `start`, the others random), best kept; 'auto': min(16, max(1, 4000 // units))", check=integer(minimum=1, auto=True)),
        "keep": Option(0.1, "RestructureProblem: fraction of most important connections kept for placing", check=number(strictly_positive=True, maximum=1.0)),
    }

    def solve(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        if type(problem).__name__ == "RestructureProblem":
            from .restructure_engine import restructure_with_partitioner

            partition_options = {key: options[key] for key in ("costs", "start", "max_sweeps", "method", "restarts")}
            return restructure_with_partitioner(problem, "munkres", keep=float(options["keep"]), time_limit=time_limit,
                                                seed=seed, options=partition_options)
        return self._partition(problem, time_limit, seed, options)

    @staticmethod
    def _start(problem: Any, random: bool, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        fixed = fixed_input(problem)
        layers = []
        for l, (n, cap) in enumerate(zip(problem.network.unit_counts, problem.capacities, strict=True)):
            if l == 0 and fixed is not None:
                layers.append(fixed)
                continue
            split = contiguous_placement(block_sizes(n, problem.cluster.speed, cap))
            layers.append(rng.permutation(split) if random else split)
        return tuple(layers)

    def _partition(self, problem: Any, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        started = time.perf_counter()
        deadline = None if time_limit is None else started + float(time_limit)
        costs, start, method = options["costs"], options["start"], options["method"]  # checked by their Options
        max_sweeps = int(options["max_sweeps"])
        restarts = options["restarts"]
        if restarts == "auto":
            restarts = min(16, max(1, 4000 // max(problem.size(), 1)))
        rng = np.random.default_rng(seed)
        best_value, best_assignment = np.inf, None
        runs = []
        for attempt in range(int(restarts)):
            if attempt and deadline is not None:
                per_run = (time.perf_counter() - started) / attempt
                if time.perf_counter() + per_run > deadline:
                    break
            first = self._start(problem, attempt > 0 or start == "random", rng)
            for phases in SCHEDULES[costs]:
                state = PlacementState(problem, first)
                value, assignment, record = self._sweeps(problem, state, phases, method, max_sweeps, deadline)
                runs.append(record)
                if assignment is not None and value < best_value - _EPS * max(1.0, abs(value)):
                    best_value, best_assignment = value, assignment
        stats = {"runs": runs, "costs": costs, "start": start}
        if best_assignment is None:
            return BackendResult(Status.NO_SOLUTION, message="no assignment met the FLOPs/parameter capacities", stats=stats)
        sweeps = sum(run["sweeps"] for run in runs)
        return BackendResult(Status.FEASIBLE, best_assignment, objective=None if problem.objective == "latency" else float(best_value),
                             message=f"capacitated assignment per layer, {sweeps} forward/backward sweeps from {len(runs)} starts",
                             stats=stats)

    @staticmethod
    def _sweeps(problem: Any, state: PlacementState, phases: tuple[str, ...], method: str, max_sweeps: int,
                deadline: float | None) -> tuple[float, tuple[np.ndarray, ...] | None, dict[str, Any]]:
        """Forward/backward assignment sweeps from ``state``; the best (objective, assignment) and a record."""
        latency = problem.objective == "latency"
        extra = state.flops_capacity is not None or state.param_capacity is not None

        def objective() -> float:
            if latency:
                return sum(layer_latency(state, m) for m in range(1, state.L + 2))
            return state.volume()

        best_value, best_assignment = np.inf, None
        if state.feasible():
            best_value, best_assignment = objective(), state.assignment()
            offer_incumbent(best_assignment, objective=best_value, message="munkres: start placement")
        layers = list(range(state.first, state.L + 1))
        order = layers + layers[::-1][1:]  # forward, then backward (the last layer is not repeated)
        history: list[tuple[str, float]] = []
        sweeps = 0
        for phase in phases:
            if phase != phases[0] and best_assignment is not None:
                for l in range(state.first, state.L + 1):  # the next phase starts from the best so far
                    state.set_layer(l, best_assignment[l])
            for _ in range(max_sweeps):
                before = best_value
                for l in order:
                    if deadline is not None and time.perf_counter() > deadline:
                        break
                    placement = capacitated_assignment(assignment_costs(state, l, phase), state.capacity[l], method=method)
                    if np.array_equal(placement, state.place[l]):
                        continue
                    state.set_layer(l, placement)
                    if extra and not state.feasible() and not repair_capacities(state, deadline):
                        continue
                    value = objective()
                    if value < best_value - _EPS * max(1.0, abs(value)):
                        best_value, best_assignment = value, state.assignment()
                        offer_incumbent(best_assignment, objective=best_value, message=f"munkres: layer {l} re-assigned")
                sweeps += 1
                history.append((phase, float(best_value)))
                if deadline is not None and time.perf_counter() > deadline:
                    break
                if not best_value < before - _EPS * max(1.0, abs(best_value)):
                    break
        return best_value, best_assignment, {"phases": list(phases), "sweeps": sweeps, "best_after_sweep": history}
