"""Issue-5 benchmark: end-to-end distributed inference, direct split vs restructured model, on loopback.

For the digits MLP and the digits CNN at K = 2 and 4 (replicated input, outputs gathered on worker 0),
the direct contiguous split and the restructured model (``repurpose``, tolerance 0.1, calibration = the
first 1000 training samples) run on K local gloo workers for a batch of 1 and of 256 test samples. It
reports the bytes actually sent, the wall time per sample (median over repeated passes in the same
processes, first layer to gathered outputs; the median of three alternating rounds), their direct/restructured ratios, and the ratios the
simulator predicts (bytes: the simulator's volume; time: the α-β model on a cluster calibrated on this
machine with :func:`calibrate_network`). Every run is checked: bytes equal to the simulator's exactly,
outputs equal to the network's forward pass.

It also reports the calibration (α, β, FLOP rate) and the latency model's per-layer error
(:func:`compare_latency`, layer-synchronous runs).

Run:  python benchmarks/bench_runtime.py [--quick] [--out benchmarks/results]
Writes ``runtime.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

import repurpose_opt as ro
from repurpose_opt.runtime import calibrate_network, compare_latency, predicted_times, run_distributed

MODELS = ("digits_mlp", "digits_cnn")
KS = (2, 4)
BATCHES = (1, 256)
TOLERANCE = 0.1


def load_model(name: str):
    from repurpose_opt import zoo

    factory = getattr(zoo, name, None)
    return factory() if callable(factory) else zoo.load(name)


def accuracy(network: ro.Network, X: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(network.forward(X).argmax(axis=1) == y))


def predicted_time(solution: ro.Solution, cluster: ro.Cluster, batch: int) -> float:
    report = ro.simulate(solution.network, solution.assignment, cluster, output=solution.output)
    layers, gather = predicted_times(report, cluster, batch)
    return float(layers.sum() + gather)


def measure(solution: ro.Solution, X: np.ndarray, repeats: int, warmup: int) -> dict:
    result = run_distributed(solution, X, repeats=repeats, warmup=warmup, timeout=300)
    report = ro.simulate(solution.network, solution.assignment, solution.cluster, output=solution.output)
    n = X.shape[0]
    # the runtime must move exactly the simulator's messages, and compute the same outputs
    assert np.array_equal(result.link_bytes, n * report.link_bytes), "bytes per link differ from the simulator"
    assert np.array_equal(result.gather_bytes, n * report.gather_bytes), "gather bytes differ from the simulator"
    error = float(np.abs(result.outputs - solution.network.forward(X)).max())
    return {
        "bytes": result.comm_bytes,
        "bytes_per_layer": result.bytes_per_layer.tolist(),
        "gather_bytes": int(result.gather_bytes.sum()),
        "time_per_sample_s": result.time_per_sample,
        "total_time_s": result.total_time,
        "layer_times_s": result.layer_times.tolist(),
        "max_abs_output_error": error,
        "wall_time_s": result.wall_time,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    repeats = {1: 5 if args.quick else 30, 256: 3 if args.quick else 10}
    warmup = 2 if args.quick else 5
    rounds_per_case = 1 if args.quick else 3
    started = time.perf_counter()
    results: dict = {"machine": {"platform": platform.platform(), "python": platform.python_version()},
                     "tolerance": TOLERANCE, "batches": list(BATCHES), "calibration": {}, "runs": [], "latency_model": []}

    print("Calibrating the α-β model on loopback (calibrate_network)")
    clusters = {}
    for k in KS:
        calibration = calibrate_network(k, pingpongs=10 if args.quick else 20, timeout=300)
        clusters[k] = calibration.cluster
        off = ~np.eye(k, dtype=bool)
        results["calibration"][k] = {
            "alpha_s": calibration.alpha.tolist(),
            "beta_bytes_per_s": calibration.beta.tolist(),
            "flop_rates": calibration.flop_rates.tolist(),
            "cluster": calibration.cluster.to_dict(),
            "alpha_median_us": float(np.median(calibration.alpha[off]) * 1e6),
            "beta_median_MBps": float(np.median(calibration.beta[off]) / 1e6),
        }
        print(f"K={k}: alpha median {np.median(calibration.alpha[off]) * 1e6:.1f} us, "
              f"beta median {np.median(calibration.beta[off]) / 1e6:.0f} MB/s, "
              f"FLOP rate {calibration.cluster.flop_rate / 1e9:.1f} GFLOP/s, speeds {np.round(calibration.cluster.speed, 3).tolist()}")

    rows = []
    for name in models:
        model = load_model(name)
        net = model.network
        calibration_set = model.X_train[:1000]
        for k in KS:
            cluster = ro.Cluster(k=k)
            direct = ro.solve(ro.PartitionProblem(net, cluster), backend="direct")
            try:
                restructured = ro.solve(ro.RestructureProblem(net, cluster, calibration=calibration_set, tolerance=TOLERANCE),
                                        backend="repurpose")
                failure = None if restructured.status.has_solution else f"{restructured.status.value}: {restructured.message}"
            except ro.RepurposeError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            if failure is not None:
                print(f"  {name} K={k}: restructuring failed, no run: {failure}")
                results["runs"].append({"model": name, "k": k, "failure": failure})
                continue
            acc = {"direct": accuracy(net, model.X_test, model.y_test),
                   "restructured": accuracy(restructured.network, model.X_test, model.y_test)}
            for batch in BATCHES:
                X = model.X_test[:batch]
                figures = {}
                # Rounds alternate direct and restructured so that load from other processes on the host
                # hits both alike; each round is one run of `repeats` passes, the median round counts.
                rounds: dict = {"direct": [], "restructured": []}
                for _ in range(rounds_per_case):
                    for label, solution in (("direct", direct), ("restructured", restructured)):
                        rounds[label].append(measure(solution, X, repeats[batch], warmup))
                for label, solution in (("direct", direct), ("restructured", restructured)):
                    ordered = sorted(rounds[label], key=lambda entry: entry["time_per_sample_s"])
                    figures[label] = dict(ordered[len(ordered) // 2])
                    figures[label]["round_times_per_sample_s"] = [entry["time_per_sample_s"] for entry in rounds[label]]
                    figures[label]["predicted_time_per_sample_s"] = predicted_time(solution, clusters[k], batch) / batch
                    figures[label]["simulated_bytes"] = float(batch * solution.report.comm_bytes)
                    figures[label]["accuracy"] = acc[label]
                d, r = figures["direct"], figures["restructured"]
                row = {
                    "model": name, "k": k, "batch": batch, **{f"{label}": figures[label] for label in figures},
                    "bytes_ratio": d["bytes"] / r["bytes"] if r["bytes"] else float("inf"),
                    "predicted_bytes_ratio": d["simulated_bytes"] / r["simulated_bytes"] if r["simulated_bytes"] else float("inf"),
                    "time_ratio": d["time_per_sample_s"] / r["time_per_sample_s"],
                    "predicted_time_ratio": d["predicted_time_per_sample_s"] / r["predicted_time_per_sample_s"],
                }
                rows.append(row)
                results["runs"].append(row)
                print(f"  {name} K={k} batch={batch}: bytes {d['bytes']} -> {r['bytes']}, "
                      f"{d['time_per_sample_s'] * 1e6:.1f} -> {r['time_per_sample_s'] * 1e6:.1f} us/sample")
            if name == "digits_mlp" and k == max(KS):
                for batch in BATCHES:
                    for label, solution in (("direct", direct), ("restructured", restructured)):
                        comparison = compare_latency(solution, model.X_test[:batch], clusters[k], repeats=repeats[batch], warmup=warmup)
                        results["latency_model"].append({
                            "model": name, "k": k, "batch": batch, "solution": label,
                            "predicted_s": comparison.predicted.tolist(), "measured_s": comparison.measured.tolist(),
                            "predicted_gather_s": comparison.predicted_gather, "measured_gather_s": comparison.measured_gather,
                            "relative_error": comparison.relative_error.tolist(),
                            "total_relative_error": comparison.total_relative_error,
                        })
                        print(f"\nLatency model vs measurement: {name} {label} K={k} batch={batch} (barrier between layers)")
                        print(comparison.table())

    print("\nEnd-to-end distributed inference on loopback (gloo), direct split vs restructured (tolerance "
          f"{TOLERANCE}); time = median wall time per sample, first layer to gathered outputs")
    header = (f"{'model':11s} {'K':>2s} {'batch':>5s} {'acc d/r':>11s} {'bytes direct':>12s} {'bytes restr':>11s} "
              f"{'ratio':>7s} {'sim':>7s} {'us/smp direct':>13s} {'us/smp restr':>12s} {'ratio':>6s} {'sim':>6s}")
    print(header)
    print("-" * len(header))
    for row in rows:
        d, r = row["direct"], row["restructured"]
        print(f"{row['model']:11s} {row['k']:2d} {row['batch']:5d} {d['accuracy']:.3f}/{r['accuracy']:.3f} "
              f"{d['bytes']:12d} {r['bytes']:11d} {row['bytes_ratio']:7.2f} {row['predicted_bytes_ratio']:7.2f} "
              f"{d['time_per_sample_s'] * 1e6:13.1f} {r['time_per_sample_s'] * 1e6:12.1f} {row['time_ratio']:6.2f} "
              f"{row['predicted_time_ratio']:6.2f}")
    results["seconds"] = time.perf_counter() - started
    path = out / "runtime.json"
    path.write_text(json.dumps(results, indent=1, default=float))
    print(f"\nwrote {path} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
