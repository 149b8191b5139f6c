"""Checkpoints of a training run, written atomically after every epoch.

A checkpoint is one dict saved with torch.save: the phase, the epoch, model,
optimizer and random-stream states, the records so far, and whatever the
phase needs to continue (the transition snapshot, the certificate). The
learning-rate schedule is a function of the global step, so the epoch number
restores it. `fingerprint` contains the settings that change the figures; a
checkpoint written under other settings is rejected instead of resumed.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch

from training.errors import TrainingConfigError

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


class Checkpointer:
    """Saves and loads the checkpoint of one run in `directory`."""

    def __init__(self, directory: str | os.PathLike, fingerprint: dict) -> None:
        self.directory = Path(directory)
        self.fingerprint = fingerprint

    @property
    def path(self) -> Path:
        return self.directory / CHECKPOINT_NAME

    def save(self, state: dict) -> None:
        """Write `state` so that a reader finds the previous checkpoint or this one, never a part.

        torch.save goes to a temporary file in the same folder, which is
        flushed to disk and then renamed over the checkpoint (os.replace is
        atomic on POSIX and Windows).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = {"format_version": FORMAT_VERSION, "fingerprint": self.fingerprint, **state}
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{CHECKPOINT_NAME}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                torch.save(payload, stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        logger.debug("saved checkpoint %s (phase %s, epoch %s)", self.path, state.get("phase"), state.get("epoch"))

    def load(self) -> dict | None:
        """Return the saved state, or None when the folder has no checkpoint.

        Raises TrainingConfigError when the checkpoint was written by another
        format version or under other settings.
        """
        if not self.path.exists():
            return None
        # The file contains tensors, numbers, strings and lists only, so the
        # restricted unpickler suffices and no code in it can run.
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch.load raises UnpicklingError, RuntimeError or EOFError on damaged files
            raise TrainingConfigError("--resume", str(self.path),
                                      f"a readable checkpoint, but loading it failed ({type(error).__name__}); "
                                      "delete it, or start again without --resume") from error
        if not isinstance(state, dict):
            raise TrainingConfigError("--resume", str(self.path), "a checkpoint written by advisor train; delete it, or start again without --resume")
        if state.get("format_version") != FORMAT_VERSION:
            raise TrainingConfigError("--resume", str(self.path),
                                      f"a checkpoint of format version {FORMAT_VERSION}; start again without --resume")
        if state.get("fingerprint") != self.fingerprint:
            changed = sorted(key for key in set(self.fingerprint) | set(state.get("fingerprint", {}))
                             if self.fingerprint.get(key) != state.get("fingerprint", {}).get(key))
            raise TrainingConfigError("--resume", str(self.path),
                                      f"a checkpoint written with the same settings, but these differ: {', '.join(changed)}; "
                                      f"use the original settings or another --checkpoint-dir")
        logger.info("resuming from %s (phase %s, epoch %s)", self.path, state.get("phase"), state.get("epoch"))
        return state
