"""Reader for the IDX format of MNIST and Fashion-MNIST, gzipped or not."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

# IDX type codes (third byte of the magic number) and their big-endian dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IdxFormatError(ValueError):
    """The bytes of a file do not form a valid IDX array."""


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally `.gz`) into a native-endian array.

    Raises IdxFormatError when the header or the payload size is wrong, and
    OSError (including gzip.BadGzipFile) when the file cannot be read.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()

    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxFormatError(f"{path} does not start with an IDX magic number")
    type_code, n_dims = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise IdxFormatError(f"{path} has unknown IDX type code 0x{type_code:02x}")

    header_end = 4 + 4 * n_dims
    if len(data) < header_end:
        raise IdxFormatError(f"{path} is truncated inside its header")
    shape = tuple(int(v) for v in np.frombuffer(data[4:header_end], dtype=">u4"))

    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape)) * dtype.itemsize
    payload = data[header_end:]
    if len(payload) != expected:
        raise IdxFormatError(
            f"{path} holds {len(payload)} data bytes but its header {shape} needs {expected}"
        )
    return np.frombuffer(payload, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
