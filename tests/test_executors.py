"""Studies on Ray (a local instance, 2 CPUs): the same store as in-process, retries of a task
that fails once, and a task that always fails reported by name while every other result is
stored."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import torch

from landscape.passes import PASSES
from landscape.store import diff_stores, open_store
from landscape.study import load_study, run_study
from landscape.study.executors import RayExecutor
from tests import toy_passes
from tests.test_study import tiny_study, write

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def local_ray():
    # Workers import ``tests.toy_passes`` from the checkout; one thread each, as in-process below.
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


@pytest.fixture
def toys(monkeypatch):
    for spec in (toy_passes.SCALED, toy_passes.FLAKY):
        monkeypatch.setitem(PASSES, spec.name, spec)


def test_ray_gives_the_local_store(tmp_path, local_ray, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # Ray tasks run single-threaded: same reductions, same bits
    try:
        stores = {}
        for executor in ("local", "ray"):
            (tmp_path / executor).mkdir()
            study = tiny_study(tmp_path / executor, **{  # pinned HVPs: the same bits
                "passes.critical.per_radius": 1, "tracking.enabled": False,
                "passes.critical.hvp_mode": "rev-rev", "passes.spectrum.hvp_mode": "rev-rev"})
            outcome = run_study(load_study(write(tmp_path / executor, study)), progress=False,
                                log=lambda _: None, executor=executor)
            assert not outcome.failures and outcome.computed == 3 + 1 + 2
            stores[executor] = open_store(outcome.store_path, mode="r")
    finally:
        torch.set_num_threads(threads)
    assert len(list(stores["ray"].iter_results())) == 6
    assert diff_stores(stores["local"], stores["ray"],
                       ignore=("invocation", "wall_time", "path")) == []
    assert stores["ray"].study_attrs()["executor"] == "ray"
    for name in ("spectrum", "critical"):  # the pinned mode is recorded with each result
        key = next(stores["ray"].iter_results(name))
        assert set(stores["ray"].read_result(key).attrs["hvp_modes"].values()) == {"rev-rev"}


def test_ray_retries_a_task_that_fails_once(tmp_path, local_ray, toys):
    (tmp_path / "markers").mkdir()
    study = tiny_study(tmp_path, **{"training.epochs": 3, "figures": [],
                                    "tracking.enabled": False})
    study["passes"] = {"toy_flaky": {"markers": str(tmp_path / "markers"), "fail_once": True}}
    outcome = run_study(load_study(write(tmp_path, study)), progress=False, log=lambda _: None,
                        executor=RayExecutor(max_retries=1))
    assert outcome.failures == {}
    rows = open_store(outcome.store_path, mode="r").results_frame("toy_flaky")
    assert len(rows) == 4 and rows["attempted_before"].all()  # each stored by its second try


def test_ray_reports_a_task_that_always_fails(tmp_path, local_ray, toys):
    (tmp_path / "markers").mkdir()
    study = tiny_study(tmp_path, **{"training.epochs": 3, "figures": [],
                                    "tracking.enabled": False})
    study["passes"] = {"toy_flaky": {"markers": str(tmp_path / "markers"),
                                     "always": "step-00000002"},
                       "toy_scaled": {}}
    logged = []
    outcome = run_study(load_study(write(tmp_path, study)), progress=False, log=logged.append,
                        executor=RayExecutor(max_retries=1))
    name = "toy_flaky sgd-seed0/step-00000002"
    assert list(outcome.failures) == [name]
    assert "toy failure at step-00000002" in outcome.failures[name]
    assert any(name in line and "2 attempt" in line for line in logged)
    store = open_store(outcome.store_path, mode="r")
    assert sorted(store.results_frame("toy_flaky")["checkpoint"]) == [
        "step-00000000", "step-00000001", "step-00000003"]
    assert len(store.results_frame("toy_scaled")) == 8
    assert len(store.results_frame("metrics")) == 4
