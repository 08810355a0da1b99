"""Benchmark of the critical-point methods: outcome fractions, iterations, HVPs and wall time.

Run ``python -m landscape.bench_critical [--starts N] [--iterations K]``. Two problems:

* the deep linear autoencoder 8 → 3 → 8 on 200 Gaussian samples (closed-form critical points,
  Baldi & Hornik 1989), random starts; a point counts as *exact* when it is critical and its loss
  and index equal a closed-form pair;
* a 64 → 6 → 10 tanh MLP on 400 digits, cross-entropy + L2 (``--l2``), starts = checkpoints along a
  full-batch SGD run (steps 10, 30, 100, 300, 1000) and perturbations of them (radius 0.1).

For each method it prints the fraction of starts per status, the fraction certified, and the
medians of iterations, HVPs and wall time per search.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from landscape.critical import METHODS, Start, Thresholds, find_critical_points, perturbed_starts
from landscape.critical.linear_autoencoder import (
    analytic_critical_points,
    autoencoder_loss,
    linear_autoencoder,
)
from landscape.data import load_dataset
from landscape.objective import Objective

F64 = torch.float64


def autoencoder_problem(n_starts: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g, dtype=F64) * torch.linspace(1, 3, 8, dtype=F64)
    x = x - x.mean(dim=0)
    obj = Objective(linear_autoencoder(8, 3), autoencoder_loss, (x, x))
    analytic = analytic_critical_points(torch.linalg.eigvalsh(x.T @ x / 200), 3)
    starts = [Start(0.5 * torch.randn(obj.num_params, generator=g, dtype=F64), f"random-{i}",
                    "random") for i in range(n_starts)]
    return obj, starts, analytic


def mlp_problem(n_per_checkpoint: int, l2: float):
    ds = load_dataset("digits")
    x, y = ds.x_train[:400].to(F64), ds.y_train[:400]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.Tanh(), nn.Linear(6, 10)).to(F64)
    obj = Objective(model, nn.functional.cross_entropy, (x, y), l2=l2)
    theta, starts = obj.theta.clone(), []
    for step in range(1, 1001):  # full-batch SGD on the same objective, lr 0.1
        theta = theta - 0.1 * obj.grad(theta)
        if step in (10, 30, 100, 300, 1000):
            starts += perturbed_starts(theta, [0.0, 0.1], n_per_checkpoint, seed=step,
                                       label=f"sgd-{step}")
    return obj, starts


def summarise(points, wall: float, analytic=None) -> dict:
    n = len(points)
    row = {status: sum(p.status == status for p in points) / n
           for status in ("critical", "gradient-flat", "max-iterations", "diverged")}
    row["certified"] = sum(p.certified for p in points) / n
    row["passed GF"] = sum(p.passed_gradient_flat for p in points) / n
    if analytic is not None:
        pairs = [(cp.loss, cp.n_negative) for cp in analytic]
        row["exact"] = sum(
            p.status == "critical" and any(abs(p.loss - lo) <= 1e-6 * lo and p.n_negative == k
                                           for lo, k in pairs) for p in points) / n
    row["median iters"] = statistics.median(p.iterations for p in points)
    row["median HVPs"] = statistics.median(p.n_hvps for p in points)
    row["median s/search"] = statistics.median(p.wall_time for p in points)
    row["total s"] = wall
    return row


def run(methods, n_starts: int, iterations: int, l2: float, per_checkpoint: int):
    th = Thresholds(max_iterations=iterations)
    problems = {"linear AE 8-3-8": autoencoder_problem(n_starts)}
    obj, starts = mlp_problem(per_checkpoint, l2)
    problems[f"tanh MLP 64-6-10, L2 {l2:g}"] = (obj, starts, None)
    table = {}
    for name, (obj, starts, analytic) in problems.items():
        for method in methods:
            t0 = time.perf_counter()
            points = find_critical_points(obj, starts, method, thresholds=th, progress=False)
            table[(name, method)] = summarise(points, time.perf_counter() - t0, analytic)
            print(name, method, table[(name, method)], flush=True)
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--starts", type=int, default=10, help="autoencoder starts")
    parser.add_argument("--per-checkpoint", type=int, default=1,
                        help="perturbed starts per MLP checkpoint")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--l2", type=float, default=0.1)
    args = parser.parse_args(argv)
    table = run(args.methods.split(","), args.starts, args.iterations, args.l2,
                args.per_checkpoint)
    keys = list(dict.fromkeys(k for row in table.values() for k in row))
    print("| problem | method | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 2) + "|")
    for (name, method), row in table.items():
        cells = [f"{row[k]:.2f}" if isinstance(row.get(k), float) else str(row.get(k, "—"))
                 for k in keys]
        print(f"| {name} | {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
