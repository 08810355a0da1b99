"""Benchmark of the curvature engine: ratios measured in one process, on fixed digits models.

Run ``python -m landscape.bench`` (or ``landscape bench``). For a tanh MLP and a small LeNet-style
CNN on the digits data, briefly trained full-batch with a fixed seed, it prints:

* HVP time / gradient time, for forward-over-reverse and reverse-over-reverse, one vector and per
  vector in a block of 32;
* dense Hessian time vs ``torch.func.hessian`` of the same full-batch loss, and the extra peak
  memory of each (measured in fresh subprocesses);
* top-5 eigenvalues: time to relative accuracy 1e-6 (against dense ``eigvalsh``) for our Lanczos vs
  PyHessian 0.1's power iteration (tolerance 1e-5, 1e-8, 1e-11 with at most 3000 iterations per
  eigenvalue, until it reaches that accuracy; the last try is reported if none does);
* trace: time for our Hutch++ (and batched Hutchinson) to reach the standard error of PyHessian's
  100-sample Hutchinson loop.

Timings are medians of repeats; only ratios are meant to be compared (machines are noisy).
Everything runs in float64 on ``--device`` (default ``auto``: CUDA when present, else the CPU).
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from landscape.data import load_dataset
from landscape.models import build_model
from landscape.objective import Objective, resolve_device
from landscape.spectrum import estimate_trace, extreme_eigenpairs

CE = nn.functional.cross_entropy
MODELS = {"mlp": "mlp:64-32-10:tanh", "cnn": "lenet:c1=4,c2=8,h=32,act=tanh"}
N_SAMPLES = 500


def _timed(fn: Callable[[], object], repeats: int = 3) -> tuple[float, object]:
    """Median wall time in seconds over ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_problem(name: str, device: str = "cpu") -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The fixed benchmark model ``name`` after 200 full-batch Adam steps on 500 digits."""
    ds = load_dataset("digits")
    x, y = ds.x_train[:N_SAMPLES].double(), ds.y_train[:N_SAMPLES]
    model = build_model(MODELS[name], input_shape=ds.input_shape, n_classes=ds.n_classes,
                        seed=0).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        CE(model(x), y).backward()
        opt.step()
    return model.to(device), (x.to(device), y.to(device))


def hvp_ratios(obj: Objective) -> dict[str, float]:
    theta = obj.theta
    t_grad, _ = _timed(lambda: obj.grad(theta), 5)
    out = {"grad_s": t_grad}
    block = torch.randn(32, obj.num_params, dtype=obj.dtype, device=obj.device)
    for mode in ("fwd-rev", "rev-rev"):
        obj.hvp_mode = mode
        t_one, _ = _timed(lambda: obj.hvp(theta, block[0]), 5)
        t_block, _ = _timed(lambda: obj.hvp(theta, block), 3)
        out[f"hvp/grad {mode}"] = t_one / t_grad
        out[f"hvp/grad {mode}, per vector in a block of 32"] = t_block / 32 / t_grad
    obj.hvp_mode = "fwd-rev"
    return out


def dense_ratios(obj: Objective) -> dict[str, float]:
    theta = obj.theta
    t_ours, ours = _timed(lambda: obj.hessian(theta), 1)
    t_func, ref = _timed(lambda: torch.func.hessian(obj.functional_loss)(theta), 1)
    return {"dense: ours_s": t_ours, "dense: torch.func.hessian_s": t_func,
            "dense: ours / torch.func time": t_ours / t_func,
            "dense: max |ours - torch.func|": float((ours - ref).abs().max())}


def _pyhessian(model: nn.Module, data):
    from pyhessian import hessian  # optional oracle; its constructor calls model.eval()

    return hessian(copy.deepcopy(model), CE, data=data, cuda=False)


class _CountPyhessianHVPs:
    """Counts PyHessian's Hessian-vector products (a machine-independent cost)."""

    def __enter__(self):
        import pyhessian  # noqa: F401  (its __init__ shadows the submodule by the class)

        module = sys.modules["pyhessian.hessian"]
        self.module, self.original, self.count = module, module.hessian_vector_product, 0

        def counted(*args, **kwargs):
            self.count += 1
            return self.original(*args, **kwargs)

        module.hessian_vector_product = counted
        return self

    def __exit__(self, *exc):
        self.module.hessian_vector_product = self.original


