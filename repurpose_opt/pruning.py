"""The ℓ0 adjustment step: which remote (input unit, worker) pairs to open, and the refit.

With the placement of a layer fixed, worker k holds its local input units for free; opening a remote pair
(j, k) costs ``s_{l-1}`` scalars per sample and lets every unit on k read input unit j. :func:`prune_layer`
opens pairs by group orthogonal matching pursuit: at every step the pair with the largest error reduction
(all pairs cost the same ``s_{l-1}``, so this is the best reduction per scalar sent), with least-squares
refits through :class:`~repurpose_opt.lsq.WorkerFit` (shared Gram, block-Cholesky updates). In tolerance
mode it stops as soon as ``||T − Ŵ Φ||_F ≤ tolerance · ||T||_F`` and then runs a backward-elimination pass
that drops the pairs no longer needed; in budget mode it opens at most ``max_pairs`` pairs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from .lsq import InverseFit, LayerData, WorkerFit, blas_threads

if TYPE_CHECKING:
    from .solvers.base import BackendResult

#: Relative error below which a fit counts as exact (the precision of the ``energy − fitted`` formula).
NUMERICAL_SLACK = 1e-7


def allowed_error_ratio(tolerance: float) -> float:
    """The squared relative error a tolerance allows, with the numerical slack; a tolerance above 1e150 (whose
    square would overflow) allows everything, as any tolerance well above 1 does."""
    return min(float(tolerance), 1e150) ** 2 + NUMERICAL_SLACK**2

__all__ = ["PruneResult", "prune_layer", "minimum_error", "local_fits", "feasible_fit_data", "solve_pruning_greedy", "solve_pruning_exact"]


@dataclass(frozen=True, eq=False)
class PruneResult:
    """Outcome of one layer's adjustment.

    ``opened`` lists the remote pairs ``(input unit, worker)``; ``coef`` is the refit (n_out, F+1) with
    the bias last; errors are squared Frobenius norms on the calibration data.
    """

    opened: tuple[tuple[int, int], ...]
    coef: np.ndarray
    error: float
    energy: float
    feasible: bool

    @property
    def relative_error(self) -> float:
        """``sqrt(error / ||T||²)``: with a ridge toward w₀ this upper-bounds the plain relative error."""
        return float(np.sqrt(self.error / self.energy)) if self.energy > 0 else 0.0


def minimum_error(data: LayerData) -> float:
    """Smallest (regularised) squared error any support can reach: every worker reads every input unit."""
    factor = cho_factor(data.G, lower=True)
    fitted = np.einsum("if,if->", data.C, cho_solve(factor, data.C.T).T)
    return max(float(data.target_energy.sum() - fitted), 0.0)


def feasible_fit_data(make_data, tolerance: float):
    """``(data, target, smallest)`` for a tolerance: the regularised fit if it can reach the tolerance,
    else the plain one if that can, else ``(None, None, smallest reachable relative error)``."""
    from .lsq import DEFAULT_RIDGE

    smallest = np.inf
    for ridge in (DEFAULT_RIDGE, 0.0):
        data = make_data(ridge=ridge)
        energy = float(data.data_energy.sum())
        if energy == 0.0:  # all-zero targets: zero weights reproduce them exactly (see prune_layer)
            return data, 0.0, None
        # Errors are ``energy − fitted``: float64 cancellation leaves ~1e-15·energy of noise, so a
        # tolerance is met to within NUMERICAL_SLACK (1e-7 relative), e.g. tolerance 0 means "exact".
        target = allowed_error_ratio(tolerance) * energy
        floor = minimum_error(data)
        if floor <= target:
            return data, target, None
        smallest = min(smallest, float(np.sqrt(floor / energy)) if energy > 0 else 0.0)
    return None, None, smallest


def local_fits(data: LayerData, in_placement: np.ndarray | None, out_placement: np.ndarray, k: int,
               max_groups: np.ndarray | None = None) -> list[WorkerFit | None]:
    """One fit per worker over its local input units (all of them when the input is replicated).

    With ``max_groups`` (most input units a worker's units may read: an nnz budget), a worker whose local
    inputs exceed it drops the ones whose removal costs the least error, one at a time.
    """
    fits: list[WorkerFit | None] = []
    all_groups = np.arange(data.n_groups)
    for worker in range(k):
        rows = np.flatnonzero(out_placement == worker)
        if rows.size == 0:
            fits.append(None)
            continue
        local = all_groups if in_placement is None else np.flatnonzero(in_placement == worker)
        fit = WorkerFit(data, rows, local)
        if max_groups is not None:
            while len(fit.groups) > max_groups[worker]:
                losses = fit.removal_losses(fit.groups)
                drop = fit.groups[int(np.argmin(losses))]
                fit.reset(np.asarray([g for g in fit.groups if g != drop], dtype=np.int64))
        fits.append(fit)
    return fits


def prune_layer(
    data: LayerData,
    in_placement: np.ndarray | None,
    out_placement: np.ndarray,
    k: int,
    *,
    target_error: float | None = None,
    max_pairs: int | None = None,
    allowed: np.ndarray | None = None,
    backward: bool = True,
    max_groups: np.ndarray | None = None,
    deadline: float | None = None,
) -> PruneResult:
    """Open remote pairs until the squared error is at most ``target_error`` (or ``max_pairs`` are open).

    Parameters
    ----------
    data : LayerData
        The layer's Gram and correlations (:func:`repurpose_opt.lsq.layer_data`).
    in_placement : int array or None
        Worker of each input unit; ``None`` when every worker holds the whole input.
    out_placement : int array
        Worker of each unit of this layer.
    target_error : float, optional
        Squared Frobenius error to reach (tolerance mode).
    max_pairs : int, optional
        Most pairs to open (budget mode); the error is minimised greedily within it.
    allowed : bool array (n_inputs, k), optional
        Pairs that may be opened (defaults to every remote pair).
    backward : bool
        In tolerance mode, drop opened pairs that are no longer needed.
    max_groups : int array (k,), optional
        Most input units (local or remote) each worker's units may read: a per-worker nnz budget divided
        by (units on the worker × weights per input unit). Local inputs beyond it are dropped first.
    deadline : float, optional
        ``time.perf_counter()`` value after which the search stops refining: in tolerance mode every pair
        still allowed is opened at once (one refactorisation per worker: the tolerance is met whenever
        it can be, at the price of more pairs) and backward elimination stops; in budget mode the pairs
        opened so far are kept.

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> from repurpose_opt.lsq import layer_data
    >>> rng = np.random.default_rng(0)
    >>> net = ro.Network([ro.Dense(rng.normal(size=(4, 4)))], input_shape=(4,))
    >>> X = rng.normal(size=(50, 4)); trace = net.trace(X)
    >>> data = layer_data(net, 1, trace.activations[0], trace.pre_activations[0])
    >>> result = prune_layer(data, np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), 2, target_error=0.0)
    >>> len(result.opened), result.relative_error < 1e-6
    (4, True)
    """
    energy = float(data.data_energy.sum())
    if energy == 0.0:
        # All-zero targets (a layer dead on the calibration data): zero weights and bias reproduce them
        # exactly and read nothing, whereas any prior toward the original weights would leave an error.
        return PruneResult(opened=(), coef=np.zeros((data.C.shape[0], data.n_features)), error=0.0, energy=0.0, feasible=True)
    fits = local_fits(data, in_placement, out_placement, k, max_groups)
    opened: list[tuple[int, int]] = []
    if in_placement is not None:
        remote = in_placement[:, None] != np.arange(k)[None, :]
        if allowed is not None:
            remote &= allowed

        def space(worker: int) -> int:
            if fits[worker] is None:
                return 0
            return data.n_groups if max_groups is None else int(max_groups[worker]) - len(fits[worker].groups)

        candidates = [np.flatnonzero(remote[:, w]) if space(w) > 0 else np.zeros(0, dtype=np.int64) for w in range(k)]
        gains = [fits[w].gains(candidates[w]) if candidates[w].size else np.zeros(0) for w in range(k)]

        while True:
            current = sum(fit.error for fit in fits if fit is not None)
            if target_error is not None and current <= target_error:
                break
            if deadline is not None and time.perf_counter() > deadline:
                if target_error is not None:
                    opened += _open_all(fits, candidates, space)
                break
            room = None if max_pairs is None else max_pairs - len(opened)
            if room is not None and room <= 0:
                break
            batch = _next_batch(gains, candidates, len(opened), current, target_error, room, energy)
            if not batch:  # nothing measurably reduces the error (numerical floor of the fit)
                break
            for worker, positions in batch.items():
                positions = positions[: space(worker)]
                groups = [int(candidates[worker][p]) for p in positions]
                fits[worker].add_many(groups)
                opened.extend((group, worker) for group in groups)
                candidates[worker] = np.delete(candidates[worker], positions) if space(worker) > 0 else np.zeros(0, dtype=np.int64)
                gains[worker] = fits[worker].gains(candidates[worker])

        if backward and target_error is not None and opened:
            opened = _backward_elimination(fits, opened, target_error, deadline)

    coef = np.zeros((data.C.shape[0], data.n_features))
    for fit in fits:
        if fit is not None:
            coef[fit.rows] = fit.coefficients()
    error = sum(fit.error for fit in fits if fit is not None)
    feasible = target_error is None or error <= target_error
    return PruneResult(opened=tuple(opened), coef=coef, error=error, energy=energy, feasible=feasible)


def _next_batch(gains: list[np.ndarray], candidates: list[np.ndarray], n_open: int, current: float,
                target: float | None, room: int | None, energy: float) -> dict[int, list[int]]:
    """Which pairs to open next: the single best one while few are open (pure greedy), then the best few
    at once, as many as keep their predicted total gain under half of the remaining gap and at most
    ~1/16 of what is already open (so the batch never overshoots by much; backward elimination trims)."""
    best_per_worker = [(float(np.max(g)), w) for w, g in enumerate(gains) if g.size]
    if not best_per_worker:
        return {}
    top_gain, top_worker = max(best_per_worker)
    if top_gain <= 1e-13 * max(energy, 1e-300):
        return {}
    limit = max(1, n_open // 16)
    if room is not None:
        limit = min(limit, room)
    if limit == 1 or target is None and room is None:
        return {top_worker: [int(np.argmax(gains[top_worker]))]}
    pooled = np.concatenate([g for g in gains if g.size])
    owner = np.concatenate([np.full(g.size, w) for w, g in enumerate(gains) if g.size])
    position = np.concatenate([np.arange(g.size) for g in gains if g.size])
    order = np.argsort(-pooled, kind="stable")[:limit]
    if target is not None:
        budget = 0.5 * (current - target)
        keep = np.cumsum(pooled[order]) <= budget
        keep[0] = True
        order = order[keep]
    order = order[pooled[order] > 1e-13 * max(energy, 1e-300)]
    batch: dict[int, list[int]] = {}
    for index in order:
        batch.setdefault(int(owner[index]), []).append(int(position[index]))
    return batch


def _open_all(fits: list[WorkerFit | None], candidates: list[np.ndarray], space) -> list[tuple[int, int]]:
    """Open every candidate pair that fits each worker's room at once (one refactorisation per worker)."""
    opened = []
    for worker, fit in enumerate(fits):
        groups = candidates[worker][: space(worker)] if fit is not None else ()
        if len(groups):
            fit.reset(np.concatenate([np.asarray(fit.groups, dtype=np.int64), groups]))
            opened += [(int(g), worker) for g in groups]
    return opened


