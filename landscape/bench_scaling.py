"""How the curvature engine's cost grows with the number of parameters and of samples.

Run ``landscape bench scaling`` (or ``python -m landscape.bench_scaling``). Tanh MLPs on the
digits (two hidden layers of width w: from about 1k to 1M parameters at 500 samples, then the
2.4k-parameter one at 100 … 1,347 samples) are timed, at their initialisation, for: a gradient,
one HVP, 32 HVPs in a block, the top-5 eigenvalues (Lanczos to 1e-6, with its HVP count), a
99-HVP Hutch++ trace, and — up to ``DENSE_MAX_PARAMS`` — the dense Hessian. Each row records
the extra peak memory of its measurements (``PeakMemory``: the resident-set high-water mark on
the CPU, the allocator's peak on CUDA). Writes a CSV table and a log-log figure (seaborn).
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

import pandas as pd
import torch

from landscape.bench import CE, _timed
from landscape.data import load_dataset
from landscape.models import build_model
from landscape.objective import Objective, resolve_device
from landscape.spectrum import estimate_trace, extreme_eigenpairs

WIDTHS = (12, 24, 48, 112, 240, 480, 960)  # 1.1k … 995k parameters (64 inputs, 10 classes)
SAMPLES = (100, 250, 500, 1000, 1347)  # 1,347: the whole digits training split
SAMPLES_WIDTH = 24  # 2,410 parameters
DENSE_MAX_PARAMS = 6000
OPERATIONS = ("gradient", "HVP", "HVP per vector, block of 32", "top-5 eigenvalues",
              "trace (Hutch++, 99 HVPs)", "dense Hessian")


class PeakMemory:
    """Extra peak memory (bytes, ``.bytes``) used inside the ``with`` block on ``device``: the
    CUDA allocator's peak, or on the CPU (Linux) the kernel's resident-set high-water mark,
    reset on entry (``/proc/self/clear_refs``, after ``malloc_trim`` hands freed heap pages
    back), minus the resident set on entry. No sampling thread: timings are undisturbed.
    ``bytes`` is None where the kernel cannot reset the mark."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.bytes: int | None = None

    @staticmethod
    def _status(field: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # kB
        raise OSError(f"no {field} in /proc/self/status")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
            return self
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current resident set (Linux ≥ 4.0)
            self._before = self._status("VmRSS")
        except OSError:
            self._before = None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._before
        elif self._before is not None:
            self.bytes = self._status("VmHWM") - self._before


def _problem(width: int, n_samples: int, device: str) -> Objective:
    ds = load_dataset("digits")
    model = build_model(f"mlp:_-{width}-{width}-_:tanh", input_shape=ds.input_shape,
                        n_classes=ds.n_classes, seed=0)
    return Objective(model, CE, (ds.x_train[:n_samples], ds.y_train[:n_samples]),
                     device=device)


def measure(obj: Objective) -> list[dict]:
    """One row per operation: seconds, HVPs, extra peak memory (bytes)."""
    theta, n = obj.theta, obj.num_params
    block = torch.randn(32, n, dtype=obj.dtype, generator=torch.Generator().manual_seed(0))
    block = block.to(obj.device)
    obj.hvp(theta, block[0])  # the automatic mode choice, outside the timings
    obj.hvp(theta, block)
    jobs = {
        "gradient": (lambda: obj.grad(theta), 0, 3),
        "HVP": (lambda: obj.hvp(theta, block[0]), 1, 3),
        "HVP per vector, block of 32": (lambda: obj.hvp(theta, block), 32, 2),
        "top-5 eigenvalues": (lambda: extreme_eigenpairs(obj, theta, k=5, tol=1e-6), None, 1),
        "trace (Hutch++, 99 HVPs)": (lambda: estimate_trace(obj, theta, n_matvecs=99), 99, 1),
    }
    if n <= DENSE_MAX_PARAMS:
        jobs["dense Hessian"] = (lambda: obj.hessian(theta), n, 1)
    rows = []
    for operation, (fn, hvps, repeats) in jobs.items():
        with PeakMemory(obj.device) as peak:
            seconds, result = _timed(fn, repeats)
        if hvps is None:
            hvps = result.n_matvecs
        per = 32 if operation.startswith("HVP per vector") else 1
        rows.append({"operation": operation, "n_params": n, "n_samples": obj.num_samples,
                     "seconds": seconds / per, "hvps": hvps, "peak_bytes": peak.bytes,
                     "hvp_modes": f"{obj.hvp_plan.get('single')}/{obj.hvp_plan.get('block')}"})
    obj.release()
    return rows


def run(device: str = "auto", widths=WIDTHS, samples=SAMPLES) -> pd.DataFrame:
    device = str(resolve_device(device))
    rows = []
    for axis, cases in (("parameters", [(w, 500) for w in widths]),
                        ("samples", [(SAMPLES_WIDTH, s) for s in samples])):
        for width, n_samples in cases:
            obj = _problem(width, n_samples, device)
            for row in measure(obj):
                rows.append({"axis": axis, "device": device, **row})
            print(f"[{axis}] n={obj.num_params:,} N={n_samples}: done", file=sys.stderr,
                  flush=True)
    return pd.DataFrame(rows)


def markdown_table(df: pd.DataFrame) -> str:
    """Seconds per operation (columns) against parameters, for the README."""
    params = df[df.axis == "parameters"]
    wide = params.pivot_table(index="n_params", columns="operation", values="seconds")
    wide = wide[[c for c in OPERATIONS if c in wide.columns]]
    peak = params.groupby("n_params").peak_bytes.max() / 2**20  # NaN where unknown
    lines = ["| parameters | " + " | ".join(wide.columns) + " | peak MiB |",
             "|---:|" + "---:|" * (len(wide.columns) + 1)]
    for n, row in wide.iterrows():
        cells = ["–" if pd.isna(v) else f"{v:.3g}" for v in row]
        memory = "–" if pd.isna(peak[n]) else f"{peak[n]:.0f}"
        lines.append(f"| {n:,} | " + " | ".join(cells) + f" | {memory} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from landscape.plots import scaling_curves

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="outputs/bench-scaling",
                        help="folder for scaling.csv and scaling.png")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    parser.add_argument("--samples", default=",".join(map(str, SAMPLES)))
    args = parser.parse_args(argv)
    df = run(args.device, tuple(int(w) for w in args.widths.split(",")),
             tuple(int(s) for s in args.samples.split(",")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "scaling.csv", index=False)
    scaling_curves(df).savefig(out / "scaling.png", dpi=120)
    print(markdown_table(df))
    print(f"wrote {out / 'scaling.csv'} and {out / 'scaling.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
