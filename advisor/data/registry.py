"""Parse a `--data` specification and dispatch to the matching source.

No source opens a network connection: each reads only the files it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from advisor.data.arrays import load_npz, load_pt
from advisor.data.bundle import Dataset, RawDataset
from advisor.data.cifar import CIFAR10, CIFAR100, load_cifar_folder
from advisor.data.csvfile import load_csv
from advisor.data.digits import load_digits_dataset
from advisor.data.imagefolder import load_image_folder
from advisor.data.mnist import load_mnist_folder
from advisor.data.prepare import prepare_dataset
from advisor.data.svhn import load_svhn_folder
from advisor.errors import DataError, UnknownChoiceError


def _digits(spec: str, argument: str, target: str | None) -> RawDataset:
    if argument:
        raise DataError(spec, "the digits dataset takes no path", "Use --data digits.")
    return load_digits_dataset()


def _mnist(spec: str, argument: str, target: str | None) -> RawDataset:
    return load_mnist_folder(spec, _require_path(spec, argument), fashion=False)


def _fashion_mnist(spec: str, argument: str, target: str | None) -> RawDataset:
    return load_mnist_folder(spec, _require_path(spec, argument), fashion=True)


def _cifar10(spec: str, argument: str, target: str | None) -> RawDataset:
    return load_cifar_folder(spec, _require_path(spec, argument), CIFAR10)


def _cifar100(spec: str, argument: str, target: str | None) -> RawDataset:
    return load_cifar_folder(spec, _require_path(spec, argument), CIFAR100)


def _svhn(spec: str, argument: str, target: str | None) -> RawDataset:
    return load_svhn_folder(spec, _require_path(spec, argument))


def _imagefolder(spec: str, argument: str, target: str | None) -> RawDataset:
    return load_image_folder(spec, _require_path(spec, argument))


def _npz(spec: str, argument: str, target: str | None) -> RawDataset:
    return load_npz(spec, _require_path(spec, argument), target)


def _pt(spec: str, argument: str, target: str | None) -> RawDataset:
    return load_pt(spec, _require_path(spec, argument), target)


def _csv(spec: str, argument: str, target: str | None) -> RawDataset:
    return load_csv(spec, _require_path(spec, argument), target)


def _require_path(spec: str, argument: str) -> Path:
    if not argument:
        kind = spec.split(":", 1)[0]
        raise DataError(spec, "no path given", f"Use --data {kind}:PATH.")
    path = Path(argument).expanduser()
    if not path.exists():
        raise DataError(spec, f"{path} does not exist", "Check the path; the advisor never downloads data.", path=str(path))
    return path


# Each source takes (the whole spec, the part after the colon, the --target value).
SOURCES: dict[str, Callable[[str, str, str | None], RawDataset]] = {
    "digits": _digits,
    "mnist": _mnist,
    "fashion-mnist": _fashion_mnist,
    "cifar10": _cifar10,
    "cifar100": _cifar100,
    "svhn": _svhn,
    "imagefolder": _imagefolder,
    "npz": _npz,
    "pt": _pt,
    "csv": _csv,
}

# Sources whose target is chosen by --target: a column or an array key.
TARGET_SOURCES = ("csv", "npz", "pt")


def load_raw(spec: str, *, target: str | None = None) -> RawDataset:
    """Read the arrays named by `spec` (`KIND` or `KIND:PATH`) without any download.

    `target` picks the target column (csv) or array key (npz, pt). Raises
    UnknownChoiceError for an unknown KIND and DataError for missing or
    corrupt files.
    """
    kind, _, argument = spec.partition(":")
    source = SOURCES.get(kind)
    if source is None:
        raise UnknownChoiceError("dataset kind", kind, SOURCES, hint="Write --data KIND or --data KIND:PATH.")
    if target is not None and kind not in TARGET_SOURCES:
        raise DataError(spec, f"--target does not apply to {kind} data, whose labels are fixed", f"Drop --target; it applies to {', '.join(TARGET_SOURCES)} files.")
    return source(spec, argument, target)


def load_dataset(
    spec: str, *, seed: int, test_fraction: float = 0.2, task: str | None = None, target: str | None = None
) -> Dataset:
    """Load, validate, split and normalize the dataset named by `spec`.

    `task` is "classification", "regression" or None to infer it; `target`
    as in `load_raw`. See `prepare_dataset` for the split and normalization.
    """
    raw = load_raw(spec, target=target)
    return prepare_dataset(spec, raw, seed=seed, test_fraction=test_fraction, task=task)
