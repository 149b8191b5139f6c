"""Time and peak memory of ρ computations, ours against other routes, each method in its own subprocess.

Usage (from the repository root):

    PYTHONPATH=$PWD python benchmarks/alignment.py --quick            # digits CNN, n = 512
    PYTHONPATH=$PWD python benchmarks/alignment.py --out results.jsonl  # the whole grid

Every method prints one JSON line with `method`, `model`, `n`, `rho`,
`rho_eps_1e-3`, `seconds`, `peak_mb` (the worker's resource maxrss, which
includes about `baseline_mb` of interpreter, torch and data), `load` (the
1-minute load average at the start and end) and `status`. Competitors that
are not installed (nngeometry, curvlinops) are reported as skipped. Wall times
on a shared machine vary with its load, so every line carries it.

`svd-explicit` factors the explicit float64 J with one `torch.linalg.svd`
call where that fits in the free memory, and otherwise (or with
`--svd-route qr+svd`) as a QR of Jᵀ followed by the SVD of the triangular
factor. Its line names the route, because the second route was 7 times
faster at n = 256 (17 s against 126 s on two threads).

`exact-eigh` is our exact method with the spectrum taken by eigh with
eigenvectors instead of the bordered tridiagonal route (advisor.spectrum),
to time the two in one run. Both record `phases`: the seconds spent on the
Jacobians and the Gram matrix, and on the spectrum.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import numpy as np

METHODS = ("svd-explicit", "nngeometry-gram", "torchfunc-gram", "curvlinops-lsqr", "exact", "exact-eigh", "lsqr", "features")
DIGITS_GRID = [(model, n) for model in ("cnn", "mlp") for n in (256, 512, 1797)]
MNIST_SPEC = "mnist:../shared/datasets/mnist-t10k"
CURVLINOPS_ITERATIONS = 100


def load_problem(model_name: str, n: int, data: str):
    """Return (model, x (N, ...), targets (N, M), trace) with a seeded model."""
    import torch
    from torch import nn

    from advisor.data import load_raw
    from advisor.models.default import ResidualCNN
    from advisor.trace import trace_forward

    torch.manual_seed(0)
    raw = load_raw(data)
    # Digits has no test split, so all 1,797 images are used; MNIST uses its test images.
    x, labels = raw.x, raw.y
    if data != "digits" and raw.x_test is not None:
        x, labels = raw.x_test, raw.y_test
    x, labels = np.asarray(x, dtype=np.float32), np.asarray(labels)
    x = (x - x.mean()) / (x.std() + 1e-12)
    if x.ndim == 3:
        x = x[:, None]
    x, labels = x[:n], labels[:n].astype(int)
    n_classes = int(labels.max()) + 1
    targets = np.eye(n_classes)[labels]
    inputs = torch.from_numpy(np.ascontiguousarray(x))
    if model_name == "cnn":
        model = ResidualCNN(in_channels=inputs.shape[1], num_classes=n_classes)
    else:
        width = int(np.prod(inputs.shape[1:]))
        model = nn.Sequential(nn.Flatten(), nn.Linear(width, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, n_classes))
    model.eval()
    return model, inputs, targets, trace_forward(model, inputs[:2])


def rho_from_basis(U: np.ndarray, sigma: np.ndarray, y: np.ndarray, tolerance: float) -> tuple[float, float]:
    """(ρ, ρ(1e-3)) from left singular vectors U (R, K) and singular values σ (K,)."""
    def residual(keep: np.ndarray) -> float:
        basis = U[:, keep]
        return float(np.linalg.norm(y - basis @ (basis.T @ y)) / np.linalg.norm(y))

    return residual(sigma > tolerance), residual(sigma >= max(1e-3 * sigma.max(), tolerance))


def eigh_rho(K, y: np.ndarray) -> tuple[float, float]:
    """(ρ, ρ(1e-3)) from a float64 Gram matrix K = J Jᵀ (R, R), with the σ_max·sqrt(R·eps) tolerance."""
    import torch

    eigenvalues, vectors = torch.linalg.eigh(K)
    sigma = np.sqrt(np.clip(eigenvalues.numpy(), 0, None))
    return rho_from_basis(vectors.numpy(), sigma, y, sigma.max() * math.sqrt(y.size * np.finfo(float).eps))


def available_memory() -> int:
    """Return the bytes the kernel can allocate without swapping (MemAvailable counts reclaimable page cache)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def explicit_svd_rho(model, x, y: np.ndarray, R: int, P: int, route: str = "auto") -> dict:
    """Return ρ and ρ(1e-3) from a float64 SVD of the explicit Jacobian J (R, P).

    `torch.linalg.svd(J)` needs memory for J, LAPACK's copy of it, U, Vᵀ and gesdd's
    workspace of about 4·min(R, P)² numbers. Where that does not fit in the
    free memory, the same factorization runs in two stages: a Householder QR
    of Jᵀ = Q·T (T is R × R), J freed, then the SVD of T.
    From Jᵀ = Q·U_T·Σ·V_Tᵀ, J = V_T·Σ·(Q·U_T)ᵀ, so J's singular values are
    T's and J's left singular vectors are T's right ones. LAPACK's gesdd
    takes the same QR-first path when P is much larger than R; the two-stage
    route only skips forming J's right singular vectors, which ρ does not use,
    so it does less work than the one-call route. It needs R ≤ P, since
    otherwise J's left singular vectors would need Q as well. `route` forces
    "svd" or "qr+svd"; "auto" picks by free memory.
    """
    import torch

    from advisor.alignment import jacobian_matrix

    K = min(R, P)
    available = available_memory()
    one_call = 8 * (3 * R * P + K * K + 4 * K * K)  # J, its copy, the larger factor, U or Vᵀ, workspace
    two_stage = 8 * max(2 * R * P + K * K, 5 * K * K)  # J, its copy and T; then T, U, Vᵀ and workspace
    if route == "auto":
        route = "svd" if one_call <= available or R > P else "qr+svd"
    if route == "qr+svd" and R > P:
        return {"status": "skipped", "note": f"the qr+svd route needs R <= P, got R = {R}, P = {P}; use --svd-route svd"}
    needed = one_call if route == "svd" else two_stage
    if needed > available:
        return {"status": "skipped", "note": f"needs about {needed / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available"}

    J = torch.from_numpy(jacobian_matrix(model, x))  # (R, P)
    if route == "svd":
        U, sigma, _ = torch.linalg.svd(J, full_matrices=False)
    else:
        reflectors, _ = torch.geqrf(J.T)  # (P, R): Householder vectors below T
        del J
        T = torch.triu(reflectors[:R])  # (R, R)
        del reflectors
        _, sigma, right_t = torch.linalg.svd(T)
        U = right_t.T  # J's left singular vectors (R, R)
    tolerance = float(sigma.max()) * max(R, P) * np.finfo(float).eps
    rho, rho_eps = rho_from_basis(U.numpy(), sigma.numpy(), y, tolerance)
    return {"rho": rho, "rho_eps_1e-3": rho_eps, "route": route}


