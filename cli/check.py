"""`advisor check`: structure check, alignment, base and EE training, verdict, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from cli import training_options as options
from cli.options import output_path, split_list

REPORT_FORMATS = ("json", "md", "html")
FAIL_ON_CHOICES = ("structure", "misaligned", "no-convergence")


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    from advisor.errors import UsageError

    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError("--input-shape", text, "positive sizes separated by commas, e.g. 3,32,32") from None


def check(
    model: Annotated[Optional[str], typer.Argument(help="Model: path/to/file.py:NAME, torchvision:NAME, path/to/model.onnx, path/to/model.pt (TorchScript), or nothing for the built-in residual CNN.")] = None,
    data: Annotated[str, typer.Option(help="Dataset: digits, mnist:DIR, fashion-mnist:DIR, cifar10:DIR, cifar100:DIR, svhn:DIR, imagefolder:DIR, npz:FILE, pt:FILE or csv:FILE. Nothing is downloaded.")] = "digits",
    task: Annotated[Optional[str], typer.Option(help="classification or regression; inferred from the targets when unambiguous.")] = None,
    target: Annotated[Optional[str], typer.Option(help="Target column of a CSV file (name or 0-based position; default: the last column) or target array key of an npz/pt file (default: y).")] = None,
    model_arg: Annotated[list[str], typer.Option("--model-arg", help="Keyword argument for the model constructor, key=value; repeatable.")] = [],
    weights: Annotated[Optional[Path], typer.Option(help="State_dict file loaded into a file.py:NAME or torchvision:NAME model (read with torch.load(weights_only=True)).")] = None,
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="Allow a .pt file that holds a pickled full module; unpickling runs code from the file.")] = False,
    logits: Annotated[bool, typer.Option("--logits", help="Cut a final Softmax, LogSoftmax or Sigmoid from an ONNX or TorchScript graph and analyse the logits.")] = False,
    input_shape: Annotated[Optional[str], typer.Option(help="Per-example input shape C,H,W (comma-separated sizes) replacing the one an ONNX graph declares.")] = None,
    max_model_mb: Annotated[float, typer.Option(help="Largest model or weights file to load, in MiB (external data included).")] = 2048.0,
    config_file: options.ConfigFile = None,
    loss: options.Loss = None,
    epochs: options.Epochs = None,
    explore_epochs: options.ExploreEpochs = None,
    mode: options.Mode = None,
    optimizer: options.Optimizer = None,
    lr: options.LearningRate = None,
    momentum: options.Momentum = None,
    nesterov: options.Nesterov = None,
    batch_size: options.BatchSize = None,
    weight_decay: options.WeightDecay = None,
    schedule: options.ScheduleName = None,
    warmup_epochs: options.WarmupEpochs = None,
    lr_step_epochs: options.StepEpochs = None,
    lr_gamma: options.Gamma = None,
    lr_final_factor: options.FinalFactor = None,
    lr_peak_fraction: options.PeakFraction = None,
    lr_one_cycle_div: options.OneCycleDiv = None,
    crop_padding: options.CropPadding = None,
    flip: options.Flip = None,
    certified_steps: options.CertifiedSteps = None,
    certified_target: options.CertifiedTarget = None,
    feature_lr: options.FeatureLr = None,
    seed: options.Seed = None,
    no_confirm: Annotated[bool, typer.Option("--no-confirm", help="Analysis only: structure and alignment at initialization, no training.")] = False,
    rho_method: Annotated[str, typer.Option(help="How to compute ρ: auto (the most accurate method within --memory-budget and --time-budget), exact (float64 Gram matrix), lsqr (matrix-free, ρ(ε) brackets), or features (ρ_S only).")] = "auto",
    max_samples: Annotated[int, typer.Option(help="Size of the class-stratified analysis subset for the exact ρ (examples).")] = 256,
    rho_tolerance: Annotated[float, typer.Option(help="ρ above this value after exploration means misaligned.")] = 1e-3,
    memory_budget: Annotated[float, typer.Option(help="Memory budget of one ρ measurement, in GiB; chunk sizes adapt to it.")] = 4.0,
    time_budget: Annotated[float, typer.Option(help="Time budget of one ρ measurement, in seconds; the matrix-free method stops at it.")] = 120.0,
    out: Annotated[Path, typer.Option(parser=output_path, help="Folder for the report files.")] = Path("advisor-report"),
    format: Annotated[str, typer.Option("--format", help="Comma-separated report formats: json, md (with SVG plots beside it), html (one self-contained file).")] = "json,md,html",
    fail_on: Annotated[str, typer.Option(help="Comma-separated conditions that make the exit code 1: structure, misaligned, no-convergence.")] = "",
    device: Annotated[str, typer.Option(help="Device; this version runs on cpu only.")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress display and no summary; only errors.")] = False,
) -> None:
    """Check MODEL on a dataset: structure, alignment, base and EE training, verdict and report."""
    from cli.outcome import exit_code_for, run_guarded

    out_console = Console()
    err_console = Console(stderr=True)

    def work():
        from advisor.atomic import require_output_folder
        from advisor.config import CheckConfig, merge_settings
        from advisor.models import parse_model_args
        from advisor.pipeline import run_check
        from cli.display import run_with_progress
        from reports.files import write_report

        formats = split_list("--format", format, REPORT_FORMATS, required=True)
        conditions = split_list("--fail-on", fail_on, FAIL_ON_CHOICES)
        require_output_folder("--out", out)
        training = merge_settings(config_file, dict(
            loss=loss, epochs=epochs, explore_epochs=explore_epochs, mode=mode, optimizer=optimizer, lr=lr, momentum=momentum,
            nesterov=nesterov, batch_size=batch_size, weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs,
            lr_step_epochs=lr_step_epochs, lr_gamma=lr_gamma, lr_final_factor=lr_final_factor,
            lr_peak_fraction=lr_peak_fraction, lr_one_cycle_div=lr_one_cycle_div, crop_padding=crop_padding, flip=flip,
            certified_steps=certified_steps, certified_target=certified_target, feature_lr=feature_lr, seed=seed,
        ))
        config = CheckConfig(
            model_spec=model, model_args=parse_model_args(model_arg), weights=str(weights) if weights is not None else None,
            trust_pickle=trust_pickle, logits=logits, max_model_bytes=int(max_model_mb * 2**20),
            input_shape=_parse_shape(input_shape), data_spec=data, task=task, target=target, confirm=not no_confirm,
            rho_method=rho_method, max_samples=max_samples, rho_tolerance=rho_tolerance, memory_budget_gb=memory_budget,
            time_budget_s=time_budget, device=device, **training,
        )
        report = run_with_progress(run_check, config, quiet=quiet, err_console=err_console)
        paths = write_report(report, out, formats)
        return report, paths, conditions

    report, paths, conditions = run_guarded(work, err_console)
    if not quiet:
        from cli.display import print_summary

        print_summary(report, paths, out_console)
    raise typer.Exit(exit_code_for(report, conditions))
