"""Matrix-free ρ(ε) brackets from Jacobian-vector products, never forming J (N·M, P).

Dimensions follow advisor.alignment: N examples, M outputs, P parameters,
R = N·M, Jacobian rows ordered examples outer, outputs inner.

The solver is LSQR (Paige and Saunders, ACM TOMS 8(1), 1982) on
min_θ ‖J θ − Y‖, as Golub–Kahan bidiagonalization with full
reorthogonalization. It starts from the last-layer least-squares solution θ_S,
so its residual starts at ρ_S and never grows. A right preconditioner D gives
every parameter tensor unit root-mean-square column norm, with the tensor's
‖J_t‖_F estimated from two random vector-Jacobian products.

Every iterate θ with residual r = Y − J θ brackets the hard-cutoff residual,
with σ = σ_max(J) and P_ε the projector onto left singular vectors with
singular value ≥ ε·σ:

    ‖(I − P_ε) Y‖ ≤ ‖r‖ + ε σ ‖θ‖,
    ‖(I − P_ε) Y‖ ≥ sqrt(max(0, ‖r‖² − (‖Jᵀ r‖ / (ε σ))²)) − ε σ ‖θ‖,

because (I − P_ε) Y = (I − P_ε) r + (I − P_ε) J θ, ‖(I − P_ε) J θ‖ ≤ ε σ ‖θ‖ and
‖P_ε r‖ ≤ ‖Jᵀ r‖ / (ε σ). The best bracket over all iterates is kept for each
ε, and an ε counts as resolved when its bracket is at most twice the tolerance
wide. ρ(0) itself gets no lower bound (that needs σ⁺_min), so ρ is reported as
the upper bound ‖r‖/‖Y‖ and is converged only when that bound is within the
tolerance.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from advisor.alignment import CURVE_EPSILONS, AlignmentMeasure, CurvePoint, last_layer_features, stack_targets
from advisor.functional import analysis_copy, frozen_tensors, trainable_parameters
from advisor.trace import ForwardTrace


@dataclass(frozen=True)
class LsqrSettings:
    """Stopping rule and preconditioner of the matrix-free method.

    `target_eps`: stop once ρ(ε) is resolved for every grid ε ≥ target_eps.
    `tolerance`: the half-width, in ρ, that counts as resolved.
    `max_iterations` and `time_limit_s` (seconds) stop the solver earlier,
    leaving the smaller ε unresolved. `preconditioner`: "tensor-scaling" or
    "none". `sigma_steps`: Golub–Kahan steps for σ_max.
    """

    target_eps: float = 1e-3
    tolerance: float = 1e-3
    max_iterations: int = 300
    time_limit_s: float = float("inf")
    preconditioner: str = "tensor-scaling"
    sigma_steps: int = 8
    dtype: torch.dtype = torch.float64
    seed: int = 0


class JacobianOperator:
    """v ↦ J v (jvp) and u ↦ Jᵀ u (vjp) over the data in chunks of examples, model in eval mode.

    Vectors are flat: parameters (P,) in `named_parameters()` order, outputs (R,).
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, chunk_examples: int, dtype: torch.dtype = torch.float64) -> None:
        self.work = analysis_copy(model, dtype)
        self.params = trainable_parameters(self.work)
        self.fixed = frozen_tensors(self.work)
        self.x = x.to(dtype)
        self.dtype = dtype
        self.chunk = max(1, int(chunk_examples))
        self.shapes = {name: p.shape for name, p in self.params.items()}
        self.sizes = [p.numel() for p in self.params.values()]
        self.n_params = sum(self.sizes)
        with torch.no_grad():
            self.n_outputs = int(self._apply(self.params, self.x[:1]).shape[1])
        self.n_rows = int(x.shape[0]) * self.n_outputs
        self.products = 0

    def _apply(self, params: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.work, {**self.fixed, **params}, (xb,))  # (B, M)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        pieces = torch.split(flat, self.sizes)
        return {name: piece.reshape(self.shapes[name]) for name, piece in zip(self.params, pieces)}

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([tensors[name].reshape(-1) for name in self.params])

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """J v (R,) for v (P,)."""
        tangent = self.unflatten(v.to(self.dtype))
        out = []
        for start in range(0, self.x.shape[0], self.chunk):
            xb = self.x[start:start + self.chunk]
            _, jv = torch.func.jvp(lambda p: self._apply(p, xb), (self.params,), (tangent,))  # (B, M)
            out.append(jv.reshape(-1))
        self.products += 1
        return torch.cat(out).to(torch.float64)

    def rmatvec(self, u: torch.Tensor) -> torch.Tensor:
        """Jᵀ u (P,) for u (R,)."""
        cotangent = u.to(self.dtype).reshape(self.x.shape[0], self.n_outputs)  # (N, M)
        total = torch.zeros(self.n_params, dtype=self.dtype)
        for start in range(0, self.x.shape[0], self.chunk):
            xb = self.x[start:start + self.chunk]
            _, pullback = torch.func.vjp(lambda p: self._apply(p, xb), self.params)
            (grads,) = pullback(cotangent[start:start + self.chunk])
            total += self.flatten(grads)
        self.products += 1
        return total.to(torch.float64)


