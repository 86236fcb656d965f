"""Issue-3 targets for the exact and hypergraph partition backends.

1. The digits MLP (64-256-128-64-10) pruned to the 10 % largest-magnitude weights of each layer, K = 4 and 8,
   replicated input, outputs gathered on worker 0: CP-SAT's best volume after 60 s and its bound, HiGHS (cvxpy)
   after 60 s, Mt-KaHyPar, and ``munkres``/``greedy`` when they are installed; each relative to the best known
   volume and to the direct split, with wall times.
2. CP-SAT proving optimality on random sparse layered networks of at most 40 units to place (all input modes,
   K = 2..4): status and time to proof within 60 s.

The network comes from ``repurpose_opt.zoo.digits_mlp()`` when that module exists; otherwise a stand-in of the
same shape is trained here on scikit-learn's bundled digits (``MLPClassifier``, seed 0), and the JSON says so.

Run:  python benchmarks/bench_partition_exact.py [--quick] [--out benchmarks/results]
Prints the tables and writes ``partition_exact.json``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

import repurpose_opt as ro
from repurpose_opt.solvers.registry import backend_names, get_backend

SHAPE = (64, 256, 128, 64, 10)


def digits_network() -> tuple[ro.Network, str]:
    """The digits MLP from the zoo, or a stand-in of the same shape trained here."""
    try:
        from repurpose_opt import zoo  # written by another issue; may not exist yet

        model = zoo.digits_mlp()
        return getattr(model, "network", model), "repurpose_opt.zoo.digits_mlp()"
    except (ImportError, AttributeError):
        pass
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    X, y = load_digits(return_X_y=True)
    clf = MLPClassifier(hidden_layer_sizes=SHAPE[1:-1], max_iter=200, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X / 16.0, y)
    return ro.Network.from_sklearn(clf), "stand-in: sklearn MLPClassifier (64-256-128-64-10) trained on load_digits, random_state=0"


def prune(net: ro.Network, keep: float) -> ro.Network:
    """Keep the ``keep`` fraction of largest-magnitude weights of each linear layer (biases kept)."""
    weights = []
    for layer in net.linear_layers:
        W = layer.W
        threshold = np.quantile(np.abs(W), 1.0 - keep)
        weights.append((np.where(np.abs(W) >= threshold, W, 0.0), layer.b))
    return net.with_weights(weights)


def random_sparse(rng: np.random.Generator, max_units: int = 40) -> tuple[ro.PartitionProblem, dict]:
    k = int(rng.integers(2, 5))
    mode = str(rng.choice(["replicated", "free", "fixed"]))
    n_layers = int(rng.integers(2, 5))
    n0 = int(rng.integers(max(k, 6), 14))
    budget = max_units - (n0 if mode == "free" else 0)
    hidden = list(rng.multinomial(budget - n_layers * k, [1 / n_layers] * n_layers) + k)
    sizes = [n0] + [int(h) for h in hidden]
    density = float(rng.uniform(0.1, 0.3))
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        W = rng.normal(size=(n_out, n_in)) * (rng.random((n_out, n_in)) < density)
        layers += [ro.Dense(W), ro.ReLU()]
    net = ro.Network(layers[:-1], input_shape=(sizes[0],))
    placement = mode if mode != "fixed" else rng.integers(0, k, size=sizes[0])
    output = str(rng.choice(["gather", "distributed"]))
    problem = ro.PartitionProblem(net, ro.Cluster(k=k), input_placement=placement, output=output, imbalance=0.1)
    return problem, {"sizes": sizes, "k": k, "input": mode, "output": output, "density": round(density, 3), "units": problem.size()}


def run(problem, name, time_limit, seed=0, options=None) -> dict:
    started = time.perf_counter()
    try:
        sol = ro.solve(problem, name, time_limit=time_limit, seed=seed, options=options, verify=True)
    except ro.RepurposeError as exc:
        return {"backend": name, "status": "ERROR", "message": str(exc), "seconds": time.perf_counter() - started}
    return {
        "backend": name,
        "status": sol.status.value,
        "volume": sol.objective,
        "bound": sol.bound,
        "gap": sol.gap,
        "seconds": time.perf_counter() - started,
        "message": sol.message,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s limits and 4 proof instances (a smoke run)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--proof-instances", type=int, default=10)
    args = parser.parse_args()
    limit = 10.0 if args.quick else 60.0
    n_proofs = 4 if args.quick else args.proof_instances

    net, source = digits_network()
    pruned = prune(net, 0.10)
    heuristics = [n for n in ("munkres", "greedy") if n in backend_names() and get_backend(n).available()]
    results: dict = {"network": {"source": source, "shape": list(pruned.unit_counts), "keep": 0.10,
                                 "nnz": [int(s.connectivity.nnz) for s in pruned.structure]},
                     "time_limit": limit, "digits": [], "proofs": []}
    print(f"network: {source}; pruned to 10 % per layer, nnz per layer {results['network']['nnz']}")
    missing = [n for n in ("munkres", "greedy") if n not in heuristics]
    if missing:
        print(f"(not installed yet, skipped: {', '.join(missing)})")

    print(f"\n== digits MLP, 10 % weights, replicated input, gather; exact backends get {limit:.0f} s")
    print(f"{'K':>2} {'backend':<11} {'status':<9} {'volume':>8} {'bound':>8} {'vs best':>8} {'vs direct':>9} {'time s':>7}")
    for k in (4, 8):
        problem = ro.PartitionProblem(pruned, ro.Cluster(k=k), input_placement="replicated", output="gather")
        rows = [run(problem, "direct", None)]
        rows += [run(problem, name, limit) for name in heuristics]
        rows.append(run(problem, "hypergraph", None))
        rows.append(run(problem, "ortools", limit))
        rows.append(run(problem, "cvxpy", limit))
        volumes = [r["volume"] for r in rows if r.get("volume") is not None]
        best, direct = min(volumes), rows[0]["volume"]
        for r in rows:
            r["k"] = k
            if r.get("volume") is not None:
                r["vs_best"] = r["volume"] / best if best > 0 else (1.0 if r["volume"] == 0 else float("inf"))
                r["vs_direct"] = r["volume"] / direct
            bound = "-" if r.get("bound") is None else f"{r['bound']:.0f}"
            volume = "-" if r.get("volume") is None else f"{r['volume']:.0f}"
            print(f"{k:>2} {r['backend']:<11} {r['status']:<9} {volume:>8} {bound:>8} {r.get('vs_best', float('nan')):>8.3f} "
                  f"{r.get('vs_direct', float('nan')):>9.3f} {r['seconds']:>7.1f}")
        results["digits"] += rows
        exact = next(r for r in rows if r["backend"] == "ortools")
        fast = [r for r in rows if r["backend"] in heuristics and r.get("volume") is not None]
        if fast and exact.get("volume"):
            best_fast = min(fast, key=lambda r: r["volume"])
            hyper = next(r for r in rows if r["backend"] == "hypergraph")
            print(f"   target: best of munkres/greedy ({best_fast['volume']:.0f}) <= Mt-KaHyPar ({hyper.get('volume')}) and within 5 % "
                  f"of CP-SAT ({exact['volume']:.0f}): {best_fast['volume'] <= (hyper.get('volume') or np.inf) and best_fast['volume'] <= 1.05 * exact['volume']}")

    print(f"\n== CP-SAT proofs on random sparse networks of <= 40 units to place ({limit:.0f} s each)")
    print(f"{'#':>2} {'sizes':<24} {'K':>2} {'input':<10} {'output':<11} {'status':<9} {'volume':>6} {'bound':>6} {'time s':>7}")
    rng = np.random.default_rng(2024)
    for index in range(n_proofs):
        problem, info = random_sparse(rng)
        row = {**info, **run(problem, "ortools", limit)}
        results["proofs"].append(row)
        print(f"{index:>2} {str(info['sizes']):<24} {info['k']:>2} {info['input']:<10} {info['output']:<11} {row['status']:<9} "
              f"{row.get('volume', float('nan')):>6.0f} {row.get('bound') if row.get('bound') is not None else float('nan'):>6.0f} {row['seconds']:>7.1f}")
    proven = [r for r in results["proofs"] if r["status"] == "OPTIMAL"]
    times = [r["seconds"] for r in proven]
    summary = {"instances": len(results["proofs"]), "proven": len(proven),
               "median_seconds_to_proof": float(np.median(times)) if times else None,
               "max_seconds_to_proof": float(max(times)) if times else None}
    results["proof_summary"] = summary
    print(f"   proven optimal within {limit:.0f} s: {summary['proven']}/{summary['instances']}"
          + (f" (median {summary['median_seconds_to_proof']:.1f} s, max {summary['max_seconds_to_proof']:.1f} s)" if times else ""))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "partition_exact.json"
    path.write_text(json.dumps(results, indent=2, default=float))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
