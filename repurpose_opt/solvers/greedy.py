"""``greedy``: greedy construction plus Fiduccia–Mattheyses refinement with moves and swaps, over all layers.

PartitionProblem
----------------
1. **Construction** (km1-aware growing). Layers are placed in the order the hypergraph peer uses: the first
   layer whose inputs cost something is grown first on *co-consumption* (a unit goes to the worker that
   already needs most of its inputs), the layer before it is then placed exactly given its consumers
   (capacitated assignment, :func:`~.placement.capacitated_assignment`), and every later layer is grown
   forward: unit by unit (seeded random order), each goes to the worker with room where the fewest of its
   inputs are neither produced nor already received, ties to the least loaded worker. FLOPs/parameter
   capacities are repaired afterwards by load-reducing moves and swaps.
2. **Refinement** (K-way FM with exact gains). One pass per layer: every unit may move once (then it is
   locked); each step takes the best single move into a worker with room, or the best swap of two units
   between two full workers, *even when it makes the volume worse*, and at the end of the pass the moves
   after the best prefix are undone (so a pass can climb out of a local minimum but never returns worse).
   Gains are exact and kept up to date incrementally: moving unit i of layer l changes the consumer terms
   ``M_l·E`` / ``M_l·R`` of :class:`~.placement.PlacementState` only through i's inputs, so each move
   updates two columns with one sparse column slice (the vectorised equivalent of gain buckets), while the
   producer and gather terms are constant during the pass because the neighbouring layers are fixed. A
   layer whose cost is linear in its placement (a free input given layer 1; layer 1 of a replicated input)
   is instead re-placed exactly by the capacitated assignment. A swap's value is estimated as the sum of
   the two single-move gains and then applied exactly, move by move. Moves keep the balance at every step
   (a variant that let a worker go one unit over capacity between balanced prefixes was measured worse).
   The layer right after such a linear layer is coupled to it: its units are first moved by an FM pass
   that prices the inputs' producers as if they followed their consumers (the consumer-only km1 that the
   hypergraph peer partitions), the linear layer is then re-placed exactly, and the pair is kept only if
   the true volume dropped; an ordinary pass follows. Sweeps over all layers repeat until a sweep gains
   at most ``min_gain`` (default 0.1 %) of the volume or the time limit ends; the whole thing restarts
   from new seeded constructions (option ``restarts``) while time allows, keeping the best.
3. **Latency objective**: the same construction, then hill climbing in which candidate moves and swaps,
   ranked by their volume gain, are *accepted only if the exact α-β latency* of the affected layers drops.

The status is always FEASIBLE (never OPTIMAL; there is no bound). Deterministic for a given seed.

Incumbents: the first feasible construction and every sweep that improves the best placement are offered
(:func:`~.base.offer_incumbent`), so Ctrl-C returns the best placement so far. The time limit is checked in
every FM step, between sweeps and between restarts (the first construction always completes: it is the
incumbent the limit returns).

PruningProblem: delegated to :func:`repurpose_opt.pruning.solve_pruning_greedy` (group OMP + backward
elimination). RestructureProblem: this engine places the importance-sparsified network, then the shared
ℓ0 adjustment runs in cascade (SPEC §4, :func:`~.restructure_engine.restructure_with_partitioner`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..errors import InvalidParameterError
from ..solution import Status
from .base import Backend, BackendResult, Option, integer, number, offer_incumbent
from .placement import PlacementState, capacitated_assignment, fixed_input

__all__ = ["GreedyBackend", "construct", "refine_volume", "refine_latency", "layer_latency"]

_EPS = 1e-9


# ------------------------------------------------------------------------------------------ construction
def _grow(problem: Any, l: int, place: list[np.ndarray | None], rng: np.random.Generator) -> np.ndarray:
    """Place layer l unit by unit: fewest inputs neither produced on nor already sent to the worker."""
    network, cluster = problem.network, problem.cluster
    k = cluster.k
    layer = network.structure[l - 1]
    M = layer.connectivity
    indptr, indices = M.indptr, M.indices
    n = layer.n_units
    capacity = problem.capacities[l]
    src = place[l - 1]  # None: not placed yet (grown on co-consumption) or replicated
    held = np.zeros((layer.n_inputs, k), dtype=bool)
    if src is not None and not np.all(src < 0):
        held[np.arange(layer.n_inputs), src] = True
    elif src is not None:  # a replicated input is held everywhere: nothing to gain, nothing to pay
        held[:] = True
    gather = np.zeros(k)
    if l == network.n_layers and problem.output == "gather" and k > 1:
        gather = float(network.message_sizes[-1]) * (np.arange(k) != 0)
    load = np.zeros(k, dtype=np.int64)
    placement = np.empty(n, dtype=np.int64)
    for i in rng.permutation(n).tolist():
        J = indices[indptr[i] : indptr[i + 1]]
        cost = J.size - held[J].sum(axis=0) + gather
        room = load < capacity
        cost = np.where(room, cost, np.inf)
        # ties: the least loaded worker (relative to its capacity), then the lowest index
        score = cost * (4 * n + 4) + load / capacity
        worker = int(np.argmin(score))
        placement[i] = worker
        load[worker] += 1
        held[J, worker] = True
    return placement


def _pull_cost(problem: Any, l: int, place: list[np.ndarray | None]) -> np.ndarray:
    """(n_l, K) exact cost of layer l's units given the placed layer l+1 (and the gather), inputs ignored."""
    network = problem.network
    k = problem.cluster.k
    n = network.unit_counts[l]
    cost = np.zeros((n, k))
    if l < network.n_layers and place[l + 1] is not None:
        nxt = network.structure[l]
        M = nxt.connectivity
        needed = np.zeros((n, k), dtype=bool)
        needed[M.indices, np.repeat(place[l + 1], np.diff(M.indptr))] = True
        cost += float(nxt.in_message_size) * (needed.sum(axis=1, keepdims=True) - needed)
    if l == network.n_layers and problem.output == "gather" and k > 1:
        cost += float(network.message_sizes[-1]) * (np.arange(k) != 0)[None, :]
    return cost


