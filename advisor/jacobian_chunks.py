"""Per-example Jacobian chunks with fully connected layers kept in factored form.

For an `nn.Linear` layer applied once to a batch of vectors, the Jacobian of
output m of example n with respect to its weight W (O, I) is the outer
product g_{n,m} a_nᵀ: a_n (I,) is the layer's input and g_{n,m} (O,) the
derivative of that output with respect to the layer's output, which is also
the Jacobian with respect to the bias. Between two Jacobian rows, the
layer's share of the Gram matrix J Jᵀ is therefore

    (g_{n,m} · g_{n',m'}) · (a_n · a_{n'} + 1)      (+ 1 only with a trainable bias)

which costs O + I numbers per row instead of O·(I + 1). The derivatives g
come from the same vmap(jacrev) pass as the other parameters' Jacobians: a
zero vector added to the layer's output is differentiated in place of the
layer's parameters.

Layers take the factored form only when they are exactly `nn.Linear`, called
once per forward with a 2-D (batch, features) input, and own their
parameters (no weight tying). Everything else stays in the dense chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LinearFactor:
    """A fully connected layer whose Jacobian is kept as signals and inputs."""

    name: str
    out_features: int
    in_features: int
    weight: str  # parameter name of W (O, I)
    bias: str | None  # parameter name of b (O,), None without a trainable bias


def factorable_linears(model: nn.Module, probe: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, LinearFactor]:
    """Find the `nn.Linear` layers of `model` whose Jacobian can be kept factored.

    `probe` (B, ...) is run once through the model to count each layer's calls
    and the rank of its input. `params` are the trainable parameters by name.
    """
    owners: dict[int, int] = {}
    for module in model.modules():
        for tensor in module._parameters.values():
            if tensor is not None:
                owners[id(tensor)] = owners.get(id(tensor), 0) + 1

    calls: dict[str, list[int]] = {}
    handles = []
    for name, module in model.named_modules():
        if type(module) is nn.Linear:
            def count(_module, args, _output, name=name):
                calls.setdefault(name, []).append(args[0].dim() if args and torch.is_tensor(args[0]) else -1)
            handles.append(module.register_forward_hook(count))
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()

    factors = {}
    for name, ranks in calls.items():
        module = model.get_submodule(name)
        weight = f"{name}.weight"
        bias = f"{name}.bias" if module.bias is not None else None
        owned = [module.weight] + ([module.bias] if module.bias is not None else [])
        if ranks != [2] or weight not in params or any(owners.get(id(t), 0) != 1 for t in owned):
            continue
        if bias is not None and bias not in params:
            bias = None  # a frozen bias contributes no Jacobian columns
        factors[name] = LinearFactor(name, module.out_features, module.in_features, weight, bias)
    return factors


def gram_row_width(params: dict[str, torch.Tensor], factors: dict[str, LinearFactor]) -> int:
    """Return the values per Jacobian row that the Gram route stores and multiplies.

    That is P, less the factored layers' parameters, plus each factored
    layer's O + I (its input is stored once per example but counted per row).
    """
    factored = sum(params[f.weight].numel() + (f.out_features if f.bias else 0) for f in factors.values())
    return sum(p.numel() for p in params.values()) - factored + sum(f.out_features + f.in_features for f in factors.values())


@dataclass
class JacobianChunk:
    """Jacobian rows of B examples (B·M rows, examples outer, outputs inner).

    `dense` (B·M, P_dense) contains the columns of every parameter outside the
    factored layers, `signals[layer]` (B·M, O) the derivatives g and
    `inputs[layer]` (B, I) the layer inputs a.
    """

    n_outputs: int
    dense: torch.Tensor
    signals: dict[str, torch.Tensor]
    inputs: dict[str, torch.Tensor]

    def examples(self, start: int, stop: int) -> JacobianChunk:
        """Return the rows of examples start ≤ n < stop of this chunk."""
        M = self.n_outputs
        return JacobianChunk(M, self.dense[start * M:stop * M], {k: v[start * M:stop * M] for k, v in self.signals.items()},
                             {k: v[start:stop] for k, v in self.inputs.items()})

    @staticmethod
    def cat(chunks: list[JacobianChunk]) -> JacobianChunk:
        """Return the rows of `chunks` stacked in order."""
        first = chunks[0]
        return JacobianChunk(first.n_outputs, torch.cat([c.dense for c in chunks]),
                             {k: torch.cat([c.signals[k] for c in chunks]) for k in first.signals},
                             {k: torch.cat([c.inputs[k] for c in chunks]) for k in first.inputs})

    def gram_with(self, other: JacobianChunk, factors: dict[str, LinearFactor]) -> torch.Tensor:
        """Return J_self J_otherᵀ (B·M, B'·M) without forming the factored layers' columns."""
        M = self.n_outputs
        block = self.dense @ other.dense.T
        B, B_other = self.dense.shape[0] // M, other.dense.shape[0] // M
        for name, factor in factors.items():
            inner = self.inputs[name] @ other.inputs[name].T  # (B, B')
            if factor.bias is not None:
                inner = inner + 1.0
            # Each (example, example') entry of `inner` multiplies an M × M
            # block of the signal Gram. A broadcast over a (B, M, B', M) view
            # avoids a (B·M, B'·M) copy of `inner`.
            product = self.signals[name] @ other.signals[name].T  # (B·M, B'·M)
            product.view(B, M, B_other, M).mul_(inner[:, None, :, None])
            block += product
            del product
        return block

    def full(self, order: list[tuple[str, int]], factors: dict[str, LinearFactor]) -> torch.Tensor:
        """Return the explicit rows (B·M, P), columns in `order` (parameter name, size)."""
        M = self.n_outputs
        columns: dict[str, torch.Tensor] = {}
        for name, factor in factors.items():
            signal = self.signals[name]  # (B·M, O)
            inputs = self.inputs[name].repeat_interleave(M, dim=0)  # (B·M, I)
            columns[factor.weight] = (signal[:, :, None] * inputs[:, None, :]).reshape(signal.shape[0], -1)
            if factor.bias is not None:
                columns[factor.bias] = signal
        offset = 0
        pieces = []
        for name, size in order:
            if name in columns:
                pieces.append(columns[name])
            else:
                pieces.append(self.dense[:, offset:offset + size])
                offset += size
        return torch.cat(pieces, dim=1)
