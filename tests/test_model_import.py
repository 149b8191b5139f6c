"""Importing user models: ONNX round trips, third-party ONNX files, TorchScript, checkpoints and unsafe files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from advisor.alignment import exact_rho, last_layer_rho
from advisor.errors import AdvisorError, ModelSpecError, ShapeMismatchError
from advisor.models import build_model
from advisor.models.default import ResidualCNN
from advisor.models.onnx_import import load_onnx
from advisor.structure import check_structure
from advisor.trace import trace_forward

REPO_ROOT = Path(__file__).resolve().parents[1]
THIRD_PARTY_DIR = REPO_ROOT.parent / "shared" / "models" / "onnx"


class SmallMLP(nn.Module):
    def __init__(self, n_inputs: int = 64, width: int = 24, n_outputs: int = 10) -> None:
        super().__init__()
        self.hidden = nn.Linear(n_inputs, width)
        self.act = nn.ReLU()
        self.out = nn.Linear(width, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.hidden(x.flatten(1))))


def export(model: nn.Module, path: Path, shape: tuple[int, ...], opset: int, *, keep_batchnorm: bool = True) -> Path:
    """Export `model` to ONNX with a dynamic batch axis; `keep_batchnorm` keeps parameters one to one."""
    options = {"do_constant_folding": False, "training": torch.onnx.TrainingMode.PRESERVE} if keep_batchnorm else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (torch.zeros((2, *shape)),), str(path), dynamo=False, opset_version=opset,
            input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, **options,
        )
    return path


def trained_looking(model: nn.Module, seed: int) -> nn.Module:
    """Move parameters and BatchNorm statistics off their initial values, so that equalities do not hold by accident."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
            if tensor.ndim == 1:
                # Biases, BatchNorm scales and statistics: kept positive so running variances stay valid.
                tensor.add_(0.1 * torch.randn(tensor.shape, generator=generator)).abs_()
            else:
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator))
    return model.eval()


def one_hot_targets(n_examples: int, n_classes: int, seed: int) -> np.ndarray:
    labels = np.random.default_rng(seed).integers(0, n_classes, size=n_examples)
    return np.eye(n_classes)[labels]


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_round_trip_matches_pytorch(tmp_path, name, opset):
    torch.manual_seed(0)
    shape = (1, 8, 8)
    original = trained_looking(ResidualCNN(in_channels=1, num_classes=10) if name == "cnn" else SmallMLP(), seed=1)
    path = export(original, tmp_path / f"{name}.onnx", shape, opset)

    loaded = build_model(str(path), input_shape=shape, n_outputs=10, model_args={})
    converted = loaded.module
    x = torch.randn((16, *shape), generator=torch.Generator().manual_seed(2))

    assert loaded.details["onnx_opset"] == opset
    assert loaded.details["conversion_max_abs_diff"] < 1e-5
    assert [n for n, _ in converted.named_parameters()] != []
    assert sorted(n for n, _ in converted.named_parameters()) == sorted(n for n, _ in original.named_parameters())
    with torch.no_grad():
        assert torch.max(torch.abs(converted(x) - original(x))).item() < 1e-5

    trace_original, trace_converted = trace_forward(original, x), trace_forward(converted, x)
    structure_original = check_structure(original, x, trace_original, seed=0)
    structure_converted = check_structure(converted, x, trace_converted, seed=0)
    assert structure_converted.holds == structure_original.holds
    assert structure_converted.form == structure_original.form
    assert structure_converted.last_layer_subset == structure_original.last_layer_subset
    assert [e.tensor for e in structure_converted.subset] == [e.tensor for e in structure_original.subset]
    for converted_entry, original_entry in zip(structure_converted.subset, structure_original.subset):
        assert converted_entry.coefficient == pytest.approx(original_entry.coefficient, abs=1e-6)

    targets = one_hot_targets(16, 10, seed=3)
    rho_s_original = last_layer_rho(original, x, targets, trace_original)
    rho_s_converted = last_layer_rho(converted, x, targets, trace_converted)
    assert abs(rho_s_converted.rho - rho_s_original.rho) < 1e-6
    assert abs(exact_rho(converted, x, targets).rho - exact_rho(original, x, targets).rho) < 1e-6


