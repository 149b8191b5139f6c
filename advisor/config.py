"""Resolved settings of one `advisor check` run."""

from __future__ import annotations

import math

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from advisor.data.targets import TASKS
from advisor.errors import UnknownChoiceError, UsageError
from training import Augmentation, BaseAlgorithm, EEConfig, Schedule, check_run
from training.features import GRAM_BUDGET_BYTES

RHO_METHODS = ("auto", "exact", "lsqr", "features")
FAIL_ON = ("structure", "misaligned", "no-convergence")
DEFAULT_EXPLORE_EPOCHS = 5


@dataclass(frozen=True)
class CheckConfig:
    """Every option that changes a figure of the report.

    `max_samples` caps the analysis subset on which the exact ρ is computed;
    ρ_S and training always use the whole training split. The default of 256
    keeps the exact Jacobian of the default model on digits near 1 GB and
    10 s. `rho_tolerance` is the ρ above which the verdict is misaligned,
    and `confirm_ratio` the factor by which a run's training loss must fall
    to count as reaching the global minimum within the budget.
    """

    model_spec: str | None = None
    model_args: dict = field(default_factory=dict)
    # Options of model import: a state_dict file, permission to unpickle a
    # full module, the cut at the logits, the largest model file in bytes
    # and a per-example input shape replacing the one an ONNX graph declares.
    weights: str | None = None
    trust_pickle: bool = False
    logits: bool = False
    max_model_bytes: int = 2**31
    input_shape: tuple[int, ...] | None = None
    data_spec: str = "digits"
    # None infers the task from the targets; see advisor.data.targets.
    task: str | None = None
    # Target column (csv) or array key (npz, pt); None means the default.
    target: str | None = None
    loss: str = "mse"
    epochs: int = 10
    explore_epochs: int = DEFAULT_EXPLORE_EPOCHS
    mode: str = "practical"
    confirm: bool = True
    rho_method: str = "auto"
    max_samples: int = 256
    structure_samples: int = 32
    seed: int = 0
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    batch_size: int = 64
    weight_decay: float = 0.0
    # Learning-rate schedule and augmentation; see training.algorithm.
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    lr_step_epochs: int = 1
    lr_gamma: float = 0.1
    lr_final_factor: float = 0.0
    lr_peak_fraction: float = 0.3
    lr_one_cycle_div: float = 25.0
    crop_padding: int = 0
    flip: bool = False
    rho_tolerance: float = 1e-3
    confirm_ratio: float = 0.1
    memory_budget_gb: float = 4.0
    time_budget_s: float = 120.0
    # Exact ρ is also measured after every epoch when one measurement is
    # estimated to take at most this long.
    per_epoch_exact_s: float = 3.0
    certified_steps: int = 300
    certified_target: float = 1e-7
    # None: the base algorithm's lr (see training.ee.feature_learning_rate).
    feature_lr: float | None = None
    gram_budget_bytes: int = GRAM_BUDGET_BYTES
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.rho_method not in RHO_METHODS:
            raise UnknownChoiceError("--rho-method", self.rho_method, RHO_METHODS)
        if self.task is not None and self.task not in TASKS:
            raise UnknownChoiceError("--task", self.task, TASKS)
        if self.max_model_bytes < 1:
            raise UsageError("--max-model-mb", self.max_model_bytes / 2**20, "a positive number of MiB")
        if self.input_shape is not None and (not self.input_shape or any(d < 1 for d in self.input_shape)):
            raise UsageError("--input-shape", self.input_shape, "positive sizes separated by commas, e.g. 3,32,32")
        if self.max_samples < 2:
            raise UsageError("--max-samples", self.max_samples, "at least 2 examples")
        if self.structure_samples < 1:
            raise UsageError("--structure-samples", self.structure_samples, "at least 1 example")
        if not 0 < self.rho_tolerance < 1:
            raise UsageError("--rho-tolerance", self.rho_tolerance, "a number between 0 and 1")
        if not 0 < self.confirm_ratio < 1:
            raise UsageError("--confirm-ratio", self.confirm_ratio, "a number between 0 and 1")
        if not 0 <= self.seed < 2**32:
            # The split (scikit-learn) and NumPy generators take seeds in this range.
            raise UsageError("--seed", self.seed, f"a whole number from 0 to {2**32 - 1}")
        # `not x > 0` also rejects NaN, which compares false with everything.
        if not (self.memory_budget_gb > 0 and math.isfinite(self.memory_budget_gb)):
            raise UsageError("--memory-budget", self.memory_budget_gb, "a positive, finite number of GiB")
        if not (self.time_budget_s > 0 and math.isfinite(self.time_budget_s)):
            raise UsageError("--time-budget", self.time_budget_s, "a positive, finite number of seconds")
        # NOTE: training and analysis run on the CPU only; moving the model,
        # the data and the random-feature block to a GPU is not implemented.
        if self.device != "cpu":
            raise UsageError("--device", self.device, "cpu, the only device this version trains and analyses on")
        # Building the training descriptions validates their options even when
        # no training runs, so --no-confirm rejects the same bad values.
        check_run(self.algorithm(), self.ee_config())

    def algorithm(self) -> BaseAlgorithm:
        schedule = Schedule(name=self.schedule, warmup_epochs=self.warmup_epochs, step_epochs=self.lr_step_epochs, gamma=self.lr_gamma,
                            final_factor=self.lr_final_factor, peak_fraction=self.lr_peak_fraction,
                            one_cycle_div=self.lr_one_cycle_div)
        return BaseAlgorithm(optimizer=self.optimizer, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov,
                             batch_size=self.batch_size, weight_decay=self.weight_decay, loss=self.loss, schedule=schedule,
                             augmentation=Augmentation(crop_padding=self.crop_padding, flip=self.flip))

    def ee_config(self) -> EEConfig:
        return EEConfig(epochs=self.epochs, explore_epochs=self.explore_epochs, mode=self.mode, certified_steps=self.certified_steps,
                        certified_target=self.certified_target, gram_budget_bytes=self.gram_budget_bytes,
                        feature_lr=self.feature_lr)

    def as_dict(self) -> dict:
        return asdict(self)


