"""Training: the checkpoint schedule, determinism under a seed, loss decrease."""

from __future__ import annotations

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
