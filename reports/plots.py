"""Plots of a report as SVG text, for the HTML report and the SVG files beside the Markdown report.

Each plot function returns None when the report has nothing to draw (no
training, no exact ρ, no spectrum), so renderers can leave the figure out.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from advisor.report import AlignmentPoint, Report

# Plot name -> the SVG file written beside the Markdown report.
PLOT_FILES = {
    "loss": "loss.svg",
    "rho": "rho.svg",
    "spectrum": "spectrum.svg",
}


@dataclass(frozen=True)
class Plot:
    """One rendered figure: its name, title, caption and SVG markup (without the XML prologue)."""

    name: str
    title: str
    caption: str
    svg: str


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.0, 3.6), layout="constrained")
    axes.grid(True, which="major", alpha=0.3)
    return figure, axes


def _to_svg(figure, name: str) -> str:
    import matplotlib
    import matplotlib.pyplot as plt

    # A salt per plot keeps the generated clip-path ids distinct when several
    # figures share one HTML page, and a fixed salt and no date keep the
    # output the same for the same report.
    with matplotlib.rc_context({"svg.hashsalt": f"advisor-{name}", "svg.fonttype": "none"}):
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _positive(values: list[tuple[float, float | None]]) -> tuple[list[float], list[float]]:
    """Keep the (x, y) pairs a log axis can show: y present and above zero."""
    kept = [(x, y) for x, y in values if y is not None and y > 0]
    return [x for x, _ in kept], [y for _, y in kept]


def _exact_points(report: Report) -> list[AlignmentPoint]:
    """Return one exact point per epoch of the base run; a point listed under two stages counts once."""
    by_epoch: dict[int, AlignmentPoint] = {}
    for point in report.alignment:
        if point.rho is not None:
            by_epoch.setdefault(point.epoch, point)
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def _mark_transition(axes, report: Report) -> None:
    if report.training is not None:
        axes.axvline(report.training.ee.explore_epochs, color="0.5", linestyle=":", linewidth=1, label="EE transition")


def loss_plot(report: Report) -> Plot | None:
    """Training loss of the base and EE runs per epoch, with the certified lower bound ½ρ²‖Y‖²/n."""
    training = report.training
    if training is None:
        return None
    figure, axes = _figure()
    x, y = _positive([(e.epoch, e.train_loss) for e in training.base.epochs])
    axes.plot(x, y, marker="o", markersize=3, label="base run")
    x, y = _positive([(e.epoch, e.train_loss) for e in training.ee.epochs])
    axes.plot(x, y, marker="s", markersize=3, label="EE run")

    bound_note = ""
    if training.loss == "mse":
        bound = [(p.epoch, p.loss_lower_bound / p.n) for p in _exact_points(report) if p.loss_lower_bound is not None and p.n > 0]
        x, y = _positive(bound)
        if x:
            axes.plot(x, y, linestyle="--", color="black", marker="v", markersize=4, label="certified lower bound ½ρ²‖Y‖²/n (base run)")
        bound_note = (f" The certified lower bound ½ρ²‖Y‖² is a sum over the n = {report.data.n_analysis} analysis examples; "
                      "it is divided by n here to share the units of the training loss, a mean per example.")
        # An aligned point has a bound near 1e-30, which would squeeze the
        # loss curves into a sliver. So the axis stops two decades below the
        # smallest loss, and lower bounds leave the plot at its bottom edge.
        losses = [e.train_loss for e in training.base.epochs + training.ee.epochs if e.train_loss > 0]
        if losses and any(value < min(losses) / 100 for value in y):
            axes.set_ylim(bottom=min(losses) / 100)
            bound_note += " Bounds more than two decades below the smallest loss fall below the bottom edge."
        if len(y) < len(bound):
            bound_note += " Bounds of exactly 0 cannot be shown on the log axis."
    else:
        bound_note = " The certified lower bound is a statement about the squared loss, so it is not drawn for cross-entropy."
    _mark_transition(axes, report)
    axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"training loss ({training.loss}, mean per example)")
    axes.legend(fontsize="small")
    caption = ("Training loss of the base run and of the exploration–exploitation (EE) run on a log scale; the runs share the "
               f"first {training.ee.explore_epochs} epochs." + bound_note)
    return Plot("loss", "Training loss", caption, _to_svg(figure, "loss"))


def rho_plot(report: Report) -> Plot | None:
    """ρ_S on the training split per epoch and the exact ρ on the analysis subset, with the tolerance."""
    rho_s = [(p.epoch, p.rho_s) for p in report.alignment]
    exact = [(p.epoch, p.rho) for p in _exact_points(report)]
    if not any(value is not None for _, value in rho_s + exact):
        return None
    figure, axes = _figure()
    seen: dict[int, float | None] = {}
    for epoch, value in rho_s:
        seen.setdefault(epoch, value)
    x, y = _positive(sorted(seen.items()))
    axes.plot(x, y, marker="o", markersize=3, label="ρ_S (last-layer bound, training split)")
    x, y = _positive(exact)
    if x:
        axes.plot(x, y, marker="s", markersize=3, label=f"ρ (exact, {report.data.n_analysis} analysis examples)")
    tolerance = report.settings.get("rho_tolerance")
    if isinstance(tolerance, (int, float)) and tolerance > 0:
        axes.axhline(tolerance, color="tab:red", linestyle="--", linewidth=1, label=f"tolerance {tolerance:g}")
    _mark_transition(axes, report)
    axes.set_yscale("log")
    axes.set_xlabel("epoch of the base run")
    axes.set_ylabel("relative residual")
    axes.legend(fontsize="small")
    caption = ("ρ is the norm of the part of the targets outside the column space of the Jacobian, relative to the norm of "
               "the targets; ρ_S is the same for the last-layer features alone, which bounds ρ from above on the same "
               "examples. Here ρ_S is measured on the whole training split and ρ on the analysis subset, both along the "
               "base run. Values of 0 cannot be shown on the log axis.")
    return Plot("rho", "ρ and ρ_S over training", caption, _to_svg(figure, "rho"))


def spectrum_plot(report: Report) -> Plot | None:
    """Singular values of the Jacobian at the init, transition and final points, with the rank cut."""
    points = []
    for stage in ("init", "transition", "final"):
        point = next((p for p in report.alignment if p.stage == stage and p.singular_values), None)
        if point is not None:
            points.append(point)
    if not points:
        return None
    figure, axes = _figure()
    for point in points:
        x, y = _positive([(i + 1, s) for i, s in enumerate(point.singular_values)])
        line, = axes.plot(x, y, linewidth=1.2, label=f"{point.stage} (epoch {point.epoch}), rank {point.rank}")
        if point.rank_tolerance is not None and point.rank_tolerance > 0:
            axes.axhline(point.rank_tolerance, color=line.get_color(), linestyle="--", linewidth=0.8)
        if point.rank is not None:
            axes.axvline(point.rank, color=line.get_color(), linestyle=":", linewidth=0.8)
    axes.set_yscale("log")
    axes.set_xlabel("index (largest first)")
    axes.set_ylabel("singular value σ of J")
    axes.legend(fontsize="small")
    caption = ("Singular values of the Jacobian J on the analysis examples, largest first. The dashed line of each colour is "
               "the rank tolerance: singular values above it count towards the rank, which the dotted line marks. A wide gap "
               "at the cut makes the rank, and so ρ, trustworthy; values of 0 cannot be shown on the log axis.")
    return Plot("spectrum", "Singular value spectrum", caption, _to_svg(figure, "spectrum"))


def render_plots(report: Report) -> list[Plot]:
    """Render every plot the report has data for, in reading order."""
    plots = [loss_plot(report), rho_plot(report), spectrum_plot(report)]
    return [plot for plot in plots if plot is not None]
