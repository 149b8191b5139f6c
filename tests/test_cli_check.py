"""`advisor check` through typer's CliRunner and one real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from tests.factories import write_model_file

runner = CliRunner()
SMALL = ["--max-samples", "48", "--epochs", "3", "--explore-epochs", "1", "--quiet"]


def invoke(*args: str):
    return runner.invoke(app, ["check", *args])


def test_small_run_writes_reports(tmp_path):
    model = write_model_file(tmp_path)
    out = tmp_path / "report"
    result = invoke(f"{model}:DigitsMLP", "--out", str(out), *SMALL)

    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] == "1.0"
    assert report["structure"]["holds"] is True
    assert report["verdict"]["label"] in ("aligned", "misaligned")
    assert [p["stage"] for p in report["alignment"] if p["stage"] != "epoch"] == ["init", "transition", "final"]
    assert len(report["training"]["base"]["epochs"]) == 4
    assert report["training"]["ee"]["certificate"]["sigma_min"] > 0
    assert (out / "report.md").read_text().startswith("# Model-design advisor")


def test_lower_bound_holds_on_trained_model(tmp_path):
    model = write_model_file(tmp_path)
    out = tmp_path / "report"
    result = invoke(f"{model}:DigitsMLP", "--model-arg", "width=4", "--out", str(out), *SMALL)

    assert result.exit_code == 0, result.output
    points = [p for p in json.loads((out / "report.json").read_text())["alignment"] if p["rho"] is not None]
    assert len(points) >= 3
    for point in points:
        assert point["rho"] <= point["rho_s_analysis"] + 1e-12
        assert point["loss"] >= point["loss_lower_bound"]


def test_sigmoid_output_fails_structure(tmp_path):
    model = write_model_file(tmp_path)
    out = tmp_path / "report"
    result = invoke(f"{model}:SigmoidMLP", "--loss", "mse", "--fail-on", "structure", "--no-confirm", "--out", str(out), "--max-samples", "32", "--quiet")

    assert result.exit_code == 1, result.output
    structure = json.loads((out / "report.json").read_text())["structure"]
    assert structure["holds"] is False
    assert "sigmoid" in structure["breaking_op"]


def test_structure_failure_without_fail_on_exits_zero(tmp_path):
    model = write_model_file(tmp_path)
    result = invoke(f"{model}:SigmoidMLP", "--no-confirm", "--out", str(tmp_path / "r"), "--max-samples", "32", "--quiet")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("spec_suffix", "data", "expected"), [
    ("missing.py:Model", "digits", "not found"),
    ("models.py:NoSuchModel", "digits", "defines no callable 'NoSuchModel'"),
    ("models.py:make_wrong_size", "digits", "output size mismatch"),
    ("models.py:DigitsMLP", "mnist:EMPTY", "no IDX files"),
    ("models.py:DigitsMLP", "imagenet", "unknown dataset kind"),
])
def test_bad_input_exits_2_without_report(tmp_path, spec_suffix, data, expected):
    write_model_file(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "report"
    result = invoke(str(tmp_path / spec_suffix), "--data", data.replace("EMPTY", str(empty)), "--out", str(out), "--no-confirm", "--quiet")

    assert result.exit_code == 2
    assert expected in result.output
    assert not out.exists()


@pytest.mark.parametrize(("option", "value"), [("--rho-method", "magic"), ("--fail-on", "slowness"), ("--epochs", "0"), ("--format", "pdf"), ("--device", "cuda"),
                                               ("--seed", "-1"), ("--memory-budget", "0"), ("--memory-budget", "nan"),
                                               ("--memory-budget", "inf"), ("--time-budget", "nan")])
def test_bad_option_exits_2(tmp_path, option, value):
    result = invoke("--no-confirm", option, value, "--out", str(tmp_path / "r"), "--quiet")
    assert result.exit_code == 2
    assert value in result.output
    assert not (tmp_path / "r").exists()


def test_option_messages_name_the_fix(tmp_path):
    seed = invoke("--no-confirm", "--seed", "-1", "--out", str(tmp_path / "r"), "--quiet")
    budget = invoke("--no-confirm", "--memory-budget", "-2", "--out", str(tmp_path / "r"), "--quiet")

    assert "--seed" in seed.output
    assert "4294967295" in seed.output
    assert "split" not in seed.output
    assert "GiB" in budget.output


def test_empty_out_is_rejected(tmp_path, monkeypatch):
    # An empty --out would otherwise mean the current folder.
    monkeypatch.chdir(tmp_path)
    result = invoke("--no-confirm", "--out", "", "--quiet")
    assert result.exit_code == 2
    assert "empty" in result.output
    assert list(tmp_path.iterdir()) == []


def test_default_out_folder(tmp_path, monkeypatch):
    model = write_model_file(tmp_path)
    monkeypatch.chdir(tmp_path)

    result = invoke(f"{model}:DigitsMLP", "--no-confirm", "--max-samples", "16", "--format", "json", "--quiet")

    assert result.exit_code == 0, result.output
    assert (tmp_path / "advisor-report" / "report.json").exists()


def test_real_subprocess_run(tmp_path):
    model = write_model_file(tmp_path)
    out = tmp_path / "report"
    completed = subprocess.run(
        [sys.executable, "-m", "cli.main", "check", f"{model}:DigitsMLP", "--no-confirm", "--max-samples", "32", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1],
    )
    assert completed.returncode == 0, completed.stderr
    assert "Report written" in completed.stdout
    assert (out / "report.json").exists()


def test_same_seed_gives_same_figures(tmp_path):
    model = write_model_file(tmp_path)
    figures = []
    for run in ("first", "second"):
        out = tmp_path / run
        result = invoke(f"{model}:DigitsMLP", "--out", str(out), "--seed", "7", "--max-samples", "32", "--epochs", "2", "--explore-epochs", "1", "--quiet")
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        figures.append((report["alignment"], report["training"]["base"]["epochs"], report["training"]["ee"]["final_train_loss"]))
    first_alignment, first_epochs, first_final = figures[0]
    second_alignment, second_epochs, second_final = figures[1]
    strip = lambda points: [{k: v for k, v in p.items() if k != "seconds"} for p in points]
    assert strip(first_alignment) == strip(second_alignment)
    assert strip(first_epochs) == strip(second_epochs)
    assert first_final == second_final


def test_report_files_are_world_readable(tmp_path):
    model = write_model_file(tmp_path)
    out = tmp_path / "report"
    result = invoke(f"{model}:DigitsMLP", "--no-confirm", "--max-samples", "16", "--out", str(out), "--format", "json", "--quiet")
    assert result.exit_code == 0, result.output
    assert (out / "report.json").stat().st_mode & 0o044 == 0o044


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_imported_model_file_runs(tmp_path, kind):
    from tests.test_model_import import SmallMLP, export

    torch.manual_seed(0)
    if kind == "onnx":
        model = export(SmallMLP(), tmp_path / "mlp.onnx", (1, 8, 8), 13)
    else:
        model = tmp_path / "mlp.pt"
        torch.jit.script(SmallMLP()).save(str(model))
    out = tmp_path / "report"

    result = invoke(str(model), "--out", str(out), "--no-confirm", "--max-samples", "48", "--quiet")

    assert result.exit_code == 0, result.output
    section = json.loads((out / "report.json").read_text())["model"]
    assert section["kind"] == kind
    assert section["input_shape"] == [1, 8, 8]
    assert section["conversion_max_abs_diff"] < 1e-5


def test_bound_only_verdict_says_not_established(tmp_path):
    # 48 examples against 33 last-layer features: ρ_S > 0, and the exact ρ is not measured.
    model = write_model_file(tmp_path)
    out = tmp_path / "report"

    result = invoke(f"{model}:DigitsMLP", "--out", str(out), "--no-confirm", "--rho-method", "features", "--max-samples", "48", "--quiet")

    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"]["label"] == "misaligned"
    assert any("alignment was not established" in s for s in report["verdict"]["sentences"])
    # The headline's ρ_S is on the analysis subset; the tables' is on the training split.
    assert any(s.startswith("ρ_S (analysis subset) = ") for s in report["verdict"]["sentences"])
    assert not any("Widen" in r["text"] for r in report["recommendations"])
    assert "The exact ρ was skipped: --rho-method features computes only the last-layer bound ρ_S." in " ".join(report["caveats"])


def test_short_run_without_explore_epochs(tmp_path):
    model = write_model_file(tmp_path)

    result = invoke(f"{model}:DigitsMLP", "--epochs", "2", "--max-samples", "48", "--quiet", "--out", str(tmp_path / "out"))

    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["training"]["ee"]["explore_epochs"] == 1
