"""The report data model: what `report.json` holds.

CI scripts read these keys, so the names listed in the design contract are
fixed; new keys may be added. Bump SCHEMA_VERSION when a key changes meaning
or disappears.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from advisor.errors import ReportError

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
    # Fitted coefficient of every parameter tensor, in or out of the subset.
    coefficients: dict[str, float] = Field(default_factory=dict)


class CurveItem(Strict):
    eps: float
    rho: float
    resolved: bool = True
    # Matrix-free bounds on ρ(ε); `rho` is then their midpoint.
    rho_lower: float | None = None
    rho_upper: float | None = None


class AlignmentPoint(Strict):
    """ρ_S and, where it ran, the exact ρ at one point of training.

    `rho_s` is measured on the whole training split (`n_rho_s` examples, last-layer
    features from a float32 pass), `rho_s_analysis` and `rho` on the `n`
    analysis examples in float64, so rho <= rho_s_analysis always.
    """

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
    # The route the method took and the shape of J: rows n·m, columns P.
    route: str | None = None
    n_rows: int | None = None
    n_columns: int | None = None


class EpochItem(Strict):
    epoch: int
    train_loss: float
    train_accuracy: float | None
    test_loss: float
    test_accuracy: float | None
    rho_s: float | None = None


class CertificateItem(Strict):
    """σ_min(Φ) of the feature block; `method` is exact (Gram eigenvalues) or lobpcg (an estimate, see `note`)."""

    sigma_min: float
    sigma_max: float
    method: str
    note: str = ""
    residual: float | None = None


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
    """The base and EE runs; `advisor train` runs one framework and leaves the other None."""

    loss: Literal["mse", "ce"]
    algorithm: dict[str, object]
    base: RunSection | None
    ee: EESection | None


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


def supports_schema_version(version: object) -> bool:
    """Return True when `version` has the major number of SCHEMA_VERSION: minor versions only add keys."""
    if not isinstance(version, str):
        return False
    major, _, minor = version.partition(".")
    return major == SCHEMA_VERSION.partition(".")[0] and (minor == "" or minor.isdigit())


def load_report(path: Path) -> Report:
    """Read and validate a `report.json`.

    Raises ReportError when the file is missing, is not JSON, has a
    schema_version of another major version, or does not match the model.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ReportError(str(path), f"cannot be read ({error.strerror or error})", "Pass the report.json that advisor check wrote.") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportError(str(path), f"is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})",
                          "Pass the report.json that advisor check wrote.") from error
    if not isinstance(data, dict):
        raise ReportError(str(path), f"contains a JSON {type(data).__name__}, not an object", "Pass the report.json that advisor check wrote.")

    version = data.get("schema_version")
    if not supports_schema_version(version):
        raise ReportError(str(path), f"has schema_version {version!r}, but this advisor supports schema version {SCHEMA_VERSION} "
                          f"(any {SCHEMA_VERSION.partition('.')[0]}.x)", "Re-create the report with this advisor's check command.")
    try:
        return Report.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ReportError(str(path), f"does not match the report schema {SCHEMA_VERSION}: {where}: {first['msg']} "
                          f"({error.error_count()} problem(s) in all)", "Re-create the report with this advisor's check command.") from error
