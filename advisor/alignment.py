"""The data-architecture alignment residual ρ and its last-layer bound ρ_S.

Kawaguchi, Zhang and Deng, "Understanding Dynamics of Nonlinear Representation
Learning and Its Application" (Neural Computation 2022) call the condition
Y ∈ Col(J(θ)) data-architecture alignment. The advisor measures how far from
it a model is with

    ρ(θ) = ‖(I − P_J) Y‖ / ‖Y‖,

P_J the orthogonal projector onto Col(J(θ)), and with the spectrum-aware
ρ(ε), which projects only onto left singular vectors whose singular value is at
least ε·σ_max.

Dimensions: N examples, M outputs, P parameters, D feature width. The
Jacobian J has shape (N·M, P) with rows ordered examples outer, outputs inner,
and Y is the matching stack of targets, shape (N·M,).

Methods:
- `features`: ρ_S from the input H (N, D) of the last affine map. With
  S = {W, b}, Col(J_S) = Col([H, 1] ⊗ I_M), so ρ_S is the least-squares
  residual of the targets on [H, 1], an upper bound on ρ.
- `exact`: an explicit float64 Jacobian from torch.func, then the
  eigendecomposition of J Jᵀ when N·M ≤ P and a thin QR of J followed by
  the SVD of its triangular factor otherwise.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import jacrev, vmap

from advisor.functional import analysis_copy, frozen_tensors, trainable_parameters
from advisor.trace import ForwardTrace

FLOAT64_EPS = float(np.finfo(np.float64).eps)
# ε grid of the ρ(ε) curve: 1e-6 to 1 in half decades.
CURVE_EPSILONS = tuple(float(v) for v in np.logspace(-6, 0, 13))
# Largest block of per-example Jacobian rows built at once, in bytes.
JACOBIAN_CHUNK_BYTES = 256 * 2**20


@dataclass
class CurvePoint:
    eps: float
    rho: float
    # False when ε·σ_max is below the rank tolerance, so the method cannot
    # tell these singular values from round-off, or when a matrix-free
    # bracket [rho_lower, rho_upper] is wider than its tolerance.
    resolved: bool
    rho_lower: float | None = None
    rho_upper: float | None = None


@dataclass
class AlignmentMeasure:
    """One measurement of ρ (or of its bound ρ_S) on N examples."""

    method: str
    rho: float
    n_examples: int
    n_rows: int
    n_columns: int
    rank: int
    rank_tolerance: float
    sigma_max: float
    sigma_min: float  # smallest singular value above the rank tolerance
    route: str  # "gram", "qr-svd" or "features"
    curve: list[CurvePoint] = field(default_factory=list)
    seconds: float = 0.0
    singular_values: list[float] = field(default_factory=list)
    # False when ρ is only an upper bound wider than the requested tolerance;
    # `reason` then says why. Matrix-free methods fill `eps_resolved` (the
    # smallest ε down to which every ρ(ε) bracket met the tolerance) and
    # `iterations`.
    converged: bool = True
    reason: str | None = None
    eps_resolved: float | None = None
    iterations: int | None = None
    # Wall seconds of the method's main steps, for benchmarks and profiling.
    phase_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class ExactCost:
    """Up-front estimate of the exact method on N examples."""

    n_rows: int
    n_parameters: int
    route: str
    bytes: int
    seconds: float

    def describe(self) -> str:
        return f"{self.bytes / 2**30:.2f} GiB and about {self.seconds:.0f} s ({self.route} route on a {self.n_rows} x {self.n_parameters} Jacobian)"


def stack_targets(targets: np.ndarray) -> np.ndarray:
    """Flatten targets (N, M) into Y (N·M,), examples outer and outputs inner."""
    return np.ascontiguousarray(targets, dtype=np.float64).reshape(-1)


def _residual_norm(basis: np.ndarray, y: np.ndarray) -> float:
    """‖y − Q Qᵀ y‖ for orthonormal columns Q, computed as a difference, not from norms, to keep tiny residuals exact."""
    if basis.shape[1] == 0:
        return float(np.linalg.norm(y))
    return float(np.linalg.norm(y - basis @ (basis.T @ y)))


def spectral_residual(U: np.ndarray, sigma: np.ndarray, y: np.ndarray, tolerance: float, *, method: str, route: str,
                      n_examples: int, n_columns: int, keep_spectrum: int = 2000) -> AlignmentMeasure:
    """Compute ρ and the ρ(ε) curve from left singular vectors U (R, K) and singular values σ (K,).

    `y` has shape (R,) or (R, C); ρ is the Frobenius residual relative to ‖y‖.
    """
    order = np.argsort(sigma)[::-1]
    sigma, U = sigma[order], U[:, order]
    y_norm = float(np.linalg.norm(y))
    sigma_max = float(sigma[0]) if sigma.size else 0.0
    keep = sigma > tolerance
    rank = int(keep.sum())

    rho = _residual_norm(U[:, :rank], y) / y_norm if y_norm > 0 else 0.0
    curve = []
    for eps in CURVE_EPSILONS:
        cutoff = eps * sigma_max
        count = int((sigma >= max(cutoff, tolerance) if cutoff > 0 else keep).sum())
        count = min(count, rank)
        value = _residual_norm(U[:, :count], y) / y_norm if y_norm > 0 else 0.0
        curve.append(CurvePoint(eps=eps, rho=value, resolved=cutoff > tolerance))

    return AlignmentMeasure(
        method=method, rho=rho, n_examples=n_examples, n_rows=int(U.shape[0]), n_columns=n_columns,
        rank=rank, rank_tolerance=float(tolerance), sigma_max=sigma_max,
        sigma_min=float(sigma[rank - 1]) if rank else 0.0, route=route, curve=curve,
        singular_values=[float(s) for s in sigma[:keep_spectrum]],
    )


def residual_from_matrix(A: np.ndarray, y: np.ndarray, *, method: str, n_examples: int) -> AlignmentMeasure:
    """ρ of `y` against Col(A) for a float64 matrix A (R, K), by the cheaper exact route.

    Wide A (R ≤ K): eigendecomposition of A Aᵀ (R × R). Its eigenvalues are σ²
    and carry absolute errors of about R·eps·σ_max², so the rank tolerance on σ
    is σ_max·sqrt(R·eps), not the SVD's σ_max·max(R, K)·eps.
    Tall A: thin QR, then the SVD of R, with the SVD's tolerance.
    """
    rows, columns = A.shape
    start = time.perf_counter()
    matrix = torch.from_numpy(np.ascontiguousarray(A, dtype=np.float64))
    if rows <= columns:
        gram = matrix @ matrix.T  # (R, R)
        eigenvalues, vectors = torch.linalg.eigh(gram)
        U = vectors.numpy()
        sigma = np.sqrt(np.clip(eigenvalues.numpy(), 0.0, None))
        sigma_max = float(sigma.max()) if sigma.size else 0.0
        tolerance = sigma_max * math.sqrt(rows * FLOAT64_EPS)
        route = "gram"
    else:
        # Thin QR first, then the SVD of the small K × K factor: the same
        # singular values and U = Q·U_R, at a fraction of a direct SVD's cost
        # for tall matrices.
        Q, R = torch.linalg.qr(matrix)  # (R, K), (K, K)
        U_small, singular, _ = torch.linalg.svd(R)
        U = (Q @ U_small).numpy()
        sigma = singular.numpy()
        sigma_max = float(sigma.max()) if sigma.size else 0.0
        tolerance = sigma_max * max(rows, columns) * FLOAT64_EPS
        route = "qr-svd"
    measure = spectral_residual(U, sigma, y, tolerance, method=method, route=route, n_examples=n_examples, n_columns=columns)
    measure.seconds = time.perf_counter() - start
    return measure


def rho_from_features(features: np.ndarray, targets: np.ndarray) -> AlignmentMeasure:
    """ρ_S for a linear head: the residual of targets (N, M) on [H, 1] with H (N, D).

    Col(J_S) = Col([H, 1] ⊗ I_M), so every output column is fitted on the same
    basis and the residual is the Frobenius norm over the (N, M) residual.
    """
    start = time.perf_counter()
    n_examples = features.shape[0]
    design = np.hstack([features.astype(np.float64), np.ones((n_examples, 1))])  # (N, D + 1)
    U, sigma, _ = np.linalg.svd(design, full_matrices=False)
    tolerance = float(sigma.max()) * max(design.shape) * FLOAT64_EPS if sigma.size else 0.0
    measure = spectral_residual(U, sigma, targets.astype(np.float64), tolerance, method="features", route="features",
                                n_examples=n_examples, n_columns=design.shape[1] * targets.shape[1])
    measure.seconds = time.perf_counter() - start
    return measure


def last_layer_features(model: nn.Module, x: torch.Tensor, trace: ForwardTrace, batch_size: int = 512,
                        dtype: torch.dtype = torch.float64) -> np.ndarray | None:
    """Collect the input H (N, D) of the last affine map over inputs x (N, ...), or None.

    Works when the last parameter-consuming operation is `linear` called by an
    `nn.Linear` module on 2-D input and only linear operations follow it.
    Runs in `dtype` (float64 by default) with the model in eval mode; the
    least-squares fit that follows is always float64.
    """
    last = trace.last_parametric
    if last is None or not trace.ends_affine or last.name != "linear" or not last.module:
        return None
    head = dict(model.named_modules()).get(last.module)
    if not isinstance(head, nn.Linear):
        return None

    work = analysis_copy(model, dtype)
    head_copy = dict(work.named_modules())[last.module]
    captured: list[torch.Tensor] = []
    handle = head_copy.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0].detach()))
    try:
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                work(x[start:start + batch_size].to(dtype))
    finally:
        handle.remove()
    if len(captured) != math.ceil(x.shape[0] / batch_size) or any(c.ndim != 2 for c in captured):
        return None
    return torch.cat(captured).numpy()


def jacobian_matrix(model: nn.Module, x: torch.Tensor, parameter_names: list[str] | None = None) -> np.ndarray:
    """Explicit float64 Jacobian J (N·M, P) of the stacked outputs at inputs x (N, ...).

    Columns follow `model.named_parameters()` order, restricted to
    `parameter_names` when given. Built per example with vmap(jacrev), in
    chunks of at most JACOBIAN_CHUNK_BYTES.
    """
    work = analysis_copy(model)
    params = trainable_parameters(work)
    if parameter_names is not None:
        differentiated = {name: params[name] for name in parameter_names}
    else:
        differentiated = params
    held = {**frozen_tensors(work), **{k: v for k, v in params.items() if k not in differentiated}}
    x64 = x.to(torch.float64)

    def single(diff: dict[str, torch.Tensor], example: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(work, {**held, **diff}, (example.unsqueeze(0),)).squeeze(0)  # (M,)

    n_columns = sum(p.numel() for p in differentiated.values())
    with torch.no_grad():
        n_outputs = int(single(differentiated, x64[0]).shape[0])
    chunk = max(1, JACOBIAN_CHUNK_BYTES // max(1, n_outputs * n_columns * 8))
    per_example = vmap(jacrev(single), in_dims=(None, 0))

    blocks = []
    for start in range(0, x64.shape[0], chunk):
        jac = per_example(differentiated, x64[start:start + chunk])  # name -> (B, M, *shape)
        block = torch.cat([jac[name].reshape(jac[name].shape[0], n_outputs, -1) for name in differentiated], dim=2)  # (B, M, P)
        blocks.append(block.reshape(-1, n_columns).detach().numpy())  # (B·M, P)
    return np.concatenate(blocks, axis=0)


def estimate_exact_cost(model: nn.Module, x_probe: torch.Tensor, n_examples: int, n_outputs: int) -> ExactCost:
    """Estimate memory and time of the exact method on `n_examples`.

    Time of the Jacobian is measured on `x_probe` (a few examples) and scaled
    linearly; the dense algebra uses rates measured on a 2-core machine
    (about 60 GFLOP/s for float64 GEMM and 8e9 N³-units/s for eigh), so the
    time is an estimate that is low on slower machines.
    """
    n_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rows = n_examples * n_outputs

    # The first call pays one-time costs (tracing, allocator warm-up), so
    # the second one is timed.
    jacobian_matrix(model, x_probe)
    start = time.perf_counter()
    jacobian_matrix(model, x_probe)
    probe_seconds = time.perf_counter() - start
    jacobian_seconds = probe_seconds * n_examples / max(1, x_probe.shape[0])

    if rows <= n_parameters:
        route = "gram"
        memory = 8 * (rows * n_parameters + 3 * rows * rows)
        algebra = rows * rows * n_parameters / 60e9 + rows**3 / 8e9
    else:
        route = "qr-svd"
        memory = 8 * (3 * rows * n_parameters + 2 * n_parameters * n_parameters)
        algebra = 4 * rows * n_parameters**2 / 30e9 + n_parameters**3 / 4e9
    return ExactCost(n_rows=rows, n_parameters=n_parameters, route=route, bytes=int(memory), seconds=float(jacobian_seconds + algebra))


def exact_rho(model: nn.Module, x: torch.Tensor, targets: np.ndarray) -> AlignmentMeasure:
    """Exact ρ of targets (N, M) against the full Jacobian at inputs x (N, ...)."""
    start = time.perf_counter()
    J = jacobian_matrix(model, x)
    measure = residual_from_matrix(J, stack_targets(targets), method="exact", n_examples=int(x.shape[0]))
    measure.seconds = time.perf_counter() - start
    return measure


def last_layer_rho(model: nn.Module, x: torch.Tensor, targets: np.ndarray, trace: ForwardTrace,
                   feature_dtype: torch.dtype = torch.float64) -> AlignmentMeasure | None:
    """ρ_S from the last affine map's parameters, by features when possible, else by their Jacobian columns.

    Returns None when the model has no parameter-consuming operation.
    """
    features = last_layer_features(model, x, trace, dtype=feature_dtype)
    if features is not None:
        return rho_from_features(features, targets)
    if trace.last_parametric is None:
        return None

    start = time.perf_counter()
    J_S = jacobian_matrix(model, x, parameter_names=trace.last_parametric.parameters)
    measure = residual_from_matrix(J_S, stack_targets(targets), method="features", n_examples=int(x.shape[0]))
    measure.route = f"last-layer jacobian ({measure.route})"
    measure.seconds = time.perf_counter() - start
    return measure
