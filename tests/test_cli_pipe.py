"""A closed standard output (`advisor … | head`) neither stops a run nor changes its exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.factories import write_model_file

ROOT = Path(__file__).resolve().parents[1]


def run_with_closed_stdout(*args: str) -> tuple[int, str]:
    """Run `python -m cli.main ARGS` with its stdout pipe closed by the reader before the first write."""
    process = subprocess.Popen([sys.executable, "-m", "cli.main", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               cwd=ROOT, text=True)
    process.stdout.close()
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


def test_schema_into_closed_pipe():
    # The schema (several kB) is printed in one write.
    code, stderr = run_with_closed_stdout("schema")
    assert code == 0, stderr
    assert "BrokenPipeError" not in stderr


def test_check_closed_pipe_writes_report(tmp_path):
    model = write_model_file(tmp_path)
    out = tmp_path / "report"

    code, stderr = run_with_closed_stdout("check", f"{model}:DigitsMLP", "--no-confirm", "--max-samples", "32", "--out", str(out))

    assert code == 0, stderr
    assert "BrokenPipeError" not in stderr
    assert (out / "report.json").exists()
