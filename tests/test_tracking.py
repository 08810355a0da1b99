"""MLflow tracking: default location, nested runs read back, unreachable servers, a real server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from landscape.tracking import (
    Tracker,
    TrackingUnavailableWarning,
    default_tracking_uri,
    flatten_params,
    ui_command,
)


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory) -> Path:
    """An empty MLflow database with its schema migrations done (they take ~2 s per database)."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tmp_cwd(tmp_path, monkeypatch, migrated_db):
    """A fresh working directory whose ./mlruns/mlflow.db is a copy of the migrated template."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "mlruns").mkdir()
    shutil.copy(migrated_db, tmp_path / "mlruns" / "mlflow.db")
    return tmp_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def figure() -> Figure:
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    return fig


def test_default_uri_is_sqlite_in_mlruns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = default_tracking_uri()
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    assert (tmp_path / "mlruns").is_dir()
    command = ui_command(uri)
    assert command.startswith("mlflow ui --backend-store-uri sqlite:///")
    assert "--default-artifact-root" in command and "mlruns/artifacts" in command
    assert "in a browser" in ui_command("http://127.0.0.1:5000")


def test_env_var_overrides_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert default_tracking_uri() == uri
    with pytest.warns(TrackingUnavailableWarning, match=uri):
        assert Tracker("exp").tracking_uri == uri
    assert not (tmp_path / "mlruns").exists()


def test_flatten_params_dots_and_truncates():
    flat = flatten_params({"optim": {"name": "sgd", "lr": 0.1, "sched": {"gamma": 0.5}},
                           "sizes": [4, 2], "empty": {}, "long": "x" * 7000})
    assert flat["optim.name"] == "sgd" and flat["optim.lr"] == "0.1"
    assert flat["optim.sched.gamma"] == "0.5" and flat["sizes"] == "[4, 2]"
    assert flat["empty"] == "{}"
    assert len(flat["long"]) == 6000 and flat["long"].endswith("…")


def test_parent_and_child_runs_read_back(tmp_cwd):
    tracker = Tracker("digits")
    assert tracker.enabled
    config = {"model": {"width": 6}, "seed": 0}
    with tracker.study_run("study", params=config, tags={"store": "study.zarr"}) as parent:
        tracker.log_metrics({"wall_time": 1.5})
        children = []
        for step in (100, 200):
            with tracker.child_run(f"step-{step}", params={"checkpoint": step}) as child:
                tracker.log_metrics({"loss": 1.0 / step, "index": np.float64(0.25), "error": None},
                                    step=step)
                tracker.log_figure(figure(), "plots/curve.png")
                tracker.log_dict({"eigenvalues": np.arange(3.0)}, "spectrum.json")
                tracker.set_tag("status", "critical")
                children.append(child)

    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    run = client.get_run(parent)
    assert run.data.params == {"model.width": "6", "seed": "0"}
    assert run.data.tags["store"] == "study.zarr" and run.info.status == "FINISHED"
    assert run.data.metrics == {"wall_time": 1.5}
    for step, child in zip((100, 200), children):
        data = client.get_run(child).data
        assert data.tags["mlflow.parentRunId"] == parent
        assert data.tags["mlflow.runName"] == f"step-{step}" and data.tags["status"] == "critical"
        assert data.params == {"checkpoint": str(step)}
        assert data.metrics == {"loss": 1.0 / step, "index": 0.25}
        assert client.get_metric_history(child, "loss")[0].step == step
        paths = {a.path for a in client.list_artifacts(child)}
        assert paths == {"plots", "spectrum.json"}
        assert [a.path for a in client.list_artifacts(child, "plots")] == ["plots/curve.png"]
    artifacts = tmp_cwd / "mlruns" / "artifacts"
    assert len(list(artifacts.rglob("curve.png"))) == 2


def test_failed_run_is_marked_failed(tmp_cwd):
    tracker = Tracker("digits")
    with pytest.raises(ValueError, match="boom"), tracker.study_run("study") as parent:
        raise ValueError("boom")
    assert MlflowClient(tracking_uri=tracker.tracking_uri).get_run(parent).info.status == "FAILED"


def test_misuse_raises(tmp_cwd):
    tracker = Tracker("digits")
    with pytest.raises(RuntimeError, match="needs an open"):
        tracker.log_metrics({"loss": 1.0})
    with pytest.raises(RuntimeError, match="needs an open study_run"), tracker.child_run("c"):
        pass
    with tracker.study_run("s"), pytest.raises(TypeError, match="matplotlib Figure"):
        tracker.log_figure("not a figure", "x.png")


def test_unreachable_server_warns_once_and_disables(tmp_cwd):
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = Tracker("digits", tracking_uri=uri)
        with tracker.study_run("study", params={"a": 1}) as parent, \
                tracker.child_run("child") as child:
            tracker.log_metrics({"loss": 1.0}, step=1)
            tracker.log_figure(figure(), "f.png")
            tracker.log_dict({"a": 1}, "a.json")
            tracker.set_tag("k", "v")
    assert time.perf_counter() - start < 10
    relevant = [w for w in caught if issubclass(w.category, TrackingUnavailableWarning)]
    assert len(relevant) == 1
    assert uri in str(relevant[0].message) and "Zarr store" in str(relevant[0].message)
    assert not tracker.enabled and parent is None and child is None


def test_failure_after_start_disables(tmp_cwd, monkeypatch):
    tracker = Tracker("digits")

    def broken(*args, **kwargs):
        raise ConnectionError("server went away")

    with tracker.study_run("study"):
        monkeypatch.setattr(tracker._client, "log_batch", broken)
        with pytest.warns(TrackingUnavailableWarning, match="server went away"):
            tracker.log_metrics({"loss": 1.0})
        tracker.log_metrics({"loss": 2.0})
    assert not tracker.enabled


@pytest.mark.slow
def test_real_server(tmp_path):
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("mlflow server did not answer /health within 30 s")
                time.sleep(0.5)
        tracker = Tracker("served", tracking_uri=uri)
        assert tracker.enabled
        with tracker.study_run("study", params={"a": {"b": 1}}) as run_id:
            tracker.log_metrics({"loss": 0.5})
            tracker.log_figure(figure(), "f.png")
        run = MlflowClient(tracking_uri=uri).get_run(run_id)
        assert run.data.params == {"a.b": "1"} and run.data.metrics == {"loss": 0.5}
        assert [a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(run_id)] == ["f.png"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_disabled_tracker_touches_nothing(tmp_path, monkeypatch, recwarn):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = Tracker("exp", enabled=False)
    with tracker.study_run("study") as run_id, tracker.child_run("child") as child_id:
        tracker.log_metrics({"x": 1.0})
        tracker.log_figure(figure(), "f.png")
    assert (run_id, child_id, tracker.enabled) == (None, None, False)
    assert not (tmp_path / "mlruns").exists()
    assert not [w for w in recwarn if issubclass(w.category, TrackingUnavailableWarning)]
