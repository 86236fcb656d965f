"""The exact partition backends (``ortools``, ``cvxpy``), their shared km1 model, and ``hypergraph``.

Properties checked:
- the array model is exact: any placement, completed into a full variable vector, is feasible and its model
  objective equals the simulator's volume (latency: never above it, within the stated rounding error);
- ``ortools`` and ``cvxpy`` return OPTIMAL with the brute-force optimum on every tiny instance (all input and
  output modes, both objectives, optional capacities), with a bound never above that optimum;
- on planted block-diagonal networks (units shuffled, input free, output distributed) the exact backends and
  ``hypergraph`` find volume 0;
- the warm start is used and never beaten by CP-SAT's (or HiGHS's) answer; time limits are honoured (HiGHS
  is killed at the deadline when it overruns); the latency tick model is proved optimal; the layer-by-layer
  mode returns verified FEASIBLE placements without a bound;
- a crash of the native hypergraph partitioner becomes a SolverError and leaves the caller alive;
- cvxpy (highspy) and OR-tools can be imported and used in one process in that order.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import repurpose_opt as ro
from repurpose_opt.solvers import hypergraph as hypergraph_module
from repurpose_opt.solvers.milp_model import FORMULATIONS, build_partition_milp, canonicalize, full_assignment
from repurpose_opt.testing.instances import random_dense_network

pytest.importorskip("ortools")
pytest.importorskip("cvxpy")
pytest.importorskip("mtkahypar")

EXACT = ("ortools", "cvxpy")


# ------------------------------------------------------------------------------------------ instances
def _layered(rng: np.random.Generator, sizes: list[int], density: float) -> ro.Network:
    return random_dense_network(rng, sizes, density, connected=False)


@st.composite
def tiny_problems(draw) -> ro.PartitionProblem:
    """Valid partition problems of at most 12 units to place, K <= 3, every input/output mode."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    k = draw(st.integers(1, 3))
    mode = draw(st.sampled_from(["replicated", "free", "fixed"]))
    n_layers = draw(st.integers(1, 3))
    sizes = [draw(st.integers(k, 4)) for _ in range(n_layers + 1)]
    while sum(sizes[1:]) + (sizes[0] if mode == "free" else 0) > 12:
        sizes.pop()
    if len(sizes) < 2:
        sizes = [k, k]
    net = _layered(rng, sizes, draw(st.sampled_from([0.25, 0.5, 0.9])))
    objective = draw(st.sampled_from(["volume", "volume", "latency"]))
    speed = None if draw(st.booleans()) else rng.choice([1.0, 2.0], size=k)
    flops_capacity = None
    if draw(st.integers(0, 4)) == 0:  # sometimes a FLOPs limit, possibly infeasible
        total = sum(float(layer.flops_per_unit.sum()) for layer in net.structure)
        flops_capacity = float(np.ceil(total / k * draw(st.sampled_from([0.9, 1.2, 2.0]))))
    cluster = ro.Cluster(k=k, speed=speed, flops_capacity=flops_capacity,
                         latency=draw(st.sampled_from([0.0, 1e-5])), bandwidth=draw(st.sampled_from([1e5, 1e7])))
    placement = mode if mode != "fixed" else rng.integers(0, k, size=sizes[0])
    return ro.PartitionProblem(net, cluster, input_placement=placement, output=draw(st.sampled_from(["gather", "distributed"])),
                               imbalance=draw(st.sampled_from([0.0, 0.0, 0.5])), objective=objective)


def planted(rng: np.random.Generator, k: int, block_units: list[int], density: float = 0.5) -> ro.Network:
    """Block-diagonal layers (block g of layer l reads only block g of layer l-1), units shuffled."""
    perms = [rng.permutation(k * b) for b in block_units]
    layers = []
    for l in range(1, len(block_units)):
        b_in, b_out = block_units[l - 1], block_units[l]
        W = np.zeros((k * b_out, k * b_in))
        for g in range(k):
            block = rng.normal(size=(b_out, b_in)) * (rng.random((b_out, b_in)) < density)
            block[np.arange(b_out), rng.integers(0, b_in, b_out)] = 1.0  # every unit reads its own block
            W[g * b_out : (g + 1) * b_out, g * b_in : (g + 1) * b_in] = block
        layers += [ro.Dense(W[perms[l]][:, perms[l - 1]]), ro.ReLU()]
    return ro.Network(layers[:-1], input_shape=(k * block_units[0],))


