"""The cascade that every engine uses on a RestructureProblem: place a layer, then the ℓ0 adjustment.

Layer by layer (l = 1..L), with π_{l-1} and the restructured inputs X̂_{l-1} known, a *placer* proposes
candidate placements of layer l; each is adjusted by :func:`~repurpose_opt.pruning.prune_layer` against the
original pre-activations Z_l (cascade), and the candidate that needs the least communication (then the
smallest error) is kept. X̂_l is then computed with the adjusted weights. Baselines and the full method
differ only in their placer, so they are measured on the same meter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..lsq import DEFAULT_RIDGE, LayerData, blas_threads, layer_data
from ..pruning import PruneResult, feasible_fit_data, prune_layer
from ..solution import Status
from .base import BackendResult
from .placement import block_sizes, capacitated_assignment, contiguous_placement, fixed_input  # noqa: F401 - re-exported

__all__ = ["LayerContext", "run_cascade", "capacitated_assignment", "importance_chain", "residual_costs"]

#: L-BFGS iterations of the final joint refit (:mod:`.joint_refit`) every engine's cascade ends with.
JOINT_ITERATIONS = 400  # the work budget and the stall rule of joint_refit usually stop it first
#: Times the tolerances of the layers before an unreachable layer are halved before they are made exact.
TIGHTEN_ROUNDS = 4


@dataclass
class LayerContext:
    """What a placer knows when it places layer ``l``."""

    l: int
    data: LayerData
    in_placement: np.ndarray | None  # None: replicated input
    capacity: np.ndarray
    k: int
    target_error: float | None
    max_pairs: int | None
    _cache: dict = None  # placement bytes -> PruneResult
    deadline: float | None = None

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    def adjust(self, placement: np.ndarray) -> PruneResult:
        """The ℓ0 adjustment of this layer for ``placement`` (memoised: placers and the cascade share it)."""
        if self._cache is None:
            self._cache = {}
        key = np.asarray(placement, dtype=np.int64).tobytes()
        if key not in self._cache:
            self._cache[key] = prune_layer(self.data, self.in_placement, placement, self.k,
                                           target_error=self.target_error, max_pairs=self.max_pairs, deadline=self.deadline)
        return self._cache[key]


Placer = Callable[[LayerContext], list[np.ndarray]]


def layer_importance(network: Any, activations: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """Per linear layer, the importance ``g_ij = Σ over unit j's columns of W_ij²·E[x²]`` (n_out, n_inputs),
    with ``activations`` the calibration trace's inputs of each layer (a conv kernel tap of channel j sees
    that channel's mean power)."""
    out = []
    for layer, structure, x in zip(network.linear_layers, network.structure, activations, strict=False):
        if structure.kind == "dense":
            power = np.mean(x.reshape(x.shape[0], -1) ** 2, axis=0)
        else:
            kh, kw = layer.W.shape[2:]
            power = np.repeat(np.mean(x**2, axis=(0, 2)), kh * kw)
        n_out = layer.W.shape[0]
        weighted = (layer.W.reshape(n_out, -1) ** 2) * power[None, :]
        out.append(weighted.reshape(n_out, structure.n_inputs, -1).sum(axis=2))
    return out


def importance_chain(problem: Any, activations: tuple[np.ndarray, ...], sweeps: int = 10) -> list[np.ndarray]:
    """Placements of every layer that keep the most importance mass local, by alternating assignments.

    Maximises Σ_l Σ_{i,j} g^l_ij·[π_l(i) = π_{l-1}(j)] with g^l_ij = ||W_l[i, j]||²·E[x_j²], each layer
    re-assigned exactly (capacitated Hungarian) against both its inputs and its consumers, until a sweep
    changes nothing. Fixed inputs stay; a replicated input exerts no pull.
    """
    network, cluster = problem.network, problem.cluster
    k, L = cluster.k, network.n_layers
    g = layer_importance(network, activations)
    fixed = fixed_input(problem)
    placements: list[np.ndarray] = []
    counts = network.unit_counts
    for l in range(L + 1):
        if l == 0 and fixed is not None:
            placements.append(fixed)
        else:
            placements.append(contiguous_placement(block_sizes(counts[l], cluster.speed, problem.capacities[l])))
    input_free = problem.input_mode == "free"
    for _ in range(sweeps):
        changed = False
        for l in range(0 if input_free else 1, L + 1):
            gain = np.zeros((counts[l], k))
            if l >= 1 and not (l == 1 and problem.input_mode == "replicated"):
                prev = placements[l - 1]
                gain += g[l - 1] @ (prev[:, None] == np.arange(k)[None, :])
            if l < L:
                nxt = placements[l + 1]
                gain += g[l].T @ (nxt[:, None] == np.arange(k)[None, :])
            if not gain.any():
                continue
            new = capacitated_assignment(-gain, problem.capacities[l])
            if not np.array_equal(new, placements[l]):
                before = _chain_mass(g, placements, problem)
                old = placements[l]
                placements[l] = new
                if _chain_mass(g, placements, problem) <= before + 1e-12:
                    placements[l] = old
                else:
                    changed = True
        if not changed:
            break
    return placements


