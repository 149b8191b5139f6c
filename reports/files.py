"""Write a report's formats into an output folder, each file atomically."""

from __future__ import annotations

from pathlib import Path

from advisor.atomic import write_text_atomic
from advisor.report import Report
from reports.markdown import render_markdown

# Format name -> (file name, renderer).
FORMATS = {
    "json": ("report.json", lambda report: report.model_dump_json(indent=2)),
    "md": ("report.md", render_markdown),
}


def write_report(report: Report, out_dir: Path, formats: list[str]) -> list[Path]:
    """Render every format first, then write them, so a rendering error leaves no file behind."""
    rendered = [(out_dir / FORMATS[name][0], FORMATS[name][1](report)) for name in formats]
    for path, text in rendered:
        write_text_atomic(path, text)
    return [path for path, _ in rendered]