def _medium(seed: int = 0, k: int = 4, input_placement="replicated", output="gather") -> ro.PartitionProblem:
    rng = np.random.default_rng(seed)
    net = _layered(rng, [48, 96, 64, 32, 10], 0.12)
    if isinstance(input_placement, str) and input_placement == "fixed":
        input_placement = rng.integers(0, k, size=48)
    return ro.PartitionProblem(net, ro.Cluster(k=k), input_placement=input_placement, output=output)


def _objective(problem, assignment) -> float:
    report = ro.simulate(problem.network, list(assignment), problem.cluster, output=problem.output,
                         input_placement=problem.input_placement)
    return problem.objective_value(report)


# ------------------------------------------------------------------------------------- the array model
@settings(max_examples=25)
@given(problem=tiny_problems(), seed=st.integers(0, 1000), formulation=st.sampled_from(FORMULATIONS))
def test_model_prices_any_placement_exactly(problem, seed, formulation):
    """complete(placement) is feasible and its objective is the simulator's (latency: within the rounding)."""
    ticks = 1e9 if problem.objective == "latency" and seed % 2 else None
    model = build_partition_milp(problem, integer_ticks=ticks, formulation=formulation)
    drawn = ro.solve(problem, "random", seed=seed)
    if not drawn.status.has_solution:
        return
    placements = canonicalize(model, {l: drawn.assignment[l] for l in model.layers})
    values = model.complete(placements)
    assert model.violation(values) <= 1e-9
    true = _objective(problem, full_assignment(problem, model, placements))
    priced = model.objective_value(values) / model.scale
    if problem.objective == "volume" or ticks is None:
        assert math.isclose(priced, true, rel_tol=1e-9, abs_tol=1e-12)
    else:
        assert priced <= true * (1 + 1e-12) and true - priced <= model.rounding_error + 1e-15


def test_model_rejects_a_broken_window():
    problem = _medium()
    with pytest.raises(ro.InvalidParameterError, match="`layers`"):
        build_partition_milp(problem, layers=(1, 3))
    with pytest.raises(ro.InvalidParameterError, match="`previous`"):
        build_partition_milp(problem, layers=(3,))
    with pytest.raises(ro.InvalidParameterError, match="`formulation`"):
        build_partition_milp(problem, formulation="fancy")


# ------------------------------------------------------------------------------ exact vs brute force
@settings(max_examples=30)
@given(problem=tiny_problems())
def test_exact_backends_match_the_oracle(problem):
    oracle = ro.solve(problem, "bruteforce")
    for name in EXACT:
        sol = ro.solve(problem, name, time_limit=20, seed=0, verify=True)
        if oracle.status is ro.Status.INFEASIBLE:
            assert sol.status is ro.Status.INFEASIBLE, name
            continue
        assert sol.status is ro.Status.OPTIMAL, (name, sol.message)
        assert math.isclose(sol.objective, oracle.objective, rel_tol=1e-6, abs_tol=1e-12), (name, sol.objective, oracle.objective)
        assert sol.bound <= oracle.objective * (1 + 1e-6) + 1e-12, name


@pytest.mark.parametrize("name", EXACT)
def test_bounds_never_exceed_the_optimum_when_stopped_early(name):
    """A solve cut short still returns a bound no larger than a known feasible (and so optimal) value."""
    problem = _medium(seed=3, k=3)
    sol = ro.solve(problem, name, time_limit=1.5, seed=0, verify=True)
    assert sol.status.has_solution
    best = min(sol.objective, ro.solve(problem, "direct").objective)
    if sol.bound is not None:
        assert sol.bound <= best + 1e-9


