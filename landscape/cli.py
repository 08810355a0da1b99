"""The ``landscape`` command: train, analyse checkpoints, benchmark.

Each sub-command is a thin shell over the library; it validates options, prints tables with rich,
and never hides a failed search (every status is shown).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import typer
from rich.console import Console
from rich.table import Table

from landscape.critical.search import AUTO, DEFAULT_METHOD, METHODS, Thresholds
from landscape.critical.steps import DENSE_MAX_PARAMS
from landscape.optim import OPTIMIZER_HELP
from landscape.spectrum import DEFAULT_INDEX_ATOL, DEFAULT_INDEX_TOL, DENSE_SPECTRUM_MAX_PARAMS
from landscape.study.config import DEVICE_HELP

app = typer.Typer(help=__doc__.split("\n")[0], no_args_is_help=True, add_completion=False)
bench_app = typer.Typer(help="Benchmarks (ratios measured in one process).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
study_app = typer.Typer(help="Studies: YAML files that train, analyse, store, track and draw.",
                        no_args_is_help=True)
app.add_typer(study_app, name="study")
console = Console()

OPTIMIZER_LIST = ", ".join(OPTIMIZER_HELP)


def _checkpoint_paths(target: Path) -> list[Path]:
    from landscape.checkpoints import list_checkpoints

    if target.is_dir():
        paths = list_checkpoints(target)
        if not paths:
            raise typer.BadParameter(f"no checkpoints found in {target}")
        return paths
    if not target.exists():
        raise typer.BadParameter(f"{target} does not exist")
    return [target]


@app.command()
def train(
    out: Path = typer.Option(..., help="Run directory for the checkpoints."),
    dataset: str = typer.Option("digits", help="digits, mnist1d, mnist or cifar10."),
    model: str = typer.Option("mlp:32:tanh", help="Model spec, e.g. mlp:32:tanh, lenet, "
                                                 "linear-ae:64-8, or package.module:factory."),
    optimizer: str = typer.Option("sgd", help=f"One of: {OPTIMIZER_LIST}."),
    lr: float = typer.Option(None, help="Learning rate (the optimizer's default if omitted)."),
    hparams: str = typer.Option("{}", help='Other optimizer hyperparameters as JSON, '
                                          'e.g. \'{"momentum": 0.9}\'.'),
    epochs: int = typer.Option(10, min=1, help="Passes over the training data (the cap with "
                                               "--target-loss)."),
    target_loss: float = typer.Option(None, help="Stop at the end of the first epoch whose "
                                                 "full training loss is at most this (> 0)."),
    batch_size: int = typer.Option(None, min=1, help="Minibatch size (full batch if omitted)."),
    n_train: int = typer.Option(None, min=1, help="Use only the first N training samples."),
    seed: int = typer.Option(0, help="Seed for initialisation, batch order and noise."),
    checkpoint_every: int = typer.Option(1, min=1, help="Save every K epochs."),
    early_checkpoints: int = typer.Option(4, min=0, help="Log-spaced saves before the first "
                                                          "regular one."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    track: bool = typer.Option(False, help="Log the training curves (train/test loss and error "
                                           "at every checkpoint) to MLflow."),
    experiment: str = typer.Option("train", help="MLflow experiment name (with --track)."),
    tracking_uri: str = typer.Option(None, help="MLflow tracking URI (with --track; default "
                                                "$MLFLOW_TRACKING_URI, else ./mlruns)."),
) -> None:
    """Train a model and write checkpoints that `landscape critical` / `spectrum` read."""
    from landscape.train import TrainConfig, config_dict
    from landscape.train import train as run_training

    if target_loss is not None and not target_loss > 0:
        raise typer.BadParameter(f"--target-loss must be positive; got {target_loss}")
    extra = json.loads(hparams)
    if lr is not None:
        extra["lr"] = lr
    config = TrainConfig(dataset=dataset, model=model, optimizer=optimizer, hparams=extra,
                         epochs=epochs, batch_size=batch_size, seed=seed,
                         checkpoint_every=checkpoint_every, early_checkpoints=early_checkpoints,
                         n_train=n_train, target_train_loss=target_loss)
    if not track:
        paths = run_training(config, out, progress=progress)
        console.print(f"wrote {len(paths)} checkpoints to {out}")
        return
    from landscape.tracking import Tracker, ui_command

    tracker = Tracker(experiment, tracking_uri)
    with tracker.study_run(f"train {optimizer} seed {seed}", params=config_dict(config),
                           tags={"run_dir": str(out.resolve())}) as run_id:
        paths = run_training(config, out, progress=progress, on_metrics=tracker.log_metrics)
    console.print(f"wrote {len(paths)} checkpoints to {out}")
    if run_id is not None:
        console.print(f"MLflow run {run_id}; open the UI with: {ui_command(tracker.tracking_uri)}")


@app.command()
def spectrum(
    checkpoint: Path = typer.Argument(..., help="A checkpoint file or a run directory "
                                                "(its last checkpoint is used)."),
    n_samples: int = typer.Option(None, min=1, help="Evaluation set: first N training samples."),
    top_k: int = typer.Option(5, min=1, help="Extreme eigenvalues to compute by Lanczos."),
    matvecs: int = typer.Option(99, min=3, help="HVPs for the Hutch++ trace."),
    dense: bool = typer.Option(None, help="Full dense spectrum (default: when it fits and "
                                          f"n ≤ {DENSE_SPECTRUM_MAX_PARAMS:,})."),
    tol: float = typer.Option(DEFAULT_INDEX_TOL, help="Relative tolerance of the index α "
                                                     "(times max|λ|)."),
    atol: float = typer.Option(DEFAULT_INDEX_ATOL, help="Absolute floor of the index "
                                                       "threshold."),
    l2: float = typer.Option(0.0, help="L2 coefficient added to the loss."),
    device: str = typer.Option("auto", help=DEVICE_HELP + "."),
    seed: int = typer.Option(0, help="Seed of the stochastic estimators."),
) -> None:
    """Hessian spectrum at a checkpoint: extremes, trace ± s.e., index (dense when small)."""
    from landscape.problem import problem_from_checkpoint
    from landscape.spectrum import estimate_trace, extreme_eigenpairs, full_spectrum

    path = _checkpoint_paths(checkpoint)[-1]
    problem = problem_from_checkpoint(path, n_samples=n_samples, l2=l2, device=device)
    obj, theta = problem.objective, problem.objective.theta
    table = Table(title=f"Hessian spectrum at {path.name} (n = {obj.num_params:,}, "
                        f"{obj.num_samples} samples, {obj.device})")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("loss", f"{float(obj.loss(theta)):.6g}")
    top = extreme_eigenpairs(obj, theta, k=min(top_k, obj.num_params), seed=seed)
    low = extreme_eigenpairs(obj, theta, k=1, which="smallest", seed=seed)
    table.add_row(f"top-{len(top.eigenvalues)} λ", ", ".join(f"{v:.6g}" for v in
                                                             top.eigenvalues.tolist()))
    table.add_row("max residual ‖Hv − λv‖", f"{float(top.residuals.max()):.2e}")
    table.add_row("λmin", f"{float(low.eigenvalues[0]):.6g}")
    tr = estimate_trace(obj, theta, n_matvecs=matvecs, seed=seed)
    table.add_row("trace (Hutch++)", f"{tr.value:.6g} ± {tr.stderr:.2g}")
    if dense if dense is not None else obj.num_params <= DENSE_SPECTRUM_MAX_PARAMS:
        spec = full_spectrum(obj, theta, tol=tol, atol=atol)
        inertia = spec.inertia
        certainty = ("" if inertia.stable else f"; uncertain: {inertia.n_negative_min}–"
                                               f"{inertia.n_negative_max} negative")
        table.add_row("index α (dense)", f"{spec.index:.4g} ({spec.n_negative} neg / "
                                         f"{spec.n_zero} ~0 / {spec.n_positive} pos at "
                                         f"|λ| > {inertia.threshold:.2g}{certainty})")
        table.add_row("exact trace (dense)", f"{float(spec.eigenvalues.sum()):.6g}")
    console.print(table)


@app.command()
def critical(
    target: Path = typer.Argument(..., help="A checkpoint file or a run directory."),
    method: str = typer.Option(DEFAULT_METHOD, help=f"One of: {', '.join(METHODS)}; {AUTO}: "
                                                    "eigenvector-following up to "
                                                    f"{DENSE_MAX_PARAMS:,} parameters, else "
                                                    "levenberg-marquardt."),
    radii: str = typer.Option("0", help="Comma-separated relative perturbation radii."),
    per_radius: int = typer.Option(2, min=1, help="Starts per non-zero radius."),
    n_samples: int = typer.Option(None, min=1, help="Evaluation set: first N training samples."),
    l2: float = typer.Option(0.0, help="L2 coefficient (cross-entropy needs one for finite "
                                       "critical points)."),
    max_iterations: int = typer.Option(Thresholds.max_iterations, min=1,
                                       help="Iteration cap per search."),
    grad_tol: float = typer.Option(1e-8, help="‖g‖ at or below which a point is critical."),
    index_tol: float = typer.Option(DEFAULT_INDEX_TOL, help="Relative tolerance of the index "
                                                           "(times max|λ|)."),
    index_atol: float = typer.Option(DEFAULT_INDEX_ATOL, help="Absolute floor of the index "
                                                             "threshold."),
    seed: int = typer.Option(0, help="Seed of the perturbations."),
    device: str = typer.Option("auto", help=DEVICE_HELP + "."),
) -> None:
    """Search for critical points near checkpoints and print one row per search (an uncertain
    index is shown as the range of negative counts inside its stability band)."""
    from landscape.critical import find_critical_points, perturbed_starts
    from landscape.problem import problem_from_checkpoint

    radius_values = [float(r) for r in radii.split(",")]
    table, methods = Table(), set()
    for col in ("start", "status", "loss", "error", "index α", "‖g‖", "iters", "certified"):
        table.add_column(col, justify="left" if col in ("start", "status") else "right")
    for path in _checkpoint_paths(target):
        problem = problem_from_checkpoint(path, n_samples=n_samples, l2=l2, device=device)
        starts = perturbed_starts(problem.objective.theta.to(torch.float64), radius_values,
                                  per_radius, seed=seed, label=path.stem)
        points = find_critical_points(problem.objective, starts, method,
                                      thresholds=Thresholds(grad_tol=grad_tol,
                                                            max_iterations=max_iterations,
                                                            index_tol=index_tol,
                                                            index_atol=index_atol))
        methods |= {p.method for p in points}
        for p in points:
            table.add_row(p.label, p.status, f"{p.loss:.6g}",
                          "" if p.error is None else f"{p.error:.4f}", _index_cell(p),
                          f"{p.grad_norm:.1e}",
                          str(p.iterations), "yes" if p.certified else "no")
    table.title = f"critical-point searches ({', '.join(sorted(methods))})"
    console.print(table)


@app.command()
def flatness(
    checkpoint: Path = typer.Argument(..., help="A checkpoint file or a run directory "
                                                "(its last checkpoint is used)."),
    measures: str = typer.Option("all", help="Comma-separated measure kinds of "
                                             "landscape.flatness.MEASURES, or all (each with "
                                             "its defaults)."),
    gammas: str = typer.Option("", help="Scopes γ of the local entropy, comma-separated "
                                        "(none by default)."),
    entropy_method: str = typer.Option("laplace", help="Local-entropy method (with --gammas)."),
    n_samples: int = typer.Option(None, min=1, help="Evaluation set: first N training samples."),
    l2: float = typer.Option(0.0, help="L2 coefficient added to the loss."),
    seed: int = typer.Option(0, help="Seed of the stochastic measures."),
    device: str = typer.Option("auto", help=DEVICE_HELP + "."),
) -> None:
    """Flatness, sharpness and local-entropy measures at a checkpoint: value ± standard error,
    cost and time per measure."""
    from landscape.entropy import local_entropy
    from landscape.flatness import MEASURES
    from landscape.problem import problem_from_checkpoint

    kinds = list(MEASURES) if measures == "all" else [m for m in measures.split(",") if m]
    unknown = sorted(set(kinds) - set(MEASURES))
    if unknown:
        raise typer.BadParameter(f"unknown measures {unknown}; choose from {sorted(MEASURES)}",
                                 param_hint="--measures")
    scopes = [float(g) for g in gammas.split(",") if g]
    path = _checkpoint_paths(checkpoint)[-1]
    obj = problem_from_checkpoint(path, n_samples=n_samples, l2=l2, device=device).objective
    table = Table(title=f"flatness at {path.name} (n = {obj.num_params:,}, {obj.num_samples} "
                        f"samples, {obj.device}, seed {seed})")
    for col in ("measure", "value", "± s.e.", "evaluations", "seconds"):
        table.add_column(col, justify="left" if col == "measure" else "right")

    def row(name, value, stderr, n_evals, seconds, note=""):
        table.add_row(name, f"{value:.6g}" + note, "" if stderr is None else f"{stderr:.2g}",
                      f"{n_evals:,}", f"{seconds:.2f}")

    for kind in kinds:
        m = MEASURES[kind](obj, obj.theta, seed=seed)
        row(m.name, m.value, m.stderr, m.n_evals, m.wall_time)
    for gamma in scopes:
        est = local_entropy(obj, obj.theta, gamma, method=entropy_method, seed=seed)
        note = "" if est.valid else f" (invalid: {est.reason})"
        row(f"local_entropy_{entropy_method}_gamma{gamma:g}", est.value, est.stderr,
            est.n_evals, est.seconds, note)
    console.print(table)


def _index_cell(point) -> str:
    if point.index is None:
        return ""
    if point.index_stable:
        return f"{point.index:.4f}"
    low, high = point.n_negative_min, point.n_negative_max
    return f"uncertain ({low}–{high if high is not None else '?'} neg)"


def _load_study(path: Path, quick: bool, overrides: list[str]):
    from landscape.study import StudyError, load_study

    try:
        return load_study(path, quick=quick, overrides=overrides)
    except StudyError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@study_app.command("run")
def study_run(
    study_file: Path = typer.Argument(..., help="Study file (YAML), e.g. studies/dauphin2014.yaml."),
    quick: bool = typer.Option(False, help="Apply the study's `quick` overrides (a smoke run)."),
    device: str = typer.Option(None, help="cpu, cuda, cuda:N or auto (default: the study's, "
                                          "auto unless set)."),
    set_: list[str] = typer.Option([], "--set", help="Override a study key, dotted=value (YAML "
                                                     "value); repeatable."),
    executor: str = typer.Option("local", help="local (in this process) or ray (Ray tasks: a "
                                               "local instance, or the cluster at --address)."),
    address: str = typer.Option(None, help="Address of a running Ray cluster (with --executor "
                                           "ray; default $RAY_ADDRESS, else a local instance)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Run a study: train or find its runs, analyse the checkpoints into the Zarr store (complete
    results are skipped, so an interrupted study resumes), draw figures, log to MLflow. Exits
    with status 1 when a task failed (the others' results are stored)."""
    from landscape.study import StudyError, run_study
    from landscape.study.config import check_device
    from landscape.study.executors import EXECUTORS

    if executor not in EXECUTORS:
        raise typer.BadParameter(f"choose one of {', '.join(EXECUTORS)}; got {executor!r}",
                                 param_hint="--executor")
    if address is not None and executor != "ray":
        raise typer.BadParameter("--address needs --executor ray", param_hint="--address")
    if device is not None:
        _check(check_device, device, "--device")
    study = _load_study(study_file, quick, set_)
    try:
        outcome = run_study(study, device=device, progress=progress, log=console.print,
                            study_file=study_file, executor=executor, address=address)
    except StudyError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(outcome.report(), highlight=False, soft_wrap=True)
    if outcome.failures:
        raise typer.Exit(1)


