"""Studies end to end: validation of study files, a tiny study into store + MLflow + figures,
and resuming after a real kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from zarr.errors import GroupNotFoundError

from landscape.passes.critical import COLUMNS as CRITICAL_COLUMNS
from landscape.problem import problem_from_checkpoint
from landscape.store import Store, open_store
from landscape.study import StudyError, load_study, run_study
from landscape.study.plan import select_checkpoints, training_tasks


def tiny_study(tmp_path: Path, **changes) -> dict:
    """A 64-3-10 tanh MLP on 60 digits; the strong L2 term makes its critical points quick to
    reach (a few seconds per search)."""
    study = {
        "name": "tiny",
        "output": str(tmp_path / "out"),
        "data": {"name": "digits", "n_train": 60, "n_test": 30},
        "model": "mlp:3:tanh",
        "training": {"optimizers": [{"name": "sgd", "hparams": {"lr": 0.05}}], "epochs": 2,
                     "early_checkpoints": 0},
        "passes": {"critical": {"checkpoints": "last", "radii": [0, 1.0], "per_radius": 2,
                                "l2": 0.5, "max_iterations": 30},
                   "spectrum": {"checkpoints": "last"}},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"},
    }
    for dotted, value in changes.items():
        node = study
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    return study


def write(tmp_path: Path, study: dict, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(study))
    return path


# --- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize("change, key, words", [
    ({"passes.critical.radius": [0.1]}, "passes.critical.radius", "unknown key"),
    ({"training.epochs": "many"}, "training.epochs", "integer"),
    ({"training.optimizers": [{"name": "sgdd"}]}, "training.optimizers.0.name", "sgdd"),
    ({"passes.critical.method": "newton"}, "passes.critical.method", "levenberg-marquardt"),
    ({"figures": ["epsilon_alpha", "pie"]}, "figures.1", "epsilon_alpha"),
    ({"data": {"name": "digits", "colour": True}}, "data", "colour"),
    ({"model": "mlp:4:sigmoid"}, "model", "sigmoid"),
])
def test_invalid_study_names_key_and_file(tmp_path, change, key, words):
    path = write(tmp_path, tiny_study(tmp_path, **change))
    with pytest.raises(StudyError) as info:
        load_study(path)
    message = str(info.value)
    assert str(path) in message
    assert f"  {key}:" in message
    assert words in message


def test_exactly_one_source_of_runs(tmp_path):
    study = tiny_study(tmp_path)
    study["checkpoints"] = [str(tmp_path)]
    with pytest.raises(StudyError, match="exactly one of 'training'"):
        load_study(write(tmp_path, study))


def test_overrides_and_quick(tmp_path):
    study = tiny_study(tmp_path)
    study["quick"] = {"training.epochs": 1, "passes.critical.per_radius": 1}
    path = write(tmp_path, study)
    assert load_study(path).training.epochs == 2
    quick = load_study(path, quick=True)
    assert (quick.training.epochs, quick.passes.critical.per_radius) == (1, 1)
    both = load_study(path, quick=True, overrides=["training.epochs=5",
                                                   "passes.critical.l2=1e-2"])
    assert both.training.epochs == 5 and both.passes.critical.l2 == pytest.approx(1e-2)
    with pytest.raises(StudyError, match="training.epoch"):
        load_study(path, overrides=["training.epoch=5"])
    with pytest.raises(StudyError, match="dotted.key=value"):
        load_study(path, overrides=["training.epochs"])


def test_shipped_studies_validate():
    root = Path(__file__).resolve().parents[1] / "studies"
    files = sorted(root.glob("*.yaml"))
    assert {f.name for f in files} >= {"dauphin2014.yaml", "dauphin2014_mnist.yaml",
                                       "keskar_sharp_flat.yaml", "optimizers.yaml"}
    for f in files:
        assert load_study(f).name
        assert load_study(f, quick=True).name


def test_rho_over_critical_and_distinct_points():
    import pandas as pd

    from landscape.study.report import epsilon_alpha_rhos

    df = pd.DataFrame({
        "status": ["critical"] * 5 + ["gradient-flat"],
        "n_negative": [1, 1, 1, 4, 9, 0], "n_zero": [0] * 6,
        "index": [0.1, 0.1, 0.1, 0.4, 0.9, 0.95],
        "loss": [2.0, 2.0, 2.0 + 1e-12, 1.5, 3.0, 0.1],
        "error": [0.2, 0.2, 0.2, 0.5, 0.9, 0.0]})
    rho, n_distinct = epsilon_alpha_rhos(df)
    assert n_distinct == 3
    assert rho["loss_distinct"][2] == 3 and rho["loss_distinct"][0] == pytest.approx(0.5)
    assert rho["error_distinct"][0] == pytest.approx(1.0)
    assert rho["loss"][2] == 5  # duplicates count, gradient-flat never
    uncertain = df.assign(index_stable=[True, True, True, True, False, True])
    rho, n_distinct = epsilon_alpha_rhos(uncertain)
    assert rho["loss"][2] == 4 and n_distinct == 2  # an uncertain index is never ranked


def test_checkpoint_selection():
    paths = [Path(f"step-{i}") for i in range(7)]
    assert select_checkpoints(paths, "all") == paths
    assert select_checkpoints(paths, "last") == paths[-1:]
    assert select_checkpoints(paths, 3) == [paths[0], paths[3], paths[6]]
    assert select_checkpoints(paths, 4) == [paths[0], paths[4], paths[6]]


# --- end to end -------------------------------------------------------------------------------

def test_tiny_study_end_to_end(tmp_path):
    study = load_study(write(tmp_path, tiny_study(tmp_path)))
    outcome = run_study(study, progress=False, log=lambda _: None)
    store = open_store(outcome.store_path, mode="r")
    df = store.critical_points()
    assert list(df.columns[:len(CRITICAL_COLUMNS)]) == list(CRITICAL_COLUMNS)
    assert len(df) == 3 and set(df["checkpoint"]) == {"step-00000002"}
    assert sum(outcome.status_counts.values()) == 3
    critical = df[df["status"] == "critical"]
    assert len(critical) >= 1 and (critical["grad_norm"] <= 1e-8).all()
    distinct = {(r.n_negative, round(r.loss, 6)) for r in critical.itertuples()}
    assert outcome.n_distinct_critical == len(distinct)
    # Stored numbers agree with a fresh objective at the stored θ.
    problem = problem_from_checkpoint(Path(study.output) / "runs/sgd-seed0/step-00000002.pt",
                                      l2=0.5)
    assert list(df["item"]) == ["000-r0", "001-r1", "002-r1"]

    def key(item: str) -> str:
        return Store.key("sgd-seed0", "step-00000002", "critical", item)

    for row in df.itertuples():
        theta = torch.from_numpy(store.read_result(key(row.item)).arrays["theta"])
        assert float(problem.objective.loss(theta)) == pytest.approx(row.loss, rel=1e-12)
        assert problem.objective.error(theta) == pytest.approx(row.error)
    # Arrays of one search, and its index against its own stored spectrum.
    row = critical.iloc[0]
    result = store.read_result(key(row["item"]))
    n = result.arrays["theta"].shape[0]
    assert result.arrays["eigenvalues"].shape == (n,) and result.arrays["start"].shape == (n,)
    eig = result.arrays["eigenvalues"]
    assert row["index"] == pytest.approx(np.mean(eig < -1e-6 * np.abs(eig).max()))
    assert result.arrays["grad_norm_sq"].shape == (row["iterations"] + 1,)
    # Training curves and the spectrum pass are in the store too.
    metrics = store.results_frame("metrics")
    assert list(metrics["step"]) == [0, 1, 2] and metrics["train_loss"].notna().all()
    spectrum = store.read_result("runs/sgd-seed0/checkpoints/step-00000002/spectrum")
    assert spectrum.arrays["eigenvalues"].shape == (n,)
    assert list(store.iter_results("spectrum")) == [spectrum.key]  # its own choice: "last"
    assert store.study_attrs()["config"]["name"] == "tiny"
    # Figures on disk and in the MLflow parent run, which carries the store's path.
    assert set(outcome.figures) == {"epsilon_alpha", "spectra_by_error_band", "training_curves",
                                    "status_counts"}
    assert all(p.stat().st_size > 10_000 for p in outcome.figures.values())
    client = MlflowClient(tracking_uri=study.tracking.uri)
    parent = client.get_run(outcome.mlflow_run_id)
    assert parent.data.tags["store"] == str(outcome.store_path.resolve())
    assert parent.data.params["passes.critical.max_iterations"] == "30"
    logged = {a.path for a in client.list_artifacts(outcome.mlflow_run_id, "figures")}
    assert logged == {f"figures/{name}.png" for name in outcome.figures}
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{outcome.mlflow_run_id}'")
    assert [c.info.run_name for c in children] == ["sgd-seed0/step-00000002"]
    assert children[0].data.metrics["n_critical"] == len(critical)
    # A second invocation recomputes nothing.
    again = run_study(study, progress=False, log=lambda _: None)
    assert again.computed == 0 and again.skipped == outcome.computed
    assert again.status_counts == outcome.status_counts
    # Changed pass options never reuse old results silently.
    changed = load_study(write(tmp_path, tiny_study(tmp_path)), overrides=["passes.critical.l2=1"])
    with pytest.raises(StudyError, match="computed with other options"):
        run_study(changed, progress=False, log=lambda _: None)


def test_target_counts_search_each_start_once_per_count(tmp_path):
    study = load_study(write(tmp_path, tiny_study(
        tmp_path, **{"passes.critical.radii": [0], "passes.critical.target_n_negative": [0, 2],
                     "passes.critical.method": "eigenvector-following", "passes.spectrum": None,
                     "figures": ["epsilon_alpha"], "tracking.enabled": False})))
    outcome = run_study(study, progress=False, log=lambda _: None)
    df = open_store(outcome.store_path, mode="r").critical_points()
    assert list(df["item"]) == ["000-r0-k0", "001-r0-k2"]
    assert list(df["target_n_negative"]) == [0, 2]
    critical = df[df["status"] == "critical"]
    assert len(critical) == 2
    assert (critical["n_negative"] == critical["target_n_negative"]).all()
    assert critical["loss"].is_monotonic_increasing  # higher index, higher loss (one start)


@pytest.mark.parametrize("method, mode, expected", [
    ("eigenvector-following", "start", "start"), ("eigenvector-following", "follow", "follow"),
    ("levenberg-marquardt", "start", None)])
def test_index_mode_reaches_eigenvector_following_only(tmp_path, monkeypatch, method, mode,
                                                       expected):
    from landscape.passes import critical
    seen = []

    def recording(*args, **kwargs):
        seen.append(kwargs.get("n_negative"))
        return find(*args, **kwargs)

    find = critical.find_critical_point
    monkeypatch.setattr(critical, "find_critical_point", recording)
    study = load_study(write(tmp_path, tiny_study(
        tmp_path, **{"passes.critical.method": method, "passes.critical.index_mode": mode,
                     "passes.critical.max_iterations": 3, "passes.spectrum": None,
                     "figures": [], "tracking.enabled": False})))
    run_study(study, progress=False, log=lambda _: None)
    assert seen == [expected] * 3


def test_target_counts_need_eigenvector_following(tmp_path):
    path = write(tmp_path, tiny_study(tmp_path, **{"passes.critical.target_n_negative": [1],
                                                   "passes.critical.method": "newton-mr"}))
    with pytest.raises(StudyError,
                       match="passes.critical: 'target_n_negative'.*eigenvector-following"):
        load_study(path)


def test_unreachable_tracking_still_writes_the_store(tmp_path):
    study = load_study(write(tmp_path, tiny_study(
        tmp_path, **{"tracking.uri": "http://127.0.0.1:9", "passes.critical.radii": [0],
                     "figures": ["status_counts"]})))
    with pytest.warns(RuntimeWarning, match="unavailable") as record:
        outcome = run_study(study, progress=False, log=lambda _: None)
    assert len([w for w in record if "unavailable" in str(w.message)]) == 1
    assert outcome.mlflow_run_id is None
    assert len(open_store(outcome.store_path, mode="r").critical_points()) == 1


def test_killed_study_resumes_without_recomputing(tmp_path):
    study = tiny_study(tmp_path, **{"passes.critical.per_radius": 10, "passes.spectrum": None,
                                    "passes.critical.max_iterations": 5})
    path = write(tmp_path, study)
    store_path = Path(study["output"]) / "store.zarr"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "landscape.cli", "study", "run", str(path),
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    done_before: dict[str, str] = {}
    deadline = time.monotonic() + 300
    try:
        while not done_before and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
            if store_path.exists():
                try:
                    done_before = _complete_items(store_path)
                except GroupNotFoundError:  # the folder exists before the root group is written
                    pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done_before = _complete_items(store_path)
    assert 1 <= len(done_before) < 11, "the kill should land part-way through the searches"
    outcome = run_study(load_study(path), progress=False, log=lambda _: None)
    done_after = _complete_items(store_path)
    assert len(done_after) == 11
    for key, invocation in done_after.items():
        expected = done_before.get(key, outcome.invocation)
        assert invocation == expected, key
    assert outcome.computed == 11 - len(done_before)


def _complete_items(store_path: Path) -> dict[str, str]:
    store = open_store(store_path, mode="r")
    keys = list(store.iter_results("critical"))
    return {k: store.read_result(k).attrs["invocation"] for k in keys}


# --- the shipped Dauphin et al. study ----------------------------------------------------------

def run_shipped(tmp_path: Path, *extra: str, name: str = "dauphin2014"
                ) -> subprocess.CompletedProcess:
    """``landscape study run studies/<name>.yaml`` as a user runs it, output in tmp_path."""
    study = Path(__file__).resolve().parents[1] / "studies" / f"{name}.yaml"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, "-m", "landscape.cli", "study", "run", str(study),
                           "--no-progress", "--set", f"output={tmp_path / 'out'}", *extra],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200,
                          check=False)


def test_shipped_study_quick_run_prints_the_summary(tmp_path):
    done = run_shipped(tmp_path, "--quick")
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "critical-point searches by status:" in out
    assert "Spearman ρ(ε = loss, α)" in out
    assert f"store: {tmp_path / 'out' / 'store.zarr'}" in out
    assert "MLflow run " in out and "mlflow ui --backend-store-uri sqlite:///" in out
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    df = open_store(tmp_path / "out" / "store.zarr", mode="r").critical_points()
    assert len(df) == 4 and df["status"].notna().all()


@pytest.mark.slow
def test_dauphin2014_epsilon_alpha_claim(tmp_path):
    """The README's main command: ε increases with α over the points labelled critical."""
    done = run_shipped(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    df = open_store(tmp_path / "out" / "store.zarr", mode="r").critical_points()
    critical = df[df["status"] == "critical"]
    assert len(critical) >= 20
    assert (critical["grad_norm"] <= 1e-8).all()
    from scipy.stats import spearmanr
    assert spearmanr(critical["index"], critical["loss"]).statistic >= 0.7
    assert spearmanr(critical["index"], critical["error"]).statistic >= 0.7


@pytest.mark.slow
def test_keskar_study_large_batch_is_sharper_by_curvature(tmp_path):
    """The README's Keskar claim: the large-batch solution has the larger Hessian trace in most
    seeds, and the report prints the per-measure comparison and the τ table."""
    done = run_shipped(tmp_path, name="keskar_sharp_flat")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sharp vs flat over 3 interpolation pairs" in done.stdout
    assert "Kendall τ of each measure against gap_error over 6 models" in done.stdout
    from landscape.study.comparisons import StudyFrames
    pairs = StudyFrames(open_store(tmp_path / "out" / "store.zarr", mode="r")).sharpness
    assert pairs[pairs["measure"] == "trace"]["b_sharper"].sum() >= 2


@pytest.mark.slow
def test_optimizers_study_curvature_predicts_the_gap(tmp_path):
    """The README's optimizers claim: over 30 models the Hessian trace's τ against the error gap
    is positive with an interval above 0; the table names every measure."""
    done = run_shipped(tmp_path, name="optimizers")
    assert done.returncode == 0, done.stderr[-3000:]
    from landscape.study.comparisons import kendall_result
    table, attrs = kendall_result(open_store(tmp_path / "out" / "store.zarr", mode="r"))
    assert attrs["n_models"] == 30 and len(table) == 11
    trace = table.set_index("measure").loc["trace"]
    assert trace["tau"] > 0.2 and trace["low"] > 0


def test_an_optimizer_can_have_its_own_batch_sizes(tmp_path):
    study = tiny_study(tmp_path, **{"training.batch_sizes": [20]})
    study["training"]["optimizers"].append({"name": "sfn-krylov", "batch_sizes": [None, 40]})
    tasks = {t.run: t.config.batch_size for t in training_tasks(load_study(write(tmp_path,
                                                                                  study)))}
    assert tasks == {"sgd-seed0-batch20": 20, "sfn-krylov-seed0": None,
                     "sfn-krylov-seed0-batch40": 40}
