"""ρ and ρ_S against an independent float64 computation: an explicit Jacobian and numpy's SVD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advisor.alignment import exact_rho, jacobian_matrix, last_layer_rho, residual_from_matrix, rho_from_features, stack_targets
from advisor.trace import trace_forward


def reference_jacobian(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """J (N·M, P) by torch.autograd.functional.jacobian, one example at a time."""
    work = model.double().eval()
    names = [n for n, p in work.named_parameters()]
    params = tuple(p.detach() for p in work.parameters())

    rows = []
    for example in x.double():
        def outputs(*values):
            return torch.func.functional_call(work, dict(zip(names, values)), (example.unsqueeze(0),)).squeeze(0)

        blocks = torch.autograd.functional.jacobian(outputs, params)  # per tensor (M, *shape)
        rows.append(torch.cat([b.reshape(b.shape[0], -1) for b in blocks], dim=1))
    return torch.cat(rows).numpy()


def reference_rho(J: np.ndarray, y: np.ndarray) -> float:
    """Residual of y after projection onto Col(J), from numpy's SVD with the standard rank tolerance."""
    U, s, _ = np.linalg.svd(J, full_matrices=False)
    rank = int((s > s.max() * max(J.shape) * np.finfo(np.float64).eps).sum())
    basis = U[:, :rank]
    return float(np.linalg.norm(y - basis @ (basis.T @ y)) / np.linalg.norm(y))


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes)[labels]


def narrow_mlp(width: int) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, width), nn.Tanh(), nn.Linear(width, 3))


CASES = {
    # Tall J: 40 examples x 3 outputs = 120 rows against 95 parameters.
    "narrow last layer": lambda: (narrow_mlp(2), torch.randn(40, 5), np.random.default_rng(0).integers(0, 3, 40)),
    # The same input twice with different labels: no model fits both.
    "duplicated examples": lambda: (narrow_mlp(6), torch.randn(6, 5).repeat(2, 1), np.array([0, 1, 2, 0, 1, 2, 1, 2, 0, 1, 2, 0])),
    # A hidden layer with a large negative bias is dead on every input.
    "dead ReLU": lambda: (_dead_relu(), torch.randn(30, 5), np.random.default_rng(1).integers(0, 3, 30)),
    # Wide J (24 rows, 95 parameters): generic full row rank, ρ = 0.
    "wide full rank": lambda: (narrow_mlp(6), torch.randn(8, 5), np.random.default_rng(2).integers(0, 3, 8)),
}


def _dead_relu() -> nn.Module:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        model[0].bias.fill_(-100.0)
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_exact_rho_matches_numpy_svd(case):
    torch.manual_seed(0)
    model, x, labels = CASES[case]()
    targets = one_hot(labels, 3)

    expected = reference_rho(reference_jacobian(model, x), stack_targets(targets))
    measured = exact_rho(model, x, targets)

    assert measured.rho == pytest.approx(expected, abs=1e-9)
    if case == "wide full rank":
        assert measured.rho < 1e-12
    else:
        assert measured.rho > 1e-3


@pytest.mark.parametrize("case", sorted(CASES))
def test_rho_never_exceeds_rho_s(case):
    torch.manual_seed(0)
    model, x, labels = CASES[case]()
    targets = one_hot(labels, 3)
    trace = trace_forward(model, x[:2])

    rho = exact_rho(model, x, targets).rho
    rho_s = last_layer_rho(model, x, targets, trace).rho

    assert rho <= rho_s + 1e-12


def test_jacobian_matches_reference():
    model, x, _ = CASES["narrow last layer"]()
    assert np.allclose(jacobian_matrix(model, x[:5]), reference_jacobian(model, x[:5]), atol=1e-12)


def test_targets_in_column_space_give_zero():
    model, x, _ = CASES["narrow last layer"]()
    J = reference_jacobian(model, x)
    y = J @ np.random.default_rng(3).standard_normal(J.shape[1])
    measure = residual_from_matrix(J, y, method="exact", n_examples=x.shape[0])
    assert measure.rho < 1e-10


def test_gram_and_qr_routes_agree():
    rng = np.random.default_rng(4)
    # A rank-10 matrix (30, 50) for the Gram route and its first 25 columns (still rank 10) for QR.
    A = rng.standard_normal((30, 10)) @ rng.standard_normal((10, 50))
    y = rng.standard_normal(30)
    wide = residual_from_matrix(A, y, method="exact", n_examples=30)
    tall = residual_from_matrix(A[:, :25].copy(), y, method="exact", n_examples=30)
    assert wide.route == "gram"
    assert tall.route == "qr-svd"
    assert wide.rank == 10
    assert tall.rank == 10
    assert wide.rho == pytest.approx(reference_rho(A, y), abs=1e-7)
    assert tall.rho == pytest.approx(reference_rho(A[:, :25], y), abs=1e-10)


def test_rho_s_is_least_squares_on_features():
    rng = np.random.default_rng(5)
    H = rng.standard_normal((50, 4))
    targets = one_hot(rng.integers(0, 3, 50), 3)
    design = np.hstack([H, np.ones((50, 1))])
    coefficients, *_ = np.linalg.lstsq(design, targets, rcond=None)
    expected = np.linalg.norm(targets - design @ coefficients) / np.linalg.norm(targets)
    assert rho_from_features(H, targets).rho == pytest.approx(expected, abs=1e-12)


def test_curve_grows_with_eps():
    model, x, labels = CASES["wide full rank"]()
    measure = exact_rho(model, x, one_hot(labels, 3))
    values = [point.rho for point in measure.curve]
    assert values == sorted(values)
    assert measure.curve[-1].eps == pytest.approx(1.0)
