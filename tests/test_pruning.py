"""PruningProblem engines beyond the greedy: the relaxed ℓ0 (``cvxpy``), nnz budgets, conv layers, and the
final joint refit of the cascade.

Properties: every solution verifies; no heuristic beats the exhaustive oracle; the budgets (volume, nnz)
hold; a conv pair opens all kh×kw weights of its channel and nothing else; the joint refit never breaks a
tolerance, never makes the output error worse, keeps every pruned weight at zero, and its gradients are
those of the network.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import repurpose_opt as ro
from repurpose_opt.api import _finish
from repurpose_opt.lsq import blas_threads, design_matrix
from repurpose_opt.problems.restructure import calibration_errors
from repurpose_opt.pruning import solve_pruning_greedy
from repurpose_opt.solvers.joint_refit import MIN_SAMPLES_TO_CHOOSE, RIDGE_CANDIDATES, _Model, choose_ridge, joint_refit


def _problem(seed: int, conv: bool = False, tolerance=None, budget=None, nnz=None, replicated=False):
    rng = np.random.default_rng(seed)
    k = 2
    if conv:
        c_in, c_out = int(rng.integers(2, 4)), int(rng.integers(2, 4))
        layer = ro.Conv2d(rng.normal(size=(c_out, c_in, 3, 3)), rng.normal(size=c_out), padding=1)
        X = rng.normal(size=(5, c_in, 4, 4))
        n_in, n_out = c_in, c_out
    else:
        n_in, n_out = int(rng.integers(3, 7)), int(rng.integers(2, 5))
        layer = ro.Dense(rng.normal(size=(n_out, n_in)) * (rng.random((n_out, n_in)) < 0.8), rng.normal(size=n_out))
        X = rng.normal(size=(25, n_in))
    Y = layer.apply(X)
    Y = Y + 0.05 * rng.normal(size=Y.shape)
    placement_out = np.r_[np.arange(k), rng.integers(0, k, n_out - k)]
    placement_in = "replicated" if replicated else rng.integers(0, k, n_in)
    return ro.PruningProblem(X, Y, layer, placement_out, ro.Cluster(k=k), input_placement=placement_in,
                             tolerance=tolerance, comm_budget=budget, nnz_budget=nnz)


# ------------------------------------------------------------------------------------------ cvxpy
@settings(max_examples=15)
@given(seed=st.integers(0, 10_000), conv=st.booleans(), mode=st.sampled_from(["tolerance", "budget"]),
       level=st.sampled_from([0.0, 0.05, 0.2, 0.5]))
def test_group_lasso_verifies_and_never_beats_the_oracle(seed, conv, mode, level):
    kwargs = {"tolerance": level} if mode == "tolerance" else {"budget": float(round(10 * level)) * (9 if conv else 1)}
    problem = _problem(seed, conv=conv, **kwargs)
    exact = ro.solve(problem, backend="bruteforce", verify=True)
    relaxed = ro.solve(problem, backend="cvxpy", verify=True)
    if exact.status is ro.Status.INFEASIBLE:
        assert relaxed.status is ro.Status.INFEASIBLE
        assert "smallest relative error reachable" in relaxed.message
        return
    assert relaxed.status is ro.Status.FEASIBLE
    assert relaxed.objective >= exact.objective - 1e-9
    if mode == "budget":
        assert relaxed.report.comm_scalars <= problem.comm_budget
    else:
        assert problem.relative_error(relaxed.network) <= level * (1 + 1e-7) + 1e-7


def test_group_lasso_path_finds_the_pairs_that_matter():
    """Targets built from two remote inputs only: the relaxation opens exactly those two pairs."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 6))
    W = np.zeros((2, 6))
    W[0, [0, 1, 4]] = [1.0, -2.0, 1.5]  # unit 0 on worker 0 reads remote input 4
    W[1, [3, 5, 2]] = [1.0, 0.5, -1.0]  # unit 1 on worker 1 reads remote input 2
    layer = ro.Dense(W)
    problem = ro.PruningProblem(X, layer.apply(X), layer, [0, 1], ro.Cluster(k=2), input_placement=[0, 0, 0, 1, 1, 1],
                                tolerance=1e-6)
    sol = ro.solve(problem, backend="cvxpy", verify=True)
    assert sorted(map(tuple, sol.stats["opened_pairs"])) == [(2, 1), (4, 0)]
    assert sol.objective == 2.0
    assert sol.stats["path"][0]["active"] <= 2


# -------------------------------------------------------------------------------------- nnz budgets
@settings(max_examples=20)
@given(seed=st.integers(0, 10_000), conv=st.booleans(), replicated=st.booleans(), inputs=st.integers(1, 4),
       mode=st.sampled_from(["tolerance", "budget"]))
