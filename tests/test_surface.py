"""Loss surfaces: interpolation endpoints against the checkpoints' own metrics, filter
normalisation, planes against closed forms, the PCA plane of a straight trajectory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.checkpoints import load_checkpoint
from landscape.objective import Objective
from landscape.problem import problem_from_checkpoint
from landscape.surface import (
    filter_normalised,
    interpolate,
    plane,
    random_direction,
    trajectory_plane,
)
from landscape.train import TrainConfig, train
from tests.conftest import small_cnn
from tests.toys import diagonal_quadratic


def test_interpolation_endpoints_reproduce_the_checkpoints_metrics(tmp_path):
    """α = 0 and α = 1 are the two checkpoints: the line's train and test loss and error there
    equal what training measured (float32 model, float64 objective)."""
    ends = []
    for seed in (0, 1):
        config = TrainConfig(dataset={"name": "digits", "n_train": 100, "n_test": 50},
                             model="mlp:4:tanh", epochs=3, batch_size=20, seed=seed)
        ends.append(train(config, tmp_path / f"s{seed}", progress=False)[-1])
    theta_b = problem_from_checkpoint(ends[1]).objective.theta
    for split in ("train", "test"):
        obj = problem_from_checkpoint(ends[0], split=split).objective
        values = interpolate(obj, obj.theta, theta_b, [0.0, 1.0])
        for alpha, path in zip((0, 1), ends, strict=True):
            metrics = load_checkpoint(path).metrics
            assert values.loss[alpha] == pytest.approx(metrics[f"{split}_loss"], rel=1e-5)
            assert values.error[alpha] == metrics[f"{split}_error"]
    assert obj.num_samples == 50  # the test split


def test_filter_normalisation_matches_each_filter_of_theta():
    obj = Objective(small_cnn(), nn.functional.cross_entropy,
                    (torch.randn(4, 1, 4, 4), torch.randint(0, 3, (4,))))
    theta = obj.theta * torch.linspace(0.5, 3.0, obj.num_params, dtype=obj.dtype)
    direction = random_direction(obj, theta, torch.Generator().manual_seed(0))
    assert direction.zeroed == ("0.bias", "4.bias")
    for (name, d), w in zip(obj.unflatten(direction.vector).items(),
                            obj.unflatten(theta).values(), strict=True):
        if name in direction.zeroed:
            assert torch.count_nonzero(d) == 0
            continue
        torch.testing.assert_close(d.reshape(d.shape[0], -1).norm(dim=1),
                                   w.reshape(w.shape[0], -1).norm(dim=1), rtol=1e-9, atol=0)
    # The rescaling keeps each filter's direction: a filter of d is a positive multiple of the
    # raw draw's filter.
    raw = torch.randn(obj.num_params, generator=torch.Generator().manual_seed(0),
                      dtype=torch.float64)
    again = filter_normalised(obj, theta, 7.0 * raw)
    torch.testing.assert_close(again.vector, direction.vector)


def test_plane_of_a_quadratic_is_its_closed_form():
    h = torch.tensor([1.0, 4.0, 0.5], dtype=torch.float64)
    obj = diagonal_quadratic(h)
    d1 = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    d2 = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    x, y = np.linspace(-1, 1, 5), np.linspace(-2, 2, 3)
    grid = plane(obj, obj.theta, d1, d2, x, y)
    assert grid.loss.shape == (3, 5) and grid.error is None
    for i, b in enumerate(y):
        for j, a in enumerate(x):
            point = a * d1 + b * d2  # the objective's θ is 0
            assert grid.loss[i, j] == pytest.approx(0.5 * float((h * point**2).sum()), rel=1e-12)
    with pytest.raises(ValueError, match="1-D coordinate arrays"):
        plane(obj, obj.theta, d1, d2, x, np.array([]))


def test_straight_trajectory_lies_on_its_first_principal_component():
    g = torch.Generator().manual_seed(0)
    start, end = torch.randn(50, generator=g), torch.randn(50, generator=g)
    t = torch.linspace(0, 1, 12).pow(2)[:, None]  # uneven steps along one line
    thetas = (1 - t) * start + t * end + 1e-3 * torch.randn(12, 50, generator=g)
    pca = trajectory_plane(thetas.double())
    assert pca.explained_variance_ratio[0] >= 0.99
    assert pca.components.shape == (2, 50)
    torch.testing.assert_close(pca.components @ pca.components.T,
                               torch.eye(2, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(pca.origin, thetas[-1].double())
    # PC1 coordinates are the signed distances to θ_final along the line.
    distance = ((thetas - thetas[-1]).double() @ pca.components[0]).numpy()
    np.testing.assert_allclose(pca.coords[:, 0], distance, atol=1e-12)
    np.testing.assert_allclose(np.abs(pca.coords[:, 0]),
                               (1 - t[:, 0].numpy()) * float((end - start).norm()), atol=0.02)


def test_trajectory_plane_refuses_too_few_checkpoints():
    with pytest.raises(ValueError, match="at least 3 checkpoints"):
        trajectory_plane(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"\[T, n\]"):
        trajectory_plane(torch.zeros(5))
