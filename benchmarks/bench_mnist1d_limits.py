"""The mnist1d target of issue 4 (K = 4: ≥ 5× less volume than direct at ≤ 1 pt accuracy loss): what limits the
default method, and the distillation that meets it.

Every row is ``repurpose`` at K = 4 in the issue's setting (replicated input, outputs gathered on worker 0),
measured on 12,500 fresh samples of mnist1d's generator (:func:`repurpose_opt.zoo.mnist1d_samples`, seed
12345): the volume and its ratio to the dense contiguous split (1543 scalars per sample), the relative error
of the logits ``||f̂(X) − f(X)||_F / ||f(X)||_F`` on the calibration set and on the fresh samples, the
agreement of the predictions and the accuracy loss with its standard error ``sqrt(D)/N`` (D = changed
predictions).

Sections:

1. **frontier**: the shipped model, calibration = its first 1000 training samples (the issue's setting),
   tolerances ``[1.0, t, t]`` (a free layer 1: with a replicated input it sends nothing) and uniform ``t``;
2. **split**: tolerance profiles ``[1.0, t2, t3]``, a 3×3 grid: spending the error unevenly between the
   hidden layer and the logits;
3. **calibration**: other draws of 1000 training samples (random, seeds 0-4) at ``[1.0, 0.12, 0.12]``: how
   much the accuracy loss depends on which samples calibrate; then all 4000 training samples instead of
   1000 (outside the setting: does more data close the gap?);
4. **ridge**: the final joint refit with a stronger prior toward the original weights (``repurpose`` option
   ``joint_ridge`` 1e-2, 3e-2 and "auto", chosen on held-out calibration samples, against the default 1e-3) on
   the first 1000 samples (3e-2 and "auto" also on the five random draws), and on the digits MLP (its
   standard test split) to show the other side;
5. **boundary**: the final joint refit also fitting the original's logits on inputs at its decision
   boundaries, made from pairs of calibration samples it classifies differently (``repurpose`` option
   ``joint_boundary``, 3000 and 8000 of them) on the first 1000 samples and the five random draws, and on
   the digits MLP;
6. **training**: the same architecture, data and recipe (scikit-learn ``MLPClassifier``, 300 iterations,
   ``random_state=0``, one BLAS thread) trained with more weight decay ``alpha`` than the shipped model's
   1e-4 (outside the setting: another model);
7. **distill** (the target): ``repurpose`` with the distillation on synthetic inputs (option ``distill_steps``
   8000, batches of 2048) and the hidden layers free (tolerances ``[1.0, 1.0, t]``, the cascade placing its
   pairs for ``[1.0, t, t]``: option ``cascade_tolerance``), at t = 0.135 on the first 1000 samples and the
   five random draws, at t = 0.12 and 0.15 on the first 1000; at t = 0.135 the two halves apart (no
   distillation with the hidden layer held or free, the distillation with it held); and the digits MLP
   (its standard test split).

Run:  flock /tmp/repurpose-bench.lock python benchmarks/bench_mnist1d_limits.py [--out benchmarks/results]
Prints one table per section and writes ``mnist1d_limits.json`` (with ``--skip``, the sections not run keep
their rows from the file already there).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from bench_restructure import held_out, standard_error_pt  # the same 12,500 fresh samples and loss error

import repurpose_opt as ro
from repurpose_opt import zoo
from repurpose_opt.lsq import DEFAULT_RIDGE

K = 4
#: Priors of the joint refit tried in section 4, against the default :data:`repurpose_opt.lsq.DEFAULT_RIDGE`
#: ("auto": chosen on held-out calibration samples).
RIDGES = (1e-2, 3e-2, "auto")
#: Boundary samples added to the joint refit in section 5.
BOUNDARY = (3000, 8000)
#: The distillation of section 7: Adam steps and inputs per step.
DISTILL = {"distill_steps": 8000, "distill_batch": 2048}
SECTIONS = ("frontier", "split", "calibration", "ridge", "boundary", "training", "distill")


def direct_volume(network: ro.Network) -> float:
    problem = ro.PartitionProblem(network, ro.Cluster(k=K))
    return float(ro.solve(problem, backend="direct").objective)


def train(alpha: float, X: np.ndarray, y: np.ndarray) -> ro.Network:
    """The zoo's mnist1d recipe with weight decay ``alpha``, on one BLAS thread as :func:`zoo.load` builds it."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return zoo._sklearn_mlp((256, 256), X, y, alpha=alpha)


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def measure(network: ro.Network, calibration: np.ndarray, tolerance, fresh: tuple[np.ndarray, np.ndarray],
            direct: float, options: dict | None = None, **labels) -> dict:
    X, y = fresh
    started = time.perf_counter()
    problem = ro.RestructureProblem(network, ro.Cluster(k=K), calibration=calibration, tolerance=tolerance)
    sol = ro.solve(problem, backend="repurpose", seed=0, options=options)
    seconds = time.perf_counter() - started
    reference, restructured = network.forward(X), sol.network.forward(X)
    row = {**labels, "tolerance": tolerance, "volume": sol.objective, "ratio_vs_direct": direct / sol.objective,
           "calibration_output_error": relative(sol.network.forward(calibration), network.forward(calibration)),
           "fresh_output_error": relative(restructured, reference),
           "agreement": float(np.mean(reference.argmax(1) == restructured.argmax(1))),
           "accuracy_loss_pt": 100.0 * (np.mean(reference.argmax(1) == y) - np.mean(restructured.argmax(1) == y)),
           "seconds": seconds, "pairs_per_layer": [entry["pairs"] for entry in sol.stats["layers"]],
           "joint_refit": sol.stats.get("joint_refit"),  # with joint_ridge="auto": the prior chosen and why
           "distillation": sol.stats.get("distillation")}
    row["loss_standard_error_pt"] = standard_error_pt(row, len(y))
    chosen = f"  ρ = {row['joint_refit']['ridge']:g}" if (options or {}).get("joint_ridge") == "auto" else ""
    print(f"{str(labels):34s} {str(tolerance):18s} {row['volume']:6.0f} {row['ratio_vs_direct']:6.2f} "
          f"{row['calibration_output_error']:7.4f} {row['fresh_output_error']:7.4f} {row['agreement']:6.3f} "
          f"{row['accuracy_loss_pt']:6.2f} ± {row['loss_standard_error_pt']:.2f}  {seconds:5.1f} s{chosen}", flush=True)
    return row


