"""Every ρ method against the float64 SVD of an explicit Jacobian, on small and rank-deficient cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advisor.alignment import CURVE_EPSILONS, stack_targets
from advisor.engine import Budget, Probe, choose_method
from advisor.errors import BudgetError, UnknownChoiceError
from advisor.gram import GramPlan, gram_rho, plan_gram
from advisor.matrix_free import FLOAT32_EPS_FLOOR, LsqrSettings, lsqr_rho, radau_bounds
from advisor.trace import trace_forward
from tests.test_alignment import CASES, one_hot, reference_jacobian


def svd_curve(J: np.ndarray, y: np.ndarray) -> tuple[float, dict[float, float], np.ndarray]:
    """ρ, ρ(ε) on the grid and σ from numpy's float64 SVD of J (R, P)."""
    U, s, _ = np.linalg.svd(J, full_matrices=False)
    tolerance = s.max() * max(J.shape) * np.finfo(np.float64).eps

    def residual(keep: np.ndarray) -> float:
        basis = U[:, keep]
        return float(np.linalg.norm(y - basis @ (basis.T @ y)) / np.linalg.norm(y))

    curve = {eps: residual(s >= max(eps * s.max(), tolerance)) for eps in CURVE_EPSILONS}
    return residual(s > tolerance), curve, s


def case_data(case: str):
    torch.manual_seed(0)
    model, x, labels = CASES[case]()
    targets = one_hot(labels, 3)
    J = reference_jacobian(model, x)
    model.float()  # reference_jacobian casts the model to float64 in place
    return model, x, targets, J


def away_from_ties(eps: float, s: np.ndarray) -> bool:
    """False when a singular value sits within 1e-6 (relative) of the cutoff ε·σ_max, where rounding decides the count."""
    return bool(np.all(np.abs(s - eps * s.max()) > 1e-6 * s.max()))


@pytest.mark.parametrize("case", sorted(CASES))
def test_gram_matches_svd(case):
    model, x, targets, J = case_data(case)
    rho, curve, s = svd_curve(J, stack_targets(targets))

    measured = gram_rho(model, x, targets, memory_budget_bytes=2**30)

    assert measured.rho == pytest.approx(rho, abs=1e-7)
    for point in measured.curve:
        if point.resolved and away_from_ties(point.eps, s):
            assert point.rho == pytest.approx(curve[point.eps], abs=1e-7), point.eps


def test_gram_panels_match_one_pass():
    model, x, targets, J = case_data("wide full rank")
    whole = gram_rho(model, x, targets, memory_budget_bytes=2**30)
    # Chunks of 2 examples with a panel of 1 chunk: every block but the
    # diagonal ones comes from a recomputed chunk.
    panels = gram_rho(model, x, targets, memory_budget_bytes=2**30,
                      plan=GramPlan(side="rows", chunk_examples=2, panel_chunks=1, n_chunks=4, jacobian_chunk_computations=10, bytes=0))
    assert panels.rho == pytest.approx(whole.rho, abs=1e-12)
    assert panels.singular_values == pytest.approx(whole.singular_values, rel=1e-9)
    # One panel of four 2-example chunks: the triangular blocks within a panel.
    one_panel = gram_rho(model, x, targets, memory_budget_bytes=2**30,
                    plan=GramPlan(side="rows", chunk_examples=2, panel_chunks=4, n_chunks=4, jacobian_chunk_computations=4, bytes=0))
    assert one_panel.singular_values == pytest.approx(whole.singular_values, rel=1e-9)


def test_gram_plan_respects_budget():
    # The digits CNN at N = 1,797: J (17,970, 37,802) is 5.4 GB in float64
    # and K (17,970, 17,970) 2.6 GB, so 6 GiB has room for K and part of J.
    plan = plan_gram(1797, 10, 37_802, memory_budget_bytes=6 * 2**30)
    assert plan.side == "rows"
    assert plan.bytes <= 6 * 2**30
    assert plan.panel_chunks < plan.n_chunks
    # 12 GiB has room for K and all of J: every chunk is computed once.
    roomy = plan_gram(1797, 10, 37_802, memory_budget_bytes=12 * 2**30)
    assert roomy.jacobian_chunk_computations == roomy.n_chunks


