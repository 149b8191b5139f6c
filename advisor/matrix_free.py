"""Matrix-free ρ(ε) brackets from Jacobian-vector products, never forming J (N·M, P).

Dimensions follow advisor.alignment: N examples, M outputs, P parameters,
R = N·M, Jacobian rows ordered examples outer, outputs inner.

The solver is Golub–Kahan bidiagonalization of J started from the targets Y,
with full reorthogonalization: the process behind LSQR (Paige and Saunders,
ACM TOMS 8(1), 1982), which is also the Lanczos process on J Jᵀ started from
y = Y/‖Y‖. After k steps its tridiagonal matrix T_k = L_k L_kᵀ holds the
first 2k moments of the spectral measure

    μ = Σ_i (q_iᵀ y)² δ(λ_i),   J Jᵀ = Σ_i λ_i q_i q_iᵀ,

and ρ(ε)² = μ([0, ε²σ_max²)) because P_ε keeps exactly the directions with
λ_i = σ_i² ≥ ε²σ_max². For a threshold t, the Gauss–Radau quadrature rule of
T_k with one node fixed at t has positive weights w_j at nodes τ_j, and the
Chebyshev–Markov–Stieltjes inequalities give

    Σ_{τ_j < t} w_j ≤ μ([0, t)) ≤ Σ_{τ_j ≤ t} w_j

for every measure with these 2k moments, the true one included. No bounds
from the same moments can be tighter. The tests check them against exact
spectra. σ_max comes with its own bracket [σ_low, σ_high] (Ritz values of a
short random-start run and of this one), so the lower bound uses
t = ε²σ_low² and the upper bound t = ε²σ_high².

For ρ = ρ(0), the upper bound is the smaller of ρ_S and the recomputed
residual of the LSQR iterate. So the reported bound starts at ρ_S and never
grows. A lower bound on ρ would need σ⁺_min, which a Krylov method does not
resolve. An ε counts as resolved when its bracket is at most twice the
tolerance wide.

Why no faster-converging variant is offered: ρ(ε) is a step function of the
spectrum at t, and a Krylov space of dimension k is a polynomial of degree k
in J Jᵀ. Where the spectrum is dense around t, no polynomial of low degree
separates the eigenvalues just below t from those just above. So every
Krylov method needs many iterations there, LSQR, LSMR and block variants
alike. A preconditioner changes the spectrum, and with it the ε of ρ(ε).
The bracket reports how far the run got.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from torch import nn

from advisor.alignment import CURVE_EPSILONS, AlignmentMeasure, CurvePoint, last_layer_rho, stack_targets
from advisor.functional import analysis_copy, frozen_tensors, trainable_parameters
from advisor.trace import ForwardTrace


# Smallest ε that float32 Jacobian products can resolve; see lsqr_rho.
FLOAT32_EPS_FLOOR = 1e-2


@dataclass(frozen=True)
class LsqrSettings:
    """Stopping rule of the matrix-free method.

    `target_eps`: stop once ρ(ε) is resolved for every grid ε ≥ target_eps.
    `tolerance`: the half-width, in ρ, that counts as resolved.
    `max_iterations` and `time_limit_s` (seconds) stop the solver earlier,
    leaving the smaller ε unresolved. `sigma_steps`: Golub–Kahan steps of the
    random-start σ_max estimate.
    """

    target_eps: float = 1e-3
    tolerance: float = 1e-3
    max_iterations: int = 300
    time_limit_s: float = float("inf")
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
    After two steps, stops before a step that would end past `deadline`
    (a time.perf_counter() value), judged by the length of the last step.
    """
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(op.n_params, generator=generator, dtype=torch.float64)
    V = [v / v.norm()]
    U: list[torch.Tensor] = []
    alphas, betas = [], []
    u_prev = torch.zeros(op.n_rows, dtype=torch.float64)
    beta = 0.0
    last_step = 0.0
    for step in range(steps):
        if step >= 2 and time.perf_counter() + last_step > deadline:
            break
        step_start = time.perf_counter()
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
        last_step = time.perf_counter() - step_start
    k = len(alphas)
    B = np.zeros((k, k))
    for i in range(k):
        B[i, i] = alphas[i]
        if i + 1 < k:
            B[i, i + 1] = betas[i]
    left, singular, right = np.linalg.svd(B)
    residual = abs(betas[k - 1] * left[k - 1, 0]) if k else 0.0
    return float(singular[0]), float(singular[0] + residual)


