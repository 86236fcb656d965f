"""The final joint refit: every layer's kept weights fine-tuned together on the calibration set.

The cascade fits layer by layer, each against the original pre-activations. What the user sees is the
output, and errors of consecutive layers can compensate each other: a hidden layer may move *within its
tolerance* in whatever direction helps the layers after it. This pass keeps the placement and the
support (a weight that the cascade pruned stays zero, so the volume and every worker's nnz never grow)
and minimises, over all remaining weights and biases at once,

    ||Ẑ_L − Z_L||²/||Z_L||²  +  μ·Σ_l max(0, e_l²/cap_l² − s²)²  +  Σ_l ρ_l·||W_l − W⁰_l||²,

with e_l the relative calibration error of layer l (cascade: the restructured network on its own
outputs), ``cap_l`` its allowance (the tolerance, or in budget mode the error the cascade reached), a
safety factor s < 1, and ρ_l the refit's ridge toward the original weights (:data:`repurpose_opt.lsq.DEFAULT_RIDGE`
relative to the mean diagonal of layer l's input Gram, per unit of ``||Z_l||²``: the same prior the
least-squares refits use). L-BFGS runs on exact gradients (backpropagation through Dense, Conv2d via
im2col, every activation, max/average pooling and Flatten).

Whatever the optimiser returns is checked in float64: a result whose any layer error exceeds its cap, or
whose output error is not smaller, is pulled back toward the cascade's weights (halving the step) and
dropped if no point of the segment qualifies. The refit therefore never breaks a tolerance and never
makes the calibration output error worse.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..layers import AvgPool2d, Conv2d, Dense, Flatten, Identity, MaxPool2d, ReLU, Sigmoid, Tanh
from ..lsq import DEFAULT_RIDGE, design_matrix
from ..network import Network, NetworkTrace
from ..problems.restructure import calibration_errors

__all__ = ["JointRefit", "joint_refit", "choose_ridge", "evaluation_flops", "affordable_evaluations", "WORK_BUDGET"]

#: Weight of the hinge penalty that keeps every layer within its allowance while the optimiser runs.
PENALTY = 100.0
#: The penalty starts at this fraction of a layer's allowance, so float32 rounding never tips it over.
SAFETY = 0.97
#: Allowances at or below this relative error mean "keep this layer as it is".
EXACT = 1e-6
#: Default work budget of the refit in floating-point operations: ~100 iterations on the shipped models
#: (a digits MLP evaluation on 1000 samples is 0.35 GFLOP), a handful on a 512-2048-2048-10 MLP (31 GFLOP).
WORK_BUDGET = 1e11
#: Fewer affordable evaluations than this and the refit is not worth starting.
MIN_EVALUATIONS = 20
#: Stop once the best objective fell by less than ``STALL_RATIO`` (relative) over the last ``STALL_WINDOW``
#: evaluations. Counted in evaluations, so the result stays deterministic. Measured on the digits MLP (best
#: output error after 20 / 30 / 60 / 300 evaluations): K = 4 tolerance 0.05: 0.0433 / 0.0431 / 0.0414 /
#: 0.0382, same test accuracy throughout: little to gain; tolerance 0.2: 0.0933 / 0.0826 / 0.0668 / 0.0566,
#: loss 0.37 / 0.74 / 0.37 / 0.19 pt. The ratio is 0.5 %: with 0.2 % the digits K = 4 tolerance 0.05
#: solution (93 scalars) ran 254 evaluations (2.3 s, the whole restructure 3.1 s against a 1 s target)
#: instead of 35 (0.29 s), and on the mnist1d MLP (K = 4, accuracy on 12,500 fresh samples of its
#: generator, standard error ~0.3 pt) it bought nothing measurable: tolerance 0.15 (230 scalars) 470
#: evaluations, loss 2.33 pt, agreement 0.814 vs 123 evaluations, 2.56 pt, 0.804; tolerances 0.1 and 0.12
#: the same loss (1.34 / 1.54 pt) either way. 1 % stopped at the same points as 0.5 % there.
STALL_WINDOW = 20
STALL_RATIO = 0.005
#: Priors :func:`choose_ridge` compares (``joint_ridge="auto"``): the refits' own, and the two that narrowed
#: the gap between calibration and fresh samples on the mnist1d MLP (``benchmarks/bench_mnist1d_limits.py``).
RIDGE_CANDIDATES = (DEFAULT_RIDGE, 1e-2, 3e-2)
#: :func:`choose_ridge` holds out every HOLDOUT_EVERY-th calibration sample ...
HOLDOUT_EVERY = 5
#: ... and needs at least this many samples to hold any out (below it, it keeps the default prior).
MIN_SAMPLES_TO_CHOOSE = 100


@dataclass(frozen=True)
class JointRefit:
    """Outcome of :func:`joint_refit`: the network (unchanged if nothing better was found) and figures."""

    network: Network
    accepted: bool
    output_error_before: float
    output_error_after: float
    errors: tuple[float, ...]
    iterations: int
    evaluations: int
    seconds: float
    reason: str


class _OutOfTime(Exception):
    pass


class _Stalled(Exception):
    pass


# ------------------------------------------------------------------------------------- forward/backward
def _conv_backward_input(grad_cols: np.ndarray, layer: Conv2d, in_shape: tuple[int, ...], n: int) -> np.ndarray:
    """Adjoint of im2col: scatter the gradient of the (N·Ho·Wo, C·kh·kw) features back onto the input."""
    c, h, w = in_shape
    kh, kw = layer.W.shape[2:]
    (sh, sw), (ph, pw) = layer.stride, layer.padding
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    # One transpose up front, so every tap below adds a contiguous block.
    taps = np.ascontiguousarray(grad_cols.reshape(n, ho, wo, c, kh, kw).transpose(4, 5, 0, 3, 1, 2))
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad_cols.dtype)
    for u in range(kh):
        for v in range(kw):
            padded[:, :, u : u + sh * (ho - 1) + 1 : sh, v : v + sw * (wo - 1) + 1 : sw] += taps[u, v]
    return padded[:, :, ph : ph + h, pw : pw + w]


def _maxpool_forward(op: MaxPool2d, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling and the (first) argmax of every window, which its gradient needs."""
    (kh, kw), (sh, sw) = op.kernel_size, op.stride
    n, c = x.shape[:2]
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    ho, wo = windows.shape[2:4]
    flat = windows.reshape(n, c, ho, wo, kh * kw)
    first = flat.argmax(axis=-1)
    return np.take_along_axis(flat, first[..., None], axis=-1)[..., 0], first


