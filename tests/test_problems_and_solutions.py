"""Problems, ``solve``, ``verify``, solutions on disk, and the first backends.

Properties checked:
- balance capacities ``⌈(1+ε)·n·r_k/Σr⌉`` by hand; problems are frozen and validated;
- ``solve`` recounts every claim with the simulator and refuses inconsistent backends (tested with fake
  backends: a wrong objective, OPTIMAL without a bound, a bound above the objective, a NaN bound, an
  assignment with a no-solution status, a malformed or missing assignment, a crash, a wrong return type);
- ``verify`` trusts nothing: each kind of tampering with a good solution is reported;
- every installed backend's solution to random tiny problems verifies, and ``bruteforce`` is never worse
  than any of them (backends are taken from the registry, so new ones are covered automatically);
- ``bruteforce`` equals a plain enumeration of the product of all layers' placements (both objectives);
- ``save_solution``/``load_solution`` round-trip bit-exactly; damaged files raise FormatError.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import repurpose_opt as ro
from repurpose_opt.solution import Status
from repurpose_opt.solvers.base import Backend, BackendResult
from repurpose_opt.solvers.placement import fixed_input
from repurpose_opt.solvers.registry import register_backend, unregister_backend
from repurpose_opt.testing import random_conv_network, random_dense_network


# ------------------------------------------------------------------------------------------ problems
def test_balance_capacities_by_hand():
    assert ro.Cluster(k=4).balance_capacity(64).tolist() == [16, 16, 16, 16]
    assert ro.Cluster(k=3).balance_capacity(10).tolist() == [4, 4, 4]
    assert ro.Cluster(k=2, speed=[1.0, 2.0]).balance_capacity(10).tolist() == [4, 7]  # 3.33, 6.67
    assert ro.Cluster(k=2).balance_capacity(10, imbalance=0.1).tolist() == [6, 6]  # 5.5
    assert ro.Cluster(k=3, speed=[1, 1, 2]).balance_capacity(8, imbalance=0.5).tolist() == [3, 3, 6]


def test_partition_problem_capacities_and_modes(rng):
    net = random_dense_network(rng, [6, 8, 4])
    cluster = ro.Cluster(k=2, speed=[3.0, 1.0])
    problem = ro.PartitionProblem(net, cluster, input_placement="free", imbalance=0.0)
    assert [c.tolist() for c in problem.capacities] == [[5, 2], [6, 2], [3, 1]]
    assert problem.input_mode == "free" and problem.size() == 18
    fixed = ro.PartitionProblem(net, cluster, input_placement=[0, 1, 0, 1, 0, 1])
    assert fixed.input_mode == "fixed" and fixed.capacities[0] is None and fixed.size() == 12
    assert fixed.input_placement.dtype == np.int64 and not fixed.input_placement.flags.writeable
    with pytest.raises(dataclasses.FrozenInstanceError):
        problem.imbalance = 1.0  # type: ignore[misc]


# ------------------------------------------------------------------------------------- fake backends
def _problem(input_placement="replicated", output="gather") -> ro.PartitionProblem:
    net = ro.Network([ro.Dense(np.ones((4, 4))), ro.ReLU(), ro.Dense(np.ones((2, 4)))], input_shape=(4,))
    return ro.PartitionProblem(net, ro.Cluster(k=2), input_placement=input_placement, output=output)


GOOD = (np.full(4, -1), np.array([0, 0, 1, 1]), np.array([0, 1]))  # volume 4 + gather 1 = 5 (the optimum)


def _fake(name: str, result):
    class Fake(Backend):
        problem_types = ("PartitionProblem",)

        def solve(self, problem, *, time_limit, seed, options):
            if isinstance(result, Exception):
                raise result
            return result

    Fake.name = name
    return Fake


@pytest.fixture
def fake_backend():
    names = []

    def make(result, name: str = "fake"):
        register_backend(_fake(name, result), replace=True)
        names.append(name)
        return name

    yield make
    for name in names:
        unregister_backend(name)


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (BackendResult(Status.FEASIBLE, GOOD, objective=4.0), "reported objective 4.0 but the simulator measures 5.0"),
        (BackendResult(Status.OPTIMAL, GOOD), "claimed OPTIMAL without a matching lower bound"),
        (BackendResult(Status.OPTIMAL, GOOD, bound=4.0), "claimed OPTIMAL without a matching lower bound"),
        (BackendResult(Status.FEASIBLE, GOOD, bound=6.0), "reported bound 6.0 above its objective 5.0"),
        (BackendResult(Status.FEASIBLE, GOOD, bound=float("nan")), "returned a NaN bound"),
        (BackendResult(Status.FEASIBLE, GOOD, bound="low"), "returned bound 'low', which is not a number"),
        (BackendResult(Status.INFEASIBLE, GOOD), "returned an assignment with status INFEASIBLE"),
        (BackendResult(Status.FEASIBLE, None), "reported FEASIBLE without an assignment"),
        (BackendResult(Status.FEASIBLE, GOOD[:2]), r"returned a malformed assignment: `assignment` must hold 3"),
        (BackendResult(Status.FEASIBLE, (GOOD[0], GOOD[1], np.array([0, 2]))),
         r"malformed assignment: `assignment\[2\]` must hold worker indices in 0..1"),
        (BackendResult("DONE", GOOD), "returned status 'DONE', which is not a Status"),
        (BackendResult(Status.FEASIBLE, GOOD, network="not a network"), "returned a str as its network"),
        (RuntimeError("segfault in native code"), "backend 'fake' failed on this PartitionProblem: RuntimeError: segfault"),
        ({"status": "OPTIMAL"}, "returned dict, not a BackendResult"),
    ],
)
def test_solve_refuses_inconsistent_backends(fake_backend, result, message):
    name = fake_backend(result)
    with pytest.raises(ro.SolverError, match=message):
        ro.solve(_problem(), backend=name)


def test_solve_accepts_consistent_claims_and_fills_the_solution(fake_backend):
    name = fake_backend(BackendResult(Status.OPTIMAL, GOOD, bound=5.0, objective=5.0, message="proof", stats={"nodes": 3}))
    problem = _problem()
    sol = ro.solve(problem, backend=name, seed=7, verify=True)
    assert (sol.status, sol.objective, sol.bound, sol.gap, sol.backend, sol.seed) == (Status.OPTIMAL, 5.0, 5.0, 0.0, name, 7)
    assert sol.message == "proof" and sol.stats == {"nodes": 3} and sol.cluster is problem.cluster
    assert {"solve", "total"} <= set(sol.timings) and sol.report.comm_scalars == 5.0
    assert all(not a.flags.writeable for a in sol.assignment)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sol.objective = 0.0  # type: ignore[misc]
    name = fake_backend(BackendResult(Status.FEASIBLE, GOOD, bound=2.5), name="fake2")
    assert ro.solve(problem, backend=name).gap == 0.5


def test_solve_with_verify_refuses_an_unbalanced_answer(fake_backend):
    unbalanced = (GOOD[0], np.array([0, 0, 0, 1]), GOOD[2])
    name = fake_backend(BackendResult(Status.FEASIBLE, unbalanced))
    problem = _problem()
    sol = ro.solve(problem, backend=name, verify=False)  # recounted, but balance is verify's job
    check = ro.verify(problem, sol)
    assert not check.ok and check.violations == ("layer 1: worker 0 holds 3 units, capacity 2",)
    with pytest.raises(ro.SolverError, match="fails verification: layer 1: worker 0 holds 3 units, capacity 2"):
        ro.solve(problem, backend=name, verify=True)


def test_solve_refuses_a_replicated_answer_to_a_free_problem(fake_backend):
    name = fake_backend(BackendResult(Status.FEASIBLE, GOOD))
    with pytest.raises(ro.SolverError, match=r"`assignment\[0\]` must place every input unit"):
        ro.solve(_problem(input_placement="free"), backend=name)


# ------------------------------------------------------------------------------------------- verify
def test_verify_reports_each_kind_of_tampering():
    problem = _problem()
    sol = ro.solve(problem, backend="bruteforce")
    assert ro.verify(problem, sol).ok and sol.status is Status.OPTIMAL
    cases = {
        "objective 4.0 differs from the simulator's recount 5.0": dict(objective=4.0),
        "bound 6.0 is above the objective 5.0": dict(bound=6.0, status=Status.FEASIBLE, gap=0.0),
        "status OPTIMAL but bound 4.0 does not match": dict(bound=4.0, gap=0.2),
        "status OPTIMAL without a bound": dict(bound=None, gap=None),
        "gap 0.3 differs from": dict(gap=0.3),
        "layer 2: worker 1 holds 2 units, capacity 1": dict(assignment=(GOOD[0], GOOD[1], np.array([1, 1])), objective=4.0),
        "assignment is malformed": dict(assignment=GOOD[:2]),
        "input placement must be replicated": dict(assignment=(np.array([0, 0, 1, 1]),) + GOOD[1:]),
        "status INFEASIBLE but an assignment is present": dict(status=Status.INFEASIBLE),
        "without an assignment and an objective": dict(assignment=None),
        "objective nan is not a finite number": dict(objective=float("nan")),
        "the stored report's comm_scalars": dict(report=dataclasses.replace(sol.report, comm_scalars=1.0)),
        "weights changed, but a partition problem keeps them fixed": dict(
            network=problem.network.with_weights([(2 * l.W, l.b) for l in problem.network.linear_layers])),
    }
    for message, change in cases.items():
        check = ro.verify(problem, dataclasses.replace(sol, **change))
        assert not check.ok and any(message in v for v in check.violations), (message, check.violations)


def test_verify_checks_input_modes_and_capacities():
    fixed = _problem(input_placement=np.array([0, 1, 0, 1]), output="distributed")
    sol = ro.solve(fixed, backend="bruteforce")
    assert ro.verify(fixed, sol).ok
    moved = dataclasses.replace(sol, assignment=(np.array([1, 0, 1, 0]),) + sol.assignment[1:])
    assert "input placement differs from the fixed input placement" in ro.verify(fixed, moved).violations
    free = _problem(input_placement="free", output="distributed")
    sol = ro.solve(free, backend="bruteforce")
    lopsided = dataclasses.replace(sol, assignment=(np.array([0, 0, 0, 1]),) + sol.assignment[1:])
    assert any("layer 0: worker 0 holds 3 units" in v for v in ro.verify(free, lopsided).violations)
    net = _problem().network
    capped = ro.PartitionProblem(net, ro.Cluster(k=2, flops_capacity=30.0, param_capacity=13))
    sol = ro.solve(_problem(), backend="bruteforce")  # each worker: 2·9 + 9 = 27 FLOPs, 2·5 + 5 = 15 params
    violations = ro.verify(capped, sol).violations
    assert violations == ("worker 0 holds 15 parameters, capacity 13", "worker 1 holds 15 parameters, capacity 13")
    with pytest.raises(ro.InvalidParameterError, match="`solution` must be a repurpose_opt.Solution, got str"):
        ro.verify(capped, "solution")
    with pytest.raises(ro.InvalidParameterError, match="`problem` must be a repurpose_opt problem, got int"):
        ro.verify(1, sol)


# --------------------------------------------------------------------- every backend, against the oracle
@st.composite
def tiny_problems(draw, max_units: int = 9):
    """Valid partition problems with few units to place: every input and output mode, both objectives."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k = draw(st.integers(1, 3))
    mode = draw(st.sampled_from(["replicated", "free", "fixed"]))
    if draw(st.integers(0, 3)) == 0:
        net = random_conv_network(rng, channels=(k, k, k), size=4, dense_out=k, pool=False, density=0.5)
    else:
        sizes = [draw(st.integers(k, 4)) for _ in range(draw(st.integers(2, 4)))]
        while sum(sizes[1:]) + (sizes[0] if mode == "free" else 0) > max_units and len(sizes) > 2:
            sizes.pop()
        net = random_dense_network(rng, sizes, density=draw(st.sampled_from([0.3, 0.6, 1.0])))
    if sum(net.unit_counts[1:]) + (net.unit_counts[0] if mode == "free" else 0) > max_units:
        mode = "replicated"
    cluster = ro.Cluster(k=k, speed=None if draw(st.booleans()) else rng.choice([1.0, 2.0], size=k),
                         bandwidth=draw(st.sampled_from([1e4, 1e8])), latency=draw(st.sampled_from([0.0, 1e-5])),
                         flop_rate=1e6)
    placement = mode if mode != "fixed" else rng.integers(0, k, size=net.unit_counts[0])
    return ro.PartitionProblem(net, cluster, input_placement=placement, output=draw(st.sampled_from(["gather", "distributed"])),
                               imbalance=draw(st.sampled_from([0.0, 0.0, 0.5])),
                               objective=draw(st.sampled_from(["volume", "volume", "latency"])))


