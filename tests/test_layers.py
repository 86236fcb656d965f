"""Every layer type against hand-computed values and against torch's own forward; the importers.

Properties checked:
- Dense, Conv2d (stride, zero padding), ReLU/identity/tanh/sigmoid, MaxPool2d/AvgPool2d and Flatten give
  the values worked out by hand on small inputs, and the values of the matching torch modules (float64,
  1e-12) on random ones;
- ``Network.from_torch`` reproduces torch's forward for dense and conv Sequentials, folds BatchNorm1d/2d
  (eval-mode statistics) into the preceding layer, expands nested Sequentials, and refuses every other
  module naming it;
- ``Network.from_sklearn`` reproduces MLPClassifier's logits (``predict_proba`` after softmax/logistic) and
  MLPRegressor's predictions, for every hidden activation.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import repurpose_opt as ro

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


def _t(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(x))


# ------------------------------------------------------------------------------------ hand-computed
def test_dense_by_hand():
    layer = ro.Dense([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]], [0.5, -0.5])
    out = layer.apply(np.array([[1.0, 1.0, 1.0], [2.0, 0.0, -1.0]]))
    np.testing.assert_array_equal(out, [[3.5, 1.5], [2.5, -3.5]])


def test_conv2d_by_hand_with_padding_and_stride():
    x = np.arange(9, dtype=float).reshape(1, 1, 3, 3)  # [[0,1,2],[3,4,5],[6,7,8]]
    W = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])  # x[i, j] - x[i+1, j+1]
    np.testing.assert_array_equal(ro.Conv2d(W, [1.0]).apply(x)[0, 0], [[-3.0, -3.0], [-3.0, -3.0]])
    # padding 1: out[i, j] = x[i-1, j-1] - x[i, j] with zeros outside the 3x3 input
    padded = ro.Conv2d(W, [0.0], padding=1).apply(x)[0, 0]
    np.testing.assert_array_equal(padded, [[0, -1, -2, 0], [-3, -4, -4, 2], [-6, -4, -4, 5], [0, 6, 7, 8]])
    # stride 2 with padding 1 keeps rows/columns 0 and 2 of the padded result
    np.testing.assert_array_equal(ro.Conv2d(W, [0.0], stride=2, padding=1).apply(x)[0, 0], [[0, -2], [-6, -4]])


def test_conv2d_sums_over_input_channels():
    x = np.stack([np.ones((2, 2)), 2 * np.ones((2, 2))])[None]  # (1, 2, 2, 2)
    W = np.ones((3, 2, 1, 1)) * np.array([1.0, 10.0, -1.0])[:, None, None, None]
    out = ro.Conv2d(W, [0.0, 1.0, 0.0]).apply(x)
    np.testing.assert_array_equal(out[0, :, 0, 0], [3.0, 31.0, -3.0])


def test_activations_by_hand():
    x = np.array([[-2.0, 0.0, 3.0]])
    np.testing.assert_array_equal(ro.ReLU().apply(x), [[0.0, 0.0, 3.0]])
    np.testing.assert_array_equal(ro.Identity().apply(x), x)
    np.testing.assert_allclose(ro.Tanh().apply(x), np.tanh(x), rtol=0, atol=0)
    np.testing.assert_allclose(ro.Sigmoid().apply(x), [[1 / (1 + np.exp(2.0)), 0.5, 1 / (1 + np.exp(-3.0))]], rtol=1e-15)
    assert (ro.Sigmoid.lipschitz, ro.Sigmoid.value_at_zero, ro.Tanh.lipschitz) == (0.25, 0.5, 1.0)


def test_pooling_by_hand():
    x = np.arange(16, dtype=float).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(ro.MaxPool2d(2).apply(x)[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(ro.AvgPool2d(2).apply(x)[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_array_equal(ro.MaxPool2d(3, stride=1).apply(x)[0, 0], [[10, 11], [14, 15]])
    # floor mode: a 5x5 map pooled by 2 drops the last row and column
    y = np.arange(25, dtype=float).reshape(1, 1, 5, 5)
    np.testing.assert_array_equal(ro.MaxPool2d(2).apply(y)[0, 0], [[6, 8], [16, 18]])


def test_flatten_is_channel_major():
    x = np.arange(8, dtype=float).reshape(1, 2, 2, 2)
    np.testing.assert_array_equal(ro.Flatten().apply(x), [[0, 1, 2, 3, 4, 5, 6, 7]])
    # A Dense after Flatten reads channel 0's four scalars, then channel 1's.
    net = ro.Network([ro.Conv2d(np.ones((2, 1, 1, 1))), ro.Flatten(), ro.Dense(np.eye(8)[[0, 4]])], input_shape=(1, 2, 2))
    out = net.forward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    np.testing.assert_array_equal(out, [[1.0, 1.0]])


# ------------------------------------------------------------------------------------ against torch
@settings(max_examples=15)
@given(seed=st.integers(0, 2**31 - 1), c_in=st.integers(1, 3), c_out=st.integers(1, 4), kh=st.integers(1, 3),
       kw=st.integers(1, 3), stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       padding=st.tuples(st.integers(0, 2), st.integers(0, 2)), size=st.integers(3, 7))
def test_conv2d_matches_torch(seed, c_in, c_out, kh, kw, stride, padding, size):
    rng = np.random.default_rng(seed)
    W, b = rng.normal(size=(c_out, c_in, kh, kw)), rng.normal(size=c_out)
    x = rng.normal(size=(3, c_in, size, size + 1))
    ours = ro.Conv2d(W, b, stride=stride, padding=padding).apply(x)
    theirs = F.conv2d(_t(x), _t(W), _t(b), stride=stride, padding=padding).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


@settings(max_examples=15)
@given(seed=st.integers(0, 2**31 - 1), kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       stride=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))), size=st.integers(3, 8))
def test_pooling_matches_torch(seed, kernel, stride, size):
    x = np.random.default_rng(seed).normal(size=(2, 3, size, size + 2))
    np.testing.assert_allclose(ro.MaxPool2d(kernel, stride).apply(x), F.max_pool2d(_t(x), kernel, stride).numpy(),
                               rtol=0, atol=0)
    np.testing.assert_allclose(ro.AvgPool2d(kernel, stride).apply(x), F.avg_pool2d(_t(x), kernel, stride).numpy(),
                               rtol=1e-14, atol=1e-14)


def test_activations_and_dense_match_torch(rng):
    x = rng.normal(size=(5, 7)) * 3
    for ours, theirs in ((ro.ReLU(), nn.ReLU()), (ro.Tanh(), nn.Tanh()), (ro.Sigmoid(), nn.Sigmoid()),
                         (ro.Identity(), nn.Identity())):
        np.testing.assert_allclose(ours.apply(x), theirs(_t(x)).numpy(), rtol=1e-14, atol=1e-15)
    linear = nn.Linear(7, 4).double()
    dense = ro.Dense(linear.weight.detach().numpy(), linear.bias.detach().numpy())
    np.testing.assert_allclose(dense.apply(x), linear(_t(x)).detach().numpy(), rtol=1e-13, atol=1e-13)


def _randomise_batchnorm(model, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen, dtype=torch.float64))
            m.running_var.copy_(torch.rand(n, generator=gen, dtype=torch.float64) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=gen, dtype=torch.float64))
            m.bias.data.copy_(torch.randn(n, generator=gen, dtype=torch.float64))


def test_from_torch_dense_with_batchnorm1d_folded(rng):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 5, bias=False),
                          nn.BatchNorm1d(5), nn.Sigmoid(), nn.Dropout(0.5), nn.Linear(5, 3)).double()
    _randomise_batchnorm(model, 1)
    model.eval()
    net = ro.Network.from_torch(model)
    assert net.input_shape == (6,) and net.unit_counts == (6, 8, 5, 3)
    assert not any(type(layer).__name__.startswith("BatchNorm") for layer in net.layers)
    X = rng.normal(size=(20, 6))
    np.testing.assert_allclose(net.forward(X), model(_t(X)).detach().numpy(), rtol=1e-12, atol=1e-12)


def test_from_torch_conv_with_batchnorm2d_pooling_and_nesting(rng):
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU()),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 3, stride=2, padding=1), nn.BatchNorm2d(5), nn.Tanh(), nn.AvgPool2d(2, stride=1),
        nn.Flatten(), nn.Linear(5 * 1 * 1, 6), nn.ReLU(), nn.Dropout(0.1), nn.Linear(6, 3),
    ).double()
    _randomise_batchnorm(model, 2)
    model.eval()
    net = ro.Network.from_torch(model, input_shape=(2, 8, 8))
    assert net.unit_counts == (2, 4, 5, 6, 3)
    assert net.message_sizes == (64, 16, 1, 1, 1)
    X = rng.normal(size=(7, 2, 8, 8))
    np.testing.assert_allclose(net.forward(X), model(_t(X)).detach().numpy(), rtol=1e-12, atol=1e-12)


def test_from_torch_digits_cnn_shape(rng):
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 10)).double().eval()
    net = ro.Network.from_torch(model, input_shape=(1, 8, 8))
    X = rng.random((16, 1, 8, 8))
    np.testing.assert_allclose(net.forward(X), model(_t(X)).detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.forward(X.reshape(16, 64)), net.forward(X), rtol=0, atol=0)  # flat input accepted


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (nn.Sequential(nn.Linear(4, 4), nn.LSTM(4, 4)), "module '1' (LSTM) is not supported; supported modules: Linear"),
        (nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), nn.GELU())), "module '1.1' (GELU) is not supported"),
        (nn.Sequential(nn.Linear(4, 4), nn.Softmax(dim=1)), "module '1' (Softmax) is not supported"),
        (nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2)), "module '0' (Conv2d): only groups=1, dilation=1"),
        (nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)), "module '0' (Conv2d): only groups=1"),
        (nn.Sequential(nn.Conv2d(1, 2, 3, padding="same")), "module '0' (Conv2d): string padding 'same'"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, padding=1)), "module '1' (MaxPool2d): only padding=0"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(2, ceil_mode=True)), "module '1' (AvgPool2d): only padding=0"),
        (nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.BatchNorm1d(4)), "module '2' (BatchNorm1d) must directly follow"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm1d(2)), "module '1' (BatchNorm1d) follows a Conv2d layer: use BatchNorm2d"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(start_dim=2)), "module '1' (Flatten): only Flatten(start_dim=1"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Linear(4, 2)), "module '2' (Linear) reads a (channels, height, width)"),
        (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, track_running_stats=False)),
         "module '1' (BatchNorm1d) has no running statistics"),
    ],
)
def test_from_torch_refuses_unsupported_modules_by_name(module, name):
    shape = (1, 6, 6) if isinstance(module[0], nn.Conv2d) else None
    if isinstance(module[0], nn.Conv2d) and module[0].in_channels == 2:
        shape = (2, 6, 6)
    with pytest.raises(ro.InvalidProblemError, match=_escape(name)):
        ro.Network.from_torch(module.double(), input_shape=shape)


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_from_torch_refuses_non_sequential_and_needs_input_shape():
    with pytest.raises(ro.InvalidProblemError, match="`module` must be a torch.nn.Sequential, got Linear"):
        ro.Network.from_torch(nn.Linear(3, 2))
    with pytest.raises(ro.InvalidProblemError, match="`input_shape` is required"):
        ro.Network.from_torch(nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(ro.InvalidProblemError, match="`module` holds no layers"):
        ro.Network.from_torch(nn.Sequential())


# --------------------------------------------------------------------------------------- sklearn
@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
def test_from_sklearn_classifier_logits(activation, rng):
    from scipy.special import softmax
    from sklearn.neural_network import MLPClassifier

    X = rng.normal(size=(60, 5))
    y = rng.integers(0, 3, 60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier((7, 4), activation=activation, max_iter=30, random_state=0).fit(X, y)
    net = ro.Network.from_sklearn(clf)
    assert net.unit_counts == (5, 7, 4, 3)
    np.testing.assert_allclose(softmax(net.forward(X), axis=1), clf.predict_proba(X), rtol=1e-10, atol=1e-12)


def test_from_sklearn_binary_classifier_and_regressor(rng):
    from scipy.special import expit
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    X = rng.normal(size=(50, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier((6,), max_iter=30, random_state=0).fit(X, (X[:, 0] > 0).astype(int))
        reg = MLPRegressor(hidden_layer_sizes=(5, 3), activation="tanh", max_iter=30, random_state=0).fit(X, X[:, :2] @ [1.0, -2.0])
    net = ro.Network.from_sklearn(clf)
    assert net.unit_counts == (4, 6, 1)
    np.testing.assert_allclose(expit(net.forward(X))[:, 0], clf.predict_proba(X)[:, 1], rtol=1e-10, atol=1e-12)
    net = ro.Network.from_sklearn(reg)
    np.testing.assert_allclose(net.forward(X)[:, 0], reg.predict(X), rtol=1e-10, atol=1e-12)


def test_from_sklearn_refuses_other_models():
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    with pytest.raises(ro.InvalidProblemError, match="`model` must be a scikit-learn MLPClassifier or MLPRegressor, got LogisticRegression"):
        ro.Network.from_sklearn(LogisticRegression())
    with pytest.raises(ro.InvalidProblemError, match=r"`model` \(MLPClassifier\) is not fitted"):
        ro.Network.from_sklearn(MLPClassifier())
