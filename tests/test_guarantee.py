"""The output-error guarantee (SPEC §6): hand examples, true upper bounds, and properties on random networks.

Properties checked on random dense and conv networks (every activation, max/avg pooling with and without
overlapping windows, strided and padded convolutions), random restructurings (sparsification, noise, bias
changes) and inputs of every scale plus adversarial ones:

* ``||f̂(x) − f(x)|| ≤ A·||x|| + B`` always (only float rounding allowed);
* every sample ``certify`` accepts keeps its prediction;
* every operator-norm bound the guarantee uses is ≥ the exact norm.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import repurpose_opt as ro
from repurpose_opt import guarantee as G
from repurpose_opt.guarantee import Guarantee, certify, compute_guarantee, tightness
from repurpose_opt.problems.restructure import calibration_errors

ACTIVATIONS = (ro.ReLU, ro.Tanh, ro.Sigmoid, ro.Identity, None)
SCALES = (1e-3, 1e-1, 1.0, 1e1, 1e3)


# ============================================================================================== helpers
def _errors_and_bounds(original, restructured, guarantee, X):
    X = np.asarray(X, dtype=np.float64)
    f, f_hat = original.forward(X), restructured.forward(X)
    error = np.linalg.norm(f_hat - f, axis=1)
    bound = guarantee.bound(np.linalg.norm(X.reshape(len(X), -1), axis=1))
    # Only float rounding of the two forward passes is allowed beyond the bound.
    slack = 1e-9 * bound + 1e-12 * (np.linalg.norm(f, axis=1) + np.linalg.norm(f_hat, axis=1))
    return error, bound, slack


def _assert_bound_holds(original, restructured, guarantee, X):
    error, bound, slack = _errors_and_bounds(original, restructured, guarantee, X)
    worst = int(np.argmax(error - bound - slack))
    assert np.all(error <= bound + slack), (
        f"bound violated: error {error[worst]!r} > bound {bound[worst]!r} (A={guarantee.A}, B={guarantee.B})"
    )


def _random_search(original, restructured, guarantee, rng, scale, rounds=25, population=24):
    """Gradient-free search for inputs that maximise error / bound, started at ``scale``."""
    shape = original.input_shape
    best = rng.normal(size=(population,) + shape) * scale / np.sqrt(np.prod(shape))
    error, bound, _ = _errors_and_bounds(original, restructured, guarantee, best)
    score = error / np.maximum(bound, 1e-300)
    for _ in range(rounds):
        step = np.linalg.norm(best.reshape(population, -1), axis=1).reshape((-1,) + (1,) * len(shape)) * 0.3
        trial = best + rng.normal(size=best.shape) * step / np.sqrt(np.prod(shape))
        error, bound, _ = _errors_and_bounds(original, restructured, guarantee, trial)
        trial_score = error / np.maximum(bound, 1e-300)
        better = trial_score > score
        best[better], score[better] = trial[better], trial_score[better]
    return best


def _probe_inputs(original, restructured, rng):
    """Random inputs of every scale plus the top right singular vectors of the first layers (scaled)."""
    shape = original.input_shape
    n_in = int(np.prod(shape))
    probes = [scale * rng.normal(size=(16, n_in)) for scale in SCALES]
    probes.append(np.zeros((1, n_in)))
    first, first_hat = original.linear_layers[0], restructured.linear_layers[0]
    for layer_W in (first.W, first_hat.W - first.W):
        if isinstance(first, ro.Dense):
            _, _, Vt = np.linalg.svd(layer_W.reshape(layer_W.shape[0], -1))
            direction = Vt[0]
        else:
            in_shape, _, _ = original.shapes(1)
            M = G._conv_matrix(np.asarray(layer_W), first.stride, first.padding, in_shape)
            direction = np.linalg.svd(M)[2][0]
        probes.append(np.outer(np.array([1e-3, 1.0, 1e3, -1.0]), direction))
    return np.concatenate(probes).reshape((-1,) + shape)


def _perturb(net, rng, sparsity, noise, bias_noise, only_layer=None):
    """A restructuring stand-in: zero a random fraction of the weights, add relative noise, move biases."""
    weights = []
    for l, layer in enumerate(net.linear_layers):
        W, b = np.array(layer.W), np.array(layer.b)
        if only_layer is None or only_layer == l:
            W[rng.random(W.shape) < sparsity] = 0.0
            W = W + noise * np.std(W) * rng.normal(size=W.shape) * (rng.random(W.shape) < 0.5)
            b = b + bias_noise * rng.normal(size=b.shape)
        weights.append((W, b))
    return net.with_weights(weights)


@st.composite
def dense_networks(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    depth = draw(st.integers(1, 4))
    widths = [draw(st.integers(1, 9)) for _ in range(depth + 1)]
    layers = []
    for l in range(depth):
        W = rng.normal(size=(widths[l + 1], widths[l])) * draw(st.sampled_from([0.3, 1.0, 2.0]))
        layers.append(ro.Dense(W, rng.normal(size=widths[l + 1]) * draw(st.sampled_from([0.0, 0.5, 2.0]))))
        if l < depth - 1:
            activation = draw(st.sampled_from(ACTIVATIONS))
            if activation is not None:
                layers.append(activation())
    return ro.Network(layers, input_shape=(widths[0],)), rng


@st.composite
def conv_networks(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    c, h = draw(st.integers(1, 3)), draw(st.integers(4, 8))
    shape = (c, h, h)
    layers = []
    for _ in range(draw(st.integers(1, 2))):
        k, stride, pad = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(0, 1))
        c_out = draw(st.integers(1, 4))
        conv = ro.Conv2d(rng.normal(size=(c_out, shape[0], k, k)) * 0.5, rng.normal(size=c_out) * 0.3,
                         stride=stride, padding=pad)
        hh, ww = conv.output_hw(shape[1], shape[2])
        if hh < 1 or ww < 1:
            break
        layers.append(conv)
        shape = (c_out, hh, ww)
        activations = draw(st.lists(st.sampled_from(ACTIVATIONS[:-1]), max_size=2))  # 0, 1 or 2 stacked
        pool_kind = draw(st.sampled_from([None, ro.MaxPool2d, ro.AvgPool2d]))
        pool_first = draw(st.booleans())
        ops = [activation() for activation in activations]
        if pool_kind is not None:
            kp, sp = draw(st.integers(2, 3)), draw(st.integers(1, 3))  # sp < kp: overlapping windows
            pool = pool_kind(kernel_size=kp, stride=sp)
            ph, pw = pool.output_hw(shape[1], shape[2])
            if ph >= 1 and pw >= 1:
                ops.insert(0 if pool_first else len(ops), pool)
                shape = (shape[0], ph, pw)
        layers.extend(ops)
    if not layers:
        layers.append(ro.Conv2d(rng.normal(size=(2, c, 1, 1))))
        shape = (2, h, h)
    n_out = draw(st.integers(1, 4))
    if draw(st.booleans()):  # a Dense head on the flattened features
        layers.append(ro.Flatten())
        layers.append(ro.Dense(rng.normal(size=(n_out, int(np.prod(shape)))) * 0.3, rng.normal(size=n_out)))
    else:  # or the logits are a convolution's output
        layers.append(ro.Conv2d(rng.normal(size=(n_out, shape[0], 1, 1)), rng.normal(size=n_out)))
    return ro.Network(layers, input_shape=(c, h, h)), rng


perturbations = st.tuples(
    st.sampled_from([0.0, 0.1, 0.5, 0.9]),  # sparsity (restructuring zeroes weights)
    st.sampled_from([0.0, 1e-6, 1e-2, 0.3]),  # relative noise (refit)
    st.sampled_from([0.0, 1e-3, 0.5]),  # bias change
    st.booleans(),  # all layers, or one
)


def _restructure(net, rng, perturbation):
    sparsity, noise, bias_noise, one = perturbation
    only = int(rng.integers(net.n_layers)) if one else None
    return _perturb(net, rng, sparsity, noise, bias_noise, only)


# ========================================================================================= hand examples
def test_single_dense_layer_constants_are_exact():
    rng = np.random.default_rng(1)
    W, b = rng.normal(size=(5, 7)), rng.normal(size=5)
    W_hat, b_hat = W.copy(), b + rng.normal(size=5) * 0.1
    W_hat[np.abs(W_hat) < 0.5] = 0.0
    net = ro.Network([ro.Dense(W, b)], input_shape=(7,))
    moved = net.with_weights([(W_hat, b_hat)])
    g = compute_guarantee(net, moved)
    assert g.A == pytest.approx(np.linalg.norm(W_hat - W, 2), rel=1e-9)
    assert g.B == pytest.approx(np.linalg.norm(b_hat - b), rel=1e-9)
    assert g.A >= np.linalg.norm(W_hat - W, 2) and g.B >= np.linalg.norm(b_hat - b)
    # The bound is attained along the top singular direction (up to the bias term's alignment).
    x = np.linalg.svd(W_hat - W)[2][0][None, :] * 1e6
    assert tightness(net, moved, g, x) > 0.999


@pytest.mark.parametrize("effort", ["recursion", "standard", "tight"])
def test_identical_networks_have_zero_constants_and_certify_every_untied_sample(effort):
    rng = np.random.default_rng(2)
    net = ro.Network([ro.Dense(rng.normal(size=(6, 4)), rng.normal(size=6)), ro.Sigmoid(),
                      ro.Dense(rng.normal(size=(3, 6)), rng.normal(size=3))], input_shape=(4,))
    same = net.with_weights([(layer.W, layer.b) for layer in net.linear_layers])
    g = compute_guarantee(net, same, calibration=rng.normal(size=(20, 4)), effort=effort)
    assert g.A == 0.0 and g.B == 0.0
    assert g.calibration_errors == (0.0, 0.0)
    X = rng.normal(size=(50, 4)) * 10
    assert certify((same, g), X).all()
    assert tightness(net, same, g, X) == 0.0


def test_linear_network_bound_is_nearly_attained():
    """Identity activations: the lifted chain merges everything, so the bound is ||Ŵ2Ŵ1 − W2W1||."""
    rng = np.random.default_rng(3)
    net = ro.Network([ro.Dense(rng.normal(size=(6, 5))), ro.Dense(rng.normal(size=(4, 6)))], input_shape=(5,))
    moved = _perturb(net, rng, 0.3, 0.1, 0.0)
    g = compute_guarantee(net, moved)
    (W1, W2), (V1, V2) = ([layer.W for layer in n.linear_layers] for n in (net, moved))
    exact = np.linalg.norm(V2 @ V1 - W2 @ W1, 2)
    assert g.A == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("activation", [ro.ReLU, ro.Tanh, ro.Sigmoid])
def test_positive_networks_nearly_attain_the_bound(activation):
    """Entrywise positive weights: along the (positive) Perron direction every ReLU is active, so the
    network is linear there and the bound (whose merged term is exactly that linear map) is nearly met.
    For tanh/sigmoid at tiny inputs the slopes are their maxima (1 and 1/4). Any unsound shrinking of
    the secant factors fails here."""
    rng = np.random.default_rng(11)
    W1, W2, W3 = (rng.random(size=shape) + 0.5 for shape in [(6, 5), (5, 6), (4, 5)])
    net = ro.Network([ro.Dense(W1), activation(), ro.Dense(W2), activation(), ro.Dense(W3)], input_shape=(5,))
    moved = net.with_weights([(1.1 * W1, np.zeros(6)), (1.05 * W2, np.zeros(5)), (1.02 * W3, np.zeros(4))])
    g = compute_guarantee(net, moved)
    direction = np.abs(np.linalg.svd(W3 @ W2 @ W1)[2][0])
    scales = [1e-6] if activation is not ro.ReLU else [1e-6, 1.0, 1e6]
    X = np.outer(scales, direction)
    if activation is ro.Sigmoid:  # σ(0) ≠ 0 shifts the operating point: compare slopes at x ≈ 0 only
        X = np.vstack([X, np.zeros(5)])
    ratio = tightness(net, moved, g, X)
    assert ratio <= 1 + 1e-9
    assert ratio > (0.4 if activation is ro.Sigmoid else 0.95)


def test_sigmoid_offset_enters_the_constant_term():
    """σ(0) = 1/2 ≠ 0: with zero biases the two networks still differ at x = 0 through layer 2."""
    rng = np.random.default_rng(4)
    net = ro.Network([ro.Dense(rng.normal(size=(5, 3))), ro.Sigmoid(), ro.Dense(rng.normal(size=(2, 5)))],
                     input_shape=(3,))
    moved = _perturb(net, rng, 0.5, 0.0, 0.0, only_layer=1)
    g = compute_guarantee(net, moved)
    gap_at_zero = np.linalg.norm(moved.forward(np.zeros((1, 3))) - net.forward(np.zeros((1, 3))))
    assert gap_at_zero > 0 and g.B >= gap_at_zero
    rec_B = sum(t["recursion_B_term"] for t in g.layer_terms)
    assert rec_B >= gap_at_zero


def test_calibration_errors_and_tolerances_are_recorded():
    rng = np.random.default_rng(5)
    net = ro.Network([ro.Dense(rng.normal(size=(8, 4))), ro.ReLU(), ro.Dense(rng.normal(size=(3, 8)))],
                     input_shape=(4,))
    moved = _perturb(net, rng, 0.3, 0.05, 0.01)
    X = rng.normal(size=(40, 4))
    g = compute_guarantee(net, moved, calibration=X, tolerances=[0.5, 0.5])
    np.testing.assert_allclose(g.calibration_errors, calibration_errors(net, moved, X), rtol=1e-12)
    assert g.tolerances == (0.5, 0.5)
    assert len(g.layer_terms) == 2 and len(g.norm_method) == 2
    assert g.A <= sum(t["A_term"] for t in g.layer_terms) * (1 + 1e-9)
    assert g.A <= sum(t["recursion_A_term"] for t in g.layer_terms) * (1 + 1e-9)
    scalar = compute_guarantee(net, moved, tolerances=0.1)
    assert scalar.tolerances == (0.1, 0.1) and scalar.calibration_errors == ()


# ======================================================================================== norm bounds
def test_spectral_norm_is_an_upper_bound_and_tight():
    rng = np.random.default_rng(6)
    for shape in [(1, 1), (3, 1), (1, 5), (40, 7), (7, 40), (60, 60)]:
        for scale in (1e-150, 1e-8, 1.0, 1e8):
            M = rng.normal(size=shape) * scale
            exact = np.linalg.norm(M, 2)
            bound = G._spectral_norm(M)
            assert exact <= bound <= exact * (1 + 1e-9)
    assert G._spectral_norm(np.zeros((3, 4))) == 0.0
    # Ill-conditioned: a huge and a tiny singular value.
    U, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    M = U @ np.diag(np.r_[1e8, np.ones(29) * 1e-8]) @ U.T
    assert G._spectral_norm(M) >= np.linalg.norm(M, 2)


@settings(max_examples=30)
@given(c_in=st.integers(1, 3), c_out=st.integers(1, 3), k=st.integers(1, 4), stride=st.integers(1, 3),
       pad=st.integers(0, 2), size=st.integers(4, 9), seed=st.integers(0, 1000))
def test_conv_matrix_matches_the_layer_and_analytic_bound_dominates(c_in, c_out, k, stride, pad, size, seed):
    rng = np.random.default_rng(seed)
    conv = ro.Conv2d(rng.normal(size=(c_out, c_in, k, k)), np.zeros(c_out), stride=stride, padding=pad)
    if min(conv.output_hw(size, size)) < 1:
        return
    in_shape = (c_in, size, size)
    M = G._conv_matrix(np.asarray(conv.W), conv.stride, conv.padding, in_shape)
    x = rng.normal(size=(3,) + in_shape)
    np.testing.assert_allclose(x.reshape(3, -1) @ M.T, conv.apply(x).reshape(3, -1), rtol=1e-12, atol=1e-12)
    exact = np.linalg.norm(M, 2)
    bound = G._conv_norm_bound(np.asarray(conv.W), conv.stride, conv.padding, in_shape)
    assert bound >= exact
    # The documented coverage count never exceeds ⌈k/s⌉² (and k² for stride 1).
    cover = G._window_cover(size, k, stride, pad) ** 2
    assert cover <= int(np.ceil(k / stride)) ** 2
    op = G._linear_op(conv, np.asarray(conv.W), in_shape, (c_out,) + conv.output_hw(size, size), 0.0, 0)
    assert op.matrix is None and op.norm == bound


@settings(max_examples=30)
@given(kind=st.sampled_from(["max", "avg"]), k=st.integers(1, 4), stride=st.integers(1, 4),
       size=st.integers(4, 9), seed=st.integers(0, 1000))
def test_pooling_lipschitz_constants_are_valid(kind, k, stride, size, seed):
    rng = np.random.default_rng(seed)
    pool = (ro.MaxPool2d if kind == "max" else ro.AvgPool2d)(kernel_size=k, stride=stride)
    if min(pool.output_hw(size, size)) < 1:
        return
    net = ro.Network([ro.Conv2d(np.ones((2, 2, 1, 1))), pool, ro.Flatten(), ro.Dense(np.ones((1, 2 * np.prod(pool.output_hw(size, size)))))],
                     input_shape=(2, size, size))
    items, lipschitz, _ = G._post_items(net, 1)
    u = rng.normal(size=(200, 2, size, size))
    v = u + rng.normal(size=u.shape) * rng.choice([1e-3, 1.0], size=(200, 1, 1, 1))
    # Adversarial-ish: v equals u except for one position per sample (the worst case for overlaps).
    v[:100] = u[:100]
    v[:100, 0, size // 2, size // 2] += 5.0
    change = np.linalg.norm((pool.apply(u) - pool.apply(v)).reshape(200, -1), axis=1)
    assert np.all(change <= lipschitz * np.linalg.norm((u - v).reshape(200, -1), axis=1) * (1 + 1e-12))
    if kind == "avg":  # the average pool's norm is computed exactly
        matrix = items[0].matrix
        assert lipschitz == pytest.approx(np.linalg.norm(matrix, 2), rel=1e-9)
        assert lipschitz >= np.linalg.norm(matrix, 2)
    if stride >= k:
        assert lipschitz == pytest.approx(1.0 if kind == "max" else 1.0 / k, rel=1e-9)


# ============================================================================ properties on random nets
@settings(max_examples=100)
@given(case=dense_networks(), perturbation=perturbations, effort=st.sampled_from(["standard", "recursion"]))
def test_bound_holds_on_random_dense_networks(case, perturbation, effort):
    net, rng = case
    moved = _restructure(net, rng, perturbation)
    g = compute_guarantee(net, moved, effort=effort)
    assert np.isfinite(g.A) and np.isfinite(g.B) and g.A >= 0 and g.B >= 0
    X = _probe_inputs(net, moved, rng)
    _assert_bound_holds(net, moved, g, X)
    for scale in (1e-2, 1.0, 1e2):
        _assert_bound_holds(net, moved, g, _random_search(net, moved, g, rng, scale))
    # Never looser than the SPEC §6 recursion: A always; B too when errors propagate through Ŵ (the
    # recursion's own form; the other expansion is chosen for a smaller A and may trade some B for it).
    rec_A = sum(t["recursion_A_term"] for t in g.layer_terms)
    rec_B = sum(t["recursion_B_term"] for t in g.layer_terms)
    assert g.A <= rec_A * (1 + 1e-9)
    if g.decomposition == "restructured-outer":
        assert g.B <= rec_B * (1 + 1e-9)


@settings(max_examples=12)
@given(case=dense_networks(), perturbation=perturbations)
def test_tight_effort_is_valid_and_never_looser(case, perturbation):
    net, rng = case
    moved = _restructure(net, rng, perturbation)
    standard = compute_guarantee(net, moved)
    tight = compute_guarantee(net, moved, effort="tight", iterations=15)
    assert tight.A <= standard.A * (1 + 1e-12) and tight.B <= standard.B * (1 + 1e-12)
    _assert_bound_holds(net, moved, tight, _probe_inputs(net, moved, rng))
    _assert_bound_holds(net, moved, tight, _random_search(net, moved, tight, rng, 1.0))


@settings(max_examples=50)
@given(case=conv_networks(), perturbation=perturbations, explicit=st.booleans())
def test_bound_holds_on_random_conv_networks(case, perturbation, explicit):
    net, rng = case
    moved = _restructure(net, rng, perturbation)
    g = compute_guarantee(net, moved, explicit_limit=G._EXPLICIT_ENTRIES if explicit else 0)
    X = _probe_inputs(net, moved, rng)
    _assert_bound_holds(net, moved, g, X)
    for scale in (1e-2, 1e2):
        _assert_bound_holds(net, moved, g, _random_search(net, moved, g, rng, scale, rounds=15))
    methods = set(g.norm_method)
    assert methods <= {"conv-explicit-eig", "conv-im2col-bound", "dense-eig"}
    if not explicit:
        assert "conv-explicit-eig" not in methods


@st.composite
def restructurable_networks(draw):
    """Dense or conv networks whose every layer has at least 3 units, so K = 2 or 3 workers all get some."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    act = lambda: draw(st.sampled_from([ro.ReLU, ro.Tanh, ro.Sigmoid]))()  # noqa: E731
    if draw(st.booleans()):
        widths = [draw(st.integers(3, 8)) for _ in range(draw(st.integers(3, 4)))]
        layers = []
        for l in range(len(widths) - 1):
            layers.append(ro.Dense(rng.normal(size=(widths[l + 1], widths[l])) / np.sqrt(widths[l]), rng.normal(size=widths[l + 1]) * 0.3))
            if l < len(widths) - 2:
                layers.append(act())
        return ro.Network(layers, input_shape=(widths[0],)), rng
    c_in, c_mid = draw(st.integers(1, 3)), draw(st.integers(3, 5))
    layers = [ro.Conv2d(rng.normal(size=(c_mid, c_in, 3, 3)) / 3, rng.normal(size=c_mid) * 0.3, padding=1), act()]
    if draw(st.booleans()):
        layers.append(draw(st.sampled_from([ro.MaxPool2d, ro.AvgPool2d]))(kernel_size=2))
        side = 3
    else:
        side = 6
    layers += [ro.Flatten(), ro.Dense(rng.normal(size=(3, c_mid * side * side)) / side, rng.normal(size=3))]
    return ro.Network(layers, input_shape=(c_in, 6, 6)), rng


