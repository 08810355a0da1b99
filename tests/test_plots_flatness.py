"""Flatness figures: interpolation curves, surface contours, measure–gap scatters, the Kendall
forest and spectra overlays — their structure, bad input, PNG output without pyplot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure

from landscape.plots import (
    NOT_SIGNIFICANT,
    SIGNIFICANT,
    interpolation_curves,
    kendall_forest,
    measure_gap_scatter,
    spectra_overlay,
    surface_contour,
)

ALPHAS = np.linspace(-1.0, 2.0, 13)


def saved(fig: Figure, path) -> bool:
    """``fig`` is pyplot-free (no figure manager) and writes a non-trivial PNG to ``path``."""
    fig.savefig(path)
    return fig.canvas.manager is None and path.stat().st_size > 1024


def interpolation(n_pairs: int = 2, error: bool = True) -> pd.DataFrame:
    """Keskar-style curves: low at α = 0 and 1, a bump between, steep outside; test above train."""
    bump = 0.5 * np.sin(np.pi * np.clip(ALPHAS, 0, 1)) + 2 * np.clip(np.abs(ALPHAS - 0.5) - 0.5,
                                                                      0, None) ** 2
    frames = [pd.DataFrame({"pair": f"sgd-seed{s}-batch32~sgd-seed{s}-batch1024", "alpha": ALPHAS,
                            "split": split, "loss": 0.05 + offset + bump,
                            "error": 0.02 + offset / 2 + bump / 5 if error else np.nan})
              for s in range(n_pairs) for split, offset in (("train", 0.0), ("test", 0.3))]
    return pd.concat(frames, ignore_index=True)


def drawn_lengths(ax) -> list[int]:
    """Point counts of the lines that hold data (seaborn's legend proxies hold none)."""
    return sorted(len(line.get_xdata()) for line in ax.get_lines() if len(line.get_xdata()))


def markers_at(ax) -> list[float]:
    return sorted(line.get_xdata()[0] for line in ax.get_lines()
                  if len(line.get_xdata()) == 2 and line.get_linestyle() == "--")


def legend_texts(legend) -> list[str]:
    return [t.get_text() for t in legend.get_texts()]


def test_interpolation_curves(tmp_path):
    fig = interpolation_curves(interpolation(n_pairs=2))
    loss_ax, error_ax = fig.axes
    for ax in (loss_ax, error_ax):
        assert drawn_lengths(ax) == [2, 2] + [len(ALPHAS)] * 4  # α markers + pairs × splits
        assert markers_at(ax) == [0.0, 1.0]
        texts = [t.get_text() for t in ax.texts]
        assert texts == ["A: sgd-seed*-batch32", "B: sgd-seed*-batch1024"]
    assert loss_ax.get_yscale() == "log" and error_ax.get_yscale() == "linear"
    assert loss_ax.get_legend() is None
    assert {"train", "test", "sgd-seed1-batch32~sgd-seed1-batch1024"} <= set(
        legend_texts(error_ax.get_legend()))
    train = next(line for line in loss_ax.get_lines() if len(line.get_xdata()) == len(ALPHAS))
    assert np.allclose(train.get_xdata(), ALPHAS)
    assert saved(fig, tmp_path / "interpolation.png")


def test_interpolation_curves_without_error_many_pairs_and_a_single_pair():
    df = interpolation(n_pairs=5, error=False)
    df.loc[0, "loss"] = np.inf  # a diverged point is left out, not drawn
    fig = interpolation_curves(df)
    ax, = fig.axes
    assert drawn_lengths(ax) == [2, 2, len(ALPHAS) - 1] + [len(ALPHAS)] * 9
    assert ax.get_yscale() == "log"
    assert not any("~" in t for t in legend_texts(ax.get_legend()))  # units, not styles
    single = interpolation_curves(interpolation(n_pairs=1).drop(columns="error"))
    assert [t.get_text() for t in single.axes[0].texts] == ["A: sgd-seed0-batch32",
                                                            "B: sgd-seed0-batch1024"]
    unrelated = interpolation(n_pairs=2).replace(
        {"pair": {"sgd-seed1-batch32~sgd-seed1-batch1024": "lbfgs~adam"}})
    assert [t.get_text() for t in interpolation_curves(unrelated).axes[0].texts] == ["A", "B"]
    negative = interpolation(n_pairs=1).assign(loss=lambda d: d["loss"] - 1.0)
    assert interpolation_curves(negative).axes[0].get_yscale() == "linear"


def test_interpolation_curves_rejects_bad_input():
    with pytest.raises(ValueError, match="needs columns.*split"):
        interpolation_curves(interpolation().drop(columns="split"))
    with pytest.raises(ValueError, match="<run_A>~<run_B>.*'lonely'"):
        interpolation_curves(interpolation().assign(pair="lonely"))
    with pytest.raises(ValueError, match="at least one row"):
        interpolation_curves(interpolation().iloc[:0])


def bowl(nx: int = 9, ny: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = np.linspace(-1, 1, nx), np.linspace(-0.5, 0.5, ny)
    return x, y, 0.01 + x[None, :] ** 2 + 4 * y[:, None] ** 2


def contour_set(ax) -> ContourSet:
    filled, = [c for c in ax.collections if isinstance(c, ContourSet) and c.filled]
    return filled


@pytest.mark.filterwarnings("error")  # values ≤ 0 are clipped, never left for LogNorm to mask
def test_surface_contour_trajectory_plane(tmp_path):
    x, y, losses = bowl()
    losses[0, 0], losses[0, 1], losses[1, 0] = np.inf, np.nan, 0.0  # diverged, diverged, ≤ 0
    trajectory = np.column_stack([np.linspace(-0.9, 0.0, 6), np.linspace(0.4, 0.0, 6)])
    fig = surface_contour(x, y, losses, trajectory=trajectory,
                          explained_variance_ratio=[0.874, 0.081, 0.02], title="run a")
    ax, colourbar = fig.axes
    assert colourbar.get_ylabel() == "loss (log scale)"
    levels = contour_set(ax).levels
    finite = losses[np.isfinite(losses)]
    assert levels[0] == pytest.approx(finite[finite > 0].min())
    assert levels[-1] == pytest.approx(finite.max())
    assert np.allclose(np.diff(np.log(levels)), np.log(levels[1] / levels[0]))  # log-spaced
    path, = [line for line in ax.get_lines() if line.get_label() == "trajectory"]
    assert np.allclose(path.get_xdata(), trajectory[:, 0])
    assert np.allclose(path.get_ydata(), trajectory[:, 1])
    final, = [line for line in ax.get_lines() if line.get_label() == "final checkpoint"]
    assert np.allclose([final.get_xdata()[0], final.get_ydata()[0]], trajectory[-1])
    assert ax.get_xlabel() == "PC1 (87.4 %)" and ax.get_ylabel() == "PC2 (8.1 %)"
    assert ax.get_title() == "run a"
    assert "not finite (diverged)" in legend_texts(fig.legends[0])
    assert saved(fig, tmp_path / "plane.png")


def test_surface_contour_slice_and_flat_surface():
    x, y, losses = bowl()
    fig = surface_contour(x, y, losses)
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("δ") and ax.get_ylabel().startswith("η")
    assert not fig.legends and not [line for line in ax.get_lines()]
    flat = surface_contour(x, y, np.full_like(losses, 0.3))
    assert contour_set(flat.axes[0]).levels[0] < 0.3 < contour_set(flat.axes[0]).levels[-1]


def test_surface_contour_rejects_bad_input():
    x, y, losses = bowl()
    with pytest.raises(ValueError, match=r"shape \[ny, nx\] = \(7, 9\).*got \(9, 7\)"):
        surface_contour(x, y, losses.T)
    with pytest.raises(ValueError, match="1-D with at least 2"):
        surface_contour(x[:1], y, losses[:, :1])
    with pytest.raises(ValueError, match="no finite positive"):
        surface_contour(x, y, np.full_like(losses, np.nan))
    with pytest.raises(ValueError, match=r"trajectory must have shape \[T, 2\]"):
        surface_contour(x, y, losses, trajectory=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="at least 2 components"):
        surface_contour(x, y, losses, explained_variance_ratio=[0.9])


MEASURES = ["trace", "lambda_max", "frobenius", "sharpness", "local_entropy", "param_norm"]


def measures_frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(m, rng.uniform(1, 2) * (10.0 ** (3 * rng.uniform()) if m == "trace" else 1.0),
             rng.uniform(0.02, 0.2), optimizer)
            for m in MEASURES for optimizer in ("sgd", "adam", "entropy-sgd") for _ in range(4)]
    df = pd.DataFrame(rows, columns=["measure", "value", "gap", "optimizer"])
    df.loc[df["measure"] == "trace", "value"] = np.geomspace(1, 1e4, 12)  # four decades
    return df


def point_colours(ax) -> list[str]:
    points, = [c for c in ax.collections if isinstance(c, PathCollection)]
    return [to_hex(c) for c in points.get_facecolors()]


def test_measure_gap_scatter(tmp_path):
    df = measures_frame()
    taus = pd.DataFrame({"measure": ["trace", "lambda_max"], "tau": [0.42, -0.1],
                         "low": [0.18, -0.4], "high": [0.61, np.nan]})
    fig = measure_gap_scatter(df, taus=taus, gap_label="test − train error")
    axes = fig.axes
    assert len(axes) == len(MEASURES)  # the two unused cells of the 2 × 4 grid are gone
    assert [ax.get_subplotspec().rowspan.start for ax in axes] == [0, 0, 0, 0, 1, 1]
    titles = [ax.get_title() for ax in axes]
    assert titles[0] == "trace\nτ = 0.42 [0.18, 0.61]"
    assert titles[1] == "lambda_max\nτ = -0.10"  # no interval: τ alone
    assert titles[2] == "frobenius\nτ = n/a"
    assert axes[0].get_xscale() == "log" and axes[1].get_xscale() == "linear"
    assert axes[0].get_ylabel() == axes[4].get_ylabel() == "test − train error"
    assert axes[1].get_ylabel() == ""
    assert all(ax.get_legend() is None for ax in axes)
    legend, = fig.legends
    colours = {t.get_text(): to_hex(h.get_color())
               for t, h in zip(legend.get_texts(), legend.legend_handles)}
    assert sorted(colours) == ["adam", "entropy-sgd", "sgd"]
    for ax, measure in zip(axes, MEASURES):
        expected = [colours[o] for o in df.loc[df["measure"] == measure, "optimizer"]]
        assert point_colours(ax) == expected  # one palette in every panel
    assert saved(fig, tmp_path / "scatter.png")


def test_measure_gap_scatter_few_measures_and_bad_input():
    df = measures_frame()
    df.loc[df["measure"] == "sharpness", "value"] = np.nan
    fig = measure_gap_scatter(df[df["measure"].isin(["trace", "sharpness"])])
    assert len(fig.axes) == 2 and [ax.get_title() for ax in fig.axes] == ["trace", "sharpness"]
    assert [t.get_text() for t in fig.axes[1].texts] == ["no finite values"]
    with pytest.raises(ValueError, match="needs columns.*optimizer"):
        measure_gap_scatter(df.drop(columns="optimizer"))
    with pytest.raises(ValueError, match="taus needs columns.*high"):
        measure_gap_scatter(df, taus=pd.DataFrame({"measure": ["a"], "tau": [0.1], "low": [0]}))
    with pytest.raises(ValueError, match="one row per measure.*trace"):
        measure_gap_scatter(df, taus=pd.DataFrame({"measure": ["trace"] * 2, "tau": 0.1,
                                                   "low": 0.0, "high": 0.2}))


def forest_table() -> pd.DataFrame:
    return pd.DataFrame({"measure": ["trace", "lambda_max", "entropy", "norm", "pac_bayes"],
                         "tau": [0.6, -0.5, np.nan, 0.1, 0.3],
                         "low": [0.3, -0.8, np.nan, -0.2, np.nan],
                         "high": [0.8, -0.2, np.nan, 0.4, np.nan],
                         "n": [20, 20, 20, 19, 20], "p_value": [0.001, 0.01, np.nan, 0.5, 0.04]})


def test_kendall_forest(tmp_path):
    fig = kendall_forest(forest_table())
    ax, = fig.axes
    assert ax.get_xlim() == (-1.0, 1.0)
    # bottom to top: the NaN row, then τ ascending
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["entropy (n = 20)", "lambda_max (n = 20)", "norm (n = 19)",
                      "pac_bayes (n = 20)", "trace (n = 20)"]
    bars, = [c for c in ax.collections if not isinstance(c, PathCollection)]
    segments = bars.get_segments()
    assert len(segments) == 3  # rows with τ and both bounds
    assert sorted((seg[0][0], seg[1][0]) for seg in segments) == [(-0.8, -0.2), (-0.2, 0.4),
                                                                  (0.3, 0.8)]
    points, = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert np.allclose(points.get_offsets(), [[-0.5, 1], [0.1, 2], [0.3, 3], [0.6, 4]])
    assert [to_hex(c) for c in points.get_facecolors()] == [SIGNIFICANT, NOT_SIGNIFICANT,
                                                            NOT_SIGNIFICANT, SIGNIFICANT]
    texts = [t.get_text() for t in ax.texts]
    assert texts[0] == "τ = n/a" and texts[-1] == "τ = 0.60 [0.30, 0.80], p = 0.001"
    assert texts[3] == "τ = 0.30, p = 0.04"
    assert [line.get_xdata()[0] for line in ax.get_lines()] == [0.0]
    assert saved(fig, tmp_path / "forest.png")


def test_kendall_forest_rejects_bad_input():
    with pytest.raises(ValueError, match="needs columns.*low"):
        kendall_forest(forest_table().drop(columns="low"))
    with pytest.raises(ValueError, match="at least one row"):
        kendall_forest(forest_table().iloc[:0])
    unknown_p = kendall_forest(forest_table().assign(p_value=None))  # object column
    assert "τ = 0.60 [0.30, 0.80]" in [t.get_text() for t in unknown_p.axes[0].texts]
    plain = kendall_forest(forest_table()[["measure", "tau", "low", "high"]])
    assert "trace" in [t.get_text() for t in plain.axes[0].get_yticklabels()]


def spectra(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"sharp (batch 1024, seed 0)": np.r_[rng.normal(0, 0.05, 300), [40.0, 25.0, 12.0]],
            "flat (batch 32, seed 0)": np.r_[rng.normal(0, 0.02, 300), [3.0, 1.5, 0.8]]}


def test_spectra_overlay(tmp_path):
    data = spectra()
    fig = spectra_overlay(data, bins=30, top_k=5)
    hist_ax, top_ax = fig.axes
    assert hist_ax.get_yscale() == "log" and top_ax.get_yscale() == "log"
    assert sorted(legend_texts(hist_ax.get_legend())) == sorted(data)
    edges = np.histogram_bin_edges(np.concatenate(list(data.values())), bins=30)
    assert len(hist_ax.get_lines()) == len(data)  # one histogram per label
    for line in hist_ax.get_lines():
        assert np.allclose(np.unique(line.get_xdata()), edges)  # common bin edges
    tops = {line.get_label(): line.get_ydata() for line in top_ax.get_lines()}
    assert np.allclose(tops["sharp (batch 1024, seed 0)"][:3], [40, 25, 12])
    assert np.allclose(tops["flat (batch 32, seed 0)"][:3], [3, 1.5, 0.8])
    assert all(np.array_equal(line.get_xdata(), np.arange(1, 6)) for line in top_ax.get_lines())
    assert saved(fig, tmp_path / "spectra.png")


def test_spectra_overlay_options_and_bad_input():
    assert len(spectra_overlay(spectra(), top_k=0).axes) == 1
    short = spectra_overlay({"tiny": np.array([-1.0, 2.0])}, top_k=5)
    line, = short.axes[1].get_lines()
    assert np.array_equal(line.get_ydata(), [2.0, -1.0]) and short.axes[1].get_yscale() == "linear"
    with pytest.raises(ValueError, match="at least one spectrum"):
        spectra_overlay({})
    with pytest.raises(ValueError, match="'flat'.*got shape \\(0,\\)"):
        spectra_overlay({"sharp": np.ones(3), "flat": np.array([])})
    with pytest.raises(ValueError, match="got shape \\(2, 2\\)"):
        spectra_overlay({"sharp": np.ones((2, 2))})
    with pytest.raises(ValueError, match="finite"):
        spectra_overlay({"sharp": np.array([1.0, np.nan])})
    with pytest.raises(ValueError, match="bins must be ≥ 1"):
        spectra_overlay(spectra(), bins=0)
