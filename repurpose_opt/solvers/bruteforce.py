"""``bruteforce``: the exact oracle for tiny partition problems.

Both objectives decompose along the chain of layers: layer l's volume (or α-β time) depends only on
π_{l-1} and π_l, and the gather only on π_L. So instead of enumerating the product of all layers'
placements, the oracle enumerates every balanced placement of each layer and runs an exact dynamic
program over the chain (min-plus products of the pairwise layer-cost matrices). It is still exhaustive
(every balanced placement of every layer is scored against every placement of its neighbours), but its
cost is Σ_l |S_{l-1}|·|S_l| instead of Π_l |S_l|.

With FLOPs or parameter capacities (sums over all layers) the per-worker loads so far join the DP state.

Size limits (options ``max_layer_states`` = 200,000 balanced placements in any layer and ``max_pairs`` =
4,000,000 placement pairs scored in all): larger instances are refused up front by ``can_solve`` with the
counts (computed exactly, without enumerating). The options can lower these limits for a call, not raise
them past the defaults ``can_solve`` applies. FLOPs/parameter capacities make the DP state grow with the
distinct load vectors; keep such instances to a handful of units per layer.

Time limit: checked between layers (placements and pair costs) and inside the capacitated DP; the oracle
has no incumbent before the DP ends, so running out of time gives NO_SOLUTION. A PruningProblem's
enumeration has no clock of its own: with a time limit it runs in a child process killed when the limit
runs out (NO_SOLUTION) or on Ctrl-C. With capacities the DP's
frontier (placement, per-worker loads) is capped at :data:`MAX_DP_STATES` entries (1,000,000, about
1 GiB): past it the backend stops with a :class:`~repurpose_opt.BackendCannotSolveError` naming the count,
before the memory runs out (the count cannot be known without running the DP).

Worker symmetry: when the workers are interchangeable (identical speeds, capacities and links, and the
input is not fixed), relabelling workers maps solutions onto solutions of equal cost, so only placements
of the first free layer whose workers appear in increasing order of first use are enumerated. With
``output="gather"`` worker 0 is special and only workers 1..K-1 are interchangeable.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..errors import BackendCannotSolveError
from ..solution import Status
from .base import Backend, BackendResult, Option, boolean, integer
from .placement import fixed_input

__all__ = ["BruteForceBackend", "balanced_placements", "count_balanced"]


def count_balanced(n: int, capacity: np.ndarray) -> int:
    """Number of placements of n units with at most ``capacity[k]`` units on worker k."""
    # n! · [x^n] Π_k Σ_{c ≤ cap_k} x^c / c!, computed exactly with integers.
    poly = [1] + [0] * n  # coefficients scaled by n!/c! products via multinomials
    for cap in capacity:
        new = [0] * (n + 1)
        for have, ways in enumerate(poly):
            if ways:
                for c in range(0, min(int(cap), n - have) + 1):
                    new[have + c] += ways * math.comb(n - have, c)
        poly = new
    return poly[n]


def _even_counts(n: int, capacity: np.ndarray) -> np.ndarray | None:
    """The most even split of n units within ``capacity`` (None when they do not fit)."""
    capacity = np.asarray(capacity, dtype=np.int64)
    if int(capacity.sum()) < n:
        return None
    counts = np.zeros_like(capacity)
    left = n
    # Water filling: raise every worker with room to the same level, the last level partly.
    while left:
        room = np.flatnonzero(counts < capacity)
        step = max(1, min(left // room.size, int((capacity[room] - counts[room]).min())))
        take = room[: left] if step == 1 and left < room.size else room
        counts[take] += step
        left -= step * take.size
    return counts


def _log10_lower_count(n: int, capacity: np.ndarray) -> float:
    """log10 of a lower bound on :func:`count_balanced`: the placements with the most even split's counts."""
    counts = _even_counts(n, capacity)
    if counts is None:
        return -math.inf
    return (math.lgamma(n + 1) - sum(math.lgamma(int(c) + 1) for c in counts)) / math.log(10)


def _lower_count(n: int, capacity: np.ndarray) -> int:
    """The multinomial coefficient of the most even split (a lower bound on :func:`count_balanced`)."""
    counts = _even_counts(n, capacity)
    if counts is None:
        return 0
    value, left = 1, n
    for c in counts.tolist():
        value *= math.comb(left, c)
        left -= c
    return value


