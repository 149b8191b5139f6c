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
from dataclasses import dataclass

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phi = self.feature_map(self.representation(x))  # (B, p)
        return self.base(x) + phi @ self.V.T  # (B, M)


def count_distinct(rows: torch.Tensor) -> int:
    return int(torch.unique(rows, dim=0).shape[0])


def feature_learning_rate(algorithm: BaseAlgorithm) -> float:
    """Step size for V in practical mode.

    Features of distinct examples are nearly orthogonal with ‖φ‖² ≈ 1, so the
    curvature of the mean batch loss along one example's direction in V is
    about 1/B. SGD with momentum β moves by lr/(1 − β) per unit gradient at
    steady state; lr = (1 − β)·B then removes most of an example's residual
    per visit while staying far inside the heavy-ball stability limit
    2(1 + β). AdamW normalizes steps itself and keeps the base rate.
    """
    if algorithm.optimizer == "sgd":
        return (1.0 - algorithm.momentum) * algorithm.batch_size if algorithm.momentum > 0 else 0.5 * algorithm.batch_size
    return algorithm.lr


@dataclass
class CertifiedStep:
    step: int
    loss: float
    certified_factor: float | None
    step_scale: float


def _full_loss(model: EEModel, features: torch.Tensor, data: TrainData, loss_name: str, chunk: int, with_grad: bool) -> float:
    """Σ_i ℓ(f̃(x_i), y_i) over the training set; accumulates gradients when asked.

    `features` holds φ(x_i) for every training example (N, p): the map and
    the frozen representation are fixed, so they are computed once.
    """
    loss_fn = get_loss(loss_name)
    total = 0.0
    for start in range(0, data.n_train, chunk):
        stop = start + chunk
        with torch.set_grad_enabled(with_grad):
            outputs = model.base(data.x_train[start:stop]) + features[start:stop] @ model.V.T  # (B, M)
            loss = loss_fn(outputs, data.targets_train[start:stop]).sum()
        if with_grad:
            loss.backward()
        total += float(loss.detach().double())
    return total


def run_certified(model: EEModel, data: TrainData, algorithm: BaseAlgorithm, certificate: FeatureCertificate, *,
                  max_steps: int, target_ratio: float, callbacks: Callbacks, chunk: int = 512) -> tuple[list[CertifiedStep], int]:
    """Full-batch gradient descent on all parameters with Armijo backtracking.

    The step is preconditioned per block: θ moves by s_θ·η_θ times its
    gradient, η_θ = lr/n (the base step on the mean loss), and V by
    s_V·η_V, η_V = 1/σ_max(Φ)² (the inverse curvature of the V block). On a
    failed Armijo test the θ scale is halved first, because the sharpness of
    θ must not slow the V block that carries the guarantee; V's scale is
    halved only once θ's is 64 times smaller. A step is accepted when
    L(new) ≤ L − c·(s_θη_θ‖∇_θL‖² + s_Vη_V‖∇_V L‖²). For the squared loss the
    certificate ‖∇_V L‖² ≥ 2σ_min(Φ)²L then gives
    L(new) ≤ (1 − 2c·s_V·η_V·σ_min(Φ)²)·L, the step's certified factor, which
    every step checks against the measured loss.
    Stops after `max_steps` or once L ≤ target_ratio·L(start).
    Returns the step records and the number of steps that broke the bound.
    """
    model.eval()
    with torch.no_grad():
        features = torch.cat([model.feature_map(model.representation(data.x_train[s:s + chunk])) for s in range(0, data.n_train, chunk)])
    theta = [p for p in model.base.parameters() if p.requires_grad]
    params = theta + [model.V]
    n = data.n_train
    eta_theta = algorithm.lr / n
    eta_v = 1.0 / max(certificate.sigma_max**2, 1e-12)
    squared = algorithm.loss == "mse"

    for p in params:
        p.grad = None
    loss = _full_loss(model, features, data, algorithm.loss, chunk, with_grad=True)
    start_loss = loss
    records = [CertifiedStep(step=0, loss=loss, certified_factor=None, step_scale=0.0)]
    violations = 0
    scale_theta, scale_v = 1.0, 1.0
    callbacks.on_phase_start("exploit (certified)", max_steps)

    for step in range(1, max_steps + 1):
        grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        theta_norm = sum(float(g.double().pow(2).sum()) for g in grads[:-1])
        v_norm = float(grads[-1].double().pow(2).sum())
        originals = [p.detach().clone() for p in params]

        # Backtracking on the two block scales until sufficient decrease.
        accepted = False
        for _ in range(80):
            etas = [scale_theta * eta_theta] * len(theta) + [scale_v * eta_v]
            with torch.no_grad():
                for p, p0, g, eta in zip(params, originals, grads, etas):
                    p.copy_(p0 - eta * g)
            new_loss = _full_loss(model, features, data, algorithm.loss, chunk, with_grad=False)
            decrease = scale_theta * eta_theta * theta_norm + scale_v * eta_v * v_norm
            if math.isfinite(new_loss) and new_loss <= loss - ARMIJO_C * decrease:
                accepted = True
                break
            if scale_theta > scale_v / 64:
                scale_theta /= 2
            else:
                scale_theta /= 2
                scale_v /= 2
        if not accepted:
            with torch.no_grad():
                for p, p0 in zip(params, originals):
                    p.copy_(p0)
            break

        factor = 1.0 - 2 * ARMIJO_C * scale_v * eta_v * certificate.sigma_min**2 if squared else None
        if factor is not None and new_loss > factor * loss + BOUND_SLACK * loss:
            violations += 1
        records.append(CertifiedStep(step=step, loss=new_loss, certified_factor=factor, step_scale=scale_v))
        callbacks.on_step("exploit (certified)", step, max_steps, new_loss / n)

        loss = new_loss
        scale_theta, scale_v = min(1.0, 2 * scale_theta), min(1.0, 2 * scale_v)
        if loss <= target_ratio * start_loss:
            break
        for p in params:
            p.grad = None
        loss = _full_loss(model, features, data, algorithm.loss, chunk, with_grad=True)
    return records, violations


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise TrainingConfigError("--mode", mode, f"one of {', '.join(MODES)}")
