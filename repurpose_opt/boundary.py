"""Synthetic inputs on a classifier's decision boundaries, made from its calibration samples.

A network that fits its training samples perfectly (the shipped mnist1d MLP is 100 % accurate on them and
65 % on fresh samples) has every training sample far from its decision boundaries. Calibrated on such
samples, a restructured network matches the original where it does not matter and is never shown where a
small logit error flips a prediction. :func:`boundary_samples` makes inputs right there: for pairs of
calibration samples that the original classifies differently, the point of the segment between them
where the original's prediction changes (found by bisection), nudged along the segment by a little noise.
They need nothing but the calibration samples and the original network (no labels, no other data); the
final joint refit of ``repurpose`` fits the original's logits on them too (option ``joint_boundary``).
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidParameterError
from .network import Network

__all__ = ["boundary_samples"]

#: Bisection steps: the crossing is located to 2**-20 of the segment.
BISECTION_STEPS = 20


def boundary_samples(network: Network, X: np.ndarray, n: int, *, seed: int = 0, jitter: float = 0.05) -> np.ndarray:
    """``n`` inputs where ``network``'s predicted class changes, on segments between samples of ``X``.

    Each point starts from a random pair (a, b) of samples of ``X`` whose predicted classes
    (``network.forward(...).argmax(1)``) differ: bisection finds the t ∈ [0, 1] where the prediction along
    ``(1 − t)·a + t·b`` first leaves a's class (to 2⁻²⁰), and the point is taken at ``t + jitter·ε``
    (ε standard normal, clipped to the segment), so the samples straddle the boundary.

    Parameters
    ----------
    network : Network
        A classifier (at least 2 outputs).
    X : ndarray (N, ...)
        Samples in the network's input shape, e.g. the calibration set.
    n : int
        Number of points to make.
    seed : int
        Seed of the pairs and the jitter (the same arguments give the same points).
    jitter : float
        Standard deviation of the offset along the segment, in units of the segment's length.

    Returns
    -------
    ndarray (n, ...)
        Float64 points; none (shape (0, ...)) when every sample of ``X`` gets the same class.

    Raises
    ------
    InvalidParameterError
        ``network`` has one output, ``n`` or ``jitter`` is negative, or ``X`` does not match its input.

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> net = ro.Network([ro.Dense(np.array([[1.0, 0.0], [0.0, 1.0]]))], input_shape=(2,))   # class = larger coordinate
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    >>> points = boundary_samples(net, X, 4, jitter=0.0)
    >>> points.shape, bool(np.allclose(points[:, 0], points[:, 1], atol=1e-5))   # on the diagonal
    ((4, 2), True)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InvalidParameterError(f"`n` must be a non-negative integer, got {n!r}")
    if not (isinstance(jitter, (int, float, np.floating)) and np.isfinite(jitter) and jitter >= 0):
        raise InvalidParameterError(f"`jitter` must be a finite number >= 0, got {jitter!r}")
    if network.n_outputs < 2:
        raise InvalidParameterError(f"boundary samples need a classifier (at least 2 outputs); this network has "
                                    f"{network.n_outputs} output")
    X = np.asarray(X, dtype=np.float64)
    if X.ndim < 2 or X.shape[1:] != tuple(network.input_shape):
        raise InvalidParameterError(f"`X` must have shape (N, {', '.join(map(str, network.input_shape))}), got {X.shape}")
    predicted = network.forward(X).argmax(axis=1)
    rng = np.random.default_rng(seed)
    # A partner of another class for each first sample, drawn uniformly among the samples of the other
    # classes: those sit outside the first sample's class block of the class-sorted order.
    order = np.argsort(predicted, kind="stable")
    counts = np.bincount(predicted, minlength=network.n_outputs)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    first = rng.integers(0, X.shape[0], size=n)
    others = X.shape[0] - counts[predicted[first]]
    if n == 0 or np.any(others == 0):  # one class only: no segment crosses a boundary
        return np.zeros((0,) + X.shape[1:])
    draw = (rng.random(n) * others).astype(np.int64)
    block = predicted[first]
    second = order[np.where(draw < starts[block], draw, draw + counts[block])]
    a, b = X[first], X[second]
    shape = (n,) + (1,) * (X.ndim - 1)
    lo, hi = np.zeros(shape), np.ones(shape)
    for _ in range(BISECTION_STEPS):  # lo keeps a's class, hi does not
        mid = 0.5 * (lo + hi)
        same = (network.forward((1.0 - mid) * a + mid * b).argmax(axis=1) == block).reshape(shape)
        lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
    t = np.clip(0.5 * (lo + hi) + jitter * rng.standard_normal(shape), 0.0, 1.0)
    return (1.0 - t) * a + t * b
