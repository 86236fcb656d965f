"""Least squares over grouped features through one shared Gram matrix and Cholesky updates.

Refitting a layer after pruning is a multi-output least-squares problem: every output unit i on worker k
is refit from the features worker k holds. Features come in *groups*, one per input unit (1 column for a
dense input, H·W columns for a channel read by a Dense after Flatten, kh·kw columns for a conv input
channel), plus one bias column that every worker holds. All units on one worker share the same support, so
a worker's fit is ``W_k = C_k[:, S] G[S, S]^{-1}`` with the layer's shared Gram ``G = Φᵀ Φ`` and
correlations ``C = Tᵀ Φ``.

:class:`WorkerFit` keeps, for one worker, the Cholesky factor ``L`` of ``G[S, S]``, ``B = L⁻¹ G[S, :]``,
``Q = C_k[:, S] L⁻ᵀ`` and the residual correlations ``R = C_k − Q B``. Adding a group is a block
Cholesky update (never a fresh factorisation), and the error reduction of *every* candidate group is read
off ``R`` and the Schur complements at once: this is group orthogonal matching pursuit.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import linalg

# The factorisations and triangular solves below skip scipy's finiteness scan: every matrix they see is
# built from a Gram matrix of calibration data whose finiteness and energy the problem checked on
# construction (problems/_common.py), and the scan of every argument took ~0.04 s of the ~1 s digits MLP
# restructuring (K = 4, tolerance 0.05: thousands of small solves).
cholesky = partial(linalg.cholesky, check_finite=False)
solve_triangular = partial(linalg.solve_triangular, check_finite=False)

__all__ = ["LayerData", "WorkerFit", "InverseFit", "layer_data", "blas_threads"]

# Refits are regularised toward the original weights w₀: min ||T − Φw||² + ρ·||w − w₀||², i.e. the same
# least squares with G + ρI and C + ρ·W₀. Directions the calibration data does not excite (constant
# pixels, collinear activations) then keep their original weights instead of drifting, which is what
# makes a refit generalise beyond the calibration set; a layer whose inputs are all available is
# reproduced exactly (C = G·w₀ there). ρ is relative to the mean diagonal of G. Because the penalty is
# non-negative, the regularised error is an upper bound of the plain error, so stopping on it never
# breaks a tolerance.
DEFAULT_RIDGE = 1e-3
# Floor on ρ so Cholesky factors stay defined on rank-deficient Grams even with ridge=0.
STABILIZER = 1e-12


@dataclass(frozen=True, eq=False)
class LayerData:
    """Everything a layer's refit needs, computed once.

    ``G`` (F+1, F+1) and ``C`` (n_out, F+1) include the bias as the last feature and the prior term;
    ``target_energy[i] = ||T_i||² + ρ||w₀_i||²`` (the regularised error of w = 0); ``data_energy[i] =
    ||T_i||²``; ``G_exact = ΦᵀΦ``. Group j's features are ``j·group_size .. (j+1)·group_size − 1``.
    """

    G: np.ndarray
    G_exact: np.ndarray
    C: np.ndarray
    target_energy: np.ndarray
    group_size: int
    n_groups: int
    kind: str
    data_energy: np.ndarray  # ||T_i||² without the prior term: what tolerances are relative to

    @property
    def n_features(self) -> int:
        return self.G.shape[0]

    @property
    def bias_index(self) -> int:
        return self.G.shape[0] - 1

    def group(self, j: int) -> np.ndarray:
        return np.arange(j * self.group_size, (j + 1) * self.group_size)

    def support(self, groups: np.ndarray) -> np.ndarray:
        """Feature indices of ``groups`` followed by the bias."""
        groups = np.asarray(groups, dtype=np.int64)
        cols = (groups[:, None] * self.group_size + np.arange(self.group_size)[None, :]).ravel()
        return np.concatenate([cols, [self.bias_index]]).astype(np.int64)

    def weights_to_layer(self, coef: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Split a (n_out, F+1) coefficient matrix into the layer's flat weights and bias."""
        return coef[:, :-1], coef[:, -1]


