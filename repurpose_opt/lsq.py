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

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.linalg import cho_solve, cholesky, solve_triangular

__all__ = ["LayerData", "WorkerFit", "layer_data"]

# Relative ridge added to the Gram diagonal only to keep Cholesky factors well defined on collinear
# features (duplicated activations are common after ReLU). The perturbation of a fit is about
# RIDGE·cond(G), so it is kept tiny; features that are identically zero on the calibration data get a
# full unit of ridge instead (their weight is then exactly 0 and they are never worth opening).
RIDGE = 1e-12


@dataclass(frozen=True, eq=False)
class LayerData:
    """Everything a layer's refit needs, computed once.

    ``G`` (F+1, F+1) and ``C`` (n_out, F+1) include the bias as the last feature; ``groups[j]`` are the
    feature indices of input unit j; ``target_energy[i] = ||T_i||²``; ``G_exact`` is G without ridge.
    """

    G: np.ndarray
    G_exact: np.ndarray
    C: np.ndarray
    target_energy: np.ndarray
    group_size: int
    n_groups: int
    kind: str

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


def layer_data(network, l: int, x_units: np.ndarray, z_target: np.ndarray) -> LayerData:
    """Gram and correlations of linear layer ``l`` fed ``x_units`` (unit form) against targets ``z_target``."""
    structure = network.structure[l - 1]
    layer = network.linear_layers[l - 1]
    in_shape = network.shapes(l)[0]
    phi = design_matrix(structure.kind, x_units, in_shape, layer)
    T = targets_matrix(structure.kind, z_target)
    ones = np.ones((phi.shape[0], 1))
    phi = np.hstack([phi, ones])
    G_exact = phi.T @ phi
    G = G_exact.copy()
    diag = np.diag(G_exact)
    scale = float(np.mean(diag)) or 1.0
    G[np.diag_indices_from(G)] += np.where(diag <= 1e-12 * scale, scale, RIDGE * scale)
    C = T.T @ phi
    group_size = (phi.shape[1] - 1) // structure.n_inputs
    return LayerData(
        G=G,
        G_exact=G_exact,
        C=C,
        target_energy=np.einsum("mi,mi->i", T, T),
        group_size=group_size,
        n_groups=structure.n_inputs,
        kind=structure.kind,
    )


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
        self.L = _robust_cholesky(data.G[np.ix_(self.support, self.support)])
        self.B = solve_triangular(self.L, data.G[self.support, :], lower=True)
        self.Q = solve_triangular(self.L, self.C[:, self.support].T, lower=True).T
        self.R = self.C - self.Q @ self.B
        self._remaining = np.diag(data.G) - np.einsum("sf,sf->f", self.B, self.B)

    @property
    def error(self) -> float:
        """Squared residual ``Σ_i ||T_i − Φ_S w_i||²`` of these rows (up to the stabilising ridge)."""
        return max(self.energy - float(np.einsum("rs,rs->", self.Q, self.Q)), 0.0)

    def gains(self, candidates: np.ndarray) -> np.ndarray:
        """Error reduction from adding each candidate group (one block-Cholesky step each, vectorised)."""
        candidates = np.asarray(candidates, dtype=np.int64)
        if candidates.size == 0 or self.rows.size == 0:
            return np.zeros(candidates.shape[0])
        g = self.data.group_size
        if g == 1:
            remaining = np.maximum(self._remaining[candidates], 0.0)
            corr = np.einsum("rc,rc->c", self.R[:, candidates], self.R[:, candidates])
            with np.errstate(divide="ignore", invalid="ignore"):
                out = np.where(remaining > 1e-12 * np.diag(self.data.G)[candidates], corr / remaining, 0.0)
            return out
        cols = candidates[:, None] * g + np.arange(g)[None, :]  # (n_c, g)
        B_c = self.B[:, cols]  # (|S|, n_c, g)
        schur = self.data.G[cols[:, :, None], cols[:, None, :]] - np.einsum("sca,scb->cab", B_c, B_c)
        R_c = self.R[:, cols]  # (r, n_c, g)
        out = np.zeros(candidates.shape[0])
        try:
            chol = np.linalg.cholesky(schur)
        except np.linalg.LinAlgError:
            chol = None
        if chol is not None:
            # gain = ||R_c D⁻ᵀ||² with D Dᵀ = Schur complement
            sol = np.linalg.solve(chol, R_c.transpose(1, 2, 0))  # (n_c, g, r)
            out = np.einsum("cgr,cgr->c", sol, sol)
        else:  # fall back to per-candidate pseudo-inverse for singular blocks
            for position in range(candidates.shape[0]):
                pinv = np.linalg.pinv(schur[position], hermitian=True)
                out[position] = float(np.einsum("ra,ab,rb->", R_c[:, position], pinv, R_c[:, position]))
        return np.maximum(out, 0.0)

    def add(self, group: int) -> None:
        """Add one group by a block Cholesky update of ``L``, ``B``, ``Q`` and ``R``."""
        data = self.data
        cols = data.group(group)
        B_g = self.B[:, cols]
        schur = data.G[np.ix_(cols, cols)] - B_g.T @ B_g
        try:
            D = cholesky(schur, lower=True)
        except np.linalg.LinAlgError:
            self.reset(self.groups + [group])
            return
        new_B = solve_triangular(D, data.G[cols, :] - B_g.T @ self.B, lower=True)
        Q_g = solve_triangular(D, self.R[:, cols].T, lower=True).T
        size = self.L.shape[0]
        L = np.zeros((size + len(cols), size + len(cols)))
        L[:size, :size] = self.L
        L[size:, :size] = B_g.T
        L[size:, size:] = D
        self.L = L
        self.B = np.vstack([self.B, new_B])
        self.Q = np.hstack([self.Q, Q_g])
        self.R = self.R - Q_g @ new_B
        self._remaining = self._remaining - np.einsum("sf,sf->f", new_B, new_B)
        self.groups.append(int(group))
        self.support = np.concatenate([self.support, cols])

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
        inverse = cho_solve((self.L, True), np.eye(self.L.shape[0]))
        coef = self.Q @ solve_triangular(self.L, np.eye(self.L.shape[0]), lower=True)  # C_S G_SS⁻¹
        position = {int(f): p for p, f in enumerate(self.support)}
        losses = np.zeros(len(groups))
        for idx, group in enumerate(groups):
            where = [position[int(f)] for f in self.data.group(group)]
            block = inverse[np.ix_(where, where)]
            w = coef[:, where]
            losses[idx] = float(np.einsum("ra,ab,rb->", w, np.linalg.inv(block), w))
        return losses
