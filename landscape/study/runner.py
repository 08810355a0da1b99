"""Running a study: plan it, execute the plan, report — the driver of one invocation.

Layout of ``<output>/``: ``runs/<run>/step-*.pt`` (trained runs; ``training.json`` is written last,
so a run without it is retrained from scratch — training is deterministic under its seed),
``store.zarr`` (every result; schema in ``landscape.store``, records in ``landscape.passes.*``)
and ``figures/*.png``.

The driver owns the store's root attributes (provenance, written before any task), the MLflow
runs (a parent per invocation, a child per analysed checkpoint and per run with run-scope
passes, fed by the tasks' summaries as they arrive) and the progress bar over tasks; the tasks
(``study.plan``) run on an executor (``study.executors``: in-process or Ray). Every result
records ``invocation`` (the id of the invocation that wrote it) and its pass ``options``.
Complete results are skipped, an interrupted one is redone, and a complete one computed with
other options stops the study before anything runs (never a silent mix).
"""

from __future__ import annotations

import math
import uuid
from collections import Counter, defaultdict
from pathlib import Path

from tqdm.auto import tqdm

from landscape import plots
from landscape.passes import PASSES
from landscape.store import open_store, provenance
from landscape.study.comparisons import StudyFrames, short_of_target
from landscape.study.config import Study
from landscape.study.executors import LocalExecutor, RayExecutor, TaskSummary, make_executor
from landscape.study.plan import (
    PassTask,
    analysis_tasks,
    check_options,
    given_runs,
    training_tasks,
)
from landscape.study.report import (
    Log,
    StudyOutcome,
    draw_figures,
    epsilon_alpha_rhos,
    study_metrics,
)
from landscape.tracking import Tracker

__all__ = ["StudyOutcome", "run_study"]


class _ChildRuns:
    """Logs each analysed target's merged pass metrics in its own MLflow child run once all of
    its (non-implicit) pass tasks have reported."""

    def __init__(self, tracker: Tracker, tasks: list[PassTask]):
        self.tracker = tracker
        self.pending: dict[str, set[str]] = defaultdict(set)
        self.target_of: dict[str, PassTask] = {}
        for t in tasks:
            if not t.spec.implicit and t.target.scope != "study":
                self.pending[t.target.label].add(t.name)
                self.target_of[t.name] = t
        self.metrics: dict[str, dict[str, float]] = defaultdict(dict)

    def done(self, summary: TaskSummary) -> None:
        task = self.target_of.get(summary.name)
        if task is None:
            return
        label = task.target.label
        self.metrics[label] |= summary.metrics
        self.pending[label].discard(summary.name)
        if self.pending[label]:
            return
        target = task.target
        params = {"run": target.run}
        if target.scope == "checkpoint":
            params |= {"checkpoint": target.checkpoint.stem, "path": str(target.checkpoint)}
        with self.tracker.child_run(label, params=params):
            self.tracker.log_metrics(self.metrics.pop(label))


def run_study(study: Study, *, device: str | None = None, progress: bool = True,
              log: Log = print, study_file: str | Path | None = None,
              executor: LocalExecutor | RayExecutor | str = "local",
              address: str | None = None) -> StudyOutcome:
    """Run ``study``: train or find its runs, analyse the chosen checkpoints (skipping complete
    results), draw the figures, and log it all to one MLflow parent run. ``device`` overrides
    the study's; ``executor``: ``"local"``, ``"ray"`` (``address``: an existing cluster's) or an
    executor instance (not closed here). Safe to interrupt and re-run; a failed task is
    reported in ``StudyOutcome.failures`` while every other result is stored."""
    device = device or study.device
    output = study.output
    output.mkdir(parents=True, exist_ok=True)
    store = open_store(output / "store.zarr")
    invocation = uuid.uuid4().hex[:12]
    config = study.model_dump(mode="json")
    owned = isinstance(executor, str)
    runner = (make_executor(executor, address=address, progress=progress, device=device)
              if owned else executor)
    store.set_study_attrs(provenance(config=config, study_file=study_file, device=device,
                                     dtype="float64", invocation=invocation,
                                     executor=runner.name))
    tracking = study.tracking
    tracker = Tracker(tracking.experiment or study.name, tracking.uri, enabled=tracking.enabled)
    failures: dict[str, str] = {}
    counts = Counter()

    def finished(summary: TaskSummary) -> None:
        if summary.failed:
            failures[summary.name] = summary.error
            log(f"task {summary.name} failed after {summary.attempts} attempt(s): "
                f"{summary.error}")
        counts.update(computed=summary.computed, skipped=summary.skipped)

    try:
        with tracker.study_run(study.name, params=config,
                               tags={"store": str(store.path.resolve()),
                                     "invocation": invocation,
                                     "study_file": study_file or ""}) as run_id:
            if study.training is not None:
                trainings = training_tasks(study)
                trained = runner.map(trainings, finished)
                runs = {t.run: list(s.checkpoints) for t, s in zip(trainings, trained,
                                                                     strict=True)
                        if not s.failed}
                counts.clear()  # results count store results; training is not one
            else:
                runs = given_runs(study)
            tasks = analysis_tasks(study, runs, store=store.path, invocation=invocation,
                                   device=device)
            check_options(store, tasks)
            children = _ChildRuns(tracker, tasks)
            bar = tqdm(total=len(tasks), desc=f"study {study.name}", unit="task",
                       disable=not progress)

            def analysed(summary: TaskSummary) -> None:
                finished(summary)
                children.done(summary)
                bar.update()

            runner.map(tasks, analysed)
            bar.close()
            frames = StudyFrames(store)
            figures = draw_figures(study, frames, output / "figures", tracker, log)
            target = study.training.target_train_loss if study.training else None
            outcome = _outcome(frames, figures, counts, failures, run_id, tracker, invocation,
                               target)
            tracker.log_metrics({k: v for k, v in outcome.metrics.items()
                                 if v is not None and not (isinstance(v, float)
                                                           and math.isnan(v))})
    finally:
        if owned:
            runner.close()
    return outcome


def _outcome(frames: StudyFrames, figures, counts, failures, run_id, tracker, invocation,
             target: float | None) -> StudyOutcome:
    store, df = frames.store, frames.critical_points
    status_counts = dict(Counter(df["status"].dropna()))
    rho, n_distinct = epsilon_alpha_rhos(df)
    n_uncertain = int((plots.with_index_certainty(df)["status"] == plots.UNCERTAIN).sum())
    metrics = study_metrics(store, PASSES)
    metrics |= {f"spearman_rho_{k}": v[0] for k, v in rho.items()}
    metrics |= {"n_distinct_critical": n_distinct, "n_index_uncertain": n_uncertain,
                "results_computed": counts["computed"], "results_skipped": counts["skipped"],
                "tasks_failed": len(failures)}
    return StudyOutcome(store.path, figures, counts["computed"], counts["skipped"],
                        status_counts, n_distinct, rho, n_uncertain, run_id,
                        tracker.tracking_uri, invocation, dict(failures), metrics,
                        frames.sharpness, frames.kendall,
                        short_of_target(frames.metrics, target))
