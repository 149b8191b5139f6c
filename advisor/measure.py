"""Alignment measurements along training, delivered to `training` as callbacks."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from advisor.alignment import AlignmentMeasure, last_layer_rho, stack_targets
from advisor.engine import AlignmentProblem, Budget, MethodChoice, Probe, run_method
from advisor.functional import analysis_copy
from advisor.progress import ProgressSink
from advisor.report import AlignmentPoint, CurveItem
from advisor.trace import ForwardTrace
from training import Callbacks


def squared_loss_sum(model: nn.Module, x: torch.Tensor, targets: np.ndarray) -> float:
    """Σ_i ½‖f(x_i) − y_i‖² in float64 with the model in eval mode."""
    work = analysis_copy(model)
    with torch.no_grad():
        outputs = torch.cat([work(x[s:s + 512].to(torch.float64)) for s in range(0, x.shape[0], 512)])
    return float(0.5 * ((outputs.numpy() - targets.astype(np.float64)) ** 2).sum())


class AlignmentTracker(Callbacks):
    """Measures ρ_S after every base epoch and ρ, by the chosen method, where it is due.

    ρ_S is measured on the whole training split (`rho_s`, features from a
    float32 forward pass because this runs every epoch over every example;
    the fit itself is float64) and on the analysis subset (`rho_s_analysis`,
    all float64, the bound that ρ on the same examples never exceeds). ρ runs
    at initialization, at the transition, at the end of the base run, and
    after every epoch when `exact_every_epoch` is set. `choice` is None or
    names `features` when only ρ_S is measured.
    """

    def __init__(self, *, x_train: torch.Tensor, targets_train: np.ndarray, x_analysis: torch.Tensor,
                 targets_analysis: np.ndarray, trace: ForwardTrace, choice: MethodChoice | None, budget: Budget | None, probe: Probe | None,
                 exact_every_epoch: bool, explore_epochs: int, final_epoch: int, skipped_reason: str | None,
                 progress: ProgressSink) -> None:
        self.x_train = x_train
        self.targets_train = targets_train
        self.x_analysis = x_analysis
        self.targets_analysis = targets_analysis
        self.trace = trace
        self.choice = choice
        self.budget = budget
        self.probe = probe
        self.use_exact = choice is not None and choice.method != "features"
        self.exact_every_epoch = exact_every_epoch
        self.explore_epochs = explore_epochs
        self.final_epoch = final_epoch
        self.skipped_reason = skipped_reason
        self.progress = progress
        self.points: list[AlignmentPoint] = []
        self.y_norm_squared = float(np.sum(stack_targets(targets_analysis) ** 2))

    def measure(self, model: nn.Module, stage: str, epoch: int, *, exact: bool) -> AlignmentPoint:
        whole = last_layer_rho(model, self.x_train, self.targets_train, self.trace, feature_dtype=torch.float32)
        subset = last_layer_rho(model, self.x_analysis, self.targets_analysis, self.trace)
        n = int(self.x_analysis.shape[0])
        point = AlignmentPoint(stage=stage, epoch=epoch, n=n, rho_s=whole.rho if whole else None, rho=None,
                               method="features", converged=True, n_rho_s=int(self.x_train.shape[0]),
                               rho_s_analysis=subset.rho if subset else None)
        if exact and self.choice is not None and self.budget is not None and self.probe is not None:
            problem = AlignmentProblem(model=model, x=self.x_analysis, targets=self.targets_analysis, trace=self.trace,
                                       rho_s=subset.rho if subset else None)
            measure = run_method(self.choice, problem, self.budget, self.probe)
            self._fill_exact(point, measure)
            point.method_reason = self.choice.reason
            point.loss = squared_loss_sum(model, self.x_analysis, self.targets_analysis)
        else:
            point.skipped_reason = self.skipped_reason or "the exact ρ is measured only at initialization, the transition and the end of the base run"
        return point

    def _fill_exact(self, point: AlignmentPoint, measure: AlignmentMeasure) -> None:
        point.rho = measure.rho
        point.method = measure.method
        point.converged = measure.converged
        point.converged_reason = measure.reason
        point.eps_resolved = measure.eps_resolved
        point.iterations = measure.iterations
        # The matrix-free method resolves neither the rank nor σ⁺_min.
        exact = measure.method == "exact"
        point.rank = measure.rank if exact else None
        point.rank_tolerance = measure.rank_tolerance if exact else None
        point.sigma_max = measure.sigma_max
        point.sigma_min = measure.sigma_min if exact else None
        point.rho_curve = [CurveItem(eps=c.eps, rho=c.rho, resolved=c.resolved, rho_lower=c.rho_lower, rho_upper=c.rho_upper)
                           for c in measure.curve]
        # R3's bound ½ρ²‖Y‖² needs ρ itself; the matrix-free ρ is an upper
        # bound, which would not bound the loss from below.
        point.loss_lower_bound = 0.5 * measure.rho**2 * self.y_norm_squared if measure.method == "exact" else None
        point.singular_values = measure.singular_values
        point.seconds = measure.seconds
        point.route = measure.route
        point.n_rows = measure.n_rows
        point.n_columns = measure.n_columns

    def _stages(self, epoch: int) -> list[str]:
        stages = []
        if epoch == 0:
            stages.append("init")
        if epoch == self.explore_epochs:
            stages.append("transition")
        if epoch == self.final_epoch and epoch != 0:
            stages.append("final")
        return stages or ["epoch"]

    def on_phase_start(self, phase: str, total_steps: int) -> None:
        self.progress.start_task(phase, total_steps)

    def on_step(self, phase: str, step: int, total_steps: int, loss: float) -> None:
        self.progress.advance(phase, step, total_steps, detail=f"batch loss {loss:.4g}")

    def on_epoch_end(self, phase: str, epoch: int, model: nn.Module) -> dict[str, float]:
        if phase != "base":
            return {}
        stages = self._stages(epoch)
        exact = self.use_exact and (stages != ["epoch"] or self.exact_every_epoch)
        point = self.measure(model, stages[0], epoch, exact=exact)
        self.points.append(point)
        for extra_stage in stages[1:]:
            self.points.append(point.model_copy(update={"stage": extra_stage}))
        return {"rho_s": point.rho_s} if point.rho_s is not None else {}