# Keys that a training file given with --config may set: the CheckConfig
# field of the same name, with its type. Keys may use - or _.
CONFIG_FILE_KEYS: dict[str, type] = {
    "loss": str, "epochs": int, "explore_epochs": int, "mode": str, "optimizer": str, "lr": float, "momentum": float,
    "nesterov": bool, "weight_decay": float, "batch_size": int, "schedule": str, "warmup_epochs": float,
    "lr_step_epochs": int, "lr_gamma": float, "lr_final_factor": float, "lr_peak_fraction": float,
    "lr_one_cycle_div": float, "crop_padding": int, "flip": bool, "certified_steps": int,
    "certified_target": float, "feature_lr": float, "seed": int,
}


def _has_type(value: object, expected: type) -> bool:
    # bool is a subclass of int in Python, so it is checked first. A TOML
    # integer is a valid float.
    if expected is bool or isinstance(value, bool):
        return expected is bool and isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float))
    return isinstance(value, expected)


def read_config_file(path: str | Path) -> dict[str, object]:
    """Read training settings from a TOML file, keyed by CheckConfig field name.

    Raises UsageError for a missing or malformed file and for a value of the
    wrong type, and UnknownChoiceError for a key that is not a training setting.
    """
    path = Path(path)
    try:
        with path.open("rb") as stream:
            raw = tomllib.load(stream)
    except FileNotFoundError:
        raise UsageError("--config", str(path), "an existing TOML file") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError("--config", str(path), f"a valid TOML file ({error})") from None
    except OSError as error:
        raise UsageError("--config", str(path), f"a readable TOML file ({error.strerror or error})") from None

    settings: dict[str, object] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in CONFIG_FILE_KEYS:
            raise UnknownChoiceError(f"key in {path}", key, CONFIG_FILE_KEYS)
        expected = CONFIG_FILE_KEYS[name]
        if not _has_type(value, expected):
            raise UsageError(f"{key} in {path}", value, f"a value of type {expected.__name__}")
        settings[name] = float(value) if expected is float else value
    return settings


def merge_settings(config_file: str | Path | None, options: dict[str, object]) -> dict[str, object]:
    """Combine a --config file with command-line options; an option given on the command line (not None) wins.

    When the epochs are set but the exploration epochs are not, exploration
    takes half of the epochs, at most the default 5, so that a short run such
    as --epochs 2 needs no second option.
    """
    settings = read_config_file(config_file) if config_file is not None else {}
    settings.update({name: value for name, value in options.items() if value is not None})
    if "epochs" in settings and "explore_epochs" not in settings and isinstance(settings["epochs"], int):
        settings["explore_epochs"] = max(0, min(DEFAULT_EXPLORE_EPOCHS, settings["epochs"] // 2))
    return settings
