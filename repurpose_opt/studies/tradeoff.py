"""Communication vs accuracy: restructure shipped models over a sweep of tolerances, for every engine.

Every point restructures the model with one engine at one tolerance (replicated input, outputs gathered on
worker 0, calibration = the first ``calibration`` training samples) and records the volume the simulator
measures, the held-out accuracy, and the guarantee. The dense contiguous split without adjustment (the
paper's "direct parallel") is the reference volume.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..api import solve
from ..cluster import Cluster
from ..errors import BackendCannotSolveError, BackendUnavailableError, RepurposeError
from ..problems import PartitionProblem, RestructureProblem

__all__ = ["tradeoff", "DEFAULT_TOLERANCES", "DEFAULT_ENGINES", "plot_tradeoff"]

DEFAULT_TOLERANCES = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
DEFAULT_ENGINES = ("repurpose", "direct", "hypergraph", "munkres", "greedy")


def _accuracy(network: Any, X: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(network.forward(X).argmax(axis=1) == y))


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, file=sys.stderr, leave=False)


def tradeoff(
    models: Iterable[Any] = ("digits_mlp",),
    engines: Sequence[str] = DEFAULT_ENGINES,
    ks: Sequence[int] = (2, 4, 8),
    tolerances: Sequence[Any] = DEFAULT_TOLERANCES,
    *,
    calibration: int = 1000,
    time_limit: float | None = 60.0,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Restructure each model for each K, engine and tolerance; return one row per point.

    Parameters
    ----------
    models : iterable of str or zoo models
        Names from :mod:`repurpose_opt.zoo` (``"digits_mlp"``, ``"digits_cnn"``, ``"mnist1d_mlp"``) or
        objects with ``network``, ``X_train``, ``X_test``, ``y_test`` and ``name``.
    engines : sequence of str
        Backends that accept a RestructureProblem; unavailable ones are recorded as skipped.
    ks : sequence of int
    tolerances : sequence of float or per-layer sequences
    calibration : int
        Number of training samples used for the refits.
    out_dir : path, optional
        Where ``tradeoff.csv``, ``tradeoff.json`` and ``tradeoff_<model>.png`` are written.

    Returns
    -------
    list of dict
        ``model, k, engine, tolerance, status, volume, bytes, ratio_vs_direct, accuracy, accuracy_loss,
        seconds, pairs_per_layer, A, B, calibration_errors, message``.
    """
    from .. import zoo

    rows: list[dict[str, Any]] = []
    models = [zoo.load(m) if isinstance(m, str) else m for m in models]
    total = len(models) * len(ks) * len(engines) * len(tolerances)
    bar = _progress(total, progress)
    for model in models:
        net = model.network
        X_cal = np.asarray(model.X_train)[:calibration]
        base_accuracy = _accuracy(net, model.X_test, model.y_test)
        for k in ks:
            cluster = Cluster(k=int(k))
            direct = solve(PartitionProblem(net, cluster), backend="direct")
            reference = float(direct.objective)
            rows.append(_row(model.name, k, "direct-parallel", None, "FEASIBLE", reference, cluster, reference,
                             base_accuracy, base_accuracy, 0.0, [], None, [], "dense contiguous split, no adjustment"))
            for engine in engines:
                for tolerance in tolerances:
                    started = time.perf_counter()
                    try:
                        problem = RestructureProblem(net, cluster, calibration=X_cal, tolerance=tolerance)
                        sol = solve(problem, backend=engine, time_limit=time_limit, seed=0)
                    except (BackendCannotSolveError, BackendUnavailableError) as exc:
                        rows.append(_row(model.name, k, engine, tolerance, "SKIPPED", None, cluster, reference, None,
                                         base_accuracy, 0.0, [], None, [], str(exc)))
                    except RepurposeError as exc:
                        rows.append(_row(model.name, k, engine, tolerance, "ERROR", None, cluster, reference, None,
                                         base_accuracy, time.perf_counter() - started, [], None, [], str(exc)))
                    else:
                        seconds = time.perf_counter() - started
                        if sol.status.has_solution:
                            accuracy = _accuracy(sol.network, model.X_test, model.y_test)
                            pairs = [layer["pairs"] for layer in sol.stats.get("layers", [])]
                            errors = list(sol.guarantee.calibration_errors) if sol.guarantee is not None else []
                            rows.append(_row(model.name, k, engine, tolerance, sol.status.value, sol.objective, cluster,
                                             reference, accuracy, base_accuracy, seconds, pairs, sol.guarantee, errors,
                                             sol.message))
                        else:
                            rows.append(_row(model.name, k, engine, tolerance, sol.status.value, None, cluster, reference,
                                             None, base_accuracy, seconds, [], None, [], sol.message))
                    if bar is not None:
                        bar.update(1)
    if bar is not None:
        bar.close()
    if out_dir is not None:
        write_rows(rows, Path(out_dir))
    return rows


def _row(model, k, engine, tolerance, status, volume, cluster, reference, accuracy, base, seconds, pairs, guarantee,
         errors, message) -> dict[str, Any]:
    tol = None if tolerance is None else (float(tolerance) if np.ndim(tolerance) == 0 else [float(t) for t in tolerance])
    return {
        "model": model,
        "k": int(k),
        "engine": engine,
        "tolerance": tol,
        "status": status,
        "volume": volume,
        "bytes": None if volume is None else volume * cluster.dtype_bytes,
        "ratio_vs_direct": None if not volume else reference / volume,
        "accuracy": accuracy,
        "base_accuracy": base,
        "accuracy_loss_pt": None if accuracy is None else 100.0 * (base - accuracy),
        "seconds": seconds,
        "pairs_per_layer": pairs,
        "A": None if guarantee is None else float(guarantee.A),
        "B": None if guarantee is None else float(guarantee.B),
        "calibration_errors": errors,
        "message": message,
    }


def write_rows(rows: list[dict[str, Any]], out_dir: Path) -> None:
    """``tradeoff.csv``, ``tradeoff.json`` and one PNG per model (when matplotlib is installed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tradeoff.json").write_text(json.dumps(rows, indent=1))
    with open(out_dir / "tradeoff.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({key: json.dumps(v) if isinstance(v, list) else v for key, v in row.items()})
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    for model in sorted({row["model"] for row in rows}):
        plot_tradeoff([row for row in rows if row["model"] == model], out_dir / f"tradeoff_{model}.png")


def plot_tradeoff(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Accuracy vs volume (log scale), one panel per K, one curve per engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({row["k"] for row in rows})
    fig, axes = plt.subplots(1, len(ks), figsize=(5 * len(ks), 4), squeeze=False)
    for ax, k in zip(axes[0], ks):
        for engine in dict.fromkeys(row["engine"] for row in rows if row["k"] == k):
            points = sorted((row["volume"], row["accuracy"]) for row in rows
                            if row["k"] == k and row["engine"] == engine and row["volume"] and row["accuracy"] is not None)
            if not points:
                continue
            xs, ys = zip(*points)
            style = "k*" if engine == "direct-parallel" else "o-"
            ax.plot(xs, ys, style, label=engine, markersize=9 if engine == "direct-parallel" else 4)
        ax.set_xscale("log")
        ax.set_xlabel("communication (scalars / sample)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{rows[0]['model']}, K = {k}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
