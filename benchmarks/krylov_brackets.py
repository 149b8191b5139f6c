"""Closing speed of Gauss–Radau brackets on ρ(ε) against the Krylov dimension, with the exact values beside them.

Builds the explicit float64 Jacobian J (N·M, P) of the digits residual CNN
at initialization and the exact spectral measure of J Jᵀ seen from the
targets Y (torch.linalg.eigh). Then it runs the Lanczos process on J Jᵀ from
Y with full reorthogonalization, which is what `advisor.matrix_free` runs
through Jacobian-vector products. After selected numbers of steps it prints the
bracket of ρ(ε) from `advisor.matrix_free.radau_bounds` and the exact ρ(ε),
one JSON line per step count. The thresholds use the exact σ_max, so the
brackets show the quadrature alone, without the σ_max bracket of lsqr_rho.

    PYTHONPATH=$PWD python benchmarks/krylov_brackets.py --n 256 --steps 10,20,50,100,200,300,400,600,800
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from advisor.gram import ChunkJacobian
from advisor.matrix_free import radau_bounds
from benchmarks.alignment import load_problem

EPSILONS = (1e-1, 1e-2, 1e-3)


def explicit_gram(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K = J Jᵀ (R, R) in float64 and Y (R,) for the first n digits images."""
    model, x, targets, _ = load_problem("cnn", n, "digits")
    source = ChunkJacobian(model, x)
    J = torch.cat([source.rows(start, min(start + 64, n)) for start in range(0, n, 64)])  # (R, P)
    return J @ J.T, torch.from_numpy(targets.reshape(-1)).double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="digits images (R = 10·n rows)")
    parser.add_argument("--steps", default="10,20,50,100,200,300,400,600,800", help="comma-separated Lanczos step counts")
    args = parser.parse_args()
    checkpoints = sorted(int(s) for s in args.steps.split(","))

    start = time.perf_counter()
    K, y = explicit_gram(args.n)
    eigenvalues, vectors = torch.linalg.eigh(K)
    weights = (vectors.T @ y) ** 2 / float(y @ y)  # the spectral measure of K seen from Y
    lambda_max = float(eigenvalues[-1])
    exact = {eps: math.sqrt(float(weights[eigenvalues < eps**2 * lambda_max].sum())) for eps in EPSILONS}
    print(json.dumps({"n": args.n, "rows": int(K.shape[0]), "exact": exact, "seconds": round(time.perf_counter() - start, 1)}),
          flush=True)

    # Lanczos on K from y with two passes of full reorthogonalization.
    basis = torch.zeros(checkpoints[-1] + 1, K.shape[0], dtype=torch.float64)
    basis[0] = y / y.norm()
    diagonal, off_diagonal = [], []
    for step in range(checkpoints[-1]):
        w = K @ basis[step]
        diagonal.append(float(basis[step] @ w))
        for _ in range(2):
            w -= basis[:step + 1].T @ (basis[:step + 1] @ w)
        off_diagonal.append(float(w.norm()))
        basis[step + 1] = w / off_diagonal[-1]
        if step + 1 in checkpoints:
            brackets = {}
            for eps in EPSILONS:
                lower, upper = radau_bounds(np.array(diagonal), np.array(off_diagonal[:-1]), eps**2 * lambda_max)
                brackets[eps] = [round(math.sqrt(lower), 4), round(math.sqrt(upper), 4)]
            print(json.dumps({"steps": step + 1, "brackets": brackets}), flush=True)


if __name__ == "__main__":
    main()
