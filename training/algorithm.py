"""The base training algorithm, described as data.

A `BaseAlgorithm` is a frozen description (optimizer, learning-rate schedule,
weight decay, batch size, loss, augmentation) that the base run and the EE run
share. Every variant is chosen by name from a dispatch table, and an unknown
name raises `TrainingConfigError` listing the valid ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from training.errors import TrainingConfigError
from training.losses import LOSSES


def _check_choice(option: str, value: str, choices: Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        raise TrainingConfigError(option, value, f"one of {', '.join(choices)}")


# ---------------------------------------------------------------------------
# Learning-rate schedules: a multiplier of the base rate as a pure function of
# the global step, so a resumed run needs only the step count to continue.


def _constant(progress: float, epoch: float, schedule: "Schedule") -> float:
    return 1.0


def _step(progress: float, epoch: float, schedule: "Schedule") -> float:
    return schedule.gamma ** math.floor(epoch / schedule.step_epochs)


def _cosine(progress: float, epoch: float, schedule: "Schedule") -> float:
    return schedule.final_factor + (1.0 - schedule.final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _one_cycle(progress: float, epoch: float, schedule: "Schedule") -> float:
    # Linear rise from 1/div to 1 over the first `peak_fraction` of the run,
    # then cosine annealing down to `final_factor`. The defaults (peak at 30%,
    # start at 1/25) are those of torch.optim.lr_scheduler.OneCycleLR, whose
    # rise is a cosine instead of a line.
    start = 1.0 / schedule.one_cycle_div
    if progress < schedule.peak_fraction:
        return start + (1.0 - start) * progress / schedule.peak_fraction
    rest = (progress - schedule.peak_fraction) / (1.0 - schedule.peak_fraction)
    return schedule.final_factor + (1.0 - schedule.final_factor) * 0.5 * (1.0 + math.cos(math.pi * rest))


SCHEDULES: dict[str, Callable[[float, float, "Schedule"], float]] = {
    "constant": _constant,
    "step": _step,
    "cosine": _cosine,
    "one-cycle": _one_cycle,
}


@dataclass(frozen=True)
class Schedule:
    """Learning-rate schedule: a factor applied to every parameter group's own rate.

    `warmup_epochs` of linear warm-up (from one step's worth up to 1) come
    first, and the named shape then runs over the remaining steps. `step`
    multiplies by `gamma` every `step_epochs` epochs; `cosine` anneals to
    `final_factor`; `one-cycle` has its own warm-up, so it takes no
    `warmup_epochs`.
    """

    name: str = "constant"
    warmup_epochs: float = 0.0
    step_epochs: int = 1
    gamma: float = 0.1
    final_factor: float = 0.0
    peak_fraction: float = 0.3
    one_cycle_div: float = 25.0

    def __post_init__(self) -> None:
        _check_choice("--schedule", self.name, SCHEDULES)
        if self.warmup_epochs < 0:
            raise TrainingConfigError("--warmup-epochs", self.warmup_epochs, "a non-negative number of epochs")
        if self.name == "one-cycle" and self.warmup_epochs > 0:
            raise TrainingConfigError("--warmup-epochs", self.warmup_epochs, "0 with --schedule one-cycle, which warms up by itself")
        if self.step_epochs < 1:
            raise TrainingConfigError("--lr-step-epochs", self.step_epochs, "a positive number of epochs")
        if not 0 < self.gamma <= 1:
            raise TrainingConfigError("--lr-gamma", self.gamma, "a factor in (0, 1]")
        if not 0 <= self.final_factor <= 1:
            raise TrainingConfigError("--lr-final-factor", self.final_factor, "a factor in [0, 1]")
        if not 0 < self.peak_fraction < 1:
            raise TrainingConfigError("--lr-peak-fraction", self.peak_fraction, "a fraction in (0, 1)")
        if self.one_cycle_div < 1:
            raise TrainingConfigError("--lr-one-cycle-div", self.one_cycle_div, "a divisor of at least 1")

    def check_fits(self, epochs: int) -> None:
        """Raise TrainingConfigError when the schedule does not fit in a run of `epochs` epochs."""
        if self.warmup_epochs >= epochs:
            raise TrainingConfigError("--warmup-epochs", self.warmup_epochs, f"fewer than the run's {epochs} epochs")
        if self.name == "step" and self.step_epochs >= epochs:
            raise TrainingConfigError("--lr-step-epochs", self.step_epochs,
                                      f"fewer than the run's {epochs} epochs, or the rate never steps down")

    def factor(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        """Multiplier of the base rate at 0-based global `step` of a run of `total_steps` steps."""
        warmup_steps = round(self.warmup_epochs * steps_per_epoch)
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return SCHEDULES[self.name](progress, step / steps_per_epoch, self)


# ---------------------------------------------------------------------------
# Augmentation of image batches (N, C, H, W), drawn from its own generator so
# that switching it on does not change the batch order.


@dataclass(frozen=True)
class Augmentation:
    """Random crop after zero padding by `crop_padding` pixels, and random horizontal flips."""

    crop_padding: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise TrainingConfigError("--crop-padding", self.crop_padding, "a non-negative number of pixels")

    @property
    def enabled(self) -> bool:
        return self.crop_padding > 0 or self.flip

    def check_inputs(self, x: torch.Tensor) -> None:
        """Raise TrainingConfigError unless `x` is a batch of images (N, C, H, W)."""
        if self.enabled and x.dim() != 4:
            option = "--crop-padding" if self.crop_padding > 0 else "--flip"
            raise TrainingConfigError(option, self.crop_padding if self.crop_padding > 0 else True,
                                      f"no augmentation for inputs of shape {tuple(x.shape[1:])}, which are not images (C, H, W)")

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return an augmented copy of the batch x (B, C, H, W)."""
        if not self.enabled:
            return x
        B, C, H, W = x.shape
        if self.crop_padding > 0:
            pad = self.crop_padding
            padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))  # (B, C, H + 2·pad, W + 2·pad)
            offset_y = torch.randint(0, 2 * pad + 1, (B,), generator=generator)
            offset_x = torch.randint(0, 2 * pad + 1, (B,), generator=generator)
            rows = (offset_y[:, None] + torch.arange(H))[:, None, :, None]  # (B, 1, H, 1)
            cols = (offset_x[:, None] + torch.arange(W))[:, None, None, :]  # (B, 1, 1, W)
            batch = torch.arange(B)[:, None, None, None]
            channel = torch.arange(C)[None, :, None, None]
            x = padded[batch, channel, rows, cols]  # (B, C, H, W)
        if self.flip:
            flipped = torch.rand(B, generator=generator) < 0.5
            x = torch.where(flipped[:, None, None, None], x.flip(-1), x)
        return x


