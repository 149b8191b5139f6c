"""Record the torch operations of one forward pass, in execution order.

The structure check needs to know which operation is the last one that
consumes a trainable parameter (the last affine map, for ordinary networks)
and which nonlinear operations run after it, because a nonlinearity there is
what breaks the common model structure assumption. The recorder sees
functional calls as well as modules (`torch.sigmoid` in a `forward` as much as
`nn.Sigmoid`) because it intercepts every torch function through
`TorchFunctionMode`, and it names the module that made each call through
forward hooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

# Operations that are linear in their tensor inputs, or only move or select
# entries, or are the identity in eval mode. Anything else that runs after the
# last parameter-consuming operation can break the structure assumption.
LINEAR_OR_SHAPE_OPS = frozenset({
    "__getitem__", "__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__isub__", "__neg__",
    "add", "add_", "sub", "sub_", "neg", "sum", "mean", "cat", "stack", "concat", "concatenate",
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "squeeze", "unsqueeze",
    "permute", "transpose", "t", "contiguous", "expand", "expand_as", "repeat", "narrow", "select",
    "split", "chunk", "unbind", "clone", "detach", "to", "float", "double", "half", "type", "type_as",
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "identity", "pad", "roll", "flip", "movedim", "swapaxes", "squeeze_", "unsqueeze_",
    "size", "dim", "numel", "shape", "dtype", "device", "__len__", "__format__", "__repr__",
})

# Multiplication or division by something that is not a tensor is a scaling,
# which keeps linearity; with two tensors it does not.
SCALING_OPS = frozenset({"__mul__", "__rmul__", "__imul__", "mul", "mul_", "__truediv__", "__itruediv__", "div", "div_"})


@dataclass
class OpRecord:
    """One torch call made during the traced forward pass."""

    index: int
    name: str
    module: str
    module_type: str
    # Qualified names of the trainable parameters passed to the call.
    parameters: list[str] = field(default_factory=list)

    def describe(self) -> str:
        where = f"module {self.module!r} ({self.module_type})" if self.module else f"the forward of {self.module_type}"
        return f"{self.name} in {where}"


@dataclass
class ForwardTrace:
    """The ordered operations of one forward pass and what follows the last affine map."""

    ops: list[OpRecord]
    last_parametric: OpRecord | None
    # Operations after the last parameter-consuming one that are not linear.
    nonlinear_after_last: list[OpRecord]

    @property
    def ends_affine(self) -> bool:
        return self.last_parametric is not None and not self.nonlinear_after_last


def _is_tensor(value: object) -> bool:
    return isinstance(value, torch.Tensor)


class _Recorder(TorchFunctionMode):
    def __init__(self, parameter_names: dict[int, str], module_stack: list[tuple[str, str]]) -> None:
        super().__init__()
        self.parameter_names = parameter_names
        self.module_stack = module_stack
        self.ops: list[OpRecord] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name == "__get__":
            # Attribute reads such as `tensor.shape` or `tensor.grad`.
            return func(*args, **kwargs)

        used = []
        tensor_args = 0
        for value in list(args) + list(kwargs.values()):
            candidates = value if isinstance(value, (list, tuple)) else [value]
            for item in candidates:
                if _is_tensor(item):
                    tensor_args += 1
                    if id(item) in self.parameter_names:
                        used.append(self.parameter_names[id(item)])

        if name in SCALING_OPS and tensor_args < 2 and not used:
            name = "scale"
        module, module_type = self.module_stack[-1] if self.module_stack else ("", "")
        self.ops.append(OpRecord(index=len(self.ops), name=name, module=module, module_type=module_type, parameters=used))
        return func(*args, **kwargs)


def trace_forward(model: nn.Module, sample: torch.Tensor) -> ForwardTrace:
    """Run `model(sample)` once without gradients and record its operations.

    The model is put in eval mode for the call and restored afterwards.
    """
    parameter_names = {id(p): name for name, p in model.named_parameters() if p.requires_grad}
    module_stack: list[tuple[str, str]] = [("", type(model).__name__)]
    handles = []
    for qualified_name, submodule in model.named_modules():
        if not qualified_name:
            continue

        def push(_module, _inputs, name=qualified_name, kind=type(submodule).__name__):
            module_stack.append((name, kind))

        def pop(_module, _inputs, _output):
            module_stack.pop()

        handles.append(submodule.register_forward_pre_hook(push))
        handles.append(submodule.register_forward_hook(pop))

    was_training = model.training
    model.eval()
    recorder = _Recorder(parameter_names, module_stack)
    try:
        with torch.no_grad(), recorder:
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    ops = recorder.ops
    parametric = [op for op in ops if op.parameters]
    last = parametric[-1] if parametric else None
    after = ops[last.index + 1:] if last is not None else ops
    nonlinear = [op for op in after if op.name not in LINEAR_OR_SHAPE_OPS and op.name != "scale"]
    return ForwardTrace(ops=ops, last_parametric=last, nonlinear_after_last=nonlinear)
