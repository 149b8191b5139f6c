"""Turn a source's arrays into a split, validated, normalized Dataset.

What stays on disk and what is read into memory:

- Validation and the input statistics read the inputs in blocks of about
  64 MiB (`advisor.data.lazy.iter_row_chunks`), so a file-backed source is
  scanned once per pass but never held whole.
- A seeded split of a file-backed source stores row indices, not copies.
- The returned `Dataset` holds the normalized inputs of both splits as
  float32 arrays in memory, filled block by block.
"""

from __future__ import annotations

import numpy as np

from advisor.data.bundle import Dataset, RawDataset
from advisor.data.lazy import iter_row_chunks, n_rows, take_rows
from advisor.data.targets import TASKS, resolve_task
from advisor.errors import DataError, UsageError

__all__ = ["TASKS", "analysis_indices", "prepare_dataset", "split_train_test", "validate_raw"]


def validate_raw(spec: str, raw: RawDataset) -> None:
    """Reject data that no analysis can use, naming the file, the example and the fix.

    `raw.task` must be resolved (see `advisor.data.targets.resolve_task`).
    Checks, in order: matching numbers of inputs and targets, non-empty
    splits, finite inputs, finite regression targets, and for classification
    labels inside the declared classes, no class without training examples and
    at least two classes. Raises DataError on the first failure.
    """
    pairs = [("training", raw.x, raw.y)]
    if raw.x_test is not None or raw.y_test is not None:
        if raw.x_test is None or raw.y_test is None:
            missing = "inputs" if raw.x_test is None else "targets"
            raise DataError(spec, f"the test split of {raw.origin} has no {missing}", "Provide both test inputs and test targets, or neither.", path=raw.origin)
        pairs.append(("test", raw.x_test, raw.y_test))

    for split, x, y in pairs:
        _check_split(spec, raw, split, x, y)

    if raw.task == "classification":
        _check_classes(spec, raw, pairs)


def _check_split(spec: str, raw: RawDataset, split: str, x: object, y: np.ndarray) -> None:
    if n_rows(x) != y.shape[0]:
        raise DataError(
            spec,
            f"the {split} split of {raw.origin} has {n_rows(x)} inputs but {y.shape[0]} targets",
            "Give every input exactly one target.",
            path=raw.origin,
        )
    if n_rows(x) == 0:
        raise DataError(spec, f"the {split} split of {raw.origin} is empty", "Point the advisor at a dataset with examples.", path=raw.origin)

    # Integer inputs (image bytes) cannot hold NaN, so only float inputs are scanned.
    if np.dtype(x.dtype).kind == "f":
        for start, block in iter_row_chunks(x):
            bad_rows = ~np.isfinite(block.reshape(block.shape[0], -1)).all(axis=1)
            if bad_rows.any():
                index = start + int(np.flatnonzero(bad_rows)[0])
                raise DataError(
                    spec,
                    f"{raw.describe(split, index)} has NaN or infinite input values",
                    "Clean or drop that example (and any others like it) before running the advisor.",
                    path=raw.origin, index=index,
                )

    if raw.task == "regression":
        bad_targets = ~np.isfinite(y.reshape(y.shape[0], -1)).all(axis=1)
        if bad_targets.any():
            index = int(np.flatnonzero(bad_targets)[0])
            raise DataError(
                spec,
                f"{raw.describe(split, index)} has a NaN or infinite target",
                "Clean or drop that example before running the advisor.",
                path=raw.origin, index=index,
            )


def _check_classes(spec: str, raw: RawDataset, pairs: list[tuple[str, object, np.ndarray]]) -> None:
    n_classes = len(raw.class_names)
    for split, _, y in pairs:
        outside = (y < 0) | (y >= n_classes)
        if outside.any():
            index = int(np.flatnonzero(outside)[0])
            raise DataError(
                spec,
                f"{raw.describe(split, index)} has label {y[index]!r}, outside the {n_classes} declared classes (0..{n_classes - 1})",
                "Fix the label or add the class to the class list.",
                path=raw.origin, index=index,
            )

    counts = np.bincount(raw.y, minlength=n_classes)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        names = ", ".join(repr(raw.class_names[int(c)]) for c in empty[:5])
        raise DataError(
            spec,
            f"{empty.size} declared class(es) of {raw.origin} have no training examples: {names}",
            "Add training examples of those classes or remove them from the class list.",
            path=raw.origin,
        )
    if n_classes < 2:
        only = repr(raw.class_names[0]) if raw.class_names else "none"
        raise DataError(
            spec,
            f"the training split of {raw.origin} has a single class ({only})",
            "Classification needs at least two classes; add examples of another class or pass --task regression.",
            path=raw.origin,
        )


