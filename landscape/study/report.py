"""The report of a study, from the store: figures (ε–α, spectra by error band, training curves,
status counts), the headline numbers (searches per status, Spearman's ρ of ε against α) and the
study-level metrics of every pass (``PassSpec.summarise`` over all its rows).

Reads the store once, after the tasks; never computes a result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from landscape import plots
from landscape.critical.search import cluster_ids
from landscape.passes import PASSES, PassSpec
from landscape.store import Store, parse_key
from landscape.study.comparisons import StudyFrames, kendall_lines, sharpness_lines
from landscape.study.config import Study
from landscape.tracking import Tracker, ui_command

Log = Callable[[str], None]

__all__ = ["StudyOutcome", "draw_figures", "epsilon_alpha_rhos", "study_metrics"]


@dataclass(frozen=True)
class StudyOutcome:
    """What a study invocation left: where, what was computed, and the headline numbers.

    ``status_counts``: searches per status over the whole store; ``n_distinct_critical``:
    critical points after merging duplicates (``critical.search.cluster_ids``); ``rho``:
    Spearman ``(ρ, p, n)`` of (α, ε) over the points labelled critical with a stable index, for
    ε = ``"loss"`` and ``"error"``, and over one point per distinct critical point
    (``"loss_distinct"``, …); ``n_index_uncertain``: critical points left out of ρ because their
    index is uncertain; ``failures``: task name → error of the tasks that failed (every other
    result is in the store); ``metrics``: what was logged to the MLflow parent run.
    """

    store_path: Path
    figures: dict[str, Path]
    computed: int
    skipped: int
    status_counts: dict[str, int]
    n_distinct_critical: int
    rho: dict[str, tuple[float, float, int]]
    n_index_uncertain: int
    mlflow_run_id: str | None
    tracking_uri: str
    invocation: str
    failures: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    sharpness: pd.DataFrame = field(default_factory=pd.DataFrame)
    kendall: tuple[pd.DataFrame, dict] | None = None
    short_of_target: dict[str, float] = field(default_factory=dict)

    def report(self) -> str:
        lines = [f"results computed now: {self.computed}, already complete: {self.skipped}"]
        if self.status_counts:
            counts = ", ".join(f"{s} {n}" for s, n in sorted(self.status_counts.items()))
            lines.append(f"critical-point searches by status: {counts} "
                         f"({self.n_distinct_critical} distinct critical points)")
            for name in ("loss", "error"):
                parts = [_format_rho(*self.rho[f"{name}{suffix}"]) + f" over {what}"
                         for suffix, what in (("", "critical points"),
                                              ("_distinct", "distinct ones"))]
                lines.append(f"Spearman ρ(ε = {name}, α): " + "; ".join(parts))
        if self.n_index_uncertain:
            lines.append(f"left out of ρ and of the isotonic fit: {self.n_index_uncertain} "
                         f"critical points whose index is uncertain (see index_stable)")
        if self.short_of_target:
            runs = ", ".join(f"{run} ({loss:.3g})" for run, loss in self.short_of_target.items())
            lines.append(f"stopped by the epoch cap above the target training loss "
                         f"({len(self.short_of_target)}): {runs}")
        lines += sharpness_lines(self.sharpness)
        if self.kendall is not None:
            lines += kendall_lines(*self.kendall)
        if self.failures:
            lines.append(f"FAILED tasks ({len(self.failures)}; their results are missing, "
                         f"every other result is stored; run the study again to retry them):")
            lines += [f"  {name}: {error}" for name, error in self.failures.items()]
        lines.append(f"store: {self.store_path}")
        if self.figures:
            lines.append(f"figures: {self.store_path.parent / 'figures'}")
        if self.mlflow_run_id is not None:
            lines.append(f"MLflow run {self.mlflow_run_id}; open the UI with: "
                         f"{ui_command(self.tracking_uri)}")
        else:
            lines.append("MLflow: tracking off for this invocation")
        return "\n".join(lines)


def _format_rho(rho: float, p: float, n: int) -> str:
    if n < 3 or not math.isfinite(rho):
        return f"undefined (n = {n}: needs ≥ 3 points and two distinct values)"
    return f"{rho:.3f} (p = {p:.2g}, n = {n})"


def epsilon_alpha_rhos(df: pd.DataFrame) -> tuple[dict[str, tuple[float, float, int]], int]:
    """Spearman ``(ρ, p, n)`` of (α, loss) and (α, error) over the rows labelled critical with a
    stable index (``plots.with_index_certainty``), and over one row per distinct such point
    (``*_distinct``); plus the number of distinct points."""
    df = plots.with_index_certainty(df)
    clusters = cluster_ids(df["status"], df.get("n_negative", [None] * len(df)),
                           df.get("n_zero", [None] * len(df)), df["loss"])
    distinct = df.assign(cluster=clusters).dropna(subset=["cluster"]).drop_duplicates("cluster")
    rho = {}
    for name in ("loss", "error"):
        has = name in df.columns and df[name].notna().any()
        for suffix, rows in (("", df), ("_distinct", distinct)):
            rho[name + suffix] = (plots.spearman_rho(rows, "index", name) if has
                                  else (math.nan, math.nan, 0))
    return rho, len(distinct)


def draw_figures(study: Study, frames: StudyFrames, folder: Path, tracker: Tracker,
                 log: Log) -> dict[str, Path]:
    """Draw the study's figures from the store of ``frames`` into ``folder`` and log them;
    returns paths by figure name (``slice_<run>_<checkpoint>`` and ``trajectory_<run>``: one
    per result)."""
    drawers = {"epsilon_alpha": _epsilon_alpha, "spectra_by_error_band": _spectra_by_error_band,
               "training_curves": _training_curves, "status_counts": _status_counts,
               "interpolation": _interpolation, "slice": _slices, "trajectory": _trajectories,
               "measure_gap": _measure_gap, "kendall": _kendall,
               "sharp_flat_spectra": _sharp_flat_spectra}
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in study.figures:
        figures = drawers[name](frames)
        if not figures:
            log(f"figure {name}: nothing to draw (no such results in the store)")
        for stem, fig in figures.items():
            out[stem] = folder / f"{stem}.png"
            fig.savefig(out[stem], dpi=120)
            tracker.log_figure(fig, f"figures/{stem}.png")
    return out


Figures = dict[str, Figure]


def _epsilon_alpha(frames: StudyFrames) -> Figures:
    df = frames.critical_points
    return {"epsilon_alpha": plots.epsilon_alpha(df)} if len(df) else {}


def _status_counts(frames: StudyFrames) -> Figures:
    df = frames.critical_points
    return {"status_counts": plots.status_counts(df)} if len(df) else {}


def _training_curves(frames: StudyFrames) -> Figures:
    metrics = frames.metrics
    if not len(metrics) or "train_loss" not in metrics:
        return {}
    return {"training_curves": plots.training_curves(metrics.sort_values(["run", "step"]))}


def _spectra_by_error_band(frames: StudyFrames) -> Figures:
    """Full spectra only: points analysed by Lanczos (large nets) have none and are left out."""
    df, store = frames.critical_points, frames.store
    critical = df[df["status"] == "critical"]
    eps_column = "error" if critical["error"].notna().all() else "loss"
    spectra, eps = [], []
    for row, value in zip(critical.itertuples(), critical[eps_column].to_numpy(float),
                          strict=True):
        arrays = store.read_result(Store.key(row.run, row.checkpoint, "critical", row.item)).arrays
        if "eigenvalues" in arrays:
            spectra.append(arrays["eigenvalues"])
            eps.append(value)
    if not spectra:
        return {}
    return {"spectra_by_error_band": plots.spectra_by_error_band(spectra, np.asarray(eps))}


def _split_values(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """``{split: {"loss": …, "error": …}}`` of a surface result's ``<split>_<value>`` arrays."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, values in arrays.items():
        split, _, value = name.partition("_")
        if value in ("loss", "error"):
            out.setdefault(split, {})[value] = values
    return out


