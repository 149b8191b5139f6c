"""The `advisor train` pipeline: one training framework with checkpoints, and its report.

Unlike `advisor check`, this runs only the framework asked for (`base` or
`ee`), measures only the last-layer bound ρ_S along the way, and can resume a
killed run from its checkpoint. The report has the same schema as the check
report, with `training.base` or `training.ee` left empty.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from advisor.alignment import last_layer_rho
from advisor.config import CheckConfig
from advisor.data import analysis_indices
from advisor.environment import describe_environment
from advisor.errors import UnknownChoiceError, UsageError
from advisor.pipeline import StageClock, _data_section, _epoch_items, _model_section, _structure_section, load_inputs, seed_everything
from advisor.progress import ProgressSink
from advisor.report import AlignmentPoint, CertificateItem, EESection, Report, RunSection, StepItem, TrainingSection
from advisor.structure import check_structure
from advisor.trace import ForwardTrace, trace_forward
from advisor.verdict import make_recommendations, make_verdict
from training import FRAMEWORKS, Callbacks, Checkpointer, EEResult, RunResult, TrainData, train_framework

# Settings that do not change a figure of the run, so a checkpoint written
# under other values of them can still be resumed.
NOT_FINGERPRINTED = ("resume", "checkpoint_dir", "device")


@dataclass(frozen=True)
class TrainConfig(CheckConfig):
    """The check settings plus the framework to run and where its checkpoints go."""

    framework: str = "ee"
    checkpoint_dir: str | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.framework not in FRAMEWORKS:
            raise UnknownChoiceError("--framework", self.framework, FRAMEWORKS)
        if self.resume and self.checkpoint_dir is None:
            raise UsageError("--resume", True, "a --checkpoint-dir to resume from")

    def fingerprint(self) -> dict:
        return {key: value for key, value in self.as_dict().items() if key not in NOT_FINGERPRINTED}


class RhoSTracker(Callbacks):
    """Measures ρ_S on the training split after every base or exploration epoch and forwards progress."""

    def __init__(self, x_train: torch.Tensor, targets_train, trace: ForwardTrace, progress: ProgressSink) -> None:
        self.x_train = x_train
        self.targets_train = targets_train
        self.trace = trace
        self.progress = progress

    def on_phase_start(self, phase: str, total_steps: int) -> None:
        self.progress.start_task(phase, total_steps)

    def on_step(self, phase: str, step: int, total_steps: int, loss: float) -> None:
        self.progress.advance(phase, step, total_steps, detail=f"batch loss {loss:.4g}")

    def on_epoch_end(self, phase: str, epoch: int, model: nn.Module) -> dict[str, float]:
        if phase not in ("base", "explore"):
            return {}
        measured = last_layer_rho(model, self.x_train, self.targets_train, self.trace)
        return {"rho_s": measured.rho} if measured is not None else {}


def _alignment_points(records, n_train: int, explore_epochs: int, final_epoch: int) -> list[AlignmentPoint]:
    """Build ρ_S points from the epoch records, which survive a resume because the checkpoint contains them."""
    points = []
    for record in records:
        if "rho_s" not in record.extra:
            continue
        stage = "epoch"
        if record.epoch == 0:
            stage = "init"
        elif record.epoch == explore_epochs:
            stage = "transition"
        elif record.epoch == final_epoch:
            stage = "final"
        points.append(AlignmentPoint(stage=stage, epoch=record.epoch, n=n_train, rho_s=record.extra["rho_s"], rho=None,
                                     method="features", converged=True, n_rho_s=n_train, rho_s_analysis=None,
                                     skipped_reason="advisor train measures only ρ_S; advisor check measures the exact ρ"))
    return points


def _run_section(result: RunResult) -> RunSection:
    return RunSection(epochs=_epoch_items(result.epochs), seconds_per_epoch=result.seconds_per_epoch)


def _ee_section(ee: EEResult) -> EESection:
    certificate = ee.certificate
    return EESection(
        epochs=_epoch_items(ee.epochs), seconds_per_epoch=ee.seconds_per_epoch, explore_epochs=ee.explore_epochs, mode=ee.mode,
        p=ee.width, certificate=CertificateItem(sigma_min=certificate.sigma_min, sigma_max=certificate.sigma_max,
                                                method=certificate.method, note=certificate.note, residual=certificate.residual),
        representation=ee.representation, loss_at_transition=ee.loss_at_transition, final_train_loss=ee.final_train_loss,
        bound_violations=ee.bound_violations, steps=[StepItem(step=s.step, loss=s.loss, certified_factor=s.certified_factor) for s in ee.steps],
        feature_lr=ee.feature_lr, transition_seconds=ee.transition_seconds,
    )


def run_train(config: TrainConfig, progress: ProgressSink | None = None) -> Report:
    """Train one framework with checkpoints and return its report; raises AdvisorError or TrainingConfigError on bad input."""
    progress = progress or ProgressSink()
    clock = StageClock(progress)
    seed_everything(config.seed)

    dataset, loaded, model, x_train = load_inputs(config, clock)
    caveats = list(loaded.caveats)
    indices = analysis_indices(dataset, config.max_samples, config.seed)

    with clock.stage("structure check"):
        x_analysis = x_train[torch.from_numpy(indices)]
        trace = trace_forward(model, x_analysis[:2])
        structure = _structure_section(check_structure(model, x_analysis[: config.structure_samples], trace, seed=config.seed))

    data = TrainData(x_train=x_train, targets_train=torch.from_numpy(dataset.targets_train), x_test=torch.from_numpy(dataset.x_test),
                     targets_test=torch.from_numpy(dataset.targets_test), classification=dataset.task == "classification")
    head = trace.last_parametric.module if trace.ends_affine and trace.last_parametric and trace.last_parametric.name == "linear" else None
    checkpointer = Checkpointer(config.checkpoint_dir, config.fingerprint()) if config.checkpoint_dir is not None else None
    algorithm = config.algorithm()
    ee_config = config.ee_config()
    with clock.stage(f"{config.framework} training"):
        result = train_framework(model, data, algorithm, ee_config, framework=config.framework, seed=config.seed, head_name=head,
                                 callbacks=RhoSTracker(x_train, dataset.targets_train, trace, progress),
                                 checkpointer=checkpointer, resume=config.resume)

    if isinstance(result, EEResult):
        training = TrainingSection(loss=config.loss, algorithm=asdict(algorithm), base=None, ee=_ee_section(result))
    else:
        training = TrainingSection(loss=config.loss, algorithm=asdict(algorithm), base=_run_section(result), ee=None)
    points = _alignment_points(result.epochs, dataset.n_train, config.explore_epochs, config.epochs)
    caveats.append(f"advisor train ran only the {config.framework} framework, so the verdict is not confirmed by comparing "
                   f"the base and EE runs; advisor check runs both.")
    verdict = make_verdict(structure, points, None, rho_tolerance=config.rho_tolerance, confirm_ratio=config.confirm_ratio)
    recommendations = make_recommendations(structure, points, verdict, last_width=None, n_train=dataset.n_train)
    return Report(
        model=_model_section(loaded, dataset), data=_data_section(dataset, indices), structure=structure, alignment=points,
        training=training, verdict=verdict, recommendations=recommendations, caveats=caveats,
        environment=describe_environment(device=config.device, seed=config.seed, stage_seconds=clock.seconds),
        settings=config.as_dict(),
    )
