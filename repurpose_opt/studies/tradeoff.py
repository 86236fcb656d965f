"""Communication vs accuracy: restructure shipped models over a sweep of tolerances, for every engine.

Every point restructures one model with one engine at one tolerance (replicated input, outputs gathered on
worker 0, calibration = the first ``calibration`` training samples, as issue 4 fixes the setting) and
records the volume the simulator measures, the held-out accuracy, the agreement with the original's
predictions, the largest per-worker FLOPs and the guarantee. Per (model, K) one reference row
``engine="direct-parallel"`` holds the dense contiguous split without adjustment (the paper's "direct
parallel", a PartitionProblem solved by ``direct``): ``ratio_vs_direct`` is its volume over the point's.

Engines are backend names. A backend that places but does not restructure (a partition engine such as
``hypergraph`` before it accepts RestructureProblem) is run as SPEC §4 defines the restructuring
baselines: its placement of the network, then the shared ℓ0 adjustment
(:func:`repurpose_opt.solvers.restructure_engine.restructure_with_partitioner`); the row's ``method``
says so. The surrogate MIPs (``ortools``, ``cvxpy``) are not in the default list: each point runs until
its time limit.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..api import solve
from ..cluster import Cluster
from ..errors import BackendCannotSolveError, BackendUnavailableError, RepurposeError
from ..problems import PartitionProblem, RestructureProblem
from .progress import ProgressBar

__all__ = ["tradeoff", "write_rows", "plot_tradeoff", "DEFAULT_TOLERANCES", "DEFAULT_ENGINES", "COLUMNS"]

DEFAULT_TOLERANCES = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
DEFAULT_ENGINES = ("repurpose", "direct", "hypergraph", "munkres", "greedy")

#: Columns of every row (CSV order).
COLUMNS = ("model", "k", "engine", "method", "tolerance", "status", "volume", "bytes", "ratio_vs_direct",
           "accuracy", "base_accuracy", "accuracy_loss_pt", "agreement", "max_worker_flops", "seconds",
           "pairs_per_layer", "calibration_errors", "A", "B", "message")


def tradeoff(
    models: Iterable[Any] = ("digits_mlp",),
    engines: Sequence[str] = DEFAULT_ENGINES,
    ks: Sequence[int] = (2, 4, 8),
    tolerances: Sequence[Any] = DEFAULT_TOLERANCES,
    *,
    calibration: int = 1000,
    time_limit: float | None = 60.0,
    seed: int = 0,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Restructure each model for each K, engine and tolerance; return one row per point.

    Parameters
    ----------
    models : iterable of str or zoo models
        Names from :mod:`repurpose_opt.zoo` (``"digits_mlp"``, ``"digits_cnn"``, ``"mnist1d_mlp"``) or
        objects with ``name``, ``network``, ``X_train``, ``X_test`` and ``y_test``.
    engines : sequence of str
        Backend names (see the module docstring for partition engines); an engine that is not installed
        or cannot run gives rows with status ``"SKIPPED"`` and the reason.
    ks : sequence of int
        Worker counts.
    tolerances : sequence of float or of per-layer sequences
        Relative calibration error per layer (one value for all layers, or one per linear layer).
    calibration : int
        Number of training samples the refits use (the first ones).
    time_limit : float, optional
        Seconds per restructuring.
    seed : int
        Seed passed to every solve.
    out_dir : path, optional
        Where ``tradeoff.csv``, ``tradeoff.json`` and ``tradeoff_<model>.png`` are written (see
        :func:`write_rows`).
    progress : bool
        Draw a progress bar on stderr.

    Returns
    -------
    list of dict
        One row per point with the keys of :data:`COLUMNS`: ``volume`` in scalars per sample, ``bytes``
        per sample, ``accuracy`` / ``agreement`` on the held-out split (agreement: fraction of predictions
        equal to the original network's), ``accuracy_loss_pt`` in percentage points, ``max_worker_flops``
        per sample, ``A``/``B`` of the guarantee.

    Examples
    --------
    >>> from repurpose_opt.studies.tradeoff import tradeoff
    >>> rows = tradeoff(["digits_mlp"], engines=["repurpose"], ks=[4], tolerances=[0.2],
    ...                 progress=False)  # doctest: +SKIP
    >>> [(r["engine"], r["volume"]) for r in rows]  # doctest: +SKIP
    [('direct-parallel', 1351.0), ('repurpose', 7.0)]
    """
    from .. import zoo

    models = [zoo.load(m) if isinstance(m, str) else m for m in models]
    rows: list[dict[str, Any]] = []
    total = len(models) * len(ks) * len(engines) * len(tolerances)
    with ProgressBar(total, desc="tradeoff", enabled=progress) as bar:
        for model in models:
            net = model.network
            X_cal = np.asarray(model.X_train)[:calibration]
            original_predictions = net.forward(model.X_test).argmax(axis=1)
            base_accuracy = float(np.mean(original_predictions == model.y_test))
            for k in ks:
                cluster = Cluster(k=int(k))
                direct = solve(PartitionProblem(net, cluster), backend="direct")
                reference = float(direct.objective)
                rows.append(_row(model.name, k, "direct-parallel", "dense contiguous split, no adjustment", None, "FEASIBLE",
                                 reference, cluster, reference, base_accuracy, base_accuracy, 1.0,
                                 float(np.max(direct.report.flops)), 0.0, [], [], None, ""))
                for engine in engines:
                    for tolerance in tolerances:
                        rows.append(_point(model, net, X_cal, cluster, engine, tolerance, reference, base_accuracy,
                                           original_predictions, time_limit, seed))
                        bar.update(1, note=f"{model.name} K={k} {engine} tol={tolerance}")
    if out_dir is not None:
        write_rows(rows, Path(out_dir))
    return rows


