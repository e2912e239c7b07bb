"""The same k-means and PLAS code on CUDA (skipped, and not counted, without a CUDA device)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spaceport.stages.compress import kmeans as km
from spaceport.stages.compress.kmeans import kmeans
from spaceport.stages.compress.plas import plas_sort

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_kmeans_on_cuda_matches_cpu_quality(monkeypatch: pytest.MonkeyPatch) -> None:
    data = np.random.default_rng(0).normal(size=(20000, 45)).astype(np.float32)
    cpu = kmeans(data, 2048, 5, seed=1)
    calls = []
    real = km._torch_assign
    monkeypatch.setattr(km, "_torch_assign", lambda x, c: calls.append(len(x)) or real(x, c))
    gpu = kmeans(data, 2048, 5, seed=1, device="cuda")
    assert calls and max(calls) == len(data) and len(gpu.centroids) == 2048  # the distance step ran on CUDA
    assert gpu.sse == pytest.approx(cpu.sse, rel=0.02)
    labels, _ = km.assign(data, gpu.centroids, "cuda")
    assert np.mean(labels == km.assign(data, gpu.centroids)[0]) > 0.999


def test_plas_on_cuda_is_a_permutation_that_smooths() -> None:
    grid = torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(0))
    index = plas_sort(grid.cuda(), seed=2).cpu()
    assert sorted(index.reshape(-1).tolist()) == list(range(64 * 64))
    out = grid.reshape(-1, 3)[index.reshape(-1)].reshape(64, 64, 3)
    rough = float((out[1:] - out[:-1]).abs().mean())
    assert rough < 0.5 * float((grid[1:] - grid[:-1]).abs().mean())