def _chain_mass(g: list[np.ndarray], placements: list[np.ndarray], problem: Any) -> float:
    total = 0.0
    for l in range(1, len(placements)):
        if l == 1 and problem.input_mode == "replicated":
            continue
        same = placements[l][:, None] == placements[l - 1][None, :]
        total += float(np.sum(g[l - 1] * same))
    return total


def residual_costs(data: LayerData, in_placement: np.ndarray | None, k: int, extra_groups: list[list[int]] | None = None) -> np.ndarray:
    """c[i, k]: squared residual of refitting unit i from the inputs worker k holds (plus its bias).

    ``extra_groups[k]`` adds opened remote inputs to worker k's support (re-derived costs).
    """
    from scipy.linalg import cho_factor, cho_solve

    n_out = data.C.shape[0]
    cost = np.empty((n_out, k))
    for worker in range(k):
        groups = np.arange(data.n_groups) if in_placement is None else np.flatnonzero(in_placement == worker)
        if extra_groups is not None:
            groups = np.union1d(groups, np.asarray(extra_groups[worker], dtype=np.int64))
        support = data.support(groups)
        factor = cho_factor(data.G[np.ix_(support, support)], lower=True)
        C_s = data.C[:, support]
        fitted = np.einsum("is,is->i", C_s, cho_solve(factor, C_s.T).T)
        cost[:, worker] = np.maximum(data.target_energy - fitted, 0.0)
    return cost


def _score(result: PruneResult) -> tuple[float, float]:
    return (0.0 if result.feasible else 1.0, len(result.opened), result.error)


def run_cascade(problem: Any, first_placement: np.ndarray, placer: Placer, *, time_limit: float | None = None,
                name: str = "", ridge: float = DEFAULT_RIDGE, joint_iterations: int = JOINT_ITERATIONS,
                tolerances: tuple[float, ...] | None = None) -> BackendResult:
    """Restructure ``problem`` layer by layer with candidate placements from ``placer``, then refit every
    layer jointly (:mod:`.joint_refit`, ``joint_iterations`` L-BFGS steps; 0 skips it; a negative value
    also skips the guarantee: the result is a candidate to be finished by :func:`finish_cascade`).

    ``first_placement`` is ``assignment[0]`` (all -1 for a replicated input). ``tolerances``: what the cascade
    fits each layer to, when tighter than the problem's (which the refits still keep): they decide where the
    pairs go.
    """
    with blas_threads(problem.network):
        return _run_cascade(problem, first_placement, placer, time_limit=time_limit, name=name, ridge=ridge,
                            joint_iterations=joint_iterations, tolerances=tolerances)


class _Unreachable(Exception):
    """Layer ``l`` cannot meet its tolerance from the restructured outputs of the layers before it."""

    def __init__(self, l: int, smallest: float):
        super().__init__(l, smallest)
        self.l, self.smallest = l, smallest


