"""Running a study: train (or find) runs, analyse their checkpoints, store, track, draw.

Layout of ``<output>/``: ``runs/<run>/step-*.pt`` (trained runs; ``training.json`` is written last,
so a run without it is retrained from scratch — training is deterministic under its seed),
``store.zarr`` (every result, schema in ``landscape.store``) and ``figures/*.png``.

Results per checkpoint (``runs/<run>/checkpoints/<step-…>/<pass>[/<item>]`` in the store):

* ``metrics``: the checkpoint's step, epoch and saved train/test loss and error (no arrays);
* ``spectrum``: ``eigenvalues [eigenvalue]`` of the dense Hessian; attrs loss, error, inertia, index;
* ``critical/<NNN>-r<radius>[-k<index>]``: one search each (``-k``: the index targeted by
  eigenvector following, when the pass lists ``indices``) — arrays ``theta [param]``,
  ``start [param]``, ``eigenvalues [eigenvalue]`` (dense spectrum at the end point; absent past
  the dense limit) and the history
  ``loss, grad_norm_sq, hg_norm, flatness, step_size, inner [iteration]``; attrs every scalar of
  ``critical.CriticalPoint`` (status, loss, error, index, grad_norm, …), the thresholds, the start
  (label, kind, radius), ``target_index``, the objective (l2, n_samples) and ``invocation``.

Every result also records ``invocation`` (the id of the study invocation that wrote it), so a
resumed study shows what it recomputed, and pass results their ``options`` (the pass's config but
its checkpoint selection). Complete results are skipped, an interrupted one is redone, and a
complete one computed with other options stops the study with an error (never a silent mix).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from landscape import plots
from landscape.checkpoints import list_checkpoints, load_checkpoint
from landscape.critical import (
    Thresholds,
    analyse,
    find_critical_point,
    perturbed_starts,
    start_radii,
)
from landscape.critical.search import HISTORY_FIELDS, CriticalPoint, cluster_ids, resolve_method
from landscape.problem import Problem, problem_from_checkpoint
from landscape.spectrum import full_spectrum
from landscape.store import Store, json_safe, open_store, provenance
from landscape.study.config import CheckpointChoice, Study, StudyError
from landscape.tracking import Tracker, ui_command
from landscape.train import TrainConfig, config_dict, train

MANIFEST = "training.json"
Log = Callable[[str], None]

__all__ = ["StudyOutcome", "critical_key_items", "critical_searches", "run_study",
           "select_checkpoints"]


@dataclass(frozen=True)
class StudyOutcome:
    """What a study invocation left: where, what was computed, and the headline numbers.

    ``status_counts``: searches per status over the whole store; ``n_distinct_critical``:
    critical points after merging duplicates (``critical.search.cluster_ids``); ``rho``:
    Spearman ``(ρ, p, n)`` of (α, ε) over the points labelled critical with a stable index, for
    ε = ``"loss"`` and ``"error"``, and over one point per distinct critical point
    (``"loss_distinct"``, …); ``n_index_uncertain``: critical points left out of ρ because their
    index is uncertain.
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

    def report(self) -> str:
        counts = ", ".join(f"{s} {n}" for s, n in sorted(self.status_counts.items())) or "none"
        lines = [(f"critical-point searches by status: {counts} "
                  f"({self.n_distinct_critical} distinct critical points)"),
                 f"results computed now: {self.computed}, already complete: {self.skipped}"]
        for name in ("loss", "error"):
            parts = [_format_rho(*self.rho[f"{name}{suffix}"]) + f" over {what}"
                     for suffix, what in (("", "critical points"), ("_distinct", "distinct ones"))]
            lines.append(f"Spearman ρ(ε = {name}, α): " + "; ".join(parts))
        if self.n_index_uncertain:
            lines.append(f"left out of ρ and of the isotonic fit: {self.n_index_uncertain} "
                         f"critical points whose index is uncertain (see index_stable)")
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


def select_checkpoints(paths: list[Path], choice: CheckpointChoice) -> list[Path]:
    """``all``, ``last``, or every k-th of ``paths`` (ordered by step) plus the last."""
    if not paths or choice == "all":
        return list(paths)
    if choice == "last":
        return [paths[-1]]
    chosen = paths[::choice]
    return chosen if chosen[-1] == paths[-1] else chosen + [paths[-1]]


def _training_plan(study: Study) -> dict[str, TrainConfig]:
    plan = {}
    t = study.training
    for opt in t.optimizers:
        for seed in t.seeds:
            for batch in t.batch_sizes:
                name = f"{opt.label or opt.name}-seed{seed}" + (f"-batch{batch}" if batch else "")
                if name in plan:
                    raise StudyError(f"study {study.name!r}: two runs would be named {name!r}; "
                                     f"give the optimizers distinct labels")
                plan[name] = TrainConfig(
                    dataset=study.data, model=study.model, optimizer=opt.name,
                    hparams=dict(opt.hparams), epochs=t.epochs, batch_size=batch, seed=seed,
                    checkpoint_every=t.checkpoint_every, early_checkpoints=t.early_checkpoints,
                    n_train=t.n_train)
    return plan


