"""The numpy simulator: runs a placement worker by worker and meters every message (SPEC §2).

Decisions where the SPEC is silent: peak activation memory counts a unit's output before pooling
(``o_l`` scalars, the largest it gets); a replicated input counts as held by every worker; the gather is one
more synchronous step after the last layer whose time is the slowest link into worker 0, and its bytes are
reported apart from ``link_bytes`` (``gather_bytes``), which covers layers 1..L only.

Every backend's answer is scored by :func:`simulate`, never by the backend itself. The simulator builds
the explicit message plan of every layer (which activation goes from which worker to which), then, when
data is given, lets each worker compute its own units from *only* the activations it owns or received, so
a wrong plan shows up as wrong outputs rather than as a wrong count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._validation import as_choice, as_placement
from .cluster import Cluster
from .errors import InvalidParameterError, InvalidProblemError
from .network import Network

__all__ = ["simulate", "SimulationReport", "LayerMessages", "layer_messages", "normalize_assignment", "REPLICATED"]

#: Marker used in ``assignment[0]`` for an input that every worker holds.
REPLICATED = -1

OUTPUT_MODES = ("gather", "distributed")


@dataclass(frozen=True, eq=False)
class LayerMessages:
    """The message plan of one layer.

    ``needed[k, j]`` is True when worker k holds a consumer of input unit j; ``sent[k, j]`` when unit j's
    activation has to be sent to k (needed there, produced elsewhere). ``messages`` lists them as rows
    ``(unit, source worker, destination worker)``.
    """

    needed: np.ndarray
    sent: np.ndarray
    messages: np.ndarray
    link_units: np.ndarray  # (K, K) count of units sent on each directed link


def _consumers(connectivity: sp.csr_array, dense: np.ndarray | None, placement: np.ndarray, k: int) -> np.ndarray:
    """``needed[k, j]``: some unit of worker k reads input unit j."""
    n_inputs = connectivity.shape[1]
    if dense is not None:
        # OR together each worker's rows of the dense M_l (rows grouped by worker): one pass over M_l.
        order = np.argsort(placement, kind="stable")
        counts = np.bincount(placement, minlength=k)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        busy = np.flatnonzero(counts)
        needed = np.zeros((k, n_inputs), dtype=bool)
        needed[busy] = np.logical_or.reduceat(dense[order], starts[busy], axis=0)
        return needed
    # Sparse path for very large layers: read straight off the CSR arrays in O(nnz).
    needed = np.zeros((k, n_inputs), dtype=bool)
    readers = np.repeat(placement, np.diff(connectivity.indptr))
    needed[readers, connectivity.indices] = True
    return needed


def layer_messages(connectivity: sp.csr_array, source: np.ndarray | None, placement: np.ndarray, k: int,
                   dense: np.ndarray | None = None) -> LayerMessages:
    """Message plan of a layer whose inputs sit on ``source`` (``None``: replicated) and units on ``placement``.

    ``dense`` is ``connectivity`` as a dense boolean array, when the caller has it (faster for small layers).
    """
    needed = _consumers(connectivity, dense, placement, k)
    if source is None:
        sent = np.zeros_like(needed)
        link_units = np.zeros((k, k), dtype=np.int64)
        messages = np.zeros((0, 3), dtype=np.int64)
    else:
        sent = needed.copy()
        sent[source, np.arange(source.shape[0])] = False  # the producer already holds its unit
        dst, unit = np.nonzero(sent)
        src = source[unit]
        messages = np.stack([unit, src, dst], axis=1).astype(np.int64)
        link_units = np.bincount(src * k + dst, minlength=k * k).reshape(k, k).astype(np.int64)
    return LayerMessages(needed=needed, sent=sent, messages=messages, link_units=link_units)


def normalize_assignment(
    network: Network, assignment: Sequence[Any], k: int, input_placement: Any = None
) -> tuple[np.ndarray, ...]:
    """Validate an assignment and return it as read-only int arrays (``assignment[0]`` all -1 if replicated).

    ``input_placement`` decides how ``assignment[0]`` is read: ``"replicated"`` ignores it (all -1);
    ``"free"`` requires a full placement; a fixed array must equal it (an omitted ``assignment[0]``,
    ``None`` or all -1, stands for the fixed array); ``None`` infers the mode from ``assignment[0]``
    (``None`` or all -1 means replicated).
    """
    L = network.n_layers
    counts = network.unit_counts
    if isinstance(assignment, np.ndarray) or not isinstance(assignment, (list, tuple)):
        raise InvalidParameterError(
            f"`assignment` must be a sequence of {L + 1} placements (index 0 = input), got {type(assignment).__name__}"
        )
    if len(assignment) != L + 1:
        raise InvalidParameterError(f"`assignment` must hold {L + 1} placements (input + {L} layers), got {len(assignment)}")
    if isinstance(input_placement, str) and input_placement not in ("replicated", "free"):
        raise InvalidParameterError(f"`input_placement` must be 'replicated', 'free' or an array, got {input_placement!r}")
    mode = "infer" if input_placement is None else input_placement if isinstance(input_placement, str) else "fixed"
    fixed = None if mode != "fixed" else as_placement("input_placement", input_placement, counts[0], k)
    first = assignment[0]
    first_replicated = first is None
    if first is not None and mode != "replicated":
        try:
            first_array = np.asarray(first)
        except (TypeError, ValueError):  # ragged input: as_placement below names the problem
            first_array = np.zeros(0)
        first_replicated = (
            first_array.ndim == 1 and first_array.size == counts[0] and first_array.dtype.kind in "iu"
            and bool(np.all(first_array == REPLICATED))
        )
    out = []
    if mode == "replicated" or (mode == "infer" and first_replicated):
        zero = np.full(counts[0], REPLICATED, dtype=np.int64)
        zero.flags.writeable = False
        out.append(zero)
    elif first_replicated and mode == "fixed":
        out.append(fixed)  # the fixed input placement stands in for an omitted assignment[0]
    elif first_replicated:  # "free": the input must be placed
        raise InvalidParameterError(
            "`assignment[0]` must place every input unit (an int array of worker indices) when "
            "`input_placement` is 'free', got a replicated input"
        )
    else:
        out.append(as_placement("assignment[0]", first, counts[0], k))
        if fixed is not None and not np.array_equal(fixed, out[0]):
            raise InvalidParameterError("`assignment[0]` must equal the fixed `input_placement`")
    for l in range(1, L + 1):
        out.append(as_placement(f"assignment[{l}]", assignment[l], counts[l], k))
    return tuple(out)


@dataclass(frozen=True, eq=False)
class SimulationReport:
    """What the simulator measured (all quantities per sample).

    Attributes
    ----------
    comm_scalars : float
        Total volume ``V`` in scalars, gather included.
    comm_bytes : float
        ``comm_scalars · dtype_bytes``.
    comm_per_layer : ndarray (L,)
        ``V_l`` in scalars.
    gather_scalars : float
        Scalars sent to the sink worker 0 by ``output="gather"``.
    link_bytes : ndarray (L, K, K)
        Bytes on each directed link ``(src, dst)`` in each layer.
    gather_bytes : ndarray (K,)
        Bytes each worker sends to the sink for the gather.
    messages : tuple of ndarray
        Per layer, rows ``(unit of layer l-1, source, destination)``.
    flops, params, peak_activation : ndarray (K,)
        Per-worker FLOPs, parameters and peak activation memory (scalars). Memory in layer l counts the
        input units the worker holds (its own layer-(l-1) units, the ones it received, or the whole input
        when it is replicated) times ``s_{l-1}``, plus ``o_l`` scalars per unit it computes: a conv unit's
        full ``H_out·W_out`` map exists before pooling shrinks it to ``s_l``. The peak is the largest layer.
        Gathered outputs are not counted (the gather is a transfer, not a layer).
    flops_per_layer : ndarray (L, K)
    latency : float
        α-β model latency in seconds; ``latency_per_layer`` (L,) and ``gather_latency`` add up to it.
    single_worker_time, speedup : float
        ``Σ F / (flop_rate · speed_0)`` and its ratio to ``latency``.
    outputs : ndarray or None
        The network outputs computed worker by worker, when ``X`` was given.
    """

    k: int
    dtype_bytes: int
    comm_scalars: float
    comm_per_layer: np.ndarray
    gather_scalars: float
    link_bytes: np.ndarray
    gather_bytes: np.ndarray
    messages: tuple[np.ndarray, ...]
    flops: np.ndarray
    flops_per_layer: np.ndarray
    params: np.ndarray
    peak_activation: np.ndarray
    latency: float
    latency_per_layer: np.ndarray
    gather_latency: float
    single_worker_time: float
    outputs: np.ndarray | None = field(default=None, repr=False)

    @property
    def comm_bytes(self) -> float:
        return self.comm_scalars * self.dtype_bytes

    @property
    def speedup(self) -> float:
        return self.single_worker_time / self.latency if self.latency > 0 else float("inf")

    def summary(self) -> dict[str, Any]:
        """The scalar and per-worker figures as plain Python values (for JSON and tables)."""
        return {
            "k": self.k,
            "comm_scalars": float(self.comm_scalars),
            "comm_bytes": float(self.comm_bytes),
            "comm_per_layer": self.comm_per_layer.tolist(),
            "gather_scalars": float(self.gather_scalars),
            "flops": self.flops.tolist(),
            "params": self.params.tolist(),
            "peak_activation": self.peak_activation.tolist(),
            "latency": float(self.latency),
            "speedup": float(self.speedup),
        }


def _link_time(link_bytes: np.ndarray, cluster: Cluster) -> float:
    mask = link_bytes > 0
    if not mask.any():
        return 0.0
    return float(np.max(cluster.latency[mask] + link_bytes[mask] / cluster.bandwidth[mask]))


def simulate(
    network: Network,
    assignment: Sequence[Any],
    cluster: Cluster,
    X: Any = None,
    output: str = "gather",
    input_placement: Any = None,
) -> SimulationReport:
    """Execute ``network`` placed by ``assignment`` on ``cluster`` and measure it.

    Parameters
    ----------
    network : Network
    assignment : sequence of int arrays
        ``assignment[l][i]`` is the worker of unit i of layer l; index 0 is the input placement
        (``None`` or all ``-1`` for a replicated input).
    cluster : Cluster
    X : array-like, optional
        A batch; when given, the outputs are computed worker by worker from the messages alone.
    output : {"gather", "distributed"}
        Whether the final outputs are collected on worker 0.
    input_placement : "replicated", "free" or int array, optional
        ``"replicated"`` overrides ``assignment[0]``; an array must equal it.

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> net = ro.Network([ro.Dense(np.eye(4)), ro.ReLU(), ro.Dense(np.ones((2, 4)))], input_shape=(4,))
    >>> report = ro.simulate(net, [None, [0, 0, 1, 1], [0, 1]], ro.Cluster(k=2))
    >>> report.comm_per_layer.tolist(), report.gather_scalars, report.comm_scalars
    ([0.0, 4.0], 1.0, 5.0)
    """
    if not isinstance(network, Network):
        raise InvalidParameterError(f"`network` must be a repurpose_opt.Network, got {type(network).__name__}")
    if not isinstance(cluster, Cluster):
        raise InvalidParameterError(f"`cluster` must be a repurpose_opt.Cluster, got {type(cluster).__name__}")
    output = as_choice("output", output, OUTPUT_MODES)
    placements = normalize_assignment(network, assignment, cluster.k, input_placement)
    k, L = cluster.k, network.n_layers
    replicated = bool(placements[0][0] == REPLICATED) if placements[0].size else True
    sizes = network.message_sizes

    units = network.to_units(X) if X is not None else None
    with np.errstate(over="ignore"):  # a FLOP rate beyond float64 is infinitely fast: compute time 0
        rates = cluster.flop_rate * cluster.speed
    comm_per_layer = np.zeros(L)
    link_bytes = np.zeros((L, k, k))
    flops_per_layer = np.zeros((L, k))
    params = np.zeros(k, dtype=np.int64)
    peak = np.zeros(k)
    messages = []
    latency_per_layer = np.zeros(L)
    for l, layer in enumerate(network.structure, start=1):
        source = None if (l == 1 and replicated) else placements[l - 1]
        placement = placements[l]
        plan = layer_messages(layer.connectivity, source, placement, k, dense=layer.dense_connectivity)
        messages.append(plan.messages)
        s_in = layer.in_message_size
        comm_per_layer[l - 1] = s_in * plan.messages.shape[0]
        link_bytes[l - 1] = plan.link_units * s_in * cluster.dtype_bytes
        flops_per_layer[l - 1] = np.bincount(placement, weights=layer.flops_per_unit, minlength=k)
        params += np.bincount(placement, weights=layer.params_per_unit, minlength=k).astype(np.int64)
        if source is None:
            held = np.ones((k, layer.n_inputs), dtype=bool)
        else:
            held = plan.sent | (source[None, :] == np.arange(k)[:, None])
        outputs_held = np.bincount(placement, minlength=k) * layer.output_positions
        peak = np.maximum(peak, held.sum(axis=1) * s_in + outputs_held)
        compute = float(np.max(flops_per_layer[l - 1] / rates))
        latency_per_layer[l - 1] = compute + _link_time(link_bytes[l - 1], cluster)
        if units is not None:
            units = _execute_layer(network, l, units, placement, held, k)

    gather_bytes = np.zeros(k)
    gather_scalars = 0.0
    if output == "gather":
        off_sink = np.bincount(placements[L], minlength=k).astype(np.float64)
        off_sink[0] = 0.0
        gather_bytes = off_sink * sizes[L] * cluster.dtype_bytes
        gather_scalars = float(off_sink.sum() * sizes[L])
    gather_link = np.zeros((k, k))
    gather_link[:, 0] = gather_bytes
    gather_latency = _link_time(gather_link, cluster)
    total_flops = flops_per_layer.sum()
    return SimulationReport(
        k=k,
        dtype_bytes=cluster.dtype_bytes,
        comm_scalars=float(comm_per_layer.sum() + gather_scalars),
        comm_per_layer=comm_per_layer,
        gather_scalars=gather_scalars,
        link_bytes=link_bytes,
        gather_bytes=gather_bytes,
        messages=tuple(messages),
        flops=flops_per_layer.sum(axis=0),
        flops_per_layer=flops_per_layer,
        params=params,
        peak_activation=peak,
        latency=float(latency_per_layer.sum() + gather_latency),
        latency_per_layer=latency_per_layer,
        gather_latency=gather_latency,
        single_worker_time=float(total_flops / rates[0]),
        outputs=None if units is None else units.reshape(units.shape[0], -1),
    )


def _execute_layer(network: Network, l: int, units: np.ndarray, placement: np.ndarray, held: np.ndarray, k: int) -> np.ndarray:
    """Each worker computes its units of layer ``l`` from the input units it holds, and nothing else.

    Workers that hold exactly the same input units compute together over the union of their rows (one
    GEMM / one im2col instead of one per worker): the numbers are the same, the cost is that of a plain
    forward pass when every worker holds everything.
    """
    n_units = network.structure[l - 1].n_units
    result = None
    groups: dict[bytes, list[int]] = {}
    for worker in range(k):
        if np.any(placement == worker):
            groups.setdefault(np.packbits(held[worker]).tobytes(), []).append(worker)
    for workers in groups.values():
        rows = np.flatnonzero(np.isin(placement, workers))
        mask = held[workers[0]]
        if mask.all():
            x, cols = units, slice(None)
        else:
            cols = np.flatnonzero(mask)
            x = units[:, cols]
        if rows.size == n_units:  # one group computes the whole layer: its output is the layer's
            return network.stage_post(l, network.stage_linear(l, x, slice(None), cols))
        a = network.stage_post(l, network.stage_linear(l, x, rows, cols))
        if result is None:
            result = np.empty((units.shape[0], n_units, a.shape[2]))
        result[:, rows] = a
    if result is None:  # pragma: no cover - a layer has at least one unit
        raise InvalidProblemError(f"layer {l} has no units")
    return result
