"""Errors for invalid training configurations."""

from __future__ import annotations


class TrainingConfigError(ValueError):
    """A training option has an invalid value; `option` names it for the user."""

    def __init__(self, option: str, value: object, expected: str) -> None:
        self.option = option
        self.value = value
        self.expected = expected
        super().__init__(f"invalid value {value!r} for {option}: expected {expected}.")
