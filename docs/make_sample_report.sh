#!/usr/bin/env bash
# Regenerate docs/sample-report/ from a real check of the built-in residual
# CNN on the MNIST test images (10,000 images, split 80/20 by the seed).
# Run from the repository root; ADVISOR overrides the command, for example
# ADVISOR="python -m cli.main" in a checkout without the console script.
set -euo pipefail

DATA="${MNIST_DIR:-../shared/datasets/mnist-t10k}"
OUT="docs/sample-report"
ADVISOR="${ADVISOR:-advisor}"

# On two CPU cores this run took 8 minutes, most of it training and the EE
# certificate on 8,000 images. With other jobs running it took 12.
rm -rf "$OUT"
# shellcheck disable=SC2086 # ADVISOR may hold a command with arguments
$ADVISOR check --data "mnist:$DATA" --max-samples 128 --epochs 4 --explore-epochs 2 \
    --seed 0 --format json,md,html --out "$OUT" --quiet
