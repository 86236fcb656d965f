"""The distillation: a restructured network trained on the original's outputs over synthetic inputs.

The cascade and the joint refit fit the calibration samples, and a network restructured from a few of them
generalises only as far as they reach: on the mnist1d MLP (K = 4, tolerances ``[1.0, 0.135, 0.135]``, 299
scalars per sample) the logits are within 0.03 of the original's on the 1000 calibration samples and 0.13 on
fresh samples of its generator. The original network answers any input, so this pass trains the kept
weights (the placement and the support stay: a pruned weight stays zero, so neither the volume nor any
worker's nnz can grow) by Adam on mini-batches of a quarter calibration samples and three quarters fresh
synthetic inputs (:class:`repurpose_opt.synthetic.InputModel`: a Gaussian with the calibration set's mean
and covariance, and calibration samples plus noise of the same shape), drawn anew every step, minimising
the relative error of the outputs

    ||Ẑ_L − Z_L||² / ||Z_L||²  +  μ·Σ_{l<L} max(0, e_l²/cap_l² − s²)²

(the hinge of :mod:`.joint_refit` on the calibration rows of the batch keeps every hidden layer near its
allowance). The step size of each layer is relative to the size of its original weights, and decays on a
cosine schedule. The result is checked like the joint refit's: every layer's float64 calibration error
within its cap (else the step toward it is halved, up to 8 times) *and* a smaller output error on a held-out
set of synthetic inputs than before; otherwise the network is left as it was. Nothing is drawn but from the
calibration samples, so the pass needs no labels and no other data.

Measured on the mnist1d MLP (K = 4, 299 scalars per sample, 8000 steps of 2048 inputs, section 7 of
``benchmarks/bench_mnist1d_limits.py``): with the hidden layer free (tolerances ``[1.0, 1.0, t]``, the cascade
placing pairs for ``[1.0, t, t]``: the ``repurpose`` option ``cascade_tolerance``) the logit error on fresh
samples halves (0.135 → 0.064) and the accuracy loss falls from 1.80 to 0.68 pt; with the hidden layer held
to t it falls only to 0.113.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..network import Network, NetworkTrace
from ..problems.restructure import calibration_errors
from ..synthetic import InputModel
from .joint_refit import SAFETY, _Model, free_layers, hinge, pull_back

__all__ = ["Distillation", "distill", "BATCH", "LEARNING_RATE", "CALIBRATION_SHARE", "VALIDATION_INPUTS"]

#: Inputs per step.
BATCH = 2048
#: Share of each batch drawn from the calibration samples (the rest is synthetic).
CALIBRATION_SHARE = 0.25
#: Adam's initial step, relative to the root mean square of each layer's original weights.
LEARNING_RATE = 0.015
#: Held-out synthetic inputs on which the result must beat the starting point.
VALIDATION_INPUTS = 4096
#: Points of the learning curve recorded in :attr:`Distillation.curve`.
CURVE_POINTS = 10
_BETAS, _EPS = (0.9, 0.999), 1e-8


@dataclass(frozen=True)
class Distillation:
    """Outcome of :func:`distill`: the network (unchanged unless accepted) and figures.

    ``validation_before`` / ``validation_after``: relative output error on the held-out synthetic inputs;
    ``curve``: ``(step, validation error)`` pairs along the way; ``errors``: the calibration errors per layer.
    """

    network: Network
    accepted: bool
    steps: int
    seconds: float
    reason: str
    errors: tuple[float, ...]
    validation_before: float
    validation_after: float
    curve: tuple[tuple[int, float], ...]


def distill(original: Network, restructured: Network, X: np.ndarray, caps: Any, *, steps: int, batch: int = BATCH,
            learning_rate: float = LEARNING_RATE, seed: int = 0, deadline: float | None = None,
            trace: NetworkTrace | None = None, progress: bool = False) -> Distillation:
    """Train the kept weights of ``restructured`` on ``original``'s outputs (see the module docstring).

    Parameters
    ----------
    original, restructured : Network
        Same topology; ``restructured``'s zero weights stay zero.
    X : ndarray
        Calibration inputs (at least 2): the caps hold on them, and the synthetic inputs are drawn from them.
    caps : sequence of float or None
        Largest relative calibration error allowed per linear layer (the problem's tolerances); ``None``: the
        errors ``restructured`` already has (no layer may get worse: budget mode).
    steps : int
        Adam steps (0: nothing is done).
    batch : int
        Inputs per step.
    learning_rate : float
        Initial step relative to the size of each layer's original weights.
    seed : int
        Seed of the batches (the same arguments give the same network).
    deadline : float, optional
        ``time.perf_counter()`` value at which to stop and check what was reached.
    trace : NetworkTrace, optional
        ``original.trace(X)`` when the caller has it.
    progress : bool
        Draw a progress bar on stderr.

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> rng = np.random.default_rng(0)
    >>> net = ro.Network([ro.Dense(rng.normal(size=(16, 4))), ro.ReLU(), ro.Dense(rng.normal(size=(3, 16)))], input_shape=(4,))
    >>> W1 = net.linear_layers[0].W.copy(); W1[:, 2:] = 0.0        # half the inputs pruned
    >>> pruned = net.with_weights([(W1, net.linear_layers[0].b), (net.linear_layers[1].W, net.linear_layers[1].b)])
    >>> out = distill(net, pruned, rng.normal(size=(100, 4)), [1.0, 1.0], steps=300, batch=256)
    >>> out.accepted, bool(out.validation_after < out.validation_before), bool(np.all(out.network.linear_layers[0].W[:, 2:] == 0))
    (True, True, True)
    """
    started = time.perf_counter()
    L = original.n_layers
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    trace = original.trace(X) if trace is None else trace
    before = calibration_errors(original, restructured, X, reference=trace)
    caps = before.copy() if caps is None else np.asarray(caps, dtype=np.float64).reshape(-1)
    free = free_layers(caps)
    energy = np.array([float(np.sum(np.asarray(z, dtype=np.float64) ** 2)) for z in trace.pre_activations]) / n
    rng = np.random.default_rng(seed)
    inputs = InputModel(X)
    # Held out from a generator of its own, so that the check does not depend on the number of steps.
    validation = inputs.draw(VALIDATION_INPUTS, np.random.default_rng([seed, 1]))
    reference = original.forward(validation)
    scale = max(float(np.linalg.norm(reference)), 1e-300)

    def validation_error(network: Network) -> float:
        return float(np.linalg.norm(network.forward(validation) - reference)) / scale

    start_error = validation_error(restructured)

    def result(network: Network, errors: np.ndarray, accepted: bool, done: int, reason: str, after: float,
               curve: list) -> Distillation:
        return Distillation(network, accepted, done, time.perf_counter() - started, reason, tuple(float(e) for e in errors),
                            start_error, after, tuple(curve))

    if steps <= 0 or not any(free) or energy[-1] <= 0:
        return result(restructured, before, False, 0, "nothing to distil", start_error, [])
    dtype = np.float32
    model = _Model(restructured, free, dtype)
    teacher = _Model(original, [False] * L, dtype)
    teacher_weights = teacher.weights(np.zeros(0))
    theta0 = model.pack(restructured)
    theta = theta0.copy()
    step_size = np.zeros_like(theta)
    for l, layer in enumerate(original.linear_layers):
        size = float(np.sqrt(np.mean(layer.W.astype(np.float64) ** 2)))
        step_size[model.offsets[2 * l] : model.offsets[2 * l + 2]] = learning_rate * (size if size > 0 else 1.0)
    moment, power = np.zeros_like(theta), np.zeros_like(theta)
    own = max(1, int(round(CALIBRATION_SHARE * batch)))  # drawn with replacement: the share holds for any n
    targets = [np.asarray(z, dtype=dtype) for z in trace.pre_activations]
    calibration = X.astype(dtype)
    bounds = np.minimum(SAFETY * caps, 1e150) ** 2 * own * energy  # on the `own` calibration rows of a batch
    curve: list[tuple[int, float]] = []
    every = max(steps // CURVE_POINTS, 1)
    reason, done = "steps done", 0
    from ..studies.progress import ProgressBar

    with ProgressBar(steps, desc="distillation", enabled=progress) as bar:
        for step in range(steps):
            if deadline is not None and time.perf_counter() > deadline:
                reason = "time limit"
                break
            rows = rng.integers(0, n, size=own)
            synthetic = inputs.draw(batch - own, rng, dtype=dtype)
            x = np.concatenate([calibration[rows], synthetic])
            wanted = np.concatenate([targets[-1][rows], teacher.forward(teacher_weights, synthetic)[0][-1]])
            weights = model.weights(theta)
            pre, tape = model.forward(weights, x)
            residual = pre[-1] - wanted
            grads_z: list[np.ndarray | None] = [None] * L
            grads_z[-1] = (2.0 / float(batch * energy[-1])) * residual
            for l in range(L - 1):  # the hinge, on the calibration rows of the batch
                if not any(free[: l + 1]) or energy[l] <= 0:
                    continue
                _, g = hinge(pre[l][:own] - targets[l][rows], bounds[l])
                if g is not None:
                    grads_z[l] = np.concatenate([g, np.zeros_like(pre[l][own:])])
            gradient = model.gradient(model.backward(weights, tape, grads_z))
            # Adam, with a cosine decay of the step.
            moment = _BETAS[0] * moment + (1 - _BETAS[0]) * gradient
            power = _BETAS[1] * power + (1 - _BETAS[1]) * gradient**2
            t = step + 1
            rate = 0.5 * (1 + np.cos(np.pi * step / steps))
            theta -= rate * step_size * (moment / (1 - _BETAS[0] ** t)) / (np.sqrt(power / (1 - _BETAS[1] ** t)) + _EPS)
            done = t
            if t % every == 0 or t == steps:
                curve.append((t, validation_error(model.network_at(theta))))
            bar.update(1)
    if done == 0:
        return result(restructured, before, False, 0, reason, start_error, curve)
    accepted = pull_back(original, model, theta, theta0, X, trace, caps,
                         lambda network, errors: validation_error(network) < start_error)
    if accepted is None:
        return result(restructured, before, False, done, f"{reason}; no improvement within the caps", start_error, curve)
    network, errors = accepted
    return result(network, errors, True, done, reason, validation_error(network), curve)
