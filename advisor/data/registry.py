"""Parse a `--data` specification and dispatch to the matching source."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from advisor.data.bundle import Dataset, RawDataset
from advisor.data.digits import load_digits_dataset
from advisor.data.mnist import load_mnist_folder
from advisor.data.prepare import prepare_dataset
from advisor.errors import DataError, UnknownChoiceError


def _digits(spec: str, argument: str) -> RawDataset:
    if argument:
        raise DataError(spec, "the digits dataset takes no path", "Use --data digits.")
    return load_digits_dataset()


def _mnist(spec: str, argument: str) -> RawDataset:
    return load_mnist_folder(spec, _require_path(spec, argument), fashion=False)


def _fashion_mnist(spec: str, argument: str) -> RawDataset:
    return load_mnist_folder(spec, _require_path(spec, argument), fashion=True)


def _require_path(spec: str, argument: str) -> Path:
    if not argument:
        kind = spec.split(":", 1)[0]
        raise DataError(spec, "no path given", f"Use --data {kind}:PATH.")
    path = Path(argument).expanduser()
    if not path.exists():
        raise DataError(spec, f"{path} does not exist", "Check the path; the advisor never downloads data.")
    return path


# Each source takes (the whole spec, the part after the colon).
SOURCES: dict[str, Callable[[str, str], RawDataset]] = {
    "digits": _digits,
    "mnist": _mnist,
    "fashion-mnist": _fashion_mnist,
}


def load_raw(spec: str) -> RawDataset:
    """Read the arrays named by `spec` (`KIND` or `KIND:PATH`) without any download."""
    kind, _, argument = spec.partition(":")
    source = SOURCES.get(kind)
    if source is None:
        raise UnknownChoiceError("dataset kind", kind, SOURCES, hint="Write --data KIND or --data KIND:PATH.")
    return source(spec, argument)


def load_dataset(spec: str, *, seed: int, test_fraction: float = 0.2) -> Dataset:
    """Load, validate, split and normalize the dataset named by `spec`."""
    raw = load_raw(spec)
    return prepare_dataset(spec, raw, seed=seed, test_fraction=test_fraction)
