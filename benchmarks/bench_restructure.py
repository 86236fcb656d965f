"""Issue-4 targets: communication reduction at bounded accuracy loss, speed, and the guarantee.

Setting (as the issue fixes it): replicated input, outputs gathered on worker 0, calibration = the first
1000 training samples, accuracy on the held-out split; "direct" = the dense contiguous split.

Run:  python benchmarks/bench_restructure.py [--quick] [--out benchmarks/results]
Prints the tables and writes ``restructure.json`` plus the trade-off CSV/JSON/PNGs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

import repurpose_opt as ro
from repurpose_opt.studies.tradeoff import tradeoff

UNIFORM = (0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
# Spending tolerance unevenly: loose on hidden layers, tighter on the logits.
def profiles(n_layers: int) -> list:
    out = [t for t in UNIFORM]
    for hidden in (0.2, 0.3, 0.4):
        for last in (0.05, 0.1, 0.15):
            out.append(tuple([hidden] * (n_layers - 1) + [last]))
    return out


TARGETS = [  # model, K, max accuracy loss (points), required volume reduction vs direct
    ("digits_mlp", 4, 0.5, 50.0),
    ("digits_mlp", 8, 0.5, 25.0),
    ("mnist1d_mlp", 4, 1.0, 5.0),
]


def best_ratio(rows, model, k, engine, max_loss):
    ok = [r for r in rows if r["model"] == model and r["k"] == k and r["engine"] == engine
          and r["volume"] and r["accuracy_loss_pt"] is not None and r["accuracy_loss_pt"] <= max_loss + 1e-9]
    return max(ok, key=lambda r: r["ratio_vs_direct"]) if ok else None


def dominance(rows, model, k, engine, other):
    """Fraction of `other`'s points that some `engine` point matches or beats on both volume and accuracy."""
    mine = [(r["volume"], r["accuracy"]) for r in rows if r["model"] == model and r["k"] == k and r["engine"] == engine and r["volume"]]
    theirs = [(r["volume"], r["accuracy"]) for r in rows if r["model"] == model and r["k"] == k and r["engine"] == other and r["volume"]]
    if not theirs or not mine:
        return None
    covered = sum(any(v <= tv and a >= ta for v, a in mine) for tv, ta in theirs)
    return covered / len(theirs)


def speed(model_name: str, repeats: int) -> dict:
    from repurpose_opt import zoo

    model = zoo.load(model_name)
    problem = ro.RestructureProblem(model.network, ro.Cluster(k=4), calibration=model.calibration(1000), tolerance=0.05)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        ro.solve(problem, backend="repurpose")
        times.append(time.perf_counter() - started)
    return {"case": f"{model_name} K=4 tol=0.05", "median_s": statistics.median(times), "runs": repeats, "target_s": 1.0}


def speed_wide() -> dict:
    rng = np.random.default_rng(0)

    def dense(n_out, n_in):
        return ro.Dense(rng.normal(size=(n_out, n_in)) / np.sqrt(n_in), 0.1 * rng.normal(size=n_out))

    net = ro.Network([dense(2048, 512), ro.ReLU(), dense(2048, 2048), ro.ReLU(), dense(10, 2048)], input_shape=(512,))
    problem = ro.RestructureProblem(net, ro.Cluster(k=8), calibration=rng.normal(size=(1000, 512)), tolerance=0.05)
    started = time.perf_counter()
    sol = ro.solve(problem, backend="repurpose")
    seconds = time.perf_counter() - started
    direct = ro.solve(problem, backend="direct")
    return {"case": "random 512-2048-2048-10 K=8 tol=0.05", "median_s": seconds, "runs": 1, "target_s": 60.0,
            "volume": sol.objective, "direct_adjusted_volume": direct.objective}


