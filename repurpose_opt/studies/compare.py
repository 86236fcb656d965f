"""The solver comparison study: every (problem, backend, seed), on the same meter.

:func:`compare` runs each backend on each problem with each seed under one time limit and records, per
run, the volume the simulator measures, the backend's proven bound, the gap, the status, the wall time and
whether :func:`~repurpose_opt.verify` accepts the solution. Each row also carries the instance's best
volume found by any run and the direct contiguous split's volume, so results read as "× best known" and
"× direct". A backend that is not installed or cannot take a problem gives a ``SKIPPED`` row with the
reason; a backend that fails gives an ``ERROR`` row: one bad backend never stops the study. An unknown
backend name is a typo, and raises before anything runs.

Files written to ``out_dir``: ``compare.csv`` and ``compare.json`` (the rows; lists such as the per-layer
volume are JSON-encoded in the CSV), and with matplotlib ``compare_time.png`` (volume vs wall time, one
panel per instance, one marker per backend and seed) and ``compare_layers.png`` (per-layer volume of each
backend's best run, one panel per instance).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._validation import as_float, as_int
from ..api import solve
from ..errors import BackendCannotSolveError, BackendUnavailableError, InvalidParameterError, RepurposeError
from ..problems import PartitionProblem
from ..solvers.registry import backend_names
from ..verify import verify
from .instances import Instance
from .progress import ProgressBar

__all__ = ["compare", "summarize", "format_summary", "write_results", "plot_compare", "COLUMNS"]

#: Columns of ``compare.csv``, in order (the JSON rows have the same keys).
COLUMNS = (
    "instance", "problem", "units", "k", "backend", "seed", "status", "volume", "objective", "bound", "gap",
    "wall_time", "solve_time", "verified", "comm_per_layer", "gather", "best_volume", "vs_best", "direct_volume",
    "vs_direct", "message",
)


def _named(problems: Any) -> list[Instance]:
    """Accept a mapping name → problem, Instances, (name, problem) pairs or bare problems."""
    if isinstance(problems, Mapping):
        items: Iterable[Any] = [Instance(str(name), problem) for name, problem in problems.items()]
    elif isinstance(problems, (list, tuple)):
        items = problems
    else:
        raise InvalidParameterError(
            f"`problems` must be a mapping name -> problem or a list of problems, got {type(problems).__name__}"
        )
    named = []
    for position, item in enumerate(items):
        if isinstance(item, Instance):
            named.append(item)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            named.append(Instance(item[0], item[1]))
        else:
            named.append(Instance(f"problem{position}", item))
    if not named:
        raise InvalidParameterError("`problems` must not be empty")
    for inst in named:
        if not hasattr(inst.problem, "network") or not hasattr(inst.problem, "cluster"):
            raise InvalidParameterError(
                f"`problems` must hold PartitionProblem or RestructureProblem objects, got {type(inst.problem).__name__} "
                f"for {inst.name!r}"
            )
    names = [inst.name for inst in named]
    if len(set(names)) != len(names):
        raise InvalidParameterError(f"`problems` must have distinct names, got {names}")
    return named


def _check_backends(backends: Any) -> list[str]:
    if isinstance(backends, str) or not isinstance(backends, (list, tuple)) or not backends:
        raise InvalidParameterError(f"`backends` must be a non-empty list of backend names, got {backends!r}")
    known = backend_names()
    unknown = [b for b in backends if b not in known]
    if unknown:
        from ..errors import UnknownBackendError

        raise UnknownBackendError(f"unknown backend(s) {unknown}; known backends: {', '.join(known)}")
    return list(dict.fromkeys(backends))


def _direct_volume(problem: Any) -> float | None:
    """Volume of the direct contiguous split of the problem's network (the reference of every row)."""
    try:
        reference = PartitionProblem(problem.network, problem.cluster, input_placement=problem.input_placement,
                                     output=problem.output, imbalance=problem.imbalance)
        sol = solve(reference, backend="direct")
    except RepurposeError:
        return None
    return float(sol.report.comm_scalars) if sol.status.has_solution else None


