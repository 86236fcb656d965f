"""``cvxpy`` on a PruningProblem: the relaxed ℓ0 (group lasso over the remote pairs), then selection and refit.

The ℓ0 count of opened pairs is relaxed to a group lasso: for worker k with units ``rows_k``,

    minimise  ||T_k − Φ W_kᵀ||² + ρ||W_k − W⁰_k||²  +  λ · Σ_{j remote to k} √(|rows_k|·g) · ||W_k[:, group j]||_F

(local inputs and the bias unpenalised; g weights per input unit; ρ the ridge toward the original
weights of :mod:`repurpose_opt.lsq`). With the shared Gram ``G = UᵀU`` (Cholesky), the data term is
``||U W_kᵀ − U⁻ᵀ C_kᵀ||_F²`` up to a constant, so the problem is a second-order cone programme whose size
does not depend on the number of samples; it is solved by cvxpy's conic solver (Clarabel) for a path of
penalties ``λ_max · 10^(-3t/(n−1))``, where ``λ_max`` (from the residual correlations of the local-only
fit) is the smallest penalty that keeps every remote pair closed. The path is shared by all workers
(one λ, as in the joint problem), warm-started, and stops once the pairs it has activated are enough.

**Selection and exact refit.** Pairs are ranked by the penalty at which they first become active (larger
first), ties by their group norm there; then the shortest prefix of that ranking whose exact
least-squares refit (shared Gram, :class:`~repurpose_opt.lsq.WorkerFit`) meets the tolerance is kept
(binary search: refit errors of nested supports never increase), or, under a volume budget, the longest
prefix within the budget. An nnz budget trims each worker's local inputs first (least error lost) and
then skips pairs of full workers. The status is FEASIBLE (a relaxation gives no proof).

**Time limit and Ctrl-C.** The conic solves run in a child process (one interior-point iteration of a wide
layer's problem takes seconds, and Clarabel checks its clock only between iterations). The path gets
``PATH_SHARE`` of the time limit; then the child is killed, and the pairs the path did not reach are ranked
after the others by their residual correlation (the order in which they would enter at λ_max), so the
selection and exact refit still return a solution that meets the tolerance or budget. On Ctrl-C the child
is killed at once and the interrupt propagates (no incumbent: status NO_SOLUTION).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import time
from typing import Any

import numpy as np

from ..lsq import blas_threads
from ..pruning import feasible_fit_data, local_fits
from ..solution import Status
from .base import BackendResult

__all__ = ["solve_pruning_group_lasso", "group_lasso_nonzeros", "PATH_LENGTH", "PATH_RATIO", "BYTES_PER_NONZERO"]

#: Penalties on the path, and the ratio of the smallest to the largest.
PATH_LENGTH = 12
PATH_RATIO = 1e-3
#: Share of the time limit the penalty path may use; the pair selection and exact refits get the rest.
PATH_SHARE = 0.7
#: A pair counts as active when its group norm exceeds this fraction of the largest group norm.
ACTIVE = 1e-6


#: Memory of the group-lasso path per nonzero of the workers' data blocks U·W_kᵀ, in cvxpy's compiled problems
#: and Clarabel's factorisation (measured: 390-430 bytes on 129- and 257-feature layers).
BYTES_PER_NONZERO = 450


def group_lasso_nonzeros(problem: Any) -> tuple[int, str]:
    """Nonzeros of the data blocks of every worker's group-lasso problem (the child holds them all), and
    the largest worker's shape: with F features (+1 bias) and r units on worker k, U (upper triangular,
    F×F) times W_kᵀ (F×r) has F(F+1)/2·r nonzeros. A replicated input has no path (nothing to open).

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> layer = ro.Dense(np.ones((4, 6)))
    >>> problem = ro.PruningProblem(np.ones((10, 6)), np.ones((10, 4)), layer, [0, 0, 1, 1], ro.Cluster(k=2),
    ...                             input_placement=[0, 0, 0, 1, 1, 1], tolerance=0.1)
    >>> group_lasso_nonzeros(problem)
    (112, 'worker 0: 7 features x 2 units')
    """
    if problem.in_placement is None:
        return 0, "replicated input"
    features = int(np.prod(problem.layer.W.shape[1:])) + 1
    counts = np.bincount(np.asarray(problem.output_placement), minlength=problem.k)
    total = int(sum(features * (features + 1) // 2 * int(rows) for rows in counts))
    worker = int(np.argmax(counts))
    return total, f"worker {worker}: {features} features x {int(counts[worker])} units"


def _worker_problem(U: np.ndarray, V: np.ndarray, n_free: int, group: int, rows: int):
    """The DPP-compliant group-lasso problem of one worker: variables ordered [remote groups | the rest]."""
    import cvxpy as cp

    n_features = U.shape[1]
    Wt = cp.Variable((n_features, rows))
    lam = cp.Parameter(nonneg=True)
    data = cp.sum_squares(U @ Wt - V)
    if n_free:
        block = Wt[: n_free * group, :].T  # (rows, n_free·g): column c·g + a is input c's a-th weight
        per_group = cp.reshape(block, (rows * group, n_free), order="F")
        penalty = np.sqrt(rows * group) * cp.sum(cp.norm(per_group, 2, axis=0))
    else:
        penalty = 0
    return cp.Problem(cp.Minimize(data + lam * penalty)), Wt, lam


def solve_pruning_group_lasso(problem: Any, *, time_limit: float | None = None, path_length: int = PATH_LENGTH,
                              path_ratio: float = PATH_RATIO) -> BackendResult:
    """Relaxed ℓ0 on a :class:`~repurpose_opt.PruningProblem` (see the module docstring).

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> rng = np.random.default_rng(0)
    >>> layer = ro.Dense(rng.normal(size=(4, 6)))
    >>> X = rng.normal(size=(40, 6))
    >>> problem = ro.PruningProblem(X, layer.apply(X), layer, [0, 0, 1, 1], ro.Cluster(k=2),
    ...                             input_placement=[0, 0, 0, 1, 1, 1], tolerance=0.0)
    >>> sol = ro.solve(problem, backend="cvxpy")      # every remote pair is needed for an exact fit
    >>> sol.status.value, sol.objective
    ('FEASIBLE', 6.0)
    """
    with blas_threads(problem.network):
        return _group_lasso(problem, time_limit=time_limit, path_length=path_length, path_ratio=path_ratio)


def _group_lasso(problem: Any, *, time_limit: float | None = None, path_length: int = PATH_LENGTH,
                              path_ratio: float = PATH_RATIO) -> BackendResult:
    import cvxpy  # noqa: F401 - loaded before the path's child process is forked, so that it does not import it again
    from scipy.linalg import cholesky, solve_triangular

    from ..pruning import _pruning_result

    started = time.perf_counter()
    caps = problem.max_groups
    k = problem.k
    if problem.tolerance is not None:
        data, target, smallest = feasible_fit_data(problem.fit_data, problem.tolerance)
        if data is None:
            return BackendResult(Status.INFEASIBLE, message=f"tolerance {problem.tolerance:.4g} cannot be met; the smallest relative error reachable is {smallest:.4g}")
    else:
        data, target = problem.fit_data(), None
    in_placement, out_placement = problem.in_placement, problem.output_placement
    if float(data.data_energy.sum()) == 0.0:  # all-zero targets: zero weights are exact and read nothing
        return _pruning_result(problem, np.zeros((data.C.shape[0], data.n_features)), [], Status.FEASIBLE,
                               "all-zero targets: zero weights", stats={"path": []})
    fits = local_fits(data, in_placement, out_placement, k, caps)
    local = [list(fit.groups) if fit is not None else [] for fit in fits]
    stats: dict[str, Any] = {"path": []}
    if in_placement is None:  # replicated input: nothing to open, the local fit is the answer
        coef = _coefficients(fits, data)
        return _pruning_result(problem, coef, [], Status.FEASIBLE, "replicated input: no remote pair to open", stats=stats)

    g = data.group_size
    energy = float(data.data_energy.sum())
    scale = max(energy, 1e-300)  # the conic solver sees the relative error, whatever the data's scale
    U = cholesky(data.G, lower=False) / np.sqrt(scale)
    candidates = [np.flatnonzero(in_placement != w) if fits[w] is not None else np.zeros(0, dtype=np.int64) for w in range(k)]
    if problem.max_pairs == 0 or not any(c.size for c in candidates):
        coef = _coefficients(fits, data)
        return _pruning_result(problem, coef, [], Status.FEASIBLE, "no remote pair can be opened", stats=stats)

    # λ_max: the local-only fit is optimal while λ·√(|rows|·g) ≥ 2·||R_k[:, group j]|| for every remote pair.
    lam_max = 0.0
    workers = []
    pull: dict[tuple[int, int], float] = {}  # each pair's residual correlation: the order it enters at λ_max
    for w in range(k):
        fit = fits[w]
        if fit is None or candidates[w].size == 0:
            continue
        keep = np.setdiff1d(np.arange(data.n_groups), candidates[w])
        order = np.concatenate([candidates[w], keep])
        columns = np.concatenate([data.support(order)[:-1], [data.bias_index]])  # remote groups first
        U_w = U[:, columns]
        V_w = solve_triangular(U, data.C[fit.rows].T / scale, lower=False, trans="T")
        R = fit.R[:, data.support(candidates[w])[:-1]].reshape(fit.rows.size, candidates[w].size, g)
        weight = np.sqrt(fit.rows.size * g)
        correlation = 2 * np.sqrt(np.sum(R**2, axis=(0, 2))) / (weight * scale)
        pull.update(((int(j), w), float(c)) for j, c in zip(candidates[w], correlation, strict=True))
        lam_max = max(lam_max, float(np.max(correlation)))
        workers.append((w, U_w, V_w, candidates[w].size, fit.rows.size))
    lambdas = lam_max * np.power(path_ratio, np.arange(1, path_length + 1) / path_length)

    # Rank pairs by the penalty at which they enter the path (then by their group norm there).
    entry: dict[tuple[int, int], tuple[int, float]] = {}
    last_norms: dict[tuple[int, int], float] = {}
    # The path runs in a child process (module docstring), stopped at PATH_SHARE of the time limit (the
    # selection's exact refits need the rest), on Ctrl-C, or once the pairs it has activated are enough.
    deadline = None if time_limit is None else started + PATH_SHARE * time_limit
    done_workers: dict[int, set] = {}
    with contextlib.closing(_path_solves(workers, lambdas, g, deadline, stats)) as solves:  # closing kills the child
        for step, w, norms in solves:
            if norms is not None:
                top = float(norms.max()) if norms.size else 0.0
                for j, norm in zip(candidates[w], norms, strict=False):
                    last_norms[int(j), w] = float(norm)
                    if norm > ACTIVE * max(top, 1e-300) and (int(j), w) not in entry:
                        entry[int(j), w] = (step, -float(norm))
            done_workers.setdefault(step, set()).add(w)
            if len(done_workers[step]) == len(workers):
                stats["path"].append({"lambda": float(lambdas[step]), "active": len(entry)})
                if _enough(problem, fits, local, entry, target, caps):
                    break
    ranked = sorted(entry, key=lambda pair: entry[pair])
    rest = sorted((pair for pair in last_norms if pair not in entry), key=lambda pair: -last_norms[pair])
    ranked += rest
    # Pairs the path never reached (it was cut by the time limit): in the order they would enter at λ_max.
    unseen = [(int(j), w) for w in range(k) for j in candidates[w] if (int(j), w) not in entry and (int(j), w) not in last_norms]
    ranked += sorted(unseen, key=lambda pair: -pull.get(pair, 0.0))
    ranked = _within_caps(ranked, fits, caps)

    if target is None:
        count = min(len(ranked), problem.max_pairs if problem.max_pairs is not None else len(ranked))
    else:
        count = _shortest_prefix(ranked, fits, local, target)
        if count is None:
            why = " within the nnz budget" if caps is not None else ""
            return BackendResult(Status.NO_SOLUTION, message=f"the selected pairs could not reach the tolerance{why}", stats=stats)
    chosen = ranked[:count]
    _error_with(fits, local, chosen)
    coef = _coefficients(fits, data)
    stats["lambda_max"] = lam_max
    stats["selected"] = count
    stats["relative_error"] = float(np.sqrt(sum(f.error for f in fits if f is not None) / energy)) if energy > 0 else 0.0
    return _pruning_result(problem, coef, chosen, Status.FEASIBLE, "group lasso path + pair selection + exact refit", stats=stats)


def _path_child(connection: Any, workers: list, lambdas: np.ndarray, group: int) -> None:
    """The child process: solve every worker's problem along the path, sending each worker's group norms."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this process stops
    import warnings

    import cvxpy as cp

    warnings.filterwarnings("ignore", message="Solution may be inaccurate")
    try:
        problems = [(w, *_worker_problem(U_w, V_w, n_free, group, rows), n_free) for w, U_w, V_w, n_free, rows in workers]
        for step, value in enumerate(lambdas):
            for w, cvx, variable, lam, n_free in problems:
                lam.value = float(value)
                cvx.solve(solver=cp.CLARABEL, warm_start=True)
                norms = None
                if variable.value is not None and cvx.status in ("optimal", "optimal_inaccurate"):
                    block = variable.value[: n_free * group].reshape(n_free, group, -1)
                    norms = np.sqrt(np.sum(block**2, axis=(1, 2)))
                connection.send(("solved", step, w, norms))
        connection.send(("done",))
    except Exception as exc:  # reported to the parent, which raises it as a SolverError
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        connection.close()