def last_layer_bound(op: JacobianOperator, model: nn.Module, x: torch.Tensor, targets: np.ndarray,
                     trace: ForwardTrace | None, known: float | None = None) -> float:
    """ρ_S, an upper bound on ρ when the head's weight is trainable; 1.0 (the bound of θ = 0) otherwise.

    `known` is ρ_S measured by the caller. Otherwise the least-squares fit on
    the head's input features costs one forward pass in the operator's dtype.
    """
    if trace is None or trace.last_parametric is None:
        return 1.0
    if f"{trace.last_parametric.module}.weight" not in op.params:
        return 1.0
    if known is not None:
        return min(1.0, known)
    measure = last_layer_rho(model, x, targets, trace, feature_dtype=op.dtype)
    return 1.0 if measure is None else min(1.0, measure.rho)


def iterate_bracket(r_norm: float, jtr_norm: float, theta_norm: float, eps: float, sigma_low: float,
                    sigma_high: float, y_norm: float) -> tuple[float, float]:
    """(lower, upper) bounds on ρ(ε) from any one parameter vector θ with residual r = Y − J θ.

    With σ = σ_max(J), (I − P_ε) Y = (I − P_ε) r + (I − P_ε) J θ,
    ‖(I − P_ε) J θ‖ ≤ ε σ ‖θ‖ and ‖P_ε r‖ ≤ ‖Jᵀ r‖ / (ε σ), so
    ‖(I − P_ε) Y‖ ≤ ‖r‖ + ε σ ‖θ‖ and
    ‖(I − P_ε) Y‖ ≥ sqrt(max(0, ‖r‖² − (‖Jᵀ r‖ / (ε σ))²)) − ε σ ‖θ‖.
    Used for solvers that give an iterate but no moments, such as SciPy's LSQR.
    """
    leak = eps * sigma_high * theta_norm
    upper = r_norm + leak
    fitted = jtr_norm / (eps * sigma_low) if sigma_low > 0 else math.inf
    lower = math.sqrt(max(0.0, r_norm**2 - fitted**2)) - leak
    return max(lower, 0.0) / y_norm, min(upper, y_norm) / y_norm


def radau_bounds(diagonal: np.ndarray, off_diagonal: np.ndarray, t: float) -> tuple[float, float]:
    """Bounds (lower, upper) on μ([0, t)) from a Lanczos tridiagonal matrix of size m ≥ 2.

    `diagonal` (m,) and `off_diagonal` (m − 1,) define T_m. The Gauss–Radau
    rule with a node fixed at t uses T_{m−1} and the coupling b = T[m−1, m−2]:
    solve (T_{m−1} − t I) δ = b² e_{m−1}, then the rule's Jacobi matrix is
    T_{m−1} bordered by b and the corner t + δ_{m−1}. Its nodes are its
    eigenvalues and its weights the squared first components of its
    eigenvectors; the node nearest t is the fixed one.
    """
    k = diagonal.shape[0] - 1
    if k < 1:
        return 0.0, 1.0
    coupling = float(off_diagonal[k - 1])
    banded = np.zeros((3, k))
    banded[0, 1:] = off_diagonal[:k - 1]
    banded[1] = diagonal[:k] - t
    banded[2, :-1] = off_diagonal[:k - 1]
    rhs = np.zeros(k)
    rhs[-1] = coupling**2
    try:
        delta = scipy.linalg.solve_banded((1, 1), banded, rhs)
    except (np.linalg.LinAlgError, ValueError):
        return 0.0, 1.0  # t is a node of the Gauss rule of T_{m−1}: no Radau rule through it
    corner = t + float(delta[-1])
    if not math.isfinite(corner):
        return 0.0, 1.0
    nodes, vectors = scipy.linalg.eigh_tridiagonal(np.append(diagonal[:k], corner), np.append(off_diagonal[:k - 1], coupling))
    weights = vectors[0] ** 2
    fixed = int(np.argmin(np.abs(nodes - t)))
    return float(weights[:fixed].sum()), float(min(1.0, weights[:fixed + 1].sum()))