def test_nnz_budgets_hold_and_no_engine_beats_the_oracle(seed, conv, replicated, inputs, mode):
    per_input = 9 if conv else 1
    kwargs = {"tolerance": 0.4} if mode == "tolerance" else {"budget": 2.0 * (9 if conv else 1)}
    # Two units per worker at most: an nnz budget of 2·inputs·per_input lets each worker read ~`inputs` units.
    problem = _problem(seed, conv=conv, replicated=replicated, nnz=2.0 * inputs * per_input, **kwargs)
    exact = ro.solve(problem, backend="bruteforce", verify=True)
    for name, sol in (("greedy", _finish(problem, "greedy", solve_pruning_greedy(problem), None)),
                      ("cvxpy", ro.solve(problem, backend="cvxpy"))):
        if not sol.status.has_solution:
            assert sol.status in (ro.Status.INFEASIBLE, ro.Status.NO_SOLUTION), name
            assert exact.status is ro.Status.INFEASIBLE or "nnz budget" in sol.message, name
            continue
        check = ro.verify(problem, sol)
        assert check.ok, (name, check.violations)
        assert np.all(problem.worker_nnz(sol.network) <= problem.nnz_budget), name
        assert exact.status is ro.Status.OPTIMAL and sol.objective >= exact.objective - 1e-9, name


def test_nnz_budget_validation_and_what_it_allows():
    rng = np.random.default_rng(0)
    layer = ro.Dense(rng.normal(size=(3, 4)))
    X = rng.normal(size=(20, 4))
    args = dict(inputs=X, targets=layer.apply(X), layer=layer, output_placement=[0, 1, 1], cluster=ro.Cluster(k=2),
                input_placement=[0, 0, 1, 1], tolerance=0.5)
    with pytest.raises(ro.InvalidProblemError, match="`nnz_budget` must be >= 0"):
        ro.PruningProblem(**args, nnz_budget=-1.0)
    with pytest.raises(ro.InvalidProblemError, match=r"`nnz_budget` must be a scalar or have one entry per worker \(2\)"):
        ro.PruningProblem(**args, nnz_budget=[1.0, 2.0, 3.0])
    problem = ro.PruningProblem(**args, nnz_budget=[3.0, 5.0])
    assert problem.max_groups.tolist() == [3, 2]  # worker 0: 1 unit x 3 inputs; worker 1: 2 units x 2 inputs


# -------------------------------------------------------------------------------------- deadlines
def _remote_pairs(problem) -> int:
    placement_in, placement_out = problem.in_placement, np.asarray(problem.output_placement)
    return int(sum(np.sum(placement_in != w) for w in np.unique(placement_out)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_past_deadline_opens_every_remote_pair_and_still_meets_the_tolerance(seed):
    from repurpose_opt.pruning import prune_layer

    problem = _problem(seed, tolerance=0.05)
    data = problem.fit_data()
    target = 0.05**2 * float(data.data_energy.sum())
    searched = prune_layer(data, problem.in_placement, problem.output_placement, problem.k, target_error=target)
    hurried = prune_layer(data, problem.in_placement, problem.output_placement, problem.k, target_error=target, deadline=0.0)
    assert searched.feasible and hurried.feasible and hurried.error <= target
    # Out of time before the first step: every remote pair a unit's worker lacks is opened at once.
    assert len(hurried.opened) == _remote_pairs(problem) >= len(searched.opened)
    # Budget mode keeps what it has (nothing yet): within the budget, never over it.
    budgeted = prune_layer(data, problem.in_placement, problem.output_placement, problem.k, max_pairs=2, deadline=0.0)
    assert budgeted.opened == ()


def test_greedy_pruning_with_a_tiny_time_limit_is_feasible_and_verified():
    problem = _problem(3, tolerance=0.05)
    sol = ro.solve(problem, backend="greedy", time_limit=1e-9, verify=True)
    assert sol.status is ro.Status.FEASIBLE
    assert len(sol.stats["opened_pairs"]) == _remote_pairs(problem)
    full = ro.solve(problem, backend="greedy", verify=True)
    assert len(full.stats["opened_pairs"]) <= len(sol.stats["opened_pairs"])


# ------------------------------------------------------------------------------------------- conv
def test_conv_pair_opens_every_tap_of_its_channel_and_refit_is_im2col_least_squares():
    rng = np.random.default_rng(4)
    layer = ro.Conv2d(rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4), padding=1, stride=2)
    X = rng.normal(size=(30, 3, 6, 6))
    Y = layer.apply(X) + 0.1 * rng.normal(size=(30, 4, 3, 3))
    placement_in, placement_out = np.array([0, 1, 1]), np.array([0, 0, 1, 1])
    problem = ro.PruningProblem(X, Y, layer, placement_out, ro.Cluster(k=2), input_placement=placement_in, comm_budget=36.0)
    sol = ro.solve(problem, backend="greedy", verify=True)
    opened = {tuple(p) for p in sol.stats["opened_pairs"]}
    assert len(opened) == 1  # a channel of 6x6 = 36 scalars: the budget buys one pair
    W = sol.network.linear_layers[0].W
    for unit in range(4):
        worker = placement_out[unit]
        for channel in range(3):
            taps = W[unit, channel]
            if placement_in[channel] == worker or (channel, worker) in opened:
                assert np.all(taps != 0)
            else:
                assert np.all(taps == 0)
    # The refit of worker 0's units is the plain least squares over im2col features (+ the ridge prior).
    support = [0] + [channel for channel, worker in opened if worker == 0]
    phi = design_matrix("conv2d", X, (3, 6, 6), layer).reshape(30 * 9, 3, 9)[:, support].reshape(30 * 9, -1)
    phi = np.hstack([phi, np.ones((phi.shape[0], 1))])
    T = Y.transpose(0, 2, 3, 1).reshape(-1, 4)[:, :2]
    rho = 1e-3 * float(np.mean(np.sum(np.hstack([design_matrix("conv2d", X, (3, 6, 6), layer), np.ones((270, 1))]) ** 2, axis=0)))
    prior = np.hstack([layer.W[:2, support].reshape(2, -1), layer.b[:2, None]])
    expected = np.linalg.solve(phi.T @ phi + rho * np.eye(phi.shape[1]), phi.T @ T + rho * prior.T).T
    got = np.hstack([W[:2, support].reshape(2, -1), sol.network.linear_layers[0].b[:2, None]])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------------- joint refit
def _conv_net(rng):
    return ro.Network([ro.Conv2d(rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4), padding=1), ro.Tanh(), ro.MaxPool2d(2),
                       ro.Conv2d(rng.normal(size=(5, 4, 3, 3)) * 0.3, rng.normal(size=5), padding=1, stride=2), ro.Sigmoid(),
                       ro.AvgPool2d(2, stride=1), ro.Flatten(), ro.Dense(rng.normal(size=(6, 5)) * 0.3, rng.normal(size=6)),
                       ro.ReLU(), ro.Dense(rng.normal(size=(3, 6)))], input_shape=(2, 8, 8))


