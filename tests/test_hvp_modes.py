"""How the Objective takes its HVPs: the retained first-order graph, the automatic choice among
modes, and the dense-build block size sized from free memory."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from landscape import objective as objective_module
from landscape.objective import HVP_MODES, Objective
from tests.conftest import mlp, small_cnn

CE = nn.functional.cross_entropy


@pytest.fixture
def obj_and_vectors(data):
    obj = Objective(small_cnn(), CE, data, chunk_size=13, l2=0.01)
    vectors = torch.randn(6, obj.num_params, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(4))
    return obj, vectors


def test_every_mode_gives_the_same_products_with_chunks_and_l2(obj_and_vectors):
    obj, vectors = obj_and_vectors
    reference = torch.func.hessian(obj.functional_loss)(obj.theta)
    for mode in HVP_MODES:
        obj.hvp_mode = mode
        torch.testing.assert_close(obj.hvp(obj.theta, vectors), vectors @ reference,
                                   rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(obj.hvp(obj.theta, vectors[0]), reference @ vectors[0],
                                   rtol=1e-10, atol=1e-12)


def test_the_retained_graph_is_built_once_per_theta_and_rebuilt_when_theta_moves(data):
    obj = Objective(mlp(nn.Tanh), CE, data, hvp_mode="retained")
    v = torch.randn(obj.num_params, dtype=torch.float64)
    obj.hvp(obj.theta, v)
    graph = obj._graph
    obj.hvp(obj.theta.clone(), torch.randn(3, obj.num_params, dtype=torch.float64))
    assert obj._graph is graph  # equal θ (another tensor): the same graph
    moved = obj.theta + 0.1
    torch.testing.assert_close(obj.hvp(moved, v),
                               torch.func.hessian(obj.functional_loss)(moved) @ v,
                               rtol=1e-10, atol=1e-12)
    assert obj._graph is not graph and torch.equal(obj._graph.theta, moved)
    assert obj._graph.nbytes > 0
    obj.release()
    assert obj._graph is None


def test_an_objective_holding_a_graph_can_be_copied_and_pickled(data):
    obj = Objective(mlp(nn.Tanh), CE, data, hvp_mode="retained")
    v = torch.randn(obj.num_params, dtype=torch.float64)
    expected = obj.hvp(obj.theta, v)
    for clone in (copy.deepcopy(obj), pickle.loads(pickle.dumps(obj))):
        assert clone._graph is None
        torch.testing.assert_close(clone.hvp(clone.theta, v), expected, rtol=1e-12, atol=1e-14)


def test_auto_times_every_mode_per_kind_and_records_the_fastest(data):
    obj = Objective(mlp(nn.Tanh), CE, data)
    assert obj.hvp_mode == "auto" and obj.hvp_plan == {}
    obj.hvp(obj.theta, torch.randn(obj.num_params, dtype=torch.float64))
    assert set(obj.hvp_plan) == {"single"}
    obj.hvp(obj.theta, torch.randn(4, obj.num_params, dtype=torch.float64))
    for kind in ("single", "block"):
        timings = obj.hvp_timings[kind]
        assert set(timings) == set(HVP_MODES[1:]) and all(t > 0 for t in timings.values())
        assert obj.hvp_plan[kind] == min(timings, key=timings.get)
    pinned = Objective(mlp(nn.Tanh), CE, data, hvp_mode="rev-rev")
    pinned.hvp(pinned.theta, torch.randn(2, pinned.num_params, dtype=torch.float64))
    assert pinned.hvp_plan == {"block": "rev-rev"} and pinned.hvp_timings == {}


def test_auto_leaves_out_a_mode_that_fails_and_a_graph_that_does_not_fit(monkeypatch):
    """mse_loss has no forward-mode HVP in torch 2.13; a tiny memory budget refuses the graph."""
    x = torch.randn(30, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(objective_module, "available_memory", lambda device: 64)
    obj = Objective(nn.Sequential(nn.Linear(4, 4), nn.Tanh()), nn.functional.mse_loss, (x, x))
    dense = obj.hessian_op(obj.theta).dense(block_size=5)  # (obj.hessian: no room for [n, n])
    assert obj.hvp_plan == {"block": "rev-rev"} and set(obj.hvp_timings["block"]) == {"rev-rev"}
    torch.testing.assert_close(dense, torch.func.hessian(obj.functional_loss)(obj.theta),
                               rtol=1e-10, atol=1e-12)
    obj.hvp_mode = "retained"
    with pytest.raises(MemoryError, match="retained first-order graph"):
        obj.hvp(obj.theta, x.new_ones(obj.num_params))


def test_a_loss_linear_in_theta_has_a_zero_hessian_in_the_retained_mode():
    x = torch.randn(8, 3, dtype=torch.float64)
    obj = Objective(nn.Linear(3, 1), lambda out, y: (out.squeeze(1) * y).mean(),
                    (x, torch.randn(8, dtype=torch.float64)), hvp_mode="retained", l2=0.5)
    v = torch.randn(obj.num_params, dtype=torch.float64)
    torch.testing.assert_close(obj.hvp(obj.theta, v), 0.5 * v, rtol=0, atol=0)


def test_the_dense_block_size_follows_free_memory(monkeypatch, data):
    obj = Objective(mlp(nn.Tanh), CE, data)
    assert obj.dense_block_size() == obj.num_params  # 117 parameters: one block, under the cap
    monkeypatch.setattr(objective_module, "available_memory", lambda device: 10**6)
    small = obj.dense_block_size()
    assert 1 <= small < obj.num_params
    op = obj.hessian_op(obj.theta)
    assert op.block_size == small
    torch.testing.assert_close(op.dense(), torch.func.hessian(obj.functional_loss)(obj.theta),
                               rtol=1e-10, atol=1e-12)
    assert op.n_matvecs == obj.num_params


def test_an_operator_sizes_its_dense_blocks_only_when_made_dense(monkeypatch, data):
    """Optimizers build a Hessian operator per minibatch for Krylov products only: no forward
    pass to count activations for a dense build that never comes."""
    obj = Objective(mlp(nn.Tanh), CE, data)
    calls = []
    monkeypatch.setattr(obj, "dense_block_size", lambda: calls.append(1) or 7)
    op = obj.hessian_op(obj.theta)
    op(torch.randn(3, obj.num_params, dtype=torch.float64))
    assert calls == []
    assert op.block_size == 7 and op.block_size == 7 and calls == [1]
