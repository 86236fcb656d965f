"""Stress run (issue 6): random problems across every backend with short time limits.

200 seeded random problems, mostly PartitionProblem (dense and conv networks, every input mode, both
outputs, both objectives, imbalance, heterogeneous speeds, FLOPs capacities), some PruningProblem (dense and
conv layers, tolerance or budget, nnz budgets) and RestructureProblem (tolerance or budget), from tiny to
medium. Every problem is solved by every installed backend that accepts it, each with a time limit drawn
from 1-3 s. Per solve the run records:

- **failure**: any exception other than an up-front refusal (``BackendCannotSolveError``), e.g. a
  ``SolverError``, or a crash (must be 0);
- **overrun**: wall time above 1.5 x the time limit + 2 s;
- **verify violation**: :func:`repurpose_opt.verify` rejects the returned solution (the solve itself runs
  with ``verify=False`` so that a violation is counted, not raised);
- **oracle violation**: on instances the brute-force oracle solves (OPTIMAL), a backend claiming OPTIMAL
  with another objective, or any backend beating the optimum, or a bound above it;
- the status, and the elapsed time relative to the limit.

Refusals (a backend's ``can_solve`` reason: too large for brute force, capacities a backend does not model)
are counted separately; they are the specified behaviour, not failures.

Run (under the benchmark lock):
    flock /tmp/repurpose-bench.lock python benchmarks/bench_stress.py [--problems 200] [--seed 0] [--out benchmarks/results]
Prints the per-backend table and the failures, and writes ``stress.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
import traceback
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

import repurpose_opt as ro
from repurpose_opt.solvers.registry import get_backend
from repurpose_opt.studies.instances import random_network
from repurpose_opt.testing.instances import random_conv_network

PARTITION_BACKENDS = ("bruteforce", "direct", "random", "greedy", "munkres", "ortools", "cvxpy", "hypergraph")
PRUNING_BACKENDS = ("bruteforce", "greedy", "cvxpy")
RESTRUCTURE_BACKENDS = ("direct", "greedy", "munkres", "hypergraph", "ortools", "cvxpy", "repurpose")
SIZES = {"tiny": (2, 6), "small": (8, 40), "medium": (64, 200)}


# ------------------------------------------------------------------------------------------- problems
def _size_class(rng: np.random.Generator) -> str:
    return str(rng.choice(["tiny", "small", "medium"], p=[0.4, 0.4, 0.2]))


def _widths(rng: np.random.Generator, size: str, layers: int, k: int) -> list[int]:
    low, high = SIZES[size]
    return [int(rng.integers(max(low, k), max(high, k) + 1)) for _ in range(layers + 1)]


def _cluster(rng: np.random.Generator, k: int, network: ro.Network) -> ro.Cluster:
    speed = rng.uniform(0.5, 2.0, size=k) if rng.random() < 0.2 else None
    flops = None
    if rng.random() < 0.1:
        total = sum(float(s.flops_per_unit.sum()) for s in network.structure)
        flops = np.full(k, 1.5 * total / k)  # loose enough to be feasible most of the time
    return ro.Cluster(k=k, speed=speed, flops_capacity=flops, latency=float(rng.choice([1e-5, 1e-4])),
                      bandwidth=float(rng.choice([1e7, 1e8, 1e9])))


def partition_problem(rng: np.random.Generator) -> tuple[str, ro.PartitionProblem]:
    size = _size_class(rng)
    if rng.random() < 0.15:
        channels = tuple(int(c) for c in rng.integers(2, 6 if size == "tiny" else 12, size=3))
        net = random_conv_network(rng, channels=channels, size=6, dense_out=int(rng.integers(2, 6)),
                                  pool=bool(rng.random() < 0.5))
        size = "conv"
    else:
        k_hint = int(rng.integers(2, 5))
        layers = int(rng.integers(1, 4))
        widths = _widths(rng, size, layers, k_hint)
        net = random_network(widths, density=float(rng.uniform(0.05, 0.5)), seed=int(rng.integers(2**31)))
    smallest = min(net.unit_counts)  # a free input gives every worker an input unit too
    k = int(rng.integers(2, min(8, smallest) + 1)) if smallest >= 2 else 1
    mode = str(rng.choice(["replicated", "free", "fixed"], p=[0.4, 0.35, 0.25]))
    placement: object = mode
    if mode == "fixed":
        placement = rng.integers(0, k, size=net.unit_counts[0])
    problem = ro.PartitionProblem(
        net, _cluster(rng, k, net), input_placement=placement, output=str(rng.choice(["gather", "distributed"])),
        imbalance=float(rng.choice([0.0, 0.1, 0.25])), objective="latency" if rng.random() < 0.2 else "volume",
    )
    return f"partition-{size}", problem


def pruning_problem(rng: np.random.Generator) -> tuple[str, ro.PruningProblem]:
    k = int(rng.integers(2, 5))
    samples = int(rng.integers(40, 400))
    if rng.random() < 0.2:
        c_in, c_out = int(rng.integers(k, 8)), int(rng.integers(k, 8))
        layer = ro.Conv2d(rng.normal(size=(c_out, c_in, 3, 3)), rng.normal(size=c_out), padding=1)
        X = rng.normal(size=(samples, c_in, 5, 5))
        n_in, n_out, kind = c_in, c_out, "conv"
    else:
        n_in, n_out = int(rng.integers(max(k, 6), 96)), int(rng.integers(k, 48))
        W = rng.normal(size=(n_out, n_in)) * (rng.random((n_out, n_in)) < rng.uniform(0.3, 1.0))
        layer = ro.Dense(W, rng.normal(size=n_out))
        X = rng.normal(size=(samples, n_in))
        kind = "dense"
    Y = layer.apply(X)
    inputs = "replicated" if rng.random() < 0.15 else rng.integers(0, k, size=n_in)
    goal = {"tolerance": float(rng.choice([0.0, 0.05, 0.2, 0.5]))} if rng.random() < 0.6 else \
        {"comm_budget": float(rng.integers(0, 2 * n_in))}
    nnz = float(rng.integers(n_in, 4 * n_in * n_out // k + 2)) if rng.random() < 0.15 else None
    problem = ro.PruningProblem(X, Y, layer, rng.permutation(np.arange(n_out) % k), ro.Cluster(k=k),
                                input_placement=inputs, nnz_budget=nnz, **goal)
    return f"pruning-{kind}", problem


def restructure_problem(rng: np.random.Generator) -> tuple[str, ro.RestructureProblem]:
    size = str(rng.choice(["tiny", "small"], p=[0.4, 0.6]))
    k = int(rng.integers(2, 5))
    widths = _widths(rng, size, int(rng.integers(1, 4)), k)
    net = random_network(widths, density=float(rng.uniform(0.2, 0.8)), seed=int(rng.integers(2**31)))
    X = rng.normal(size=(int(rng.integers(60, 400)), widths[0]))
    goal = {"tolerance": float(rng.choice([0.02, 0.05, 0.1, 0.3]))} if rng.random() < 0.7 else \
        {"comm_budget": float(rng.integers(0, sum(widths)))}
    problem = ro.RestructureProblem(net, ro.Cluster(k=k), calibration=X,
                                    input_placement=str(rng.choice(["replicated", "free"])),
                                    output=str(rng.choice(["gather", "distributed"])), **goal)
    return f"restructure-{size}", problem


def problems(count: int, seed: int):
    rng = np.random.default_rng(seed)
    for index in range(count):
        draw = rng.random()
        if draw < 0.75:
            yield index, *partition_problem(rng), PARTITION_BACKENDS
        elif draw < 0.875:
            yield index, *pruning_problem(rng), PRUNING_BACKENDS
        else:
            yield index, *restructure_problem(rng), RESTRUCTURE_BACKENDS


# ---------------------------------------------------------------------------------------------- runs
def run_one(problem, backend: str, limit: float) -> dict:
    record = {"backend": backend, "limit": limit}
    started = time.perf_counter()
    try:
        sol = ro.solve(problem, backend, time_limit=limit, seed=0, verify=False)
    except ro.BackendCannotSolveError as exc:
        record.update(outcome="refused", seconds=time.perf_counter() - started, message=str(exc)[:300])
        return record
    except Exception as exc:  # noqa: BLE001 - every other exception is a failure to report
        record.update(outcome="failure", seconds=time.perf_counter() - started,
                      message=f"{type(exc).__name__}: {exc}"[:2000], traceback=traceback.format_exc()[-3000:])
        return record
    seconds = time.perf_counter() - started
    check = ro.verify(problem, sol)
    record.update(outcome="solved", status=sol.status.value, objective=sol.objective, bound=sol.bound, seconds=seconds,
                  overrun=seconds > 1.5 * limit + 2.0, verify_ok=check.ok, violations=list(check.violations),
                  message=sol.message[:300])
    return record


def oracle_violations(records: list[dict]) -> list[str]:
    """Disagreements with the brute-force optimum, when brute force proved one."""
    oracle = next((r for r in records if r["backend"] == "bruteforce" and r.get("status") == "OPTIMAL"), None)
    if oracle is None:
        return []
    best, out = oracle["objective"], []
    tol = 1e-6 * max(1.0, abs(best))
    for r in records:
        if r.get("outcome") != "solved" or r["backend"] == "bruteforce":
            continue
        if r["status"] == "OPTIMAL" and abs(r["objective"] - best) > tol:
            out.append(f"{r['backend']}: OPTIMAL with {r['objective']!r}, brute force proves {best!r}")
        if r["objective"] is not None and r["objective"] < best - tol:
            out.append(f"{r['backend']}: objective {r['objective']!r} below the proven optimum {best!r}")
        if r["status"] in ("INFEASIBLE",):
            out.append(f"{r['backend']}: INFEASIBLE, brute force found {best!r}")
        if r["bound"] is not None and r["bound"] > best + tol:
            out.append(f"{r['backend']}: bound {r['bound']!r} above the proven optimum {best!r}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # solver chatter (cvxpy accuracy notes) is not what this run measures
    installed = {name for name in set(PARTITION_BACKENDS + PRUNING_BACKENDS + RESTRUCTURE_BACKENDS) if get_backend(name).available()}
    limits = np.random.default_rng(args.seed + 1)
    results, started = [], time.perf_counter()
    for index, kind, problem, backends in problems(args.problems, args.seed):
        records = []
        for backend in backends:
            if backend not in installed:
                continue
            record = run_one(problem, backend, float(limits.choice([1.0, 2.0, 3.0])))
            record.update(problem=index, kind=kind)
            records.append(record)
        wrong = oracle_violations(records)
        for record in records:
            record["oracle_violations"] = [w for w in wrong if w.startswith(record["backend"] + ":")]
        results += records
        done = time.perf_counter() - started
        bad = sum(_bad(r) for r in records)
        print(f"[{index + 1:3d}/{args.problems}] {kind:18s} {done:7.1f} s  {'!' * bad}", flush=True)
    elapsed = time.perf_counter() - started

    # ------------------------------------------------------------------------------------------ table
    by_backend: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by_backend[r["backend"]].append(r)
    header = (f"{'backend':11s} {'runs':>5s} {'refused':>7s} {'fail':>5s} {'overrun':>7s} {'verify':>6s} {'oracle':>6s} "
              f"{'OPT':>4s} {'FEAS':>5s} {'INF':>4s} {'NOSOL':>5s} {'med t/lim':>9s} {'max t/lim':>9s} {'max s':>6s}")
    print(f"\n== stress: {args.problems} problems, seed {args.seed}, {len(results)} solves in {elapsed:.0f} s ==")
    print(header)
    summary = {}
    for name in sorted(by_backend, key=lambda n: (PARTITION_BACKENDS + RESTRUCTURE_BACKENDS).index(n)):
        rows = by_backend[name]
        solved = [r for r in rows if r["outcome"] == "solved"]
        statuses = Counter(r["status"] for r in solved)
        ratios = [r["seconds"] / r["limit"] for r in solved]
        entry = {
            "runs": len(rows), "refused": sum(r["outcome"] == "refused" for r in rows),
            "failures": sum(r["outcome"] == "failure" for r in rows), "overruns": sum(bool(r.get("overrun")) for r in solved),
            "verify_violations": sum(not r["verify_ok"] for r in solved),
            "oracle_violations": sum(bool(r["oracle_violations"]) for r in rows), "statuses": dict(statuses),
            "median_time_over_limit": float(np.median(ratios)) if ratios else None,
            "max_time_over_limit": max(ratios) if ratios else None,
            "max_seconds": max((r["seconds"] for r in solved), default=None),
        }
        summary[name] = entry
        print(f"{name:11s} {entry['runs']:5d} {entry['refused']:7d} {entry['failures']:5d} {entry['overruns']:7d} "
              f"{entry['verify_violations']:6d} {entry['oracle_violations']:6d} {statuses.get('OPTIMAL', 0):4d} "
              f"{statuses.get('FEASIBLE', 0):5d} {statuses.get('INFEASIBLE', 0):4d} {statuses.get('NO_SOLUTION', 0):5d} "
              f"{_fmt(entry['median_time_over_limit'])} {_fmt(entry['max_time_over_limit'])} {_fmt(entry['max_seconds'], 6)}")
    totals = {key: sum(e[key] for e in summary.values()) for key in ("runs", "refused", "failures", "overruns", "verify_violations", "oracle_violations")}
    print(f"{'total':11s} {totals['runs']:5d} {totals['refused']:7d} {totals['failures']:5d} {totals['overruns']:7d} "
          f"{totals['verify_violations']:6d} {totals['oracle_violations']:6d}")
    problems_by_kind = Counter({r["problem"]: r["kind"] for r in results}.values())
    print("problems:", ", ".join(f"{k} {v}" for k, v in sorted(problems_by_kind.items())))
    for r in results:
        if _bad(r):
            what = r.get("message") if r["outcome"] == "failure" else (r.get("violations") or r["oracle_violations"] or f"{r['seconds']:.1f} s")
            print(f"  ! problem {r['problem']} ({r['kind']}) {r['backend']}: {r['outcome']} {what}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"problems": args.problems, "seed": args.seed, "seconds": elapsed, "totals": totals, "backends": summary,
               "problems_by_kind": dict(problems_by_kind), "machine": platform.platform(),
               "runs": [{k: v for k, v in r.items() if k != "traceback" or r["outcome"] == "failure"} for r in results]}
    (out / "stress.json").write_text(json.dumps(payload, indent=1, default=_jsonable))
    print(f"wrote {out / 'stress.json'}")


def _bad(record: dict) -> bool:
    return (record["outcome"] == "failure" or bool(record.get("overrun")) or record.get("verify_ok") is False
            or bool(record["oracle_violations"]))


def _fmt(value, width: int = 9) -> str:
    return f"{'-':>{width}s}" if value is None else f"{value:{width}.2f}"


def _jsonable(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


if __name__ == "__main__":
    main()
