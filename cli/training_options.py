"""Training options shared by `advisor check` and `advisor train`.

Each option defaults to None, meaning "not given": the value then comes from
the --config file, or else from the library default that the help text
names. That lets a command-line option override a file setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="TOML file of training settings (keys as the options below, e.g. lr = 0.1, schedule = \"cosine\"); command-line options override it.")]
Loss = Annotated[Optional[str], typer.Option(help="Training loss: mse (squared loss, ½‖q−y‖² per example) or ce (cross-entropy on logits). Default: mse.")]
Epochs = Annotated[Optional[int], typer.Option(help="Epochs of the base run; the EE run uses the same number in total. Default: 10.")]
ExploreEpochs = Annotated[Optional[int], typer.Option(help="Epochs of exploration before the EE transition (fewer than --epochs). Default: 5, or half of --epochs when that is smaller.")]
Mode = Annotated[Optional[str], typer.Option(help="Exploitation mode: practical (the base optimizer continues on the extended model) or certified (full-batch gradient descent with Armijo steps). Default: practical.")]
Optimizer = Annotated[Optional[str], typer.Option(help="Base optimizer: sgd (momentum, Nesterov by default) or adamw. Default: sgd.")]
LearningRate = Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate per step on the mean batch loss; the schedule scales it. Default: 0.05.")]
Momentum = Annotated[Optional[float], typer.Option(help="SGD momentum, in [0, 1). Default: 0.9.")]
Nesterov = Annotated[Optional[bool], typer.Option("--nesterov/--no-nesterov", help="Nesterov momentum for SGD. Default: on.")]
BatchSize = Annotated[Optional[int], typer.Option(help="Mini-batch size (examples). Default: 64.")]
WeightDecay = Annotated[Optional[float], typer.Option(help="Weight decay; 0 keeps the squared loss's global minimum at zero. Default: 0.")]
ScheduleName = Annotated[Optional[str], typer.Option("--schedule", help="Learning-rate schedule over the whole run: constant, step, cosine or one-cycle. Default: constant.")]
WarmupEpochs = Annotated[Optional[float], typer.Option(help="Epochs of linear learning-rate warm-up before the schedule (not with one-cycle). Default: 0.")]
StepEpochs = Annotated[Optional[int], typer.Option("--lr-step-epochs", help="With --schedule step: epochs between rate decays. Default: 1.")]
Gamma = Annotated[Optional[float], typer.Option("--lr-gamma", help="With --schedule step: factor applied at each decay, in (0, 1]. Default: 0.1.")]
FinalFactor = Annotated[Optional[float], typer.Option("--lr-final-factor", help="With --schedule cosine or one-cycle: final rate as a fraction of --lr, in [0, 1]. Default: 0.")]
PeakFraction = Annotated[Optional[float], typer.Option("--lr-peak-fraction", help="With --schedule one-cycle: fraction of the run spent rising to --lr, in (0, 1). Default: 0.3.")]
OneCycleDiv = Annotated[Optional[float], typer.Option("--lr-one-cycle-div", help="With --schedule one-cycle: the rate starts at --lr divided by this. Default: 25.")]
CropPadding = Annotated[Optional[int], typer.Option(help="Augmentation: zero padding in pixels before a random crop back to the image size; 0 disables it. Default: 0.")]
Flip = Annotated[Optional[bool], typer.Option("--flip/--no-flip", help="Augmentation: random horizontal flips of image batches. Default: off.")]
CertifiedSteps = Annotated[Optional[int], typer.Option(help="Certified mode: maximum number of full-batch steps. Default: 300.")]
CertifiedTarget = Annotated[Optional[float], typer.Option(help="Certified mode: stop once the training loss is this fraction of its value at the transition. Default: 1e-7.")]
FeatureLr = Annotated[Optional[float], typer.Option("--feature-lr", help="Practical mode: learning rate of the feature block V. Default: the base --lr, so practical exploitation is the base algorithm itself on the extended model.")]
Seed = Annotated[Optional[int], typer.Option(help="Seed of every random choice (split, subset, initialization, batches, augmentation, features). Default: 0.")]

