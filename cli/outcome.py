"""Exit codes: 0 clean, 1 a --fail-on condition happened, 2 invalid input or usage."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console

T = TypeVar("T")


def run_guarded(work: Callable[[], T], err_console: Console) -> T:
    """Run `work`; an invalid-input error is printed to stderr and exits with code 2."""
    from advisor.errors import AdvisorError
    from training.errors import TrainingConfigError

    try:
        return work()
    except (AdvisorError, TrainingConfigError) as error:
        from rich.text import Text

        # Plain Text, so brackets in paths are not read as markup; soft_wrap
        # keeps paths and values on one line so they can be copied.
        err_console.print(Text("error: ", style="bold red") + Text(str(error)), soft_wrap=True)
        raise typer.Exit(2) from error


def exit_code_for(report, conditions: list[str]) -> int:
    """1 when any condition named in --fail-on happened, else 0."""
    happened = set()
    if not report.structure.holds:
        happened.add("structure")
    if report.verdict.label == "misaligned":
        happened.add("misaligned")
    training = report.training
    if training is not None and training.ee.final_train_loss > report.settings.get("confirm_ratio", 0.1) * training.ee.loss_at_transition:
        happened.add("no-convergence")
    return 1 if happened & set(conditions) else 0
