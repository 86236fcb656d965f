"""PruningProblem and RestructureProblem: engines agree with the oracle, every solution verifies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import repurpose_opt as ro
from repurpose_opt.api import _finish
from repurpose_opt.problems.restructure import calibration_errors
from repurpose_opt.pruning import solve_pruning_greedy


def _greedy(problem):
    return _finish(problem, "greedy", solve_pruning_greedy(problem), None)


def _random_pruning(seed: int, conv: bool = False, tolerance=None, budget=None):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 4))
    if conv:
        c_in, c_out = int(rng.integers(2, 5)), int(rng.integers(k, 5))
        layer = ro.Conv2d(rng.normal(size=(c_out, c_in, 3, 3)), rng.normal(size=c_out), padding=1)
        X = rng.normal(size=(6, c_in, 5, 5))
        n_in, n_out = c_in, c_out
    else:
        n_in, n_out = int(rng.integers(3, 8)), int(rng.integers(k, 6))
        W = rng.normal(size=(n_out, n_in)) * (rng.random((n_out, n_in)) < 0.7)
        layer = ro.Dense(W, rng.normal(size=n_out))
        X = rng.normal(size=(30, n_in))
    Y = layer.apply(X)
    Y = Y + 0.05 * rng.normal(size=Y.shape)
    placement_in = rng.integers(0, k, n_in)
    placement_out = np.r_[np.arange(k), rng.integers(0, k, n_out - k)]
    return ro.PruningProblem(X, Y, layer, placement_out, ro.Cluster(k=k), input_placement=placement_in,
                             tolerance=tolerance, comm_budget=budget)


@given(seed=st.integers(0, 10_000), tolerance=st.sampled_from([0.02, 0.1, 0.3, 0.6]), conv=st.booleans())
def test_greedy_pruning_never_beats_the_exact_oracle(seed, tolerance, conv):
    problem = _random_pruning(seed, conv=conv, tolerance=tolerance)
    exact = ro.solve(problem, backend="bruteforce", verify=True)
    greedy = _greedy(problem)
    if exact.status is ro.Status.INFEASIBLE:
        assert not greedy.status.has_solution
        return
    assert exact.status is ro.Status.OPTIMAL
    assert ro.verify(problem, greedy).ok
    assert greedy.objective >= exact.objective - 1e-9
    assert problem.relative_error(greedy.network) <= tolerance * (1 + 1e-7)


@given(seed=st.integers(0, 10_000), budget=st.integers(0, 6))
def test_budget_mode_minimises_error_within_budget(seed, budget):
    problem = _random_pruning(seed, budget=float(budget))
    exact = ro.solve(problem, backend="bruteforce", verify=True)
    greedy = _greedy(problem)
    assert ro.verify(problem, greedy).ok
    assert greedy.report.comm_scalars <= budget
    assert greedy.objective >= exact.objective - 1e-9  # objective is the relative error here
    larger = ro.solve(_random_pruning(seed, budget=float(budget + 2)), backend="bruteforce")
    assert larger.objective <= exact.objective + 1e-12  # a larger budget never hurts


def test_unreachable_tolerance_is_infeasible_with_the_smallest_error():
    rng = np.random.default_rng(0)
    layer = ro.Dense(rng.normal(size=(3, 4)))
    X = rng.normal(size=(20, 4))
    Y = rng.normal(size=(20, 3))  # unrelated to X: no fit can be good
    problem = ro.PruningProblem(X, Y, layer, [0, 1, 1], ro.Cluster(k=2), input_placement=[0, 0, 1, 1], tolerance=0.01)
    sol = _greedy(problem)
    assert sol.status is ro.Status.INFEASIBLE
    assert "smallest relative error reachable" in sol.message


@pytest.mark.parametrize("bad, message", [
    (dict(tolerance=None, comm_budget=None), "exactly one of `tolerance` and `comm_budget`"),
    (dict(tolerance=-0.1), "`tolerance` must be >= 0"),
    (dict(tolerance=None, comm_budget=-1.0), "`comm_budget` must be >= 0"),
    (dict(output_placement=[0, 1]), "`output_placement` must be a 1-D array of length 3"),
    (dict(targets=np.zeros((5, 3))), "`targets` must have shape"),
    (dict(inputs=np.full((20, 4), np.nan)), "`inputs` must be finite"),
])
def test_pruning_problem_bad_inputs(bad, message):
    rng = np.random.default_rng(0)
    layer = ro.Dense(rng.normal(size=(3, 4)))
    X = rng.normal(size=(20, 4))
    args = dict(inputs=X, targets=layer.apply(X), layer=layer, output_placement=[0, 1, 1], cluster=ro.Cluster(k=2),
                input_placement=[0, 0, 1, 1], tolerance=0.1)
    args.update(bad)
    with pytest.raises(ro.InvalidProblemError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ro.PruningProblem(**args)


# ---------------------------------------------------------------------------------------- restructure


def _mlp(seed: int = 0):
    rng = np.random.default_rng(seed)
    net = ro.Network([ro.Dense(rng.normal(size=(12, 8)) / 3, rng.normal(size=12)), ro.ReLU(),
                      ro.Dense(rng.normal(size=(8, 12)) / 3), ro.Tanh(), ro.Dense(rng.normal(size=(4, 8)))],
                     input_shape=(8,))
    return net, rng.normal(size=(200, 8))


def _cnn(seed: int = 0):
    rng = np.random.default_rng(seed)
    net = ro.Network([ro.Conv2d(rng.normal(size=(4, 2, 3, 3)), padding=1), ro.ReLU(), ro.MaxPool2d(2),
                      ro.Conv2d(rng.normal(size=(6, 4, 3, 3)) * 0.3, padding=1), ro.ReLU(), ro.Flatten(),
                      ro.Dense(rng.normal(size=(5, 6 * 4 * 4)) * 0.1)], input_shape=(2, 8, 8))
    return net, rng.normal(size=(80, 2, 8, 8))


@pytest.mark.parametrize("builder", [_mlp, _cnn])
@pytest.mark.parametrize("input_placement", ["replicated", "free", "fixed"])
@pytest.mark.parametrize("output", ["gather", "distributed"])
@pytest.mark.parametrize("backend", ["repurpose", "direct"])
def test_restructure_solutions_verify_and_meet_tolerances(builder, input_placement, output, backend):
    net, X = builder()
    placement = np.arange(net.unit_counts[0]) % 2 if input_placement == "fixed" else input_placement
    tolerance = [0.05] * (net.n_layers - 1) + [0.5]
    problem = ro.RestructureProblem(net, ro.Cluster(k=2), calibration=X, tolerance=tolerance,
                                    input_placement=placement, output=output)
    sol = ro.solve(problem, backend=backend, verify=True)
    assert sol.status is ro.Status.FEASIBLE
    errors = calibration_errors(net, sol.network, X)
    assert np.all(errors <= np.asarray(tolerance) * (1 + 1e-7))
    np.testing.assert_allclose(sol.guarantee.calibration_errors, errors, rtol=1e-6, atol=1e-9)
    assert sol.objective == sol.report.comm_scalars


def test_k1_needs_no_communication_and_reproduces_the_network():
    net, X = _mlp()
    sol = ro.solve(ro.RestructureProblem(net, ro.Cluster(k=1), calibration=X, tolerance=0.0), backend="repurpose")
    assert sol.objective == 0.0
    np.testing.assert_allclose(sol.network.forward(X), net.forward(X), rtol=1e-6, atol=1e-6)


def test_unreachable_layer_tightens_the_layers_before_it():
    """Tolerance mode is never infeasible (opening everything reproduces the network): a layer that cannot
    meet its tolerance from the restructured layers before it makes the cascade tighten them."""
    net, X = _mlp()
    sol = ro.solve(ro.RestructureProblem(net, ro.Cluster(k=2), calibration=X, tolerance=[0.4, 0.4, 0.0]),
                   backend="repurpose", verify=True)
    assert sol.status is ro.Status.FEASIBLE
    assert sol.stats["tightened"][0]["layer"] == 3
    assert sol.stats["tightened"][-1]["tolerances"] == [0.0, 0.0, 0.0]  # an exact layer needs exact inputs
    np.testing.assert_allclose(sol.network.forward(X), net.forward(X), rtol=1e-6, atol=1e-6)


def test_budget_mode_respects_the_budget_and_looser_budget_helps():
    net, X = _mlp()
    errors = []
    for budget in (10.0, 40.0):
        problem = ro.RestructureProblem(net, ro.Cluster(k=2), calibration=X, comm_budget=budget)
        sol = ro.solve(problem, backend="repurpose", verify=True)
        assert sol.report.comm_scalars <= budget
        errors.append(calibration_errors(net, sol.network, X)[-1])
    assert errors[1] <= errors[0] + 1e-9


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "exactly one of `tolerance` and `comm_budget`"),
    (dict(tolerance=[0.1, 0.1]), "one entry per linear layer"),
    (dict(tolerance=-1.0), "`tolerance` must be >= 0"),
    (dict(comm_budget=-5.0), "`comm_budget` must be >= 0"),
    (dict(tolerance=0.1, calibration=np.zeros((10, 7))), "`calibration` must have shape"),
    (dict(tolerance=0.1, calibration=np.full((10, 8), np.inf)), "`calibration` must be finite"),
    (dict(tolerance=0.1, fit="joint"), "`fit` must be one of 'cascade'"),
])
def test_restructure_problem_bad_inputs(kwargs, message):
    net, X = _mlp()
    args = dict(calibration=X)
    args.update(kwargs)
    with pytest.raises(ro.InvalidProblemError, match=message):
        ro.RestructureProblem(net, ro.Cluster(k=2), **args)


@pytest.mark.parametrize("backend", ["ortools", "cvxpy"])
@pytest.mark.parametrize("mode", [dict(tolerance=0.1), dict(comm_budget=12.0)])
@pytest.mark.parametrize("input_placement", ["replicated", "fixed"])
def test_surrogate_mip_engines_verify(backend, mode, input_placement):
    """The surrogate MIP of SPEC §5 (joint over all layers), then the shared ℓ0 step: valid solutions,
    tolerances or budget met, and the MIP never ends below its warm start (the importance chain)."""
    net, X = _mlp()
    placement = np.arange(8) % 2 if input_placement == "fixed" else input_placement
    problem = ro.RestructureProblem(net, ro.Cluster(k=2), calibration=X, input_placement=placement, **mode)
    sol = ro.solve(problem, backend=backend, time_limit=3.0, seed=0, verify=True)
    assert sol.status is ro.Status.FEASIBLE
    surrogate = sol.stats["surrogate"]
    assert surrogate["value"] >= surrogate["hint_value"] - 1e-9
    if "comm_budget" in mode:
        assert sol.report.comm_scalars <= 12.0


def test_exact_tolerance_is_reachable_where_the_least_squares_floor_is_not():
    """Tolerance 0 on the last layer forces exact layers before it; on 200 digits samples the Cholesky
    floor of layer 2 is ~2e-7 relative (above the 1e-7 slack), so the layers' own weights must be tried."""
    from repurpose_opt import zoo

    model = zoo.load("digits_mlp")
    problem = ro.RestructureProblem(model.network, ro.Cluster(k=4), calibration=model.calibration(200),
                                    tolerance=[0.05, 0.05, 0.05, 0.0])
    sol = ro.solve(problem, backend="repurpose", options={"joint_iterations": 0, "partitioners": ()}, verify=True)
    assert sol.status is ro.Status.FEASIBLE
    assert max(sol.guarantee.calibration_errors) <= 1e-7
    # The same layer 2 as a PruningProblem: FEASIBLE with its own weights, not a wrong INFEASIBLE.
    trace = model.network.trace(model.calibration(200))
    exact = ro.PruningProblem(trace.activations[1].reshape(200, -1), trace.pre_activations[1], model.network.linear_layers[1],
                              np.arange(128) % 4, ro.Cluster(k=4), input_placement=np.arange(256) % 4, tolerance=0.0)
    pruned = ro.solve(exact, backend="greedy", verify=True)
    assert pruned.status is ro.Status.FEASIBLE and exact.relative_error(pruned.network) <= 1e-7
    assert "own weights" in pruned.message