@settings(max_examples=15)
@given(case=restructurable_networks(), tolerance=st.sampled_from([0.02, 0.1, 0.3]), k=st.sampled_from([2, 3]),
       scale=st.sampled_from([0.1, 1.0, 10.0]))
def test_bound_holds_on_real_restructurings(case, tolerance, k, scale):
    """The solutions of the ``repurpose`` backend (placement, ℓ0 adjustment, cascade refit and the joint
    refit) on random networks: the bound holds on inputs of every scale and certified samples keep their
    prediction."""
    net, rng = case
    X_cal = rng.normal(size=(60,) + net.input_shape) * scale
    problem = ro.RestructureProblem(net, ro.Cluster(k=k), calibration=X_cal, tolerance=tolerance)
    sol = ro.solve(problem, backend="repurpose", options={"joint_iterations": 20})
    assert sol.status is ro.Status.FEASIBLE
    g = sol.guarantee
    assert g.within_tolerances and g.A > 0
    _assert_bound_holds(net, sol.network, g, _probe_inputs(net, sol.network, rng))
    for probe_scale in (1e-2, 1.0, 1e2):
        _assert_bound_holds(net, sol.network, g, _random_search(net, sol.network, g, rng, probe_scale, rounds=10))
    X = np.concatenate([X_cal, rng.normal(size=(40,) + net.input_shape)])
    certified = certify(sol, X)
    f, f_hat = net.forward(X), sol.network.forward(X)
    assert np.all(f.argmax(axis=1)[certified] == f_hat.argmax(axis=1)[certified])


