"""MLflow tracking of a study: one parent run per study invocation, child runs per analysis.

Owns where runs go (``default_tracking_uri``: ``$MLFLOW_TRACKING_URI``, else a SQLite backend in
``./mlruns/mlflow.db`` with artifacts in ``./mlruns/artifacts``; MLflow 3 refuses a plain
``file:./mlruns`` store unless ``MLFLOW_ALLOW_FILE_STORE=true``) and how a study logs to them
(``Tracker``). Tracking is a convenience, never a reason to lose a study: a tracking location that
cannot be reached is detected once at start, reported by one ``TrackingUnavailableWarning``, and
every ``Tracker`` method then does nothing (results still go to the Zarr store). The same happens
if a call fails later (e.g. the server went away).

Takes plain Python values and matplotlib figures; imports ``json_safe`` from the store and
nothing from the numerics or plotting.
"""

from __future__ import annotations

import http.client
import os
import shlex
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

from landscape.store import json_safe

HEALTH_TIMEOUT = 3.0  # seconds to wait for a tracking server's /health at start
# Bounds on MLflow's own HTTP retries (its defaults, 7 retries with exponential back-off and a
# 120 s timeout, can stall a study for minutes); set only if the user has not set them.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}

__all__ = ["Tracker", "TrackingUnavailableWarning", "default_tracking_uri", "flatten_params",
           "ui_command"]


class TrackingUnavailableWarning(RuntimeWarning):
    """MLflow tracking is off for this study; results are still written to the store."""


