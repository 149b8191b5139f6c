"""Resolve a MODEL specification into a module and check it against the data."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advisor.errors import ModelSpecError, ShapeMismatchError
from advisor.models.default import ResidualCNN
from advisor.models.loaded import LoadedModel
from advisor.models.pyfile import build_from_file
from advisor.models.tv import build_torchvision

DEFAULT_SPEC = "default"

SUPPORTED_FORMS = (
    "no MODEL (the built-in residual CNN)",
    "path/to/file.py:NAME",
    "torchvision:NAME",
)


def build_model(spec: str | None, *, input_shape: tuple[int, ...], n_outputs: int, model_args: dict[str, Any]) -> LoadedModel:
    """Build the module that `spec` names, sized for `input_shape` and `n_outputs`."""
    if spec is None or spec == DEFAULT_SPEC:
        in_channels = input_shape[0] if len(input_shape) == 3 else None
        if in_channels is None:
            raise ShapeMismatchError(
                "input rank", "image inputs (C, H, W)", f"inputs of shape {input_shape}",
                "The default residual CNN needs image data; pass your own model for tabular data.",
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
        raise ShapeMismatchError(
            "input shape", f"an error on inputs of shape {tuple(sample.shape[1:])} ({error})",
            f"inputs of shape {tuple(sample.shape[1:])}", "Use a model built for this input shape.",
        ) from error
    finally:
        module.train(was_training)

    if not isinstance(output, torch.Tensor):
        raise ModelSpecError(loaded.spec, f"forward returned {type(output).__name__}, not a tensor", "Return the output tensor (B, outputs) from forward.")
    if output.ndim != 2 or output.shape[1] != n_outputs:
        raise ShapeMismatchError(
            "output size", f"outputs of shape {tuple(output.shape[1:])}", f"{n_outputs} outputs per example",
            "Set the model's number of outputs to the number of classes (e.g. --model-arg num_classes=%d)." % n_outputs,
        )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