def balanced_placements(n: int, capacity: np.ndarray, ordered_workers: tuple[int, ...] = ()) -> np.ndarray:
    """Every placement of n units within ``capacity``, one per row, in lexicographic order.

    ``ordered_workers``: these workers must first appear in this order (symmetry breaking): worker
    ``ordered_workers[i]`` may take a unit only once ``ordered_workers[i-1]`` holds one.

    Built unit by unit, keeping only prefixes that respect the capacities and the first-use order, so the
    memory is proportional to the placements kept, not to the ``K^n`` raw ones.

    Examples
    --------
    >>> import numpy as np
    >>> balanced_placements(3, np.array([2, 2])).tolist()
    [[0, 0, 1], [0, 1, 0], [0, 1, 1], [1, 0, 0], [1, 0, 1], [1, 1, 0]]
    >>> balanced_placements(3, np.array([2, 2]), ordered_workers=(0, 1)).tolist()
    [[0, 0, 1], [0, 1, 0], [0, 1, 1]]
    """
    k = int(capacity.shape[0])
    capacity = np.asarray(capacity, dtype=np.int64)
    rows = np.zeros((1, 0), dtype=np.int64)
    counts = np.zeros((1, k), dtype=np.int64)
    previous = {w: ordered_workers[i - 1] for i, w in enumerate(ordered_workers) if i > 0}
    for _ in range(n):
        # Extend every prefix by every worker, in lexicographic order, then drop the invalid ones.
        parent = np.repeat(np.arange(rows.shape[0]), k)
        worker = np.tile(np.arange(k), rows.shape[0])
        keep = counts[parent, worker] < capacity[worker]
        for w, before in previous.items():
            first_use = (worker == w) & (counts[parent, w] == 0)
            keep &= ~first_use | (counts[parent, before] > 0)
        parent, worker = parent[keep], worker[keep]
        rows = np.concatenate([rows[parent], worker[:, None]], axis=1)
        counts = counts[parent].copy()
        counts[np.arange(parent.shape[0]), worker] += 1
    return rows


class _OutOfTime(Exception):
    pass


#: Most (placement, per-worker loads) states of the capacitated DP's frontier (~1 KiB each).
MAX_DP_STATES = 1_000_000
#: Most supports per worker the exact pruning enumeration scores (its ``max_subsets``).
PRUNING_SUBSETS = 1 << 14


def _pruning_subsets(problem: Any) -> tuple[int, str]:
    """Largest number of supports one worker's enumeration scores in :func:`~repurpose_opt.pruning.exact_pair_table`.

    Without an nnz budget a worker keeps its local inputs and chooses among its remote ones (2^remote); with
    one that caps it below all the inputs, it chooses up to ``cap`` inputs among all of them.
    """
    n_groups = problem.network.unit_counts[0]
    caps = problem.max_groups
    worst, why = 1, ""
    for w in range(problem.k):
        if not np.any(problem.output_placement == w):
            continue
        remote = 0 if problem.in_placement is None else int(np.sum(problem.in_placement != w))
        cap = None if caps is None else int(caps[w])
        if cap is None or cap >= n_groups:
            count, text = 2**remote, f"worker {w} has {remote} candidate pairs"
        else:
            count = sum(math.comb(n_groups, size) for size in range(min(cap, n_groups) + 1))
            text = f"worker {w} may read {cap} of {n_groups} input units under the nnz budget"
        if count > worst:
            worst, why = count, text
    return worst, why


def _pruning_child(connection: Any, problem: Any) -> None:
    """The child process of a time-limited pruning enumeration: send its result (or its error)."""
    import signal

    from ..pruning import solve_pruning_exact

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this process stops
    try:
        connection.send(("result", solve_pruning_exact(problem, PRUNING_SUBSETS)))
    except Exception as exc:  # noqa: BLE001 - the parent raises it as a SolverError
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        connection.close()


