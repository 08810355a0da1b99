"""The Zarr store: round trips, the ``complete`` protocol, resume, queries and concurrent writers."""

from __future__ import annotations

import json
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import zarr

from landscape.passes.critical import COLUMNS as CRITICAL_COLUMNS
from landscape.store import (
    SCHEMA_VERSION,
    IncompleteResultError,
    SchemaVersionError,
    Store,
    diff_stores,
    json_safe,
    open_store,
    parse_key,
    provenance,
)


@pytest.fixture
def store(tmp_path) -> Store:
    return open_store(tmp_path / "study.zarr")


def arrays() -> dict[str, np.ndarray]:
    return {"eigenvalues": np.linspace(-1.0, 2.0, 7), "counts": np.arange(6).reshape(2, 3),
            "mask": np.array([True, False, True]), "loss": np.float64(0.25)}


def critical_attrs(status: str, loss: float, index: float, **extra) -> dict:
    return {"status": status, "loss": loss, "error": 0.1, "index": index, "grad_norm": 1e-10,
            "method": "levenberg-marquardt", "n_negative": 2, **extra}


def test_key_validates_names(store):
    assert store.key("r", "c", "spectrum") == "runs/r/checkpoints/c/spectrum"
    assert store.key("r", "c", "critical", "start-0007") == "runs/r/checkpoints/c/critical/start-0007"
    assert parse_key("runs/r/checkpoints/c/critical/start-0007") == ("r", "c", "critical",
                                                                     "start-0007")
    for bad in ("", "a/b", "__x"):
        with pytest.raises(ValueError, match="run"):
            store.key(bad, "c", "p")
    for bad in ("runs/r/checkpoints/p", "runs/r/checkpoints/c", "study", "runs/r/a/b/c/d/e",
                "other/p"):
        with pytest.raises(ValueError, match="not a result key"):
            parse_key(bad)


def test_three_scopes(store):
    assert store.key(None, None, "comparison") == "study/comparison"
    assert store.key("r", None, "pca", "plane-0") == "runs/r/pca/plane-0"
    assert parse_key("study/comparison/sgd-vs-adam") == (None, None, "comparison", "sgd-vs-adam")
    assert parse_key("runs/r/pca") == ("r", None, "pca", None)
    with pytest.raises(ValueError, match="reserved"):
        store.key("r", None, "checkpoints")
    with pytest.raises(ValueError, match="needs its run"):
        store.key(None, "c", "p")
    keys = [store.key("r", "c", "spectrum"), store.key("r", None, "pca"),
            store.key(None, None, "comparison", "a"), store.key("q", None, "pca")]
    for key in keys:
        store.write_result(key, {"x": np.zeros(2)}, {"value": 1.0})
    assert list(store.iter_results()) == ["study/comparison/a", "runs/q/pca", "runs/r/pca",
                                          "runs/r/checkpoints/c/spectrum"]
    frame = store.results_frame("pca")
    assert list(frame["run"]) == ["q", "r"] and frame["checkpoint"].isna().all()
    assert store.results_frame("comparison")["run"].isna().all()
    text = store.summary()
    assert "2 runs, 1 checkpoints, 4 results" in text and "pca: 2 complete" in text


def test_schema_version_stamped_and_old_stores_refused_for_writing(tmp_path):
    assert open_store(tmp_path / "new.zarr").schema_version == SCHEMA_VERSION
    old = tmp_path / "old.zarr"  # schema 1: provenance and results, no schema_version
    root = zarr.open_group(old, mode="w", zarr_format=3)
    root.attrs["landscape_version"] = "0.1.0"
    group = root.create_group("runs/r/checkpoints/c/spectrum", attributes={"complete": True})
    group.create_array("eigenvalues", data=np.arange(3.0), dimension_names=("eigenvalue",))
    with pytest.raises(SchemaVersionError, match="schema version 1.*new output folder"):
        open_store(old)
    readable = open_store(old, mode="r")
    assert readable.schema_version == 1
    assert list(readable.iter_results()) == ["runs/r/checkpoints/c/spectrum"]
    zarr.open_group(tmp_path / "new.zarr", mode="a").attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(SchemaVersionError, match="Upgrade"):
        open_store(tmp_path / "new.zarr", mode="r")


def test_diff_stores(tmp_path):
    a, b = open_store(tmp_path / "a.zarr"), open_store(tmp_path / "b.zarr")
    key = a.key("r", "c", "critical", "000")
    a.write_result(key, {"flatness": np.array([np.nan, 1.0])}, {"loss": 1.0, "invocation": "x",
                                                                "options": {"indices": [1]}})
    b.write_result(key, {"gradient_flatness": np.array([np.nan, 1.0])},
                   {"loss": 1.0, "invocation": "y", "options": {"target_n_negative": [1]}})
    renames = {"flatness": "gradient_flatness", "indices": "target_n_negative"}
    assert diff_stores(a, b, renames=renames) == []
    assert "arrays" in diff_stores(a, b)[0]
    b.write_result(key, {"gradient_flatness": np.array([np.nan, 2.0])}, {"loss": 1.5},
                   overwrite=True)
    b.write_result(b.key("r", None, "pca"), {}, {})
    diffs = diff_stores(a, b, renames=renames)
    assert diffs[0] == f"only in {b.path}: runs/r/pca"
    assert any("arrays differ" in d for d in diffs) and any("loss" in d for d in diffs)


