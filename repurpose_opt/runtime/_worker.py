"""Code that runs inside one worker process (never in the parent).

A worker loads the manifest and only its own shard, joins the process group, and per layer posts
``irecv``/``isend`` of exactly the activations in its receive/send lists, then computes its rows. It
reports through files in the run's work directory (results written atomically, an error file with the
traceback on failure), so the parent never blocks on a pipe that a dead worker would leave open.

torch is imported inside the functions: the parent process of :func:`run_distributed` never imports it.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

#: ``"rank:layer:action"`` makes worker ``rank`` fail when it reaches ``layer`` (0 = during start-up):
#: ``exit`` calls ``os._exit(1)``, ``hang`` sleeps forever, ``raise`` raises. Used by the fault tests.
FAULT_ENV = "REPURPOSE_OPT_RUNTIME_FAULT"

_STARTING = -1
_DONE = 1_000_000
# ``progress[world_size + rank]``: what the worker is doing inside its current step, so that a timeout can
# tell the worker that hung from the peers blocked on it.
WORKING, WAITING_FOR_MESSAGES, AT_BARRIER = 0, 1, 2


class _Phase:
    """``with _Phase(progress, slot, state):`` marks a blocking call in the shared progress array."""

    def __init__(self, progress: Any, slot: int, state: int) -> None:
        self.progress, self.slot, self.state = progress, slot, state

    def __enter__(self) -> None:
        self.progress[self.slot] = self.state

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is None:  # on an error the state stays: the failure report says where the worker was
            self.progress[self.slot] = WORKING


def worker_main(rank: int, world_size: int, job: dict[str, Any], progress: Any) -> None:
    """Entry point of worker ``rank``: run ``job`` and report through files in ``job["workdir"]``."""
    # A forkserver child inherits the forkserver's environment, not the caller's current one.
    if "env" in job:
        os.environ.clear()
        os.environ.update(job["env"])
    workdir = Path(job["workdir"])
    try:
        if job["kind"] == "run":
            arrays = _run(rank, world_size, job, progress)
        elif job["kind"] == "calibrate":
            arrays = _calibrate(rank, world_size, job, progress)
        else:  # pragma: no cover - the parent builds the job
            raise ValueError(f"unknown job kind {job['kind']!r}")
        _save_atomic(workdir / f"result{rank}.npz", arrays)
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the parent as text
        text = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
        try:
            (workdir / f"error{rank}.txt").write_text(text)
        finally:
            # Skip interpreter shutdown: gloo threads blocked on dead peers could keep it from exiting.
            os._exit(1)
    progress[rank] = _DONE


def _save_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(tmp, path)


def _fault(rank: int, layer: int) -> None:
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return
    try:
        fault_rank, fault_layer, action = spec.split(":")
        if int(fault_rank) != rank or int(fault_layer) != layer:
            return
    except ValueError:
        return
    if action == "exit":
        os._exit(1)
    if action == "hang":
        while True:
            time.sleep(3600)
    if action == "raise":
        raise RuntimeError(f"fault injected by {FAULT_ENV}={spec!r}")


def _init_group(rank: int, world_size: int, job: dict[str, Any]) -> Any:
    import datetime

    import torch
    import torch.distributed as dist

    torch.set_num_threads(int(job["num_threads"]))
    dist.init_process_group(
        backend=job["backend"],
        init_method=job["init_method"],
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=float(job["group_timeout"])),
    )
    return dist


# ---------------------------------------------------------------------------------------- inference
class _WorkerLayer:
    """One layer as seen by one worker: its weights as tensors and its message lists as index tensors."""

    def __init__(self, plan: Any, rank: int, arrays: dict[str, np.ndarray], held_units: np.ndarray) -> None:
        import torch

        l = plan.index
        self.index = l
        self.kind = plan.kind
        self.rows = plan.owned[rank].size
        self.in_message_size = plan.in_message_size
        self.message_size = plan.message_size
        self.in_shape = plan.in_shape
        self.pre_shape = plan.pre_shape
        self.stride = plan.stride
        self.padding = plan.padding
        self.post = plan.post
        W = torch.from_numpy(np.ascontiguousarray(arrays[f"W{l}"]))
        self.b = torch.from_numpy(np.ascontiguousarray(arrays[f"b{l}"]))
        # Dense: keep W transposed so a layer is one addmm (N, cols·s) @ (cols·s, rows).
        self.W = W.reshape(self.rows, plan.reads[rank].size * plan.in_message_size).t().contiguous() if plan.kind == "dense" else W
        self.receives = [(src, units.size) for src, units in plan.receives[rank]]
        self.sends = [(dst, torch.from_numpy(np.searchsorted(held_units, units))) for dst, units in plan.sends[rank]]
        pool = np.concatenate([held_units] + [units for _, units in plan.receives[rank]]).astype(np.int64)
        order = np.argsort(pool, kind="stable")
        read_index = order[np.searchsorted(pool[order], plan.reads[rank])]
        self.read_all = bool(read_index.size == pool.size and np.array_equal(read_index, np.arange(pool.size)))
        self.read_index = torch.from_numpy(read_index.astype(np.int64))

    def compute(self, x: Any) -> Any:
        import torch
        import torch.nn.functional as F

        n = x.shape[0]
        if self.rows == 0:
            return x.new_empty((n, 0, self.message_size))
        if self.kind == "dense":
            z = torch.addmm(self.b, x.reshape(n, -1), self.W)
        elif x.shape[1] == 0:  # no input column: every output is its bias
            z = self.b.view(1, -1, 1, 1).expand((n, self.rows) + tuple(self.pre_shape[1:])).contiguous()
        else:
            _, h, w = self.in_shape
            z = F.conv2d(x.reshape(n, x.shape[1], h, w), self.W, self.b, stride=self.stride, padding=self.padding)
        for config in self.post:
            kind = config["type"]
            if kind == "relu":
                z = torch.relu(z)
            elif kind == "tanh":
                z = torch.tanh(z)
            elif kind == "sigmoid":
                z = torch.sigmoid(z)
            elif kind == "maxpool2d":
                z = F.max_pool2d(z, tuple(config["kernel_size"]), tuple(config["stride"]))
            elif kind == "avgpool2d":
                z = F.avg_pool2d(z, tuple(config["kernel_size"]), tuple(config["stride"]))
            # identity and flatten change nothing in unit form
        return z.reshape(n, self.rows, self.message_size)


def _run(rank: int, world_size: int, job: dict[str, Any], progress: Any) -> dict[str, np.ndarray]:
    started = time.perf_counter()
    progress[rank] = _STARTING
    _fault(rank, 0)
    import torch

    from .export import load_export

    model = load_export(job["directory"], workers=(rank,))
    if model.k != world_size:
        raise ValueError(f"the export is for {model.k} workers, this group has {world_size}")
    arrays = model.shards[rank]
    held_units = model.held_input(rank)
    layers = []
    for plan in model.layers:
        layers.append(_WorkerLayer(plan, rank, arrays, held_units))
        held_units = plan.owned[rank]
    x_held = torch.from_numpy(np.load(Path(job["workdir"]) / f"input{rank}.npy", allow_pickle=False))
    slot = world_size + rank
    with _Phase(progress, slot, AT_BARRIER):  # the rendezvous waits for every rank
        dist = _init_group(rank, world_size, job)
    setup_time = time.perf_counter() - started

    L, k, n = model.n_layers, world_size, x_held.shape[0]
    s_out = model.message_sizes[-1]
    # index tensors from copies: torch refuses to alias the read-only arrays of the plan
    gather_in = [(src, torch.from_numpy(units.copy())) for src, units in model.gather] if rank == 0 else []
    sink_units = torch.from_numpy(model.layers[-1].owned[0].copy())
    gather_out = model.output == "gather" and rank != 0 and model.layers[-1].owned[rank].size > 0
    passes = int(job["warmup"]) + int(job["repeats"])
    layer_times = np.zeros((passes, L))
    gather_times = np.zeros(passes)
    total_times = np.zeros(passes)
    sent = np.zeros((L, k), dtype=np.int64)
    received = np.zeros((L, k), dtype=np.int64)
    gather_sent = np.zeros(1, dtype=np.int64)
    gather_received = np.zeros(k, dtype=np.int64)
    synchronize = bool(job["synchronize"])
    held = x_held
    for p in range(passes):
        sent[:] = 0
        received[:] = 0
        gather_sent[:] = 0
        gather_received[:] = 0
        with _Phase(progress, slot, AT_BARRIER):
            dist.barrier()  # every pass starts together
        begin = time.perf_counter()
        held = x_held
        for i, layer in enumerate(layers):
            progress[rank] = layer.index
            _fault(rank, layer.index)
            if synchronize:
                with _Phase(progress, slot, AT_BARRIER):
                    dist.barrier()
            t0 = time.perf_counter()
            requests, buffers = [], []
            for src, count in layer.receives:
                buffer = torch.empty((n, count, layer.in_message_size), dtype=x_held.dtype)
                requests.append(dist.irecv(buffer, src=src, tag=layer.index))
                buffers.append(buffer)
                received[i, src] = buffer.numel() * buffer.element_size()
            payloads = []  # kept alive until the sends complete
            for dst, index in layer.sends:
                payload = held.index_select(1, index)
                requests.append(dist.isend(payload, dst=dst, tag=layer.index))
                payloads.append(payload)
                sent[i, dst] = payload.numel() * payload.element_size()
            with _Phase(progress, slot, WAITING_FOR_MESSAGES):
                for request in requests:
                    request.wait()
            pool = torch.cat([held] + buffers, dim=1) if buffers else held
            x = pool if layer.read_all else pool.index_select(1, layer.read_index)
            held = layer.compute(x)
            layer_times[p, i] = time.perf_counter() - t0
        progress[rank] = L + 1
        if synchronize:
            with _Phase(progress, slot, AT_BARRIER):
                dist.barrier()
        t0 = time.perf_counter()
        outputs = held
        if gather_out:
            payload = held.contiguous()
            with _Phase(progress, slot, WAITING_FOR_MESSAGES):
                dist.isend(payload, dst=0, tag=L + 1).wait()
            gather_sent[0] = payload.numel() * payload.element_size()
        elif gather_in:
            full = torch.empty((n, model.unit_counts[-1], s_out), dtype=x_held.dtype)
            full[:, sink_units] = held
            requests, buffers = [], []
            for src, units in gather_in:
                buffer = torch.empty((n, units.numel(), s_out), dtype=x_held.dtype)
                requests.append(dist.irecv(buffer, src=src, tag=L + 1))
                buffers.append((units, buffer))
                gather_received[src] = buffer.numel() * buffer.element_size()
            with _Phase(progress, slot, WAITING_FOR_MESSAGES):
                for request in requests:
                    request.wait()
            for units, buffer in buffers:
                full[:, units] = buffer
            outputs = full
        end = time.perf_counter()
        gather_times[p] = end - t0
        total_times[p] = end - begin
    progress[rank] = _DONE - 1  # past the last pass
    with _Phase(progress, slot, AT_BARRIER):
        dist.barrier()  # nobody tears the group down while a peer still waits on it
    dist.destroy_process_group()
    if model.output == "gather":
        out_units = np.arange(model.unit_counts[-1]) if rank == 0 else np.zeros(0, dtype=np.int64)
        outputs_np = outputs.numpy() if rank == 0 else np.zeros((n, 0, s_out), dtype=x_held.numpy().dtype)
    else:
        out_units = model.layers[-1].owned[rank]
        outputs_np = outputs.numpy()
    keep = slice(int(job["warmup"]), None)
    return {
        "layer_times": layer_times[keep],
        "gather_times": gather_times[keep],
        "total_times": total_times[keep],
        "sent": sent,
        "received": received,
        "gather_sent": gather_sent,
        "gather_received": gather_received,
        "outputs": outputs_np,
        "output_units": np.asarray(out_units, dtype=np.int64),
        "setup_time": np.array([setup_time]),
    }


# ------------------------------------------------------------------------------------- calibration
def _calibrate(rank: int, world_size: int, job: dict[str, Any], progress: Any) -> dict[str, np.ndarray]:
    progress[rank] = _STARTING
    _fault(rank, 0)
    import torch

    with _Phase(progress, world_size + rank, AT_BARRIER):
        dist = _init_group(rank, world_size, job)
    size = int(job["matmul_size"])
    repeats = int(job["repeats"])
    progress[rank] = 1
    generator = torch.Generator().manual_seed(rank)
    a = torch.randn((size, size), generator=generator)
    b = torch.randn((size, size), generator=generator)
    flop_times = np.zeros(repeats)
    for turn in range(world_size):  # one worker at a time: its own speed, not the host's contention
        if turn == rank:
            torch.mm(a, b)  # warm-up: first call allocates and picks kernels
            for r in range(repeats):
                t0 = time.perf_counter()
                torch.mm(a, b)
                flop_times[r] = time.perf_counter() - t0
        dist.barrier()

    sizes = [int(s) for s in job["message_bytes"]]
    pingpongs = int(job["pingpongs"])
    # rtt[j, s, r]: round trip of the r-th ping-pong of sizes[s] bytes between this worker and j (as initiator)
    rtt = np.full((world_size, len(sizes), pingpongs), np.nan)
    progress[rank] = 2
    for i in range(world_size):
        for j in range(i + 1, world_size):
            if rank in (i, j):
                peer = j if rank == i else i
                for s, nbytes in enumerate(sizes):
                    buffer = torch.zeros(max(1, nbytes // 4), dtype=torch.float32)
                    for r in range(pingpongs + 1):  # the first round trip warms the connection up
                        t0 = time.perf_counter()
                        if rank == i:
                            dist.send(buffer, dst=peer)
                            dist.recv(buffer, src=peer)
                        else:
                            dist.recv(buffer, src=peer)
                            dist.send(buffer, dst=peer)
                        if rank == i and r > 0:
                            rtt[peer, s, r - 1] = time.perf_counter() - t0
            dist.barrier()  # pairs one at a time: a link is measured alone
    dist.barrier()
    dist.destroy_process_group()
    return {
        "flop_times": flop_times,
        "flops": np.array([2.0 * size**3]),
        "rtt": rtt,
        "message_bytes": np.asarray([max(1, s // 4) * 4 for s in sizes], dtype=np.int64),
    }
