"""`advisor check --rho-method` through typer's CliRunner on a small MLP."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.main import app
from tests.factories import write_model_file

runner = CliRunner()


def test_lsqr_reports_method_and_brackets(tmp_path):
    model = write_model_file(tmp_path)
    out = tmp_path / "report"
    result = runner.invoke(app, ["check", f"{model}:DigitsMLP", "--no-confirm", "--rho-method", "lsqr", "--max-samples", "24",
                                 "--out", str(out), "--quiet"])

    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    point = report["alignment"][0]
    assert point["method"] == "lsqr"
    assert point["method_reason"] == "requested with --rho-method lsqr"
    assert point["rho"] <= point["rho_s_analysis"] + 1e-9
    assert point["loss_lower_bound"] is None
    assert all(item["rho_lower"] <= item["rho_upper"] for item in point["rho_curve"])
    assert report["settings"]["rho_estimates"]["chosen"] == "lsqr"
    # The summary names the smallest ε whose bracket is resolved, or states that none is.
    summary = (out / "report.md").read_text()
    expected = (f"resolved down to ε = {point['eps_resolved']:.0e}" if point["eps_resolved"] is not None else "no ε resolved")
    assert "matrix-free ρ" in summary
    assert expected in summary


def test_exact_over_budget_exits_2_with_options(tmp_path):
    model = write_model_file(tmp_path)
    result = runner.invoke(app, ["check", f"{model}:DigitsMLP", "--no-confirm", "--rho-method", "exact", "--max-samples", "64",
                                 "--memory-budget", "0.0001", "--out", str(tmp_path / "r"), "--quiet"])

    assert result.exit_code == 2
    assert "needs an estimated" in result.output
    assert "--rho-method lsqr" in result.output
    # Only the memory is over, so only that budget is named.
    assert "--memory-budget" in result.output
    assert "--time-budget" not in result.output
    assert not (tmp_path / "r").exists()


def test_auto_names_the_method_it_chose(tmp_path):
    model = write_model_file(tmp_path)
    out = tmp_path / "report"
    result = runner.invoke(app, ["check", f"{model}:DigitsMLP", "--no-confirm", "--max-samples", "24", "--out", str(out), "--quiet"])

    assert result.exit_code == 0, result.output
    point = json.loads((out / "report.json").read_text())["alignment"][0]
    assert point["method"] == "exact"
    assert point["method_reason"].startswith("the most accurate method within")
