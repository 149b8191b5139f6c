"""Terminal rendering of a report with rich renderables (the caller prints them)."""

from __future__ import annotations

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from advisor.compare import Comparison
from advisor.report import Report
from reports.figures import ALIGNMENT_HEADERS, alignment_rows, summary_rows
from reports.theme import CHECK_STYLES, VERDICT_STYLES, VERDICT_TITLES, confirmation_text


def render_terminal(report: Report) -> Group:
    """Verdict panel, summary, alignment table, recommendations and caveats."""
    verdict = report.verdict
    title = Text(f"{VERDICT_TITLES[verdict.label]} — {confirmation_text(verdict.confirmed)}", style=VERDICT_STYLES[verdict.label])
    panel = Panel(Text("\n".join(verdict.sentences)), title=title, title_align="left", border_style=VERDICT_STYLES[verdict.label])

    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    for label, value in summary_rows(report):
        summary.add_row(label, value)

    alignment = Table(title="Alignment", title_justify="left")
    for header in ALIGNMENT_HEADERS:
        alignment.add_column(header, justify="right" if header not in ("stage",) else "left")
    for row in alignment_rows(report):
        alignment.add_row(*row)

    parts = [panel, summary, alignment]
    if report.recommendations:
        advice = Text()
        for item in report.recommendations:
            advice.append(f"• {item.text} ", style="")
            advice.append(f"[{', '.join(item.rests_on)}]\n", style="dim")
        parts.append(Panel(advice, title="Recommendations", title_align="left"))
    if report.caveats:
        parts.append(Text("Caveats:\n" + "\n".join(f"  - {c}" for c in report.caveats), style="dim"))
    return Group(*parts)


def render_comparison(comparison: Comparison) -> Group:
    """Show the figures side by side, changed rows marked, then one line per check."""
    figures = Table(title=f"Baseline {comparison.baseline_spec} → current {comparison.current_spec}", title_justify="left")
    figures.add_column("figure", style="bold")
    figures.add_column("baseline")
    figures.add_column("current")
    figures.add_column("changed")
    for row in comparison.figures:
        style = "yellow" if row.changed else ""
        figures.add_row(row.figure, row.baseline, row.current, "changed" if row.changed else "", style=style)

    checks = Table(title="Regression checks", title_justify="left")
    checks.add_column("check", style="bold")
    checks.add_column("result")
    checks.add_column("details")
    for check in comparison.checks:
        checks.add_row(check.name, Text(check.status, style=CHECK_STYLES[check.status]), check.message)

    regressions = comparison.regressions
    summary = (Text(f"{len(regressions)} regression(s): " + ", ".join(c.name for c in regressions), style=CHECK_STYLES["failed"])
               if regressions else Text("No regression.", style=CHECK_STYLES["passed"]))
    return Group(figures, checks, summary)
