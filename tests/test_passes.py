"""The pass registry: a new pass is one registry entry (no edit to config, plan, runner or
store), at any of the three scopes; the registry validates study files and task failures are
reported while every other result is stored."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from landscape.checkpoints import list_checkpoints
from landscape.passes import PASSES
from landscape.store import open_store
from landscape.study import StudyError, load_study, run_study
from tests import toy_passes
from tests.test_study import tiny_study, write


@pytest.fixture
def toys(monkeypatch):
    for spec in (toy_passes.SCALED, toy_passes.PATH, toy_passes.COUNT, toy_passes.FLAKY):
        monkeypatch.setitem(PASSES, spec.name, spec)


def toy_study(tmp_path: Path, **passes) -> dict:
    study = tiny_study(tmp_path, **{"training.epochs": 3, "figures": ["training_curves"]})
    study["passes"] = passes
    return study


def test_registered_passes_at_every_scope(tmp_path, toys):
    study = load_study(write(tmp_path, toy_study(
        tmp_path, toy_scaled={"checkpoints": 2, "scales": [1.0, 3.0]}, toy_path={},
        toy_count={"checkpoints": "last"})))
    outcome = run_study(study, progress=False, log=lambda _: None)
    assert not outcome.failures
    store = open_store(outcome.store_path, mode="r")
    run_dir = Path(study.output) / "runs" / "sgd-seed0"
    paths = list_checkpoints(run_dir)
    assert [p.stem for p in paths] == ["step-00000000", "step-00000001", "step-00000002",
                                       "step-00000003"]
    # Checkpoint scope: every 2nd checkpoint and the last, one result per item.
    frame = store.results_frame("toy_scaled")
    assert list(frame["checkpoint"]) == ["step-00000000"] * 2 + ["step-00000002"] * 2 + [
        "step-00000003"] * 2
    for row in frame.itertuples():
        theta = toy_passes.checkpoint_theta(run_dir / f"{row.checkpoint}.pt")
        scale = float(row.item[1:])
        assert row.norm == pytest.approx(scale * np.linalg.norm(theta), rel=1e-12)
    # Run scope: the path length between consecutive checkpoints, from the files themselves.
    result = store.read_result("runs/sgd-seed0/toy_path")
    thetas = [toy_passes.checkpoint_theta(p) for p in paths]
    np.testing.assert_allclose(result.arrays["step_lengths"],
                               [np.linalg.norm(b - a) for a, b in itertools.pairwise(thetas)])
    assert result.attrs["options"] == {} and result.attrs["invocation"] == outcome.invocation
    # Study scope, its own checkpoint choice.
    assert store.result_attrs("study/toy_count")["n_checkpoints"] == 1
    assert len(store.results_frame("metrics")) == 4  # the implicit pass: every checkpoint
    # Metrics of each target in its child run, of all rows in the parent.
    client = MlflowClient(tracking_uri=study.tracking.uri)
    parent = client.get_run(outcome.mlflow_run_id)
    children = {c.info.run_name: c.data.metrics for c in client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{outcome.mlflow_run_id}'")}
    assert set(children) == {"sgd-seed0/step-00000000", "sgd-seed0/step-00000002",
                             "sgd-seed0/step-00000003", "sgd-seed0"}
    assert children["sgd-seed0/step-00000002"]["toy_max_norm"] == pytest.approx(
        frame[frame["checkpoint"] == "step-00000002"]["norm"].max())
    assert parent.data.metrics["toy_max_norm"] == pytest.approx(frame["norm"].max())
    again = run_study(study, progress=False, log=lambda _: None)
    assert again.computed == 0 and again.skipped == outcome.computed == 4 + 6 + 1 + 1


def test_registry_validates_pass_configs(tmp_path, toys):
    path = write(tmp_path, toy_study(tmp_path, toy_scaled={"scale": [2.0]}))
    with pytest.raises(StudyError, match="passes.toy_scaled.scale: unknown key"):
        load_study(path)
    with pytest.raises(StudyError, match="passes.metrics: unknown key"):  # implicit: not set
        load_study(write(tmp_path, toy_study(tmp_path, metrics={})))
    with pytest.raises(StudyError, match="passes.toy_flaky.markers: Field required"):
        load_study(write(tmp_path, toy_study(tmp_path, toy_flaky={})))


def test_registry_entry_removed_is_an_unknown_pass(tmp_path):
    with pytest.raises(StudyError, match="passes.toy_scaled: unknown key"):
        load_study(write(tmp_path, toy_study(tmp_path, toy_scaled={})))


def test_failed_task_is_reported_and_the_others_stored(tmp_path, toys):
    (tmp_path / "markers").mkdir()
    study = load_study(write(tmp_path, toy_study(
        tmp_path, toy_flaky={"markers": str(tmp_path / "markers"), "always": "step-00000001"},
        toy_scaled={}, toy_count={})))
    outcome = run_study(study, progress=False, log=lambda _: None)
    assert list(outcome.failures) == ["toy_flaky sgd-seed0/step-00000001", "toy_count study"]
    assert "RuntimeError: toy failure at step-00000001" in outcome.failures[
        "toy_flaky sgd-seed0/step-00000001"]
    assert "depends on failed" in outcome.failures["toy_count study"]
    assert "FAILED tasks (2" in outcome.report()
    store = open_store(outcome.store_path, mode="r")
    assert len(store.results_frame("toy_flaky")) == 3 and len(store.results_frame(
        "toy_scaled")) == 8 and outcome.metrics["tasks_failed"] == 2


def test_options_changed_since_stored_stop_before_running(tmp_path, toys):
    study = toy_study(tmp_path, toy_scaled={"checkpoints": "last"})
    run_study(load_study(write(tmp_path, study)), progress=False, log=lambda _: None)
    study["passes"]["toy_scaled"]["scales"] = [1.0, 2.0, 5.0]
    with pytest.raises(StudyError, match="toy_scaled/x1 .* computed with other options"):
        run_study(load_study(write(tmp_path, study)), progress=False, log=lambda _: None)


def test_shipped_study_passes_are_registered():
    root = Path(__file__).resolve().parents[1] / "studies"
    for f in root.glob("*.yaml"):
        names = set(yaml.safe_load(f.read_text()).get("passes") or {})
        assert names <= {n for n, s in PASSES.items() if not s.implicit}, f
