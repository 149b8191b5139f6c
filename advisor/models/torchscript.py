"""Load `.pt` and `.pth` files: TorchScript archives, and full pickled modules when trusted.

A TorchScript module runs in the TorchScript interpreter, where neither
torch.func transforms of its parameters nor the operation trace of the
structure check can see into it. So the module is exported to ONNX in memory
and imported like an ONNX file, which gives a Python module with the same
parameter names.
"""

from __future__ import annotations

import io
import logging
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from advisor.errors import ModelSpecError
from advisor.models.files import DEFAULT_MAX_MODEL_BYTES, check_size, require_file
from advisor.models.loaded import LoadedModel

logger = logging.getLogger(__name__)

# Opset of the in-memory export of TorchScript modules.
EXPORT_OPSET = 17


def is_torchscript_archive(path: Path) -> bool:
    """Whether `path` is a zip archive with the `constants.pkl` and `code/` entries of a TorchScript save."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(name.endswith("/constants.pkl") for name in names) and any("/code/" in name for name in names)


def _export_to_onnx(spec: str, path: Path, scripted: torch.jit.ScriptModule, input_shape: tuple[int, ...]):
    import onnx

    example = torch.zeros((2, *input_shape))
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Constant folding would fold BatchNorm into the convolutions and
            # PRESERVE keeps BatchNormalization nodes, so the parameters stay
            # those of the source module.
            torch.onnx.export(
                scripted, (example,), buffer, dynamo=False, opset_version=EXPORT_OPSET,
                input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE,
            )
    except Exception as error:  # the exporter raises many types for operators it cannot express
        raise ModelSpecError(
            spec, f"the TorchScript module in {path} cannot be exported to ONNX for analysis ({type(error).__name__}: {error})",
            "Pass the Python source as file.py:NAME with --weights PATH.",
        ) from error
    return onnx.load_from_string(buffer.getvalue())


def _load_torchscript(spec: str, path: Path, input_shape: tuple[int, ...], logits: bool) -> LoadedModel:
    from advisor.models.onnx_import import import_onnx_model

    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:  # torch.jit.load raises RuntimeError for damaged archives
        raise ModelSpecError(spec, f"{path} cannot be read as TorchScript ({error})", "Save the module again with torch.jit.save.") from error
    scripted.eval()

    model = _export_to_onnx(spec, path, scripted, input_shape)
    loaded = import_onnx_model(spec, model, source=str(path), input_shape=input_shape, logits=logits)
    loaded.kind = "torchscript"

    if not logits:
        # Compare with the TorchScript module itself, the model the user gave.
        x = torch.randn((2, *input_shape), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = scripted(x)
            converted = loaded.module.eval()(x)
        loaded.details["conversion_reference"] = "the TorchScript module"
        loaded.details["conversion_max_abs_diff"] = float((converted.double() - expected.double()).detach().abs().max())
    loaded.details["torchscript_export_opset"] = EXPORT_OPSET
    return loaded


def load_torch_file(
    spec: str,
    path: Path,
    *,
    input_shape: tuple[int, ...],
    trust_pickle: bool = False,
    logits: bool = False,
    max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
) -> LoadedModel:
    """Load a TorchScript module, or with `trust_pickle` a pickled `nn.Module`, from `path`.

    Raises ModelSpecError for a pickled object without `trust_pickle`
    (unpickling runs code from the file), for a state_dict (weights without an
    architecture), and for unreadable files.
    """
    require_file(spec, path, "model file")
    check_size(spec, [path], max_bytes)
    if is_torchscript_archive(path):
        return _load_torchscript(spec, path, input_shape, logits)

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not trust_pickle:
            raise ModelSpecError(
                spec, f"{path} holds a pickled Python object, and unpickling it would run code from the file",
                "Pass --trust-pickle only if you trust the file, or save the model with torch.jit.script(model).save(PATH) or torch.onnx.export.",
            ) from error
        loaded = None
    except Exception as error:  # torch.load raises RuntimeError, EOFError and others on damaged files
        raise ModelSpecError(spec, f"{path} cannot be read ({type(error).__name__}: {error}); it may be truncated or corrupt", "Save the model again.") from error

    if loaded is not None:
        if isinstance(loaded, Mapping):
            raise ModelSpecError(
                spec, f"{path} holds weights (a state_dict) but no architecture",
                f"Pass the architecture as file.py:NAME with --weights {path}.",
            )
        raise ModelSpecError(spec, f"{path} holds a {type(loaded).__name__}, not a model", "Save a TorchScript module with torch.jit.save.")

    logger.warning("%s: unpickling %s with trust_pickle=True runs code from the file", spec, path)
    try:
        module = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # unpickling imports the model's classes and raises whatever that import raises
        raise ModelSpecError(
            spec, f"unpickling {path} failed ({type(error).__name__}: {error})",
            "Make the module that defines the model's class importable (run from its folder or set PYTHONPATH), or save a TorchScript module.",
        ) from error
    if not isinstance(module, nn.Module):
        raise ModelSpecError(spec, f"{path} holds a pickled {type(module).__name__}, not a torch.nn.Module", "Save the model object itself, or a TorchScript module.")
    caveats = []
    if logits:
        caveats.append("logits=True applies to ONNX and TorchScript graphs only; the pickled module was analysed as saved.")
    return LoadedModel(module=module, spec=spec, kind="pickle", details={"trusted_pickle": True}, caveats=caveats)
