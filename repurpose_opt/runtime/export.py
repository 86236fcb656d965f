"""Per-worker shards of a placed network: what each worker of a real cluster needs, and nothing more.

An export is a directory with one ``worker{k}.npz`` per worker and a ``manifest.json``:

- a shard (written with the package's versioned, checksummed, pickle-free ``.npz`` format) holds, for
  every linear layer, the worker's own rows of ``W`` restricted to the input units it reads (its own plus
  the ones it receives), their biases, and the row/column indices;
- the manifest holds the architecture (shapes, strides, activation/pooling per layer), the unit indices
  each worker owns, and per layer the exact send and receive lists between workers, taken from the
  simulator's message plan (:func:`repurpose_opt.simulator.layer_messages`), plus the input placement and
  the output mode. Moving exactly these lists moves exactly the simulator's bytes.

:func:`load_export` re-validates everything (files present, versions, checksums, every list consistent
with every other) before anything runs; a worker loads the manifest and only its own shard.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import _io
from .._validation import as_choice, as_float_array, as_path
from ..errors import FormatError, InvalidParameterError, InvalidProblemError
from ..layers import Conv2d, Flatten, conv2d, layer_from_config
from ..network import Network
from ..simulator import REPLICATED, layer_messages, normalize_assignment

__all__ = ["export", "load_export", "ExportedModel", "LayerPlan", "EXPORT_FORMAT", "SHARD_FORMAT", "EXPORT_VERSION"]

EXPORT_FORMAT = "repurpose-opt/export"
SHARD_FORMAT = "repurpose-opt/export-shard"
EXPORT_VERSION = 1
MANIFEST = "manifest.json"
DTYPES = {"float32": 4, "float64": 8}
_POST_KINDS = ("relu", "identity", "tanh", "sigmoid", "maxpool2d", "avgpool2d", "flatten")


def shard_name(rank: int) -> str:
    """File name of worker ``rank``'s shard inside an export directory."""
    return f"worker{rank}.npz"


# --------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True, eq=False)
class LayerPlan:
    """What every worker does in one linear layer ``index`` (1-based).

    Attributes
    ----------
    owned : tuple of int arrays
        ``owned[k]``: units of this layer worker k computes (sorted).
    reads : tuple of int arrays
        ``reads[k]``: input units (units of layer ``index - 1``) worker k's rows read, sorted; the columns
        of its shard's weights, in this order.
    sends, receives : tuple of tuples of (int, int array)
        ``sends[k]``: ``(destination, units)`` pairs worker k sends before computing this layer;
        ``receives[k]``: ``(source, units)`` pairs it receives. Units are sorted; a pair appears only when
        it carries at least one unit, and every pair appears on both sides.
    """

    index: int
    kind: str
    n_units: int
    n_inputs: int
    in_message_size: int
    message_size: int
    in_shape: tuple[int, ...]
    pre_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    kernel: tuple[int, int] | None
    stride: tuple[int, int] | None
    padding: tuple[int, int] | None
    post: tuple[dict[str, Any], ...]
    owned: tuple[np.ndarray, ...]
    reads: tuple[np.ndarray, ...]
    sends: tuple[tuple[tuple[int, np.ndarray], ...], ...]
    receives: tuple[tuple[tuple[int, np.ndarray], ...], ...]

    def link_units(self) -> np.ndarray:
        """``(K, K)`` count of input units sent on each directed link ``(src, dst)``."""
        k = len(self.owned)
        units = np.zeros((k, k), dtype=np.int64)
        for src, pairs in enumerate(self.sends):
            for dst, sent in pairs:
                units[src, dst] += sent.size
        return units

    def weight_shape(self, rank: int) -> tuple[int, ...]:
        """Shape of worker ``rank``'s weight block in its shard."""
        rows, cols = self.owned[rank].size, self.reads[rank].size
        if self.kind == "dense":
            return (rows, cols, self.in_message_size)
        assert self.kernel is not None
        return (rows, cols) + tuple(self.kernel)


