"""Base and EE training runs, sharing the exploration epochs.

The EE run explores with the base algorithm unchanged, so its first τ epochs
are exactly the base run's first τ epochs under the same seed. The base run
snapshots model, optimizer and random streams after epoch τ, and the EE run
continues from that snapshot instead of recomputing those epochs. The
learning-rate schedule spans the whole run of `EEConfig.epochs` epochs in
both runs, so the exploitation phase continues it from epoch τ.

Every phase can write a checkpoint through a `Checkpointer` after each epoch
(or each certified step) and resume from it. `train_framework` runs one
framework end to end that way.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from training.algorithm import BaseAlgorithm, add_param_group
from training.checkpoint import Checkpointer
from training.ee import (CertifiedProgress, CertifiedStep, EEModel, FrozenRepresentation, check_mode, count_distinct,
                         feature_learning_rate, run_certified)
from training.errors import TrainingConfigError
from training.features import GRAM_BUDGET_BYTES, FeatureCertificate, RandomFeatureMap, build_feature_map, certify
from training.loop import Callbacks, EpochRecord, RandomStreams, TrainData, make_epoch_record, train_epochs

FRAMEWORKS = ("ee", "base")
# Default p / n per exploitation mode. The singular values of Φ spread like
# the Marchenko–Pastur edges (1 ± sqrt(n/p)), and certified steps contract
# the loss by about 1 − σ_min²/σ_max² each: 1 − 1/34 at p = 2n but 1 − 1/4.4
# at p = 8n (25 steps to 1e-7 of the transition loss on digits with the
# default CNN). Practical mode pays for p in every batch and keeps 2n.
WIDTH_FACTORS = {"practical": 2.0, "certified": 8.0}
# Bandwidth rule of φ per mode, explained in training.features. Certified
# mode needs the best conditioned kernel. Practical mode keeps the rule that
# its test accuracy was measured with.
BANDWIDTH_RULES = {"practical": "median", "certified": "dominant"}


# σ_min(Φ) below this fraction of σ_max(Φ) counts as a failed certificate for
# the representation z_τ alone.
WEAK_CERTIFICATE = 1e-3


@dataclass(frozen=True)
class EEConfig:
    """Budget and variant of the EE run.

    `width_factor` sets p = ceil(width_factor · n) random features (p ≥ n is
    required); None picks the mode's default from WIDTH_FACTORS. Certified mode runs at most `certified_steps` full-batch steps
    and stops early once the loss is `certified_target` times its value at
    the transition. `gram_budget_bytes` bounds the Gram matrix of the exact
    certificate (see `training.features.certify`). `feature_lr` is V's rate in
    practical mode; None gives it the base algorithm's rate.
    """

    epochs: int = 10
    explore_epochs: int = 5
    mode: str = "practical"
    width_factor: float | None = None
    certified_steps: int = 300
    certified_target: float = 1e-7
    gram_budget_bytes: int = GRAM_BUDGET_BYTES
    feature_lr: float | None = None

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if self.epochs < 1:
            raise TrainingConfigError("--epochs", self.epochs, "a positive number of epochs")
        if not 0 <= self.explore_epochs < self.epochs:
            raise TrainingConfigError("--explore-epochs", self.explore_epochs, f"an integer from 0 to {self.epochs - 1} (fewer than --epochs)")
        if self.width_factor is not None and self.width_factor < 1:
            raise TrainingConfigError("--feature-width-factor", self.width_factor, "at least 1, so that p >= n")
        if self.certified_steps < 1:
            raise TrainingConfigError("--certified-steps", self.certified_steps, "a positive number of steps")
        if not 0 < self.certified_target < 1:
            raise TrainingConfigError("--certified-target", self.certified_target, "a ratio between 0 and 1")
        if self.feature_lr is not None and not (self.feature_lr > 0 and math.isfinite(self.feature_lr)):
            raise TrainingConfigError("--feature-lr", self.feature_lr, "a positive, finite learning rate for V")
        if self.gram_budget_bytes < 1:
            raise TrainingConfigError("--gram-budget", self.gram_budget_bytes, "a positive number of bytes")


    @property
    def feature_width_factor(self) -> float:
        return WIDTH_FACTORS[self.mode] if self.width_factor is None else self.width_factor


def check_run(algorithm: BaseAlgorithm, config: EEConfig) -> None:
    """Raise TrainingConfigError when the algorithm's schedule does not fit in the run."""
    algorithm.schedule.check_fits(config.epochs)


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
    transition_seconds: float = 0.0


