"""Placement helpers shared by the backends: block sizes, contiguous splits, the input layer, capacities,
the exact capacitated assignment (Hungarian / min-cost flow / transportation LP) and :class:`PlacementState`,
the incremental exact volume counter that the ``greedy`` and ``munkres`` backends search with."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import InvalidParameterError, SolverError
from ..simulator import REPLICATED

__all__ = [
    "block_sizes",
    "contiguous_placement",
    "fixed_input",
    "extra_capacity_violation",
    "worker_loads",
    "capacitated_assignment",
    "first_free_layer",
    "PlacementState",
]


def block_sizes(n: int, speed: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Units per worker, proportional to speed (largest remainder), each within ``capacity``."""
    share = n * speed / speed.sum()
    sizes = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - sizes), kind="stable")
    sizes[order[: n - sizes.sum()]] += 1
    if np.any(sizes > capacity):  # pragma: no cover - capacity is ⌈(1+ε)·share⌉ >= these sizes
        raise AssertionError("block sizes exceed the balance capacity")
    return sizes


def contiguous_placement(sizes: np.ndarray) -> np.ndarray:
    """Units 0..n-1 cut into consecutive blocks of ``sizes`` (worker 0 first)."""
    return np.repeat(np.arange(sizes.shape[0]), sizes).astype(np.int64)


def fixed_input(problem: Any) -> np.ndarray | None:
    """``assignment[0]`` when the problem fixes it (replicated: all -1; fixed: the given array), else None."""
    if problem.input_mode == "replicated":
        return np.full(problem.network.unit_counts[0], REPLICATED, dtype=np.int64)
    if problem.input_mode == "fixed":
        return np.asarray(problem.input_placement, dtype=np.int64)
    return None


