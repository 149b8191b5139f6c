"""The exploration–exploitation (EE) construction: transition and exploitation.

After exploration, the model f(x; θ) is extended to
f̃(x; θ, V) = f(x; θ) + V φ(x), where φ is a fixed random-feature map of the
representation frozen at the transition (see `training.features`) and V
(M × p) starts at zero, so f̃ = f at the transition and the loss does not jump.
With rank(Φ) = n the alignment condition holds at every point of the
exploitation phase, and for the squared loss L = Σ_i ½‖f̃(x_i) − y_i‖²,
‖∇L‖² ≥ ‖∇_V L‖² ≥ 2 σ_min(Φ)² L.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from training.algorithm import BaseAlgorithm
from training.errors import TrainingConfigError
from training.features import FeatureCertificate, RandomFeatureMap
from training.loop import Callbacks, TrainData
from training.losses import get_loss

MODES = ("practical", "certified")
# Sufficient-decrease constant of the Armijo rule. With 1/2, any step below
# 1/λ_max of a quadratic is accepted, so the V block keeps its natural step.
ARMIJO_C = 0.5
# Below this θ scale, backtracking halves the V scale as well.
MIN_THETA_SCALE = 2.0**-10
# Relative slack on the certified bound for float32 round-off in the loss.
BOUND_SLACK = 1e-5


class FrozenRepresentation(nn.Module):
    """z_τ(x): the input of module `head_name` in a frozen eval-mode copy of the model.

    With `head_name` None the representation is the flattened input itself,
    which still gives the certificate whenever the inputs are distinct. With
    `append_input` the flattened input is concatenated to z_τ(x): a narrow or
    saturated last layer can map distinct training inputs to the same point,
    and no function of such a z can then separate them.
    """

    def __init__(self, model: nn.Module, head_name: str | None, append_input: bool = False) -> None:
        super().__init__()
        self.head_name = head_name
        self.append_input = append_input
        self.copy = copy.deepcopy(model).eval() if head_name else None
        if self.copy is not None:
            for p in self.copy.parameters():
                p.requires_grad_(False)
            self._captured: list[torch.Tensor] = []
            dict(self.copy.named_modules())[head_name].register_forward_pre_hook(self._capture)

    def _capture(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self._captured.append(inputs[0].detach())

    def train(self, mode: bool = True) -> "FrozenRepresentation":
        # The representation is a fixed function: it stays in eval mode.
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.copy is None:
            return x.flatten(1)
        self._captured.clear()
        self.copy(x)
        z = self._captured[-1].flatten(1)
        return torch.cat([z, x.flatten(1)], dim=1) if self.append_input else z

    def encode(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        return torch.cat([self(x[s:s + batch_size]) for s in range(0, x.shape[0], batch_size)])


class EEModel(nn.Module):
    """f̃(x; θ, V) = f(x; θ) + V φ(z_τ(x)) with V (M, p) trainable and φ, z_τ fixed."""

    def __init__(self, base: nn.Module, representation: FrozenRepresentation, feature_map: RandomFeatureMap, n_outputs: int) -> None:
        super().__init__()
        self.base = base
        self.representation = representation
        self.feature_map = feature_map
        dtype = next(base.parameters()).dtype
        self.V = nn.Parameter(torch.zeros(n_outputs, feature_map.width, dtype=dtype))

        # z_τ of the training inputs (N, D), filled by `cache_representation`.
        # Not part of the state dict, because it is a function of the frozen copy.
        self.register_buffer("cached_z", None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phi = self.feature_map(self.representation(x))  # (B, p)
        return self.base(x) + phi @ self.V.T  # (B, M)

    @torch.no_grad()
    def cache_representation(self, x_train: torch.Tensor) -> None:
        """Store z_τ(x_i) for every training input.

        z_τ is fixed, so a training step can look it up instead of running the
        frozen copy of the network, which would cost about a third of the step
        again. The features φ are still computed per batch; Φ is never stored.
        """
        self.cached_z = self.representation.encode(x_train)

    def forward_indexed(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """f̃ on training inputs x = x_train[indices], reading z_τ from the cache."""
        if self.cached_z is None:
            raise RuntimeError("EEModel.forward_indexed needs cache_representation(x_train) to run first")
        phi = self.feature_map(self.cached_z[indices])  # (B, p)
        return self.base(x) + phi @ self.V.T  # (B, M)


def count_distinct(rows: torch.Tensor) -> int:
    return int(torch.unique(rows, dim=0).shape[0])


def feature_learning_rate(algorithm: BaseAlgorithm, override: float | None = None) -> float:
    """Step size for V in practical mode: the base algorithm's own rate unless `override` is given.

    Practical mode is the base algorithm itself on f̃, so V gets the same
    optimizer, rate and schedule as θ. A rate tuned to make V absorb each
    example's residual in one visit, (1 − β)·B for SGD with momentum β and
    batch B, was measured and rejected: on MNIST (8,000 training images,
    default CNN, 4 epochs with τ = 2, seed 0) it ended 2.35 points of test
    accuracy below the base run (93.40% against 95.75%). V fitted the
    training set in one epoch, which left θ almost no gradient to keep
    learning from, and the random-feature cross-talk Σ_i a_i φ(x_i)ᵀφ(x)
    added noise of about sqrt(n/2p) times the residual on unseen inputs.
    `override` (the `--feature-lr` option) lets a user who wants V to fit
    faster choose such a rate.
    """
    return algorithm.lr if override is None else override


@dataclass
class CertifiedStep:
    """One accepted step: the loss after it, its certified factor, and the scales s_V and s_θ it used."""

    step: int
    loss: float
    certified_factor: float | None
    step_scale: float
    theta_scale: float = 0.0


@dataclass
class CertifiedProgress:
    """Progress of certified exploitation, with enough state to resume after the last accepted step."""

    steps: list[CertifiedStep] = field(default_factory=list)
    violations: int = 0
    v_scale: float = 1.0
    theta_scale: float = 1.0
    finished: bool = False

    @property
    def start_loss(self) -> float:
        return self.steps[0].loss


def _full_loss(model: EEModel, data: TrainData, loss_name: str, chunk: int, with_grad: bool) -> float:
    """Σ_i ℓ(f̃(x_i), y_i) over the training set; accumulates gradients when asked.

    z_τ(x_i) comes from the model's training-set cache, so the frozen copy of
    the network never runs here, and φ is computed per chunk without storing Φ.
    """
    loss_fn = get_loss(loss_name)
    total = 0.0
    for start in range(0, data.n_train, chunk):
        indices = torch.arange(start, min(start + chunk, data.n_train))
        with torch.set_grad_enabled(with_grad):
            outputs = model.forward_indexed(data.x_train[indices], indices)  # (B, M)
            loss = loss_fn(outputs, data.targets_train[indices]).sum()
        if with_grad:
            loss.backward()
        total += float(loss.detach().double())
    return total


def run_certified(model: EEModel, data: TrainData, algorithm: BaseAlgorithm, certificate: FeatureCertificate, *,
                  max_steps: int, target_ratio: float, callbacks: Callbacks, chunk: int = 512,
                  progress: CertifiedProgress | None = None,
                  on_step: Callable[[CertifiedProgress], None] | None = None) -> CertifiedProgress:
    """Full-batch gradient descent on all parameters with Armijo backtracking.

    The step is preconditioned per block: θ moves by s_θ·η_θ times its
    gradient, with η_θ = lr/n (the base step on the mean loss), and V by
    s_V·η_V, with η_V = 1/σ_max(Φ)² (the inverse curvature of the V block).
    The step is accepted when
    L(new) ≤ L − c·(s_θ·η_θ‖∇_θL‖² + s_V·η_V‖∇_V L‖²). For the squared loss
    the certificate then gives L(new) ≤ (1 − 2c·s_V·η_V·σ_min(Φ)²)·L, the
    certified factor of the step, which every step checks against the
    measured loss.

    Backtracking halves s_θ first and s_V only once s_θ is below
    MIN_THETA_SCALE. The curvature of the θ block is unknown, and under one
    common scale it forced s_V down to 1/8 to 1/32 on the default CNN, which
    weakened the certified factor as much. Keeping s_V at 1 gives a factor
    near 1 − σ_min²/σ_max². Both scales double (up to 1) after an accepted step.

    Stops after `max_steps` steps in all or once L ≤ target_ratio·L(start).
    The model runs in eval mode (BatchNorm on running statistics) on the
    un-augmented training set, because the guarantee is about that function.
    `progress` resumes an earlier run from its last accepted step;
    `on_step(progress)` runs after every accepted step.
    """
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    is_v = [p is model.V for p in params]
    eta_theta = algorithm.lr / data.n_train
    eta_v = 1.0 / max(certificate.sigma_max**2, 1e-12)
    squared = algorithm.loss == "mse"
    phase = "exploit (certified)"

    for p in params:
        p.grad = None
    loss = _full_loss(model, data, algorithm.loss, chunk, with_grad=True)
    if progress is None:
        progress = CertifiedProgress(steps=[CertifiedStep(step=0, loss=loss, certified_factor=None, step_scale=0.0)])
    callbacks.on_phase_start(phase, max_steps)
    if progress.finished:
        return progress

    for step in range(len(progress.steps), max_steps + 1):
        # A parameter that the loss does not reach has no gradient.
        grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        etas = [eta_v if v else eta_theta for v in is_v]
        decrease_theta = sum(eta_theta * float(g.double().pow(2).sum()) for g, v in zip(grads, is_v) if not v)
        decrease_v = sum(eta_v * float(g.double().pow(2).sum()) for g, v in zip(grads, is_v) if v)
        originals = [p.detach().clone() for p in params]

        # Backtracking: halve s_θ, then s_V, until sufficient decrease.
        accepted = False
        theta_scale, v_scale = progress.theta_scale, progress.v_scale
        for _ in range(60):
            with torch.no_grad():
                for p, p0, g, eta, v in zip(params, originals, grads, etas, is_v):
                    p.copy_(p0 - (v_scale if v else theta_scale) * eta * g)
            new_loss = _full_loss(model, data, algorithm.loss, chunk, with_grad=False)
            required = ARMIJO_C * (theta_scale * decrease_theta + v_scale * decrease_v)
            if math.isfinite(new_loss) and new_loss <= loss - required:
                accepted = True
                break
            if theta_scale >= MIN_THETA_SCALE:
                theta_scale /= 2
            else:
                v_scale /= 2
        if not accepted:
            with torch.no_grad():
                for p, p0 in zip(params, originals):
                    p.copy_(p0)
            progress.finished = True
            break

        # Certified contraction of this step, checked against the measured loss.
        factor = 1.0 - 2 * ARMIJO_C * v_scale * eta_v * certificate.sigma_min**2 if squared else None
        if factor is not None and new_loss > factor * loss + BOUND_SLACK * loss:
            progress.violations += 1
        progress.steps.append(CertifiedStep(step=step, loss=new_loss, certified_factor=factor, step_scale=v_scale,
                                            theta_scale=theta_scale))
        progress.v_scale = min(1.0, 2 * v_scale)
        progress.theta_scale = min(1.0, 2 * theta_scale)
        callbacks.on_step(phase, step, max_steps, new_loss / data.n_train)

        # Stop check, then the gradient at the new point for the next step.
        loss = new_loss
        progress.finished = loss <= target_ratio * progress.start_loss or step == max_steps
        if on_step is not None:
            on_step(progress)
        if progress.finished:
            break
        for p in params:
            p.grad = None
        loss = _full_loss(model, data, algorithm.loss, chunk, with_grad=True)
    progress.finished = True
    return progress


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise TrainingConfigError("--mode", mode, f"one of {', '.join(MODES)}")