@pytest.mark.parametrize("free", [[True] * 4, [False, True, True, True], [False, False, False, True]])
def test_joint_refit_gradients_match_finite_differences(free):
    rng = np.random.default_rng(1)
    net = _conv_net(rng)
    X = rng.normal(size=(5, 2, 8, 8))
    model = _Model(net, free, np.float64)
    theta = model.pack(net)
    directions = [rng.normal(size=z.shape) for z in net.trace(X).pre_activations]
    pre, tape = model.forward(model.weights(theta), X)
    for z, z_net in zip(pre, net.trace(X).pre_activations, strict=True):
        np.testing.assert_allclose(z, z_net, rtol=1e-12, atol=1e-12)
    gradient = model.gradient(model.backward(model.weights(theta), tape, directions))

    def value(t):
        return sum(float(np.sum(d * z)) for d, z in zip(directions, model.forward(model.weights(t), X)[0], strict=True))

    probes = rng.choice(theta.size, size=min(40, theta.size), replace=False)
    numeric = [(value(theta + 1e-6 * np.eye(theta.size)[i]) - value(theta - 1e-6 * np.eye(theta.size)[i])) / 2e-6 for i in probes]
    np.testing.assert_allclose(gradient[probes], numeric, rtol=1e-5, atol=1e-6 * np.max(np.abs(numeric)))


@settings(max_examples=12)
@given(seed=st.integers(0, 10_000), conv=st.booleans(), tolerance=st.sampled_from([0.05, 0.2, 0.4]),
       budget=st.booleans())
def test_joint_refit_keeps_tolerances_support_and_never_hurts_the_output(seed, conv, tolerance, budget):
    rng = np.random.default_rng(seed)
    if conv:
        net = _conv_net(rng)
        X = rng.normal(size=(40, 2, 8, 8))
    else:
        net = ro.Network([ro.Dense(rng.normal(size=(10, 6)) / 2, rng.normal(size=10)), ro.ReLU(),
                          ro.Dense(rng.normal(size=(8, 10)) / 3), ro.Tanh(), ro.Dense(rng.normal(size=(4, 8)))], input_shape=(6,))
        X = rng.normal(size=(150, 6))
    kwargs = {"comm_budget": 6.0} if budget else {"tolerance": tolerance}
    problem = ro.RestructureProblem(net, ro.Cluster(k=2), calibration=X, **kwargs)
    cascade = ro.solve(problem, backend="repurpose", options={"joint_iterations": 0})
    if not cascade.status.has_solution:
        return
    before = calibration_errors(net, cascade.network, X)
    caps = None if budget else problem.tolerances
    out = joint_refit(net, cascade.network, X, caps, max_iter=30)
    after = calibration_errors(net, out.network, X)
    limit = before if budget else np.asarray(problem.tolerances)
    assert np.all(after <= limit * (1 + 1e-9) + 1e-12)
    assert after[-1] <= before[-1] + 1e-12
    assert out.accepted == (after[-1] < before[-1])
    for original, refit in zip(cascade.network.linear_layers, out.network.linear_layers, strict=True):
        assert np.all(refit.W[original.W == 0] == 0)
    # Through the cascade: same placement and volume, every solution verifies.
    full = ro.solve(problem, backend="repurpose", options={"joint_iterations": 30}, verify=True)
    assert full.objective == cascade.objective