# ------------------------------------------------------------------------------------------ planted
@pytest.mark.parametrize("k, blocks", [(2, [3, 5, 4, 2]), (3, [4, 6, 4, 2]), (4, [6, 10, 6, 3])])
@pytest.mark.parametrize("name", [*EXACT, "hypergraph"])
def test_planted_block_diagonal_networks_cost_nothing(name, k, blocks):
    net = planted(np.random.default_rng(k), k, blocks)
    problem = ro.PartitionProblem(net, ro.Cluster(k=k), input_placement="free", output="distributed")
    assert ro.solve(problem, "direct").objective > 0  # the shuffle hides the blocks from an index split
    sol = ro.solve(problem, name, time_limit=30, seed=0, verify=True)
    assert sol.objective == 0.0
    if name in EXACT:
        assert sol.status is ro.Status.OPTIMAL and sol.bound == 0.0
    else:
        assert sol.status is ro.Status.FEASIBLE


# ------------------------------------------------------------------------------ ortools specifics
def test_warm_start_is_used_and_never_beaten():
    problem = _medium(seed=1)
    sol = ro.solve(problem, "ortools", time_limit=4, seed=0, verify=True)
    warm = sol.stats["warm_start"]
    assert warm["used"] and warm["hint_feasible"]
    assert warm["backend"] in warm["tried"]
    assert warm["model_objective"] == warm["objective"]  # the hint is priced exactly by the model
    assert sol.objective <= warm["objective"]
    cold = ro.solve(problem, "ortools", time_limit=1, seed=0, options={"warm_start": "none"})
    assert cold.stats["warm_start"]["used"] is False
    with pytest.raises(ro.InvalidParameterError, match="warm_start"):
        ro.solve(problem, "ortools", time_limit=1, options={"warm_start": 3})


@pytest.mark.parametrize("name", EXACT)
def test_time_limit_is_honoured(name):
    problem = _medium(seed=2)
    started = time.perf_counter()
    sol = ro.solve(problem, name, time_limit=2, seed=0, verify=True)
    elapsed = time.perf_counter() - started
    assert elapsed < 2 + 3.0, elapsed  # model building and the warm start are inside the limit; slack for load
    assert sol.status in (ro.Status.FEASIBLE, ro.Status.OPTIMAL)


@pytest.mark.parametrize("mode, output", [("replicated", "gather"), ("free", "distributed"), ("fixed", "gather")])
def test_layerwise_mode_returns_verified_placements(mode, output):
    problem = _medium(seed=4, k=3, input_placement=mode, output=output)
    sol = ro.solve(problem, "ortools", time_limit=3, seed=0, options={"mode": "layerwise"}, verify=True)
    assert sol.status is ro.Status.FEASIBLE and sol.bound is None
    windows = sol.stats["windows"]
    covered = [l for w in windows for l in w["layers"]]
    assert covered == list(range(0 if mode == "free" else 1, problem.network.n_layers + 1))
    assert sol.objective <= ro.solve(problem, "direct").objective


def test_auto_mode_switches_to_layerwise_for_large_models():
    problem = _medium(seed=5, k=2)
    sol = ro.solve(problem, "ortools", time_limit=3, seed=0, options={"mode": "auto", "whole_limit": 10})
    assert sol.stats["mode"] == "layerwise"
    with pytest.raises(ro.InvalidParameterError, match="`mode`"):
        ro.solve(problem, "ortools", time_limit=1, options={"mode": "everything"})
    with pytest.raises(ro.InvalidParameterError, match="CP-SAT parameter"):
        ro.solve(problem, "ortools", time_limit=1, options={"parameters": {"no_such_parameter": 1}})


def test_latency_objective_reports_its_integer_scaling():
    rng = np.random.default_rng(7)
    net = _layered(rng, [6, 8, 6, 4], 0.5)
    problem = ro.PartitionProblem(net, ro.Cluster(k=2, latency=2e-5, bandwidth=1e6), input_placement="free",
                                  output="gather", objective="latency")
    oracle = ro.solve(problem, "bruteforce")
    sol = ro.solve(problem, "ortools", time_limit=20, seed=0, verify=True)
    assert sol.stats["latency_ticks"] > 0 and 0 <= sol.stats["rounding_error"] < 1e-6 * oracle.objective
    assert sol.bound <= oracle.objective * (1 + 1e-9)
    assert math.isclose(sol.objective, oracle.objective, rel_tol=1e-6)
    assert sol.status is ro.Status.OPTIMAL