def _ensure_trained(config: TrainConfig, run_dir: Path, progress: bool, log: Log) -> list[Path]:
    """The run's checkpoints, training it first unless its manifest matches ``config``."""
    manifest = run_dir / MANIFEST
    wanted = json_safe(config_dict(config))
    if manifest.is_file():
        recorded = json.loads(manifest.read_text())
        paths = [run_dir / name for name in recorded.get("checkpoints", [])]
        if recorded.get("config") == wanted and all(p.is_file() for p in paths):
            return paths
        log(f"{run_dir}: configuration changed or files missing; retraining")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    paths = train(config, run_dir, progress=progress)
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps({"config": wanted, "checkpoints": [p.name for p in paths]},
                              indent=1))
    os.replace(tmp, manifest)
    return paths


def _given_runs(study: Study) -> dict[str, list[Path]]:
    runs: dict[str, list[Path]] = {}
    for target in study.checkpoints:
        if target.is_dir():
            name, paths = target.resolve().name, list_checkpoints(target)
            if not paths:
                raise StudyError(f"study {study.name!r}: no checkpoints in {target}")
        elif target.is_file():
            name, paths = target.resolve().parent.name, [target]
        else:
            raise StudyError(f"study {study.name!r}: checkpoints entry {target} does not exist")
        runs.setdefault(name, []).extend(paths)
    return runs


def _point_record(point: CriticalPoint) -> tuple[dict, dict, dict]:
    """Arrays, dims and scalar attrs of one analysed search."""
    arrays = {"theta": point.theta.cpu().numpy()}
    dims = {"theta": ("param",)}
    if point.eigenvalues is not None:
        arrays["eigenvalues"] = point.eigenvalues.cpu().numpy()
        dims["eigenvalues"] = ("eigenvalue",)
    for name in HISTORY_FIELDS:
        arrays[name] = point.history[name].cpu().numpy()
        dims[name] = ("iteration",)
    skip = {"theta", "history", "eigenvalues", "thresholds", "cluster"}  # cluster: store-wide
    attrs = {f.name: getattr(point, f.name) for f in fields(point) if f.name not in skip}
    attrs["thresholds"] = point.thresholds
    return arrays, dims, attrs