def _partition_backends() -> list[str]:
    return [row["name"] for row in ro.list_backends(available_only=True) if "PartitionProblem" in row["problems"]]


@settings(max_examples=12)
@given(problem=tiny_problems())
def test_every_backend_verifies_and_bruteforce_is_never_worse(problem):
    oracle = ro.solve(problem, backend="bruteforce", verify=True)
    assert oracle.status is Status.OPTIMAL
    for name in _partition_backends():
        engine = ro.solvers.registry.get_backend(name)()
        if engine.can_solve(problem) is not None:
            continue
        sol = ro.solve(problem, backend=name, seed=0, time_limit=10, verify=True)
        assert ro.verify(problem, sol).ok
        if sol.status.has_solution:
            assert oracle.objective <= sol.objective * (1 + 1e-9) + 1e-12, (name, oracle.objective, sol.objective)
        if sol.bound is not None:
            assert sol.bound <= oracle.objective * (1 + 1e-9) + 1e-12, (name, sol.bound, oracle.objective)


def _enumerate(problem) -> float:
    """The optimum by scoring every combination of per-layer placements with the simulator."""
    k, counts = problem.k, problem.network.unit_counts
    first = fixed_input(problem)
    choices = []
    for l, (n, cap) in enumerate(zip(counts, problem.capacities, strict=True)):
        if l == 0 and first is not None:
            choices.append([first])
            continue
        rows = [np.array(p) for p in itertools.product(range(k), repeat=n)]
        choices.append([p for p in rows if np.all(np.bincount(p, minlength=k) <= cap)])
    best = math.inf
    for assignment in itertools.product(*choices):
        report = ro.simulate(problem.network, list(assignment), problem.cluster, output=problem.output,
                             input_placement=problem.input_placement)
        best = min(best, problem.objective_value(report))
    return best


