"""The curvature benchmark's sections on a tiny model: every HVP mode reported with the pick of
``auto``, our top-5 at the accuracy with PyHessian tightened until it gets there (or reported at
its last try), and every trace estimator at the budget its ladder finds."""

from __future__ import annotations

import torch
from torch import nn

from landscape import bench
from landscape.objective import HVP_MODES, Objective
from tests.conftest import mlp


def tiny(data):
    model = mlp(nn.Tanh).double()
    x, y = data[0].double(), data[1]
    obj = Objective(model, bench.CE, (x, y))
    return model, (x, y), obj, torch.linalg.eigvalsh(obj.hessian(obj.theta))


def test_hvp_section_reports_every_mode_and_the_automatic_pick(data):
    _, _, obj, _ = tiny(data)
    out = bench.hvp_ratios(obj)
    for mode in HVP_MODES[1:]:
        assert out[f"hvp/grad {mode}"] > 0
        assert out[f"hvp/grad {mode}, per vector in a block of 32"] > 0
    single, block = out["auto picks (single, block)"].split(", ")
    assert {single, block} <= set(HVP_MODES[1:]) and out["linearize: setup / grad"] > 0


def test_top_eigen_and_trace_sections_reach_their_targets(data, monkeypatch):
    model, xy, obj, eigenvalues = tiny(data)
    monkeypatch.setattr(bench, "available", lambda name: name == "pyhessian")  # core deps only
    top = bench.top_eigen_ratios(model, xy, obj, eigenvalues)
    assert top["top5: ours rel. error"] <= bench.ACCURACY and top["top5: ours converged"]
    assert top["top5: ours HVPs"] <= obj.num_params
    assert top["top5: pyhessian HVPs"] > top["top5: ours HVPs"]
    assert top["top5: pyhessian / ours time"] > 0
    trace = bench.trace_ratios(model, xy, obj, eigenvalues)
    target = trace["trace: pyhessian stderr (the target)"]
    for method in ("hutchinson", "hutch++", "xtrace"):
        assert trace[f"trace: ours {method} HVPs"] in bench.TRACE_LADDER
        reached = trace[f"trace: ours {method} RMS error"] <= target
        assert reached or trace[f"trace: ours {method} HVPs"] == bench.TRACE_LADDER[-1]
