"""The plan of a study: the tasks an executor runs, with their dependencies.

Two stages, because a run's checkpoints exist only once it is trained: ``training_tasks`` (one
per run of the sweep), then ``analysis_tasks`` over the runs' checkpoints — per checkpoint one
task per pass that chose it (the implicit ``metrics`` first), then the run-scope passes of each
run (after that run's checkpoint tasks), then the study-scope passes (after everything). Tasks
are listed in an order that respects ``depends_on``; each is plain, picklable data (a Ray task
argument) naming everything its execution needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from landscape.checkpoints import list_checkpoints
from landscape.passes import PASSES, CheckpointChoice, Item, PassConfig, PassSpec, Target
from landscape.passes.base import options_of
from landscape.store import Store
from landscape.study.config import Study, StudyError, chosen_passes
from landscape.train import TrainConfig

__all__ = ["PassTask", "TrainTask", "analysis_tasks", "check_options", "given_runs",
           "is_done", "item_key", "select_checkpoints", "training_tasks"]


@dataclass(frozen=True)
class TrainTask:
    """Train one run into ``run_dir`` (skipped when its manifest matches ``config``)."""

    name: str
    run: str
    config: TrainConfig
    run_dir: Path
    depends_on: tuple[str, ...] = ()
    needs_device: bool = False


@dataclass(frozen=True)
class PassTask:
    """Run one pass on one target into the store at ``store``, results tagged ``invocation``;
    ``device`` (``auto``, ``cpu``, ``cuda[:N]``) is resolved by the process that runs it."""

    name: str
    spec: PassSpec
    config: PassConfig
    target: Target
    store: Path
    invocation: str
    device: str
    depends_on: tuple[str, ...] = ()

    @property
    def needs_device(self) -> bool:
        return self.spec.needs_device

    def keyed_items(self) -> list[tuple[str, Item]]:
        """``(store key, item)`` of every result of this task, in order."""
        return [(item_key(self.spec, self.target, item), item)
                for item in self.spec.items(self.target, self.config)]


Task = TrainTask | PassTask


def item_key(spec: PassSpec, target: Target, item: Item) -> str:
    """Store key of one item of ``spec`` on ``target`` (``Store.key``, scope by target)."""
    checkpoint = target.checkpoint.stem if target.scope == "checkpoint" else None
    return Store.key(target.run, checkpoint, spec.name, item.name)


def select_checkpoints(paths: list[Path], choice: CheckpointChoice) -> list[Path]:
    """``all``, ``last``, or every k-th of ``paths`` (ordered by step) plus the last."""
    if not paths or choice == "all":
        return list(paths)
    if choice == "last":
        return [paths[-1]]
    chosen = paths[::choice]
    return chosen if chosen[-1] == paths[-1] else chosen + [paths[-1]]


def training_tasks(study: Study) -> list[TrainTask]:
    """One task per optimizer × seed × batch size (the optimizer's own ``batch_sizes`` if it has
    them), named ``<label>-seed<s>[-batch<b>]``."""
    if study.training is None:
        return []
    tasks: dict[str, TrainTask] = {}
    t = study.training
    for opt in t.optimizers:
        for seed in t.seeds:
            for batch in opt.batch_sizes or t.batch_sizes:
                run = f"{opt.label or opt.name}-seed{seed}" + (f"-batch{batch}" if batch else "")
                if run in tasks:
                    raise StudyError(f"study {study.name!r}: two runs would be named {run!r}; "
                                     f"give the optimizers distinct labels")
                config = TrainConfig(
                    dataset=study.data, model=study.model, optimizer=opt.name,
                    hparams=dict(opt.hparams), epochs=t.epochs, batch_size=batch, seed=seed,
                    checkpoint_every=t.checkpoint_every, early_checkpoints=t.early_checkpoints,
                    n_train=t.n_train, target_train_loss=t.target_train_loss)
                tasks[run] = TrainTask(f"train {run}", run, config, study.output / "runs" / run)
    return list(tasks.values())


def given_runs(study: Study) -> dict[str, list[Path]]:
    """The runs of a study with ``checkpoints``: a directory is a run (its checkpoints by step),
    a file belongs to the run named after its folder."""
    runs: dict[str, list[Path]] = {}
    for target in study.checkpoints or []:
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


def analysis_tasks(study: Study, runs: Mapping[str, list[Path]], *, store: Path,
                   invocation: str, device: str,
                   registry: Mapping[str, PassSpec] = PASSES) -> list[PassTask]:
    """The pass tasks over ``runs`` (name → checkpoint files by step); module docstring."""
    passes = chosen_passes(study, registry)

    def task(spec: PassSpec, cfg: PassConfig, target: Target, after=()) -> PassTask:
        return PassTask(f"{spec.name} {target.label}", spec, cfg, target, store, invocation,
                        device, tuple(after))

    tasks: list[PassTask] = []
    for run, paths in runs.items():
        by_run: list[str] = []
        chosen = {spec.name: set(select_checkpoints(paths, cfg.checkpoints))
                  for spec, cfg in passes if spec.scope == "checkpoint"}
        for path in paths:
            for spec, cfg in passes:
                if spec.scope == "checkpoint" and path in chosen[spec.name]:
                    tasks.append(task(spec, cfg, Target("checkpoint", run, path)))
                    by_run.append(tasks[-1].name)
        for spec, cfg in passes:
            if spec.scope == "run":
                own = {run: tuple(select_checkpoints(paths, cfg.checkpoints))}
                tasks.append(task(spec, cfg, Target("run", run, runs=own), by_run))
    everything = [t.name for t in tasks]
    for spec, cfg in passes:
        if spec.scope == "study":
            all_runs = {run: tuple(select_checkpoints(paths, cfg.checkpoints))
                        for run, paths in runs.items()}
            tasks.append(task(spec, cfg, Target("study", runs=all_runs), everything))
    return tasks


def check_options(store: Store, tasks: list[PassTask]) -> None:
    """Raise ``StudyError`` before anything runs if a task's items cannot be listed (e.g. a pair
    of run names that matches no runs) or a complete result of a task was computed with other
    pass options (``is_done``)."""
    for t in tasks:
        try:
            keyed = t.keyed_items()
        except ValueError as exc:
            raise StudyError(f"passes.{t.spec.name}: {exc}") from None
        if t.spec.reads is not None:  # recomputed from the stored results at every invocation
            continue
        options = options_of(t.config)
        for key, _ in keyed:
            is_done(store, key, options)


def is_done(store: Store, key: str, options: dict) -> bool:
    """Whether the result at ``key`` is complete; ``StudyError`` if it is but was computed with
    other pass ``options`` (reusing it would mix two analyses in one store)."""
    if not store.is_complete(key):
        return False
    stored = store.result_attrs(key).get("options")
    if stored != options:
        raise StudyError(f"{key} in {store.path} was computed with other options ({stored}); "
                         f"this study asks for {options}. Use another output folder, or delete "
                         f"that store to recompute.")
    return True
