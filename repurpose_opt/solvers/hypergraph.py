"""``hypergraph``: Mt-KaHyPar km1 partitioning of each layer's column-net hypergraph, layer by layer.

SPEC §2's volume of layer l is exactly the km1 (connectivity − 1) metric of its column-net hypergraph:
one net per consumed activation j of layer l-1, weight s_{l-1}, whose pins are j's consumers in layer l
*and* j's producer. Layer by layer, the units of layer l are the free vertices and the units of layer
l-1, already placed, are fixed vertices, so each net's km1 counts exactly the workers j must be sent to.

Order of the sweep (the partition-only peer of the hypergraph seed paper):

- fixed input: layers 1..L forward, each with the previous layer fixed;
- free input: layer 1 is partitioned on the nets "consumers of input j" (km1 = the volume if every input
  could sit with one of its consumers), then the input is placed with layer 1 fixed (nets {j} ∪ consumers),
  then layers 2..L forward;
- replicated input (layer 1 is free to read): the same with layers 1 and 2 in the roles of 0 and 1.

``output="gather"`` adds, when layer L is partitioned, one net {i, sink} of weight s_L per output unit, with
a sink vertex fixed on worker 0: its km1 is s_L exactly when i is not on worker 0.

Balance: every vertex has weight 1 (Mt-KaHyPar crashes on zero weights), and block k may weigh at most
``capacity_l[k]`` plus the fixed vertices it holds (``set_individual_target_block_weights``). The result is
checked; if a block still exceeds its capacity, units are moved out of it, cheapest km1 increase first,
into blocks with room. FLOPs/parameter capacities are not modelled: a placement that breaks one is
reported as NO_SOLUTION (never returned).

The native partitioner runs in a child process (one per solve, serving every layer), so a crash of the
library (a segfault, an abort) becomes a :class:`~repurpose_opt.SolverError` instead of killing the caller.
Results are deterministic for a given seed with the default ``"deterministic"`` preset. Status FEASIBLE.

Time limit and Ctrl-C. The child ignores SIGINT (a terminal's Ctrl-C reaches the whole process group); the
parent waits on its pipe with the deadline, and on a timeout or a ``KeyboardInterrupt`` kills it at once
(never waits for it to finish a layer). After every step the layers placed so far, completed by the
contiguous split for the others, are offered as an incumbent (:func:`~.base.offer_incumbent`): that is
what a Ctrl-C returns, and what the time limit returns (status FEASIBLE, the message naming the layers
that were not partitioned). ``can_solve`` refuses hypergraphs whose estimated size (pins, ~1 KiB each in
Mt-KaHyPar) exceeds :func:`~.base.memory_budget`.

RestructureProblem: this engine places the importance-sparsified network, then the shared ℓ0 adjustment
runs in cascade (SPEC §4, :func:`~.restructure_engine.restructure_with_partitioner`).
"""

from __future__ import annotations

import os
import pickle
import re
import select
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from ..errors import InvalidParameterError, SolverError
from ..solution import Status
from .base import (
    MEMORY_ENV,
    Backend,
    BackendResult,
    Option,
    choice,
    describe_exit,
    format_bytes,
    integer,
    memory_budget,
    number,
)
from .placement import block_sizes, contiguous_placement, extra_capacity_violation

__all__ = ["HypergraphBackend"]

PRESETS = {
    "deterministic": "DETERMINISTIC",
    "deterministic_quality": "DETERMINISTIC_QUALITY",
    "default": "DEFAULT",
    "quality": "QUALITY",
    "highest_quality": "HIGHEST_QUALITY",
    "large_k": "LARGE_K",
}

