"""Write a report's formats into an output folder, each file atomically."""

from __future__ import annotations

from pathlib import Path

from advisor.atomic import write_text_atomic
from advisor.report import Report

# Format name -> the file it writes. The Markdown report also writes its
# plots beside it as the SVG files named in reports.plots.PLOT_FILES.
FORMATS = {
    "json": "report.json",
    "md": "report.md",
    "html": "report.html",
}


def render_files(report: Report, formats: list[str]) -> dict[str, str]:
    """Render every requested format and return file name -> text; plots are drawn once for all formats."""
    from advisor.errors import UnknownChoiceError
    from reports.html import render_html
    from reports.markdown import render_markdown

    for name in formats:
        if name not in FORMATS:
            raise UnknownChoiceError("report format", name, FORMATS)

    plots = None
    if "md" in formats or "html" in formats:
        from reports.plots import PLOT_FILES, render_plots

        plots = render_plots(report)

    files: dict[str, str] = {}
    for name in formats:
        if name == "json":
            files[FORMATS[name]] = report.model_dump_json(indent=2)
        elif name == "md":
            files[FORMATS[name]] = render_markdown(report, plots)
            files.update({PLOT_FILES[plot.name]: plot.svg for plot in plots})
        elif name == "html":
            files[FORMATS[name]] = render_html(report, plots)
    return files


def write_report(report: Report, out_dir: Path, formats: list[str]) -> list[Path]:
    """Render every format first, then write them, so a rendering error leaves no file behind."""
    files = render_files(report, formats)
    paths = []
    for file_name, text in files.items():
        path = out_dir / file_name
        write_text_atomic(path, text)
        paths.append(path)
    return paths
