"""Turn a source's arrays into a split, validated, normalized Dataset."""

from __future__ import annotations

import numpy as np

from advisor.data.bundle import Dataset, RawDataset
from advisor.errors import DataError

TASKS = ("classification", "regression")


def validate_raw(spec: str, raw: RawDataset) -> None:
    """Reject arrays that no analysis can use, naming the first bad index."""
    pairs = [("training", raw.x, raw.y)]
    if raw.x_test is not None and raw.y_test is not None:
        pairs.append(("test", raw.x_test, raw.y_test))

    for split, x, y in pairs:
        if x.shape[0] != y.shape[0]:
            raise DataError(spec, f"the {split} split has {x.shape[0]} inputs but {y.shape[0]} targets", "Give every input exactly one target.")
        if x.shape[0] == 0:
            raise DataError(spec, f"the {split} split is empty", "Point the advisor at a dataset with examples.")
        bad_inputs = ~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
        if bad_inputs.any():
            index = int(np.flatnonzero(bad_inputs)[0])
            raise DataError(spec, f"{split} input {index} contains NaN or infinite values ({int(bad_inputs.sum())} such inputs)", "Clean or drop those rows.")
        if raw.task == "regression" and not np.isfinite(y).all():
            index = int(np.flatnonzero(~np.isfinite(y.reshape(y.shape[0], -1)).all(axis=1))[0])
            raise DataError(spec, f"{split} target {index} is NaN or infinite", "Clean or drop those rows.")

    if raw.task == "classification":
        n_classes = len(raw.class_names)
        for split, _, y in pairs:
            outside = (y < 0) | (y >= n_classes)
            if outside.any():
                index = int(np.flatnonzero(outside)[0])
                raise DataError(spec, f"{split} label {int(y[index])} at index {index} is outside the {n_classes} declared classes", "Fix the label or declare the class.")
        present = np.unique(raw.y)
        if present.size < 2:
            raise DataError(spec, f"the training split has a single class ({raw.class_names[int(present[0])]!r})", "Classification needs at least two classes.")


def split_train_test(raw: RawDataset, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Return (x_train, y_train, x_test, y_test, note), splitting with the seed when needed.

    Classification splits are stratified so each class keeps its share.
    """
    if raw.x_test is not None and raw.y_test is not None:
        return raw.x, raw.y, raw.x_test, raw.y_test, "the source's own train/test split"

    from sklearn.model_selection import train_test_split

    stratify = raw.y if raw.task == "classification" and np.bincount(raw.y).min() >= 2 else None
    indices = np.arange(raw.x.shape[0])
    train_idx, test_idx = train_test_split(indices, test_size=test_fraction, random_state=seed, stratify=stratify)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    note = f"seeded split of {raw.x.shape[0]} examples: {1 - test_fraction:.0%} train, {test_fraction:.0%} test (seed {seed})"
    return raw.x[train_idx], raw.y[train_idx], raw.x[test_idx], raw.y[test_idx], note


def _input_statistics(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std for images (N, C, H, W), per-feature for (N, F)."""
    axes = (0, 2, 3) if x_train.ndim == 4 else (0,)
    mean = x_train.mean(axis=axes, dtype=np.float64)
    std = x_train.std(axis=axes, dtype=np.float64)
    # A constant channel or feature is left unscaled rather than divided by zero.
    std = np.where(std > 1e-12, std, 1.0)
    return mean, std


def _normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    if x.ndim == 4:
        mean, std = mean[None, :, None, None], std[None, :, None, None]
    return ((x - mean) / std).astype(np.float32)


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    targets = np.zeros((labels.shape[0], n_classes), dtype=np.float32)
    targets[np.arange(labels.shape[0]), labels] = 1.0
    return targets


def prepare_dataset(spec: str, raw: RawDataset, *, seed: int, test_fraction: float = 0.2) -> Dataset:
    """Validate, split and normalize `raw`; targets become (N, M) float32 arrays."""
    validate_raw(spec, raw)
    x_train, y_train, x_test, y_test, note = split_train_test(raw, seed, test_fraction)

    mean, std = _input_statistics(x_train)
    x_train, x_test = _normalize(x_train, mean, std), _normalize(x_test, mean, std)

    if raw.task == "classification":
        n_classes = len(raw.class_names)
        return Dataset(
            spec=spec, task="classification",
            x_train=x_train, targets_train=one_hot(y_train, n_classes),
            x_test=x_test, targets_test=one_hot(y_test, n_classes),
            labels_train=y_train.astype(np.int64), labels_test=y_test.astype(np.int64),
            class_names=list(raw.class_names), seed=seed,
            input_mean=mean.tolist(), input_std=std.tolist(), split_note=note,
        )

    targets_train = y_train.reshape(y_train.shape[0], -1).astype(np.float64)
    targets_test = y_test.reshape(y_test.shape[0], -1).astype(np.float64)
    target_mean = targets_train.mean(axis=0)
    target_scale = np.where(targets_train.std(axis=0) > 1e-12, targets_train.std(axis=0), 1.0)
    return Dataset(
        spec=spec, task="regression",
        x_train=x_train, targets_train=((targets_train - target_mean) / target_scale).astype(np.float32),
        x_test=x_test, targets_test=((targets_test - target_mean) / target_scale).astype(np.float32),
        labels_train=None, labels_test=None, class_names=[], seed=seed,
        input_mean=mean.tolist(), input_std=std.tolist(),
        target_mean=target_mean.tolist(), target_scale=target_scale.tolist(), split_note=note,
    )


def analysis_indices(dataset: Dataset, n_samples: int, seed: int) -> np.ndarray:
    """Draw a seeded subset of training indices, class-stratified for classification.

    Returns sorted indices; all of them when `n_samples` covers the training set.
    """
    n_train = dataset.n_train
    if n_samples >= n_train:
        return np.arange(n_train)

    rng = np.random.default_rng(seed)
    if dataset.labels_train is None:
        return np.sort(rng.choice(n_train, size=n_samples, replace=False))

    # Allocate per class in proportion to its size (largest remainders get
    # the leftover slots), so rare classes keep their share.
    labels = dataset.labels_train
    counts = np.bincount(labels, minlength=len(dataset.class_names))
    quotas = counts * n_samples / n_train
    take = np.floor(quotas).astype(int)
    leftover = n_samples - int(take.sum())
    order = np.argsort(-(quotas - take), kind="stable")
    take[order[:leftover]] += 1

    chosen = []
    for label, k in enumerate(take):
        members = np.flatnonzero(labels == label)
        if k > 0:
            chosen.append(rng.choice(members, size=int(k), replace=False))
    return np.sort(np.concatenate(chosen))
