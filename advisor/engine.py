"""The alignment engine: one object per ρ method, up-front cost estimates, and the `auto` choice.

Dimensions follow advisor.alignment: N examples, M outputs, P parameters,
R = N·M. Methods, most accurate first:

- `exact`: the chunked Gram route of advisor.gram (float64), with the
  spectrum from advisor.spectrum.
- `lsqr`: the matrix-free Krylov brackets of advisor.matrix_free.
- `features`: the last-layer bound ρ_S only.

Estimates come from N, M, P, one timed forward pass on a probe batch, the
bytes autograd saves per example on that batch, and one timed float64 GEMM.
They are estimates: the cost factors below (products per forward pass,
spectrum per GEMM flop) were measured with PyTorch 2.14 on a 2-core x86 CPU with
MKL and may be off elsewhere.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from advisor.alignment import AlignmentMeasure, last_layer_rho
from advisor.errors import BudgetError, UnknownChoiceError
from advisor.functional import analysis_copy, trainable_parameters
from advisor.gram import gram_rho, plan_gram
from advisor.jacobian_chunks import factorable_linears, gram_row_width
from advisor.matrix_free import LsqrSettings, chunk_for_budget, lsqr_rho, saved_bytes_per_example
from advisor.spectrum import tridiagonal_route_available
from advisor.trace import ForwardTrace

# Cost of one product over the data, in forward passes: jvp about 2.5 and
# vjp about 3 on the digits residual CNN in float64.
JVP_FORWARDS = 2.5
VJP_FORWARDS = 3.0
# torch.linalg.eigh (values and vectors) of an S × S float64 matrix costs about
# 4.6·S³ GEMM flops (395 s at S = 17,970 where GEMM ran at 68 GFLOP/s).
EIGH_GEMM_FLOPS = 4.6
# The bordered tridiagonal route of advisor.spectrum: a GEMM-bound band
# reduction plus scalar O(S²) steps (dsbtrd, implicit QL). Fitted to 6.25 s
# at S = 5,120 and 194.6 s at S = 17,970 with GEMM at 68 GFLOP/s.
SPECTRUM_GEMM_FLOPS = 1.9
SPECTRUM_SECONDS_PER_ENTRY = 9.4e-8
# Products outside the Krylov iterations: σ_max steps, the first Jᵀ Y and
# the final check of the LSQR iterate.
LSQR_FIXED_PRODUCTS = 2 * LsqrSettings().sigma_steps + 2
# When float64 products leave fewer Krylov iterations than this within the
# time budget, the matrix-free method runs its products in float32.
FLOAT32_BELOW_ITERATIONS = 50


@dataclass(frozen=True)
class Probe:
    """Timings and sizes measured once per model and data."""

    n_examples: int
    n_outputs: int
    n_params: int
    forward_seconds_per_example: float
    saved_bytes_per_example: float
    gemm_flops_per_second: float
    # Values per Jacobian row that the exact method multiplies (see gram_row_width).
    gram_width: int | None = None


def format_bytes(count: float) -> str:
    """Format a byte count in GiB with two decimals, or in MiB below 0.1 GiB, where two decimals of GiB would read as zero."""
    if count < 0.1 * 2**30:
        return f"{count / 2**20:.1f} MiB"
    return f"{count / 2**30:.2f} GiB"


@dataclass
class Estimate:
    """Predicted cost of one method on one problem, and whether it fits the budgets."""

    method: str
    bytes: int
    seconds: float
    fits: bool
    note: str = ""

    def describe(self) -> str:
        return f"{format_bytes(self.bytes)} and about {self.seconds:.0f} s"

    def as_dict(self) -> dict:
        return {"bytes": self.bytes, "seconds": round(self.seconds, 2), "fits": self.fits, "note": self.note}


@dataclass
class Budget:
    memory_bytes: float
    time_s: float


@dataclass
class AlignmentProblem:
    """A model, its analysis inputs x (N, ...) and targets (N, M), with the forward trace.

    `rho_s` is ρ_S on the same inputs when the caller has already measured it,
    so that the matrix-free method does not repeat that forward pass.
    """

    model: nn.Module
    x: torch.Tensor
    targets: np.ndarray
    trace: ForwardTrace | None
    settings: dict = field(default_factory=dict)
    rho_s: float | None = None


def measure_probe(model: nn.Module, x: torch.Tensor, n_outputs: int, probe_examples: int = 32) -> Probe:
    """Time one float64 forward pass on up to `probe_examples` inputs and one float64 GEMM."""
    probe = x[: min(probe_examples, x.shape[0])].to(torch.float64)
    work = analysis_copy(model)
    with torch.no_grad():
        work(probe)  # the first call pays one-time costs
        start = time.perf_counter()
        work(probe)
        forward = (time.perf_counter() - start) / probe.shape[0]
    saved = saved_bytes_per_example(model, probe)

    size = 512
    a = torch.randn(size, size, dtype=torch.float64)
    a @ a
    start = time.perf_counter()
    a @ a
    gemm_rate = 2 * size**3 / max(time.perf_counter() - start, 1e-9)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params = trainable_parameters(work)
    gram_width = gram_row_width(params, factorable_linears(work, probe[:2], params))
    return Probe(n_examples=int(x.shape[0]), n_outputs=n_outputs, n_params=n_params, forward_seconds_per_example=forward,
                 saved_bytes_per_example=saved, gemm_flops_per_second=gemm_rate, gram_width=gram_width)


def spectrum_seconds(size: int, gemm_flops_per_second: float) -> float:
    """Estimate the seconds for the eigenvalues and weights of an S × S Gram matrix (see advisor.spectrum)."""
    if tridiagonal_route_available():
        return SPECTRUM_GEMM_FLOPS * size**3 / gemm_flops_per_second + SPECTRUM_SECONDS_PER_ENTRY * size**2
    return EIGH_GEMM_FLOPS * size**3 / gemm_flops_per_second


class ExactMethod:
    """Float64 Gram matrix in chunks, then its spectrum and Y's weights on it: ρ, rank, σ⁺_min and the whole ρ(ε) curve."""

    name = "exact"

    def estimate(self, probe: Probe, budget: Budget) -> Estimate:
        N, M, P = probe.n_examples, probe.n_outputs, probe.n_params
        plan = plan_gram(N, M, P, budget.memory_bytes, probe.gram_width)
        size = min(N * M, P)
        # One per-example Jacobian costs about M backward passes of that example.
        jacobian = plan.jacobian_chunk_computations * plan.chunk_examples * M * VJP_FORWARDS * probe.forward_seconds_per_example
        width = probe.gram_width if probe.gram_width is not None else P
        products = 2 * (N * M) ** 2 * width if plan.side == "rows" else 2 * N * M * P * P
        algebra = products / probe.gemm_flops_per_second + spectrum_seconds(size, probe.gemm_flops_per_second)
        seconds = jacobian + algebra
        fits = plan.bytes <= budget.memory_bytes and seconds <= budget.time_s
        note = (f"{plan.side} Gram of size {size}, {plan.n_chunks} chunks of {plan.chunk_examples} examples, "
                f"{plan.jacobian_chunk_computations} chunk Jacobians computed")
        return Estimate(self.name, plan.bytes, seconds, fits, note)

    def run(self, problem: AlignmentProblem, budget: Budget) -> AlignmentMeasure:
        return gram_rho(problem.model, problem.x, problem.targets, memory_budget_bytes=budget.memory_bytes)


