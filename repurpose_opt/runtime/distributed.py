"""Execute an exported placement on K processes with ``torch.distributed`` (gloo by default).

The parent process never imports torch. It validates the export, writes each worker's input units to the
run's work directory, starts K worker processes and watches them: a worker that exits with an error or
dies, or a run that exceeds ``timeout``, stops every worker and raises :class:`RuntimeFailure` naming who
failed where, so a run never hangs.

Start-up cost is dominated by importing torch in each worker. By default the workers are forked from a
``forkserver`` that has torch and this package preloaded, so the import is paid once per parent process
(a few seconds on a loaded machine) instead of once per worker per run; ``start_method="spawn"`` starts clean interpreters.

Several hosts
-------------
Rendezvous uses ``init_method``: by default a ``file://`` path in a fresh temporary directory (no port to
pick, no clash). For several hosts, copy the export directory and the batch to every host and call
``run_distributed(export_dir, X, init_method="tcp://HOST0:PORT", ranks=[...])`` (or ``repurpose-opt run
--init-method tcp://HOST0:PORT --ranks ...``) on each host with the ranks it runs; HOST0 is the host of
rank 0, whose process listens on PORT. ``env://`` reads ``MASTER_ADDR``/``MASTER_PORT`` instead. Each
host's result covers its own workers (the sink's host gets the gathered outputs). This path is tested
on loopback (``MASTER_ADDR=127.0.0.1``, two "hosts" as two callers in one machine).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import as_choice, as_float, as_int
from ..errors import InvalidParameterError, RepurposeError
from .export import ExportedModel, export, load_export

__all__ = ["run_distributed", "RunResult", "RuntimeFailure"]

_START_METHODS = ("forkserver", "spawn")
_PRELOAD = ["torch", "torch.distributed", "torch.nn.functional", "repurpose_opt.runtime._worker", "repurpose_opt.runtime.export"]
_GRACE = 0.5  # seconds to let the other workers report after the first failure (to name the root cause)
# The process group's timeout exceeds the run's by this much: the parent's deadline always fires first (and
# names where every worker was); the group's only frees workers whose parent vanished.
_GROUP_TIMEOUT_MARGIN = 10.0


class RuntimeFailure(RepurposeError, RuntimeError):
    """A worker of a distributed run failed, died or hung; every worker was stopped."""


@dataclass(frozen=True, eq=False)
class RunResult:
    """What a distributed run produced and measured (one forward pass over the batch).

    Attributes
    ----------
    outputs : ndarray (N, n_outputs)
        The network outputs in original unit order (float64 copy of the wire dtype). When only some ranks
        ran here (``ranks``), the outputs no local worker holds are NaN: all of them with
        ``output="gather"`` unless the sink, worker 0, is local.
    link_bytes : ndarray (L, K, K), int
        Bytes actually handed to ``isend`` on each directed link ``(src, dst)`` in each layer, for the
        whole batch (``N`` times the simulator's per-sample ``link_bytes``). Links with neither end here
        are 0 in a partial run.
    gather_bytes : ndarray (K,), int
        Bytes each worker sent to the sink, worker 0, for ``output="gather"``.
    layer_times : ndarray (L,)
        Seconds per layer, the maximum over (local) workers (median over ``repeats``).
    gather_time, total_time : float
        The gather step and the whole forward pass (first layer to outputs), max over workers.
    worker_layer_times : ndarray (K, L)
    worker_total_times : ndarray (K,)
    setup_times : ndarray (K,)
        Per worker: loading its shard and joining the process group. NaN for workers on other hosts.
    wall_time : float
        The whole call, process start-up included.
    n_samples, k : int
    backend, init_method : str
    synchronized : bool
        Whether a barrier separated layers (the α-β model's synchronous schedule).
    repeats : int
    ranks : tuple of int
        The workers that ran on this host (all K unless ``run_distributed(ranks=...)``).
    output : str
        The export's output mode, ``"gather"`` or ``"distributed"``.
    pass_times : ndarray (repeats,)
        Every timed pass, first layer to outputs, max over workers: ``total_time`` is their median; their
        minimum is the run with the least interference from other processes on the host.
    """

    outputs: np.ndarray
    link_bytes: np.ndarray
    gather_bytes: np.ndarray
    layer_times: np.ndarray
    gather_time: float
    total_time: float
    worker_layer_times: np.ndarray
    worker_total_times: np.ndarray
    setup_times: np.ndarray
    wall_time: float
    n_samples: int
    k: int
    backend: str
    init_method: str
    synchronized: bool
    repeats: int = 1
    ranks: tuple[int, ...] = ()
    output: str = "gather"
    pass_times: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def complete(self) -> bool:
        """Whether every worker ran here (then every figure covers the whole run)."""
        return len(self.ranks) == self.k

    def known_links(self) -> np.ndarray:
        """``(K, K)`` mask of the links whose bytes this result knows (one end ran here)."""
        here = np.zeros(self.k, dtype=bool)
        here[list(self.ranks)] = True
        return here[:, None] | here[None, :]

    @property
    def bytes_per_layer(self) -> np.ndarray:
        """``(L,)`` bytes sent in each layer."""
        return self.link_bytes.sum(axis=(1, 2))

    @property
    def comm_bytes(self) -> int:
        """Every byte sent for the batch, gather included."""
        return int(self.link_bytes.sum() + self.gather_bytes.sum())

    @property
    def time_per_sample(self) -> float:
        """``total_time / n_samples``."""
        return self.total_time / self.n_samples

    def table(self) -> str:
        """A plain-text table of bytes and times per layer."""
        lines = [f"{'layer':>6} {'bytes':>12} {'time [ms]':>10}"]
        for l, (nbytes, seconds) in enumerate(zip(self.bytes_per_layer, self.layer_times, strict=True), start=1):
            lines.append(f"{l:>6} {int(nbytes):>12} {seconds * 1e3:>10.3f}")
        lines.append(f"{'gather':>6} {int(self.gather_bytes.sum()):>12} {self.gather_time * 1e3:>10.3f}")
        lines.append(f"{'total':>6} {self.comm_bytes:>12} {self.total_time * 1e3:>10.3f}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ launching
def _context(start_method: str | None) -> Any:
    available = multiprocessing.get_all_start_methods()
    if start_method is None:
        start_method = "forkserver" if "forkserver" in available else "spawn"
    start_method = as_choice("start_method", start_method, _START_METHODS)
    if start_method not in available:
        raise InvalidParameterError(f"`start_method` {start_method!r} is not available on this platform; use 'spawn'")
    ctx = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        # Effective only before the server starts; later calls reuse the running server.
        ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def _describe_layer(value: int, n_layers: int | None, phase: int = 0, steps: dict[int, str] | None = None) -> str:
    from ._worker import AT_BARRIER, WAITING_FOR_MESSAGES

    if steps and value in steps:
        where = steps[value]
    elif value <= 0:
        where = "start-up"
    elif value >= 1_000_000:
        where = "finished"
    elif value == 1_000_000 - 1:
        where = "the final barrier"
    elif n_layers is not None and value == n_layers + 1:
        where = "the gather"
    else:
        where = f"layer {value}"
    if phase == WAITING_FOR_MESSAGES:
        return f"waiting for messages in {where}"
    if phase == AT_BARRIER:
        return f"waiting for the other workers in {where}"
    return f"in {where}"


def launch(
    job: dict[str, Any], k: int, timeout: float, start_method: str | None, n_layers: int | None = None,
    ranks: Sequence[int] | None = None, steps: dict[int, str] | None = None,
) -> None:
    """Start the workers ``ranks`` (default all ``k``) on ``job``, wait for them, raise on any failure.

    Workers report through files in ``job["workdir"]``. The parent waits on the process sentinels, so a
    worker's death is seen at once; after the first failure the others get a short grace period to report
    (their errors are usually consequences), then every worker still alive is killed. The deadline is the
    parent's: the process group's own timeout is longer (see ``_GROUP_TIMEOUT_MARGIN``), so a hang is always
    reported as a hang, with where each worker was. ``steps`` names progress values other than layers.
    """
    from ._worker import worker_main

    ranks = list(range(k)) if ranks is None else list(ranks)
    ctx = _context(start_method)
    progress = ctx.Array("i", [0] * (2 * k), lock=False)  # per rank: step, then phase (see _worker)
    job = dict(job, env=dict(os.environ))
    processes = {
        rank: ctx.Process(target=worker_main, args=(rank, k, job, progress), daemon=True, name=f"repurpose-opt-worker-{rank}")
        for rank in ranks
    }
    deadline = time.monotonic() + timeout
    order: list[int] = []
    try:
        _start_without_main(list(processes.values()))
        first_failure: float | None = None
        while True:
            codes = {rank: process.exitcode for rank, process in processes.items()}
            failed = [rank for rank, code in codes.items() if code not in (None, 0)]
            if failed and first_failure is None:
                first_failure = time.monotonic()
                # Failures seen in the same poll: the one that died silently or raised its own error is the
                # cause; transport errors from its peers are consequences.
                order = sorted(failed, key=lambda rank: _consequence_rank(job, rank))
            if all(code == 0 for code in codes.values()):
                return
            now = time.monotonic()
            if first_failure is not None and (now - first_failure >= _GRACE or all(c is not None for c in codes.values())):
                later = sorted((rank for rank in failed if rank not in order), key=lambda rank: _consequence_rank(job, rank))
                raise RuntimeFailure(_failure_message(job, codes, order + later, list(progress), n_layers, steps))
            if now >= deadline:
                running = [rank for rank, code in codes.items() if code is None]
                where = ", ".join(f"worker {rank} {_describe_layer(progress[rank], n_layers, progress[k + rank], steps)}" for rank in running)
                raise RuntimeFailure(
                    f"distributed run timed out after {timeout:g} s: {len(running)} of {len(processes)} workers still "
                    f"running ({where}); all workers were stopped. A worker hung or the rendezvous "
                    f"({job['init_method']}) never completed; raise `timeout` for a slow start-up."
                )
            alive = [process.sentinel for rank, process in processes.items() if codes[rank] is None]
            wait = min(deadline - now, 0.05 if first_failure is not None else 1.0)
            multiprocessing.connection.wait(alive, timeout=max(wait, 0.0))
    finally:
        for process in processes.values():
            if process.is_alive():
                process.kill()
        for process in processes.values():
            process.join(timeout=5)


#: Words of the errors a worker gets when a peer vanished: such a failure is a consequence, not a cause.
_TRANSPORT_WORDS = ("connection closed", "connection reset", "broken pipe", "timed out", "timeout", "gloo", "distbackenderror", "socket")


def _consequence_rank(job: dict[str, Any], rank: int) -> int:
    """0: died without a report (the likely cause); 1: raised its own error; 2: a transport error."""
    error_file = Path(job["workdir"]) / f"error{rank}.txt"
    if not error_file.is_file():
        return 0
    headline = (error_file.read_text().strip().splitlines() or [""])[0].lower()
    return 2 if any(word in headline for word in _TRANSPORT_WORDS) else 1


_MAIN_LOCK = threading.Lock()


def _start_without_main(processes: list[Any]) -> None:
    """Start ``processes`` without making them re-import the caller's ``__main__``.

    ``spawn``/``forkserver`` children normally re-run the parent's main script (as ``__mp_main__``) in
    case the target lives there. Ours never does, and the re-run costs every worker the script's imports,
    runs its unguarded top-level code, and fails outright when the script has no file (``python -``).
    multiprocessing decides from ``__main__.__file__``/``__spec__`` when a process starts, so they are
    hidden for that moment.
    """
    main = sys.modules.get("__main__")
    with _MAIN_LOCK:
        saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if main is not None and name in main.__dict__}
        try:
            if main is not None:
                main.__dict__.pop("__file__", None)
                main.__dict__["__spec__"] = None
            for process in processes:
                process.start()
        finally:
            if main is not None:
                main.__dict__.pop("__spec__", None)
                main.__dict__.update(saved)


def _failure_message(
    job: dict[str, Any], codes: dict[int, int | None], order: list[int], progress: list[int], n_layers: int | None,
    steps: dict[int, str] | None = None,
) -> str:
    k = len(progress) // 2
    workdir = Path(job["workdir"])
    parts = []
    for position, rank in enumerate(order):
        code = codes[rank]
        where = _describe_layer(progress[rank], n_layers, progress[k + rank], steps)
        error_file = workdir / f"error{rank}.txt"
        if error_file.is_file():
            text = error_file.read_text().strip()
            headline = text.splitlines()[0] if text else "unknown error"
            if position > 0 and len(headline) > 160:  # a consequence: the peers' transport errors are long
                headline = headline[:157] + "..."
            what = f"worker {rank} failed {where}: {headline}"
        elif code is not None and code < 0:
            what = f"worker {rank} was killed by signal {-code} {where}"
        else:
            what = f"worker {rank} died with exit code {code} {where} without reporting an error (crashed or exited)"
        parts.append(what if position == 0 else f"then {what}")
    return "distributed run failed: " + "; ".join(parts) + "; all workers were stopped"


def _check_init_method(init_method: Any, workdir: Path) -> str:
    if init_method is None:
        return (workdir / "rendezvous").resolve().as_uri()
    if not isinstance(init_method, str) or not init_method.startswith(("file://", "tcp://", "env://")):
        raise InvalidParameterError(
            f"`init_method` must be a 'file://PATH', 'tcp://HOST:PORT' or 'env://' URL, got {init_method!r}"
        )
    if init_method.startswith("tcp://"):
        host, _, port = init_method[len("tcp://"):].rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidParameterError(f"`init_method` must be 'tcp://HOST:PORT' with a port in 1..65535, got {init_method!r}")
    if init_method.startswith("env://") and not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
        raise InvalidParameterError("`init_method` 'env://' needs the MASTER_ADDR and MASTER_PORT environment variables")
    if init_method.startswith("file://") and Path(init_method[len("file://"):]).exists():
        # A stale rendezvous file from an earlier run makes the new group wait for ranks that never come.
        raise InvalidParameterError(f"`init_method` file {init_method!r} already exists; give a fresh path")
    return init_method


# ------------------------------------------------------------------------------------------- running
def run_distributed(
    solution_or_export_dir: Any,
    X: Any,
    world_size: int | None = None,
    init_method: str | None = None,
    backend: str = "gloo",
    timeout: float = 60.0,
    *,
    ranks: Iterable[int] | None = None,
    synchronize: bool = False,
    repeats: int = 1,
    warmup: int = 0,
    num_threads: int = 1,
    start_method: str | None = None,
) -> RunResult:
    """Run a placed network on ``K`` worker processes with ``torch.distributed``.

    Each worker loads the manifest and only its own shard; per layer it posts ``irecv``/``isend`` of
    exactly the activations in its lists (the simulator's messages, in the export's dtype, float32 by
    default), computes its units in torch, and at the end the outputs are gathered on worker 0
    (``output="gather"``) or each worker returns its own (``"distributed"``; the parent assembles them).

    Parameters
    ----------
    solution_or_export_dir : Solution or path
        A solution (exported to a temporary directory first, float32) or a directory from :func:`export`.
    X : array-like (N, *input_shape)
        The batch; worker k receives only the input units it observes (``input_placement``), or, when the
        input is replicated, the ones its layer-1 units read.
    world_size : int, optional
        Must equal the export's K when given.
    init_method : str, optional
        Rendezvous URL: default ``file://`` in a fresh temporary directory; ``tcp://HOST:PORT`` (HOST is
        where rank 0 runs; it listens on PORT); ``env://`` (``MASTER_ADDR``/``MASTER_PORT``).
    backend : str
        ``torch.distributed`` backend ("gloo" for CPU tensors).
    timeout : float
        Seconds for the whole run, start-up included; on expiry every worker is killed and
        :class:`RuntimeFailure` is raised.
    ranks : iterable of int, optional
        The ranks to start on this host (default: all K). On several hosts, call this on each host with
        the same export, batch and ``init_method`` (``tcp://`` or ``env://``) and that host's ranks; the
        result then covers the local ranks (see :class:`RunResult`).
    synchronize : bool
        Put a barrier before every layer, as the α-β latency model assumes; per-layer times then measure
        one layer alone. Without it workers proceed as soon as their inputs arrive.
    repeats, warmup : int
        Timed passes (times are medians over them) and untimed passes before them, in the same processes.
    num_threads : int
        torch intra-op threads per worker (1: K workers on one host do not oversubscribe its cores).
    start_method : {"forkserver", "spawn"}, optional
        Default ``"forkserver"`` with torch preloaded (start-up paid once per parent process).

    Returns
    -------
    RunResult

    Raises
    ------
    RuntimeFailure
        A worker failed, died or hung, or the run exceeded ``timeout``.
    FormatError
        The export directory is invalid.

    Notes
    -----
    The workers do not re-import the caller's main module (unlike plain ``spawn`` multiprocessing), so
    this works from scripts, ``python -``, notebooks and the CLI alike.

    Examples
    --------
    Starting workers takes seconds (each imports torch), so this example is not run as a doctest; the
    same run is in ``tests/test_runtime.py``::

        import numpy as np, repurpose_opt as ro
        from repurpose_opt.runtime import run_distributed
        net = ro.Network([ro.Dense(np.eye(4)), ro.ReLU(), ro.Dense(np.ones((2, 4)))], input_shape=(4,))
        sol = ro.solve(ro.PartitionProblem(net, ro.Cluster(k=2)), backend="direct")
        result = run_distributed(sol, np.array([[1.0, -2.0, 3.0, 4.0]]))
        result.outputs.tolist(), result.link_bytes.sum(axis=(1, 2)).tolist()
        # -> ([[8.0, 8.0]], [0, 16])
    """
    from ..solution import Solution

    started = time.perf_counter()
    timeout = as_float("timeout", timeout, strictly_positive=True)
    repeats = as_int("repeats", repeats, minimum=1)
    warmup = as_int("warmup", warmup, minimum=0)
    num_threads = as_int("num_threads", num_threads, minimum=1)
    if not isinstance(synchronize, bool):
        raise InvalidParameterError(f"`synchronize` must be True or False, got {synchronize!r}")
    if not isinstance(backend, str) or not backend:
        raise InvalidParameterError(f"`backend` must be a torch.distributed backend name such as 'gloo', got {backend!r}")
    workdir = Path(tempfile.mkdtemp(prefix="repurpose-opt-run-"))
    try:
        if isinstance(solution_or_export_dir, Solution):
            model = load_export(export(solution_or_export_dir, workdir / "export"))
        elif isinstance(solution_or_export_dir, (str, os.PathLike)):
            model = load_export(solution_or_export_dir)
        else:
            raise InvalidParameterError(
                f"`solution_or_export_dir` must be a Solution or an export directory, got {type(solution_or_export_dir).__name__}"
            )
        k = model.k
        if world_size is not None and as_int("world_size", world_size, minimum=1) != k:
            raise InvalidParameterError(f"`world_size` must equal the export's number of workers ({k}), got {world_size}")
        local = _check_ranks(ranks, k)
        units = model.input_units(X)
        n = units.shape[0]
        if n < 1:
            raise InvalidParameterError("`X` must hold at least one sample")
        if len(local) < k and (init_method is None or init_method.startswith("file://")):
            raise InvalidParameterError(
                f"`init_method` must be 'tcp://HOST:PORT' or 'env://' when `ranks` starts only {list(local)} of the "
                f"{k} workers here: the other hosts must reach the rendezvous"
            )
        init = _check_init_method(init_method, workdir)
        for rank in local:
            held = np.ascontiguousarray(units[:, model.held_input(rank)], dtype=model.dtype)
            np.save(workdir / f"input{rank}.npy", held, allow_pickle=False)
        job = {
            "kind": "run",
            "directory": str(Path(model.directory).resolve()),
            "workdir": str(workdir),
            "init_method": init,
            "backend": backend,
            "group_timeout": timeout + _GROUP_TIMEOUT_MARGIN,
            "synchronize": synchronize,
            "repeats": repeats,
            "warmup": warmup,
            "num_threads": num_threads,
        }
        launch(job, k, timeout, start_method, n_layers=model.n_layers, ranks=local)
        return _collect(model, workdir, n, local, backend, init, synchronize, repeats, time.perf_counter() - started)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _check_ranks(ranks: Iterable[int] | None, k: int) -> tuple[int, ...]:
    if ranks is None:
        return tuple(range(k))
    if isinstance(ranks, (str, bytes)) or not isinstance(ranks, Iterable):
        raise InvalidParameterError(f"`ranks` must be an iterable of worker ranks in 0..{k - 1}, got {ranks!r}")
    values = [as_int("ranks", rank, minimum=0) for rank in ranks]
    if not values or len(set(values)) != len(values) or max(values) >= k:
        raise InvalidParameterError(f"`ranks` must hold distinct worker ranks in 0..{k - 1}, at least one, got {values}")
    return tuple(sorted(values))


def _collect(
    model: ExportedModel, workdir: Path, n: int, local: Sequence[int], backend: str, init: str, synchronize: bool,
    repeats: int, wall: float,
) -> RunResult:
    """Assemble the local workers' reports; cross-check every count that two local workers both saw."""
    k, L = model.k, model.n_layers
    results = {}
    for rank in local:
        with np.load(workdir / f"result{rank}.npz", allow_pickle=False) as data:
            results[rank] = {key: np.array(data[key]) for key in data.files}
    # A link's bytes are known from its sender's count and from its receiver's; both when both are here.
    link_bytes = np.zeros((L, k, k), dtype=np.int64)
    for dst, result in results.items():
        link_bytes[:, :, dst] = result["received"]  # received[l, src]
    for src, result in results.items():
        sent = result["sent"]  # sent[l, dst]
        both = [dst for dst in local if dst != src]
        if not np.array_equal(sent[:, both], link_bytes[:, src, both]):
            raise RuntimeFailure(f"workers disagree on the bytes exchanged: worker {src}'s sent counts differ from its receivers'")
        link_bytes[:, src, :] = sent
    gather_bytes = np.zeros(k, dtype=np.int64)
    if 0 in results:
        gather_bytes[:] = results[0]["gather_received"]
    for src, result in results.items():
        if src != 0 and 0 in results and int(result["gather_sent"][0]) != gather_bytes[src]:
            raise RuntimeFailure("the sink received a different number of gather bytes than the workers sent")
        gather_bytes[src] = max(gather_bytes[src], int(result["gather_sent"][0]))
    outputs = np.full((n, model.unit_counts[-1], model.message_sizes[-1]), np.nan)
    covered = np.zeros(model.unit_counts[-1], dtype=bool)
    for result in results.values():
        outputs[:, result["output_units"]] = result["outputs"]
        covered[result["output_units"]] = True
    expected = np.zeros(model.unit_counts[-1], dtype=bool)
    if model.output == "gather" and 0 in results:
        expected[:] = True
    elif model.output == "distributed":
        for rank in local:
            expected[model.layers[-1].owned[rank]] = True
    if np.any(expected & ~covered):
        raise RuntimeFailure(f"output units {np.flatnonzero(expected & ~covered)[:10].tolist()} came back from no worker")

    def per_worker(key: str, shape: tuple[int, ...]) -> np.ndarray:
        out = np.full((k, repeats) + shape, np.nan)
        for rank, result in results.items():
            out[rank] = result[key].reshape((repeats,) + shape)
        return out

    layer_times = per_worker("layer_times", (L,))  # (K, R, L); NaN for workers on other hosts
    totals = per_worker("total_times", ())
    gathers = per_worker("gather_times", ())
    setup = np.full(k, np.nan)
    for rank, result in results.items():
        setup[rank] = float(result["setup_time"][0])
    return RunResult(
        outputs=outputs.reshape(n, -1),
        link_bytes=link_bytes,
        gather_bytes=gather_bytes,
        layer_times=np.median(np.nanmax(layer_times, axis=0), axis=0),
        gather_time=float(np.median(np.nanmax(gathers, axis=0))),
        total_time=float(np.median(np.nanmax(totals, axis=0))),
        worker_layer_times=np.median(layer_times, axis=1),
        worker_total_times=np.median(totals, axis=1),
        setup_times=setup,
        wall_time=wall,
        n_samples=n,
        k=k,
        backend=backend,
        init_method=init,
        synchronized=synchronize,
        repeats=repeats,
        ranks=tuple(local),
        output=model.output,
        pass_times=np.nanmax(totals, axis=0),
    )
