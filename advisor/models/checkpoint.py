"""Load a state_dict checkpoint into a module built from its Python source."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from advisor.errors import ModelSpecError
from advisor.models.files import DEFAULT_MAX_MODEL_BYTES, check_size, require_file

# Keys under which training scripts commonly nest the state_dict in a checkpoint.
NESTING_KEYS = ("state_dict", "model", "model_state_dict")
# Longest list of key names quoted in one error message.
MAX_LISTED_KEYS = 20
DATA_PARALLEL_PREFIX = "module."


def _list_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    if len(keys) > MAX_LISTED_KEYS:
        shown += f" and {len(keys) - MAX_LISTED_KEYS} more"
    return shown


def read_state_dict(spec: str, path: Path, *, max_bytes: int = DEFAULT_MAX_MODEL_BYTES) -> dict[str, torch.Tensor]:
    """Read a state_dict from `path` with `torch.load(weights_only=True)`.

    A state_dict nested under one of NESTING_KEYS is unwrapped, and a
    `module.` prefix that every key has (from DataParallel) is removed.
    Raises ModelSpecError when the file holds anything but tensors and
    plain containers, or no state_dict.
    """
    require_file(spec, path, "weights file")
    check_size(spec, [path], max_bytes)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ModelSpecError(
            spec, f"weights file {path} holds Python objects other than tensors, which only a full unpickling could load",
            "Save the weights with torch.save(model.state_dict(), PATH).",
        ) from error
    except Exception as error:  # torch.load raises RuntimeError, EOFError and others on damaged files
        raise ModelSpecError(spec, f"weights file {path} cannot be read ({type(error).__name__}: {error}); it may be truncated or corrupt", "Save the weights again.") from error

    state = loaded
    while isinstance(state, Mapping):
        nested = next((key for key in NESTING_KEYS if isinstance(state.get(key), Mapping)), None)
        if nested is None:
            break
        state = state[nested]
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelSpecError(
            spec, f"weights file {path} holds no state_dict (a mapping of names to tensors, possibly under {', '.join(repr(k) for k in NESTING_KEYS)})",
            "Save the weights with torch.save(model.state_dict(), PATH).",
        )

    state = dict(state)
    if all(key.startswith(DATA_PARALLEL_PREFIX) for key in state):
        state = {key[len(DATA_PARALLEL_PREFIX):]: value for key, value in state.items()}
    return state


def load_weights(spec: str, module: nn.Module, path: Path, *, max_bytes: int = DEFAULT_MAX_MODEL_BYTES) -> None:
    """Load the state_dict in `path` into `module`, requiring the same keys and shapes.

    Raises ModelSpecError naming the missing, unexpected or mis-shaped keys.
    """
    state = read_state_dict(spec, path, max_bytes=max_bytes)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{key} (file {tuple(state[key].shape)}, model {tuple(expected[key].shape)})"
        for key in set(state) & set(expected) if state[key].shape != expected[key].shape
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_list_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_list_keys(unexpected)}")
    if mismatched:
        problems.append(f"keys with other shapes: {_list_keys(mismatched)}")
    if problems:
        raise ModelSpecError(
            spec, f"weights file {path} does not match the model ({'; '.join(problems)})",
            "Pass the weights saved from this architecture, or the --model-arg values it was built with.",
        )
    module.load_state_dict(state, strict=True)
