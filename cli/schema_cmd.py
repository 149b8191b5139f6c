"""`advisor schema`: print the JSON Schema of report.json."""

from __future__ import annotations

import typer


def schema() -> None:
    """Print the JSON Schema of report.json, for CI scripts that validate or read reports."""
    import json

    from advisor.report import Report

    typer.echo(json.dumps(Report.model_json_schema(), indent=2, ensure_ascii=False))
