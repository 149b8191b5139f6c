"""The structure check against networks whose structure is known in closed form."""

from __future__ import annotations

import pytest
import torch

from advisor.models import ResidualCNN
from advisor.structure import STRUCTURE_TOLERANCE, check_structure
from advisor.trace import trace_forward
from tests.factories import FunctionalSigmoidHead, bias_free_relu, mlp_with_biases


def run_check(model, x):
    torch.manual_seed(0)
    return check_structure(model, x, trace_forward(model, x), seed=0)


def test_linear_head_is_exact():
    torch.manual_seed(0)
    result = run_check(mlp_with_biases(), torch.randn(20, 6))
    assert result.holds
    assert result.form == "exact"
    assert {s.tensor for s in result.subset} == {"4.weight", "4.bias"}
    assert all(s.coefficient == pytest.approx(1.0, abs=1e-9) for s in result.subset)
    assert result.relative_error < STRUCTURE_TOLERANCE


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_bias_free_relu_is_generalized_one_over_depth(depth):
    torch.manual_seed(depth)
    result = run_check(bias_free_relu(depth), torch.randn(20, 5))
    assert result.holds
    assert result.form == "generalized"
    assert len(result.subset) == depth
    for entry in result.subset:
        assert entry.coefficient == pytest.approx(1.0 / depth, abs=1e-9)


def test_sigmoid_module_head_fails_and_is_named():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3), torch.nn.Sigmoid())
    result = run_check(model, torch.randn(20, 6))
    assert not result.holds
    assert result.form == "none"
    assert result.relative_error > 1e-3
    assert "sigmoid" in result.breaking_op
    assert "logits" in result.fix


def test_functional_sigmoid_is_named():
    torch.manual_seed(0)
    result = run_check(FunctionalSigmoidHead(), torch.randn(20, 6))
    assert not result.holds
    assert result.breaking_op.startswith("sigmoid in the forward of FunctionalSigmoidHead")


def test_softmax_head_fails():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3), torch.nn.Softmax(dim=1))
    result = run_check(model, torch.randn(20, 6))
    assert not result.holds
    assert "softmax" in result.breaking_op
    assert "cross-entropy" in result.fix


def test_residual_cnn_holds_with_head_subset():
    torch.manual_seed(0)
    result = run_check(ResidualCNN(in_channels=1, num_classes=4, width=8), torch.randn(6, 1, 8, 8))
    assert result.holds
    assert result.last_layer_subset == ["head.weight", "head.bias"]


def test_structure_uses_a_second_point():
    # A ReLU network with zero biases at its given parameters is homogeneous
    # in every weight there; trained biases break that, and the perturbed
    # point must expose it so the coefficients stay on the head.
    torch.manual_seed(0)
    model = mlp_with_biases()
    with torch.no_grad():
        for module in model:
            if isinstance(module, torch.nn.Linear):
                module.bias.zero_()
    result = run_check(model, torch.randn(20, 6))
    assert result.form == "exact"
    assert {s.tensor for s in result.subset} == {"4.weight", "4.bias"}
