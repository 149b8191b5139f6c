"""Verdict, recommendations and caveats from the measured figures.

Each conclusion rests on one of the results of Kawaguchi, Zhang and Deng
(Neural Computation 2022) as restated in the advisor's theory notes:
R1 stationary points are global minima under CMSA and alignment; R2 zero loss
needs alignment; R3 L(θ) ≥ ½ρ(θ)²‖Y‖²; R4 the Polyak–Łojasiewicz rate through
σ⁺_min(J); R5 only parameters that enlarge Col(J) help.
"""

from __future__ import annotations

from dataclasses import dataclass

from advisor.report import AlignmentPoint, Recommendation, StructureSection, Verdict


@dataclass
class TrainingFigures:
    """Loss figures of the base and EE runs that the verdict uses."""

    base_initial_loss: float
    base_final_loss: float
    ee_transition_loss: float
    ee_final_loss: float
    bound_violations_base: int
    ee_bound_violations: int
    epochs: int


def decisive_point(points: list[AlignmentPoint]) -> AlignmentPoint:
    """Return the point after exploration (transition), else the latest measured one."""
    for point in points:
        if point.stage == "transition":
            return point
    return points[-1]


def decisive_rho(point: AlignmentPoint) -> tuple[float | None, str]:
    """Return (value, name): the exact ρ when measured, else the bound ρ_S on the same examples."""
    if point.rho is not None and point.method == "lsqr" and not point.converged:
        return point.rho, "ρ (matrix-free upper bound)"
    if point.rho is not None:
        return point.rho, "ρ"
    # The tables list ρ_S on the training split; name the subset here so
    # that the two figures are not read as one.
    if point.rho_s_analysis is not None:
        return point.rho_s_analysis, "ρ_S (analysis subset)"
    return point.rho_s, "ρ_S (train set)"


def ee_converged(figures: TrainingFigures, ratio: float) -> bool:
    return figures.ee_final_loss <= ratio * figures.ee_transition_loss


def make_verdict(structure: StructureSection, points: list[AlignmentPoint], figures: TrainingFigures | None, *,
                 rho_tolerance: float, confirm_ratio: float) -> Verdict:
    """Label the architecture and explain the label in one sentence per conclusion."""
    if not structure.holds:
        sentences = [
            f"The common model structure assumption fails (relative error {structure.relative_error:.2e}): "
            f"{structure.breaking_op} follows the last affine map, so the alignment results do not apply as is.",
            f"Fix: {structure.fix}",
        ]
        return Verdict(label="structure-fails", confirmed=None, sentences=sentences)

    point = decisive_point(points)
    value, name = decisive_rho(point)
    if point.stage == "transition":
        where = "after exploration"
    elif point.stage == "init":
        where = "at initialization"
    else:
        where = f"at epoch {point.epoch}"
    form = f"{structure.form} form" + (f" with S = {{{', '.join(structure.last_layer_subset)}}}" if structure.last_layer_subset else "")
    sentences = [f"The structure assumption holds ({form}, relative error {structure.relative_error:.1e})."]

    if value is not None and value <= rho_tolerance:
        label = "aligned"
        sentences.append(f"{name} = {value:.2e} {where} on {point.n} examples, at or below the tolerance {rho_tolerance:g}: "
                         "the targets lie in the span of the Jacobian, so every stationary point reached there is a global minimum (R1).")
    else:
        label = "misaligned"
        sentences.append(f"{name} = {value:.3g} {where} on {point.n} examples, above the tolerance {rho_tolerance:g}: "
                         f"no parameter change near there can fit the targets, and the squared loss is at least "
                         f"{point.loss_lower_bound:.4g} on those examples (R3)." if point.loss_lower_bound is not None else
                         f"{name} = {value:.3g} {where}, above the tolerance {rho_tolerance:g}.")
        if point.rho is None:
            sentences.append("Only the last-layer bound ρ_S was measured, and it can exceed ρ, so here the label means that "
                             "alignment was not established, not that ρ is above the tolerance. To settle it, measure ρ "
                             "with --rho-method exact, giving it a larger --memory-budget or a smaller --max-samples.")
        elif point.method == "lsqr" and not point.converged:
            sentences.append(f"That value is an upper bound, not a measurement: {point.converged_reason}. So here the label "
                             "means that alignment was not established, not that ρ is above the tolerance.")
            if point.n_rows is not None and point.n_columns is not None and point.n_rows > point.n_columns:
                sentences.append(
                    f"J has more rows ({point.n_rows:,}) than parameters ({point.n_columns:,}), so Col(J) is a proper "
                    "subspace of the target space and targets in general position lie outside it; the bound leaves "
                    "open only whether these targets lie farther from it than the tolerance.")

    if figures is None:
        return Verdict(label=label, confirmed=None, sentences=sentences)

    base_ratio = figures.base_final_loss / figures.base_initial_loss if figures.base_initial_loss > 0 else 0.0
    reached = ee_converged(figures, confirm_ratio)
    if label == "aligned":
        confirmed = base_ratio <= confirm_ratio
        sentences.append(f"Base training brought the training loss to {base_ratio:.2e} of its initial value in {figures.epochs} epochs"
                         + (", consistent with reaching the global minimum." if confirmed else
                            f", not below the confirmation ratio {confirm_ratio:g}; more epochs are needed to confirm."))
    else:
        confirmed = reached and figures.bound_violations_base == 0
        sentences.append(f"The EE run brought the training loss from {figures.ee_transition_loss:.4g} at the transition to "
                         f"{figures.ee_final_loss:.3g}" + (", reaching the global minimum that base training cannot reach at the points it visits (R2)."
                                                          if reached else
                                                          ", not yet at the global minimum within its budget. Practical mode gives the "
                                                          "feature block the base learning rate, so it fits slowly; --mode certified or a "
                                                          "larger --feature-lr fits faster."))
    return Verdict(label=label, confirmed=confirmed, sentences=sentences)


