"""Errors for invalid training configurations."""

from __future__ import annotations


class TrainingConfigError(ValueError):
    """A training option has an invalid value; `option` names it for the user."""

    def __init__(self, option: str, value: object, expected: str) -> None:
        self.option = option
        self.value = value
        self.expected = expected
        super().__init__(f"invalid value {value!r} for {option}: expected {expected}.")


class TrainingDivergedError(TrainingConfigError):
    """The training loss became NaN or infinite, so the learning rate is too large for this model and data."""

    def __init__(self, phase: str, epoch: int, step: int, loss: float, lr: float) -> None:
        # The message describes the divergence itself, so it replaces the parent's "invalid value" sentence.
        self.option, self.value = "--lr", lr
        self.expected = f"a rate at which training stays finite, for example {lr / 10:g}"
        ValueError.__init__(
            self, f"training diverged in the {phase} phase: the batch loss became {loss} at step {step} of epoch {epoch} "
                  f"with learning rate {lr:g}. Lower --lr (for example to {lr / 10:g}) or choose a gentler --schedule.")