def _interpolation(frames: StudyFrames) -> Figures:
    rows, store = [], frames.store
    for key in store.iter_results("interpolation"):
        result = store.read_result(key)
        for split, values in _split_values(result.arrays).items():
            rows.append(pd.DataFrame({"pair": parse_key(key)[3], "split": split,
                                      "alpha": result.arrays["alpha"], "loss": values["loss"],
                                      "error": values.get("error", np.nan)}))
    return {"interpolation": plots.interpolation_curves(pd.concat(rows))} if rows else {}


def _slices(frames: StudyFrames) -> Figures:
    figures, store = {}, frames.store
    for key in store.iter_results("slice"):
        run, checkpoint, _, _ = parse_key(key)
        arrays = store.read_result(key).arrays
        figures[f"slice_{run}_{checkpoint}"] = plots.surface_contour(
            arrays["x"], arrays["y"], _first_loss(arrays),
            title=f"{run}, {checkpoint}\nfilter-normalised random plane")
    return figures


def _trajectories(frames: StudyFrames) -> Figures:
    figures, store = {}, frames.store
    for key in store.iter_results("trajectory"):
        run = parse_key(key)[0]
        arrays = store.read_result(key).arrays
        figures[f"trajectory_{run}"] = plots.surface_contour(
            arrays["x"], arrays["y"], _first_loss(arrays), trajectory=arrays["coords"],
            explained_variance_ratio=arrays["explained_variance_ratio"],
            title=f"{run}\ntraining trajectory on its PCA plane")
    return figures


