"""The model zoo: deterministic builds, the on-disk cache, and the shipped models' basic facts.

Cost: the digits MLP is built at most twice (once to fill an empty cache, once fresh for the determinism
check, ~3 s each); the digits CNN is loaded from the cache (in an empty CI cache the first load trains it
once, ~8 s, and every later test in the session reads the file). mnist1d is not loaded here (13 s to
build). The cache logic itself is tested on a tiny stand-in model in a temporary cache directory.
"""

from __future__ import annotations

import numpy as np
import pytest

import repurpose_opt as ro
from repurpose_opt import zoo


def _same_model(a: zoo.ZooModel, b: zoo.ZooModel) -> None:
    assert a.name == b.name and a.network.unit_counts == b.network.unit_counts
    for x, y in zip(a.network.linear_layers, b.network.linear_layers, strict=True):
        assert x.W.tobytes() == y.W.tobytes() and x.b.tobytes() == y.b.tobytes()
    for field in ("X_train", "y_train", "X_test", "y_test"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field


def test_digits_mlp_rebuild_equals_cache():
    from threadpoolctl import threadpool_limits

    cached = zoo.load("digits_mlp")  # from the cache (built and cached first if the cache is empty)
    with threadpool_limits(limits=2):  # the caller's BLAS threads must not change the weights
        fresh = zoo.load("digits_mlp", cache=False)  # trained again, in memory
    _same_model(cached, fresh)
    assert cached.network.unit_counts == (64, 256, 128, 64, 10)
    assert (cached.X_train.shape, cached.X_test.shape) == ((1257, 64), (540, 64))
    assert cached.accuracy() > 0.95


def test_digits_cnn_from_cache():
    pytest.importorskip("torch")
    model = zoo.load("digits_cnn")
    net = model.network
    assert net.unit_counts == (1, 16, 32, 64, 10) and net.message_sizes == (64, 16, 16, 1, 1)
    assert model.X_test.shape == (540, 1, 8, 8)
    assert model.accuracy() > 0.95
    np.testing.assert_array_equal(net.forward(model.X_test[:4]), net.forward(model.X_test[:4].reshape(4, 64)))


# ------------------------------------------------------------------------------------- cache logic
@pytest.fixture
def tiny_zoo(monkeypatch, tmp_path):
    builds = []

    def build() -> zoo.ZooModel:
        builds.append(1)
        rng = np.random.default_rng(0)
        net = ro.Network([ro.Dense(rng.normal(size=(3, 4))), ro.ReLU(), ro.Dense(rng.normal(size=(2, 3)))], input_shape=(4,))
        X = rng.normal(size=(10, 4))
        return zoo.ZooModel("tiny", net, X[:6], np.arange(6) % 2, X[6:], np.arange(4) % 2, "a stand-in")

    monkeypatch.setitem(zoo.MODELS, "tiny", build)
    monkeypatch.setenv("REPURPOSE_OPT_CACHE", str(tmp_path))
    return builds, zoo.cache_path("tiny")


def test_cache_is_written_read_and_rebuilt_when_damaged(tiny_zoo):
    builds, path = tiny_zoo
    first = zoo.load("tiny")
    assert len(builds) == 1 and path.is_file() and zoo.cache_dir() == path.parent
    _same_model(zoo.load("tiny"), first)
    assert len(builds) == 1  # read from disk
    path.write_bytes(path.read_bytes()[:100])
    _same_model(zoo.load("tiny"), first)
    assert len(builds) == 2  # a damaged file is rebuilt, never trusted
    zoo.load("tiny", rebuild=True)
    assert len(builds) == 3
    path.unlink()
    zoo.load("tiny", cache=False)
    assert len(builds) == 4 and not path.exists()


def test_cache_from_another_recipe_version_is_rebuilt(tiny_zoo, monkeypatch):
    builds, path = tiny_zoo
    zoo.load("tiny")
    monkeypatch.setattr(zoo, "ZOO_VERSION", zoo.ZOO_VERSION + 1)
    path.rename(path.parent / f"tiny-v{zoo.ZOO_VERSION}.npz")  # same name, written by the older recipe
    zoo.load("tiny")
    assert len(builds) == 2


def test_zoo_arguments():
    with pytest.raises(ro.InvalidParameterError, match="`name` must be one of 'digits_mlp', 'digits_cnn', 'mnist1d_mlp', got 'resnet'"):
        zoo.load("resnet")


def test_mnist1d_samples_are_reproducible_and_checked():
    pytest.importorskip("mnist1d")
    X, y = zoo.mnist1d_samples(30, seed=7)
    assert X.shape == (30, 40) and y.shape == (30,) and X.dtype == np.float64 and y.dtype == np.int64
    X2, y2 = zoo.mnist1d_samples(30, seed=7)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    assert not np.array_equal(X, zoo.mnist1d_samples(30, seed=8)[0])
    with pytest.raises(ro.InvalidParameterError, match="`n` must be at least 1, got 0"):
        zoo.mnist1d_samples(0)


def test_calibration_bounds(tiny_zoo):
    model = zoo.load("tiny")
    assert model.calibration(3).shape == (3, 4)
    with pytest.raises(ro.InvalidParameterError, match="`n` must be in 1..6, got 7"):
        model.calibration(7)
