"""A last hidden layer narrower than n: misaligned, bounded below, and fixed by the EE run."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.factories import write_model_file

runner = CliRunner()


def check_narrow(tmp_path, *options: str) -> dict:
    model = write_model_file(tmp_path)
    out = tmp_path / "report"
    result = runner.invoke(app, ["check", f"{model}:NarrowMLP", "--fail-on", "misaligned", "--out", str(out), "--quiet", *options])
    assert result.exit_code == 1, result.output
    return json.loads((out / "report.json").read_text())


def assert_misaligned_and_bounded(report: dict) -> None:
    assert report["verdict"]["label"] == "misaligned"
    exact_points = [p for p in report["alignment"] if p["rho"] is not None]
    assert {p["stage"] for p in exact_points} >= {"init", "transition", "final"}
    for point in report["alignment"]:
        assert point["rho_s"] > 0.1
    for point in exact_points:
        assert point["rho"] > 0.1
        # R3: the measured squared loss never goes below ½ρ²‖Y‖² at the same θ.
        assert point["loss"] >= point["loss_lower_bound"]


def test_narrow_mlp_certified_ee_reaches_global_minimum(tmp_path):
    report = check_narrow(tmp_path, "--max-samples", "200", "--epochs", "6", "--explore-epochs", "3", "--mode", "certified")
    assert_misaligned_and_bounded(report)

    ee = report["training"]["ee"]
    assert ee["bound_violations"] == 0
    assert ee["final_train_loss"] <= 1e-4 * ee["loss_at_transition"]
    assert report["verdict"]["confirmed"] is True


@pytest.mark.slow
def test_narrow_mlp_practical_ee_at_n_512(tmp_path):
    # With the base rate, V fits about 1% of each residual per visit; the rate
    # (1 − momentum)·batch = 6.4 fits most of it, which this case needs.
    report = check_narrow(tmp_path, "--max-samples", "512", "--epochs", "30", "--explore-epochs", "10", "--feature-lr", "6.4")
    assert_misaligned_and_bounded(report)
    assert report["alignment"][0]["n"] == 512

    ee = report["training"]["ee"]
    assert ee["final_train_loss"] <= 1e-4 * ee["loss_at_transition"]
