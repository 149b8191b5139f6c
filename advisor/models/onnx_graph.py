"""Read, validate and rewrite an ONNX graph before it is converted to PyTorch.

Everything here works on the `onnx.ModelProto` and never touches torch
modules. It loads files safely (a size limit, external data confined to the
model's folder), runs the checker, lists the operators the converter lacks
and reads the input signature. Three rewrites make the converted module
analysable: copies of deduplicated weights, Constant weights made
initializers, and the optional cut at the logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import onnx
from onnx import TensorProto, numpy_helper
from onnx.external_data_helper import _get_all_tensors, uses_external_data

from advisor.errors import ModelSpecError
from advisor.models.files import check_size, require_file

DEFAULT_DOMAIN = ""
# Final activations that `logits=True` removes from the end of a graph.
FINAL_ACTIVATIONS = frozenset({"Softmax", "LogSoftmax", "Sigmoid"})
FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16})

# (op_type, input index) pairs whose floating-point constant operand is a
# weight of the model; None means any input. Add operands count only when
# they have at least one axis, so that a scalar epsilon stays fixed.
WEIGHT_INPUTS: dict[str, frozenset[int] | None] = {
    "MatMul": None,
    "Gemm": None,
    "Conv": frozenset({1, 2}),
    "ConvTranspose": frozenset({1, 2}),
    "BatchNormalization": frozenset({1, 2}),
    "InstanceNormalization": frozenset({1, 2}),
    "LayerNormalization": frozenset({1, 2}),
    "PRelu": frozenset({1}),
    "Add": None,
}


@dataclass
class GraphInput:
    """The single tensor input of a graph: its name and declared dimensions.

    Each dimension is an int, or None when it is symbolic or unknown.
    """

    name: str
    dims: list[int | None]

    @property
    def has_batch_axis(self) -> bool:
        """Whether the first axis is the batch: rank 2 or more and a first dimension that is symbolic or 1."""
        return len(self.dims) >= 2 and self.dims[0] in (None, 1)


@dataclass
class UnsupportedOperator:
    node_name: str
    domain: str
    op_type: str
    opset: int | None

    @property
    def qualified_name(self) -> str:
        return f"{self.domain}.{self.op_type}" if self.domain else self.op_type


def describe_unsupported(missing: list[UnsupportedOperator]) -> str:
    """Describe unsupported nodes grouped by operator and opset, naming every node."""
    groups: dict[tuple[str, int | None], list[str]] = {}
    for op in missing:
        groups.setdefault((op.qualified_name, op.opset), []).append(op.node_name)
    parts = []
    for (name, opset), nodes in groups.items():
        version = f"opset {opset}" if opset is not None else "its domain is not imported"
        label = "node" if len(nodes) == 1 else "nodes"
        parts.append(f"{name} at {version} ({label} {', '.join(nodes)})")
    return "; ".join(parts)


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return repr(node.name) if node.name else f"#{index} (unnamed)"


def _external_locations(model: onnx.ModelProto) -> list[str]:
    locations = []
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            entries = {entry.key: entry.value for entry in tensor.external_data}
            locations.append(entries.get("location", ""))
    return locations


def _resolve_external(spec: str, path: Path, location: str) -> Path:
    """Resolve an external-data location to a file inside the model's folder, or raise."""
    folder = path.parent.resolve()
    fix = "Move the external data file next to the model and re-save it with a relative location (onnx.save_model(..., location=NAME))."
    pure = PurePosixPath(location.replace("\\", "/"))
    if not location or pure.is_absolute() or Path(location).is_absolute() or ".." in pure.parts:
        raise ModelSpecError(spec, f"{path} names external data at {location!r}, which is not a relative path inside {folder}", fix)
    target = (folder / pure).resolve()
    if not target.is_relative_to(folder):
        raise ModelSpecError(spec, f"{path} names external data at {location!r}, which resolves to {target} outside {folder}", fix)
    if not target.is_file():
        raise ModelSpecError(spec, f"external data file {target} named by {path} not found", "Put the data file next to the model.")
    return target


def load_onnx_model(spec: str, path: Path, *, max_bytes: int) -> onnx.ModelProto:
    """Load and check the ONNX file at `path`, with its external data.

    Raises ModelSpecError when the file is missing, larger than `max_bytes`
    (together with its external data), unreadable, names external data
    outside its own folder, or fails `onnx.checker.check_model`.
    """
    require_file(spec, path, "ONNX file")
    check_size(spec, [path], max_bytes)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises DecodeError and others on a damaged file
        raise ModelSpecError(
            spec, f"{path} is not a readable ONNX file ({type(error).__name__}: {error}); it may be truncated or corrupt",
            "Export or download the model again.",
        ) from error

    locations = sorted(set(_external_locations(model)))
    if locations:
        data_files = [_resolve_external(spec, path, location) for location in locations]
        check_size(spec, [path, *data_files], max_bytes)
        try:
            onnx.load_external_data_for_model(model, str(path.parent.resolve()))
        except Exception as error:  # a short or damaged data file raises from numpy or protobuf
            raise ModelSpecError(spec, f"reading the external data of {path} failed ({error})", "Save the model and its data again.") from error

    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelSpecError(spec, f"{path} fails the ONNX checker: {first_line}", "Export the model again with a current exporter.") from error
    return model


def opset_versions(model: onnx.ModelProto) -> dict[str, int]:
    """Map each imported operator domain to its opset version ("ai.onnx" counts as the default domain)."""
    versions = {}
    for entry in model.opset_import:
        domain = DEFAULT_DOMAIN if entry.domain in ("", "ai.onnx") else entry.domain
        versions[domain] = int(entry.version)
    return versions


