"""The base training algorithm, described as data."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from training.errors import TrainingConfigError
from training.losses import LOSSES

OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class BaseAlgorithm:
    """Optimizer, step size and batching that the base run and the EE run share.

    `lr` is per step on the mean batch loss. Weight decay defaults to zero
    because it moves the global minimum of the squared loss away from zero.
    """

    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    batch_size: int = 64
    loss: str = "mse"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise TrainingConfigError("--optimizer", self.optimizer, f"one of {', '.join(OPTIMIZERS)}")
        if not self.lr > 0:
            raise TrainingConfigError("--lr", self.lr, "a positive learning rate")
        if not 0 <= self.momentum < 1:
            raise TrainingConfigError("--momentum", self.momentum, "a value in [0, 1)")
        if self.weight_decay < 0:
            raise TrainingConfigError("--weight-decay", self.weight_decay, "a non-negative value")
        if self.batch_size < 1:
            raise TrainingConfigError("--batch-size", self.batch_size, "a positive integer")
        if self.loss not in LOSSES:
            raise TrainingConfigError("--loss", self.loss, f"one of {', '.join(LOSSES)}")

    def make_optimizer(self, groups: Iterable[dict]) -> torch.optim.Optimizer:
        """Build the optimizer over parameter groups; a group may set its own `lr`."""
        groups = list(groups)
        if self.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum,
                                   nesterov=self.nesterov and self.momentum > 0, weight_decay=self.weight_decay)
        return torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
