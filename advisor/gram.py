"""Exact ρ from a Gram matrix accumulated in chunks, never holding J (N·M, P) whole.

Dimensions follow advisor.alignment: N examples, M outputs, P parameters, R = N·M
Jacobian rows ordered examples outer, outputs inner.

Wide J (R ≤ P): K = J Jᵀ (R, R) is built block by block. A panel of per-example
Jacobian chunks J_c (B·M, P) that fits the memory budget stays in memory while
every later chunk is computed once more and multiplied against it. A budget
with room for all chunks computes each J_c once, and one with room for a
fraction g of them computes about 1/(2g) times as many. Fully connected
layers stay in factored form (advisor.jacobian_chunks), so their share of K
costs O + I multiply-adds per entry instead of O·(I + 1). K's eigenvalues
are σ², and ρ needs only the weights (u_iᵀ Y)² of Y on its eigenvectors,
which advisor.spectrum computes without forming them. The eigenvectors span
all of R^R, so ‖(I − P_ε) Y‖² = Σ_{σ_i < ε σ_max} (u_iᵀ Y)², a sum of the
small weights with no cancellation.

Tall J (R > P): G = Jᵀ J (P, P) and Jᵀ Y (P,) are summed over chunks, and
‖P_ε Y‖² = Σ_{σ_i ≥ ε σ_max} (v_iᵀ Jᵀ Y)² / σ_i², with the same weights
routine applied to G and Jᵀ Y.

Both routes accumulate in float64. Eigenvalues of a Gram matrix are σ² with
absolute round-off of about R·eps·λ_max, so the rank tolerance on σ is
σ_max·sqrt(R·eps), far above the SVD's σ_max·max(R, P)·eps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import jacrev, vmap

from advisor.alignment import CURVE_EPSILONS, FLOAT64_EPS, AlignmentMeasure, CurvePoint, stack_targets
from advisor.functional import analysis_copy, frozen_tensors, trainable_parameters
from advisor.jacobian_chunks import JacobianChunk, factorable_linears, gram_row_width
from advisor.spectrum import WeightedSpectrum, bordered_buffer, tridiagonal_route_available, weighted_spectrum


def spectrum_arrays() -> int:
    """Return how many S × S float64 arrays the spectrum step has in memory at its peak (see plan_gram)."""
    return 1 if tridiagonal_route_available() else 4


@dataclass(frozen=True)
class GramPlan:
    """Chunking of the Gram route for a given memory budget."""

    side: str  # "rows" (K = J Jᵀ) or "columns" (G = Jᵀ J)
    chunk_examples: int
    panel_chunks: int  # chunks held at once (rows side); all chunks when it is ≥ n_chunks
    n_chunks: int
    jacobian_chunk_computations: int
    bytes: int


def plan_gram(n_examples: int, n_outputs: int, n_params: int, memory_budget_bytes: float,
              row_width: int | None = None) -> GramPlan:
    """Choose chunk and panel sizes so that K, the spectrum's workspace and the held chunks fit the budget.

    The spectrum needs one (S + 1)² float64 array for S = min(R, P), K
    bordered with Y (see advisor.spectrum), or four S × S arrays where it
    falls back to eigh (the matrix, its eigenvectors and LAPACK syevd's 2·S²
    workspace). `row_width` is the
    number of values a chunk stores per Jacobian row (P, or less where
    fully connected layers stay factored); it defaults to P.
    """
    rows = n_examples * n_outputs
    side = "rows" if rows <= n_params else "columns"
    width = n_params if side == "columns" or row_width is None else row_width
    size = min(rows, n_params)
    fixed = 8 * spectrum_arrays() * (size + 1) ** 2
    available = max(memory_budget_bytes - fixed, 0)
    bytes_per_example = 8 * n_outputs * width * 3  # J_c rows, jacrev's copy and the cat
    if side == "rows":
        # A chunk's Gram block J_c J_panelᵀ (B·M, up to R) and the product
        # that a factored layer adds to it. With factored layers the rows
        # are narrow and these blocks, not J_c, bound the chunk.
        bytes_per_example += 8 * n_outputs * rows * 2
    # Aim for chunks of at most 256 MiB each of J_c and of the Gram block, and at least one example.
    chunk = int(max(1, min(n_examples, (256 * 2**20) // (8 * n_outputs * width),
                           (256 * 2**20) // (8 * n_outputs * rows))))
    n_chunks = math.ceil(n_examples / chunk)
    if side == "columns":
        return GramPlan(side, chunk, 1, n_chunks, n_chunks, int(fixed + chunk * bytes_per_example))
    # Held panel: chunks of J_c (8·B·M·width bytes each), after room for one
    # streamed chunk with its temporaries.
    streamed = chunk * bytes_per_example
    panel = int(max(1, (available - streamed) // (8 * chunk * n_outputs * width)))
    panel = min(panel, n_chunks)
    computations = 0
    for start in range(0, n_chunks, panel):
        computations += n_chunks - start
    panel_bytes = min(panel, n_chunks) * 8 * chunk * n_outputs * width
    return GramPlan(side, chunk, panel, n_chunks, computations, int(fixed + panel_bytes + chunk * bytes_per_example))


class ChunkJacobian:
    """Per-example float64 Jacobian chunks of a model, BatchNorm in eval mode.

    Fully connected layers stay factored (see advisor.jacobian_chunks) unless
    `factor_linear` is False.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, *, factor_linear: bool = True) -> None:
        self.work = analysis_copy(model)
        params = trainable_parameters(self.work)
        self.fixed = frozen_tensors(self.work)
        self.x = x.to(torch.float64)
        self.order = [(name, p.numel()) for name, p in params.items()]
        self.n_params = sum(size for _, size in self.order)
        self.factors = factorable_linears(self.work, self.x[:2], params) if factor_linear else {}
        factored = {f.weight for f in self.factors.values()} | {f.bias for f in self.factors.values() if f.bias}
        self.params = {name: p for name, p in params.items() if name not in factored}
        self.factored_params = {name: p for name, p in params.items() if name in factored}
        self.n_dense = sum(p.numel() for p in self.params.values())
        self.row_width = gram_row_width(params, self.factors)

        # The hooks add a zero vector to each factored layer's output, so
        # that its Jacobian gives the derivatives g, and record the layer's input.
        self._deltas: dict[str, torch.Tensor] | None = None
        self._inputs: dict[str, torch.Tensor] = {}
        for name in self.factors:
            self.work.get_submodule(name).register_forward_hook(self._perturb(name))
        with torch.no_grad():
            self.n_outputs = int(self._single(self.params, self._zero_deltas(), self.x[0])[0].shape[0])
        self._per_example = vmap(jacrev(self._single, argnums=(0, 1), has_aux=True), in_dims=(None, None, 0))

    def _zero_deltas(self) -> dict[str, torch.Tensor]:
        return {name: torch.zeros(f.out_features, dtype=torch.float64) for name, f in self.factors.items()}

    def _perturb(self, name: str):
        def hook(_module: nn.Module, args: tuple, output: torch.Tensor):
            if self._deltas is None:
                return None
            self._inputs[name] = args[0].squeeze(0)  # (I,)
            return output + self._deltas[name]
        return hook

    def _single(self, params: dict[str, torch.Tensor], deltas: dict[str, torch.Tensor],
                example: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self._deltas, self._inputs = (deltas if self.factors else None), {}
        try:
            outputs = torch.func.functional_call(self.work, {**self.fixed, **self.factored_params, **params}, (example.unsqueeze(0),))
        finally:
            self._deltas = None
        return outputs.squeeze(0), self._inputs  # (M,), layer -> (I,)

    def chunk(self, start: int, stop: int) -> JacobianChunk:
        """Return the Jacobian rows of examples start ≤ n < stop."""
        (jac, signal_jac), inputs = self._per_example(self.params, self._zero_deltas(), self.x[start:stop])  # (B, M, *shape) each
        B, M = stop - start, self.n_outputs
        blocks = [jac[name].reshape(B, M, -1) for name in self.params]  # each (B, M, P_t)
        dense = torch.cat(blocks, dim=2).reshape(B * M, self.n_dense) if blocks else torch.zeros(B * M, 0, dtype=torch.float64)
        signals = {name: signal_jac[name].reshape(B * M, -1) for name in self.factors}  # (B·M, O)
        return JacobianChunk(M, dense, signals, {name: inputs[name].reshape(B, -1) for name in self.factors})

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Return the explicit Jacobian rows (B·M, P) of examples start ≤ n < stop, in parameter order."""
        return self.chunk(start, stop).full(self.order, self.factors)


def _ranges(n_examples: int, chunk: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk, n_examples)) for start in range(0, n_examples, chunk)]


def _row_gram(source: ChunkJacobian, plan: GramPlan, n_examples: int, K: torch.Tensor) -> None:
    """Write K = J Jᵀ (R, R), float64, into `K` from panels of held chunks."""
    M = source.n_outputs
    ranges = _ranges(n_examples, plan.chunk_examples)
    for panel_start in range(0, len(ranges), plan.panel_chunks):
        panel_ranges = ranges[panel_start:panel_start + plan.panel_chunks]
        panel = JacobianChunk.cat([source.chunk(a, b) for a, b in panel_ranges])  # rows of the panel
        first, last = panel_ranges[0][0], panel_ranges[-1][1]
        lo, hi = first * M, last * M
        # Only blocks on or below the diagonal are multiplied (half the flops
        # of panel @ panel.T); the upper ones are their transposes.
        for a, b in panel_ranges:
            block = panel.examples(a - first, b - first).gram_with(panel.examples(0, b - first), source.factors)
            K[a * M:b * M, lo:b * M] = block  # (B·M, rows up to this chunk)
            K[lo:b * M, a * M:b * M] = block.T
        # Later chunks are computed again (unless the panel held them all) and
        # multiplied against the held panel; K is symmetric, so the mirror
        # block is a transpose.
        for a, b in ranges[panel_start + plan.panel_chunks:]:
            block = source.chunk(a, b).gram_with(panel, source.factors)  # (B·M, rows of the panel)
            K[a * M:b * M, lo:hi] = block
            K[lo:hi, a * M:b * M] = block.T
        del panel


def gram_rho(model: nn.Module, x: torch.Tensor, targets: np.ndarray, *, memory_budget_bytes: float,
             plan: GramPlan | None = None, force_eigh: bool = False) -> AlignmentMeasure:
    """Exact ρ and ρ(ε) of targets (N, M) at inputs x (N, ...) by the chunked Gram route.

    `force_eigh` computes the spectrum with eigh and eigenvectors instead of
    the bordered tridiagonal route (for benchmarks). Raises ValueError when
    the targets do not have one column per model output.
    """
    start = time.perf_counter()
    source = ChunkJacobian(model, x)
    n_examples = int(x.shape[0])
    M, P = source.n_outputs, source.n_params
    if targets.shape != (n_examples, M):
        raise ValueError(f"targets have shape {targets.shape}, expected ({n_examples}, {M}) for this model and input")
    plan = plan or plan_gram(n_examples, M, P, memory_budget_bytes, source.row_width)
    y = stack_targets(targets)  # (R,)

    if plan.side == "rows":
        bordered = bordered_buffer(n_examples * M)
        _row_gram(source, plan, n_examples, bordered[1:, 1:])
        gram_done = time.perf_counter()
        spectrum = weighted_spectrum(bordered, y, force_eigh=force_eigh)
        del bordered
        measure = _row_measure(spectrum, y, n_examples, P)
    else:
        measure, gram_done = _column_gram_measure(source, plan, n_examples, y, force_eigh)
    measure.phase_seconds = {"jacobians and gram": gram_done - start, "spectrum": time.perf_counter() - gram_done}
    measure.seconds = time.perf_counter() - start
    return measure


def _row_measure(spectrum: WeightedSpectrum, y: np.ndarray, n_examples: int, n_columns: int) -> AlignmentMeasure:
    """Compute ρ and ρ(ε) from the eigenvalues σ² of K = J Jᵀ and the weights (u_iᵀ Y)²."""
    order = np.argsort(spectrum.eigenvalues)[::-1]
    sigma = np.sqrt(np.clip(spectrum.eigenvalues[order], 0.0, None))
    weights = spectrum.weights[order]
    # tail[k] = Σ_{i ≥ k} w_i: the squared residual when the first k directions are kept.
    tail = np.append(np.cumsum(weights[::-1])[::-1], 0.0)
    y_norm_sq = float(y @ y)
    tolerance = float(sigma[0]) * math.sqrt(y.size * FLOAT64_EPS) if sigma.size else 0.0

    def residual(count: int) -> float:
        return math.sqrt(max(float(tail[count]), 0.0) / y_norm_sq) if y_norm_sq > 0 else 0.0

    return _measure_from_spectrum(sigma, tolerance, residual, n_examples=n_examples, n_rows=y.size,
                                  n_columns=n_columns, route=f"gram-rows/{spectrum.route}")


def _measure_from_spectrum(sigma: np.ndarray, tolerance: float, residual, *, n_examples: int, n_rows: int,
                           n_columns: int, route: str) -> AlignmentMeasure:
    """Build the AlignmentMeasure from σ (descending) and residual(k), the ρ left when the first k directions are kept."""
    sigma_max = float(sigma[0]) if sigma.size else 0.0
    rank = int((sigma > tolerance).sum())
    curve = []
    for eps in CURVE_EPSILONS:
        cutoff = eps * sigma_max
        count = min(int((sigma >= max(cutoff, tolerance)).sum()), rank)
        curve.append(CurvePoint(eps=eps, rho=residual(count), resolved=cutoff > tolerance))
    return AlignmentMeasure(method="exact", rho=residual(rank), n_examples=n_examples, n_rows=n_rows, n_columns=n_columns,
                            rank=rank, rank_tolerance=tolerance, sigma_max=sigma_max,
                            sigma_min=float(sigma[rank - 1]) if rank else 0.0, route=route, curve=curve,
                            singular_values=[float(s) for s in sigma[:2000]])


def _column_gram_measure(source: ChunkJacobian, plan: GramPlan, n_examples: int, y: np.ndarray,
                         force_eigh: bool) -> tuple[AlignmentMeasure, float]:
    """Compute ρ from G = Jᵀ J (P, P) and b = Jᵀ Y (P,): ‖P_ε Y‖² = Σ (v_iᵀ b)² / σ_i² over kept σ_i.

    Also returns the perf_counter time at which G was complete.
    """
    M, P = source.n_outputs, source.n_params
    y_t = torch.from_numpy(y)
    bordered = bordered_buffer(P)
    G = bordered[1:, 1:]
    G.zero_()
    b = torch.zeros(P, dtype=torch.float64)
    for a, c in _ranges(n_examples, plan.chunk_examples):
        J_c = source.rows(a, c)  # (B·M, P)
        G += J_c.T @ J_c
        b += J_c.T @ y_t[a * M:c * M]
    del G
    gram_done = time.perf_counter()
    spectrum = weighted_spectrum(bordered, b.numpy(), force_eigh=force_eigh)
    del bordered
    order = np.argsort(spectrum.eigenvalues)[::-1]
    sigma = np.sqrt(np.clip(spectrum.eigenvalues[order], 0.0, None))
    weights = spectrum.weights[order]  # (v_iᵀ Jᵀ Y)² = σ_i² (u_iᵀ Y)²
    tolerance = (float(sigma[0]) if sigma.size else 0.0) * math.sqrt(P * FLOAT64_EPS)
    y_norm_sq = float(y @ y)
    above_tolerance = int((sigma > tolerance).sum())
    # Prefix sums of (u_iᵀ Y)² over the directions above the tolerance.
    projected = np.append(0.0, np.cumsum(weights[:above_tolerance] / sigma[:above_tolerance] ** 2))

    def residual(count: int) -> float:
        # ‖(I − P)Y‖² = ‖Y‖² − Σ (u_iᵀY)²: Col(J) is not all of R^R here, so
        # this is a difference of squares and loses relative accuracy when
        # the residual is below about sqrt(eps).
        return math.sqrt(max(y_norm_sq - float(projected[count]), 0.0) / y_norm_sq) if y_norm_sq > 0 else 0.0

    measure = _measure_from_spectrum(sigma, tolerance, residual, n_examples=n_examples, n_rows=y.size, n_columns=P,
                                     route=f"gram-columns/{spectrum.route}")
    return measure, gram_done