def resnet18_round_trip(tmp_path: Path):
    import torchvision

    torch.manual_seed(0)
    original = torchvision.models.resnet18(num_classes=10, weights=None).eval()
    # The default export folds BatchNorm into the convolutions, as most published files do.
    path = export(original, tmp_path / "resnet18.onnx", (3, 32, 32), 17, keep_batchnorm=False)
    loaded = build_model(str(path), input_shape=(3, 32, 32), n_outputs=10, model_args={})
    x = torch.randn((2, 3, 32, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.max(torch.abs(loaded.module(x) - original(x))).item() < 1e-5
    return original, loaded.module, x


def test_resnet18_round_trip(tmp_path):
    original, converted, x = resnet18_round_trip(tmp_path)
    trace_original, trace_converted = trace_forward(original, x), trace_forward(converted, x)

    assert trace_converted.ends_affine == trace_original.ends_affine
    assert trace_converted.last_parametric.parameters == trace_original.last_parametric.parameters == ["fc.weight", "fc.bias"]


@pytest.mark.slow
def test_resnet18_structure_check(tmp_path):
    original, converted, x = resnet18_round_trip(tmp_path)
    structure_original = check_structure(original, x, trace_forward(original, x), seed=0)
    structure_converted = check_structure(converted, x, trace_forward(converted, x), seed=0)
    assert structure_converted.holds == structure_original.holds
    assert structure_converted.last_layer_subset == ["fc.weight", "fc.bias"]


# Expected outcome per third-party file: the structure verdict for files that
# load, or the operators an import must name for files that cannot.
THIRD_PARTY = {
    "o02-baskov-mnist-cnn-dynbatch-opset11.onnx": ((1, 28, 28), True),
    "o03-sightvanish-mnist-cnn-logsoftmax.onnx": ((1, 28, 28), False),
    "o06-vnncomp-cifar-resnet2b-residual.onnx": ((3, 32, 32), True),
    "o07-eran-mnist-ffnn-sigmoid-6x200.onnx": ((1, 28, 28), True),
    "o10-cifar100-cnn-selu.onnx": ((3, 32, 32), True),
    "o12-lstm-opset6-multi-io.onnx": ((5, 1, 3), {"LSTM", "Slice"}),
    "o13-skl2onnx-logreg-iris-zipmap.onnx": ((4,), {"ai.onnx.ml.LinearClassifier", "ai.onnx.ml.Normalizer", "ai.onnx.ml.ZipMap"}),
    "o15-tiny-rank1-matmul-relu.onnx": ((1,), True),
}


@pytest.mark.parametrize("file_name", sorted(THIRD_PARTY))
def test_third_party_onnx(file_name):
    path = THIRD_PARTY_DIR / file_name
    if not path.is_file():
        pytest.skip(f"third-party ONNX file {path} is absent (expected ../shared/models/onnx next to the repository)")
    shape, expected = THIRD_PARTY[file_name]

    if isinstance(expected, set):
        with pytest.raises(ModelSpecError) as raised:
            load_onnx(str(path), path, input_shape=shape)
        assert raised.value.exit_code == 2
        assert str(path) in str(raised.value)
        listed = {op.qualified_name for op in raised.value.unsupported}
        assert listed == expected
        for op in raised.value.unsupported:
            assert op.node_name in str(raised.value)
        return

    loaded = load_onnx(str(path), path, input_shape=shape)
    assert loaded.details["conversion_max_abs_diff"] < 1e-4
    assert any(p.requires_grad for p in loaded.module.parameters())
    x = torch.randn((3, *shape), generator=torch.Generator().manual_seed(0))
    result = check_structure(loaded.module, x, trace_forward(loaded.module, x), seed=0)
    assert result.holds == expected
    if not expected:
        assert "LogSoftmax_11" in result.breaking_op


def softmax_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3), nn.Softmax(dim=1)).eval()


