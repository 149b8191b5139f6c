"""`advisor train`: one training framework with checkpoints and resume, and its report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from cli import training_options as options
from cli.check import REPORT_FORMATS
from cli.options import output_path, split_list


def train(
    model: Annotated[Optional[str], typer.Argument(help="Model: path/to/file.py:NAME, torchvision:NAME, path/to/model.onnx, path/to/model.pt (TorchScript), or nothing for the built-in residual CNN.")] = None,
    data: Annotated[str, typer.Option(help="Dataset: digits, mnist:DIR, fashion-mnist:DIR, cifar10:DIR, cifar100:DIR, svhn:DIR, imagefolder:DIR, npz:FILE, pt:FILE or csv:FILE. Nothing is downloaded.")] = "digits",
    framework: Annotated[str, typer.Option(help="Training framework: ee (exploration, transition, exploitation) or base (the base algorithm alone).")] = "ee",
    checkpoint_dir: Annotated[Optional[Path], typer.Option(parser=output_path, help="Folder for the checkpoint, rewritten atomically after every epoch (and every certified step).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint in --checkpoint-dir; the settings must match the ones it was written with.")] = False,
    task: Annotated[Optional[str], typer.Option(help="classification or regression; inferred from the targets when unambiguous.")] = None,
    target: Annotated[Optional[str], typer.Option(help="Target column of a CSV file or target array key of an npz/pt file.")] = None,
    model_arg: Annotated[list[str], typer.Option("--model-arg", help="Keyword argument for the model constructor, key=value; repeatable.")] = [],
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
    out: Annotated[Path, typer.Option(parser=output_path, help="Folder for the report files.")] = Path("advisor-report"),
    format: Annotated[str, typer.Option("--format", help="Comma-separated report formats: json, md (with SVG plots beside it), html (one self-contained file).")] = "json,md,html",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress display and no summary; only errors.")] = False,
) -> None:
    """Train MODEL with one framework, checkpointing every epoch, and write report.json with `training` filled."""
    from cli.outcome import run_guarded

    out_console = Console()
    err_console = Console(stderr=True)

    def work():
        from advisor.atomic import require_output_folder
        from advisor.config import merge_settings
        from advisor.models import parse_model_args
        from advisor.train_pipeline import TrainConfig, run_train
        from cli.display import run_with_progress
        from reports.files import write_report

        formats = split_list("--format", format, REPORT_FORMATS, required=True)
        require_output_folder("--out", out)
        if checkpoint_dir is not None:
            require_output_folder("--checkpoint-dir", checkpoint_dir)
        training = merge_settings(config_file, dict(
            loss=loss, epochs=epochs, explore_epochs=explore_epochs, mode=mode, optimizer=optimizer, lr=lr, momentum=momentum,
            nesterov=nesterov, batch_size=batch_size, weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs,
            lr_step_epochs=lr_step_epochs, lr_gamma=lr_gamma, lr_final_factor=lr_final_factor,
            lr_peak_fraction=lr_peak_fraction, lr_one_cycle_div=lr_one_cycle_div, crop_padding=crop_padding, flip=flip,
            certified_steps=certified_steps, certified_target=certified_target, feature_lr=feature_lr, seed=seed,
        ))
        config = TrainConfig(
            model_spec=model, model_args=parse_model_args(model_arg), data_spec=data, task=task, target=target,
            framework=framework, checkpoint_dir=str(checkpoint_dir) if checkpoint_dir is not None else None, resume=resume,
            **training,
        )
        report = run_with_progress(run_train, config, quiet=quiet, err_console=err_console)
        return report, write_report(report, out, formats)

    report, paths = run_guarded(work, err_console)
    if not quiet:
        from cli.display import print_summary

        print_summary(report, paths, out_console)