class LsqrMethod:
    """Matrix-free Golub–Kahan (the LSQR process) from Y, with Gauss–Radau ρ(ε) brackets and ρ ≤ min(ρ_S, LSQR residual)."""

    name = "lsqr"

    def __init__(self, settings: LsqrSettings = LsqrSettings()) -> None:
        self.settings = settings

    def _seconds_per_iteration(self, probe: Probe) -> float:
        return (JVP_FORWARDS + VJP_FORWARDS) * probe.n_examples * probe.forward_seconds_per_example

    def iterations_within(self, probe: Probe, budget: Budget, *, by_time: bool = True) -> int:
        """Iterations that the budget allows; `by_time` False counts memory only."""
        per_iteration = self._seconds_per_iteration(probe) if by_time else 0.0
        spare = budget.time_s - LSQR_FIXED_PRODUCTS * per_iteration / 2
        if per_iteration > 0 and math.isfinite(spare):
            time_cap = int(spare // per_iteration)
        else:
            time_cap = self.settings.max_iterations
        # The orthonormal bases take 8·(R + P) bytes per iteration; they get
        # at most half of the budget, the activations a quarter.
        by_memory = int(budget.memory_bytes / 2 // (8 * (probe.n_examples * probe.n_outputs + probe.n_params)))
        return max(0, min(self.settings.max_iterations, time_cap, by_memory))

    def estimate(self, probe: Probe, budget: Budget) -> Estimate:
        iterations = self.iterations_within(probe, budget)
        chunk = chunk_for_budget(probe.saved_bytes_per_example, budget.memory_bytes, probe.n_examples)
        R, P = probe.n_examples * probe.n_outputs, probe.n_params
        memory = int(3 * chunk * probe.saved_bytes_per_example + 8 * (iterations + 2) * (R + P) + 8 * 8 * (R + P))
        seconds = (iterations + LSQR_FIXED_PRODUCTS / 2) * self._seconds_per_iteration(probe)
        fits = iterations >= 10 and memory <= budget.memory_bytes
        note = f"up to {iterations} iterations in chunks of {chunk} examples"
        return Estimate(self.name, memory, seconds, fits, note)

    def run(self, problem: AlignmentProblem, budget: Budget, probe: Probe | None = None) -> AlignmentMeasure:
        settings = self.settings
        chunk = problem.x.shape[0]
        if probe is not None:
            chunk = chunk_for_budget(probe.saved_bytes_per_example, budget.memory_bytes, probe.n_examples)
            # The loop checks the clock itself, so only memory caps the
            # iterations here; a time-based cap would trust a noisy estimate.
            capacity = max(1, self.iterations_within(probe, budget, by_time=False))
            dtype = settings.dtype
            if self.iterations_within(probe, budget) < FLOAT32_BELOW_ITERATIONS:
                # Float32 products ran about 4.5 times faster on convolutions
                # (MNIST, default CNN: 80 s against 360 s per iteration on one
                # core). lsqr_rho then marks no ε below its float32 floor as resolved.
                dtype = torch.float32
            settings = LsqrSettings(**{**settings.__dict__, "max_iterations": capacity, "time_limit_s": budget.time_s,
                                       "dtype": dtype})
        return lsqr_rho(problem.model, problem.x, problem.targets, trace=problem.trace, chunk_examples=chunk, settings=settings,
                        rho_s=problem.rho_s)


class FeaturesMethod:
    """The last-layer bound ρ_S from the head's input features."""

    name = "features"

    def estimate(self, probe: Probe, budget: Budget) -> Estimate:
        memory = int(8 * probe.n_examples * (probe.n_outputs + 1) * 64)
        seconds = 2 * probe.n_examples * probe.forward_seconds_per_example
        return Estimate(self.name, memory, seconds, True, "ρ_S, an upper bound on ρ")

    def run(self, problem: AlignmentProblem, budget: Budget) -> AlignmentMeasure:
        if problem.trace is None:
            raise ValueError("the features method needs the forward trace to find the last affine map")
        measure = last_layer_rho(problem.model, problem.x, problem.targets, problem.trace)
        if measure is None:
            raise ValueError("the model has no parameter-consuming operation, so ρ_S is undefined")
        return measure


METHODS: dict[str, ExactMethod | LsqrMethod | FeaturesMethod] = {
    "exact": ExactMethod(),
    "lsqr": LsqrMethod(),
    "features": FeaturesMethod(),
}
CHOICES = ("auto", *METHODS)


@dataclass
class MethodChoice:
    """The method that runs, why, and every method's estimate."""

    method: str
    reason: str
    estimates: dict[str, Estimate]

    def estimates_dict(self) -> dict:
        return {name: estimate.as_dict() for name, estimate in self.estimates.items()}


def choose_method(requested: str, probe: Probe, budget: Budget) -> MethodChoice:
    """Pick the method for `requested` (auto, exact, lsqr or features).

    `auto` takes the most accurate method that fits both budgets. An explicit
    `exact` over the budget raises BudgetError with the estimate and the
    options; an explicit `lsqr` runs within the time budget even when that
    leaves its brackets wide, and says so in its result.
    """
    if requested not in CHOICES:
        raise UnknownChoiceError("--rho-method", requested, CHOICES)
    estimates = {name: method.estimate(probe, budget) for name, method in METHODS.items()}
    budget_text = f"{budget.memory_bytes / 2**30:g} GiB and {budget.time_s:g} s"

    if requested == "exact" and not estimates["exact"].fits:
        exact = estimates["exact"]
        # Name only the budgets that the estimate exceeds.
        over = [(f"{budget.memory_bytes / 2**30:g} GiB", "--memory-budget")] if exact.bytes > budget.memory_bytes else []
        over += [(f"{budget.time_s:g} s", "--time-budget")] if exact.seconds > budget.time_s else []
        raise BudgetError("--rho-method exact", f"{exact.describe()} ({exact.note})", " and ".join(text for text, _ in over),
                          f"Lower --max-samples, raise {' and '.join(option for _, option in over)}, or use --rho-method lsqr "
                          "(matrix-free ρ(ε) brackets) or auto.")
    if requested != "auto":
        return MethodChoice(requested, f"requested with --rho-method {requested}", estimates)

    for name in METHODS:
        if estimates[name].fits:
            skipped = [f"{other} needs {estimates[other].describe()}" for other in METHODS if other != name
                       and list(METHODS).index(other) < list(METHODS).index(name)]
            reason = f"the most accurate method within {budget_text}"
            if skipped:
                reason += " (" + "; ".join(skipped) + ")"
            return MethodChoice(name, reason, estimates)
    return MethodChoice("features", f"no other method fits {budget_text}", estimates)


def run_method(choice: MethodChoice, problem: AlignmentProblem, budget: Budget, probe: Probe) -> AlignmentMeasure:
    """Run the chosen method on `problem`."""
    method = METHODS[choice.method]
    if isinstance(method, LsqrMethod):
        return method.run(problem, budget, probe)
    return method.run(problem, budget)

