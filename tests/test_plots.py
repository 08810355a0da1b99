"""Report figures: structure of each figure, Spearman's ρ, PNG output."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from landscape.plots import (
    epsilon_alpha,
    spearman_rho,
    spectra_by_error_band,
    status_counts,
    training_curves,
    with_index_certainty,
)


def searches(n: int = 12, seed: int = 0) -> pd.DataFrame:
    """Synthetic searches: critical points with ε increasing in α, plus other statuses."""
    rng = np.random.default_rng(seed)
    index = np.sort(rng.uniform(0, 0.5, n))
    df = pd.DataFrame({"index": index, "loss": 0.1 + index + 0.01 * rng.standard_normal(n),
                       "error": 0.05 + 0.5 * index, "status": "critical",
                       "method": ["levenberg-marquardt", "newton-mr"] * (n // 2)})
    others = pd.DataFrame({"index": [0.1, 0.3, np.nan], "loss": [0.9, 0.2, np.nan],
                           "error": [np.nan, 0.3, np.nan],
                           "status": ["gradient-flat", "max-iterations", "diverged"],
                           "method": ["newton-mr"] * 3})
    return pd.concat([df, others], ignore_index=True)


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def plotted_points(ax) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))


def test_spearman_rho():
    df = pd.DataFrame({"index": np.arange(6.0), "loss": np.arange(6.0) ** 2,
                       "status": "critical"})
    assert spearman_rho(df)[0] == pytest.approx(1.0) and spearman_rho(df)[2] == 6
    assert spearman_rho(df.assign(loss=-df["loss"]))[0] == pytest.approx(-1.0)
    rho, p, n = spearman_rho(df.iloc[:2])
    assert math.isnan(rho) and math.isnan(p) and n == 2
    assert math.isnan(spearman_rho(df.assign(loss=1.0))[0])
    assert spearman_rho(df.assign(status="diverged"))[2] == 0
    assert spearman_rho(df.assign(status="diverged"), status=None)[2] == 6
    with pytest.raises(ValueError, match="needs columns"):
        spearman_rho(df, y="error")


def test_epsilon_alpha_two_panels(tmp_path):
    df = searches()
    fig = epsilon_alpha(df)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    loss_ax, error_ax = fig.axes
    assert plotted_points(loss_ax) == 14 and plotted_points(error_ax) == 13
    texts = legend_texts(loss_ax)
    assert {"critical", "gradient-flat", "max-iterations"} <= set(texts)
    fit = [t for t in texts if "ρ =" in t]
    assert len(fit) == 1 and "n = 12" in fit[0]
    assert "diverged" not in texts  # its row has no index: nothing drawn
    fit_line, = [line for line in loss_ax.get_lines() if "ρ =" in line.get_label()]
    fitted = fit_line.get_ydata()
    assert len(fitted) == 12
    assert np.all(np.diff(fitted) >= 0)
    fig.savefig(tmp_path / "ea.png")
    assert (tmp_path / "ea.png").stat().st_size > 1024


def test_uncertain_indices_are_drawn_with_their_range_but_never_fitted():
    df = searches().assign(index_stable=True, n_params=100)
    df["n_negative_min"] = df["index"] * 100
    df["n_negative_max"] = df["index"] * 100
    df.loc[[2, 5], "index_stable"] = False
    df.loc[[2, 5], "n_negative_max"] = df.loc[[2, 5], "n_negative_min"] + 7
    fig = epsilon_alpha(df)
    loss_ax = fig.axes[0]
    texts = legend_texts(loss_ax)
    assert "critical, index uncertain" in texts
    fit = [t for t in texts if "ρ =" in t]
    assert len(fit) == 1 and "n = 10" in fit[0] and "2 with uncertain index left out" in fit[0]
    assert plotted_points(loss_ax) == 14  # every point is still drawn
    ranges = [c for c in loss_ax.collections if not isinstance(c, PathCollection)]
    segments = [seg for c in ranges for seg in c.get_segments()]
    assert len(segments) == 2
    assert all(seg[1][0] - seg[0][0] == pytest.approx(0.07) for seg in segments)
    assert spearman_rho(with_index_certainty(df))[2] == 10


def test_epsilon_alpha_without_error_and_few_points():
    df = searches().drop(columns="error")
    fig = epsilon_alpha(df.iloc[[0, 12]])
    assert len(fig.axes) == 1
    assert any("ρ = nan, n = 1" in t for t in legend_texts(fig.axes[0]))
    with pytest.raises(ValueError, match="needs columns.*index"):
        epsilon_alpha(df.drop(columns="index"))


def test_spectra_by_error_band(tmp_path):
    rng = np.random.default_rng(0)
    errors = np.linspace(0.1, 0.4, 9)
    spectra = [rng.standard_normal(50) + 5 * e for e in errors]
    fig = spectra_by_error_band(spectra, errors, n_bands=3)
    ax, = fig.axes
    assert ax.get_yscale() == "log"
    texts = legend_texts(ax)
    assert len(texts) == 3 and all("3 points" in t for t in texts)
    assert len(ax.patches) + len(ax.collections) + len(ax.lines) >= 3
    fig.savefig(tmp_path / "bands.png")
    assert (tmp_path / "bands.png").stat().st_size > 1024
    single = spectra_by_error_band(spectra[:2], [0.2, 0.2], n_bands=3)
    assert len(legend_texts(single.axes[0])) == 1
    with pytest.raises(ValueError, match="one error per spectrum"):
        spectra_by_error_band(spectra, errors[:3])


def test_training_curves(tmp_path):
    steps = np.arange(1, 11)
    df = pd.concat([pd.DataFrame({"run": run, "step": steps, "train_loss": scale / steps,
                                  "test_loss": 1.2 * scale / steps, "train_error": 0.5 / steps,
                                  "test_error": 0.6 / steps})
                    for run, scale in (("sgd", 1.0), ("entropy-sgd", 2.0))])
    fig = training_curves(df)
    loss_ax, error_ax = fig.axes
    assert loss_ax.get_yscale() == "log" and error_ax.get_yscale() == "linear"
    assert len([line for line in loss_ax.get_lines() if len(line.get_xdata()) == 10]) == 4
    assert {"sgd", "entropy-sgd", "train", "test"} <= set(legend_texts(error_ax))
    assert loss_ax.get_legend() is None  # one legend, by the last panel
    fig.savefig(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1024
    assert len(training_curves(df.drop(columns=["train_error", "test_error"])).axes) == 1


def test_training_curves_of_many_runs_are_coloured_by_optimizer():
    steps = np.arange(1, 6)
    df = pd.concat([pd.DataFrame({"run": f"{opt}-seed{seed}", "optimizer": opt, "step": steps,
                                  "train_loss": (seed + 1) / steps, "test_loss": 2 / steps})
                    for opt in ("sgd", "adam", "sam") for seed in range(4)])
    (ax,) = training_curves(df).axes
    assert {"sgd", "adam", "sam"} <= set(legend_texts(ax))
    assert not any(text.endswith("seed0") for text in legend_texts(ax))
    assert len([line for line in ax.get_lines() if len(line.get_xdata()) == 5]) == 12 * 2


def test_status_counts(tmp_path):
    df = searches()
    fig = status_counts(df)
    ax, = fig.axes
    heights = [p.get_height() for p in ax.patches]
    assert sorted(heights) == [1, 1, 1, 12]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["critical", "gradient-flat",
                                                            "max-iterations", "diverged"]
    by_method = status_counts(df, hue="method")
    assert {"levenberg-marquardt", "newton-mr"} <= set(legend_texts(by_method.axes[0]))
    by_method.savefig(tmp_path / "counts.png")
    assert (tmp_path / "counts.png").stat().st_size > 1024
    with pytest.raises(ValueError, match="needs columns"):
        status_counts(df, hue="optimizer")