def design_matrix(kind: str, x_units: np.ndarray, in_shape: tuple[int, ...], layer) -> np.ndarray:
    """Features Φ (M, F) of a layer's input, grouped by input unit, in the layer's weight order."""
    n = x_units.shape[0]
    if kind == "dense":
        return x_units.reshape(n, -1)
    c, h, w = in_shape
    x = x_units.reshape(n, c, h, w)
    ph, pw = layer.padding
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    kh, kw = layer.W.shape[2:]
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, :: layer.stride[0], :: layer.stride[1]]
    # (N, C, Ho, Wo, kh, kw) -> (N·Ho·Wo, C·kh·kw): feature index c·kh·kw + u·kw + v, as in W[i].ravel().
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, c * kh * kw)


def targets_matrix(kind: str, z: np.ndarray) -> np.ndarray:
    """Targets T (M, n_out) matching :func:`design_matrix`'s rows."""
    if kind == "dense":
        return z
    return z.transpose(0, 2, 3, 1).reshape(-1, z.shape[1])


def layer_data(network, l: int, x_units: np.ndarray, z_target: np.ndarray, ridge: float = DEFAULT_RIDGE) -> LayerData:
    """Gram and correlations of linear layer ``l`` fed ``x_units`` (unit form) against ``z_target``.

    The layer's current weights are the prior w₀ of the refit (see ``DEFAULT_RIDGE``).
    """
    structure = network.structure[l - 1]
    layer = network.linear_layers[l - 1]
    in_shape = network.shapes(l)[0]
    phi = design_matrix(structure.kind, x_units, in_shape, layer)
    T = targets_matrix(structure.kind, z_target)
    phi = np.hstack([phi, np.ones((phi.shape[0], 1))])
    G_exact = phi.T @ phi
    scale = float(np.mean(np.diag(G_exact))) or 1.0
    rho = max(ridge, STABILIZER) * scale
    prior = np.hstack([layer.W.reshape(layer.W.shape[0], -1), layer.b[:, None]])
    G = G_exact + rho * np.eye(G_exact.shape[0])
    C = T.T @ phi + rho * prior
    energy = np.einsum("mi,mi->i", T, T) + rho * np.einsum("if,if->i", prior, prior)
    return LayerData(
        G=G,
        G_exact=G_exact,
        C=C,
        target_energy=energy,
        group_size=(phi.shape[1] - 1) // structure.n_inputs,
        n_groups=structure.n_inputs,
        kind=structure.kind,
        data_energy=np.einsum("mi,mi->i", T, T),
    )


def blas_threads(network: Any) -> Any:
    """One BLAS thread for the refits of ``network`` (a scoped ``threadpoolctl`` limit).

    The refits are long sequences of triangular solves and GEMM/GEMV updates whose operands are only a few
    MB; on a shared machine a multi-threaded BLAS spends more time synchronising its threads on those than
    computing. Measured on a loaded 2-core machine: the digits MLP restructure takes 4–9 s with two
    OpenBLAS threads and 0.9 s with one; the group OMP of one 2048×2048 layer at K = 8 (7085 pairs) 65 s
    with two threads and 8 s with one. Wide layers are therefore no exception. ``network`` is kept for
    callers that may want to decide per network.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _robust_cholesky(matrix: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor, adding diagonal jitter only if round-off made the matrix indefinite."""
    jitter = 0.0
    scale = float(np.mean(np.diag(matrix))) if matrix.size else 1.0
    for _ in range(8):
        try:
            return cholesky(matrix + jitter * np.eye(matrix.shape[0]), lower=True)
        except np.linalg.LinAlgError:
            jitter = max(jitter * 100, 1e-12 * scale)
    raise np.linalg.LinAlgError("Gram block is not positive definite even with jitter")


