"""Import an ONNX model as a PyTorch module the analysis can differentiate.

The conversion is onnx2torch's. Around it, this module makes every
floating-point initializer that acts as a weight a trainable `nn.Parameter`
named after that initializer, names parameter-free modules after their ONNX
nodes (so the structure check can name, say, the final Softmax node), runs
graphs with a fixed batch of one example at a time, and measures how far the
converted module is from an ONNX runtime on sample inputs.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import fx, nn

from advisor.errors import ModelSpecError, ShapeMismatchError
from advisor.models.files import DEFAULT_MAX_MODEL_BYTES
from advisor.models.loaded import LoadedModel
from advisor.models.onnx_graph import (
    DEFAULT_DOMAIN,
    GraphInput,
    constants_to_initializers,
    cut_final_activations,
    graph_signature,
    load_onnx_model,
    opset_versions,
    describe_unsupported,
    unsupported_operators,
    untie_identity_weights,
    weight_initializer_names,
)

logger = logging.getLogger(__name__)

# Container module for weights whose initializer name is not a free module path.
FALLBACK_CONTAINER = "onnx_initializers"
# Attribute names a converted module uses for tensors that come from ONNX inputs 1 to 4.
ROLE_INPUT_INDEX = {"weight": 1, "bias": 2, "running_mean": 3, "running_var": 4}
# Above this difference, relative to the reference output's scale, the
# conversion gets a caveat. NOTE: a judgment for float32 networks of modest
# depth, where conversions that match give differences near 1e-6.
CONVERSION_TOLERANCE = 1e-4
N_SAMPLE_INPUTS = 2


class ExampleLoop(nn.Module):
    """Run a converted graph one example at a time and stack the outputs.

    For graphs whose batch size is fixed at one (`add_batch_axis`) or that
    have no batch axis. The graph's submodules are adopted directly, so
    parameter names are the same as on the graph itself.
    """

    def __init__(self, graph_module: fx.GraphModule, add_batch_axis: bool) -> None:
        super().__init__()
        for name, child in graph_module.named_children():
            self.add_module(name, child)
        for name, parameter in graph_module.named_parameters(recurse=False):
            self.register_parameter(name, parameter)
        for name, buffer in graph_module.named_buffers(recurse=False):
            self.register_buffer(name, buffer)
        self.graph_forward = type(graph_module).forward
        self.add_batch_axis = add_batch_axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for index in range(x.shape[0]):
            example = x[index:index + 1] if self.add_batch_axis else x[index]
            output = self.graph_forward(self, example)
            outputs.append(output[0] if self.add_batch_axis else output)
        return torch.stack(outputs)


def _install(root: nn.Module, path: str, created: set[int], *, module: nn.Module | None = None, parameter: nn.Parameter | None = None) -> bool:
    """Place `module` or `parameter` at the dotted `path` under `root` when the path is free.

    Intermediate containers are created as plain modules and remembered in
    `created`, and only those may be reused, so nothing is ever attached
    inside a converted operator. Returns False when the path is taken.
    """
    parts = path.split(".")
    if any(not part or "/" in part or ":" in part for part in parts):
        return False
    parent = root
    for part in parts[:-1]:
        child = parent._modules.get(part)
        if child is None:
            if hasattr(parent, part):
                return False
            child = nn.Module()
            parent.add_module(part, child)
            created.add(id(child))
        elif id(child) not in created:
            return False
        parent = child

    leaf = parts[-1]
    if hasattr(parent, leaf):
        return False
    if module is not None:
        parent.add_module(leaf, module)
    else:
        parent.register_parameter(leaf, parameter)
    return True


def _fallback_name(container: nn.Module, onnx_name: str) -> str:
    base = re.sub(r"\W", "_", onnx_name) or "initializer"
    name, suffix = base, 1
    while hasattr(container, name):
        suffix += 1
        name = f"{base}_{suffix}"
    return name


def _initializer_uses(graph_module: fx.GraphModule, onnx_nodes: list[tuple[str, onnx.NodeProto]], initializer_names: set[str]) -> dict[str, tuple[str, int, str]]:
    """Map each onnx2torch buffer `onnx_initializer_K` to (initializer name, ONNX input index, op type).

    onnx2torch creates one buffer per use of an initializer, numbered in node
    order and, within a node, in the order of the node's mapped inputs, which
    is the order replayed here.
    """
    uses = {}
    counter = 0
    for unique_name, node in onnx_nodes:
        mapping = getattr(graph_module.get_submodule(unique_name), "onnx_mapping", None)
        if mapping is None:
            continue
        for value in mapping.inputs:
            if value in initializer_names:
                index = list(node.input).index(value)
                uses[f"onnx_initializer_{counter}"] = (value, index, node.op_type)
                counter += 1
    return uses


def name_parameters(graph_module: fx.GraphModule, model: onnx.ModelProto) -> tuple[dict[str, str], int]:
    """Make weight initializers trainable parameters named after them, and name other modules after their nodes.

    Returns (sources, n_untied): `sources` maps each parameter's qualified
    name to its ONNX initializer, and `n_untied` counts weight initializers
    read by more than one node whose uses became separate parameters.
    """
    from onnx2torch.onnx_graph import OnnxGraph

    onnx_nodes = list(zip(OnnxGraph(model.graph).nodes, model.graph.node))
    initializer_names = {tensor.name for tensor in model.graph.initializer}
    weight_names = weight_initializer_names(model)
    created: set[int] = set()
    sources: dict[str, str] = {}
    renamed: dict[str, str] = {}
    absorbed_uses: dict[str, int] = {}

    # Operators that absorbed their weights (Conv, Linear from Gemm, BatchNorm):
    # move each to the module path its initializers name, when there is one.
    for unique_name, node in onnx_nodes:
        module = graph_module.get_submodule(unique_name)
        own = dict(module.named_parameters(recurse=False))
        roles = {**own, **dict(module.named_buffers(recurse=False))}
        role_sources = {role: node.input[ROLE_INPUT_INDEX[role]] for role in roles
                        if role in ROLE_INPUT_INDEX and ROLE_INPUT_INDEX[role] < len(node.input)}
        if not own:
            taken = hasattr(graph_module, node.name) or node.name in renamed.values()
            if node.name and "." not in node.name and node.name != unique_name and not taken:
                renamed[unique_name] = node.name
            continue
        for role in own:
            if role in role_sources:
                absorbed_uses[role_sources[role]] = absorbed_uses.get(role_sources[role], 0) + 1
        prefixes = {source.rsplit(".", 1)[0] for role, source in role_sources.items() if source.endswith("." + role)}
        path = None
        if len(prefixes) == 1 and all(source.endswith("." + role) for role, source in role_sources.items()) and set(own) <= set(role_sources):
            path = prefixes.pop()
        target = unique_name
        if path is not None and _install(graph_module, path, created, module=module):
            target = path
            renamed[unique_name] = path
        for role in own:
            sources[f"{target}.{role}"] = role_sources.get(role, f"{node.name or node.op_type}:{role}")

    # Initializers that reach their node as a buffer (MatMul, Gemm without
    # a Linear, Add): make the weight-like ones parameters, one per initializer.
    uses = _initializer_uses(graph_module, onnx_nodes, initializer_names)
    # GraphModule keeps only the submodules its graph reads, so the buffer container may be absent.
    container = getattr(graph_module, "initializers", None)
    fallback = nn.Module()
    promoted: dict[str, str] = {}
    for fx_node in graph_module.graph.nodes:
        if container is None or fx_node.op != "get_attr" or not fx_node.target.startswith("initializers."):
            continue
        buffer_name = fx_node.target.split(".", 1)[1]
        if buffer_name not in uses:
            continue
        onnx_name, _, _ = uses[buffer_name]
        buffer = getattr(container, buffer_name)
        if onnx_name not in weight_names or not buffer.is_floating_point():
            continue
        if onnx_name not in promoted:
            parameter = nn.Parameter(buffer.detach().clone())
            if _install(graph_module, onnx_name, created, parameter=parameter):
                promoted[onnx_name] = onnx_name
            else:
                name = _fallback_name(fallback, onnx_name)
                fallback.register_parameter(name, parameter)
                promoted[onnx_name] = f"{FALLBACK_CONTAINER}.{name}"
            sources[promoted[onnx_name]] = onnx_name
        fx_node.target = promoted[onnx_name]
        delattr(container, buffer_name)
    if len(fallback._parameters):
        graph_module.add_module(FALLBACK_CONTAINER, fallback)

    moved = set(renamed.values()) & {path for path in sources_paths(sources)}
    for fx_node in graph_module.graph.nodes:
        if fx_node.op != "call_module" or fx_node.target not in renamed:
            continue
        old, new = fx_node.target, renamed[fx_node.target]
        if new not in moved:
            if hasattr(graph_module, new):
                continue
            graph_module.add_module(new, graph_module.get_submodule(old))
        fx_node.target = new
        delattr(graph_module, old)
    for module in graph_module.modules():
        if hasattr(module, "onnx_mapping"):
            del module.onnx_mapping
    graph_module.graph.lint()
    graph_module.recompile()

    n_untied = sum(1 for count in absorbed_uses.values() if count > 1)
    return sources, n_untied


def sources_paths(sources: dict[str, str]) -> set[str]:
    """Module paths of the parameters in `sources` (the qualified names without their last part)."""
    return {name.rsplit(".", 1)[0] for name in sources if "." in name}


def _sample_inputs(shape: tuple[int, ...], n_examples: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn((n_examples, *shape), generator=generator)


def _reference_outputs(model: onnx.ModelProto, signature: GraphInput, x: np.ndarray, reference: str) -> tuple[np.ndarray, str]:
    """Run the ONNX model on `x` (N, ...) with onnxruntime, or onnx's reference evaluator.

    `reference` is "auto" (onnxruntime when installed), "onnxruntime" or
    "onnx-reference". Graphs without a dynamic batch axis run one example
    at a time. Returns (outputs (N, ...), the name of the runtime used).
    """
    elem_type = model.graph.input[[v.name for v in model.graph.input].index(signature.name)].type.tensor_type.elem_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    run = None
    runtime = ""
    if reference in ("auto", "onnxruntime"):
        try:
            import onnxruntime
        except ImportError:
            if reference == "onnxruntime":
                raise
        else:
            session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            run = lambda batch: session.run(None, {signature.name: batch})[0]  # noqa: E731
            runtime = f"onnxruntime {onnxruntime.__version__}"
    if run is None:
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(model)
        run = lambda batch: evaluator.run(None, {signature.name: batch})[0]  # noqa: E731
        runtime = f"onnx.reference.ReferenceEvaluator (onnx {onnx.__version__})"

    x = x.astype(dtype)
    if signature.has_batch_axis and signature.dims[0] is None:
        return np.asarray(run(x)), runtime
    if signature.has_batch_axis:
        return np.concatenate([np.asarray(run(x[i:i + 1])) for i in range(x.shape[0])]), runtime
    return np.stack([np.asarray(run(x[i])) for i in range(x.shape[0])]), runtime


def _model_input_shape(spec: str, signature: GraphInput, data_shape: tuple[int, ...], override: tuple[int, ...] | None) -> tuple[int, ...]:
    """Return the per-example input shape: the override, else the graph's with symbolic dimensions taken from the data."""
    if override is not None:
        declared = tuple(int(d) for d in override)
    else:
        dims = signature.dims[1:] if signature.has_batch_axis else signature.dims
        if len(dims) == len(data_shape):
            declared = tuple(d if d is not None else data_shape[i] for i, d in enumerate(dims))
        elif any(d is None for d in dims):
            raise ModelSpecError(spec, f"graph input {signature.name!r} has dimensions {signature.dims} with unknown sizes", "Pass the per-example input shape (--input-shape C,H,W).")
        else:
            declared = tuple(dims)
    if declared != tuple(data_shape):
        raise ShapeMismatchError(
            "input shape", f"inputs of shape {declared} (graph input {signature.name!r}: {signature.dims})",
            f"inputs of shape {tuple(data_shape)}",
            "Use data with the model's input shape, or a model exported for the data's shape.",
            model_verb="expects", data_verb="has",
        )
    return declared