@settings(max_examples=25)
@given(case=st.one_of(dense_networks(), conv_networks()), size=st.sampled_from([1e-6, 1e-4, 1e-2]))
def test_certified_samples_never_change_prediction(case, size):
    net, rng = case
    moved = _perturb(net, rng, 0.0, size, size)
    g = compute_guarantee(net, moved)
    n_in = int(np.prod(net.input_shape))
    X = np.concatenate([scale * rng.normal(size=(40, n_in)) for scale in (1e-2, 1.0, 1e2)])
    for network in (moved, net):  # either network of the pair may carry the certificate
        certified = certify((network, g), X)
        f, f_hat = net.forward(X), moved.forward(X)
        if f.shape[1] == 1:
            same = (f[:, 0] > 0) == (f_hat[:, 0] > 0)
        else:
            same = f.argmax(axis=1) == f_hat.argmax(axis=1)
        assert np.all(same[certified])


def test_certify_is_not_vacuous_and_uses_the_sqrt2_rule():
    rng = np.random.default_rng(7)
    net = ro.Network([ro.Dense(rng.normal(size=(10, 6)), rng.normal(size=10)), ro.ReLU(),
                      ro.Dense(rng.normal(size=(4, 10)), rng.normal(size=4))], input_shape=(6,))
    moved = _perturb(net, rng, 0.0, 1e-3, 1e-3)
    g = compute_guarantee(net, moved)
    X = rng.normal(size=(300, 6))
    certified = certify((moved, g), X)
    assert 0.5 < certified.mean() < 1.0
    logits = np.sort(moved.forward(X), axis=1)
    margin = logits[:, -1] - logits[:, -2]
    beta = g.bound(np.linalg.norm(X, axis=1))
    np.testing.assert_array_equal(certified[np.abs(margin - np.sqrt(2) * beta) > 1e-9],
                                  (margin > np.sqrt(2) * beta)[np.abs(margin - np.sqrt(2) * beta) > 1e-9])