def _check(validate, value, hint: str):
    try:
        return validate(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=hint) from None


@study_app.command("validate")
def study_validate(
    study_file: Path = typer.Argument(..., help="Study file (YAML)."),
    quick: bool = typer.Option(False, help="Validate with the `quick` overrides applied."),
    set_: list[str] = typer.Option([], "--set", help="Override a study key, dotted=value."),
) -> None:
    """Check a study file (unknown keys, wrong types) and print it with its defaults filled in."""
    import yaml

    study = _load_study(study_file, quick, set_)
    console.print(f"{study_file}: valid", highlight=False)
    console.print(yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False, width=100),
                  highlight=False, soft_wrap=True)


@app.command()
def inspect(store: Path = typer.Argument(..., help="A study's store.zarr folder.")) -> None:
    """Summarise a study store: runs, checkpoints, results per pass, search statuses."""
    from landscape.store import open_store

    try:
        opened = open_store(store, mode="r")
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(opened.summary(), highlight=False, soft_wrap=True)


@app.command()
def diff(
    store_a: Path = typer.Argument(..., help="A store.zarr folder."),
    store_b: Path = typer.Argument(..., help="Another store.zarr folder."),
    ignore: str = typer.Option("invocation,wall_time", help="Comma-separated attributes not "
                                                           "compared."),
    rename: list[str] = typer.Option([], help="old=new: a name in the first store that the "
                                              "second calls new (repeatable)."),
    limit: int = typer.Option(50, min=1, help="Differences to print at most."),
) -> None:
    """Compare the results of two stores (keys, arrays bit for bit, attributes); exits 1 if they
    differ. E.g. a study rerun on another machine, or with another executor."""
    from landscape.store import diff_stores, open_store

    renames = dict(r.split("=", 1) for r in rename if "=" in r)
    if len(renames) != len(rename):
        raise typer.BadParameter("each --rename is old=new", param_hint="--rename")
    try:
        a, b = open_store(store_a, mode="r"), open_store(store_b, mode="r")
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc)) from None
    found = diff_stores(a, b, ignore=[k for k in ignore.split(",") if k], renames=renames)
    for line in found[:limit]:
        console.print(line, highlight=False, soft_wrap=True)
    n = len(list(a.iter_results()))
    console.print(f"{len(found)} differences ({n} results in {store_a})"
                  + (f"; first {limit} shown" if len(found) > limit else ""), highlight=False)
    if found:
        raise typer.Exit(1)