def _path_solves(workers: list, lambdas: np.ndarray, group: int, deadline: float | None, stats: dict):
    """``(step, worker, group norms or None)`` for each conic solve of the path, from a child process.

    Clarabel checks its clock once per interior-point iteration, and one iteration of a wide layer's problem
    takes seconds, so a limit handed to it would be overrun; the child is killed at ``deadline`` instead,
    when the caller stops iterating (enough pairs), and on Ctrl-C (then ``KeyboardInterrupt`` is re-raised).
    """
    from ..errors import SolverError

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_path_child, args=(send, workers, lambdas, group), daemon=True, name="repurpose-clarabel")
    child.start()
    send.close()
    try:
        while True:
            left = None if deadline is None else deadline - time.perf_counter()
            if left is not None and (left <= 0 or not receive.poll(left)):
                stats["stopped"] = "time limit"
                return
            try:
                message = receive.recv()
            except EOFError:
                child.join(1.0)
                raise SolverError(f"the Clarabel process died (exit code {child.exitcode}) during the group-lasso path") from None
            if message[0] == "done":
                return
            if message[0] == "error":
                raise SolverError(f"cvxpy/Clarabel failed on the group-lasso path: {message[1]}")
            yield message[1:]
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receive.close()


def _within_caps(ranked: list[tuple[int, int]], fits: list, caps: np.ndarray | None) -> list[tuple[int, int]]:
    """Drop the pairs of workers whose nnz budget is already full at that point of the ranking."""
    if caps is None:
        return ranked
    room = {w: int(caps[w]) - len(fit.groups) for w, fit in enumerate(fits) if fit is not None}
    out = []
    for j, w in ranked:
        if room.get(w, 0) > 0:
            out.append((j, w))
            room[w] -= 1
    return out


