"""MNIST-style folders of IDX files (MNIST and Fashion-MNIST).

The files are read into memory whole (gzip streams cannot be memory-mapped);
the largest split, 60,000 28x28 images, takes 47 MB as uint8.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from advisor.data.bundle import RawDataset
from advisor.data.idx import IdxFormatError, read_idx
from advisor.errors import DataError

_SPLIT_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def _read_split(spec: str, images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        images = read_idx(images_path)
        labels = read_idx(labels_path)
    except (IdxFormatError, OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(spec, f"corrupt IDX file: {error}", "Replace the file with an intact copy.") from error

    if images.ndim != 3:
        raise DataError(spec, f"{images_path.name} has shape {images.shape}, expected (N, rows, cols)", "Check that the images and labels files are not swapped.")
    if labels.ndim != 1:
        raise DataError(spec, f"{labels_path.name} has shape {labels.shape}, expected (N,)", "Check that the images and labels files are not swapped.")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            spec,
            f"{images_path.name} holds {images.shape[0]} images but {labels_path.name} holds {labels.shape[0]} labels",
            "Use the images and labels files of the same split.",
        )
    # (N, rows, cols) -> (N, 1, rows, cols), kept as stored (uint8 for MNIST) until normalization.
    return images[:, None, :, :], labels.astype(np.int64)


def load_mnist_folder(spec: str, folder: Path, *, fashion: bool = False) -> RawDataset:
    """Load the IDX files in `folder`.

    Either split may be missing, but not both: a folder that holds only the
    `t10k` files (the test split) is returned as the only available data and
    is split later with the seed.
    """
    if not folder.is_dir():
        raise DataError(spec, f"{folder} is not a directory", "Pass the folder that holds the IDX files, e.g. mnist:path/to/mnist.")

    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, (images_stem, labels_stem) in _SPLIT_STEMS.items():
        images_path, labels_path = _find(folder, images_stem), _find(folder, labels_stem)
        if images_path is None and labels_path is None:
            continue
        if images_path is None or labels_path is None:
            missing = images_stem if images_path is None else labels_stem
            raise DataError(spec, f"{folder} has one file of the {split} split but not {missing}[.gz]", "Add the missing file or remove the other one.")
        found[split] = _read_split(spec, images_path, labels_path)

    if not found:
        expected = ", ".join(f"{stem}[.gz]" for pair in _SPLIT_STEMS.values() for stem in pair)
        raise DataError(spec, f"no IDX files in {folder}", f"Expected {expected}.")

    class_names = FASHION_CLASSES if fashion else [str(c) for c in range(10)]
    if "train" in found:
        x, y = found["train"]
        x_test, y_test = found.get("test", (None, None))
    else:
        x, y = found["test"]
        x_test = y_test = None

    return RawDataset(
        x=x,
        y=y,
        task="classification",
        class_names=class_names,
        x_test=x_test,
        y_test=y_test,
        origin=str(folder),
    )
