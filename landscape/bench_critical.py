"""Benchmark of the critical-point methods: how often, how fast, and how honestly they find
critical points.

Run ``landscape bench critical`` (or ``python -m landscape.bench_critical``); ``--problems``
and ``--methods`` take comma-separated names, ``--starts`` the number of starts per problem.

Problems (``PROBLEMS``):

* ``frye``: Frye et al. (2019)'s deep linear autoencoder 16 → 4 → 16, no biases, on 10,000
  centred Gaussian samples with covariance diag(1, …, 16); loss the mean squared error over all
  16 × 10,000 entries. Starts: a gradient-descent trajectory from a small random θ, sampled
  uniformly in loss, Gaussian noise of variance 1e-2 on every second start
  (``critical.uniform_in_loss_starts``).
* ``spread-16-4``, ``pairs-12-3``, ``spread-24-6``, ``spread-32-2``: the same protocol with
  ill-conditioned data — covariance eigenvalues log-spaced over 1e-3 … 1e2 (randomly rotated), or
  in near-equal pairs (ratio 1.02) log-spaced over the same span — so that the Hessians have
  nearly-degenerate and near-zero modes besides the p² zero modes of the GL(p) symmetry.
  Every autoencoder is evaluated on ``second_moment_factor`` of its samples (the same loss
  function of θ at d/N of the cost). Iteration cap: 500 for ``frye`` (Frye et al.'s), else the
  library default (``Thresholds.max_iterations``).
* ``mlp-W-l2=λ``: the tanh MLP 64 → W → 10 on the first 400 digits, cross-entropy + (λ/2)‖θ‖²;
  starts = checkpoints along a full-batch SGD run (lr 0.1; steps 10, 30, 100, 300, 1000, 3000) and
  perturbations of each (relative radius 0.1). No closed form.

Per problem and method it prints the fraction of searches per status; ``certified`` (critical,
stable index, minimum-norm Newton step ≤ 1e-6‖θ‖); for the autoencoders ``exact`` (certified
and (loss, index) equal to a closed-form pair: loss to 1e-9 relative), ``off-set`` (labelled
critical with a loss off the closed-form set: must be 0), ``index wrong`` (a stable index that is
not the closed form's: must be 0) and ``uncertain`` (index marked uncertain; ``range ok``: its
range holds the closed-form index); the distinct critical points and indices found; medians of
iterations, HVPs and seconds per search.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from landscape.critical import (
    METHODS,
    CriticalPoint,
    Start,
    Thresholds,
    find_critical_points,
    perturbed_starts,
    uniform_in_loss_starts,
)
from landscape.critical.linear_autoencoder import (
    AnalyticCriticalPoint,
    analytic_critical_points,
    gaussian_data,
    linear_autoencoder,
    representative,
    second_moment_factor,
)
from landscape.data import load_dataset
from landscape.losses import mean_squared_error
from landscape.objective import Objective

F64 = torch.float64
LOSS_RTOL = 1e-9  # a critical point's loss matches a closed-form class to this relative error


@dataclass(frozen=True)
class BenchProblem:
    """An objective, its starts and (autoencoders) the closed-form critical points."""

    name: str
    objective: Objective
    starts: list[Start]
    analytic: list[AnalyticCriticalPoint] | None = None
    max_iterations: int = Thresholds.max_iterations


def _spread(d: int) -> list[float]:
    return torch.logspace(-3, 2, d, dtype=F64).tolist()


def _pairs(d: int) -> list[float]:
    centres = torch.logspace(-3, 2, d // 2, dtype=F64)
    return torch.stack([centres, 1.02 * centres], dim=1).reshape(-1).tolist()


# name → (d, p, population variances, rotate)
AUTOENCODERS: dict[str, tuple[int, int, list[float], bool]] = {
    "frye": (16, 4, [float(i) for i in range(1, 17)], False),
    "spread-16-4": (16, 4, _spread(16), True),
    "pairs-12-3": (12, 3, _pairs(12), True),
    "spread-24-6": (24, 6, _spread(24), True),
    "spread-32-2": (32, 2, _spread(32), True),
}


def gradient_descent(obj: Objective, theta: torch.Tensor, lr: float, steps: int
                     ) -> tuple[list[torch.Tensor], list[float]]:
    """Full-batch gradient-descent iterates ``[steps + 1]`` and their losses."""
    thetas, losses = [theta], []
    for _ in range(steps):
        loss, grad = obj.loss_and_grad(thetas[-1])
        losses.append(float(loss))
        thetas.append(thetas[-1] - lr * grad)
    losses.append(float(obj.loss(thetas[-1])))
    return thetas, losses


def autoencoder_problem(name: str, n_starts: int, *, n_samples: int = 10_000, seed: int = 0,
                        init_std: float = 0.1, steps: int = 20_000) -> BenchProblem:
    """One of ``AUTOENCODERS`` with Frye et al.'s trajectory starts (module docstring).

    Gradient descent runs ``steps`` iterations at ``lr = 0.1 / max|λ|`` of the Hessian at the
    global minimum's representative, from θ ~ N(0, init_std²).
    """
    d, p, variances, rotate = AUTOENCODERS[name]
    x = gaussian_data(variances, n_samples, seed=seed, rotate=rotate)
    values, vectors = torch.linalg.eigh(x.T @ x / n_samples)
    factor = second_moment_factor(x)
    obj = Objective(linear_autoencoder(d, p), mean_squared_error, (factor, factor))
    analytic = analytic_critical_points(values, p, loss_scale=1 / d)
    best = representative(tuple(range(p)), vectors.flip(1), p)
    lr = 0.1 / float(torch.linalg.eigvalsh(obj.hessian(best)).abs().max())
    generator = torch.Generator().manual_seed(seed + 1)
    theta0 = init_std * torch.randn(obj.num_params, generator=generator, dtype=F64)
    thetas, losses = gradient_descent(obj, theta0, lr, steps)
    starts = uniform_in_loss_starts(thetas, losses, n_starts, noise_std=0.1, seed=seed + 2,
                                    label=name)
    cap = 500 if name == "frye" else Thresholds.max_iterations  # Frye et al.'s cap; else ours
    return BenchProblem(name, obj, starts, analytic, cap)


def mlp_problem(width: int, l2: float, n_per_checkpoint: int, *, n_samples: int = 400,
                lr: float = 0.1, steps: Sequence[int] = (10, 30, 100, 300, 1000, 3000),
                radius: float = 0.1) -> BenchProblem:
    """The digits MLP 64 → width → 10 (module docstring): SGD checkpoints ± perturbations."""
    ds = load_dataset("digits")
    x, y = ds.x_train[:n_samples].to(F64), ds.y_train[:n_samples]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.Tanh(),
                              nn.Linear(width, 10)).to(F64)
    obj = Objective(model, nn.functional.cross_entropy, (x, y), l2=l2)
    theta, starts = obj.theta.clone(), []
    for step in range(1, max(steps) + 1):
        theta = theta - lr * obj.grad(theta)
        if step in steps:
            starts += perturbed_starts(theta, [0.0, radius], n_per_checkpoint, seed=step,
                                       label=f"sgd-{step}")
    return BenchProblem(f"mlp-{width}-l2={l2:g}", obj, starts)


def _mlp_builder(spec: str) -> Callable[[int], BenchProblem]:
    width, _, l2 = spec.removeprefix("mlp-").partition("-l2=")
    return lambda n_starts: mlp_problem(int(width), float(l2),
                                        max(1, round(n_starts / 6) - 1))


PROBLEMS: dict[str, Callable[[int], BenchProblem]] = {
    **{name: (lambda n, name=name: autoencoder_problem(name, n)) for name in AUTOENCODERS},
    **{spec: _mlp_builder(spec) for spec in ("mlp-16-l2=1e-3", "mlp-16-l2=1e-2",
                                             "mlp-32-l2=1e-3", "mlp-32-l2=1e-2")},
}
DEFAULT_PROBLEMS = tuple(AUTOENCODERS)


def closed_form_matches(point: CriticalPoint, analytic: Sequence[AnalyticCriticalPoint]
                        ) -> list[AnalyticCriticalPoint]:
    """The closed-form classes whose loss equals the point's to ``LOSS_RTOL``."""
    return [cp for cp in analytic if abs(cp.loss - point.loss) <= LOSS_RTOL * abs(cp.loss)]


