"""SVHN cropped digits: `train_32x32.mat` and `test_32x32.mat` (MATLAB v5 files).

Each file contains `X`, uint8 images of shape (32, 32, 3, N), and `y`, labels of
shape (N, 1) from 1 to 10, where 10 means the digit 0. The files are read
with scipy.io.loadmat, which reads a whole file into memory (the training
file is 182 MB). `extra_32x32.mat` is not read.
torchvision's SVHN reader is not used because it accepts only files whose MD5
sums match the official ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advisor.data.bundle import RawDataset
from advisor.errors import DataError

SPLIT_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def _read_mat(spec: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        content = loadmat(path, variable_names=["X", "y"])
    except (MatReadError, NotImplementedError, ValueError, OSError) as error:
        raise DataError(
            spec, f"{path} is not a readable MATLAB v5 file ({error})", "Replace it with the file from the SVHN site (format 2, cropped digits).", path=str(path)
        ) from error

    for key in ("X", "y"):
        if key not in content:
            raise DataError(spec, f"{path} has no variable {key!r}", "Replace it with the file from the SVHN site (format 2, cropped digits).", path=str(path))
    images, labels = content["X"], content["y"]
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3):
        raise DataError(spec, f"{path} has X of shape {images.shape}, expected (32, 32, 3, N)", "Use the cropped-digit files (*_32x32.mat).", path=str(path))
    labels = labels.reshape(-1)
    if labels.shape[0] != images.shape[3]:
        raise DataError(spec, f"{path} contains {images.shape[3]} images but {labels.shape[0]} labels", "Replace it with the file from the SVHN site.", path=str(path))

    outside = (labels < 1) | (labels > 10)
    if outside.any():
        index = int(np.flatnonzero(outside)[0])
        raise DataError(
            spec, f"{path} has label {labels[index]} at index {index}, outside 1..10",
            "Fix the label; SVHN stores the digit 0 as 10.", path=str(path), index=index,
        )
    # (32, 32, 3, N) -> (N, 3, 32, 32); the label 10 becomes the digit 0.
    return np.ascontiguousarray(images.transpose(3, 2, 0, 1)).astype(np.uint8), (labels % 10).astype(np.int64)


def load_svhn_folder(spec: str, folder: Path) -> RawDataset:
    """Load the SVHN .mat files in `folder`; the test file alone is enough."""
    if not folder.is_dir():
        raise DataError(spec, f"{folder} is not a directory", "Pass the folder that contains train_32x32.mat and test_32x32.mat.", path=str(folder))

    found = {split: _read_mat(spec, folder / name) for split, name in SPLIT_FILES.items() if (folder / name).is_file()}
    if not found:
        raise DataError(
            spec, f"no SVHN files in {folder}",
            f"Expected {' and '.join(SPLIT_FILES.values())}; the advisor never downloads data.", path=str(folder),
        )

    x, y = found.get("train", found.get("test"))
    x_test, y_test = found["test"] if "train" in found and "test" in found else (None, None)
    return RawDataset(
        x=x, y=y, task="classification", class_names=[str(digit) for digit in range(10)],
        x_test=x_test, y_test=y_test, origin=str(folder),
    )