def unsupported_operators(model: onnx.ModelProto) -> list[UnsupportedOperator]:
    """List every node whose operator onnx2torch cannot convert at the model's opset."""
    from onnx2torch.node_converters import get_converter

    versions = opset_versions(model)
    missing = []
    for index, node in enumerate(model.graph.node):
        domain = DEFAULT_DOMAIN if node.domain in ("", "ai.onnx") else node.domain
        version = versions.get(domain)
        if version is not None:
            try:
                get_converter(operation_type=node.op_type, version=version, domain=domain)
                continue
            except NotImplementedError:
                pass
        missing.append(UnsupportedOperator(_node_label(node, index), domain, node.op_type, version))
    return missing


def graph_signature(spec: str, model: onnx.ModelProto) -> GraphInput:
    """Return the graph's single floating-point input, or raise ModelSpecError."""
    graph = model.graph
    initializer_names = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializer_names]
    fix_single = "Export the model with one input tensor (B, ...) and one output tensor (B, outputs)."
    if len(inputs) != 1:
        raise ModelSpecError(spec, f"the graph has {len(inputs)} inputs ({', '.join(v.name for v in inputs)}) but the advisor analyses models with one", fix_single)
    if len(graph.output) != 1:
        raise ModelSpecError(spec, f"the graph has {len(graph.output)} outputs ({', '.join(v.name for v in graph.output)}) but the advisor analyses models with one", fix_single)

    value = inputs[0]
    if not value.type.HasField("tensor_type"):
        raise ModelSpecError(spec, f"graph input {value.name!r} is not a tensor", fix_single)
    tensor_type = value.type.tensor_type
    if tensor_type.elem_type not in FLOAT_TYPES:
        type_name = TensorProto.DataType.Name(tensor_type.elem_type)
        raise ModelSpecError(spec, f"graph input {value.name!r} has element type {type_name}, not a floating-point type", "The advisor differentiates through the input path, so it needs float inputs.")
    dims = [dim.dim_value if dim.HasField("dim_value") else None for dim in tensor_type.shape.dim]
    return GraphInput(name=value.name, dims=dims)


def untie_identity_weights(model: onnx.ModelProto) -> int:
    """Replace each Identity of an initializer with a copy of that initializer, named after the Identity's output.

    The PyTorch exporter stores equal tensors once and recreates the others
    with Identity nodes (all fresh BatchNorm scales are ones, for example), so
    without this step layers that are separate in the source model would
    share one tensor. Returns the number of nodes replaced.
    """
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    kept, replaced = [], 0
    for node in graph.node:
        if node.op_type == "Identity" and node.domain in ("", "ai.onnx") and node.input[0] in initializers:
            copy = TensorProto()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
            initializers[copy.name] = copy
            replaced += 1
        else:
            kept.append(node)
    if replaced:
        del graph.node[:]
        graph.node.extend(kept)
    return replaced


def _is_weight_input(op_type: str, index: int) -> bool:
    if op_type not in WEIGHT_INPUTS:
        return False
    indices = WEIGHT_INPUTS[op_type]
    return indices is None or index in indices


def weight_initializer_names(model: onnx.ModelProto) -> set[str]:
    """Names of the floating-point initializers that feed a weight input of some node."""
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    names = set()
    for node in model.graph.node:
        for index, value in enumerate(node.input):
            tensor = initializers.get(value)
            if tensor is None or tensor.data_type not in FLOAT_TYPES or not _is_weight_input(node.op_type, index):
                continue
            if node.op_type == "Add" and len(tensor.dims) == 0:
                continue
            names.add(value)
    return names


def constants_to_initializers(model: onnx.ModelProto) -> int:
    """Turn Constant nodes whose float tensor feeds a weight input into initializers.

    onnx2torch builds convolutions only from initializers, and only an
    initializer can become a trainable parameter. Returns the number moved.
    """
    graph = model.graph
    weight_values = {
        value for node in graph.node for index, value in enumerate(node.input) if _is_weight_input(node.op_type, index)
    }
    kept, moved = [], 0
    for node in graph.node:
        attributes = {attribute.name: attribute for attribute in node.attribute}
        if node.op_type == "Constant" and node.output[0] in weight_values and "value" in attributes:
            tensor = attributes["value"].t
            if tensor.data_type in FLOAT_TYPES:
                array = numpy_helper.to_array(tensor)
                graph.initializer.append(numpy_helper.from_array(array, name=node.output[0]))
                moved += 1
                continue
        kept.append(node)
    if moved:
        del graph.node[:]
        graph.node.extend(kept)
    return moved


def cut_final_activations(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """Remove trailing Softmax, LogSoftmax and Sigmoid nodes so that the graph ends at the logits.

    Only nodes whose output is the graph output and feeds nothing else are
    removed, repeatedly. Returns (op_type, node name) of each removed node,
    last node first.
    """
    graph = model.graph
    removed = []
    while True:
        output = graph.output[0]
        producers = [node for node in graph.node if output.name in node.output]
        if len(producers) != 1 or producers[0].op_type not in FINAL_ACTIVATIONS:
            break
        node = producers[0]
        if any(output.name in other.input for other in graph.node):
            break
        # These activations keep the shape and type, so the output's type stays valid.
        output.name = node.input[0]
        graph.node.remove(node)
        removed.append((node.op_type, node.name or node.op_type))
    return removed
