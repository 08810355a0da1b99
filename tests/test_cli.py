"""The landscape command end to end on tiny settings."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from landscape.checkpoints import list_checkpoints, load_checkpoint
from landscape.cli import app
from landscape.critical import STATUSES
from landscape.optim import OPTIMIZERS

runner = CliRunner()


def test_help_lists_commands_and_optimizers():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "spectrum", "critical", "bench"):
        assert command in result.output
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0 and "momentum" in result.output and "adam" in result.output


def test_train_then_spectrum_and_critical(tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--out", str(run), "--model", "mlp:4:tanh",
                                 "--epochs", "3", "--n-train", "100", "--no-progress"])
    assert result.exit_code == 0, result.output
    paths = list_checkpoints(run)
    assert len(paths) == 4 and load_checkpoint(paths[-1]).step == 3
    result = runner.invoke(app, ["spectrum", str(run), "--n-samples", "100", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    assert "index α (dense)" in result.output and "trace (Hutch++)" in result.output
    result = runner.invoke(app, ["critical", str(paths[-1]), "--n-samples", "100", "--l2", "0.1",
                                 "--max-iterations", "30"])
    assert result.exit_code == 0, result.output
    assert "critical-point searches" in result.output
    assert any(status in result.output for status in STATUSES)


def test_bad_optimizer_is_reported():
    result = runner.invoke(app, ["train", "--out", "x", "--optimizer", "lbfgs-magic"])
    assert result.exit_code != 0
    assert "lbfgs-magic" in str(result.exception)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_train_digits_mlp_with_every_optimizer(tmp_path, optimizer):
    result = runner.invoke(app, ["train", "--dataset", "digits", "--model", "mlp:6:tanh",
                                 "--optimizer", optimizer, "--epochs", "3", "--n-train", "200",
                                 "--out", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(list_checkpoints(tmp_path)[-1])
    assert ckpt.step == 3 and ckpt.model_spec["kind"] == "mlp"
    assert ckpt.optimizer["name"] == optimizer
    assert set(ckpt.metrics) >= {"train_loss", "test_loss", "train_error", "test_error"}


def test_train_help_names_every_optimizer():
    result = runner.invoke(app, ["train", "--help"], terminal_width=400, env={"COLUMNS": "400"})
    flat = " ".join(result.output.split())
    assert all(name in flat for name in OPTIMIZERS)


def test_tracked_training_logs_curves(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = runner.invoke(app, ["train", "--model", "mlp:4:tanh", "--epochs", "3",
                                 "--n-train", "100", "--out", str(tmp_path / "run"),
                                 "--no-progress", "--track", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    history = client.get_metric_history(run.info.run_id, "train_loss")
    saved = [load_checkpoint(p) for p in list_checkpoints(tmp_path / "run")]
    assert sorted(m.step for m in history) == [c.step for c in saved]
    by_step = {m.step: m.value for m in history}
    assert all(by_step[c.step] == pytest.approx(c.metrics["train_loss"]) for c in saved)


@pytest.mark.parametrize("args, words", [
    (["--executor", "dask"], "choose one of local, ray"),
    (["--address", "127.0.0.1:6379"], "--address needs --executor ray"),
    (["--device", "tpu"], "device must be"),
])
def test_study_run_rejects_bad_options_before_running(tmp_path, args, words):
    result = runner.invoke(app, ["study", "run", "studies/dauphin2014.yaml", "--set",
                                 f"output={tmp_path / 'out'}", *args], terminal_width=200)
    assert result.exit_code == 2
    assert words in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_study_run_exits_1_when_a_task_failed(tmp_path, monkeypatch):
    from landscape.passes import PASSES
    from tests import toy_passes
    from tests.test_study import tiny_study, write

    monkeypatch.setitem(PASSES, "toy_flaky", toy_passes.FLAKY)
    study = tiny_study(tmp_path, **{"figures": [], "tracking.enabled": False})
    study["passes"] = {"toy_flaky": {"markers": str(tmp_path), "always": "step-00000002"}}
    result = runner.invoke(app, ["study", "run", str(write(tmp_path, study)), "--no-progress"],
                           terminal_width=200)
    assert result.exit_code == 1, result.output
    assert "FAILED tasks (1" in result.output and "toy_flaky sgd-seed0/step-00000002" in (
        result.output)


def test_diff_compares_two_stores(tmp_path):
    import numpy as np

    from landscape.store import open_store

    stores = [open_store(tmp_path / f"{name}.zarr") for name in "ab"]
    for store in stores:
        store.write_result(store.key("r", "c", "spectrum"), {"flatness": np.ones(3)},
                           {"loss": 1.0, "invocation": store.path.stem})
    same = runner.invoke(app, ["diff", *(str(s.path) for s in stores)])
    assert same.exit_code == 0 and "0 differences (1 results" in same.output
    stores[1].write_result(stores[1].key("r", "c", "spectrum"), {"g": np.ones(3)},
                           {"loss": 2.0}, overwrite=True)
    changed = runner.invoke(app, ["diff", *(str(s.path) for s in stores), "--rename",
                                  "flatness=g"], terminal_width=200)
    assert changed.exit_code == 1
    assert "attribute loss: 1.0 vs 2.0" in changed.output and "arrays" not in changed.output