def test_plan_bounds_factored_blocks():
    # The digits MLP keeps every layer factored: about 1,100 values per row,
    # so 256 MiB of rows would be all 1,797 examples, and one Gram block
    # (17,970 x 17,970) with its product temporary would take 5.2 GB.
    plan = plan_gram(1797, 10, 85_002, memory_budget_bytes=4 * 2**30, row_width=1_100)
    block_bytes = 8 * plan.chunk_examples * 10 * 17_970
    assert block_bytes <= 256 * 2**20
    assert plan.bytes <= 4 * 2**30


def test_gram_y_in_column_space_gives_zero():
    model, x, targets, J = case_data("narrow last layer")
    # Targets built as J θ for a random θ lie in Col(J) exactly.
    theta = np.random.default_rng(3).standard_normal(J.shape[1])
    targets_in_span = (J @ theta).reshape(targets.shape)
    measured = gram_rho(model, x, targets_in_span, memory_budget_bytes=2**30)
    assert measured.rho < 1e-6


@pytest.mark.parametrize("case", sorted(CASES))
def test_lsqr_brackets_contain_svd_curve(case):
    model, x, targets, J = case_data(case)
    rho, curve, s = svd_curve(J, stack_targets(targets))
    trace = trace_forward(model, x[:2])

    measured = lsqr_rho(model, x, targets, trace=trace, chunk_examples=7, settings=LsqrSettings(max_iterations=200, target_eps=1e-6))

    assert measured.rho >= rho - 1e-9
    for point in measured.curve:
        if away_from_ties(point.eps, s):
            # σ_max is an estimate, so the bounds get a small allowance.
            assert point.rho_lower <= curve[point.eps] + 1e-6, point.eps
            assert point.rho_upper >= curve[point.eps] - 1e-6, point.eps
            if point.resolved:
                assert point.rho == pytest.approx(curve[point.eps], abs=1e-3), point.eps


def test_lsqr_converges_where_aligned():
    model, x, targets, J = case_data("wide full rank")
    trace = trace_forward(model, x[:2])
    measured = lsqr_rho(model, x, targets, trace=trace, chunk_examples=3, settings=LsqrSettings(max_iterations=100))
    assert measured.converged
    assert measured.rho < 1e-8
    assert measured.curve[0].resolved


def test_lsqr_y_in_column_space_converges():
    model, x, targets, J = case_data("narrow last layer")
    theta = np.random.default_rng(3).standard_normal(J.shape[1])
    targets_in_span = (J @ theta).reshape(targets.shape)
    trace = trace_forward(model, x[:2])
    settings = LsqrSettings(max_iterations=200, target_eps=1e-6, tolerance=1e-8)
    measured = lsqr_rho(model, x, targets_in_span, trace=trace, chunk_examples=40, settings=settings)
    assert measured.converged
    assert measured.rho < 1e-6


def test_lsqr_not_converged_when_stopped_early():
    model, x, targets, J = case_data("narrow last layer")
    trace = trace_forward(model, x[:2])
    measured = lsqr_rho(model, x, targets, trace=trace, chunk_examples=40, settings=LsqrSettings(max_iterations=3))
    assert not measured.converged
    assert "upper bound" in measured.reason
    assert measured.iterations <= 3


def test_lsqr_starts_at_last_layer_residual():
    model, x, targets, J = case_data("narrow last layer")
    trace = trace_forward(model, x[:2])
    from advisor.alignment import last_layer_rho
    rho_s = last_layer_rho(model, x, targets, trace).rho
    measured = lsqr_rho(model, x, targets, trace=trace, chunk_examples=40, settings=LsqrSettings(max_iterations=0))
    assert measured.rho == pytest.approx(rho_s, abs=1e-9)


def probe(n_examples: int, n_outputs: int = 10, n_params: int = 37_802) -> Probe:
    return Probe(n_examples=n_examples, n_outputs=n_outputs, n_params=n_params, forward_seconds_per_example=1e-5,
                 saved_bytes_per_example=1e5, gemm_flops_per_second=5e10)


