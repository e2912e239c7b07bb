"""The run layout shared by the operator, `spaceport run` and the viewer (spaceport/layout.py)."""

from __future__ import annotations

import pytest

from spaceport.api import STAGES, ReconstructionSpec
from spaceport.layout import (
    PROGRESS_WEIGHTS,
    merge_metrics,
    options_run_key,
    overall_fraction,
    run_numbers,
    run_uri,
    spec_run_key,
    stage_uri,
)
from spaceport.local import resolve_options


def test_run_keys_are_those_earlier_releases_wrote() -> None:
    # Digests that runs already on clusters and disks carry: a different value would start every one of them
    # again in a new run folder after an upgrade.
    spec = ReconstructionSpec.model_validate({"input": {"uri": "s3://photos/site"},
                                             "output": {"uri": "s3://results/site"}, "train": {"iterations": 7000}})
    # Learning vignetting became the default (results differ: a new run); a spec that turns it off is the run
    # earlier releases made, under the same key.
    assert spec_run_key(spec) == "01b47aecaed6a404"
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"vignetting": False})})
    assert spec_run_key(spec) == "ca264653caec6efc"
    # The draft preset's training settings before they changed (explicit now): the same options, the same key.
    before = {"train": {"iterations": 2000, "halfResolutionSteps": 0, "positionLr": 1.6e-4, "colorLr": 2.5e-3,
                        "opacityLr": 5e-2, "scaleLr": 5e-3, "rotationLr": 1e-3, "opacityResetEvery": 3000,
                        "opacityReg": 0.0, "mseWeight": 0.0, "vignetting": False}}
    assert options_run_key(resolve_options(before, "draft")) == "104689d9ff984e02"
    # Options added since, at their defaults, leave keys alone; set otherwise they are part of the run's identity.
    assert spec_run_key(spec.model_copy(update={"train": spec.train.model_copy(update={"sky": "off"})})) \
        != "ca264653caec6efc"
    assert options_run_key(resolve_options({**before, "train": {**before["train"], "vignetting": True}}, "draft")) \
        != "104689d9ff984e02"
    assert spec_run_key(spec.model_copy(update={"compress": spec.compress.model_copy(update={"streamed": "always"})})) \
        != "ca264653caec6efc"
    assert options_run_key(resolve_options({**before, "compress": {"lodChunkExtent": 8.0}}, "draft")) \
        != "104689d9ff984e02"
    assert spec_run_key(spec.model_copy(update={"sfm": spec.sfm.model_copy(update={"feature_budget": 10**6})})) \
        != "ca264653caec6efc"


def test_paths_join_cleanly_on_s3_and_volumes() -> None:
    assert run_uri("s3://results/site/", 3) == "s3://results/site/runs/3"
    assert stage_uri("/data/out", 2, "train") == "/data/out/runs/2/train"
    assert run_numbers(["10", "2", "tmp", "2"]) == [2, 10]


def test_the_earlier_stage_wins_a_shared_metric() -> None:
    merged = merge_metrics([{"ssim": 0.9, "psnr": None}, {"ssim": 0.99, "psnr": 30.0, "sogBytes": 5}])
    assert merged == {"ssim": 0.9, "psnr": 30.0, "sogBytes": 5}


def test_progress_weights_cover_the_stages() -> None:
    assert set(PROGRESS_WEIGHTS) == set(STAGES) and sum(PROGRESS_WEIGHTS.values()) == pytest.approx(1.0)
    assert overall_fraction({}) == 0.0 and overall_fraction(dict.fromkeys(STAGES, 1.0)) == pytest.approx(1.0)
    assert overall_fraction({STAGES[0]: 1.0, STAGES[1]: 0.5}) == pytest.approx(0.5)