def test_certify_on_a_solution_and_through_save_load(tmp_path):
    rng = np.random.default_rng(8)
    net = ro.Network([ro.Dense(rng.normal(size=(6, 4))), ro.ReLU(), ro.Dense(rng.normal(size=(3, 6)))],
                     input_shape=(4,))
    moved = _perturb(net, rng, 0.0, 1e-4, 0.0)
    X = rng.normal(size=(30, 4))
    g = compute_guarantee(net, moved, calibration=X, tolerances=[0.1, 0.1])
    sol = ro.Solution(status=ro.Status.FEASIBLE, objective=0.0, bound=None, gap=None, backend="test",
                      assignment=None, network=moved, guarantee=g)
    expected = certify((moved, g), X)
    np.testing.assert_array_equal(certify(sol, X), expected)
    loaded = ro.load_solution(ro.save_solution(sol, tmp_path / "sol.npz"))
    assert loaded.guarantee == g
    np.testing.assert_array_equal(certify(loaded, X), expected)
    bare = ro.Solution(status=ro.Status.FEASIBLE, objective=0.0, bound=None, gap=None, backend="direct",
                       assignment=None, network=moved)
    with pytest.raises(ro.InvalidParameterError, match="no guarantee"):
        certify(bare, X)
    with pytest.raises(ro.InvalidParameterError, match="Solution"):
        certify(moved, X)