def _backward_elimination(fits: list[WorkerFit | None], opened: list[tuple[int, int]], target: float,
                          deadline: float | None = None) -> list[tuple[int, int]]:
    """Drop opened pairs, cheapest first, while the error stays within ``target``.

    Works on each worker's inverse Gram (:class:`~repurpose_opt.lsq.InverseFit`): a batch's *joint* loss
    (interactions included) is exact, so a batch is checked before it is committed and committing it is a
    Schur downdate, not a refactorisation. Several pairs go at once while their summed single losses stay
    under half the slack (a batch whose joint loss breaks the target is retried with half as many pairs).
    The fits are refactorised once at the end; if round-off then puts the error above ``target``, the
    batches are put back, last first, until it is met again.
    """
    opened = list(opened)
    states = {w: InverseFit(fit) for w, fit in enumerate(fits) if fit is not None and any(v == w for _, v in opened)}
    current = sum(fit.error for fit in fits if fit is not None)
    batches: list[list[tuple[int, int]]] = []
    while opened:
        slack = target - current
        if slack <= 0 or (deadline is not None and time.perf_counter() > deadline):
            break
        candidates = []
        for worker, state in states.items():
            mine = [g for g, w in opened if w == worker]
            if mine:
                candidates += [(float(loss), worker, group) for loss, group in zip(state.losses(mine), mine, strict=True)]
        candidates.sort()
        if not candidates or candidates[0][0] > slack:
            break
        losses = np.cumsum([c[0] for c in candidates])
        count = max(1, int(np.searchsorted(losses, 0.5 * slack, side="right")))
        while True:
            chosen: dict[int, list[int]] = {}
            for _, worker, group in candidates[:count]:
                chosen.setdefault(worker, []).append(group)
            loss = sum(states[w].joint_loss(groups) for w, groups in chosen.items())
            if current + loss <= target:
                break
            if count == 1:
                chosen = {}
                break  # even the cheapest single drop breaks the target
            count //= 2
        if not chosen:
            break
        for worker, groups in chosen.items():
            states[worker].drop(groups)
        batch = [(g, w) for w, groups in chosen.items() for g in groups]
        dropped = set(batch)
        opened = [pair for pair in opened if pair not in dropped]
        batches.append(batch)
        current += loss
    if not batches:
        return opened
    for worker, state in states.items():
        if len(state.groups) != len(fits[worker].groups):
            fits[worker].reset(np.asarray(state.groups, dtype=np.int64))
    while batches and sum(fit.error for fit in fits if fit is not None) > target:
        batch = batches.pop()  # round-off in the downdates: put the last batch back
        for worker in {w for _, w in batch}:
            fits[worker].add_many([g for g, w in batch if w == worker])
        opened += batch
    return opened


