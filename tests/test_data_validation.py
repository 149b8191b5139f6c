"""Bad datasets are rejected before any computation, naming the file, the example and the fix."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from advisor.data import load_dataset
from advisor.errors import DataError
from tests.data_factories import cifar_batch, pattern_images, write_cifar10, write_image_folder, write_mnist_folder, write_svhn


def _features(n_examples: int = 20, n_features: int = 3) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n_examples, n_features))


def _load_error(spec: str, **options) -> DataError:
    with pytest.raises(DataError) as caught:
        load_dataset(spec, seed=0, **options)
    return caught.value


# --- Non-finite values ------------------------------------------------------------


def test_nan_input_in_npz(tmp_path):
    x = _features()
    x[7, 1] = np.nan
    np.savez(tmp_path / "data.npz", x=x, y=np.arange(20) % 2)

    error = _load_error(f"npz:{tmp_path / 'data.npz'}")

    assert error.index == 7
    assert error.path == str(tmp_path / "data.npz")
    assert "training example 7" in str(error)
    assert "NaN or infinite" in str(error)
    assert "Clean or drop" in error.fix


def test_infinite_input_in_csv_names_line(tmp_path):
    lines = ["a,b,label"] + [f"{i},{'inf' if i == 4 else i},{i % 2}" for i in range(10)]
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")

    error = _load_error(f"csv:{tmp_path / 'table.csv'}")

    # Example 4 is on line 6: one header line, lines count from 1.
    assert f"line 6 of {tmp_path / 'table.csv'}" in str(error)
    assert error.index == 4


def test_nan_regression_target_names_line(tmp_path):
    lines = ["a,price"] + [f"{i},{'nan' if i == 2 else i * 1.5}" for i in range(10)]
    (tmp_path / "prices.csv").write_text("\n".join(lines) + "\n")

    error = _load_error(f"csv:{tmp_path / 'prices.csv'}", task="regression")

    assert "line 4 of" in str(error)
    assert "NaN or infinite target" in str(error)


def test_nan_class_label(tmp_path):
    y = (np.arange(20) % 2).astype(np.float64)
    y[3] = np.nan
    np.savez(tmp_path / "data.npz", x=_features(), y=y)

    error = _load_error(f"npz:{tmp_path / 'data.npz'}", task="classification")

    assert error.index == 3
    assert "not a class label" in str(error)
    assert "--task regression" in error.fix


# --- Labels and classes -----------------------------------------------------------


def test_label_outside_declared_classes(tmp_path):
    y = np.arange(20) % 2
    y[11] = 2
    np.savez(tmp_path / "data.npz", x=_features(), y=y, classes=np.array(["cat", "dog"]))

    error = _load_error(f"npz:{tmp_path / 'data.npz'}")

    assert error.index == 11
    assert "outside the 2 declared classes" in str(error)
    assert "add the class" in error.fix


def test_mnist_label_outside_classes(tmp_path):
    labels = np.arange(30) % 10
    labels[17] = 12
    write_mnist_folder(tmp_path, n_train=30, n_test=20, labels=labels)

    error = _load_error(f"mnist:{tmp_path}")

    assert error.index == 17
    assert str(tmp_path) in str(error)


def test_svhn_label_outside_range(tmp_path):
    labels = np.arange(20) % 10 + 1
    labels[9] = 11
    write_svhn(tmp_path, n_train=20, n_test=10, train_labels=labels)

    error = _load_error(f"svhn:{tmp_path}")

    assert error.path == str(tmp_path / "train_32x32.mat")
    assert error.index == 9
    assert "10" in error.fix


def test_empty_declared_class(tmp_path):
    np.savez(tmp_path / "data.npz", x=_features(), y=np.arange(20) % 2, classes=np.array(["a", "b", "never"]))

    error = _load_error(f"npz:{tmp_path / 'data.npz'}")

    assert "'never'" in str(error)
    assert "no training examples" in str(error)


def test_empty_class_folder(tmp_path):
    write_image_folder(tmp_path, ["a", "b"], per_class=2)
    (tmp_path / "c").mkdir()

    error = _load_error(f"imagefolder:{tmp_path}")

    assert error.path == str(tmp_path / "c")
    assert "contains no images" in str(error)


def test_single_class(tmp_path):
    np.savez(tmp_path / "data.npz", x=_features(), y=np.zeros(20, dtype=np.int64))

    error = _load_error(f"npz:{tmp_path / 'data.npz'}")

    assert "single class ('0')" in str(error)
    assert "at least two classes" in error.fix


def test_test_label_unknown_to_training(tmp_path):
    x = _features()
    np.savez(tmp_path / "data.npz", x=x[:14], y=np.arange(14) % 2, x_test=x[14:], y_test=np.array([0, 1, 0, 5, 1, 0]))

    error = _load_error(f"npz:{tmp_path / 'data.npz'}")

    assert error.index == 3
    assert "test example 3" in str(error)


def test_ambiguous_integer_targets(tmp_path):
    np.savez(tmp_path / "data.npz", x=_features(), y=np.arange(20) * 7)

    error = _load_error(f"npz:{tmp_path / 'data.npz'}")

    assert "20 distinct integers" in str(error)
    assert "--task" in error.fix


def test_string_targets_for_regression(tmp_path):
    lines = ["a,kind"] + [f"{i},{'x' if i % 2 else 'y'}" for i in range(10)]
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")

    error = _load_error(f"csv:{tmp_path / 'table.csv'}", task="regression")

    assert "line 2 of" in str(error)
    assert "not a number" in str(error)


# --- Lengths and shapes -----------------------------------------------------------


def test_npz_length_mismatch(tmp_path):
    np.savez(tmp_path / "data.npz", x=_features(20), y=np.arange(19) % 2)

    error = _load_error(f"npz:{tmp_path / 'data.npz'}")

    assert "20 inputs but 19 targets" in str(error)
    assert error.path == str(tmp_path / "data.npz")


def test_pt_length_mismatch(tmp_path):
    torch.save({"x": torch.zeros(10, 2), "y": torch.arange(12) % 2}, tmp_path / "data.pt")

    error = _load_error(f"pt:{tmp_path / 'data.pt'}")

    assert "10 inputs but 12 targets" in str(error)


def test_cifar_batch_length_mismatch(tmp_path):
    folder = write_cifar10(tmp_path)
    with open(folder / "data_batch_2", "wb") as handle:
        pickle.dump(cifar_batch(pattern_images(4, 3, 32, 32), [0, 1, 2], b"labels"), handle)

    error = _load_error(f"cifar10:{folder}")

    assert error.path == str(folder / "data_batch_2")
    assert "4 images but 3 labels" in str(error)


def test_imagefolder_mixed_sizes(tmp_path):
    from PIL import Image

    write_image_folder(tmp_path, ["a", "b"], per_class=2, size=(6, 5))
    Image.fromarray(np.zeros((7, 6, 3), dtype=np.uint8)).save(tmp_path / "b" / "999.png")

    error = _load_error(f"imagefolder:{tmp_path}")

    assert error.path == str(tmp_path / "b" / "999.png")
    assert "6x7 pixels" in str(error)
    assert "6x5" in str(error)
    assert "Resize" in error.fix


def test_csv_ragged_and_text_features(tmp_path):
    (tmp_path / "ragged.csv").write_text("a,b,y\n1,2,0\n3,1\n")
    (tmp_path / "text.csv").write_text("a,b,y\n1,2,0\n3,four,1\n")

    ragged = _load_error(f"csv:{tmp_path / 'ragged.csv'}")
    text = _load_error(f"csv:{tmp_path / 'text.csv'}")

    assert "line 3" in str(ragged)
    assert "2 fields, expected 3" in str(ragged)
    assert "line 3" in str(text)
    assert "'four' is not a number" in str(text)
    assert "--target" in text.fix


# --- Missing and corrupt files ----------------------------------------------------


def test_missing_cifar_names_expected_files(tmp_path):
    error = _load_error(f"cifar10:{tmp_path}")

    assert "data_batch_1" in error.fix
    assert "batches.meta" in error.fix
    assert "never downloads" in error.fix


def test_missing_svhn_names_expected_files(tmp_path):
    error = _load_error(f"svhn:{tmp_path}")

    assert "train_32x32.mat" in error.fix


def test_missing_path(tmp_path):
    error = _load_error(f"npz:{tmp_path / 'absent.npz'}")

    assert "does not exist" in str(error)


@pytest.mark.parametrize("kind", ["npz", "pt", "csv"])
def test_corrupt_array_files(tmp_path, kind):
    path = tmp_path / f"data.{kind}"
    path.write_bytes(b"\x00\xff" * 50)

    error = _load_error(f"{kind}:{path}")

    assert error.path == str(path)


def test_npz_missing_array(tmp_path):
    np.savez(tmp_path / "data.npz", inputs=_features(), y=np.arange(20) % 2)

    error = _load_error(f"npz:{tmp_path / 'data.npz'}")

    assert "no 'x' entry" in str(error)
    assert "inputs, y" in str(error)


def test_npz_object_array_rejected(tmp_path):
    labels = np.array([{"label": i % 2} for i in range(20)], dtype=object)
    np.savez(tmp_path / "data.npz", x=_features(), y=labels)

    error = _load_error(f"npz:{tmp_path / 'data.npz'}")

    assert "without pickle" in str(error)


class _WritesFile:
    """Pickles to a call of `open(path, "w")`, to show that unpickling would run code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_cifar_pickle_cannot_run_code(tmp_path):
    folder = write_cifar10(tmp_path)
    marker = tmp_path / "unpickled.txt"
    with open(folder / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": _WritesFile(marker), b"labels": [0]}, handle)

    error = _load_error(f"cifar10:{folder}")

    assert "is not allowed" in str(error)
    assert not marker.exists()


def test_pt_with_code_rejected(tmp_path):
    marker = tmp_path / "unpickled.txt"
    torch.save({"x": torch.zeros(4, 2), "y": _WritesFile(marker)}, tmp_path / "data.pt")

    error = _load_error(f"pt:{tmp_path / 'data.pt'}")

    assert "weights_only=True" in str(error)
    assert not marker.exists()


def test_target_option_rejected_for_fixed_labels(tmp_path):
    write_mnist_folder(tmp_path, n_train=20, n_test=10)

    error = _load_error(f"mnist:{tmp_path}", target="label")

    assert "Drop --target" in error.fix


def test_regression_rejected_for_class_sources():
    error = _load_error("digits", task="regression")

    assert "provides class labels" in str(error)
