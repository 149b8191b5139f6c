"""Eigenvalues of a symmetric matrix and the weights of one vector on its eigenvectors, without forming them.

ρ and the ρ(ε) curve of a Gram matrix K (S, S) need its eigenvalues λ_i and
the weights w_i = (u_iᵀ y)² of one vector y (S,), never the eigenvectors
u_i themselves. An eigh with vectors spends most of its time on them: the
back-transformation alone is about 2·S³ flops, and LAPACK's syevd needs two
more S × S arrays of workspace.

Border K with y,

    M = [[0, yᵀ],
         [y,  K ]]        (S + 1, S + 1),

and reduce M to a tridiagonal T' = Qᵀ M Q by orthogonal similarity where no
transformation touches index 0, so Q = diag(1, Q̃). The first column of T'
is then (0, ±‖y‖, 0, …), which means Q̃ᵀ y = ±‖y‖ e₀, and the trailing block
T = Q̃ᵀ K Q̃ (S, S) is the Lanczos matrix of K started at y. T has the
eigenvalues of K, and with T = Z Λ Zᵀ the weights are w_i = ‖y‖² Z[0, i]².

The reduction runs in two stages, as LAPACK's two-stage eigensolvers do:

1. dense to band of half-width b by blocked Householder transformations
   on the lower triangle (torch GEMMs, about 4/3·S³ flops);
2. band to tridiagonal by LAPACK's dsbtrd, O(S²·b), from the OpenBLAS
   build that the scipy-openblas32 package ships.

Then implicit QL on T, applying its rotations to one row only, gives the
eigenvalues and the first components in O(S²) time and O(S) memory (the
Golub–Welsch computation of Gauss quadrature weights). Every step is
backward stable, so λ and w carry the errors of an eigh with vectors:
eigenvalues to about eps·‖K‖, weights to what the eigenvector directions
allow. The only S × S array is M itself.

Where the band routine cannot be loaded, `weighted_spectrum` falls back to
torch.linalg.eigh with vectors and records that in its `route`.
"""

from __future__ import annotations

import ctypes
import math
import os
from dataclasses import dataclass
from functools import lru_cache

import numba
import numpy as np
import scipy.linalg
import torch

# Half-width of the band after stage 1. Stage 1 does fewer, larger GEMMs as b
# grows, while stage 2 costs O(S²·b). At S = 6,000 on two cores, 48 was the
# fastest (7.4 s for both stages, against 8.5 s at 64 and 8.2 s at 96).
BAND_WIDTH = 48
# LAPACKE's code for column-major arrays.
LAPACK_COL_MAJOR = 102
ROUTE_TRIDIAGONAL = "bordered-tridiagonal"
ROUTE_EIGH = "eigh"


@dataclass(frozen=True)
class WeightedSpectrum:
    """Eigenvalues of a symmetric K (ascending) and the weights (u_iᵀ y)² of one vector y on its eigenvectors."""

    eigenvalues: np.ndarray  # (S,)
    weights: np.ndarray  # (S,), sums to ‖y‖² up to round-off
    route: str  # ROUTE_TRIDIAGONAL or ROUTE_EIGH


def bordered_buffer(size: int) -> torch.Tensor:
    """Return an uninitialised float64 (size + 1, size + 1) matrix. The caller writes K into `buffer[1:, 1:]`."""
    return torch.empty(size + 1, size + 1, dtype=torch.float64)


@lru_cache(maxsize=1)
def _dsbtrd():
    """Load LAPACKE_dsbtrd from scipy-openblas32, or return None where the library cannot be loaded."""
    try:
        import scipy_openblas32
        path = os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(fullname=True))
        function = ctypes.CDLL(path).scipy_LAPACKE_dsbtrd
    except (ImportError, OSError, AttributeError, IndexError):
        return None
    double_p = ctypes.POINTER(ctypes.c_double)
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.c_int, ctypes.c_char, ctypes.c_char, ctypes.c_int, ctypes.c_int, double_p,
                         ctypes.c_int, double_p, double_p, double_p, ctypes.c_int]
    return function


def tridiagonal_route_available() -> bool:
    """Return whether `weighted_spectrum` can take the bordered tridiagonal route on this installation."""
    return _dsbtrd() is not None


