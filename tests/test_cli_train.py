"""`advisor train` and the training options of `advisor check`, through CliRunner and real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from tests.factories import write_model_file

runner = CliRunner()
REPOSITORY = Path(__file__).resolve().parents[1]


EPOCHS = 30


def train_args(model: str, out: Path, checkpoints: Path) -> list[str]:
    # Many short epochs of a small MLP leave a wide window for the kill during exploitation.
    return ["train", model, "--data", "digits", "--epochs", str(EPOCHS), "--explore-epochs", "3", "--checkpoint-dir",
            str(checkpoints), "--out", str(out), "--quiet", "--seed", "4", "--schedule", "cosine"]


def epoch_figures(report_path: Path) -> list[list[float]]:
    ee = json.loads(report_path.read_text())["training"]["ee"]
    return [[e["epoch"], e["train_loss"], e["train_accuracy"], e["test_loss"], e["test_accuracy"]] for e in ee["epochs"]]


def test_train_writes_report_with_training(tmp_path):
    model = write_model_file(tmp_path)
    result = runner.invoke(app, ["train", f"{model}:DigitsMLP", "--framework", "base", "--epochs", "2", "--explore-epochs", "1",
                                 "--out", str(tmp_path / "report"), "--quiet"])

    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["training"]["ee"] is None
    assert [e["epoch"] for e in report["training"]["base"]["epochs"]] == [0, 1, 2]
    assert (tmp_path / "report" / "report.md").exists()


def test_train_certified_mode(tmp_path):
    model = write_model_file(tmp_path)
    result = runner.invoke(app, ["train", f"{model}:DigitsMLP", "--mode", "certified", "--epochs", "2", "--explore-epochs", "1",
                                 "--certified-steps", "5", "--out", str(tmp_path / "report"), "--quiet"])

    assert result.exit_code == 0, result.output
    ee = json.loads((tmp_path / "report" / "report.json").read_text())["training"]["ee"]
    assert ee["mode"] == "certified"
    assert ee["certificate"]["method"] == "exact"
    assert len(ee["steps"]) == 6
    assert ee["bound_violations"] == 0


@pytest.mark.slow
def test_killed_train_resumes_to_same_figures(tmp_path):
    """SIGKILL a training subprocess during exploitation, resume it, and compare with an uninterrupted run."""
    model = f"{write_model_file(tmp_path)}:DigitsMLP"
    whole = runner.invoke(app, train_args(model, tmp_path / "whole", tmp_path / "whole-checkpoints"))
    assert whole.exit_code == 0, whole.output

    checkpoints = tmp_path / "checkpoints"
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "cli.main", *train_args(model, tmp_path / "killed", checkpoints)]
    process = subprocess.Popen(command, cwd=REPOSITORY, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = checkpoints / "checkpoint.pt"
    deadline = time.monotonic() + 120
    try:
        # Wait for the first exploitation checkpoint; the file is replaced atomically, so it can be read at any time.
        while time.monotonic() < deadline and process.poll() is None:
            if checkpoint.exists() and torch.load(checkpoint, weights_only=True)["phase"] == "exploit":
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["phase"] == "exploit"
    assert saved["epoch"] < EPOCHS
    assert not (tmp_path / "killed" / "report.json").exists()

    resumed = subprocess.run([*command, "--resume"], cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    # The uninterrupted run ran in this process, possibly with another number
    # of torch threads than the subprocesses, so sums may differ in the last bits.
    killed, whole_figures = epoch_figures(tmp_path / "killed" / "report.json"), epoch_figures(tmp_path / "whole" / "report.json")
    assert len(killed) == len(whole_figures)
    for row, expected in zip(killed, whole_figures):
        assert row == pytest.approx(expected, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("command", ["check", "train"])
@pytest.mark.parametrize(("options", "named"), [
    (["--optimizer", "lion"], "--optimizer"),
    (["--lr", "-0.1"], "--lr"),
    (["--schedule", "linear"], "--schedule"),
    (["--warmup-epochs", "4"], "--warmup-epochs"),
    (["--schedule", "step", "--lr-step-epochs", "5"], "--lr-step-epochs"),
    (["--mode", "fast"], "--mode"),
    (["--explore-epochs", "3"], "--explore-epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--crop-padding", "-2"], "--crop-padding"),
    (["--feature-lr", "0"], "--feature-lr"),
])
def test_invalid_training_option_exits_2(tmp_path, command, options, named):
    result = runner.invoke(app, [command, "--epochs", "3", "--explore-epochs", "1", "--out", str(tmp_path / "report"), "--quiet", *options])

    assert result.exit_code == 2, result.output
    assert named in result.output
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize(("text", "named"), [
    ("lr = 0.1\nlearning_rate = 0.2\n", "learning_rate"),
    ("lr = \"fast\"\n", "lr"),
    ("flip = 1\n", "flip"),
    ("epochs = 3\nexplore_epochs = 5\n", "--explore-epochs"),
    ("optimizer = \"lion\"\n", "--optimizer"),
    ("lr = [0.1\n", "--config"),
])
@pytest.mark.parametrize("command", ["check", "train"])
def test_invalid_config_file_exits_2(tmp_path, command, text, named):
    config = tmp_path / "training.toml"
    config.write_text(text)
    result = runner.invoke(app, [command, "--config", str(config), "--out", str(tmp_path / "report"), "--quiet"])

    assert result.exit_code == 2, result.output
    assert named in result.output
    assert not (tmp_path / "report").exists()


def test_config_file_sets_and_options_override(tmp_path):
    model = write_model_file(tmp_path)
    config = tmp_path / "training.toml"
    config.write_text('epochs = 2\nexplore-epochs = 1\nschedule = "cosine"\nlr = 0.02\noptimizer = "adamw"\n')
    result = runner.invoke(app, ["train", f"{model}:DigitsMLP", "--config", str(config), "--lr", "0.01",
                                 "--out", str(tmp_path / "report"), "--quiet"])

    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    algorithm = report["training"]["algorithm"]
    assert algorithm["optimizer"] == "adamw"
    assert algorithm["lr"] == 0.01
    assert algorithm["schedule"]["name"] == "cosine"
    assert report["training"]["ee"]["epochs"][-1]["epoch"] == 2


def test_resume_without_checkpoint_dir_exits_2(tmp_path):
    result = runner.invoke(app, ["train", "--resume", "--out", str(tmp_path / "report"), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "--checkpoint-dir" in result.output


def test_check_certified_mode(tmp_path):
    model = write_model_file(tmp_path)
    result = runner.invoke(app, ["check", f"{model}:DigitsMLP", "--mode", "certified", "--epochs", "2", "--explore-epochs", "1",
                                 "--certified-steps", "4", "--max-samples", "32", "--out", str(tmp_path / "report"), "--quiet"])

    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    training = report["training"]
    assert training["ee"]["mode"] == "certified"
    assert training["ee"]["p"] == 8 * report["data"]["n_train"]
    assert 2 <= len(training["ee"]["steps"]) <= 5
    assert training["base"]["epochs"][-1]["epoch"] == 2
