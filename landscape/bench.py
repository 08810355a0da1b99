"""Benchmark of the curvature engine against its peers, in one process per problem.

Run ``landscape bench curvature`` (or ``python -m landscape.bench``). For a tanh MLP and a small
LeNet-style CNN on 500 digits, briefly trained full-batch with a fixed seed (same model, data and
θ for every tool), it prints ratios and matvec counts:

* **HVP modes**: time of one HVP and per vector in a block of 32, over the gradient's time, for
  each ``Objective`` mode (retained graph, forward-over-reverse, reverse-over-reverse), for
  ``torch.func.linearize`` and (``--compile``) ``torch.compile``, and the mode ``auto`` picks;
* **dense Hessian**: ours vs ``torch.func.hessian`` and curvlinops' ``HessianLinearOperator``
  applied to the identity, their largest differences, and the extra peak memory of ours and
  ``torch.func`` (fresh subprocesses);
* **top-5 eigenvalues** to relative accuracy 1e-6 (against dense ``eigvalsh``): ours (Lanczos
  that stops on its residual bound; block size 1 and 5) vs PyHessian 0.1's power iteration,
  curvlinops + scipy ``eigsh`` and hessian-eigenthings' Lanczos, each tightened along a ladder
  of its own tolerance or iteration count until it reaches the accuracy (the peers cannot tell
  on their own when they have);
* **trace**: for every estimator (ours: Hutchinson, Hutch++, XTrace; curvlinops' and
  hessian-eigenthings' estimators), the smallest budget on a ladder whose root-mean-square error
  over ``TRACE_SEEDS`` seeds (against the exact trace) is at most the standard error of
  PyHessian's 100-sample Hutchinson loop, and the time of one call at that budget.

Peers that are not installed (``pip install -e ".[bench]"``) are reported as missing. Timings
are medians of repeats; only ratios are meant to be compared (machines are noisy). Everything runs
in float64 on ``--device`` (default ``auto``); PyHessian runs on the CPU only.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from landscape.data import load_dataset
from landscape.models import build_model
from landscape.objective import HVP_MODES, Objective, resolve_device
from landscape.spectrum import estimate_trace, extreme_eigenpairs

CE = nn.functional.cross_entropy
MODELS = {"mlp": "mlp:64-32-10:tanh", "cnn": "lenet:c1=4,c2=8,h=32,act=tanh"}
N_SAMPLES = 500
TOP_K, ACCURACY = 5, 1e-6
TRACE_SEEDS = 10
TRACE_LADDER = (12, 18, 30, 42, 60, 90, 132, 198, 300, 450, 678)  # multiples of 6, as peers need
PEERS = ("pyhessian", "curvlinops", "hessian_eigenthings")


def available(peer: str) -> bool:
    return importlib.util.find_spec(peer) is not None


def _timed(fn: Callable[[], object], repeats: int = 3) -> tuple[float, object]:
    """Median wall time in seconds over ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_problem(name: str, device: str = "cpu") -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The benchmark model ``name`` after 200 full-batch Adam steps on 500 digits, in float64 on
    ``device``."""
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


# ------------------------------------------------------------------------------ HVP modes
def hvp_ratios(obj: Objective, compile_hvp: bool = False) -> dict[str, object]:
    theta = obj.theta
    t_grad, _ = _timed(lambda: obj.grad(theta), 5)
    out: dict[str, object] = {"grad_s": t_grad}
    block = torch.randn(32, obj.num_params, dtype=obj.dtype, device=obj.device)
    for mode in HVP_MODES[1:]:
        obj.hvp_mode = mode
        t_one, _ = _timed(lambda: obj.hvp(theta, block[0]), 5)
        t_block, _ = _timed(lambda: obj.hvp(theta, block), 3)
        out[f"hvp/grad {mode}"] = t_one / t_grad
        out[f"hvp/grad {mode}, per vector in a block of 32"] = t_block / 32 / t_grad
    obj.hvp_mode = "auto"
    obj.hvp_plan.clear()
    obj.hvp(theta, block[0])
    obj.hvp(theta, block)
    out["auto picks (single, block)"] = f"{obj.hvp_plan['single']}, {obj.hvp_plan['block']}"
    grad_fn = torch.func.grad(obj.functional_loss)
    start = time.perf_counter()
    _, linear = torch.func.linearize(grad_fn, theta)
    out["linearize: setup / grad"] = (time.perf_counter() - start) / t_grad
    out["hvp/grad linearize"] = _timed(lambda: linear(block[0]), 5)[0] / t_grad
    try:
        t_lin, _ = _timed(lambda: torch.func.vmap(linear)(block), 3)
        out["hvp/grad linearize, per vector in a block of 32"] = t_lin / 32 / t_grad
    except RuntimeError as exc:  # e.g. conv: a view its const-folded graph cannot batch
        out["hvp/grad linearize, per vector in a block of 32"] = f"fails: {str(exc)[:60]}"
    if compile_hvp:
        compiled = torch.compile(lambda v: torch.func.jvp(grad_fn, (theta,), (v,))[1])
        start = time.perf_counter()
        compiled(block[0])
        out["compile (fwd-rev): first call / grad"] = (time.perf_counter() - start) / t_grad
        out["hvp/grad compiled fwd-rev"] = _timed(lambda: compiled(block[0]), 5)[0] / t_grad
    return out


# ------------------------------------------------------------------------------ dense Hessian
def _curvlinops_hessian(model: nn.Module, data):
    from curvlinops import HessianLinearOperator

    params = [p for p in model.parameters() if p.requires_grad]
    return HessianLinearOperator(model, nn.CrossEntropyLoss(), params, [data],
                                 check_deterministic=False)


def dense_ratios(obj: Objective, model: nn.Module, data) -> dict[str, object]:
    theta = obj.theta
    t_ours, ours = _timed(lambda: obj.hessian(theta), 1)
    t_func, ref = _timed(lambda: torch.func.hessian(obj.functional_loss)(theta), 1)
    out: dict[str, object] = {
        "dense: ours_s": t_ours, "dense: block size": obj.dense_block_size(),
        "dense: ours / torch.func time": t_ours / t_func,
        "dense: max |ours - torch.func|": float((ours - ref).abs().max())}
    if available("curvlinops"):
        op = _curvlinops_hessian(model, data)
        eye = torch.eye(obj.num_params, dtype=obj.dtype, device=obj.device)
        t_cl, theirs = _timed(lambda: op @ eye, 1)
        out["dense: ours / curvlinops time"] = t_ours / t_cl
        out["dense: max |ours - curvlinops|"] = float((ours - theirs).abs().max())
    return out


# ------------------------------------------------------------------------------ top-k
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


def _pyhessian(model: nn.Module, data):
    from pyhessian import hessian  # its constructor calls model.eval()

    return hessian(copy.deepcopy(model), CE, data=data, cuda=False)


def _ladder(run: Callable[[object], tuple[float, list[float], int]], settings, error):
    """Run ``run(setting) -> (seconds, values, matvecs)`` along ``settings`` until ``error``
    of the values reaches ``ACCURACY``; the last try is reported if none does."""
    for setting in settings:
        seconds, values, matvecs = run(setting)
        if error(values) <= ACCURACY:
            break
    return setting, seconds, error(values), matvecs


def top_eigen_ratios(model: nn.Module, data, obj: Objective,
                     eigenvalues: torch.Tensor) -> dict[str, object]:
    exact = eigenvalues.flip(0)[:TOP_K].cpu()

    def rel_error(values) -> float:
        values = torch.as_tensor(sorted(values, reverse=True), dtype=torch.float64)
        return float(((values - exact).abs() / exact.abs()).max())

    out: dict[str, object] = {}
    for b in (1, TOP_K):
        t, pairs = _timed(lambda b=b: extreme_eigenpairs(obj, obj.theta, k=TOP_K,
                                                         tol=ACCURACY, seed=0, block_size=b))
        tag = "ours" if b == 1 else f"ours block {b}"
        out.update({f"top{TOP_K}: {tag}_s": t, f"top{TOP_K}: {tag} HVPs": pairs.n_matvecs,
                    f"top{TOP_K}: {tag} rel. error": rel_error(pairs.eigenvalues.tolist()),
                    f"top{TOP_K}: {tag} converged": bool(pairs.converged.all())})
    t_ours = out[f"top{TOP_K}: ours_s"]  # single-vector Lanczos: what the peers are set against
    if available("pyhessian") and obj.device.type == "cpu":
        def pyhessian_run(tol):
            torch.manual_seed(0)
            with _CountPyhessianHVPs() as counter:
                t, (values, _) = _timed(lambda: _pyhessian(model, data).eigenvalues(
                    maxIter=3000, tol=tol, top_n=TOP_K), 1)
            return t, values, counter.count
        _peer(out, "pyhessian", "tol", t_ours,
              _ladder(pyhessian_run, (1e-5, 1e-8, 1e-11), rel_error))
    if available("curvlinops"):
        out.update(_eigsh_ratios(model, data, t_ours, rel_error))
    if available("hessian_eigenthings"):
        out.update(_eigenthings_ratios(model, data, t_ours, rel_error))
    return out


def _peer(out: dict, name: str, knob: str, t_ours: float, found) -> None:
    setting, seconds, error, matvecs = found
    out.update({f"top{TOP_K}: {name} {knob}": setting, f"top{TOP_K}: {name} HVPs": matvecs,
                f"top{TOP_K}: {name} rel. error": error,
                f"top{TOP_K}: {name} / ours time": seconds / t_ours})


def _eigsh_ratios(model, data, t_ours, rel_error) -> dict[str, object]:
    from scipy.sparse.linalg import LinearOperator, eigsh

    op = _curvlinops_hessian(model, data).to_scipy()
    count = [0]

    def matvec(x):
        count[0] += 1
        return op @ x

    counted = LinearOperator(op.shape, matvec=matvec, dtype=op.dtype)

    def run(tol):
        count[0] = 0
        start = time.perf_counter()
        values = eigsh(counted, k=TOP_K, which="LA", tol=tol, v0=np.ones(op.shape[0]),
                       return_eigenvectors=False)
        return time.perf_counter() - start, values.tolist(), count[0]
    out: dict[str, object] = {}
    _peer(out, "curvlinops+eigsh", "tol", t_ours, _ladder(run, (1e-6, 1e-8, 1e-10, 0), rel_error))
    return out


def _eigenthings_ratios(model, data, t_ours, rel_error) -> dict[str, object]:
    import hessian_eigenthings as he

    op = he.HessianOperator(copy.deepcopy(model), [data], he.supervised_loss(CE))
    original, count = op.matvec, [0]

    def matvec(v):
        count[0] += 1 if v.ndim == 1 else v.shape[0]
        return original(v)

    op.matvec = matvec
    converged = [False]

    def run(steps):
        count[0] = 0
        start = time.perf_counter()
        result = he.lanczos(op, k=TOP_K, max_iter=steps, tol=ACCURACY, which="LA", seed=0,
                            reorthogonalize=True)
        converged[0] = bool(result.converged.all())
        return time.perf_counter() - start, result.eigenvalues.tolist(), count[0]
    out: dict[str, object] = {}
    _peer(out, "hessian-eigenthings", "steps", t_ours,
          _ladder(run, (10, 15, 20, 25, 30, 40, 60, 90, 135), rel_error))
    out[f"top{TOP_K}: hessian-eigenthings converged flag"] = converged[0]
    return out


# ------------------------------------------------------------------------------ trace
def _cheapest_at(target: float, exact: float,
                 call: Callable[[int, int], float]) -> tuple[int, float, float]:
    """Smallest budget on ``TRACE_LADDER`` whose RMS error over ``TRACE_SEEDS`` seeds of
    ``call(budget, seed) -> value`` is ≤ target: (budget, RMS error, seconds per call)."""
    for budget in TRACE_LADDER:
        start = time.perf_counter()
        errors = [call(budget, seed) - exact for seed in range(TRACE_SEEDS)]
        seconds = (time.perf_counter() - start) / TRACE_SEEDS
        rms = math.sqrt(sum(e * e for e in errors) / len(errors))
        if rms <= target:
            break
    return budget, rms, seconds


def _seeded(estimator, op) -> Callable[[int, int], float]:
    """``(budget, seed) -> value`` for a peer estimator that draws from torch's global RNG."""
    def call(budget: int, seed: int) -> float:
        torch.manual_seed(seed)
        return float(estimator(op, budget))
    return call


