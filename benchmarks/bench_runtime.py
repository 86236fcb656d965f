"""Issue-5 benchmark: end-to-end distributed inference, direct split vs restructured model, on loopback.

For the digits MLP and the digits CNN at K = 2 and 4 (replicated input, outputs gathered on worker 0),
the direct contiguous split (``direct`` on a PartitionProblem: the weights unchanged) and the restructured
model (``repurpose``, tolerance 0.1, calibration = the first 1000 training samples) run on K local gloo
workers for a batch of 1 and of 256 test samples. Reported per case: the bytes actually sent, the wall
time per sample (first layer to gathered outputs, max over workers, median over repeated passes in the
same processes; the median of three rounds that alternate direct and restructured so host load hits both
alike), their direct/restructured ratios, and the ratios the simulator predicts (bytes: the simulator's
volume; time: the α-β model on the cluster calibrated on this machine). Every run is checked: bytes equal
to the simulator's exactly, outputs equal to the network's forward pass.

The latency model is then checked layer by layer: :func:`calibrate_network` measures α, β and the FLOP
rate; :func:`compare_latency` runs each case with a barrier between layers (the model's synchronous
schedule) and sets the measured per-layer times beside the prediction. To explain the error, the
benchmark also measures

- the per-layer cost of one worker alone (K = 1, no message): what the runtime spends per layer beyond
  the FLOPs the model counts (torch op dispatch, Python), and
- per layer the largest number of messages one worker posts and waits for (the model charges one α per
  link, in parallel; a worker's Python thread posts its messages one after the other),

and groups the per-layer error by that number of messages (quoted in docs/runtime.md).

Run:  flock /tmp/repurpose-bench.lock python benchmarks/bench_runtime.py [--quick] [--out benchmarks/results]
Writes ``runtime.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import repurpose_opt as ro
from repurpose_opt import zoo
from repurpose_opt.runtime import calibrate_network, compare_latency, load_export, predicted_times, run_distributed
from repurpose_opt.runtime import export as export_shards

MODELS = ("digits_mlp", "digits_cnn")
KS = (2, 4)
BATCHES = (1, 256)
TOLERANCE = 0.1


def _echo(connection) -> None:
    while (message := connection.recv()) is not None:
        connection.send(message)


def pipe_round_trip(n: int = 300) -> dict:
    """Round trip of a few bytes through a pipe between two Python processes: the host's own floor."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # the parent never imports torch, so fork is safe here
    here, there = ctx.Pipe()
    echo = ctx.Process(target=_echo, args=(there,), daemon=True)
    echo.start()
    times = []
    for _ in range(n + 5):
        t0 = time.perf_counter()
        here.send(b"ping")
        here.recv()
        times.append(time.perf_counter() - t0)
    here.send(None)
    echo.join(5)
    times = np.array(times[5:])
    return {"min_s": float(times.min()), "median_s": float(np.median(times)), "p90_s": float(np.percentile(times, 90))}


def predicted_time(solution: ro.Solution, cluster: ro.Cluster, batch: int) -> float:
    """The α-β model's time for one pass over ``batch`` samples (layers + gather)."""
    report = ro.simulate(solution.network, solution.assignment, cluster, output=solution.output)
    layers, gather = predicted_times(report, cluster, batch)
    return float(layers.sum() + gather)


def messages_per_layer(solution: ro.Solution, workdir: Path) -> list[int]:
    """Per layer, the largest number of messages (sent + received) one worker handles."""
    model = load_export(export_shards(solution, workdir / "msgs"), workers=())
    return [max(len(plan.sends[r]) + len(plan.receives[r]) for r in range(model.k)) for plan in model.layers]


