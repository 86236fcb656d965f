"""``bruteforce``: the exact oracle for tiny partition problems.

Both objectives decompose along the chain of layers: layer l's volume (or α-β time) depends only on
π_{l-1} and π_l, and the gather only on π_L. So instead of enumerating the product of all layers'
placements, the oracle enumerates every balanced placement of each layer and runs an exact dynamic
program over the chain (min-plus products of the pairwise layer-cost matrices). It is still exhaustive
(every balanced placement of every layer is scored against every placement of its neighbours), but its
cost is Σ_l |S_{l-1}|·|S_l| instead of Π_l |S_l|.

With FLOPs or parameter capacities (sums over all layers) the per-worker loads so far join the DP state.

Worker symmetry: when the workers are interchangeable (identical speeds, capacities and links, and the
input is not fixed), relabelling workers maps solutions onto solutions of equal cost, so only placements
of the first free layer whose workers appear in increasing order of first use are enumerated. With
``output="gather"`` worker 0 is special and only workers 1..K-1 are interchangeable.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..solution import Status
from .base import Backend, BackendResult, Option
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


def balanced_placements(n: int, capacity: np.ndarray, ordered_workers: tuple[int, ...] = ()) -> np.ndarray:
    """Every placement of n units within ``capacity``, one per row.

    ``ordered_workers``: these workers must first appear in this order (symmetry breaking).
    """
    k = capacity.shape[0]
    total = k**n
    codes = np.arange(total, dtype=np.int64)
    digits = (codes[:, None] // (k ** np.arange(n - 1, -1, -1, dtype=np.int64))[None, :]) % k
    counts = np.stack([(digits == w).sum(axis=1) for w in range(k)], axis=1)
    keep = np.all(counts <= capacity[None, :], axis=1)
    if len(ordered_workers) > 1:
        first_use = np.stack(  # index of each worker's first unit; n (sorts last) when unused
            [np.where((digits == w).any(axis=1), (digits == w).argmax(axis=1), n) for w in range(k)], axis=1
        )
        ranks = first_use[:, list(ordered_workers)]
        keep &= np.all(np.diff(ranks, axis=1) >= 0, axis=1) & np.all(
            (ranks[:, 1:] > ranks[:, :-1]) | (ranks[:, 1:] == n), axis=1
        )
    return digits[keep]


class BruteForceBackend(Backend):
    """Exact by exhaustive enumeration of balanced placements and a DP over the layer chain."""

    name = "bruteforce"
    description = "exhaustive enumeration + exact chain DP (tiny instances only): the oracle"
    problem_types = ("PartitionProblem", "PruningProblem")
    exact = True
    options = {
        "max_pairs": Option(4_000_000, "refuse when Σ_l |S_{l-1}|·|S_l| placement pairs exceeds this"),
        "max_layer_states": Option(200_000, "refuse when a layer has more balanced placements than this"),
        "symmetry_breaking": Option(True, "enumerate one representative per relabelling of interchangeable workers"),
    }

    # -------------------------------------------------------------------------------------------- size
    def _layer_sizes(self, problem: Any) -> list[int]:
        sizes = []
        for l, (n, cap) in enumerate(zip(problem.network.unit_counts, problem.capacities)):
            if l == 0 and cap is None:
                sizes.append(1)
            else:
                sizes.append(count_balanced(n, cap))
        return sizes

    def can_solve(self, problem: Any) -> str | None:
        reason = super().can_solve(problem)
        if reason is not None:
            return reason
        if type(problem).__name__ == "PruningProblem":
            if problem.in_placement is None:
                return None
            widest = int(max(np.sum(problem.in_placement != w) for w in range(problem.k)))
            if widest > 14:
                return f"too large for exhaustive enumeration: a worker has {widest} candidate pairs (2^{widest} subsets; limit 2^14)"
            return None
        sizes = self._layer_sizes(problem)
        limits = self.options
        biggest = max(sizes)
        pairs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
        k = problem.cluster.k
        widest = max(problem.network.unit_counts[1:] + ((problem.network.unit_counts[0],) if problem.input_mode == "free" else ()))
        if k**widest > 50_000_000:
            return f"too large for exhaustive enumeration: a layer of {widest} units has {k}^{widest} raw placements"
        if biggest > limits["max_layer_states"].default:
            return f"too large for exhaustive enumeration: a layer has {biggest:,} balanced placements (limit {limits['max_layer_states'].default:,})"
        if pairs > limits["max_pairs"].default:
            return f"too large for exhaustive enumeration: {pairs:,} placement pairs to score (limit {limits['max_pairs'].default:,})"
        return None

    # ------------------------------------------------------------------------------------------- solve
    def solve(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        if type(problem).__name__ == "PruningProblem":
            from ..pruning import solve_pruning_exact

            return solve_pruning_exact(problem)
        sizes = self._layer_sizes(problem)
        if max(sizes) > options["max_layer_states"] or sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) > options["max_pairs"]:
            return BackendResult(Status.NO_SOLUTION, message=f"instance exceeds the options' limits ({sizes} placements per layer)")
        network, cluster = problem.network, problem.cluster
        k = cluster.k
        ordered = self._interchangeable(problem) if options["symmetry_breaking"] else ()
        states: list[np.ndarray] = []
        fixed = fixed_input(problem)
        states.append(fixed[None, :] if fixed is not None else balanced_placements(network.unit_counts[0], problem.capacities[0], ordered))
        for l in range(1, network.n_layers + 1):
            first_free = l == 1 and fixed is not None
            states.append(balanced_placements(network.unit_counts[l], problem.capacities[l], ordered if first_free else ()))
        costs = [self._pair_costs(problem, l, states[l - 1], states[l]) for l in range(1, network.n_layers + 1)]
        final = self._gather_costs(problem, states[-1])
        capacitated = cluster.flops_capacity is not None or cluster.param_capacity is not None
        path = self._dp_with_loads(problem, states, costs, final) if capacitated else self._dp(costs, final)
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
        units = np.einsum("qsj,pdj->qpsd", onehot_prev, needed.astype(np.float64))
        units[:, :, np.arange(k), np.arange(k)] = 0.0
        nbytes = units * layer.in_message_size * cluster.dtype_bytes
        link = np.where(nbytes > 0, cluster.latency + nbytes / cluster.bandwidth, 0.0)
        return link.max(axis=(2, 3)) + compute[None, :]

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
    def _dp_with_loads(problem: Any, states: list[np.ndarray], costs: list[np.ndarray], final: np.ndarray):
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