@dataclass
class Snapshot:
    """Model, optimizer and random-stream states after the exploration epochs."""

    model_state: dict
    optimizer_state: dict
    streams_state: dict

    def to_state(self) -> dict:
        return {"model": self.model_state, "optimizer": self.optimizer_state, "streams": self.streams_state}

    @classmethod
    def from_state(cls, state: dict) -> "Snapshot":
        return cls(state["model"], state["optimizer"], state["streams"])


def records_to_state(records: list[EpochRecord]) -> list[dict]:
    return [asdict(record) for record in records]


def records_from_state(rows: list[dict]) -> list[EpochRecord]:
    return [EpochRecord(**row) for row in rows]


def _initial_record(model: nn.Module, data: TrainData, algorithm: BaseAlgorithm, callbacks: Callbacks, phase: str) -> EpochRecord:
    record = make_epoch_record(model, data, algorithm.loss, 0, 0.0)
    record.extra.update(callbacks.on_epoch_end(phase, 0, model))
    return record


def _mean_seconds(records: list[EpochRecord]) -> float:
    timed = [r.seconds for r in records if r.epoch > 0]
    return sum(timed) / len(timed) if timed else 0.0


def run_base(model: nn.Module, data: TrainData, algorithm: BaseAlgorithm, config: EEConfig, *, seed: int,
             callbacks: Callbacks, checkpointer: Checkpointer | None = None, resume_state: dict | None = None,
             n_epochs: int | None = None, phase: str = "base") -> tuple[RunResult, Snapshot]:
    """Train a copy of `model` with the base algorithm; snapshot after the exploration epochs.

    Trains `n_epochs` epochs (default: all `config.epochs`) of a run whose
    schedule spans `config.epochs`. With a checkpointer, a checkpoint of
    phase `phase` is written after every epoch; `resume_state` (a loaded
    checkpoint of the same phase) continues from it.
    """
    check_run(algorithm, config)
    n_epochs = config.epochs if n_epochs is None else n_epochs
    base = copy.deepcopy(model)
    streams = RandomStreams.seeded(seed)
    optimizer = algorithm.make_optimizer([{"params": [p for p in base.parameters() if p.requires_grad]}])
    snapshot: Snapshot | None = None
    first_epoch = 0

    if resume_state is not None:
        base.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        streams.set_state(resume_state["streams"])
        records = records_from_state(resume_state["records"])
        first_epoch = resume_state["epoch"]
        if resume_state.get("snapshot") is not None:
            snapshot = Snapshot.from_state(resume_state["snapshot"])
    else:
        records = [_initial_record(base, data, algorithm, callbacks, phase)]

    def keep_snapshot(epoch: int) -> None:
        nonlocal snapshot
        if epoch == config.explore_epochs:
            snapshot = Snapshot(copy.deepcopy(base.state_dict()), copy.deepcopy(optimizer.state_dict()), streams.get_state())

    def after_epoch(record: EpochRecord) -> None:
        records.append(record)
        keep_snapshot(record.epoch)
        if checkpointer is not None:
            checkpointer.save({"phase": phase, "epoch": record.epoch, "model": base.state_dict(), "optimizer": optimizer.state_dict(),
                               "streams": streams.get_state(), "records": records_to_state(records),
                               "snapshot": snapshot.to_state() if snapshot is not None else None})

    if first_epoch == 0:
        keep_snapshot(0)
    train_epochs(base, optimizer, data, algorithm, first_epoch=first_epoch, n_epochs=n_epochs - first_epoch,
                 total_epochs=config.epochs, streams=streams, phase=phase, callbacks=callbacks, on_epoch=after_epoch)
    return RunResult(epochs=records, seconds_per_epoch=_mean_seconds(records), model=base), snapshot