# ------------------------------------------------------------------------------------------------------
# PruningProblem solvers, shared by the backends that accept a PruningProblem.


def _pruning_result(problem, coef: np.ndarray, opened, status, message: str, bound=None, stats=None):
    from .solvers.base import BackendResult

    network = problem.result_network(coef)
    return BackendResult(status, problem.assignment(), bound=bound, network=network, message=message,
                         stats={"opened_pairs": [list(p) for p in opened], **(stats or {})})


def solve_pruning_greedy(problem, time_limit: float | None = None) -> BackendResult:
    """Group OMP + backward elimination on a PruningProblem (status FEASIBLE, or INFEASIBLE if the
    tolerance is below what reading every input can reach).

    With a ``time_limit`` (seconds) the search stops refining at the deadline (see :func:`prune_layer`):
    the answer still meets the tolerance, with more pairs than a full search would open.

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> rng = np.random.default_rng(0)
    >>> layer = ro.Dense(rng.normal(size=(4, 6)))
    >>> X = rng.normal(size=(40, 6))
    >>> problem = ro.PruningProblem(X, layer.apply(X), layer, [0, 0, 1, 1], ro.Cluster(k=2),
    ...                             input_placement=[0, 0, 0, 1, 1, 1], comm_budget=2.0)
    >>> result = solve_pruning_greedy(problem)
    >>> result.status.value, len(result.stats["opened_pairs"])
    ('FEASIBLE', 2)
    """
    deadline = None if time_limit is None else time.perf_counter() + float(time_limit)
    with blas_threads(problem.network):
        return _solve_pruning_greedy(problem, deadline)