def guarantee_figures(model_name: str) -> dict:
    from repurpose_opt import zoo
    from repurpose_opt.guarantee import tightness

    model = zoo.load(model_name)
    problem = ro.RestructureProblem(model.network, ro.Cluster(k=4), calibration=model.calibration(1000), tolerance=0.1)
    sol = ro.solve(problem, backend="repurpose")
    rng = np.random.default_rng(0)
    probes = [model.X_test] + [scale * rng.normal(size=(200, model.X_test.shape[1])) for scale in (1e-3, 1e-1, 1.0, 10.0, 1e3)]
    ratio = max(float(tightness(model.network, sol.network, sol.guarantee, X)) for X in probes)
    certified = ro.certify(sol, model.X_test)
    return {"model": model_name, "A": sol.guarantee.A, "B": sol.guarantee.B, "tightness": ratio,
            "certified_fraction": float(np.mean(certified))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer tolerances and K values (smoke run)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--engines", default="repurpose,direct,hypergraph,munkres")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    engines = [e for e in args.engines.split(",") if e in {r["name"] for r in ro.list_backends(available_only=True)}]
    results: dict = {"engines": engines}

    rows = []
    for model, ks in (("digits_mlp", (2, 4, 8)), ("mnist1d_mlp", (4,))):
        ks = (4,) if args.quick else ks
        from repurpose_opt import zoo

        n_layers = zoo.load(model).network.n_layers
        sweep = UNIFORM[:4] if args.quick else profiles(n_layers)
        rows += tradeoff([model], engines=engines, ks=ks, tolerances=sweep, progress=False)
    from repurpose_opt.studies.tradeoff import write_rows

    write_rows(rows, out / "tradeoff")
    results["tradeoff_rows"] = len(rows)

    print("\nTargets: best volume reduction vs direct within the accuracy-loss budget")
    print(f"{'model':12s} {'K':>2s} {'engine':10s} {'max loss':>8s} {'ratio':>8s} {'target':>7s} {'loss pt':>7s} {'volume':>8s}  tolerance")
    results["targets"] = []
    for model, k, loss, target in TARGETS:
        for engine in engines:
            best = best_ratio(rows, model, k, engine, loss)
            entry = {"model": model, "k": k, "engine": engine, "max_loss_pt": loss, "target_ratio": target,
                     "ratio": None if best is None else best["ratio_vs_direct"],
                     "loss_pt": None if best is None else best["accuracy_loss_pt"],
                     "volume": None if best is None else best["volume"],
                     "tolerance": None if best is None else best["tolerance"]}
            results["targets"].append(entry)
            if best is None:
                print(f"{model:12s} {k:2d} {engine:10s} {loss:8.1f} {'-':>8s} {target:7.0f}")
            else:
                print(f"{model:12s} {k:2d} {engine:10s} {loss:8.1f} {best['ratio_vs_direct']:8.1f} {target:7.0f} "
                      f"{best['accuracy_loss_pt']:7.2f} {best['volume']:8.0f}  {best['tolerance']}")

    print("\nDominance: fraction of the baseline's (volume, accuracy) points matched or beaten by repurpose")
    results["dominance"] = []
    for model, ks in (("digits_mlp", (2, 4, 8)), ("mnist1d_mlp", (4,))):
        for k in ((4,) if args.quick else ks):
            for other in engines:
                if other == "repurpose":
                    continue
                frac = dominance(rows, model, k, "repurpose", other)
                results["dominance"].append({"model": model, "k": k, "baseline": other, "covered": frac})
                print(f"{model:12s} K={k} vs {other:10s}: {'-' if frac is None else f'{frac:.2f}'}")

    print("\nSpeed")
    results["speed"] = [speed("digits_mlp", 3 if args.quick else 7)]
    if not args.quick:
        results["speed"].append(speed_wide())
    for entry in results["speed"]:
        print(f"{entry['case']:45s} median {entry['median_s']:7.2f} s  (target {entry['target_s']:.0f} s, {entry['runs']} runs)")

    print("\nGuarantee (K=4, tolerance 0.1)")
    results["guarantee"] = [guarantee_figures("digits_mlp")]
    for entry in results["guarantee"]:
        print(f"{entry['model']:12s} A={entry['A']:.4g} B={entry['B']:.4g} tightness={entry['tightness']:.4f} "
              f"certified={entry['certified_fraction']:.3f}")
    (out / "restructure.json").write_text(json.dumps(results, indent=1, default=float))
    print(f"\nwrote {out / 'restructure.json'}")


if __name__ == "__main__":
    main()