def _run_cascade(problem: Any, first_placement: np.ndarray, placer: Placer, *, time_limit: float | None, name: str,
                 ridge: float, joint_iterations: int, tolerances: tuple[float, ...] | None) -> BackendResult:
    """The cascade, with the recovery that makes tolerance mode always solvable.

    Layer l is refit on the *restructured* outputs of layer l-1, so its reachable error depends on how
    much error the layers before it kept. Tolerance mode is never truly infeasible (opening every pair of
    every layer reproduces the network), so when layer l cannot meet its tolerance the cascade is run
    again with the tolerances of layers 1..l-1 halved (at most ``TIGHTEN_ROUNDS`` times, then exact);
    the final joint refit is still bounded by the problem's own tolerances.
    """
    started = time.perf_counter()
    deadline = None if time_limit is None else started + time_limit
    if isinstance(problem.comm_budget, float) and problem.comm_budget < problem.minimum_gather - 1e-9:
        return BackendResult(Status.INFEASIBLE, message=(
            f"`comm_budget` {problem.comm_budget:.6g} is below the {problem.minimum_gather:.6g} scalars per sample that "
            f"gathering the outputs on worker 0 needs under the balance constraint"))
    original = problem.calibration_trace
    asked = problem.tolerances if tolerances is None else tolerances
    tolerances = None if asked is None else list(asked)
    tightened = []
    for round_ in range(TIGHTEN_ROUNDS + 2):
        try:
            placements, weights, layer_stats = _cascade_pass(problem, original, first_placement, placer, tolerances,
                                                             ridge, deadline)
            break
        except _Unreachable as exc:
            if round_ > TIGHTEN_ROUNDS or exc.l == 1 or (deadline is not None and time.perf_counter() > deadline):
                return BackendResult(
                    Status.NO_SOLUTION,
                    message=(f"layer {exc.l}: tolerance {asked[exc.l - 1]:.4g} could not be met from the "
                             f"restructured layers before it (smallest relative calibration error reachable with "
                             f"every input available: {exc.smallest:.4g}, after {round_} tightening rounds)"),
                    stats={"unreachable_layer": exc.l, "smallest_error": exc.smallest, "tightened": tightened},
                )
            # A layer that must be exact needs exact inputs: no point halving toward it.
            factor = 0.0 if round_ == TIGHTEN_ROUNDS or tolerances[exc.l - 1] == 0 else 0.5
            tolerances[: exc.l - 1] = [factor * t for t in tolerances[: exc.l - 1]]
            tightened.append({"layer": exc.l, "smallest_error": exc.smallest, "tolerances": list(tolerances)})
    restructured = problem.network.with_weights(weights)
    stats: dict[str, Any] = {"layers": layer_stats, "timings": {"cascade": time.perf_counter() - started}}
    if tightened:
        stats["tightened"] = tightened
    result = BackendResult(Status.FEASIBLE, tuple(placements), network=restructured,
                           message=f"{name} placement + ℓ0 adjustment (cascade)", stats=stats)
    if joint_iterations < 0:  # a candidate the caller compares before finishing the best one
        return result
    return finish_cascade(problem, result, ridge=ridge, joint_iterations=joint_iterations, deadline=deadline,
                          started=started)