def summarise(points: Sequence[CriticalPoint], analytic=None) -> dict:
    """One table row (see the module docstring)."""
    n = len(points)
    row: dict = {status: sum(p.status == status for p in points) / n
                 for status in ("critical", "gradient-flat", "max-iterations", "diverged")}
    critical = [p for p in points if p.status == "critical"]
    row["certified"] = sum(p.certified for p in points) / n
    if analytic is not None:
        exact = off = wrong = uncertain = range_ok = 0
        for p in critical:
            matches = closed_form_matches(p, analytic)
            truth = {cp.n_negative for cp in matches}
            off += not matches
            if p.index_stable:
                exact += p.certified and p.n_negative in truth
                wrong += bool(matches) and p.n_negative not in truth
            else:
                uncertain += 1
                range_ok += any(p.n_negative_min <= k <= p.n_negative_max for k in truth)
        row |= {"exact": exact / n, "off-set": off, "index wrong": wrong,
                "uncertain": uncertain, "range ok": range_ok}
    stable = [p for p in critical if p.index_stable]
    row["distinct points"] = len({p.cluster for p in critical})
    row["distinct indices"] = len({p.n_negative for p in stable})
    row["median iters"] = statistics.median(p.iterations for p in points)
    row["median HVPs"] = statistics.median(p.n_hvps for p in points)
    row["median s/search"] = statistics.median(p.wall_time for p in points)
    return row


