"""The curvature engine on CUDA (skipped without a GPU): every HVP mode, dense Hessian and
float64 eigh on the device, block Lanczos, the trace estimators giving the CPU's numbers for a
seed (probes are drawn on the CPU), the dense block sized from device memory, and the memory
probe of the scaling benchmark."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.bench_scaling import PeakMemory
from landscape.objective import DENSE_BLOCK_CAP, HVP_MODES, Objective
from landscape.spectrum import estimate_trace, extreme_eigenpairs, full_spectrum
from tests.conftest import small_cnn

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CE = nn.functional.cross_entropy


@pytest.fixture
def pair(data):
    return (Objective(small_cnn(), CE, data, chunk_size=16),
            Objective(small_cnn(), CE, data, chunk_size=16, device="cuda"))


def test_every_hvp_mode_on_cuda_matches_the_cpu(pair):
    cpu, gpu = pair
    v = torch.randn(5, cpu.num_params, dtype=torch.float64)
    expected = cpu.hvp(cpu.theta, v)
    for mode in HVP_MODES:
        gpu.hvp_mode = mode
        torch.testing.assert_close(gpu.hvp(gpu.theta, v.cuda()).cpu(), expected, rtol=1e-10,
                                   atol=1e-12)
        torch.testing.assert_close(gpu.hvp(gpu.theta, v[0].cuda()).cpu(), expected[0],
                                   rtol=1e-10, atol=1e-12)
    assert set(gpu.hvp_plan) == {"single", "block"}


def test_dense_spectrum_block_lanczos_and_traces_on_cuda(pair):
    cpu, gpu = pair
    spec_cpu, spec_gpu = full_spectrum(cpu, cpu.theta), full_spectrum(gpu, gpu.theta)
    assert spec_gpu.eigenvalues.device.type == "cuda"
    assert spec_gpu.eigenvalues.dtype == torch.float64
    torch.testing.assert_close(spec_gpu.eigenvalues.cpu(), spec_cpu.eigenvalues, rtol=1e-9,
                               atol=1e-11)
    top = extreme_eigenpairs(gpu, gpu.theta, k=3, block_size=3, tol=1e-8)
    torch.testing.assert_close(top.eigenvalues.cpu(), spec_cpu.eigenvalues.flip(0)[:3],
                               rtol=1e-7, atol=0)
    for method in ("hutch++", "xtrace"):
        a = estimate_trace(cpu, cpu.theta, n_matvecs=30, method=method, seed=3)
        b = estimate_trace(gpu, gpu.theta, n_matvecs=30, method=method, seed=3)
        assert b.value == pytest.approx(a.value, rel=1e-9)
    g = estimate_trace(gpu.ggn_op(gpu.theta), n_matvecs=30, method="xnystrace", seed=3)
    c = estimate_trace(cpu.ggn_op(cpu.theta), n_matvecs=30, method="xnystrace", seed=3)
    assert g.value == pytest.approx(c.value, rel=1e-8)


def test_dense_blocks_are_sized_from_device_memory_and_the_probe_sees_the_device(pair):
    _, gpu = pair
    assert 1 <= gpu.dense_block_size() <= min(gpu.num_params, DENSE_BLOCK_CAP["cuda"])
    with PeakMemory(torch.device("cuda")) as peak:
        block = torch.ones(2**25, device="cuda", dtype=torch.float64)  # 256 MiB
        del block
    assert peak.bytes >= 2**28
