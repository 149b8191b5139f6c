"""Model loading: the built-in default, Python files and torchvision."""

from advisor.models.default import ResidualCNN
from advisor.models.loaded import LoadedModel
from advisor.models.pyfile import parse_model_args
from advisor.models.registry import DEFAULT_SPEC, build_model, check_output_shape, count_parameters

__all__ = ["DEFAULT_SPEC", "LoadedModel", "ResidualCNN", "build_model", "check_output_shape", "count_parameters", "parse_model_args"]