def construct(problem: Any, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """A balanced placement of every layer by km1-aware growing (module docstring, step 1).

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> W = np.kron(np.eye(2), np.ones((2, 2)))     # two independent blocks
    >>> net = ro.Network([ro.Dense(W), ro.ReLU(), ro.Dense(W)], input_shape=(4,))
    >>> problem = ro.PartitionProblem(net, ro.Cluster(k=2), input_placement="free", output="distributed")
    >>> a = construct(problem, np.random.default_rng(0))
    >>> ro.simulate(net, list(a), problem.cluster, output="distributed").comm_scalars
    0.0
    """
    network = problem.network
    L = network.n_layers
    place: list[np.ndarray | None] = [None] * (L + 1)
    fixed = fixed_input(problem)
    mode = problem.input_mode
    if mode == "fixed":
        place[0] = fixed
        for l in range(1, L + 1):
            place[l] = _grow(problem, l, place, rng)
        return tuple(place)
    lead = 0 if mode == "free" else 1  # the first layer the solver places
    if mode == "replicated":
        place[0] = fixed
    if lead + 1 <= L:
        place[lead + 1] = _grow(problem, lead + 1, place, rng)  # inputs (layer `lead`) not placed yet
        place[lead] = capacitated_assignment(_pull_cost(problem, lead, place), problem.capacities[lead])
        for l in range(lead + 2, L + 1):
            place[l] = _grow(problem, l, place, rng)
    else:  # one layer after a replicated input: only the gather costs
        place[lead] = capacitated_assignment(_pull_cost(problem, lead, place), problem.capacities[lead])
    return tuple(place)


def repair_capacities(state: PlacementState, deadline: float | None = None) -> bool:
    """Move or swap units until the FLOPs/parameter limits hold (each step lowers the total overload).

    Returns whether the placement now meets every limit.
    """
    if state.flops_capacity is None and state.param_capacity is None:
        return True

    def overload(flops: np.ndarray, params: np.ndarray) -> float:
        total = 0.0
        if state.flops_capacity is not None:
            total += float(np.sum(np.maximum(flops - state.flops_capacity * (1 + 1e-12), 0.0) / np.maximum(state.flops_capacity, 1e-300)))
        if state.param_capacity is not None:
            total += float(np.sum(np.maximum(params - state.param_capacity * (1 + 1e-12), 0.0) / np.maximum(state.param_capacity, 1e-300)))
        return total

    k = state.k
    for _ in range(10 * sum(state.n[1:]) + 10):
        current = overload(state.flops, state.params)
        if current <= 0.0:
            return True
        if deadline is not None and time.perf_counter() > deadline:
            return False
        best = None  # (overload, volume delta, layer, moves)
        for l in range(1, state.L + 1):
            f, p = state.flops_per_unit[l], state.params_per_unit[l]
            place = state.place[l]
            for a in range(k):
                for i in np.flatnonzero(place == a).tolist():
                    for b in range(k):
                        if b == a:
                            continue
                        options = []
                        if state.load[l][b] < state.capacity[l][b]:
                            options.append([(i, b)])
                        partners = np.flatnonzero(place == b)
                        if partners.size:  # the lightest unit of b comes back
                            j = int(partners[np.argmin(f[partners] + p[partners])])
                            options.append([(i, b), (j, a)])
                        for moves in options:
                            flops, params = state.flops.copy(), state.params.copy()
                            for u, w in moves:
                                flops[place[u]] -= f[u]
                                flops[w] += f[u]
                                params[place[u]] -= p[u]
                                params[w] += p[u]
                            value = overload(flops, params)
                            if value < current - 1e-15 and (best is None or value < best[0]):
                                best = (value, l, moves)
        if best is None:
            return False
        _, l, moves = best
        for u, w in moves:
            state.move(l, u, w)
    return overload(state.flops, state.params) <= 0.0


# ------------------------------------------------------------------------------------------- refinement
def _assign_linear_layer(state: PlacementState, l: int) -> float:
    """Re-place a layer whose cost is linear in its placement exactly; returns the volume change."""
    delta = state.producer_delta(l)
    placement = capacitated_assignment(delta, state.capacity[l])
    change = float(delta[np.arange(state.n[l]), placement].sum())
    if change >= -_EPS:
        return 0.0
    for i in np.flatnonzero(placement != state.place[l]).tolist():
        state.move(l, i, int(placement[i]))
    return change


def _fm_pass(state: PlacementState, l: int, deadline: float | None, patience: float, slack: int = 0,
             follow: bool = False) -> float:
    """One FM pass over layer l (module docstring, step 2); returns the (non-positive) volume change.

    With ``follow`` the inputs' producers are priced as if they followed their consumers (consumer-only
    km1, :meth:`~.placement.PlacementState.consumer_terms`); the caller re-places layer l-1 afterwards, and
    the returned change is then that of the relaxed objective.

    ``D[p, b]`` is the exact change of moving the unit at position p alone to worker b (``inf`` where it
    sits and once it is locked). The units are renumbered so that each worker's units are contiguous
    (``order``): the best unit of worker a for worker b is then one ``minimum.reduceat`` over D, which
    :func:`apply` keeps exact as moves change the counters of their inputs.
    """
    n, k = state.n[l], state.k
    if n < 2 or k < 2:
        return 0.0
    s = state.s[l]
    place0 = state.place[l].copy()  # unlocked units never move, so their current worker is this
    order = np.argsort(place0, kind="stable")  # position -> unit
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)  # unit -> position
    home = place0[order]  # worker of each position
    present = np.unique(home)
    starts = np.searchsorted(home, present)
    ends = np.append(starts[1:], n)
    positions = np.arange(n)
    static = state.producer_delta(l)[order]
    consumer = state.has_cost(l) or follow
    extra = state.flops_capacity is not None or state.param_capacity is not None
    if consumer:
        ME, MR = state.consumer_terms(l, ignore_source=follow)
        ME, MR = ME[order], MR[order]
        MT = state.MT[l]
        counts, src_all = state.counts[l], state.place[l - 1]
        D = np.ascontiguousarray(static + s * (ME - MR[positions, home][:, None]))
        del ME, MR
    else:
        D = np.ascontiguousarray(static)
    D[positions, home] = np.inf
    D_flat = D.reshape(-1)
    log: list[tuple[int, int, int]] = []
    total = best = 0.0
    best_len = 0
    stall = 0
    limit = max(30, int(patience * n))

    def lock(unit: int) -> None:
        D[rank[unit]] = np.inf

    def apply(i: int, b: int) -> None:
        """Move unit i to b and keep D exact: only columns a and b of M·E and M·R change (through i's
        inputs), and M·R[r, home] enters every column of row r, so rows homed on a or b shift as a whole."""
        a = int(state.place[l][i])
        if consumer:
            J = state.inputs(l, i)
            if J.size:
                c_a, c_b = counts[J, a], counts[J, b]
                if follow:
                    off_a = off_b = True
                else:
                    src = src_all[J]
                    off_a, off_b = src != a, src != b
                a1, a2, b0, b1 = (c_a == 1) & off_a, (c_a == 2) & off_a, (c_b == 0) & off_b, (c_b == 1) & off_b
                touched = np.flatnonzero(a1 | a2 | b0 | b1)
                if touched.size:
                    Jt = J[touched]
                    lo, hi = MT.indptr[Jt], MT.indptr[Jt + 1]
                    lengths = hi - lo
                    at = np.repeat(hi - np.cumsum(lengths), lengths) + np.arange(int(lengths.sum()))
                    readers = rank[MT.indices[at]]  # positions of the consumers of every touched input
                    a1, a2, b0, b1 = (np.repeat(f[touched], lengths) for f in (a1, a2, b0, b1))
                    # M·E: a gains "not needed" where i was the last consumer; b loses it where i is the first
                    np.add.at(D_flat, readers * k + a, s * a1)
                    np.add.at(D_flat, readers * k + b, -s * b0)
                    # M·R: "exactly one consumer" appears on a at 2 -> 1 and vanishes at 1 -> 0; on b it
                    # appears at 0 -> 1 and vanishes at 1 -> 2; it counts (negatively) in rows homed there
                    for worker, change in ((a, a2.astype(np.float64) - a1), (b, b0.astype(np.float64) - b1)):
                        mine = (home[readers] == worker) & (change != 0)
                        if mine.any():
                            np.add.at(D, readers[mine], -s * change[mine][:, None])
        state.move(l, i, b)
        log.append((i, a, b))

    while True:
        if deadline is not None and time.perf_counter() > deadline:
            break
        room = state.load[l] < state.capacity[l] + slack
        single_value, single = np.inf, None
        if room.any():
            column_best = D.min(axis=0)
            column_best[~room] = np.inf
            b = int(np.argmin(column_best))
            if np.isfinite(column_best[b]):
                single_value, single = float(column_best[b]), (int(order[np.argmin(D[:, b])]), b)
        swap_value, swap = np.inf, None
        if present.size > 1:
            blocks = np.minimum.reduceat(D, starts, axis=0)[:, present]  # best unit of present[p] to present[q]
            pair = blocks + blocks.T
            np.fill_diagonal(pair, np.inf)
            flat = int(np.argmin(pair))
            if np.isfinite(pair.flat[flat]):
                swap_value, swap = float(pair.flat[flat]), divmod(flat, present.size)
        if single is None and swap is None:
            break
        if single is not None and single_value <= swap_value:
            i, b = single
            if extra and not state.fits(l, [(i, b)], slack):
                lock(i)
                continue
            total += float(D[rank[i], b])  # exact (relaxed with `follow`) for an unlocked unit
            lock(i)
            apply(i, b)
        else:
            p, q = swap
            a, b = int(present[p]), int(present[q])
            i = int(order[starts[p] + np.argmin(D[starts[p] : ends[p], b])])
            j = int(order[starts[q] + np.argmin(D[starts[q] : ends[q], a])])
            if extra and not state.fits(l, [(i, b), (j, a)], slack):
                lock(i)
                lock(j)
                continue
            total += float(D[rank[i], b])
            lock(i)
            apply(i, b)
            total += float(D[rank[j], a])  # j's row already reflects i's move
            lock(j)
            apply(j, a)
        if total < best - _EPS and np.all(state.load[l] <= state.capacity[l]):  # only balanced prefixes count
            best, best_len, stall = total, len(log), 0
        else:
            stall += 1
            if stall > limit:
                break
    for i, a, _ in reversed(log[best_len:]):
        state.move(l, i, a)
    return best