def trace_ratios(model: nn.Module, data, obj: Objective, eigenvalues: torch.Tensor,
                 n_samples: int = 100) -> dict[str, object]:
    exact = float(eigenvalues.sum())
    out: dict[str, object] = {"trace: exact": exact}
    if not (available("pyhessian") and obj.device.type == "cpu"):
        return out
    torch.manual_seed(0)
    t_ph, samples = _timed(
        lambda: _pyhessian(model, data).trace(maxIter=n_samples, tol=-math.inf), 1)
    samples = torch.tensor(samples, dtype=torch.float64)
    target = float(samples.std()) / math.sqrt(n_samples)
    out.update({"trace: pyhessian stderr (the target)": target, "trace: pyhessian_s": t_ph,
                "trace: pyhessian |error|": abs(float(samples.mean()) - exact)})
    estimators: dict[str, Callable[[int, int], float]] = {
        f"ours {m}": (lambda v, s, m=m: estimate_trace(obj, obj.theta, n_matvecs=v, method=m,
                                                       seed=s).value)
        for m in ("hutchinson", "hutch++", "xtrace")}
    if available("curvlinops"):
        import curvlinops

        op = _curvlinops_hessian(model, data)
        for name in ("hutchinson_trace", "hutchpp_trace", "xtrace"):
            estimators[f"curvlinops {name}"] = _seeded(getattr(curvlinops, name), op)
    if available("hessian_eigenthings"):
        import hessian_eigenthings as he

        he_op = he.HessianOperator(copy.deepcopy(model), [data], he.supervised_loss(CE))
        estimators["hessian-eigenthings hutch++"] = (
            lambda v, s: float(he.hutch_plus_plus(he_op, num_matvecs=v, seed=s).estimate))
    for name, call in estimators.items():
        budget, rms, seconds = _cheapest_at(target, exact, call)
        out.update({f"trace: {name} HVPs": budget, f"trace: {name} RMS error": rms,
                    f"trace: pyhessian / {name} time": t_ph / seconds})
    return out