# ============================================================================== persistence and errors
def test_to_dict_from_dict_round_trip_through_json():
    rng = np.random.default_rng(9)
    net = ro.Network([ro.Conv2d(rng.normal(size=(2, 1, 3, 3)), padding=1), ro.ReLU(), ro.MaxPool2d(2),
                      ro.Flatten(), ro.Dense(rng.normal(size=(3, 32)))], input_shape=(1, 8, 8))
    moved = _perturb(net, rng, 0.3, 0.1, 0.1)
    g = compute_guarantee(net, moved, calibration=rng.normal(size=(10, 1, 8, 8)), tolerances=[0.2, 0.3])
    data = json.loads(json.dumps(g.to_dict()))
    back = Guarantee.from_dict(data)
    assert back == g
    assert back.layer_terms == g.layer_terms and back.decomposition == g.decomposition
    np.testing.assert_array_equal(back.bound([0.0, 1.0, 5.0]), g.bound([0.0, 1.0, 5.0]))
    recursion = compute_guarantee(net, moved, effort="recursion")
    assert Guarantee.from_dict(json.loads(json.dumps(recursion.to_dict()))) == recursion
    with pytest.raises(ro.FormatError):
        Guarantee.from_dict({"A": 1.0})
    with pytest.raises(ro.FormatError):
        Guarantee.from_dict({**data, "format": "something-else"})
    with pytest.raises(ro.FormatError):
        Guarantee.from_dict({**data, "A": "not a number"})