def refine_volume(state: PlacementState, deadline: float | None, *, patience: float = 0.15, max_sweeps: int = 100,
                  min_gain: float = 0.0) -> dict[str, Any]:
    """FM sweeps over every placed layer until one gains at most ``min_gain`` of the volume (relative), or
    the deadline; returns stats."""
    sweeps, gained = 0, 0.0
    extra = state.flops_capacity is not None or state.param_capacity is not None
    for _ in range(max_sweeps):
        if deadline is not None and time.perf_counter() > deadline:
            break
        sweep_gain = 0.0
        for l in range(state.first, state.L + 1):
            if deadline is not None and time.perf_counter() > deadline:
                break
            if _linear(state, l, extra):
                sweep_gain += _assign_linear_layer(state, l)
            elif l - 1 >= state.first and _linear(state, l - 1, extra):
                # Layer l-1 only matters through layer l: move layer l as if its producers followed, then
                # re-place them exactly; keep the result only if the true volume dropped.
                before, saved = state.volume(), (state.place[l - 1].copy(), state.place[l].copy())
                _fm_pass(state, l, deadline, patience, follow=True)
                _assign_linear_layer(state, l - 1)
                after = state.volume()
                if after < before - _EPS:
                    sweep_gain += after - before
                else:
                    state.set_layer(l - 1, saved[0])
                    state.set_layer(l, saved[1])
                sweep_gain += _fm_pass(state, l, deadline, patience)
            else:
                sweep_gain += _fm_pass(state, l, deadline, patience)
        sweeps += 1
        gained += sweep_gain
        if sweep_gain < -_EPS and state.feasible():
            volume = state.volume()
            offer_incumbent(state.assignment(), objective=volume, message=f"greedy: FM sweep {sweeps}")
        if sweep_gain > -_EPS or -sweep_gain <= min_gain * state.volume():
            break
    return {"sweeps": sweeps, "gain": gained}


