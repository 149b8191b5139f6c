"""Arrays whose examples are read from disk only when they are indexed.

The inputs of a `RawDataset` may be any row-indexed array. Such an object has
`shape`, `ndim`, `dtype` and `__len__`, and its `__getitem__` takes an
integer, a slice or a sorted integer index array over the first axis and
returns an in-memory numpy array. `np.ndarray` and `np.memmap` qualify, and so do the two
classes here:

- `ImageFiles` decodes one image file per example at read time, so an image
  folder costs only its list of paths until examples are read.
- `RowSubset` is a train or test split of another array that stores only the
  row indices, so a seeded split of a memory-mapped array stays on disk.

`iter_row_chunks` walks any of them in bounded blocks; validation and input
statistics use it so that they never hold more than one block in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from advisor.errors import DataError

# About 8 Mi elements per block: 64 MiB once a block is converted to float64.
CHUNK_ELEMENTS = 1 << 23


def n_rows(x: Any) -> int:
    return int(x.shape[0])


def is_in_memory(x: Any) -> bool:
    """Tell whether `x` is an ordinary numpy array rather than a file-backed one."""
    return isinstance(x, np.ndarray) and not isinstance(x, np.memmap)


def iter_row_chunks(x: Any, chunk_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first row, block) pairs that cover `x` in order, each block in memory."""
    total = n_rows(x)
    if chunk_rows is None:
        row_elements = max(1, int(np.prod(x.shape[1:], dtype=np.int64)))
        chunk_rows = max(1, CHUNK_ELEMENTS // row_elements)
    for start in range(0, total, chunk_rows):
        yield start, np.asarray(x[start : start + chunk_rows])


def take_rows(x: Any, indices: np.ndarray) -> Any:
    """Select rows `indices` of `x`: a copy for in-memory arrays, a lazy view otherwise."""
    if is_in_memory(x):
        return x[indices]
    if isinstance(x, RowSubset):
        return RowSubset(x.base, x.indices[indices])
    return RowSubset(x, indices)


class RowSubset:
    """The rows `indices` (sorted, int64) of a row-indexed array, read on access."""

    def __init__(self, base: Any, indices: np.ndarray) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.indices.shape[0]), *tuple(self.base.shape[1:]))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.base[self.indices[key]])


class ImageFiles:
    """Image files read as uint8 arrays of shape (C, H, W), one file per example.

    Every file must have the size `height` x `width`; the image-folder source
    checks the headers before building this. Images are converted to 8-bit
    gray (`channels` 1) or RGB (`channels` 3), so alpha is dropped and 16-bit
    gray is clipped to 0..255.
    """

    def __init__(self, spec: str, paths: Sequence[Path], *, channels: int, height: int, width: int) -> None:
        self.spec = spec
        self.paths = list(paths)
        self.channels = channels
        self.height = height
        self.width = width

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), self.channels, self.height, self.width)

    @property
    def ndim(self) -> int:
        return 4

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._read(self.paths[int(key)])
        indices = np.arange(len(self.paths))[key]
        images = np.empty((indices.shape[0], self.channels, self.height, self.width), dtype=np.uint8)
        for row, index in enumerate(indices):
            images[row] = self._read(self.paths[int(index)])
        return images

    def _read(self, path: Path) -> np.ndarray:
        from PIL import Image

        mode = "L" if self.channels == 1 else "RGB"
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert(mode), dtype=np.uint8)
        except (OSError, ValueError) as error:
            raise DataError(
                self.spec, f"cannot decode image {path}: {error}", "Replace or delete the file.", path=str(path)
            ) from error
        if pixels.shape[:2] != (self.height, self.width):
            raise DataError(
                self.spec,
                f"image {path} is {pixels.shape[1]}x{pixels.shape[0]} pixels, expected {self.width}x{self.height}",
                "Resize all images to one size; the advisor does not resize.",
                path=str(path),
            )
        # (H, W) for gray, (H, W, C) for RGB, moved to (C, H, W).
        return pixels[None, :, :] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
