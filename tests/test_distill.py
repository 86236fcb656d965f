"""Synthetic inputs (:mod:`repurpose_opt.synthetic`), the distillation (:mod:`repurpose_opt.solvers.distill`) and
the ``repurpose`` options that use them (``distill_steps``, ``cascade_tolerance``).

Properties: the Gaussian draws have the samples' mean and covariance, local draws with no bandwidth are
samples; the distillation never opens a pruned weight, never breaks a cap on the calibration samples, is
reproducible from its seed, and when it accepts, the held-out synthetic error dropped; with few calibration
samples it generalises better than the joint refit alone; ``cascade_tolerance`` only moves where the cascade
places pairs, the problem's tolerances stay the contract.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import repurpose_opt as ro
from repurpose_opt.problems.restructure import calibration_errors
from repurpose_opt.solvers.distill import distill
from repurpose_opt.synthetic import InputModel, synthetic_inputs
from repurpose_opt.testing import random_conv_network, random_dense_network


def _pruned(network: ro.Network, rng: np.random.Generator, keep: float = 0.5) -> ro.Network:
    """``network`` with a random share of its weights set to zero (a restructured support)."""
    return network.with_weights([(layer.W * (rng.random(layer.W.shape) < keep), layer.b) for layer in network.linear_layers])


# ------------------------------------------------------------------------------------------ synthetic inputs
@settings(max_examples=20)
@given(seed=st.integers(0, 10_000), scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_gaussian_draws_have_the_samples_mean_and_covariance(seed, scale):
    rng = np.random.default_rng(seed)
    X = scale * (rng.normal(size=(200, 4)) @ rng.normal(size=(4, 4)) + rng.normal(size=4))
    Z = synthetic_inputs(X, 40_000, seed=seed, local_fraction=0.0)
    cov = np.cov(X.T)
    spread = np.sqrt(np.diag(cov))
    # 40,000 draws: the sample moments are within a few 1/sqrt(40000) = 0.005 of the truth, relative to the spread.
    assert np.all(np.abs(Z.mean(axis=0) - X.mean(axis=0)) <= 0.03 * spread)
    assert np.all(np.abs(np.cov(Z.T) - cov) <= 0.05 * np.outer(spread, spread))


@settings(max_examples=20)
@given(seed=st.integers(0, 10_000), n=st.integers(0, 50))
def test_local_draws_without_bandwidth_are_samples(seed, n):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(30, 3, 2, 2))  # any input shape
    Z = synthetic_inputs(X, n, seed=seed, local_fraction=1.0, bandwidth=0.0)
    assert Z.shape == (n, 3, 2, 2)
    flat = X.reshape(30, -1)
    assert all(np.any(np.all(flat == z, axis=1)) for z in Z.reshape(n, 12))


def test_draws_are_reproducible_and_split_as_asked():
    X = np.random.default_rng(0).normal(size=(50, 6))
    a, b = synthetic_inputs(X, 100, seed=3), synthetic_inputs(X, 100, seed=3)
    assert np.array_equal(a, b) and not np.array_equal(a, synthetic_inputs(X, 100, seed=4))
    model = InputModel(X)
    draw = model.draw(10, np.random.default_rng(0), local_fraction=0.3, bandwidth=0.0)
    flat = X.reshape(50, -1)
    is_sample = [bool(np.any(np.all(flat == z, axis=1))) for z in draw]
    assert is_sample == [False] * 7 + [True] * 3  # the Gaussian draws first, then the local ones


def test_samples_without_spread_give_their_mean():
    X = np.tile([1.0, -2.0, 3.0], (10, 1))
    np.testing.assert_array_equal(synthetic_inputs(X, 5), np.tile([1.0, -2.0, 3.0], (5, 1)))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda X: synthetic_inputs(X, -1), "`n` must be >= 0, got -1"),
        (lambda X: synthetic_inputs(X, 5, local_fraction=1.5), "`local_fraction` must be <= 1.0, got 1.5"),
        (lambda X: synthetic_inputs(X, 5, bandwidth=-1.0), "`bandwidth` must be >= 0.0, got -1.0"),
        (lambda X: synthetic_inputs(X[:1], 5), "`X` must hold at least 2 samples (N, ...), got shape (1, 3)"),
        (lambda X: synthetic_inputs(np.full((4, 3), np.nan), 5), "`X` must be finite, got 12 NaN or infinite entries"),
    ],
)
def test_bad_synthetic_arguments(call, message):
    with pytest.raises(ro.InvalidParameterError) as info:
        call(np.ones((10, 3)))
    assert str(info.value) == message


# --------------------------------------------------------------------------------------------- distillation
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), conv=st.booleans(), tolerance=st.sampled_from([0.05, 0.3, 1.0]))
def test_distillation_keeps_the_support_and_every_cap(seed, conv, tolerance):
    rng = np.random.default_rng(seed)
    if conv:
        net = random_conv_network(rng)
    else:
        net = random_dense_network(rng, [5, 12, 8, 3])
    X = rng.normal(size=(60,) + tuple(net.input_shape))
    pruned = _pruned(net, rng)
    before = calibration_errors(net, pruned, X)
    caps = np.maximum(before, tolerance)  # the start is always within its caps
    out = distill(net, pruned, X, caps, steps=60, batch=64, seed=seed)
    for layer, start in zip(out.network.linear_layers, pruned.linear_layers, strict=True):
        assert np.all(layer.W[start.W == 0] == 0)
    errors = calibration_errors(net, out.network, X)
    assert np.all(errors <= caps)
    if out.accepted:
        assert out.validation_after < out.validation_before
        np.testing.assert_allclose(errors, out.errors, rtol=1e-12)
    else:
        assert all(np.array_equal(a.W, b.W) for a, b in zip(out.network.linear_layers, pruned.linear_layers, strict=True))


def test_distillation_is_reproducible_and_records_its_curve():
    rng = np.random.default_rng(1)
    net = random_dense_network(rng, [6, 16, 4])
    X, pruned = rng.normal(size=(80, 6)), _pruned(net, rng)
    a, b = (distill(net, pruned, X, [1.0, 1.0], steps=200, batch=64, seed=5) for _ in range(2))
    assert a.accepted and all(np.array_equal(p.W, q.W) for p, q in zip(a.network.linear_layers, b.network.linear_layers, strict=True))
    assert [step for step, _ in a.curve] == list(range(20, 201, 20))
    assert a.curve[-1][1] < a.curve[0][1] < a.validation_before


def test_distillation_stops_at_its_deadline_and_does_nothing_without_steps():
    rng = np.random.default_rng(2)
    net = random_dense_network(rng, [6, 16, 4])
    X, pruned = rng.normal(size=(80, 6)), _pruned(net, rng)
    late = distill(net, pruned, X, [1.0, 1.0], steps=10_000, deadline=time.perf_counter() - 1.0)
    idle = distill(net, pruned, X, [1.0, 1.0], steps=0)
    for out, reason in ((late, "time limit"), (idle, "nothing to distil")):
        assert (out.accepted, out.steps, out.reason) == (False, 0, reason)
        assert all(np.array_equal(p.W, q.W) for p, q in zip(out.network.linear_layers, pruned.linear_layers, strict=True))


def test_distillation_generalises_beyond_a_few_calibration_samples():
    """A teacher known everywhere, 40 calibration samples: the refit matches them and little else; the
    distillation, on draws shaped like them, is closer to the teacher on fresh inputs of the same law."""
    rng = np.random.default_rng(0)
    net = random_dense_network(rng, [8, 32, 32, 4])
    mix = rng.normal(size=(8, 8))
    calibration, fresh = rng.normal(size=(40, 8)) @ mix, rng.normal(size=(2000, 8)) @ mix
    problem = ro.RestructureProblem(net, ro.Cluster(k=2), calibration=calibration, tolerance=[1.0, 1.0, 0.2])
    options = {"cascade_tolerance": [1.0, 0.2, 0.2]}
    refit = ro.solve(problem, backend="repurpose", seed=0, options=options, verify=True)
    distilled = ro.solve(problem, backend="repurpose", seed=0, options=options | {"distill_steps": 1500, "distill_batch": 256},
                         verify=True)
    assert distilled.objective == refit.objective and distilled.stats["distillation"]["accepted"]

    def fresh_error(sol):
        return np.linalg.norm(sol.network.forward(fresh) - net.forward(fresh)) / np.linalg.norm(net.forward(fresh))

    assert fresh_error(distilled) < 0.8 * fresh_error(refit)


# ------------------------------------------------------------------------------------- the repurpose options
def test_cascade_tolerance_moves_the_pairs_not_the_contract():
    rng = np.random.default_rng(3)
    net = random_dense_network(rng, [6, 24, 24, 4])
    X = rng.normal(size=(150, 6))
    cluster = ro.Cluster(k=3)
    tight = ro.RestructureProblem(net, cluster, calibration=X, tolerance=[1.0, 0.2, 0.2])
    loose = ro.RestructureProblem(net, cluster, calibration=X, tolerance=[1.0, 1.0, 0.2])
    plain = ro.solve(tight, backend="repurpose", seed=0, verify=True)
    guided = ro.solve(loose, backend="repurpose", seed=0, options={"cascade_tolerance": [1.0, 0.2, 0.2]}, verify=True)
    unguided = ro.solve(loose, backend="repurpose", seed=0, verify=True)
    # The same cascade (the same placements and pairs), then refits held to different contracts.
    assert guided.objective == plain.objective
    assert all(np.array_equal(a, b) for a, b in zip(guided.assignment, plain.assignment, strict=True))
    assert guided.objective != unguided.objective  # the loose contract alone places the pairs elsewhere
    # Its own tolerances as the cascade's change nothing.
    same = ro.solve(tight, backend="repurpose", seed=0, options={"cascade_tolerance": [1.0, 0.2, 0.2]})
    assert all(np.array_equal(a.W, b.W) for a, b in zip(same.network.linear_layers, plain.network.linear_layers, strict=True))


def test_repurpose_distillation_keeps_the_volume_and_a_time_limit():
    rng = np.random.default_rng(4)
    net = random_dense_network(rng, [6, 24, 24, 4])
    problem = ro.RestructureProblem(net, ro.Cluster(k=2), calibration=rng.normal(size=(100, 6)), tolerance=0.2)
    plain = ro.solve(problem, backend="repurpose", seed=0)
    started = time.perf_counter()
    limited = ro.solve(problem, backend="repurpose", seed=0, time_limit=2.0, options={"distill_steps": 10**7}, verify=True)
    assert time.perf_counter() - started < 4.0
    assert limited.objective == plain.objective
    assert limited.stats["distillation"]["stopped"].startswith("time limit")


def test_progress_bar_on_request_only(capsys):
    rng = np.random.default_rng(5)
    net = random_dense_network(rng, [6, 16, 4])
    X, pruned = rng.normal(size=(80, 6)), _pruned(net, rng)
    distill(net, pruned, X, [1.0, 1.0], steps=50, batch=32)
    assert capsys.readouterr().err == ""
    distill(net, pruned, X, [1.0, 1.0], steps=50, batch=32, progress=True)
    assert "distillation 50/50 (100%)" in capsys.readouterr().err


def test_budget_mode_distillation_makes_no_layer_worse():
    """Without tolerances the caps are the errors the cascade reached (as in the joint refit)."""
    rng = np.random.default_rng(6)
    net = random_dense_network(rng, [6, 24, 24, 4])
    X = rng.normal(size=(100, 6))
    problem = ro.RestructureProblem(net, ro.Cluster(k=2), calibration=X, comm_budget=12.0)
    cascade = ro.solve(problem, backend="repurpose", seed=0, options={"joint_iterations": 0})
    distilled = ro.solve(problem, backend="repurpose", seed=0, verify=True,
                         options={"joint_iterations": 0, "distill_steps": 300, "distill_batch": 128})
    assert distilled.objective <= 12.0 and distilled.objective == cascade.objective
    before = calibration_errors(net, cascade.network, X)
    assert np.all(calibration_errors(net, distilled.network, X) <= before)
    assert distilled.stats["distillation"]["steps"] == 300