# The child: reads length-prefixed pickled requests on stdin, answers on a private copy of stdout (fd 1
# itself is pointed at stderr so that anything the native library prints cannot corrupt the protocol).
# It imports only mtkahypar and the standard library, so it starts fast.
_WORKER_SOURCE = r"""
import os, pickle, signal, struct, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops this process; a terminal's Ctrl-C must not
reply = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)
import mtkahypar
threads = int(sys.argv[1])
init = mtkahypar.initialize(threads, False)
source = sys.stdin.buffer

def read_exact(n):
    data = b""
    while len(data) < n:
        chunk = source.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data

while True:
    head = read_exact(8)
    if head is None:
        break
    request = pickle.loads(read_exact(struct.unpack(">Q", head)[0]))
    try:
        mtkahypar.set_seed(int(request["seed"]))
        context = init.context_from_preset(getattr(mtkahypar.PresetType, request["preset"]))
        context.set_partitioning_parameters(int(request["k"]), float(request["epsilon"]), mtkahypar.Objective.KM1)
        context.logging = False
        graph = init.create_hypergraph(
            context, int(request["num_nodes"]), len(request["nets"]), request["nets"],
            request["node_weights"], request["net_weights"],
        )
        if request.get("fixed") is not None:
            graph.add_fixed_vertices(request["fixed"], int(request["k"]))
        context.set_individual_target_block_weights(request["max_block_weights"])
        partitioned = graph.partition(context)
        answer = {"ok": True, "partition": partitioned.get_partition(), "km1": int(partitioned.km1())}
    except Exception as exc:
        answer = {"ok": False, "error": type(exc).__name__ + ": " + str(exc)}
    payload = pickle.dumps(answer, protocol=4)
    reply.write(struct.pack(">Q", len(payload)) + payload)
    reply.flush()
"""


#: Peak bytes per pin of the worker (Mt-KaHyPar's hypergraph; ~740 measured on 80k-480k pins, rounded up).
BYTES_PER_PIN = 1024


def _worker_command(threads: int) -> list[str]:
    return [sys.executable, "-c", _WORKER_SOURCE, str(int(threads))]


class _TimedOut(Exception):
    pass


class _MtKaHyPar:
    """A child process running Mt-KaHyPar; ``partition(request)`` -> ``{"partition": [...], "km1": int}``."""

    def __init__(self, threads: int = 1) -> None:
        self.threads = int(threads)
        self.process: subprocess.Popen | None = None
        self.errors = None

    def __enter__(self) -> _MtKaHyPar:
        self.errors = tempfile.TemporaryFile()
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        self.process = subprocess.Popen(
            _worker_command(self.threads), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors, env=env
        )
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        # Leaving on an exception (a timeout, Ctrl-C, a crash): the worker may be busy, so it is killed
        # rather than asked to finish.
        self.close(kill=kind is not None)

    def close(self, kill: bool = False) -> None:
        if self.process is not None:
            if kill and self.process.poll() is None:
                self.process.kill()
            try:
                if self.process.stdin:
                    self.process.stdin.close()
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
            if self.process.stdout:
                self.process.stdout.close()
            self.process = None
        if self.errors is not None:
            self.errors.close()
            self.errors = None

    def _stderr_tail(self) -> str:
        if self.errors is None:
            return ""
        self.errors.seek(0)
        text = self.errors.read().decode("utf-8", "replace").strip()
        return text[-600:]

    def _crashed(self, during: str) -> SolverError:
        process = self.process
        code = None
        if process is not None:
            try:
                code = process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
        tail = self._stderr_tail()
        self.close()
        return SolverError(f"Mt-KaHyPar {describe_exit(code)} {during}" + (f"; its last output: {tail}" if tail else ""))

    def _read_exact(self, n: int, deadline: float | None) -> bytes | None:
        fd = self.process.stdout.fileno()
        data = bytearray()
        while len(data) < n:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise _TimedOut
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                raise _TimedOut
            chunk = os.read(fd, n - len(data))
            if not chunk:
                return None
            data.extend(chunk)
        return bytes(data)

    def partition(self, request: dict[str, Any], deadline: float | None = None, during: str = "") -> dict[str, Any]:
        """Send one hypergraph, wait for its partition (raises SolverError on a crash, _TimedOut on time)."""
        if self.process is None:
            raise SolverError("the Mt-KaHyPar worker is not running")
        payload = pickle.dumps(request, protocol=4)
        try:
            self.process.stdin.write(struct.pack(">Q", len(payload)) + payload)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._crashed(during) from None
        try:
            head = self._read_exact(8, deadline)
            body = None if head is None else self._read_exact(struct.unpack(">Q", head)[0], deadline)
        except (_TimedOut, KeyboardInterrupt):
            self.close(kill=True)
            raise
        if body is None:
            raise self._crashed(during)
        answer = pickle.loads(body)
        if not answer.get("ok"):
            where = f" {during}" if during else ""
            reason = re.sub(r"\x1b\[[0-9;]*m", "", str(answer.get("error")))  # drop terminal colours
            raise SolverError(f"Mt-KaHyPar rejected the hypergraph{where}: {reason}")
        return answer


