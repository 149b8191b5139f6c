"""A model ready for analysis, with what the loader learned about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass
class LoadedModel:
    """An `nn.Module` plus facts the report states about its origin.

    `details` holds loader-specific facts (an ONNX opset, the conversion's
    maximum output difference) that go into the report's `model` section.
    `caveats` are plain-language limitations that affect the analysis.
    """

    module: nn.Module
    spec: str
    kind: str
    details: dict[str, Any] = field(default_factory=dict)
    caveats: list[str] = field(default_factory=list)
