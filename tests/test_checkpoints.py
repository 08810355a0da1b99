"""Checkpoints: round trips (.pt and .safetensors), ordering by step, atomic writes, and the
errors for corrupt, unsafe, mismatched and spec-less files."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from landscape.checkpoints import (
    FORMAT,
    CheckpointError,
    CheckpointMismatchError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from landscape.data import DataSpec
from landscape.models import build_model

SPEC = "mlp:_-8-_:tanh"
METRICS = {"train_loss": 1.5, "train_error": 0.25, "test_loss": 1.75, "test_error": 0.5}


class Payload:
    """A custom class: its instances must never be unpickled by the loader."""


@pytest.fixture
def model() -> nn.Module:
    return build_model(SPEC, (1, 8, 8), 10, seed=0)


def _save(target, model, step, **kwargs):
    return save_checkpoint(target, model, model_spec=model.spec,
                           data_spec=DataSpec("digits", n_train=100), step=step, **kwargs)


def _same_parameters(a: nn.Module, b: nn.Module) -> bool:
    pairs = zip(a.state_dict().items(), b.state_dict().items(), strict=True)
    return all(ka == kb and torch.equal(va, vb) for (ka, va), (kb, vb) in pairs)


@pytest.mark.parametrize("target", ["run", "run/model.safetensors"])
def test_round_trip(tmp_path, model, target):
    path = _save(tmp_path / target, model, 7, epoch=2, seed=0, metrics=METRICS,
                 optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9})
    if target == "run":
        assert path == tmp_path / "run" / "step-00000007.pt"
        raw = torch.load(path, weights_only=True)
        assert raw["format"] == FORMAT and raw["format_version"] == 1 and raw["step"] == 7
    ckpt = load_checkpoint(path)
    assert (ckpt.step, ckpt.epoch, ckpt.seed, ckpt.metrics) == (7, 2, 0, METRICS)
    assert ckpt.model_spec == model.spec
    assert ckpt.data_spec == DataSpec("digits", n_train=100).to_dict()
    assert ckpt.optimizer == {"name": "sgd", "lr": 0.1, "momentum": 0.9}
    assert ckpt.created and ckpt.landscape_version
    loaded = ckpt.model()
    assert _same_parameters(loaded, model)
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))


def test_float64_checkpoint_rebuilds_a_float64_model(tmp_path, model):
    model = model.double()
    loaded = load_checkpoint(_save(tmp_path, model, 1)).model()
    assert all(p.dtype == torch.float64 for p in loaded.parameters())
    assert _same_parameters(loaded, model)


def test_loading_leaves_the_global_rng_alone(tmp_path, model):
    path = _save(tmp_path, model, 1)
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    load_checkpoint(path).model()
    assert torch.equal(torch.random.get_rng_state(), before)


def test_list_checkpoints_orders_by_step_numerically(tmp_path, model):
    for step in (1, 10, 2):  # unpadded names: string order would put 10 before 2
        _save(tmp_path / f"step-{step}.pt", model, step)
    _save(tmp_path / "final.safetensors", model, 5)  # step read from the metadata
    (tmp_path / ".tmp-abc.pt").write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "broken.pt").write_bytes(b"garbage")
    paths = list_checkpoints(tmp_path)
    assert [p.name for p in paths] == ["step-1.pt", "step-2.pt", "final.safetensors", "step-10.pt",
                                       "broken.pt"]
    loaded, failed = [], []
    for p in paths:  # one bad file does not stop the others
        try:
            loaded.append(load_checkpoint(p).step)
        except CheckpointError as exc:
            failed.append(str(exc))
    assert loaded == [1, 2, 5, 10] and len(failed) == 1 and "broken.pt" in failed[0]


def test_list_checkpoints_names_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_checkpoints(tmp_path / "nowhere")


def test_atomic_write_leaves_no_temporary_file(tmp_path, model, monkeypatch):
    _save(tmp_path, model, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000003.pt"]

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, model, 4)
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000003.pt"]


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_file_is_corrupt_and_named(tmp_path, model, suffix):
    data = _save(tmp_path / f"good{suffix}", model, 1).read_bytes()
    truncated = tmp_path / f"step-00000002{suffix}"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match=truncated.name):
        load_checkpoint(truncated)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_foreign_objects_are_refused_as_unsafe(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}, "extra": Payload()}, foreign)
    with pytest.raises(UnsafeCheckpointError, match="foreign.pt"):
        load_checkpoint(foreign)
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps(print))
    with pytest.raises(UnsafeCheckpointError, match="legacy.pt"):
        load_checkpoint(legacy)


def test_state_dict_of_another_architecture_is_a_mismatch(tmp_path, model):
    path = _save(tmp_path, model, 1)
    with pytest.raises(CheckpointMismatchError, match=r"step-00000001.pt.*1.weight \(8, 64\) vs "
                                                      r"model \(9, 64\)"):
        load_checkpoint(path, model_spec="mlp:64-9-10:tanh").model()
    with pytest.raises(CheckpointMismatchError, match=r"step-00000001.pt.*missing keys 5.weight"):
        load_checkpoint(path, model_spec="mlp:64-8-8-10:tanh").model()


def test_plain_state_dict_needs_a_spec(tmp_path, model):
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(CheckpointError, match="plain.pt.*model_spec"):
        load_checkpoint(plain)
    ckpt = load_checkpoint(plain, model_spec="mlp:64-8-10:tanh")
    assert ckpt.step is None and ckpt.data_spec is None
    assert _same_parameters(ckpt.model(), model)
    plain_st = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, plain_st)
    with pytest.raises(CheckpointError, match="plain.safetensors.*model_spec"):
        load_checkpoint(plain_st)
    assert _same_parameters(load_checkpoint(plain_st, model_spec=model.spec).model(), model)


def test_plain_state_dict_with_a_factory_spec(tmp_path, monkeypatch):
    (tmp_path / "lt_checkpoint_factories.py").write_text(
        "from torch import nn\n\ndef net(width):\n"
        "    return nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 2))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    theirs = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    torch.save(theirs.state_dict(), tmp_path / "theirs.pt")
    spec = {"factory": "lt_checkpoint_factories:net", "kwargs": {"width": 4}}
    ckpt = load_checkpoint(tmp_path / "theirs.pt", model_spec=spec)
    assert _same_parameters(ckpt.model(), theirs)


def test_save_validates_its_arguments(tmp_path, model):
    with pytest.raises(ValueError, match="leaves sizes open"):
        save_checkpoint(tmp_path, model, model_spec=SPEC, data_spec=None, step=0)
    with pytest.raises(ValueError, match="step.*-1"):
        _save(tmp_path, model, -1)
    with pytest.raises(ValueError, match=r"optimizer.betas.*object"):
        _save(tmp_path, model, 0, optimizer={"name": "adam", "betas": object()})
    with pytest.raises(ValueError, match="'train_loss'"):
        _save(tmp_path, model, 0, metrics={"train_loss": "low"})
    assert not list(tmp_path.iterdir())
