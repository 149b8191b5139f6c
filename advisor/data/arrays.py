"""Array files: numpy `.npz` archives and torch `.pt` files.

Both hold inputs `x` and targets `y` (or the key that `--target` names), and
optionally `x_test` with `y_test` (`{target}_test`) for a test split and
`classes`, a list of class names that the labels index.

Memory: an npz member stored without compression (numpy.savez) is
memory-mapped, so only the rows that are indexed are read. A compressed
member (numpy.savez_compressed) is read into memory whole. A .pt file in torch's zip
format is loaded with mmap=True, so its tensors stay on disk until read; the
legacy format is read whole, and so are bfloat16 and other dtypes numpy lacks.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from advisor.data.bundle import RawDataset
from advisor.data.lazy import RowSubset
from advisor.errors import DataError

_FIX_NPZ = "Save the arrays with numpy.savez(FILE, x=inputs, y=targets)."
_FIX_PT = "Save a dict of tensors, torch.save({'x': inputs, 'y': targets}, FILE), or a TensorDataset(inputs, targets)."


def _memmap_member(path: Path, archive: zipfile.ZipFile, member: str) -> np.memmap | None:
    """Memory-map an uncompressed .npy member of an npz archive; None when impossible."""
    info = archive.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as handle:
        # The member's data follows its 30-byte local header, file name and extra field.
        handle.seek(info.header_offset)
        local_header = handle.read(30)
        if local_header[:4] != b"PK\x03\x04":
            return None
        name_length, extra_length = struct.unpack("<HH", local_header[26:30])
        handle.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            return None
        offset = handle.tell()
    if dtype.hasobject or int(np.prod(shape)) == 0:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran_order else "C")


def _read_member(spec: str, path: Path, archive: zipfile.ZipFile, key: str) -> np.ndarray:
    member = key + ".npy"
    try:
        mapped = _memmap_member(path, archive, member)
        if mapped is not None:
            return mapped
        with archive.open(member) as handle:
            return np.lib.format.read_array(handle, allow_pickle=False)
    except ValueError as error:
        # read_array raises ValueError for object arrays, which need pickle.
        raise DataError(
            spec, f"array {key!r} in {path} cannot be read without pickle ({error})",
            "Store numbers or fixed-width strings (numpy dtype 'U'), not Python objects.", path=str(path),
        ) from error
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(spec, f"array {key!r} in {path} is corrupt ({error})", _FIX_NPZ, path=str(path)) from error


def load_npz(spec: str, path: Path, target: str | None = None) -> RawDataset:
    """Load `x`, the target array (`y` unless `target` names another) and the optional test split."""
    target_key = target or "y"
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(spec, f"{path} is not an npz archive ({error})", _FIX_NPZ, path=str(path)) from error

    with archive:
        keys = {name[: -len(".npy")] for name in archive.namelist() if name.endswith(".npy")}
        arrays = {key: _read_member(spec, path, archive, key) for key in keys if key in ("x", target_key, "x_test", f"{target_key}_test", "classes")}
    return _raw_from_arrays(spec, path, arrays, target_key, sorted(keys), _FIX_NPZ)


def _torch_load(spec: str, path: Path) -> Any:
    import torch
    from torch.utils.data import TensorDataset

    # mmap=True works only for torch's zip format; legacy files are read whole.
    use_mmap = zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals([TensorDataset]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(
            spec, f"{path} cannot be loaded with torch.load(weights_only=True): {first_line}",
            f"The file may be corrupt or hold objects other than tensors. {_FIX_PT}", path=str(path),
        ) from error


def _tensor_to_numpy(value: Any) -> Any:
    import torch

    if not isinstance(value, torch.Tensor):
        return value
    value = value.detach()
    try:
        # Shares memory with the (possibly memory-mapped) storage.
        return value.numpy()
    except TypeError:
        # numpy has no bfloat16 and similar dtypes.
        return value.float().numpy()


def load_pt(spec: str, path: Path, target: str | None = None) -> RawDataset:
    """Load a dict of tensors, a TensorDataset(x, y) or a tuple (x, y) saved with torch.save."""
    from torch.utils.data import TensorDataset

    target_key = target or "y"
    content = _torch_load(spec, path)
    memory_mapped = zipfile.is_zipfile(path)
    if isinstance(content, TensorDataset):
        content = tuple(content.tensors)
    if isinstance(content, (tuple, list)):
        if len(content) != 2:
            raise DataError(spec, f"{path} contains a sequence of {len(content)} items, expected (inputs, targets)", _FIX_PT, path=str(path))
        if target is not None:
            raise DataError(spec, f"{path} contains (inputs, targets) without keys, so --target {target} matches nothing", "Drop --target.", path=str(path))
        content = {"x": content[0], "y": content[1]}
    if not isinstance(content, dict):
        raise DataError(spec, f"{path} contains a {type(content).__name__}", _FIX_PT, path=str(path))

    keys = sorted(str(key) for key in content)
    arrays = {key: _tensor_to_numpy(value) for key, value in content.items() if key in ("x", target_key, "x_test", f"{target_key}_test", "classes")}
    raw = _raw_from_arrays(spec, path, arrays, target_key, keys, _FIX_PT)
    if memory_mapped:
        # The arrays are plain ndarrays over mapped storage, which take_rows
        # would copy; as row subsets, a seeded split keeps them on disk.
        raw.x = RowSubset(raw.x, np.arange(raw.x.shape[0]))
        if raw.x_test is not None:
            raw.x_test = RowSubset(raw.x_test, np.arange(raw.x_test.shape[0]))
    return raw


def _raw_from_arrays(spec: str, path: Path, arrays: dict[str, Any], target_key: str, keys: list[str], fix: str) -> RawDataset:
    for key in ("x", target_key):
        if key not in arrays:
            raise DataError(spec, f"{path} has no {key!r} entry (it has: {', '.join(keys) or 'nothing'})", fix, path=str(path))
    if ("x_test" in arrays) != (f"{target_key}_test" in arrays):
        raise DataError(spec, f"{path} has only one of 'x_test' and '{target_key}_test'", "Store both test arrays or neither.", path=str(path))

    for key, value in arrays.items():
        if key != "classes" and not isinstance(value, np.ndarray):
            raise DataError(spec, f"entry {key!r} of {path} is a {type(value).__name__}, not an array", fix, path=str(path))
    x = arrays["x"]
    if x.ndim not in (2, 4):
        raise DataError(
            spec, f"'x' in {path} has shape {x.shape}, expected (N, features) or (N, channels, height, width)",
            "Reshape the inputs; add a channel axis to gray images.", path=str(path),
        )
    x_test = arrays.get("x_test")
    if x_test is not None and x_test.shape[1:] != x.shape[1:]:
        raise DataError(spec, f"'x_test' in {path} has examples of shape {x_test.shape[1:]} but 'x' has {x.shape[1:]}", "Give both splits the same example shape.", path=str(path))
    for key in ("x", "x_test"):
        if key in arrays and arrays[key].dtype.kind not in "iufb":
            raise DataError(spec, f"{key!r} in {path} has dtype {arrays[key].dtype}, not numbers", "Store the inputs as numbers.", path=str(path))

    class_names: list[str] = []
    if "classes" in arrays:
        class_names = [name.decode("utf-8") if isinstance(name, bytes) else str(name) for name in np.asarray(arrays["classes"]).reshape(-1).tolist()]

    return RawDataset(
        x=x, y=np.asarray(arrays[target_key]), task=None, class_names=class_names,
        x_test=x_test, y_test=None if x_test is None else np.asarray(arrays[f"{target_key}_test"]),
        origin=str(path),
    )
