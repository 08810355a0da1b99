"""Executing a plan: ``execute_task`` (one task, in whatever process runs it) and the executors
that map it over a plan's tasks — ``LocalExecutor`` (in-process, in order) and ``RayExecutor``
(Ray tasks on a local instance or an existing cluster).

A pass task opens the store, skips its complete items (after the options check; a pass that
``reads`` other results recomputes them all from the frame it reads), builds the pass's problem
once on the device it resolves itself, runs and writes each remaining item, and
returns a ``TaskSummary`` (counts and the metrics of its target's rows): the driver logs and
draws from summaries and the store, never from a task's memory. A task's failure is reported
in its summary and never stops the others; a task whose dependency failed is not run.
Configuration errors (``StudyError``: options that differ from the stored ones) are not retried;
any other exception is, up to ``max_retries`` times.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from landscape.objective import Objective, resolve_device
from landscape.passes.base import options_of
from landscape.store import json_safe, open_store
from landscape.study.config import StudyError
from landscape.study.plan import PassTask, Task, TrainTask, is_done
from landscape.train import config_dict, train

MANIFEST = "training.json"
EXECUTORS = ("local", "ray")
OnDone = Callable[["TaskSummary"], None]

__all__ = ["EXECUTORS", "MANIFEST", "LocalExecutor", "RayExecutor", "TaskSummary",
           "execute_task", "make_executor"]


@dataclass(frozen=True)
class TaskSummary:
    """What one task did. ``computed`` / ``skipped``: store results written now / found complete;
    ``metrics``: ``PassSpec.summarise`` of the target's rows; ``checkpoints``: a training task's
    checkpoint files by step; ``error``: why it failed (None if it did not), ``traceback`` the
    details; ``attempts``: times it ran."""

    name: str
    computed: int = 0
    skipped: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoints: tuple[Path, ...] = ()
    error: str | None = None
    traceback: str | None = None
    attempts: int = 1
    wall_time: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None


def execute_task(task: Task, *dependencies: TaskSummary, progress: bool = False) -> TaskSummary:
    """Run ``task`` here (after its ``dependencies``' summaries); ``StudyError`` becomes a failed
    summary, any other exception propagates (the executor retries it)."""
    failed = [d.name for d in dependencies if d.failed]
    if failed:
        return TaskSummary(task.name, error=f"not run: depends on failed {', '.join(failed)}")
    start = time.perf_counter()
    try:
        summary = (_train(task, progress) if isinstance(task, TrainTask)
                   else _run_pass(task, progress))
    except StudyError as exc:
        return TaskSummary(task.name, error=str(exc), wall_time=time.perf_counter() - start)
    return TaskSummary(**{**summary.__dict__, "wall_time": time.perf_counter() - start})


def _train(task: TrainTask, progress: bool) -> TaskSummary:
    """The run's checkpoints, training it first unless its manifest (``training.json``, written
    last) matches the config: training is deterministic under its seed."""
    manifest = task.run_dir / MANIFEST
    wanted = json_safe(config_dict(task.config))
    if manifest.is_file():
        recorded = json.loads(manifest.read_text())
        paths = [task.run_dir / name for name in recorded.get("checkpoints", [])]
        if recorded.get("config") == wanted and all(p.is_file() for p in paths):
            return TaskSummary(task.name, skipped=1, checkpoints=tuple(paths))
        print(f"{task.run_dir}: configuration changed or files missing; retraining")
    if task.run_dir.exists():
        shutil.rmtree(task.run_dir)
    paths = train(task.config, task.run_dir, progress=progress)
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps({"config": wanted, "checkpoints": [p.name for p in paths]},
                              indent=1))
    os.replace(tmp, manifest)
    return TaskSummary(task.name, computed=1, checkpoints=tuple(paths))


def _run_pass(task: PassTask, progress: bool) -> TaskSummary:
    store = open_store(task.store)
    options = options_of(task.config)
    keyed = task.keyed_items()
    target, derived = task.target, task.spec.reads is not None
    if derived:
        target = replace(target, frame=getattr(store, task.spec.reads)())
        todo = keyed
    else:
        todo = [(key, item) for key, item in keyed if not is_done(store, key, options)]
    if todo:
        problem = task.spec.load(target, task.config, str(resolve_device(task.device)))
        bar = tqdm(todo, desc=task.name, unit="item", leave=False,
                   disable=not progress or len(todo) < 2)
        for key, item in bar:
            record = task.spec.run(problem, item, task.config)
            attrs = {**record.attrs, **_hvp_modes(problem), "invocation": task.invocation,
                     "options": options}
            store.write_result(key, record.arrays, attrs, record.dims, overwrite=derived)
            if "status" in record.attrs:
                bar.set_postfix(status=record.attrs["status"])
    rows = store.results_frame(task.spec.name, task.spec.columns, keys=[k for k, _ in keyed])
    return TaskSummary(task.name, computed=len(todo), skipped=len(keyed) - len(todo),
                       metrics=task.spec.summarise(rows))


def _hvp_modes(problem) -> dict:
    """``{"hvp_modes": {kind: mode}}``: how the problem's HVPs were taken (``Objective.hvp_plan``
    of the problem or of its ``objective``; per split for a dict of objectives), or nothing when
    it took none."""
    obj = getattr(problem, "objective", problem)
    plans = ({"": obj} if isinstance(obj, Objective) else
             problem if isinstance(problem, dict) else {})
    found = {name: dict(obj.hvp_plan) for name, obj in plans.items()
             if isinstance(obj, Objective) and obj.hvp_plan}
    return {"hvp_modes": found.get("", found)} if found else {}


def _failure(task: Task, exc: BaseException, attempts: int) -> TaskSummary:
    return TaskSummary(task.name, error=f"{type(exc).__name__}: {exc}",
                       traceback="".join(traceback.format_exception(exc)), attempts=attempts)


class LocalExecutor:
    """Runs the tasks in this process, in plan order, with item progress bars."""

    name = "local"

    def __init__(self, *, max_retries: int = 0, progress: bool = True):
        self.max_retries, self.progress = max_retries, progress

    def map(self, tasks: Sequence[Task], on_done: OnDone = lambda s: None) -> list[TaskSummary]:
        """Summaries of ``tasks`` in order; ``on_done`` is called as each finishes."""
        done: dict[str, TaskSummary] = {}
        for task in tasks:
            deps = [done[name] for name in task.depends_on]
            for attempt in range(1, self.max_retries + 2):
                try:
                    summary = execute_task(task, *deps, progress=self.progress)
                    summary = TaskSummary(**{**summary.__dict__, "attempts": attempt})
                    break
                except Exception as exc:  # noqa: BLE001 — reported, the others still run
                    summary = _failure(task, exc, attempt)
            done[task.name] = summary
            on_done(summary)
        return [done[t.name] for t in tasks]

    def close(self) -> None:
        pass


class RayExecutor:
    """Runs each task as a Ray task: one CPU, and one GPU when the task builds on a device and
    the study's device asks for CUDA (``auto``: when the cluster has GPUs). Connects to the
    cluster at ``address`` (or ``$RAY_ADDRESS``), else starts a local instance (``num_cpus``:
    default all cores) that ``close`` shuts down; an already initialised Ray is used as is.
    A task that raises is retried ``max_retries`` times by Ray."""

    name = "ray"

    def __init__(self, *, address: str | None = None, max_retries: int = 2,
                 num_cpus: int | None = None, device: str = "auto"):
        try:
            import ray
        except ImportError:
            raise ImportError("--executor ray needs Ray: pip install 'ray>=2.9' (or the "
                              "package's [ray] extra)") from None
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            ray.init(address=address, num_cpus=None if address else num_cpus,
                     include_dashboard=False, logging_level="WARNING")
        self.max_retries = max_retries
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        self._gpu = device.startswith("cuda") or (device == "auto" and gpus)
        self._remote = ray.remote(execute_task)

    def map(self, tasks: Sequence[Task], on_done: OnDone = lambda s: None) -> list[TaskSummary]:
        """Submit every task (dependencies passed as Ray object references, so Ray orders them)
        and collect the summaries as they finish; ``on_done`` is called for each."""
        ray = self._ray
        refs, task_of = {}, {}
        for task in tasks:
            options = {"num_cpus": 1, "num_gpus": 1 if self._gpu and task.needs_device else 0,
                       "max_retries": self.max_retries, "retry_exceptions": True,
                       "name": task.name}
            ref = self._remote.options(**options).remote(
                task, *(refs[name] for name in task.depends_on))
            refs[task.name], task_of[ref] = ref, task
        done: dict[str, TaskSummary] = {}
        pending = list(task_of)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            task = task_of[ready[0]]
            try:
                summary = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                failed = [d for d in task.depends_on if done.get(d) and done[d].failed]
                summary = (TaskSummary(task.name, error=f"not run: depends on failed "
                                                        f"{', '.join(failed)}") if failed else
                           _failure(task, getattr(exc, "cause", None) or exc,
                                    self.max_retries + 1))
            done[task.name] = summary
            on_done(summary)
        return [done[t.name] for t in tasks]

    def close(self) -> None:
        if self._owns:
            self._ray.shutdown()


def make_executor(name: str, *, address: str | None = None, progress: bool = True,
                  device: str = "auto") -> LocalExecutor | RayExecutor:
    """``"local"`` or ``"ray"`` (``address``: an existing cluster's)."""
    if name == "local":
        if address is not None:
            raise ValueError("--address is for --executor ray")
        return LocalExecutor(progress=progress)
    if name == "ray":
        return RayExecutor(address=address, device=device)
    raise ValueError(f"unknown executor {name!r}; choose one of {EXECUTORS}")