def test_auto_picks_exact_when_it_fits():
    choice = choose_method("auto", probe(64), Budget(memory_bytes=4 * 2**30, time_s=600))
    assert choice.method == "exact"
    assert "most accurate" in choice.reason


def test_auto_falls_back_to_lsqr_over_budget():
    choice = choose_method("auto", probe(10_000), Budget(memory_bytes=4 * 2**30, time_s=900))
    assert choice.method == "lsqr"
    assert "exact needs" in choice.reason


def test_exact_over_budget_raises_with_options():
    with pytest.raises(BudgetError) as error:
        choose_method("exact", probe(10_000), Budget(memory_bytes=4 * 2**30, time_s=900))
    assert "--rho-method lsqr" in str(error.value)


def test_unknown_method_lists_choices():
    with pytest.raises(UnknownChoiceError) as error:
        choose_method("svd", probe(10), Budget(memory_bytes=2**30, time_s=60))
    assert "lsqr" in str(error.value)


def test_lsqr_iterations_shrink_with_memory():
    from advisor.engine import LsqrMethod
    method = LsqrMethod()
    wide = method.iterations_within(probe(10_000), Budget(memory_bytes=4 * 2**30, time_s=1e6))
    narrow = method.iterations_within(probe(10_000), Budget(memory_bytes=0.2 * 2**30, time_s=1e6))
    assert narrow < wide


def test_auto_takes_features_when_lsqr_is_too_slow():
    slow = Probe(n_examples=10_000, n_outputs=10, n_params=37_802, forward_seconds_per_example=1e-2,
                 saved_bytes_per_example=1e5, gemm_flops_per_second=5e10)
    choice = choose_method("auto", slow, Budget(memory_bytes=4 * 2**30, time_s=900))
    assert choice.method == "features"
    assert not choice.estimates["lsqr"].fits


def test_verdict_calls_lsqr_rho_a_bound():
    from advisor.report import AlignmentPoint, StructureSection
    from advisor.verdict import make_verdict

    structure = StructureSection(holds=True, form="exact", subset=[], relative_error=1e-12, tolerance=1e-6, n_examples=4, n_points=2)
    point = AlignmentPoint(stage="init", epoch=0, n=10, rho_s=0.5, rho=0.3, method="lsqr", converged=False,
                           converged_reason="ρ ≤ 0.3 is only an upper bound after 5 iterations")
    verdict = make_verdict(structure, [point], None, rho_tolerance=1e-3, confirm_ratio=0.1)
    text = " ".join(verdict.sentences)
    assert verdict.label == "misaligned"
    assert "matrix-free upper bound" in text
    assert "only an upper bound after 5 iterations" in text
    assert "alignment was not established" in text
    assert "more rows" not in text


def test_bound_gives_no_architecture_advice():
    from advisor.report import AlignmentPoint, StructureSection
    from advisor.verdict import make_recommendations, make_verdict

    structure = StructureSection(holds=True, form="exact", subset=[], relative_error=1e-12, tolerance=1e-6, n_examples=4, n_points=2)
    bound = AlignmentPoint(stage="init", epoch=0, n=10, rho_s=0.5, rho=0.3, method="lsqr", converged=False,
                           converged_reason="ρ ≤ 0.3 is only an upper bound after 5 iterations")
    measured = AlignmentPoint(stage="init", epoch=0, n=10, rho_s=0.5, rho=0.3, method="exact", converged=True)

    advice = {}
    for name, point in (("bound", bound), ("measured", measured)):
        verdict = make_verdict(structure, [point], None, rho_tolerance=1e-3, confirm_ratio=0.1)
        advice[name] = " ".join(r.text for r in make_recommendations(structure, [point], verdict, last_width=8, n_train=100))

    assert "Widen the last hidden layer" not in advice["bound"]
    assert "--rho-method exact" in advice["bound"]
    assert "Widen the last hidden layer from 8 to at least n = 100" in advice["measured"]


