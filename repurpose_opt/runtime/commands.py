"""CLI sub-commands of the runtime: ``export``, ``run`` and ``calibrate-network``.

:func:`register` adds them to an ``argparse`` sub-parser collection; every sub-parser sets
``handler`` (``args.handler(args) -> int``, the exit code). Handlers print a table; a
:class:`~repurpose_opt.RepurposeError` propagates for the CLI to print.
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, InvalidParameterError

__all__ = ["register", "cmd_export", "cmd_run", "cmd_calibrate_network"]


def register(subparsers: Any) -> None:
    """Add ``export``, ``run`` and ``calibrate-network`` to ``subparsers`` (from ``add_subparsers()``)."""
    p = subparsers.add_parser(
        "export",
        help="write one shard per worker plus a manifest for a saved solution",
        description="Split a saved solution into per-worker shards (only each worker's rows and the columns "
        "it reads) and a manifest with the exact send/receive lists.",
    )
    p.add_argument("--solution", required=True, metavar="SOL.npz", help="a solution written by save_solution")
    p.add_argument("--out", required=True, metavar="DIR", help="export directory (created if needed)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"), help="weights and wire dtype")
    p.set_defaults(handler=cmd_export)

    p = subparsers.add_parser(
        "run",
        help="run an export on K local worker processes with torch.distributed",
        description="Start one process per worker, move exactly the manifest's messages with isend/irecv, "
        "and report bytes and times per layer.",
    )
    p.add_argument("--export", required=True, metavar="DIR", help="directory written by `export`")
    p.add_argument("--input", required=True, metavar="DATA.npy", help="batch of shape (N, *input_shape)")
    p.add_argument("--output", metavar="OUT.npy", help="write the outputs (N, n_outputs) there")
    p.add_argument("--backend", default="gloo", help="torch.distributed backend (default: gloo)")
    p.add_argument("--init-method", default=None, help="file://PATH, tcp://HOST:PORT or env:// (default: a temporary file)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before the run is stopped (default: 60)")
    p.add_argument("--repeats", type=int, default=1, help="timed passes; times are medians (default: 1)")
    p.add_argument("--warmup", type=int, default=0, help="untimed passes first (default: 0)")
    p.add_argument("--synchronize", action="store_true", help="barrier between layers (the latency model's schedule)")
    p.add_argument(
        "--ranks", default=None, metavar="R[,R...]",
        help="run only these worker ranks here (several hosts: the same command on each host with its ranks and "
        "--init-method tcp://HOST_OF_RANK_0:PORT); default: all",
    )
    p.set_defaults(handler=cmd_run)

    p = subparsers.add_parser(
        "calibrate-network",
        help="measure alpha, beta and FLOP rates of K local workers into a Cluster file",
        description="Ping-pong and bandwidth tests between every pair of workers and a matmul FLOP-rate test "
        "per worker; writes a Cluster JSON that other commands accept. With --solution and --input, also "
        "compares the simulator's predicted per-layer times with measured ones.",
    )
    p.add_argument("--k", type=int, default=2, help="number of workers (default: 2)")
    p.add_argument("--out", required=True, metavar="CLUSTER.json", help="where to write the cluster")
    p.add_argument("--matmul-size", type=int, default=256, help="side of the FLOP-rate matmul (default: 256)")
    p.add_argument("--pingpongs", type=int, default=20, help="round trips per link and size (default: 20)")
    p.add_argument("--backend", default="gloo", help="torch.distributed backend (default: gloo)")
    p.add_argument("--init-method", default=None, help="rendezvous URL (default: a temporary file)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before the test is stopped (default: 120)")
    p.add_argument("--solution", metavar="SOL.npz", help="also compare predicted and measured latency of this solution")
    p.add_argument("--input", metavar="DATA.npy", help="batch for the comparison (with --solution)")
    p.set_defaults(handler=cmd_calibrate_network)


def _load_array(path: str) -> np.ndarray:
    """Read a ``.npy`` batch without pickle, as a FormatError on anything unreadable."""
    file = Path(path)
    if not file.is_file():
        raise FormatError(f"`--input` must be an existing .npy file, got {path!r}")
    try:
        return np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FormatError(f"{path!r} is not a readable numeric .npy file: {exc}") from exc


def cmd_export(args: argparse.Namespace) -> int:
    """``repurpose-opt export --solution SOL.npz --out DIR``."""
    from ..solution import load_solution
    from .export import export, load_export

    solution = load_solution(args.solution)
    directory = export(solution, args.out, dtype=args.dtype)
    model = load_export(directory)
    print(f"exported {args.solution} ({solution.backend}, {solution.status.value}) to {directory} for {model.k} workers, {model.dtype}")
    print(_export_table(model))
    return 0


def _export_table(model: Any) -> str:
    k = model.k
    header = f"{'layer':>6} {'units per worker':>{max(18, 6 * k)}} {'scalars/sample sent':>20}"
    lines = [header]
    volume = model.link_scalars().sum(axis=(1, 2))
    for plan, scalars in zip(model.layers, volume, strict=True):
        units = "/".join(str(owned.size) for owned in plan.owned)
        lines.append(f"{plan.index:>6} {units:>{max(18, 6 * k)}} {int(scalars):>20}")
    gather = int(model.gather_scalars().sum())
    lines.append(f"{'gather':>6} {'':>{max(18, 6 * k)}} {gather:>20}")
    params = [sum(model.shards[r][f'W{p.index}'].size + model.shards[r][f'b{p.index}'].size for p in model.layers) for r in range(k)]
    lines.append(f"parameters per worker: {params}")
    return "\n".join(lines)


def _parse_ranks(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidParameterError(f"`--ranks` must be comma-separated worker ranks such as 0,2, got {text!r}") from None


def cmd_run(args: argparse.Namespace) -> int:
    """``repurpose-opt run --export DIR --input DATA.npy [--output OUT.npy] [--ranks R,...]``."""
    from .distributed import RuntimeFailure, run_distributed
    from .export import load_export

    X = _load_array(args.input)
    model = load_export(args.export)
    result = run_distributed(
        args.export, X, init_method=args.init_method, backend=args.backend, timeout=args.timeout,
        ranks=_parse_ranks(args.ranks), synchronize=args.synchronize, repeats=args.repeats, warmup=args.warmup,
    )
    expected = model.link_scalars() * model.dtype_bytes * result.n_samples
    known = np.broadcast_to(result.known_links(), expected.shape)
    if not np.array_equal(result.link_bytes[known], expected[known]):  # the runtime must move exactly the plan
        raise RuntimeFailure("the bytes sent differ from the manifest's message lists")
    here = "" if result.complete else f" (ranks {list(result.ranks)} here; figures cover the links they touch)"
    print(f"ran {args.export} on {result.k} workers ({result.backend}, {result.init_method}), batch {result.n_samples}{here}")
    print(result.table())
    print(f"per-worker total [ms]: {[None if np.isnan(t) else round(float(t) * 1e3, 3) for t in result.worker_total_times]}")
    print(f"time per sample: {result.time_per_sample * 1e6:.1f} us; wall time including start-up: {result.wall_time:.2f} s")
    print("bytes sent match the manifest's plan exactly")
    if args.output:
        if result.complete or result.output == "distributed" or 0 in result.ranks:
            np.save(args.output, result.outputs, allow_pickle=False)
            missing = int(np.isnan(result.outputs).any(axis=0).sum())
            note = f" ({missing} output columns held on other hosts are NaN)" if missing else ""
            print(f"outputs {result.outputs.shape} written to {args.output}{note}")
        else:
            print(f"no outputs here: they are gathered on worker 0's host, so {args.output} was not written")
    return 0


def cmd_calibrate_network(args: argparse.Namespace) -> int:
    """``repurpose-opt calibrate-network --k 4 --out cluster.json``."""
    from .calibrate import calibrate_network, compare_latency

    if (args.solution is None) != (args.input is None):
        raise InvalidParameterError("`--solution` and `--input` must be given together")
    calibration = calibrate_network(
        args.k, out=args.out, matmul_size=args.matmul_size, pingpongs=args.pingpongs, init_method=args.init_method,
        backend=args.backend, timeout=args.timeout,
    )
    print(f"calibrated {args.k} workers; cluster written to {calibration.path}")
    print(calibration.table())
    if args.solution is not None:
        from ..solution import load_solution

        solution = load_solution(args.solution)
        comparison = compare_latency(solution, _load_array(args.input), calibration.cluster, timeout=args.timeout)
        print(f"latency model vs measurement (batch {comparison.n_samples}, barrier between layers):")
        print(comparison.table())
    return 0