def compare(
    problems: Any,
    backends: Sequence[str],
    time_limit: float | None = 10.0,
    seeds: Sequence[int] = (0,),
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run every backend on every problem with every seed; return one row per run.

    Parameters
    ----------
    problems : mapping name → problem, or list of problems / (name, problem) pairs / :class:`Instance`
        ``PartitionProblem`` (the study's subject) or ``RestructureProblem`` objects.
    backends : list of str
        Backend names (see :func:`repurpose_opt.list_backends`).
    time_limit : float or None
        Seconds per run, passed to every backend.
    seeds : list of int
        Each run is repeated once per seed.
    out_dir : path, optional
        Where ``compare.csv``, ``compare.json`` and the plots are written.
    progress : bool
        Draw a progress bar on stderr.

    Returns
    -------
    list of dict
        One row per (problem, backend, seed) with the keys of :data:`COLUMNS`. ``volume`` is the
        simulator's total volume (scalars per sample), ``objective`` the problem's objective (the same
        unless the objective is latency), ``wall_time`` the seconds ``solve`` took, ``verified`` whether
        :func:`~repurpose_opt.verify` accepts the solution (``None`` without a solution).

    Examples
    --------
    >>> from repurpose_opt.studies.instances import parse_instance
    >>> rows = compare([parse_instance("planted:units=6-6-4:k=2")], ["bruteforce", "direct"], seeds=[0],
    ...                progress=False)
    >>> [(r["backend"], r["status"], r["volume"], r["verified"]) for r in rows]
    [('bruteforce', 'OPTIMAL', 0.0, True), ('direct', 'FEASIBLE', 7.0, True)]
    """
    instances = _named(problems)
    backends = _check_backends(backends)
    if time_limit is not None:
        time_limit = as_float("time_limit", time_limit, strictly_positive=True)
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (list, tuple)) or not seeds:
        raise InvalidParameterError(f"`seeds` must be a non-empty list of integers >= 0, got {seeds!r}")
    seeds = [as_int("seeds", s, minimum=0) for s in seeds]

    rows: list[dict[str, Any]] = []
    with ProgressBar(len(instances) * len(backends) * len(seeds), "compare", enabled=progress) as bar:
        for inst in instances:
            problem = inst.problem
            direct = _direct_volume(problem)
            first = len(rows)
            for backend in backends:
                for seed in seeds:
                    rows.append(_run(inst, backend, seed, time_limit, direct))
                    bar.update(1, note=f"{inst.name} {backend} seed {seed}: {rows[-1]['status']}")
            volumes = [r["volume"] for r in rows[first:] if r["volume"] is not None]
            best = min(volumes) if volumes else None
            for row in rows[first:]:
                row["best_volume"] = best
                row["vs_best"] = _ratio(row["volume"], best)
    if out_dir is not None:
        write_results(rows, out_dir, meta={"backends": backends, "time_limit": time_limit, "seeds": seeds,
                                           "instances": {i.name: i.description for i in instances}})
    return rows


def _ratio(volume: float | None, reference: float | None) -> float | None:
    if volume is None or reference is None:
        return None
    if reference == 0:
        return 1.0 if volume == 0 else math.inf
    return volume / reference


def _run(inst: Instance, backend: str, seed: int, time_limit: float | None, direct: float | None) -> dict[str, Any]:
    problem = inst.problem
    row: dict[str, Any] = {
        "instance": inst.name,
        "problem": type(problem).__name__,
        "units": "-".join(str(n) for n in problem.network.unit_counts),
        "k": problem.cluster.k,
        "backend": backend,
        "seed": seed,
        "status": None, "volume": None, "objective": None, "bound": None, "gap": None, "wall_time": None,
        "solve_time": None, "verified": None, "comm_per_layer": None, "gather": None, "best_volume": None,
        "vs_best": None, "direct_volume": direct, "vs_direct": None, "message": "",
    }
    started = time.perf_counter()
    try:
        sol = solve(problem, backend=backend, time_limit=time_limit, seed=seed)
    except (BackendUnavailableError, BackendCannotSolveError) as exc:
        row.update(status="SKIPPED", message=str(exc))
        return row
    except RepurposeError as exc:
        row.update(status="ERROR", wall_time=time.perf_counter() - started, message=f"{type(exc).__name__}: {exc}")
        return row
    row["wall_time"] = time.perf_counter() - started
    row.update(status=sol.status.value, bound=sol.bound, gap=sol.gap, solve_time=sol.timings.get("solve"),
               message=sol.message)
    if sol.status.has_solution:
        report = sol.report
        check = verify(problem, sol)
        row.update(
            volume=float(report.comm_scalars),
            objective=float(sol.objective),
            verified=bool(check.ok),
            comm_per_layer=[float(v) for v in report.comm_per_layer],
            gather=float(report.gather_scalars),
            vs_direct=_ratio(float(report.comm_scalars), direct),
        )
        if not check.ok:
            row["message"] = (row["message"] + "; " if row["message"] else "") + "verify: " + "; ".join(check.violations)
    return row


# ------------------------------------------------------------------------------------------ summaries
def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (instance, backend): best volume over seeds, median wall time, statuses, ratios.

    Examples
    --------
    >>> rows = [{"instance": "a", "backend": "x", "status": "FEASIBLE", "volume": 4.0, "wall_time": 0.2,
    ...          "bound": None, "verified": True, "best_volume": 2.0, "direct_volume": 8.0, "message": ""},
    ...         {"instance": "a", "backend": "x", "status": "FEASIBLE", "volume": 3.0, "wall_time": 0.4,
    ...          "bound": 1.0, "verified": True, "best_volume": 2.0, "direct_volume": 8.0, "message": ""}]
    >>> s = summarize(rows)[0]
    >>> s["volume"], s["runs"], round(s["wall_time"], 2), s["vs_best"], s["vs_direct"], s["bound"]
    (3.0, 2, 0.3, 1.5, 0.375, 1.0)
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["instance"], row["backend"]), []).append(row)
    out = []
    for (instance, backend), group in groups.items():
        volumes = [r["volume"] for r in group if r["volume"] is not None]
        times = [r["wall_time"] for r in group if r["wall_time"] is not None]
        bounds = [r["bound"] for r in group if r["bound"] is not None]
        best = min(volumes) if volumes else None
        statuses = sorted({r["status"] for r in group})
        verified = [r["verified"] for r in group if r["verified"] is not None]
        out.append({
            "instance": instance,
            "backend": backend,
            "runs": len(group),
            "status": "/".join(statuses),
            "volume": best,
            "bound": max(bounds) if bounds else None,
            "wall_time": statistics.median(times) if times else None,
            "verified": all(verified) if verified else None,
            "vs_best": _ratio(best, group[0]["best_volume"]),
            "vs_direct": _ratio(best, group[0]["direct_volume"]),
            "message": next((r["message"] for r in group if r["status"] in ("SKIPPED", "ERROR")), ""),
        })
    return out


def _fmt(value: Any, spec: str = "g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, spec)


def format_summary(summary: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`summarize`'s lines, grouped by instance."""
    header = f"{'backend':<11} {'status':<18} {'volume':>10} {'bound':>10} {'x best':>7} {'x direct':>8} {'time [s]':>9} {'verified':>8}"
    lines: list[str] = []
    for instance in dict.fromkeys(s["instance"] for s in summary):
        lines += ["", instance, header]
        for s in (s for s in summary if s["instance"] == instance):
            verified = "-" if s["verified"] is None else ("yes" if s["verified"] else "NO")
            lines.append(
                f"{s['backend']:<11} {s['status']:<18} {_fmt(s['volume'], '.6g'):>10} {_fmt(s['bound'], '.6g'):>10} "
                f"{_fmt(s['vs_best'], '.3f'):>7} {_fmt(s['vs_direct'], '.3f'):>8} {_fmt(s['wall_time'], '.3f'):>9} {verified:>8}"
            )
            if s["message"]:
                lines.append(f"{'':<11} {s['message'][:150]}")
    return "\n".join(lines[1:])


# -------------------------------------------------------------------------------------------- files
def write_results(rows: list[dict[str, Any]], out_dir: str | Path, meta: dict[str, Any] | None = None) -> list[Path]:
    """Write ``compare.csv``, ``compare.json`` and (with matplotlib) the two plots; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "compare.json", out / "compare.csv"]
    paths[0].write_text(json.dumps(_finite({"meta": meta or {}, "rows": rows}), indent=1, allow_nan=False))
    with open(paths[1], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({key: json.dumps(row[key]) if isinstance(row[key], list) else row[key] for key in COLUMNS})
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return paths
    paths += plot_compare(rows, out)
    return paths


def _finite(value: Any) -> Any:
    """Standard JSON has no infinity: a ratio to a zero best volume is written as the string "inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def plot_compare(rows: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """``compare_time.png`` (volume vs wall time) and ``compare_layers.png`` (per-layer volume bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    instances = list(dict.fromkeys(r["instance"] for r in rows))
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    colors = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(backends)}
    markers = "osD^v<>ph*"
    cols = min(3, len(instances))
    nrows = math.ceil(len(instances) / cols)

    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 4 * nrows), squeeze=False)
    for ax, instance in zip(axes.flat, instances, strict=False):
        mine = [r for r in rows if r["instance"] == instance]
        for i, backend in enumerate(backends):
            points = [(r["wall_time"], r["volume"]) for r in mine if r["backend"] == backend and r["volume"] is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.scatter(xs, ys, label=backend, color=colors[backend], marker=markers[i % len(markers)], s=36)
        bounds = [r["bound"] for r in mine if r["bound"] is not None]
        if bounds:
            ax.axhline(max(bounds), color="k", linestyle=":", linewidth=1, label="best bound")
        ax.set_xscale("log")
        ax.set_xlabel("wall time [s]")
        ax.set_ylabel("volume [scalars / sample]")
        ax.set_title(instance, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    time_path = _save_grid(plt, fig, axes, len(instances), out / "compare_time.png")

    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 4 * nrows), squeeze=False)
    for ax, instance in zip(axes.flat, instances, strict=False):
        best: dict[str, dict[str, Any]] = {}
        for r in rows:
            if r["instance"] == instance and r["volume"] is not None:
                if r["backend"] not in best or r["volume"] < best[r["backend"]]["volume"]:
                    best[r["backend"]] = r
        if best:
            n_layers = len(next(iter(best.values()))["comm_per_layer"])
            labels = [f"layer {l}" for l in range(1, n_layers + 1)] + ["gather"]
            width = 0.8 / len(best)
            for i, (backend, r) in enumerate(best.items()):
                values = r["comm_per_layer"] + [r["gather"]]
                ax.bar([g + i * width for g in range(len(labels))], values, width, label=backend, color=colors[backend])
            ax.set_xticks([g + 0.4 - width / 2 for g in range(len(labels))])
            ax.set_xticklabels(labels, fontsize=8)
            ax.legend(fontsize=7)
        ax.set_ylabel("volume [scalars / sample]")
        ax.set_title(f"{instance} (best run per backend)", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    layers_path = _save_grid(plt, fig, axes, len(instances), out / "compare_layers.png")
    return [time_path, layers_path]


def _save_grid(plt: Any, fig: Any, axes: Any, used: int, path: Path) -> Path:
    """Hide the grid's unused panels, write the figure to ``path`` and close it."""
    for ax in list(axes.flat)[used:]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