def _pool_backward(op: MaxPool2d | AvgPool2d, x: np.ndarray, grad: np.ndarray, first: np.ndarray | None) -> np.ndarray:
    """Gradient of a pooling layer with respect to its input ``x`` (max: to the first argmax of each window)."""
    (kh, kw), (sh, sw) = op.kernel_size, op.stride
    ho, wo = grad.shape[2:]
    out = np.zeros_like(x)
    for tap in range(kh * kw):
        u, v = divmod(tap, kw)
        share = grad / (kh * kw) if first is None else np.where(first == tap, grad, 0.0)
        out[:, :, u : u + sh * (ho - 1) + 1 : sh, v : v + sw * (wo - 1) + 1 : sw] += share
    return out


class _Model:
    """The network as (weights on a fixed support, inputs) → pre-activations, with gradients."""

    def __init__(self, network: Network, free: list[bool], dtype: Any):
        self.network, self.dtype = network, dtype
        self.L = network.n_layers
        self.free = free
        self.layers = network.linear_layers
        self.shapes = [network.shapes(l) for l in range(1, self.L + 1)]
        self.posts = [[op for op in network.post_ops(l) if not isinstance(op, (Flatten, Identity))] for l in range(1, self.L + 1)]
        self.masks = [np.flatnonzero(layer.W.reshape(-1) != 0) if free[l] else np.zeros(0, dtype=np.int64)
                      for l, layer in enumerate(self.layers)]
        sizes = []
        for l, layer in enumerate(self.layers):
            sizes += [self.masks[l].size, layer.b.size if free[l] else 0]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def pack(self, network: Network) -> np.ndarray:
        parts = []
        for l, layer in enumerate(network.linear_layers):
            parts.append(layer.W.reshape(-1)[self.masks[l]])
            parts.append(layer.b if self.free[l] else np.zeros(0))
        return np.concatenate(parts).astype(np.float64)

    def weights(self, theta: np.ndarray, dtype: Any = None) -> list[tuple[np.ndarray, np.ndarray]]:
        dtype = self.dtype if dtype is None else dtype
        out = []
        for l, layer in enumerate(self.layers):
            if not self.free[l]:
                out.append((layer.W.astype(dtype), layer.b.astype(dtype)))
                continue
            W = np.zeros(layer.W.size, dtype=dtype)
            W[self.masks[l]] = theta[self.offsets[2 * l] : self.offsets[2 * l + 1]]
            b = theta[self.offsets[2 * l + 1] : self.offsets[2 * l + 2]].astype(dtype)
            out.append((W.reshape(layer.W.shape), b))
        return out

    def network_at(self, theta: np.ndarray) -> Network:
        """The network with the weights ``theta`` (in float64)."""
        return self.network.with_weights(self.weights(theta, np.float64))

    def forward(self, weights: list[tuple[np.ndarray, np.ndarray]], X: np.ndarray) -> tuple[list, tuple[int, list]]:
        """Pre-activations of every layer on the inputs ``X`` (already in ``dtype``) and what backward needs."""
        a = X
        n = a.shape[0]
        pre, caches = [], []
        for l, (layer, (W, b)) in enumerate(zip(self.layers, weights, strict=False)):
            in_shape, pre_shape, _ = self.shapes[l]
            if isinstance(layer, Dense):
                x = a.reshape(n, -1)
                z = x @ W.T + b
            else:
                x = design_matrix("conv2d", a.reshape((n,) + in_shape), in_shape, layer)
                z = (x @ W.reshape(W.shape[0], -1).T + b).reshape(n, pre_shape[1], pre_shape[2], -1).transpose(0, 3, 1, 2)
            pre.append(z)
            inputs, value = [], z
            for op in self.posts[l]:
                if isinstance(op, MaxPool2d):
                    pooled, first = _maxpool_forward(op, value)
                    inputs.append((value, first))
                    value = pooled
                else:
                    inputs.append((value, None))
                    value = op.apply(value)
            caches.append((x, inputs, value))
            a = value
        return pre, (n, caches)

    def backward(self, weights, tape: tuple[int, list], grads_z: list[np.ndarray | None]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Gradients of ``Σ_l <grads_z[l], Z_l>`` with respect to every layer's (W, b); ``tape``: what
        :meth:`forward` returned besides the pre-activations."""
        n, caches = tape
        out: list[Any] = [None] * self.L
        upstream = None  # gradient with respect to layer l's output after its post ops
        for l in range(self.L - 1, -1, -1):
            layer, (W, _) = self.layers[l], weights[l]
            if not any(self.free[: l + 1]):
                out[l] = (np.zeros_like(W), np.zeros(W.shape[0], dtype=W.dtype))
                continue
            x, inputs, _ = caches[l]
            g = upstream
            if g is not None:
                for op, (value, first) in zip(reversed(self.posts[l]), reversed(inputs), strict=True):
                    g = _post_backward(op, value, g, first)
            if grads_z[l] is not None:
                g = grads_z[l] if g is None else g + grads_z[l]
            if g is None:
                out[l] = (np.zeros_like(W), np.zeros(W.shape[0], dtype=W.dtype))
                upstream = None
                continue
            in_shape = self.shapes[l][0]
            if isinstance(layer, Dense):
                out[l] = (g.T @ x, g.sum(axis=0))
                upstream = (g @ W).reshape((n,) + in_shape) if any(self.free[:l]) else None
            else:
                g_mat = g.transpose(0, 2, 3, 1).reshape(-1, g.shape[1])
                out[l] = ((g_mat.T @ x).reshape(W.shape), g_mat.sum(axis=0))
                upstream = None
                if any(self.free[:l]):
                    upstream = _conv_backward_input(g_mat @ W.reshape(W.shape[0], -1), layer, in_shape, n)
            if l and upstream is not None:
                upstream = upstream.reshape((n,) + self.shapes[l - 1][2])
        return out

    def gradient(self, grads: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        parts = []
        for l, (gW, gb) in enumerate(grads):
            if self.free[l]:
                parts += [gW.reshape(-1)[self.masks[l]], gb]
        return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def _post_backward(op: Any, value: np.ndarray, grad: np.ndarray, first: np.ndarray | None = None) -> np.ndarray:
    """Gradient through one post op applied to ``value`` (``first``: a max pool's argmax per window)."""
    if isinstance(op, ReLU):
        return grad * (value > 0)
    if isinstance(op, Tanh):
        return grad * (1.0 - np.tanh(value) ** 2)
    if isinstance(op, Sigmoid):
        s = op.apply(value)
        return grad * s * (1.0 - s)
    if isinstance(op, (MaxPool2d, AvgPool2d)):
        return _pool_backward(op, value, grad, first)
    raise TypeError(f"no gradient for {op!r}")  # pragma: no cover - every post op is handled above


# ------------------------------------------------------------------------------------------- the refit
def evaluation_flops(network: Network, n_samples: int) -> float:
    """Floating-point operations of one objective evaluation (forward and backward pass) on ``n_samples``."""
    forward = sum(float(layer.flops_per_unit.sum()) for layer in network.structure)
    return 3.0 * forward * n_samples


def affordable_evaluations(network: Network, n_samples: int, max_flops: float = WORK_BUDGET) -> int:
    """Objective evaluations on ``n_samples`` that the work budget ``max_flops`` pays for (the refit is skipped
    below :data:`MIN_EVALUATIONS`)."""
    return int(max_flops // max(evaluation_flops(network, n_samples), 1.0))


def joint_refit(original: Network, restructured: Network, X: np.ndarray, caps: Any, *, ridge: float = DEFAULT_RIDGE,
                max_iter: int = 100, max_flops: float = WORK_BUDGET, deadline: float | None = None,
                dtype: Any = np.float32, trace: NetworkTrace | None = None, extra: np.ndarray | None = None) -> JointRefit:
    """Fine-tune every kept weight of ``restructured`` together (see the module docstring).

    Parameters
    ----------
    original, restructured : Network
        Same topology; ``restructured``'s zero weights stay zero.
    X : ndarray
        Calibration inputs.
    caps : sequence of float or None
        Largest relative calibration error allowed per linear layer (the tolerances); ``None``: the
        errors ``restructured`` already has (no layer may get worse: budget mode).
    ridge : float
        Prior toward the original weights, as in :func:`repurpose_opt.lsq.layer_data`.
    max_iter : int
        L-BFGS iterations.
    max_flops : float
        Work budget: the optimiser gets at most ``max_flops / evaluation_flops`` objective evaluations
        (deterministic, unlike a time budget); below :data:`MIN_EVALUATIONS` the refit is skipped.
    deadline : float, optional
        ``time.perf_counter()`` value at which to stop with the best point found so far.
    dtype : numpy dtype
        Arithmetic of the optimiser's passes (the acceptance checks are float64).
    trace : NetworkTrace, optional
        ``original.trace(X)`` when the caller has it (a RestructureProblem's ``calibration_trace``).
    extra : ndarray, optional
        More inputs for the output term only (e.g. :func:`repurpose_opt.boundary.boundary_samples`): the
        output error is measured on ``X`` and ``extra`` together, while the caps, the hinge and the
        acceptance stay on ``X``. The number of evaluations is set by ``X`` alone, so each one costs
        ``(len(X) + len(extra)) / len(X)`` times more.

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> rng = np.random.default_rng(0)
    >>> net = ro.Network([ro.Dense(rng.normal(size=(6, 4))), ro.ReLU(), ro.Dense(rng.normal(size=(3, 6)))], input_shape=(4,))
    >>> W1, W2 = (layer.W.copy() for layer in net.linear_layers)
    >>> W1[:3, 3:] = 0.0; W1[3:, :1] = 0.0           # a pruned first layer: relative errors 0.63, 0.57
    >>> X = rng.normal(size=(200, 4))
    >>> out = joint_refit(net, net.with_weights([(W1, net.linear_layers[0].b), (W2, net.linear_layers[1].b)]), X, [0.8, 0.8])
    >>> out.accepted, round(out.output_error_before, 2), bool(out.output_error_after < 0.3)
    (True, 0.57, True)
    >>> bool(np.all(out.network.linear_layers[0].W[:3, 3:] == 0)), all(e <= 0.8 for e in out.errors)
    (True, True)
    """
    started = time.perf_counter()
    L = original.n_layers
    evaluations = affordable_evaluations(restructured, X.shape[0], max_flops)
    if evaluations < MIN_EVALUATIONS:  # decided before any pass over the data (2 s on a 512-2048-2048-10 MLP)
        return JointRefit(restructured, False, float("nan"), float("nan"), (), 0, 0, time.perf_counter() - started,
                          f"over the work budget ({evaluations} evaluations affordable)")
    trace = original.trace(X) if trace is None else trace  # the targets, and the reference of every error check
    before = calibration_errors(original, restructured, X, reference=trace)
    caps = before.copy() if caps is None else np.asarray(caps, dtype=np.float64).reshape(-1)
    free = free_layers(caps)
    targets = [np.asarray(z, dtype=dtype) for z in trace.pre_activations]
    energy = np.array([float(np.sum(np.asarray(z, dtype=np.float64) ** 2)) for z in trace.pre_activations])

    def result(network: Network, errors: np.ndarray, accepted: bool, it: int, evals: int, reason: str) -> JointRefit:
        return JointRefit(network, accepted, float(before[-1]), float(errors[-1]), tuple(float(e) for e in errors), it, evals,
                          time.perf_counter() - started, reason)

    if not any(free) or energy[-1] <= 0 or before[-1] <= EXACT:
        return result(restructured, before, False, 0, 0, "nothing to refit")
    n, inputs = X.shape[0], X
    out_target, out_energy = targets[-1], energy[-1]
    if extra is not None and len(extra):
        extra_out = original.forward(np.asarray(extra, dtype=np.float64))
        out_target = np.concatenate([out_target, extra_out.astype(dtype)])
        out_energy += float(np.sum(extra_out**2))
        inputs = np.concatenate([X, extra])
    model = _Model(restructured, free, dtype)
    inputs = inputs.astype(dtype)
    theta0 = model.pack(restructured)
    prior = model.pack(original)
    # ρ_l per unit of ||Z_l||²: the least-squares refit's prior, on the joint objective's relative scale.
    weight = np.zeros_like(theta0)
    for l in range(L):
        if not free[l] or energy[l] <= 0:
            continue
        x = trace.activations[l].reshape(n, -1)
        gram_diag = float(np.mean(np.sum(x * x, axis=0)))
        if isinstance(original.linear_layers[l], Conv2d):
            gram_diag *= float(np.prod(original.shapes(l + 1)[1][1:]))  # every output position reads it
        weight[model.offsets[2 * l] : model.offsets[2 * l + 2]] = ridge * max(gram_diag, 1e-300) / energy[l]
    bounds = np.maximum(np.minimum(SAFETY * caps, 1e150) ** 2 * energy, 1e-300)  # a tolerance of 1e300 is just loose
    best = {"f": np.inf, "theta": theta0, "evals": 0, "history": []}

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        if deadline is not None and time.perf_counter() > deadline:
            raise _OutOfTime
        best["evals"] += 1
        weights = model.weights(theta)
        pre, tape = model.forward(weights, inputs)
        grads_z: list[np.ndarray | None] = [None] * L
        residual = pre[-1] - out_target
        value = float(np.sum(residual.astype(np.float64) ** 2)) / out_energy
        # A Python float factor: a NumPy float64 scalar would promote the whole backward pass to float64 (NEP 50).
        grads_z[-1] = (2.0 / float(out_energy)) * residual
        # The output's own error is the objective (acceptance requires it to drop); hidden layers get the hinge.
        for l in range(L - 1):
            if not free[l] and not any(free[:l]):
                continue  # a frozen layer fed by frozen layers keeps its error
            # The caps hold on the calibration samples, not on `extra`.
            penalty, grads_z[l] = hinge(pre[l][:n] - targets[l], bounds[l])
            value += penalty
            if grads_z[l] is not None and pre[l].shape[0] > n:
                grads_z[l] = np.concatenate([grads_z[l], np.zeros_like(pre[l][n:])])
        gradient = model.gradient(model.backward(weights, tape, grads_z))
        delta = theta - prior
        value += float(np.sum(weight * delta * delta))
        gradient += 2 * weight * delta
        if value < best["f"]:
            best["f"], best["theta"] = value, theta.copy()
        history = best["history"]
        history.append(best["f"])
        if len(history) > STALL_WINDOW and history[-1] > (1 - STALL_RATIO) * history[-1 - STALL_WINDOW]:
            raise _Stalled
        return value, gradient

    from scipy.optimize import minimize

    iterations, reason = 0, "converged"
    steps = [0]  # iterations completed, also when the stall or time check cuts a run short

    def count(_theta: np.ndarray) -> None:
        steps[0] += 1

    try:
        # A short memory: each iteration's own cost (O(memory·parameters)) is then small next to an evaluation.
        run = minimize(objective, theta0, jac=True, method="L-BFGS-B", callback=count,
                       options={"maxiter": int(max_iter), "maxfun": evaluations, "maxcor": 10, "ftol": 1e-10, "gtol": 1e-12})
        iterations = int(run.nit)
        if run.nit >= max_iter:
            reason = "iteration limit"
        elif best["evals"] >= evaluations:
            reason = "work budget"
    except _OutOfTime:
        reason = "time limit"
    except _Stalled:
        reason = f"stalled (< {STALL_RATIO:.1%} better over {STALL_WINDOW} evaluations)"
    iterations = max(iterations, steps[0])
    accepted = pull_back(original, model, best["theta"], theta0, X, trace, caps,
                         lambda network, errors: errors[-1] < before[-1])
    if accepted is not None:
        return result(*accepted, True, iterations, best["evals"], reason)
    return result(restructured, before, False, iterations, best["evals"],
                  "time limit" if reason == "time limit" else "no improvement within the caps")


def hinge(r: np.ndarray, bound: float) -> tuple[float, np.ndarray | None]:
    """The cap's penalty ``PENALTY·max(0, ||r||²/bound − 1)²`` on a layer's residual rows ``r = Ẑ_l − Z_l`` and
    its gradient with respect to those rows (in ``r``'s dtype), or ``(0, None)`` within the bound."""
    err = float(np.sum(r.astype(np.float64) ** 2))
    if err <= bound:
        return 0.0, None
    excess = (err - bound) / bound
    # Capped so as to stay finite in float32 whatever the cap; back in r's dtype, which a NumPy float64 factor
    # would otherwise impose on the whole backward pass (NEP 50).
    return PENALTY * excess**2, (min(PENALTY * 4 * excess / bound, 1e30) * r).astype(r.dtype, copy=False)


def free_layers(caps: np.ndarray) -> list[bool]:
    """Which layers a refit may change: a hidden layer that must stay (numerically) exact freezes itself and
    every layer before it, since any upstream change would move it."""
    exact = np.flatnonzero(np.asarray(caps)[:-1] <= EXACT)
    return [l > (exact.max() if exact.size else -1) for l in range(len(caps))]


def pull_back(original: Network, model: _Model, theta: np.ndarray, theta0: np.ndarray, X: np.ndarray,
              trace: NetworkTrace, caps: np.ndarray, better: Any) -> tuple[Network, np.ndarray] | None:
    """The point ``theta``, or the largest step toward it from ``theta0`` (halved up to 8 times), whose
    float64 calibration errors are all within ``caps`` and that ``better(network, errors)`` accepts:
    ``(network, errors)``, or ``None`` when no point of the segment qualifies."""
    for _ in range(8):
        candidate = model.network_at(theta)
        errors = calibration_errors(original, candidate, X, reference=trace)
        if np.all(errors <= caps) and better(candidate, errors):
            return candidate, errors
        theta = 0.5 * (theta + theta0)
    return None


def choose_ridge(original: Network, restructured: Network, X: np.ndarray, caps: Any, *, max_iter: int = 100,
                 max_flops: float = WORK_BUDGET, deadline: float | None = None,
                 candidates: tuple[float, ...] = RIDGE_CANDIDATES) -> tuple[float, dict[float, float]]:
    """The joint refit's prior that generalises best, chosen on held-out calibration samples.

    Every :data:`HOLDOUT_EVERY`-th sample is held out; for each candidate ρ the refit runs on the others and
    the relative output error ``||f̂(X_h) − f(X_h)||/||f(X_h)||`` is measured on the held-out ones. The
    smallest error wins (ties: the smaller ρ). A refit that overfits a small calibration set is pulled
    back by a larger ρ; one that does not is only hurt by it, and the held-out error tells which
    (``benchmarks/bench_mnist1d_limits.py``): on the mnist1d MLP (K = 4, 8 settings) it picked 1e-2 or 3e-2,
    5-8 % below the default's error on 12,500 fresh samples and within 1.2 % of the best prior; on the
    digits MLP (K = 4, tolerances 0.05, 0.1, 0.2) it kept 1e-3, the best there.

    Returns
    -------
    ridge : float
        The chosen ρ (``candidates[0]`` when ``X`` has fewer than :data:`MIN_SAMPLES_TO_CHOOSE` samples).
    errors : dict
        Held-out output error per candidate tried (empty when none was).

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> rng = np.random.default_rng(0)
    >>> net = ro.Network([ro.Dense(rng.normal(size=(8, 4))), ro.ReLU(), ro.Dense(rng.normal(size=(3, 8)))], input_shape=(4,))
    >>> W1 = net.linear_layers[0].W.copy(); W1[:4, 2:] = 0.0
    >>> pruned = net.with_weights([(W1, net.linear_layers[0].b), (net.linear_layers[1].W, net.linear_layers[1].b)])
    >>> ridge, errors = choose_ridge(net, pruned, rng.normal(size=(200, 4)), [1.0, 1.0])
    >>> ridge in errors, sorted(errors) == sorted(RIDGE_CANDIDATES)
    (True, True)
    """
    n = X.shape[0]
    if n < MIN_SAMPLES_TO_CHOOSE:
        return float(candidates[0]), {}
    held = np.arange(HOLDOUT_EVERY - 1, n, HOLDOUT_EVERY)
    fit = np.setdiff1d(np.arange(n), held)
    reference = original.forward(X[held])
    scale = max(float(np.linalg.norm(reference)), 1e-300)
    trace = original.trace(X[fit])  # the targets of every candidate's refit
    errors: dict[float, float] = {}
    for i, ridge in enumerate(candidates):
        own = None  # with a time limit, an equal share of what is left for each refit still to run, the final one included
        if deadline is not None:
            now = time.perf_counter()
            if now > deadline:
                break
            own = now + (deadline - now) / (len(candidates) - i + 1)
        refit = joint_refit(original, restructured, X[fit], caps, ridge=float(ridge), max_iter=max_iter,
                            max_flops=max_flops, deadline=own, trace=trace)
        errors[float(ridge)] = float(np.linalg.norm(refit.network.forward(X[held]) - reference)) / scale
    if not errors:
        return float(candidates[0]), errors
    return min(errors, key=lambda r: (errors[r], r)), errors