def run(problems: Sequence[str], methods: Sequence[str], n_starts: int,
        iterations: int | None = None, progress: bool = True) -> dict[tuple[str, str], dict]:
    """Every method on every problem from the same starts; rows keyed by (problem, method).
    ``iterations`` overrides each problem's iteration cap."""
    table = {}
    for name in problems:
        problem = PROBLEMS[name](n_starts)
        th = Thresholds(max_iterations=iterations or problem.max_iterations)
        for method in methods:
            t0 = time.perf_counter()
            points = find_critical_points(problem.objective, problem.starts, method,
                                          thresholds=th, progress=progress)
            row = summarise(points, problem.analytic) | {"starts": len(points),
                                                         "total s": time.perf_counter() - t0}
            table[(name, method)] = row
            print(name, method, row, flush=True)
    return table


def markdown(table: dict[tuple[str, str], dict]) -> str:
    """The table as Markdown, one row per (problem, method)."""
    keys = list(dict.fromkeys(k for row in table.values() for k in row))
    lines = ["| problem | method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for (name, method), row in table.items():
        cells = [f"{row[k]:.2f}" if isinstance(row.get(k), float) else str(row.get(k, "—"))
                 for k in keys]
        lines.append(f"| {name} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", default=",".join(DEFAULT_PROBLEMS),
                        help=f"comma-separated, of: {', '.join(PROBLEMS)}")
    parser.add_argument("--methods", default="auto", help=f"comma-separated, of: auto, "
                                                          f"{', '.join(METHODS)}")
    parser.add_argument("--starts", type=int, default=100, help="starts per problem")
    parser.add_argument("--iterations", type=int, default=None,
                        help="iteration cap per search (default: 500 for frye as in Frye et "
                             "al., else the library default, Thresholds.max_iterations)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    unknown = [p for p in args.problems.split(",") if p not in PROBLEMS]
    if unknown:
        parser.error(f"unknown problems {unknown}; choose from {', '.join(PROBLEMS)}")
    table = run(args.problems.split(","), args.methods.split(","), args.starts,
                args.iterations, progress=not args.no_progress)
    print(markdown(table))


if __name__ == "__main__":
    main()
