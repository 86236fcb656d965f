"""Calibrate the α-β latency model (SPEC §2) on real workers, and check its predictions against runs.

:func:`calibrate_network` starts K workers and measures

- per worker, the FLOP rate of a dense float32 matmul (one worker at a time, so co-located workers do
  not measure each other), from the fastest of its timed matmuls: other processes on a host can only slow
  a matmul down, and the relative speeds must describe the workers, not which one was preempted;
- per pair of workers, ping-pong round trips for a range of message sizes, one pair at a time: α is half
  the median round trip of the smallest message, β the slope of the median one-way time over the larger
  ones (least squares through α, so the large messages that dominate β weigh most). The median, not the
  fastest, round trip: it is what messages of a run on that host see (on a host whose cores are busy, a
  woken receiver often waits for a core; the fastest one-way time is kept beside it for comparison).

It returns a :class:`~repurpose_opt.Cluster` (α and β as K×K matrices, the FLOP rate and relative
speeds) that every command accepts, optionally written with :meth:`Cluster.save`.

:func:`compare_latency` runs a solution with a barrier between layers (the model's synchronous schedule)
and sets the measured per-layer times beside the simulator's prediction on the calibrated cluster.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import as_float, as_int
from ..cluster import Cluster
from ..errors import InvalidParameterError
from .distributed import _GROUP_TIMEOUT_MARGIN, RunResult, RuntimeFailure, _check_init_method, launch, run_distributed

__all__ = ["calibrate_network", "NetworkCalibration", "compare_latency", "LatencyComparison", "predicted_times"]

DEFAULT_MESSAGE_BYTES = (4, 1_048_576, 16_777_216)


@dataclass(frozen=True, eq=False)
class NetworkCalibration:
    """Measured α, β and FLOP rates, and the :class:`Cluster` built from them.

    Attributes
    ----------
    cluster : Cluster
    alpha : ndarray (K, K)
        Seconds per message on each link (0 on the diagonal).
    beta : ndarray (K, K)
        Bytes per second on each link (the mean off-diagonal value on the diagonal, which is never used).
    flop_rates : ndarray (K,)
        FLOPs per second each worker reached on the matmul test (its fastest repeat).
    message_bytes : ndarray (S,)
    one_way : ndarray (K, K, S)
        Median one-way time (half round trip) per link and message size (NaN on the diagonal).
    one_way_min : ndarray (K, K, S)
        The fastest one-way time: far below the median on a host whose cores are busy, where a worker
        woken by a message waits for a core (the median is what runs on that host experience).
    path : Path or None
        Where the cluster was written.
    """

    cluster: Cluster
    alpha: np.ndarray
    beta: np.ndarray
    flop_rates: np.ndarray
    message_bytes: np.ndarray
    one_way: np.ndarray
    one_way_min: np.ndarray
    path: Path | None = None

    def table(self) -> str:
        """α, β per link and FLOP rate per worker as text."""
        k = self.cluster.k
        lines = [f"{'link':>8} {'alpha [us]':>11} {'beta [MB/s]':>12} {'fastest one-way [us]':>21}"]
        for i in range(k):
            for j in range(i + 1, k):
                lines.append(
                    f"{f'{i}<->{j}':>8} {self.alpha[i, j] * 1e6:>11.1f} {self.beta[i, j] / 1e6:>12.1f} "
                    f"{self.one_way_min[i, j, 0] * 1e6:>21.1f}"
                )
        lines.append(f"{'worker':>8} {'GFLOP/s':>11} {'speed':>12}")
        for rank in range(k):
            lines.append(f"{rank:>8} {self.flop_rates[rank] / 1e9:>11.2f} {self.cluster.speed[rank]:>12.3f}")
        lines.append(f"cluster flop_rate = {self.cluster.flop_rate / 1e9:.2f} GFLOP/s (speed 1)")
        return "\n".join(lines)


def calibrate_network(
    k: int = 2,
    *,
    out: str | os.PathLike | None = None,
    matmul_size: int = 256,
    repeats: int = 20,
    message_bytes: Sequence[int] = DEFAULT_MESSAGE_BYTES,
    pingpongs: int = 20,
    speed_tolerance: float = 0.1,
    init_method: str | None = None,
    backend: str = "gloo",
    timeout: float = 120.0,
    num_threads: int = 1,
    start_method: str | None = None,
) -> NetworkCalibration:
    """Measure α, β and the FLOP rate of ``k`` workers and return them as a :class:`Cluster`.

    Parameters
    ----------
    k : int
        Workers (>= 2: α and β need a link).
    out : path, optional
        Write the cluster there (:meth:`Cluster.save`; read back with :meth:`Cluster.load`).
    matmul_size : int
        Side of the square float32 matmul of the FLOP-rate test (``2·n³`` FLOPs).
    repeats : int
        Timed matmuls per worker (the fastest counts).
    message_bytes : sequence of int
        Ping-pong message sizes; the smallest gives α, the others β. Rounded up to whole float32 scalars.
    pingpongs : int
        Timed round trips per link and size (the median counts).
    speed_tolerance : float
        When every worker's rate is within this fraction of the median, the workers are taken as
        identical (speed 1, the median rate): the spread is noise, and unequal speeds would change the
        balance capacities of every problem built on the cluster.
    init_method, backend, timeout, num_threads, start_method
        As in :func:`run_distributed`.

    Returns
    -------
    NetworkCalibration

    Examples
    --------
    Starting workers takes seconds, so this example is not run as a doctest (the same call is in
    ``tests/test_runtime.py``)::

        import repurpose_opt as ro
        from repurpose_opt.runtime import calibrate_network
        calibration = calibrate_network(2, matmul_size=64, repeats=3, pingpongs=3, out="cluster.json")
        print(calibration.table())               # alpha, beta per link; GFLOP/s per worker
        cluster = ro.Cluster.load("cluster.json")  # what every command accepts
        cluster.latency[0, 1] == calibration.alpha[0, 1]   # -> True
    """
    k = as_int("k", k, minimum=2)
    matmul_size = as_int("matmul_size", matmul_size, minimum=1)
    repeats = as_int("repeats", repeats, minimum=1)
    pingpongs = as_int("pingpongs", pingpongs, minimum=1)
    timeout = as_float("timeout", timeout, strictly_positive=True)
    speed_tolerance = as_float("speed_tolerance", speed_tolerance, minimum=0.0)
    num_threads = as_int("num_threads", num_threads, minimum=1)
    sizes = sorted({as_int("message_bytes", s, minimum=1) for s in message_bytes})
    if len(sizes) < 2:
        raise InvalidParameterError(f"`message_bytes` must hold at least two distinct sizes (α and β), got {list(message_bytes)}")
    workdir = Path(tempfile.mkdtemp(prefix="repurpose-opt-calibrate-"))
    try:
        job = {
            "kind": "calibrate",
            "workdir": str(workdir),
            "init_method": _check_init_method(init_method, workdir),
            "backend": backend,
            "group_timeout": timeout + _GROUP_TIMEOUT_MARGIN,
            "num_threads": num_threads,
            "matmul_size": matmul_size,
            "repeats": repeats,
            "message_bytes": sizes,
            "pingpongs": pingpongs,
        }
        launch(job, k, timeout, start_method, steps={1: "the FLOP-rate test", 2: "the ping-pong test"})
        results = []
        for rank in range(k):
            with np.load(workdir / f"result{rank}.npz", allow_pickle=False) as data:
                results.append({key: np.array(data[key]) for key in data.files})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    flop_rates = np.array([r["flops"][0] / np.min(r["flop_times"]) for r in results])
    wire_bytes = results[0]["message_bytes"].astype(np.float64)
    one_way = np.full((k, k, wire_bytes.size), np.nan)
    one_way_min = np.full((k, k, wire_bytes.size), np.nan)
    for i in range(k):
        for j in range(i + 1, k):
            one_way[i, j] = one_way[j, i] = np.median(results[i]["rtt"][j], axis=1) / 2
            one_way_min[i, j] = one_way_min[j, i] = np.min(results[i]["rtt"][j], axis=1) / 2
    alpha = np.zeros((k, k))
    beta = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            a = one_way[i, j, 0]  # the smallest message: latency alone
            extra = one_way[i, j, 1:] - a
            inverse = float(np.dot(wire_bytes[1:], extra) / np.dot(wire_bytes[1:], wire_bytes[1:]))
            if not inverse > 0:
                raise RuntimeFailure(
                    f"link {i}<->{j}: larger messages were not slower than the smallest ({one_way[i, j].tolist()} s); "
                    "use larger `message_bytes` or more `pingpongs`"
                )
            alpha[i, j] = alpha[j, i] = a
            beta[i, j] = beta[j, i] = 1.0 / inverse
    off = ~np.eye(k, dtype=bool)
    np.fill_diagonal(beta, beta[off].mean())
    median_rate = float(np.median(flop_rates))
    if np.all(np.abs(flop_rates / median_rate - 1.0) <= speed_tolerance):
        flop_rate, speed = median_rate, np.ones(k)
    else:
        flop_rate = float(flop_rates.max())
        speed = flop_rates / flop_rate
    cluster = Cluster(k=k, speed=speed, flop_rate=flop_rate, bandwidth=beta, latency=alpha, dtype_bytes=4)
    path = None if out is None else cluster.save(out)
    return NetworkCalibration(
        cluster=cluster, alpha=alpha, beta=beta, flop_rates=flop_rates, message_bytes=wire_bytes, one_way=one_way,
        one_way_min=one_way_min, path=path,
    )


# ------------------------------------------------------------------------------------------ comparison
def predicted_times(report: Any, cluster: Cluster, n_samples: int = 1) -> tuple[np.ndarray, float]:
    """Per-layer and gather times the α-β model predicts for a batch of ``n_samples``.

    The simulator's model per sample, with FLOPs and bytes scaled by the batch (one message per link
    and layer carries the whole batch, so α is paid once). For ``n_samples=1`` this is exactly the
    report's ``latency_per_layer`` and ``gather_latency`` when ``report`` was simulated on ``cluster``.
    """
    n = as_int("n_samples", n_samples, minimum=1)
    compute = np.max(report.flops_per_layer * n / (cluster.flop_rate * cluster.speed[None, :]), axis=1)
    layers = np.zeros(report.link_bytes.shape[0])
    for l, link in enumerate(report.link_bytes):
        mask = link > 0
        if mask.any():
            layers[l] = np.max(cluster.latency[mask] + n * link[mask] / cluster.bandwidth[mask])
    gather_mask = report.gather_bytes > 0
    gather = 0.0
    if gather_mask.any():
        gather = float(np.max(cluster.latency[gather_mask, 0] + n * report.gather_bytes[gather_mask] / cluster.bandwidth[gather_mask, 0]))
    return compute + layers, gather


@dataclass(frozen=True, eq=False)
class LatencyComparison:
    """The simulator's predicted per-layer times beside the measured ones (seconds, whole batch).

    ``relative_error`` is ``(predicted - measured) / measured`` per layer (negative: the model is
    optimistic); ``total_relative_error`` the same for the whole pass, gather included.
    """

    n_samples: int
    predicted: np.ndarray
    measured: np.ndarray
    predicted_gather: float
    measured_gather: float
    run: RunResult = field(repr=False)
    report: Any = field(repr=False)

    @property
    def relative_error(self) -> np.ndarray:
        return (self.predicted - self.measured) / self.measured

    @property
    def predicted_total(self) -> float:
        return float(self.predicted.sum() + self.predicted_gather)

    @property
    def measured_total(self) -> float:
        return float(self.measured.sum() + self.measured_gather)

    @property
    def total_relative_error(self) -> float:
        return (self.predicted_total - self.measured_total) / self.measured_total

    def table(self) -> str:
        """Per-layer predicted vs measured milliseconds and the relative error."""
        lines = [f"{'layer':>6} {'bytes':>10} {'predicted [ms]':>15} {'measured [ms]':>14} {'error':>8}"]
        nbytes = self.run.bytes_per_layer
        for l in range(self.predicted.size):
            lines.append(
                f"{l + 1:>6} {int(nbytes[l]):>10} {self.predicted[l] * 1e3:>15.3f} {self.measured[l] * 1e3:>14.3f} "
                f"{self.relative_error[l]:>+8.1%}"
            )
        gather_error = (self.predicted_gather - self.measured_gather) / self.measured_gather if self.measured_gather > 0 else 0.0
        lines.append(
            f"{'gather':>6} {int(self.run.gather_bytes.sum()):>10} {self.predicted_gather * 1e3:>15.3f} "
            f"{self.measured_gather * 1e3:>14.3f} {gather_error:>+8.1%}"
        )
        lines.append(
            f"{'total':>6} {self.run.comm_bytes:>10} {self.predicted_total * 1e3:>15.3f} {self.measured_total * 1e3:>14.3f} "
            f"{self.total_relative_error:>+8.1%}"
        )
        return "\n".join(lines)


def compare_latency(
    solution: Any,
    X: Any,
    cluster: Cluster,
    *,
    repeats: int = 5,
    warmup: int = 2,
    timeout: float = 120.0,
    init_method: str | None = None,
    backend: str = "gloo",
    start_method: str | None = None,
) -> LatencyComparison:
    """Run ``solution`` on ``X`` layer-synchronously and compare per-layer times with the α-β model.

    Parameters
    ----------
    solution : Solution
    X : array-like (N, *input_shape)
    cluster : Cluster
        Usually :func:`calibrate_network`'s; must have the solution's K.
    repeats, warmup : int
        Timed and untimed passes (medians over the timed ones).

    Returns
    -------
    LatencyComparison
    """
    from ..simulator import simulate
    from ..solution import Solution

    if not isinstance(solution, Solution) or solution.assignment is None or solution.network is None:
        raise InvalidParameterError("`solution` must be a Solution holding a placement and a network")
    if not isinstance(cluster, Cluster):
        raise InvalidParameterError(f"`cluster` must be a repurpose_opt.Cluster, got {type(cluster).__name__}")
    if solution.cluster is not None and solution.cluster.k != cluster.k:
        raise InvalidParameterError(f"`cluster` must have the solution's {solution.cluster.k} workers, got k = {cluster.k}")
    run = run_distributed(
        solution, X, init_method=init_method, backend=backend, timeout=timeout, synchronize=True,
        repeats=repeats, warmup=warmup, start_method=start_method,
    )
    report = simulate(solution.network, solution.assignment, cluster, output=solution.output)
    predicted, predicted_gather = predicted_times(report, cluster, run.n_samples)
    return LatencyComparison(
        n_samples=run.n_samples, predicted=predicted, measured=run.layer_times, predicted_gather=predicted_gather,
        measured_gather=run.gather_time, run=run, report=report,
    )