@dataclass(frozen=True, eq=False)
class ExportedModel:
    """A validated export directory (see :func:`load_export`).

    Attributes
    ----------
    directory : Path
    manifest : dict
        The parsed ``manifest.json``.
    k : int
        Number of workers.
    dtype : str
        ``"float32"`` or ``"float64"``: the dtype of the shards and of every message on the wire.
    input_shape : tuple of int
    input_placement : int array or None
        Worker observing each input unit; ``None`` when every worker holds the whole input.
    output : str
        ``"gather"`` (outputs collected on worker 0) or ``"distributed"``.
    layers : tuple of LayerPlan
    gather : tuple of (int, int array)
        ``(source, output units)`` each worker sends to the sink, worker 0, with ``output="gather"``.
    shards : dict
        ``rank -> {name: array}`` for the shards that were loaded.
    """

    directory: Path
    manifest: dict[str, Any]
    k: int
    dtype: str
    input_shape: tuple[int, ...]
    input_placement: np.ndarray | None
    output: str
    layers: tuple[LayerPlan, ...]
    gather: tuple[tuple[int, np.ndarray], ...]
    shards: dict[int, dict[str, np.ndarray]] = field(repr=False)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def dtype_bytes(self) -> int:
        return DTYPES[self.dtype]

    @property
    def unit_counts(self) -> tuple[int, ...]:
        return (self.layers[0].n_inputs,) + tuple(plan.n_units for plan in self.layers)

    @property
    def message_sizes(self) -> tuple[int, ...]:
        return (self.layers[0].in_message_size,) + tuple(plan.message_size for plan in self.layers)

    @property
    def n_outputs(self) -> int:
        return self.unit_counts[-1] * self.message_sizes[-1]

    def link_scalars(self) -> np.ndarray:
        """``(L, K, K)`` scalars per sample on each directed link of each layer (the simulator's volume)."""
        return np.stack([plan.link_units() * plan.in_message_size for plan in self.layers]).astype(np.float64)

    def gather_scalars(self) -> np.ndarray:
        """``(K,)`` scalars per sample each worker sends to the sink for the gather."""
        out = np.zeros(self.k)
        for src, units in self.gather:
            out[src] += units.size * self.message_sizes[-1]
        return out

    def held_input(self, rank: int) -> np.ndarray:
        """Input units worker ``rank`` holds before layer 1: its observed units, or what it reads if replicated."""
        if self.input_placement is None:
            return self.layers[0].reads[rank]
        return np.flatnonzero(self.input_placement == rank)

    def input_units(self, X: Any) -> np.ndarray:
        """``X`` of shape ``(N, *input_shape)`` or ``(N, prod(input_shape))`` in unit form ``(N, n_0, s_0)``."""
        X = as_float_array("X", X, error=InvalidParameterError)
        shape = self.input_shape
        if X.ndim >= 2 and (X.shape[1:] == shape or (X.ndim == 2 and X.shape[1] == int(np.prod(shape)))):
            return X.reshape(X.shape[0], self.unit_counts[0], self.message_sizes[0])
        raise InvalidParameterError(
            f"`X` must have shape (N, {', '.join(map(str, shape))}) or (N, {int(np.prod(shape))}), got {X.shape}"
        )

    def execute(self, X: Any) -> np.ndarray:
        """Run the export in this process, worker by worker, from the shards and the lists alone.

        Each worker starts from the input units it holds, receives exactly its receive lists, computes its
        rows with its shard's weights (float64 arithmetic on the stored values) and the outputs are put back
        in original unit order. This is the reference the distributed runtime is checked against; it needs
        every shard loaded.

        Examples
        --------
        >>> import numpy as np, repurpose_opt as ro, tempfile
        >>> from repurpose_opt.runtime import export, load_export
        >>> net = ro.Network([ro.Dense(np.eye(4)), ro.ReLU(), ro.Dense(np.ones((2, 4)))], input_shape=(4,))
        >>> sol = ro.solve(ro.PartitionProblem(net, ro.Cluster(k=2)), backend="direct")
        >>> model = load_export(export(sol, tempfile.mkdtemp()))
        >>> model.execute(np.array([[1.0, -2.0, 3.0, 4.0]])).tolist()
        [[8.0, 8.0]]
        """
        missing = sorted(set(range(self.k)) - set(self.shards))
        if missing:
            raise InvalidParameterError(f"`execute` needs every shard loaded; workers {missing} were not")
        units = self.input_units(X)
        n = units.shape[0]
        held = {rank: (self.held_input(rank), units[:, self.held_input(rank)]) for rank in range(self.k)}
        for plan in self.layers:
            new_held = {}
            for rank in range(self.k):
                own_units, own_values = held[rank]
                pieces_units = [own_units] + [units_ for _, units_ in plan.receives[rank]]
                pieces_values = [own_values]
                for src, wanted in plan.receives[rank]:
                    src_units, src_values = held[src]
                    pieces_values.append(src_values[:, np.searchsorted(src_units, wanted)])
                pool_units = np.concatenate(pieces_units)
                pool_values = np.concatenate(pieces_values, axis=1)
                order = np.argsort(pool_units, kind="stable")
                x = pool_values[:, order[np.searchsorted(pool_units[order], plan.reads[rank])]]
                shard = self.shards[rank]
                W = shard[f"W{plan.index}"].astype(np.float64)
                b = shard[f"b{plan.index}"].astype(np.float64)
                new_held[rank] = (plan.owned[rank], _numpy_layer(plan, x, W, b, n))
            held = new_held
        out = np.empty((n, self.unit_counts[-1], self.message_sizes[-1]))
        for rank in range(self.k):
            own_units, own_values = held[rank]
            out[:, own_units] = own_values
        return out.reshape(n, -1)


