"""scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes)."""

from __future__ import annotations

import numpy as np

from advisor.data.bundle import RawDataset


def load_digits_dataset() -> RawDataset:
    """Load the digits that ship inside scikit-learn; nothing is downloaded.

    Returns images of shape (1797, 1, 8, 8) with gray levels 0..16.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32)[:, None, :, :]
    labels = np.asarray(bunch.target, dtype=np.int64)
    return RawDataset(
        x=images,
        y=labels,
        task="classification",
        class_names=[str(c) for c in range(10)],
        origin="sklearn.datasets.load_digits",
    )
