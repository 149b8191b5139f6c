"""CIFAR-10 and CIFAR-100 in their "python version" format: pickled batches.

Each batch file is a pickled dict with `data` (N, 3072) uint8 rows (1,024 red,
then green, then blue values of a 32x32 image) and the labels under `labels`
(CIFAR-10) or `fine_labels` (CIFAR-100). The class names come from
`batches.meta` (`label_names`) or `meta` (`fine_label_names`).

The batches are unpickled with an allow-list that admits only numpy arrays,
so a tampered file cannot run code. torchvision's CIFAR readers are not used
because they accept only files whose MD5 sums match the official archive.
The batches are read into memory whole: pickle offers no partial reads, and
all of CIFAR-10 takes 184 MB as uint8.
"""

from __future__ import annotations

import codecs
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from advisor.data.bundle import RawDataset
from advisor.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CifarLayout:
    """File names and dict keys of one CIFAR variant."""

    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    names_key: str
    labels_key: str


CIFAR10 = CifarLayout(
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    names_key="label_names",
    labels_key="labels",
)
CIFAR100 = CifarLayout(
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    names_key="fine_label_names",
    labels_key="fine_labels",
)

# The only globals a CIFAR batch may reference: numpy's array reconstruction
# (numpy 1 and numpy 2 module paths, pickle protocols 2 to 5) and the codec
# that protocol 2 uses for bytes.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy.core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
    ("_codecs", "encode"): codecs.encode,
}

_IMAGE_BYTES = 3 * 32 * 32


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return found


def _unpickle(spec: str, path: Path) -> dict[str, Any]:
    """Read one batch or meta file as a dict with str keys."""
    try:
        with open(path, "rb") as handle:
            # latin1 decodes Python 2 strings byte for byte, as numpy needs for
            # arrays pickled by Python 2 (the official files are).
            content = _ArrayOnlyUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise DataError(
            spec, f"{path} is not a readable CIFAR pickle ({error})", "Replace it with the file from the CIFAR python archive.", path=str(path)
        ) from error
    if not isinstance(content, dict):
        raise DataError(spec, f"{path} contains a {type(content).__name__}, expected a dict", "Replace it with the file from the CIFAR python archive.", path=str(path))
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


def _read_batch(spec: str, path: Path, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(spec, path)
    for key in ("data", layout.labels_key):
        if key not in batch:
            raise DataError(
                spec, f"{path} has no {key!r} entry (it has {sorted(batch)})",
                "Check that the folder holds the CIFAR variant named in --data.", path=str(path),
            )

    data = np.asarray(batch["data"])
    labels = np.asarray(batch[layout.labels_key])
    if data.ndim != 2 or data.shape[1] != _IMAGE_BYTES:
        raise DataError(spec, f"{path} has data of shape {data.shape}, expected (N, {_IMAGE_BYTES})", "Replace it with the file from the CIFAR python archive.", path=str(path))
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(spec, f"{path} has labels of shape {labels.shape} and type {labels.dtype}, expected N integers", "Replace it with the file from the CIFAR python archive.", path=str(path))
    if data.shape[0] != labels.shape[0]:
        raise DataError(
            spec, f"{path} holds {data.shape[0]} images but {labels.shape[0]} labels",
            "Replace it with the file from the CIFAR python archive.", path=str(path),
        )
    # (N, 3072) rows -> (N, 3, 32, 32): channel-major, then row-major pixels.
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _read_files(spec: str, folder: Path, names: tuple[str, ...], layout: CifarLayout) -> tuple[np.ndarray, np.ndarray] | None:
    present = [name for name in names if (folder / name).is_file()]
    if not present:
        return None
    if len(present) < len(names):
        missing = sorted(set(names) - set(present))
        logger.warning("%s: %s missing from %s; using %s only", spec, ", ".join(missing), folder, ", ".join(present))
    batches = [_read_batch(spec, folder / name, layout) for name in present]
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def load_cifar_folder(spec: str, path: Path, layout: CifarLayout) -> RawDataset:
    """Load a CIFAR folder: the extracted `layout.folder` or the folder that contains it.

    The test batch alone is enough; it is then split with the seed later.
    """
    folder = path / layout.folder if (path / layout.folder).is_dir() else path
    if not folder.is_dir():
        raise DataError(spec, f"{path} is not a directory", f"Pass the {layout.folder} folder or its parent.", path=str(path))

    expected = ", ".join((*layout.train_files, *layout.test_files, layout.meta_file))
    train = _read_files(spec, folder, layout.train_files, layout)
    test = _read_files(spec, folder, layout.test_files, layout)
    if train is None and test is None:
        raise DataError(
            spec, f"no CIFAR batches in {folder}",
            f"Expected {expected}, as extracted from the CIFAR python archive; the advisor never downloads data.",
            path=str(folder),
        )

    meta_path = folder / layout.meta_file
    if not meta_path.is_file():
        raise DataError(spec, f"{meta_path} is missing, so the class names are unknown", f"Add {layout.meta_file} from the CIFAR python archive.", path=str(meta_path))
    meta = _unpickle(spec, meta_path)
    names = meta.get(layout.names_key)
    if not isinstance(names, list) or not names:
        raise DataError(spec, f"{meta_path} has no {layout.names_key!r} list", f"Replace {layout.meta_file} with the file from the CIFAR python archive.", path=str(meta_path))
    class_names = [name.decode("utf-8") if isinstance(name, bytes) else str(name) for name in names]

    x, y = train if train is not None else test
    x_test, y_test = test if train is not None and test is not None else (None, None)
    return RawDataset(x=x, y=y, task="classification", class_names=class_names, x_test=x_test, y_test=y_test, origin=str(folder))