def _orthogonalize(vector: torch.Tensor, basis: torch.Tensor) -> None:
    """Remove from `vector`, in place, its components along the orthonormal rows of `basis` (k, length), in two passes."""
    if basis.shape[0] == 0:
        return
    for _ in range(2):
        vector -= basis.T @ (basis @ vector)


class KrylovState:
    """Golub–Kahan bidiagonalization of J started from r0, with orthonormal bases kept.

    After k steps, J V_k = U_{k+1} B_k with B_k (k+1, k) lower bidiagonal, and
    Jᵀ U_{k+1} = V_{k+1} L_{k+1}ᵀ with L_{k+1} = [B_k, α_{k+1} e_{k+1}], so
    J Jᵀ U_{k+1} = U_{k+1} L_{k+1} L_{k+1}ᵀ + (a multiple of u_{k+2}) e_{k+1}ᵀ:
    T = L_{k+1} L_{k+1}ᵀ is the Lanczos matrix of J Jᵀ from u_1 = r0/‖r0‖.
    The bases hold at most `capacity` + 2 vectors, 8·(capacity + 2)·(R + P)
    bytes. They start small and double as the run goes, so a run stopped by
    time does not hold memory for iterations it never made.
    """

    def __init__(self, op: JacobianOperator, r0: torch.Tensor, norm_estimate: float, capacity: int) -> None:
        self.op = op
        self.capacity = capacity + 2
        rows = min(self.capacity, 32)
        self._U = torch.zeros(rows, op.n_rows, dtype=torch.float64)
        self._V = torch.zeros(rows, op.n_params, dtype=torch.float64)
        self.n_u = self.n_v = 1
        self.beta1 = float(r0.norm())
        self.betas: list[float] = []
        # r0 = 0 or Jᵀ r0 ≈ 0 (r0 ⊥ Col(J)) leaves nothing to iterate on. α or
        # β below 1e-12·‖B_k‖_F (LSQR's estimate of ‖J‖) is round-off;
        # `norm_estimate` (about ‖J‖) judges the first α.
        if self.beta1 > 0:
            self._U[0] = r0 / self.beta1
        v = op.rmatvec(self._U[0]) if self.beta1 > 0 else torch.zeros(op.n_params, dtype=torch.float64)
        self.alphas = [float(v.norm())]
        self.exhausted = self.beta1 == 0.0 or self.alphas[0] <= 1e-12 * norm_estimate
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
        if self.exhausted or self.n_v + 1 >= self.capacity:
            return False
        if self.n_v + 1 >= self._V.shape[0]:
            rows = min(self.capacity, 2 * self._V.shape[0])
            self._U = torch.cat([self._U, self._U.new_zeros(rows - self._U.shape[0], self._U.shape[1])])
            self._V = torch.cat([self._V, self._V.new_zeros(rows - self._V.shape[0], self._V.shape[1])])
        u = self.op.matvec(self._V[self.n_v - 1]) - self.alphas[-1] * self._U[self.n_u - 1]
        _orthogonalize(u, self._U[:self.n_u])
        beta = float(u.norm())
        if beta <= 1e-12 * math.sqrt(self.norm_squared):
            # J v_k lies in span(U_k): the space is invariant, β = 0 ends it.
            self.betas.append(0.0)
            self.alphas.append(0.0)
            self.n_u += 1
            self.n_v += 1
            self.exhausted = True
            return False
        u /= beta
        v = self.op.rmatvec(u) - beta * self._V[self.n_v - 1]
        _orthogonalize(v, self._V[:self.n_v])
        alpha = float(v.norm())
        self.norm_squared += alpha**2 + beta**2
        self.betas.append(beta)
        self._U[self.n_u] = u
        self.n_u += 1
        self.alphas.append(alpha)
        self.n_v += 1
        if alpha <= 1e-12 * math.sqrt(self.norm_squared):
            # Jᵀ u_{k+1} lies in span(V_k): α_{k+1} = 0, the space is invariant.
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

    def lanczos(self) -> tuple[np.ndarray, np.ndarray]:
        """Diagonal and off-diagonal of T = L Lᵀ, the Lanczos matrix of J Jᵀ from u_1."""
        alphas = np.asarray(self.alphas[:self.steps + 1])
        betas = np.asarray(self.betas[:self.steps])
        diagonal = alphas**2 + np.concatenate([[0.0], betas**2])
        return diagonal, alphas[:-1] * betas