def _linear(state: PlacementState, l: int, extra: bool) -> bool:
    """Whether layer l's cost is linear in its placement and unconstrained beyond balance (so the exact
    assignment re-places it): a free input, or layer 1 of a replicated input without FLOPs/parameter limits."""
    return l == 0 or (not state.has_cost(l) and not extra)


# ---------------------------------------------------------------------------------------------- latency
def layer_latency(state: PlacementState, l: int) -> float:
    """The α-β time of layer l (compute + the slowest link), or of the gather step for ``l = L + 1``."""
    cluster = state.problem.cluster
    k = state.k
    if l == state.L + 1:
        if not state.gather:
            return 0.0
        units = np.bincount(state.place[state.L], minlength=k).astype(np.float64)
        units[0] = 0.0
        sending = np.flatnonzero(units > 0)
        if sending.size == 0:
            return 0.0
        bytes_ = units[sending] * state.s_last * cluster.dtype_bytes
        return float(np.max(cluster.latency[sending, 0] + bytes_ / cluster.bandwidth[sending, 0]))
    flops = np.bincount(state.place[l], weights=state.flops_per_unit[l], minlength=k)
    compute = float(np.max(flops / (cluster.flop_rate * cluster.speed)))
    if not state.has_cost(l):
        return compute
    src = state.place[l - 1]
    sent = state.counts[l] > 0
    sent[np.arange(sent.shape[0]), src] = False
    j, dst = np.nonzero(sent)
    if j.size == 0:
        return compute
    link_units = np.bincount(src[j] * k + dst, minlength=k * k).reshape(k, k)
    used = link_units > 0
    bytes_ = link_units[used] * state.s[l] * cluster.dtype_bytes
    return compute + float(np.max(cluster.latency[used] + bytes_ / cluster.bandwidth[used]))


