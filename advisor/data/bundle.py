"""Dataset containers passed from the sources to the analysis.

A `RawDataset` may hold file-backed inputs (see `advisor.data.lazy`); a
`Dataset` holds normalized float32 arrays in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class RawDataset:
    """Arrays as a source provides them, before splitting and normalization.

    `x` has shape (N, C, H, W) for images or (N, F) for tabular data, any real
    dtype. It is an `np.ndarray` or a row-indexed lazy array from
    `advisor.data.lazy`. `task` is "classification" when the source declares
    classes, and then `y` holds integer class indices (N,) into `class_names`.
    `task` is None when the source cannot tell (npz, pt, csv), and then `y`
    holds labels or targets as stored: integers, floats or strings, shape (N,)
    or (N, M). `x_test`/`y_test` are set when the source ships a test split.
    """

    x: Any
    y: np.ndarray
    task: str | None
    class_names: list[str] = field(default_factory=list)
    x_test: Any = None
    y_test: np.ndarray | None = None
    # Where the arrays came from, for error messages.
    origin: str = ""
    # Names the file or line of example `index` in split "training" or "test";
    # sources without a better name leave it None.
    locate: Callable[[str, int], str] | None = None

    def describe(self, split: str, index: int) -> str:
        """Name example `index` of `split` for an error message."""
        if self.locate is not None:
            return self.locate(split, index)
        return f"{split} example {index} of {self.origin}" if self.origin else f"{split} example {index}"


@dataclass
class Dataset:
    """A split, normalized dataset ready for analysis and training.

    Inputs are float32 tensors-to-be as numpy arrays; `targets_*` are float32
    with shape (N, M): one-hot rows for classification, standardized values
    for regression. `labels_*` are the class indices (classification only).
    """

    spec: str
    task: str
    x_train: np.ndarray
    targets_train: np.ndarray
    x_test: np.ndarray
    targets_test: np.ndarray
    labels_train: np.ndarray | None
    labels_test: np.ndarray | None
    class_names: list[str]
    seed: int
    # Per-channel (or per-feature) statistics used to normalize the inputs.
    input_mean: list[float]
    input_std: list[float]
    # For regression: the mean and scale removed from the targets.
    target_mean: list[float] | None = None
    target_scale: list[float] | None = None
    split_note: str = ""

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def n_outputs(self) -> int:
        return int(self.targets_train.shape[1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x_train.shape[1:])

    def class_counts(self, indices: np.ndarray | None = None) -> dict[str, int]:
        """Count training examples per class name, over `indices` when given."""
        if self.labels_train is None:
            return {}
        labels = self.labels_train if indices is None else self.labels_train[indices]
        counts = np.bincount(labels, minlength=len(self.class_names))
        return {name: int(count) for name, count in zip(self.class_names, counts)}