def _pruning_within(problem: Any, time_limit: float | None) -> BackendResult:
    """The exact pruning enumeration; with a time limit, in a child process killed when it runs out.

    The enumeration (:func:`repurpose_opt.pruning.solve_pruning_exact`) has no clock of its own and no
    incumbent before it ends: out of time, or on Ctrl-C (re-raised), the child is killed (NO_SOLUTION).
    """
    from ..pruning import solve_pruning_exact

    if time_limit is None:
        return solve_pruning_exact(problem, PRUNING_SUBSETS)
    import multiprocessing

    from ..errors import SolverError

    started = time.perf_counter()
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_pruning_child, args=(send, problem), daemon=True, name="repurpose-bruteforce")
    child.start()
    send.close()
    try:
        if not receive.poll(float(time_limit)):
            return BackendResult(Status.NO_SOLUTION, message="the time limit ran out before the enumeration of pair subsets finished",
                                 stats={"seconds": time.perf_counter() - started})
        try:
            kind, payload = receive.recv()
        except EOFError:
            child.join(1.0)
            raise SolverError(f"the enumeration process died (exit code {child.exitcode})") from None
        if kind == "error":
            raise SolverError(f"the pruning enumeration failed: {payload}")
        return payload
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receive.close()


class BruteForceBackend(Backend):
    """Exact by exhaustive enumeration of balanced placements and a DP over the layer chain."""

    name = "bruteforce"
    description = "exhaustive enumeration + exact chain DP (tiny instances only): the oracle"
    problem_types = ("PartitionProblem", "PruningProblem")
    exact = True
    options = {
        "max_pairs": Option(4_000_000, "refuse when Σ_l |S_{l-1}|·|S_l| placement pairs exceeds this", check=integer(minimum=1)),
        "max_layer_states": Option(200_000, "refuse when a layer has more balanced placements than this", check=integer(minimum=1)),
        "symmetry_breaking": Option(True, "enumerate one representative per relabelling of interchangeable workers", check=boolean()),
    }

    # -------------------------------------------------------------------------------------------- size
    def _layer_sizes(self, problem: Any, limit: int | None = None) -> list[int]:
        """Balanced placements per layer; a layer of more than 64 units with provably more than ``limit`` gets a
        lower bound instead (exact counts of wide layers are huge integers that take minutes to compute)."""
        sizes = []
        for l, (n, cap) in enumerate(zip(problem.network.unit_counts, problem.capacities, strict=True)):
            if l == 0 and cap is None:
                sizes.append(1)
            elif limit is not None and n > 64 and _log10_lower_count(n, cap) > math.log10(max(limit, 1)) + 1e-9:
                sizes.append(_lower_count(n, cap))
            else:
                sizes.append(count_balanced(n, cap))
        return sizes

    def can_solve(self, problem: Any) -> str | None:
        reason = super().can_solve(problem)
        if reason is not None:
            return reason
        if type(problem).__name__ == "PruningProblem":
            subsets, why = _pruning_subsets(problem)
            if subsets > PRUNING_SUBSETS:
                return f"too large for exhaustive enumeration: {why} ({subsets:,} subsets; limit {PRUNING_SUBSETS:,})"
            return None
        limits = self.options
        sizes = self._layer_sizes(problem, limits["max_layer_states"].default)
        biggest = max(sizes)
        pairs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        if biggest > limits["max_layer_states"].default:
            exact = max(problem.network.unit_counts[l] for l, size in enumerate(sizes) if size == biggest) <= 64
            shown = f"{biggest:,}" if exact else f"more than 10^{len(str(biggest)) - 1}"
            return f"too large for exhaustive enumeration: a layer has {shown} balanced placements (limit {limits['max_layer_states'].default:,})"
        if pairs > limits["max_pairs"].default:
            return f"too large for exhaustive enumeration: {pairs:,} placement pairs to score (limit {limits['max_pairs'].default:,})"
        return None

    # ------------------------------------------------------------------------------------------- solve
    def solve(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        if type(problem).__name__ == "PruningProblem":
            return _pruning_within(problem, time_limit)
        sizes = self._layer_sizes(problem, options["max_layer_states"])
        pairs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        if max(sizes) > options["max_layer_states"] or pairs > options["max_pairs"]:
            raise BackendCannotSolveError(
                f"backend 'bruteforce' cannot solve this {type(problem).__name__}: {sizes} balanced placements per "
                f"layer, {pairs:,} pairs to score, above the limits of `options` (max_layer_states="
                f"{options['max_layer_states']:,}, max_pairs={options['max_pairs']:,})"
            )
        network, cluster = problem.network, problem.cluster
        deadline = None if time_limit is None else time.perf_counter() + float(time_limit)
        out_of_time = BackendResult(Status.NO_SOLUTION, message="the time limit ran out before the enumeration finished",
                                    stats={"placements_per_layer": sizes, "pairs": pairs})
        ordered = self._interchangeable(problem) if options["symmetry_breaking"] else ()
        states: list[np.ndarray] = []
        fixed = fixed_input(problem)
        states.append(fixed[None, :] if fixed is not None else balanced_placements(network.unit_counts[0], problem.capacities[0], ordered))
        for l in range(1, network.n_layers + 1):
            if deadline is not None and time.perf_counter() > deadline:
                return out_of_time
            first_free = l == 1 and fixed is not None
            states.append(balanced_placements(network.unit_counts[l], problem.capacities[l], ordered if first_free else ()))
        costs = []
        for l in range(1, network.n_layers + 1):
            if deadline is not None and time.perf_counter() > deadline:
                return out_of_time
            costs.append(self._pair_costs(problem, l, states[l - 1], states[l]))
        final = self._gather_costs(problem, states[-1])
        capacitated = cluster.flops_capacity is not None or cluster.param_capacity is not None
        try:
            path = (self._dp_with_loads(problem, states, costs, final, deadline, MAX_DP_STATES) if capacitated
                    else self._dp(costs, final))
        except _OutOfTime:
            return out_of_time
        evaluated = int(sum(c.size for c in costs))
        stats = {"placements_per_layer": [int(s.shape[0]) for s in states], "pairs_scored": evaluated}
        if path is None:
            return BackendResult(Status.INFEASIBLE, message="no balanced placement meets the FLOPs/parameter capacities", stats=stats)
        value, choice = path
        assignment = tuple(states[l][choice[l]].astype(np.int64) for l in range(len(states)))
        return BackendResult(Status.OPTIMAL, assignment, bound=value, objective=value, message="exhaustive", stats=stats)

    @staticmethod
    def _interchangeable(problem: Any) -> tuple[int, ...]:
        if problem.input_mode == "fixed" or not problem.cluster.identical_workers:
            return ()
        k = problem.cluster.k
        return tuple(range(1, k)) if problem.output == "gather" else tuple(range(k))

    @staticmethod
    def _pair_costs(problem: Any, l: int, prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
        """cost[q, p] of layer l with layer l-1 on placement prev[q] and layer l on cur[p]."""
        cluster, layer = problem.cluster, problem.network.structure[l - 1]
        k = cluster.k
        M = layer.connectivity.toarray().astype(np.float64)
        onehot_cur = (cur[:, :, None] == np.arange(k)).astype(np.float64)  # (P, n_l, K)
        needed = np.einsum("pik,ij->pkj", onehot_cur, M) > 0  # (P, K, n_{l-1})
        replicated = l == 1 and problem.input_mode == "replicated"
        if problem.objective == "volume":
            if replicated:
                return np.zeros((prev.shape[0], cur.shape[0]))
            onehot_prev = (prev[:, None, :] == np.arange(k)[None, :, None]).astype(np.float64)  # (Q, K, n)
            local = np.einsum("qkj,pkj->qp", onehot_prev, needed.astype(np.float64))
            return layer.in_message_size * (needed.sum(axis=(1, 2))[None, :] - local)
        flops = np.einsum("pik,i->pk", onehot_cur, layer.flops_per_unit)
        compute = np.max(flops / (cluster.flop_rate * cluster.speed), axis=1)  # (P,)
        if replicated:
            return np.broadcast_to(compute[None, :], (prev.shape[0], cur.shape[0])).copy()
        onehot_prev = (prev[:, None, :] == np.arange(k)[None, :, None]).astype(np.float64)
        needed_f = needed.astype(np.float64)
        out = np.empty((prev.shape[0], cur.shape[0]))
        # Chunks over the previous layer's placements bound the (Q, P, K, K) link tensor to ~32 MB.
        step = max(1, 4_000_000 // max(1, cur.shape[0] * k * k))
        for start in range(0, prev.shape[0], step):
            units = np.einsum("qsj,pdj->qpsd", onehot_prev[start:start + step], needed_f)
            units[:, :, np.arange(k), np.arange(k)] = 0.0
            nbytes = units * layer.in_message_size * cluster.dtype_bytes
            link = np.where(nbytes > 0, cluster.latency + nbytes / cluster.bandwidth, 0.0)
            out[start:start + step] = link.max(axis=(2, 3)) + compute[None, :]
        return out

    @staticmethod
    def _gather_costs(problem: Any, last: np.ndarray) -> np.ndarray:
        if problem.output != "gather":
            return np.zeros(last.shape[0])
        cluster = problem.cluster
        s_last = problem.network.message_sizes[-1]
        off_sink = np.stack([(last == w).sum(axis=1) for w in range(cluster.k)], axis=1).astype(np.float64)
        off_sink[:, 0] = 0.0
        if problem.objective == "volume":
            return s_last * off_sink.sum(axis=1)
        nbytes = off_sink * s_last * cluster.dtype_bytes
        link = np.where(nbytes > 0, cluster.latency[:, 0] + nbytes / cluster.bandwidth[:, 0], 0.0)
        return link.max(axis=1)

    @staticmethod
    def _dp(costs: list[np.ndarray], final: np.ndarray) -> tuple[float, list[int]]:
        best = np.zeros(costs[0].shape[0])
        back = []
        for cost in costs:
            total = best[:, None] + cost
            arg = np.argmin(total, axis=0)
            back.append(arg)
            best = total[arg, np.arange(total.shape[1])]
        best = best + final
        last = int(np.argmin(best))
        choice = [last]
        for arg in reversed(back):
            choice.append(int(arg[choice[-1]]))
        return float(best[last]), choice[::-1]

    @staticmethod
    def _dp_with_loads(problem: Any, states: list[np.ndarray], costs: list[np.ndarray], final: np.ndarray,
                       deadline: float | None = None, max_states: int = 1_000_000):
        cluster, network = problem.cluster, problem.network
        k = cluster.k
        inf = np.inf
        flops_cap = cluster.flops_capacity if cluster.flops_capacity is not None else np.full(k, inf)
        param_cap = cluster.param_capacity if cluster.param_capacity is not None else np.full(k, inf)
        # frontier: (state index, loads) -> (cost, parent key)
        zero = tuple([0.0] * (2 * k))
        frontier: dict[tuple, tuple[float, Any]] = {(q, zero): (0.0, None) for q in range(states[0].shape[0])}
        history = [frontier]
        for l, cost in enumerate(costs, start=1):
            layer = network.structure[l - 1]
            loads = [
                np.concatenate([
                    np.bincount(p, weights=layer.flops_per_unit, minlength=k),
                    np.bincount(p, weights=layer.params_per_unit, minlength=k),
                ])
                for p in states[l]
            ]
            nxt: dict[tuple, tuple[float, Any]] = {}
            for key, (value, _) in frontier.items():
                if deadline is not None and time.perf_counter() > deadline:
                    raise _OutOfTime
                if len(nxt) > max_states:
                    raise BackendCannotSolveError(
                        f"backend 'bruteforce' cannot solve this {type(problem).__name__}: with FLOPs/parameter capacities "
                        f"the DP over (placement, per-worker loads) reached {len(nxt):,} states at layer {l} "
                        f"(limit {max_states:,} states)"
                    )
                q, have = key
                have_arr = np.asarray(have)
                for p, add in enumerate(loads):
                    total = have_arr + add
                    if np.any(total[:k] > flops_cap * (1 + 1e-12)) or np.any(total[k:] > param_cap * (1 + 1e-12)):
                        continue
                    new_key = (p, tuple(total.tolist()))
                    new_value = value + cost[q, p]
                    if new_key not in nxt or new_value < nxt[new_key][0]:
                        nxt[new_key] = (new_value, key)
            frontier = nxt
            history.append(frontier)
        if not frontier:
            return None
        last_key = min(frontier, key=lambda key: frontier[key][0] + final[key[0]])
        value = frontier[last_key][0] + final[last_key[0]]
        choice, key = [], last_key
        for level in reversed(history):
            choice.append(key[0])
            key = level[key][1]
        return float(value), choice[::-1]