class _Analysis:
    """One invocation's analysis of checkpoints into the store (one per ``run_study`` call)."""

    def __init__(self, study: Study, store: Store, tracker: Tracker, device: str,
                 invocation: str, progress: bool):
        self.study, self.store, self.tracker = study, store, tracker
        self.device, self.invocation, self.progress = device, invocation, progress
        self.computed = self.skipped = 0

    def _write(self, key: str, arrays: dict, attrs: dict, dims: dict | None = None,
               options: dict | None = None) -> None:
        extra = {"invocation": self.invocation} | ({} if options is None else {"options": options})
        self.store.write_result(key, arrays, {**attrs, **extra}, dims)
        self.computed += 1

    def _done(self, key: str, options: dict | None = None) -> bool:
        """Whether ``key`` is complete (then counted as skipped). A complete result computed with
        other pass ``options`` is an error: reusing it would mix two analyses in one store."""
        if not self.store.is_complete(key):
            return False
        stored = self.store.result_attrs(key).get("options")
        if options is not None and stored != options:
            raise StudyError(
                f"{key} in {self.store.path} was computed with other options ({stored}); this "
                f"study asks for {options}. Use another output folder, or delete that store "
                f"to recompute.")
        self.skipped += 1
        return True

    def checkpoint(self, run: str, path: Path, passes: list[str]) -> None:
        """Record the checkpoint's metrics and run ``passes`` (names) on it in a child run."""
        name = path.stem
        key = Store.key(run, name, "metrics")
        if not self._done(key):
            ckpt = load_checkpoint(path)
            self._write(key, {}, {"step": ckpt.step, "epoch": ckpt.epoch, "path": str(path),
                                  **ckpt.metrics})
        if not passes:
            return
        with self.tracker.child_run(f"{run}/{name}", params={"run": run, "checkpoint": name,
                                                             "path": str(path)}):
            if "spectrum" in passes:
                self._spectrum(run, path)
            if "critical" in passes:
                self._critical(run, path)
            self._log_checkpoint(run, name)

    def _problem(self, path: Path, n_samples: int | None, l2: float) -> Problem:
        return problem_from_checkpoint(path, n_samples=n_samples, l2=l2, device=self.device)

    def _spectrum(self, run: str, path: Path) -> None:
        cfg = self.study.passes.spectrum
        key = Store.key(run, path.stem, "spectrum")
        options = _options(cfg)
        if self._done(key, options):
            return
        obj = self._problem(path, cfg.n_samples, cfg.l2).objective
        theta = obj.theta
        spec = full_spectrum(obj, theta, tol=cfg.index_tol, atol=cfg.index_atol)
        inertia = spec.inertia
        try:
            error = obj.error(theta)
        except ValueError:
            error = None
        self._write(key, {"eigenvalues": spec.eigenvalues.cpu().numpy()},
                    {"loss": float(obj.loss(theta)), "error": error, "index": inertia.index,
                     "n_negative": inertia.n_negative, "n_zero": inertia.n_zero,
                     "n_positive": inertia.n_positive, "index_tol": cfg.index_tol,
                     "index_atol": cfg.index_atol, "n_negative_min": inertia.n_negative_min,
                     "n_negative_max": inertia.n_negative_max, "index_stable": inertia.stable,
                     "l2": cfg.l2, "n_samples": obj.num_samples},
                    {"eigenvalues": ("eigenvalue",)}, options)

    def _critical(self, run: str, path: Path) -> None:
        cfg = self.study.passes.critical
        searches = critical_searches(run, path.stem, cfg.radii, cfg.per_radius, cfg.indices)
        options = _options(cfg)
        todo = [item for item in searches if not self._done(item[0], options)]
        if not todo:
            return
        obj = self._problem(path, cfg.n_samples, cfg.l2).objective
        seed = zlib.crc32(f"{cfg.seed}/{run}/{path.stem}".encode())
        starts = perturbed_starts(obj.theta, cfg.radii, cfg.per_radius, seed=seed,
                                  label=f"{run}/{path.stem}")
        thresholds = Thresholds(grad_tol=cfg.grad_tol, max_iterations=cfg.max_iterations,
                                index_tol=cfg.index_tol, index_atol=cfg.index_atol)
        following = resolve_method(cfg.method, obj.num_params) == "eigenvector-following"
        bar = tqdm(todo, desc=f"critical points {run}/{path.stem}", unit="search",
                   disable=not self.progress)
        for key, i, index in bar:
            start = starts[i]
            target = {"index": cfg.index_mode if index is None else index} if following else {}
            point = find_critical_point(obj, start.theta, cfg.method, thresholds=thresholds,
                                        label=start.label, **target)
            point = analyse(obj, point)
            arrays, dims, attrs = _point_record(point)
            arrays["start"] = start.theta.cpu().numpy()
            dims["start"] = ("param",)
            attrs |= {"start_kind": start.kind, "radius": start.radius, "target_index": index,
                      "n_params": obj.num_params, "l2": cfg.l2, "n_samples": obj.num_samples,
                      "device": str(obj.device)}
            self._write(key, arrays, attrs, dims, options)
            bar.set_postfix(status=point.status, grad_norm=f"{point.grad_norm:.1e}")

    def _log_checkpoint(self, run: str, name: str) -> None:
        df = self.store.critical_points()
        rows = df[(df["run"] == run) & (df["checkpoint"] == name)]
        counts = Counter(rows["status"].dropna())
        metrics = {f"n_{status.replace('-', '_')}": n for status, n in counts.items()}
        critical = rows[rows["status"] == "critical"]
        if len(critical):
            metrics |= {"min_critical_loss": float(critical["loss"].min()),
                        "max_critical_index": float(critical["index"].max())}
        self.tracker.log_metrics(metrics)


def _options(cfg) -> dict:
    """A pass's options that determine its results (the checkpoint selection does not)."""
    return json_safe(cfg.model_dump(mode="json", exclude={"checkpoints"}))


def critical_searches(run: str, checkpoint: str, radii: list[float], per_radius: int,
                      indices: list[int] | None = None) -> list[tuple[str, int, int | None]]:
    """The searches from one checkpoint as ``(store key, start number, target index)``, starts in
    ``perturbed_starts`` order, each once per target index (once with None if ``indices`` is
    None). Items are ``<NNN>-r<radius>`` or ``<NNN>-r<radius>-k<index>``, NNN counting searches."""
    targets = [None] if indices is None else indices
    searches = []
    for i, r in enumerate(start_radii(radii, per_radius)):
        for k in targets:
            item = f"{len(searches):03d}-r{r:g}" + ("" if k is None else f"-k{k}")
            searches.append((Store.key(run, checkpoint, "critical", item), i, k))
    return searches


def critical_key_items(run: str, checkpoint: str, radii: list[float], per_radius: int,
                       indices: list[int] | None = None) -> list[str]:
    """Store keys of ``critical_searches``, in order."""
    return [key for key, _, _ in critical_searches(run, checkpoint, radii, per_radius, indices)]


