"""The shared-Gram least-squares machinery agrees with plain numpy least squares."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import repurpose_opt as ro
from repurpose_opt.lsq import WorkerFit, layer_data
from repurpose_opt.pruning import minimum_error


def _dense_case(seed: int, n_in: int = 9, n_out: int = 7, n: int = 60):
    rng = np.random.default_rng(seed)
    net = ro.Network([ro.Dense(rng.normal(size=(n_out, n_in)), rng.normal(size=n_out))], input_shape=(n_in,))
    X = rng.normal(size=(n, n_in))
    Y = net.forward(X) + 0.3 * rng.normal(size=(n, n_out))
    return net, X, Y


def _ridge_solution(X_cols, Y_rows, prior, rho):
    """Reference: min ||Y − [X 1] w||² + ρ||w − w₀||² solved densely."""
    phi = np.hstack([X_cols, np.ones((X_cols.shape[0], 1))])
    A = phi.T @ phi + rho * np.eye(phi.shape[1])
    W = np.linalg.solve(A, phi.T @ Y_rows + rho * prior.T).T
    err = ((Y_rows - phi @ W.T) ** 2).sum() + rho * ((W - prior) ** 2).sum()
    return W, err


@given(seed=st.integers(0, 10_000), ridge=st.sampled_from([0.0, 1e-3, 1e-1]))
def test_fit_gains_add_and_removal_match_dense_least_squares(seed, ridge):
    net, X, Y = _dense_case(seed)
    data = layer_data(net, 1, net.to_units(X), Y, ridge=ridge)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(7, size=3, replace=False))
    support = [1, 4]
    others = [0, 2, 6]
    fit = WorkerFit(data, rows, np.array(support))
    rho = max(ridge, 1e-12) * float(np.mean(np.diag(data.G_exact)))
    layer = net.linear_layers[0]

    def reference(groups):
        cols = list(groups)
        prior = np.hstack([layer.W[rows][:, cols], layer.b[rows, None]])
        W, err = _ridge_solution(X[:, cols], Y[:, rows], prior, rho)
        # the prior term of the features outside the support is a constant of the regularised error
        outside = [j for j in range(9) if j not in cols]
        return W, err + rho * (layer.W[rows][:, outside] ** 2).sum()

    _, base = reference(support)
    assert fit.error == pytest.approx(base, rel=1e-7, abs=1e-9)
    gains = fit.gains(np.array(others))
    expected = [base - reference(support + [j])[1] for j in others]
    np.testing.assert_allclose(gains, expected, rtol=1e-6, atol=1e-8)
    fit.add_many([others[0], others[2]])
    W, err = reference(support + [others[0], others[2]])
    assert fit.error == pytest.approx(err, rel=1e-7, abs=1e-9)
    coef = fit.coefficients()
    cols = support + [others[0], others[2]]
    np.testing.assert_allclose(coef[:, cols], W[:, :-1], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(coef[:, -1], W[:, -1], rtol=1e-6, atol=1e-8)
    losses = fit.removal_losses([support[0], others[2]])
    expected = [reference([c for c in cols if c != drop])[1] - err for drop in (support[0], others[2])]
    np.testing.assert_allclose(losses, expected, rtol=1e-5, atol=1e-7)


def test_conv_groups_are_input_channels():
    rng = np.random.default_rng(3)
    net = ro.Network([ro.Conv2d(rng.normal(size=(5, 3, 3, 3)), padding=1, stride=2)], input_shape=(3, 7, 7))
    X = rng.normal(size=(12, 3, 7, 7))
    Z = net.trace(X).pre_activations[0] + 0.1 * rng.normal(size=(12, 5, 4, 4))
    data = layer_data(net, 1, net.to_units(X), Z, ridge=0.0)
    assert data.group_size == 9 and data.n_groups == 3
    fit = WorkerFit(data, np.array([0, 2]), np.array([1]))
    gains = fit.gains(np.array([0, 2]))
    for j, gain in zip([0, 2], gains, strict=False):
        other = WorkerFit(data, np.array([0, 2]), np.array([1, j]))
        assert gain == pytest.approx(fit.error - other.error, rel=1e-6)


def test_full_support_reproduces_exact_layer():
    """A layer whose inputs are all available is reproduced exactly (the prior equals the solution)."""
    net, X, _ = _dense_case(5)
    Y = net.forward(X)
    data = layer_data(net, 1, net.to_units(X), Y)
    assert minimum_error(data) == pytest.approx(0.0, abs=1e-9 * data.data_energy.sum())


@settings(max_examples=20)
@given(seed=st.integers(0, 10_000), conv=st.booleans())
def test_inverse_fit_joint_losses_and_downdates_match_fresh_fits(seed, conv):
    """Backward elimination's downdates: the joint loss of dropping a set of groups, and the fit after
    dropping them, equal a fit refactorised from scratch on the smaller support."""
    from repurpose_opt.lsq import InverseFit

    rng = np.random.default_rng(seed)
    if conv:
        net = ro.Network([ro.Conv2d(rng.normal(size=(4, 5, 3, 3)), padding=1)], input_shape=(5, 5, 5))
        X = rng.normal(size=(10, 5, 5, 5))
        Z = net.trace(X).pre_activations[0] + 0.1 * rng.normal(size=(10, 4, 5, 5))
        data, n_groups = layer_data(net, 1, net.to_units(X), Z, ridge=1e-3), 5
    else:
        net, X, Y = _dense_case(seed)
        data, n_groups = layer_data(net, 1, net.to_units(X), Y, ridge=1e-3), 9
    rows = np.array([0, 2, 3])
    groups = list(rng.permutation(n_groups)[: n_groups - 1])
    fit = WorkerFit(data, rows, np.array(groups))
    state = InverseFit(fit)
    singles = state.losses(groups)
    for j, loss in zip(groups, singles, strict=True):
        smaller = WorkerFit(data, rows, np.array([g for g in groups if g != j]))
        assert loss == pytest.approx(smaller.error - fit.error, rel=1e-6, abs=1e-9)
    drop = groups[:2]
    smaller = WorkerFit(data, rows, np.array(groups[2:]))
    assert state.joint_loss(drop) == pytest.approx(smaller.error - fit.error, rel=1e-6, abs=1e-9)
    state.drop(drop)
    assert state.groups == groups[2:]
    # After the downdate the next losses are those of the smaller fit.
    np.testing.assert_allclose(state.losses(groups[2:3]), smaller.removal_losses(groups[2:3]), rtol=1e-6, atol=1e-9)