def split_train_test(
    raw: RawDataset, seed: int, test_fraction: float, *, spec: str = ""
) -> tuple[object, np.ndarray, object, np.ndarray, str]:
    """Return (x_train, y_train, x_test, y_test, note), splitting with the seed when needed.

    A source's own test split is used as is. Otherwise `test_fraction` of the
    examples (0 < test_fraction < 1) go to the test split, stratified by
    class for classification so each class keeps its share. File-backed
    inputs come back as lazy row subsets.
    """
    if raw.x_test is not None and raw.y_test is not None:
        return raw.x, raw.y, raw.x_test, raw.y_test, "the source's own train/test split"
    if not 0.0 < test_fraction < 1.0:
        raise UsageError("test_fraction", test_fraction, "a fraction strictly between 0 and 1")

    from sklearn.model_selection import train_test_split

    n_examples = n_rows(raw.x)
    stratify = raw.y if raw.task == "classification" and np.bincount(raw.y).min() >= 2 else None
    try:
        train_idx, test_idx = train_test_split(np.arange(n_examples), test_size=test_fraction, random_state=seed, stratify=stratify)
    except ValueError as error:
        raise DataError(
            spec or raw.origin,
            f"cannot split {n_examples} examples into train and test with a test fraction of {test_fraction} ({error})",
            "Provide more examples or a separate test split.",
            path=raw.origin,
        ) from error
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    note = f"seeded split of {n_examples} examples: {1 - test_fraction:.0%} train, {test_fraction:.0%} test (seed {seed})"
    return take_rows(raw.x, train_idx), raw.y[train_idx], take_rows(raw.x, test_idx), raw.y[test_idx], note


def input_statistics(x_train: object, chunk_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std for images (N, C, H, W), per-feature for (N, F).

    Reads `x_train` block by block and merges the blocks' means and sums of
    squared deviations (Chan et al.'s parallel variance update), in float64.
    """
    axes = (0, 2, 3) if len(x_train.shape) == 4 else (0,)
    n_seen = 0
    mean = np.zeros(x_train.shape[1], dtype=np.float64)
    sum_squares = np.zeros(x_train.shape[1], dtype=np.float64)
    for _, block in iter_row_chunks(x_train, chunk_rows):
        block = block.astype(np.float64)
        n_block = block.size // block.shape[1]
        block_mean = block.mean(axis=axes)
        centered = block - _per_channel(block_mean, block.ndim)
        block_sum_squares = (centered * centered).sum(axis=axes)

        n_total = n_seen + n_block
        delta = block_mean - mean
        mean = mean + delta * (n_block / n_total)
        sum_squares = sum_squares + block_sum_squares + delta * delta * (n_seen * n_block / n_total)
        n_seen = n_total

    std = np.sqrt(sum_squares / n_seen)
    # A constant channel or feature is left unscaled rather than divided by zero.
    std = np.where(std > 1e-12, std, 1.0)
    return mean, std


def _per_channel(values: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape per-channel values (C,) to broadcast over (N, C, H, W) or (N, F)."""
    return values[None, :, None, None] if ndim == 4 else values[None, :]


def normalize(x: object, mean: np.ndarray, std: np.ndarray, chunk_rows: int | None = None) -> np.ndarray:
    """Return (x - mean) / std as a new float32 array, computed block by block."""
    # NOTE: this is where file-backed inputs are read into memory in full;
    # a dataset whose float32 inputs exceed memory fails here with MemoryError.
    out = np.empty(tuple(x.shape), dtype=np.float32)
    for start, block in iter_row_chunks(x, chunk_rows):
        ndim = block.ndim
        out[start : start + block.shape[0]] = (block - _per_channel(mean, ndim)) / _per_channel(std, ndim)
    return out


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    targets = np.zeros((labels.shape[0], n_classes), dtype=np.float32)
    targets[np.arange(labels.shape[0]), labels] = 1.0
    return targets


def prepare_dataset(spec: str, raw: RawDataset, *, seed: int, test_fraction: float = 0.2, task: str | None = None) -> Dataset:
    """Resolve the task, validate, split and normalize `raw`.

    `task` is "classification", "regression" or None to infer it (see
    `advisor.data.targets`). Targets become (N, M) float32 arrays: one-hot
    rows for classification, standardized values for regression. Raises
    DataError for unusable data and UsageError for a bad `test_fraction`.
    """
    raw = resolve_task(spec, raw, task)
    validate_raw(spec, raw)
    x_train, y_train, x_test, y_test, note = split_train_test(raw, seed, test_fraction, spec=spec)

    mean, std = input_statistics(x_train)
    x_train, x_test = normalize(x_train, mean, std), normalize(x_test, mean, std)

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
    """Draw a seeded subset of `n_samples` training indices, class-stratified for classification.

    Each class gets floor(n_samples * count / n_train) indices and the
    classes with the largest remainders get one more each, so the subset has
    exactly `n_samples` indices and every class keeps its share to within one
    example. Returns sorted indices; all of them when `n_samples` covers the
    training set. Raises UsageError when `n_samples` < 1.
    """
    if n_samples < 1:
        raise UsageError("--max-samples", n_samples, "a positive number of examples")
    n_train = dataset.n_train
    if n_samples >= n_train:
        return np.arange(n_train)

    rng = np.random.default_rng(seed)
    if dataset.labels_train is None:
        return np.sort(rng.choice(n_train, size=n_samples, replace=False))

    # Integer arithmetic keeps the quotas exact: floating-point quotas that
    # land just above a whole number would overfill the subset.
    labels = dataset.labels_train
    counts = np.bincount(labels, minlength=len(dataset.class_names)).astype(np.int64)
    take, remainders = np.divmod(counts * n_samples, n_train)
    leftover = n_samples - int(take.sum())
    order = np.argsort(-remainders, kind="stable")
    take[order[:leftover]] += 1

    chosen = []
    for label, n_take in enumerate(take):
        if n_take > 0:
            members = np.flatnonzero(labels == label)
            chosen.append(rng.choice(members, size=int(n_take), replace=False))
    return np.sort(np.concatenate(chosen))