def weighted_spectrum(bordered: torch.Tensor, y: np.ndarray, *, force_eigh: bool = False) -> WeightedSpectrum:
    """Return λ and w = (u_iᵀ y)² of the symmetric K stored in `bordered[1:, 1:]` (S, S), for y (S,).

    `bordered` comes from `bordered_buffer`. On the tridiagonal route its
    storage is released once the band is copied out, and the tensor is empty
    afterwards. `force_eigh` takes the eigh route even where the tridiagonal
    one is available, for comparisons.
    """
    size = bordered.shape[0] - 1
    y_t = torch.as_tensor(np.asarray(y, dtype=np.float64))
    if force_eigh or _dsbtrd() is None or size < 2:
        return _eigh_spectrum(bordered[1:, 1:], y_t)

    _write_border(bordered, y_t)
    band = min(BAND_WIDTH, size)
    _reduce_to_band(bordered, band)
    diagonal, off_diagonal = _band_to_tridiagonal(bordered, band)
    bordered.set_()
    eigenvalues, first_components = _tridiagonal_first_components(diagonal[1:], off_diagonal[1:])
    y_norm_sq = float(y_t @ y_t)
    return WeightedSpectrum(eigenvalues, y_norm_sq * first_components**2, ROUTE_TRIDIAGONAL)


def _eigh_spectrum(K: torch.Tensor, y: torch.Tensor) -> WeightedSpectrum:
    eigenvalues, vectors = torch.linalg.eigh(K)
    weights = (vectors.T @ y) ** 2
    return WeightedSpectrum(eigenvalues.numpy(), weights.numpy(), ROUTE_EIGH)


def _write_border(bordered: torch.Tensor, y: torch.Tensor) -> None:
    """Write y into row and column 0.

    Its scale does not matter: the reflectors and rotations that move y
    only combine entries of column 0 with each other, so their round-off is
    relative to ‖y‖ there and to ‖K‖ elsewhere.
    """
    bordered[0, 0] = 0.0
    bordered[1:, 0] = y
    bordered[0, 1:] = y


def _reduce_to_band(A: torch.Tensor, band: int) -> None:
    """Overwrite the lower triangle of the symmetric A (n, n) with that of Qᵀ A Q, of half-width `band`, where Q e₀ = e₀.

    Only the lower triangle is read and kept up to date. The stage streams
    the trailing matrix twice per panel and is bound by memory traffic, so
    halving the entries it touches is most of its speed.

    Panel k (columns k … k+b−1): a QR of the rows below the band,
    A[k+b:, k:k+b] = H R with H = I − V T Vᵀ, replaces them by R; then the
    trailing block becomes Hᵀ A₂₂ H = A₂₂ − V Wᵀ − W Vᵀ with
    X = A₂₂ V T and W = X − ½ V (Tᵀ Vᵀ X). Rows 0 … b of the first panel
    are never touched, which keeps index 0 fixed.
    """
    n = A.shape[0]
    for k in range(0, n - band - 1, band):
        panel = A[k + band:, k:k + band]  # (n − k − b, b)
        reflectors, tau = torch.geqrf(panel)
        width = min(panel.shape)
        V = torch.tril(reflectors[:, :width], diagonal=-1)
        V.diagonal().fill_(1.0)
        T = _block_reflector_factor(V, tau[:width])
        panel.zero_()
        panel[:width] = torch.triu(reflectors[:width])

        trailing = A[k + band:, k + band:]
        X = _symmetric_times(trailing, V @ T)
        W = X - 0.5 * (V @ (T.T @ (V.T @ X)))
        _lower_rank_update(trailing, torch.cat([V, W], dim=1), torch.cat([W, V], dim=1))


# Rows per block in the lower-triangle products. A (128, n) float64 block is
# 31 MB at n = 30,000, so it should still be in this machine's 32 MiB L3 cache
# for its second use (an estimate, not measured). At n = 6,000, 128 was the
# fastest: 4.9 s against 5.1 s at 256 and 6.7 s for full-matrix products.
ROW_BLOCK = 128


