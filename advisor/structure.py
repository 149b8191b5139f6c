"""The common model structure assumption (CMSA), checked numerically.

Kawaguchi, Zhang and Deng, "Understanding Dynamics of Nonlinear Representation
Learning and Its Application" (Neural Computation 2022), assume a set S of
parameters with f(x; θ) = Σ_{k∈S} θ_k ∂f(x; θ)/∂θ_k, or the generalized form
f = Σ_k c_k θ_k ∂f/∂θ_k with one coefficient per parameter tensor. Both give
f_X(θ) ∈ Col(J(θ)), which is all the alignment results need.

For each parameter tensor k the check computes g_k, the directional derivative
of the stacked outputs along the tensor itself (a Jacobian-vector product
with θ_k as the tangent, shape (N·M,)). It then fits coefficients c with
G c ≈ f_X by minimum-norm least squares, G = [g_1 … g_T] of shape (N·M, T).
Minimum norm matters: in a bias-free ReLU network every g_k equals f_X, so
any c summing to one fits, and the minimum-norm choice c_k = 1/L is the
degree-L homogeneity that the paper states.

The form is "exact" when the minimum-norm coefficients are all 0 or 1 and
"generalized" otherwise. Independently, the check tests whether the tensors of
the last affine map alone reproduce f (f = W h + b), which is the subset the
alignment bound ρ_S uses, and reports them as `last_layer_subset`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import jvp

from advisor.functional import analysis_copy, batched_function, flatten_outputs, frozen_tensors, trainable_parameters
from advisor.trace import ForwardTrace

# A fit with relative error below this reproduces f up to float64 round-off
# accumulated through a deep network; broken structure gives errors of order
# 1e-2 to 1 (sigmoid or softmax heads).
STRUCTURE_TOLERANCE = 1e-6
# Coefficients within this distance of 0 or 1 count as a 0/1 subset.
COEFFICIENT_TOLERANCE = 1e-6

# Fixes for the nonlinear operations most often found after the last affine map.
FIXES = {
    "sigmoid": "End the model at the logits and put the sigmoid in the loss (binary cross-entropy with logits), or train on the logits with the squared loss.",
    "softmax": "End the model at the logits and let the loss apply softmax (cross-entropy on logits).",
    "log_softmax": "End the model at the logits and let the loss apply log-softmax (cross-entropy on logits).",
    "tanh": "Remove the final tanh, or follow it with a linear layer so the output is affine in that layer's weights.",
    "normalize": "Remove the L2 normalization of the output, or scale it with a trainable linear layer.",
    "layer_norm": "Give the final LayerNorm affine parameters (elementwise_affine=True) or follow it with a linear layer.",
}
# An imported graph cannot be edited by the user here; the --logits option cuts these three.
LOGITS_FIX = "Rerun with --logits, which cuts the final {name} from the imported graph so that the advisor works on the logits."
CUT_BY_LOGITS = ("sigmoid", "softmax", "log_softmax")
GENERIC_FIX = "Make the last operation affine in its own weights: end the model with a linear layer (or an affine normalization) and move the nonlinearity into the loss."


@dataclass
class SubsetEntry:
    tensor: str
    coefficient: float


@dataclass
class StructureResult:
    """Outcome of the structure check at the tested parameter points."""

    holds: bool
    form: str  # "exact", "generalized" or "none"
    subset: list[SubsetEntry]
    relative_error: float
    coefficients: dict[str, float]
    n_examples: int
    n_points: int
    breaking_op: str | None = None
    fix: str | None = None
    # The tensors of the last affine map when they alone reproduce f with
    # coefficient 1 (the exact form f = W h + b), whatever form the
    # minimum-norm fit found.
    last_layer_subset: list[str] | None = None
    notes: list[str] = field(default_factory=list)


def directional_derivatives(model: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return (G, f_X, names): G[:, k] = Σ_{i∈tensor k} θ_i ∂f_X/∂θ_i, shape (N·M, T).

    `model` must already be the float64 eval-mode analysis copy and `x` float64.
    """
    params = trainable_parameters(model)
    fixed = frozen_tensors(model)
    apply = batched_function(model, fixed)
    names = list(params)

    with torch.no_grad():
        f_x = flatten_outputs(apply(params, x))

    columns = []
    for name in names:
        def along_tensor(value: torch.Tensor, name: str = name) -> torch.Tensor:
            return flatten_outputs(apply({**params, name: value}, x))

        _, tangent_out = jvp(along_tensor, (params[name],), (params[name],))
        columns.append(tangent_out.detach())
    G = torch.stack(columns, dim=1)
    return G.numpy(), f_x.numpy(), names


def fit_coefficients(G: np.ndarray, f_x: np.ndarray) -> tuple[np.ndarray, float]:
    """Minimum-norm least-squares c with G c ≈ f_X, and the relative error ‖Gc − f‖/‖f‖."""
    coefficients, *_ = np.linalg.lstsq(G, f_x, rcond=None)
    norm = np.linalg.norm(f_x)
    error = np.linalg.norm(G @ coefficients - f_x)
    relative = float(error / norm) if norm > 0 else float(error)
    return coefficients, relative


