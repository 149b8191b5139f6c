"""Small real models, model files and tensors shared by the tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch
from torch import nn


def mlp_with_biases(in_features: int = 6, hidden: int = 7, out_features: int = 3) -> nn.Module:
    """A linear head after tanh: no hidden tensor is homogeneous, so only {head W, b} reproduces f.

    (After a ReLU the hidden layer's weight and bias together would be a
    second homogeneous group, and the minimum-norm fit would spread over it.)
    """
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, out_features))


def bias_free_relu(depth: int, in_features: int = 5, hidden: int = 7, out_features: int = 3) -> nn.Module:
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(depth - 1):
        layers += [nn.Linear(width, hidden, bias=False), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, out_features, bias=False))
    return nn.Sequential(*layers)


class FunctionalSigmoidHead(nn.Module):
    """A linear head whose output goes through torch.sigmoid inside forward."""

    def __init__(self, in_features: int = 6, out_features: int = 3) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, 8)
        self.head = nn.Linear(8, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(torch.relu(self.hidden(x))))


MODEL_FILE = textwrap.dedent('''
    import torch
    from torch import nn


    class DigitsMLP(nn.Module):
        def __init__(self, num_classes=10, width=32):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, width), nn.ReLU())
            self.head = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.head(self.body(x))


    class SigmoidMLP(DigitsMLP):
        def forward(self, x):
            return torch.sigmoid(super().forward(x))


    class NarrowMLP(nn.Module):
        """Last hidden layer of `width` units, far fewer than the training examples."""

        def __init__(self, num_classes=10, width=8):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, width), nn.ReLU())
            self.head = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.head(self.body(x))


    def make_wrong_size():
        return DigitsMLP(num_classes=7)
''')


def write_model_file(folder: Path) -> Path:
    path = folder / "models.py"
    path.write_text(MODEL_FILE)
    return path