@settings(max_examples=12)
@given(problem=tiny_problems(max_units=5))
def test_bruteforce_equals_plain_enumeration(problem):
    sol = ro.solve(problem, backend="bruteforce")
    assert math.isclose(sol.objective, _enumerate(problem), rel_tol=1e-9, abs_tol=1e-15)


def test_bruteforce_refuses_large_instances_with_the_size():
    net = ro.Network([ro.Dense(np.ones((40, 8)))], input_shape=(8,))
    problem = ro.PartitionProblem(net, ro.Cluster(k=4))
    with pytest.raises(ro.BackendCannotSolveError, match=r"backend 'bruteforce' cannot solve this PartitionProblem: "
                                                         r"too large for exhaustive enumeration: a layer has [\d,]+ balanced"):
        ro.solve(problem, backend="bruteforce")
    with pytest.raises(ro.BackendCannotSolveError, match=r"above the limits of `options` \(max_layer_states=5"):
        ro.solve(_problem(), backend="bruteforce", options={"max_layer_states": 5})


def test_bruteforce_capacities_and_infeasibility():
    net = _problem().network
    tight = ro.PartitionProblem(net, ro.Cluster(k=2, flops_capacity=[40.0, 20.0]))
    sol = ro.solve(tight, backend="bruteforce", verify=True)  # layer 1: 3 units on worker 0 would need imbalance
    assert sol.status is Status.INFEASIBLE and sol.assignment is None
    loose = ro.PartitionProblem(net, ro.Cluster(k=2, flops_capacity=30.0), imbalance=1.0)
    sol = ro.solve(loose, backend="bruteforce", verify=True)
    assert sol.status is Status.OPTIMAL and np.all(sol.report.flops <= 30.0)


