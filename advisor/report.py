"""The report data model: what `report.json` holds.

CI scripts read these keys, so the names listed in the design contract are
fixed; new keys may be added. Bump SCHEMA_VERSION when a key changes meaning
or disappears.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1.0"


class Strict(BaseModel):
    model_config = ConfigDict(extra="allow")


class TensorInfo(Strict):
    name: str
    shape: list[int]
    trainable: bool


class ModelSection(Strict):
    spec: str
    kind: str
    n_params: int
    tensors: list[TensorInfo]
    input_shape: list[int]
    n_outputs: int
    opset: int | None = None
    conversion_max_abs_diff: float | None = None


class DataSection(Strict):
    spec: str
    task: Literal["classification", "regression"]
    n_train: int
    n_test: int
    n_analysis: int
    n_outputs: int
    class_counts: dict[str, int] = Field(default_factory=dict)
    analysis_class_counts: dict[str, int] = Field(default_factory=dict)
    seed: int
    split: str = ""


class SubsetItem(Strict):
    tensor: str
    coefficient: float


class StructureSection(Strict):
    holds: bool
    form: Literal["exact", "generalized", "none"]
    subset: list[SubsetItem]
    relative_error: float
    tolerance: float
    n_examples: int
    n_points: int
    last_layer_subset: list[str] | None = None
    breaking_op: str | None = None
    fix: str | None = None


class CurveItem(Strict):
    eps: float
    rho: float
    resolved: bool = True
    # Matrix-free bounds on ρ(ε); `rho` is then their midpoint.
    rho_lower: float | None = None
    rho_upper: float | None = None


class AlignmentPoint(Strict):
    """ρ_S and, where it ran, the exact ρ at one point of training."""

    stage: Literal["init", "epoch", "transition", "final"]
    epoch: int
    n: int
    rho_s: float | None
    rho: float | None
    method: Literal["exact", "lsqr", "features"]
    converged: bool
    rank: int | None = None
    rank_tolerance: float | None = None
    sigma_max: float | None = None
    sigma_min: float | None = None
    rho_curve: list[CurveItem] = Field(default_factory=list)
    # ½ρ²‖Y‖² over the n analysis examples (sum form) and the measured
    # Σ_i ½‖f(x_i) − y_i‖² on the same examples at the same parameters.
    loss_lower_bound: float | None = None
    loss: float | None = None
    skipped_reason: str | None = None
    singular_values: list[float] = Field(default_factory=list)
    seconds: float = 0.0
    # Why this method ran, why `converged` is false when it is, the
    # smallest ε whose ρ(ε) is resolved (matrix-free only) and its iterations.
    method_reason: str | None = None
    converged_reason: str | None = None
    eps_resolved: float | None = None
    iterations: int | None = None


class EpochItem(Strict):
    epoch: int
    train_loss: float
    train_accuracy: float | None
    test_loss: float
    test_accuracy: float | None
    rho_s: float | None = None


class CertificateItem(Strict):
    sigma_min: float
    sigma_max: float
    method: str


class StepItem(Strict):
    step: int
    loss: float
    certified_factor: float | None


class RunSection(Strict):
    epochs: list[EpochItem]
    seconds_per_epoch: float


class EESection(RunSection):
    explore_epochs: int
    mode: Literal["practical", "certified"]
    p: int
    certificate: CertificateItem
    representation: str
    loss_at_transition: float
    final_train_loss: float
    bound_violations: int
    steps: list[StepItem] = Field(default_factory=list)
    feature_lr: float | None = None


class TrainingSection(Strict):
    loss: Literal["mse", "ce"]
    algorithm: dict[str, object]
    base: RunSection
    ee: EESection


class Verdict(Strict):
    label: Literal["aligned", "misaligned", "structure-fails"]
    confirmed: bool | None
    sentences: list[str]


class Recommendation(Strict):
    text: str
    rests_on: list[Literal["R1", "R2", "R3", "R4", "R5"]]


class EnvironmentSection(Strict):
    python: str
    torch: str
    advisor: str
    device: str
    seed: int
    command_line: list[str]
    stage_seconds: dict[str, float]
    threads: int


class Report(Strict):
    schema_version: str = SCHEMA_VERSION
    model: ModelSection
    data: DataSection
    structure: StructureSection
    alignment: list[AlignmentPoint]
    training: TrainingSection | None = None
    verdict: Verdict
    recommendations: list[Recommendation]
    caveats: list[str]
    environment: EnvironmentSection
    settings: dict[str, object] = Field(default_factory=dict)