def measure(solution: ro.Solution, X: np.ndarray, repeats: int, warmup: int) -> dict:
    result = run_distributed(solution, X, repeats=repeats, warmup=warmup, timeout=300)
    report = ro.simulate(solution.network, solution.assignment, solution.cluster, output=solution.output)
    n = X.shape[0]
    # the runtime must move exactly the simulator's messages, and compute the same outputs
    assert np.array_equal(result.link_bytes, n * report.link_bytes), "bytes per link differ from the simulator"
    assert np.array_equal(result.gather_bytes, n * report.gather_bytes), "gather bytes differ from the simulator"
    error = float(np.abs(result.outputs - solution.network.forward(X)).max())
    assert error < 1e-3 * max(1.0, float(np.abs(result.outputs).max())), f"outputs differ by {error}"
    return {
        "bytes": result.comm_bytes,
        "bytes_per_layer": result.bytes_per_layer.tolist(),
        "gather_bytes": int(result.gather_bytes.sum()),
        "time_per_sample_s": result.time_per_sample,
        "best_time_per_sample_s": float(result.pass_times.min()) / n,
        "total_time_s": result.total_time,
        "layer_times_s": result.layer_times.tolist(),
        "max_abs_output_error": error,
        "wall_time_s": result.wall_time,
    }