# ---------------------------------------------------------------------------------------- hypergraphs
class _Step:
    """One partitioning step: free vertices (the units placed now), fixed vertices, weighted nets.

    ``nets`` is a list of (free pins array, fixed blocks array, weight). Fixed pins are identified by
    their block only: each fixed block that a net touches counts once in its connectivity.
    """

    def __init__(self, n_free: int, capacity: np.ndarray, k: int, speed: np.ndarray) -> None:
        self.n_free = int(n_free)
        self.speed = np.asarray(speed, dtype=np.float64)
        self.capacity = np.asarray(capacity, dtype=np.int64)
        self.k = int(k)
        self.free_pins: list[np.ndarray] = []
        self.fixed_blocks: list[np.ndarray] = []
        self.weights: list[int] = []

    def add_net(self, free: np.ndarray, fixed_blocks: np.ndarray, weight: int) -> None:
        free = np.unique(np.asarray(free, dtype=np.int64))
        fixed_blocks = np.unique(np.asarray(fixed_blocks, dtype=np.int64))
        if free.size + fixed_blocks.size < 2 or free.size == 0:
            return  # a net of one pin, or of fixed pins only, costs the same wherever the free units go
        self.free_pins.append(free)
        self.fixed_blocks.append(fixed_blocks)
        self.weights.append(int(weight))

    # -- the request sent to Mt-KaHyPar: one fixed vertex per (block) that some net touches
    def request(self, preset: str, seed: int) -> dict[str, Any]:
        used_blocks = sorted({int(b) for blocks in self.fixed_blocks for b in blocks.tolist()})
        fixed_vertex = {b: self.n_free + t for t, b in enumerate(used_blocks)}
        nets = [
            free.tolist() + [fixed_vertex[int(b)] for b in blocks.tolist()]
            for free, blocks in zip(self.free_pins, self.fixed_blocks, strict=True)
        ]
        num_nodes = self.n_free + len(used_blocks)
        fixed = [-1] * self.n_free + used_blocks
        extra = np.zeros(self.k, dtype=np.int64)
        extra[used_blocks] += 1
        return {
            "num_nodes": num_nodes,
            "nets": nets,
            "node_weights": [1] * num_nodes,  # never 0: Mt-KaHyPar crashes on zero vertex weights
            "net_weights": list(self.weights),
            "fixed": fixed if used_blocks else None,
            "k": self.k,
            "epsilon": 0.0,
            "max_block_weights": (self.capacity + extra).tolist(),
            "preset": preset,
            "seed": int(seed),
        }

    def km1(self, blocks: np.ndarray) -> int:
        total = 0
        for free, fixed, weight in zip(self.free_pins, self.fixed_blocks, self.weights, strict=True):
            total += weight * (np.union1d(blocks[free], fixed).size - 1)
        return int(total)

    def repair(self, blocks: np.ndarray) -> int:
        """Move units out of blocks above capacity, cheapest km1 increase first (in place); returns the moves."""
        load = np.bincount(blocks, minlength=self.k)
        if np.all(load <= self.capacity):
            return 0
        # pins per (net, block), fixed pins included, and each free vertex's nets
        pins = np.zeros((len(self.weights), self.k), dtype=np.int64)
        incident: list[list[int]] = [[] for _ in range(self.n_free)]
        for e, (free, fixed) in enumerate(zip(self.free_pins, self.fixed_blocks, strict=True)):
            np.add.at(pins[e], blocks[free], 1)
            pins[e, fixed] += 1
            for v in free.tolist():
                incident[v].append(e)
        weights = np.asarray(self.weights, dtype=np.int64)
        moves = 0
        while True:
            over = np.flatnonzero(load > self.capacity)
            if over.size == 0:
                return moves
            source = int(over[0])
            room = np.flatnonzero(load < self.capacity)
            best = None
            for v in np.flatnonzero(blocks == source).tolist():
                nets = np.asarray(incident[v], dtype=np.int64)
                if nets.size:
                    leave = np.sum(weights[nets] * (pins[nets, source] == 1))
                    enter = (weights[nets][:, None] * (pins[nets][:, room] == 0)).sum(axis=0)
                    delta = enter - leave
                else:
                    delta = np.zeros(room.size, dtype=np.int64)
                t = int(np.argmin(delta))
                if best is None or delta[t] < best[0]:
                    best = (int(delta[t]), v, int(room[t]))
            _, v, target = best
            for e in incident[v]:
                pins[e, source] -= 1
                pins[e, target] += 1
            blocks[v] = target
            load[source] -= 1
            load[target] += 1
            moves += 1


