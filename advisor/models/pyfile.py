"""Models defined in a user's Python file: `path/to/file.py:NAME`.

Importing the file runs its code, so only trusted files should be loaded.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from torch import nn

from advisor.errors import ModelSpecError, UsageError

# Constructor parameters that receive the number of outputs when the user
# does not set them with --model-arg.
OUTPUT_SIZE_PARAMETERS = ("num_classes", "n_classes", "n_outputs", "out_features")


def parse_model_args(pairs: list[str]) -> dict[str, Any]:
    """Parse `key=value` strings; values are Python literals where they parse, else strings."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError("--model-arg", pair, "key=value with a Python identifier as key, e.g. --model-arg width=64")
        try:
            parsed[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed[key] = text
    return parsed


def _import_file(spec: str, path: Path):
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"advisor_user_model_{digest}"
    import_spec = importlib.util.spec_from_file_location(module_name, path)
    if import_spec is None or import_spec.loader is None:
        raise ModelSpecError(spec, f"{path} cannot be imported as a Python module", "Pass a .py file.")
    module = importlib.util.module_from_spec(import_spec)
    sys.modules[module_name] = module
    try:
        import_spec.loader.exec_module(module)
    except Exception as error:  # the user's code may raise anything while importing
        del sys.modules[module_name]
        raise ModelSpecError(spec, f"importing {path} raised {type(error).__name__}: {error}", "Fix the error in the file.") from error
    return module


def build_from_file(spec: str, model_args: dict[str, Any], n_outputs: int) -> nn.Module:
    """Import the file named in `spec` and call NAME with `model_args`."""
    path_text, sep, name = spec.rpartition(":")
    if not sep or not name or not path_text.endswith(".py"):
        raise ModelSpecError(spec, "a Python model must be written path/to/file.py:NAME", "Add the class or factory name after a colon.")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ModelSpecError(spec, f"file {path} not found", "Check the path.")

    module = _import_file(spec, path)
    factory = getattr(module, name, None)
    if factory is None or not callable(factory):
        candidates = sorted(
            attr for attr, value in vars(module).items()
            if not attr.startswith("_") and (inspect.isclass(value) and issubclass(value, nn.Module) and value.__module__ == module.__name__ or inspect.isfunction(value) and value.__module__ == module.__name__)
        )
        raise ModelSpecError(spec, f"{path} defines no callable {name!r}", f"Available: {', '.join(candidates) or 'none'}.")

    arguments = dict(model_args)
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}
    for key in OUTPUT_SIZE_PARAMETERS:
        if key in parameters and key not in arguments:
            arguments[key] = n_outputs
            break

    call = f"{name}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"
    try:
        model = factory(**arguments)
    except TypeError as error:
        raise ModelSpecError(spec, f"calling {call} failed: {error}", "Pass the constructor's arguments with --model-arg key=value.") from error
    except Exception as error:  # the user's constructor may raise anything
        raise ModelSpecError(spec, f"calling {call} raised {type(error).__name__}: {error}",
                             "Fix the constructor so that it builds the model with these arguments.") from error
    if not isinstance(model, nn.Module):
        raise ModelSpecError(spec, f"{name} returned {type(model).__name__}, not a torch.nn.Module", "Point NAME at an nn.Module subclass or a function that returns one.")
    return model
