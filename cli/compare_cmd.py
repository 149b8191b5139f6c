"""`advisor compare`: what changed between two reports, and exit 1 on a regression."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from cli.options import output_path


def compare(
    baseline: Annotated[Path, typer.Argument(metavar="BASELINE.json", help="Report of the model before the change.")],
    current: Annotated[Path, typer.Argument(metavar="CURRENT.json", help="Report of the model after the change.")],
    rho_tolerance: Annotated[float, typer.Option(help="Largest growth of ρ after exploration (absolute, ρ is a relative residual in [0, 1]) that is not a regression.")] = 1e-3,
    junit: Annotated[Optional[Path], typer.Option(parser=output_path, help="Also write the regression checks as JUnit XML to this file, for CI test views.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print nothing but errors; the exit code still reports regressions.")] = False,
) -> None:
    """Compare CURRENT.json with BASELINE.json: exit 1 when the structure, verdict, ρ or EE convergence regressed, 2 on unreadable input."""
    from cli.outcome import run_guarded

    err_console = Console(stderr=True)

    def work():
        from advisor.atomic import require_output_file, write_text_atomic
        from advisor.compare import compare_reports
        from advisor.report import load_report
        from reports.junit import render_junit

        if junit is not None:
            require_output_file("--junit", junit)
        comparison = compare_reports(load_report(baseline), load_report(current), rho_tolerance=rho_tolerance)
        if junit is not None:
            write_text_atomic(junit, render_junit(comparison))
        return comparison

    comparison = run_guarded(work, err_console)
    if not quiet:
        from reports.terminal import render_comparison

        Console().print(render_comparison(comparison))
    raise typer.Exit(1 if comparison.regressions else 0)