def _runs_batched(module: nn.Module, shape: tuple[int, ...]) -> bool:
    x = _sample_inputs(shape, N_SAMPLE_INPUTS)
    try:
        with torch.no_grad():
            output = module.eval()(x)
    except Exception as error:  # converted operators raise RuntimeError, ValueError and others on a batch they do not expect
        logger.debug("converted graph fails on a batch of %d: %s", N_SAMPLE_INPUTS, error)
        return False
    return isinstance(output, torch.Tensor) and output.ndim >= 1 and output.shape[0] == N_SAMPLE_INPUTS


def load_onnx(
    spec: str,
    path: Path,
    *,
    input_shape: tuple[int, ...],
    logits: bool = False,
    max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    input_shape_override: tuple[int, ...] | None = None,
    reference: str = "auto",
) -> LoadedModel:
    """Load the ONNX file at `path` as a differentiable module for inputs of `input_shape` (per example).

    With `logits`, trailing Softmax, LogSoftmax and Sigmoid nodes are removed
    first. `reference` picks the runtime the conversion is compared with
    ("auto", "onnxruntime", "onnx-reference"). Raises ModelSpecError for
    unreadable, unsafe, oversized or unsupported graphs, and
    ShapeMismatchError when the graph's input shape differs from the data's.
    """
    model = load_onnx_model(spec, path, max_bytes=max_bytes)
    return import_onnx_model(spec, model, source=str(path), input_shape=input_shape, logits=logits,
                             input_shape_override=input_shape_override, reference=reference)