# ------------------------------------------------------------------------------- cvxpy specifics
def test_cvxpy_reports_the_lp_relaxation_when_asked():
    problem = _medium(seed=6, k=2)
    sol = ro.solve(problem, "cvxpy", time_limit=3, seed=0, options={"relaxation": True}, verify=True)
    assert "lp_relaxation" in sol.stats
    assert sol.bound is not None and sol.bound >= sol.stats["lp_relaxation"] - 1e-6
    assert sol.bound <= sol.objective
    warm = sol.stats["warm_start"]  # the MIP start reaches HiGHS, which never returns anything worse
    assert warm["used"] and warm["hint_feasible"] and warm["model_objective"] == warm["objective"]
    assert sol.objective <= warm["objective"]


def test_cvxpy_then_ortools_in_one_process():
    """The highspy / OR-tools shared-library clash: import cvxpy (and highspy) first, then OR-tools, solve with both."""
    code = textwrap.dedent(
        """
        import cvxpy, highspy
        from ortools.sat.python import cp_model
        import numpy as np, repurpose_opt as ro
        net = ro.Network([ro.Dense(np.eye(4)), ro.ReLU(), ro.Dense(np.eye(4))], input_shape=(4,))
        problem = ro.PartitionProblem(net, ro.Cluster(k=2), input_placement="free", output="distributed")
        a = ro.solve(problem, "cvxpy", time_limit=10)
        b = ro.solve(problem, "ortools", time_limit=10)
        print(a.status.value, a.objective, b.status.value, b.objective)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["OPTIMAL", "0.0", "OPTIMAL", "0.0"]


# --------------------------------------------------------------------------- hypergraph specifics
def test_hypergraph_is_deterministic_and_balanced():
    problem = _medium(seed=8, k=4, input_placement="free", output="gather")
    a = ro.solve(problem, "hypergraph", seed=3, verify=True)
    b = ro.solve(problem, "hypergraph", seed=3, verify=True)
    assert all(np.array_equal(x, y) for x, y in zip(a.assignment, b.assignment, strict=True))
    assert a.status is ro.Status.FEASIBLE and a.bound is None
    assert a.objective < ro.solve(problem, "direct").objective
    assert sum(step["km1"] for step in a.stats["steps"]) >= 0


def test_repair_moves_units_out_of_overloaded_blocks():
    step = hypergraph_module._Step(6, np.array([2, 2, 2]), 3, np.ones(3))
    step.add_net(np.array([0, 1]), np.array([], dtype=np.int64), 5)
    step.add_net(np.array([2, 3, 4]), np.array([1]), 1)
    blocks = np.array([0, 0, 0, 0, 1, 2])  # block 0 holds 4 units, capacity 2
    moves = step.repair(blocks)
    assert moves == 2 and np.all(np.bincount(blocks, minlength=3) <= 2)
    assert blocks[0] == blocks[1]  # the heavy net stays uncut


def test_a_native_crash_becomes_a_solver_error():
    """Zero vertex weights with a fixed vertex make Mt-KaHyPar segfault: the child dies, we do not."""
    rng = np.random.default_rng(0)
    n = 200
    request = {
        "num_nodes": n, "nets": [rng.choice(n, 5, replace=False).tolist() for _ in range(400)],
        "node_weights": [0] * n, "net_weights": [1] * 400, "fixed": [0, 1] + [-1] * (n - 2), "k": 4,
        "epsilon": 0.0, "max_block_weights": [60] * 4, "preset": "DETERMINISTIC", "seed": 0,
    }
    with hypergraph_module._MtKaHyPar(1) as engine:
        with pytest.raises(ro.SolverError, match="Mt-KaHyPar (was killed|exited)"):
            engine.partition(request, during="in this test")
    with hypergraph_module._MtKaHyPar(1) as engine:  # bad input the library itself rejects
        request.update(node_weights=[1] * n, fixed=[9] * n)
        with pytest.raises(ro.SolverError, match="rejected"):
            engine.partition(request)


def test_an_aborting_worker_becomes_a_solver_error(monkeypatch):
    monkeypatch.setattr(hypergraph_module, "_worker_command", lambda threads: [sys.executable, "-c", "import os; os.abort()"])
    problem = _medium(seed=9, k=2)
    with pytest.raises(ro.SolverError, match="SIGABRT"):
        ro.solve(problem, "hypergraph")