def test_argument_errors_name_the_argument():
    rng = np.random.default_rng(10)
    net = ro.Network([ro.Dense(rng.normal(size=(3, 2)))], input_shape=(2,))
    other = ro.Network([ro.Dense(rng.normal(size=(4, 2)))], input_shape=(2,))
    with pytest.raises(ro.InvalidParameterError, match="same topology"):
        compute_guarantee(net, other)
    with pytest.raises(ro.InvalidParameterError, match="`original`"):
        compute_guarantee("net", net)
    with pytest.raises(ro.InvalidParameterError, match="`tolerances`"):
        compute_guarantee(net, net, tolerances=[0.1, 0.2])
    with pytest.raises(ro.InvalidParameterError, match="`effort`"):
        compute_guarantee(net, net, effort="fast")
    with pytest.raises(ro.InvalidProblemError, match="`calibration`"):
        compute_guarantee(net, net, calibration=np.zeros((3, 5)))
    g = compute_guarantee(net, net)
    with pytest.raises(ro.InvalidParameterError, match="`x_norms`"):
        g.bound([-1.0])
    with pytest.raises(ro.InvalidParameterError, match="`A`"):
        Guarantee(calibration_errors=(), tolerances=None, A=-1.0, B=0.0)
    with pytest.raises(ro.InvalidParameterError, match="`guarantee`"):
        tightness(net, net, {"A": 0}, np.zeros((1, 2)))
