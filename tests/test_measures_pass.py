"""The flatness and entropy passes in a study: one row per (run, checkpoint, measure) in
``Store.measures()`` beside the training facts, each measure an MLflow metric of its checkpoint,
values equal to a direct computation at the stored checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from landscape.entropy import local_entropy
from landscape.flatness import MEASURES
from landscape.problem import problem_from_checkpoint
from landscape.spectrum import full_spectrum
from landscape.store import open_store
from landscape.study import StudyError, load_study, run_study
from tests.test_study import tiny_study, write


def measure_study(tmp_path: Path) -> dict:
    study = tiny_study(tmp_path, **{"training.batch_sizes": [20, None], "figures": []})
    study["passes"] = {
        "flatness": {"l2": 0.01, "measures": [{"kind": "lambda_max"}, {"kind": "trace"},
                                              {"kind": "average_sharpness", "sigma": 0.01}]},
        "entropy": {"l2": 0.01, "gammas": [10.0], "methods": ["laplace"]}}
    return study


def test_measures_frame_mlflow_and_direct_values(tmp_path):
    study = load_study(write(tmp_path, measure_study(tmp_path)))
    outcome = run_study(study, progress=False, log=lambda _: None)
    assert not outcome.failures
    frame = open_store(outcome.store_path, mode="r").measures()
    assert list(frame.columns[:15]) == [
        "run", "checkpoint", "measure", "value", "stderr", "pass", "optimizer", "batch_size",
        "seed", "train_loss", "test_loss", "train_error", "test_error", "gap_loss", "gap_error"]
    runs = {"sgd-seed0-batch20": 20, "sgd-seed0": None}
    assert set(frame["run"]) == set(runs)
    for run, batch in runs.items():
        rows = frame[frame["run"] == run]
        assert set(rows["checkpoint"]) == {rows["checkpoint"].max()}  # default: the last
        assert set(rows["measure"]) == {"lambda_max", "trace", "average_sharpness_sigma0.01",
                                        "local_entropy_laplace_gamma10"}
        assert (rows["optimizer"] == "sgd").all() and (rows["seed"] == 0).all()
        assert rows["batch_size"].isna().all() if batch is None else (
            rows["batch_size"] == batch).all()
        assert (rows["gap_error"] == rows["test_error"] - rows["train_error"]).all()
    # The stored numbers are those of a direct computation at the checkpoint (same seed).
    row = frame[(frame["run"] == "sgd-seed0")].set_index("measure")
    path = Path(study.output) / "runs/sgd-seed0" / f"{row['checkpoint'].iloc[0]}.pt"
    obj = problem_from_checkpoint(path, l2=0.01).objective
    eigenvalues = full_spectrum(obj, obj.theta).eigenvalues
    assert row.loc["lambda_max", "value"] == pytest.approx(float(eigenvalues[-1]), rel=1e-8)
    assert abs(row.loc["trace", "value"] - float(eigenvalues.sum())) <= (
        4 * (row.loc["trace", "stderr"] or 0) + 1e-8)
    direct = MEASURES["average_sharpness"](obj, obj.theta, seed=0, sigma=0.01)
    assert row.loc["average_sharpness_sigma0.01", "value"] == direct.value
    laplace = local_entropy(obj, obj.theta, 10.0, method="laplace", seed=0)
    assert row.loc["local_entropy_laplace_gamma10", "value"] == pytest.approx(laplace.value,
                                                                              rel=1e-12)
    # Every measure is a metric of its checkpoint's child run.
    client = MlflowClient(tracking_uri=study.tracking.uri)
    parent = client.get_run(outcome.mlflow_run_id)
    children = {c.info.run_name: c.data.metrics for c in client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{outcome.mlflow_run_id}'")}
    child = children[f"sgd-seed0/{row['checkpoint'].iloc[0]}"]
    for measure, value in row["value"].items():
        assert child[measure] == pytest.approx(value)


@pytest.mark.parametrize("passes, words", [
    ({"flatness": {"measures": [{"kind": "bumpiness"}]}}, "unknown measure kind 'bumpiness'"),
    ({"flatness": {"measures": [{"kind": "keskar", "epsilon": 1e-3}]}}, "no option ['epsilon']"),
    ({"flatness": {"measures": [{"kind": "trace"}, {"kind": "trace"}]}}, "listed twice"),
    ({"entropy": {"methods": ["guess"]}}, "passes.entropy.methods.0"),
    ({"entropy": {"gammas": [0.0]}}, "passes.entropy.gammas.0"),
])
def test_measure_options_are_validated(tmp_path, passes, words):
    study = measure_study(tmp_path)
    study["passes"] = passes
    with pytest.raises(StudyError, match="passes") as info:
        load_study(write(tmp_path, study))
    assert words in str(info.value)
