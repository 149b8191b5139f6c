"""Resolve a MODEL specification into a module and check it against the data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from advisor.errors import ModelSpecError, ShapeMismatchError, UsageError
from advisor.models.checkpoint import load_weights
from advisor.models.default import ResidualCNN
from advisor.models.files import DEFAULT_MAX_MODEL_BYTES
from advisor.models.loaded import LoadedModel
from advisor.models.pyfile import build_from_file
from advisor.models.tv import build_torchvision

DEFAULT_SPEC = "default"

SUPPORTED_FORMS = (
    "no MODEL (the built-in residual CNN)",
    "path/to/file.py:NAME",
    "torchvision:NAME",
    "path/to/model.onnx",
    "path/to/model.pt or .pth (TorchScript)",
)
TORCH_FILE_SUFFIXES = (".pt", ".pth")


def build_model(
    spec: str | None,
    *,
    input_shape: tuple[int, ...],
    n_outputs: int,
    model_args: dict[str, Any],
    weights: str | None = None,
    trust_pickle: bool = False,
    logits: bool = False,
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    input_shape_override: tuple[int, ...] | None = None,
) -> LoadedModel:
    """Build the module that `spec` names, sized for `input_shape` (per example) and `n_outputs`.

    `weights` is a state_dict file for `file.py:NAME` and `torchvision:NAME`.
    `trust_pickle` allows unpickling a full module from a `.pt` file, which
    runs code from it. `logits` cuts a final Softmax, LogSoftmax or Sigmoid
    from ONNX and TorchScript graphs. `max_model_bytes` bounds the size of a
    model or weights file. `input_shape_override` replaces the input shape an
    ONNX graph declares. Raises the `advisor.errors` classes, never writes.
    """
    if spec is not None and spec.endswith(".onnx"):
        _reject_weights(spec, weights)
        from advisor.models.onnx_import import load_onnx

        return load_onnx(spec, Path(spec).expanduser(), input_shape=input_shape, logits=logits,
                         max_bytes=max_model_bytes, input_shape_override=input_shape_override)
    if spec is not None and spec.endswith(TORCH_FILE_SUFFIXES):
        _reject_weights(spec, weights)
        from advisor.models.torchscript import load_torch_file

        return load_torch_file(spec, Path(spec).expanduser(), input_shape=input_shape, trust_pickle=trust_pickle,
                               logits=logits, max_bytes=max_model_bytes)

    loaded = _build_from_source(spec, input_shape=input_shape, n_outputs=n_outputs, model_args=model_args)
    if weights is not None:
        load_weights(loaded.spec, loaded.module, Path(weights).expanduser(), max_bytes=max_model_bytes)
        loaded.details["weights"] = weights
    return loaded


def _reject_weights(spec: str, weights: str | None) -> None:
    if weights is not None:
        raise UsageError("--weights", weights, f"no weights file with {spec}, which holds its own weights; --weights goes with file.py:NAME or torchvision:NAME")


def _build_from_source(spec: str | None, *, input_shape: tuple[int, ...], n_outputs: int, model_args: dict[str, Any]) -> LoadedModel:
    if spec is None or spec == DEFAULT_SPEC:
        in_channels = input_shape[0] if len(input_shape) == 3 else None
        if in_channels is None:
            raise ShapeMismatchError(
                "input rank", "image inputs (C, H, W)", f"inputs of shape {input_shape}",
                "The default residual CNN needs image data; pass your own model for tabular data.",
                model_verb="expects", data_verb="has",
            )
        module = ResidualCNN(in_channels=in_channels, num_classes=n_outputs, **model_args)
        return LoadedModel(module=module, spec=DEFAULT_SPEC, kind="default")

    if spec.startswith("torchvision:"):
        name = spec.split(":", 1)[1]
        return LoadedModel(module=build_torchvision(spec, name, n_outputs, model_args), spec=spec, kind="torchvision")

    path_part = spec.rpartition(":")[0] if ":" in spec else spec
    if path_part.endswith(".py"):
        return LoadedModel(module=build_from_file(spec, model_args, n_outputs), spec=spec, kind="python")

    raise ModelSpecError(spec, "unrecognized model specification", f"Supported forms: {'; '.join(SUPPORTED_FORMS)}.")


def check_output_shape(loaded: LoadedModel, sample: torch.Tensor, n_outputs: int) -> None:
    """Run one eval-mode forward pass on `sample` (B, *input_shape) and check the output is (B, n_outputs)."""
    module = loaded.module
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            output = module(sample)
    except RuntimeError as error:
        raise ModelSpecError(
            loaded.spec, f"its forward pass fails on the data's inputs of shape {tuple(sample.shape[1:])}: {error}",
            "Use a model built for this input shape.",
        ) from error
    finally:
        module.train(was_training)

    if not isinstance(output, torch.Tensor):
        raise ModelSpecError(loaded.spec, f"forward returned {type(output).__name__}, not a tensor", "Return the output tensor (B, outputs) from forward.")
    if output.ndim != 2 or output.shape[1] != n_outputs:
        if loaded.kind in ("onnx", "torchscript", "pickle"):
            # An imported graph or a pickled module has its output size fixed.
            fix = f"Export the model with {n_outputs} outputs, or use data with one target per model output."
        else:
            fix = f"Set the model's number of outputs to {n_outputs} (e.g. --model-arg num_classes={n_outputs})."
        raise ShapeMismatchError("output size", f"outputs of shape {tuple(output.shape[1:])}", f"{n_outputs} outputs per example", fix)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