def test_softmax_head_names_node(tmp_path):
    path = export(softmax_classifier(), tmp_path / "softmax.onnx", (16,), 13)
    softmax_node = next(node.name for node in onnx.load(str(path)).graph.node if node.op_type == "Softmax")
    loaded = load_onnx(str(path), path, input_shape=(16,))
    x = torch.randn(8, 16)

    result = check_structure(loaded.module, x, trace_forward(loaded.module, x), seed=0)

    assert not result.holds
    assert softmax_node in result.breaking_op
    assert "softmax" in result.fix.lower()
    # For an imported graph the fix is the option that cuts the node.
    imported = check_structure(loaded.module, x, trace_forward(loaded.module, x), seed=0, imported=True)
    assert "--logits" in imported.fix
    assert "--logits" not in result.fix


def test_softmax_head_cut_at_logits(tmp_path):
    path = export(softmax_classifier(), tmp_path / "softmax.onnx", (16,), 13)
    loaded = load_onnx(str(path), path, input_shape=(16,), logits=True)
    x = torch.randn(8, 16)

    result = check_structure(loaded.module, x, trace_forward(loaded.module, x), seed=0)

    assert result.holds
    assert result.last_layer_subset == ["3.weight", "3.bias"]
    assert any("analysed up to the logits" in caveat.lower() for caveat in loaded.caveats)
    with torch.no_grad():
        logits = softmax_classifier()[:-1](x)
    assert torch.max(torch.abs(loaded.module(x) - logits)).item() < 1e-5


def test_onnx_reference_fallback(tmp_path):
    path = export(SmallMLP(), tmp_path / "mlp.onnx", (1, 8, 8), 13)
    loaded = load_onnx(str(path), path, input_shape=(1, 8, 8), reference="onnx-reference")
    assert loaded.details["conversion_reference"].startswith("onnx.reference")
    assert loaded.details["conversion_max_abs_diff"] < 1e-5


def test_onnx_input_shape_mismatch(tmp_path):
    path = export(SmallMLP(), tmp_path / "mlp.onnx", (1, 8, 8), 13)
    with pytest.raises(ShapeMismatchError) as raised:
        build_model(str(path), input_shape=(1, 28, 28), n_outputs=10, model_args={})
    assert "the model expects inputs of shape (1, 8, 8)" in str(raised.value)
    assert "the data has inputs of shape (1, 28, 28)" in str(raised.value)


def test_torchscript_round_trip(tmp_path):
    torch.manual_seed(0)
    original = trained_looking(ResidualCNN(in_channels=1, num_classes=10, width=8), seed=4)
    path = tmp_path / "cnn.pt"
    torch.jit.script(original).save(str(path))
    loaded = build_model(str(path), input_shape=(1, 8, 8), n_outputs=10, model_args={})
    x = torch.randn(4, 1, 8, 8)

    assert loaded.kind == "torchscript"
    assert sorted(n for n, _ in loaded.module.named_parameters()) == sorted(n for n, _ in original.named_parameters())
    with torch.no_grad():
        assert torch.max(torch.abs(loaded.module(x) - original(x))).item() < 1e-5


MODEL_SOURCE = '''
from torch import nn

class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.body = nn.Linear(64, 16)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.head(self.body(x.flatten(1)).relu())
'''


def write_model_source(tmp_path: Path) -> Path:
    source = tmp_path / "net.py"
    source.write_text(MODEL_SOURCE)
    return source


def test_checkpoint_nested_state_dict(tmp_path):
    source = write_model_source(tmp_path)
    reference = build_model(f"{source}:Net", input_shape=(1, 8, 8), n_outputs=10, model_args={}).module
    weights = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "model": {"state_dict": reference.state_dict()}}, weights)

    loaded = build_model(f"{source}:Net", input_shape=(1, 8, 8), n_outputs=10, model_args={}, weights=str(weights))
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), reference(x))


def assert_input_error(error: AdvisorError, path: Path, fix_word: str) -> None:
    assert error.exit_code == 2
    assert str(path) in str(error)
    assert fix_word in str(error)


def test_checkpoint_missing_key(tmp_path):
    source = write_model_source(tmp_path)
    state = build_model(f"{source}:Net", input_shape=(1, 8, 8), n_outputs=10, model_args={}).module.state_dict()
    del state["head.bias"]
    weights = tmp_path / "partial.pth"
    torch.save(state, weights)

    with pytest.raises(AdvisorError) as raised:
        build_model(f"{source}:Net", input_shape=(1, 8, 8), n_outputs=10, model_args={}, weights=str(weights))
    assert_input_error(raised.value, weights, "Pass the weights saved from this architecture")
    assert "missing keys: head.bias" in str(raised.value)


