"""gsplat's MCMC strategy on CPU: our torch versions of its two CUDA-only operations, and the stage with it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from spaceport.contract import RetryableError
from spaceport.stages.runner import run_stage
from spaceport.stages.train.mcmc_cpu import covariances, relocation
from tests.train.test_stage import FAST, sigterm_at

BINOMS = torch.zeros(51, 51)  # gsplat's table: only its size matters to the formula


def profile_integral(opacity: float, scale: float, copies: int) -> float:
    """Integral over a line through the centre of 1 - prod(1 - o_i g_i) for ``copies`` coincident copies."""
    x = np.linspace(-12 * scale, 12 * scale, 200_001)
    g = np.exp(-0.5 * (x / scale) ** 2)
    return float(np.trapezoid(1 - (1 - opacity * g) ** copies, x))


@pytest.mark.parametrize("opacity", [0.02, 0.3, 0.9, 0.995])
@pytest.mark.parametrize("copies", [1, 2, 7, 51])
def test_copies_absorb_what_the_original_did(opacity: float, copies: int) -> None:
    # eq. 9 of the MCMC paper: n copies with the new opacity and scale absorb as much light along the
    # Gaussian's axes as the original did
    new_o, new_s = relocation(torch.tensor([opacity]), torch.tensor([[0.5, 1.0, 2.0]]), torch.tensor([copies]), BINOMS)
    assert math.isclose(float(new_o), 1 - (1 - opacity) ** (1 / copies), rel_tol=1e-6)
    for axis, scale in enumerate((0.5, 1.0, 2.0)):
        original = opacity * scale * math.sqrt(2 * math.pi)
        assert math.isclose(profile_integral(float(new_o), float(new_s[0, axis]), copies), original, rel_tol=1e-4)
    if copies == 1:
        assert float(new_o) == pytest.approx(opacity) and torch.allclose(new_s, torch.tensor([[0.5, 1.0, 2.0]]))


def test_copies_beyond_the_table_count_as_its_size() -> None:
    o, s, n = torch.tensor([0.4, 0.4]), torch.ones(2, 3), torch.tensor([51, 400])
    new_o, new_s = relocation(o, s, n, BINOMS)
    assert torch.equal(new_o[0], new_o[1]) and torch.equal(new_s[0], new_s[1])


def test_covariances_from_unnormalised_quaternions() -> None:
    g = torch.Generator().manual_seed(0)
    quats, scales = torch.randn(50, 4, generator=g) * 3, torch.rand(50, 3, generator=g) + 0.1
    covar, preci = covariances(quats, scales)
    assert torch.allclose(covar @ preci, torch.eye(3).expand(50, 3, 3), atol=1e-4)
    eig = torch.linalg.eigvalsh(covar)
    assert torch.allclose(eig, torch.sort(scales**2, dim=1).values, rtol=1e-4, atol=1e-6)
    only_covar, none = covariances(quats, scales, compute_preci=False)
    assert none is None and torch.equal(only_covar, covar)


def test_stage_trains_with_mcmc_on_cpu_and_resumes_exactly(tmp_path: Path) -> None:
    from tests.train.fixtures import write_sfm_output

    write_sfm_output(tmp_path / "sfm")
    config = {"iterations": 200, "strategy": "mcmc", "checkpointEvery": 25, **FAST}
    straight = run_stage("train", str(tmp_path / "sfm"), str(tmp_path / "a"), config).metrics
    assert straight["device"] == "cpu"
    assert straight["psnr"] > straight["initialPsnr"] + 3, straight
    # refinement at steps 80 and 120 adds 5% each time (gsplat's MCMC growth), up to the cap
    assert straight["gaussians"] == int(1.05 * int(1.05 * 300))
    with pytest.raises(RetryableError, match="step 130"):
        run_stage("train", str(tmp_path / "sfm"), str(tmp_path / "b"), config, listener=sigterm_at(130))
    resumed = run_stage("train", str(tmp_path / "sfm"), str(tmp_path / "b"), config).metrics
    assert resumed["resumedFromStep"] == 130
    # relocation samples and position noise come from the checkpointed generator: the same splats
    assert (tmp_path / "a" / "splats.ply").read_bytes() == (tmp_path / "b" / "splats.ply").read_bytes()