def finish_cascade(problem: Any, result: BackendResult, *, ridge: float | str = DEFAULT_RIDGE,
                   joint_iterations: int = JOINT_ITERATIONS, deadline: float | None = None,
                   started: float | None = None, boundary: int = 0, seed: int = 0, distill_steps: int = 0,
                   distill_batch: int | None = None, progress: bool = False) -> BackendResult:
    """The joint refit (:mod:`.joint_refit`), the distillation (:mod:`.distill`, ``distill_steps`` > 0) and the
    guarantee of a cascade's result (in place).

    ``ridge="auto"``: the refit's prior is chosen on held-out calibration samples (:func:`.joint_refit.choose_ridge`,
    without boundary samples). ``boundary``: that many :func:`repurpose_opt.boundary.boundary_samples` of the
    calibration set (``seed``) join the refit's output term. The distillation starts from the refit's result
    and draws its batches with ``seed``.
    """
    network, stats = problem.network, result.stats
    started = time.perf_counter() if started is None else started
    with blas_threads(network):
        if joint_iterations > 0 and network.n_layers > 1 and not (deadline is not None and time.perf_counter() > deadline):
            from .joint_refit import MIN_EVALUATIONS, affordable_evaluations, choose_ridge, joint_refit

            held_out = None
            if ridge == "auto":
                ridge, held_out = choose_ridge(network, result.network, problem.calibration, problem.tolerances,
                                               max_iter=joint_iterations, deadline=deadline)
            extra = None
            # Only for a refit that will run: making them costs ~20 passes over them.
            if boundary and affordable_evaluations(result.network, len(problem.calibration)) >= MIN_EVALUATIONS:
                from ..boundary import boundary_samples

                extra = boundary_samples(network, problem.calibration, boundary, seed=seed)
            refit = joint_refit(network, result.network, problem.calibration, problem.tolerances, ridge=float(ridge),
                                max_iter=joint_iterations, deadline=deadline, trace=problem.calibration_trace, extra=extra)
            result.network = refit.network
            stats["joint_refit"] = {"accepted": refit.accepted, "output_error_before": refit.output_error_before,
                                    "output_error_after": refit.output_error_after, "iterations": refit.iterations,
                                    "evaluations": refit.evaluations, "stopped": refit.reason, "ridge": float(ridge)}
            if extra is not None:
                stats["joint_refit"]["boundary_samples"] = len(extra)
            if held_out is not None:
                stats["joint_refit"]["held_out_error_per_ridge"] = {f"{r:g}": e for r, e in held_out.items()}
            if not np.isfinite(refit.output_error_before):  # skipped before measuring anything (work budget)
                del stats["joint_refit"]["output_error_before"], stats["joint_refit"]["output_error_after"]
            stats.setdefault("timings", {})["joint_refit"] = refit.seconds
        if distill_steps > 0 and not (deadline is not None and time.perf_counter() > deadline):
            from .distill import BATCH, distill

            out = distill(network, result.network, problem.calibration, problem.tolerances, steps=distill_steps,
                          batch=distill_batch or BATCH, seed=seed, deadline=deadline, trace=problem.calibration_trace,
                          progress=progress)
            result.network = out.network
            stats["distillation"] = {"accepted": out.accepted, "steps": out.steps, "stopped": out.reason,
                                     "validation_error_before": out.validation_before,
                                     "validation_error_after": out.validation_after, "curve": [list(p) for p in out.curve]}
            stats.setdefault("timings", {})["distillation"] = out.seconds
        stats["time_limit_reached"] = deadline is not None and time.perf_counter() > deadline
        result.guarantee = _guarantee(problem, result.network)
    return result


def _cascade_pass(problem: Any, original: Any, first_placement: np.ndarray, placer: Placer, tolerances: list | None,
                  ridge: float, deadline: float | None) -> tuple[list, list, list]:
    """One layer-by-layer pass; raises :class:`_Unreachable` when a layer cannot meet its tolerance."""
    network, k, L = problem.network, problem.cluster.k, problem.network.n_layers
    x_hat = original.activations[0]
    placements = [np.asarray(first_placement, dtype=np.int64)]
    weights, layer_stats = [], []
    budgets = problem.layer_budgets
    for l in range(1, L + 1):
        z = original.pre_activations[l - 1]
        replicated = l == 1 and problem.input_mode == "replicated"
        in_placement = None if replicated else placements[l - 1]

        def make_data(ridge: float, l: int = l, x_hat: np.ndarray = x_hat, z: np.ndarray = z) -> LayerData:
            return layer_data(network, l, x_hat, z, ridge=ridge)

        original_fit = None  # the layer's own weights, when only they meet its tolerance (see _original_fit)
        if tolerances is not None:
            data, target, smallest = feasible_fit_data(make_data, tolerances[l - 1])
            if data is None:
                original_fit = _original_fit(network, l, x_hat, z, tolerances[l - 1])
                if original_fit is None:
                    raise _Unreachable(l, smallest)
                data, target = make_data(ridge), 0.0
            max_pairs = None
        else:
            data, target = make_data(ridge), None
            max_pairs = int(np.floor(budgets[l - 1] / network.structure[l - 1].in_message_size + 1e-9))
        context = LayerContext(l, data, in_placement, problem.capacities[l], k, target, max_pairs, deadline=deadline)
        best: tuple[Any, np.ndarray, PruneResult] | None = None
        tried = 0
        for candidate in placer(context):
            result = context.adjust(candidate)
            tried += 1
            if best is None or _score(result) < best[0]:
                best = (_score(result), candidate, result)
            if deadline is not None and time.perf_counter() > deadline:
                break  # out of time: keep the best candidate so far, one per remaining layer
        assert best is not None, "a placer must propose at least one placement"
        _, placement, result = best
        if target is not None and not result.feasible:
            # Numerical floor: the greedy fit could not reach a target the full fit reaches; open the rest.
            result = prune_layer(data, in_placement, placement, k, target_error=0.0, backward=False, deadline=deadline)
            if result.error > target * (1 + 1e-6):
                original_fit = original_fit or _original_fit(network, l, x_hat, z, tolerances[l - 1])
                if original_fit is None:
                    raise _Unreachable(l, float(np.sqrt(result.error / max(result.energy, 1e-300))))
        layer = network.linear_layers[l - 1]
        if original_fit is not None and not result.feasible:
            W, b = layer.W, layer.b
            pairs, relative_error = _pairs_read(W, network.structure[l - 1].n_inputs, in_placement, placement, k), original_fit
        else:
            W_flat, b = data.weights_to_layer(result.coef)
            W = W_flat.reshape(layer.W.shape)
            pairs, relative_error = len(result.opened), result.relative_error
        weights.append((W, b))
        placements.append(placement)
        x_hat = network.stage_post(l, network.stage_linear(l, x_hat, weights=(W, b)))
        layer_stats.append({"layer": l, "pairs": pairs, "relative_error": relative_error, "candidates": tried})
    return placements, weights, layer_stats


