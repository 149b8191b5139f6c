"""Atomic file writes: a temporary file in the same folder, then a rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file readable by its owner only; give it the
        # permissions a plain open() would, under the current umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def require_output_folder(option: str, path: Path) -> None:
    """Raise UsageError unless `path` is a folder, or can become one, that this process may write into.

    Called before any long work, so that a bad output path fails in a second
    rather than after training.
    """
    from advisor.errors import UsageError

    if path.exists() and not path.is_dir():
        raise UsageError(option, str(path), "a folder, but this path is an existing file; choose another path")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(option, str(path), f"a folder path, but {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(option, str(path), f"a folder this user can write, but {existing} is not writable")


def require_output_file(option: str, path: Path) -> None:
    """Raise UsageError unless a file can be written at `path` (an existing folder there cannot be)."""
    from advisor.errors import UsageError

    if path.is_dir():
        raise UsageError(option, str(path), "a file path, but this path is a folder")
    require_output_folder(option, path.parent)
