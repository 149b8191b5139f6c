"""`advisor report`: render a saved report.json again, in other formats or another folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from cli.options import output_path, split_list

RENDER_FORMATS = ("json", "md", "html")


def report(
    report_file: Annotated[Path, typer.Argument(metavar="REPORT.json", help="A report.json written by advisor check or advisor train.")],
    format: Annotated[str, typer.Option("--format", help="Comma-separated formats: json, md (with SVG plots beside it), html (one self-contained file).")] = "html,md",
    out: Annotated[Optional[Path], typer.Option(parser=output_path, help="Folder for the files; default: the folder of REPORT.json.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print nothing but errors.")] = False,
) -> None:
    """Render REPORT.json again as HTML and Markdown (or JSON, normalized to this advisor's schema)."""
    from cli.outcome import run_guarded

    err_console = Console(stderr=True)

    def work() -> list[Path]:
        from advisor.atomic import require_output_folder
        from advisor.report import load_report
        from reports.files import write_report

        formats = split_list("--format", format, RENDER_FORMATS, required=True)
        folder = out if out is not None else report_file.parent
        require_output_folder("--out", folder)
        loaded = load_report(report_file)
        return write_report(loaded, folder, formats)

    paths = run_guarded(work, err_console)
    if not quiet:
        Console().print("Report written: " + ", ".join(str(path) for path in paths), highlight=False)