# ---------------------------------------------------------------------------
# Optimizers.


def _make_sgd(groups: list[dict], algorithm: "BaseAlgorithm") -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=algorithm.lr, momentum=algorithm.momentum,
                           nesterov=algorithm.nesterov and algorithm.momentum > 0, weight_decay=algorithm.weight_decay)


def _make_adamw(groups: list[dict], algorithm: "BaseAlgorithm") -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=algorithm.lr, weight_decay=algorithm.weight_decay)


OPTIMIZERS: dict[str, Callable[[list[dict], "BaseAlgorithm"], torch.optim.Optimizer]] = {
    "sgd": _make_sgd,
    "adamw": _make_adamw,
}


@dataclass(frozen=True)
class BaseAlgorithm:
    """Optimizer, schedule, batching, loss and augmentation that the base run and the EE run share.

    `lr` is the peak rate per step on the mean batch loss; the schedule scales
    it. `momentum` and `nesterov` apply to SGD only. Weight decay defaults to
    zero because it moves the global minimum of the squared loss away from
    zero.
    """

    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    batch_size: int = 64
    loss: str = "mse"
    schedule: Schedule = field(default_factory=Schedule)
    augmentation: Augmentation = field(default_factory=Augmentation)

    def __post_init__(self) -> None:
        _check_choice("--optimizer", self.optimizer, OPTIMIZERS)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainingConfigError("--lr", self.lr, "a positive, finite learning rate")
        if not 0 <= self.momentum < 1:
            raise TrainingConfigError("--momentum", self.momentum, "a value in [0, 1)")
        if self.weight_decay < 0:
            raise TrainingConfigError("--weight-decay", self.weight_decay, "a non-negative value")
        if self.batch_size < 1:
            raise TrainingConfigError("--batch-size", self.batch_size, "a positive integer")
        _check_choice("--loss", self.loss, LOSSES)

    def make_optimizer(self, groups: Iterable[dict]) -> torch.optim.Optimizer:
        """Build the optimizer over parameter groups; a group may set its own `lr`.

        Each group keeps its unscheduled rate as `initial_lr`, which
        `set_learning_rate` scales by the schedule's factor.
        """
        optimizer = OPTIMIZERS[self.optimizer](list(groups), self)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        return optimizer


def add_param_group(optimizer: torch.optim.Optimizer, group: dict) -> None:
    """Add a parameter group whose `lr` the schedule scales like the others."""
    optimizer.add_param_group(group)
    optimizer.param_groups[-1].setdefault("initial_lr", optimizer.param_groups[-1]["lr"])


def set_learning_rate(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