def default_tracking_uri(root: str | Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<root>/mlruns/mlflow.db`` (root: cwd).

    Creates ``<root>/mlruns/`` in the second case.
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    folder = Path(root or Path.cwd()).resolve() / "mlruns"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def _sqlite_artifact_root(tracking_uri: str) -> Path | None:
    """``<folder of the database>/artifacts`` for a file-backed SQLite URI, else None."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or tracking_uri[len(prefix):] in ("", ":memory:"):
        return None
    return Path(tracking_uri[len(prefix):]).resolve().parent / "artifacts"


def ui_command(tracking_uri: str) -> str:
    """The command (or, for a tracking server, the address) to show a user to browse the runs."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri} in a browser"
    command = f"mlflow ui --backend-store-uri {shlex.quote(tracking_uri)}"
    artifacts = _sqlite_artifact_root(tracking_uri)
    if artifacts is not None:
        command += f" --default-artifact-root {shlex.quote(artifacts.as_uri())}"
    return command


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts → dotted keys (``{"optim": {"lr": 0.1}}`` → ``{"optim.lr": "0.1"}``).

    Values are stringified and cut to MLflow's limit (``MAX_PARAM_VAL_LENGTH``, 6000 characters),
    the cut marked by a trailing ``…``.
    """
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = _truncate(str(value), MAX_PARAM_VAL_LENGTH)
    return flat


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _unreachable(tracking_uri: str, timeout: float) -> str | None:
    """Why an http(s) tracking server does not answer ``/health``, or None if it does (or if the
    URI is not http(s): those are checked by opening the experiment)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return None if response.status == 200 else f"{url} answered HTTP {response.status}"
    except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, timeout, DNS, …
        return f"{url} did not answer: {exc}"


def _as_figure(fig: Any) -> Figure:
    if isinstance(fig, Figure):
        return fig
    if isinstance(getattr(fig, "figure", None), Figure):  # seaborn FacetGrid / JointGrid
        return fig.figure
    raise TypeError(f"expected a matplotlib Figure or a seaborn grid; got {type(fig).__name__}")


class Tracker:
    """Logs a study to MLflow: ``study_run`` (parent) ⊃ ``child_run`` (per checkpoint analysis).

    ``tracking_uri`` defaults to ``default_tracking_uri()``. The experiment is created on first use;
    with a SQLite backend its artifacts go to ``artifacts/`` beside the database. For an http(s)
    server, ``/health`` is asked once (``HEALTH_TIMEOUT`` seconds) and ``HTTP_DEFAULTS`` are put in
    the environment where unset (a stated side effect: MLflow reads its retry settings from there).

    If tracking is unavailable, ``enabled`` is False, one ``TrackingUnavailableWarning`` says so,
    and every method does nothing (the run context managers yield None). ``enabled=False`` turns
    tracking off silently (nothing is contacted or created).

    Example::

        tracker = Tracker("digits-mlp")
        with tracker.study_run("sweep", params=config, tags={"store": str(store.path)}):
            with tracker.child_run("run-0/step-100", params={"checkpoint": "step-100"}):
                tracker.log_metrics({"loss": 0.12, "index": 0.0})
                tracker.log_figure(fig, "epsilon_alpha.png")
    """

    def __init__(self, experiment: str, tracking_uri: str | None = None, *, enabled: bool = True):
        if not experiment:
            raise ValueError(f"experiment must be a non-empty name; got {experiment!r}")
        self.experiment = experiment
        self.tracking_uri = tracking_uri or (default_tracking_uri() if enabled else "")
        self.enabled = enabled
        self.experiment_id: str | None = None
        self._warned = False
        self._runs: list[str | None] = []
        self._client: MlflowClient | None = None
        if not enabled:
            return
        if self.tracking_uri.startswith(("http://", "https://")):
            for name, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(name, value)
        problem = _unreachable(self.tracking_uri, HEALTH_TIMEOUT)
        if problem is not None:
            self._disable(problem)
        else:
            self.experiment_id = self._call(self._open_experiment)

    @property
    def active_run_id(self) -> str | None:
        """Id of the innermost open run (None outside runs or when disabled)."""
        return self._runs[-1] if self._runs else None

    def _disable(self, reason: str) -> None:
        self.enabled = False
        if not self._warned:
            self._warned = True
            warnings.warn(f"MLflow tracking at {self.tracking_uri} is unavailable ({reason}); "
                          f"tracking is off for this study, results still go to the Zarr store.",
                          TrackingUnavailableWarning, stacklevel=3)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` if enabled; any failure disables tracking instead of raising."""
        if not self.enabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 — tracking must never stop a study
            self._disable(f"{type(exc).__name__}: {exc}")
            return None

    def _open_experiment(self) -> str:
        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        found = self._client.get_experiment_by_name(self.experiment)
        if found is None:
            artifacts = _sqlite_artifact_root(self.tracking_uri)
            return self._client.create_experiment(
                self.experiment, artifact_location=artifacts.as_uri() if artifacts else None)
        if found.lifecycle_stage == "deleted":
            self._client.restore_experiment(found.experiment_id)
        return found.experiment_id

    def _start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, Any],
               parent: str | None) -> str:
        tags = {k: _truncate(str(v), MAX_TAG_VAL_LENGTH) for k, v in tags.items()}
        if parent is not None:
            tags[MLFLOW_PARENT_RUN_ID] = parent
        run_id = self._client.create_run(self.experiment_id, run_name=run_name,
                                         tags=tags).info.run_id
        flat = [Param(k, v) for k, v in flatten_params(params).items()]
        if flat:
            self._client.log_batch(run_id, params=flat)
        return run_id

    @contextmanager
    def _run(self, run_name: str, params: Mapping[str, Any] | None,
             tags: Mapping[str, Any] | None, parent: str | None) -> Iterator[str | None]:
        run_id = self._call(self._start, run_name, params or {}, tags or {}, parent)
        self._runs.append(run_id)
        status = "FAILED"
        try:
            yield run_id
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            self._runs.pop()
            if run_id is not None:
                self._call(self._client.set_terminated, run_id, status)

    @contextmanager
    def study_run(self, run_name: str, params: Mapping[str, Any] | None = None,
                  tags: Mapping[str, Any] | None = None) -> Iterator[str | None]:
        """Parent run of one study invocation; yields its run id (None when disabled).

        ``params`` (the config, nested dicts allowed) are flattened by ``flatten_params``. The run
        ends FINISHED, FAILED on an exception, KILLED on Ctrl-C.
        """
        if self._runs:
            raise RuntimeError(f"study_run {run_name!r} opened inside another run; "
                               f"use child_run for nested runs")
        with self._run(run_name, params, tags, parent=None) as run_id:
            yield run_id

    @contextmanager
    def child_run(self, run_name: str, params: Mapping[str, Any] | None = None,
                  tags: Mapping[str, Any] | None = None) -> Iterator[str | None]:
        """Run nested in the innermost open run (tag ``mlflow.parentRunId``); yields its id."""
        if not self._runs:
            raise RuntimeError(f"child_run {run_name!r} needs an open study_run")
        with self._run(run_name, params, tags, parent=self.active_run_id) as run_id:
            yield run_id

    def _require_run(self, what: str) -> str | None:
        if not self._runs:
            raise RuntimeError(f"{what} needs an open study_run or child_run")
        return self.active_run_id

    def log_metrics(self, metrics: Mapping[str, float | None], step: int | None = None) -> None:
        """Log numeric metrics to the innermost run; None values are skipped."""
        run_id = self._require_run("log_metrics")
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        if run_id is not None and batch:
            self._call(self._client.log_batch, run_id, metrics=batch)

    def log_figure(self, fig: Any, artifact_file: str) -> None:
        """Save a matplotlib Figure (or a seaborn grid's ``.figure``) as an artifact of the run."""
        figure = _as_figure(fig)
        run_id = self._require_run("log_figure")
        if run_id is not None:
            self._call(self._client.log_figure, run_id, figure, artifact_file)

    def log_dict(self, dictionary: Mapping[str, Any], artifact_file: str) -> None:
        """Save a dict (made JSON-safe) as a JSON or YAML artifact (by ``artifact_file``'s suffix)."""
        run_id = self._require_run("log_dict")
        if run_id is not None:
            self._call(self._client.log_dict, run_id, json_safe(dict(dictionary)), artifact_file)

    def set_tag(self, key: str, value: Any) -> None:
        """Set a tag (stringified, cut to MLflow's limit) on the innermost run."""
        run_id = self._require_run("set_tag")
        if run_id is not None:
            self._call(self._client.set_tag, run_id, key,
                       _truncate(str(value), MAX_TAG_VAL_LENGTH))
