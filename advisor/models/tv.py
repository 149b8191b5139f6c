"""torchvision architectures, always built with random weights."""

from __future__ import annotations

from torch import nn

from advisor.errors import ModelSpecError, UnknownChoiceError


def build_torchvision(spec: str, name: str, n_outputs: int, model_args: dict) -> nn.Module:
    """Build `torchvision.models.NAME(weights=None, num_classes=n_outputs)`.

    Pretrained weights are never requested, so nothing is downloaded.
    """
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise UnknownChoiceError("torchvision model", name, available, hint="Write torchvision:NAME with a classification model.")

    arguments = {"num_classes": n_outputs, **model_args, "weights": None}
    try:
        return torchvision.models.get_model(name, **arguments)
    except (TypeError, ValueError) as error:
        raise ModelSpecError(spec, f"torchvision refused the arguments {arguments}: {error}", "Adjust --model-arg.") from error
