"""In-memory datasets as the rest of the advisor sees them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RawDataset:
    """Arrays as a source provides them, before splitting and normalization.

    `x` has shape (N, C, H, W) for images or (N, F) for tabular data, any real
    dtype. `y` holds integer class indices (N,) for classification or real
    targets (N,) or (N, M) for regression. `x_test`/`y_test` are set when the
    source ships a test split.
    """

    x: np.ndarray
    y: np.ndarray
    task: str
    class_names: list[str] = field(default_factory=list)
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    # Where the arrays came from, for error messages.
    origin: str = ""


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