def _affected(state: PlacementState, l: int) -> list[int]:
    layers = [l] if l >= 1 else []
    if l < state.L:
        layers.append(l + 1)
    if l == state.L:
        layers.append(state.L + 1)
    return layers


def refine_latency(state: PlacementState, deadline: float | None, *, candidates: int = 512, max_rounds: int = 50) -> dict[str, Any]:
    """Hill climbing on the exact latency: moves and swaps ranked by volume gain, kept only if faster."""
    k = state.k
    accepted = 0
    rounds = 0
    for _ in range(max_rounds):
        rounds += 1
        improved = False
        for l in range(state.first, state.L + 1):
            if deadline is not None and time.perf_counter() > deadline:
                return {"rounds": rounds, "accepted": accepted}
            D = state.delta_matrix(l)
            place = state.place[l]
            n = state.n[l]
            rows = np.arange(n)
            D[rows, place] = np.inf
            proposals: list[tuple[float, list[tuple[int, int]]]] = []
            room = state.load[l] < state.capacity[l]
            for i, b in zip(*np.nonzero(np.isfinite(D) & room[None, :]), strict=True):
                proposals.append((float(D[i, b]), [(int(i), int(b))]))
            # swaps: each unit with the best partner of every other worker (by the summed volume gains)
            side = max(8, int(np.sqrt(candidates)))
            for a in range(k):
                for b in range(a + 1, k):
                    # the `side` most promising units of each worker for this exchange
                    on_a, on_b = np.flatnonzero(place == a), np.flatnonzero(place == b)
                    if on_a.size == 0 or on_b.size == 0:
                        continue
                    on_a = on_a[np.argsort(D[on_a, b], kind="stable")[:side]]
                    on_b = on_b[np.argsort(D[on_b, a], kind="stable")[:side]]
                    pair = D[on_a, b][:, None] + D[on_b, a][None, :]
                    take = min(pair.size, candidates)
                    for flat in np.argsort(pair, axis=None, kind="stable")[:take].tolist():
                        x, y = divmod(flat, on_b.size)
                        proposals.append((float(pair.flat[flat]), [(int(on_a[x]), b), (int(on_b[y]), a)]))
            proposals.sort(key=lambda item: item[0])
            for _, moves in proposals[: candidates * max(k, 1)]:
                if deadline is not None and time.perf_counter() > deadline:
                    return {"rounds": rounds, "accepted": accepted}
                if any(state.place[l][i] == b for i, b in moves) or not state.fits(l, moves):
                    continue
                layers = _affected(state, l)
                before = sum(layer_latency(state, m) for m in layers)
                undo = [(i, int(state.place[l][i])) for i, _ in moves]
                for i, b in moves:
                    state.move(l, i, b)
                after = sum(layer_latency(state, m) for m in layers)
                if after < before * (1 - 1e-12) - 1e-18:
                    accepted += 1
                    improved = True
                else:
                    for i, a in reversed(undo):
                        state.move(l, i, a)
        if not improved:
            break
        if state.feasible():
            latency = sum(layer_latency(state, m) for m in range(1, state.L + 2))
            offer_incumbent(state.assignment(), objective=latency, message=f"greedy: latency hill climbing, round {rounds}")
    return {"rounds": rounds, "accepted": accepted}


