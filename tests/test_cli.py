"""The landscape command end to end on tiny settings."""

from __future__ import annotations

from typer.testing import CliRunner

from landscape.checkpoints import list_checkpoints, load_checkpoint
from landscape.cli import app
from landscape.critical import STATUSES

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