def _figures(study: Study, store: Store, folder: Path, tracker: Tracker, log: Log
             ) -> dict[str, Path]:
    """Draw the study's figures from the store into ``folder`` and log them; returns paths."""
    df = store.critical_points()
    metrics = store.results_frame("metrics")
    critical = df[df["status"] == "critical"]
    drawers = {
        "epsilon_alpha": (lambda: plots.epsilon_alpha(df), len(df) > 0),
        "spectra_by_error_band": (lambda: _spectra_figure(store, critical), len(critical) > 0),
        "training_curves": (lambda: plots.training_curves(metrics.sort_values(["run", "step"])),
                            len(metrics) > 0 and "train_loss" in metrics),
        "status_counts": (lambda: plots.status_counts(df), len(df) > 0),
    }
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in study.figures:
        draw, possible = drawers[name]
        if not possible:
            log(f"figure {name}: nothing to draw yet (no data in the store)")
            continue
        fig = draw()
        if fig is None:
            log(f"figure {name}: nothing to draw (no full spectra in the store)")
            continue
        out[name] = folder / f"{name}.png"
        fig.savefig(out[name], dpi=120)
        tracker.log_figure(fig, f"figures/{name}.png")
    return out


def _spectra_figure(store: Store, critical: pd.DataFrame):
    """Full spectra only: points analysed by Lanczos (large nets) have none and are left out."""
    eps_column = "error" if critical["error"].notna().all() else "loss"
    spectra, eps = [], []
    for row, value in zip(critical.itertuples(), critical[eps_column].to_numpy(float),
                          strict=True):
        arrays = store.read_result(Store.key(row.run, row.checkpoint, "critical", row.item)).arrays
        if "eigenvalues" in arrays:
            spectra.append(arrays["eigenvalues"])
            eps.append(value)
    return plots.spectra_by_error_band(spectra, np.asarray(eps)) if spectra else None


def run_study(study: Study, *, device: str | None = None, progress: bool = True,
              log: Log = print, study_file: str | Path | None = None) -> StudyOutcome:
    """Run ``study``: train or find its runs, analyse the chosen checkpoints (skipping complete
    results), draw the figures, and log it all to one MLflow parent run (child run per analysed
    checkpoint). ``device`` overrides the study's. Safe to interrupt and re-run."""
    device = device or study.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    output = study.output
    output.mkdir(parents=True, exist_ok=True)
    store = open_store(output / "store.zarr")
    invocation = uuid.uuid4().hex[:12]
    config = study.model_dump(mode="json")
    store.set_study_attrs(provenance(config=config, study_file=study_file, device=device,
                                     dtype="float64", invocation=invocation))
    tracking = study.tracking
    tracker = Tracker(tracking.experiment or study.name, tracking.uri, enabled=tracking.enabled)
    analysis = _Analysis(study, store, tracker, device, invocation, progress)
    with tracker.study_run(study.name, params=config,
                           tags={"store": str(store.path.resolve()), "invocation": invocation,
                                 "study_file": study_file or ""}) as run_id:
        if study.training is not None:
            runs = {name: _ensure_trained(config_, output / "runs" / name, progress, log)
                    for name, config_ in _training_plan(study).items()}
        else:
            runs = _given_runs(study)
        passes = {name: cfg for name, cfg in (("spectrum", study.passes.spectrum),
                                              ("critical", study.passes.critical)) if cfg}
        for run, paths in runs.items():
            chosen = {name: set(select_checkpoints(paths, cfg.checkpoints))
                      for name, cfg in passes.items()}
            for path in paths:
                analysis.checkpoint(run, path, [n for n in passes if path in chosen[n]])
        figures = _figures(study, store, output / "figures", tracker, log)
        df = store.critical_points()
        counts = dict(Counter(df["status"].dropna()))
        rho, n_distinct = epsilon_alpha_rhos(df)
        n_uncertain = int((plots.with_index_certainty(df)["status"] == plots.UNCERTAIN).sum())
        summary = {f"n_{s.replace('-', '_')}": n for s, n in counts.items()}
        summary |= {f"spearman_rho_{k}": v[0] for k, v in rho.items()}
        summary |= {"n_distinct_critical": n_distinct, "n_index_uncertain": n_uncertain,
                    "results_computed": analysis.computed,
                    "results_skipped": analysis.skipped}
        tracker.log_metrics({k: v for k, v in summary.items()
                             if v is not None and not (isinstance(v, float) and math.isnan(v))})
    return StudyOutcome(store.path, figures, analysis.computed, analysis.skipped, counts,
                        n_distinct, rho, n_uncertain, run_id, tracker.tracking_uri, invocation)