def test_verdict_names_tall_jacobian():
    from advisor.report import AlignmentPoint, StructureSection
    from advisor.verdict import make_verdict

    structure = StructureSection(holds=True, form="exact", subset=[], relative_error=1e-12, tolerance=1e-6, n_examples=4, n_points=2)
    point = AlignmentPoint(stage="init", epoch=0, n=10_000, rho_s=0.75, rho=0.75, method="lsqr", converged=False,
                           converged_reason="ρ ≤ 0.75 is only an upper bound after 11 iterations",
                           n_rows=100_000, n_columns=37_802)
    verdict = make_verdict(structure, [point], None, rho_tolerance=1e-3, confirm_ratio=0.1)
    text = " ".join(verdict.sentences)

    assert verdict.label == "misaligned"
    assert "more rows (100,000) than parameters (37,802)" in text


def lanczos(K: np.ndarray, y: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Diagonal and off-diagonal of the Lanczos matrix of K from y, with full reorthogonalization."""
    Q = [y / np.linalg.norm(y)]
    diagonal, off = [], []
    for _ in range(steps):
        w = K @ Q[-1]
        diagonal.append(Q[-1] @ w)
        basis = np.array(Q)
        for _ in range(2):
            w -= basis.T @ (basis @ w)
        off.append(np.linalg.norm(w))
        Q.append(w / off[-1])
    return np.array(diagonal), np.array(off[:-1])


@pytest.mark.parametrize("seed", range(6))
def test_radau_bounds_contain_spectral_measure(seed):
    # K = Q diag(λ) Qᵀ with eigenvalues spread over 12 decades and a null
    # space, as in a rank-deficient J Jᵀ; the measure is Σ (q_iᵀ y)² at λ_i.
    rng = np.random.default_rng(seed)
    R = 80
    eigenvalues = np.concatenate([np.zeros(5), 10.0 ** rng.uniform(-12, 0, R - 5)])
    Q = np.linalg.qr(rng.standard_normal((R, R)))[0]
    K = (Q * eigenvalues) @ Q.T
    y = rng.standard_normal(R)
    weights = (Q.T @ y) ** 2 / (y @ y)
    for steps in (3, 10, 30):
        diagonal, off = lanczos(K, y, steps)
        for t in (1e-10, 1e-6, 1e-3, 0.1, 0.5):
            lower, upper = radau_bounds(diagonal, off, t)
            exact = weights[eigenvalues < t].sum()
            assert lower - 1e-10 <= exact <= upper + 1e-10, (steps, t)
    # With more moments the bracket narrows.
    widths = [np.subtract(*radau_bounds(*lanczos(K, y, steps), 1e-3)[::-1]) for steps in (5, 40)]
    assert widths[1] < widths[0]


def test_lsqr_float32_products_resolve_no_small_eps():
    model, x, targets, J = case_data("wide full rank")
    trace = trace_forward(model, x[:2])
    settings = LsqrSettings(max_iterations=100, target_eps=1e-6, dtype=torch.float32)
    measured = lsqr_rho(model, x, targets, trace=trace, chunk_examples=5, settings=settings)
    assert "float32" in measured.route
    assert all(not point.resolved for point in measured.curve if point.eps < FLOAT32_EPS_FLOOR)
    assert any(point.resolved for point in measured.curve if point.eps >= FLOAT32_EPS_FLOOR)


def test_small_estimate_in_mib():
    from advisor.engine import format_bytes

    assert format_bytes(4.27e6) == "4.1 MiB"
    assert format_bytes(1.08 * 2**30) == "1.08 GiB"


def test_resolved_eps_skips_no_bracket():
    from advisor.alignment import CurvePoint
    from advisor.matrix_free import contiguous_resolved_eps

    # ρ(1e-6) closed around 0 while ρ(3e-3) is still wide.
    curve = [CurvePoint(eps=1.0, rho=0.9, resolved=True), CurvePoint(eps=0.1, rho=0.5, resolved=True),
             CurvePoint(eps=3e-3, rho=0.2, resolved=False), CurvePoint(eps=1e-6, rho=0.0, resolved=True)]

    assert contiguous_resolved_eps(curve) == 0.1
    assert contiguous_resolved_eps(curve[2:]) is None