@dataclass
class Transition:
    """The exploitation model at the transition and the certificate of its feature block."""

    model: EEModel
    certificate: FeatureCertificate
    width: int
    representation_note: str
    append_input: bool
    seconds: float

    def known_state(self) -> dict:
        """The choices that `make_transition(known=...)` needs to rebuild this block without recomputing them."""
        return {"certificate": asdict(self.certificate), "representation_note": self.representation_note,
                "append_input": self.append_input}


def make_transition(model: nn.Module, snapshot: Snapshot, data: TrainData, config: EEConfig, *, seed: int,
                    head_name: str | None, known: dict | None = None) -> Transition:
    """Freeze z_τ at the snapshot, draw φ, certify rank(Φ) = n and start V at zero.

    Everything here is a deterministic function of the snapshot, the training
    inputs and the seed, so a resumed run rebuilds the same block. `known`
    (the `Transition.known_state()` of an earlier run) skips the eigenvalue
    computations and the choice of representation.
    """
    start = time.perf_counter()
    base = copy.deepcopy(model)
    base.load_state_dict(snapshot.model_state)
    width = max(data.n_train, math.ceil(config.feature_width_factor * data.n_train))
    rule = BANDWIDTH_RULES[config.mode]

    if known is not None:
        representation, _, feature_map = _feature_block(base, head_name, known["append_input"], data, width, seed, rule)
        certificate = FeatureCertificate(**known["certificate"])
        note, append_input = known["representation_note"], known["append_input"]
    else:
        representation, z_train, feature_map = _feature_block(base, head_name, False, data, width, seed, rule)
        certificate = certify(feature_map, z_train, gram_budget_bytes=config.gram_budget_bytes, seed=seed)
        note, append_input = ("the input of the last affine layer" if head_name else "the flattened input"), False

        # A narrow or saturated last layer can map distinct inputs onto the same
        # or nearly the same point, and then no function of z_τ separates them
        # (σ_min(Φ) ≈ 0). Joining the input to z_τ restores distinct points.
        if head_name and certificate.sigma_min < WEAK_CERTIFICATE * certificate.sigma_max:
            joined, z_joined, joined_map = _feature_block(base, head_name, True, data, width, seed, rule)
            joined_certificate = certify(joined_map, z_joined, gram_budget_bytes=config.gram_budget_bytes, seed=seed)
            if joined_certificate.sigma_min > certificate.sigma_min:
                collapsed = data.n_train - count_distinct(z_train)
                note = (f"the input of the last affine layer joined with the flattened input, because the last layer alone "
                        f"gave σ_min(Φ) = {certificate.sigma_min:.2e} ({collapsed} training inputs share a point with another)")
                append_input = True
                representation, feature_map, certificate = joined, joined_map, joined_certificate

    ee_model = EEModel(base, representation, feature_map, n_outputs=data.targets_train.shape[1])
    ee_model.cache_representation(data.x_train)
    return Transition(ee_model, certificate, width, note, append_input, time.perf_counter() - start)


def _feature_block(base: nn.Module, head_name: str | None, append_input: bool, data: TrainData, width: int,
                   seed: int, rule: str) -> tuple[FrozenRepresentation, torch.Tensor, RandomFeatureMap]:
    """Freeze the representation, encode the training inputs (N, D) and draw φ from the seed with bandwidth `rule`."""
    representation = FrozenRepresentation(base, head_name, append_input=append_input)
    z_train = representation.encode(data.x_train)
    generator = torch.Generator().manual_seed(seed + 1)
    return representation, z_train, build_feature_map(z_train, width, generator, bandwidth_rule=rule)