def saved_bytes_per_example(model: nn.Module, x_probe: torch.Tensor, dtype: torch.dtype = torch.float64) -> float:
    """Bytes that autograd saves for the backward pass, per example, measured on a probe batch."""
    work = analysis_copy(model, dtype)
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    params = {name: p.detach().requires_grad_(True) for name, p in trainable_parameters(work).items()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        torch.func.functional_call(work, {**frozen_tensors(work), **params}, (x_probe.to(dtype),))
    return total / max(1, x_probe.shape[0])


def chunk_for_budget(bytes_per_example: float, memory_budget_bytes: float, n_examples: int) -> int:
    """Examples per jvp/vjp chunk: a quarter of the budget for saved activations, with a 3x margin for temporaries."""
    return int(max(1, min(n_examples, memory_budget_bytes / 4 // max(1.0, 3 * bytes_per_example))))


def sigma_max_estimate(op: JacobianOperator, steps: int, seed: int, deadline: float = math.inf) -> tuple[float, float]:
    """Golub–Kahan estimate of σ_max(J): (Ritz value, Ritz value + residual bound).

    The Ritz value is a lower bound on σ_max; the second figure adds the
    residual norm of the Ritz pair, which bounds the distance to the nearest
    singular value, so it is an upper bound on σ_max once the largest Ritz
    value has converged to σ_max (not proved for a start vector orthogonal
    to the top singular vector, which a random start makes unlikely).
    Stops after at least two steps once time.perf_counter() passes `deadline`.
    """
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(op.n_params, generator=generator, dtype=torch.float64)
    V = [v / v.norm()]
    U: list[torch.Tensor] = []
    alphas, betas = [], []
    u_prev = torch.zeros(op.n_rows, dtype=torch.float64)
    beta = 0.0
    for step in range(steps):
        if step >= 2 and time.perf_counter() > deadline:
            break
        u = op.matvec(V[-1]) - beta * u_prev
        for previous in U:  # full reorthogonalization: a few vectors only
            u -= (previous @ u) * previous
        alpha = float(u.norm())
        if alpha == 0.0:
            break
        u /= alpha
        U.append(u)
        alphas.append(alpha)
        v = op.rmatvec(u) - alpha * V[-1]
        for previous in V:
            v -= (previous @ v) * previous
        beta = float(v.norm())
        betas.append(beta)
        if beta == 0.0:
            break
        V.append(v / beta)
        u_prev = u
    k = len(alphas)
    B = np.zeros((k, k))
    for i in range(k):
        B[i, i] = alphas[i]
        if i + 1 < k:
            B[i, i + 1] = betas[i]
    left, singular, right = np.linalg.svd(B)
    residual = abs(betas[k - 1] * left[k - 1, 0]) if k else 0.0
    return float(singular[0]), float(singular[0] + residual)


def tensor_scaling(op: JacobianOperator, seed: int, probes: int = 2) -> torch.Tensor:
    """Diagonal D (P,): 1/RMS column norm of each tensor's block, from E‖J_tᵀ g‖² = ‖J_t‖_F² for g ~ N(0, I)."""
    generator = torch.Generator().manual_seed(seed + 1)
    squares = torch.zeros(op.n_params, dtype=torch.float64)
    for _ in range(probes):
        g = torch.randn(op.n_rows, generator=generator, dtype=torch.float64)
        squares += op.rmatvec(g) ** 2
    scales = []
    for piece in torch.split(squares / probes, op.sizes):
        rms = math.sqrt(float(piece.mean()))
        scales.append(torch.full_like(piece, 1.0 / rms if rms > 0 else 1.0))
    return torch.cat(scales)


def last_layer_start(op: JacobianOperator, model: nn.Module, x: torch.Tensor, targets: np.ndarray,
                     trace: ForwardTrace | None) -> torch.Tensor:
    """θ_S (P,): the least-squares fit of targets (N, M) on [H, 1] in the head's weight and bias, zero elsewhere.

    Its residual Y − J θ_S is the last-layer residual, so ‖r‖/‖Y‖ = ρ_S. Returns
    zeros when the head's features cannot be read.
    """
    theta = torch.zeros(op.n_params, dtype=torch.float64)
    if trace is None or trace.last_parametric is None:
        return theta
    features = last_layer_features(model, x, trace)
    if features is None:
        return theta
    module = trace.last_parametric.module
    weight_name, bias_name = f"{module}.weight", f"{module}.bias"
    if weight_name not in op.params:
        return theta
    has_bias = bias_name in op.params
    design = np.hstack([features, np.ones((features.shape[0], 1))]) if has_bias else features  # (N, D [+ 1])
    coefficients, *_ = np.linalg.lstsq(design, targets.astype(np.float64), rcond=None)  # (D [+ 1], M)
    tensors = {name: torch.zeros(shape, dtype=torch.float64) for name, shape in op.shapes.items()}
    D = features.shape[1]
    tensors[weight_name] = torch.from_numpy(np.ascontiguousarray(coefficients[:D].T))  # (M, D)
    if has_bias:
        tensors[bias_name] = torch.from_numpy(np.ascontiguousarray(coefficients[D]))  # (M,)
    return op.flatten(tensors)


def _bracket(r_norm: float, jtr_norm: float, theta_norm: float, eps: float, sigma_low: float, sigma_high: float,
             y_norm: float) -> tuple[float, float]:
    """(lower, upper) bounds on ρ(ε) from one parameter vector; see the module docstring."""
    leak = eps * sigma_high * theta_norm
    upper = r_norm + leak
    fitted = jtr_norm / (eps * sigma_low) if sigma_low > 0 else math.inf
    lower = math.sqrt(max(0.0, r_norm**2 - fitted**2)) - leak
    return max(lower, 0.0) / y_norm, min(upper, y_norm) / y_norm


def _orthogonalize(vector: torch.Tensor, basis: torch.Tensor) -> None:
    """Remove from `vector`, in place, its components along the orthonormal rows of `basis` (k, length), in two passes."""
    if basis.shape[0] == 0:
        return
    for _ in range(2):
        vector -= basis.T @ (basis @ vector)


class KrylovState:
    """Golub–Kahan bidiagonalization of A = J·diag(scale) started from r0, with orthonormal bases kept.

    After k steps, A V_k = U_{k+1} B_k with B_k (k+1, k) lower bidiagonal, and
    Aᵀ U_{k+1} = V_{k+1} L_{k+1}ᵀ with L_{k+1} = [B_k, α_{k+1} e_{k+1}].
    Any coefficient vector c (k,) gives θ = θ_S + scale ⊙ (V_k c) with residual
    r = U_{k+1}(β₁e₁ − B_k c) and Jᵀ r = V_{k+1} L_{k+1}ᵀ(β₁e₁ − B_k c) / scale,
    so every candidate is evaluated without another Jacobian product. The
    bases are preallocated for `capacity` steps: 8·(capacity + 2)·(R + P) bytes.
    """

    def __init__(self, op: JacobianOperator, scale: torch.Tensor, r0: torch.Tensor, norm_estimate: float, capacity: int) -> None:
        self.op = op
        self.scale = scale
        self._U = torch.zeros(capacity + 2, op.n_rows, dtype=torch.float64)
        self._V = torch.zeros(capacity + 2, op.n_params, dtype=torch.float64)
        self.n_u = self.n_v = 1
        self.beta1 = float(r0.norm())
        self.betas: list[float] = []
        # r0 = 0 (Y fitted by the start) or Jᵀ r0 ≈ 0 (r0 ⊥ Col(J)) leaves
        # nothing to iterate on: the start is already the least-squares fit.
        # α or β below 1e-12·‖B_k‖_F (LSQR's estimate of ‖A‖) is round-off;
        # `norm_estimate` (about ‖J‖) judges the first α, unscaled.
        if self.beta1 > 0:
            self._U[0] = r0 / self.beta1
        v = scale * op.rmatvec(self._U[0]) if self.beta1 > 0 else torch.zeros(op.n_params, dtype=torch.float64)
        self.alphas = [float(v.norm())]
        self.exhausted = self.beta1 == 0.0 or float((v / scale).norm()) <= 1e-12 * norm_estimate * self.beta1
        if self.alphas[0] > 0:
            self._V[0] = v / self.alphas[0]
        self.norm_squared = self.alphas[0] ** 2

    @property
    def steps(self) -> int:
        return len(self.betas)

    def basis_v(self, count: int) -> torch.Tensor:
        """The first `count` right basis vectors as rows (count, P)."""
        return self._V[:count]

    def step(self) -> bool:
        """Extend the bases by one vector each; False when the Krylov space is exhausted or full."""
        if self.exhausted or self.n_v + 1 >= self._V.shape[0]:
            return False
        u = self.op.matvec(self.scale * self._V[self.n_v - 1]) - self.alphas[-1] * self._U[self.n_u - 1]
        _orthogonalize(u, self._U[:self.n_u])
        beta = float(u.norm())
        if beta <= 1e-12 * math.sqrt(self.norm_squared):
            # A v_k lies in span(U_k): keep v_k as a last column with β = 0
            # and zero vectors u_{k+1}, v_{k+1}, so the least-squares problem
            # over all of V_k is consistent with the recurrences.
            self.betas.append(0.0)
            self.alphas.append(0.0)
            self.n_u += 1
            self.n_v += 1
            self.exhausted = True
            return False
        u /= beta
        v = self.scale * self.op.rmatvec(u) - beta * self._V[self.n_v - 1]
        _orthogonalize(v, self._V[:self.n_v])
        alpha = float(v.norm())
        self.norm_squared += alpha**2 + beta**2
        self.betas.append(beta)
        self._U[self.n_u] = u
        self.n_u += 1
        self.alphas.append(alpha)
        self.n_v += 1
        if alpha <= 1e-12 * math.sqrt(self.norm_squared):
            # Aᵀ u_{k+1} lies in span(V_k): α_{k+1} = 0 and a zero v_{k+1}
            # keep A V_k = U_{k+1} B_k and Aᵀ U_{k+1} = V_{k+1} L_{k+1}ᵀ exact.
            self.alphas[-1] = 0.0
            self.exhausted = True
            return False
        self._V[self.n_v - 1] = v / alpha
        return True

    def matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """B_k (k+1, k) and L_{k+1} (k+1, k+1)."""
        k = self.steps
        L = np.zeros((k + 1, k + 1))
        for i in range(k + 1):
            L[i, i] = self.alphas[i] if i < len(self.alphas) else 0.0
            if i < k:
                L[i + 1, i] = self.betas[i]
        return L[:, :k], L


def _truncations(B: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Coefficients C (k, k+1): column j keeps the j largest Ritz values of B (k+1, k), so the last is the least-squares fit."""
    k = B.shape[1]
    if k == 0:
        return np.zeros((0, 1))
    P_left, ritz, Q_right_t = np.linalg.svd(B, full_matrices=False)  # B = P diag(ritz) Qᵀ
    safe = np.where(ritz > 0, ritz, 1.0)
    terms = Q_right_t.T * np.where(ritz > 0, (P_left.T @ rhs) / safe, 0.0)  # (k, k): column i is Ritz term i
    return np.concatenate([np.zeros((k, 1)), np.cumsum(terms, axis=1)], axis=1)


def lsqr_rho(model: nn.Module, x: torch.Tensor, targets: np.ndarray, *, trace: ForwardTrace | None, chunk_examples: int,
             settings: LsqrSettings = LsqrSettings()) -> AlignmentMeasure:
    """Matrix-free ρ upper bound and ρ(ε) brackets of targets (N, M) at inputs x (N, ...).

    Raises ValueError on all-zero targets or an unknown preconditioner.
    """
    start_time = time.perf_counter()
    op = JacobianOperator(model, x, chunk_examples, settings.dtype)
    n_examples = int(x.shape[0])
    y = torch.from_numpy(stack_targets(targets))  # (R,)
    y_norm = float(y.norm())
    if y_norm == 0.0:
        raise ValueError("the targets are all zero, so ρ = ‖(I − P_J)Y‖/‖Y‖ is undefined")

    # σ_max gets at most a quarter of the time limit.
    sigma_low, sigma_high = sigma_max_estimate(op, settings.sigma_steps, settings.seed,
                                               deadline=start_time + settings.time_limit_s / 4)
    if settings.preconditioner == "tensor-scaling":
        scale = tensor_scaling(op, settings.seed)
    elif settings.preconditioner == "none":
        scale = torch.ones(op.n_params, dtype=torch.float64)
    else:
        raise ValueError(f"unknown preconditioner {settings.preconditioner!r}; expected tensor-scaling or none")

    theta0 = last_layer_start(op, model, x, targets, trace)
    r0 = y - op.matvec(theta0) if bool(theta0.any()) else y.clone()
    krylov = KrylovState(op, scale, r0, sigma_high, settings.max_iterations)
    lower = {eps: 0.0 for eps in CURVE_EPSILONS}
    upper = {eps: 1.0 for eps in CURVE_EPSILONS}
    targets_eps = [eps for eps in CURVE_EPSILONS if eps >= settings.target_eps * (1 - 1e-9)]

    def evaluate(eps_list: list[float]) -> None:
        # Scaled-space Ritz values differ from J's singular values, so every
        # truncation level of the Krylov least-squares fit is a candidate.
        # Each gives a valid bracket for every ε, and the tightest is kept.
        B, L = krylov.matrices()
        k = B.shape[1]
        rhs = np.zeros(k + 1)
        rhs[0] = krylov.beta1
        C = _truncations(B, rhs)  # (k, k+1)
        residuals = rhs[:, None] - B @ C  # (k+1, candidates)
        V_all = krylov.basis_v(k + 1)  # (k+1, P)
        jtr = (V_all.T @ torch.from_numpy(L.T @ residuals)) / scale[:, None]  # (P, candidates)
        thetas = theta0[:, None] + scale[:, None] * (V_all[:k].T @ torch.from_numpy(C))  # (P, candidates)
        r_norms = np.linalg.norm(residuals, axis=0)
        jtr_norms = jtr.norm(dim=0).numpy()
        theta_norms = thetas.norm(dim=0).numpy()
        for eps in eps_list:
            for r_norm, jtr_norm, theta_norm in zip(r_norms, jtr_norms, theta_norms):
                low, high = _bracket(float(r_norm), float(jtr_norm), float(theta_norm), eps, sigma_low, sigma_high, y_norm)
                lower[eps] = max(lower[eps], low)
                upper[eps] = min(upper[eps], high)

    # θ = 0 is one more candidate (r = Y), the tightest for ε near 1.
    y_gradient_norm = float(op.rmatvec(y).norm())
    for eps in CURVE_EPSILONS:
        lower[eps], upper[eps] = _bracket(y_norm, y_gradient_norm, 0.0, eps, sigma_low, sigma_high, y_norm)

    def resolved(eps: float) -> bool:
        return upper[eps] - lower[eps] <= 2 * settings.tolerance

    stop_reason = f"reached the iteration limit of {settings.max_iterations}"
    while True:
        if krylov.steps % 10 == 0:
            evaluate(targets_eps)
            if all(resolved(eps) for eps in targets_eps):
                stop_reason = f"resolved ρ(ε) for every ε ≥ {settings.target_eps:g}"
                break
        if krylov.steps >= settings.max_iterations:
            break
        if time.perf_counter() - start_time > settings.time_limit_s:
            stop_reason = f"reached the time limit of {settings.time_limit_s:g} s"
            break
        if not krylov.step():
            stop_reason = "the Krylov space is exhausted"
            break
    evaluate(list(CURVE_EPSILONS))

    # The least-squares iterate of the Krylov space (the LSQR iterate); its
    # residual is recomputed with one more product rather than trusted from
    # the bidiagonal recurrence.
    B, _ = krylov.matrices()
    rhs = np.zeros(B.shape[0])
    rhs[0] = krylov.beta1
    coefficients = _truncations(B, rhs)[:, -1]  # (k,)
    theta = theta0 + scale * (krylov.basis_v(B.shape[1]).T @ torch.from_numpy(coefficients))
    rho_upper = float((y - op.matvec(theta)).norm()) / y_norm
    recurrence_gap = abs(rho_upper - float(np.linalg.norm(rhs - B @ coefficients)) / y_norm)

    curve = []
    for eps in CURVE_EPSILONS:
        low, high = lower[eps], upper[eps]
        curve.append(CurvePoint(eps=eps, rho=0.5 * (low + high), resolved=high - low <= 2 * settings.tolerance,
                                rho_lower=low, rho_upper=high))
    resolved_eps = [point.eps for point in curve if point.resolved]
    converged = rho_upper <= settings.tolerance
    reason = None
    if not converged:
        reason = (f"ρ ≤ {rho_upper:.3g} is only an upper bound after {krylov.steps} iterations ({stop_reason}); a lower "
                  f"bound on ρ would need σ⁺_min, which a Krylov method does not resolve")
    if recurrence_gap > settings.tolerance:
        converged = False
        reason = f"the bidiagonal recurrence differs by {recurrence_gap:.2g} in ρ from the recomputed residual"

    return AlignmentMeasure(
        method="lsqr", rho=rho_upper, n_examples=n_examples, n_rows=op.n_rows, n_columns=op.n_params, rank=0,
        rank_tolerance=0.0, sigma_max=sigma_low, sigma_min=0.0, route=f"lsqr ({settings.preconditioner})", curve=curve,
        seconds=time.perf_counter() - start_time, converged=converged, reason=reason,
        eps_resolved=min(resolved_eps) if resolved_eps else None, iterations=krylov.steps,
    )