def run_method(method: str, model, x, targets, trace, memory_budget_gb: float, lsqr_seconds: float,
               svd_route: str = "auto") -> dict:
    import torch

    from advisor.alignment import jacobian_matrix, stack_targets
    from advisor.engine import Budget, LsqrMethod, AlignmentProblem, measure_probe
    from advisor.gram import gram_rho
    from advisor.matrix_free import LsqrSettings

    y = stack_targets(targets)  # (R,)
    R = y.size
    P = sum(p.numel() for p in model.parameters())
    budget = Budget(memory_bytes=memory_budget_gb * 2**30, time_s=math.inf)
    eps_index = 6  # CURVE_EPSILONS[6] == 1e-3

    if method == "svd-explicit":
        return explicit_svd_rho(model, x, y, R, P, svd_route)

    if method == "torchfunc-gram":
        # The torch.func NTK recipe: per-example Jacobians of every tensor,
        # contracted with einsum into K (N, N, M, M), then eigh.
        from torch.func import functional_call, jacrev, vmap

        from advisor.functional import analysis_copy
        work = analysis_copy(model)
        params = {k: v.detach() for k, v in work.named_parameters()}
        buffers = {k: v.detach() for k, v in work.named_buffers()}
        x64 = x.double()

        def single(p, example):
            return functional_call(work, {**buffers, **p}, (example.unsqueeze(0),)).squeeze(0)

        jac = vmap(jacrev(single), (None, 0))(params, x64)  # name -> (N, M, *shape)
        K = sum(torch.einsum("naf,mbf->nmab", j.flatten(2), j.flatten(2)) for j in jac.values())  # (N, N, M, M)
        N, M = targets.shape
        K = K.permute(0, 2, 1, 3).reshape(N * M, N * M)  # rows examples outer, outputs inner
        rho, rho_eps = eigh_rho(K, y)
        return {"rho": rho, "rho_eps_1e-3": rho_eps}

    if method == "nngeometry-gram":
        try:
            from nngeometry.gram import GramMatrix
        except ImportError:
            return {"status": "skipped", "note": "nngeometry is not installed (pip install -e .[bench])"}
        from torch.utils.data import DataLoader, TensorDataset

        from advisor.functional import analysis_copy
        work = analysis_copy(model)
        loader = DataLoader(TensorDataset(x.double(), torch.from_numpy(targets)), batch_size=256)
        gram = GramMatrix(model=work, loader=loader, function=lambda *d: work(d[0]))
        G = gram.to_torch() if hasattr(gram, "to_torch") else gram.get_dense_tensor()  # (M, N, M, N)
        N, M = targets.shape
        K = G.permute(1, 0, 3, 2).reshape(N * M, N * M).double()
        rho, rho_eps = eigh_rho(K, y)
        return {"rho": rho, "rho_eps_1e-3": rho_eps}

    if method == "curvlinops-lsqr":
        try:
            from curvlinops import JacobianLinearOperator, TransposedJacobianLinearOperator
        except ImportError:
            return {"status": "skipped", "note": "curvlinops is not installed (pip install -e .[bench])"}
        from scipy.sparse.linalg import LinearOperator, lsqr

        from advisor.functional import analysis_copy
        from advisor.matrix_free import iterate_bracket
        work = analysis_copy(model)
        params = [p for p in work.parameters()]
        data = [(x[s:s + 512].double(), torch.zeros(1)) for s in range(0, x.shape[0], 512)]
        J = JacobianLinearOperator(work, params, data, check_deterministic=False)
        JT = TransposedJacobianLinearOperator(work, params, data, check_deterministic=False)
        op = LinearOperator((R, P), matvec=lambda v: (J @ torch.from_numpy(np.asarray(v).ravel())).detach().numpy().ravel(),
                            rmatvec=lambda u: (JT @ torch.from_numpy(np.asarray(u).ravel())).detach().numpy().ravel(),
                            dtype=np.float64)
        # σ_max by 12 power steps, for the same ρ(ε) bracket our method uses.
        v = np.random.default_rng(0).standard_normal(P)
        for _ in range(12):
            v = op.rmatvec(op.matvec(v))
            v /= np.linalg.norm(v)
        sigma = float(np.linalg.norm(op.matvec(v)))
        result = lsqr(op, y, iter_lim=CURVLINOPS_ITERATIONS, atol=0, btol=0)
        theta, r_norm, normar, xnorm = result[0], result[3], result[7], result[8]
        low, high = iterate_bracket(r_norm, normar, xnorm, 1e-3, sigma, sigma, float(np.linalg.norm(y)))
        return {"rho": r_norm / np.linalg.norm(y), "rho_eps_1e-3": 0.5 * (low + high), "rho_eps_1e-3_bracket": [low, high],
                "iterations": int(result[2])}

    if method in ("exact", "exact-eigh"):
        measure = gram_rho(model, x, targets, memory_budget_bytes=budget.memory_bytes, force_eigh=method == "exact-eigh")
        return {"rho": measure.rho, "rho_eps_1e-3": measure.curve[eps_index].rho, "route": measure.route, "rank": measure.rank,
                "phases": {name: round(seconds, 2) for name, seconds in measure.phase_seconds.items()}}

    if method == "lsqr":
        probe = measure_probe(model, x, targets.shape[1])
        solver = LsqrMethod(LsqrSettings(max_iterations=300))
        limited = Budget(memory_bytes=budget.memory_bytes, time_s=lsqr_seconds)
        measure = solver.run(AlignmentProblem(model=model, x=x, targets=targets, trace=trace), limited, probe)
        point = measure.curve[eps_index]
        return {"rho": measure.rho, "rho_eps_1e-3": point.rho, "rho_eps_1e-3_bracket": [point.rho_lower, point.rho_upper],
                "eps_resolved": measure.eps_resolved, "iterations": measure.iterations, "converged": measure.converged}

    if method == "features":
        from advisor.alignment import last_layer_rho
        measure = last_layer_rho(model, x, targets, trace)
        # ρ_S(ε) would use the last layer's spectrum, not J's, so it is not comparable.
        return {"rho": measure.rho, "rho_eps_1e-3": None, "note": "ρ_S, an upper bound on ρ"}
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    model, x, targets, trace = load_problem(args.model, args.n, args.data)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    record = run_method(args.method, model, x, targets, trace, args.memory_budget, args.lsqr_seconds, args.svd_route)
    record.setdefault("status", "ok")
    record.update(method=args.method, model=args.model, data=args.data, n=args.n, seconds=round(time.perf_counter() - start, 2),
                  peak_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), baseline_mb=round(baseline, 1),
                  load=[round(load_start, 2), round(os.getloadavg()[0], 2)])
    print(json.dumps(record), flush=True)


