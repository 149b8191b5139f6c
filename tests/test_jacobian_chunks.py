"""Factored fully connected layers in the exact method against an explicit float64 Jacobian."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advisor.alignment import stack_targets
from advisor.engine import measure_probe
from advisor.functional import analysis_copy, frozen_tensors, trainable_parameters
from advisor.gram import ChunkJacobian, GramPlan, gram_rho
from advisor.jacobian_chunks import factorable_linears
from tests.test_alignment_methods import away_from_ties, svd_curve


class Mixed(nn.Module):
    """Conv features, a layer used twice, tied weights, a frozen bias and a Linear on a sequence."""

    def __init__(self, hidden: int = 6) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.seq = nn.Linear(2, 2)  # applied to (B, 4, 2): stays dense
        self.fc = nn.Linear(8, hidden)
        self.shared = nn.Linear(hidden, hidden)  # called twice: stays dense
        self.frozen_bias = nn.Linear(hidden, hidden)
        self.frozen_bias.bias.requires_grad_(False)
        self.tied_a = nn.Linear(hidden, hidden, bias=False)
        self.tied_b = nn.Linear(hidden, hidden, bias=False)
        self.tied_b.weight = self.tied_a.weight  # tied: stays dense
        self.head = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x)).flatten(2).transpose(1, 2)  # (B, 4, 2)
        h = torch.tanh(self.seq(h)).flatten(1)  # (B, 8)
        h = torch.tanh(self.fc(h))
        h = torch.tanh(self.shared(torch.tanh(self.shared(h))))
        h = torch.tanh(self.frozen_bias(h))
        h = torch.tanh(self.tied_b(torch.tanh(self.tied_a(h))))
        return self.head(h)


def trainable_jacobian(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """J (N·M, P) over the trainable parameters by torch.autograd.functional.jacobian, one example at a time."""
    work = analysis_copy(model)
    params = trainable_parameters(work)
    fixed = frozen_tensors(work)
    names = list(params)

    rows = []
    for example in x.double():
        def outputs(*values):
            state = {**fixed, **dict(zip(names, values))}
            return torch.func.functional_call(work, state, (example.unsqueeze(0),)).squeeze(0)

        blocks = torch.autograd.functional.jacobian(outputs, tuple(params.values()))  # per tensor (M, *shape)
        rows.append(torch.cat([b.reshape(b.shape[0], -1) for b in blocks], dim=1))
    return torch.cat(rows).numpy()


def test_factorable_layers_exclude_shared_and_sequences():
    torch.manual_seed(0)
    work = analysis_copy(Mixed())

    factors = factorable_linears(work, torch.randn(2, 1, 4, 4, dtype=torch.float64), trainable_parameters(work))

    assert sorted(factors) == ["fc", "frozen_bias", "head"]
    assert factors["frozen_bias"].bias is None
    assert factors["fc"].bias == "fc.bias"


def test_factored_rows_match_explicit_jacobian():
    torch.manual_seed(0)
    model, x = Mixed(), torch.randn(7, 1, 4, 4)

    source = ChunkJacobian(model, x)
    rows = torch.cat([source.rows(0, 3), source.rows(3, 7)]).numpy()

    np.testing.assert_allclose(rows, trainable_jacobian(model, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("hidden", [2, 6])
def test_factored_gram_matches_svd(hidden):
    # hidden = 2 makes J rank deficient: 24 rows, a 2-wide bottleneck before the head.
    torch.manual_seed(1)
    model, x = Mixed(hidden), torch.randn(8, 1, 4, 4)
    targets = np.eye(3)[np.random.default_rng(0).integers(0, 3, 8)]
    rho, curve, s = svd_curve(trainable_jacobian(model, x), stack_targets(targets))
    panels = GramPlan("rows", chunk_examples=3, panel_chunks=1, n_chunks=3, jacobian_chunk_computations=6, bytes=0)

    measured = gram_rho(model, x, targets, memory_budget_bytes=2**30, plan=panels)

    # A Gram method resolves the directions of a small eigenvalue λ only to
    # about eps·λ_max / λ; with the bottleneck, kept σ go down to 1.6e-5·σ_max,
    # so eps·λ_max / λ ≈ 8e-7, and ρ agreed to 1.2e-8 (1.2e-9 without it).
    tolerance = 1e-7 if hidden == 2 else 1e-8
    assert measured.rho == pytest.approx(rho, abs=tolerance)
    for point in measured.curve:
        if point.resolved and away_from_ties(point.eps, s):
            assert point.rho == pytest.approx(curve[point.eps], abs=tolerance), point.eps


def test_probe_counts_factored_width():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))

    probe = measure_probe(model, torch.randn(16, 8, 8), n_outputs=10)

    assert probe.n_params == 64 * 256 + 256 + 256 * 10 + 10
    assert probe.gram_width == (256 + 64) + (10 + 256)
