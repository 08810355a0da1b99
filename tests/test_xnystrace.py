"""XNysTrace: leave-one-out Nyström estimates against an explicit construction, unbiasedness
over seeds, exactness at low rank, lower error than XTrace and Hutch++ at equal matvecs on a
decaying PSD spectrum, and refusal of an indefinite operator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.flatness import MEASURES
from landscape.linalg.epperly2024xnystrace import xnystrace_trace
from landscape.linalg.epperly2024xtrace import xtrace_trace
from landscape.linalg.meyer2020hutchpp import hutchpp_trace
from landscape.linalg.probes import rademacher
from landscape.objective import Objective
from landscape.spectrum import estimate_trace
from tests.conftest import mlp
from tests.test_xtrace import symmetric
from tests.toys import diagonal_quadratic


def run(a: torch.Tensor, n_matvecs: int, seed: int, estimator=xnystrace_trace):
    return estimator(lambda v: v @ a, a.shape[0], n_matvecs, torch.Generator().manual_seed(seed),
                     dtype=torch.float64, device="cpu")


def test_leave_one_out_estimates_match_the_explicit_nystrom_construction():
    a = symmetric(40, torch.linspace(0.0, 5.0, 40, dtype=torch.float64), seed=0)
    omega = rademacher(9, 40, torch.Generator().manual_seed(3), dtype=torch.float64,
                       device="cpu")
    loo = []
    for i in range(9):
        others = torch.cat([omega[:i], omega[i + 1:]]).T
        y = a @ others
        nystrom = y @ torch.linalg.solve(others.T @ y, y.T)
        loo.append(float(nystrom.trace() + omega[i] @ (a - nystrom) @ omega[i]))
    est = run(a, 9, 3)
    assert est.value == pytest.approx(np.mean(loo), rel=1e-9)
    assert est.stderr == pytest.approx(np.std(loo, ddof=1) / 3, rel=1e-7)
    assert est.n_matvecs == 9 and est.method == "xnystrace"


def test_unbiased_over_seeds_and_more_accurate_than_xtrace_and_hutchpp():
    eigenvalues = 10.0 / torch.arange(1, 101, dtype=torch.float64) ** 1.5  # PSD, like a GGN
    a = symmetric(100, eigenvalues, seed=1)
    exact = float(eigenvalues.sum())
    errors = {f: [] for f in (xnystrace_trace, xtrace_trace, hutchpp_trace)}
    for seed in range(200):
        for estimator, out in errors.items():
            out.append(run(a, 24, seed, estimator).value - exact)
    ny, xt, hpp = (np.array(e) for e in errors.values())
    assert abs(ny.mean()) < 4 * ny.std() / np.sqrt(len(ny))  # unbiased
    rms = {name: np.sqrt((e**2).mean()) for name, e in (("ny", ny), ("xt", xt), ("hpp", hpp))}
    assert rms["ny"] < 0.9 * rms["xt"] and rms["ny"] < 0.7 * rms["hpp"]  # measured 0.77, 0.59


def test_exact_at_low_rank_and_with_n_vectors_and_refuses_an_indefinite_operator():
    low = symmetric(30, torch.cat([torch.tensor([4.0, 1.0], dtype=torch.float64),
                                   torch.zeros(28, dtype=torch.float64)]), seed=2)
    est = run(low, 5, 0)
    assert est.value == pytest.approx(5.0, abs=1e-9) and est.stderr < 1e-9
    small = symmetric(6, torch.arange(1.0, 7.0, dtype=torch.float64), seed=3)
    est = run(small, 40, 0)
    assert est.value == pytest.approx(21.0, rel=1e-12) and est.n_matvecs == 6
    indefinite = symmetric(30, torch.linspace(-2.0, 3.0, 30, dtype=torch.float64), seed=4)
    with pytest.raises(ValueError, match="positive semi-definite"):
        run(indefinite, 10, 0)
    with pytest.raises(ValueError, match="n_matvecs >= 2"):
        run(small, 1, 0)


def test_estimate_trace_offers_xnystrace_for_a_ggn(data):
    obj = Objective(mlp(nn.Tanh), nn.functional.cross_entropy, data)
    exact = float(obj.ggn(obj.theta).trace())
    est = estimate_trace(obj.ggn_op(obj.theta), n_matvecs=60, method="xnystrace", seed=0)
    assert est.method == "xnystrace" and est.n_matvecs == 60
    assert abs(est.value - exact) < 5 * est.stderr + 1e-9 * exact


def test_the_frobenius_measure_accepts_xnystrace_and_the_trace_measure_refuses_it():
    h = torch.linspace(-1.0, 4.0, 60, dtype=torch.float64)
    obj = diagonal_quadratic(h)
    m = MEASURES["frobenius_sq"](obj, obj.theta, method="xnystrace", n_matvecs=80, seed=1)
    assert m.info["method"] == "xnystrace" and m.n_evals == 80  # 40 products with H², 2 HVPs each
    assert abs(m.value - float((h**2).sum())) < 5 * m.stderr
    with pytest.raises(ValueError, match="positive semi-definite"):
        MEASURES["trace"](obj, obj.theta, method="xnystrace", n_matvecs=80)
