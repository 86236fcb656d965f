"""Trained models that ship offline: built deterministically on first use, then cached on disk.

Three models, each with its data split, so every study and benchmark works on the same real networks:

===============  =======================================  ===========================================
name             network                                  data
===============  =======================================  ===========================================
``digits_mlp``   Dense 64-256-128-64-10, ReLU (sklearn)   scikit-learn's bundled ``load_digits`` / 16
``digits_cnn``   conv 1→16 3×3 (pad 1), ReLU, maxpool 2,  the same digits as 1×8×8 images
                 conv 16→32 3×3 (pad 1), ReLU, flatten,
                 dense 512→64, ReLU, dense 64→10 (torch)
``mnist1d_mlp``  Dense 40-256-256-10, ReLU (sklearn)      ``mnist1d``'s ``make_dataset`` generator
                                                          (never its download)
===============  =======================================  ===========================================

The digits split is stratified 70/30 with ``random_state=0`` (1257 training, 540 test samples); mnist1d uses
its generator's own 4000/1000 split (seed 42). Training is seeded and runs on one thread (BLAS limited to one
thread through threadpoolctl, torch through ``set_num_threads(1)``), so a fresh build gives the same weights
on any machine with the same library versions: with more BLAS threads scikit-learn's training rounds
differently, and the weights would depend on the machine's core count (recipe version 2 fixed that).

The mnist1d test split is small for accuracy *differences* (a restructuring that changes 20 % of the
predictions has a standard error of ~1.4 pt there); :func:`mnist1d_samples` draws any number of fresh
samples from the same generator for a larger held-out set.

Cache: ``$REPURPOSE_OPT_CACHE`` if set, else ``$XDG_CACHE_HOME/repurpose-opt`` (``~/.cache/repurpose-opt``).
A model file holds the network and its data in the package's checksummed ``.npz`` format; a corrupted or
outdated file is rebuilt, never trusted.

Examples
--------
>>> from repurpose_opt import zoo
>>> model = zoo.load("digits_mlp")                      # doctest: +SKIP
>>> model.network.unit_counts, round(model.accuracy(), 3)  # doctest: +SKIP
((64, 256, 128, 64, 10), 0.98...)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _io
from ._validation import as_int
from .errors import BackendUnavailableError, FormatError, InvalidParameterError
from .network import Network

__all__ = ["ZooModel", "MODELS", "load", "digits_mlp", "digits_cnn", "mnist1d_mlp", "mnist1d_samples", "cache_dir", "cache_path"]

#: Bumped whenever a recipe changes, so stale cache files are rebuilt (2: training on one BLAS thread).
ZOO_VERSION = 2
_FORMAT = "repurpose-opt/zoo-model"


@dataclass(frozen=True, eq=False)
class ZooModel:
    """A trained network with the data it was trained and tested on.

    ``X_train``/``X_test`` are shaped like the network's input (``(N, 64)``, ``(N, 1, 8, 8)`` or
    ``(N, 40)``); labels are integer classes.
    """

    name: str
    network: Network
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    description: str

    def calibration(self, n: int = 1000) -> np.ndarray:
        """The first ``n`` training samples (the calibration set of SPEC §3)."""
        n = as_int("n", n)
        if n < 1 or n > self.X_train.shape[0]:
            raise InvalidParameterError(f"`n` must be in 1..{self.X_train.shape[0]}, got {n}")
        return self.X_train[:n]

    def accuracy(self, network: Network | None = None) -> float:
        """Top-1 accuracy of ``network`` (default: this model's) on the held-out split."""
        net = self.network if network is None else network
        if not isinstance(net, Network):
            raise InvalidParameterError(f"`network` must be a repurpose_opt.Network, got {type(net).__name__}")
        return float(np.mean(net.forward(self.X_test).argmax(axis=1) == self.y_test))


def cache_dir() -> Path:
    """Where trained models are cached (see the module docstring)."""
    root = os.environ.get("REPURPOSE_OPT_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "repurpose-opt"


def cache_path(name: str) -> Path:
    """The cache file of model ``name`` for the current recipe version."""
    return cache_dir() / f"{name}-v{ZOO_VERSION}.npz"


# --------------------------------------------------------------------------------------------- data
def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = X / 16.0  # pixel intensities 0..16 -> [0, 1]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    return X_train, y_train.astype(np.int64), X_test, y_test.astype(np.int64)


def _mnist1d_draw(missing: str, **settings) -> dict:
    """mnist1d's generator run locally (``get_dataset()`` would download) with its default arguments
    overridden by ``settings``; ``missing`` opens the error raised when mnist1d is not installed."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise BackendUnavailableError(f"{missing}: pip install 'repurpose-opt[data]'") from exc
    args = get_dataset_args()
    for key, value in settings.items():
        setattr(args, key, value)
    return make_dataset(args)


def _mnist1d() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    data = _mnist1d_draw("the mnist1d model needs mnist1d")
    return (np.asarray(data["x"], dtype=np.float64), np.asarray(data["y"], dtype=np.int64),
            np.asarray(data["x_test"], dtype=np.float64), np.asarray(data["y_test"], dtype=np.int64))


# ------------------------------------------------------------------------------------------ recipes
def _sklearn_mlp(hidden: tuple[int, ...], X: np.ndarray, y: np.ndarray, alpha: float = 1e-4) -> Network:
    """The shipped MLPs' recipe; ``alpha`` is the weight decay (scikit-learn's default for every shipped model)."""
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the fixed iteration budget
        clf = MLPClassifier(hidden, max_iter=300, random_state=0, alpha=alpha).fit(X, y)
    return Network.from_sklearn(clf)


def _build_digits_mlp() -> ZooModel:
    X_train, y_train, X_test, y_test = _digits()
    net = _sklearn_mlp((256, 128, 64), X_train, y_train)
    return ZooModel("digits_mlp", net, X_train, y_train, X_test, y_test,
                    "digits MLP 64-256-128-64-10 (scikit-learn MLPClassifier, ReLU, random_state=0)")


def _build_mnist1d_mlp() -> ZooModel:
    X_train, y_train, X_test, y_test = _mnist1d()
    net = _sklearn_mlp((256, 256), X_train, y_train)
    return ZooModel("mnist1d_mlp", net, X_train, y_train, X_test, y_test,
                    "mnist1d MLP 40-256-256-10 (scikit-learn MLPClassifier, ReLU, random_state=0)")


def _build_digits_cnn() -> ZooModel:
    try:
        import torch
        from torch import nn
    except ImportError as exc:
        raise BackendUnavailableError("the digits CNN needs torch: pip install 'repurpose-opt[torch]'") from exc
    X_train, y_train, X_test, y_test = _digits()
    X_train, X_test = X_train.reshape(-1, 1, 8, 8), X_test.reshape(-1, 1, 8, 8)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: reductions in a fixed order, the same weights every build
    try:
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
        ).double()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        inputs, labels = torch.from_numpy(X_train), torch.from_numpy(y_train)
        order = torch.Generator().manual_seed(0)
        for _epoch in range(40):
            for batch in torch.randperm(inputs.shape[0], generator=order).split(64):
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(inputs[batch]), labels[batch])
                loss.backward()
                optimizer.step()
        model.eval()
        net = Network.from_torch(model, input_shape=(1, 8, 8))
    finally:
        torch.set_num_threads(threads)
    return ZooModel("digits_cnn", net, X_train, y_train, X_test, y_test,
                    "digits CNN conv16-pool-conv32-dense64-dense10 (torch, Adam, 40 epochs, seed 0)")


MODELS: dict[str, Callable[[], ZooModel]] = {
    "digits_mlp": _build_digits_mlp,
    "digits_cnn": _build_digits_cnn,
    "mnist1d_mlp": _build_mnist1d_mlp,
}


# -------------------------------------------------------------------------------------------- cache
def _save(model: ZooModel, path: Path) -> None:
    header, arrays = model.network.to_payload()
    arrays = {f"network.{key}": value for key, value in arrays.items()}
    arrays.update(X_train=model.X_train, y_train=model.y_train, X_test=model.X_test, y_test=model.y_test)
    _io.write_npz(path, _FORMAT, ZOO_VERSION,
                  {"name": model.name, "description": model.description, "network": header, "zoo_version": ZOO_VERSION},
                  arrays)


def _read(path: Path) -> ZooModel:
    header, arrays = _io.read_npz(path, _FORMAT, ZOO_VERSION)
    if header.get("zoo_version") != ZOO_VERSION:
        raise FormatError(f"{str(path)!r} was built by another zoo recipe version")
    net_arrays = {key[len("network."):]: value for key, value in arrays.items() if key.startswith("network.")}
    try:
        network = Network.from_payload(header["network"], net_arrays, where=repr(str(path)))
        return ZooModel(str(header["name"]), network, arrays["X_train"], arrays["y_train"], arrays["X_test"],
                        arrays["y_test"], str(header["description"]))
    except KeyError as exc:  # a well-formed archive without an expected entry is not a zoo model either
        raise FormatError(f"{str(path)!r} lacks the entry {exc} of a zoo model") from exc


def load(name: str, *, rebuild: bool = False, cache: bool = True) -> ZooModel:
    """The trained model ``name`` (one of :data:`MODELS`), from the cache or built now.

    Parameters
    ----------
    name : {"digits_mlp", "digits_cnn", "mnist1d_mlp"}
    rebuild : bool
        Train again even when a cached copy exists.
    cache : bool
        Read and write the on-disk cache (``False``: always build in memory).
    """
    if not isinstance(name, str) or name not in MODELS:
        raise InvalidParameterError(f"`name` must be one of {', '.join(repr(n) for n in MODELS)}, got {name!r}")
    path = cache_path(name)
    if cache and not rebuild and path.is_file():
        try:
            return _read(path)
        except FormatError:
            pass  # corrupted or stale: rebuild below
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    with threadpool_limits(limits=1):  # the weights must not depend on the machine's core count
        model = MODELS[name]()
    if cache:
        try:
            _save(model, path)
        except OSError as exc:  # a read-only home must not stop the job
            warnings.warn(f"could not cache {name} in {path.parent}: {exc}", RuntimeWarning, stacklevel=2)
    return model


def mnist1d_samples(n: int = 12_500, *, seed: int = 12_345) -> tuple[np.ndarray, np.ndarray]:
    """``n`` fresh samples ``(X (n, 40), y (n,))`` from mnist1d's generator with ``seed`` (needs the ``data`` extra).

    The generator's standard test split has 1000 samples: the standard error of an accuracy difference on
    it is ~1.4 pt when a restructuring changes 20 % of the predictions, more than a 1 pt loss budget.
    A larger draw from the same generator (the default seed differs from the training data's 42) measures
    the loss to ~0.3 pt; generating 12,500 samples takes a few seconds.

    Examples
    --------
    >>> from repurpose_opt import zoo
    >>> X, y = zoo.mnist1d_samples(100)                    # doctest: +SKIP
    >>> X.shape, y.shape                                   # doctest: +SKIP
    ((100, 40), (100,))
    """
    n, seed = as_int("n", n), as_int("seed", seed)
    if n < 1:
        raise InvalidParameterError(f"`n` must be at least 1, got {n}")
    data = _mnist1d_draw("mnist1d samples need mnist1d", num_samples=max(n, 2), seed=seed)  # split in two halves; both are kept
    X = np.concatenate([data["x"], data["x_test"]])[:n]
    y = np.concatenate([data["y"], data["y_test"]])[:n]
    return np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64)


def digits_mlp() -> ZooModel:
    """The digits MLP 64-256-128-64-10 (see :func:`load`)."""
    return load("digits_mlp")


def digits_cnn() -> ZooModel:
    """The digits CNN (needs the ``torch`` extra; see :func:`load`)."""
    return load("digits_cnn")


def mnist1d_mlp() -> ZooModel:
    """The mnist1d MLP 40-256-256-10 (needs the ``data`` extra; see :func:`load`)."""
    return load("mnist1d_mlp")