def test_round_trip_arrays_and_attrs(store):
    key = store.key("run-a", "step-100", "spectrum")
    attrs = {"tol": 1e-6, "n_negative": np.int64(3), "seed": 0, "flag": np.bool_(True),
             "thresholds": {"grad_tol": 1e-8}, "shape": (2, 3), "nan": math.nan,
             "vec": np.array([1.0, np.inf])}
    store.write_result(key, arrays(), attrs, dims={"counts": ("row", "col")})
    assert store.is_complete(key)
    result = open_store(store.path, mode="r").read_result(key)
    for name, a in arrays().items():
        assert result.arrays[name].dtype == a.dtype
        np.testing.assert_array_equal(result.arrays[name], a)
    assert result.attrs == {"tol": 1e-6, "n_negative": 3, "seed": 0, "flag": True,
                            "thresholds": {"grad_tol": 1e-8}, "shape": [2, 3], "nan": None,
                            "vec": [1.0, None]}
    # NaN attributes are stored as strict JSON null (zarr-python alone would write `NaN`).
    json.loads((store.path / key / "zarr.json").read_text(),
               parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_dimension_names_default_and_given(store):
    key = store.key("r", "c", "spectrum")
    store.write_result(key, arrays(), {}, dims={"counts": ("row", "col")})
    group = zarr.open_group(store.path, mode="r")[key]
    assert group["counts"].metadata.dimension_names == ("row", "col")
    assert group["eigenvalues"].metadata.dimension_names == ("eigenvalues_dim_0",)
    with pytest.raises(ValueError, match="does not match"):
        store.write_result(store.key("r", "c", "x"), {"a": np.zeros(3)}, {}, dims={"a": ("i", "j")})
    with pytest.raises(ValueError, match="not given"):
        store.write_result(store.key("r", "c", "x"), {"a": np.zeros(3)}, {}, dims={"b": ("i",)})


def test_xarray_opens_a_result(store):
    xr = pytest.importorskip("xarray")
    key = store.key("r", "c", "spectrum")
    store.write_result(key, arrays(), {"tol": 1e-6})
    ds = xr.open_zarr(store.path, group=key, consolidated=False)
    np.testing.assert_array_equal(ds["eigenvalues"].values, arrays()["eigenvalues"])


def test_incomplete_result_is_refused_then_redone(store):
    key = store.key("r", "c", "critical", "start-0000")
    # An interrupted writer: the group and an array exist, the flag was never set.
    group = zarr.open_group(store.path, mode="a").create_group(key)
    group.create_array("theta", data=np.zeros(4), dimension_names=["n"])
    assert not store.is_complete(key)
    assert key in store.iter_results(complete_only=False)
    assert key not in store.iter_results()
    with pytest.raises(IncompleteResultError, match=f"{key}.*incomplete"):
        store.read_result(key)
    store.write_result(key, {"theta": np.ones(3)}, critical_attrs("critical", 0.5, 0.0))
    assert store.is_complete(key)
    np.testing.assert_array_equal(store.read_result(key).arrays["theta"], np.ones(3))


def test_complete_is_written_last(store, monkeypatch):
    key = store.key("r", "c", "spectrum")
    seen = []
    original = zarr.Group.create_array

    def spy(group, name, **kwargs):
        seen.append(store.is_complete(key))
        return original(group, name, **kwargs)

    monkeypatch.setattr(zarr.Group, "create_array", spy)
    store.write_result(key, arrays(), {"tol": 1e-6})
    assert seen == [False] * len(arrays()) and store.is_complete(key)


def test_rewriting_a_complete_result_needs_overwrite(store):
    key = store.key("r", "c", "spectrum")
    store.write_result(key, {"a": np.zeros(2)}, {"v": 1})
    with pytest.raises(FileExistsError, match="already complete"):
        store.write_result(key, {"a": np.ones(2)}, {"v": 2})
    store.write_result(key, {"b": np.ones(2)}, {"v": 2}, overwrite=True)
    result = store.read_result(key)
    assert set(result.arrays) == {"b"} and result.attrs == {"v": 2}


def test_bad_inputs_are_named(store, tmp_path):
    key = store.key("r", "c", "p")
    with pytest.raises(KeyError, match="no result"):
        store.read_result(key)
    with pytest.raises(ValueError, match="reserved"):
        store.write_result(key, {}, {"complete": True})
    with pytest.raises(TypeError, match="object"):
        store.write_result(key, {"a": np.array([None, 1])}, {})
    with pytest.raises(TypeError, match="set"):
        json_safe({"x": {1, 2}})
    store.write_result(key, {"a": np.zeros(1)}, {})
    with pytest.raises(ValueError, match="is a result itself"):
        store.write_result(store.key("r", "c", "p", "item-0"), {"a": np.zeros(1)}, {})
    with pytest.raises(PermissionError, match="read-only"):
        open_store(store.path, mode="r").write_result(key, {}, {}, overwrite=True)
    with pytest.raises(FileNotFoundError):
        open_store(tmp_path / "missing.zarr", mode="r")


def test_iter_results_walks_runs_checkpoints_passes_items(store):
    keys = [store.key("b", "c1", "critical", "start-0001"), store.key("b", "c1", "critical",
            "start-0000"), store.key("a", "c2", "spectrum"), store.key("a", "c1", "spectrum")]
    for key in keys:
        store.write_result(key, {"x": np.zeros(1)}, {})
    assert list(store.iter_results()) == sorted(keys)
    assert list(store.iter_results("spectrum")) == sorted(keys[2:])
    assert store.critical_points().columns[:len(CRITICAL_COLUMNS)].tolist() == list(
        CRITICAL_COLUMNS)  # the store's helper orders columns as the pass does


def test_critical_points_dataframe(store):
    df = store.critical_points()
    assert list(df.columns) == list(CRITICAL_COLUMNS) and df.empty
    store.write_result(store.key("r", "c", "critical", "start-0000"), {"theta": np.zeros(3)},
                       critical_attrs("critical", 0.5, 0.25, start_kind="checkpoint",
                                      thresholds={"grad_tol": 1e-8}))
    store.write_result(store.key("r", "c", "critical", "start-0001"), {"theta": np.zeros(3)},
                       critical_attrs("diverged", math.nan, math.nan, radius=0.1))
    store.write_result(store.key("r", "c", "spectrum"), {"e": np.zeros(3)}, {"status": "other"})
    df = store.critical_points()
    assert list(df.columns[:len(CRITICAL_COLUMNS)]) == list(CRITICAL_COLUMNS)
    assert {"method", "n_negative", "start_kind", "radius"} <= set(df.columns)
    assert "thresholds" not in df.columns and "complete" not in df.columns
    assert list(df["item"]) == ["start-0000", "start-0001"]
    assert list(df["status"]) == ["critical", "diverged"]
    assert df["loss"].iloc[0] == 0.5 and math.isnan(df["loss"].iloc[1])
    assert df["start_kind"].iloc[0] == "checkpoint" and math.isnan(df["radius"].iloc[0])


def test_summary_counts(store):
    store.write_result(store.key("r1", "c1", "critical", "s0"), {}, critical_attrs("critical", 0,
                                                                                   0))
    store.write_result(store.key("r1", "c2", "critical", "s0"), {}, critical_attrs("gradient-flat",
                                                                                   1, 0))
    store.write_result(store.key("r2", "c1", "spectrum"), {"e": np.zeros(2)}, {})
    zarr.open_group(store.path, mode="a")[store.key("r2", "c1", "spectrum")].attrs["complete"] = \
        False
    text = store.summary()
    assert "2 runs" in text and "3 checkpoints" in text and "3 results" in text
    assert "critical: 2 complete, 0 incomplete" in text
    assert "spectrum: 0 complete, 1 incomplete" in text
    assert "by status: critical 1, gradient-flat 1" in text


def test_study_attrs_and_provenance(store):
    record = provenance(seed=3, config={"lr": 0.1}, device="cpu")
    assert {"landscape_version", "git_commit", "python", "torch", "hostname", "time_utc"} <= set(
        record)
    assert record["seed"] == 3
    store.set_study_attrs(record)
    store.set_study_attrs({"dtype": "float64"})
    attrs = open_store(store.path, mode="r").study_attrs()
    assert attrs["config"] == {"lr": 0.1} and attrs["dtype"] == "float64"
    assert attrs["landscape_version"] == record["landscape_version"]


def _write_many(path: str, run: str, n: int) -> list[str]:
    store = open_store(path)
    keys = []
    for i in range(n):
        key = store.key(run, "c", "critical", f"start-{i:04d}")
        store.write_result(key, {"theta": np.full(50, float(i))}, {"status": "critical", "i": i})
        keys.append(key)
    return keys


def test_two_processes_write_different_groups(tmp_path):
    path = str(tmp_path / "study.zarr")
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_write_many, path, run, 10) for run in ("run-a", "run-b")]
        keys = [k for f in futures for k in f.result()]
    store = open_store(path, mode="r")
    assert sorted(store.iter_results()) == sorted(keys)
    assert all(store.read_result(k).attrs["status"] == "critical" for k in keys)
