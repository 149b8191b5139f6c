"""Base and EE training runs, sharing the exploration epochs.

The EE run explores with the base algorithm unchanged, so its first τ epochs
are exactly the base run's first τ epochs under the same seed. The base run
snapshots model, optimizer and batch-order generator after epoch τ, and the EE
run continues from that snapshot instead of recomputing those epochs.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from training.algorithm import BaseAlgorithm
from training.ee import CertifiedStep, EEModel, FrozenRepresentation, check_mode, count_distinct, feature_learning_rate, run_certified
from training.errors import TrainingConfigError
from training.features import FeatureCertificate, build_feature_map, certify
from training.loop import Callbacks, EpochRecord, TrainData, evaluate, train_epochs


# σ_min(Φ) below this fraction of σ_max(Φ) counts as a failed certificate for
# the representation z_τ alone.
WEAK_CERTIFICATE = 1e-3


@dataclass(frozen=True)
class EEConfig:
    """Budget and variant of the EE run.

    `width_factor` sets p = ceil(width_factor · n) random features (p ≥ n is
    required). Certified mode runs at most `certified_steps` full-batch steps
    and stops early once the loss is `certified_target` times its value at
    the transition.
    """

    epochs: int = 10
    explore_epochs: int = 5
    mode: str = "practical"
    width_factor: float = 2.0
    certified_steps: int = 300
    certified_target: float = 1e-7

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if self.epochs < 1:
            raise TrainingConfigError("--epochs", self.epochs, "a positive number of epochs")
        if not 0 <= self.explore_epochs < self.epochs:
            raise TrainingConfigError("--explore-epochs", self.explore_epochs, f"an integer from 0 to {self.epochs - 1} (fewer than --epochs)")
        if self.width_factor < 1:
            raise TrainingConfigError("--feature-width-factor", self.width_factor, "at least 1, so that p >= n")
        if self.certified_steps < 1:
            raise TrainingConfigError("--certified-steps", self.certified_steps, "a positive number of steps")


@dataclass
class RunResult:
    epochs: list[EpochRecord]
    seconds_per_epoch: float
    model: nn.Module


@dataclass
class EEResult(RunResult):
    explore_epochs: int = 0
    mode: str = "practical"
    width: int = 0
    certificate: FeatureCertificate | None = None
    loss_at_transition: float = 0.0
    final_train_loss: float = 0.0
    bound_violations: int = 0
    steps: list[CertifiedStep] = field(default_factory=list)
    feature_lr: float | None = None
    representation: str = ""


@dataclass
class Snapshot:
    model_state: dict
    optimizer_state: dict
    generator_state: torch.Tensor


def _initial_record(model: nn.Module, data: TrainData, algorithm: BaseAlgorithm, callbacks: Callbacks, phase: str) -> EpochRecord:
    train_loss, train_accuracy = evaluate(model, data.x_train, data.targets_train, algorithm.loss, classification=data.classification)
    test_loss, test_accuracy = evaluate(model, data.x_test, data.targets_test, algorithm.loss, classification=data.classification)
    record = EpochRecord(epoch=0, train_loss=train_loss, train_accuracy=train_accuracy, test_loss=test_loss, test_accuracy=test_accuracy, seconds=0.0)
    record.extra.update(callbacks.on_epoch_end(phase, 0, model))
    return record


def _mean_seconds(records: list[EpochRecord]) -> float:
    timed = [r.seconds for r in records if r.epoch > 0]
    return sum(timed) / len(timed) if timed else 0.0


def run_base(model: nn.Module, data: TrainData, algorithm: BaseAlgorithm, config: EEConfig, *, seed: int,
             callbacks: Callbacks) -> tuple[RunResult, Snapshot]:
    """Train a copy of `model` for `config.epochs` epochs; snapshot after the exploration epochs."""
    base = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    optimizer = algorithm.make_optimizer([{"params": [p for p in base.parameters() if p.requires_grad]}])
    snapshots: list[Snapshot] = []

    def keep_snapshot(epoch: int) -> None:
        if epoch == config.explore_epochs:
            snapshots.append(Snapshot(copy.deepcopy(base.state_dict()), copy.deepcopy(optimizer.state_dict()), generator.get_state()))

    keep_snapshot(0)
    records = [_initial_record(base, data, algorithm, callbacks, "base")]
    records += train_epochs(base, optimizer, data, algorithm, first_epoch=0, n_epochs=config.epochs, generator=generator,
                            phase="base", callbacks=callbacks, on_epoch=keep_snapshot)
    return RunResult(epochs=records, seconds_per_epoch=_mean_seconds(records), model=base), snapshots[0]


def run_ee(model: nn.Module, data: TrainData, algorithm: BaseAlgorithm, config: EEConfig, snapshot: Snapshot,
           explored: list[EpochRecord], *, seed: int, head_name: str | None, callbacks: Callbacks) -> EEResult:
    """Transition at the snapshot, certify the feature block, and exploit.

    `explored` holds the base run's records up to the transition epoch, which
    are the EE run's exploration records.
    """
    tau = config.explore_epochs
    base = copy.deepcopy(model)
    base.load_state_dict(snapshot.model_state)
    generator = torch.Generator().manual_seed(seed)
    generator.set_state(snapshot.generator_state)

    # Transition: freeze z_τ, draw φ, certify rank(Φ) = n, start V at zero.
    representation = FrozenRepresentation(base, head_name)
    z_train = representation.encode(data.x_train)
    width = max(data.n_train, int(-(-config.width_factor * data.n_train // 1)))
    feature_map = build_feature_map(z_train, width, torch.Generator().manual_seed(seed + 1))
    certificate = certify(feature_map, z_train)
    representation_note = "the input of the last affine layer" if head_name else "the flattened input"

    # A narrow or saturated last layer can map distinct inputs onto the same
    # or nearly the same point, and then no function of z_τ separates them
    # (σ_min(Φ) ≈ 0). Joining the input to z_τ restores distinct points.
    if head_name and certificate.sigma_min < WEAK_CERTIFICATE * certificate.sigma_max:
        joined = FrozenRepresentation(base, head_name, append_input=True)
        z_joined = joined.encode(data.x_train)
        joined_map = build_feature_map(z_joined, width, torch.Generator().manual_seed(seed + 1))
        joined_certificate = certify(joined_map, z_joined)
        if joined_certificate.sigma_min > certificate.sigma_min:
            collapsed = data.n_train - count_distinct(z_train)
            representation_note = (f"the input of the last affine layer joined with the flattened input, because the last layer alone "
                                   f"gave σ_min(Φ) = {certificate.sigma_min:.2e} ({collapsed} training inputs share a point with another)")
            representation, z_train, feature_map, certificate = joined, z_joined, joined_map, joined_certificate

    ee_model = EEModel(base, representation, feature_map, n_outputs=data.targets_train.shape[1])
    loss_at_transition, _ = evaluate(ee_model, data.x_train, data.targets_train, algorithm.loss, classification=data.classification)

    records = [copy.deepcopy(r) for r in explored if r.epoch <= tau]
    result = EEResult(epochs=records, seconds_per_epoch=0.0, model=ee_model, explore_epochs=tau, mode=config.mode,
                      width=width, certificate=certificate, loss_at_transition=loss_at_transition,
                      representation=representation_note)

    if config.mode == "practical":
        optimizer = algorithm.make_optimizer([{"params": [p for p in base.parameters() if p.requires_grad]}])
        optimizer.load_state_dict(snapshot.optimizer_state)
        result.feature_lr = feature_learning_rate(algorithm)
        optimizer.add_param_group({"params": [ee_model.V], "lr": result.feature_lr})
        records += train_epochs(ee_model, optimizer, data, algorithm, first_epoch=tau, n_epochs=config.epochs - tau,
                                generator=generator, phase="exploit", callbacks=callbacks)
    else:
        start = time.perf_counter()
        steps, violations = run_certified(ee_model, data, algorithm, certificate, max_steps=config.certified_steps,
                                          target_ratio=config.certified_target, callbacks=callbacks)
        result.steps, result.bound_violations = steps, violations
        train_loss, train_accuracy = evaluate(ee_model, data.x_train, data.targets_train, algorithm.loss, classification=data.classification)
        test_loss, test_accuracy = evaluate(ee_model, data.x_test, data.targets_test, algorithm.loss, classification=data.classification)
        record = EpochRecord(epoch=tau + 1, train_loss=train_loss, train_accuracy=train_accuracy, test_loss=test_loss,
                             test_accuracy=test_accuracy, seconds=time.perf_counter() - start)
        record.extra.update(callbacks.on_epoch_end("exploit", tau + 1, ee_model))
        records.append(record)

    result.seconds_per_epoch = _mean_seconds([r for r in records if r.epoch > tau])
    result.final_train_loss = records[-1].train_loss
    return result
