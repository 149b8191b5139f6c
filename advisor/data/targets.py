"""Decide the task of a dataset and encode its labels or targets.

Sources that declare classes (digits, MNIST, CIFAR, SVHN, image folders)
fix the task to classification. For npz, pt and csv files the task is taken
from `--task` or inferred from the stored targets:

- strings or booleans: classification;
- integers with at most `MAX_INFERRED_CLASSES` distinct values, and at least
  two examples per value on average: classification;
- floats that are not all whole numbers, or several target columns:
  regression;
- anything else (many distinct integers, whole-number floats) is ambiguous
  and raises a DataError whose fix is to pass `--task`.

Classification labels become class indices into the sorted distinct training
labels, and the labels themselves, as text, become the class names.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from advisor.data.bundle import RawDataset
from advisor.errors import DataError, UnknownChoiceError

TASKS = ("classification", "regression")

# More distinct integer labels than this look like a count or a measurement
# rather than classes, so the task is not inferred.
MAX_INFERRED_CLASSES = 100


def resolve_task(spec: str, raw: RawDataset, task: str | None) -> RawDataset:
    """Return `raw` with its task set and, for classification, `y` as class indices.

    `task` is "classification", "regression" or None to infer. Raises
    UnknownChoiceError for another value and DataError when the task is
    ambiguous or does not fit the targets.
    """
    if task is not None and task not in TASKS:
        raise UnknownChoiceError("task", task, TASKS, hint="Pass --task classification or --task regression.")

    if raw.task is not None:
        if task is not None and task != raw.task:
            kind = spec.partition(":")[0]
            raise DataError(
                spec,
                f"the {kind} source provides class labels, so --task {task} does not apply",
                f"Drop --task, or export the data to npz with real-valued targets for {task}.",
            )
        return raw

    y = _one_target_column(raw.y)
    y_test = None if raw.y_test is None else _one_target_column(raw.y_test)
    if task is None:
        # A source that lists class names declares classification.
        task = "classification" if raw.class_names else infer_task(spec, y)

    if task == "regression":
        return replace(raw, task="regression", y=_as_real(spec, raw, "training", y), y_test=None if y_test is None else _as_real(spec, raw, "test", y_test))
    return _encode_classes(spec, replace(raw, y=y, y_test=y_test))


def infer_task(spec: str, y: np.ndarray) -> str:
    """Infer the task from the stored targets `y` (N,) or (N, M); see the module docstring."""
    if y.ndim == 2:
        return "regression"
    if y.dtype.kind in "USOb":
        return "classification"

    n_examples = int(y.shape[0])
    if y.dtype.kind in "iu":
        n_distinct = int(np.unique(y).size)
        if n_distinct <= MAX_INFERRED_CLASSES and 2 * n_distinct <= n_examples:
            return "classification"
        raise DataError(
            spec,
            f"the targets are {n_distinct} distinct integers over {n_examples} examples, which could be classes or measurements",
            "Pass --task classification or --task regression.",
        )

    finite = y[np.isfinite(y)]
    if finite.size == y.size and np.array_equal(finite, np.round(finite)):
        raise DataError(
            spec,
            f"the targets are whole numbers stored as {y.dtype} ({int(np.unique(finite).size)} distinct values), which could be classes or measurements",
            "Pass --task classification or --task regression.",
        )
    return "regression"


def _one_target_column(y: np.ndarray) -> np.ndarray:
    """Flatten targets of shape (N, 1) to (N,); other shapes are returned unchanged."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        return y[:, 0]
    return y


def _as_real(spec: str, raw: RawDataset, split: str, y: np.ndarray) -> np.ndarray:
    if y.dtype.kind in "iufb":
        return y.astype(np.float64)

    flat = y.reshape(-1)
    values_per_row = 1 if y.ndim == 1 else int(y.shape[1])
    for index, value in enumerate(flat):
        try:
            float(value)
        except (TypeError, ValueError):
            row = index // values_per_row
            raise DataError(
                spec,
                f"{raw.describe(split, row)} has target {value!r}, which is not a number",
                "Regression needs numeric targets; fix the value or pass --task classification.",
                path=raw.origin, index=row,
            ) from None
    return flat.astype(np.float64).reshape(y.shape)


def _encode_classes(spec: str, raw: RawDataset) -> RawDataset:
    """Map the labels of `raw` to class indices; declared class names are kept."""
    pairs = [("training", raw.y)]
    if raw.y_test is not None:
        pairs.append(("test", raw.y_test))

    for split, y in pairs:
        if y.ndim != 1:
            raise DataError(
                spec, f"the {split} labels have shape {y.shape}, expected one label per example (N,)",
                "Store class labels as a vector, not one-hot rows, or pass --task regression.",
                path=raw.origin,
            )
        _check_whole_numbers(spec, raw, split, y)

    if raw.class_names and raw.y.dtype.kind in "US":
        # Declared classes with labels stored by name: unknown names become -1,
        # which validate_raw reports as outside the declared classes.
        position = {name: index for index, name in enumerate(raw.class_names)}

        def by_name(y: np.ndarray) -> np.ndarray:
            return np.array([position.get(_label_text(value), -1) for value in y], dtype=np.int64)

        return replace(raw, task="classification", y=by_name(raw.y), y_test=None if raw.y_test is None else by_name(raw.y_test))
    if raw.class_names:
        # Declared classes: the labels are indices already; validate_raw checks their range.
        return replace(raw, task="classification", y=raw.y.astype(np.int64), y_test=None if raw.y_test is None else raw.y_test.astype(np.int64))

    values = np.unique(raw.y)
    y_train = np.searchsorted(values, raw.y).astype(np.int64)
    y_test = None
    if raw.y_test is not None:
        positions = np.minimum(np.searchsorted(values, raw.y_test), values.size - 1)
        unknown = values[positions] != raw.y_test
        if unknown.any():
            index = int(np.flatnonzero(unknown)[0])
            raise DataError(
                spec,
                f"{raw.describe('test', index)} has label {raw.y_test[index]!r}, which no training example has",
                "Add training examples of that class or remove the test example.",
                path=raw.origin, index=index,
            )
        y_test = positions.astype(np.int64)

    class_names = [_label_text(value) for value in values]
    return replace(raw, task="classification", y=y_train, y_test=y_test, class_names=class_names)


def _check_whole_numbers(spec: str, raw: RawDataset, split: str, y: np.ndarray) -> None:
    """Reject float labels that are NaN, infinite or fractional, naming the first one."""
    if y.dtype.kind != "f":
        return
    bad = ~np.isfinite(y) | (np.round(y) != y)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise DataError(
            spec,
            f"{raw.describe(split, index)} has label {y[index]!r}, which is not a class label",
            "Fix the label, or pass --task regression for real-valued targets.",
            path=raw.origin, index=index,
        )


def _label_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (float, np.floating)):
        return str(int(value))
    return str(value)
