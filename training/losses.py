"""Per-example losses on model outputs (B, M) and targets (B, M).

Both follow the convention of the theory: ℓ(q, y) is summed over outputs, and
a dataset loss L = Σ_i ℓ(f(x_i), y_i) is a sum over examples. Training
minimizes the mean over a batch, which only rescales the step size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from training.errors import TrainingConfigError


def squared_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """½‖q − y‖² per example, shape (B,)."""
    return 0.5 * (outputs - targets).pow(2).sum(dim=1)


def cross_entropy_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits against target distributions (one-hot rows), shape (B,)."""
    return -(targets * F.log_softmax(outputs, dim=1)).sum(dim=1)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": squared_loss,
    "ce": cross_entropy_loss,
}


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name not in LOSSES:
        raise TrainingConfigError("--loss", name, f"one of {', '.join(LOSSES)}")
    return LOSSES[name]
