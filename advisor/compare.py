"""Comparison of two reports of a model, before and after a change, for CI.

A change regresses when the structure assumption stops holding, the verdict
worsens (aligned < misaligned < structure-fails), ρ after exploration grows
by more than a tolerance, or the EE run stops converging.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from advisor.errors import UsageError
from advisor.report import Report

# Verdicts from best to worst; a move to the right is a regression.
VERDICT_ORDER = ("aligned", "misaligned", "structure-fails")

# The EE run converged when its final training loss is at most this share of
# the loss at the transition, unless the report's settings state another.
DEFAULT_CONFIRM_RATIO = 0.1


@dataclass(frozen=True)
class CheckResult:
    """One regression check: its name, outcome and the figures it compared.

    `status` is "passed", "failed" (a regression) or "skipped" (a figure is
    missing from one of the reports, so nothing could be compared).
    """

    name: str
    status: str
    message: str
    baseline: str
    current: str


@dataclass(frozen=True)
class FigureChange:
    """One row of the comparison table."""

    figure: str
    baseline: str
    current: str

    @property
    def changed(self) -> bool:
        return self.baseline != self.current


@dataclass
class Comparison:
    """Everything `advisor compare` shows and decides."""

    baseline_spec: str
    current_spec: str
    checks: list[CheckResult] = field(default_factory=list)
    figures: list[FigureChange] = field(default_factory=list)

    @property
    def regressions(self) -> list[CheckResult]:
        return [check for check in self.checks if check.status == "failed"]


def _text(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def rho_after_exploration(report: Report) -> tuple[float | None, str]:
    """Return (value, name): the exact ρ at the transition point, else ρ_S there.

    Without a transition point (no training ran) the latest measured point is used.
    """
    if not report.alignment:
        return None, "ρ"
    point = next((p for p in report.alignment if p.stage == "transition"), report.alignment[-1])
    if point.rho is not None:
        return point.rho, "ρ"
    return point.rho_s, "ρ_S"


def ee_converged(report: Report) -> bool | None:
    """Return whether the EE run's final training loss fell to the confirmation ratio of the loss at the transition; None without training."""
    if report.training is None:
        return None
    ratio = report.settings.get("confirm_ratio", DEFAULT_CONFIRM_RATIO)
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool):
        ratio = DEFAULT_CONFIRM_RATIO
    ee = report.training.ee
    return ee.final_train_loss <= ratio * ee.loss_at_transition


def _check_structure(baseline: Report, current: Report) -> CheckResult:
    before, after = baseline.structure.holds, current.structure.holds
    if before and not after:
        message = f"the structure assumption no longer holds: {current.structure.breaking_op or 'an operation'} follows the last affine map"
        if current.structure.fix:
            message += f". Fix: {current.structure.fix}"
        return CheckResult("structure", "failed", message, _text(before), _text(after))
    return CheckResult("structure", "passed", "the structure assumption holds" if after else "the structure assumption still fails",
                       _text(before), _text(after))


def _check_verdict(baseline: Report, current: Report) -> CheckResult:
    before, after = baseline.verdict.label, current.verdict.label
    if VERDICT_ORDER.index(after) > VERDICT_ORDER.index(before):
        return CheckResult("verdict", "failed", f"the verdict worsened from {before} to {after}", before, after)
    return CheckResult("verdict", "passed", f"the verdict is {after}" + ("" if after == before else f" (was {before})"), before, after)


def _check_rho(baseline: Report, current: Report, rho_tolerance: float) -> CheckResult:
    before, before_name = rho_after_exploration(baseline)
    after, after_name = rho_after_exploration(current)
    if before is None or after is None:
        missing = "baseline" if before is None else "current"
        return CheckResult("rho", "skipped", f"the {missing} report has no ρ or ρ_S after exploration", _text(before), _text(after))

    kinds = "" if before_name == after_name else f" (baseline {before_name}, current {after_name}: different measures)"
    growth = after - before
    if growth > rho_tolerance:
        return CheckResult("rho", "failed", f"{after_name} after exploration grew from {before:.4g} to {after:.4g}, by more than "
                           f"the tolerance {rho_tolerance:g}{kinds}", f"{before_name} = {before:.4g}", f"{after_name} = {after:.4g}")
    return CheckResult("rho", "passed", f"{after_name} after exploration changed by {growth:+.3g}, within the tolerance "
                       f"{rho_tolerance:g}{kinds}", f"{before_name} = {before:.4g}", f"{after_name} = {after:.4g}")


def _check_convergence(baseline: Report, current: Report) -> CheckResult:
    before, after = ee_converged(baseline), ee_converged(current)
    if before is None or after is None:
        missing = "baseline" if before is None else "current"
        return CheckResult("ee-convergence", "skipped", f"the {missing} report has no training run", _text(before), _text(after))
    if before and not after:
        ee = current.training.ee
        return CheckResult("ee-convergence", "failed", f"the EE run stopped converging: final training loss {ee.final_train_loss:.4g} "
                           f"against {ee.loss_at_transition:.4g} at the transition", _text(before), _text(after))
    return CheckResult("ee-convergence", "passed", "the EE run converges" if after else "the EE run still does not converge",
                       _text(before), _text(after))


def _figures(baseline: Report, current: Report) -> list[FigureChange]:
    def rows(report: Report) -> dict[str, str]:
        value, name = rho_after_exploration(report)
        figures = {
            "model": report.model.spec,
            "parameters": f"{report.model.n_params:,}",
            "data": report.data.spec,
            "structure": f"{'holds' if report.structure.holds else 'fails'} ({report.structure.form})",
            "breaking operation": _text(report.structure.breaking_op),
            "verdict": report.verdict.label,
            "confirmed by training": _text(report.verdict.confirmed),
            "ρ after exploration": "n/a" if value is None else f"{name} = {value:.4g}",
        }
        training = report.training
        if training is not None:
            figures |= {
                "base final train loss": _text(training.base.epochs[-1].train_loss),
                "base final test accuracy": _text(training.base.epochs[-1].test_accuracy),
                "EE loss at transition": _text(training.ee.loss_at_transition),
                "EE final train loss": _text(training.ee.final_train_loss),
                "EE final test accuracy": _text(training.ee.epochs[-1].test_accuracy),
                "EE converged": _text(ee_converged(report)),
            }
        figures["recommendations"] = str(len(report.recommendations))
        return figures

    before, after = rows(baseline), rows(current)
    names = list(before) + [name for name in after if name not in before]
    return [FigureChange(name, before.get(name, "n/a"), after.get(name, "n/a")) for name in names]


def compare_reports(baseline: Report, current: Report, *, rho_tolerance: float = 1e-3) -> Comparison:
    """Compare `current` with `baseline` and run every regression check.

    `rho_tolerance` is the largest growth of ρ after exploration (an absolute
    difference of relative residuals) that is not a regression.
    """
    if not rho_tolerance >= 0:
        raise UsageError("--rho-tolerance", rho_tolerance, "a number at or above 0")
    comparison = Comparison(baseline_spec=baseline.model.spec, current_spec=current.model.spec)
    comparison.checks = [
        _check_structure(baseline, current),
        _check_verdict(baseline, current),
        _check_rho(baseline, current, rho_tolerance),
        _check_convergence(baseline, current),
    ]
    comparison.figures = _figures(baseline, current)
    return comparison
