"""Training framework: base algorithms and the exploration–exploitation (EE) run.

This package knows nothing of the advisor's analysis: measurements along a
run come in through `Callbacks`.
"""

from training.algorithm import BaseAlgorithm
from training.ee import EEModel, FrozenRepresentation
from training.errors import TrainingConfigError
from training.features import FeatureCertificate
from training.loop import Callbacks, EpochRecord, TrainData, evaluate
from training.run import EEConfig, EEResult, RunResult, run_base, run_ee

__all__ = ["BaseAlgorithm", "Callbacks", "EEConfig", "EEModel", "EEResult", "EpochRecord", "FeatureCertificate",
           "FrozenRepresentation", "RunResult", "TrainData", "TrainingConfigError", "evaluate", "run_base", "run_ee"]