def _ee_recommendation() -> Recommendation:
    return Recommendation(
        text="Train with the exploration–exploitation framework (advisor train --framework ee): its random-feature block makes the "
             "alignment condition hold by construction, so training reaches the global minimum.", rests_on=["R1", "R4"])


def make_recommendations(structure: StructureSection, points: list[AlignmentPoint], verdict: Verdict, *,
                         last_width: int | None, n_train: int) -> list[Recommendation]:
    """Design advice, each item tied to the result it rests on."""
    if verdict.label == "structure-fails":
        return [Recommendation(text=structure.fix or "End the model with an affine layer.", rests_on=["R1", "R2"])]

    recommendations = []
    point = decisive_point(points)
    bound_only = point.rho is None or (point.method == "lsqr" and not point.converged)
    if verdict.label == "misaligned" and bound_only:
        # An upper bound above the tolerance does not show misalignment, so
        # advice to change the architecture would rest on nothing.
        recommendations.append(Recommendation(
            text="Only an upper bound on ρ was measured. Before changing the architecture, measure ρ with --rho-method exact, "
                 "giving it a larger --memory-budget or a smaller --max-samples.", rests_on=["R1", "R3"]))
        recommendations.append(_ee_recommendation())
    elif verdict.label == "misaligned":
        if last_width is not None and last_width < n_train:
            recommendations.append(Recommendation(
                text=f"Widen the last hidden layer from {last_width} to at least n = {n_train} features: with n generic features "
                     "Col(J) covers every target and the alignment condition holds at every θ.", rests_on=["R5"]))
        recommendations.append(Recommendation(
            text="Parameters that leave Col(J) unchanged, such as extra depth or width before a narrow layer, will not help however many are added.",
            rests_on=["R5"]))
        recommendations.append(_ee_recommendation())
    else:
        if point.sigma_min is not None and point.sigma_max:
            recommendations.append(Recommendation(
                text=f"Gradient descent converges linearly while the alignment holds, at a rate set by σ⁺_min(J) = {point.sigma_min:.3g} "
                     f"(σ_max = {point.sigma_max:.3g}).", rests_on=["R4"]))
        slow = next((c for c in point.rho_curve if abs(c.eps - 1e-3) < 1e-9), None)
        if slow is not None and slow.resolved and slow.rho > 0.1:
            recommendations.append(Recommendation(
                text=f"ρ(1e-3) = {slow.rho:.2f}: that share of the target lies along directions with σ < 1e-3·σ_max, which "
                     "gradient descent fits slowly; expect a long tail in the training loss.", rests_on=["R4"]))
        recommendations.append(Recommendation(
            text="The architecture aligns with the data; base training is expected to reach the global minimum.", rests_on=["R1"]))
    return recommendations