class MomentBrackets:
    """ρ(ε) brackets from the moments of the Krylov run; see the module docstring."""

    def __init__(self, krylov: KrylovState, sigma_low: float, sigma_high: float) -> None:
        self.diagonal, self.off_diagonal = krylov.lanczos()
        self.exhausted = krylov.exhausted
        self.steps = krylov.steps
        # The largest Ritz value of J Jᵀ is a lower bound on σ_max².
        ritz_top = float(scipy.linalg.eigvalsh_tridiagonal(self.diagonal, self.off_diagonal)[-1]) if self.steps else 0.0
        self.sigma_low = max(sigma_low, math.sqrt(max(ritz_top, 0.0)))
        self.sigma_high = max(sigma_high, self.sigma_low)

    def _exact_rule(self) -> tuple[np.ndarray, np.ndarray]:
        # An invariant Krylov space makes the Gauss rule the measure itself.
        nodes, vectors = scipy.linalg.eigh_tridiagonal(self.diagonal, self.off_diagonal)
        return nodes, vectors[0] ** 2

    def rho(self, eps: float) -> tuple[float, float]:
        """(lower, upper) bounds on ρ(ε) for ε > 0."""
        t_low, t_high = (eps * self.sigma_low) ** 2, (eps * self.sigma_high) ** 2
        if self.exhausted:
            nodes, weights = self._exact_rule()
            lower, upper = float(weights[nodes < t_low].sum()), float(weights[nodes < t_high].sum())
        elif self.diagonal.shape[0] < 2:
            lower, upper = 0.0, 1.0
        else:
            lower = radau_bounds(self.diagonal, self.off_diagonal, t_low)[0]
            upper = radau_bounds(self.diagonal, self.off_diagonal, t_high)[1]
        return math.sqrt(max(lower, 0.0)), math.sqrt(min(max(upper, 0.0), 1.0))



def contiguous_resolved_eps(curve: list[CurvePoint]) -> float | None:
    """Return the smallest ε such that ρ(ε') is resolved for every ε' ≥ ε on the curve, or None.

    "Resolved down to ε" must not skip an unresolved ε in between: a bracket
    on ρ(1e-6) can close around 0 while the one on ρ(3e-3) is still wide.
    """
    smallest = None
    for point in sorted(curve, key=lambda p: p.eps, reverse=True):
        if not point.resolved:
            break
        smallest = point.eps
    return smallest


