"""Simulator cost against the plain forward pass, and brute-force cost against instance size (issue 2, item 10).

1. ``simulate(net, assignment, cluster, X)`` (every worker computes its units from what it holds, plus all the
   meters) against ``Network.forward(X)`` for the zoo's digits MLP (64-256-128-64-10) and digits CNN, batch
   1024, K = 4, replicated input, outputs gathered, with the contiguous ("direct") and a seeded random balanced
   placement. Median of ``--repeats`` interleaved runs of each, ratio in the same run; target: simulate <= 1.5x
   forward. ``meters only`` is ``simulate`` without data (message plan, FLOPs, memory, latency).
2. ``bruteforce`` on random sparse layered networks of growing size (replicated input, gather, volume), K = 2
   and 3: balanced placements per layer, pairs scored by the chain DP, median solve time, up to the size the
   backend refuses.

BLAS threads are limited to ``--threads`` (default 1, through threadpoolctl) for both sides, so the ratio
measures the work, not thread contention on a shared machine; ``--threads 0`` leaves the library default.

Run:  flock /tmp/repurpose-bench.lock python benchmarks/bench_simulator.py [--repeats 15] [--quick]
Prints the tables and writes ``benchmarks/results/simulator.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

import repurpose_opt as ro
from repurpose_opt import zoo
from repurpose_opt.testing import random_dense_network

TARGET = 1.5


def _placements(net: ro.Network, k: int, seed: int = 0) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    direct = [None] + [np.arange(n) * k // n for n in net.unit_counts[1:]]
    shuffled = [None] + [rng.permutation(p) for p in direct[1:]]
    return {"direct": direct, "random": shuffled}


def _median_times(fns: dict[str, callable], repeats: int) -> dict[str, float]:
    for fn in fns.values():  # warm caches (structure, imports) outside the timing
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():  # interleaved, so load changes hit both sides alike
            started = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


def bench_simulator(repeats: int, batch: int = 1024, k: int = 4) -> list[dict]:
    rows = []
    for name in ("digits_mlp", "digits_cnn"):
        try:
            model = zoo.load(name)
        except ro.BackendUnavailableError as exc:  # the CNN needs torch to be trained the first time
            print(f"skipping {name}: {exc}")
            continue
        net = model.network
        X = np.concatenate([model.X_train, model.X_test])[:batch]
        cluster = ro.Cluster(k=k)
        for placement_name, assignment in _placements(net, k).items():
            report = ro.simulate(net, assignment, cluster, X=X)
            error = float(np.max(np.abs(report.outputs - net.forward(X))))
            times = _median_times({
                "forward": lambda net=net, X=X: net.forward(X),
                "simulate": lambda net=net, a=assignment, c=cluster, X=X: ro.simulate(net, a, c, X=X),
                "meters": lambda net=net, a=assignment, c=cluster: ro.simulate(net, a, c),
            }, repeats)
            rows.append({
                "model": name, "placement": placement_name, "batch": int(X.shape[0]), "k": k,
                "forward_ms": times["forward"] * 1e3, "simulate_ms": times["simulate"] * 1e3,
                "meters_only_ms": times["meters"] * 1e3, "ratio": times["simulate"] / times["forward"],
                "max_abs_output_difference": error, "comm_scalars": report.comm_scalars,
            })
    return rows


def bench_bruteforce(repeats: int, quick: bool) -> list[dict]:
    rows = []
    plans = {2: [(3, 2, 2), (4, 4, 3), (6, 6, 4), (8, 8, 4), (8, 10, 6), (10, 12, 6), (12, 14, 8), (12, 16, 8),
                 (8, 8, 8, 8, 8), (14, 18, 10)],
             3: [(3, 3, 3), (4, 4, 3), (6, 6, 4), (6, 8, 6), (9, 9, 6), (9, 12, 6), (12, 15, 9)]}
    rng = np.random.default_rng(0)
    for k, shapes in plans.items():
        for sizes in shapes[: 4 if quick else None]:
            net = random_dense_network(rng, list(sizes), density=0.4)
            problem = ro.PartitionProblem(net, ro.Cluster(k=k), input_placement="replicated", output="gather")
            row = {"k": k, "sizes": list(sizes), "units_placed": int(sum(sizes[1:]))}
            reason = ro.solvers.registry.get_backend("bruteforce")().can_solve(problem)
            if reason is not None:
                row.update(refused=reason)
                rows.append(row)
                break
            sol = ro.solve(problem, backend="bruteforce")
            seconds = _median_times({"solve": lambda p=problem: ro.solve(p, backend="bruteforce")}, repeats)["solve"]
            row.update(seconds=seconds, objective=sol.objective, status=sol.status.value,
                       placements_per_layer=sol.stats["placements_per_layer"], pairs_scored=sol.stats["pairs_scored"])
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (0: library default)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and brute-force sizes")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    repeats = 5 if args.quick else args.repeats
    limit = nullcontext()
    if args.threads:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(limits=args.threads)
    with limit:
        sim = bench_simulator(repeats)
        brute = bench_bruteforce(3 if args.quick else 5, args.quick)

    print(f"\nsimulate vs forward (batch 1024, K=4, median of {repeats}, BLAS threads: {args.threads or 'default'})")
    print(f"{'model':<11} {'placement':<9} {'forward ms':>10} {'simulate ms':>11} {'meters ms':>9} {'ratio':>6} {'max |diff|':>10}")
    for r in sim:
        print(f"{r['model']:<11} {r['placement']:<9} {r['forward_ms']:>10.2f} {r['simulate_ms']:>11.2f} "
              f"{r['meters_only_ms']:>9.2f} {r['ratio']:>6.2f} {r['max_abs_output_difference']:>10.1e}")
    worst = max((r["ratio"] for r in sim), default=float("nan"))
    print(f"worst ratio {worst:.2f} (target <= {TARGET}): {'PASS' if worst <= TARGET else 'MISS'}")

    print("\nbruteforce (replicated input, gather, volume; median of repeats)")
    print(f"{'K':>2} {'sizes':<14} {'units':>5} {'placements per layer':<28} {'pairs':>11} {'seconds':>9} {'volume':>7}")
    for r in brute:
        if "refused" in r:
            print(f"{r['k']:>2} {str(r['sizes']):<14} {r['units_placed']:>5} refused: {r['refused']}")
            continue
        print(f"{r['k']:>2} {str(r['sizes']):<14} {r['units_placed']:>5} {str(r['placements_per_layer']):<28} "
              f"{r['pairs_scored']:>11,} {r['seconds']:>9.4f} {r['objective']:>7.0f}")

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "simulator.json"
    path.write_text(json.dumps({
        "target_ratio": TARGET, "worst_ratio": worst, "repeats": repeats, "blas_threads": args.threads or "default",
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "processor": platform.machine()},
        "simulator": sim, "bruteforce": brute,
    }, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
