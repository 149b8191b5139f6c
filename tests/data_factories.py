"""Small dataset files in the real on-disk formats, written for tests.

Images are seeded random bytes, so a test can regenerate them and check that
a loader put each pixel where the format specifies.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np


def pattern_images(n_images: int, channels: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Return seeded uint8 images of shape (N, C, H, W)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n_images, channels, height, width), dtype=np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX format (gzipped when `path` ends in .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as handle:
        handle.write(payload)


def write_mnist_folder(folder: Path, n_train: int, n_test: int, labels: np.ndarray | None = None) -> None:
    """Write train and t10k IDX files with labels cycling through 0..9 unless given."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, n_images in (("train", n_train), ("t10k", n_test)):
        images = pattern_images(n_images, 1, 28, 28, seed=n_images)[:, 0]
        split_labels = np.arange(n_images) % 10 if labels is None or stem == "t10k" else labels
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", np.asarray(split_labels, dtype=np.uint8))


def _dump(path: Path, content: object) -> None:
    with open(path, "wb") as handle:
        pickle.dump(content, handle)


def cifar_batch(images: np.ndarray, labels: list[int], labels_key: bytes) -> dict[bytes, object]:
    """Build a batch dict as in the CIFAR python archive: (N, 3072) rows, bytes keys."""
    return {b"batch_label": b"test batch", labels_key: labels, b"data": images.reshape(images.shape[0], -1), b"filenames": []}


def write_cifar10(parent: Path, n_per_batch: int = 4, n_test: int = 10) -> Path:
    """Write `cifar-10-batches-py` under `parent` with 5 training batches; return that folder."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for batch in range(1, 6):
        images = pattern_images(n_per_batch, 3, 32, 32, seed=batch)
        labels = [(batch * n_per_batch + i) % 10 for i in range(n_per_batch)]
        _dump(folder / f"data_batch_{batch}", cifar_batch(images, labels, b"labels"))
    _dump(folder / "test_batch", cifar_batch(pattern_images(n_test, 3, 32, 32, seed=99), [i % 10 for i in range(n_test)], b"labels"))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    _dump(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": n_per_batch, b"num_vis": 3072})
    return folder


def write_cifar100(parent: Path, n_train: int = 200, n_test: int = 100) -> Path:
    """Write `cifar-100-python` under `parent`; labels cycle through the 100 fine classes."""
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n_images, seed in (("train", n_train, 1), ("test", n_test, 2)):
        batch = cifar_batch(pattern_images(n_images, 3, 32, 32, seed=seed), [i % 100 for i in range(n_images)], b"fine_labels")
        batch[b"coarse_labels"] = [i % 20 for i in range(n_images)]
        _dump(folder / name, batch)
    _dump(folder / "meta", {b"fine_label_names": [f"fine{i}".encode() for i in range(100)], b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    return folder


def write_svhn(folder: Path, n_train: int = 20, n_test: int = 10, train_labels: np.ndarray | None = None) -> None:
    """Write train_32x32.mat and test_32x32.mat with X (32, 32, 3, N) and y (N, 1) in 1..10."""
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    for name, n_images, seed in (("train_32x32.mat", n_train, 3), ("test_32x32.mat", n_test, 4)):
        images = pattern_images(n_images, 3, 32, 32, seed=seed).transpose(2, 3, 1, 0)
        labels = np.arange(n_images) % 10 + 1
        if name.startswith("train") and train_labels is not None:
            labels = train_labels
        savemat(folder / name, {"X": images, "y": labels.reshape(-1, 1).astype(np.uint8)})


def write_image_folder(root: Path, classes: list[str], per_class: int, *, size: tuple[int, int] = (6, 5), mode: str = "RGB") -> dict[Path, np.ndarray]:
    """Write `per_class` PNGs of `size` (width, height) per class folder; return path -> pixels (H, W[, C])."""
    from PIL import Image

    written = {}
    channels = 3 if mode == "RGB" else 1
    for class_index, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = pattern_images(1, channels, size[1], size[0], seed=100 * class_index + i)[0]
            pixels = pixels.transpose(1, 2, 0) if channels == 3 else pixels[0]
            path = root / name / f"{i:03d}.png"
            Image.fromarray(pixels).save(path)
            written[path] = pixels
    return written