def lsqr_rho(model: nn.Module, x: torch.Tensor, targets: np.ndarray, *, trace: ForwardTrace | None, chunk_examples: int,
             settings: LsqrSettings = LsqrSettings(), rho_s: float | None = None) -> AlignmentMeasure:
    """Matrix-free ρ upper bound and ρ(ε) brackets of targets (N, M) at inputs x (N, ...).

    `rho_s` is ρ_S on the same inputs when already measured. Raises
    ValueError on all-zero targets.
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
    rho_s = last_layer_bound(op, model, x, targets, trace, known=rho_s)

    krylov = KrylovState(op, y, sigma_high, settings.max_iterations)
    targets_eps = [eps for eps in CURVE_EPSILONS if eps >= settings.target_eps * (1 - 1e-9)]

    def resolved(brackets: MomentBrackets, eps: float) -> bool:
        low, high = brackets.rho(eps)
        return high - low <= 2 * settings.tolerance

    # The brackets cost O(k²) per ε, so they are checked every max(10, k/10) steps.
    stop_reason = f"reached the iteration limit of {settings.max_iterations}"
    next_check = 0
    step_seconds = 0.0
    while True:
        if krylov.steps >= next_check:
            next_check = krylov.steps + max(10, krylov.steps // 10)
            brackets = MomentBrackets(krylov, sigma_low, sigma_high)
            if all(resolved(brackets, eps) for eps in targets_eps):
                stop_reason = f"resolved ρ(ε) for every ε ≥ {settings.target_eps:g}"
                break
        if krylov.steps >= settings.max_iterations:
            break
        # A step is two products and the final check one more, so the run
        # stops when 1.5 times the last step would overrun the limit.
        if time.perf_counter() - start_time + 1.5 * step_seconds > settings.time_limit_s:
            stop_reason = f"reached the time limit of {settings.time_limit_s:g} s"
            break
        step_start = time.perf_counter()
        if not krylov.step():
            stop_reason = "the Krylov space is exhausted"
            break
        step_seconds = time.perf_counter() - step_start
    brackets = MomentBrackets(krylov, sigma_low, sigma_high)

    # The LSQR iterate of the Krylov space, min ‖β₁e₁ − B_k c‖; its residual is
    # recomputed with one more product rather than trusted from the recurrence.
    B, _ = krylov.matrices()
    rhs = np.zeros(B.shape[0])
    rhs[0] = krylov.beta1
    coefficients = np.linalg.lstsq(B, rhs, rcond=None)[0] if B.shape[1] else np.zeros(0)
    theta = krylov.basis_v(B.shape[1]).T @ torch.from_numpy(coefficients)
    rho_lsqr = float((y - op.matvec(theta)).norm()) / y_norm
    recurrence_gap = abs(rho_lsqr - float(np.linalg.norm(rhs - B @ coefficients)) / y_norm)
    rho_upper = min(rho_s, rho_lsqr)

    # Float32 products carry a relative error of about 1e-6 in J v, which
    # shifts the moments by about 1e-6·σ_max²; thresholds ε²σ_max² must stay
    # well above that, so no ε below FLOAT32_EPS_FLOOR counts as resolved.
    eps_floor = FLOAT32_EPS_FLOOR if settings.dtype == torch.float32 else 0.0
    curve = []
    for eps in CURVE_EPSILONS:
        low, high = brackets.rho(eps)
        low = min(low, high)  # the two ends can cross by a rounding step when they meet
        curve.append(CurvePoint(eps=eps, rho=0.5 * (low + high),
                                resolved=high - low <= 2 * settings.tolerance and eps >= eps_floor,
                                rho_lower=low, rho_upper=high))
    eps_resolved = contiguous_resolved_eps(curve)
    converged = rho_upper <= settings.tolerance
    reason = None
    if not converged:
        reason = (f"ρ ≤ {rho_upper:.3g} is only an upper bound after {krylov.steps} iterations ({stop_reason}); a lower "
                  f"bound on ρ would need σ⁺_min, which a Krylov method does not resolve")
    if recurrence_gap > settings.tolerance:
        converged = False
        reason = f"the bidiagonal recurrence differs by {recurrence_gap:.2g} in ρ from the recomputed residual"

    precision = "float32" if settings.dtype == torch.float32 else "float64"
    return AlignmentMeasure(
        method="lsqr", rho=rho_upper, n_examples=n_examples, n_rows=op.n_rows, n_columns=op.n_params, rank=0,
        rank_tolerance=0.0, sigma_max=brackets.sigma_low, sigma_min=0.0,
        route=f"Golub–Kahan from Y with {precision} products, Gauss–Radau brackets",
        curve=curve, seconds=time.perf_counter() - start_time, converged=converged, reason=reason,
        eps_resolved=eps_resolved, iterations=krylov.steps,
    )
