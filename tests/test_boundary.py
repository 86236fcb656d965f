"""Boundary samples (:mod:`repurpose_opt.boundary`) and the joint refit that fits them (option ``joint_boundary``).

Properties: without jitter every point is a crossing of the original's decision boundary (its top two
logits tie to within what the bisection's resolution allows); the points are reproducible from the seed;
the joint refit with extra inputs still keeps every tolerance on the calibration samples, the support and
the volume, and fits the extra inputs better than the refit without them.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import repurpose_opt as ro
from repurpose_opt.boundary import BISECTION_STEPS, boundary_samples
from repurpose_opt.problems.restructure import calibration_errors
from repurpose_opt.solvers.joint_refit import joint_refit


def _classifier(rng, n_in=5, hidden=12, classes=4):
    return ro.Network([ro.Dense(rng.normal(size=(hidden, n_in)), rng.normal(size=hidden)), ro.ReLU(),
                       ro.Dense(rng.normal(size=(classes, hidden)), rng.normal(size=classes))], input_shape=(n_in,))


@settings(max_examples=25)
@given(seed=st.integers(0, 10_000), scale=st.sampled_from([1e-3, 1.0, 1e3]), n=st.integers(1, 60))
def test_points_without_jitter_sit_on_the_decision_boundary(seed, scale, n):
    rng = np.random.default_rng(seed)
    net = _classifier(rng)
    X = scale * rng.normal(size=(30, 5))
    if len(np.unique(net.forward(X).argmax(1))) < 2:
        assert boundary_samples(net, X, n, jitter=0.0).shape == (0, 5)
        return
    points = boundary_samples(net, X, n, seed=seed, jitter=0.0)
    assert points.shape == (n, 5) and np.all(np.isfinite(points))
    # The crossing is bracketed to 2^-STEPS of its segment; a logit difference moves at most
    # sqrt(2)·Π||W_l||₂ per unit of input (ReLU is 1-Lipschitz), so the top two differ by at most that much.
    lipschitz = np.sqrt(2) * np.prod([np.linalg.norm(layer.W, 2) for layer in net.linear_layers])
    diameter = np.max(np.linalg.norm(X[:, None, :] - X[None, :, :], axis=-1))
    top = np.sort(net.forward(points), axis=1)
    assert np.all(top[:, -1] - top[:, -2] <= lipschitz * diameter * 2.0**-BISECTION_STEPS * (1 + 1e-9) + 1e-12 * scale)
    # ... and every point is on a segment between two samples: inside their bounding box.
    assert np.all(points >= X.min(axis=0) - 1e-12 * scale) and np.all(points <= X.max(axis=0) + 1e-12 * scale)


def test_points_are_reproducible_from_the_seed_and_straddle_the_boundary_with_jitter():
    rng = np.random.default_rng(0)
    net = _classifier(rng)
    X = rng.normal(size=(40, 5))
    a, b = boundary_samples(net, X, 200, seed=1), boundary_samples(net, X, 200, seed=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, boundary_samples(net, X, 200, seed=2))
    classes = net.forward(a).argmax(1)
    assert len(np.unique(classes)) >= 2  # the jitter puts points on both sides


def test_conv_networks_get_points_in_their_input_shape():
    rng = np.random.default_rng(0)
    net = ro.Network([ro.Conv2d(rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3), padding=1), ro.ReLU(), ro.Flatten(),
                      ro.Dense(rng.normal(size=(4, 3 * 4 * 4)))], input_shape=(2, 4, 4))
    X = rng.normal(size=(30, 2, 4, 4))
    points = boundary_samples(net, X, 10, jitter=0.0)
    assert points.shape == (10, 2, 4, 4)
    top = np.sort(net.forward(points), axis=1)
    assert np.all(top[:, -1] - top[:, -2] < 1e-4 * np.abs(top[:, -1]).max())


def _overfit_setting(seed=0):
    """A wide classifier calibrated on a few samples: the situation the boundary samples are for."""
    rng = np.random.default_rng(seed)
    net = ro.Network([ro.Dense(rng.normal(size=(16, 6)), rng.normal(size=16)), ro.ReLU(),
                      ro.Dense(rng.normal(size=(16, 16)) / 2, rng.normal(size=16)), ro.ReLU(),
                      ro.Dense(rng.normal(size=(4, 16)))], input_shape=(6,))
    return net, rng.normal(size=(60, 6))


def test_joint_refit_with_extra_inputs_keeps_the_caps_on_the_calibration_samples_and_fits_the_extra_ones():
    net, X = _overfit_setting()
    problem = ro.RestructureProblem(net, ro.Cluster(k=2), calibration=X, tolerance=0.3)
    cascade = ro.solve(problem, backend="repurpose", options={"joint_iterations": 0})
    extra = boundary_samples(net, X, 300, seed=0)
    plain = joint_refit(net, cascade.network, X, problem.tolerances, max_iter=200)
    fitted = joint_refit(net, cascade.network, X, problem.tolerances, max_iter=200, extra=extra)
    assert fitted.accepted
    before = calibration_errors(net, cascade.network, X)
    after = calibration_errors(net, fitted.network, X)
    assert np.all(after <= np.asarray(problem.tolerances) * (1 + 1e-9)) and after[-1] < before[-1]
    for original, refit in zip(cascade.network.linear_layers, fitted.network.linear_layers, strict=True):
        assert np.all(refit.W[original.W == 0] == 0)

    def extra_error(network):
        return np.linalg.norm(network.forward(extra) - net.forward(extra)) / np.linalg.norm(net.forward(extra))

    assert extra_error(fitted.network) < extra_error(plain.network)
    # No extra inputs is the ordinary refit, bit for bit.
    empty = joint_refit(net, cascade.network, X, problem.tolerances, max_iter=200, extra=extra[:0])
    for a, b in zip(empty.network.linear_layers, plain.network.linear_layers, strict=True):
        assert np.array_equal(a.W, b.W) and np.array_equal(a.b, b.b)


def test_repurpose_joint_boundary_option():
    net, X = _overfit_setting(1)
    problem = ro.RestructureProblem(net, ro.Cluster(k=2), calibration=X, tolerance=0.3)
    default = ro.solve(problem, backend="repurpose", seed=0, verify=True)
    boundary = ro.solve(problem, backend="repurpose", seed=0, options={"joint_boundary": 200}, verify=True)
    assert boundary.objective == default.objective  # the refit moves weights, never the support
    assert boundary.stats["joint_refit"]["boundary_samples"] == 200
    assert "boundary_samples" not in default.stats["joint_refit"]
    again = ro.solve(problem, backend="repurpose", seed=0, options={"joint_boundary": 200})
    for a, b in zip(boundary.network.linear_layers, again.network.linear_layers, strict=True):
        assert np.array_equal(a.W, b.W)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda net, X: boundary_samples(net, X, -1), "`n` must be a non-negative integer, got -1"),
        (lambda net, X: boundary_samples(net, X, 2.5), "`n` must be a non-negative integer, got 2.5"),
        (lambda net, X: boundary_samples(net, X, 5, jitter=-0.1), "`jitter` must be a finite number >= 0, got -0.1"),
        (lambda net, X: boundary_samples(net, X[:, :3], 5), "`X` must have shape (N, 5), got (30, 3)"),
        (lambda net, X: boundary_samples(ro.Network([ro.Dense(np.ones((1, 5)))], input_shape=(5,)), X, 5),
         "boundary samples need a classifier (at least 2 outputs); this network has 1 output"),
    ],
)
def test_bad_boundary_arguments(call, message):
    rng = np.random.default_rng(0)
    with pytest.raises(ro.InvalidParameterError) as info:
        call(_classifier(rng), rng.normal(size=(30, 5)))
    assert str(info.value) == message