def _first_loss(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """The training loss of a plane result, else the loss of its first split."""
    values = _split_values(arrays)
    return values.get("train", next(iter(values.values())))["loss"]


def _measure_gap(frames: StudyFrames) -> Figures:
    found = frames.kendall
    gap = found[1]["gap"] if found else "gap_error"
    models = frames.final_measures
    if models.empty or models[gap].isna().all():
        return {}
    df = models.rename(columns={gap: "gap"})
    if df["optimizer"].nunique() == 1 and df["batch_size"].nunique(dropna=False) > 1:
        # one optimizer: colour by batch size instead (Keskar's comparison)
        df = df.assign(optimizer=[f"{o}, batch {'full' if pd.isna(b) else int(b)}"
                                  for o, b in zip(df["optimizer"], df["batch_size"],
                                                  strict=True)])
    df = df[["measure", "value", "gap", "optimizer"]]
    return {"measure_gap": plots.measure_gap_scatter(
        df, taus=found[0] if found else None, gap_label=gap.replace("_", " "))}


def _kendall(frames: StudyFrames) -> Figures:
    found = frames.kendall
    return {"kendall": plots.kendall_forest(found[0])} if found and len(found[0]) else {}


def _sharp_flat_spectra(frames: StudyFrames) -> Figures:
    """The dense spectra of the first interpolation pair's two solutions, or else of the final
    checkpoints with the largest and the smallest top eigenvalue."""
    store = frames.store
    steps = (frames.metrics.set_index(["run", "checkpoint"])["step"] if len(frames.metrics)
             else pd.Series(dtype=float))
    last: dict[str, tuple[int, str]] = {}  # run → (step, key) of its last spectrum
    for key in store.iter_results("spectrum"):
        run, checkpoint, _, _ = parse_key(key)
        step = steps.get((run, checkpoint), 0)
        if run not in last or step >= last[run][0]:
            last[run] = (step, key)
    finals = {run: store.read_result(key).arrays["eigenvalues"] for run, (_, key) in last.items()}
    pair = next((p for p in frames.pairs.itertuples() if {p.run_a, p.run_b} <= set(finals)),
                None)
    if pair is not None:
        chosen = [pair.run_a, pair.run_b]
    elif len(finals) >= 2:
        by_top = sorted(finals, key=lambda run: finals[run][-1])
        chosen = [by_top[0], by_top[-1]]
    else:
        return {}
    spectra = {f"{run} (λmax {finals[run][-1]:.3g})": finals[run] for run in chosen}
    return {"sharp_flat_spectra": plots.spectra_overlay(spectra)}


def study_metrics(store: Store, registry: Mapping[str, PassSpec] = PASSES) -> dict[str, float]:
    """Every pass's ``summarise`` over all of its rows in the store (passes with none omitted)."""
    metrics: dict[str, float] = {}
    for name, spec in registry.items():
        rows = store.results_frame(name, spec.columns)
        if len(rows):
            metrics |= spec.summarise(rows)
    return metrics
