"""Output paths, config files, model files and checkpoints that cannot be used: exit 2 with a message, no traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from typer.testing import CliRunner

from cli.main import app
from tests.factories import write_model_file

runner = CliRunner()
QUICK = ["--no-confirm", "--max-samples", "48", "--quiet"]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def assert_usage_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def small_report(tmp_path: Path) -> Path:
    model = write_model_file(tmp_path)
    out = tmp_path / "first"
    result = invoke("check", f"{model}:DigitsMLP", "--out", str(out), *QUICK)
    assert result.exit_code == 0, result.output
    return out / "report.json"


def test_check_out_is_a_file(tmp_path):
    model = write_model_file(tmp_path)
    existing_file = tmp_path / "taken"
    existing_file.write_text("keep me")

    result = invoke("check", f"{model}:DigitsMLP", "--out", str(existing_file), *QUICK)

    assert_usage_error(result, "--out", "existing file")
    assert existing_file.read_text() == "keep me"


def test_check_out_below_a_file(tmp_path):
    model = write_model_file(tmp_path)
    (tmp_path / "taken").write_text("")

    result = invoke("check", f"{model}:DigitsMLP", "--out", str(tmp_path / "taken" / "report"), *QUICK)

    assert_usage_error(result, "--out", "is a file")


def test_report_out_is_a_file(tmp_path):
    report = small_report(tmp_path)
    existing_file = tmp_path / "taken"
    existing_file.write_text("")

    result = invoke("report", str(report), "--out", str(existing_file))

    assert_usage_error(result, "--out")


def test_compare_junit_below_a_file(tmp_path):
    report = small_report(tmp_path)
    (tmp_path / "taken").write_text("")

    result = invoke("compare", str(report), str(report), "--junit", str(tmp_path / "taken" / "checks.xml"))

    assert_usage_error(result, "--junit")


def test_train_checkpoint_dir_is_a_file(tmp_path):
    model = write_model_file(tmp_path)
    existing_file = tmp_path / "taken"
    existing_file.write_text("")

    result = invoke("train", f"{model}:DigitsMLP", "--checkpoint-dir", str(existing_file), "--epochs", "2", "--explore-epochs", "1",
                    "--quiet", "--out", str(tmp_path / "out"))

    assert_usage_error(result, "--checkpoint-dir")
    assert not (tmp_path / "out").exists()


def test_empty_format(tmp_path):
    model = write_model_file(tmp_path)

    result = invoke("check", f"{model}:DigitsMLP", "--format", "", "--out", str(tmp_path / "out"), *QUICK)

    assert_usage_error(result, "--format", "at least one of")


def test_config_is_a_folder(tmp_path):
    model = write_model_file(tmp_path)

    result = invoke("check", f"{model}:DigitsMLP", "--config", str(tmp_path), "--out", str(tmp_path / "out"), *QUICK)

    assert_usage_error(result, "--config", "a readable TOML file")


def test_constructor_raises(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import torch\n\n\nclass Broken(torch.nn.Module):\n    def __init__(self):\n"
                    "        super().__init__()\n        raise RuntimeError('boom in constructor')\n")

    result = invoke("check", f"{path}:Broken", "--out", str(tmp_path / "out"), *QUICK)

    assert_usage_error(result, "raised RuntimeError", "boom in constructor")
    assert not (tmp_path / "out").exists()


def test_pickle_with_missing_class_module(tmp_path):
    source = tmp_path / "vanishing_models.py"
    source.write_text("import torch\n\n\nclass Net(torch.nn.Sequential):\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import vanishing_models

        torch.save(vanishing_models.Net(torch.nn.Flatten(), torch.nn.Linear(64, 10)), tmp_path / "net.pt")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("vanishing_models", None)
    source.unlink()

    result = invoke("check", str(tmp_path / "net.pt"), "--trust-pickle", "--out", str(tmp_path / "out"), *QUICK)

    assert_usage_error(result, "unpickling", "ModuleNotFoundError")


def test_resume_from_corrupt_checkpoint(tmp_path):
    model = write_model_file(tmp_path)
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "checkpoint.pt").write_bytes(b"not a checkpoint")

    result = invoke("train", f"{model}:DigitsMLP", "--checkpoint-dir", str(checkpoints), "--resume", "--epochs", "2",
                    "--explore-epochs", "1", "--quiet", "--out", str(tmp_path / "out"))

    assert_usage_error(result, "--resume", "loading it failed")


def test_diverging_training(tmp_path):
    model = write_model_file(tmp_path)

    result = invoke("check", f"{model}:DigitsMLP", "--lr", "1e6", "--epochs", "2", "--explore-epochs", "1", "--max-samples", "48",
                    "--quiet", "--out", str(tmp_path / "out"))

    assert_usage_error(result, "diverged", "--lr")
    assert not (tmp_path / "out").exists()