class WorkerFit:
    """Incremental least-squares fit of the rows ``rows`` of a layer over a growing set of groups."""

    def __init__(self, data: LayerData, rows: np.ndarray, groups: np.ndarray):
        self.data = data
        self.rows = np.asarray(rows, dtype=np.int64)
        self.C = data.C[self.rows]
        self.energy = float(data.target_energy[self.rows].sum())
        self.reset(groups)

    # ------------------------------------------------------------------------------------------- state
    def reset(self, groups: np.ndarray) -> None:
        """Factor the support of ``groups`` (+ bias) from scratch."""
        data = self.data
        self.groups = [int(g) for g in groups]
        self.support = data.support(np.asarray(self.groups, dtype=np.int64))
        L = _robust_cholesky(data.G[np.ix_(self.support, self.support)])
        size = L.shape[0]
        # L, B and Q live in buffers with spare room, so adding a group appends in place instead of copying.
        self._size = 0
        self._reserve(size + 64)
        self._size = size
        self._L[:size, :size] = L
        self._B[:size] = solve_triangular(L, data.G[self.support, :], lower=True)
        self._Q[:, :size] = solve_triangular(L, self.C[:, self.support].T, lower=True).T
        self.R = self.C - self.Q @ self.B
        self._remaining = np.diag(data.G) - np.einsum("sf,sf->f", self.B, self.B)
        self._fitted = float(np.einsum("rs,rs->", self.Q, self.Q))
        self._losses = None

    def snapshot(self) -> tuple:
        """The fit's state, to :meth:`restore` without refactorising (cheaper than :meth:`reset`)."""
        size = self._size
        return (size, self._L[:size, :size].copy(), self._B[:size].copy(), self._Q[:, :size].copy(), self.R.copy(),
                self._remaining.copy(), self._fitted, list(self.groups), self.support.copy())

    def restore(self, state: tuple) -> None:
        """Return to a :meth:`snapshot`."""
        size, L, B, Q, R, remaining, fitted, groups, support = state
        if size > self._L.shape[0]:
            self._size = 0
            self._reserve(size + 64)
        self._L[:size, :size], self._B[:size], self._Q[:, :size] = L, B, Q
        self._size = size
        self.R, self._remaining, self._fitted = R, remaining, fitted
        self.groups, self.support = groups, support
        self._losses = None

    def _reserve(self, capacity: int) -> None:
        size, n_features = self._size, self.data.n_features
        if size and capacity <= self._L.shape[0]:
            return
        L = np.zeros((capacity, capacity))
        B = np.zeros((capacity, n_features))
        Q = np.zeros((self.rows.size, capacity))
        if size:
            L[:size, :size] = self._L[:size, :size]
            B[:size] = self._B[:size]
            Q[:, :size] = self._Q[:, :size]
        self._L, self._B, self._Q = L, B, Q

    @property
    def L(self) -> np.ndarray:
        """Lower Cholesky factor of ``G[S, S]`` in support order."""
        return self._L[: self._size, : self._size]

    @property
    def B(self) -> np.ndarray:
        """``L⁻¹ G[S, :]``."""
        return self._B[: self._size]

    @property
    def Q(self) -> np.ndarray:
        """``C_k[:, S] L⁻ᵀ``; the fitted energy is ``||Q||²``."""
        return self._Q[:, : self._size]

    @property
    def error(self) -> float:
        """Regularised squared residual of these rows (see :data:`DEFAULT_RIDGE`)."""
        return max(self.energy - self._fitted, 0.0)

    def gains(self, candidates: np.ndarray) -> np.ndarray:
        """Error reduction from adding each candidate group (one block-Cholesky step each, vectorised)."""
        candidates = np.asarray(candidates, dtype=np.int64)
        if candidates.size == 0 or self.rows.size == 0:
            return np.zeros(candidates.shape[0])
        g = self.data.group_size
        if g == 1:
            remaining = np.maximum(self._remaining[candidates], 0.0)
            corr = np.einsum("rf,rf->f", self.R, self.R)[candidates]
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(remaining > 1e-12 * np.diag(self.data.G)[candidates], corr / remaining, 0.0)
        cols = candidates[:, None] * g + np.arange(g)[None, :]  # (n_c, g)
        B_c = self.B[:, cols]  # (|S|, n_c, g)
        schur = self.data.G[cols[:, :, None], cols[:, None, :]] - np.einsum("sca,scb->cab", B_c, B_c)
        R_c = self.R[:, cols]  # (r, n_c, g)
        try:
            chol = np.linalg.cholesky(schur)
            # gain = ||R_c D⁻ᵀ||² with D Dᵀ = the Schur complement of the candidate block
            sol = np.linalg.solve(chol, R_c.transpose(1, 2, 0))  # (n_c, g, r)
            out = np.einsum("cgr,cgr->c", sol, sol)
        except np.linalg.LinAlgError:  # a singular block: pseudo-inverse per candidate
            out = np.array([
                float(np.einsum("ra,ab,rb->", R_c[:, c], np.linalg.pinv(schur[c], hermitian=True), R_c[:, c]))
                for c in range(candidates.shape[0])
            ])
        return np.maximum(out, 0.0)

    def add(self, group: int) -> None:
        """Add one group (see :meth:`add_many`)."""
        self.add_many([group])

    def add_many(self, groups: list[int]) -> None:
        """Add groups by one block Cholesky update of ``L``, ``B``, ``Q`` and ``R``.

        A block of m groups costs one GEMM over the |S|×F buffer instead of m GEMVs, which is what makes
        opening thousands of pairs affordable on wide layers.
        """
        data = self.data
        cols = np.concatenate([data.group(g) for g in groups])
        width = cols.size
        B_c = self.B[:, cols]
        schur = data.G[np.ix_(cols, cols)] - B_c.T @ B_c
        try:
            D = cholesky(schur, lower=True)
            if np.min(np.diag(D)) ** 2 <= 1e-14 * float(np.max(np.diag(data.G)[cols])):
                raise np.linalg.LinAlgError("nearly dependent block")
        except np.linalg.LinAlgError:
            if len(groups) > 1:  # dependent candidates: fall back to one at a time
                for group in groups:
                    self.add_many([group])
            else:
                self.reset(self.groups + list(groups))
            return
        new_B = solve_triangular(D, data.G[cols, :] - B_c.T @ self.B, lower=True)
        Q_c = solve_triangular(D, self.R[:, cols].T, lower=True).T
        size = self._size
        if size + width > self._L.shape[0]:
            self._reserve(2 * (size + width))
        self._L[size : size + width, :size] = B_c.T
        self._L[size : size + width, size : size + width] = D
        self._B[size : size + width] = new_B
        self._Q[:, size : size + width] = Q_c
        self._size = size + width
        self.R -= Q_c @ new_B
        self._remaining -= np.einsum("sf,sf->f", new_B, new_B)
        self._fitted += float(np.einsum("rg,rg->", Q_c, Q_c))
        self.groups.extend(int(g) for g in groups)
        self.support = np.concatenate([self.support, cols])
        self._losses = None

    def coefficients(self) -> np.ndarray:
        """Refit coefficients (rows × (F+1)), zero outside the support."""
        coef = np.zeros((self.rows.size, self.data.n_features))
        if self.rows.size:
            coef[:, self.support] = solve_triangular(self.L, self.Q.T, lower=True, trans="T").T
        return coef

    def removal_losses(self, groups: list[int]) -> np.ndarray:
        """Error increase from dropping each of ``groups`` from the support (one inverse, vectorised)."""
        if not groups or self.rows.size == 0:
            return np.zeros(len(groups))
        key = tuple(groups)
        if self._losses is not None and self._losses[0] == key:
            return self._losses[1]
        eye = np.eye(self._size)
        L_inv = solve_triangular(self.L, eye, lower=True)
        inverse = L_inv.T @ L_inv  # G_SS⁻¹
        coef = self.Q @ L_inv  # C_S G_SS⁻¹
        position = np.full(self.data.n_features, -1, dtype=np.int64)
        position[self.support] = np.arange(self.support.size)
        where = position[np.asarray(groups, dtype=np.int64)[:, None] * self.data.group_size + np.arange(self.data.group_size)]
        w = coef[:, where]  # (rows, n, g)
        # Dropping a group from a least-squares fit costs wᵀ (G⁻¹)_gg⁻¹ w per row.
        if self.data.group_size == 1:
            losses = np.einsum("rn,rn->n", w[:, :, 0], w[:, :, 0]) / inverse[where[:, 0], where[:, 0]]
        else:
            blocks = inverse[where[:, :, None], where[:, None, :]]  # (n, g, g)
            solved = np.linalg.solve(blocks, w.transpose(1, 2, 0))  # (n, g, rows)
            losses = np.einsum("ngr,rng->n", solved, w)
        self._losses = (key, losses)
        return losses