def worker_loads(network: Any, assignment: tuple[np.ndarray, ...], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-worker FLOPs per sample and parameters of an assignment (SPEC §2)."""
    flops, params = np.zeros(k), np.zeros(k)
    for layer, placement in zip(network.structure, assignment[1:], strict=True):
        flops += np.bincount(placement, weights=layer.flops_per_unit, minlength=k)
        params += np.bincount(placement, weights=layer.params_per_unit, minlength=k)
    return flops, params


def extra_capacity_violation(problem: Any, assignment: tuple[np.ndarray, ...]) -> str | None:
    """A sentence naming the first FLOPs/parameter capacity the assignment breaks, or None."""
    cluster = problem.cluster
    if cluster.flops_capacity is None and cluster.param_capacity is None:
        return None
    flops, params = worker_loads(problem.network, assignment, cluster.k)
    for name, load, cap in (("FLOPs", flops, cluster.flops_capacity), ("parameter", params, cluster.param_capacity)):
        if cap is not None and np.any(load > cap):
            worker = int(np.argmax(load - cap))
            return f"worker {worker} exceeds its {name} capacity ({load[worker]:.6g} > {cap[worker]:.6g})"
    return None


# ------------------------------------------------------------------------------- capacitated assignment
#: Up to this many rows the Hungarian algorithm on replicated columns is used (it is O(n³)).
HUNGARIAN_MAX_ROWS = 256
ASSIGNMENT_METHODS = ("auto", "hungarian", "flow", "lp")


def capacitated_assignment(cost: np.ndarray, capacity: np.ndarray, *, method: str = "auto") -> np.ndarray:
    """Exact min-cost assignment of rows to workers with at most ``capacity[k]`` rows on worker k.

    Parameters
    ----------
    cost : array (n, K)
        ``cost[i, k]`` of putting row (unit) i on worker k.
    capacity : int array (K,)
        Most rows worker k may take; ``capacity.sum() >= n``.
    method : {"auto", "hungarian", "flow", "lp"}
        ``"hungarian"``: :func:`scipy.optimize.linear_sum_assignment` on the cost matrix with worker k's
        column repeated ``capacity[k]`` times (O(n³), for small n). ``"flow"``: OR-tools
        ``SimpleMinCostFlow`` on the transportation network rows → workers → sink (integer costs only).
        ``"lp"``: the transportation LP with HiGHS's dual simplex (:func:`scipy.optimize.linprog`), whose
        basic optimum is integral (the constraint matrix is totally unimodular). ``"auto"``: Hungarian up to
        :data:`HUNGARIAN_MAX_ROWS` rows, then min-cost flow when the costs are integers and OR-tools is
        installed, else the LP. All are exact.

    Returns
    -------
    placement : int array (n,)

    Examples
    --------
    >>> import numpy as np
    >>> cost = np.array([[0, 5], [0, 5], [0, 1]])
    >>> capacitated_assignment(cost, np.array([2, 2])).tolist()   # the cheapest unit to move is the last
    [0, 0, 1]
    >>> capacitated_assignment(cost, np.array([2, 2]), method="lp").tolist()
    [0, 0, 1]
    """
    cost = np.asarray(cost, dtype=np.float64)
    n, k = cost.shape
    capacity = np.minimum(np.asarray(capacity, dtype=np.int64), n)
    if method not in ASSIGNMENT_METHODS:
        raise InvalidParameterError(f"`method` must be one of {', '.join(ASSIGNMENT_METHODS)}, got {method!r}")
    if int(capacity.sum()) < n:
        raise InvalidParameterError(f"`capacity` must add up to at least {n} rows, got {int(capacity.sum())}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    def integral() -> bool:  # asked only off the Hungarian path: the sweeps call this thousands of times
        return bool(np.all(cost == np.round(cost))) and float(np.max(np.abs(cost), initial=0.0)) * n < 2**52

    if method == "auto":
        if n <= HUNGARIAN_MAX_ROWS:
            method = "hungarian"
        elif integral() and importlib.util.find_spec("ortools") is not None:
            method = "flow"
        else:
            method = "lp"
    if method == "flow" and not integral():
        raise InvalidParameterError("`method`='flow' needs integer costs; use 'lp' or 'hungarian'")
    if method == "hungarian":
        from scipy.optimize import linear_sum_assignment

        columns = np.repeat(np.arange(k), capacity)
        rows, cols = linear_sum_assignment(cost[:, columns])
        placement = np.empty(n, dtype=np.int64)
        placement[rows] = columns[cols]
        return placement
    if method == "flow":
        return _assignment_by_flow(cost, capacity)
    return _assignment_by_lp(cost, capacity)


def _assignment_by_flow(cost: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    from ortools.graph.python import min_cost_flow

    n, k = cost.shape
    flow = min_cost_flow.SimpleMinCostFlow()
    tails = np.repeat(np.arange(n), k)
    heads = n + np.tile(np.arange(k), n)
    # Shifting each row's costs by a constant changes nothing and keeps them small and non-negative.
    shifted = (cost - cost.min(axis=1, keepdims=True)).astype(np.int64)
    arcs = flow.add_arcs_with_capacity_and_unit_cost(tails, heads, np.ones(n * k, dtype=np.int64), shifted.ravel())
    sink = n + k
    flow.add_arcs_with_capacity_and_unit_cost(n + np.arange(k), np.full(k, sink), capacity, np.zeros(k, dtype=np.int64))
    supplies = np.zeros(n + k + 1, dtype=np.int64)
    supplies[:n] = 1
    supplies[sink] = -n
    flow.set_nodes_supplies(np.arange(n + k + 1), supplies)
    status = flow.solve()
    if status != flow.OPTIMAL:  # pragma: no cover - the network always has a feasible flow
        raise SolverError(f"min-cost flow of the capacitated assignment failed (status {status})")
    used = flow.flows(arcs).reshape(n, k)
    return np.argmax(used, axis=1).astype(np.int64)


def _assignment_by_lp(cost: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    from scipy.optimize import linprog

    n, k = cost.shape
    one_each = sp.csr_array((np.ones(n * k), (np.repeat(np.arange(n), k), np.arange(n * k))), shape=(n, n * k))
    per_worker = sp.csr_array((np.ones(n * k), (np.tile(np.arange(k), n), np.arange(n * k))), shape=(k, n * k))
    shifted = cost - cost.min(axis=1, keepdims=True)
    result = linprog(shifted.ravel(), A_ub=per_worker, b_ub=capacity, A_eq=one_each, b_eq=np.ones(n), bounds=(0, 1),
                     method="highs-ds")
    if result.status != 0:  # pragma: no cover - the transportation LP is always feasible and bounded
        raise SolverError(f"the transportation LP of the capacitated assignment failed: {result.message}")
    x = result.x.reshape(n, k)
    placement = np.argmax(x, axis=1).astype(np.int64)
    if np.max(np.abs(x - np.round(x))) > 1e-6:  # pragma: no cover - a simplex optimum is a vertex
        from scipy.optimize import linear_sum_assignment

        columns = np.repeat(np.arange(k), capacity)
        rows, cols = linear_sum_assignment(cost[:, columns])
        placement[rows] = columns[cols]
    return placement


# ------------------------------------------------------------------------------------- placement state
def first_free_layer(problem: Any) -> int:
    """0 when the input placement is free, else 1 (a fixed or replicated input is not placed)."""
    return 0 if problem.input_mode == "free" else 1


class PlacementState:
    """A complete placement of a :class:`~repurpose_opt.PartitionProblem` with the counters that make exact
    volume changes of single-unit moves cheap.

    ``counts[l][j, k]`` is the number of consumers of unit j of layer l-1 placed on worker k (l = 1..L), so
    layer l's volume (SPEC §2) is ``s_{l-1}·#{(j, k): counts[l][j, k] > 0, k ≠ π_{l-1}(j)}`` (nothing when
    the input is replicated and l = 1), and moving unit i of layer l from a to b changes:

    - as a consumer: every input j of i that leaves a without a consumer stops being sent to a, and every
      input j of i that b did not need yet starts being sent to b (unless produced there);
    - as a producer (l < L): i's activation now has to be sent to a if a holds a consumer, and no longer to
      b if b holds one;
    - on the last layer with ``output="gather"``: ``s_L·([b ≠ 0] − [a ≠ 0])``.

    Everything is exact; :meth:`volume` recounts from scratch and equals the simulator's ``comm_scalars``.
    Per-worker units, FLOPs and parameters are tracked for the balance and capacity checks.

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> net = ro.Network([ro.Dense(np.eye(4)), ro.ReLU(), ro.Dense(np.ones((2, 4)))], input_shape=(4,))
    >>> problem = ro.PartitionProblem(net, ro.Cluster(k=2))
    >>> state = PlacementState(problem, [None, [0, 0, 1, 1], [0, 1]])
    >>> state.volume(), state.move_delta(2, 1, 0)   # moving the second output to the sink saves 2 + 1
    (5.0, -3.0)
    """

    def __init__(self, problem: Any, assignment: Any) -> None:
        network, cluster = problem.network, problem.cluster
        self.problem = problem
        self.k = int(cluster.k)
        self.L = int(network.n_layers)
        self.n = tuple(int(c) for c in network.unit_counts)
        self.replicated = problem.input_mode == "replicated"
        self.gather = problem.output == "gather" and self.k > 1
        self.s_last = float(network.message_sizes[-1])
        self.first = first_free_layer(problem)
        self.capacity = [None if c is None else np.asarray(c, dtype=np.int64) for c in problem.capacities]
        structure = network.structure
        self.M: list[Any] = [None]
        self.M_csc: list[Any] = [None]
        self.MT: list[Any] = [None]
        self.s: list[float] = [0.0]
        self.flops_per_unit: list[np.ndarray | None] = [None]
        self.params_per_unit: list[np.ndarray | None] = [None]
        for layer in structure:
            M = sp.csr_array(layer.connectivity, dtype=np.float64)
            M.sort_indices()
            self.M.append(M)
            self.M_csc.append(M.tocsc())
            MT = sp.csr_array(M.T)
            MT.sort_indices()
            self.MT.append(MT)
            self.s.append(float(layer.in_message_size))
            self.flops_per_unit.append(np.asarray(layer.flops_per_unit, dtype=np.float64))
            self.params_per_unit.append(np.asarray(layer.params_per_unit, dtype=np.float64))
        self.flops_capacity = None if cluster.flops_capacity is None else np.asarray(cluster.flops_capacity, dtype=np.float64)
        self.param_capacity = None if cluster.param_capacity is None else np.asarray(cluster.param_capacity, dtype=np.float64)
        self.place: list[np.ndarray] = []
        for l in range(self.L + 1):
            if l == 0 and self.replicated:
                self.place.append(np.full(self.n[0], -1, dtype=np.int64))
            else:
                self.place.append(np.array(assignment[l], dtype=np.int64, copy=True))
        self.counts: list[np.ndarray | None] = [None]
        for l in range(1, self.L + 1):
            self.counts.append(self._count(l))
        self.load = [np.bincount(p, minlength=self.k) if (l > 0 or not self.replicated) else None for l, p in enumerate(self.place)]
        self.flops = np.zeros(self.k)
        self.params = np.zeros(self.k)
        for l in range(1, self.L + 1):
            self.flops += np.bincount(self.place[l], weights=self.flops_per_unit[l], minlength=self.k)
            self.params += np.bincount(self.place[l], weights=self.params_per_unit[l], minlength=self.k)

    # ----------------------------------------------------------------------------------------- counting
    def _count(self, l: int) -> np.ndarray:
        M = self.M[l]
        counts = np.zeros((self.n[l - 1], self.k), dtype=np.int64)
        readers = np.repeat(self.place[l], np.diff(M.indptr))
        np.add.at(counts, (M.indices, readers), 1)
        return counts

    def inputs(self, l: int, i: int) -> np.ndarray:
        """The units of layer l-1 that unit i of layer l reads."""
        M = self.M[l]
        return M.indices[M.indptr[i] : M.indptr[i + 1]]

    def has_cost(self, l: int) -> bool:
        """Whether layer l's inputs can cost anything (not for layer 1 of a replicated input)."""
        return not (l == 1 and self.replicated)

    def layer_volume(self, l: int) -> float:
        """``V_l`` in scalars (without the gather)."""
        if not self.has_cost(l):
            return 0.0
        needed = self.counts[l] > 0
        needed[np.arange(self.n[l - 1]), self.place[l - 1]] = False
        return self.s[l] * float(np.count_nonzero(needed))

    def gather_volume(self) -> float:
        return self.s_last * float(np.count_nonzero(self.place[self.L] != 0)) if self.gather else 0.0

    def volume(self) -> float:
        """Total volume (SPEC §2), recounted from the counters."""
        return sum(self.layer_volume(l) for l in range(1, self.L + 1)) + self.gather_volume()

    def assignment(self) -> tuple[np.ndarray, ...]:
        return tuple(p.copy() for p in self.place)

    # -------------------------------------------------------------------------------------------- moves
    def move_delta(self, l: int, i: int, b: int) -> float:
        """Exact volume change of moving unit i of layer l to worker b."""
        a = int(self.place[l][i])
        if a == b:
            return 0.0
        delta = 0.0
        if l >= 1 and self.has_cost(l):
            J = self.inputs(l, i)
            if J.size:
                src = self.place[l - 1][J]
                counts = self.counts[l]
                gained = np.count_nonzero((counts[J, b] == 0) & (src != b))
                lost = np.count_nonzero((counts[J, a] == 1) & (src != a))
                delta += self.s[l] * float(gained - lost)
        if l < self.L:
            c = self.counts[l + 1][i]
            delta += self.s[l + 1] * float(int(c[a] > 0) - int(c[b] > 0))
        if l == self.L and self.gather:
            delta += self.s_last * float(int(b != 0) - int(a != 0))
        return delta

    def move(self, l: int, i: int, b: int) -> None:
        """Put unit i of layer l on worker b, updating every counter."""
        a = int(self.place[l][i])
        if a == b:
            return
        if l >= 1:
            J = self.inputs(l, i)
            self.counts[l][J, a] -= 1
            self.counts[l][J, b] += 1
            f, p = self.flops_per_unit[l][i], self.params_per_unit[l][i]
            self.flops[a] -= f
            self.flops[b] += f
            self.params[a] -= p
            self.params[b] += p
        self.place[l][i] = b
        self.load[l][a] -= 1
        self.load[l][b] += 1

    def set_layer(self, l: int, placement: np.ndarray) -> None:
        """Replace the whole placement of layer l (recounting its counters in one vectorised step)."""
        placement = np.array(placement, dtype=np.int64, copy=True)
        if l >= 1:
            old = self.place[l]
            self.flops += np.bincount(placement, weights=self.flops_per_unit[l], minlength=self.k) - np.bincount(old, weights=self.flops_per_unit[l], minlength=self.k)
            self.params += np.bincount(placement, weights=self.params_per_unit[l], minlength=self.k) - np.bincount(old, weights=self.params_per_unit[l], minlength=self.k)
        self.place[l] = placement
        self.load[l] = np.bincount(placement, minlength=self.k)
        if l >= 1:
            self.counts[l] = self._count(l)

    def fits(self, l: int, moves: list[tuple[int, int]], slack: int = 0) -> bool:
        """Whether moving the units ``[(i, b), ...]`` of layer l keeps the unit (plus ``slack``), FLOPs and
        parameter limits."""
        load = self.load[l].copy()
        flops, params = self.flops.copy(), self.params.copy()
        for i, b in moves:
            a = int(self.place[l][i])
            load[a] -= 1
            load[b] += 1
            if l >= 1:
                flops[a] -= self.flops_per_unit[l][i]
                flops[b] += self.flops_per_unit[l][i]
                params[a] -= self.params_per_unit[l][i]
                params[b] += self.params_per_unit[l][i]
        return self._within(l, load, flops, params, slack)

    def _within(self, l: int, load: np.ndarray, flops: np.ndarray, params: np.ndarray, slack: int = 0) -> bool:
        if np.any(load > self.capacity[l] + slack):
            return False
        # the verifier's own relative tolerance on the extra capacities
        if self.flops_capacity is not None and np.any(flops > self.flops_capacity * (1 + 1e-12)):
            return False
        return not (self.param_capacity is not None and np.any(params > self.param_capacity * (1 + 1e-12)))

    def feasible(self) -> bool:
        """Every layer within its balance capacity and the FLOPs/parameter limits met."""
        for l in range(self.first, self.L + 1):
            if np.any(self.load[l] > self.capacity[l]):
                return False
        return self._within(self.first, self.load[self.first], self.flops, self.params)

    # ------------------------------------------------------------------------------- vectorised deltas
    def producer_delta(self, l: int) -> np.ndarray:
        """(n_l, K): the change of layer l+1's volume (and the gather) if unit i of layer l sat on worker b,
        everything else fixed, relative to where it sits now. Exact, and linear in the placement of layer l.
        """
        n = self.n[l]
        delta = np.zeros((n, self.k))
        rows = np.arange(n)
        here = self.place[l]
        if l < self.L:
            present = (self.counts[l + 1] > 0).astype(np.float64)
            delta += self.s[l + 1] * (present[rows, here][:, None] - present)
        if l == self.L and self.gather:
            off = (np.arange(self.k) != 0).astype(np.float64)
            delta += self.s_last * (off[None, :] - off[here][:, None])
        return delta

    def consumer_terms(self, l: int, ignore_source: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(M_l·E, M_l·R)``, both (n_l, K): E[j, k] = j is not needed on k yet and not produced there,
        R[j, k] = exactly one consumer of j sits on k and j is not produced there. Moving unit i from a to b
        changes layer l's volume by ``s_{l-1}·((M·E)[i, b] − (M·R)[i, a])`` (exact for one move).

        With ``ignore_source`` the producers are left out ("not produced there" dropped): the terms then
        price the km1 of the consumer-only nets, i.e. the volume if every producer could sit with one of
        its consumers (used when layer l-1 is re-placed after layer l anyway).
        """
        if not self.has_cost(l) and not ignore_source:
            z = np.zeros((self.n[l], self.k))
            return z, z.copy()
        E, R = self.input_flags(l, ignore_source=ignore_source)
        M = self.M[l]
        return M @ E, M @ R

    def input_flags(self, l: int, rows: np.ndarray | None = None, ignore_source: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """E and R of :meth:`consumer_terms` (for the given input rows only, when ``rows`` is given)."""
        counts = self.counts[l] if rows is None else self.counts[l][rows]
        if ignore_source:
            return (counts == 0).astype(np.float64), (counts == 1).astype(np.float64)
        src = self.place[l - 1] if rows is None else self.place[l - 1][rows]
        foreign = src[:, None] != np.arange(self.k)[None, :]
        return ((counts == 0) & foreign).astype(np.float64), ((counts == 1) & foreign).astype(np.float64)

    def delta_matrix(self, l: int) -> np.ndarray:
        """(n_l, K): exact volume change of moving each unit of layer l alone to each worker (0 where it is)."""
        delta = self.producer_delta(l)
        rows = np.arange(self.n[l])
        if l >= 1 and self.has_cost(l):
            ME, MR = self.consumer_terms(l)
            change = self.s[l] * (ME - MR[rows, self.place[l]][:, None])
            change[rows, self.place[l]] = 0.0
            delta += change
        return delta
