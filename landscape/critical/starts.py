"""Starting points of critical-point searches: checkpoints, perturbations of them, and points taken
uniformly in loss along a training trajectory (Frye et al. 2019's protocol).

Imports nothing from storage, tracking or plotting.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from landscape.linalg.probes import Seed, as_generator, gaussian


@dataclass(frozen=True)
class Start:
    """A starting point: θ ``[n]``, a label, where it came from and the perturbation radius."""

    theta: Tensor
    label: str
    kind: str = "given"
    radius: float = 0.0


def start_radii(radii: Sequence[float], n_per_radius: int) -> list[float]:
    """The radius of each start ``perturbed_starts`` makes, in order: radius 0 once, every other
    radius ``n_per_radius`` times."""
    out: list[float] = []
    for r in radii:
        if r < 0:
            raise ValueError(f"radii must be non-negative; got {r}")
        out += [float(r)] * (1 if r == 0 else n_per_radius)
    return out


def perturbed_starts(theta: Tensor, radii: Sequence[float], n_per_radius: int, *,
                     seed: Seed = 0, label: str = "start") -> list[Start]:
    """Starts ``θ + δ`` with Gaussian δ of per-coordinate std ``r · ‖θ‖/√n`` (so ‖δ‖ ≈ r‖θ‖),
    one per entry of ``start_radii``.

    Radius 0 gives θ itself once. Dauphin et al. 2014 started from training points plus noise.
    """
    generator = as_generator(seed)
    n = theta.numel()
    rms = float(theta.norm()) / math.sqrt(n)
    starts, seen = [], Counter()
    for r in start_radii(radii, n_per_radius):
        noise = gaussian(1, n, generator, dtype=theta.dtype, device=theta.device)[0]
        starts.append(Start(theta + r * rms * noise, f"{label}/r={r:g}/{seen[r]}", "perturbed"
                            if r > 0 else "given", r))
        seen[r] += 1
    return starts


def uniform_in_loss_starts(thetas: Sequence[Tensor], losses: Sequence[float], n_starts: int, *,
                           noise_std: float = 0.1, seed: Seed = 0,
                           label: str = "trajectory") -> list[Start]:
    """``n_starts`` points of a trajectory taken uniformly in loss, noise on every second one.

    For each of ``n_starts`` loss levels evenly spaced between the trajectory's lowest and highest
    loss, the iterate whose loss is nearest and not yet taken is used (sampling uniformly in
    iteration would over-sample the flat tail of training; taking each iterate once keeps a fast
    drop of the loss from turning into repeated starts); starts 1, 3, 5, … get i.i.d. Gaussian
    noise of standard deviation ``noise_std`` per coordinate (Frye et al.: variance 1e-2, i.e.
    0.1).
    ``thetas``: ``[n]`` iterates; ``losses``: their losses. Kind ``"trajectory"`` or
    ``"perturbed"``; ``radius`` holds the noise std.
    """
    if len(thetas) != len(losses) or not thetas:
        raise ValueError(f"need one loss per iterate and at least one; got {len(thetas)} "
                         f"iterates and {len(losses)} losses")
    if not 1 <= n_starts <= len(thetas):
        raise ValueError(f"n_starts must be in [1, {len(thetas)}] (the iterates); got {n_starts}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be non-negative; got {noise_std}")
    values = torch.as_tensor(losses, dtype=torch.float64)
    if not bool(torch.isfinite(values).all()):
        raise ValueError("the trajectory's losses must be finite")
    generator = as_generator(seed)
    levels = torch.linspace(float(values.min()), float(values.max()), n_starts,
                            dtype=torch.float64)
    starts, free = [], torch.ones(len(thetas), dtype=torch.bool)
    for i, level in enumerate(levels):
        distance = torch.where(free, (values - level).abs(), torch.inf)
        j = int(distance.argmin())
        free[j] = False
        theta = thetas[j].clone()
        if i % 2 == 1 and noise_std > 0:
            noise = gaussian(1, theta.numel(), generator, dtype=theta.dtype,
                             device=theta.device)[0]
            starts.append(Start(theta + noise_std * noise, f"{label}/{i}@{j}", "perturbed",
                                noise_std))
        else:
            starts.append(Start(theta, f"{label}/{i}@{j}", "trajectory"))
    return starts