def _point(model, net, X_cal, cluster, engine, tolerance, reference, base_accuracy, original_predictions, time_limit,
           seed) -> dict[str, Any]:
    started = time.perf_counter()
    method = engine
    try:
        problem = RestructureProblem(net, cluster, calibration=X_cal, tolerance=tolerance)
        try:
            sol = solve(problem, backend=engine, time_limit=time_limit, seed=seed)
        except BackendCannotSolveError as refusal:
            sol = _as_partition_engine(problem, engine, time_limit, seed, refusal)
            method = f"{engine} placement + shared ℓ0 adjustment"
    except (BackendCannotSolveError, BackendUnavailableError) as exc:
        return _row(model.name, cluster.k, engine, engine, tolerance, "SKIPPED", None, cluster, reference, None,
                    base_accuracy, None, None, 0.0, [], [], None, str(exc))
    except RepurposeError as exc:
        return _row(model.name, cluster.k, engine, engine, tolerance, "ERROR", None, cluster, reference, None,
                    base_accuracy, None, None, time.perf_counter() - started, [], [], None, str(exc))
    seconds = time.perf_counter() - started
    if not sol.status.has_solution:
        return _row(model.name, cluster.k, engine, method, tolerance, sol.status.value, None, cluster, reference, None,
                    base_accuracy, None, None, seconds, [], [], None, sol.message)
    predictions = sol.network.forward(model.X_test).argmax(axis=1)
    accuracy = float(np.mean(predictions == model.y_test))
    agreement = float(np.mean(predictions == original_predictions))
    pairs = [layer["pairs"] for layer in sol.stats.get("layers", [])]
    errors = list(sol.guarantee.calibration_errors) if sol.guarantee is not None else []
    return _row(model.name, cluster.k, engine, method, tolerance, sol.status.value, sol.objective, cluster, reference,
                accuracy, base_accuracy, agreement, float(np.max(sol.report.flops)), seconds, pairs, errors, sol.guarantee,
                sol.message)


def _as_partition_engine(problem: RestructureProblem, engine: str, time_limit, seed, refusal: Exception):
    """A partition engine's placement + the shared ℓ0 adjustment, as a Solution (SPEC §4's baselines)."""
    from ..api import _finish
    from ..solvers.registry import get_backend
    from ..solvers.restructure_engine import restructure_with_partitioner

    if "PartitionProblem" not in get_backend(engine).problem_types:
        raise refusal
    started = time.perf_counter()
    result = restructure_with_partitioner(problem, engine, time_limit=time_limit, seed=seed)
    solution = _finish(problem, engine, result, seed)
    object.__setattr__(solution, "timings", {"total": time.perf_counter() - started})
    return solution