# ------------------------------------------------------------------------------ memory
def memory_probe(name: str, method: str) -> int:
    """Extra peak resident memory (bytes) of one dense Hessian (run in a fresh process)."""
    from landscape.bench_scaling import PeakMemory

    model, data = bench_problem(name)
    obj = Objective(model, CE, data)
    with PeakMemory(obj.device) as peak:
        if method == "ours":
            obj.hessian(obj.theta)
        else:
            torch.func.hessian(obj.functional_loss)(obj.theta)
    return peak.bytes


def memory_ratios(name: str, n_params: int) -> dict[str, float]:
    return {"dense: n^2 float64 bytes": n_params**2 * 8,
            "dense: ours extra peak bytes": _memory_in_subprocess(name, "ours"),
            "dense: torch.func extra peak bytes": _memory_in_subprocess(name, "func")}


def _memory_in_subprocess(name: str, method: str) -> int:
    code = f"from landscape.bench import memory_probe; print(memory_probe({name!r}, {method!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ driver
def run(device: str = "auto", models: tuple[str, ...] = ("mlp", "cnn"), memory: bool = True,
        compile_hvp: bool = False) -> dict[str, dict[str, object]]:
    """All benchmark numbers, per model."""
    device = str(resolve_device(device))
    results = {}
    print("peers: " + ", ".join(f"{p} {'yes' if available(p) else 'missing'}" for p in PEERS),
          file=sys.stderr)
    for name in models:
        model, data = bench_problem(name, device)
        obj = Objective(model, CE, data, device=device)
        row: dict[str, object] = {"n_params": obj.num_params, "n_samples": obj.num_samples}
        eigenvalues = torch.linalg.eigvalsh(obj.hessian(obj.theta))  # the reference
        sections = [(hvp_ratios, obj, compile_hvp), (dense_ratios, obj, model, data),
                    (top_eigen_ratios, model, data, obj, eigenvalues),
                    (trace_ratios, model, data, obj, eigenvalues)]
        if memory and device == "cpu":
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
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile of the fwd-rev HVP (compiles for ~15 s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    results = run(args.device, tuple(args.models.split(",")), memory=not args.no_memory,
                  compile_hvp=args.compile)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name, row in results.items():
        print(f"== {name} ({MODELS[name]}) ==")
        for key, value in row.items():
            print(f"  {key:60s} {value:.4g}" if isinstance(value, float) else
                  f"  {key:60s} {value}")


if __name__ == "__main__":
    main()