def single_worker_overhead(model: zoo.ZooModel, cluster1: ro.Cluster, batch: int, repeats: int, warmup: int) -> dict:
    """Per-layer time of one worker alone minus the FLOP time the model predicts for it."""
    solution = ro.solve(ro.PartitionProblem(model.network, ro.Cluster(k=1)), backend="direct")
    run = run_distributed(solution, model.X_test[:batch], synchronize=True, repeats=repeats, warmup=warmup, timeout=300)
    report = ro.simulate(solution.network, solution.assignment, cluster1, output="gather")
    predicted, _ = predicted_times(report, cluster1, batch)
    return {"measured_s": run.layer_times.tolist(), "predicted_s": predicted.tolist(),
            "overhead_s": (run.layer_times - predicted).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and rounds (smoke run)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    repeats = {1: 5 if args.quick else 100, 256: 3 if args.quick else 20}
    warmup = 2 if args.quick else 5
    rounds_per_case = 1 if args.quick else 3
    scratch = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    started = time.perf_counter()
    results: dict = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average_at_start": list(os.getloadavg())},
        "tolerance": TOLERANCE, "batches": list(BATCHES), "quick": args.quick, "calibration": {}, "runs": [],
        "latency_model": [], "single_worker": [],
    }

    results["pipe_round_trip"] = pipe_round_trip()
    print(f"Host floor: pipe round trip between two Python processes, median "
          f"{results['pipe_round_trip']['median_s'] * 1e6:.0f} us (fastest {results['pipe_round_trip']['min_s'] * 1e6:.0f} us)")
    print("Calibrating the α-β model on loopback (calibrate_network)")
    clusters, quiet_clusters = {}, {}
    for k in KS:
        calibration = calibrate_network(k, pingpongs=10 if args.quick else 50, timeout=300)
        clusters[k] = calibration.cluster
        # the same cluster with α from the fastest round trip: the host without other processes' load
        fastest = np.nan_to_num(calibration.one_way_min[:, :, 0])
        quiet_clusters[k] = ro.Cluster(k=k, speed=calibration.cluster.speed, flop_rate=calibration.cluster.flop_rate,
                                       bandwidth=calibration.beta, latency=fastest)
        off = ~np.eye(k, dtype=bool)
        results["calibration"][k] = {
            "alpha_s": calibration.alpha.tolist(),
            "beta_bytes_per_s": calibration.beta.tolist(),
            "flop_rates": calibration.flop_rates.tolist(),
            "one_way_s": np.nan_to_num(calibration.one_way).tolist(),
            "message_bytes": calibration.message_bytes.tolist(),
            "cluster": calibration.cluster.to_dict(),
            "alpha_median_us": float(np.median(calibration.alpha[off]) * 1e6),
            "alpha_fastest_us": float(np.median(calibration.one_way_min[:, :, 0][off]) * 1e6),
            "beta_median_MBps": float(np.median(calibration.beta[off]) / 1e6),
        }
        print(f"K={k}:\n{calibration.table()}")
    # one worker's cluster: the FLOP rate the K=2 calibration measured, no link
    cluster1 = ro.Cluster(k=1, flop_rate=clusters[KS[0]].flop_rate)

    rows, latency_rows = [], []
    for name in models:
        model = zoo.load(name)
        net = model.network
        for batch in BATCHES:
            single = single_worker_overhead(model, cluster1, batch, repeats[batch], warmup)
            results["single_worker"].append({"model": name, "batch": batch, **single})
            print(f"  {name} one worker, batch {batch}: per-layer measured "
                  f"{np.round(np.array(single['measured_s']) * 1e6, 1).tolist()} us, FLOP time predicted "
                  f"{np.round(np.array(single['predicted_s']) * 1e6, 1).tolist()} us")
        for k in KS:
            cluster = ro.Cluster(k=k)
            direct = ro.solve(ro.PartitionProblem(net, cluster), backend="direct")
            restructured = ro.solve(
                ro.RestructureProblem(net, cluster, calibration=model.calibration(1000), tolerance=TOLERANCE),
                backend="repurpose",
            )
            if not restructured.status.has_solution:
                failure = f"{restructured.status.value}: {restructured.message}"
                print(f"  {name} K={k}: restructuring failed, no run: {failure}")
                results["runs"].append({"model": name, "k": k, "failure": failure})
                continue
            solutions = {"direct": direct, "restructured": restructured}
            acc = {label: model.accuracy(solution.network) for label, solution in solutions.items()}
            messages = {label: messages_per_layer(solution, scratch / f"{name}-{k}-{label}") for label, solution in solutions.items()}
            for batch in BATCHES:
                X = model.X_test[:batch]
                rounds: dict = {"direct": [], "restructured": []}
                for _ in range(rounds_per_case):
                    for label, solution in solutions.items():
                        rounds[label].append(measure(solution, X, repeats[batch], warmup))
                figures = {}
                for label, solution in solutions.items():
                    ordered = sorted(rounds[label], key=lambda entry: entry["time_per_sample_s"])
                    figures[label] = dict(ordered[len(ordered) // 2])
                    figures[label]["round_times_per_sample_s"] = [entry["time_per_sample_s"] for entry in rounds[label]]
                    figures[label]["predicted_time_per_sample_s"] = predicted_time(solution, clusters[k], batch) / batch
                    figures[label]["predicted_quiet_time_per_sample_s"] = predicted_time(solution, quiet_clusters[k], batch) / batch
                    figures[label]["simulated_bytes"] = float(batch * solution.report.comm_bytes)
                    figures[label]["accuracy"] = acc[label]
                d, r = figures["direct"], figures["restructured"]
                row = {
                    "model": name, "k": k, "batch": batch, **figures,
                    "bytes_ratio": d["bytes"] / r["bytes"] if r["bytes"] else float("inf"),
                    "predicted_bytes_ratio": d["simulated_bytes"] / r["simulated_bytes"] if r["simulated_bytes"] else float("inf"),
                    "time_ratio": d["time_per_sample_s"] / r["time_per_sample_s"],
                    "predicted_time_ratio": d["predicted_time_per_sample_s"] / r["predicted_time_per_sample_s"],
                    "best_time_ratio": d["best_time_per_sample_s"] / r["best_time_per_sample_s"],
                    "predicted_quiet_time_ratio": d["predicted_quiet_time_per_sample_s"] / r["predicted_quiet_time_per_sample_s"],
                }
                rows.append(row)
                results["runs"].append(row)
                print(f"  {name} K={k} batch={batch}: bytes {d['bytes']} -> {r['bytes']}, "
                      f"{d['time_per_sample_s'] * 1e6:.1f} -> {r['time_per_sample_s'] * 1e6:.1f} us/sample")

                for label, solution in solutions.items():
                    comparison = compare_latency(solution, X, clusters[k], repeats=repeats[batch], warmup=warmup, timeout=300)
                    entry = {
                        "model": name, "k": k, "batch": batch, "solution": label,
                        "bytes_per_layer": comparison.run.bytes_per_layer.tolist(),
                        "messages_per_layer": messages[label],
                        "predicted_s": comparison.predicted.tolist(), "measured_s": comparison.measured.tolist(),
                        "predicted_gather_s": comparison.predicted_gather, "measured_gather_s": comparison.measured_gather,
                        "relative_error": comparison.relative_error.tolist(),
                        "total_relative_error": comparison.total_relative_error,
                        "predicted_total_s": comparison.predicted_total, "measured_total_s": comparison.measured_total,
                    }
                    results["latency_model"].append(entry)
                    latency_rows.append(entry)
                    if name == "digits_mlp" and k == max(KS):
                        print(f"\nLatency model vs measurement: {name} {label} K={k} batch={batch} (barrier between layers)")
                        print(comparison.table())

    # ---- explaining the latency model's error: layers grouped by how many messages one worker handles
    groups = {"no message": (0, 0), "1-2 messages": (1, 2), "3+ messages": (3, 10**9)}
    decomposition = []
    for batch in BATCHES:
        for label, (low, high) in groups.items():
            layers = [(meas, pred) for e in latency_rows if e["batch"] == batch
                      for m, meas, pred in zip(e["messages_per_layer"], e["measured_s"], e["predicted_s"], strict=True)
                      if low <= m <= high]
            if layers:
                measured, predicted = np.array(layers).T
                decomposition.append({"batch": batch, "group": label, "layers": len(layers),
                                      "median_measured_s": float(np.median(measured)),
                                      "median_predicted_s": float(np.median(predicted)),
                                      "median_excess_s": float(np.median(measured - predicted))})
    results["error_by_messages"] = decomposition

    print("\nCalibration on loopback (calibrate_network; α = half the median round trip of 4 bytes, β = slope over "
          "1-16 MB; 'fastest' = half the fastest round trip)")
    print(f"{'K':>2} {'alpha median [us]':>18} {'alpha fastest [us]':>19} {'beta median [MB/s]':>19} {'GFLOP/s (speed 1)':>18}")
    for k in KS:
        c = results["calibration"][k]
        print(f"{k:>2} {c['alpha_median_us']:>18.1f} {c['alpha_fastest_us']:>19.1f} {c['beta_median_MBps']:>19.0f} "
              f"{clusters[k].flop_rate / 1e9:>18.2f}")

    print("\nEnd-to-end distributed inference on loopback (gloo), direct split vs restructured (tolerance "
          f"{TOLERANCE}). Time per sample, first layer to gathered outputs: 'median' pass and 'best' pass; "
          "'sim' = the α-β model on the calibrated cluster (median α), 'sim*' = with the fastest α")
    header = (f"{'model':11s} {'K':>2s} {'batch':>5s} {'acc d/r':>11s} {'bytes d':>8s} {'bytes r':>7s} {'ratio':>6s} {'sim':>6s} "
              f"| {'median us d':>11s} {'us r':>8s} {'ratio':>5s} {'sim':>5s} | {'best us d':>9s} {'us r':>8s} {'ratio':>5s} {'sim*':>5s}")
    print(header)
    print("-" * len(header))
    for row in rows:
        d, r = row["direct"], row["restructured"]
        print(f"{row['model']:11s} {row['k']:2d} {row['batch']:5d} {d['accuracy']:.3f}/{r['accuracy']:.3f} "
              f"{d['bytes']:8d} {r['bytes']:7d} {row['bytes_ratio']:6.1f} {row['predicted_bytes_ratio']:6.1f} "
              f"| {d['time_per_sample_s'] * 1e6:11.1f} {r['time_per_sample_s'] * 1e6:8.1f} {row['time_ratio']:5.2f} "
              f"{row['predicted_time_ratio']:5.2f} | {d['best_time_per_sample_s'] * 1e6:9.1f} {r['best_time_per_sample_s'] * 1e6:8.1f} "
              f"{row['best_time_ratio']:5.2f} {row['predicted_quiet_time_ratio']:5.2f}")

    print("\nLatency model (α-β, calibrated) vs measured, layer-synchronous runs; whole pass incl. gather")
    header = (f"{'model':11s} {'K':>2s} {'batch':>5s} {'solution':12s} {'max msgs/layer':>14s} {'predicted [ms]':>14s} "
              f"{'measured [ms]':>13s} {'error':>8s} {'per-layer errors':s}")
    print(header)
    print("-" * len(header))
    for e in latency_rows:
        print(f"{e['model']:11s} {e['k']:2d} {e['batch']:5d} {e['solution']:12s} {max(e['messages_per_layer']):14d} "
              f"{e['predicted_total_s'] * 1e3:14.3f} {e['measured_total_s'] * 1e3:13.3f} {e['total_relative_error']:+8.0%} "
              f"{' '.join(f'{x:+.0%}' for x in e['relative_error'])}")
    print("\nOne worker alone (K = 1, no message): per-layer time vs the FLOP time the model predicts")
    for entry in results["single_worker"]:
        print(f"  {entry['model']:11s} batch {entry['batch']:3d}: measured {np.round(np.array(entry['measured_s']) * 1e6, 1).tolist()} us, "
              f"predicted {np.round(np.array(entry['predicted_s']) * 1e6, 1).tolist()} us")
    print("\nPer-layer time by the largest number of messages one worker handles in the layer (all cases above)")
    print(f"{'batch':>5} {'layers':12s} {'n':>3} {'median measured [us]':>21} {'median predicted [us]':>22} {'median excess [us]':>19}")
    for g in decomposition:
        print(f"{g['batch']:>5} {g['group']:12s} {g['layers']:>3} {g['median_measured_s'] * 1e6:>21.1f} "
              f"{g['median_predicted_s'] * 1e6:>22.1f} {g['median_excess_s'] * 1e6:>19.1f}")
    print("\nWhole pass without barriers (the end-to-end runs above) vs the model's latency, per sample: median pass vs "
          "median-α model, best pass vs fastest-α model")
    print(f"{'model':11s} {'K':>2s} {'batch':>5s} {'solution':12s} {'sim [us]':>9s} {'median [us]':>11s} {'error':>7s} "
          f"{'sim* [us]':>9s} {'best [us]':>9s} {'error':>7s}")
    for row in rows:
        for label in ("direct", "restructured"):
            f = row[label]
            error = (f["predicted_time_per_sample_s"] - f["time_per_sample_s"]) / f["time_per_sample_s"]
            quiet = (f["predicted_quiet_time_per_sample_s"] - f["best_time_per_sample_s"]) / f["best_time_per_sample_s"]
            print(f"{row['model']:11s} {row['k']:2d} {row['batch']:5d} {label:12s} {f['predicted_time_per_sample_s'] * 1e6:9.1f} "
                  f"{f['time_per_sample_s'] * 1e6:11.1f} {error:+7.0%} {f['predicted_quiet_time_per_sample_s'] * 1e6:9.1f} "
                  f"{f['best_time_per_sample_s'] * 1e6:9.1f} {quiet:+7.0%}")
    results["pipe_round_trip_at_end"] = pipe_round_trip()
    print(f"\nHost floor at the end: pipe round trip median {results['pipe_round_trip_at_end']['median_s'] * 1e6:.0f} us; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    shutil.rmtree(scratch, ignore_errors=True)
    results["seconds"] = time.perf_counter() - started
    path = out / "runtime.json"
    path.write_text(json.dumps(results, indent=1, default=float))
    print(f"\nwrote {path} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
