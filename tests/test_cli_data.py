"""`advisor check --data ...` on every dataset format, and exit code 2 for bad data.

The runs use a two-layer model from a file and `--no-confirm`, so each takes
a few seconds on two CPU cores. The default residual CNN took 46 s on the
20 CIFAR-10 images of these tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from tests.data_factories import write_cifar10, write_cifar100, write_image_folder, write_mnist_folder, write_svhn

TINY_MODEL = '''
from torch import nn


class Tiny(nn.Module):
    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_features, 4), nn.ReLU())
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.head(self.body(x))
'''

# Wide enough that rich does not wrap file paths inside error messages.
WIDE_TERMINAL = {"COLUMNS": "400"}


def _run_check(tmp_path: Path, data: str, in_features: int, *options: str):
    model_file = tmp_path / "tiny.py"
    model_file.write_text(TINY_MODEL)
    arguments = [
        "check", f"{model_file}:Tiny", "--model-arg", f"in_features={in_features}", "--data", data,
        "--no-confirm", "--max-samples", "8", "--out", str(tmp_path / "report"), "--format", "json", "--quiet", *options,
    ]
    return CliRunner().invoke(app, arguments, env=WIDE_TERMINAL)


def _features_and_labels() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    return rng.normal(size=(40, 3)).astype(np.float32), np.arange(40) % 4


def _write_source(kind: str, root: Path) -> tuple[str, int]:
    """Write a small dataset of `kind` under `root`; return its --data spec and input size."""
    if kind == "digits":
        return "digits", 64
    if kind in ("mnist", "fashion-mnist"):
        write_mnist_folder(root / "idx", n_train=20, n_test=10)
        return f"{kind}:{root / 'idx'}", 784
    if kind == "cifar10":
        write_cifar10(root)
        return f"cifar10:{root}", 3072
    if kind == "cifar100":
        # 100 classes make every stage 10 times wider, so keep one image per class.
        write_cifar100(root, n_train=100, n_test=20)
        return f"cifar100:{root}", 3072
    if kind == "svhn":
        write_svhn(root / "svhn")
        return f"svhn:{root / 'svhn'}", 3072
    if kind == "imagefolder":
        write_image_folder(root / "images", ["a", "b"], per_class=6, size=(6, 5))
        return f"imagefolder:{root / 'images'}", 90
    x, y = _features_and_labels()
    if kind == "npz":
        np.savez(root / "data.npz", x=x, y=y)
        return f"npz:{root / 'data.npz'}", 3
    if kind == "pt":
        torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, root / "data.pt")
        return f"pt:{root / 'data.pt'}", 3
    lines = ["a,b,c,label"] + [f"{a},{b},{c},{label}" for (a, b, c), label in zip(x.tolist(), y.tolist())]
    (root / "data.csv").write_text("\n".join(lines) + "\n")
    return f"csv:{root / 'data.csv'}", 3


FORMATS = ["digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "imagefolder", "npz", "pt", "csv"]


@pytest.mark.parametrize("kind", FORMATS)
def test_check_loads_format(tmp_path, kind):
    data, in_features = _write_source(kind, tmp_path)

    # ρ_S only: the exact ρ on the 100 outputs of CIFAR-100 took 16 s on two CPU cores.
    result = _run_check(tmp_path, data, in_features, "--rho-method", "features")

    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["data"]["spec"] == data
    assert report["data"]["task"] == "classification"
    assert report["data"]["n_analysis"] == min(8, report["data"]["n_train"])
    assert sum(report["data"]["class_counts"].values()) == report["data"]["n_train"]


def test_check_regression_with_target(tmp_path):
    rng = np.random.default_rng(4)
    features = rng.normal(size=(30, 2))
    lines = ["price,a,b"] + [f"{3 * a - b + 10:.6f},{a:.6f},{b:.6f}" for a, b in features.tolist()]
    (tmp_path / "homes.csv").write_text("\n".join(lines) + "\n")

    result = _run_check(tmp_path, f"csv:{tmp_path / 'homes.csv'}", 2, "--target", "price")

    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["data"]["task"] == "regression"
    assert report["data"]["n_outputs"] == 1


def test_check_task_option(tmp_path):
    x, y = _features_and_labels()
    np.savez(tmp_path / "data.npz", x=x, y=y.astype(np.float32))

    ambiguous = _run_check(tmp_path, f"npz:{tmp_path / 'data.npz'}", 3)
    chosen = _run_check(tmp_path, f"npz:{tmp_path / 'data.npz'}", 3, "--task", "classification")

    assert ambiguous.exit_code == 2
    assert "--task" in ambiguous.output
    assert chosen.exit_code == 0, chosen.output


def _bad_npz(root: Path, problem: str) -> str:
    x, y = _features_and_labels()
    if problem == "nan input":
        x[5, 0] = np.nan
    if problem == "length mismatch":
        y = y[:-1]
    if problem == "single class":
        y = np.zeros_like(y)
    if problem == "undeclared label":
        np.savez(root / "data.npz", x=x, y=y, classes=np.array(["a", "b", "c"]))
        return f"npz:{root / 'data.npz'}"
    np.savez(root / "data.npz", x=x, y=y)
    return f"npz:{root / 'data.npz'}"


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("nan input", "training example 5 of"),
        ("length mismatch", "40 inputs but 39 targets"),
        ("single class", "single class"),
        ("undeclared label", "outside the 3 declared classes"),
    ],
)
def test_check_bad_npz_exits_2(tmp_path, problem, message):
    data = _bad_npz(tmp_path, problem)

    result = _run_check(tmp_path, data, 3)

    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "data.npz" in result.output
    assert not (tmp_path / "report").exists()


def test_check_mixed_image_sizes_exits_2(tmp_path):
    from PIL import Image

    write_image_folder(tmp_path / "images", ["a", "b"], per_class=2, size=(6, 5))
    Image.fromarray(np.zeros((9, 9, 3), dtype=np.uint8)).save(tmp_path / "images" / "a" / "big.png")

    result = _run_check(tmp_path, f"imagefolder:{tmp_path / 'images'}", 90)

    assert result.exit_code == 2, result.output
    assert "big.png" in result.output
    assert "Resize" in result.output
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--task", "ranking"], "unknown --task 'ranking'"),
        (["--target", "label"], "Drop --target"),
    ],
)
def test_check_bad_data_options_exit_2(tmp_path, options, message):
    result = _run_check(tmp_path, "digits", 64, *options)

    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "report").exists()


def test_check_missing_dataset_exits_2(tmp_path):
    result = _run_check(tmp_path, f"cifar10:{tmp_path / 'absent'}", 3072)

    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert not (tmp_path / "report").exists()


def test_cifar10_with_resnet18_reaches_verdict(tmp_path):
    write_cifar10(tmp_path / "cifar")
    out = tmp_path / "report"
    arguments = [
        "check", "torchvision:resnet18", "--data", f"cifar10:{tmp_path / 'cifar'}", "--epochs", "1", "--explore-epochs", "0",
        "--max-samples", "8", "--out", str(out), "--format", "json", "--quiet",
    ]
    result = CliRunner().invoke(app, arguments, env=WIDE_TERMINAL)

    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["n_params"] > 11_000_000
    assert report["data"]["n_train"] == 20
    assert report["structure"]["holds"] is True
    assert report["verdict"]["label"] in ("aligned", "misaligned")
    assert report["training"]["ee"]["certificate"]["sigma_min"] > 0
