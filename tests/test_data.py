"""Datasets: file readers against bytes written here, downsampling against hand-computed means,
split determinism, train-only standardisation, clear errors, and RNG hygiene."""

from __future__ import annotations

import gzip
import os
import pickle
import random
import struct

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from landscape.data import DataSpec, downsample, load_dataset, read_cifar_batch, read_idx


def _idx_bytes(array: np.ndarray, type_code: int, fmt: str) -> bytes:
    """IDX encoding written with struct (independent of the reader's numpy parsing)."""
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + struct.pack(f">{array.size}{fmt}", *array.ravel().tolist())


def _write(path, data: bytes, compress: bool) -> None:
    path.write_bytes(gzip.compress(data) if compress else data)


def _tiny_mnist(folder, n_train=6, n_test=4, side=4, seed=0):
    """Distinct labels per split, so a permuted split can be matched back to what was written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n, compress in (("train", n_train, True), ("t10k", n_test, False)):
        images = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
        labels = rng.permutation(10)[:n].astype(np.uint8)
        suffix = ".gz" if compress else ""
        _write(folder / f"{split}-images-idx3-ubyte{suffix}", _idx_bytes(images, 0x08, "B"),
               compress)
        _write(folder / f"{split}-labels-idx1-ubyte{suffix}", _idx_bytes(labels, 0x08, "B"),
               compress)
        arrays[split] = images, labels
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_returns_the_values_written(tmp_path, compress):
    images = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5) * 7
    wide = np.array([[70000, -3], [5, 2**31 - 1]], dtype=np.int64)
    _write(tmp_path / "u8", _idx_bytes(images, 0x08, "B"), compress)
    _write(tmp_path / "i32", _idx_bytes(wide, 0x0C, "i"), compress)
    got = read_idx(tmp_path / "u8")
    assert got.dtype == np.uint8 and got.shape == (2, 3, 5) and np.array_equal(got, images)
    got = read_idx(tmp_path / "i32")
    assert got.shape == (2, 2) and got.tolist() == wide.tolist()


def test_read_idx_rejects_bad_magic_and_sizes(tmp_path):
    bad = tmp_path / "bad-magic"
    bad.write_bytes(b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="bad-magic.*magic number"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(_idx_bytes(np.zeros((3, 2), np.uint8), 0x08, "B")[:-1])
    with pytest.raises(ValueError, match="short.*size mismatch"):
        read_idx(short)


def test_mnist_from_idx_files_gives_the_pixels_and_labels_written(tmp_path):
    arrays = _tiny_mnist(tmp_path / "mnist")
    ds = load_dataset({"name": "mnist", "root": str(tmp_path), "standardize": False})
    assert ds.input_shape == (1, 4, 4) and ds.n_classes == 10
    for (x, y), split in (((ds.x_train, ds.y_train), "train"), ((ds.x_test, ds.y_test), "t10k")):
        images, labels = arrays[split]
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert sorted(y.tolist()) == sorted(labels.tolist())
        for xi, yi in zip(x, y):
            written = images[list(labels).index(int(yi))]
            assert torch.equal(xi[0], torch.tensor(written, dtype=torch.float32) / 255)


def test_mnist_downsampled_to_block_means(tmp_path):
    arrays = _tiny_mnist(tmp_path / "mnist")
    ds = load_dataset(DataSpec("mnist", root=str(tmp_path), downsample=2, standardize=False))
    assert ds.input_shape == (1, 2, 2)
    images, labels = arrays["train"]
    for xi, yi in zip(ds.x_train, ds.y_train):
        image = images[list(labels).index(int(yi))].astype(np.float64) / 255
        means = [[image[2 * i:2 * i + 2, 2 * j:2 * j + 2].mean() for j in range(2)]
                 for i in range(2)]
        np.testing.assert_allclose(xi[0].numpy(), means, rtol=1e-6)


def _cifar_batch(path, n, rng, *, bytes_keys=True, protocol=2):
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).tolist()
    batch = {b"data": data, b"labels": labels, b"batch_label": b"tiny"} if bytes_keys else \
        {"data": data, "labels": labels}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)
    return data, labels


@pytest.mark.parametrize("bytes_keys, protocol", [(True, 2), (False, pickle.HIGHEST_PROTOCOL)])
def test_cifar_batch_reader_returns_the_pixels_and_labels_written(tmp_path, bytes_keys, protocol):
    data, labels = _cifar_batch(tmp_path / "b", 3, np.random.default_rng(0),
                                bytes_keys=bytes_keys, protocol=protocol)
    images, got = read_cifar_batch(tmp_path / "b")
    assert images.shape == (3, 3, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(images[1, 2, 4], data[1, 2 * 1024 + 4 * 32:2 * 1024 + 5 * 32])
    assert got.tolist() == labels


def test_cifar10_loads_from_batches_and_downsamples_to_grey(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    train = [_cifar_batch(folder / f"data_batch_{i}", 2, rng) for i in range(1, 6)]
    _cifar_batch(folder / "test_batch", 3, rng)
    ds = load_dataset({"name": "cifar10", "root": str(tmp_path), "standardize": False})
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    written = sorted(tuple(d.tolist()) for batch, _ in train for d in batch)
    got = sorted(tuple((x * 255).round().to(torch.uint8).flatten().tolist()) for x in ds.x_train)
    assert got == written
    grey = load_dataset({"name": "cifar10", "root": str(tmp_path), "downsample": 8})
    assert grey.input_shape == (1, 8, 8) and grey.x_test.shape == (3, 1, 8, 8)


def test_cifar_pickle_with_foreign_globals_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(pickle.UnpicklingError, match=r"data_batch_1.*refusing.*system"):
        read_cifar_batch(path)
    assert not marker.exists()


def test_downsample_constant_blocks_and_grey_weights():
    constant = torch.full((2, 3, 12, 12), 0.4, dtype=torch.float64)
    for side in (1, 5, 6):
        out = downsample(constant, side)
        assert out.shape == (2, 1, side, side)
        torch.testing.assert_close(out, torch.full_like(out, 0.4), rtol=0, atol=1e-12)
    g = torch.Generator().manual_seed(0)
    square = torch.rand(1, 1, 4, 4, generator=g, dtype=torch.float64)
    expected = [[float(square[0, 0, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean()) for j in range(2)]
                for i in range(2)]
    torch.testing.assert_close(downsample(square, 2)[0, 0],
                               torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)
    rgb = torch.rand(1, 3, 2, 2, generator=g, dtype=torch.float64)
    grey = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    torch.testing.assert_close(downsample(rgb, 2)[:, 0], grey, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="7"):
        downsample(square, 7)


def test_digits_shapes_split_determinism_and_subsets():
    a, b = load_dataset("digits"), load_dataset({"name": "digits", "seed": 0})
    assert a.x_train.shape == (1347, 1, 8, 8) and a.x_test.shape == (450, 1, 8, 8)
    assert a.input_shape == (1, 8, 8) and a.n_classes == 10
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    c = load_dataset(DataSpec("digits", seed=1))
    assert not torch.equal(a.y_train, c.y_train) and not torch.equal(a.x_test, c.x_test)
    counts = torch.bincount(a.y_test, minlength=10)  # stratified: a quarter of every class
    full = torch.bincount(torch.as_tensor(load_digits().target), minlength=10)
    assert ((counts - full * 0.25).abs() <= 1).all()
    raw = load_dataset({"name": "digits", "standardize": False})
    sub = load_dataset({"name": "digits", "standardize": False, "n_train": 100, "n_test": 7})
    assert torch.equal(sub.x_train, raw.x_train[:100]) and torch.equal(sub.y_test, raw.y_test[:7])


def test_digits_pixels_are_the_bundled_ones_scaled():
    raw = load_dataset({"name": "digits", "standardize": False})
    bundled = sorted(map(tuple, (load_digits().data / 16).tolist()))
    ours = sorted(map(tuple, torch.cat([raw.x_train, raw.x_test]).flatten(1).double().tolist()))
    np.testing.assert_allclose(np.array(ours), np.array(bundled), rtol=1e-6)


def test_standardisation_uses_training_statistics_only():
    raw = load_dataset({"name": "digits", "standardize": False, "n_train": 300})
    ds = load_dataset({"name": "digits", "n_train": 300})
    x = raw.x_train.double().numpy()
    assert float(ds.mean) == pytest.approx(x.mean(), rel=1e-9)
    assert float(ds.std) == pytest.approx(x.std(), rel=1e-9)  # correction 0
    assert ds.mean.shape == (1, 1, 1)
    assert float(ds.x_train.mean()) == pytest.approx(0, abs=1e-6)
    assert float(ds.x_train.std(correction=0)) == pytest.approx(1, abs=1e-6)
    expected = (raw.x_test.double() - x.mean()) / x.std()
    torch.testing.assert_close(ds.x_test.double(), expected, rtol=0, atol=1e-5)
    assert abs(float(ds.x_test.mean())) > 1e-4  # test statistics were not used


def test_missing_files_name_the_file_the_folders_and_the_remedy(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset({"name": "mnist", "root": str(tmp_path)})
    message = str(err.value)
    for part in ("train-images-idx3-ubyte", str(tmp_path / "mnist"), str(tmp_path),
                 "LANDSCAPE_DATA", "root"):
        assert part in message
    monkeypatch.setenv("LANDSCAPE_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match=r"data_batch_1.*elsewhere"):
        load_dataset("cifar10")


def test_mnist1d_offline_shapes_and_global_rngs_untouched():
    np.random.seed(123)
    random.seed(7)
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
    ds = load_dataset("mnist1d")
    assert np.array_equal(np.random.get_state()[1], np_state) and random.getstate() == py_state
    assert ds.x_train.shape == (4000, 1, 40) and ds.x_test.shape == (1000, 1, 40)
    assert ds.input_shape == (1, 40) and ds.n_classes == 10
    assert set(ds.y_train.tolist()) == set(range(10))
    again = load_dataset({"name": "mnist1d", "n_train": 50})
    other = load_dataset({"name": "mnist1d", "n_train": 50, "seed": 1})
    assert torch.equal(load_dataset({"name": "mnist1d", "n_train": 50}).x_train, again.x_train)
    assert not torch.equal(again.y_train, other.y_train)


def test_spec_round_trip_and_validation():
    spec = DataSpec("mnist", n_train=100, seed=3, downsample=10, root="/data")
    assert DataSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="n_train.*-5"):
        DataSpec("digits", n_train=-5)
    with pytest.raises(ValueError, match="downsample.*'digits'"):
        DataSpec("digits", downsample=4)
    with pytest.raises(ValueError, match="'colour'"):
        DataSpec.from_dict({"name": "digits", "colour": True})
    with pytest.raises(ValueError, match="n_train=5000"):
        load_dataset({"name": "digits", "n_train": 5000})