def _original_fit(network: Any, l: int, x_hat: np.ndarray, z: np.ndarray, tolerance: float) -> float | None:
    """Relative error of layer ``l``'s own weights on the inputs ``x_hat`` if it meets ``tolerance``, else None.

    The least-squares floor is ``energy − fitted`` through a Cholesky solve, accurate to ~1e-7 relative on
    an ill-conditioned Gram (measured: 1.9e-7 on the digits MLP's layer 2 with 200 calibration samples),
    whereas the original weights on the original inputs reproduce Z_l exactly. Computed directly, their
    error makes tolerance 0 reachable whenever every input is available and exact.
    """
    from ..pruning import allowed_error_ratio

    energy = float(np.sum(z * z))
    error = float(np.sum((network.stage_linear(l, x_hat) - z) ** 2))
    if error > allowed_error_ratio(tolerance) * energy:
        return None
    return float(np.sqrt(error / energy)) if energy > 0 else 0.0


def _pairs_read(W: np.ndarray, n_inputs: int, in_placement: np.ndarray | None, placement: np.ndarray, k: int) -> int:
    """Remote (input unit, worker) pairs that weights ``W`` read under the given placements."""
    if in_placement is None:
        return 0
    reads = (W.reshape(W.shape[0], n_inputs, -1) != 0).any(axis=2)  # (units, input units)
    per_worker = np.stack([reads[placement == worker].any(axis=0) for worker in range(k)], axis=1)
    return int(np.sum(per_worker & (in_placement[:, None] != np.arange(k)[None, :])))


def _guarantee(problem: Any, restructured: Any) -> Any:
    try:
        from ..guarantee import compute_guarantee
    except ImportError:  # pragma: no cover - the guarantee module ships with the package
        return None
    return compute_guarantee(problem.network, restructured, calibration=problem.calibration, tolerances=problem.tolerances)


def first_layer_placement(problem: Any, chosen: np.ndarray | None = None) -> np.ndarray:
    """``assignment[0]``: replicated (-1s), the fixed array, or ``chosen`` when the input is free."""
    fixed = fixed_input(problem)
    if fixed is not None:
        return fixed
    if chosen is None:
        raise ValueError("a free input needs a chosen placement")
    return np.asarray(chosen, dtype=np.int64)