class InverseFit:
    """A :class:`WorkerFit` seen through ``G[S, S]⁻¹`` and ``W = C_k[:, S] G[S, S]⁻¹``, for dropping groups.

    Removing a set D of groups from a least-squares fit raises its error by exactly
    ``Σ_rows W_D ((G⁻¹)_DD)⁻¹ W_Dᵀ``, and the inverse and coefficients of the smaller support follow by the
    Schur downdate ``G⁻¹ ← G⁻¹_S'S' − G⁻¹_S'D ((G⁻¹)_DD)⁻¹ G⁻¹_DS'``: O(|S|²·|D|), without touching the
    (|S|, F) buffers a :meth:`WorkerFit.reset` recomputes in O(|S|²·F). Backward elimination drops
    hundreds of pairs per worker on wide layers this way, and refactorises once at the end.
    """

    def __init__(self, fit: WorkerFit):
        size = fit.L.shape[0]
        L_inv = solve_triangular(fit.L, np.eye(size), lower=True)
        self.inverse = L_inv.T @ L_inv
        self.coef = fit.Q @ L_inv
        self.support = fit.support.copy()
        self.groups = list(fit.groups)
        self.group_size = fit.data.group_size

    def _where(self, groups: list[int]) -> np.ndarray:
        """(len(groups), group_size) positions of the groups' features in the support."""
        position = {int(f): i for i, f in enumerate(self.support)}
        g = self.group_size
        return np.array([[position[j * g + a] for a in range(g)] for j in groups], dtype=np.int64).reshape(len(groups), g)

    def losses(self, groups: list[int]) -> np.ndarray:
        """Error increase from dropping each of ``groups`` alone."""
        if not groups or self.coef.shape[0] == 0:
            return np.zeros(len(groups))
        where = self._where(groups)
        w = self.coef[:, where]  # (rows, n, g)
        if self.group_size == 1:
            return np.einsum("rn,rn->n", w[:, :, 0], w[:, :, 0]) / self.inverse[where[:, 0], where[:, 0]]
        blocks = self.inverse[where[:, :, None], where[:, None, :]]
        solved = np.linalg.solve(blocks, w.transpose(1, 2, 0))
        return np.einsum("ngr,rng->n", solved, w)

    def joint_loss(self, groups: list[int]) -> float:
        """Error increase from dropping all of ``groups`` at once (exact, interactions included)."""
        if not groups or self.coef.shape[0] == 0:
            return 0.0
        idx = self._where(groups).ravel()
        w = self.coef[:, idx]
        block = self.inverse[np.ix_(idx, idx)]
        return float(np.einsum("rd,dr->", w, np.linalg.solve(block, w.T)))

    def drop(self, groups: list[int]) -> None:
        """Remove ``groups`` from the support (Schur downdate of the inverse and the coefficients)."""
        idx = self._where(groups).ravel()
        keep = np.setdiff1d(np.arange(self.support.size), idx)
        block = self.inverse[np.ix_(idx, idx)]
        cross = self.inverse[np.ix_(idx, keep)]  # (G⁻¹)_DS'
        solved = np.linalg.solve(block, cross)
        self.coef = self.coef[:, keep] - self.coef[:, idx] @ solved
        self.inverse = self.inverse[np.ix_(keep, keep)] - cross.T @ solved
        self.support = self.support[keep]
        dropped = set(groups)
        self.groups = [j for j in self.groups if j not in dropped]

