"""The `advisor check` pipeline: load, check structure, measure alignment, train, conclude."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import asdict
import time
from contextlib import contextmanager

import numpy as np
import torch

from advisor.config import CheckConfig
from advisor.data import Dataset, analysis_indices, load_dataset
from advisor.engine import Budget, ExactMethod, MethodChoice, Probe, choose_method, measure_probe
from advisor.environment import describe_environment
from advisor.errors import BudgetError, UsageError
from advisor.measure import AlignmentTracker
from advisor.models import LoadedModel, build_model, check_output_shape, count_parameters
from advisor.progress import ProgressSink
from advisor.report import (CertificateItem, DataSection, EESection, EpochItem, ModelSection, Report, RunSection,
                            StepItem, StructureSection, SubsetItem, TensorInfo, TrainingSection)
from advisor.structure import STRUCTURE_TOLERANCE, check_structure
from advisor.trace import trace_forward
from advisor.verdict import TrainingFigures, make_recommendations, make_verdict
from training import BaseAlgorithm, TrainData, run_base, run_ee


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class StageClock:
    """Wall seconds per named stage, for the report's provenance."""

    def __init__(self, progress: ProgressSink) -> None:
        self.seconds: dict[str, float] = {}
        self.progress = progress

    @contextmanager
    def stage(self, name: str):
        self.progress.stage(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _model_section(loaded: LoadedModel, dataset: Dataset) -> ModelSection:
    module = loaded.module
    tensors = [TensorInfo(name=name, shape=list(p.shape), trainable=p.requires_grad) for name, p in module.named_parameters()]
    fields = dict(spec=loaded.spec, kind=loaded.kind, n_params=count_parameters(module), tensors=tensors,
                  input_shape=list(dataset.input_shape), n_outputs=dataset.n_outputs,
                  opset=loaded.details.get("onnx_opset"), conversion_max_abs_diff=loaded.details.get("conversion_max_abs_diff"))
    # The loaders' details become extra fields. An imported graph's input
    # shape was already checked equal to the data's, so the declared field wins.
    extras = {k: v for k, v in loaded.details.items() if k not in fields and k != "onnx_opset"}
    return ModelSection(**fields, **extras)


def _data_section(dataset: Dataset, indices: np.ndarray) -> DataSection:
    return DataSection(spec=dataset.spec, task=dataset.task, n_train=dataset.n_train, n_test=dataset.n_test,
                       n_analysis=int(indices.size), n_outputs=dataset.n_outputs, class_counts=dataset.class_counts(),
                       analysis_class_counts=dataset.class_counts(indices), seed=dataset.seed, split=dataset.split_note)


def _structure_section(result) -> StructureSection:
    return StructureSection(holds=result.holds, form=result.form, subset=[SubsetItem(tensor=s.tensor, coefficient=s.coefficient) for s in result.subset],
                            relative_error=result.relative_error, tolerance=STRUCTURE_TOLERANCE, n_examples=result.n_examples,
                            n_points=result.n_points, last_layer_subset=result.last_layer_subset, breaking_op=result.breaking_op,
                            fix=result.fix, coefficients=result.coefficients)


def _epoch_items(records) -> list[EpochItem]:
    return [EpochItem(epoch=r.epoch, train_loss=r.train_loss, train_accuracy=r.train_accuracy, test_loss=r.test_loss,
                      test_accuracy=r.test_accuracy, rho_s=r.extra.get("rho_s"), seconds=r.seconds) for r in records]


def _decide_method(config: CheckConfig, loaded: LoadedModel, x_analysis: torch.Tensor,
                   n_outputs: int) -> tuple[MethodChoice | None, Budget, Probe | None, bool, str | None, dict]:
    """Return (method choice, budget, probe, also every epoch, reason when ρ is skipped, estimates for the report).

    Raises BudgetError when --rho-method exact does not fit the budget.
    """
    budget = Budget(memory_bytes=config.memory_budget_gb * 2**30, time_s=config.time_budget_s)
    if config.rho_method == "features":
        return None, budget, None, False, "--rho-method features computes only the last-layer bound ρ_S", {}

    probe = measure_probe(loaded.module, x_analysis, n_outputs)
    choice = choose_method(config.rho_method, probe, budget)
    estimates = {"chosen": choice.method, "reason": choice.reason, "methods": choice.estimates_dict()}
    if choice.method == "features":
        return None, budget, probe, False, choice.reason, estimates
    every_epoch = choice.estimates[choice.method].seconds <= config.per_epoch_exact_s
    return choice, budget, probe, every_epoch, None, estimates


# Below this many examples an exact ρ tells too little about the training set
# to replace the requested method.
MIN_EXACT_EXAMPLES = 32


def _largest_exact_subset(probe: Probe, budget: Budget) -> int:
    """Find the largest n ≤ probe.n_examples whose exact-method estimate fits the budget (0 when none does)."""
    exact = ExactMethod()
    low, high = 0, probe.n_examples
    while low < high:
        middle = (low + high + 1) // 2
        if exact.estimate(dataclasses.replace(probe, n_examples=middle), budget).fits:
            low = middle
        else:
            high = middle - 1
    return low


def load_inputs(config, clock: StageClock) -> tuple[Dataset, LoadedModel, torch.nn.Module, torch.Tensor]:
    """Load the dataset and build the model that `config` names, checking the output shape.

    `config` is a CheckConfig or a TrainConfig: both carry the data and model
    options. Returns (dataset, loaded model, float32 module, x_train tensor).
    """
    with clock.stage("load data"):
        dataset = load_dataset(config.data_spec, seed=config.seed, task=config.task, target=config.target)
    if config.loss == "ce" and dataset.task != "classification":
        raise UsageError("--loss", "ce", "mse for a regression dataset")

    with clock.stage("build model"):
        seed_everything(config.seed)
        loaded = build_model(
            config.model_spec, input_shape=dataset.input_shape, n_outputs=dataset.n_outputs, model_args=config.model_args,
            weights=config.weights, trust_pickle=config.trust_pickle, logits=config.logits,
            max_model_bytes=config.max_model_bytes, input_shape_override=config.input_shape,
        )
        model = loaded.module.float()
        x_train = torch.from_numpy(dataset.x_train)
        check_output_shape(loaded, x_train[:2], dataset.n_outputs)
    return dataset, loaded, model, x_train


def run_check(config: CheckConfig, progress: ProgressSink | None = None) -> Report:
    """Run the whole check and return the report; raises AdvisorError subclasses on bad input."""
    progress = progress or ProgressSink()
    clock = StageClock(progress)
    caveats: list[str] = []
    seed_everything(config.seed)

    dataset, loaded, model, x_train = load_inputs(config, clock)
    caveats += loaded.caveats

    indices = analysis_indices(dataset, config.max_samples, config.seed)
    x_analysis = x_train[torch.from_numpy(indices)]
    targets_analysis = dataset.targets_train[indices]

    with clock.stage("structure check"):
        trace = trace_forward(model, x_analysis[:2])
        structure = check_structure(model, x_analysis[: config.structure_samples], trace, seed=config.seed,
                                    imported=loaded.kind in ("onnx", "torchscript"))
    caveats.append(f"The structure assumption was tested numerically on {structure.n_examples} examples at {structure.n_points} "
                   f"parameter points (the model's and a seeded perturbation), not proved.")
    caveats += structure.notes

    with clock.stage("cost estimate"):
        choice, budget, probe, every_epoch, skipped_reason, estimate = _decide_method(config, loaded, x_analysis, dataset.n_outputs)
        n_exact = _largest_exact_subset(probe, budget) if config.rho_method == "auto" and probe is not None else 0
        if (choice is None or choice.method != "exact") and n_exact >= MIN_EXACT_EXAMPLES:
            # A bound alone cannot show misalignment, so the exact ρ runs on
            # the largest stratified subset that fits the budget instead.
            requested = int(x_analysis.shape[0])
            indices = analysis_indices(dataset, n_exact, config.seed)
            x_analysis = x_train[torch.from_numpy(indices)]
            targets_analysis = dataset.targets_train[indices]
            probe = dataclasses.replace(probe, n_examples=n_exact)
            exact_estimate = ExactMethod().estimate(probe, budget)
            reason = (f"exact on {n_exact} of the {requested} requested examples, the largest stratified subset whose "
                      f"estimate ({exact_estimate.describe()}) fits the budget")
            choice = MethodChoice("exact", reason, {**(choice.estimates if choice else {}), "exact": exact_estimate})
            every_epoch = exact_estimate.seconds <= config.per_epoch_exact_s
            skipped_reason = None
            estimate = {"chosen": "exact", "reason": reason, "methods": choice.estimates_dict()}
            caveats.append(f"The exact ρ ran on {n_exact} of the {requested} requested analysis examples, the most that fit "
                           f"the budget; ρ_S covers the whole training split.")
    if skipped_reason:
        caveats.append(f"The exact ρ was skipped: {skipped_reason}. Reported figures use the last-layer bound ρ_S, which can exceed ρ.")
    elif choice is not None and choice.method == "lsqr":
        caveats.append("ρ came from the matrix-free method: it is an upper bound, and ρ(ε) is a bracket that counts as "
                       "resolved only down to the ε the report names; no certified loss lower bound is printed.")

    tracker = AlignmentTracker(x_train=x_train, targets_train=dataset.targets_train, x_analysis=x_analysis,
                               targets_analysis=targets_analysis, trace=trace, choice=choice, budget=budget, probe=probe, exact_every_epoch=every_epoch,
                               explore_epochs=config.explore_epochs, final_epoch=config.epochs, skipped_reason=skipped_reason,
                               progress=progress)
    training_section = None
    figures = None
    if not config.confirm:
        with clock.stage("alignment at initialization"):
            tracker.points.append(tracker.measure(model, "init", 0, exact=tracker.use_exact))
    else:
        algorithm = config.algorithm()
        ee_config = config.ee_config()
        data = TrainData(x_train=x_train, targets_train=torch.from_numpy(dataset.targets_train), x_test=torch.from_numpy(dataset.x_test),
                         targets_test=torch.from_numpy(dataset.targets_test), classification=dataset.task == "classification")
        head = trace.last_parametric.module if trace.ends_affine and trace.last_parametric and trace.last_parametric.name == "linear" else None

        with clock.stage("base training"):
            base, snapshot = run_base(model, data, algorithm, ee_config, seed=config.seed, callbacks=tracker)
        with clock.stage("EE training"):
            ee = run_ee(model, data, algorithm, ee_config, snapshot, base.epochs, seed=config.seed, head_name=head, callbacks=tracker)
        training_section = _training_section(config, algorithm, base, ee)
        figures = _training_figures(tracker, base, ee, config)
        caveats.append("ρ(ε) describes the linearization at one parameter point; it says which directions gradient descent fits "
                       "quickly there, not along the whole run.")
        if config.loss == "ce":
            caveats.append("With cross-entropy the global minimum 0 is an infimum that training approaches but never attains; the "
                           "certified lower bound and the certified contraction are statements about the squared loss.")

    structure_section = _structure_section(structure)
    verdict = make_verdict(structure_section, tracker.points, figures, rho_tolerance=config.rho_tolerance, confirm_ratio=config.confirm_ratio)
    last_width = None
    if trace.ends_affine and trace.last_parametric is not None:
        head_module = dict(model.named_modules()).get(trace.last_parametric.module)
        last_width = getattr(head_module, "in_features", None)
    recommendations = make_recommendations(structure_section, tracker.points, verdict, last_width=last_width, n_train=dataset.n_train)

    settings = config.as_dict()
    settings["rho_estimates"] = estimate
    return Report(
        model=_model_section(loaded, dataset), data=_data_section(dataset, indices), structure=structure_section,
        alignment=tracker.points, training=training_section, verdict=verdict, recommendations=recommendations, caveats=caveats,
        environment=describe_environment(device=config.device, seed=config.seed, stage_seconds=clock.seconds), settings=settings,
    )


def _training_section(config: CheckConfig, algorithm: BaseAlgorithm, base, ee) -> TrainingSection:
    certificate = ee.certificate
    ee_section = EESection(
        epochs=_epoch_items(ee.epochs), seconds_per_epoch=ee.seconds_per_epoch, explore_epochs=ee.explore_epochs, mode=ee.mode,
        p=ee.width, certificate=CertificateItem(sigma_min=certificate.sigma_min, sigma_max=certificate.sigma_max, method=certificate.method,
                                    note=certificate.note, residual=certificate.residual),
        representation=ee.representation, loss_at_transition=ee.loss_at_transition, final_train_loss=ee.final_train_loss,
        bound_violations=ee.bound_violations, steps=[StepItem(step=s.step, loss=s.loss, certified_factor=s.certified_factor) for s in ee.steps],
        feature_lr=ee.feature_lr, transition_seconds=ee.transition_seconds,
    )
    return TrainingSection(loss=config.loss, algorithm=asdict(algorithm),
                           base=RunSection(epochs=_epoch_items(base.epochs), seconds_per_epoch=base.seconds_per_epoch), ee=ee_section)


def _training_figures(tracker: AlignmentTracker, base, ee, config: CheckConfig) -> TrainingFigures:
    violations = sum(1 for p in tracker.points if p.loss is not None and p.loss_lower_bound is not None
                     and p.loss < p.loss_lower_bound * (1 - 1e-9))
    return TrainingFigures(base_initial_loss=base.epochs[0].train_loss, base_final_loss=base.epochs[-1].train_loss,
                           ee_transition_loss=ee.loss_at_transition, ee_final_loss=ee.final_train_loss,
                           bound_violations_base=violations, ee_bound_violations=ee.bound_violations, epochs=config.epochs)