@pytest.mark.parametrize("seed", range(3))
def test_joint_ridge_pulls_the_refit_toward_the_original_weights(seed):
    rng = np.random.default_rng(seed)
    net = ro.Network([ro.Dense(rng.normal(size=(12, 6)) / 2, rng.normal(size=12)), ro.ReLU(),
                      ro.Dense(rng.normal(size=(8, 12)) / 3), ro.ReLU(), ro.Dense(rng.normal(size=(4, 8)))], input_shape=(6,))
    X = rng.normal(size=(150, 6))
    problem = ro.RestructureProblem(net, ro.Cluster(k=2), calibration=X, tolerance=0.2)
    loose, tied = (ro.solve(problem, backend="repurpose", options={"joint_ridge": r}, verify=True) for r in (0.0, 1.0))

    def distance(sol):  # over the kept weights: the pruned ones are zero whatever the prior
        return sum(float(np.sum((W - W0)[W != 0] ** 2)) for W, W0 in
                   ((a.W, b.W) for a, b in zip(sol.network.linear_layers, net.linear_layers, strict=True)))

    assert tied.objective == loose.objective  # the prior moves weights, never the support
    assert distance(tied) < distance(loose)
    assert calibration_errors(net, tied.network, X)[-1] > calibration_errors(net, loose.network, X)[-1]


def test_joint_ridge_auto_is_the_held_out_choice_then_the_ordinary_refit():
    rng = np.random.default_rng(3)
    net = ro.Network([ro.Dense(rng.normal(size=(12, 6)) / 2, rng.normal(size=12)), ro.ReLU(),
                      ro.Dense(rng.normal(size=(8, 12)) / 3), ro.ReLU(), ro.Dense(rng.normal(size=(4, 8)))], input_shape=(6,))
    X = rng.normal(size=(150, 6))
    problem = ro.RestructureProblem(net, ro.Cluster(k=2), calibration=X, tolerance=0.2)
    auto = ro.solve(problem, backend="repurpose", options={"joint_ridge": "auto"}, verify=True)
    stats = auto.stats["joint_refit"]
    held_out = stats["held_out_error_per_ridge"]
    assert sorted(float(r) for r in held_out) == sorted(RIDGE_CANDIDATES)
    assert stats["ridge"] == min(RIDGE_CANDIDATES, key=lambda r: (held_out[f"{r:g}"], r))
    # The same choice by hand: 30 of the 150 samples held out, one refit per candidate on the other 120.
    cascade = ro.solve(problem, backend="repurpose", options={"joint_iterations": 0})
    held = np.arange(4, 150, 5)
    fit = np.setdiff1d(np.arange(150), held)
    for ridge in RIDGE_CANDIDATES:
        with blas_threads(net):  # as the solve runs it: the same float32 sums
            refit = joint_refit(net, cascade.network, X[fit], problem.tolerances, ridge=ridge, max_iter=400)
        error = np.linalg.norm(refit.network.forward(X[held]) - net.forward(X[held])) / np.linalg.norm(net.forward(X[held]))
        assert error == pytest.approx(held_out[f"{ridge:g}"], rel=1e-12)
    # ... then the ordinary refit on all samples with the chosen prior.
    chosen = ro.solve(problem, backend="repurpose", options={"joint_ridge": stats["ridge"]})
    for a, b in zip(auto.network.linear_layers, chosen.network.linear_layers, strict=True):
        assert np.array_equal(a.W, b.W) and np.array_equal(a.b, b.b)


def test_choose_ridge_keeps_the_default_below_its_sample_minimum():
    rng = np.random.default_rng(0)
    net = ro.Network([ro.Dense(rng.normal(size=(6, 4))), ro.ReLU(), ro.Dense(rng.normal(size=(3, 6)))], input_shape=(4,))
    X = rng.normal(size=(MIN_SAMPLES_TO_CHOOSE - 1, 4))
    assert choose_ridge(net, net, X, [0.1, 0.1]) == (RIDGE_CANDIDATES[0], {})
