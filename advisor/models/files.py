"""Checks on model files that run before any byte of them is parsed."""

from __future__ import annotations

from pathlib import Path

from advisor.errors import ModelSpecError

# Default limit on the size of a model file, with its external data, in bytes.
DEFAULT_MAX_MODEL_BYTES = 2**31


def format_bytes(n_bytes: int) -> str:
    """Format a size in bytes as MiB with one decimal, plus the exact count."""
    return f"{n_bytes / 2**20:.1f} MiB ({n_bytes:,} bytes)"


def require_file(spec: str, path: Path, what: str) -> Path:
    """Return `path` if it names an existing regular file, else raise ModelSpecError."""
    if not path.exists():
        raise ModelSpecError(spec, f"{what} {path} not found", "Check the path.")
    if not path.is_file():
        raise ModelSpecError(spec, f"{what} {path} is not a regular file", "Pass the path of the file itself.")
    return path


def check_size(spec: str, paths: list[Path], max_bytes: int) -> int:
    """Return the total size of `paths` in bytes, raising ModelSpecError when it exceeds `max_bytes`."""
    total = sum(path.stat().st_size for path in paths)
    if total > max_bytes:
        names = ", ".join(str(path) for path in paths)
        raise ModelSpecError(
            spec,
            f"{names} is {format_bytes(total)}, over the limit of {format_bytes(max_bytes)}",
            f"Raise the limit (--max-model-mb {total // 2**20 + 1}) if you mean to load a model this large.",
        )
    return total