def _numpy_layer(plan: LayerPlan, x: np.ndarray, W: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    rows = W.shape[0]
    if plan.kind == "dense":
        z = x.reshape(n, x.shape[1] * x.shape[2]) @ W.reshape(rows, W.shape[1] * W.shape[2]).T + b
    else:
        _, h, w = plan.in_shape
        z = conv2d(x.reshape(n, x.shape[1], h, w), W, b, plan.stride, plan.padding)
    for config in plan.post:
        if config["type"] != Flatten.kind:
            z = layer_from_config(config).apply(z)
    return z.reshape(n, rows, plan.message_size)


# -------------------------------------------------------------------------------------------- export
def export(solution: Any, directory: str | os.PathLike, *, dtype: str = "float32") -> Path:
    """Write one shard per worker plus ``manifest.json`` for a solved placement.

    Parameters
    ----------
    solution : Solution
        Any solution with an assignment, a network (the original one for partition backends, the
        restructured one for ``repurpose``) and a cluster.
    directory : path
        Created if needed; existing export files in it are replaced (each file atomically, the manifest
        last, so a half-written export never validates).
    dtype : {"float32", "float64"}
        Dtype of the stored weights and of every activation on the wire.

    Returns
    -------
    Path
        The export directory.

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro, tempfile
    >>> from repurpose_opt.runtime import export, load_export
    >>> net = ro.Network([ro.Dense(np.eye(4)), ro.ReLU(), ro.Dense(np.ones((2, 4)))], input_shape=(4,))
    >>> sol = ro.solve(ro.PartitionProblem(net, ro.Cluster(k=2)), backend="direct")
    >>> model = load_export(export(sol, tempfile.mkdtemp()))
    >>> model.k, [u.tolist() for u in model.layers[1].owned], model.link_scalars().sum(axis=(1, 2)).tolist()
    (2, [[0], [1]], [0.0, 4.0])
    """
    from ..solution import Solution

    if not isinstance(solution, Solution):
        raise InvalidParameterError(f"`solution` must be a repurpose_opt.Solution, got {type(solution).__name__}")
    if not solution.status.has_solution or solution.assignment is None or solution.network is None:
        raise InvalidParameterError(
            f"`solution` must hold a placement and a network to export, got status {solution.status.value}"
            + (f" ({solution.message})" if solution.message else "")
        )
    if solution.cluster is None:
        raise InvalidParameterError("`solution` must carry its cluster (the number of workers) to export")
    dtype = as_choice("dtype", dtype, tuple(DTYPES))
    network: Network = solution.network
    k = solution.cluster.k
    placements = normalize_assignment(network, list(solution.assignment), k)
    replicated = bool(placements[0].size and placements[0][0] == REPLICATED)
    directory = as_path("directory", directory)
    if directory.exists() and not directory.is_dir():
        raise InvalidParameterError(f"`directory` must be a directory, got the file {str(directory)!r}")
    directory.mkdir(parents=True, exist_ok=True)

    layers_json = []
    shard_arrays: list[dict[str, np.ndarray]] = [{} for _ in range(k)]
    for l, structure in enumerate(network.structure, start=1):
        source = None if (l == 1 and replicated) else placements[l - 1]
        placement = placements[l]
        plan = layer_messages(structure.connectivity, source, placement, k)
        in_shape, pre_shape, out_shape = network.shapes(l)
        linear = network.linear_layers[l - 1]
        owned = [np.flatnonzero(placement == rank) for rank in range(k)]
        reads = [np.flatnonzero(plan.needed[rank]) for rank in range(k)]
        sends: list[list[list[Any]]] = [[] for _ in range(k)]
        receives: list[list[list[Any]]] = [[] for _ in range(k)]
        messages = plan.messages  # rows (unit, src, dst), the simulator's plan
        for src in range(k):
            for dst in range(k):
                units = np.sort(messages[(messages[:, 1] == src) & (messages[:, 2] == dst), 0])
                if units.size:
                    sends[src].append([dst, units.tolist()])
                    receives[dst].append([src, units.tolist()])
        post = [op.to_config() for op in network.post_ops(l)]
        entry: dict[str, Any] = {
            "index": l,
            "kind": structure.kind,
            "n_units": structure.n_units,
            "n_inputs": structure.n_inputs,
            "in_message_size": structure.in_message_size,
            "message_size": structure.message_size,
            "in_shape": list(in_shape),
            "pre_shape": list(pre_shape),
            "out_shape": list(out_shape),
            "post": post,
            "owned": [units.tolist() for units in owned],
            "reads": [cols.tolist() for cols in reads],
            "send": sends,
            "recv": receives,
        }
        if isinstance(linear, Conv2d):
            entry.update(kernel=list(linear.W.shape[2:]), stride=list(linear.stride), padding=list(linear.padding))
        layers_json.append(entry)
        blocks = linear.W.reshape(structure.n_units, structure.n_inputs, -1)
        for rank in range(k):
            block = blocks[owned[rank]][:, reads[rank]]
            if isinstance(linear, Conv2d):
                block = block.reshape((owned[rank].size, reads[rank].size) + linear.W.shape[2:])
            shard_arrays[rank][f"W{l}"] = np.ascontiguousarray(block, dtype=dtype)
            shard_arrays[rank][f"b{l}"] = np.ascontiguousarray(linear.b[owned[rank]], dtype=dtype)
            shard_arrays[rank][f"rows{l}"] = owned[rank].astype(np.int64)
            shard_arrays[rank][f"cols{l}"] = reads[rank].astype(np.int64)

    L = network.n_layers
    gather: list[list[Any]] = []
    if solution.output == "gather":
        for rank in range(1, k):
            units = np.flatnonzero(placements[L] == rank)
            if units.size:
                gather.append([rank, units.tolist()])

    workers = []
    for rank in range(k):
        header = {"worker": rank, "k": k, "n_layers": L, "dtype": dtype}
        path = _io.write_npz(directory / shard_name(rank), SHARD_FORMAT, EXPORT_VERSION, header, shard_arrays[rank])
        workers.append({"rank": rank, "file": path.name, "sha256": _io._digest(shard_arrays[rank])})

    manifest = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "k": k,
        "dtype": dtype,
        "dtype_bytes": DTYPES[dtype],
        "input": {
            "shape": list(network.input_shape),
            "n_units": network.unit_counts[0],
            "message_size": network.message_sizes[0],
            "mode": "replicated" if replicated else "placed",
            "placement": None if replicated else placements[0].tolist(),
        },
        "output": {"mode": solution.output, "sink": 0, "gather": gather},
        "layers": layers_json,
        "workers": workers,
        "source": {
            "backend": solution.backend,
            "status": solution.status.value,
            "objective": solution.objective,
        },
    }
    _io.write_text_atomic(directory / MANIFEST, json.dumps(manifest, separators=(",", ":")))
    return directory