def _solve_pruning_greedy(problem, deadline: float | None) -> BackendResult:
    from .solution import Status
    from .solvers.base import BackendResult

    caps = problem.max_groups
    data = problem.fit_data()
    if problem.tolerance is not None:
        data, target, smallest = feasible_fit_data(problem.fit_data, problem.tolerance)
        if data is None:
            own = _own_weights(problem)
            if own is not None:
                return own
            return BackendResult(Status.INFEASIBLE, message=f"tolerance {problem.tolerance:.4g} cannot be met; the smallest relative error reachable is {smallest:.4g}")
        result = prune_layer(data, problem.in_placement, problem.output_placement, problem.k, target_error=target, max_groups=caps,
                             deadline=deadline)
        if not result.feasible:  # the greedy stalled above a target the full fit reaches: open the rest
            result = prune_layer(data, problem.in_placement, problem.output_placement, problem.k, target_error=0.0, backward=False,
                                 max_groups=caps, deadline=deadline)
            if result.error > target * (1 + 1e-6):
                own = _own_weights(problem)
                if own is not None:
                    return own
                why = " within the nnz budget" if caps is not None else ""
                return BackendResult(Status.NO_SOLUTION, message=f"the adjustment could not reach the tolerance{why}")
    else:
        result = prune_layer(data, problem.in_placement, problem.output_placement, problem.k, max_pairs=problem.max_pairs,
                             max_groups=caps, deadline=deadline)
    return _pruning_result(problem, result.coef, result.opened, Status.FEASIBLE, "group OMP + backward elimination")


