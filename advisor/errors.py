"""Errors the advisor raises for input it cannot use.

Every class here means "the input or the options are wrong", which the command
line turns into exit code 2. Each error keeps the facts it is about as
attributes, so callers and tests can inspect them, and its message states what
was received, what was expected and what to do next.
"""

from __future__ import annotations

from collections.abc import Iterable


class AdvisorError(Exception):
    """Base class for invalid input or usage (exit code 2)."""

    exit_code = 2


class UsageError(AdvisorError):
    """An option value is invalid."""

    def __init__(self, option: str, value: object, expected: str) -> None:
        self.option = option
        self.value = value
        self.expected = expected
        super().__init__(f"invalid value {value!r} for {option}: expected {expected}.")


class UnknownChoiceError(AdvisorError):
    """A value names none of the supported variants."""

    def __init__(self, what: str, value: str, supported: Iterable[str], hint: str = "") -> None:
        self.what = what
        self.value = value
        self.supported = sorted(supported)
        message = f"unknown {what} {value!r}; supported: {', '.join(self.supported)}."
        if hint:
            message += f" {hint}"
        super().__init__(message)


class ModelSpecError(AdvisorError):
    """A model specification cannot be loaded."""

    def __init__(self, spec: str, problem: str, fix: str) -> None:
        self.spec = spec
        self.problem = problem
        self.fix = fix
        # Messages passed through from other libraries often end in a period already.
        super().__init__(f"cannot load model {spec!r}: {problem.rstrip('.')}. {fix}")


class DataError(AdvisorError):
    """A dataset is missing, corrupt or does not fit the task.

    `path` is the file or folder at fault. `index` is the index of the
    example at fault, or the line number for errors found while parsing a CSV
    file. It is None when the problem concerns a whole file or dataset.
    """

    def __init__(
        self, spec: str, problem: str, fix: str, *, path: str | None = None, index: int | None = None
    ) -> None:
        self.spec = spec
        self.problem = problem
        self.fix = fix
        self.path = path
        self.index = index
        super().__init__(f"cannot use dataset {spec!r}: {problem}. {fix}")


class ShapeMismatchError(AdvisorError):
    """The model and the data disagree on a shape."""

    def __init__(self, what: str, model_value: object, data_value: object, fix: str, *,
                 model_verb: str = "gives", data_verb: str = "needs") -> None:
        self.what = what
        self.model_value = model_value
        self.data_value = data_value
        self.fix = fix
        super().__init__(
            f"{what} mismatch: the model {model_verb} {model_value} but the data {data_verb} {data_value}. {fix}"
        )


class BudgetError(AdvisorError):
    """A requested computation does not fit its memory or time budget."""

    def __init__(self, what: str, estimate: str, budget: str, fix: str) -> None:
        self.what = what
        self.estimate = estimate
        self.budget = budget
        self.fix = fix
        super().__init__(f"{what} needs an estimated {estimate}, over the budget of {budget}. {fix}")


class ReportError(AdvisorError):
    """A report file cannot be read or written."""

    def __init__(self, path: str, problem: str, fix: str) -> None:
        self.path = path
        self.problem = problem
        self.fix = fix
        super().__init__(f"report {path!r}: {problem.rstrip('.')}. {fix}")
