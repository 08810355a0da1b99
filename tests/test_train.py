"""Training: the checkpoint schedule, determinism under a seed, loss decrease."""

from __future__ import annotations

import pytest
import torch

from landscape.checkpoints import list_checkpoints, load_checkpoint
from landscape.train import TrainConfig, checkpoint_steps, train


def test_checkpoint_schedule():
    assert checkpoint_steps(10, 3, 1, 0) == {10, 20, 30}
    steps = checkpoint_steps(100, 4, 2, 3)
    assert {200, 400} <= steps and {1} <= steps and max(s for s in steps if s < 200) < 200
    assert len(steps) == 2 + 3
    # full batch (one step per epoch): the early saves fall before the first regular one
    assert checkpoint_steps(1, 300, 50, 3) == {1, 4, 14, 50, 100, 150, 200, 250, 300}
    assert checkpoint_steps(1, 5, 1, 3) == {1, 2, 3, 4, 5}


def test_training_is_deterministic_and_lowers_the_loss(tmp_path):
    config = TrainConfig(model="mlp:16:tanh", optimizer="adam", hparams={"lr": 1e-2},
                         epochs=3, batch_size=128, n_train=512, seed=1)
    a = train(config, tmp_path / "a", progress=False)
    b = train(config, tmp_path / "b", progress=False)
    first, last = load_checkpoint(a[0]), load_checkpoint(a[-1])
    assert last.metrics["train_loss"] < 0.7 * first.metrics["train_loss"]
    assert all(torch.equal(x, y) for x, y in zip(last.state_dict.values(),
                                                 load_checkpoint(b[-1]).state_dict.values()))
    assert [p.name for p in a] == [p.name for p in list_checkpoints(tmp_path / "a")]


def test_training_stops_at_the_target_training_loss(tmp_path):
    base = {"dataset": {"name": "digits", "n_train": 200, "n_test": 50},
            "model": "mlp:16:tanh", "optimizer": "adam", "hparams": {"lr": 1e-2}, "epochs": 30,
            "batch_size": 50, "seed": 0}
    full = [load_checkpoint(p) for p in train(TrainConfig(**base), tmp_path / "full",
                                             progress=False)]
    target = 0.5 * (full[0].metrics["train_loss"] + full[-1].metrics["train_loss"])
    stopped = [load_checkpoint(p) for p in train(TrainConfig(**base, target_train_loss=target),
                                                tmp_path / "stop", progress=False)]
    last = stopped[-1]
    assert last.metrics["train_loss"] <= target < stopped[-2].metrics["train_loss"]
    # The same run as the uncapped one up to the epoch where it first reached the target.
    reached = min(c.epoch for c in full if c.metrics["train_loss"] <= target)
    assert last.epoch == reached < full[-1].epoch
    same = next(c for c in full if c.step == last.step)
    assert same.metrics == last.metrics
    with pytest.raises(ValueError, match="target_train_loss must be positive"):
        TrainConfig(**base, target_train_loss=0.0)
