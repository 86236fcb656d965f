"""CLI sub-commands of the studies: ``compare`` (backends on partition instances) and ``tradeoff``.

:func:`register` adds them to an ``argparse`` sub-parser collection; each sets ``handler``
(``args.handler(args) -> int``). A :class:`~repurpose_opt.RepurposeError` propagates for the CLI to print.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import InvalidParameterError

__all__ = ["register", "cmd_compare", "cmd_tradeoff", "DEFAULT_INSTANCES"]

DEFAULT_INSTANCES = ("planted", "random", "digits_mlp:keep=0.1:k=4")


def register(subparsers: Any) -> None:
    """Add ``compare`` and ``tradeoff`` to ``subparsers`` (from ``add_subparsers()``)."""
    p = subparsers.add_parser(
        "compare",
        help="run partition backends on instances and compare volume, bound, gap and time",
        description="Runs every (instance, backend, seed) under one time limit; writes compare.csv, compare.json "
        "and, with matplotlib, compare_time.png and compare_layers.png. Instances are KIND[:key=value...]: "
        "digits_mlp / digits_cnn / mnist1d_mlp (pruned to the largest `keep` fraction of weights per layer; keys "
        "keep, k, input, output, imbalance), random (units, density, seed, k, ...), planted (hidden blocks, "
        "volume 0 optimal; units, density, seed, k, ...). Example: planted:units=24-24-12:k=3.",
    )
    p.add_argument("--instances", nargs="+", default=list(DEFAULT_INSTANCES), metavar="SPEC",
                   help=f"instance specs (default: {' '.join(DEFAULT_INSTANCES)})")
    p.add_argument("--backends", nargs="+", default=None, metavar="NAME",
                   help="backends to run (default: every installed backend that solves PartitionProblem)")
    p.add_argument("--time-limit", type=float, default=10.0, help="seconds per run (default: 10)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="SEED", help="seeds (default: 0)")
    p.add_argument("--out", default="repurpose-compare", metavar="DIR", help="output directory (default: ./repurpose-compare)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(handler=cmd_compare)

    p = subparsers.add_parser(
        "tradeoff",
        help="communication vs accuracy of restructured models over a sweep of tolerances",
        description="Restructures each shipped model for each K, engine and tolerance (replicated input, outputs "
        "gathered on worker 0) and records volume, held-out accuracy and the guarantee; writes tradeoff.csv, "
        "tradeoff.json and, with matplotlib, one tradeoff_<model>.png per model.",
    )
    p.add_argument("--models", nargs="+", default=["digits_mlp"], metavar="NAME",
                   help="zoo models: digits_mlp, digits_cnn, mnist1d_mlp (default: digits_mlp)")
    p.add_argument("--engines", nargs="+", default=None, metavar="NAME",
                   help="restructuring backends (default: repurpose direct hypergraph munkres greedy)")
    p.add_argument("--ks", nargs="+", type=int, default=[2, 4, 8], metavar="K", help="worker counts (default: 2 4 8)")
    p.add_argument("--tolerances", nargs="+", type=float, default=None, metavar="TOL",
                   help="relative calibration errors per layer (default: 0.02 0.05 0.1 0.15 0.2 0.3)")
    p.add_argument("--calibration", type=int, default=1000, help="training samples for the refits (default: 1000)")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per restructuring (default: 60)")
    p.add_argument("--out", default="repurpose-tradeoff", metavar="DIR", help="output directory (default: ./repurpose-tradeoff)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(handler=cmd_tradeoff)


def cmd_compare(args: argparse.Namespace) -> int:
    """``repurpose-opt compare --instances ... --backends ... --time-limit ... --seeds ... --out DIR``."""
    from ..solvers.registry import installed_partition_backends
    from .compare import compare, format_summary, summarize
    from .instances import parse_instance

    backends = args.backends or installed_partition_backends()
    instances = [parse_instance(spec) for spec in args.instances]  # every spec checked before any run
    rows = compare(instances, backends, time_limit=args.time_limit, seeds=args.seeds, out_dir=args.out,
                   progress=not args.no_progress)
    print(f"{len(rows)} runs: {len(instances)} instances x {len(backends)} backends x {len(args.seeds)} seeds, "
          f"time limit {args.time_limit:g} s")
    for inst in instances:
        print(f"  {inst.name}: {inst.description}, units {'-'.join(map(str, inst.problem.network.unit_counts))}, "
              f"input {inst.problem.input_mode}, output {inst.problem.output}")
    print(format_summary(summarize(rows)))
    print(f"results written to {Path(args.out)}/ (compare.csv, compare.json"
          f"{', compare_time.png, compare_layers.png' if (Path(args.out) / 'compare_time.png').exists() else ''})")
    return 0


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def cmd_tradeoff(args: argparse.Namespace) -> int:
    """``repurpose-opt tradeoff --models ... --engines ... --ks ... --tolerances ... --out DIR``."""
    from .. import zoo
    from .._validation import as_choice, as_float, as_int
    from ..cluster import MAX_WORKERS
    from .compare import _check_backends
    from .tradeoff import tradeoff

    # Everything is checked before the first solve: a bad value would otherwise only show up as one
    # ERROR row per point of the sweep, and the command would still exit 0.
    kwargs: dict[str, Any] = {}
    if args.engines is not None:
        kwargs["engines"] = _check_backends(args.engines)
    if args.tolerances is not None:
        kwargs["tolerances"] = [as_float("--tolerances", tol, minimum=0.0) for tol in args.tolerances]
    for k in args.ks:
        as_int("--ks", k, minimum=1, maximum=MAX_WORKERS)
    time_limit = as_float("--time-limit", args.time_limit, strictly_positive=True)
    calibration = as_int("--calibration", args.calibration, minimum=1)
    models = [zoo.load(as_choice("--models", name, tuple(zoo.MODELS))) for name in args.models]
    fewest = min(model.X_train.shape[0] for model in models)
    if calibration > fewest:
        raise InvalidParameterError(f"`--calibration` must be in 1..{fewest} (the training samples of "
                                    f"{', '.join(args.models)}), got {calibration}")
    rows = tradeoff(models, ks=args.ks, calibration=calibration, time_limit=time_limit,
                    out_dir=args.out, progress=not args.no_progress, **kwargs)
    header = (f"{'model':<12} {'K':>2} {'engine':<16} {'tol':>6} {'status':<10} {'volume':>8} {'x less':>7} "
              f"{'accuracy':>8} {'loss pt':>7} {'time [s]':>8}")
    print(header)
    for row in rows:
        tol = row["tolerance"]
        tol_text = "-" if tol is None else (f"{tol:g}" if not isinstance(tol, list) else "per-layer")
        accuracy = None if row["accuracy"] is None else 100 * row["accuracy"]
        print(f"{row['model']:<12} {row['k']:>2} {row['engine']:<16} {tol_text:>6} {row['status']:<10} "
              f"{_fmt(row['volume'], '.6g'):>8} {_fmt(row['ratio_vs_direct'], '.3g'):>7} {_fmt(accuracy, '.2f'):>8} "
              f"{_fmt(row['accuracy_loss_pt'], '.2f'):>7} {_fmt(row['seconds'], '.2f'):>8}")
    print(f"results written to {Path(args.out)}/ (tradeoff.csv, tradeoff.json and a PNG per model with matplotlib)")
    return 0