def _symmetric_times(S: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Return S Y for a symmetric S (m, m) whose lower triangle alone is valid, and Y (m, w)."""
    m = S.shape[0]
    X = torch.zeros(m, Y.shape[1], dtype=S.dtype)
    for i0 in range(0, m, ROW_BLOCK):
        i1 = min(i0 + ROW_BLOCK, m)
        diagonal_block = S[i0:i1, i0:i1]
        X[i0:i1].addmm_(torch.tril(diagonal_block) + torch.tril(diagonal_block, -1).T, Y[i0:i1])
        if i0:
            left = S[i0:i1, :i0]  # strictly below the diagonal
            X[i0:i1].addmm_(left, Y[:i0])
            X[:i0].addmm_(left.T, Y[i0:i1])
    return X


def _lower_rank_update(S: torch.Tensor, L: torch.Tensor, R: torch.Tensor) -> None:
    """Subtract L Rᵀ from the lower triangle of S (m, m), one block of rows at a time, diagonal blocks whole."""
    m = S.shape[0]
    for i0 in range(0, m, ROW_BLOCK):
        i1 = min(i0 + ROW_BLOCK, m)
        S[i0:i1, :i1].addmm_(L[i0:i1], R[:i1].T, alpha=-1.0)


def _block_reflector_factor(V: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Return the upper triangular T (b, b) with H₁ H₂ … H_b = I − V T Vᵀ for H_i = I − τ_i v_i v_iᵀ, as LAPACK's dlarft does."""
    width = tau.shape[0]
    T = torch.zeros(width, width, dtype=V.dtype)
    gram = V.T @ V
    for i in range(width):
        T[i, i] = tau[i]
        if i:
            T[:i, i] = -tau[i] * (T[:i, :i] @ gram[:i, i])
    return T


def _band_to_tridiagonal(A: torch.Tensor, band: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the diagonal (n,) and off-diagonal (n − 1,) of the tridiagonal form of the banded symmetric A (n, n).

    dsbtrd's plane rotations for the first column act on rows 1 … b and
    below, never on row 0, so index 0 stays fixed through this stage too.
    """
    n = A.shape[0]
    dense = A.numpy()
    # Lower band storage, column-major (b + 1, n): ab[i − j, j] = A[i, j].
    # A C-ordered (n, b + 1) array has that layout.
    ab = np.zeros((n, band + 1), dtype=np.float64)
    for offset in range(band + 1):
        ab[:n - offset, offset] = np.diagonal(dense, -offset)
    diagonal = np.empty(n, dtype=np.float64)
    off_diagonal = np.empty(max(n - 1, 1), dtype=np.float64)
    unused_q = np.zeros(1, dtype=np.float64)
    double_p = ctypes.POINTER(ctypes.c_double)
    info = _dsbtrd()(LAPACK_COL_MAJOR, b"N", b"L", n, band, ab.ctypes.data_as(double_p), band + 1,
                     diagonal.ctypes.data_as(double_p), off_diagonal.ctypes.data_as(double_p),
                     unused_q.ctypes.data_as(double_p), 1)
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK dsbtrd returned info = {info}")
    return diagonal, off_diagonal[:n - 1]


def _tridiagonal_first_components(diagonal: np.ndarray, off_diagonal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the eigenvalues (ascending) of a symmetric tridiagonal matrix and the first components of its unit eigenvectors."""
    eigenvalues, first_row, converged = _implicit_ql_first_row(diagonal, off_diagonal, QL_MAX_SWEEPS)
    if not converged:
        # LAPACK's MRRR forms all eigenvectors (S², memory and time) but
        # has no iteration limit of this kind.
        eigenvalues, vectors = scipy.linalg.eigh_tridiagonal(diagonal, off_diagonal, lapack_driver="stemr")
        return eigenvalues, vectors[0].copy()
    order = np.argsort(eigenvalues)
    return eigenvalues[order], first_row[order]


# QL sweeps allowed per eigenvalue before the LAPACK fallback. EISPACK's tql2 allows 30.
QL_MAX_SWEEPS = 60


@numba.njit(cache=True)
def _implicit_ql_first_row(diagonal, off_diagonal, max_sweeps):  # pragma: no cover - compiled
    """Run implicit QL with Wilkinson shifts on a symmetric tridiagonal matrix, tracking only row 0 of the eigenvectors.

    LAPACK's tridiagonal solvers form every eigenvector (S² numbers) when
    any is requested. Gauss quadrature (Golub and Welsch) needs only their
    first components. The rotations are those of EISPACK's tql2, applied to one
    row instead of S. Returns (eigenvalues unsorted, first components,
    converged).
    """
    n = diagonal.shape[0]
    d = diagonal.copy()
    e = np.zeros(n)
    e[:n - 1] = off_diagonal
    z = np.zeros(n)
    z[0] = 1.0
    eps = np.finfo(np.float64).eps
    for l in range(n):
        sweeps = 0
        while True:
            # The first negligible off-diagonal at or after l ends the block.
            m = l
            while m < n - 1 and abs(e[m]) > eps * (abs(d[m]) + abs(d[m + 1])):
                m += 1
            if m == l:
                break
            sweeps += 1
            if sweeps > max_sweeps:
                return d, z, False
            g = (d[l + 1] - d[l]) / (2.0 * e[l])
            r = math.hypot(g, 1.0)
            g = d[m] - d[l] + e[l] / (g + math.copysign(r, g))
            s = 1.0
            c = 1.0
            p = 0.0
            i = m - 1
            split = False
            while i >= l:
                f = s * e[i]
                b = c * e[i]
                r = math.hypot(f, g)
                e[i + 1] = r
                if r == 0.0:
                    # An off-diagonal underflowed: the block splits here.
                    d[i + 1] -= p
                    e[m] = 0.0
                    split = True
                    break
                s = f / r
                c = g / r
                g = d[i + 1] - p
                r = (d[i] - g) * s + 2.0 * c * b
                p = s * r
                d[i + 1] = g + p
                g = c * r - b
                upper = z[i + 1]
                z[i + 1] = s * z[i] + c * upper
                z[i] = c * z[i] - s * upper
                i -= 1
            if split:
                continue
            d[l] -= p
            e[l] = g
            e[m] = 0.0
    return d, z, True