def test_direct_and_random_baselines():
    problem = _problem(input_placement="free")
    direct = ro.solve(problem, backend="direct", verify=True)
    assert [a.tolist() for a in direct.assignment] == [[0, 0, 1, 1], [0, 0, 1, 1], [0, 1]]
    assert direct.status is Status.FEASIBLE and direct.bound is None
    a = ro.solve(problem, backend="random", seed=3, verify=True)
    b = ro.solve(problem, backend="random", seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a.assignment, b.assignment, strict=True))
    speeds = ro.PartitionProblem(problem.network, ro.Cluster(k=2, speed=[3.0, 1.0]))
    assert np.bincount(ro.solve(speeds, backend="direct").assignment[1]).tolist() == [3, 1]


# -------------------------------------------------------------------------------------- persistence
def test_solution_round_trip_is_bit_exact(tmp_path, rng):
    net = random_conv_network(rng, channels=(2, 2, 2), size=6, dense_out=2)
    problem = ro.PartitionProblem(net, ro.Cluster(k=2, speed=[1.0, 2.0], bandwidth=[[1, 2e6], [3e6, 1]]),
                                  input_placement="free", output="gather", imbalance=0.5)
    sol = ro.solve(problem, backend="bruteforce", seed=4)
    path = ro.save_solution(sol, tmp_path / "sol")
    loaded = ro.load_solution(path)
    for field in ("status", "objective", "bound", "gap", "backend", "message", "output", "seed", "timings", "stats"):
        assert getattr(loaded, field) == getattr(sol, field), field
    assert all(a.tobytes() == b.tobytes() and a.dtype == b.dtype for a, b in zip(sol.assignment, loaded.assignment, strict=True))
    assert all(a.W.tobytes() == b.W.tobytes() for a, b in zip(sol.network.linear_layers, loaded.network.linear_layers, strict=True))
    assert loaded.cluster.to_dict() == sol.cluster.to_dict()
    assert loaded.report.summary() == sol.report.summary()
    assert ro.verify(problem, loaded).ok
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:-40])
    with pytest.raises(ro.FormatError, match="corrupted or truncated"):
        ro.load_solution(tmp_path / "cut.npz")
    with pytest.raises(ro.FormatError, match="holds a 'repurpose-opt/network' file, expected 'repurpose-opt/solution'"):
        ro.load_solution(net.save(tmp_path / "net.npz"))
    with pytest.raises(ro.InvalidParameterError, match="`solution` must be a repurpose_opt.Solution, got dict"):
        ro.save_solution({}, tmp_path / "x.npz")


def test_cluster_round_trip_and_damaged_files(tmp_path):
    cluster = ro.Cluster(k=3, speed=[1, 2, 3], flops_capacity=1e6, bandwidth=np.full((3, 3), 5e7), latency=2e-4, dtype_bytes=2)
    path = cluster.save(tmp_path / "cluster.json")
    assert ro.Cluster.load(path).to_dict() == cluster.to_dict()
    path.write_text(path.read_text().replace('"version": 1', '"version": 2'))
    with pytest.raises(ro.FormatError, match="cluster format version 2; this repurpose-opt reads version 1: upgrade"):
        ro.Cluster.load(path)
    path.write_text('{"format": "repurpose-opt/cluster", "version": 1, "k": 0}')
    with pytest.raises(ro.FormatError, match="describes an invalid cluster: `k` must be >= 1, got 0"):
        ro.Cluster.load(path)
    path.write_text("{not json")
    with pytest.raises(ro.FormatError, match="is not a readable cluster JSON file"):
        ro.Cluster.load(path)