def run_ee(model: nn.Module, data: TrainData, algorithm: BaseAlgorithm, config: EEConfig, snapshot: Snapshot,
           explored: list[EpochRecord], *, seed: int, head_name: str | None, callbacks: Callbacks,
           checkpointer: Checkpointer | None = None, resume_state: dict | None = None) -> EEResult:
    """Transition at the snapshot, certify the feature block, and exploit.

    `explored` contains the base run's records up to the transition epoch, which
    are the EE run's exploration records. With a checkpointer, a checkpoint
    is written after every exploitation epoch (practical mode) or accepted
    step (certified mode); `resume_state` continues from one.
    """
    check_run(algorithm, config)
    tau = config.explore_epochs
    known = resume_state["known"] if resume_state is not None else None
    transition = make_transition(model, snapshot, data, config, seed=seed, head_name=head_name, known=known)
    ee_model = transition.model
    if resume_state is not None:
        ee_model.load_state_dict(resume_state["model"])
        loss_at_transition = resume_state["loss_at_transition"]
    else:
        loss_at_transition = make_epoch_record(ee_model, data, algorithm.loss, tau, 0.0).train_loss

    explored = [copy.deepcopy(r) for r in explored if r.epoch <= tau]
    result = EEResult(epochs=explored, seconds_per_epoch=0.0, model=ee_model, explore_epochs=tau, mode=config.mode,
                      width=transition.width, certificate=transition.certificate, loss_at_transition=loss_at_transition,
                      representation=transition.representation_note, transition_seconds=transition.seconds)

    def checkpoint_state(phase: str, epoch: int) -> dict:
        return {"phase": phase, "epoch": epoch, "model": ee_model.state_dict(), "transition": snapshot.to_state(),
                "explored": records_to_state(explored), "known": transition.known_state(),
                "loss_at_transition": loss_at_transition}

    if config.mode == "practical":
        _exploit_practical(result, ee_model, snapshot, data, algorithm, config, callbacks, checkpointer, resume_state, checkpoint_state)
    else:
        _exploit_certified(result, ee_model, data, algorithm, config, callbacks, checkpointer, resume_state, checkpoint_state)

    result.seconds_per_epoch = _mean_seconds([r for r in result.epochs if r.epoch > tau])
    result.final_train_loss = result.epochs[-1].train_loss
    return result


def _exploit_practical(result: EEResult, ee_model: EEModel, snapshot: Snapshot, data: TrainData, algorithm: BaseAlgorithm,
                       config: EEConfig, callbacks: Callbacks, checkpointer: Checkpointer | None, resume_state: dict | None,
                       checkpoint_state: Callable[[str, int], dict]) -> None:
    """Train f̃ with the base algorithm itself: same optimizer state, schedule and random streams, plus a group for V."""
    tau = config.explore_epochs
    optimizer = algorithm.make_optimizer([{"params": [p for p in ee_model.base.parameters() if p.requires_grad]}])
    optimizer.load_state_dict(snapshot.optimizer_state)
    result.feature_lr = feature_learning_rate(algorithm, config.feature_lr)
    add_param_group(optimizer, {"params": [ee_model.V], "lr": result.feature_lr})
    streams = RandomStreams.seeded(0)
    streams.set_state(snapshot.streams_state)
    first_epoch = tau
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        streams.set_state(resume_state["streams"])
        result.epochs = records_from_state(resume_state["records"])
        first_epoch = resume_state["epoch"]

    def after_epoch(record: EpochRecord) -> None:
        result.epochs.append(record)
        if checkpointer is not None:
            state = checkpoint_state("exploit", record.epoch)
            state.update(optimizer=optimizer.state_dict(), streams=streams.get_state(), records=records_to_state(result.epochs))
            checkpointer.save(state)

    train_epochs(ee_model, optimizer, data, algorithm, first_epoch=first_epoch, n_epochs=config.epochs - first_epoch,
                 total_epochs=config.epochs, streams=streams, phase="exploit", callbacks=callbacks, on_epoch=after_epoch,
                 forward=ee_model.forward_indexed)