def importance_sparsified(network: Any, activations: tuple[np.ndarray, ...], keep: float) -> Any:
    """The network with, per layer, only its ``keep`` fraction of most important (unit, input unit) links.

    Importance is ``g_ij = ||W[i, j]||²·E[x_j²]``. A dense network gives a partitioner nothing to work with
    (every balanced placement has the same volume), so partition engines place this sparsified copy.
    """
    weights = []
    for layer, structure, g in zip(network.linear_layers, network.structure, layer_importance(network, activations), strict=True):
        count = max(1, int(round(keep * g.size)))
        threshold = np.partition(g.ravel(), g.size - count)[g.size - count]
        mask = g >= threshold
        W = layer.W.reshape(structure.n_units, structure.n_inputs, -1) * mask[:, :, None]
        weights.append((W.reshape(layer.W.shape), layer.b))
    return network.with_weights(weights)


def partition_plan(problem: Any, backend: str, *, keep: float = 0.1, time_limit: float | None = None,
                   seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[list[np.ndarray] | None, Any]:
    """A partition ``backend``'s placement of every layer of ``problem``'s importance-sparsified network
    (``None`` when it finds none), and its Solution."""
    from ..api import solve
    from ..problems import PartitionProblem

    sparse = importance_sparsified(problem.network, problem.calibration_trace.activations, keep)
    partition = PartitionProblem(sparse, problem.cluster, input_placement=problem.input_placement,
                                 output=problem.output, imbalance=problem.imbalance)
    placed = solve(partition, backend=backend, time_limit=time_limit, seed=seed, options=options)
    if not placed.status.has_solution:
        return None, placed
    return [np.asarray(p, dtype=np.int64) for p in placed.assignment], placed


def cascade_plan(problem: Any, plan: list[np.ndarray], *, deadline: float | None, name: str) -> BackendResult:
    """The cascade along a fixed ``plan`` (one placement per layer), then the joint refit, until ``deadline``.

    The cascade's answer (every layer within its tolerance or budget) is offered as the incumbent before
    the joint refit, so that Ctrl-C during the refit returns it instead of nothing.
    """
    from .base import offer_incumbent

    left = None if deadline is None else max(deadline - time.perf_counter(), 1e-3)
    result = run_cascade(problem, plan[0], lambda ctx: [plan[ctx.l]], time_limit=left, name=name, joint_iterations=-1)
    if result.status.has_solution:
        cascaded = result.network
        offer_incumbent(result.assignment, network=cascaded, guarantee=lambda: _guarantee(problem, cascaded),
                        message=f"{name} placement + ℓ0 adjustment, before the joint refit")
        result = finish_cascade(problem, result, deadline=deadline)
    return result


#: Share of a RestructureProblem's ``time_limit`` a partition engine gets to place the network; the cascade
#: (ℓ0 adjustment of every layer, then the joint refit) gets what is left, so the total respects the limit.
PLACEMENT_SHARE = 0.5


def restructure_with_partitioner(problem: Any, backend: str, *, keep: float = 0.1, time_limit: float | None = None,
                                 seed: int | None = None, options: dict[str, Any] | None = None) -> BackendResult:
    """Place ``problem``'s network with a partition ``backend`` (on its importance-sparsified copy), then
    run the shared ℓ0 adjustment in cascade with that placement.

    With a ``time_limit``, the placement gets ``PLACEMENT_SHARE`` of it and the cascade the rest (its
    candidate loop and joint refit stop at the deadline; every layer is still adjusted once, past the deadline
    by opening every remaining pair at once, one factorisation per worker, so a tiny limit on a large network
    can be exceeded by that one pass). The cascade's answer is offered as an incumbent
    before the joint refit, so Ctrl-C during the refit returns it.
    """
    started = time.perf_counter()
    deadline = None if time_limit is None else started + time_limit
    placement_limit = None if time_limit is None else PLACEMENT_SHARE * time_limit
    plan, placed = partition_plan(problem, backend, keep=keep, time_limit=placement_limit, seed=seed, options=options)
    if plan is None:
        return BackendResult(Status.NO_SOLUTION, message=f"{backend} found no placement: {placed.message}")
    cascade_started = time.perf_counter()
    result = cascade_plan(problem, plan, deadline=deadline, name=backend)
    timings = result.stats.setdefault("timings", {})  # an INFEASIBLE / NO_SOLUTION cascade carries none
    timings["placement"] = cascade_started - started
    result.stats["placement_volume_on_sparsified"] = placed.objective
    result.stats["sparsified_keep"] = keep
    result.stats["placement_time_limit"] = placement_limit
    return result