def _own_weights(problem) -> BackendResult | None:
    """The layer's own weights as the answer, if their directly computed error meets the tolerance.

    The least-squares floor goes through a Cholesky solve and is accurate to only ~1e-7 relative on an
    ill-conditioned Gram, while the original weights reproduce their own targets exactly: this keeps
    tolerance 0 reachable there (every input the weights read is opened; no nnz budget may be exceeded).
    """
    from .solution import Status

    if problem.nnz_budget is not None and np.any(problem.worker_nnz(problem.network) > np.asarray(problem.nnz_budget)):
        return None
    if problem.relative_error(problem.network) ** 2 > allowed_error_ratio(problem.tolerance):
        return None
    layer = problem.layer
    coef = np.hstack([layer.W.reshape(layer.W.shape[0], -1), layer.b[:, None]])
    opened = []
    if problem.in_placement is not None:
        n_inputs = problem.network.structure[0].n_inputs
        reads = (layer.W.reshape(layer.W.shape[0], n_inputs, -1) != 0).any(axis=2)
        for worker in range(problem.k):
            held = reads[problem.output_placement == worker].any(axis=0)
            opened += [(int(j), worker) for j in np.flatnonzero(held & (problem.in_placement != worker))]
    return _pruning_result(problem, coef, opened, Status.FEASIBLE, "the layer's own weights (exact on these inputs)")


def exact_pair_table(data: LayerData, in_placement, out_placement, k: int, max_subsets: int, max_groups=None):
    """Per worker, the least error with exactly t remote pairs open (t = 0..|candidates|), by enumeration.

    ``choices[worker][t]`` is the best support (input units read) with t remote pairs. Without
    ``max_groups`` every local input is kept (keeping one never hurts a least-squares fit); with it, the
    supports of at most ``max_groups[worker]`` inputs, local ones included, are enumerated.
    """
    from itertools import combinations
    from math import comb

    tables, choices = [], []
    all_groups = np.arange(data.n_groups)
    for worker in range(k):
        rows = np.flatnonzero(out_placement == worker)
        if rows.size == 0:
            tables.append(np.array([0.0]))
            choices.append([()])
            continue
        local = all_groups if in_placement is None else np.flatnonzero(in_placement == worker)
        remote = np.zeros(0, dtype=np.int64) if in_placement is None else np.flatnonzero(in_placement != worker)
        cap = None if max_groups is None else int(max_groups[worker])
        if cap is None or cap >= data.n_groups:
            fixed, free, sizes = list(local), list(remote), range(len(remote) + 1)
        else:
            fixed, free, sizes = [], list(all_groups), range(min(cap, data.n_groups) + 1)
        count = sum(comb(len(free), size) for size in sizes)
        if count > max_subsets:
            raise ValueError(f"worker {worker}: {len(free)} input units to choose from exceed {max_subsets} subsets")
        fit = WorkerFit(data, rows, np.asarray(fixed, dtype=np.int64))
        is_remote = np.zeros(data.n_groups, dtype=bool)
        is_remote[remote] = True
        best = np.full(len(remote) + 1, np.inf)
        pick: list[tuple] = [()] * (len(remote) + 1)
        for size in sizes:
            for subset in combinations(free, size):
                support = fixed + list(subset)
                fit.reset(np.asarray(support, dtype=np.int64))
                t = int(is_remote[list(subset)].sum()) if subset else 0
                if fit.error < best[t]:
                    best[t], pick[t] = fit.error, tuple(int(g) for g in support)
        # More pairs allowed never hurts: best[t] = the least error with at most t pairs.
        for t in range(1, best.size):
            if best[t - 1] <= best[t]:
                best[t], pick[t] = best[t - 1], pick[t - 1]
        tables.append(best)
        choices.append(pick)
    return tables, choices