def _error_with(fits: list, local: list, pairs: list[tuple[int, int]]) -> float:
    """Total refit error with each worker reading its (trimmed) local inputs plus its pairs in ``pairs``."""
    for w, fit in enumerate(fits):
        if fit is not None:
            fit.reset(np.asarray(local[w] + [j for j, worker in pairs if worker == w], dtype=np.int64))
    return sum(fit.error for fit in fits if fit is not None)


def _shortest_prefix(ranked: list[tuple[int, int]], fits: list, local: list, target: float) -> int | None:
    """Fewest leading pairs whose refit meets ``target`` (refit errors of nested supports never increase)."""
    if _error_with(fits, local, ranked) > target:
        return None
    low, high = 0, len(ranked)
    while low < high:
        middle = (low + high) // 2
        if _error_with(fits, local, ranked[:middle]) <= target:
            high = middle
        else:
            low = middle + 1
    return low


def _enough(problem: Any, fits: list, local: list, entry: dict, target: float | None, caps: Any) -> bool:
    """Whether the pairs active so far already reach the tolerance (or fill the budget)."""
    ranked = _within_caps(sorted(entry, key=lambda pair: entry[pair]), fits, caps)
    if target is None:
        return problem.max_pairs is not None and len(ranked) >= problem.max_pairs
    return _error_with(fits, local, ranked) <= target


def _coefficients(fits: list, data: Any) -> np.ndarray:
    coef = np.zeros((data.C.shape[0], data.n_features))
    for fit in fits:
        if fit is not None:
            coef[fit.rows] = fit.coefficients()
    return coef