# ----------------------------------------------------------------------------------------------- backend
class GreedyBackend(Backend):
    """Greedy km1-aware construction plus FM refinement (moves and swaps), restarted while time allows."""

    name = "greedy"
    description = "greedy construction + Fiduccia-Mattheyses refinement (moves and swaps, exact gains) over all layers"
    problem_types = ("PartitionProblem", "PruningProblem", "RestructureProblem")
    options = {
        "restarts": Option("auto", "constructions tried (each refined), best kept; 'auto': min(8, max(1, 4000 // units))", check=integer(minimum=1, auto=True)),
        "patience": Option(0.15, "an FM pass stops after this fraction of the layer's units in moves without a new best", check=number(minimum=0.0)),
        "max_sweeps": Option(100, "FM sweeps over all layers per restart (a sweep that gains nothing stops earlier)", check=integer(minimum=1)),
        "min_gain": Option(1e-3, "stop the sweeps once one gains at most this fraction of the volume", check=number(minimum=0.0)),
        "keep": Option(0.1, "RestructureProblem: fraction of most important connections kept for placing", check=number(strictly_positive=True, maximum=1.0)),
    }

    def solve(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        kind = type(problem).__name__
        if kind == "PruningProblem":
            from ..pruning import solve_pruning_greedy

            return solve_pruning_greedy(problem, time_limit=time_limit)
        if kind == "RestructureProblem":
            from .restructure_engine import restructure_with_partitioner

            partition_options = {key: options[key] for key in ("restarts", "patience", "max_sweeps", "min_gain")}
            return restructure_with_partitioner(problem, "greedy", keep=float(options["keep"]), time_limit=time_limit,
                                                seed=seed, options=partition_options)
        return self._partition(problem, time_limit, seed, options)

    def _partition(self, problem: Any, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        started = time.perf_counter()
        deadline = None if time_limit is None else started + float(time_limit)
        restarts = options["restarts"]
        if restarts == "auto":
            restarts = min(8, max(1, 4000 // max(problem.size(), 1)))
        if not isinstance(restarts, (int, np.integer)) or isinstance(restarts, bool) or restarts < 1:
            raise InvalidParameterError(f"option `restarts` must be 'auto' or an integer >= 1, got {restarts!r}")
        patience = float(options["patience"])
        if not patience >= 0:
            raise InvalidParameterError(f"option `patience` must be >= 0, got {options['patience']!r}")
        min_gain = float(options["min_gain"])
        if not min_gain >= 0:
            raise InvalidParameterError(f"option `min_gain` must be >= 0, got {options['min_gain']!r}")
        max_sweeps = int(options["max_sweeps"])
        if max_sweeps < 1:
            raise InvalidParameterError(f"option `max_sweeps` must be >= 1, got {max_sweeps}")
        rng = np.random.default_rng(seed)
        latency = problem.objective == "latency"
        best_value, best_assignment, history = np.inf, None, []
        infeasible = 0
        for attempt in range(int(restarts)):
            if attempt and deadline is not None:
                per_restart = (time.perf_counter() - started) / attempt
                if time.perf_counter() + per_restart > deadline:
                    break
            round_started = time.perf_counter()
            state = PlacementState(problem, construct(problem, rng))
            constructed = state.volume()
            if not repair_capacities(state, deadline):
                infeasible += 1
                history.append({"constructed": constructed, "feasible": False})
                continue
            if best_assignment is None:  # something to return if the refinement is interrupted
                start = sum(layer_latency(state, m) for m in range(1, state.L + 2)) if latency else state.volume()
                self.offer(state.assignment(), objective=start, message="greedy construction")
            if latency:
                stats = refine_latency(state, deadline)
                value = sum(layer_latency(state, l) for l in range(1, state.L + 2))
            else:
                stats = refine_volume(state, deadline, patience=patience, max_sweeps=max_sweeps, min_gain=min_gain)
                value = state.volume()
            history.append({"constructed": constructed, "refined": value, "seconds": time.perf_counter() - round_started, **stats})
            if value < best_value - _EPS * max(1.0, abs(value)):
                best_value, best_assignment = value, state.assignment()
        stats = {"restarts": history}
        if best_assignment is None:
            return BackendResult(Status.NO_SOLUTION, message="no construction met the FLOPs/parameter capacities", stats=stats)
        message = f"greedy construction + {'latency hill climbing' if latency else 'FM refinement'}, best of {len(history)}"
        return BackendResult(Status.FEASIBLE, best_assignment, objective=None if latency else best_value, message=message, stats=stats)

