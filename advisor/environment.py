"""Provenance of a run: versions, device, seed and command line."""

from __future__ import annotations

import platform
import sys

import torch

from advisor import __version__
from advisor.report import EnvironmentSection


def describe_environment(*, device: str, seed: int, stage_seconds: dict[str, float]) -> EnvironmentSection:
    return EnvironmentSection(
        python=platform.python_version(),
        torch=torch.__version__,
        advisor=__version__,
        device=device,
        seed=seed,
        command_line=list(sys.argv),
        stage_seconds={k: round(v, 3) for k, v in stage_seconds.items()},
        threads=torch.get_num_threads(),
    )