def header(title: str) -> None:
    print(f"\n{title}")
    print(f"{'':34s} {'tolerance':18s} {'volume':>6s} {'ratio':>6s} {'err cal':>7s} {'err new':>7s} {'agree':>6s} "
          f"{'loss pt':>6s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--skip", default="", help=f"comma-separated sections to skip: {','.join(SECTIONS)}")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if skip - set(SECTIONS):
        parser.error(f"unknown sections {sorted(skip - set(SECTIONS))}; choose among {', '.join(SECTIONS)}")
    model, held = zoo.load("mnist1d_mlp"), held_out("mnist1d_mlp")  # held: its test split is the fresh samples
    fresh = (held.X_test, held.y_test)
    calibration = model.calibration(1000)
    direct = direct_volume(model.network)
    results: dict = {"k": K, "fresh_samples": len(held.y_test), "direct_volume": direct}

    def accuracies(network: ro.Network) -> dict:
        return {"train": float(np.mean(network.forward(model.X_train).argmax(1) == model.y_train)),
                "standard_test": model.accuracy(network), "fresh": held.accuracy(network)}

    results["shipped_model_accuracy"] = accuracies(model.network)
    print(f"shipped mnist1d MLP: accuracy {results['shipped_model_accuracy']}, direct volume {direct:.0f} at K = {K}")
    if "frontier" not in skip:
        header("1. frontier: the shipped model, 1000 calibration samples")
        results["frontier"] = [measure(model.network, calibration, tol, fresh, direct, section="frontier")
                               for t in (0.1, 0.12, 0.13, 0.14, 0.16) for tol in ([1.0, t, t], t)]
    if "split" not in skip:
        header("2. split: [1.0, t2, t3]")
        results["split"] = [measure(model.network, calibration, [1.0, t2, t3], fresh, direct, section="split")
                            for t2 in (0.1, 0.13, 0.16) for t3 in (0.1, 0.13, 0.16) if t2 != t3]
    if "calibration" not in skip:
        header("3. calibration: other draws of 1000 training samples, then all 4000")
        draws = [model.X_train[np.random.default_rng(seed).permutation(len(model.X_train))[:1000]] for seed in range(5)]
        results["calibration"] = [measure(model.network, draw, [1.0, 0.12, 0.12], fresh, direct, section=f"random 1000, seed {seed}")
                                  for seed, draw in enumerate(draws)]
        results["calibration"] += [measure(model.network, model.X_train, [1.0, t, t], fresh, direct, section="calibration 4000")
                                   for t in (0.12, 0.14, 0.16)]
    if "ridge" not in skip:
        header("4. ridge: a stronger prior toward the original weights in the final joint refit (option joint_ridge)")
        results["ridge"] = [measure(model.network, calibration, [1.0, t, t], fresh, direct, {"joint_ridge": ridge},
                                    section=f"joint_ridge={ridge}") for t in (0.12, 0.13, 0.14) for ridge in RIDGES]
        draws = [model.X_train[np.random.default_rng(seed).permutation(len(model.X_train))[:1000]] for seed in range(5)]
        results["ridge"] += [measure(model.network, draw, [1.0, 0.12, 0.12], fresh, direct, {"joint_ridge": ridge},
                                     section=f"joint_ridge={ridge}, random 1000, seed {seed}")
                             for seed, draw in enumerate(draws) for ridge in RIDGES[1:]]
        digits = zoo.load("digits_mlp")  # the other side: a model whose refit does not overfit
        results["ridge"] += [measure(digits.network, digits.calibration(1000), t, (digits.X_test, digits.y_test),
                                     direct_volume(digits.network), {"joint_ridge": ridge}, section=f"digits, joint_ridge={ridge}")
                             for t in (0.05, 0.1, 0.2) for ridge in (DEFAULT_RIDGE, *RIDGES)]
    if "boundary" not in skip:
        header("5. boundary: the joint refit also fits the original on its decision boundaries (option joint_boundary)")
        results["boundary"] = [measure(model.network, calibration, [1.0, t, t], fresh, direct, {"joint_boundary": m},
                                       section=f"joint_boundary={m}") for t in (0.12, 0.13, 0.14) for m in BOUNDARY]
        draws = [model.X_train[np.random.default_rng(seed).permutation(len(model.X_train))[:1000]] for seed in range(5)]
        results["boundary"] += [measure(model.network, draw, [1.0, t, t], fresh, direct, {"joint_boundary": BOUNDARY[0]},
                                        section=f"joint_boundary={BOUNDARY[0]}, random 1000, seed {seed}")
                                for t in (0.12, 0.13) for seed, draw in enumerate(draws)]
        digits = zoo.load("digits_mlp")
        results["boundary"] += [measure(digits.network, digits.calibration(1000), t, (digits.X_test, digits.y_test),
                                        direct_volume(digits.network), {"joint_boundary": m}, section=f"digits, joint_boundary={m}")
                                for t in (0.05, 0.1, 0.2) for m in (0, BOUNDARY[0])]
    if "training" not in skip:
        results["training"] = []
        for alpha in (1e-2, 1e-1, 1.0):
            started = time.perf_counter()
            network = train(alpha, model.X_train, model.y_train)
            entry = {"alpha": alpha, "training_seconds": time.perf_counter() - started, "accuracy": accuracies(network),
                     "direct_volume": direct_volume(network)}
            header(f"6. training: weight decay alpha = {alpha:g} (accuracy {entry['accuracy']})")
            entry["rows"] = [measure(network, calibration, [1.0, t, t], fresh, entry["direct_volume"], section=f"alpha={alpha:g}")
                             for t in (0.12, 0.14, 0.16, 0.2)]
            results["training"].append(entry)
    if "distill" not in skip:
        header("7. distill: synthetic inputs, hidden layers free (options distill_steps, cascade_tolerance)")

        def distilled(network, cal, t, test, direct_reference, **labels):
            """Problem tolerances [1, ..., 1, t], the cascade placing its pairs for [1, t, ..., t]."""
            n_layers = network.n_layers
            return measure(network, cal, [1.0] * (n_layers - 1) + [t], test, direct_reference,
                           DISTILL | {"cascade_tolerance": [1.0] + [t] * (n_layers - 1)}, **labels)

        draws = [model.X_train[np.random.default_rng(seed).permutation(len(model.X_train))[:1000]] for seed in range(5)]
        # The two halves apart: no distillation, with the hidden layer held to t, then free.
        rows = [measure(model.network, calibration, [1.0, 0.135, 0.135], fresh, direct, section="no distillation, held"),
                measure(model.network, calibration, [1.0, 1.0, 0.135], fresh, direct, {"cascade_tolerance": [1.0, 0.135, 0.135]},
                        section="no distillation, free")]
        rows += [distilled(model.network, calibration, 0.135, fresh, direct, section="distill, first 1000")]
        rows += [distilled(model.network, draw, 0.135, fresh, direct, section=f"distill, random 1000, seed {seed}")
                 for seed, draw in enumerate(draws)]
        rows += [distilled(model.network, calibration, t, fresh, direct, section="distill, first 1000") for t in (0.12, 0.15)]
        rows.append(measure(model.network, calibration, [1.0, 0.135, 0.135], fresh, direct, DISTILL,
                            section="distill, hidden layers held"))
        digits = zoo.load("digits_mlp")
        rows += [distilled(digits.network, digits.calibration(1000), t, (digits.X_test, digits.y_test),
                           direct_volume(digits.network), section="digits, distill") for t in (0.1, 0.2)]
        results["distill"] = rows
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "mnist1d_limits.json"
    if skip and path.exists():  # a partial run updates the sections it ran
        results = json.loads(path.read_text()) | results
    path.write_text(json.dumps(results, indent=1, default=float))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
