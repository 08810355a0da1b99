"""Loss surfaces: lines and planes through parameter space, and the directions that span them.

Owns the three pictures of the sharp-vs-flat literature, as numbers:

* **linear interpolation** between two solutions (Goodfellow et al. 2015; Keskar et al. 2017,
  Fig. 3): ``f(α) = L((1 − α) θ_a + α θ_b)``, α = 0 at θ_a, α = 1 at θ_b (Keskar's α ∈ [−1, 2]
  also looks beyond both ends);
* a **2-D slice along filter-normalised random directions** (Li et al. 2018, §4):
  ``f(x, y) = L(θ* + x d₁ + y d₂)``, each dᵢ ~ N(0, I) rescaled filter by filter (one slice
  along dim 0 of a ≥ 2-D parameter: a linear layer's output unit, a convolution's output
  channel) to the norm of the matching filter of θ*, so that x = 1 is a step as large as the
  weights themselves in every filter; the directions of 1-D parameters (biases, BatchNorm's
  affine parameters) are zeroed (Li et al.'s ``ignore=biasbn``), and which parameters were
  zeroed is returned;
* the **PCA plane of a training trajectory** (Li et al. 2018, §7): the principal directions
  (scikit-learn ``PCA``) of the checkpoint deltas ``θ_t − θ_final`` with their explained
  variance ratios, and each checkpoint's coordinates ``(θ_t − θ_final) · dₖ`` on the plane
  through θ_final (the directions are orthonormal, so this is also the least-squares projection).

Values on lines and planes come from ``Objective.loss`` and ``Objective.error`` (full-batch mean,
model in eval mode): only θ moves; buffers (BatchNorm running statistics) stay those of the
objective's model. Imports the numerics' ``Objective`` and scikit-learn; nothing from storage,
tracking or plotting.

Example (a quadratic bowl seen along its own axes: the slice is x² + 4y²):
    >>> from torch import nn
    >>> class Point(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.w = nn.Parameter(torch.zeros(2))
    ...     def forward(self, x):
    ...         return self.w.expand(len(x), -1)
    >>> obj = Objective(Point(), lambda out, _: out[0, 0] ** 2 + 4 * out[0, 1] ** 2,
    ...                 (torch.zeros(1, 1), torch.zeros(1)))
    >>> grid = plane(obj, obj.theta, torch.tensor([1.0, 0]), torch.tensor([0, 1.0]),
    ...              np.array([-1.0, 0, 1]), np.array([0.0, 0.5]))
    >>> grid.loss.tolist()
    [[1.0, 0.0, 1.0], [2.0, 1.0, 2.0]]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.decomposition import PCA
from torch import Tensor

from landscape.objective import Objective

__all__ = [
    "Direction",
    "TrajectoryPlane",
    "Values",
    "evaluate_points",
    "filter_normalised",
    "interpolate",
    "plane",
    "random_direction",
    "trajectory_plane",
]

FILTER_EPS = 1e-10  # guards the division by a direction filter's norm (Li et al.'s value)


@dataclass(frozen=True)
class Direction:
    """A direction ``vector [n]`` in θ-space and the parameters whose part of it is zero."""

    vector: Tensor
    zeroed: tuple[str, ...]


@dataclass(frozen=True)
class Values:
    """Loss and classification error at points of a line ``[m]`` or a grid ``[len(y), len(x)]``
    (row = y); ``error`` is None for tasks without classes."""

    loss: np.ndarray
    error: np.ndarray | None


@dataclass(frozen=True)
class TrajectoryPlane:
    """The PCA plane of a trajectory: ``origin`` θ_final ``[n]``, orthonormal ``components``
    ``[k, n]``, their ``explained_variance_ratio`` ``[k]`` (of the deltas' variance) and the
    checkpoints' ``coords`` ``[T, k]`` on the plane (the last one is 0)."""

    origin: Tensor
    components: Tensor
    explained_variance_ratio: np.ndarray
    coords: np.ndarray


def filter_normalised(obj: Objective, theta: Tensor, direction: Tensor) -> Direction:
    """``direction`` with every filter rescaled to the norm of θ's matching filter and 1-D
    parameters zeroed (module docs); ``theta`` and ``direction`` are ``[n]``."""
    theta = obj.check_theta(theta)
    direction = obj.check_theta(direction)
    parts, zeroed = [], []
    for (name, d), w in zip(obj.unflatten(direction).items(), obj.unflatten(theta).values(),
                            strict=True):
        if d.ndim <= 1:
            parts.append(torch.zeros_like(d).reshape(-1))
            zeroed.append(name)
            continue
        d_norm = d.reshape(d.shape[0], -1).norm(dim=1)
        w_norm = w.reshape(w.shape[0], -1).norm(dim=1)
        scale = (w_norm / (d_norm + FILTER_EPS)).reshape(-1, *([1] * (d.ndim - 1)))
        parts.append((d * scale).reshape(-1))
    return Direction(torch.cat(parts), tuple(zeroed))


def random_direction(obj: Objective, theta: Tensor, generator: torch.Generator) -> Direction:
    """A filter-normalised Gaussian direction at θ, drawn on the CPU from ``generator`` (the
    same numbers on every device)."""
    draw = torch.randn(obj.num_params, generator=generator, dtype=torch.float64)
    return filter_normalised(obj, theta, draw.to(obj.device, obj.dtype))


def evaluate_points(obj: Objective, thetas: Iterable[Tensor]) -> Values:
    """Loss and error of ``obj`` at each θ ``[n]`` of ``thetas``, as ``[m]`` arrays."""
    losses, errors = [], []
    for theta in thetas:
        losses.append(float(obj.loss(theta)))
        try:
            errors.append(obj.error(theta))
        except ValueError:  # no classes: the loss is the only value
            errors.append(None)
    error = None if not errors or errors[0] is None else np.asarray(errors)
    return Values(np.asarray(losses), error)


def interpolate(obj: Objective, theta_a: Tensor, theta_b: Tensor,
                alphas: Sequence[float] | np.ndarray) -> Values:
    """``obj`` on the line ``(1 − α) θ_a + α θ_b`` at every α of ``alphas`` (``[m]``)."""
    theta_a, theta_b = obj.check_theta(theta_a), obj.check_theta(theta_b)
    delta = theta_b - theta_a
    return evaluate_points(obj, (theta_a + float(a) * delta for a in np.asarray(alphas)))


def plane(obj: Objective, origin: Tensor, d1: Tensor, d2: Tensor, x: np.ndarray,
          y: np.ndarray) -> Values:
    """``obj`` on the grid ``origin + x d₁ + y d₂``; values ``[len(y), len(x)]`` (row = y)."""
    origin, d1, d2 = (obj.check_theta(v) for v in (origin, d1, d2))
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim != 1 or y.ndim != 1 or not len(x) or not len(y):
        raise ValueError(f"x and y must be non-empty 1-D coordinate arrays; got shapes "
                         f"{x.shape} and {y.shape}")
    values = evaluate_points(obj, (origin + float(b) * d2 + float(a) * d1 for b in y for a in x))
    shape = (len(y), len(x))
    return Values(values.loss.reshape(shape),
                  None if values.error is None else values.error.reshape(shape))


def trajectory_plane(thetas: Tensor, n_components: int = 2) -> TrajectoryPlane:
    """The PCA plane of the trajectory ``thetas`` ``[T, n]`` (checkpoints in training order,
    T ≥ n_components + 1); module docs."""
    if thetas.ndim != 2:
        raise ValueError(f"thetas must be [T, n]; got shape {tuple(thetas.shape)}")
    if n_components < 1 or thetas.shape[0] < n_components + 1:
        raise ValueError(f"a {n_components}-component PCA plane needs at least "
                         f"{n_components + 1} checkpoints; got {thetas.shape[0]}")
    origin = thetas[-1]
    deltas = (thetas - origin).detach().cpu().double().numpy()
    pca = PCA(n_components=n_components, svd_solver="full").fit(deltas)
    components = torch.as_tensor(pca.components_, dtype=thetas.dtype, device=thetas.device)
    coords = deltas @ pca.components_.T
    return TrajectoryPlane(origin, components, pca.explained_variance_ratio_, coords)
