"""Epoch loops and evaluation shared by every phase of training."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from training.algorithm import BaseAlgorithm, set_learning_rate
from training.errors import TrainingDivergedError
from training.losses import get_loss


@dataclass
class TrainData:
    """Tensors for training and evaluation; targets are float (N, M)."""

    x_train: torch.Tensor
    targets_train: torch.Tensor
    x_test: torch.Tensor
    targets_test: torch.Tensor
    classification: bool

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])


@dataclass
class EpochRecord:
    """Figures after one epoch, all measured in eval mode on whole splits."""

    epoch: int
    train_loss: float
    train_accuracy: float | None
    test_loss: float
    test_accuracy: float | None
    seconds: float
    # Measurements that callbacks add, such as rho_s.
    extra: dict[str, float] = field(default_factory=dict)


class Callbacks:
    """Hooks a caller passes into training; the defaults do nothing.

    `on_step` reports progress; `on_epoch_end` may measure the model and
    returns figures that are stored in the epoch's `extra`.
    """

    def on_phase_start(self, phase: str, total_steps: int) -> None:
        pass

    def on_step(self, phase: str, step: int, total_steps: int, loss: float) -> None:
        pass

    def on_epoch_end(self, phase: str, epoch: int, model: nn.Module) -> dict[str, float]:
        return {}


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, loss_name: str, *,
             classification: bool, batch_size: int = 1024) -> tuple[float, float | None]:
    """Mean per-example loss and accuracy (None for regression) in eval mode."""
    loss_fn = get_loss(loss_name)
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, x.shape[0], batch_size):
        outputs = model(x[start:start + batch_size])
        batch_targets = targets[start:start + batch_size]
        total_loss += float(loss_fn(outputs, batch_targets).double().sum())
        if classification:
            correct += int((outputs.argmax(dim=1) == batch_targets.argmax(dim=1)).sum())
    model.train(was_training)
    n = x.shape[0]
    return total_loss / n, (correct / n if classification else None)


def batch_indices(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Cut a seeded permutation into batches, joining a last batch of one example to the previous one.

    BatchNorm cannot normalize a batch of one in train mode.
    """
    order = torch.randperm(n, generator=generator)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and batches[-1].numel() == 1:
        batches[-2] = torch.cat([batches[-2], batches.pop()])
    return batches


def steps_per_epoch(n: int, batch_size: int) -> int:
    return len(batch_indices(n, batch_size, torch.Generator().manual_seed(0)))


@dataclass
class RandomStreams:
    """The generators of a run: batch order and augmentation, kept apart so augmentation leaves the order unchanged."""

    batches: torch.Generator
    augmentation: torch.Generator

    @classmethod
    def seeded(cls, seed: int) -> "RandomStreams":
        return cls(torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 7919))

    def get_state(self) -> dict[str, torch.Tensor]:
        return {"batches": self.batches.get_state(), "augmentation": self.augmentation.get_state()}

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        self.batches.set_state(state["batches"])
        self.augmentation.set_state(state["augmentation"])


# forward(inputs (B, ...), indices (B,)) -> outputs (B, M); the indices let a
# model reuse per-example values cached for the training set.
IndexedForward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_epoch_record(model: nn.Module, data: TrainData, loss_name: str, epoch: int, seconds: float) -> EpochRecord:
    """Evaluate the deterministic (eval-mode) function on whole splits."""
    train_loss, train_accuracy = evaluate(model, data.x_train, data.targets_train, loss_name, classification=data.classification)
    test_loss, test_accuracy = evaluate(model, data.x_test, data.targets_test, loss_name, classification=data.classification)
    return EpochRecord(epoch=epoch, train_loss=train_loss, train_accuracy=train_accuracy,
                       test_loss=test_loss, test_accuracy=test_accuracy, seconds=seconds)


def train_epochs(model: nn.Module, optimizer: torch.optim.Optimizer, data: TrainData, algorithm: BaseAlgorithm, *,
                 first_epoch: int, n_epochs: int, total_epochs: int, streams: RandomStreams, phase: str,
                 callbacks: Callbacks, on_epoch: Callable[[EpochRecord], None] | None = None,
                 forward: IndexedForward | None = None) -> list[EpochRecord]:
    """Run `n_epochs` epochs of mini-batch training, numbered from `first_epoch` + 1.

    The schedule spans `total_epochs` epochs from epoch 1, so a phase that
    starts at `first_epoch` continues the rate where the previous one left
    it. `on_epoch(record)` runs after each epoch's record is made
    (checkpoints, snapshots). The streams drive batch order and augmentation,
    so saved stream states resume the same sequence. `forward`, when given,
    replaces `model(inputs)` for training steps without augmentation.
    Only the test split's figures are recorded; no decision here reads them.
    """
    loss_fn = get_loss(algorithm.loss)
    augmentation = algorithm.augmentation
    augmentation.check_inputs(data.x_train)
    n_steps = steps_per_epoch(data.n_train, algorithm.batch_size)
    total_steps = total_epochs * n_steps
    callbacks.on_phase_start(phase, n_epochs * n_steps)
    records = []
    for epoch in range(first_epoch + 1, first_epoch + n_epochs + 1):
        start = time.perf_counter()
        model.train()
        for index, batch in enumerate(batch_indices(data.n_train, algorithm.batch_size, streams.batches)):
            # Learning rate of this global step.
            step = (epoch - 1) * n_steps + index
            set_learning_rate(optimizer, algorithm.schedule.factor(step, n_steps, total_steps))

            # Forward and backward on the mean batch loss.
            inputs = data.x_train[batch]
            optimizer.zero_grad(set_to_none=True)
            if augmentation.enabled:
                outputs = model(augmentation.apply(inputs, streams.augmentation))
            elif forward is not None:
                outputs = forward(inputs, batch)
            else:
                outputs = model(inputs)
            loss = loss_fn(outputs, data.targets_train[batch]).mean()
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                # Every later figure (ρ_S, ρ, the verdict) would be computed from NaN weights.
                raise TrainingDivergedError(phase, epoch, index + 1, loss_value, algorithm.lr)
            loss.backward()
            optimizer.step()
            done = (epoch - first_epoch - 1) * n_steps + index + 1
            callbacks.on_step(phase, done, n_epochs * n_steps, loss_value)
        seconds = time.perf_counter() - start

        record = make_epoch_record(model, data, algorithm.loss, epoch, seconds)
        if not math.isfinite(record.train_loss):
            raise TrainingDivergedError(phase, epoch, n_steps, record.train_loss, algorithm.lr)
        record.extra.update(callbacks.on_epoch_end(phase, epoch, model))
        records.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return records
