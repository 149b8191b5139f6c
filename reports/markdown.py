"""Markdown rendering of a report, suitable for a pull-request comment."""

from __future__ import annotations

from advisor.report import Report
from reports.figures import (ALIGNMENT_HEADERS, STRUCTURE_HEADERS, TRAINING_HEADERS, alignment_rows, structure_rows, summary_rows,
                             training_rows)
from reports.plots import PLOT_FILES, Plot
from reports.theme import VERDICT_TITLES, confirmation_text, format_number


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def render_markdown(report: Report, plots: list[Plot] | None = None) -> str:
    """Return the whole report as Markdown text.

    Each plot in `plots` is linked as the SVG file named in PLOT_FILES, which
    the caller writes beside the Markdown file; without plots none is linked.
    """
    verdict = report.verdict
    lines = [f"# Model-design advisor: {VERDICT_TITLES[verdict.label]} ({confirmation_text(verdict.confirmed)})", ""]
    lines += [f"- {sentence}" for sentence in verdict.sentences]
    lines += ["", "## Summary", ""]
    lines += _table(["", ""], [[label, value] for label, value in summary_rows(report)])

    lines += ["", "## Structure", ""]
    lines += _table(STRUCTURE_HEADERS, structure_rows(report))
    if report.structure.fix:
        lines += ["", f"Fix: {report.structure.fix}"]

    lines += ["", "## Alignment", ""]
    lines += _table(ALIGNMENT_HEADERS, alignment_rows(report))

    if plots:
        lines += ["", "## Plots"]
        for plot in plots:
            lines += ["", f"### {plot.title}", "", f"![{plot.title}]({PLOT_FILES[plot.name]})", "", f"*{plot.caption}*"]

    if report.training is not None:
        lines += ["", "## Training", ""]
        lines += _table(TRAINING_HEADERS, training_rows(report))

    if report.recommendations:
        lines += ["", "## Recommendations", ""]
        lines += [f"- {r.text} ({', '.join(r.rests_on)})" for r in report.recommendations]
    if report.caveats:
        lines += ["", "## Caveats", ""]
        lines += [f"- {c}" for c in report.caveats]
    env = report.environment
    lines += ["", f"<sub>advisor {env.advisor}, torch {env.torch}, Python {env.python}, device {env.device}, seed {env.seed}, "
                  f"schema {report.schema_version}</sub>", ""]
    return "\n".join(lines)
