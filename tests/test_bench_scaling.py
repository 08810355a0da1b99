"""The scaling benchmark's pieces: the memory probe sees an allocation, one measured problem
gives every operation with the HVP counts it must have, the table and the log-log figure."""

from __future__ import annotations

import pandas as pd
import torch

from landscape.bench_scaling import OPERATIONS, PeakMemory, _problem, markdown_table, measure
from landscape.plots import scaling_curves


def test_peak_memory_sees_a_large_allocation_that_is_freed_inside_the_block():
    with PeakMemory(torch.device("cpu")) as peak:
        block = torch.ones(64, 2**20, dtype=torch.float64)  # 512 MiB, touched
        del block
    assert peak.bytes > 256 * 2**20


def test_one_problem_measures_every_operation_with_its_hvp_count():
    obj = _problem(8, 60, "cpu")  # 64-8-8-10: 682 parameters
    rows = pd.DataFrame(measure(obj))
    assert list(rows.operation) == list(OPERATIONS)
    hvps = dict(zip(rows.operation, rows.hvps))
    assert hvps["HVP"] == 1 and hvps["trace (Hutch++, 99 HVPs)"] == 99
    assert hvps["dense Hessian"] == obj.num_params == 682
    assert 5 <= hvps["top-5 eigenvalues"] <= 300
    assert (rows.seconds > 0).all() and (rows.n_params == 682).all()
    assert obj._graph is None  # released after the measurements


def test_table_and_figure_from_both_axes():
    rows = []
    for axis, n, samples in (("parameters", 1000, 500), ("parameters", 4000, 500),
                             ("samples", 1000, 100), ("samples", 1000, 500)):
        for i, op in enumerate(OPERATIONS[:3]):
            rows.append({"axis": axis, "device": "cpu", "operation": op, "n_params": n,
                         "n_samples": samples, "seconds": 1e-3 * (i + 1) * n / 1000,
                         "hvps": 1, "peak_bytes": 2**20 * n / 1000})
    df = pd.DataFrame(rows)
    table = markdown_table(df).splitlines()
    assert table[0].startswith("| parameters | gradient | HVP |") and len(table) == 4
    assert table[3].startswith("| 4,000 | 0.004 | 0.008 |") and table[3].endswith("| 4 |")
    fig = scaling_curves(df)
    axes = fig.axes
    assert len(axes) == 3 and all(ax.get_xscale() == "log" == ax.get_yscale() for ax in axes)
    assert len(axes[0].get_legend().get_texts()) == 3