def import_onnx_model(
    spec: str,
    model: onnx.ModelProto,
    *,
    source: str,
    input_shape: tuple[int, ...],
    logits: bool = False,
    input_shape_override: tuple[int, ...] | None = None,
    reference: str = "auto",
) -> LoadedModel:
    """Convert a checked ONNX model (read from `source`) as `load_onnx` describes; `model` is modified."""
    versions = opset_versions(model)
    missing = unsupported_operators(model)
    if missing:
        error = ModelSpecError(
            spec, f"{len(missing)} node(s) of {source} use operators the ONNX converter does not support: {describe_unsupported(missing)}",
            "Re-export the model with supported operators (a newer opset often helps), or pass the PyTorch source as file.py:NAME.",
        )
        error.unsupported = missing
        raise error
    signature = graph_signature(spec, model)
    shape = _model_input_shape(spec, signature, input_shape, input_shape_override)

    details: dict[str, Any] = {
        "onnx_opset": versions.get(DEFAULT_DOMAIN),
        "onnx_ir_version": int(model.ir_version),
        "onnx_producer": " ".join(part for part in (model.producer_name, model.producer_version) if part),
        "input_shape": list(shape),
    }
    caveats: list[str] = []
    untie_identity_weights(model)
    constants_to_initializers(model)
    if logits:
        removed = cut_final_activations(model)
        details["logits_cut"] = [f"{op} node {name!r}" for op, name in reversed(removed)]
        if removed:
            names = ", ".join(f"{op} node {name!r}" for op, name in reversed(removed))
            caveats.append(f"Analysed up to the logits: the graph's final {names} was removed, so the results describe the model before that activation.")
        else:
            logger.info("%s: logits=True had no effect because the graph does not end in Softmax, LogSoftmax or Sigmoid", spec)

    from onnx2torch import convert

    try:
        graph_module = convert(model, attach_onnx_mapping=True)
    except Exception as error:  # onnx2torch raises NotImplementedError, KeyError and others for node forms it lacks
        raise ModelSpecError(spec, f"converting {source} to PyTorch failed ({type(error).__name__}: {error})", "Re-export the model, or pass the PyTorch source as file.py:NAME.") from error
    sources, n_untied = name_parameters(graph_module, model)
    details["onnx_parameter_sources"] = sources
    if not sources:
        caveats.append("The graph has no weight initializers, so the converted model has no trainable parameters.")
    if n_untied:
        caveats.append(f"{n_untied} weight initializer(s) read by several nodes became separate parameters, so tied weights are analysed as untied.")

    module: nn.Module = graph_module
    if not signature.has_batch_axis:
        module = ExampleLoop(graph_module, add_batch_axis=False)
        details["batch"] = "none: run one example at a time"
        caveats.append("The graph has no batch axis, so the advisor runs it one example at a time.")
    elif not _runs_batched(graph_module, shape):
        module = ExampleLoop(graph_module, add_batch_axis=True)
        details["batch"] = "fixed at 1: run one example at a time"
        caveats.append("The graph fixes its batch size at 1, so the advisor runs it one example at a time.")
    else:
        details["batch"] = "dynamic" if signature.dims[0] is None else "declared 1, runs batched"
    if not _runs_batched(module, shape):
        raise ModelSpecError(spec, f"the converted model fails on inputs of shape {shape}", "Check that the model accepts a batch of such inputs in onnxruntime.")

    _compare_with_runtime(model, signature, module, shape, reference, details, caveats)
    module.eval()
    return LoadedModel(module=module, spec=spec, kind="onnx", details=details, caveats=caveats)