def _consumers(layer: Any) -> list[np.ndarray]:
    """For each input unit j of the layer, the units that read it (CSC of the connectivity)."""
    csc = layer.connectivity.tocsc()
    return [csc.indices[csc.indptr[j] : csc.indptr[j + 1]] for j in range(layer.n_inputs)]


class HypergraphBackend(Backend):
    """Mt-KaHyPar km1 on each layer's column-net hypergraph, previous layer fixed (the partition-only peer)."""

    name = "hypergraph"
    description = "Mt-KaHyPar km1 partitioning of each layer's column-net hypergraph, previous layer fixed"
    requires = ("mtkahypar",)
    extra = "hypergraph"
    problem_types = ("PartitionProblem", "RestructureProblem")
    options = {
        "preset": Option("deterministic", f"Mt-KaHyPar preset: {', '.join(PRESETS)} (only the deterministic ones are reproducible)", check=choice(*PRESETS)),
        "threads": Option(1, "threads of the Mt-KaHyPar worker process", check=integer(minimum=1)),
        "keep": Option(0.1, "RestructureProblem: fraction of most important connections kept for placing", check=number(strictly_positive=True, maximum=1.0)),
    }

    def solve(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        if type(problem).__name__ == "RestructureProblem":
            # SPEC §4: place with this engine (on the importance-sparsified network), then the shared ℓ0 adjustment.
            from .restructure_engine import restructure_with_partitioner

            return restructure_with_partitioner(problem, "hypergraph", keep=float(options["keep"]), time_limit=time_limit, seed=seed,
                                                options={"preset": options["preset"], "threads": options["threads"]})
        preset = options["preset"]
        if preset not in PRESETS:
            raise InvalidParameterError(f"option `preset` must be one of {', '.join(PRESETS)}, got {preset!r}")
        threads = int(options["threads"])
        if threads < 1:
            raise InvalidParameterError(f"option `threads` must be >= 1, got {threads}")
        seed = 0 if seed is None else int(seed)
        deadline = None if time_limit is None else time.monotonic() + float(time_limit)
        network, cluster = problem.network, problem.cluster
        k, L = cluster.k, network.n_layers
        counts, sizes = network.unit_counts, network.message_sizes
        caps = problem.capacities
        structure = network.structure
        placed: dict[int, np.ndarray] = {}
        stats: dict[str, Any] = {"steps": [], "preset": preset, "seed": seed}
        if problem.input_mode == "replicated":
            placed[0] = np.full(counts[0], -1, dtype=np.int64)
        elif problem.input_mode == "fixed":
            placed[0] = np.asarray(problem.input_placement, dtype=np.int64)

        def gather_nets(step: _Step, l: int) -> None:
            if l == L and problem.output == "gather" and k > 1:
                for i in range(counts[L]):
                    step.add_net(np.array([i]), np.array([0]), sizes[L])

        def forward(l: int) -> _Step:
            """Layer l free, layer l-1 fixed: nets {producer j} ∪ consumers(j)."""
            step = _Step(counts[l], caps[l], k, cluster.speed)
            source = placed[l - 1]
            for j, readers in enumerate(_consumers(structure[l - 1])):
                if readers.size:
                    step.add_net(readers, source[j : j + 1], sizes[l - 1])
            gather_nets(step, l)
            return step

        def consumers_only(l: int) -> _Step:
            """Layer l free, producers (layer l-1) not yet placed: nets consumers(j)."""
            step = _Step(counts[l], caps[l], k, cluster.speed)
            for readers in _consumers(structure[l - 1]):
                if readers.size > 1:
                    step.add_net(readers, np.zeros(0, dtype=np.int64), sizes[l - 1])
            gather_nets(step, l)
            return step

        def gather_only(l: int) -> _Step:
            step = _Step(counts[l], caps[l], k, cluster.speed)
            gather_nets(step, l)
            return step

        def backward(l: int) -> _Step:
            """Layer l-1 free (the producers), layer l fixed: nets {j} ∪ consumers(j)."""
            step = _Step(counts[l - 1], caps[l - 1], k, cluster.speed)
            target = placed[l]
            for j, readers in enumerate(_consumers(structure[l - 1])):
                if readers.size:
                    step.add_net(np.array([j]), target[readers], sizes[l - 1])
            return step

        plan: list[tuple[int, Any]] = []
        if problem.input_mode == "fixed":
            plan = [(l, forward) for l in range(1, L + 1)]
        else:
            lead = 0 if problem.input_mode == "free" else 1  # the first free layer
            if lead + 1 <= L:
                plan = [(lead + 1, consumers_only), (lead, lambda l: backward(l + 1))]
                plan += [(l, forward) for l in range(lead + 2, L + 1)]
            else:  # a one-layer network with a replicated input: only the gather has a cost
                plan = [(lead, gather_only)]

        def completed() -> tuple[np.ndarray, ...]:
            """The layers placed so far; the others split contiguously (an incumbent at every step)."""
            return tuple(placed[l] if l in placed else contiguous_placement(block_sizes(counts[l], cluster.speed, caps[l]))
                         for l in range(L + 1))

        stopped = None
        try:
            with _MtKaHyPar(threads) as engine:
                for l, make in plan:
                    if deadline is not None and time.monotonic() > deadline:
                        raise _TimedOut
                    started = time.perf_counter()
                    step = make(l)
                    blocks, km1, native = self._run(engine, step, preset, seed, deadline, l)
                    moves = step.repair(blocks)
                    placed[l] = blocks
                    stats["steps"].append(
                        {"layer": l, "nets": len(step.weights), "km1_native": native, "km1": step.km1(blocks),
                         "repair_moves": moves, "seconds": time.perf_counter() - started}
                    )
                    candidate = completed()
                    if extra_capacity_violation(problem, candidate) is None:
                        self.offer(candidate, message=f"Mt-KaHyPar placed layers {sorted(placed)}; the others keep the contiguous split")
        except _TimedOut:
            missing = [l for l, _ in plan if l not in placed]
            stopped = f"the time limit ran out before layers {missing} were partitioned; they keep the contiguous split"
        assignment = completed()
        violation = extra_capacity_violation(problem, assignment)
        if violation is not None:
            return BackendResult(Status.NO_SOLUTION, message=f"the km1 partition breaks a capacity Mt-KaHyPar does not model: {violation}", stats=stats)
        if stopped is not None:
            stats["time_limit_reached"] = True
            return BackendResult(Status.FEASIBLE, assignment, message=f"Mt-KaHyPar km1: {stopped}", stats=stats)
        return BackendResult(Status.FEASIBLE, assignment, message=f"Mt-KaHyPar km1, {len(plan)} steps", stats=stats)

    def can_solve(self, problem: Any) -> str | None:
        reason = super().can_solve(problem)
        if reason is not None or type(problem).__name__ != "PartitionProblem":
            return reason
        network = problem.network
        # The largest step: one net per consumed activation, its consumers plus the producer as pins.
        pins = max(int(s.connectivity.nnz) + s.n_inputs for s in network.structure)
        need, limit = pins * BYTES_PER_PIN, memory_budget()
        if need > limit:
            return (f"the largest layer's hypergraph would have {pins:,} pins / ~{format_bytes(need)} (about "
                    f"{BYTES_PER_PIN} bytes per pin); limit {format_bytes(limit)} (${MEMORY_ENV}); use greedy or munkres")
        return None

    @staticmethod
    def _run(engine: _MtKaHyPar, step: _Step, preset: str, seed: int, deadline: float | None, l: int) -> tuple[np.ndarray, int, int | None]:
        if step.k == 1:
            return np.zeros(step.n_free, dtype=np.int64), 0, None
        if not step.weights:  # nothing to cut: any balanced placement is optimal for this step
            sizes = block_sizes(step.n_free, step.speed, step.capacity)
            return contiguous_placement(sizes), 0, None
        answer = engine.partition(step.request(PRESETS[preset], seed), deadline, during=f"while partitioning layer {l}")
        blocks = np.asarray(answer["partition"][: step.n_free], dtype=np.int64)
        if blocks.shape[0] != step.n_free or np.any((blocks < 0) | (blocks >= step.k)):
            raise SolverError(f"Mt-KaHyPar returned an invalid partition for layer {l}")
        return blocks, step.km1(blocks), int(answer["km1"])