def _perturbed(model: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    """Copy `model` with every trainable tensor and floating buffer moved in a seeded random direction.

    Freshly initialized networks sit at special points (zero biases, BatchNorm
    running statistics of 0 and 1) where extra homogeneities hold by accident,
    so the step is `scale` times the tensor's RMS but at least 0.05 in
    absolute size. Running variances are scaled by a positive factor.
    """
    moved = analysis_copy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in moved.parameters():
            if p.requires_grad:
                step = max(float(p.pow(2).mean().sqrt()) * scale, 0.05)
                p.add_(step * torch.randn(p.shape, generator=generator, dtype=p.dtype))
        for name, buffer in moved.named_buffers():
            if not buffer.is_floating_point():
                continue
            noise = torch.randn(buffer.shape, generator=generator, dtype=buffer.dtype)
            if name.endswith("running_var"):
                buffer.mul_(torch.exp(0.3 * noise))
            else:
                buffer.add_(0.1 * noise)
    return moved


def classify(coefficients: np.ndarray, names: list[str], relative_error: float) -> tuple[bool, str, list[SubsetEntry]]:
    holds = relative_error <= STRUCTURE_TOLERANCE
    if not holds:
        return False, "none", []

    near_zero = np.abs(coefficients) <= COEFFICIENT_TOLERANCE
    near_one = np.abs(coefficients - 1.0) <= COEFFICIENT_TOLERANCE
    if np.all(near_zero | near_one):
        subset = [SubsetEntry(name, 1.0) for name, one in zip(names, near_one) if one]
        return True, "exact", subset

    subset = [SubsetEntry(name, float(c)) for name, c in zip(names, coefficients) if not abs(c) <= COEFFICIENT_TOLERANCE]
    return True, "generalized", subset


def breaking_operation(trace: ForwardTrace, *, imported: bool = False) -> tuple[str, str]:
    """Name the first nonlinear operation after the last affine map, with its fix.

    `imported` is true for ONNX and TorchScript graphs, where a final
    sigmoid or softmax is cut with --logits rather than by editing code.
    """
    if trace.last_parametric is None:
        return "no operation consumes a trainable parameter", GENERIC_FIX
    if not trace.nonlinear_after_last:
        return f"an operation before the output (the last affine map, {trace.last_parametric.describe()}, is followed only by linear operations)", GENERIC_FIX
    op = trace.nonlinear_after_last[0]
    if imported and op.name in CUT_BY_LOGITS:
        return op.describe(), LOGITS_FIX.format(name=op.name.replace("_", "-"))
    return op.describe(), FIXES.get(op.name, GENERIC_FIX)


def check_structure(model: nn.Module, x: torch.Tensor, trace: ForwardTrace, *, seed: int,
                    imported: bool = False) -> StructureResult:
    """Test CMSA on inputs `x` (B, ...) at the model's parameters and at one seeded perturbation.

    `imported` (an ONNX or TorchScript graph) only changes the suggested fix.

    One set of coefficients is fitted to both points together, because the
    assumption holds for every θ and a single point can satisfy extra
    relations by accident. The relative error is the worse of the two points.
    Runs in float64 with BatchNorm in eval mode.
    """
    x64 = x.to(torch.float64)
    G1, f1, names = directional_derivatives(analysis_copy(model), x64)
    n_examples = int(x.shape[0])
    if not names:
        return StructureResult(holds=False, form="none", subset=[], relative_error=1.0, coefficients={}, n_examples=n_examples, n_points=1,
                               breaking_op="the model has no trainable parameters", fix="Give the model trainable parameters.")
    G2, f2, _ = directional_derivatives(_perturbed(model, seed), x64)

    coefficients, _ = fit_coefficients(np.vstack([G1, G2]), np.concatenate([f1, f2]))
    errors = []
    for G, f in ((G1, f1), (G2, f2)):
        norm = np.linalg.norm(f)
        residual = np.linalg.norm(G @ coefficients - f)
        errors.append(float(residual / norm) if norm > 0 else float(residual))
    relative_error = max(errors)

    holds, form, subset = classify(coefficients, names, relative_error)
    result = StructureResult(
        holds=holds, form=form, subset=subset, relative_error=relative_error,
        coefficients={n: float(c) for n, c in zip(names, coefficients)},
        n_examples=n_examples, n_points=2,
    )
    if trace.last_parametric is not None:
        last_names = [n for n in trace.last_parametric.parameters if n in names]
        selector = np.array([n in last_names for n in names], dtype=np.float64)
        last_errors = [np.linalg.norm(G @ selector - f) / max(np.linalg.norm(f), 1e-300) for G, f in ((G1, f1), (G2, f2))]
        if last_names and max(last_errors) <= STRUCTURE_TOLERANCE:
            result.last_layer_subset = last_names

    if np.linalg.norm(f1) == 0:
        result.notes.append("The model's outputs are exactly zero on the checked examples, so the structure check is uninformative there.")
    if not holds:
        result.breaking_op, result.fix = breaking_operation(trace, imported=imported)
    return result
