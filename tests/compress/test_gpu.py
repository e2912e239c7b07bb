"""The same k-means and PLAS code on CUDA (skipped, and not counted, without a CUDA device)."""

from __future__ import annotations

import pytest
import torch

from spaceport.stages.compress.kmeans import kmeans
from spaceport.stages.compress.plas import plas_sort

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_kmeans_on_cuda_matches_cpu_quality() -> None:
    data = torch.randn(20000, 45, generator=torch.Generator().manual_seed(0))
    cpu = kmeans(data, 2048, 5, seed=1)
    gpu = kmeans(data.cuda(), 2048, 5, seed=1)
    assert gpu.labels.device.type == "cuda" and len(gpu.centroids) == 2048
    assert gpu.sse == pytest.approx(cpu.sse, rel=0.02)


def test_plas_on_cuda_is_a_permutation_that_smooths() -> None:
    grid = torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(0))
    index = plas_sort(grid.cuda(), seed=2).cpu()
    assert sorted(index.reshape(-1).tolist()) == list(range(64 * 64))
    out = grid.reshape(-1, 3)[index.reshape(-1)].reshape(64, 64, 3)
    rough = float((out[1:] - out[:-1]).abs().mean())
    assert rough < 0.5 * float((grid[1:] - grid[:-1]).abs().mean())