def top_eigen_ratios(model: nn.Module, data, obj: Objective, eigenvalues: torch.Tensor,
                     k: int = 5, accuracy: float = 1e-6) -> dict[str, float]:
    exact = eigenvalues.flip(0)[:k]

    def rel_error(values) -> float:
        return float(((torch.as_tensor(values, dtype=torch.float64) - exact).abs()
                      / exact.abs()).max())

    t_ours, pairs = _timed(lambda: extreme_eigenpairs(obj, obj.theta, k=k, tol=accuracy, seed=0))
    values, err, t_ph = None, math.inf, math.nan
    out = {"top5: ours_s": t_ours, "top5: ours rel. error": rel_error(pairs.eigenvalues),
           "top5: ours HVPs": pairs.n_matvecs}
    for tol in (1e-5, 1e-8, 1e-11):  # tightened until it reaches the accuracy (or gives up)
        torch.manual_seed(0)
        with _CountPyhessianHVPs() as counter:
            t_ph, (values, _) = _timed(
                lambda tol=tol: _pyhessian(model, data).eigenvalues(maxIter=3000, tol=tol,
                                                                    top_n=k), 1)
        err = rel_error(sorted(values, reverse=True))
        if err <= accuracy:
            break
    out.update({"top5: pyhessian_s": t_ph, "top5: pyhessian tol": tol,
                "top5: pyhessian HVPs": counter.count,
                "top5: pyhessian rel. error": err,
                "top5: pyhessian / ours time": t_ph / t_ours})
    return out


def trace_ratios(model: nn.Module, data, obj: Objective, eigenvalues: torch.Tensor,
                 n_samples: int = 100) -> dict[str, float]:
    exact = float(eigenvalues.sum())
    torch.manual_seed(0)
    t_ph, samples = _timed(
        lambda: _pyhessian(model, data).trace(maxIter=n_samples, tol=-math.inf), 1)
    samples = torch.tensor(samples, dtype=torch.float64)
    target = float(samples.std()) / math.sqrt(n_samples)
    out = {"trace: exact": exact, "trace: pyhessian value": float(samples.mean()),
           "trace: pyhessian stderr": target, "trace: pyhessian_s": t_ph}
    for method in ("hutchinson", "hutch++"):
        matvecs = 12
        while True:
            t, est = _timed(lambda m=method, v=matvecs: estimate_trace(
                obj, obj.theta, n_matvecs=v, method=m, seed=0), 1)
            if est.stderr <= target or matvecs >= 4 * n_samples:
                break
            matvecs = int(matvecs * 1.5)
        out.update({f"trace: {method} HVPs": est.n_matvecs, f"trace: {method} stderr": est.stderr,
                    f"trace: {method} |error|": abs(est.value - exact),
                    f"trace: pyhessian / {method} time": t_ph / t})
    return out


def memory_probe(name: str, method: str) -> int:
    """Extra peak resident memory (bytes) of one dense Hessian, sampled every millisecond by a
    thread reading ``/proc/self/statm`` (run in a fresh process)."""
    import resource
    import threading

    model, data = bench_problem(name)
    obj = Objective(model, CE, data)
    page = resource.getpagesize()

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    before, peak, done = rss(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    if method == "ours":
        obj.hessian(obj.theta)
    else:
        torch.func.hessian(obj.functional_loss)(obj.theta)
    done.set()
    sampler.join()
    return max(peak[0], rss()) - before


def memory_ratios(name: str, n_params: int) -> dict[str, float]:
    return {"dense: n^2 float64 bytes": n_params**2 * 8,
            "dense: ours extra peak bytes": _memory_in_subprocess(name, "ours"),
            "dense: torch.func extra peak bytes": _memory_in_subprocess(name, "func")}


def _memory_in_subprocess(name: str, method: str) -> int:
    code = f"from landscape.bench import memory_probe; print(memory_probe({name!r}, {method!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def run(device: str = "auto", models: tuple[str, ...] = ("mlp", "cnn"),
        memory: bool = True) -> dict[str, dict[str, float]]:
    """All benchmark numbers, per model."""
    device = str(resolve_device(device))
    results = {}
    for name in models:
        model, data = bench_problem(name, device)
        obj = Objective(model, CE, data, device=device)
        row = {"n_params": obj.num_params, "n_samples": obj.num_samples}
        sections = [(hvp_ratios, obj), (dense_ratios, obj)]
        if device == "cpu":  # PyHessian 0.1 is run with cuda=False only
            eigenvalues = torch.linalg.eigvalsh(obj.hessian(obj.theta))  # the reference
            sections += [(top_eigen_ratios, model, data, obj, eigenvalues),
                         (trace_ratios, model, data, obj, eigenvalues)]
        if memory:
            sections.append((memory_ratios, name, obj.num_params))
        for fn, *args in sections:
            part = fn(*args)
            row.update(part)
            print(f"[{name}] {part}", file=sys.stderr, flush=True)
        results[name] = row
    return results


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    results = run(args.device, tuple(args.models.split(",")), memory=not args.no_memory)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name, row in results.items():
        print(f"== {name} ({MODELS[name]}) ==")
        for key, value in row.items():
            print(f"  {key:48s} {value:.4g}" if isinstance(value, float) else
                  f"  {key:48s} {value}")


if __name__ == "__main__":
    main()