def launch(method: str, model: str, n: int, data: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", "--method", method, "--model", model, "--n", str(n), "--data", data,
               "--memory-budget", str(args.memory_budget), "--threads", str(args.threads), "--lsqr-seconds", str(args.lsqr_seconds), "--svd-route", args.svd_route]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"method": method, "model": model, "data": data, "n": n, "status": "timed out", "seconds": args.timeout,
                "load": [round(os.getloadavg()[0], 2)]}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"method": method, "model": model, "data": data, "n": n, "status": f"failed: {tail[0]}"}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Only the digits residual CNN at n = 512.")
    parser.add_argument("--methods", default=",".join(METHODS), help="Comma-separated methods to run.")
    parser.add_argument("--cases", default="", help="Comma-separated MODEL:N cases (digits), or mnist:N; default: the grid.")
    parser.add_argument("--memory-budget", type=float, default=12.0, help="Memory budget of our methods, in GiB.")
    parser.add_argument("--timeout", type=float, default=3600.0, help="Wall-clock limit per method and case, in seconds.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker.")
    parser.add_argument("--lsqr-seconds", type=float, default=math.inf,
                        help="Time limit of our matrix-free method, in seconds; it reports its brackets at the limit.")
    parser.add_argument("--svd-route", choices=("auto", "svd", "qr+svd"), default="auto",
                        help="How svd-explicit factors J: one torch.linalg.svd call, QR of Jᵀ then SVD, or by free memory.")
    parser.add_argument("--out", default="", help="Also append every JSON line to this file.")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="cnn", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=512, help=argparse.SUPPRESS)
    parser.add_argument("--data", default="digits", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    if args.quick:
        cases = [("cnn", 512, "digits")]
    elif args.cases:
        cases = []
        for item in args.cases.split(","):
            name, n = item.split(":")
            cases.append(("cnn", int(n), MNIST_SPEC) if name == "mnist" else (name, int(n), "digits"))
    else:
        cases = [(model, n, "digits") for model, n in DIGITS_GRID] + [("cnn", 10_000, MNIST_SPEC)]
    for model, n, data in cases:
        for method in args.methods.split(","):
            record = launch(method, model, n, data, args)
            line = json.dumps(record)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as handle:
                    handle.write(line + "\n")


if __name__ == "__main__":
    main()