# ---------------------------------------------------------------------------------------------- load
class _Checker:
    """Raises FormatError messages that all start with the export's location."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, message: str) -> None:
        raise FormatError(f"{self.where}: {message}")

    def get(self, mapping: Any, key: str, kind: type | tuple[type, ...], context: str) -> Any:
        if not isinstance(mapping, dict) or key not in mapping:
            self.fail(f"{context} has no field {key!r}")
        value = mapping[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(t.__name__ for t in kind)
            self.fail(f"{context} field {key!r} must be {names}, got {type(value).__name__}")
        return value

    def count(self, mapping: Any, key: str, context: str, minimum: int = 1) -> int:
        value = self.get(mapping, key, int, context)
        if value < minimum:
            self.fail(f"{context} field {key!r} must be >= {minimum}, got {value}")
        return value

    def shape(self, mapping: Any, key: str, context: str, lengths: tuple[int, ...]) -> tuple[int, ...]:
        value = self.get(mapping, key, list, context)
        if len(value) not in lengths or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
            self.fail(f"{context} field {key!r} must be a list of {' or '.join(map(str, lengths))} positive integers, got {value!r}")
        return tuple(value)

    def units(self, value: Any, n: int, context: str) -> np.ndarray:
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            self.fail(f"{context} must be a list of unit indices, got {value!r:.80}")
        array = np.asarray(value, dtype=np.int64)
        if array.size and (array.min() < 0 or array.max() >= n):
            self.fail(f"{context} holds unit indices outside 0..{n - 1}")
        if array.size > 1 and np.any(np.diff(array) <= 0):
            self.fail(f"{context} must be sorted without repeats")
        return array

    def pairs(self, value: Any, k: int, n: int, rank: int, context: str) -> tuple[tuple[int, np.ndarray], ...]:
        if not isinstance(value, list):
            self.fail(f"{context} must be a list of [worker, units] pairs")
        out = []
        seen = set()
        for position, pair in enumerate(value):
            if not isinstance(pair, list) or len(pair) != 2 or isinstance(pair[0], bool) or not isinstance(pair[0], int):
                self.fail(f"{context}[{position}] must be a [worker, units] pair, got {pair!r:.80}")
            peer = pair[0]
            if not 0 <= peer < k or peer == rank:
                self.fail(f"{context}[{position}] names worker {peer}; it must be another worker in 0..{k - 1}")
            if peer in seen:
                self.fail(f"{context} names worker {peer} twice")
            seen.add(peer)
            units = self.units(pair[1], n, f"{context}[{position}] units")
            if units.size == 0:
                self.fail(f"{context}[{position}] is an empty message")
            out.append((peer, units))
        return tuple(out)


def load_export(directory: str | os.PathLike, workers: Iterable[int] | None = None) -> ExportedModel:
    """Read and validate an export directory written by :func:`export`.

    Parameters
    ----------
    directory : path
    workers : iterable of int, optional
        Ranks whose shards are loaded (default: all). A worker process loads only its own; the manifest
        is always validated in full.

    Raises
    ------
    FormatError
        Missing manifest or shard, unknown format or newer version, failed checksum, a shard from another
        export, or lists that contradict each other (a unit owned twice or never, a message whose sender
        does not hold the unit, a send without its matching receive, a worker reading a unit it neither
        holds nor receives, weights whose shape does not match the lists).

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro, tempfile
    >>> from repurpose_opt.runtime import export, load_export
    >>> net = ro.Network([ro.Dense(np.eye(3)), ro.ReLU(), ro.Dense(np.ones((2, 3)))], input_shape=(3,))
    >>> sol = ro.solve(ro.PartitionProblem(net, ro.Cluster(k=2), input_placement="free"), backend="direct")
    >>> model = load_export(export(sol, tempfile.mkdtemp()))
    >>> model.input_placement.tolist(), model.layers[0].sends[0]
    ([0, 0, 1], ())
    """
    directory = as_path("directory", directory)
    ranks = None if workers is None else _worker_ranks(workers)
    where = str(directory)
    check = _Checker(where)
    manifest_path = directory / MANIFEST
    if not directory.is_dir():
        raise FormatError(f"`directory` must be an existing export directory, got {where!r}")
    if not manifest_path.is_file():
        raise FormatError(f"{where!r} has no {MANIFEST}: it is not a repurpose-opt export (run `export` first)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{str(manifest_path)!r} is not valid JSON (corrupted or truncated): {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise FormatError(f"{str(manifest_path)!r} holds {found!r}, expected a {EXPORT_FORMAT!r} manifest")
    _io.check_version(manifest.get("version"), EXPORT_VERSION, repr(str(manifest_path)), "export format")
    k = check.count(manifest, "k", "the manifest")
    dtype = check.get(manifest, "dtype", str, "the manifest")
    if dtype not in DTYPES:
        check.fail(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if manifest.get("dtype_bytes") != DTYPES[dtype]:
        check.fail(f"dtype_bytes {manifest.get('dtype_bytes')!r} does not match dtype {dtype!r}")

    # ---- input
    spec = check.get(manifest, "input", dict, "the manifest")
    input_shape = check.shape(spec, "shape", "input", (1, 3))
    n0, s0 = (input_shape[0], 1) if len(input_shape) == 1 else (input_shape[0], input_shape[1] * input_shape[2])
    if spec.get("n_units") != n0 or spec.get("message_size") != s0:
        check.fail(f"input n_units/message_size {spec.get('n_units')!r}/{spec.get('message_size')!r} do not match its shape {input_shape}")
    mode = check.get(spec, "mode", str, "input")
    if mode == "replicated":
        if spec.get("placement") is not None:
            check.fail("a replicated input must have placement null")
        input_placement = None
        owner = None
    elif mode == "placed":
        raw = spec.get("placement")
        if not isinstance(raw, list) or len(raw) != n0 or any(isinstance(v, bool) or not isinstance(v, int) for v in raw):
            check.fail(f"input placement must list the worker of each of the {n0} input units")
        input_placement = np.asarray(raw, dtype=np.int64)
        if input_placement.size and (input_placement.min() < 0 or input_placement.max() >= k):
            check.fail(f"input placement holds workers outside 0..{k - 1}")
        input_placement.flags.writeable = False
        owner = input_placement
    else:
        check.fail(f"input mode must be 'replicated' or 'placed', got {mode!r}")

    # ---- layers
    raw_layers = check.get(manifest, "layers", list, "the manifest")
    if not raw_layers:
        check.fail("the manifest lists no layers")
    layers = []
    n_prev, s_prev = n0, s0
    shape_prev: tuple[int, ...] = input_shape
    for l, raw in enumerate(raw_layers, start=1):
        ctx = f"layer {l}"
        if check.get(raw, "index", int, ctx) != l:
            check.fail(f"{ctx} has index {raw['index']}, expected {l}")
        kind = check.get(raw, "kind", str, ctx)
        if kind not in ("dense", "conv2d"):
            check.fail(f"{ctx} kind must be 'dense' or 'conv2d', got {kind!r}")
        n_units = check.count(raw, "n_units", ctx)
        if check.count(raw, "n_inputs", ctx) != n_prev or check.count(raw, "in_message_size", ctx) != s_prev:
            check.fail(f"{ctx} reads {raw['n_inputs']} units of size {raw['in_message_size']}, but the previous layer makes {n_prev} of size {s_prev}")
        message_size = check.count(raw, "message_size", ctx)
        in_shape = check.shape(raw, "in_shape", ctx, (1, 3))
        pre_shape = check.shape(raw, "pre_shape", ctx, (1, 3))
        out_shape = check.shape(raw, "out_shape", ctx, (1, 3))
        if int(np.prod(in_shape)) != n_prev * s_prev or (len(shape_prev) == 3 and kind == "conv2d" and in_shape != shape_prev):
            check.fail(f"{ctx} in_shape {in_shape} does not match the previous layer's output {shape_prev}")
        if pre_shape[0] != n_units or out_shape[0] != n_units or int(np.prod(out_shape)) != n_units * message_size:
            check.fail(f"{ctx} shapes {pre_shape} -> {out_shape} do not match {n_units} units of size {message_size}")
        kernel = stride = padding = None
        if kind == "conv2d":
            if len(in_shape) != 3 or len(pre_shape) != 3:
                check.fail(f"{ctx} is a conv2d layer but its shapes are not (channels, height, width)")
            kernel = check.shape(raw, "kernel", ctx, (2,))
            stride = check.shape(raw, "stride", ctx, (2,))
            padding = tuple(check.get(raw, "padding", list, ctx))
            if len(padding) != 2 or any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in padding):
                check.fail(f"{ctx} padding must be two non-negative integers, got {list(padding)!r}")
            h = (in_shape[1] + 2 * padding[0] - kernel[0]) // stride[0] + 1
            w = (in_shape[2] + 2 * padding[1] - kernel[1]) // stride[1] + 1
            if (h, w) != pre_shape[1:]:
                check.fail(f"{ctx} output {pre_shape} does not follow from input {in_shape}, kernel {kernel}, stride {stride}, padding {list(padding)}")
        elif len(pre_shape) != 1:
            check.fail(f"{ctx} is a dense layer but its output shape is {pre_shape}")
        post = check.get(raw, "post", list, ctx)
        shape = pre_shape
        for position, config in enumerate(post):
            if not isinstance(config, dict) or config.get("type") not in _POST_KINDS:
                check.fail(f"{ctx} post op {position} must be one of {list(_POST_KINDS)}, got {config!r:.80}")
            try:
                op = layer_from_config(config)
            except (KeyError, TypeError, ValueError, InvalidProblemError) as exc:
                check.fail(f"{ctx} post op {position} is malformed: {exc}")
            if hasattr(op, "output_hw"):
                if len(shape) != 3:
                    check.fail(f"{ctx} pools a non-image output")
                shape = (shape[0],) + tuple(op.output_hw(shape[1], shape[2]))
        if shape != out_shape:
            check.fail(f"{ctx} post ops turn {pre_shape} into {shape}, not the declared {out_shape}")

        owned = _read_per_worker(check, raw, "owned", k, n_units, ctx)
        counts = np.zeros(n_units, dtype=np.int64)
        for units in owned:
            counts[units] += 1
        if np.any(counts != 1):
            bad = int(np.flatnonzero(counts != 1)[0])
            check.fail(f"{ctx}: unit {bad} is owned by {counts[bad]} workers; every unit needs exactly one")
        reads = _read_per_worker(check, raw, "reads", k, n_prev, ctx)
        sends_raw = check.get(raw, "send", list, ctx)
        recv_raw = check.get(raw, "recv", list, ctx)
        if len(sends_raw) != k or len(recv_raw) != k:
            check.fail(f"{ctx}: send and recv must have one list per worker ({k})")
        sends = tuple(check.pairs(sends_raw[r], k, n_prev, r, f"{ctx} worker {r} send") for r in range(k))
        receives = tuple(check.pairs(recv_raw[r], k, n_prev, r, f"{ctx} worker {r} recv") for r in range(k))
        _check_lists(check, ctx, k, owner, reads, sends, receives)
        layers.append(
            LayerPlan(
                index=l, kind=kind, n_units=n_units, n_inputs=n_prev, in_message_size=s_prev, message_size=message_size,
                in_shape=in_shape, pre_shape=pre_shape, out_shape=out_shape, kernel=kernel, stride=stride,
                padding=None if padding is None else tuple(padding), post=tuple(post), owned=owned, reads=reads,
                sends=sends, receives=receives,
            )
        )
        owner = np.empty(n_units, dtype=np.int64)
        for rank, units in enumerate(owned):
            owner[units] = rank
        n_prev, s_prev, shape_prev = n_units, message_size, out_shape

    # ---- output
    out_spec = check.get(manifest, "output", dict, "the manifest")
    output = check.get(out_spec, "mode", str, "output")
    if output not in ("gather", "distributed"):
        check.fail(f"output mode must be 'gather' or 'distributed', got {output!r}")
    if out_spec.get("sink") != 0:
        check.fail(f"the output sink must be worker 0, got {out_spec.get('sink')!r}")
    gather = check.pairs(check.get(out_spec, "gather", list, "output"), k, n_prev, 0, "output gather")
    expected = tuple((rank, units) for rank, units in enumerate(layers[-1].owned) if rank != 0 and units.size)
    if output == "distributed" and gather:
        check.fail("output mode 'distributed' must have an empty gather list")
    if output == "gather" and (len(gather) != len(expected) or any(
        a != c or not np.array_equal(b, d) for (a, b), (c, d) in zip(gather, expected, strict=True)
    )):
        check.fail("the gather list must send every output unit not on worker 0 to worker 0, once")

    # ---- shards
    entries = check.get(manifest, "workers", list, "the manifest")
    if len(entries) != k:
        check.fail(f"the manifest lists {len(entries)} worker files for k = {k}")
    for rank, entry in enumerate(entries):
        if check.get(entry, "rank", int, f"worker entry {rank}") != rank or entry.get("file") != shard_name(rank):
            check.fail(f"worker entry {rank} must be rank {rank} in {shard_name(rank)!r}, got {entry!r:.80}")
        check.get(entry, "sha256", str, f"worker entry {rank}")
    wanted = range(k) if ranks is None else ranks
    shards = {}
    for rank in wanted:
        if not 0 <= rank < k:
            raise InvalidParameterError(f"`workers` must hold ranks in 0..{k - 1}, got {rank}")
        shards[rank] = _load_shard(check, directory, rank, entries[rank]["sha256"], k, dtype, layers)
    return ExportedModel(
        directory=directory, manifest=manifest, k=k, dtype=dtype, input_shape=input_shape,
        input_placement=input_placement, output=output, layers=tuple(layers), gather=gather, shards=shards,
    )


def _worker_ranks(workers: Any) -> list[int]:
    """``workers`` as sorted distinct ints (the range is checked once the manifest gives k)."""
    if isinstance(workers, (str, bytes)) or not isinstance(workers, Iterable):
        raise InvalidParameterError(f"`workers` must be an iterable of worker ranks (int), got {type(workers).__name__}")
    ranks = set()
    for rank in workers:
        if isinstance(rank, (bool, np.bool_)) or not isinstance(rank, (int, np.integer)):
            raise InvalidParameterError(f"`workers` must hold integer ranks, got {rank!r:.60}")
        ranks.add(int(rank))
    return sorted(ranks)


def _read_per_worker(check: _Checker, raw: dict, key: str, k: int, n: int, ctx: str) -> tuple[np.ndarray, ...]:
    lists = check.get(raw, key, list, ctx)
    if len(lists) != k:
        check.fail(f"{ctx}: {key!r} must have one list per worker ({k}), got {len(lists)}")
    out = []
    for rank, units in enumerate(lists):
        array = check.units(units, n, f"{ctx} worker {rank} {key}")
        array.flags.writeable = False
        out.append(array)
    return tuple(out)


def _check_lists(
    check: _Checker, ctx: str, k: int, owner: np.ndarray | None, reads: Sequence[np.ndarray], sends: Sequence[Sequence[tuple[int, np.ndarray]]],
    receives: Sequence[Sequence[tuple[int, np.ndarray]]],
) -> None:
    """Sends mirror receives, senders hold what they send, and every worker gets exactly what it reads."""
    sent = {(src, dst): units for src in range(k) for dst, units in sends[src]}
    got = {(src, dst): units for dst in range(k) for src, units in receives[dst]}
    for (src, dst), units in sent.items():
        if (src, dst) not in got or not np.array_equal(got[(src, dst)], units):
            check.fail(f"worker {src} sends {units.size} units to worker {dst} in {ctx}, but worker {dst}'s receive list does not match")
    for (src, dst) in got:
        if (src, dst) not in sent:
            check.fail(f"worker {dst} expects units from worker {src} in {ctx}, but worker {src} sends none")
    for rank in range(k):
        if owner is None:
            if sends[rank] or receives[rank]:
                check.fail(f"{ctx}: worker {rank} exchanges messages although every worker holds the whole input")
            continue
        for dst, units in sends[rank]:
            wrong = units[owner[units] != rank]
            if wrong.size:
                check.fail(f"{ctx}: worker {rank} sends unit {int(wrong[0])} to worker {dst} but does not hold it")
        own = np.flatnonzero(owner == rank)
        received = np.concatenate([units for _, units in receives[rank]]) if receives[rank] else np.zeros(0, np.int64)
        if np.unique(received).size != received.size:
            check.fail(f"{ctx}: worker {rank} receives some unit twice")
        missing = np.setdiff1d(reads[rank], np.union1d(own, received))
        if missing.size:
            check.fail(f"{ctx}: worker {rank} reads unit {int(missing[0])} which it neither holds nor receives")
        extra = np.setdiff1d(received, reads[rank])
        if extra.size:
            check.fail(f"{ctx}: worker {rank} receives unit {int(extra[0])} which none of its units reads")


def _load_shard(
    check: _Checker, directory: Path, rank: int, sha256: str, k: int, dtype: str, layers: Sequence[LayerPlan]
) -> dict[str, np.ndarray]:
    path = directory / shard_name(rank)
    if not path.is_file():
        check.fail(f"the shard of worker {rank} ({shard_name(rank)}) is missing")
    header, arrays = _io.read_npz(path, SHARD_FORMAT, EXPORT_VERSION)
    if header.get("sha256") != sha256:
        check.fail(f"{shard_name(rank)} does not belong to this export (its checksum differs from the manifest's)")
    if header.get("worker") != rank or header.get("k") != k or header.get("dtype") != dtype:
        check.fail(f"{shard_name(rank)} is worker {header.get('worker')!r} of k={header.get('k')!r} ({header.get('dtype')!r}), expected worker {rank} of k={k} ({dtype})")
    for plan in layers:
        l = plan.index
        for name in (f"W{l}", f"b{l}", f"rows{l}", f"cols{l}"):
            if name not in arrays:
                check.fail(f"{shard_name(rank)} has no array {name!r}")
        W, b = arrays[f"W{l}"], arrays[f"b{l}"]
        if W.dtype != np.dtype(dtype) or b.dtype != np.dtype(dtype):
            check.fail(f"{shard_name(rank)} layer {l} weights are {W.dtype}, expected {dtype}")
        if W.shape != plan.weight_shape(rank) or b.shape != (plan.owned[rank].size,):
            check.fail(f"{shard_name(rank)} layer {l} weights have shape {W.shape}, the lists say {plan.weight_shape(rank)}")
        if not np.array_equal(arrays[f"rows{l}"], plan.owned[rank]) or not np.array_equal(arrays[f"cols{l}"], plan.reads[rank]):
            check.fail(f"{shard_name(rank)} layer {l} rows/columns differ from the manifest's lists")
        if not (np.all(np.isfinite(W)) and np.all(np.isfinite(b))):
            check.fail(f"{shard_name(rank)} layer {l} holds NaN or infinite weights")
    return arrays