def _exploit_certified(result: EEResult, ee_model: EEModel, data: TrainData, algorithm: BaseAlgorithm, config: EEConfig,
                       callbacks: Callbacks, checkpointer: Checkpointer | None, resume_state: dict | None,
                       checkpoint_state: Callable[[str, int], dict]) -> None:
    """Train f̃ by full-batch gradient descent with Armijo steps; the last record is the point where it stopped."""
    tau = config.explore_epochs
    progress = None
    elapsed = 0.0
    if resume_state is not None:
        saved = resume_state["progress"]
        progress = CertifiedProgress(steps=[CertifiedStep(**row) for row in saved["steps"]], violations=saved["violations"],
                                     v_scale=saved["v_scale"], theta_scale=saved["theta_scale"], finished=saved["finished"])
        elapsed = saved["seconds"]
    start = time.perf_counter()

    def after_step(current: CertifiedProgress) -> None:
        if checkpointer is not None:
            state = checkpoint_state("certified", tau)
            state["progress"] = {"steps": [asdict(s) for s in current.steps], "violations": current.violations,
                                 "v_scale": current.v_scale, "theta_scale": current.theta_scale, "finished": current.finished,
                                 "seconds": elapsed + time.perf_counter() - start}
            checkpointer.save(state)

    progress = run_certified(ee_model, data, algorithm, result.certificate, max_steps=config.certified_steps,
                             target_ratio=config.certified_target, callbacks=callbacks, progress=progress, on_step=after_step)
    result.steps, result.bound_violations = progress.steps, progress.violations
    record = make_epoch_record(ee_model, data, algorithm.loss, tau + 1, elapsed + time.perf_counter() - start)
    record.extra.update(callbacks.on_epoch_end("exploit", tau + 1, ee_model))
    result.epochs.append(record)


def train_framework(model: nn.Module, data: TrainData, algorithm: BaseAlgorithm, config: EEConfig, *, framework: str,
                    seed: int, head_name: str | None, callbacks: Callbacks, checkpointer: Checkpointer | None = None,
                    resume: bool = False) -> RunResult | EEResult:
    """Run one framework (`base` or `ee`) end to end, with a checkpoint after every epoch.

    With `resume`, the run continues from the checkpointer's saved state (or
    starts afresh when there is none) and finishes with the figures an
    uninterrupted run with the same seed would give.
    """
    if framework not in FRAMEWORKS:
        raise TrainingConfigError("--framework", framework, f"one of {', '.join(FRAMEWORKS)}")
    if resume and checkpointer is None:
        raise TrainingConfigError("--resume", True, "a --checkpoint-dir to resume from")
    check_run(algorithm, config)
    state = checkpointer.load() if resume and checkpointer is not None else None
    phase = state["phase"] if state is not None else None

    if framework == "base":
        result, _ = run_base(model, data, algorithm, config, seed=seed, callbacks=callbacks, checkpointer=checkpointer,
                             resume_state=state if phase == "base" else None)
        return result

    if phase in ("exploit", "certified"):
        snapshot = Snapshot.from_state(state["transition"])
        explored = records_from_state(state["explored"])
    else:
        explored_run, snapshot = run_base(model, data, algorithm, config, seed=seed, callbacks=callbacks, checkpointer=checkpointer,
                                          resume_state=state if phase == "explore" else None, n_epochs=config.explore_epochs,
                                          phase="explore")
        explored = explored_run.epochs
    return run_ee(model, data, algorithm, config, snapshot, explored, seed=seed, head_name=head_name, callbacks=callbacks,
                  checkpointer=checkpointer, resume_state=state if phase in ("exploit", "certified") else None)
