"""Training framework: base algorithms and the exploration–exploitation (EE) run.

This package knows nothing of the advisor's analysis: measurements along a
run come in through `Callbacks`.
"""

from training.algorithm import OPTIMIZERS, SCHEDULES, Augmentation, BaseAlgorithm, Schedule
from training.checkpoint import Checkpointer
from training.ee import MODES, EEModel, FrozenRepresentation
from training.errors import TrainingConfigError
from training.features import FeatureCertificate
from training.loop import Callbacks, EpochRecord, TrainData, evaluate
from training.run import FRAMEWORKS, EEConfig, EEResult, RunResult, check_run, make_transition, run_base, run_ee, train_framework

__all__ = ["Augmentation", "BaseAlgorithm", "Callbacks", "Checkpointer", "EEConfig", "EEModel", "EEResult", "EpochRecord",
           "FRAMEWORKS", "FeatureCertificate", "FrozenRepresentation", "MODES", "OPTIMIZERS", "RunResult", "SCHEDULES",
           "Schedule", "TrainData", "TrainingConfigError", "check_run", "evaluate", "make_transition", "run_base", "run_ee",
           "train_framework"]