def solve_pruning_exact(problem, max_subsets: int = 1 << 14) -> BackendResult:
    """Exact PruningProblem by enumeration: the error separates by worker, so per-worker tables of the
    best error with t pairs are combined by a DP over the total number of pairs."""
    with blas_threads(problem.network):
        return _solve_pruning_exact(problem, max_subsets)


def _solve_pruning_exact(problem, max_subsets: int) -> BackendResult:
    from .solution import Status
    from .solvers.base import BackendResult

    data = problem.fit_data(ridge=0.0)  # the plain least-squares problem, as defined
    tables, choices = exact_pair_table(data, problem.in_placement, problem.output_placement, problem.k, max_subsets,
                                       problem.max_groups)
    # combined[c] = least total error with c pairs; keep argmins for the reconstruction.
    combined = np.array([0.0])
    picks: list[np.ndarray] = []
    for table in tables:
        size = combined.size + table.size - 1
        total = np.full((combined.size, table.size), np.inf)
        total[:, :] = combined[:, None] + table[None, :]
        new = np.full(size, np.inf)
        arg = np.zeros(size, dtype=np.int64)
        for c in range(combined.size):
            row = total[c]
            better = row < new[c : c + table.size]
            new[c : c + table.size][better] = row[better]
            arg[c : c + table.size][better] = np.arange(table.size)[better]
        picks.append(arg)
        combined = new
    if problem.tolerance is not None:
        ok = np.flatnonzero(combined <= allowed_error_ratio(problem.tolerance) * float(data.data_energy.sum()))
        if ok.size == 0:
            return BackendResult(Status.INFEASIBLE, message="no set of pairs reaches the tolerance (proven by enumeration)")
        count = int(ok[0])
    else:
        count = int(np.argmin(combined[: (problem.max_pairs or 0) + 1]))
    per_worker = []
    for arg in reversed(picks):
        t = int(arg[count])
        per_worker.append(t)
        count -= t
    per_worker.reverse()
    opened = []
    coef = np.zeros((data.C.shape[0], data.n_features))
    for worker, t in enumerate(per_worker):
        rows = np.flatnonzero(problem.output_placement == worker)
        if rows.size == 0:
            continue
        support = list(choices[worker][t])
        fit = WorkerFit(data, rows, np.asarray(support, dtype=np.int64))
        coef[fit.rows] = fit.coefficients()
        if problem.in_placement is not None:
            opened += [(int(j), worker) for j in support if problem.in_placement[j] != worker]
    network = problem.result_network(coef)
    from .simulator import simulate

    # The bound is the optimum of the enumerated problem, recounted on the same meter as the objective.
    report = simulate(network, list(problem.assignment()), problem.cluster, output="distributed")
    value = problem.objective_value(report, network)
    return BackendResult(Status.OPTIMAL, problem.assignment(), bound=value, network=network,
                         message="exhaustive over pair subsets", stats={"opened_pairs": [list(p) for p in opened]})
