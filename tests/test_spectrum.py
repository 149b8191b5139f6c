"""Eigenvalues and weights from the bordered tridiagonal route, checked against numpy's float64 eigh and SVD."""

import numpy as np
import pytest
import scipy.linalg
import torch

from advisor import spectrum
from advisor.spectrum import (BAND_WIDTH, ROUTE_EIGH, ROUTE_TRIDIAGONAL, _tridiagonal_first_components, bordered_buffer,
                              tridiagonal_route_available, weighted_spectrum)


def bordered(K: np.ndarray) -> torch.Tensor:
    buffer = bordered_buffer(K.shape[0])
    buffer[1:, 1:] = torch.from_numpy(K)
    return buffer


def gram_case(rows: int, rank: int, columns: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """J (rows, columns) of the given rank with singular values spread over three decades, K = J Jᵀ, and y."""
    rng = np.random.default_rng(seed)
    J = rng.standard_normal((rows, rank)) @ (rng.standard_normal((rank, columns)) * np.logspace(0, -3, columns))
    return J, J @ J.T, rng.standard_normal(rows)


def test_route_is_available():
    # scipy-openblas32 is a dependency; without it every exact run falls back to eigh.
    assert tridiagonal_route_available()


@pytest.mark.parametrize("rows, rank", [(2, 2), (3, 1), (47, 47), (49, 49), (150, 150), (150, 40), (131, 130), (420, 420), (420, 200)])
def test_matches_float64_svd(rows, rank):
    # Sizes below, at and above the band width, several panels, and
    # trailing matrices of more than one row block (ROW_BLOCK = 128).
    J, K, y = gram_case(rows, rank, 2 * rows + 5, seed=rows + rank)
    U, s, _ = np.linalg.svd(J, full_matrices=False)
    reference = (U.T @ y) ** 2  # weights on the left singular vectors

    spectrum = weighted_spectrum(bordered(K), y)

    assert spectrum.route == ROUTE_TRIDIAGONAL
    lam_max = s[0] ** 2
    np.testing.assert_allclose(np.sort(spectrum.eigenvalues)[::-1][:rank], s[:rank] ** 2, rtol=0, atol=1e-13 * lam_max)
    # Weight on the kept directions (σ above the Gram route's tolerance) and
    # on the rest: the null space of a rank-deficient K has repeated zero
    # eigenvalues, so only its total weight is defined.
    cutoff = lam_max * rows * np.finfo(np.float64).eps
    weight_above_cutoff = spectrum.weights[spectrum.eigenvalues > cutoff].sum()
    assert weight_above_cutoff == pytest.approx(reference[s**2 > cutoff].sum(), abs=1e-10 * (y @ y))
    assert spectrum.weights.sum() == pytest.approx(y @ y, rel=1e-12)


def test_matches_eigh_route():
    _, K, y = gram_case(120, 120, 300, seed=5)

    fast = weighted_spectrum(bordered(K), y)
    reference = weighted_spectrum(bordered(K), y, force_eigh=True)

    assert reference.route == ROUTE_EIGH
    np.testing.assert_allclose(fast.eigenvalues, reference.eigenvalues, rtol=0, atol=1e-13 * reference.eigenvalues.max())
    np.testing.assert_allclose(fast.weights, reference.weights, rtol=0, atol=1e-9 * (y @ y))


def test_repeated_eigenvalues_split_krylov():
    # Four distinct eigenvalues with multiplicities 10 to 40: the Krylov
    # space of y has dimension 4, so the Lanczos matrix splits into blocks,
    # and all but the first must carry zero weight.
    values = np.repeat([1.0, 2.0, 3.0, 5.0], [20, 30, 10, 40])
    rng = np.random.default_rng(2)
    Q, _ = np.linalg.qr(rng.standard_normal((100, 100)))
    K = (Q * values) @ Q.T
    y = rng.standard_normal(100)
    expected = {v: float(((Q[:, values == v].T @ y) ** 2).sum()) for v in np.unique(values)}

    spectrum = weighted_spectrum(bordered(K), y)

    np.testing.assert_allclose(np.sort(spectrum.eigenvalues), values, atol=1e-12)
    for v, total in expected.items():
        near = np.abs(spectrum.eigenvalues - v) < 1e-6
        assert spectrum.weights[near].sum() == pytest.approx(total, rel=1e-10)


def test_zero_matrix_and_zero_vector():
    zero = weighted_spectrum(bordered(np.zeros((60, 60))), np.ones(60))
    assert np.all(zero.eigenvalues == 0)
    assert zero.weights.sum() == pytest.approx(60.0)

    no_weight = weighted_spectrum(bordered(np.eye(60)), np.zeros(60))
    np.testing.assert_allclose(no_weight.eigenvalues, 1.0)
    assert np.all(no_weight.weights == 0)


@pytest.mark.parametrize("scale", [1e-12, 1e15])
def test_border_scale_does_not_matter(scale):
    # y far smaller or larger than K: the weights scale with ‖y‖² and the
    # eigenvalues do not move.
    _, K, y = gram_case(80, 80, 200, seed=7)
    unit = weighted_spectrum(bordered(K), y)

    scaled = weighted_spectrum(bordered(K), scale * y)

    np.testing.assert_allclose(scaled.eigenvalues, unit.eigenvalues, rtol=1e-9)
    np.testing.assert_allclose(scaled.weights / scale**2, unit.weights, rtol=0, atol=1e-11 * (y @ y))


def test_buffer_is_released():
    buffer = bordered(gram_case(2 * BAND_WIDTH, 2 * BAND_WIDTH, 300, seed=1)[1])
    weighted_spectrum(buffer, np.ones(2 * BAND_WIDTH))
    assert buffer.numel() == 0


def tridiagonal_case(n: int, seed: int, graded: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    d, e = rng.standard_normal(n), rng.standard_normal(n - 1)
    if graded:
        # Entries falling over eight decades, like a Lanczos matrix of an ill-conditioned Gram matrix.
        d, e = np.abs(d) * np.logspace(0, -8, n), np.abs(e) * np.logspace(0, -8, n - 1) * 0.3
    return d, e


@pytest.mark.parametrize("n, graded", [(1, False), (2, False), (40, False), (400, False), (400, True)])
def test_first_components_match_lapack(n, graded):
    d, e = tridiagonal_case(n, seed=n, graded=graded)
    reference_values, vectors = scipy.linalg.eigh_tridiagonal(d, e)

    values, first = _tridiagonal_first_components(d, e)

    np.testing.assert_allclose(values, reference_values, rtol=0, atol=1e-13 * np.abs(reference_values).max())
    np.testing.assert_allclose(first**2, vectors[0] ** 2, rtol=0, atol=1e-12)


def test_first_components_with_a_split():
    # A zero off-diagonal splits T: the lower block's eigenvectors have no first component.
    d, e = tridiagonal_case(60, seed=3, graded=False)
    e[29] = 0.0
    reference_values, vectors = scipy.linalg.eigh_tridiagonal(d, e)

    values, first = _tridiagonal_first_components(d, e)

    np.testing.assert_allclose(values, reference_values, atol=1e-13)
    np.testing.assert_allclose(first**2, vectors[0] ** 2, atol=1e-13)
    assert np.count_nonzero(np.abs(first) > 1e-12) <= 30


def test_unconverged_ql_falls_back_to_lapack(monkeypatch):
    monkeypatch.setattr(spectrum, "QL_MAX_SWEEPS", 0)
    d, e = tridiagonal_case(50, seed=4, graded=False)
    reference_values, vectors = scipy.linalg.eigh_tridiagonal(d, e)

    values, first = _tridiagonal_first_components(d, e)

    np.testing.assert_allclose(values, reference_values, atol=1e-13)
    np.testing.assert_allclose(first**2, vectors[0] ** 2, atol=1e-13)
