"""Loading every dataset source from real files, sampling and splitting."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from advisor.data import analysis_indices, load_dataset, load_raw
from advisor.data.bundle import RawDataset
from advisor.data.lazy import ImageFiles, RowSubset
from advisor.data.prepare import input_statistics, normalize, prepare_dataset, split_train_test
from advisor.errors import DataError, UnknownChoiceError, UsageError
from tests.data_factories import (
    pattern_images,
    write_cifar10,
    write_cifar100,
    write_image_folder,
    write_mnist_folder,
    write_svhn,
)

MNIST_T10K = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "mnist-t10k"

# Examples per digit 0..9 in the 10,000-image MNIST test set.
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# --- MNIST and Fashion-MNIST ---------------------------------------------------


@pytest.mark.skipif(not MNIST_T10K.is_dir(), reason=f"the MNIST test files are not at {MNIST_T10K}")
def test_mnist_t10k_class_counts():
    raw = load_raw(f"mnist:{MNIST_T10K}")

    assert raw.x.shape == (10_000, 1, 28, 28)
    assert raw.x_test is None
    assert np.bincount(raw.y, minlength=10).tolist() == MNIST_TEST_COUNTS


@pytest.mark.skipif(not MNIST_T10K.is_dir(), reason=f"the MNIST test files are not at {MNIST_T10K}")
def test_mnist_t10k_seeded_split():
    dataset = load_dataset(f"mnist:{MNIST_T10K}", seed=3)

    assert (dataset.n_train, dataset.n_test) == (8000, 2000)
    train_counts = np.bincount(dataset.labels_train, minlength=10)
    test_counts = np.bincount(dataset.labels_test, minlength=10)
    assert (train_counts + test_counts).tolist() == MNIST_TEST_COUNTS
    # Stratified: every class keeps its 20 % share in the test split, to one example.
    assert np.abs(test_counts - np.array(MNIST_TEST_COUNTS) * 0.2).max() <= 1


def test_fashion_mnist_folder(tmp_path):
    write_mnist_folder(tmp_path, n_train=30, n_test=20)

    dataset = load_dataset(f"fashion-mnist:{tmp_path}", seed=0)

    assert dataset.class_names[0] == "T-shirt/top"
    assert dataset.class_names[9] == "Ankle boot"
    assert (dataset.n_train, dataset.n_test) == (30, 20)
    assert dataset.input_shape == (1, 28, 28)
    assert dataset.split_note == "the source's own train/test split"


# --- CIFAR and SVHN --------------------------------------------------------------


@pytest.mark.parametrize("use_parent", [True, False])
def test_cifar10_batches(tmp_path, use_parent):
    folder = write_cifar10(tmp_path, n_per_batch=4, n_test=10)
    path = tmp_path if use_parent else folder

    raw = load_raw(f"cifar10:{path}")

    assert raw.x.shape == (20, 3, 32, 32)
    assert raw.x_test.shape == (10, 3, 32, 32)
    assert raw.class_names[3] == "cat"
    # The first 1,024 bytes of a row are the red plane in row-major order.
    first = pattern_images(4, 3, 32, 32, seed=1)[0]
    assert np.array_equal(raw.x[0], first)
    assert raw.y[:4].tolist() == [4, 5, 6, 7]


def test_cifar100_fine_labels(tmp_path):
    write_cifar100(tmp_path, n_train=200, n_test=100)

    dataset = load_dataset(f"cifar100:{tmp_path}", seed=0)

    assert dataset.n_outputs == 100
    assert dataset.class_names[:2] == ["fine0", "fine1"]
    assert dataset.class_counts()["fine42"] == 2
    assert (dataset.n_train, dataset.n_test) == (200, 100)


def test_svhn_label_ten_is_zero(tmp_path):
    write_svhn(tmp_path, n_train=20, n_test=10)

    raw = load_raw(f"svhn:{tmp_path}")

    # Stored labels are 1..10 for examples 0..9; 10 stands for the digit 0.
    assert raw.y[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    assert raw.x.shape == (20, 3, 32, 32)
    assert np.array_equal(raw.x[5], pattern_images(20, 3, 32, 32, seed=3)[5])
    assert raw.x_test.shape == (10, 3, 32, 32)


# --- Image folders ---------------------------------------------------------------


def test_imagefolder_reads_lazily(tmp_path):
    written = write_image_folder(tmp_path, ["cat", "dog"], per_class=3, size=(6, 5))

    raw = load_raw(f"imagefolder:{tmp_path}")

    assert isinstance(raw.x, ImageFiles)
    assert raw.x.shape == (6, 3, 5, 6)
    assert raw.class_names == ["cat", "dog"]
    assert raw.y.tolist() == [0, 0, 0, 1, 1, 1]
    dog_first = written[tmp_path / "dog" / "000.png"]
    assert np.array_equal(raw.x[3], dog_first.transpose(2, 0, 1))


def test_imagefolder_decodes_only_indexed_files(tmp_path):
    write_image_folder(tmp_path, ["cat", "dog"], per_class=2)
    raw = load_raw(f"imagefolder:{tmp_path}")
    # Damage one file after indexing: only reading that example may fail.
    (tmp_path / "dog" / "001.png").write_bytes(b"not a png")

    assert raw.x[np.array([0, 1, 2])].shape == (3, 3, 5, 6)
    with pytest.raises(DataError) as caught:
        raw.x[3]
    assert caught.value.path == str(tmp_path / "dog" / "001.png")


def test_imagefolder_train_test_gray(tmp_path):
    write_image_folder(tmp_path / "train", ["a", "b", "c"], per_class=4, size=(4, 4), mode="L")
    write_image_folder(tmp_path / "test", ["a", "b"], per_class=2, size=(4, 4), mode="L")

    dataset = load_dataset(f"imagefolder:{tmp_path}", seed=0)

    assert dataset.input_shape == (1, 4, 4)
    assert (dataset.n_train, dataset.n_test) == (12, 4)
    assert dataset.labels_test.tolist() == [0, 0, 1, 1]


# --- npz, pt and csv files -------------------------------------------------------


def _features_and_labels(n_examples: int = 40, n_features: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return rng.normal(size=(n_examples, n_features)).astype(np.float32), np.arange(n_examples) % 4


def test_npz_savez_is_memory_mapped(tmp_path):
    x, y = _features_and_labels()
    np.savez(tmp_path / "data.npz", x=x, y=y)

    raw = load_raw(f"npz:{tmp_path / 'data.npz'}")

    assert isinstance(raw.x, np.memmap)
    assert np.array_equal(np.asarray(raw.x), x)


def test_npz_compressed_matches_uncompressed(tmp_path):
    x, y = _features_and_labels()
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    np.savez_compressed(tmp_path / "packed.npz", x=x, y=y)

    plain = load_dataset(f"npz:{tmp_path / 'plain.npz'}", seed=1)
    packed = load_dataset(f"npz:{tmp_path / 'packed.npz'}", seed=1)

    assert plain.task == "classification"
    assert plain.class_names == ["0", "1", "2", "3"]
    assert np.array_equal(plain.x_train, packed.x_train)
    assert np.array_equal(plain.labels_test, packed.labels_test)


def test_npz_test_split_and_classes(tmp_path):
    x, y = _features_and_labels()
    np.savez(tmp_path / "data.npz", x=x[:30], y=y[:30], x_test=x[30:], y_test=y[30:], classes=np.array(["w", "x", "y", "z"]))

    dataset = load_dataset(f"npz:{tmp_path / 'data.npz'}", seed=0)

    assert dataset.class_names == ["w", "x", "y", "z"]
    assert (dataset.n_train, dataset.n_test) == (30, 10)


def test_npz_target_key(tmp_path):
    x, y = _features_and_labels()
    np.savez(tmp_path / "data.npz", x=x, label=y)

    dataset = load_dataset(f"npz:{tmp_path / 'data.npz'}", seed=0, target="label")

    assert dataset.n_outputs == 4


@pytest.mark.parametrize("layout", ["dict", "tensordataset", "tuple"])
def test_pt_layouts(tmp_path, layout):
    x, y = _features_and_labels()
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    content = {"dict": {"x": inputs, "y": targets}, "tensordataset": TensorDataset(inputs, targets), "tuple": (inputs, targets)}[layout]
    torch.save(content, tmp_path / "data.pt")

    dataset = load_dataset(f"pt:{tmp_path / 'data.pt'}", seed=0)

    assert dataset.task == "classification"
    assert dataset.n_train + dataset.n_test == 40
    assert dataset.input_shape == (3,)


def test_pt_inputs_stay_memory_mapped(tmp_path):
    x, y = _features_and_labels()
    torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, tmp_path / "data.pt")

    raw = load_raw(f"pt:{tmp_path / 'data.pt'}")

    assert isinstance(raw.x, RowSubset)
    assert np.array_equal(raw.x[np.arange(40)], x)


def test_pt_regression_standardized(tmp_path):
    x, _ = _features_and_labels()
    targets = (x @ np.array([1.0, -2.0, 0.5], dtype=np.float32))[:, None] * 3.0 + 7.0
    torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(targets)}, tmp_path / "data.pt")

    dataset = load_dataset(f"pt:{tmp_path / 'data.pt'}", seed=0)

    assert dataset.task == "regression"
    assert dataset.n_outputs == 1
    assert abs(float(dataset.targets_train.mean())) < 1e-5
    assert abs(float(dataset.targets_train.std()) - 1.0) < 1e-5
    restored = dataset.targets_test[:, 0] * dataset.target_scale[0] + dataset.target_mean[0]
    _, _, _, y_test, _ = split_train_test(RawDataset(x=x, y=targets[:, 0], task="regression"), 0, 0.2)
    assert np.allclose(restored, y_test, atol=1e-4)


def test_csv_string_labels_last_column(tmp_path):
    lines = ["width,height,kind"] + [f"{i},{i % 3},{'spam' if i % 2 else 'ham'}" for i in range(20)]
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")

    dataset = load_dataset(f"csv:{tmp_path / 'table.csv'}", seed=0)

    assert dataset.task == "classification"
    assert dataset.class_names == ["ham", "spam"]
    assert dataset.input_shape == (2,)


def test_csv_target_by_name_and_position(tmp_path):
    lines = ["price,rooms,area"] + [f"{100.5 + 3 * i},{i % 4},{20 + i}" for i in range(20)]
    (tmp_path / "homes.csv").write_text("\n".join(lines) + "\n")

    by_name = load_dataset(f"csv:{tmp_path / 'homes.csv'}", seed=0, target="price")
    by_position = load_dataset(f"csv:{tmp_path / 'homes.csv'}", seed=0, target="0")

    assert by_name.task == "regression"
    assert by_name.target_mean == by_position.target_mean
    assert by_name.input_shape == (2,)


def test_csv_without_header(tmp_path):
    lines = [f"{i * 0.5},{i % 2}" for i in range(12)]
    (tmp_path / "plain.csv").write_text("\n".join(lines) + "\n")

    dataset = load_dataset(f"csv:{tmp_path / 'plain.csv'}", seed=0)

    assert dataset.class_names == ["0", "1"]
    assert dataset.n_train + dataset.n_test == 12


# --- Task inference ---------------------------------------------------------------


def test_task_inference_and_override(tmp_path):
    x, labels = _features_and_labels()
    np.savez(tmp_path / "ints.npz", x=x, y=labels)
    np.savez(tmp_path / "floats.npz", x=x, y=x[:, 0] * 2.5)

    assert load_dataset(f"npz:{tmp_path / 'ints.npz'}", seed=0).task == "classification"
    assert load_dataset(f"npz:{tmp_path / 'floats.npz'}", seed=0).task == "regression"
    overridden = load_dataset(f"npz:{tmp_path / 'ints.npz'}", seed=0, task="regression")
    assert overridden.task == "regression"
    assert overridden.n_outputs == 1


def test_task_ambiguous_asks_for_task(tmp_path):
    x, labels = _features_and_labels()
    np.savez(tmp_path / "whole.npz", x=x, y=labels.astype(np.float32))

    with pytest.raises(DataError, match="--task") as caught:
        load_dataset(f"npz:{tmp_path / 'whole.npz'}", seed=0)
    assert "whole numbers" in caught.value.problem
    assert load_dataset(f"npz:{tmp_path / 'whole.npz'}", seed=0, task="classification").n_outputs == 4


def test_task_unknown_value():
    with pytest.raises(UnknownChoiceError, match="classification, regression"):
        load_dataset("digits", seed=0, task="ranking")


# --- No network -------------------------------------------------------------------


def _write_every_source(root: Path) -> list[str]:
    write_mnist_folder(root / "mnist", n_train=20, n_test=10)
    write_cifar10(root / "c10")
    write_cifar100(root / "c100")
    write_svhn(root / "svhn")
    write_image_folder(root / "images", ["a", "b"], per_class=3)
    x, y = _features_and_labels()
    np.savez(root / "data.npz", x=x, y=y)
    torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, root / "data.pt")
    (root / "data.csv").write_text("\n".join(f"{i},{i % 2}" for i in range(12)) + "\n")
    return [
        "digits", f"mnist:{root / 'mnist'}", f"fashion-mnist:{root / 'mnist'}", f"cifar10:{root / 'c10'}",
        f"cifar100:{root / 'c100'}", f"svhn:{root / 'svhn'}", f"imagefolder:{root / 'images'}",
        f"npz:{root / 'data.npz'}", f"pt:{root / 'data.pt'}", f"csv:{root / 'data.csv'}",
    ]


def test_no_source_opens_a_socket(tmp_path, monkeypatch):
    from advisor.data import SOURCES

    specs = _write_every_source(tmp_path)
    assert sorted(spec.partition(":")[0] for spec in specs) == sorted(SOURCES)
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)

    for spec in specs:
        dataset = load_dataset(spec, seed=0)
        assert dataset.n_train > 0, spec
    assert attempts == []


# --- Sampling and splitting -------------------------------------------------------


def _imbalanced_raw() -> RawDataset:
    labels = np.repeat(np.arange(4), [50, 30, 15, 5])
    x = np.random.default_rng(0).normal(size=(labels.size, 2))
    return RawDataset(x=x, y=labels, task="classification", class_names=["a", "b", "c", "d"])


def _imbalanced_dataset(seed: int = 0):
    return prepare_dataset("test", _imbalanced_raw(), seed=seed, test_fraction=0.2)


def test_analysis_indices_counts_and_strata():
    dataset = _imbalanced_dataset()
    counts = np.bincount(dataset.labels_train, minlength=4)

    for n_samples in (1, 7, 33, 79):
        indices = analysis_indices(dataset, n_samples, seed=0)
        assert indices.size == n_samples
        assert np.unique(indices).size == n_samples
        assert np.all(np.diff(indices) > 0)
        taken = np.bincount(dataset.labels_train[indices], minlength=4)
        quotas = counts * n_samples / dataset.n_train
        assert np.all(np.abs(taken - quotas) < 1.0), (n_samples, taken, quotas)


def test_analysis_indices_seed_reproducible():
    dataset = _imbalanced_dataset()

    first = analysis_indices(dataset, 20, seed=11)
    again = analysis_indices(dataset, 20, seed=11)
    other = analysis_indices(dataset, 20, seed=12)

    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_analysis_indices_edges():
    dataset = _imbalanced_dataset()

    assert np.array_equal(analysis_indices(dataset, dataset.n_train + 5, seed=0), np.arange(dataset.n_train))
    with pytest.raises(UsageError):
        analysis_indices(dataset, 0, seed=0)


def test_analysis_indices_regression():
    x = np.random.default_rng(0).normal(size=(50, 2))
    dataset = prepare_dataset("test", RawDataset(x=x, y=x[:, 0] + 0.1, task=None), seed=0)

    indices = analysis_indices(dataset, 10, seed=4)

    assert indices.size == 10
    assert np.array_equal(indices, analysis_indices(dataset, 10, seed=4))


def test_seeded_split_reproducible():
    first, again, other = _imbalanced_dataset(0), _imbalanced_dataset(0), _imbalanced_dataset(1)

    assert np.array_equal(first.x_train, again.x_train)
    assert np.array_equal(first.labels_test, again.labels_test)
    assert (other.n_train, other.n_test) == (80, 20)
    assert not np.array_equal(first.x_test, other.x_test)
    # Stratified: 20 % of each class (50, 30, 15, 5) goes to the test split.
    assert np.bincount(first.labels_test, minlength=4).tolist() == [10, 6, 3, 1]


def test_split_of_memmap_stays_lazy(tmp_path):
    x, y = _features_and_labels()
    np.savez(tmp_path / "data.npz", x=x, y=y)
    raw = load_raw(f"npz:{tmp_path / 'data.npz'}")
    raw.task, raw.class_names = "classification", ["0", "1", "2", "3"]

    x_train, y_train, x_test, _, _ = split_train_test(raw, seed=0, test_fraction=0.25)

    assert isinstance(x_train, RowSubset)
    assert isinstance(x_test, RowSubset)
    assert np.array_equal(x_train[np.arange(len(x_train))], x[x_train.indices])
    assert y_train.shape == (30,)


def test_chunked_statistics_vs_numpy():
    images = pattern_images(23, 3, 4, 5).astype(np.float64)

    mean, std = input_statistics(images, chunk_rows=4)
    normalized = normalize(images, mean, std, chunk_rows=5)

    assert np.allclose(mean, images.mean(axis=(0, 2, 3)), rtol=1e-12)
    assert np.allclose(std, images.std(axis=(0, 2, 3)), rtol=1e-12)
    expected = (images - images.mean(axis=(0, 2, 3))[None, :, None, None]) / images.std(axis=(0, 2, 3))[None, :, None, None]
    assert np.allclose(normalized, expected, atol=1e-5)
