"""Pure-function views of a module, for torch.func transforms.

Analysis always runs on a float64 copy of the model in eval mode, so that
BatchNorm uses its running statistics, dropout is off, and the user's module
is never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call


def analysis_copy(model: nn.Module, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Return a deep copy of `model` in eval mode with floating tensors cast to `dtype`."""
    clone = copy.deepcopy(model)
    clone.eval()
    return clone.to(dtype=dtype)


def trainable_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def frozen_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Buffers and parameters that are not trainable: held fixed in every derivative."""
    fixed = {name: b.detach() for name, b in model.named_buffers()}
    fixed.update({name: p.detach() for name, p in model.named_parameters() if not p.requires_grad})
    return fixed


def batched_function(model: nn.Module, fixed: dict[str, torch.Tensor]) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """Return f(params, x) -> outputs (B, M) for a batch x (B, ...)."""

    def apply(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**fixed, **params}, (x,))

    return apply


def flatten_outputs(outputs: torch.Tensor) -> torch.Tensor:
    """Stack outputs (N, M) into f_X (N*M,), examples outer and outputs inner."""
    return outputs.reshape(-1)
