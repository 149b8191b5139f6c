"""Key figures of a report as (label, value) rows, shared by every renderer."""

from __future__ import annotations

from advisor.report import AlignmentPoint, Report
from reports.theme import format_number


def alignment_rows(report: Report) -> list[list[str]]:
    """Build one row per alignment point: stage, epoch, ρ_S, ρ, σ⁺_min, lower bound, measured loss."""
    rows = []
    for point in report.alignment:
        if point.stage == "epoch" and point.rho is None:
            continue
        rows.append([
            point.stage, str(point.epoch), format_number(point.rho_s), format_number(point.rho),
            format_number(point.sigma_min), format_number(point.loss_lower_bound), format_number(point.loss),
        ])
    return rows


ALIGNMENT_HEADERS = ["stage", "epoch", "ρ_S (train set)", "ρ (analysis)", "σ⁺_min", "½ρ²‖Y‖²", "measured loss"]


def summary_rows(report: Report) -> list[tuple[str, str]]:
    rows = [
        ("model", f"{report.model.spec} ({report.model.n_params:,} parameters)"),
        ("data", f"{report.data.spec}: {report.data.n_train} train, {report.data.n_test} test, {report.data.n_analysis} analysed"),
        ("structure", f"{'holds' if report.structure.holds else 'fails'} ({report.structure.form}, relative error {report.structure.relative_error:.1e})"),
    ]
    if report.structure.breaking_op:
        rows.append(("breaking operation", report.structure.breaking_op))
    matrix_free = [point for point in report.alignment if point.method == "lsqr" and point.rho is not None]
    if matrix_free:
        rows.append(("matrix-free ρ", matrix_free_summary(matrix_free[-1])))
    training = report.training
    if training is not None:
        base, ee = training.base, training.ee
        if base is not None:
            rows.append(("base run", f"train loss {format_number(base.epochs[0].train_loss)} → {format_number(base.epochs[-1].train_loss)}, "
                                     f"test accuracy {format_number(base.epochs[-1].test_accuracy)}"))
        if ee is not None:
            rows += [
                ("EE run", f"train loss {format_number(ee.loss_at_transition)} at transition → {format_number(ee.final_train_loss)}, "
                           f"test accuracy {format_number(ee.epochs[-1].test_accuracy)} ({ee.mode} mode, p = {ee.p})"),
                ("EE certificate", f"σ_min(Φ) = {format_number(ee.certificate.sigma_min)} ({ee.certificate.method}), "
                                   f"bound violations {ee.bound_violations}"),
            ]
    return rows


def matrix_free_summary(point: AlignmentPoint) -> str:
    """ρ's upper bound and the smallest ε whose ρ(ε) bracket is resolved, at the point's stage."""
    text = f"ρ ≤ {format_number(point.rho)} at {point.stage}, {point.iterations} iterations; "
    resolved = [item for item in point.rho_curve if item.resolved and item.eps == point.eps_resolved]
    if not resolved:
        return text + "no ε resolved"
    item = resolved[0]
    return (text + f"resolved down to ε = {item.eps:.0e}: ρ(ε) in [{format_number(item.rho_lower)}, "
            f"{format_number(item.rho_upper)}]")


STRUCTURE_HEADERS = ["tensor", "shape", "coefficient", "in subset S"]


def structure_rows(report: Report) -> list[list[str]]:
    """Return one row per parameter tensor: name, shape, fitted coefficient and whether it is in the subset."""
    in_subset = {item.tensor: item.coefficient for item in report.structure.subset}
    coefficients = report.structure.coefficients
    rows = []
    for tensor in report.model.tensors:
        coefficient = coefficients.get(tensor.name, in_subset.get(tensor.name))
        rows.append([
            tensor.name, "×".join(str(size) for size in tensor.shape) or "scalar",
            "n/a" if coefficient is None else f"{coefficient:.6g}", "yes" if tensor.name in in_subset else "no",
        ])
    return rows


TRAINING_HEADERS = ["epoch", "base train loss", "base test acc.", "ρ_S", "EE train loss", "EE test acc."]


def training_rows(report: Report) -> list[list[str]]:
    """Build one row per epoch of the base and EE runs; `advisor train` fills only the run it trained."""
    training = report.training
    if training is None:
        return []
    base = {e.epoch: e for e in training.base.epochs} if training.base is not None else {}
    ee = {e.epoch: e for e in training.ee.epochs} if training.ee is not None else {}

    rows = []
    for epoch in sorted(set(base) | set(ee)):
        b, e = base.get(epoch), ee.get(epoch)
        rows.append([str(epoch), format_number(b.train_loss if b else None), format_number(b.test_accuracy if b else None),
                     format_number(b.rho_s if b else None), format_number(e.train_loss if e else None),
                     format_number(e.test_accuracy if e else None)])
    return rows
