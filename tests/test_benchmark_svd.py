"""The benchmark's explicit-SVD baseline, both routes, against numpy's float64 SVD of the reference Jacobian."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from advisor.alignment import stack_targets
from tests.test_alignment import CASES
from tests.test_alignment_methods import away_from_ties, case_data, svd_curve

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "alignment.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("alignment_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("route", ["svd", "qr+svd"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_svd_routes_match_numpy(case, route):
    benchmark = load_benchmark()
    model, x, targets, J = case_data(case)
    y = stack_targets(targets)
    rows, columns = J.shape
    rho, curve, s = svd_curve(J, y)

    result = benchmark.explicit_svd_rho(model, x, y, rows, columns, route)

    if route == "qr+svd" and rows > columns:
        assert result["status"] == "skipped"
        assert "R <= P" in result["note"]
        return
    assert result["route"] == route
    assert result["rho"] == pytest.approx(rho, abs=1e-10)
    if away_from_ties(1e-3, s):
        assert result["rho_eps_1e-3"] == pytest.approx(curve[1e-3], abs=1e-10)