def _compare_with_runtime(model: onnx.ModelProto, signature: GraphInput, module: nn.Module, shape: tuple[int, ...], reference: str, details: dict[str, Any], caveats: list[str]) -> None:
    """Store the converted module's maximum output difference from an ONNX runtime in `details`."""
    x = _sample_inputs(shape, N_SAMPLE_INPUTS)
    with torch.no_grad():
        converted = module.eval()(x).to(torch.float64).numpy()
    try:
        expected, runtime = _reference_outputs(model, signature, x.numpy(), reference)
    except Exception as error:  # runtimes raise their own exception types for graphs they reject
        details["conversion_reference"] = None
        details["conversion_max_abs_diff"] = None
        caveats.append(f"The conversion could not be compared with an ONNX runtime ({type(error).__name__}: {error}).")
        return

    expected = expected.astype(np.float64).reshape(converted.shape)
    difference = float(np.max(np.abs(converted - expected))) if expected.size else 0.0
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    details["conversion_reference"] = runtime
    details["conversion_max_abs_diff"] = difference
    details["conversion_n_examples"] = N_SAMPLE_INPUTS
    if difference > CONVERSION_TOLERANCE * (1.0 + scale):
        caveats.append(f"The converted model differs from {runtime} by up to {difference:.3g} on sample inputs (output scale {scale:.3g}), so its results may not describe the ONNX model.")