def _row(model, k, engine, method, tolerance, status, volume, cluster, reference, accuracy, base, agreement, flops,
         seconds, pairs, errors, guarantee, message) -> dict[str, Any]:
    tol = None if tolerance is None else (float(tolerance) if np.ndim(tolerance) == 0 else [float(t) for t in tolerance])
    return {
        "model": model,
        "k": int(k),
        "engine": engine,
        "method": method,
        "tolerance": tol,
        "status": status,
        "volume": volume,
        "bytes": None if volume is None else volume * cluster.dtype_bytes,
        "ratio_vs_direct": None if not volume else reference / volume,
        "accuracy": accuracy,
        "base_accuracy": base,
        "accuracy_loss_pt": None if accuracy is None else 100.0 * (base - accuracy),
        "agreement": agreement,
        "max_worker_flops": flops,
        "seconds": seconds,
        "pairs_per_layer": pairs,
        "calibration_errors": errors,
        "A": None if guarantee is None else float(guarantee.A),
        "B": None if guarantee is None else float(guarantee.B),
        "message": message,
    }


def write_rows(rows: list[dict[str, Any]], out_dir: str | Path, stem: str = "tradeoff") -> list[Path]:
    """Write ``<stem>.csv``, ``<stem>.json`` and, when matplotlib is installed, ``<stem>_<model>.png``.

    Returns the paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / f"{stem}.json", out_dir / f"{stem}.csv"]
    written[0].write_text(json.dumps(rows, indent=1))
    with open(written[1], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({key: json.dumps(row.get(key)) if isinstance(row.get(key), list) else row.get(key) for key in COLUMNS})
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return written
    for model in sorted({row["model"] for row in rows}):
        written.append(plot_tradeoff([row for row in rows if row["model"] == model], out_dir / f"{stem}_{model}.png"))
    return written


def plot_tradeoff(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Test accuracy (top) and agreement with the original's predictions (bottom) vs volume (log scale),
    one column per K; per engine its points (markers) and its curve (the best value reached at that volume
    or less); the direct-parallel reference is a star. Agreement is the steadier of the two: a few
    hundred test samples make accuracy differences of a fraction of a point noise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({row["k"] for row in rows})
    fig, axes = plt.subplots(2, len(ks), figsize=(5.2 * len(ks), 7.6), squeeze=False, sharex="col")
    markers = "osD^v<>ph"
    for column, k in enumerate(ks):
        engines = list(dict.fromkeys(row["engine"] for row in rows if row["k"] == k))
        for panel, key, label in ((0, "accuracy", "test accuracy (%)"), (1, "agreement", "agreement with the original (%)")):
            ax = axes[panel][column]
            for position, engine in enumerate(engines):
                points = sorted((row["volume"], row[key]) for row in rows
                                if row["k"] == k and row["engine"] == engine and row["volume"] and row[key] is not None)
                if not points:
                    continue
                xs, ys = zip(*points, strict=True)
                if engine == "direct-parallel":
                    ax.plot(xs, [100 * y for y in ys], "k*", markersize=11, label="direct parallel (dense)")
                    continue
                marker = markers[position % len(markers)]
                line = ax.plot(xs, [100 * y for y in ys], marker, markersize=4, linestyle="none", alpha=0.45)[0]
                # The curve: the best value any point of this engine reaches at that volume or less.
                front = np.maximum.accumulate(np.asarray(ys, dtype=float))
                ax.step(xs, 100 * front, where="post", color=line.get_color(), linewidth=1.2, label=engine)
            if key == "accuracy":
                base = next((row["base_accuracy"] for row in rows if row["k"] == k and row["base_accuracy"] is not None), None)
                if base is not None:
                    ax.axhline(100 * base, color="grey", linewidth=0.7, linestyle=":")
                ax.set_title(f"{rows[0]['model']}, K = {k}")
            else:
                ax.set_xlabel("communication (scalars / sample)")
            ax.set_xscale("log")
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
