"""The fixed random-feature block of the exploitation phase and its certificate.

φ(x) = sqrt(2/p) · cos(R ẑ(x) + c), with ẑ the frozen representation z_τ(x)
standardized per feature, R (D, p) Gaussian with standard deviation 1/ℓ and c
uniform on [0, 2π). These are random Fourier features of the Gaussian kernel
exp(−‖ẑ − ẑ'‖² / (2ℓ²)), so Φ Φᵀ ≈ that kernel matrix.

Why this map and these defaults: the certificate needs σ_min(Φ) well away
from zero. A bandwidth ℓ of a third of the median nearest-neighbour distance
makes the kernel matrix close to the identity (a typical nearest pair has
kernel value exp(−4.5) ≈ 0.011), and p = 2n features keep the finite-sample
Gram near the kernel, with σ_min(Φ)² around (1 − sqrt(n/p))² ≈ 0.09 by the
Marchenko–Pastur edge. Because distinct inputs get nearly orthogonal
features, the block fits the training residual without moving predictions at
inputs far from the training set.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from torch import nn

# Nearest-neighbour distances are measured for at most this many query points.
BANDWIDTH_QUERIES = 2000
BANDWIDTH_FRACTION = 1.0 / 3.0


class RandomFeatureMap(nn.Module):
    """φ: (B, D) representations -> (B, p) features; every tensor is a fixed buffer."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, weights: torch.Tensor, phases: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.register_buffer("weights", weights)  # (D, p)
        self.register_buffer("phases", phases)  # (p,)

    @property
    def width(self) -> int:
        return int(self.weights.shape[1])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        standardized = (z - self.mean) / self.std
        return math.sqrt(2.0 / self.width) * torch.cos(standardized @ self.weights + self.phases)


def median_nearest_distance(z: torch.Tensor, generator: torch.Generator) -> float:
    """Median distance from up to BANDWIDTH_QUERIES points of z (N, D) to their nearest other point.

    Exact duplicates (distance 0) are skipped, since no bandwidth separates them.
    """
    n = z.shape[0]
    queries = torch.randperm(n, generator=generator)[:BANDWIDTH_QUERIES]
    nearest = []
    for block in queries.split(256):
        distances = torch.cdist(z[block], z)  # (b, N)
        distances[torch.arange(block.numel()), block] = float("inf")
        distances[distances == 0] = float("inf")
        nearest.append(distances.min(dim=1).values)
    values = torch.cat(nearest)
    values = values[torch.isfinite(values)]
    return float(values.median()) if values.numel() else 1.0


def build_feature_map(z_train: torch.Tensor, width: int, generator: torch.Generator) -> RandomFeatureMap:
    """Draw the random-feature map for training representations z_train (N, D)."""
    z = z_train.double()
    mean = z.mean(dim=0)
    std = z.std(dim=0).clamp_min(1e-12)
    standardized = (z - mean) / std
    bandwidth = max(BANDWIDTH_FRACTION * median_nearest_distance(standardized, generator), 1e-6)
    weights = torch.randn(z.shape[1], width, generator=generator, dtype=torch.float64) / bandwidth
    phases = 2 * math.pi * torch.rand(width, generator=generator, dtype=torch.float64)
    dtype = z_train.dtype
    return RandomFeatureMap(mean.to(dtype), std.to(dtype), weights.to(dtype), phases.to(dtype))


@dataclass
class FeatureCertificate:
    """Spectrum of Φ (p × n, one column per training example) that the guarantee rests on."""

    sigma_min: float
    sigma_max: float
    n_examples: int
    width: int
    method: str


def feature_gram(feature_map: RandomFeatureMap, z_train: torch.Tensor, block: int = 1024) -> np.ndarray:
    """K = Φᵀ Φ (N × N) in float64, built from row blocks of features without storing Φ twice."""
    work = copy.deepcopy(feature_map).double()
    with torch.no_grad():
        phi = torch.cat([work(z_train[s:s + block].double()) for s in range(0, z_train.shape[0], block)])  # (N, p)
        gram = phi @ phi.T
    return gram.numpy()


def certify(feature_map: RandomFeatureMap, z_train: torch.Tensor) -> FeatureCertificate:
    """σ_min(Φ) and σ_max(Φ) from the extreme eigenvalues of the float64 Gram matrix.

    With p ≥ n, rank(Φ) = n exactly when σ_min > 0, and then Col(J̃) is all of
    R^(n·m) at every parameter value of the exploitation phase.
    """
    gram = feature_gram(feature_map, z_train)
    n = gram.shape[0]
    smallest = scipy.linalg.eigh(gram, eigvals_only=True, subset_by_index=[0, 0])[0]
    largest = scipy.linalg.eigh(gram, eigvals_only=True, subset_by_index=[n - 1, n - 1])[0]
    return FeatureCertificate(
        sigma_min=float(math.sqrt(max(smallest, 0.0))), sigma_max=float(math.sqrt(max(largest, 0.0))),
        n_examples=n, width=feature_map.width, method="exact float64 eigenvalues of the n x n Gram matrix",
    )
