"""The surface passes and the generalization pass in a study: interpolation between paired runs
(study scope), the slice at each final checkpoint, the trajectory plane of each run (run scope),
and Kendall τ of the stored measures against the gap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from landscape.checkpoints import load_checkpoint
from landscape.passes.generalization import final_measures
from landscape.passes.surface import match_pairs
from landscape.rank_correlation import kendall_table
from landscape.store import Store, open_store
from landscape.study import StudyError, load_study, run_study
from landscape.study.comparisons import sharper
from tests.test_study import tiny_study, write

SMALL, FULL = "sgd-seed{s}-batch20", "sgd-seed{s}"


def surface_study(tmp_path: Path) -> dict:
    study = tiny_study(tmp_path, **{"training.batch_sizes": [20, None], "training.seeds": [0, 1],
                                    "figures": []})
    study["passes"] = {
        "flatness": {"l2": 0.01, "measures": [{"kind": "lambda_max"}, {"kind": "trace"}]},
        "interpolation": {"pairs": [[SMALL, FULL]], "n_alphas": 4},  # α = −1, 0, 1, 2
        "slice": {"resolution": 3, "extent": 0.5},
        "trajectory": {"resolution": 3, "checkpoints": "all"},
        "generalization": {"n_resamples": 200}}
    return study


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("surface")
    study = load_study(write(tmp_path, surface_study(tmp_path)))
    return study, run_study(study, progress=False, log=lambda _: None)


def _last(study, run: str) -> Path:
    return max((Path(study.output) / "runs" / run).glob("*.pt"),
               key=lambda p: load_checkpoint(p).step)


def test_interpolation_lives_with_the_study_and_hits_both_checkpoints(outcome):
    study, result = outcome
    assert not result.failures
    store = open_store(result.store_path, mode="r")
    for seed in (0, 1):
        a, b = SMALL.format(s=seed), FULL.format(s=seed)
        line = store.read_result(Store.key(None, None, "interpolation", f"{a}~{b}"))
        np.testing.assert_allclose(line.arrays["alpha"], [-1, 0, 1, 2])
        assert (line.attrs["run_a"], line.attrs["run_b"]) == (a, b)
        for alpha, run in ((1, a), (2, b)):
            metrics = load_checkpoint(_last(study, run)).metrics
            for name in ("train_loss", "test_loss", "train_error", "test_error"):
                assert line.arrays[name][alpha] == pytest.approx(metrics[name], rel=1e-5)


def test_slice_and_trajectory_planes(outcome):
    study, result = outcome
    store = open_store(result.store_path, mode="r")
    run = SMALL.format(s=0)
    last = _last(study, run)
    sliced = store.read_result(Store.key(run, last.stem, "slice"))
    assert sliced.arrays["train_loss"].shape == (3, 3) and "test_loss" not in sliced.arrays
    assert sliced.arrays["train_loss"][1, 1] == pytest.approx(
        load_checkpoint(last).metrics["train_loss"], rel=1e-5)  # the centre is θ*
    assert sliced.attrs["zeroed"] == ["1.bias", "3.bias"] and sliced.attrs["normalisation"] == (
        "filter")
    assert sliced.attrs["direction_norms"][0] == pytest.approx(
        np.sqrt(sliced.attrs["theta_norm"] ** 2 - _bias_norm_sq(last)), rel=1e-9)

    plane = store.read_result(Store.key(run, None, "trajectory"))
    steps = sorted(load_checkpoint(p).step for p in (Path(study.output) / "runs" / run).glob(
        "*.pt"))
    assert plane.arrays["steps"].tolist() == steps
    coords, x, y = plane.arrays["coords"], plane.arrays["x"], plane.arrays["y"]
    assert coords.shape == (len(steps), 2) and np.all(coords[-1] == 0)
    assert x.min() < coords[:, 0].min() and coords[:, 0].max() < x.max()
    assert y.min() < coords[:, 1].min() and coords[:, 1].max() < y.max()
    ratio = plane.arrays["explained_variance_ratio"]
    assert np.all(ratio > 0) and ratio.sum() <= 1 + 1e-12 and ratio[0] >= ratio[1]


def _bias_norm_sq(path: Path) -> float:
    """‖bias parts of θ‖²: filter normalisation gives every weight filter θ's filter norm, so a
    direction's norm² is ‖θ‖² minus the (zeroed) biases'."""
    state = load_checkpoint(path).state_dict
    return float(sum(v.double().pow(2).sum() for k, v in state.items() if k.endswith("bias")))


def test_generalization_pass_is_kendall_tau_of_the_final_measures(outcome):
    study, result = outcome
    store = open_store(result.store_path, mode="r")
    tau = store.read_result(Store.key(None, None, "generalization"))
    models = final_measures(store.measures())
    assert models.groupby("measure")["run"].nunique().to_dict() == {"lambda_max": 4, "trace": 4}
    table = kendall_table(models, gap="gap_error", group_by=("seed",), n_resamples=200)
    assert tau.attrs["measures"] == table["measure"].tolist() == ["lambda_max", "trace"]
    for column in ("tau", "low", "high", "p_value", "tau_within"):
        np.testing.assert_allclose(tau.arrays[column], table[column], equal_nan=True)
    client = MlflowClient(tracking_uri=study.tracking.uri)
    logged = client.get_run(result.mlflow_run_id).data.metrics
    assert logged["kendall_tau_lambda_max"] == pytest.approx(table.loc[0, "tau"])


def test_rerun_skips_surfaces_and_recomputes_tau(outcome, tmp_path):
    study, first = outcome
    again = run_study(study, progress=False, log=lambda _: None)
    assert not again.failures and again.computed == 1  # the generalization pass only
    assert again.skipped >= first.computed - 1


def test_pairs_that_match_nothing_are_refused(tmp_path):
    study = surface_study(tmp_path)
    study["passes"] = {"interpolation": {"pairs": [["adam-seed{s}", "sgd-seed{s}"]]}}
    with pytest.raises(StudyError, match="matches no two runs"):
        run_study(load_study(write(tmp_path, study)), progress=False, log=lambda _: None)
    with pytest.raises(ValueError, match="placeholders the first does not define"):
        match_pairs(["a0", "b0"], [("a0", "b{s}")])



def test_report_compares_each_pair_and_prints_the_tau_table(outcome):
    _, result = outcome
    store = open_store(result.store_path, mode="r")
    models = final_measures(store.measures()).set_index(["run", "measure"])
    table = result.sharpness
    assert len(table) == 2 * 2 and set(table["measure"]) == {"lambda_max", "trace"}
    for row in table.itertuples():
        assert row.value_a == models.loc[(row.run_a, row.measure), "value"]
        assert row.value_b == models.loc[(row.run_b, row.measure), "value"]
        assert row.b_sharper == (row.value_b > row.value_a)
        assert row.test_error_b == models.loc[(row.run_b, row.measure), "test_error"]
    text = result.report()
    assert "sharp vs flat over 2 interpolation pairs" in text
    sharper = int(table[table["measure"] == "lambda_max"]["b_sharper"].sum())
    assert f"lambda_max  b sharper in {sharper} of 2" in text
    assert "Kendall τ of each measure against gap_error over 4 models" in text
    assert "critical-point searches" not in text  # no critical pass in this study


def test_orientation_of_flatness_measures():
    assert sharper("trace", 2.0, 1.0) and not sharper("trace", 1.0, 1.0)
    for flat_when_large in ("near_zero_fraction", "pac_bayes_sigma",
                            "local_entropy_laplace_gamma10"):
        assert sharper(flat_when_large, 1.0, 2.0) and not sharper(flat_when_large, 2.0, 1.0)


def test_runs_stopped_by_the_cap_are_named_and_can_be_left_out(tmp_path):
    study = tiny_study(tmp_path, **{"training.seeds": [0, 1, 2], "training.target_train_loss":
                                    1e-3, "figures": []})
    study["passes"] = {"flatness": {"measures": [{"kind": "lambda_max"}]},
                       "generalization": {"max_train_loss": 1e-3, "n_resamples": 50}}
    result = run_study(load_study(write(tmp_path, study)), progress=False, log=lambda _: None)
    assert set(result.short_of_target) == {"sgd-seed0", "sgd-seed1", "sgd-seed2"}
    assert all(loss > 1e-3 for loss in result.short_of_target.values())
    assert "stopped by the epoch cap above the target training loss (3)" in result.report()
    table, attrs = result.kendall
    assert attrs["n_models"] == 0 and table.empty