@bench_app.command("curvature")
def bench_curvature(device: str = typer.Option("auto", help=DEVICE_HELP + "."),
                    models: str = typer.Option("mlp,cnn"),
                    memory: bool = typer.Option(True, help="Measure peak memory in "
                                                           "subprocesses."),
                    compile_hvp: bool = typer.Option(False, "--compile",
                                                     help="Also time torch.compile (slow).")
                    ) -> None:
    """HVP modes, dense Hessian, top-5 eigenvalues and traces against PyHessian, curvlinops
    and hessian-eigenthings (those installed: pip install -e ".[bench]")."""
    from landscape.bench import main

    main(["--device", device, "--models", models] + ([] if memory else ["--no-memory"])
         + (["--compile"] if compile_hvp else []))


@bench_app.command("scaling")
def bench_scaling(device: str = typer.Option("auto", help=DEVICE_HELP + "."),
                  out: Path = typer.Option(Path("outputs/bench-scaling"),
                                           help="Folder for scaling.csv and scaling.png."),
                  widths: str = typer.Option(None, help="Hidden widths (default 12 … 960: "
                                                        "1k → 1M parameters)."),
                  samples: str = typer.Option(None, help="Sample counts (default 100 … "
                                                         "1347).")) -> None:
    """Time and peak memory of gradient, HVP, top-5, trace and dense Hessian against the
    number of parameters and of samples: a table and a log-log figure."""
    from landscape.bench_scaling import main

    main(["--device", device, "--out", str(out)] + (["--widths", widths] if widths else [])
         + (["--samples", samples] if samples else []))


@bench_app.command("critical")
def bench_critical(
    problems: str = typer.Option(None, help="Comma-separated problems (default: the five linear "
                                            "autoencoders; also mlp-16-l2=1e-3, …)."),
    methods: str = typer.Option(AUTO, help=f"Comma-separated, of: {AUTO}, {', '.join(METHODS)}."),
    starts: int = typer.Option(100, min=1, help="Starts per problem."),
    iterations: int = typer.Option(None, min=1, help="Iteration cap per search (default: 500 "
                                                     "for frye, else the library default)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Critical-point methods on Frye et al.'s linear autoencoder, ill-conditioned autoencoders
    (closed forms) and digits MLPs."""
    from landscape.bench_critical import main

    argv = ["--methods", methods, "--starts", str(starts)]
    argv += ["--problems", problems] if problems else []
    argv += ["--iterations", str(iterations)] if iterations else []
    main(argv + ([] if progress else ["--no-progress"]))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