def test_pickled_module_needs_trust(tmp_path):
    path = tmp_path / "full.pt"
    torch.save(SmallMLP(), path)

    with pytest.raises(AdvisorError) as raised:
        build_model(str(path), input_shape=(1, 8, 8), n_outputs=10, model_args={})
    assert_input_error(raised.value, path, "--trust-pickle")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.pt"]

    trusted = build_model(str(path), input_shape=(1, 8, 8), n_outputs=10, model_args={}, trust_pickle=True)
    assert isinstance(trusted.module, SmallMLP)


def test_external_data_outside_folder(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    weight = np.ones((4, 3), dtype=np.float32)
    (tmp_path / "weights.bin").write_bytes(weight.tobytes())
    tensor = onnx.TensorProto(name="W", data_type=onnx.TensorProto.FLOAT, dims=[4, 3])
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "../weights.bin"), ("offset", "0"), ("length", str(weight.nbytes))):
        tensor.external_data.add(key=key, value=value)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "W"], ["y"], name="matmul")], "outside",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 3])],
        initializer=[tensor],
    )
    path = folder / "outside.onnx"
    path.write_bytes(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)]).SerializeToString())

    with pytest.raises(AdvisorError) as raised:
        build_model(str(path), input_shape=(4,), n_outputs=3, model_args={})
    assert_input_error(raised.value, path, "Move the external data file next to the model")
    assert "../weights.bin" in str(raised.value)


def test_truncated_onnx(tmp_path):
    full = export(SmallMLP(), tmp_path / "full.onnx", (1, 8, 8), 13)
    path = tmp_path / "truncated.onnx"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])

    with pytest.raises(AdvisorError) as raised:
        build_model(str(path), input_shape=(1, 8, 8), n_outputs=10, model_args={})
    assert_input_error(raised.value, path, "Export or download the model again")


def test_model_over_size_limit(tmp_path):
    path = export(SmallMLP(), tmp_path / "mlp.onnx", (1, 8, 8), 13)
    size = path.stat().st_size

    with pytest.raises(AdvisorError) as raised:
        build_model(str(path), input_shape=(1, 8, 8), n_outputs=10, model_args={}, max_model_bytes=size - 1)
    assert_input_error(raised.value, path, "--max-model-mb")
    assert f"{size:,} bytes" in str(raised.value)


def test_cli_rejects_untrusted_pickle(tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    path = tmp_path / "full.pt"
    torch.save(SmallMLP(), path)
    out = tmp_path / "report"

    result = CliRunner().invoke(app, ["check", str(path), "--no-confirm", "--out", str(out), "--quiet"])

    assert result.exit_code == 2
    assert "--trust-pickle" in result.output
    assert not out.exists()


def test_output_size_fix_per_kind(tmp_path):
    from advisor.models.registry import check_output_shape

    path = export(SmallMLP(), tmp_path / "mlp.onnx", (1, 8, 8), 13)
    imported = build_model(str(path), input_shape=(1, 8, 8), n_outputs=10, model_args={})
    built = build_model(None, input_shape=(1, 8, 8), n_outputs=3, model_args={})
    sample = torch.randn(2, 1, 8, 8)

    with pytest.raises(ShapeMismatchError) as onnx_error:
        check_output_shape(imported, sample, 4)
    with pytest.raises(ShapeMismatchError) as built_error:
        check_output_shape(built, sample, 4)

    # An ONNX graph cannot take constructor arguments.
    assert "--model-arg" not in str(onnx_error.value)
    assert "Export the model with 4 outputs" in str(onnx_error.value)
    assert "--model-arg num_classes=4" in str(built_error.value)


def test_forward_failure_shape_once():
    from advisor.models.registry import check_output_shape

    loaded = build_model(None, input_shape=(1, 8, 8), n_outputs=10, model_args={})
    with pytest.raises(ModelSpecError) as raised:
        check_output_shape(loaded, torch.randn(2, 3, 8, 8), 10)
    assert str(raised.value).count("(3, 8, 8)") == 1
    assert "forward pass fails" in str(raised.value)
