"""Kendall τ with a bootstrap interval, and its within-group (granulated) form."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau

from landscape.rank_correlation import bootstrap_tau, kendall_table, resampled_tau_b


def test_tau_and_p_value_are_scipys_and_ties_count():
    rng = np.random.default_rng(0)
    value = rng.normal(size=15).round(1)  # rounding makes ties
    gap = value + rng.normal(scale=0.5, size=15)
    table = kendall_table(pd.DataFrame({"measure": "m", "value": value, "gap": gap}),
                          gap="gap", group_by=(), n_resamples=200)
    reference = kendalltau(value, gap)
    assert table.loc[0, "tau"] == pytest.approx(reference.statistic, abs=1e-12)
    assert table.loc[0, "p_value"] == pytest.approx(reference.pvalue, abs=1e-12)
    assert table.loc[0, "n"] == 15 and table.loc[0, "low"] <= table.loc[0, "tau"] <= table.loc[
        0, "high"]


def test_vectorised_resampled_tau_is_scipys_tau_b():
    rng = np.random.default_rng(2)
    x, y = np.array([0.0] * 7 + [1.0, 2.0]), rng.normal(size=9)  # ties in x
    idx = rng.integers(0, 9, size=(300, 9))
    taus = resampled_tau_b(x, y, idx, chunk=64)
    reference = np.array([kendalltau(x[i], y[i]).statistic for i in idx])
    np.testing.assert_allclose(taus, reference, atol=1e-12, equal_nan=True)
    assert np.isnan(reference).any()  # some resamples tie every x


def test_bootstrap_interval_separates_a_predictor_from_noise():
    rng = np.random.default_rng(1)
    x = rng.normal(size=40)
    low, high, degenerate = bootstrap_tau(x, 2 * x + 0.3 * rng.normal(size=40), seed=0)
    assert low > 0.5 and high <= 1 and degenerate == 0
    # Independent values: over many draws the 90 % interval covers τ = 0 about 90 % of the time.
    covered = 0
    for seed in range(200):
        draw = np.random.default_rng(100 + seed)
        lo, hi, _ = bootstrap_tau(draw.normal(size=30), draw.normal(size=30), n_resamples=300,
                                  confidence=0.9, seed=seed)
        covered += lo <= 0 <= hi
    assert 0.8 <= covered / 200 <= 0.97


def test_degenerate_resamples_are_counted_not_returned_as_nan():
    x = np.array([0.0, 0.0, 0.0, 0.0, 1.0])  # most resamples of five tie every x
    low, high, degenerate = bootstrap_tau(x, np.arange(5.0), n_resamples=500, seed=0)
    assert 0 < degenerate < 500 and np.isfinite(low) and np.isfinite(high)
    assert bootstrap_tau(np.zeros(4), np.arange(4.0), n_resamples=50)[2] == 50
    assert np.isnan(bootstrap_tau(np.arange(2.0), np.arange(2.0))[0])


def test_within_group_tau_sees_what_pooling_hides():
    """Inside each seed the measure orders the models as their gaps do, but the seeds' levels
    run the other way: pooled τ is negative, the granulated τ is 1."""
    rows = [{"measure": "m", "seed": s, "value": 10 * (2 - s) + k, "gap": s + 0.1 * k}
            for s in range(3) for k in range(4)]
    table = kendall_table(pd.DataFrame(rows), gap="gap", group_by=("seed",), n_resamples=100)
    assert table.loc[0, "tau"] < 0
    assert table.loc[0, "tau_within"] == 1.0 and table.loc[0, "n_groups"] == 3


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"needs columns \['gap_error'\]"):
        kendall_table(pd.DataFrame({"measure": ["m"], "value": [1.0], "seed": [0]}))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_tau(np.arange(4.0), np.arange(4.0), confidence=1.0)
    with pytest.raises(ValueError, match="1-D of one length"):
        bootstrap_tau(np.arange(4.0), np.arange(5.0))
