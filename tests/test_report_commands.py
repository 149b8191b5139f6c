"""The HTML, Markdown and JUnit outputs and the report, compare and schema commands, on real small runs."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from advisor.compare import compare_reports
from advisor.report import SCHEMA_VERSION, Report, load_report
from cli.main import app

CHROMIUM = Path("/usr/bin/chromium")

# A two-layer MLP on the 8×8 digits. SigmoidMLP squashes the outputs, and an
# operation after the last affine map breaks the structure assumption.
MLP_SOURCE = '''
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, n_outputs=10, width=16):
        super().__init__()
        self.hidden = nn.Linear(64, width)
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x):
        return self.head(torch.relu(self.hidden(x.flatten(1))))


class SigmoidMLP(MLP):
    def forward(self, x):
        return torch.sigmoid(super().forward(x))
'''

SMALL_RUN = ["--max-samples", "32", "--epochs", "4", "--explore-epochs", "2", "--quiet"]
TEN_EPOCH_RUN = ["--max-samples", "32", "--epochs", "10", "--explore-epochs", "5", "--quiet"]

runner = CliRunner()


def run_check(model: str, out: Path, settings: list[str], formats: str = "json,md,html") -> Path:
    result = runner.invoke(app, ["check", model, "--out", str(out), "--format", formats, *settings])
    assert result.exit_code == 0, result.output
    return out / "report.json"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "mlp.py"
    path.write_text(MLP_SOURCE)
    return path


@pytest.fixture(scope="module")
def ten_epoch_dir(model_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ten-epochs")
    run_check(f"{model_file}:MLP", out, TEN_EPOCH_RUN)
    return out


@pytest.fixture(scope="module")
def small_reports(model_file, tmp_path_factory) -> dict[str, Path]:
    """Two runs of the same MLP and one of the MLP with a final sigmoid, all with the same settings."""
    root = tmp_path_factory.mktemp("small")
    return {
        "baseline": run_check(f"{model_file}:MLP", root / "baseline", SMALL_RUN, formats="json"),
        "same": run_check(f"{model_file}:MLP", root / "same", SMALL_RUN, formats="json"),
        "sigmoid": run_check(f"{model_file}:SigmoidMLP", root / "sigmoid", SMALL_RUN, formats="json"),
    }


# HTML and Markdown reports


def test_html_report_holds_every_plot(ten_epoch_dir):
    html = (ten_epoch_dir / "report.html").read_text()
    for name in ("loss", "rho", "spectrum"):
        start = html.index(f'<figure id="plot-{name}">')
        figure = html[start:html.index("</figure>", start)]
        assert "<svg" in figure, name
        assert "</svg>" in figure, name
    assert html.count("<svg") == 3


def test_html_report_is_self_contained(ten_epoch_dir):
    html = (ten_epoch_dir / "report.html").read_text()
    assert "<script" not in html
    assert "<link" not in html
    assert 'src="' not in html
    assert 'href="http' not in html
    assert "url(http" not in html
    assert "@import" not in html


def test_html_report_sections(ten_epoch_dir):
    html = (ten_epoch_dir / "report.html").read_text()
    report = load_report(ten_epoch_dir / "report.json")
    for heading in ("Summary", "Model and data", "Structure", "Alignment", "Plots", "EE certificate", "Recommendations",
                    "Caveats", "Environment"):
        assert f"<h2>{heading}</h2>" in html, heading
    for tensor in report.model.tensors:
        assert f"<td>{tensor.name}</td>" in html, tensor.name
    for sentence in report.verdict.sentences:
        assert sentence.split(":")[0] in html
    assert f"n = {report.data.n_analysis} analysis examples" in html


def test_html_report_of_ten_epochs_under_2_mb(ten_epoch_dir):
    report = load_report(ten_epoch_dir / "report.json")
    assert report.settings["epochs"] == 10
    assert (ten_epoch_dir / "report.html").stat().st_size < 2 * 2**20


def test_markdown_links_plot_files(ten_epoch_dir):
    markdown = (ten_epoch_dir / "report.md").read_text()
    for file_name in ("loss.svg", "rho.svg", "spectrum.svg"):
        assert f"]({file_name})" in markdown
        svg = (ten_epoch_dir / file_name).read_text()
        assert svg.startswith("<svg"), file_name
        assert svg.rstrip().endswith("</svg>"), file_name


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
def test_html_report_renders_in_chromium(ten_epoch_dir, tmp_path):
    from PIL import Image, ImageStat

    screenshot = tmp_path / "report.png"
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={screenshot}", "--window-size=1200,3000",
               (ten_epoch_dir / "report.html").as_uri()]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert screenshot.exists()

    with Image.open(screenshot) as image:
        assert image.size == (1200, 3000)
        grey = image.convert("L")
        # A blank page has one grey level; text, tables and plots spread them.
        assert ImageStat.Stat(grey).var[0] > 100
        lower_half = grey.crop((0, 1500, 1200, 3000))
        assert ImageStat.Stat(lower_half).var[0] > 100


# advisor report and advisor schema


def test_report_command_renders_again(ten_epoch_dir, tmp_path):
    result = runner.invoke(app, ["report", str(ten_epoch_dir / "report.json"), "--format", "html,md", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report.html").read_text() == (ten_epoch_dir / "report.html").read_text()
    assert (tmp_path / "report.md").read_text() == (ten_epoch_dir / "report.md").read_text()
    assert (tmp_path / "spectrum.svg").exists()
    assert not (tmp_path / "report.json").exists()


def test_report_command_accepts_newer_minor_version(ten_epoch_dir, tmp_path):
    data = json.loads((ten_epoch_dir / "report.json").read_text())
    major = SCHEMA_VERSION.split(".")[0]
    data["schema_version"] = f"{major}.7"
    data["key_added_later"] = {"value": 1}
    source = tmp_path / "report.json"
    source.write_text(json.dumps(data))
    result = runner.invoke(app, ["report", str(source), "--format", "html"])
    assert result.exit_code == 0, result.output
    assert "<svg" in (tmp_path / "report.html").read_text()


@pytest.mark.parametrize("version", ["0.9", "2.0", None])
def test_report_command_rejects_other_major_version(ten_epoch_dir, tmp_path, version):
    data = json.loads((ten_epoch_dir / "report.json").read_text())
    data["schema_version"] = version
    source = tmp_path / "report.json"
    source.write_text(json.dumps(data))
    result = runner.invoke(app, ["report", str(source), "--format", "html"])
    assert result.exit_code == 2
    assert SCHEMA_VERSION in result.output
    assert repr(version) in result.output
    assert not (tmp_path / "report.html").exists()


def test_report_command_rejects_broken_json(tmp_path):
    source = tmp_path / "report.json"
    source.write_text('{"schema_version": "1.0", ')
    result = runner.invoke(app, ["report", str(source)])
    assert result.exit_code == 2
    assert "not valid JSON" in result.output


def test_report_command_rejects_unknown_format(ten_epoch_dir, tmp_path):
    result = runner.invoke(app, ["report", str(ten_epoch_dir / "report.json"), "--format", "pdf", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "'pdf'" in result.output
    assert list(tmp_path.iterdir()) == []


def test_schema_command_prints_report_schema():
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema == Report.model_json_schema()
    for key in ("schema_version", "model", "data", "structure", "alignment", "training", "verdict", "recommendations",
                "caveats", "environment"):
        assert key in schema["properties"], key


# advisor compare


def test_compare_same_model_passes(small_reports, tmp_path):
    junit = tmp_path / "compare.xml"
    result = runner.invoke(app, ["compare", str(small_reports["baseline"]), str(small_reports["same"]), "--junit", str(junit)])
    assert result.exit_code == 0, result.output
    assert "No regression." in result.output

    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("failures") == "0"
    assert suite.findall("testcase/failure") == []


def test_compare_final_sigmoid_regresses(small_reports, tmp_path):
    junit = tmp_path / "compare.xml"
    result = runner.invoke(app, ["compare", str(small_reports["baseline"]), str(small_reports["sigmoid"]), "--junit", str(junit)])
    assert result.exit_code == 1, result.output
    assert "regression(s)" in result.output

    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite.get("name") == "advisor compare"
    cases = suite.findall("testcase")
    assert suite.get("tests") == str(len(cases))
    failed = {case.get("name") for case in cases if case.find("failure") is not None}
    assert {"structure", "verdict"} <= failed
    assert suite.get("failures") == str(len(failed))
    assert root.get("failures") == suite.get("failures")
    for case in cases:
        assert case.get("classname")
        assert case.get("name")
    failure = next(case for case in cases if case.get("name") == "structure").find("failure")
    assert "sigmoid" in failure.get("message")


def test_compare_unreadable_report_exits_2(small_reports, tmp_path):
    missing = tmp_path / "missing.json"
    result = runner.invoke(app, ["compare", str(small_reports["baseline"]), str(missing)])
    assert result.exit_code == 2
    assert "missing.json" in result.output
    assert "cannot be read" in result.output


def test_compare_unsupported_version_exits_2(small_reports, tmp_path):
    data = json.loads(small_reports["baseline"].read_text())
    data["schema_version"] = "9.0"
    current = tmp_path / "report.json"
    current.write_text(json.dumps(data))
    result = runner.invoke(app, ["compare", str(small_reports["baseline"]), str(current)])
    assert result.exit_code == 2
    assert SCHEMA_VERSION in result.output


def _with_transition_rho(report: Report, rho: float) -> Report:
    points = [p.model_copy(update={"rho": rho}) if p.stage == "transition" else p for p in report.alignment]
    return report.model_copy(update={"alignment": points})


def test_compare_rho_growth_beyond_tolerance(small_reports):
    baseline = load_report(small_reports["baseline"])
    transition = next(p for p in baseline.alignment if p.stage == "transition")
    grown = _with_transition_rho(baseline, transition.rho + 0.05)

    failed = compare_reports(baseline, grown, rho_tolerance=0.01)
    assert [c.name for c in failed.regressions] == ["rho"]
    passed = compare_reports(baseline, grown, rho_tolerance=0.1)
    assert passed.regressions == []
    shrunk = compare_reports(grown, baseline, rho_tolerance=0.0)
    assert shrunk.regressions == []


def _with_final_loss(report: Report, final_train_loss: float) -> Report:
    ee = report.training.ee.model_copy(update={"final_train_loss": final_train_loss})
    return report.model_copy(update={"training": report.training.model_copy(update={"ee": ee})})


def test_compare_ee_stops_converging(small_reports):
    report = load_report(small_reports["baseline"])
    ratio = report.settings["confirm_ratio"]
    at_transition = report.training.ee.loss_at_transition
    converged = _with_final_loss(report, 0.5 * ratio * at_transition)
    stuck = _with_final_loss(report, 0.9 * at_transition)

    assert [c.name for c in compare_reports(converged, stuck).regressions] == ["ee-convergence"]
    assert compare_reports(stuck, converged).regressions == []
    assert compare_reports(stuck, stuck).regressions == []


def test_compare_without_training_skips_convergence(small_reports):
    baseline = load_report(small_reports["baseline"])
    analysis_only = baseline.model_copy(update={"training": None})
    comparison = compare_reports(baseline, analysis_only)
    statuses = {c.name: c.status for c in comparison.checks}
    assert statuses["ee-convergence"] == "skipped"


def test_compare_verdict_order(small_reports):
    baseline = load_report(small_reports["baseline"])
    labels = ["aligned", "misaligned", "structure-fails"]
    for i, before in enumerate(labels):
        for j, after in enumerate(labels):
            first = baseline.model_copy(update={"verdict": baseline.verdict.model_copy(update={"label": before})})
            second = baseline.model_copy(update={"verdict": baseline.verdict.model_copy(update={"label": after})})
            verdict = next(c for c in compare_reports(first, second).checks if c.name == "verdict")
            assert (verdict.status == "failed") == (j > i), (before, after)


def test_compare_rejects_negative_tolerance(small_reports):
    result = runner.invoke(app, ["compare", str(small_reports["baseline"]), str(small_reports["same"]), "--rho-tolerance", "-1"])
    assert result.exit_code == 2
    assert "--rho-tolerance" in result.output

