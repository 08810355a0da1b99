"""Data, model specs, checkpoints and training: shapes, determinism, safe loading, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch import nn

from landscape.checkpoints import (
    CheckpointError,
    CheckpointMismatchError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from landscape.data import load_dataset
from landscape.models import build_model, parse_model_spec
from landscape.train import TrainConfig, checkpoint_steps, train


def test_digits_split_is_deterministic_and_standardised_on_train():
    a, b = load_dataset("digits"), load_dataset({"name": "digits", "seed": 0})
    assert a.x_train.shape[0] + a.x_test.shape[0] == 1797
    assert a.input_shape == (1, 8, 8) and a.n_classes == 10
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    c = load_dataset({"name": "digits", "seed": 1})
    assert not torch.equal(a.y_train, c.y_train)
    torch.testing.assert_close(a.x_train.mean(dim=0), torch.zeros(1, 8, 8), atol=1e-5, rtol=0)


def test_mnist1d_is_generated_offline_without_touching_numpy_rng():
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    ds = load_dataset("mnist1d")
    assert ds.input_shape == (1, 40) and ds.x_train.shape[0] + ds.x_test.shape[0] == 5000
    assert np.array_equal(np.random.get_state()[1], state)


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="'imagenet'"):
        load_dataset("imagenet")


def test_model_parameter_counts_match_closed_forms():
    mlp = build_model("mlp:64-32-10:tanh")
    assert sum(p.numel() for p in mlp.parameters()) == 64 * 32 + 32 + 32 * 10 + 10
    nobias = build_model("mlp:64-32-10:relu:nobias")
    assert sum(p.numel() for p in nobias.parameters()) == 64 * 32 + 32 * 10
    ae = build_model("linear-ae:8-3")
    assert [tuple(p.shape) for p in ae.parameters()] == [(3, 8), (8, 3)]
    lenet = build_model("lenet:c1=4,c2=8,h=32", input_shape=(1, 8, 8), n_classes=10)
    expected = (4 * 25 + 4) + (8 * 4 * 25 + 8) + (8 * 2 * 2 * 32 + 32) + (32 * 10 + 10)
    assert sum(p.numel() for p in lenet.parameters()) == expected
    assert lenet(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_seeded_models_are_identical_and_leave_global_rng_alone():
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    a, b = build_model("mlp:32:tanh", (1, 8, 8), 10, seed=3), build_model("mlp:32:tanh",
                                                                          (1, 8, 8), 10, seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("spec, token", [("mlp:64-x:tanh", "64-x"), ("mlp:64-10:sigmoid",
                                                                     "sigmoid"),
                                         ("resnet", "resnet"), ("nopkg.nomod:make", "nopkg")])
def test_bad_specs_name_the_offending_part(spec, token):
    with pytest.raises(ValueError, match=token):
        build_model(spec, (1, 8, 8), 10)


def test_factory_spec(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        "import torch.nn as nn\ndef make(width=3):\n    return nn.Linear(2, width)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model({"factory": "my_nets:make", "kwargs": {"width": 5}})
    assert model.weight.shape == (5, 2)
    assert parse_model_spec("my_nets:make").kind == "factory"


def _save(run, model, step):
    return save_checkpoint(run, model, model_spec=model.spec, data_spec={"name": "digits"},
                           step=step, metrics={"train_loss": 1.5})


def test_checkpoint_round_trip_and_ordering(tmp_path):
    model = build_model("mlp:64-8-10:tanh", seed=0)
    for step in (1, 10, 2):
        _save(tmp_path, model, step)
    paths = list_checkpoints(tmp_path)
    assert [load_checkpoint(p).step for p in paths] == [1, 2, 10]
    ckpt = load_checkpoint(paths[0])
    loaded = ckpt.model()
    x = torch.randn(3, 64)
    assert torch.equal(loaded(x), model(x))
    assert ckpt.metrics == {"train_loss": 1.5} and ckpt.data_spec == {"name": "digits"}
    assert not list(tmp_path.glob(".tmp-*"))


def test_corrupt_foreign_and_mismatched_checkpoints(tmp_path):
    model = build_model("mlp:64-8-10:tanh", seed=0)
    path = _save(tmp_path, model, 1)
    truncated = tmp_path / "step-00000002.pt"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptCheckpointError, match="step-00000002.pt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state": nn.Linear(2, 2)}, foreign)
    with pytest.raises(UnsafeCheckpointError, match="foreign.pt"):
        load_checkpoint(foreign)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(print))
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointMismatchError, match="step-00000001.pt"):
        load_checkpoint(path, model_spec="mlp:64-9-10:tanh").model()
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(CheckpointError, match="model_spec"):
        load_checkpoint(plain)
    assert torch.equal(load_checkpoint(plain, model_spec=model.spec).model()[1].weight,
                       model[1].weight)


def test_checkpoint_schedule():
    assert checkpoint_steps(10, 3, 1, 0) == {10, 20, 30}
    steps = checkpoint_steps(100, 4, 2, 3)
    assert {200, 400} <= steps and {1} <= steps and max(s for s in steps if s < 100) < 100


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
